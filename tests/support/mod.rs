//! Shared test harness: real `mooyaho` processes and a real `redis-server`; the WebSocket and REST
//! clients come from `mooyaho-test-support`.
//! Every process is started on a free loopback port and killed by PID when its guard drops.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod control;

pub use mooyaho_test_support::ws::{Rest, Ws};
use serde_json::{Value, json};

pub const API_KEY: &str = "test-api-key-0123456789";
const WAIT: Duration = Duration::from_secs(5);

/// A running `mooyaho` process.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub api_key: String,
    pub stdout_lines: Vec<String>,
}

impl Server {
    /// `mooyaho server` on a free port with the test key and extra arguments.
    pub fn start(extra: &[&str]) -> Self {
        let mut args = vec!["server", "--listen", "127.0.0.1:0", "--api-key", API_KEY];
        args.extend_from_slice(extra);
        Self::spawn(&args, None, API_KEY)
    }

    /// `mooyaho <args>` in `cwd`; `api_key` is what REST calls will use.
    pub fn spawn(args: &[&str], cwd: Option<&Path>, api_key: &str) -> Self {
        Self::spawn_with_env(args, cwd, api_key, &[])
    }

    /// [`Self::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        args: &[&str],
        cwd: Option<&Path>,
        api_key: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mooyaho"));
        command
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().expect("spawn mooyaho");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut addr = None;
        // The binary prints its URLs right after binding; read until the key line (dev) or the
        // WebSocket line (server).
        for _ in 0..8 {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let line = line.trim_end().to_owned();
            if let Some(rest) = line.strip_prefix("mooyaho listening on http://") {
                addr = Some(rest.parse().expect("listen address"));
            }
            let done =
                line.contains("WebSocket:") && !args.contains(&"dev") || line.contains("API key:");
            lines.push(line);
            if done {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        let addr = addr.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("mooyaho did not start: {lines:?}")
        });
        Self {
            child,
            addr,
            api_key: api_key.to_owned(),
            stdout_lines: lines,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/websocket", self.addr)
    }

    pub fn rest(&self) -> Rest {
        Rest {
            http: reqwest::Client::new(),
            base: format!("http://{}", self.addr),
            key: self.api_key.clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status once the process has exited by itself (within `within`), else `None`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, within)
    }

    /// `mooyaho dev` on a free port in `dir` with `--workers <workers>` and extra environment
    /// variables; the API key is read from its output.
    pub fn dev_with_env(dir: &Path, workers: &str, env: &[(&str, &str)]) -> Self {
        let mut server = Self::spawn_with_env(
            &["dev", "--listen", "127.0.0.1:0", "--workers", workers],
            Some(dir),
            "",
            env,
        );
        server.read_generated_api_key();
        server
    }

    /// Takes the API key `mooyaho dev` generated (and printed) as this server's key.
    pub fn read_generated_api_key(&mut self) {
        self.api_key = self
            .stdout_lines
            .iter()
            .find_map(|line| line.split_once("API key:").map(|(_, key)| key.trim()))
            .unwrap_or_else(|| panic!("no API key line in {:?}", self.stdout_lines))
            .to_owned();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `mooyaho sfu` node (killed by PID on drop).
pub struct SfuNode {
    child: Child,
    /// QUIC control address.
    pub control: SocketAddr,
    /// Control certificate fingerprint, as printed.
    pub fingerprint: String,
    /// Media UDP addresses.
    pub media: Vec<SocketAddr>,
    /// Registry id, when started with `--register-url`.
    pub id: Option<u64>,
}

impl SfuNode {
    /// `mooyaho sfu` on free loopback ports with one worker; registers itself with `register`
    /// (a signaling server) when given.
    pub fn start(secret: &str, register: Option<&Server>) -> Self {
        Self::start_with(secret, register, &[])
    }

    /// [`Self::start`] with extra arguments (`--data-dir`, …).
    pub fn start_with(secret: &str, register: Option<&Server>, extra: &[&str]) -> Self {
        Self::start_with_env(secret, register, extra, &[])
    }

    /// [`Self::start_with`] with extra environment variables (debug-build test hooks such as
    /// `MOOYAHO_DEBUG_WORKER_WEDGE`).
    pub fn start_with_env(
        secret: &str,
        register: Option<&Server>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut args: Vec<String> = ["sfu", "--cluster-secret", secret, "--workers", "1"]
            .map(str::to_owned)
            .to_vec();
        if !extra.contains(&"--control-listen") {
            args.extend(["--control-listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        if let Some(server) = register {
            args.extend([
                "--register-url".to_owned(),
                format!("http://{}", server.addr),
                "--api-key".to_owned(),
                server.api_key.clone(),
            ]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mooyaho sfu");
        let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
        let (mut control, mut fingerprint, mut media, mut id) = (None, None, Vec::new(), None);
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let line = line.trim().to_owned();
            if let Some(rest) = line.strip_prefix("mooyaho sfu control on ") {
                control = rest.parse().ok();
            } else if let Some(rest) = line.strip_prefix("fingerprint:") {
                fingerprint = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("media:") {
                media.extend(
                    rest.trim()
                        .strip_prefix("udp ")
                        .and_then(|a| a.parse::<SocketAddr>().ok()),
                );
            } else if let Some(rest) = line.strip_prefix("registered:") {
                id = rest.trim().strip_prefix("id ").and_then(|n| n.parse().ok());
            }
            lines.push(line);
            let done = !media.is_empty() && (register.is_none() || id.is_some());
            if done || lines.len() > 16 {
                break;
            }
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        match (control, fingerprint) {
            (Some(control), Some(fingerprint))
                if !media.is_empty() && (register.is_none() || id.is_some()) =>
            {
                Self {
                    child,
                    control,
                    fingerprint,
                    media,
                    id,
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mooyaho sfu did not start: {lines:?}")
            }
        }
    }

    /// The registry id (the node must have been started with a register server).
    pub fn id(&self) -> u64 {
        self.id.expect("node registered itself")
    }

    /// Kills the node (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (the node drains, then exits); does not wait.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// The exit status once the node has exited by itself (within `within`), else `None`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, within)
    }
}

impl Drop for SfuNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `redis-server` on a free loopback port with append-only persistence in a temp dir.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Started with extra configuration arguments (`--requirepass`, `--user`, `--tls-port`…).
    pub fn start_with(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut redis = Self {
            child: None,
            port: free_port(),
            dir: tmp.path().to_owned(),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            _tmp: tmp,
        };
        redis.launch();
        redis
    }

    /// The server's directory (free for test files such as certificates).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn launch(&mut self) {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary} (the test script installs it): {e}"));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if ping(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING on {}", self.port);
    }

    /// Kills the server (SIGKILL: no graceful save; the AOF is fsynced per write).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // A server with a password answers `-NOAUTH`: it is up all the same.
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || buf.starts_with(b"-NOAUTH"))
}

/// Polls `check` every 50 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits until every client (having handled `restarts` restarts: its subscribe PeerConnection
/// is new since each) receives audio and video from every other one on its current subscribe
/// PeerConnection; returns how long that took from `since`, or `None` after `within`.
pub async fn media_flows_between(
    clients: &[mooyaho_test_support::sfu_client::SfuClient],
    restarts: usize,
    since: std::time::Instant,
    within: Duration,
) -> Option<Duration> {
    let ids: Vec<String> = clients.iter().map(|c| c.id.clone()).collect();
    let flowing = eventually(within, || async {
        for client in clients {
            if client.sub_state.borrow().recoveries < restarts {
                return false;
            }
            let received = client.received().await;
            let all = ids.iter().filter(|id| **id != client.id).all(|id| {
                received
                    .get(id)
                    .is_some_and(|m| !m.audio.is_empty() && !m.video.is_empty())
            });
            if !all {
                return false;
            }
        }
        true
    })
    .await;
    flowing.then(|| since.elapsed())
}

/// Audio payloads each client has received from each other one so far.
pub async fn audio_received(clients: &[mooyaho_test_support::sfu_client::SfuClient]) -> Vec<usize> {
    let mut counts = Vec::new();
    for client in clients {
        let received = client.received().await;
        for other in clients.iter().filter(|o| o.id != client.id) {
            counts.push(received.get(&other.id).map_or(0, |m| m.audio.len()));
        }
    }
    counts
}

/// The hostile client of attack tests: a participant with real keys and raw control of every
/// datagram (`mooyaho_loadgen::raw`). Not every test binary that includes this module uses it.
#[allow(unused_imports)]
pub use mooyaho_loadgen::raw;

impl Server {
    /// `mooyaho dev` (embedded SFU node) in `dir` on a free port, `--workers 1` unless `extra`
    /// says otherwise; `api_key` is the key it generated.
    pub fn dev(dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["dev", "--listen", "127.0.0.1:0"];
        if !extra.contains(&"--workers") {
            args.extend_from_slice(&["--workers", "1"]);
        }
        args.extend_from_slice(extra);
        let mut server = Self::spawn(&args, Some(dir), "");
        server.read_generated_api_key();
        server
    }
}

/// `child`'s exit status once it has exited by itself (within `within`), else `None`.
fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The registry id of the one SFU node `rest`'s server knows (`mooyaho dev`'s embedded node),
/// once it reports healthy (10 s at most).
pub async fn healthy_node(rest: &Rest) -> u64 {
    let healthy = eventually(Duration::from_secs(10), || async {
        let (_, nodes) = rest.call("GET", "/sfu-servers", None).await;
        nodes
            .as_array()
            .is_some_and(|n| n.len() == 1 && n[0]["health"] == "healthy")
    })
    .await;
    let (_, nodes) = rest.call("GET", "/sfu-servers", None).await;
    assert!(healthy, "{nodes}");
    nodes[0]["id"].as_u64().unwrap()
}

/// The node's dropped-and-counted hostile packets, as its last load report says.
pub async fn security_drops(rest: &Rest, node: u64) -> u64 {
    let (_, view) = rest
        .call("GET", &format!("/sfu-servers/{node}"), None)
        .await;
    view["load"]["securityDrops"].as_u64().unwrap_or(0)
}

/// Runs `rounds` resume races: each round a session drops, then two fresh sockets (one on each
/// URL) present its token at once. Panics unless exactly one wins every round and the other gets
/// `invalid_token`.
pub async fn race_resumes(url_one: &str, url_two: &str, rounds: usize) {
    for round in 0..rounds {
        let owner = Ws::connect(url_one).await;
        let (id, token) = (owner.id.clone(), owner.token.clone());
        owner.abort();
        let mut one = Ws::connect(url_one).await;
        let mut two = Ws::connect(url_two).await;
        let reuse = json!({"type": "reuseId", "id": id, "token": token});
        let (first, second) = tokio::join!(one.request(reuse.clone()), two.request(reuse));
        let won: Vec<&Value> = [&first, &second]
            .into_iter()
            .filter(|r| r["type"] == "reuseIdSuccess")
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {first} / {second}");
        assert_eq!(won[0]["id"], json!(id), "round {round}");
        let lost = if first["type"] == "reuseIdSuccess" {
            &second
        } else {
            &first
        };
        assert_eq!(lost["type"], "error", "round {round}: {lost}");
        assert_eq!(lost["code"], "invalid_token", "round {round}: {lost}");
    }
}

/// Runs `mooyaho server` expecting it to refuse to start; returns its whole output.
pub fn refused_start(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["server", "--listen", "127.0.0.1:0", "--api-key", API_KEY])
        .args(extra)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn mooyaho");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mooyaho server {extra:?} kept running; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    std::fs::read_to_string(out).unwrap() + &std::fs::read_to_string(err).unwrap()
}
