//! The `signaling` scenario: many idle WebSocket sessions against one signaling server, as open
//! but quiet browser tabs hold them: each connects, reads `connected` and pings on the SDK's
//! heartbeat, nothing else. It measures what one session costs the server (RSS and CPU of the
//! process named by `server_pid`), which bounds how many users one instance can hold.
//!
//! The server limits WebSocket connections per client address (64 by default), so sessions
//! connect from many loopback source addresses (`127.0.x.y`, all local on Linux), at most
//! `per_source` from each.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::provenance::Provenance;
use crate::report::rss_mib;
use mooyaho_net::cpu::process_cpu_seconds;

/// What to run.
#[derive(Clone, Debug)]
pub struct IdleConfig {
    /// The signaling server's base URL (`http://host:port`).
    pub url: String,
    /// Sessions to open.
    pub sessions: usize,
    /// Sessions per source address (keep it at or under the server's per-IP limit).
    pub per_source: usize,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// Time between a session's pings (the browser SDK's default is 5 s).
    pub heartbeat: Duration,
    /// How long every session stays open once all are connected (the CPU window).
    pub hold: Duration,
    /// The server process to measure.
    pub server_pid: Option<u32>,
}

/// What one run measured.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleReport {
    /// The code, machine and command behind this report.
    pub provenance: Provenance,
    pub sessions: usize,
    pub connected: u64,
    pub failed: u64,
    pub sources: usize,
    pub connect_seconds: f64,
    pub connect_ms_p50: f64,
    pub connect_ms_p99: f64,
    pub hold_seconds: f64,
    pub pings: u64,
    pub server_rss_before_mib: Option<f64>,
    pub server_rss_connected_mib: Option<f64>,
    /// (RSS with every session open − RSS before) / connected sessions.
    pub kib_per_session: Option<f64>,
    /// The server's CPU over the hold window, in percent of one core.
    pub server_cpu_percent_idle: Option<f64>,
    pub first_error: Option<String>,
}

impl IdleReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| {
            v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}{unit}"))
        };
        format!(
            "signaling: {}/{} sessions from {} sources in {:.1} s (connect p50 {:.1} ms, p99 {:.1} ms), \
             {} per session, server CPU {} while idle, {} failed{}",
            self.connected,
            self.sessions,
            self.sources,
            self.connect_seconds,
            self.connect_ms_p50,
            self.connect_ms_p99,
            opt(self.kib_per_session, " KiB"),
            opt(self.server_cpu_percent_idle, " %"),
            self.failed,
            self.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
        )
    }
}

/// The `index`-th source address: 127.0.0.1, 127.0.0.2, … 127.0.0.254, 127.0.1.1, …
fn source(index: usize) -> Ipv4Addr {
    let (high, low) = (index / 254, index % 254 + 1);
    Ipv4Addr::new(127, 0, (high % 256) as u8, low as u8)
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    failed: AtomicU64,
    pings: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    connect_us: std::sync::Mutex<Vec<u64>>,
}

impl Counters {
    fn fail(&self, error: impl ToString) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| error.to_string());
    }
}

/// One session: connect from `from`, read `connected`, ping until `stop` turns true.
async fn session(
    server: SocketAddr,
    ws_url: String,
    from: Ipv4Addr,
    heartbeat: Duration,
    counters: Arc<Counters>,
    connecting: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let permit = connecting.acquire().await;
    let started = Instant::now();
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        let stream = socket.connect(server).await?;
        let (mut ws, _) = tokio_tungstenite::client_async(ws_url.as_str(), stream).await?;
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.contains("\"connected\"") => Ok(ws),
            other => bail!("expected `connected`, got {other:?}"),
        }
    };
    let mut ws = match tokio::time::timeout(Duration::from_secs(30), connect).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return counters.fail(format!("{from}: {e}")),
        Err(_) => return counters.fail(format!("{from}: connect timed out")),
    };
    drop(permit);
    let took = started.elapsed().as_micros() as u64;
    counters
        .connect_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(took);
    counters.connected.fetch_add(1, Ordering::Relaxed);
    // Spread the pings: sessions that connected together must not ping together forever.
    let offset = Duration::from_micros(took % heartbeat.as_micros().max(1) as u64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, heartbeat);
    let mut request = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                request += 1;
                let ping = json!({"type": "ping", "requestId": request}).to_string();
                if ws.send(Message::Text(ping.into())).await.is_err() {
                    return counters.fail(format!("{from}: socket closed by the server"));
                }
                counters.pings.fetch_add(1, Ordering::Relaxed);
            }
            frame = ws.next() => match frame {
                Some(Ok(_)) => {}
                _ => return counters.fail(format!("{from}: socket closed by the server")),
            },
        }
    }
    let _ = ws.close(None).await;
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

/// Opens every session, holds them for `config.hold`, closes them, and reports.
pub async fn run(config: IdleConfig, progress: bool) -> anyhow::Result<IdleReport> {
    let base = reqwest::Url::parse(&config.url).context("--url")?;
    let server = base
        .socket_addrs(|| Some(80))
        .context("resolving --url")?
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .context("--url has no IPv4 address (sources are loopback IPv4)")?;
    let ws_url = format!(
        "{}/websocket",
        config.url.trim_end_matches('/').replacen("http", "ws", 1)
    );
    let per_source = config.per_source.max(1);
    let sources = config.sessions.div_ceil(per_source);
    if sources > 254 * 256 {
        bail!(
            "{} sessions need more than 65,024 source addresses",
            config.sessions
        );
    }

    let provenance = Provenance::collect();
    let counters = Arc::new(Counters::default());
    let connecting = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let rss_before = config.server_pid.and_then(rss_mib);
    let started = Instant::now();
    let tasks: Vec<_> = (0..config.sessions)
        .map(|i| {
            tokio::spawn(session(
                server,
                ws_url.clone(),
                source(i / per_source),
                config.heartbeat,
                counters.clone(),
                connecting.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let settled =
        |c: &Counters| c.connected.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed);
    let mut last_print = Instant::now();
    while settled(&counters) < config.sessions as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if progress && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "  {} connected, {} failed",
                counters.connected.load(Ordering::Relaxed),
                counters.failed.load(Ordering::Relaxed)
            );
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    // Let the server finish the sessions' setup work before sampling.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = config.server_pid.and_then(rss_mib);
    let cpu_start = config.server_pid.and_then(|p| process_cpu_seconds(Some(p)));
    let hold_started = Instant::now();
    tokio::time::sleep(config.hold).await;
    let hold_seconds = hold_started.elapsed().as_secs_f64();
    let cpu_end = config.server_pid.and_then(|p| process_cpu_seconds(Some(p)));
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }

    let connected = counters.connected.load(Ordering::Relaxed);
    let mut connect_us = std::mem::take(
        &mut *counters
            .connect_us
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    connect_us.sort_unstable();
    let kib_per_session = match (rss_before, rss_connected) {
        (Some(before), Some(after)) if connected > 0 => {
            Some((after - before) * 1024.0 / connected as f64)
        }
        _ => None,
    };
    let server_cpu_percent_idle = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some((b - a) / hold_seconds * 100.0),
        _ => None,
    };
    let first_error = counters
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(IdleReport {
        provenance,
        sessions: config.sessions,
        connected,
        failed: counters.failed.load(Ordering::Relaxed),
        sources,
        connect_seconds,
        connect_ms_p50: percentile(&connect_us, 0.5),
        connect_ms_p99: percentile(&connect_us, 0.99),
        hold_seconds,
        pings: counters.pings.load(Ordering::Relaxed),
        server_rss_before_mib: rss_before,
        server_rss_connected_mib: rss_connected,
        kib_per_session,
        server_cpu_percent_idle,
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_walk_loopback_addresses_without_network_or_broadcast_octets() {
        assert_eq!(source(0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source(253), Ipv4Addr::new(127, 0, 0, 254));
        assert_eq!(source(254), Ipv4Addr::new(127, 0, 1, 1));
        assert!(
            (0..2000)
                .map(source)
                .all(|ip| ip.is_loopback() && ip.octets()[3] != 0 && ip.octets()[3] != 255)
        );
    }

    #[test]
    fn percentiles_of_connect_times_are_in_milliseconds() {
        let sorted = [1000, 2000, 3000, 4000, 100_000];
        assert_eq!(percentile(&sorted, 0.5), 3.0);
        assert_eq!(percentile(&sorted, 0.99), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
