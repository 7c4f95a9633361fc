//! Prometheus metrics of one signaling instance (`GET /metrics`).

use async_trait::async_trait;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use crate::domain::events::{DomainEvent, Emitted, EventSubscriber};
use crate::media_metrics::MediaMetrics;

type Labels = Vec<(&'static str, String)>;

/// Counters and gauges; cheap to clone (every metric is an `Arc` inside).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub ws_connections: Gauge,
    /// WebSocket connections accepted since start.
    pub ws_connections_total: Counter,
    /// Client messages received, by type.
    pub ws_messages: Family<Labels, Counter>,
    /// Error replies sent, by code.
    pub ws_errors: Family<Labels, Counter>,
    /// WebSocket upgrades refused, by reason.
    pub ws_refused: Family<Labels, Counter>,
    /// Connections closed because they stopped answering pings.
    pub ws_reaped: Counter,
    /// Connections closed because they could not keep up with their messages.
    pub ws_slow_consumers: Counter,
    /// Sessions that ended (grace window expired or channel gone).
    pub sessions_ended: Counter,
    /// Sessions resumed with `reuseId`.
    pub sessions_resumed: Counter,
    /// REST responses, by status code.
    pub http_responses: Family<Labels, Counter>,
    /// Envelopes sent to other instances over the bus.
    pub bus_published: Counter,
    /// Domain events emitted by this instance, by kind.
    pub domain_events: Family<Labels, Counter>,
    /// Per SFU node: packets its security layer dropped (failed STUN/DTLS/SRTP, media from a
    /// 5-tuple that did not pass ICE), as last reported to this instance.
    pub sfu_security_drops: Family<Labels, Gauge>,
    /// Per SFU node: 1 when this instance sees it healthy (control link up, load reported
    /// within 3 s), else 0.
    pub sfu_healthy: Family<Labels, Gauge>,
    /// Per SFU node: reports (events) its queue dropped because the node sent them faster
    /// than this instance could handle them (see `domain::node_queue`).
    pub sfu_node_reports_dropped: Family<Labels, Counter>,
    /// Per SFU node: reports ignored because they name a room its channel is not placed in on
    /// that node (a node the channel moved off, or one lying about rooms it does not hold).
    pub sfu_node_reports_ignored: Family<Labels, Counter>,
    /// Webhook deliveries a receiver acknowledged (2xx).
    pub webhooks_delivered: Counter,
    /// Webhook attempts that failed and were retried.
    pub webhooks_retried: Counter,
    /// Webhook deliveries given up after their last attempt.
    pub webhooks_failed: Counter,
    /// Webhook events dropped because a URL's queue was full.
    pub webhooks_dropped: Counter,
    /// Each node's media counters from its last load report (`mooyaho_sfu_packets_in_total`
    /// and the rest, see [`MediaMetrics`]).
    pub sfu_media: Arc<MediaMetrics>,
}

/// One SFU node as `/metrics` shows it.
#[derive(Clone, Debug)]
pub struct SfuNodeSample {
    /// Node id.
    pub node: u64,
    /// Healthy as this instance sees it.
    pub healthy: bool,
    /// Security drops from its last load report, if it reported.
    pub security_drops: Option<u64>,
    /// Its last load report (media counters and load), if it reported.
    pub load: Option<mooyaho_control::Load>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mooyaho");
        let metrics = Self {
            ws_connections: Gauge::default(),
            ws_connections_total: Counter::default(),
            ws_messages: Family::default(),
            ws_errors: Family::default(),
            ws_refused: Family::default(),
            ws_reaped: Counter::default(),
            ws_slow_consumers: Counter::default(),
            sessions_ended: Counter::default(),
            sessions_resumed: Counter::default(),
            http_responses: Family::default(),
            bus_published: Counter::default(),
            domain_events: Family::default(),
            sfu_security_drops: Family::default(),
            sfu_healthy: Family::default(),
            sfu_node_reports_dropped: Family::default(),
            sfu_node_reports_ignored: Family::default(),
            webhooks_delivered: Counter::default(),
            webhooks_retried: Counter::default(),
            webhooks_failed: Counter::default(),
            webhooks_dropped: Counter::default(),
            sfu_media: Arc::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ws_connections",
            "Open WebSocket connections",
            metrics.ws_connections.clone(),
        );
        registry.register(
            "ws_connections_accepted",
            "WebSocket connections accepted",
            metrics.ws_connections_total.clone(),
        );
        registry.register(
            "ws_messages",
            "Client messages received by type",
            metrics.ws_messages.clone(),
        );
        registry.register(
            "ws_errors",
            "Error replies sent by code",
            metrics.ws_errors.clone(),
        );
        registry.register(
            "ws_connections_refused",
            "WebSocket upgrades refused by reason",
            metrics.ws_refused.clone(),
        );
        registry.register(
            "ws_reaped",
            "Connections closed for missing heartbeats",
            metrics.ws_reaped.clone(),
        );
        registry.register(
            "ws_slow_consumers",
            "Connections closed because their send queue was full",
            metrics.ws_slow_consumers.clone(),
        );
        registry.register(
            "sessions_ended",
            "Sessions ended",
            metrics.sessions_ended.clone(),
        );
        registry.register(
            "sessions_resumed",
            "Sessions resumed with reuseId",
            metrics.sessions_resumed.clone(),
        );
        registry.register(
            "http_responses",
            "REST responses by status",
            metrics.http_responses.clone(),
        );
        registry.register(
            "bus_published",
            "Envelopes published to other instances",
            metrics.bus_published.clone(),
        );
        registry.register(
            "domain_events",
            "Domain events emitted by kind",
            metrics.domain_events.clone(),
        );
        registry.register(
            "sfu_security_drops",
            "Packets dropped by an SFU node's security layer, as last reported",
            metrics.sfu_security_drops.clone(),
        );
        registry.register(
            "sfu_healthy",
            "1 when this instance sees the SFU node healthy",
            metrics.sfu_healthy.clone(),
        );
        registry.register(
            "sfu_node_reports_dropped",
            "SFU node reports dropped because the node sent them faster than they were handled",
            metrics.sfu_node_reports_dropped.clone(),
        );
        registry.register(
            "sfu_node_reports_ignored",
            "SFU node reports naming a room the channel is not placed in on that node",
            metrics.sfu_node_reports_ignored.clone(),
        );
        registry.register(
            "webhooks_delivered",
            "Webhook deliveries acknowledged by a receiver",
            metrics.webhooks_delivered.clone(),
        );
        registry.register(
            "webhooks_retried",
            "Webhook attempts that failed and were retried",
            metrics.webhooks_retried.clone(),
        );
        registry.register(
            "webhooks_failed",
            "Webhook deliveries given up after their last attempt",
            metrics.webhooks_failed.clone(),
        );
        registry.register(
            "webhooks_dropped",
            "Webhook events dropped because a receiver's queue was full",
            metrics.webhooks_dropped.clone(),
        );
        registry.register_collector(Box::new(metrics.sfu_media.clone()));
        Self {
            registry,
            ..metrics
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts one message of `kind`.
    pub fn message(&self, kind: &str) {
        self.ws_messages
            .get_or_create(&vec![("type", kind.to_owned())])
            .inc();
    }

    /// Counts one error reply.
    pub fn error(&self, code: &str) {
        self.ws_errors
            .get_or_create(&vec![("code", code.to_owned())])
            .inc();
    }

    /// Counts one refused WebSocket upgrade.
    pub fn ws_refused(&self, reason: &str) {
        self.ws_refused
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    /// Replaces the per-node SFU gauges (nodes no longer registered disappear).
    pub fn set_sfu_nodes(&self, nodes: &[SfuNodeSample]) {
        self.sfu_healthy.clear();
        self.sfu_security_drops.clear();
        for sample in nodes {
            let labels = vec![("node", sample.node.to_string())];
            self.sfu_healthy
                .get_or_create(&labels)
                .set(i64::from(sample.healthy));
            if let Some(drops) = sample.security_drops {
                self.sfu_security_drops
                    .get_or_create(&labels)
                    .set(i64::try_from(drops).unwrap_or(i64::MAX));
            }
        }
        let loads = nodes
            .iter()
            .filter_map(|s| Some((s.node, s.load.clone()?)))
            .collect();
        self.sfu_media.set(loads);
    }

    /// Counts one report of SFU node `node` dropped by its queue.
    pub fn sfu_node_report_dropped(&self, node: u64) {
        self.sfu_node_reports_dropped
            .get_or_create(&vec![("node", node.to_string())])
            .inc();
    }

    /// Counts one report of SFU node `node` ignored (it names a room not its channel's).
    pub fn sfu_node_report_ignored(&self, node: u64) {
        self.sfu_node_reports_ignored
            .get_or_create(&vec![("node", node.to_string())])
            .inc();
    }

    /// Counts one REST response.
    pub fn http_response(&self, status: u16) {
        self.http_responses
            .get_or_create(&vec![("status", status.to_string())])
            .inc();
    }
}

/// The metrics subscriber of the domain event stream: counts every event by kind, and keeps
/// the older session counters.
#[async_trait]
impl EventSubscriber for Metrics {
    async fn on_event(&self, emitted: &Emitted) {
        self.domain_events
            .get_or_create(&vec![("kind", emitted.event.kind().to_owned())])
            .inc();
        match emitted.event {
            DomainEvent::SessionEnded { .. } => {
                self.sessions_ended.inc();
            }
            DomainEvent::SessionResumed { .. } => {
                self.sessions_resumed.inc();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{ChannelId, SessionId};

    #[tokio::test]
    async fn events_are_counted_by_kind_in_the_exposition() {
        let metrics = Metrics::new();
        let event = |event| Emitted {
            event,
            audience: Vec::new(),
        };
        for _ in 0..2 {
            metrics
                .on_event(&event(DomainEvent::ChannelCreated {
                    channel: ChannelId::from("c"),
                    sfu_enabled: false,
                }))
                .await;
        }
        metrics
            .on_event(&event(DomainEvent::SessionEnded {
                session: SessionId::from("s"),
            }))
            .await;
        let text = metrics.render();
        assert!(
            text.contains(r#"mooyaho_domain_events_total{kind="channel_created"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mooyaho_domain_events_total{kind="session_ended"} 1"#),
            "{text}"
        );
        assert!(text.contains("mooyaho_sessions_ended_total 1"), "{text}");
    }
}
