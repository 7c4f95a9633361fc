//! `mooyaho loadgen` against `mooyaho dev` (embedded SFU node): every scenario briefly, asserting
//! that packets flow end to end through real ICE/DTLS/SRTP and that the report is complete; and
//! `--target janus` against a real Janus VideoRoom (`benches/janus/start.sh`). Never a speed
//! threshold: performance numbers live in BENCHMARKS.md.

mod support;

use std::process::Command;

use serde_json::Value;
use support::Server;

fn dev() -> (Server, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(
        &[
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--data-dir",
            "data",
        ],
        Some(dir.path()),
        "",
    );
    let key = server
        .stdout_lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("API key:"))
        .expect("dev prints its key")
        .trim()
        .to_owned();
    (server, dir, key)
}

fn loadgen(server: &Server, key: &str, dir: &std::path::Path, args: &[&str]) -> Value {
    let report = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args([
            "loadgen",
            "--quiet",
            "--url",
            &server.url(""),
            "--api-key",
            key,
        ])
        .args(["--sfu-pid", &server.pid().to_string(), "--duration", "1.5"])
        .arg("--report")
        .arg(&report)
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run loadgen");
    assert!(
        output.status.success(),
        "loadgen failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}

/// Every report says which commit, machine and command produced it.
fn assert_provenance(report: &Value) {
    let provenance = &report["provenance"];
    assert_eq!(
        provenance["commit"].as_str().map(str::len),
        Some(40),
        "{provenance}"
    );
    assert!(provenance["dirty"].is_boolean(), "{provenance}");
    assert!(provenance["date"].as_str().unwrap().ends_with('Z'));
    assert!(provenance["cpus"].as_u64().unwrap() >= 1);
    assert!(provenance["kernel"].is_string());
    let command: Vec<&str> = provenance["commandLine"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(command.contains(&"loadgen"), "{provenance}");
}

fn assert_flowed(report: &Value, participants: u64) {
    assert_eq!(report["joined"], participants, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    assert!(report["packetsSent"].as_u64().unwrap() > 0, "{report:#}");
    assert!(
        report["packetsReceived"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(
        report["outPacketsPerSecond"].as_f64().unwrap() > 0.0,
        "{report:#}"
    );
    // Loss against what was sent in the window, every stream × its receivers: something was
    // expected, and at most that arrived (duplicates count once).
    let expected = report["packetsExpectedInWindow"].as_u64().unwrap();
    let received = report["packetsReceivedOfWindow"].as_u64().unwrap();
    assert!(
        expected > 0 && received > 0 && received <= expected,
        "{report:#}"
    );
    let loss = report["lossPercent"].as_f64().unwrap();
    let from_counts = (expected - received) as f64 * 100.0 / expected as f64;
    assert!((loss - from_counts).abs() < 1e-9, "{report:#}");
    assert!(report["gapLossPercent"].as_f64().is_some(), "{report:#}");
    assert_provenance(report);
    assert!(
        report["latencyMs"]["samples"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(
        report["latencyMs"]["p99"].as_f64().unwrap()
            >= report["latencyMs"]["p50"].as_f64().unwrap()
    );
    assert_eq!(report["srtpAuthFailures"], 0, "{report:#}");
    // Both targets are compared on a named cipher.
    assert!(
        !report["srtpProfiles"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    // Where the SFU's time went, per thread (busiest first).
    let threads = report["sfuThreads"].as_array().unwrap();
    assert!(!threads.is_empty(), "{report:#}");
    assert!(
        threads
            .windows(2)
            .all(|w| w[0]["cpuSeconds"].as_f64() >= w[1]["cpuSeconds"].as_f64()),
        "{report:#}"
    );
    // The SFU's CPU came from /proc (--sfu-pid), and the generator measured its own.
    assert!(report["sfuCpuSeconds"].as_f64().is_some(), "{report:#}");
    assert!(
        report["generatorCpuSeconds"].as_f64().is_some(),
        "{report:#}"
    );
    assert!(report["sfuRssMib"].as_f64().unwrap() > 1.0, "{report:#}");
    assert!(
        report["sfuRssPerParticipantKib"].as_f64().is_some(),
        "{report:#}"
    );
}

#[test]
fn every_scenario_moves_media_through_the_sfu_and_reports() {
    let (server, dir, key) = dev();
    let chart = dir.path().join("fanout.svg");
    let fanout = loadgen(
        &server,
        &key,
        dir.path(),
        &[
            "--scenario",
            "fanout",
            "--subscribers",
            "4",
            "--pps",
            "200",
            "--ceiling",
            "--plot",
            chart.to_str().unwrap(),
        ],
    );
    assert_flowed(&fanout, 5);
    assert_eq!(fanout["config"]["scenario"], "fanout");
    // Where the join time went: every receiving participant's phases, which follow each other
    // (so a phase's p50 cannot exceed the whole join's p99).
    let phases = &fanout["joinPhasesMs"];
    for phase in ["signaling", "offer", "answer", "connect"] {
        assert_eq!(phases[phase]["samples"], 4, "{phase}: {fanout:#}");
        assert!(
            phases[phase]["p50"].as_f64().unwrap() <= fanout["joinMs"]["p99"].as_f64().unwrap(),
            "{phase}: {fanout:#}"
        );
    }
    // --ceiling: this machine's reference in the same run, and the SFU as a fraction of it.
    let ceiling = &fanout["ceiling"];
    assert_eq!(ceiling["packetSize"], 1200, "{fanout:#}");
    for rate in [
        "srtpPacketsPerCpuSecond",
        "udpPacketsPerCpuSecond",
        "outPacketsPerCpuSecond",
    ] {
        assert!(ceiling[rate].as_f64().unwrap() > 0.0, "{rate}: {fanout:#}");
    }
    assert!(fanout["fractionOfCeiling"].as_f64().unwrap() > 0.0);
    assert!(!fanout["timeline"].as_array().unwrap().is_empty());
    assert!(fanout["latencyCdfMs"].as_array().unwrap().len() > 100);
    // --plot: the run's chart.
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("one-way latency"));
    // --chart-from: the sweep chart of reports already written.
    let report = dir.path().join("report.json");
    let sweep = dir.path().join("sweep.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["loadgen", "--chart-from"])
        .arg(&report)
        .arg("--plot")
        .arg(&sweep)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        std::fs::read_to_string(&sweep)
            .unwrap()
            .contains("mooyaho fanout")
    );

    let audio = loadgen(
        &server,
        &key,
        dir.path(),
        &[
            "--scenario",
            "audio",
            "--publishers",
            "2",
            "--subscribers",
            "3",
        ],
    );
    assert_flowed(&audio, 5);

    let livestream = loadgen(
        &server,
        &key,
        dir.path(),
        &["--scenario", "livestream", "--subscribers", "3"],
    );
    assert_flowed(&livestream, 4);

    let meeting = loadgen(
        &server,
        &key,
        dir.path(),
        &["--scenario", "meeting", "--publishers", "3", "--pps", "50"],
    );
    assert_flowed(&meeting, 3);

    // The channels the generator created are deleted: the node ends with no rooms.
    let mut rest = server.rest();
    rest.key = key.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rooms = None;
    while std::time::Instant::now() < deadline {
        let nodes = rt.block_on(rest.call("GET", "/sfu-servers", None)).1;
        rooms = nodes[0]["load"]["rooms"].as_u64();
        if rooms == Some(0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(rooms, Some(0));
}

#[test]
fn simulcast_scenario_sends_three_layers_and_the_low_viewers_get_q() {
    let (server, dir, key) = dev();
    let report = loadgen(
        &server,
        &key,
        dir.path(),
        &[
            "--scenario",
            "simulcast",
            "--subscribers",
            "10",
            "--pps",
            "100",
        ],
    );
    assert_eq!(report["config"]["scenario"], "simulcast");
    assert_eq!(report["joined"], 11, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_provenance(&report);
    let simulcast = &report["simulcast"];
    // 3 of the 10 viewers asked `low`, and the node acknowledged each.
    assert_eq!(simulcast["lowWishes"], 3, "{simulcast:#}");
    let layers = simulcast["layers"].as_array().unwrap();
    let rids: Vec<&str> = layers.iter().map(|l| l["rid"].as_str().unwrap()).collect();
    assert_eq!(rids, ["q", "h", "f"]);
    let field = |l: usize, name: &str| layers[l][name].as_f64().unwrap();
    // The publisher sends each layer at its share of --pps (¼, ½, all).
    assert!(field(0, "inPacketsPerSecond") > 10.0, "{simulcast:#}");
    assert!(
        field(1, "inPacketsPerSecond") > field(0, "inPacketsPerSecond"),
        "{simulcast:#}"
    );
    assert!(
        field(2, "inPacketsPerSecond") > field(1, "inPacketsPerSecond"),
        "{simulcast:#}"
    );
    // The low viewers receive q; the others a higher layer (f, or h if the node's downlink
    // estimate on this loaded loopback says so); every viewer receives one.
    assert_eq!(layers[0]["receivers"], 3, "{simulcast:#}");
    assert_eq!(
        layers[1]["receivers"].as_u64().unwrap() + layers[2]["receivers"].as_u64().unwrap(),
        7,
        "{simulcast:#}"
    );
    assert!(field(0, "outPacketsPerSecond") > 0.0, "{simulcast:#}");
    assert!(
        field(1, "outPacketsPerSecond") + field(2, "outPacketsPerSecond") > 0.0,
        "{simulcast:#}"
    );
    // Subscribers sent real feedback, and the node's CPU was measured.
    assert!(
        report["twccFeedbackSent"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(
        report["receiverReportsSent"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(report["sfuCpuSeconds"].as_f64().is_some(), "{report:#}");
    assert!(report["lossPercent"].as_f64().is_some(), "{report:#}");
}

/// A Janus started by `benches/janus/start.sh`, stopped by PID (and its config dir removed) when
/// dropped, also when the test fails.
struct Janus {
    pid: u32,
    dir: Option<std::path::PathBuf>,
    url: String,
}

impl Janus {
    fn start() -> Self {
        // `janus --version` prints the version but exits 1: only whether it runs matters.
        let installed = Command::new("janus").arg("--help").output();
        assert!(
            installed.is_ok(),
            "janus is not installed: `apt-get install -y janus` (scripts/test.sh installs it)"
        );
        // A free loopback port for the HTTP API (released just before Janus binds it).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/janus/start.sh");
        let output = Command::new(script)
            .arg(port.to_string())
            .output()
            .expect("run benches/janus/start.sh");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "start.sh failed: {stderr}");
        let pid = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("start.sh printed no PID: {stderr}"));
        let dir = stderr
            .lines()
            .find_map(|l| l.strip_prefix("janus config and log: "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(std::path::PathBuf::from);
        Self {
            pid,
            dir,
            url: format!("http://127.0.0.1:{port}/janus"),
        }
    }

    fn log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("janus.log")).ok())
            .unwrap_or_default()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let pid = self.pid.to_string();
        let _ = Command::new("kill").arg(&pid).status();
        let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while proc.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if proc.exists() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn induced_loss_is_nacked_and_recovered_and_subscribers_send_reports() {
    let (server, dir, key) = dev();
    let report = loadgen(
        &server,
        &key,
        dir.path(),
        &[
            "--scenario",
            "fanout",
            "--subscribers",
            "3",
            "--pps",
            "200",
            "--loss",
            "5",
        ],
    );
    assert_flowed(&report, 4);
    let count = |field: &str| report[field].as_u64().unwrap_or_else(|| panic!("{field}"));
    assert!(count("droppedByInducedLoss") > 0, "{report:#}");
    assert!(count("nackedPackets") > 0, "{report:#}");
    assert!(
        count("recoveredPackets") > 0,
        "the node resent what was NACKed: {report:#}"
    );
    // The publisher offers RTX and the subscribers answer it, so the node resends on the RTX
    // SSRC: every recovery came that way, unwrapped to its original sequence number.
    assert!(count("rtxReceived") > 0, "{report:#}");
    assert!(
        count("recoveredPackets") <= count("rtxReceived"),
        "{report:#}"
    );
    assert!(
        count("unrecoveredPackets") < count("droppedByInducedLoss"),
        "{report:#}"
    );
    assert!(count("receiverReportsSent") >= 3, "{report:#}");
    // The node offers transport-wide-cc; our subscribers answer it and send feedback.
    assert!(count("twccFeedbackSent") >= 3, "{report:#}");
    // What came back after NACKs leaves less missing than was dropped.
    assert!(report["lossPercent"].as_f64().unwrap() < 5.0, "{report:#}");

    // Nonsense loss is refused before anything runs.
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["loadgen", "--url", &server.url(""), "--api-key", &key])
        .args(["--loss", "80"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--loss"));
}

#[test]
fn rooms_side_by_side_each_get_their_own_media_and_the_soak_figures_are_reported() {
    let (server, dir, key) = dev();
    let report = loadgen(
        &server,
        &key,
        dir.path(),
        &[
            "--scenario",
            "meeting",
            "--publishers",
            "2",
            "--pps",
            "50",
            "--rooms",
            "3",
        ],
    );
    assert_flowed(&report, 6);
    assert_eq!(report["config"]["rooms"], 3, "{report:#}");
    // Each stream is expected at its own room's other participant only (6 streams × 1), not
    // at all 5 other receivers of the run (which would be 5× as many).
    let expected = report["packetsExpectedInWindow"].as_u64().unwrap() as f64;
    let window = report["windowSeconds"].as_f64().unwrap();
    let one_receiver_each = 6.0 * 50.0 * window;
    assert!(
        expected <= one_receiver_each * 1.3 && expected >= one_receiver_each * 0.5,
        "expected counts only each room's receivers: {report:#}"
    );
    assert!(
        report["timeline"][0]["sfuRssMib"].as_f64().unwrap() > 1.0,
        "{report:#}"
    );
    assert!(
        report.get("sfuRssSlopeMibPerMinute").is_some(),
        "{report:#}"
    );
}

#[test]
fn find_capacity_raises_the_load_until_a_bound_breaks_and_reports_each_step() {
    let (server, dir, key) = dev();
    // Generous bounds on a tiny load: the search grows 2 → 3 and stops at --max-load.
    let report = loadgen(
        &server,
        &key,
        dir.path(),
        &[
            "--scenario",
            "fanout",
            "--subscribers",
            "2",
            "--pps",
            "100",
            "--find-capacity",
            "--max-load",
            "3",
            "--max-loss-percent",
            "50",
            "--max-p99-ms",
            "1000",
        ],
    );
    assert_provenance(&report);
    assert_eq!(report["varied"], "subscribers", "{report:#}");
    let steps = report["steps"].as_array().unwrap();
    let loads: Vec<u64> = steps.iter().map(|s| s["load"].as_u64().unwrap()).collect();
    assert_eq!(loads, [2, 3], "{report:#}");
    for step in steps {
        let within = step["failed"] == 0
            && step["lossPercent"].as_f64().unwrap() <= 50.0
            && step["latencyP99Ms"].as_f64().unwrap() <= 1000.0;
        assert_eq!(step["held"].as_bool(), Some(within), "{step}");
    }
    assert_eq!(report["capacity"], 3, "{report:#}");
    let best = &report["atCapacity"];
    assert_eq!(best["config"]["subscribers"], 3, "{report:#}");
    assert_flowed(best, 4);

    // Bounds that cannot hold are refused before anything runs.
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["loadgen", "--url", &server.url(""), "--api-key", &key])
        .args(["--find-capacity", "--max-p99-ms", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--max-p99-ms"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn janus_target_moves_media_through_a_real_janus_videoroom() {
    let janus = Janus::start();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["loadgen", "--quiet", "--target", "janus", "--janus-url"])
        .arg(&janus.url)
        .args(["--scenario", "fanout", "--subscribers", "3", "--pps", "200"])
        .args(["--duration", "1.5", "--sfu-pid", &janus.pid.to_string()])
        .arg("--report")
        .arg(&report)
        // No API key: the janus target does not need one.
        .env_remove("MOOYAHO_API_KEY")
        .env("RUST_LOG", "error")
        .output()
        .expect("run loadgen");
    assert!(
        output.status.success(),
        "loadgen failed: {}\n{}\njanus log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        janus.log()
    );
    let report: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(report["config"]["target"], "janus", "{report:#}");
    assert_eq!(report["config"]["url"], janus.url.as_str(), "{report:#}");
    assert_flowed(&report, 4);
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("janus Fanout"),
        "the summary names the target"
    );
}

#[test]
fn mooyaho_target_still_requires_an_api_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args([
            "loadgen",
            "--url",
            "http://127.0.0.1:9",
            "--duration",
            "0.5",
        ])
        .env_remove("MOOYAHO_API_KEY")
        .output()
        .expect("run loadgen");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--api-key"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `--hostile`: one participant with real keys sends a NACK storm, address churn and an SSRC
/// flood for the whole window; the report counts each kind, the honest subscribers still got
/// media, and the node still serves a fresh run afterwards. No rate or loss threshold: the
/// release-build run and its numbers are in docs/security.md.
#[test]
fn hostile_run_sends_every_kind_of_attack_and_the_node_keeps_serving() {
    let (server, dir, key) = dev();
    let report = loadgen(
        &server,
        &key,
        dir.path(),
        &[
            "--scenario",
            "fanout",
            "--subscribers",
            "3",
            "--pps",
            "200",
            "--hostile",
            "--hostile-pps",
            "100",
        ],
    );
    assert_flowed(&report, 4);
    let hostile = &report["hostile"];
    assert!(hostile["error"].is_null(), "{hostile:#}");
    assert_eq!(hostile["targetPps"], 100);
    let count = |field: &str| {
        hostile[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {hostile:#}"))
    };
    assert!(count("nackPackets") > 0, "{hostile:#}");
    assert_eq!(
        count("nackEntries"),
        count("nackPackets") * 128,
        "{hostile:#}"
    );
    assert!(count("churnChecks") > 0, "{hostile:#}");
    assert_eq!(
        count("churnSourceAddresses"),
        count("churnChecks"),
        "a fresh source address per check: {hostile:#}"
    );
    assert!(count("floodPackets") > 0, "{hostile:#}");
    assert!(count("floodSsrcs") > 0, "{hostile:#}");
    assert!(
        count("mediaReceived") > 0,
        "the NACKs named real packets: {hostile:#}"
    );
    for rate in [
        "nackPacketsPerSecond",
        "churnChecksPerSecond",
        "floodPacketsPerSecond",
    ] {
        assert!(hostile[rate].as_f64().unwrap() > 0.0, "{rate}: {hostile:#}");
    }
    // The node survived: a fresh honest run through it moves media.
    let after = loadgen(
        &server,
        &key,
        dir.path(),
        &["--scenario", "fanout", "--subscribers", "2"],
    );
    assert_flowed(&after, 3);
    assert!(after.get("hostile").is_none(), "{after:#}");
}

#[test]
fn hostile_needs_the_mooyaho_target() {
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args([
            "loadgen",
            "--target",
            "janus",
            "--duration",
            "0.5",
            "--hostile",
        ])
        .output()
        .expect("run loadgen");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--hostile needs --target mooyaho"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `--scenario signaling`: idle WebSocket sessions from several loopback sources (more than the
/// server's per-IP limit from one), each pinging; the report measures the server's memory per
/// session and its CPU while they idle.
#[test]
fn signaling_scenario_holds_idle_sessions_past_the_per_ip_limit_and_reports_their_cost() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("idle.json");
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["loadgen", "--quiet", "--scenario", "signaling", "--url"])
        .arg(server.url(""))
        .args([
            "--subscribers",
            "150",
            "--per-source",
            "50",
            "--heartbeat",
            "0.2",
        ])
        .args(["--duration", "1", "--server-pid", &server.pid().to_string()])
        .arg("--report")
        .arg(&report_path)
        .env("RUST_LOG", "error")
        .output()
        .expect("run loadgen");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["connected"], 150, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["sources"], 3);
    // Every session pinged during the hold (0.2 s heartbeat over ≥ 1 s).
    assert!(report["pings"].as_u64().unwrap() >= 150 * 3, "{report}");
    assert!(report["kibPerSession"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        report["serverCpuPercentIdle"].as_f64().is_some(),
        "{report}"
    );
    assert_provenance(&report);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("150/150 sessions"), "{summary}");
}

/// `--scenario failover` (issue 13): the generator starts its own fleet (`mooyaho server` and two
/// `mooyaho sfu`), SIGKILLs the node hosting the room while media flows, and every simulated
/// participant handles `sfuRestart` as the SDKs do — the publisher publishes again on the new
/// node, each subscriber takes the new room's offer on a new ICE/DTLS transport — and receives
/// SRTP-verified media again. No timing bound: the gap figures are in BENCHMARKS.md.
#[test]
fn failover_scenario_kills_the_hosting_node_and_every_subscriber_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("failover.json");
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["loadgen", "--quiet", "--scenario", "failover"])
        .args([
            "--subscribers",
            "5",
            "--duration",
            "12",
            "--kill-after",
            "1.5",
        ])
        .arg("--report")
        .arg(&report_path)
        // The fleet is the generator's own: no URL or key is needed (nor used if set).
        .env_remove("MOOYAHO_API_KEY")
        .env("RUST_LOG", "error")
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_provenance(&report);
    assert_eq!(report["config"]["scenario"], "failover", "{report:#}");
    assert_eq!(report["joined"], 6, "{report:#}");
    let failover = &report["failover"];
    let count = |field: &str| {
        failover[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {failover:#}"))
    };
    // The killed node is gone, and the channel moved to the other one.
    let pid = count("pid");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.contains(") Z ")),
        "node process {pid} still runs"
    );
    assert!(failover["newNode"].is_u64(), "{failover:#}");
    assert_ne!(failover["newNode"], failover["node"], "{failover:#}");
    // Every subscriber had media before the kill and got it back after.
    assert_eq!(count("subscribers"), 5, "{failover:#}");
    assert_eq!(count("measured"), 5, "{failover:#}");
    assert_eq!(count("recovered"), 5, "{failover:#}");
    assert_eq!(count("recoveryFailures"), 0, "{failover:#}");
    assert!(
        count("restartsReceived") >= 6,
        "every member was told: {failover:#}"
    );
    assert!(count("republished") >= 1, "{failover:#}");
    assert!(count("resubscribed") >= 5, "{failover:#}");
    let gaps = &failover["gapMs"];
    assert_eq!(gaps["samples"], 5, "{failover:#}");
    let (p50, p99, max) = (
        gaps["p50"].as_f64().unwrap(),
        gaps["p99"].as_f64().unwrap(),
        gaps["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{failover:#}");
    assert_eq!(failover["gapsMs"].as_array().map(Vec::len), Some(5));
    assert_eq!(report["srtpAuthFailures"], 0, "{report:#}");
    assert!(stdout.contains("recovered 5/5 subscribers"), "{stdout}");

    // The scenario refuses what it cannot do before starting anything.
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["loadgen", "--scenario", "failover", "--duration", "2"])
        .args(["--kill-after", "3"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--kill-after"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `--scenario churn` (issue 17): subscribers join and leave at a fixed rate while the steady
/// members of a fan-out carry media; the movers count apart (the steady members' loss stays
/// theirs), every mover joined, received and left, and once they are gone the node holds only
/// the steady members' transports.
#[test]
fn churn_scenario_joins_and_leaves_while_the_steady_members_keep_their_media() {
    let (server, dir, key) = dev();
    let report = loadgen(
        &server,
        &key,
        dir.path(),
        &[
            "--scenario",
            "churn",
            "--subscribers",
            "3",
            "--pps",
            "100",
            "--churn-per-sec",
            "4",
            "--churn-stay",
            "0.5",
        ],
    );
    // The steady members: 1 publisher and 3 subscribers, as in a fan-out.
    assert_flowed(&report, 4);
    assert_eq!(report["config"]["scenario"], "churn", "{report:#}");
    let churn = &report["churn"];
    let count = |field: &str| {
        churn[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {churn:#}"))
    };
    assert!(count("attempted") >= 4, "{churn:#}");
    assert_eq!(count("joined"), count("attempted"), "{churn:#}");
    assert_eq!(count("failed"), 0, "{churn:#}");
    assert_eq!(count("left"), count("attempted"), "{churn:#}");
    assert_eq!(churn["joinMs"]["samples"], churn["joined"], "{churn:#}");
    assert!(
        churn["joinMs"]["p99"].as_f64().unwrap() >= churn["joinMs"]["p50"].as_f64().unwrap(),
        "{churn:#}"
    );
    assert!(count("packetsReceived") > 0, "movers got media: {churn:#}");
    assert_eq!(count("steadyTransports"), 4, "{churn:#}");
    assert_eq!(
        count("nodeTransportsFinal"),
        4,
        "the movers' transports are gone after they left: {churn:#}"
    );
    assert!(churn["nodeSettleSeconds"].is_f64(), "{churn:#}");
    assert!(
        report.get("sfuRssSlopeMibPerMinute").is_some(),
        "{report:#}"
    );

    // Nonsense rates are refused before anything runs.
    for (flag, value) in [("--churn-per-sec", "0"), ("--churn-stay", "0")] {
        let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
            .args(["loadgen", "--url", &server.url(""), "--api-key", &key])
            .args(["--scenario", "churn", flag, value])
            .output()
            .unwrap();
        assert!(!output.status.success());
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(flag),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `--scenario span` (issue 15's loadgen proof at a tiny size): the generator starts `mooyaho
/// server --span-nodes` and two `mooyaho sfu --max-transports 3`; the publisher and two
/// subscribers fill the first node, the other two are served by the second through a relay
/// link. Every subscriber receives, the report splits latency by node and gives each node's
/// CPU per packet. No timing bound: the figures are in BENCHMARKS.md.
#[test]
fn span_scenario_serves_subscribers_past_a_capped_node_through_a_relay_link() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("span.json");
    let output = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["loadgen", "--quiet", "--scenario", "span"])
        .args(["--subscribers", "4", "--node-cap", "3", "--duration", "3"])
        .args(["--join-rate", "5"])
        .arg("--report")
        .arg(&report_path)
        .env_remove("MOOYAHO_API_KEY")
        .env("RUST_LOG", "error")
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_provenance(&report);
    assert_eq!(report["config"]["scenario"], "span", "{report:#}");
    assert_eq!(report["joined"], 5, "{report:#}");
    assert!(report["lossPercent"].as_f64().unwrap() < 5.0, "{report:#}");
    let span = &report["span"];
    assert_eq!(span["nodeCap"], 3, "{span:#}");
    assert_eq!(span["subscribersDirect"], 2, "{span:#}");
    assert_eq!(span["subscribersRelayed"], 2, "{span:#}");
    for kind in ["directLatencyMs", "relayedLatencyMs"] {
        assert!(
            span[kind]["samples"].as_u64().unwrap() > 0,
            "{kind}: {span:#}"
        );
    }
    let nodes = span["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{span:#}");
    let publishers: Vec<_> = nodes
        .iter()
        .filter(|n| n["publishersNode"] == true)
        .collect();
    assert_eq!(publishers.len(), 1, "{span:#}");
    let (out, inn) = (
        publishers[0]["relayLinksOut"].as_u64(),
        publishers[0]["relayLinksIn"].as_u64(),
    );
    assert_eq!((out, inn), (Some(1), Some(0)), "{span:#}");
    let other = nodes.iter().find(|n| n["publishersNode"] == false).unwrap();
    assert_eq!(other["relayLinksIn"], 1, "{span:#}");
    assert!(stdout.contains("span (cap 3)"), "{stdout}");
}
