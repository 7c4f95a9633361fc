//! aiortc (Python, from PyPI, pinned in `test-support/aiortc/requirements.txt`) as an
//! independent WebRTC stack in tests: each peer is `python test-support/aiortc/peer.py <role>`,
//! signaled with newline-delimited JSON over its stdin/stdout (the roles and messages are
//! described at the top of `peer.py`). The interpreter is `$MOOYAHO_PYTHON` or the workspace's
//! `.venv`, which `./scripts/test.sh` creates.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Bound on a peer's answer to `{"report": true}`.
const REPORT_WITHIN: Duration = Duration::from_secs(20);

/// The Python interpreter with aiortc: `$MOOYAHO_PYTHON`, else the workspace's `.venv`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("MOOYAHO_PYTHON") {
        return python.into();
    }
    let venv = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python"));
    assert!(
        venv.exists(),
        "{} is missing: run ./scripts/test.sh (it creates the venv with aiortc), or set \
         MOOYAHO_PYTHON to a Python with aiortc installed",
        venv.display()
    );
    venv
}

/// One aiortc peer process; killed (by its PID) when dropped.
pub struct PyPeer {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl PyPeer {
    /// Starts `peer.py <role>`. Start every interpreter a test needs before signaling the
    /// first: importing aiortc takes a while.
    pub fn spawn(role: &str, name: &str) -> anyhow::Result<Self> {
        let python = python();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/aiortc/peer.py");
        let mut child = Command::new(&python)
            .arg(script)
            .arg(role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (run ./scripts/test.sh to create the venv with aiortc)",
                    python.display()
                )
            })?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        Ok(Self {
            name: name.to_owned(),
            child,
            stdin,
            stdout,
        })
    }

    pub async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        let line = format!("{message}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("{}: writing to the peer", self.name))?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The next message, which must carry `key`; returns its value.
    pub async fn recv(&mut self, key: &str, within: Duration) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(within, self.stdout.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("{}: no {key:?} within {within:?}", self.name))??
            .with_context(|| {
                format!(
                    "{}: peer exited before sending {key:?} (see its stderr above)",
                    self.name
                )
            })?;
        let mut message: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: not JSON: {line:.200}", self.name))?;
        match message.get_mut(key) {
            Some(value) => Ok(value.take()),
            None => anyhow::bail!("{}: expected {key:?}, got {line:.200}", self.name),
        }
    }

    /// Asks for the peer's final report (what it sent or received) and returns it.
    pub async fn report(&mut self) -> anyhow::Result<Value> {
        self.send(json!({ "report": true })).await?;
        self.recv("report", REPORT_WITHIN).await
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        // Sends SIGKILL to the child's PID if it is still running.
        let _ = self.child.start_kill();
    }
}
