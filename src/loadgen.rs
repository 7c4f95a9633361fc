//! `mooyaho loadgen`: drives a running deployment with simulated participants and reports.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use mooyaho_loadgen::{LoadConfig, Scenario, Target};

/// `--target`: the server under load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TargetKind {
    /// A Mooyaho deployment (`--url`, `--api-key`).
    Mooyaho,
    /// A Janus VideoRoom over its HTTP API (`--janus-url`), for comparison.
    Janus,
}

/// Options of `mooyaho loadgen`.
#[derive(Debug, Args)]
pub(crate) struct LoadgenOptions {
    /// Signaling base URL.
    #[arg(long, env = "MOOYAHO_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// REST API key of that deployment (the mooyaho target only).
    #[arg(long, env = "MOOYAHO_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The server under load: mooyaho, or janus (Janus VideoRoom, same scenario and measurement).
    #[arg(long, value_enum, default_value = "mooyaho")]
    target: TargetKind,
    /// Janus HTTP API URL (with `--target janus`).
    #[arg(long, default_value = "http://127.0.0.1:8088/janus")]
    janus_url: String,
    /// audio | meeting | livestream | fanout | signaling (idle WebSocket sessions, no media) |
    /// failover (starts its own `mooyaho server` + 2 `mooyaho sfu`, kills the room's node) |
    /// churn (a fan-out while other subscribers join and leave: `--churn-per-sec`) |
    /// simulcast (video in three layers at ¼, ½ and all of `--pps`; 30 % of the subscribers ask
    /// `low`; the report gives each layer's packets per second) | span (starts its own
    /// `mooyaho server --span-nodes` + 2 `mooyaho sfu --max-transports --node-cap`: one channel
    /// across both through a relay link; latency split by node, CPU per packet per node).
    #[arg(long, default_value = "fanout")]
    scenario: Scenario,
    /// Publishers (`meeting`: participants); default per scenario.
    #[arg(long)]
    publishers: Option<usize>,
    /// Subscribers (`signaling`: sessions); default per scenario.
    #[arg(long)]
    subscribers: Option<usize>,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Joins per second.
    #[arg(long)]
    join_rate: Option<f64>,
    /// Packets per second per publisher; default per scenario.
    #[arg(long)]
    pps: Option<u32>,
    /// RTP packet size, bytes; default per scenario.
    #[arg(long)]
    size: Option<usize>,
    /// PID of the SFU process, to measure its CPU and memory from /proc.
    #[arg(long)]
    sfu_pid: Option<u32>,
    /// `signaling`: PID of the signaling server, to measure its memory and CPU per session.
    #[arg(long)]
    server_pid: Option<u32>,
    /// `signaling`: sessions per loopback source address (the server's per-IP limit is 64 by
    /// default).
    #[arg(long, default_value_t = 60)]
    per_source: usize,
    /// `signaling`: seconds between a session's pings (the browser SDK's heartbeat).
    #[arg(long, default_value_t = 5.0)]
    heartbeat: f64,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Measure this machine's ceiling first (SRTP encrypt + batched UDP send per core, for the
    /// scenario's packet size) and report the SFU as a fraction of it.
    #[arg(long)]
    ceiling: bool,
    /// Write SVG charts: the run's packet rates and latency curve, or with `--chart-from`, the
    /// sweep chart of those reports.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Do not run: read these JSON reports and draw out-packets per SFU CPU-second and latency
    /// p99 against subscriber count into `--plot` (one line per target and scenario).
    #[arg(long, num_args = 1.., requires = "plot")]
    chart_from: Vec<PathBuf>,
    /// Add one hostile participant to the channel for the whole window: a NACK storm, address
    /// churn (signed checks with USE-CANDIDATE from fresh addresses) and an SSRC flood; the
    /// report counts what it sent next to the honest participants' loss and latency.
    #[arg(long)]
    hostile: bool,
    /// The hostile participant's packets per second of each kind.
    #[arg(long, default_value_t = 200, requires = "hostile")]
    hostile_pps: u32,
    /// Raise the load run by run (subscribers; a meeting's publishers) from `--subscribers` /
    /// `--publishers` until loss or latency p99 breaks its bound, and report the last load that
    /// held with every step (efficiency is quoted only at a load that held).
    #[arg(long)]
    find_capacity: bool,
    /// `--find-capacity`: the loss bound, percent of what was sent.
    #[arg(long, default_value_t = 0.5, requires = "find_capacity")]
    max_loss_percent: f64,
    /// `--find-capacity`: the one-way latency p99 bound, milliseconds.
    #[arg(long, default_value_t = 20.0, requires = "find_capacity")]
    max_p99_ms: f64,
    /// `--find-capacity`: never try more than this load.
    #[arg(long, default_value_t = 2000, requires = "find_capacity")]
    max_load: usize,
    /// Rooms (channels) side by side, each with the scenario's publishers and subscribers
    /// (e.g. many small meetings: `--scenario meeting --publishers 5 --rooms 200`).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Each subscriber drops this share of arriving packets, percent (a lossy downlink); they
    /// NACK missing video packets, and the report counts what the server sent again.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// `failover`: seconds into the measurement window at which the node hosting the room is
    /// SIGKILLed (the rest of the window watches the recovery).
    #[arg(long, default_value_t = 2.0)]
    kill_after: f64,
    /// `churn`: subscribers joining (and, `--churn-stay` later, leaving) per second during the
    /// window, on top of the steady `--publishers` × `--subscribers`.
    #[arg(long, default_value_t = 2.0)]
    churn_per_sec: f64,
    /// `churn`: seconds each of those subscribers stays, receiving, before it leaves.
    #[arg(long, default_value_t = 2.0)]
    churn_stay: f64,
    /// `span`: each node's `--max-transports` (default: half the participants, rounded up).
    #[arg(long)]
    node_cap: Option<usize>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

pub(crate) async fn run(options: LoadgenOptions) -> anyhow::Result<()> {
    if !options.chart_from.is_empty() {
        let reports = options
            .chart_from
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
            })
            .collect::<anyhow::Result<Vec<serde_json::Value>>>()?;
        let plot = options
            .plot
            .as_deref()
            .context("--chart-from needs --plot")?;
        mooyaho_loadgen::plot::sweep_chart(&reports, plot)?;
        println!("wrote {}", plot.display());
        return Ok(());
    }
    if options.scenario == Scenario::Signaling {
        return run_signaling(options).await;
    }
    let failover = options.scenario == Scenario::Failover;
    let span = options.scenario == Scenario::Span;
    anyhow::ensure!(
        !(failover || span) || (options.target == TargetKind::Mooyaho && !options.find_capacity),
        "the failover and span scenarios run on their own Mooyaho fleet, without --find-capacity"
    );
    let mut config = match options.target {
        // The fleet it starts has its own URL and key.
        TargetKind::Mooyaho if failover || span => LoadConfig::new("", "", options.scenario),
        TargetKind::Mooyaho => {
            let key = options
                .api_key
                .context("--api-key (or MOOYAHO_API_KEY) is required with --target mooyaho")?;
            LoadConfig::new(options.url, key, options.scenario)
        }
        TargetKind::Janus => {
            let mut config = LoadConfig::new(options.janus_url.clone(), "", options.scenario);
            config.target = Target::Janus {
                url: options.janus_url,
            };
            config
        }
    };
    if let Some(n) = options.publishers {
        config.publishers = n;
    }
    if let Some(n) = options.subscribers {
        config.subscribers = n;
    }
    if let Some(rate) = options.join_rate {
        config.join_rate = rate;
    }
    if let Some(pps) = options.pps {
        config.pps = pps;
    }
    if let Some(size) = options.size {
        config.size = size.clamp(32, 1400);
    }
    config.duration = Duration::from_secs_f64(options.duration.max(0.5));
    config.sfu_pid = options.sfu_pid;
    config.ceiling = options.ceiling;
    anyhow::ensure!(
        !options.hostile || options.target == TargetKind::Mooyaho,
        "--hostile needs --target mooyaho"
    );
    anyhow::ensure!(
        (0.0..=50.0).contains(&options.loss),
        "--loss is a percentage from 0 to 50"
    );
    config.loss_percent = options.loss;
    anyhow::ensure!(
        (1..=1000).contains(&options.rooms),
        "--rooms must be from 1 to 1000"
    );
    config.rooms = options.rooms;
    if let Some(cap) = options.node_cap {
        anyhow::ensure!(cap >= 1, "--node-cap must be at least 1");
        config.node_cap = cap;
    }
    config.hostile = options.hostile;
    config.hostile_pps = options.hostile_pps.max(1);
    config.kill_after = Duration::try_from_secs_f64(options.kill_after)
        .ok()
        .context("--kill-after is a number of seconds")?;
    anyhow::ensure!(
        options.churn_per_sec > 0.0 && options.churn_per_sec <= 1000.0,
        "--churn-per-sec must be above 0 and at most 1000"
    );
    let churn_stay = Duration::try_from_secs_f64(options.churn_stay)
        .ok()
        .filter(|stay| !stay.is_zero() && *stay <= Duration::from_secs(3600))
        .context("--churn-stay must be a number of seconds above 0 and at most 3600")?;
    config.churn = mooyaho_loadgen::churn::ChurnConfig {
        per_second: options.churn_per_sec,
        stay: churn_stay,
    };
    anyhow::ensure!(
        config.scenario != Scenario::Churn || options.target == TargetKind::Mooyaho,
        "the churn scenario needs --target mooyaho"
    );
    anyhow::ensure!(
        config.scenario != Scenario::Simulcast || options.target == TargetKind::Mooyaho,
        "the simulcast scenario needs --target mooyaho"
    );
    if options.find_capacity {
        anyhow::ensure!(
            options.max_loss_percent >= 0.0 && options.max_p99_ms > 0.0 && options.max_load > 0,
            "--max-loss-percent must be ≥ 0, --max-p99-ms and --max-load > 0"
        );
        let bounds = mooyaho_loadgen::capacity::Bounds {
            max_loss_percent: options.max_loss_percent,
            max_latency_p99_ms: options.max_p99_ms,
            max_load: options.max_load,
        };
        let report = mooyaho_loadgen::capacity::find(config, bounds, !options.quiet).await?;
        println!("{}", report.summary());
        return write_report(options.report.as_deref(), &report);
    }
    let report = if failover {
        let binary = std::env::current_exe().context("finding the mooyaho binary")?;
        mooyaho_loadgen::run_failover(config, &binary, !options.quiet).await?
    } else if span {
        let binary = std::env::current_exe().context("finding the mooyaho binary")?;
        mooyaho_loadgen::run_span(config, &binary, !options.quiet).await?
    } else {
        mooyaho_loadgen::run(config, !options.quiet).await?
    };
    println!("{} {}", report.config.target.name(), report.summary());
    if let Some(plot) = &options.plot {
        mooyaho_loadgen::plot::run_chart(&report, plot)?;
        println!("wrote {}", plot.display());
    }
    write_report(options.report.as_deref(), &report)
}

/// The JSON report to `path`, or stdout.
fn write_report(
    path: Option<&std::path::Path>,
    report: &impl serde::Serialize,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    match path {
        Some(path) => {
            std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{json}"),
    }
    Ok(())
}

/// The `signaling` scenario: idle WebSocket sessions against one signaling server.
async fn run_signaling(options: LoadgenOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.target == TargetKind::Mooyaho,
        "the signaling scenario needs --target mooyaho"
    );
    let config = mooyaho_loadgen::idle::IdleConfig {
        url: options.url,
        sessions: options.subscribers.unwrap_or(1000),
        per_source: options.per_source,
        concurrency: 256,
        heartbeat: Duration::from_secs_f64(options.heartbeat.max(0.1)),
        hold: Duration::from_secs_f64(options.duration.max(0.5)),
        server_pid: options.server_pid,
    };
    let report = mooyaho_loadgen::idle::run(config, !options.quiet).await?;
    println!("{}", report.summary());
    write_report(options.report.as_deref(), &report)
}
