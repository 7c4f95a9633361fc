//! The `churn` scenario's movers: while the steady members of a fan-out carry media, short-lived
//! subscribers join at a fixed rate, receive for a while, and leave — the join and leave path
//! under way all the time, as in a real service. They count into their own [`Totals`], so the
//! steady members' loss stays their own.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use crate::Totals;
use crate::participant::{Backend, Continuity, Run, Subscription, joined};
use crate::report::Percentiles;
use crate::signal::Signal;

/// How the movers come and go.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChurnConfig {
    /// Joins per second (each one later leaves).
    pub per_second: f64,
    /// How long each mover stays, receiving, before it leaves.
    pub stay: Duration,
}

/// What the movers did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChurnReport {
    pub per_second: f64,
    pub stay_seconds: f64,
    /// Joins started in the window.
    pub attempted: u64,
    /// Joins that got as far as a connected receiving transport.
    pub joined: u64,
    /// Joins that failed (refused, timed out, transport never connected), with the first errors.
    pub failed: u64,
    pub errors: Vec<String>,
    /// Movers that left again (`leave`, then the socket closed).
    pub left: u64,
    /// Join time of the movers: WebSocket open → receiving transport connected, milliseconds.
    pub join_ms: Percentiles,
    /// SRTP-verified packets the movers received while they stayed.
    pub packets_received: u64,
    /// The node's transports (its own load reports) once every mover left: how many at the
    /// first and last look, and after how long they were down to the steady members' (none:
    /// not within the watch — a leak, or a node far behind).
    #[serde(flatten)]
    pub settle: Settle,
}

/// The node's transports after the movers left.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Settle {
    /// At the first load report read after the last mover left.
    pub node_transports_after: Option<u64>,
    /// At the last one read.
    pub node_transports_final: Option<u64>,
    /// The steady members' transports (one each).
    pub steady_transports: u64,
    /// Seconds from the last leave until the node reported only those.
    pub node_settle_seconds: Option<f64>,
}

/// Reads the node's load report every 500 ms for up to `within` until its transports are down
/// to `steady` (one per steady member).
pub(crate) async fn watch_settle(
    rest: &mooyaho_server_sdk::Mooyaho,
    steady: u64,
    within: Duration,
) -> Settle {
    let started = Instant::now();
    let mut settle = Settle {
        steady_transports: steady,
        ..Settle::default()
    };
    loop {
        if let Some(load) = crate::report::sfu_load(rest).await {
            settle.node_transports_after.get_or_insert(load.transports);
            settle.node_transports_final = Some(load.transports);
            if load.transports <= steady {
                settle.node_settle_seconds = Some(started.elapsed().as_secs_f64());
                return settle;
            }
        }
        if started.elapsed() >= within {
            return settle;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl ChurnReport {
    pub(crate) fn build(
        churn: ChurnConfig,
        totals: &Totals,
        attempted: u64,
        left: u64,
        settle: Settle,
    ) -> Self {
        Self {
            per_second: churn.per_second,
            stay_seconds: churn.stay.as_secs_f64(),
            attempted,
            joined: totals.joined.load(Ordering::Relaxed),
            failed: totals.failed.load(Ordering::Relaxed),
            errors: totals.errors.lock().expect("lock").clone(),
            left,
            join_ms: Percentiles::of(totals.join_ms.lock().expect("lock").clone(), 1.0),
            packets_received: totals.received.load(Ordering::Relaxed),
            settle,
        }
    }

    /// One line for a terminal.
    pub fn summary(&self) -> String {
        format!(
            "churn: {:.1} joins/s staying {:.1} s: {} started, {} joined, {} failed, {} left; \
             mover join p50 {:.0} ms p99 {:.0} ms; {} packets received by movers; node \
             transports after they left: {} → {} (steady {}), settled in {}",
            self.per_second,
            self.stay_seconds,
            self.attempted,
            self.joined,
            self.failed,
            self.left,
            self.join_ms.p50,
            self.join_ms.p99,
            self.packets_received,
            show(self.settle.node_transports_after),
            show(self.settle.node_transports_final),
            self.settle.steady_transports,
            self.settle
                .node_settle_seconds
                .map_or_else(|| "no (watched 10 s)".to_owned(), |s| format!("{s:.1} s")),
        )
    }
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |n| n.to_string())
}

/// Starts a mover every `1 / per_second` until `until`; returns the movers' tasks (each yields
/// whether it left) and how many were started.
/// `movers` counts in its own totals.
pub(crate) async fn drive(
    movers: Run,
    backend: Backend,
    until: Instant,
) -> Vec<tokio::task::JoinHandle<bool>> {
    let gap = Duration::from_secs_f64(1.0 / movers.config.churn.per_second.max(0.01));
    let mut next = Instant::now();
    let mut tasks = Vec::new();
    while next < until {
        tokio::time::sleep_until(next.into()).await;
        let name = format!("churn-{}", tasks.len());
        let (run, backend, named) = (movers.clone(), backend.clone(), name.clone());
        let task =
            movers.spawn_participant(name, async move { mover(&run, &backend, &named).await });
        tasks.push(task);
        next += gap;
    }
    tasks
}

/// One mover: joins and subscribes, receives for `stay` (or until the run stops), leaves.
async fn mover(run: &Run, backend: &Backend, name: &str) -> anyhow::Result<()> {
    let Backend::Mooyaho {
        rest,
        ws_url,
        channel,
    } = backend
    else {
        anyhow::bail!("the churn scenario needs the mooyaho target");
    };
    let started = Instant::now();
    let mut signal = Signal::join(ws_url, rest, channel, name).await?;
    let offer = tokio::time::timeout(Duration::from_secs(20), signal.next_offer())
        .await
        .context("no subscribe offer within 20 s")??;
    let continuity = Arc::new(Mutex::new(Continuity::default()));
    let subscription = Subscription::start(&mut signal, &offer, run, &continuity, false).await?;
    joined(&run.totals, started);
    let leave_at = (Instant::now() + run.config.churn.stay).min(*run.stop_at.lock().expect("lock"));
    tokio::time::sleep_until(leave_at.into()).await;
    subscription.detach().await??;
    signal.send(&json!({ "type": "leave" })).await?;
    signal.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_takes_the_movers_own_counters() {
        let movers = Totals::default();
        movers.joined.store(3, Ordering::Relaxed);
        movers.failed.store(1, Ordering::Relaxed);
        movers.received.store(900, Ordering::Relaxed);
        *movers.join_ms.lock().unwrap() = vec![40, 60, 500];
        movers
            .errors
            .lock()
            .unwrap()
            .push("churn-3: refused".into());
        let churn = ChurnConfig {
            per_second: 2.0,
            stay: Duration::from_millis(1500),
        };
        let settle = Settle {
            node_transports_after: Some(9),
            node_transports_final: Some(7),
            steady_transports: 7,
            node_settle_seconds: Some(1.5),
        };
        let report = ChurnReport::build(churn, &movers, 4, 3, settle);
        assert_eq!(
            (report.attempted, report.joined, report.failed, report.left),
            (4, 3, 1, 3)
        );
        assert_eq!((report.join_ms.p50, report.join_ms.p99), (60.0, 500.0));
        assert_eq!(report.stay_seconds, 1.5);
        assert_eq!(report.packets_received, 900);
        assert_eq!(report.errors, ["churn-3: refused"]);
        let line = report.summary();
        assert!(
            line.contains("4 started, 3 joined, 1 failed, 3 left"),
            "{line}"
        );
        assert!(
            line.contains("transports after they left: 9 → 7 (steady 7), settled in 1.5 s"),
            "{line}"
        );
    }
}
