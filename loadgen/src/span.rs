//! The `span` scenario (issue 15's proof): one channel across two `mooyaho sfu` nodes capped
//! with `--max-transports`, started with `mooyaho server --span-nodes` by [`crate::fleet`]. The
//! publisher and the first subscribers fill the channel's first node; the rest are served by
//! the second, fed through one relay link. The report splits one-way latency by the node a
//! subscriber receives from (the publisher's node: direct; the other: through the relay), and
//! gives each node's CPU per packet it sent, so the relay's added latency and cost are ratios
//! within one run.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::report::Percentiles;

/// What the span run measured, beside the usual report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanReport {
    /// Each node's `--max-transports`.
    pub node_cap: usize,
    /// Latency of subscribers on the publisher's node, milliseconds.
    pub direct_latency_ms: Percentiles,
    /// Latency of subscribers on the other node (through the relay link), milliseconds.
    pub relayed_latency_ms: Percentiles,
    /// `relayed − direct` at p50 and p99, milliseconds.
    pub added_latency_p50_ms: f64,
    /// See `added_latency_p50_ms`.
    pub added_latency_p99_ms: f64,
    /// Subscribers that received from each kind of node (direct, relayed).
    pub subscribers_direct: usize,
    /// See `subscribers_direct`.
    pub subscribers_relayed: usize,
    /// Each node in the window.
    pub nodes: Vec<SpanNode>,
}

/// One node of the span run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanNode {
    /// Registry id.
    pub id: u64,
    /// Whether the publisher publishes to it.
    pub publishers_node: bool,
    /// Client transports it held at the end of the window (its load report).
    pub transports: u64,
    /// Relay links out and in (its load report).
    pub relay_links_out: u64,
    /// See `relay_links_out`.
    pub relay_links_in: u64,
    /// Process CPU seconds in the window (from /proc).
    pub cpu_seconds: Option<f64>,
    /// Datagrams it sent per second, averaged over the window's load reports.
    pub packets_out_per_second: f64,
    /// CPU microseconds per datagram sent.
    pub cpu_us_per_packet_out: Option<f64>,
}

/// Latency samples by the address a subscriber received from.
#[derive(Debug, Default)]
pub(crate) struct SpanTotals {
    /// The publisher's node's media address (the first publisher's).
    pub(crate) publisher_remote: std::sync::Mutex<Option<SocketAddr>>,
    /// Microsecond samples per sending address, with the subscribers seen there.
    pub(crate) latency_by_remote: std::sync::Mutex<HashMap<SocketAddr, (usize, Vec<u32>)>>,
}

impl SpanTotals {
    pub(crate) fn publisher_at(&self, remote: SocketAddr) {
        self.publisher_remote
            .lock()
            .expect("lock")
            .get_or_insert(remote);
    }

    pub(crate) fn subscriber_samples(&self, remote: SocketAddr, samples: &[u32]) {
        let mut by = self.latency_by_remote.lock().expect("lock");
        let entry = by.entry(remote).or_default();
        entry.0 += 1;
        entry.1.extend_from_slice(samples);
    }

    /// Splits the samples into direct and relayed and builds the report.
    pub(crate) fn report(&self, node_cap: usize, nodes: Vec<SpanNode>) -> SpanReport {
        let publisher = *self.publisher_remote.lock().expect("lock");
        let by = self.latency_by_remote.lock().expect("lock");
        let (mut direct, mut relayed) = (Vec::new(), Vec::new());
        let (mut subscribers_direct, mut subscribers_relayed) = (0, 0);
        for (remote, (subscribers, samples)) in by.iter() {
            if Some(*remote) == publisher {
                subscribers_direct += subscribers;
                direct.extend_from_slice(samples);
            } else {
                subscribers_relayed += subscribers;
                relayed.extend_from_slice(samples);
            }
        }
        let direct_latency_ms = Percentiles::of(direct, 1e-3);
        let relayed_latency_ms = Percentiles::of(relayed, 1e-3);
        SpanReport {
            node_cap,
            added_latency_p50_ms: relayed_latency_ms.p50 - direct_latency_ms.p50,
            added_latency_p99_ms: relayed_latency_ms.p99 - direct_latency_ms.p99,
            direct_latency_ms,
            relayed_latency_ms,
            subscribers_direct,
            subscribers_relayed,
            nodes,
        }
    }
}

impl SpanReport {
    /// One line for a terminal.
    pub fn summary(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "node {}{}: {} transports, links out/in {}/{}, {:.0} pkt/s out, {} µs CPU/pkt",
                    n.id,
                    if n.publishers_node {
                        " (publisher's)"
                    } else {
                        ""
                    },
                    n.transports,
                    n.relay_links_out,
                    n.relay_links_in,
                    n.packets_out_per_second,
                    n.cpu_us_per_packet_out
                        .map_or_else(|| "?".to_owned(), |c| format!("{c:.1}")),
                )
            })
            .collect();
        format!(
            "span (cap {}): {} direct subscribers p50 {:.2} ms p99 {:.2} ms; {} relayed p50 {:.2} ms \
             p99 {:.2} ms; relay adds p50 {:.2} ms p99 {:.2} ms; {}",
            self.node_cap,
            self.subscribers_direct,
            self.direct_latency_ms.p50,
            self.direct_latency_ms.p99,
            self.subscribers_relayed,
            self.relayed_latency_ms.p50,
            self.relayed_latency_ms.p99,
            self.added_latency_p50_ms,
            self.added_latency_p99_ms,
            nodes.join("; ")
        )
    }
}
