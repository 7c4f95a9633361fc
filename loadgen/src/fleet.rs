//! The `failover` scenario's deployment: one `mooyaho server` and several `mooyaho sfu` nodes
//! started from the generator's own binary on free loopback ports, each stopped by its PID
//! (SIGKILL) when the fleet drops — and one of them killed on purpose mid-run.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running signaling server and its SFU nodes.
pub struct Fleet {
    /// The signaling base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Its REST API key (random, this run's only).
    pub api_key: String,
    server: Child,
    nodes: Vec<FleetNode>,
}

/// One `mooyaho sfu` process and the registry id it registered under.
struct FleetNode {
    id: u64,
    child: Child,
}

impl Fleet {
    /// Starts `mooyaho server` and `nodes` SFU nodes (one worker each) from `binary`, the nodes
    /// registering themselves, and waits until signaling reports every node healthy.
    pub async fn start(binary: &Path, nodes: usize) -> anyhow::Result<Self> {
        Self::start_with(binary, nodes, &[], &[]).await
    }

    /// [`Self::start`] with extra arguments for the server and for every node (`span`:
    /// `--span-nodes`, and `--max-transports N`).
    pub async fn start_with(
        binary: &Path,
        nodes: usize,
        server_extra: &[&str],
        node_extra: &[&str],
    ) -> anyhow::Result<Self> {
        let api_key = random_secret();
        let cluster_secret = random_secret();
        let mut server_args = vec![
            "server",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            &api_key,
            "--cluster-secret",
            &cluster_secret,
        ];
        server_args.extend_from_slice(server_extra);
        let mut server = spawn(binary, &server_args)?;
        let lines = read_start_lines(&mut server, |line| line.contains("WebSocket:"));
        let Some(addr) = lines.iter().find_map(|l| {
            l.strip_prefix("mooyaho listening on http://")
                .and_then(|a| a.parse::<SocketAddr>().ok())
        }) else {
            stop(&mut server);
            bail!("mooyaho server did not start: {lines:?}");
        };
        let url = format!("http://{addr}");
        let mut fleet = Self {
            url: url.clone(),
            api_key: api_key.clone(),
            server,
            nodes: Vec::new(),
        };
        for _ in 0..nodes {
            let mut node_args = vec![
                "sfu",
                "--cluster-secret",
                &cluster_secret,
                "--workers",
                "1",
                "--control-listen",
                "127.0.0.1:0",
                "--register-url",
                &url,
                "--api-key",
                &api_key,
            ];
            node_args.extend_from_slice(node_extra);
            let mut child = spawn(binary, &node_args)?;
            let lines = read_start_lines(&mut child, |line| line.starts_with("registered:"));
            let id = lines.iter().find_map(|l| {
                l.strip_prefix("registered:")
                    .and_then(|rest| rest.trim().strip_prefix("id "))
                    .and_then(|n| n.parse().ok())
            });
            let Some(id) = id else {
                stop(&mut child);
                bail!("mooyaho sfu did not start and register: {lines:?}");
            };
            fleet.nodes.push(FleetNode { id, child });
        }
        fleet.wait_healthy().await?;
        Ok(fleet)
    }

    /// Every node's registry id, in start order.
    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The PID of node `id`, while it runs.
    pub fn node_pid(&self, id: u64) -> Option<u32> {
        self.nodes.iter().find(|n| n.id == id).map(|n| n.child.id())
    }

    /// SIGKILLs node `id` (by its PID) and reaps it.
    pub fn kill_node(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id} in this fleet"))?;
        node.child
            .kill()
            .with_context(|| format!("SIGKILL to node {id}"))?;
        let _ = node.child.wait();
        Ok(())
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let rest = mooyaho_server_sdk::Mooyaho::new(self.url.as_str(), self.api_key.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let wanted = self.node_ids();
        loop {
            let servers = rest.list_sfu_servers().await.unwrap_or_default();
            let healthy = wanted
                .iter()
                .all(|id| servers.iter().any(|s| s.id == *id && s.health == "healthy"));
            if healthy {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("SFU nodes {wanted:?} not all healthy within 20 s: {servers:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            stop(&mut node.child);
        }
        stop(&mut self.server);
    }
}

/// `binary args…` with stdout piped (its start lines are read), errors only on stderr, and none
/// of the generator's own `MOOYAHO_*` settings (they would configure the fleet behind its back).
fn spawn(binary: &Path, args: &[&str]) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MOOYAHO_") {
            command.env_remove(name);
        }
    }
    command
        .spawn()
        .with_context(|| format!("starting {} {}", binary.display(), args[0]))
}

/// The first stdout lines of `child`, trimmed, up to the one `done` accepts (at most 16, or
/// until it closes stdout); stdout is drained in the background afterwards.
fn read_start_lines(child: &mut Child, done: impl Fn(&str) -> bool) -> Vec<String> {
    let Some(stdout) = child.stdout.take() else {
        return Vec::new();
    };
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    while lines.len() < 16 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim().to_owned();
        let finished = done(&line);
        lines.push(line);
        if finished {
            break;
        }
    }
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    lines
}

/// SIGKILL and reap (nothing to do if it already exited).
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// 32 random hex characters: this run's API key and cluster secret.
fn random_secret() -> String {
    format!("{:032x}", rand::random::<u128>())
}
