//! Whether a node is alive, as this signaling instance sees it: its control connection is up and
//! it sent a load report on that connection less than [`HEALTH_WINDOW`] ago.
//!
//! Two signals, for two kinds of death. A node that dies outright (SIGKILL, a crash, a cut
//! link) loses its control connection — closed at once, or timed out after
//! [`mooyaho_control::LINK_IDLE_TIMEOUT`] when nothing says goodbye — and is unhealthy from
//! that moment, whatever its last report said. A node that is alive on QUIC but whose media
//! workers are stuck stops reporting load (its reports need every worker's stats) and turns
//! unhealthy when its last report is [`HEALTH_WINDOW`] old: the slower fallback, never sooner.
//!
//! A link that comes back is not enough: the node is healthy again only once a load report
//! arrived on the new connection, so a flapping link cannot make a node look healthy on the
//! strength of a report from before it dropped (and be handed channels it cannot serve).

use std::time::{Duration, Instant};

/// A connected node whose last load report is older than this is unhealthy.
pub(super) const HEALTH_WINDOW: Duration = Duration::from_secs(3);

/// One node's liveness, with time passed in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Liveness {
    /// When the current control connection came up; `None` while there is none.
    connected_at: Option<Instant>,
    /// When the last load report arrived (on this connection or an earlier one).
    reported_at: Option<Instant>,
}

impl Liveness {
    /// A control connection came up (the node proved the cluster secret) at `now`.
    pub(super) fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The control connection is gone (closed, refused or timed out).
    pub(super) fn disconnected(&mut self) {
        self.connected_at = None;
    }

    /// A load report arrived at `now`.
    pub(super) fn reported(&mut self, now: Instant) {
        self.reported_at = Some(now);
    }

    /// Connected, and reported load on this connection less than [`HEALTH_WINDOW`] before `now`.
    pub(super) fn healthy(&self, now: Instant) -> bool {
        match (self.connected_at, self.reported_at) {
            (Some(connected), Some(reported)) => {
                reported >= connected && now.saturating_duration_since(reported) < HEALTH_WINDOW
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn reporting(t0: Instant) -> Liveness {
        let mut node = Liveness::default();
        node.connected(t0);
        node.reported(t0 + 10 * MS);
        node
    }

    #[test]
    fn a_closed_connection_is_unhealthy_at_once_however_fresh_the_last_report() {
        let t0 = Instant::now();
        let mut node = reporting(t0);
        assert!(node.healthy(t0 + 20 * MS));
        node.disconnected();
        assert!(!node.healthy(t0 + 20 * MS));
    }

    #[test]
    fn a_connected_node_that_stops_reporting_stays_healthy_for_the_whole_window() {
        let t0 = Instant::now();
        let node = reporting(t0);
        let reported = t0 + 10 * MS;
        assert!(
            node.healthy(reported + HEALTH_WINDOW - MS),
            "slow, not dead"
        );
        assert!(!node.healthy(reported + HEALTH_WINDOW));
    }

    #[test]
    fn a_link_that_comes_back_is_healthy_only_after_a_report_on_it() {
        let t0 = Instant::now();
        let mut node = reporting(t0);
        node.disconnected();
        // Back 100 ms later: the report from before the drop is fresh, and does not count.
        node.connected(t0 + 100 * MS);
        assert!(!node.healthy(t0 + 110 * MS));
        node.reported(t0 + 900 * MS);
        assert!(node.healthy(t0 + 910 * MS));
    }

    #[test]
    fn never_connected_or_never_reporting_is_unhealthy() {
        let t0 = Instant::now();
        assert!(!Liveness::default().healthy(t0));
        let mut node = Liveness::default();
        node.connected(t0);
        assert!(!node.healthy(t0));
        let mut node = Liveness::default();
        node.reported(t0);
        assert!(!node.healthy(t0), "a report without a connection");
    }

    #[test]
    fn time_going_backwards_does_not_make_a_report_stale() {
        let t0 = Instant::now() + Duration::from_secs(60);
        let node = reporting(t0);
        assert!(node.healthy(t0 - Duration::from_secs(30)));
    }
}
