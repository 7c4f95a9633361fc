//! The media plane in `/metrics`: each SFU node's counters, as its last load report carried them,
//! exported per node (`mooyaho_sfu_*{node="<id>"}`). Nodes count; signaling only renders, so a
//! fleet of `mooyaho server` + `mooyaho sfu` processes is scraped at any signaling instance
//! (every instance holds a control link to every node) and `mooyaho dev` shows its embedded node.

use std::sync::Mutex;

use mooyaho_control::{HistogramCounts, Load};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// A counter of [`mooyaho_control::MediaCounters`]: its name (before `_total`), help and value.
type CounterField = (&'static str, &'static str, fn(&Load) -> u64);

/// Every media counter a node reports, in `/metrics` order.
const COUNTERS: &[CounterField] = &[
    ("sfu_packets_in", "UDP datagrams the node received", |l| {
        l.media.packets_in
    }),
    ("sfu_packets_out", "UDP datagrams the node sent", |l| {
        l.media.packets_out
    }),
    (
        "sfu_bytes_in",
        "Bytes of the datagrams the node received",
        |l| l.media.bytes_in,
    ),
    (
        "sfu_bytes_out",
        "Bytes of the datagrams the node sent",
        |l| l.media.bytes_out,
    ),
    (
        "sfu_rtp_in",
        "RTP packets decrypted and handed to forwarding",
        |l| l.media.rtp_in,
    ),
    (
        "sfu_rtp_forwarded",
        "RTP copies forwarded to subscribers",
        |l| l.media.rtp_forwarded,
    ),
    ("sfu_nacks", "Sequence numbers NACKed by subscribers", |l| {
        l.media.nacks_received
    }),
    (
        "sfu_nacks_sent",
        "Sequence numbers the node NACKed toward publishers",
        |l| l.media.nacks_sent,
    ),
    (
        "sfu_retransmits",
        "Retransmissions (RTX or resends) sent to subscribers",
        |l| l.media.retransmits_sent,
    ),
    (
        "sfu_retransmit_misses",
        "NACKed packets no longer buffered",
        |l| l.media.retransmit_misses,
    ),
    (
        "sfu_retransmits_repeated",
        "NACKed packets refused as repeats",
        |l| l.media.retransmits_repeated,
    ),
    (
        "sfu_retransmits_over_budget",
        "NACKed packets refused over the subscriber's budget",
        |l| l.media.retransmits_over_budget,
    ),
    (
        "sfu_retransmits_unrepeatable",
        "NACKed packets that could not be resent byte-identical",
        |l| l.media.retransmits_unrepeatable,
    ),
    ("sfu_plis", "PLIs the node sent to publishers", |l| {
        l.media.plis_sent
    }),
    (
        "sfu_keyframe_requests",
        "PLI/FIR received from subscribers",
        |l| l.media.keyframe_requests_received,
    ),
    (
        "sfu_rtp_waiting_for_keyframe",
        "RTP copies not sent while their subscription waits for a keyframe",
        |l| l.media.rtp_waiting_for_keyframe,
    ),
    (
        "sfu_bwe_pauses",
        "Video subscriptions paused: not even their lowest layer fit the downlink estimate",
        |l| l.media.bwe_pauses,
    ),
    (
        "sfu_bwe_resumes",
        "Video subscriptions resumed after a bandwidth pause",
        |l| l.media.bwe_resumes,
    ),
    (
        "sfu_probe_packets",
        "Probe packets sent to measure subscribers' downlink headroom",
        |l| l.media.probe_packets_sent,
    ),
    (
        "sfu_sr_throttled",
        "Publisher sender reports not translated (flood throttle)",
        |l| l.media.sr_throttled,
    ),
    (
        "sfu_rtp_over_bitrate",
        "RTP packets dropped over their track's bitrate cap",
        |l| l.media.rtp_over_bitrate,
    ),
    (
        "sfu_rtp_unknown_rid",
        "RTP packets naming an unannounced simulcast rid (or rebinding a layer), dropped",
        |l| l.media.rtp_unknown_rid,
    ),
    (
        "sfu_audio_level_malformed",
        "Audio level elements of the wrong size, not read",
        |l| l.media.audio_level_malformed,
    ),
    (
        "sfu_srtp_auth_failures",
        "SRTP/SRTCP packets that failed authentication",
        |l| l.media.srtp_auth_failures,
    ),
    ("sfu_srtp_replays", "SRTP/SRTCP replays refused", |l| {
        l.media.srtp_replays
    }),
    (
        "sfu_srtp_index_reuse_refused",
        "Outgoing packets SRTP refused to protect (index reuse)",
        |l| l.media.srtp_index_reuse_refused,
    ),
    ("sfu_dtls_handshakes", "DTLS handshakes completed", |l| {
        l.media.dtls_handshakes
    }),
    (
        "sfu_dtls_failures",
        "DTLS handshakes or records that failed",
        |l| l.media.dtls_failures,
    ),
    (
        "sfu_relay_packets",
        "Packets relayed between the node's workers",
        |l| l.media.relay_packets,
    ),
    (
        "sfu_relay_drops",
        "Packets dropped because a worker's relay queue was full",
        |l| l.media.relay_drops,
    ),
    (
        "sfu_node_relay_packets_out",
        "Datagrams sent to other nodes over relay links (a channel spanning nodes)",
        |l| l.media.node_relay_packets_out,
    ),
    (
        "sfu_node_relay_packets_in",
        "Authentic relay datagrams received from other nodes",
        |l| l.media.node_relay_packets_in,
    ),
    (
        "sfu_node_relay_rejected",
        "Relay datagrams dropped: no such link, failed authentication, or replayed",
        |l| l.media.node_relay_rejected,
    ),
    (
        "sfu_ice_tcp_accepted",
        "ICE-TCP connections accepted",
        |l| l.media.ice_tcp_accepted,
    ),
    (
        "sfu_ice_tcp_refused",
        "ICE-TCP connections refused over the node's limits",
        |l| l.media.ice_tcp_refused,
    ),
    (
        "sfu_ice_tcp_dropped",
        "ICE-TCP connections closed for bad framing or no STUN first",
        |l| l.media.ice_tcp_dropped,
    ),
    (
        "sfu_ice_tcp_frames_dropped",
        "ICE-TCP frames dropped: not STUN before a check was answered, no RTC protocol, over rate",
        |l| l.media.ice_tcp_frames_dropped,
    ),
];

/// Gauges of a node's load report.
const GAUGES: &[CounterField] = &[
    ("sfu_rooms", "Rooms the node hosts", |l| l.rooms),
    ("sfu_ice_tcp_open", "ICE-TCP connections open", |l| {
        l.media.ice_tcp_open
    }),
    (
        "sfu_transports",
        "Transports (publish + subscribe) on the node",
        |l| l.transports,
    ),
    (
        "sfu_sessions",
        "Sessions with a transport on the node",
        |l| l.sessions,
    ),
    ("sfu_tracks", "Published tracks on the node", |l| l.tracks),
    (
        "sfu_relay_links_out",
        "Relay links sending tracks to other nodes",
        |l| l.relay_links_out,
    ),
    (
        "sfu_relay_links_in",
        "Relay links receiving tracks from other nodes",
        |l| l.relay_links_in,
    ),
    (
        "sfu_subscribers",
        "Subscriptions (a track forwarded to one subscriber)",
        |l| l.subscriptions,
    ),
];

/// Histograms of a node: name, help, the field, and the factor from its integer unit to the
/// exported one.
type HistogramField = (
    &'static str,
    &'static str,
    fn(&Load) -> &HistogramCounts,
    f64,
);

const HISTOGRAMS: &[HistogramField] = &[
    (
        "sfu_subscriber_loss_ratio",
        "Loss subscribers report, per report block",
        |l| &l.media.subscriber_loss,
        1e-6,
    ),
    (
        "sfu_publisher_loss_ratio",
        "Loss of publishers' streams toward the node, per report block",
        |l| &l.media.publisher_loss,
        1e-6,
    ),
    (
        "sfu_subscriber_rtt_seconds",
        "Round-trip time to subscribers",
        |l| &l.media.subscriber_rtt,
        1e-6,
    ),
];

/// The latest load report of every registered node, rendered at each scrape.
#[derive(Debug, Default)]
pub struct MediaMetrics {
    nodes: Mutex<Vec<(u64, Load)>>,
}

impl MediaMetrics {
    /// Replaces the nodes shown (their id and last load report).
    pub fn set(&self, nodes: Vec<(u64, Load)>) {
        *self.nodes.lock().unwrap_or_else(|e| e.into_inner()) = nodes;
    }

    /// Every metric name this collector can emit (for the dashboard test), without the
    /// `mooyaho_` prefix and type suffixes.
    pub fn names() -> impl Iterator<Item = &'static str> {
        COUNTERS
            .iter()
            .chain(GAUGES)
            .map(|(name, _, _)| *name)
            .chain(HISTOGRAMS.iter().map(|(name, ..)| *name))
            .chain(["sfu_worker_busy_ratio"])
    }
}

impl Collector for MediaMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if nodes.is_empty() {
            return Ok(());
        }
        let labels: Vec<[(&str, String); 1]> = nodes
            .iter()
            .map(|(id, _)| [("node", id.to_string())])
            .collect();
        for (name, help, value) in COUNTERS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for ((_, load), labels) in nodes.iter().zip(&labels) {
                ConstCounter::new(value(load)).encode(metric.encode_family(labels)?)?;
            }
        }
        for (name, help, value) in GAUGES {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for ((_, load), labels) in nodes.iter().zip(&labels) {
                let value = i64::try_from(value(load)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(metric.encode_family(labels)?)?;
            }
        }
        let mut busy = encoder.encode_descriptor(
            "sfu_worker_busy_ratio",
            "Share of the last report interval a worker spent working rather than waiting",
            None,
            MetricType::Gauge,
        )?;
        for (id, load) in &nodes {
            for (worker, permille) in load.media.worker_busy_permille.iter().enumerate() {
                let labels = [("node", id.to_string()), ("worker", worker.to_string())];
                ConstGauge::new(*permille as f64 / 1000.0).encode(busy.encode_family(&labels)?)?;
            }
        }
        for (name, help, field, unit) in HISTOGRAMS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for ((_, load), labels) in nodes.iter().zip(&labels) {
                let histogram = field(load);
                // A report from an older node has no buckets: nothing to show for it.
                if histogram.counts.len() != histogram.bounds.len() + 1 {
                    continue;
                }
                let buckets: Vec<(f64, u64)> = histogram
                    .bounds
                    .iter()
                    .map(|b| *b as f64 * unit)
                    .chain([f64::INFINITY])
                    .zip(histogram.counts.iter().copied())
                    .collect();
                let count = histogram.counts.iter().sum();
                metric
                    .encode_family(labels)?
                    .encode_histogram::<NoLabelSet>(
                        histogram.sum as f64 * unit,
                        count,
                        &buckets,
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mooyaho_control::MediaCounters;

    use super::*;
    use crate::metrics::{Metrics, SfuNodeSample};

    #[test]
    fn each_node_gets_its_counters_gauges_and_histograms() {
        let metrics = Metrics::new();
        assert!(
            !metrics.render().contains("mooyaho_sfu_packets_in_total"),
            "no node, no media series"
        );
        let load = Load {
            rooms: 2,
            media: Box::new(MediaCounters {
                packets_in: 10,
                bytes_out: 1234,
                audio_level_malformed: 3,
                subscriber_rtt: HistogramCounts {
                    bounds: vec![5_000, 10_000],
                    counts: vec![1, 2, 1],
                    sum: 2_000_000,
                },
                worker_busy_permille: vec![250, 0],
                ..MediaCounters::default()
            }),
            ..Load::default()
        };
        metrics.set_sfu_nodes(&[SfuNodeSample {
            node: 7,
            healthy: true,
            security_drops: Some(0),
            load: Some(load),
        }]);
        let text = metrics.render();
        for line in [
            r#"mooyaho_sfu_packets_in_total{node="7"} 10"#,
            r#"mooyaho_sfu_bytes_out_total{node="7"} 1234"#,
            r#"mooyaho_sfu_audio_level_malformed_total{node="7"} 3"#,
            r#"mooyaho_sfu_rooms{node="7"} 2"#,
            r#"mooyaho_sfu_worker_busy_ratio{node="7",worker="0"} 0.25"#,
            r#"mooyaho_sfu_subscriber_rtt_seconds_bucket{le="0.005",node="7"} 1"#,
            r#"mooyaho_sfu_subscriber_rtt_seconds_bucket{le="0.01",node="7"} 3"#,
            r#"mooyaho_sfu_subscriber_rtt_seconds_bucket{le="+Inf",node="7"} 4"#,
            r#"mooyaho_sfu_subscriber_rtt_seconds_count{node="7"} 4"#,
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        for name in MediaMetrics::names() {
            assert!(
                text.contains(&format!("mooyaho_{name}")),
                "{name} missing:\n{text}"
            );
        }
    }
}
