//! `mooyaho loadgen`: simulated participants with real ICE, DTLS and SRTP that join a Mooyaho
//! deployment through its public REST and WebSocket APIs, publish synthetic media and measure
//! what comes back: packets per second out of the SFU, loss, one-way latency (a send timestamp
//! in every payload), join time, and CPU of the SFU and of the generator itself, so a saturated
//! generator is never mistaken for a slow SFU.
//!
//! Scenarios (after LiveKit's published ones): `audio` (P Opus-sized publishers × S listeners at
//! 50 pps), `meeting` (N participants each publishing video and receiving everyone),
//! `livestream` (one ~1.5 Mbps video publisher with keyframe bursts × S viewers) and `fanout`
//! (one publisher at a fixed packet rate and size × S viewers). `failover` starts its own fleet
//! (`mooyaho server` and two `mooyaho sfu` nodes, [`fleet`]), runs a fan-out on it and SIGKILLs
//! the node hosting the room mid-window: the report gives each subscriber's media gap.
//! `simulcast` publishes video in three layers and has 30 % of the viewers ask for `low`
//! ([`simulcast`]): the report gives each layer's packets per second.

#![deny(unsafe_code)]

pub mod capacity;
pub mod ceiling;
pub mod churn;
mod feedback;
pub mod fleet;
mod hostile;
pub mod idle;
mod janus;
mod participant;
mod peer;
pub mod plot;
pub mod provenance;
pub mod raw;
mod report;
mod sdp;
mod signal;
mod simulcast;
pub mod span;
// FFI: `setsockopt(SO_TIMESTAMPNS)` and `recvmsg` with control messages through libc, to read
// kernel receive timestamps. Sound because every pointer handed to the kernel refers to a live,
// correctly sized local buffer for the duration of the call and the CMSG macros walk only the
// `msg_controllen` bytes the kernel filled. Each `unsafe` block carries its own SAFETY note.
#[allow(unsafe_code)]
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use mooyaho_net::dtls::DtlsIdentity;

pub use hostile::HostileReport;
pub use report::{FailoverReport, GapStats, NodeKill, Report, Sample};
pub use simulcast::{LayerReport, SimulcastReport};

/// What to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Audio publishers and listeners.
    Audio,
    /// Everyone publishes video and receives everyone.
    Meeting,
    /// One video publisher with keyframe bursts, many viewers.
    Livestream,
    /// One publisher at a fixed rate and size, many viewers.
    Fanout,
    /// Idle WebSocket sessions against one signaling server (no media): [`idle::run`].
    Signaling,
    /// A fan-out on a fleet of two nodes whose hosting node is killed mid-window:
    /// [`run_failover`].
    Failover,
    /// A fan-out's steady members carry media while other subscribers join and leave at a
    /// fixed rate ([`churn`]).
    Churn,
    /// Video publishers sending three simulcast layers, 30 % of the viewers asking for `low`.
    Simulcast,
    /// A fan-out across two nodes capped with `--max-transports` (`--node-cap`), one channel
    /// spanning both through a relay link: [`run_span`].
    Span,
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "audio" => Ok(Self::Audio),
            "meeting" => Ok(Self::Meeting),
            "livestream" => Ok(Self::Livestream),
            "fanout" => Ok(Self::Fanout),
            "signaling" => Ok(Self::Signaling),
            "failover" => Ok(Self::Failover),
            "churn" => Ok(Self::Churn),
            "simulcast" => Ok(Self::Simulcast),
            "span" => Ok(Self::Span),
            other => Err(format!(
                "unknown scenario {other:?} (audio, meeting, livestream, fanout, signaling, \
                 failover, churn, simulcast, span)"
            )),
        }
    }
}

/// The server under load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Mooyaho deployment: REST + WebSocket signaling, its SFU nodes.
    Mooyaho,
    /// A Janus server with the VideoRoom plugin, driven over its HTTP API at `url` (e.g.
    /// `http://127.0.0.1:8088/janus`), for a side-by-side comparison on the same machine.
    Janus {
        /// The Janus API endpoint.
        url: String,
    },
}

impl Target {
    /// `mooyaho` or `janus`, as the report and the charts name it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mooyaho => "mooyaho",
            Self::Janus { .. } => "janus",
        }
    }
}

/// Reports carry the name; the endpoint is the config's `url`.
impl serde::Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A load run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadConfig {
    /// What is measured: Mooyaho or Janus.
    pub target: Target,
    /// The endpoint: Mooyaho's signaling base URL (`http://host:port`), or Janus's API URL.
    pub url: String,
    /// REST API key (to create the channel and integrate the simulated users; Mooyaho only).
    #[serde(skip)]
    pub api_key: String,
    /// The scenario.
    pub scenario: Scenario,
    /// Publishers (`meeting`: participants).
    pub publishers: usize,
    /// Subscribers (ignored by `meeting`).
    pub subscribers: usize,
    /// Measurement window, after everyone joined.
    pub duration: Duration,
    /// Joins per second.
    pub join_rate: f64,
    /// Packets per second per publisher.
    pub pps: u32,
    /// RTP packet size in bytes (before SRTP).
    pub size: usize,
    /// The SFU process to measure (CPU, RSS); otherwise its load reports are used.
    pub sfu_pid: Option<u32>,
    /// Measure this machine's ceiling (SRTP + batched UDP per core) before the run.
    pub ceiling: bool,
    /// Add one hostile participant to the channel for the whole window (Mooyaho only): NACK
    /// storm, address churn and SSRC flood, `hostile_pps` packets per second of each.
    pub hostile: bool,
    /// The hostile participant's packets per second of each kind.
    pub hostile_pps: u32,
    /// Rooms (channels) run side by side, each with the scenario's publishers and subscribers
    /// (`many-rooms`: `--scenario meeting --publishers 5 --rooms 200`).
    pub rooms: usize,
    /// Share of arriving packets each subscriber drops, percent (a lossy downlink): the
    /// subscribers NACK the missing video packets and the report counts what came back.
    pub loss_percent: f64,
    /// `failover`: seconds into the measurement window at which the hosting node is killed.
    pub kill_after: Duration,
    /// `churn`: how the movers join and leave.
    pub churn: churn::ChurnConfig,
    /// `span`: each node's `--max-transports` (0: half the participants, rounded up).
    pub node_cap: usize,
}

impl LoadConfig {
    /// Defaults of a scenario, with the given endpoint.
    pub fn new(url: impl Into<String>, api_key: impl Into<String>, scenario: Scenario) -> Self {
        let (publishers, subscribers, pps, size) = match scenario {
            Scenario::Audio => (2, 20, 50, 120),
            Scenario::Meeting => (4, 0, 100, 1000),
            // ~1.5 Mbps of 1200-byte packets.
            Scenario::Livestream => (1, 50, 160, 1200),
            Scenario::Fanout => (1, 50, 500, 1200),
            // A gap resolution of 5 ms.
            Scenario::Failover => (1, 50, 200, 1200),
            // Steady members; the movers come on top.
            Scenario::Churn => (1, 20, 100, 1200),
            // Sessions are `subscribers`.
            Scenario::Signaling => (0, 1000, 0, 0),
            // The top layer's rate (h sends half, q a quarter).
            Scenario::Simulcast => (1, 20, 200, 1000),
            // Issue 15's proof: 1 × 600 over two nodes of 300 subscribers each.
            Scenario::Span => (1, 600, 50, 1200),
        };
        Self {
            target: Target::Mooyaho,
            url: url.into(),
            api_key: api_key.into(),
            scenario,
            publishers,
            subscribers,
            duration: Duration::from_secs(10),
            join_rate: 50.0,
            pps,
            size,
            sfu_pid: None,
            ceiling: false,
            hostile: false,
            hostile_pps: 200,
            rooms: 1,
            loss_percent: 0.0,
            kill_after: Duration::from_secs(2),
            churn: churn::ChurnConfig {
                per_second: 2.0,
                stay: Duration::from_secs(2),
            },
            node_cap: 0,
        }
    }
}

/// After the last churn mover left, how long the node's load reports are watched for its
/// transports to fall back to the steady members' (nodes report every second).
const CHURN_SETTLE: Duration = Duration::from_secs(10);

/// How long subscribers keep receiving after the window closes, for packets sent in it.
const WINDOW_GRACE: Duration = Duration::from_millis(500);

/// Counters shared by every simulated participant.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) received_in_window: AtomicU64,
    /// Sequence-gap accounting (between each stream's first and last received packet).
    pub(crate) expected: AtomicU64,
    pub(crate) lost: AtomicU64,
    /// Per publisher stream: packets sent while measuring, and its publisher's role (its room,
    /// and whether it also receives, so does not count itself among the stream's receivers).
    pub(crate) window_sent: Mutex<Vec<(u64, Role)>>,
    /// Distinct packets sent while measuring that subscribers received (until the run stops).
    pub(crate) window_received: AtomicU64,
    /// Participants whose receiving transport connected, per room.
    pub(crate) room_receivers: Mutex<Vec<u64>>,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) joined: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) latency_us: Mutex<Vec<u32>>,
    pub(crate) join_ms: Mutex<Vec<u32>>,
    /// Where each receiving participant's join time went (see [`report::JoinPhases`]).
    pub(crate) join_phases: Mutex<Vec<report::JoinPhase>>,
    pub(crate) errors: Mutex<Vec<String>>,
    /// Packets subscribers dropped on purpose (`--loss`), NACKed, got back after a NACK, and
    /// receiver reports they sent.
    pub(crate) dropped_by_loss: AtomicU64,
    pub(crate) nacked: AtomicU64,
    pub(crate) recovered: AtomicU64,
    /// Retransmissions that arrived on an RTX SSRC (unwrapped to their original packet).
    pub(crate) rtx_received: AtomicU64,
    /// Video packets that went missing and never arrived (given up after the NACKs, or still
    /// missing when the subscriber stopped).
    pub(crate) unrecovered: AtomicU64,
    pub(crate) receiver_reports: AtomicU64,
    /// Transport-cc feedback packets subscribers sent.
    pub(crate) twcc_feedback: AtomicU64,
    /// SRTP protection profiles our participants' DTLS handshakes negotiated.
    pub(crate) srtp_profiles: Mutex<std::collections::BTreeSet<String>>,
    /// Set while the measurement window is open.
    pub(crate) measuring: std::sync::atomic::AtomicBool,
    /// When the hosting node was killed (`failover`), wall-clock nanoseconds; 0 before.
    pub(crate) killed_at_ns: AtomicU64,
    /// What participants did about `sfuRestart`.
    pub(crate) failover: FailoverTotals,
    /// The `simulcast` scenario's per-layer counts.
    pub(crate) simulcast: simulcast::LayerTotals,
    /// The `span` scenario's latency by node.
    pub(crate) span: span::SpanTotals,
}

/// Participants' handling of `sfuRestart`.
#[derive(Debug, Default)]
pub(crate) struct FailoverTotals {
    /// `sfuRestart` messages received (every member gets one per move).
    pub(crate) restarts: AtomicU64,
    /// Publishers that published again and connected to the new node.
    pub(crate) republished: AtomicU64,
    /// Subscribers that connected to the new room's node.
    pub(crate) resubscribed: AtomicU64,
    /// Recoveries that failed (a new publish or subscription), with the first errors.
    pub(crate) failures: AtomicU64,
    pub(crate) errors: Mutex<Vec<String>>,
    /// Each subscriber's media before and after the kill.
    pub(crate) continuity: Mutex<Vec<participant::Continuity>>,
}

impl FailoverTotals {
    /// A recovery step of participant `name` failed (`what`): counted, the first few kept.
    pub(crate) fn failed(&self, name: &str, what: &str, error: &anyhow::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().expect("lock");
        if errors.len() < 10 {
            errors.push(format!("{name}: {what}: {error:#}"));
        }
    }
}

impl Totals {
    /// A participant of `room` receives from now on.
    pub(crate) fn add_receiver(&self, room: usize) {
        let mut rooms = self.room_receivers.lock().expect("lock");
        if rooms.len() <= room {
            rooms.resize(room + 1, 0);
        }
        rooms[room] += 1;
    }

    /// Notes the SRTP profile a participant's handshake negotiated (the report lists them, so
    /// two targets are compared on the same cipher).
    pub(crate) fn negotiated(&self, srtp: &mooyaho_net::srtp::SrtpSession) {
        let profile = format!("{:?}", srtp.profile);
        self.srtp_profiles.lock().expect("lock").insert(profile);
    }
}

/// Runs the scenario and returns its report. `progress` prints a line per second.
pub async fn run(config: LoadConfig, progress: bool) -> anyhow::Result<Report> {
    anyhow::ensure!(
        config.scenario != Scenario::Failover,
        "the failover scenario starts its own fleet: run it with run_failover"
    );
    anyhow::ensure!(
        config.scenario != Scenario::Span,
        "the span scenario starts its own fleet: run it with run_span"
    );
    run_on(config, progress, None).await
}

/// The `failover` scenario: starts a fleet from `binary` (`mooyaho server` and two `mooyaho sfu`
/// nodes on loopback), runs the fan-out on it (one room, so one hosting node), SIGKILLs that
/// node `kill_after` into the window and measures how each subscriber's media comes back
/// through `sfuRestart` — the participants recover as the SDKs do. `config.url` and
/// `config.api_key` are the fleet's.
pub async fn run_failover(
    mut config: LoadConfig,
    binary: &std::path::Path,
    progress: bool,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        config.scenario == Scenario::Failover && config.target == Target::Mooyaho,
        "run_failover runs the failover scenario against its own Mooyaho fleet"
    );
    anyhow::ensure!(
        config.rooms == 1 && config.publishers >= 1 && config.subscribers >= 1,
        "the failover scenario is one room with at least one publisher and one subscriber"
    );
    anyhow::ensure!(
        config.kill_after < config.duration,
        "--kill-after must be less than --duration (the window must see the recovery)"
    );
    let mut fleet = fleet::Fleet::start(binary, 2).await?;
    config.url = fleet.url.clone();
    config.api_key = fleet.api_key.clone();
    if progress {
        eprintln!(
            "fleet: signaling {} with SFU nodes {:?}",
            fleet.url,
            fleet.node_ids()
        );
    }
    run_on(config, progress, Some(&mut fleet)).await
}

/// The `span` scenario: starts a fleet from `binary` (`mooyaho server --span-nodes` and two
/// `mooyaho sfu --max-transports N`, N = `config.node_cap` or half the participants rounded
/// up), runs the fan-out on it (one room: the publisher and the first subscribers fill the
/// first node, the rest are served by the second through a relay link) and reports latency
/// split by node and each node's CPU per packet sent. `config.url` and `config.api_key` are
/// the fleet's.
pub async fn run_span(
    mut config: LoadConfig,
    binary: &std::path::Path,
    progress: bool,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        config.scenario == Scenario::Span && config.target == Target::Mooyaho,
        "run_span runs the span scenario against its own Mooyaho fleet"
    );
    anyhow::ensure!(
        config.rooms == 1 && config.publishers >= 1 && config.subscribers >= 2,
        "the span scenario is one room with at least one publisher and two subscribers"
    );
    if config.node_cap == 0 {
        config.node_cap = (config.publishers + config.subscribers).div_ceil(2);
    }
    let cap = config.node_cap.to_string();
    // Every simulated participant connects from 127.0.0.1: the server's per-address limit
    // (64 by default) must admit them all.
    let per_ip = (config.publishers + config.subscribers + 16).to_string();
    let mut fleet = fleet::Fleet::start_with(
        binary,
        2,
        &["--span-nodes", "--max-connections-per-ip", per_ip.as_str()],
        &["--max-transports", cap.as_str()],
    )
    .await?;
    config.url = fleet.url.clone();
    config.api_key = fleet.api_key.clone();
    if progress {
        eprintln!(
            "fleet: signaling {} (--span-nodes) with SFU nodes {:?}, --max-transports {cap}",
            fleet.url,
            fleet.node_ids()
        );
    }
    run_on(config, progress, Some(&mut fleet)).await
}

/// Kills the node hosting `backend`'s channel (SIGKILL by PID) and notes when.
async fn kill_host(
    fleet: &mut fleet::Fleet,
    backend: &participant::Backend,
    totals: &Totals,
    into_window: Duration,
) -> anyhow::Result<NodeKill> {
    let participant::Backend::Mooyaho { rest, channel, .. } = backend else {
        anyhow::bail!("the failover scenario needs the mooyaho target");
    };
    let node = rest
        .get_channel(channel)
        .await
        .context("looking up the channel's node")?
        .sfu_server_id
        .context("the channel is on no node: nobody published?")?;
    let pid = fleet
        .node_pid(node)
        .with_context(|| format!("the channel is on node {node}, not one of this fleet's"))?;
    totals.killed_at_ns.store(wire::now_ns(), Ordering::Relaxed);
    fleet.kill_node(node)?;
    Ok(NodeKill {
        node,
        pid,
        at_seconds: into_window.as_secs_f64(),
        new_node: None,
    })
}

async fn run_on(
    config: LoadConfig,
    progress: bool,
    mut fleet: Option<&mut fleet::Fleet>,
) -> anyhow::Result<Report> {
    let provenance = provenance::Provenance::collect();
    anyhow::ensure!(
        config.scenario != Scenario::Signaling,
        "the signaling scenario has no media: run it with idle::run"
    );
    anyhow::ensure!(
        (1..=1000).contains(&config.rooms),
        "rooms must be from 1 to 1000"
    );
    let mut backends = Vec::with_capacity(config.rooms);
    for _ in 0..config.rooms {
        backends.push(participant::Backend::open(&config).await?);
    }
    let backend = backends[0].clone();
    let identity = Arc::new(DtlsIdentity::generate().map_err(|e| anyhow::anyhow!(e.0))?);
    let totals = Arc::new(Totals::default());
    let stop = Instant::now() + Duration::from_secs(3600);
    let stop_at = Arc::new(Mutex::new(stop));
    let run = participant::Run {
        config: Arc::new(config.clone()),
        identity,
        totals: totals.clone(),
        stop_at: stop_at.clone(),
    };

    let (publishers, subscribers, subscribe_too) = match config.scenario {
        Scenario::Meeting => (config.publishers, 0, true),
        _ => (config.publishers, config.subscribers, false),
    };
    let ceiling = if config.ceiling {
        // As many receivers as the server sends to (a meeting's participants all receive);
        // never one, or consecutive datagrams would share a destination and merge under GSO.
        let receivers = match config.scenario {
            Scenario::Meeting => config.publishers,
            _ => config.subscribers,
        };
        let (size, receivers) = (config.size, receivers.max(2));
        let measured = tokio::task::spawn_blocking(move || {
            ceiling::measure(size, receivers, Duration::from_millis(1500))
        })
        .await
        .context("ceiling measurement")?
        .context("ceiling measurement")?;
        if progress {
            eprintln!(
                "ceiling: SRTP {:.0}/CPU-s, UDP {:.0}/CPU-s, both {:.0} out-pkt/CPU-s",
                measured.srtp_packets_per_cpu_second,
                measured.udp_packets_per_cpu_second,
                measured.out_packets_per_cpu_second
            );
        }
        Some(measured)
    } else {
        None
    };
    let join_gap = Duration::from_secs_f64(1.0 / config.join_rate.max(0.1));
    let mut tasks = Vec::new();
    let generator_cpu_start = mooyaho_net::cpu::process_cpu_seconds(None);
    let sfu_rss_idle_mib = config.sfu_pid.and_then(report::rss_mib);
    let join_started = Instant::now();
    // Rooms fill one after another, each with the scenario's participants.
    let per_room = publishers + subscribers;
    for i in 0..per_room * backends.len() {
        let (room, index) = (i / per_room, i % per_room);
        let publish = index < publishers;
        let role = Role {
            publish,
            subscribe: !publish || subscribe_too,
            room,
            asks_low: config.scenario == Scenario::Simulcast
                && !publish
                && simulcast::asks_low(index - publishers),
        };
        let name = format!("load-{i}");
        let (participant, backend, named) = (run.clone(), backends[room].clone(), name.clone());
        tasks.push(run.spawn_participant(name, async move {
            participant::run(&participant, &backend, &named, role).await
        }));
        tokio::time::sleep(join_gap).await;
    }
    // Wait until everyone joined (or failed), then measure.
    let everyone = (per_room * backends.len()) as u64;
    let join_deadline = Instant::now() + Duration::from_secs(30);
    while totals.joined.load(Ordering::Relaxed) + totals.failed.load(Ordering::Relaxed) < everyone
        && Instant::now() < join_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joined_in = join_started.elapsed();
    let hostile = match (config.hostile, &backend) {
        (false, _) => None,
        (true, participant::Backend::Mooyaho { channel, .. }) => Some(
            tokio::time::timeout(
                Duration::from_secs(30),
                hostile::Hostile::join(&config, channel),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("did not join within 30 s"))),
        ),
        (true, participant::Backend::Janus { .. }) => {
            anyhow::bail!("--hostile needs the mooyaho target")
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await; // let keyframe waits settle
    let sfu_cpu_start = mooyaho_net::cpu::process_cpu_seconds(config.sfu_pid);
    let sfu_core = config.sfu_pid.and_then(mooyaho_net::cpu::pinned_core);
    let core_busy_start = sfu_core.and_then(mooyaho_net::cpu::core_busy_seconds);
    let threads_start = config
        .sfu_pid
        .map(mooyaho_net::cpu::thread_cpu_seconds)
        .unwrap_or_default();
    let generator_window_start = mooyaho_net::cpu::process_cpu_seconds(None);
    let window_start = Instant::now();
    totals.measuring.store(true, Ordering::Relaxed);
    let hostile = hostile.map(|joined| match joined {
        Ok(hostile) => tokio::spawn(hostile.attack(totals.clone())),
        Err(e) => {
            let error = format!("{e:#}");
            tokio::spawn(async move {
                HostileReport {
                    error: Some(error),
                    ..HostileReport::default()
                }
            })
        }
    });
    // `churn`: movers join and leave while the window is open, counted apart.
    let movers = Arc::new(Totals::default());
    let churn_driver = (config.scenario == Scenario::Churn).then(|| {
        let until = window_start + config.duration;
        tokio::spawn(churn::drive(
            run.counted_in(movers.clone()),
            backend.clone(),
            until,
        ))
    });
    let mut sfu_loads = Vec::new();
    let mut timeline = Vec::new();
    let (mut last_at, mut last_received) = (0.0, 0);
    let mut last_sent = totals.sent.load(Ordering::Relaxed);
    let mut kill = None;
    let kills = config.scenario == Scenario::Failover;
    // `span`: each node's CPU from /proc, its load reports each second.
    let span_cpu_start: Vec<(u64, Option<f64>)> = match (&fleet, config.scenario) {
        (Some(fleet), Scenario::Span) => fleet
            .node_ids()
            .into_iter()
            .map(|id| {
                let cpu = mooyaho_net::cpu::process_cpu_seconds(fleet.node_pid(id));
                (id, cpu)
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut span_loads: Vec<mooyaho_server_sdk::SfuServer> = Vec::new();
    while window_start.elapsed() < config.duration {
        let elapsed = window_start.elapsed();
        let mut pause = Duration::from_secs(1).min(config.duration - elapsed);
        if kills && kill.is_none() {
            pause = pause.min(config.kill_after.saturating_sub(elapsed));
        }
        tokio::time::sleep(pause).await;
        if let Some(fleet) = fleet.as_deref_mut()
            && kills
            && kill.is_none()
            && window_start.elapsed() >= config.kill_after
        {
            let killed = kill_host(fleet, &backend, &totals, window_start.elapsed()).await?;
            if progress {
                eprintln!(
                    "[{:>4.1}s] SIGKILL node {} (pid {})",
                    killed.at_seconds, killed.node, killed.pid
                );
            }
            kill = Some(killed);
            continue;
        }
        if let Some(rest) = backend.rest()
            && let Some(load) = report::sfu_load(rest).await
        {
            sfu_loads.push(load);
        }
        if !span_cpu_start.is_empty()
            && let Some(rest) = backend.rest()
            && let Ok(servers) = rest.list_sfu_servers().await
        {
            span_loads.extend(servers);
        }
        let at = window_start.elapsed().as_secs_f64();
        let received = totals.received_in_window.load(Ordering::Relaxed);
        let sent = totals.sent.load(Ordering::Relaxed);
        timeline.push(Sample {
            seconds: at,
            out_packets_per_second: (received - last_received) as f64 / (at - last_at),
            sent_packets_per_second: (sent - last_sent) as f64 / (at - last_at),
            sfu_rss_mib: config.sfu_pid.and_then(report::rss_mib),
        });
        (last_at, last_received, last_sent) = (at, received, sent);
        if progress {
            eprintln!(
                "[{:>4.1}s] joined {}/{} failed {} sent {} received {}",
                window_start.elapsed().as_secs_f64(),
                totals.joined.load(Ordering::Relaxed),
                everyone,
                totals.failed.load(Ordering::Relaxed),
                totals.sent.load(Ordering::Relaxed),
                totals.received.load(Ordering::Relaxed),
            );
        }
    }
    totals.measuring.store(false, Ordering::Relaxed);
    let window = window_start.elapsed();
    let span_nodes = span_nodes(
        &span_cpu_start,
        fleet.as_deref(),
        (&span_loads, window),
        &backend,
    )
    .await;
    let hostile = match hostile {
        Some(task) => Some(
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(report)) => report,
                Ok(Err(e)) => HostileReport {
                    error: Some(format!("hostile task: {e}")),
                    ..HostileReport::default()
                },
                Err(_) => HostileReport {
                    error: Some("hostile participant did not stop within 10 s".into()),
                    ..HostileReport::default()
                },
            },
        ),
        None => None,
    };
    let sfu_rss_loaded_mib = config.sfu_pid.and_then(report::rss_mib);
    let sfu_cpu = mooyaho_net::cpu::process_cpu_seconds(config.sfu_pid)
        .zip(sfu_cpu_start)
        .map(|(b, a)| b - a);
    let sfu_core_busy = sfu_core
        .and_then(mooyaho_net::cpu::core_busy_seconds)
        .zip(core_busy_start)
        .map(|(b, a)| b - a);
    let sfu_threads = config.sfu_pid.map_or_else(Vec::new, |pid| {
        report::thread_deltas(&threads_start, &mooyaho_net::cpu::thread_cpu_seconds(pid))
    });
    let generator_window_cpu = mooyaho_net::cpu::process_cpu_seconds(None)
        .zip(generator_window_start)
        .map(|(b, a)| b - a);
    // Packets sent at the end of the window are still on their way: a packet that never
    // arrives counts as lost, so give the last ones time to land first.
    tokio::time::sleep(WINDOW_GRACE).await;
    if let (Some(kill), participant::Backend::Mooyaho { rest, channel, .. }) = (&mut kill, &backend)
    {
        kill.new_node = rest
            .get_channel(channel)
            .await
            .ok()
            .and_then(|c| c.sfu_server_id);
    }
    let churn = match churn_driver {
        Some(driver) => {
            let movers_tasks = driver.await.context("churn driver")?;
            let attempted = movers_tasks.len() as u64;
            let mut left = 0;
            for task in movers_tasks {
                // A mover still joining when the window closed gives up with its timeouts.
                if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(30), task).await {
                    left += 1;
                }
            }
            // The steady members hold one transport each; the movers' should go with them.
            let steady = totals.joined.load(Ordering::Relaxed);
            let settled = match backend.rest() {
                Some(rest) => churn::watch_settle(rest, steady, CHURN_SETTLE).await,
                None => churn::Settle::default(),
            };
            Some(churn::ChurnReport::build(
                config.churn,
                &movers,
                attempted,
                left,
                settled,
            ))
        }
        None => None,
    };
    *stop_at.lock().expect("lock") = Instant::now();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    for backend in &backends {
        backend.close().await;
    }
    let generator_cpu = mooyaho_net::cpu::process_cpu_seconds(None)
        .zip(generator_cpu_start)
        .map(|(b, a)| b - a);
    Ok(Report::build(
        &config,
        &totals,
        report::Measurements {
            window,
            joined_in,
            sfu_cpu,
            sfu_core: sfu_core.zip(sfu_core_busy),
            sfu_threads,
            generator_window_cpu,
            generator_cpu,
            sfu_loads,
            timeline,
            ceiling,
            sfu_rss_idle_mib,
            sfu_rss_loaded_mib,
            hostile,
            provenance,
            kill,
            churn,
            span: span_nodes.map(|nodes| totals.span.report(config.node_cap, nodes)),
        },
    ))
}

/// `span`: each node's figures over the window (`None` for other scenarios).
async fn span_nodes(
    cpu_start: &[(u64, Option<f64>)],
    fleet: Option<&fleet::Fleet>,
    (loads, window): (&[mooyaho_server_sdk::SfuServer], Duration),
    backend: &participant::Backend,
) -> Option<Vec<span::SpanNode>> {
    let fleet = fleet.filter(|_| !cpu_start.is_empty())?;
    let publishers_node = match backend {
        participant::Backend::Mooyaho { rest, channel, .. } => rest
            .get_channel(channel)
            .await
            .ok()
            .and_then(|c| c.sfu_server_id),
        participant::Backend::Janus { .. } => None,
    };
    let nodes = cpu_start
        .iter()
        .map(|(id, start)| {
            let cpu_seconds = mooyaho_net::cpu::process_cpu_seconds(fleet.node_pid(*id))
                .zip(*start)
                .map(|(b, a)| b - a);
            let own: Vec<_> = loads
                .iter()
                .filter(|s| s.id == *id)
                .filter_map(|s| s.load.clone())
                .collect();
            let packets_out_per_second = if own.is_empty() {
                0.0
            } else {
                own.iter()
                    .map(|l| l.packets_out_per_sec as f64)
                    .sum::<f64>()
                    / own.len() as f64
            };
            let last = own.last().cloned().unwrap_or_default();
            let window_packets = packets_out_per_second * window.as_secs_f64();
            span::SpanNode {
                id: *id,
                publishers_node: publishers_node == Some(*id),
                transports: last.transports,
                relay_links_out: last.relay_links_out,
                relay_links_in: last.relay_links_in,
                cpu_seconds,
                packets_out_per_second,
                cpu_us_per_packet_out: cpu_seconds
                    .filter(|_| window_packets > 0.0)
                    .map(|cpu| cpu * 1e6 / window_packets),
            }
        })
        .collect();
    Some(nodes)
}

/// What one participant does, and in which of the run's rooms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Role {
    pub(crate) publish: bool,
    pub(crate) subscribe: bool,
    pub(crate) room: usize,
    /// Asks every publisher's video at `low` (`simulcast`).
    pub(crate) asks_low: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse() {
        assert_eq!("fanout".parse::<Scenario>().unwrap(), Scenario::Fanout);
        assert!("x".parse::<Scenario>().is_err());
        let config = LoadConfig::new("http://x", "k", Scenario::Livestream);
        assert_eq!((config.publishers, config.size), (1, 1200));
    }
}
