//! Failover: deciding when an SFU node has failed, so that [`super::Placement`] moves every
//! channel placed on it to a healthy node at once (DESIGN §7.1); and the pace of a drain, which
//! moves a live node's channels a few at a time. The decision is a small state
//! machine over this instance's view of each node's health ([`NodeWatch`]), with time passed
//! in, so it is unit-tested without clocks or sockets; the task that feeds it lives in
//! `Placement::attach`.
//!
//! A node is healthy while its control link is up and its last load report on that link is
//! under 3 s old (`sfu::Fleet`, its `liveness` module): a killed node is unhealthy as soon as
//! its QUIC connection closes or times out (~1 s), and the watch looks at once when a link goes
//! down rather than at its next tick. A node that was healthy and is not any more has failed. A node this instance
//! has never seen healthy (it just started, or the node was just registered) is given
//! [`STARTUP_GRACE`] to connect before it counts as failed, so a restarting signaling instance
//! does not move every channel off nodes that are fine.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::ids::SfuServerId;

/// How often node health is looked at.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long a node this instance never saw healthy has to become healthy.
pub(super) const STARTUP_GRACE: Duration = Duration::from_secs(6);
/// A drain moves this many channels at once, then waits [`DRAIN_PAUSE`].
pub(super) const DRAIN_BATCH: usize = 4;
/// The pause between a drain's batches.
pub(super) const DRAIN_PAUSE: Duration = Duration::from_secs(1);
/// Lost channels whose members a failover tells at once (store work: unplace, members, emit).
pub(super) const TELL_AT_ONCE: usize = 16;
/// Channels a failover places again at once (their members were all told `sfuRestart` first).
pub(super) const REPLACE_AT_ONCE: usize = 8;
/// Members of one such channel offered the new room at once. Each offer is one control
/// request the node's worker answers in well under a millisecond (release), so a room's
/// receive-only members wait on the slowest batch: at 4 at once, 50 subscribers queued ~1 s
/// behind each other in the failover benchmark (debug build, loaded machine).
pub(super) const OFFER_AT_ONCE: usize = 32;
/// A node this instance failed over takes no new room for this long, even if it looks healthy
/// again (no ping-pong between instances that see a flapping node differently).
pub(super) const HOLD_DOWN: Duration = Duration::from_secs(10);
/// A room a node hosts when its link comes up is closed if no channel is placed in it this long
/// after (a room being created is placed well within it).
pub(super) const ORPHAN_GRACE: Duration = Duration::from_secs(3);
/// While a node stays failed, how often its channels are looked for again (a channel placed on
/// it by an instance that still saw it healthy, or left there because no node could take it).
pub(super) const SWEEP_AGAIN: Duration = Duration::from_secs(5);

/// One node as the watch knows it.
#[derive(Clone, Copy, Debug)]
struct Watched {
    first_seen: Instant,
    seen_healthy: bool,
    /// When its channels were last moved off (while it stays failed).
    swept: Option<Instant>,
}

/// Which nodes have failed, from successive looks at their health.
#[derive(Debug, Default)]
pub(super) struct NodeWatch {
    nodes: HashMap<SfuServerId, Watched>,
}

impl NodeWatch {
    /// Takes one look at every registered node's health (`true` = healthy) at `now`; returns
    /// the nodes whose channels must move now: those that just failed, and those still failed
    /// [`SWEEP_AGAIN`] after their last sweep. Nodes no longer registered are forgotten.
    pub(super) fn look(
        &mut self,
        now: Instant,
        health: impl IntoIterator<Item = (SfuServerId, bool)>,
    ) -> Vec<SfuServerId> {
        let mut failed = Vec::new();
        let mut registered = HashMap::with_capacity(self.nodes.len());
        for (node, healthy) in health {
            let mut watched = self.nodes.get(&node).copied().unwrap_or(Watched {
                first_seen: now,
                seen_healthy: false,
                swept: None,
            });
            if healthy {
                watched.seen_healthy = true;
                watched.swept = None;
            } else if watched.seen_healthy
                || now.saturating_duration_since(watched.first_seen) >= STARTUP_GRACE
            {
                let due = watched
                    .swept
                    .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_AGAIN);
                if due {
                    watched.swept = Some(now);
                    failed.push(node);
                }
            }
            registered.insert(node, watched);
        }
        self.nodes = registered;
        failed.sort();
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: SfuServerId = SfuServerId(1);
    const B: SfuServerId = SfuServerId(2);

    #[test]
    fn a_node_that_was_healthy_fails_at_the_first_unhealthy_look_then_again_every_sweep() {
        let mut watch = NodeWatch::default();
        let t0 = Instant::now();
        assert!(watch.look(t0, [(A, true), (B, true)]).is_empty());
        let t1 = t0 + CHECK_EVERY;
        assert_eq!(watch.look(t1, [(A, false), (B, true)]), [A]);
        // Still failed: not swept again until SWEEP_AGAIN has passed.
        assert!(
            watch
                .look(t1 + CHECK_EVERY, [(A, false), (B, true)])
                .is_empty()
        );
        assert_eq!(watch.look(t1 + SWEEP_AGAIN, [(A, false), (B, true)]), [A]);
        // Healthy again, then failed again: a new failure, swept at once.
        let t2 = t1 + SWEEP_AGAIN + CHECK_EVERY;
        assert!(watch.look(t2, [(A, true), (B, true)]).is_empty());
        assert_eq!(
            watch.look(t2 + CHECK_EVERY, [(A, false), (B, false)]),
            [A, B]
        );
    }

    #[test]
    fn a_node_never_seen_healthy_gets_the_startup_grace() {
        let mut watch = NodeWatch::default();
        let t0 = Instant::now();
        assert!(watch.look(t0, [(A, false)]).is_empty());
        assert!(
            watch
                .look(t0 + STARTUP_GRACE - CHECK_EVERY, [(A, false)])
                .is_empty()
        );
        assert_eq!(watch.look(t0 + STARTUP_GRACE, [(A, false)]), [A]);

        // One that comes up within its grace is watched like any other.
        let mut watch = NodeWatch::default();
        assert!(watch.look(t0, [(B, false)]).is_empty());
        assert!(watch.look(t0 + CHECK_EVERY, [(B, true)]).is_empty());
        assert_eq!(watch.look(t0 + 2 * CHECK_EVERY, [(B, false)]), [B]);
    }

    #[test]
    fn an_unregistered_node_is_forgotten_and_a_new_record_starts_over() {
        let mut watch = NodeWatch::default();
        let t0 = Instant::now();
        assert!(watch.look(t0, [(A, true)]).is_empty());
        assert!(watch.look(t0 + CHECK_EVERY, []).is_empty());
        // Registered again (same id): never seen healthy since, so it has its grace.
        assert!(watch.look(t0 + 2 * CHECK_EVERY, [(A, false)]).is_empty());
    }

    #[test]
    fn time_going_backwards_is_not_a_failure() {
        let mut watch = NodeWatch::default();
        let t0 = Instant::now() + Duration::from_secs(60);
        assert!(watch.look(t0, [(A, false)]).is_empty());
        assert!(
            watch
                .look(t0 - Duration::from_secs(30), [(A, false)])
                .is_empty()
        );
    }
}
