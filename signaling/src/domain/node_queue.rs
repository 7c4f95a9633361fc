//! One node's reports waiting to be handled, so that handling them never holds up reading them.
//!
//! Handling a report can be slow (a renegotiation asks the node for an offer, up to 10 s; a
//! speaker change reads the store), while the control link must keep reading the node's stream,
//! or its load reports go unread and every node looks dead. So reports are queued per node, in
//! order, without waiting, and a node's own task handles them. Reports that only ask for the
//! latest state coalesce: a renegotiation of one (room, session) already waiting is not queued
//! twice, a room's speaker ranking replaces the one waiting, and so does a track's dynacast
//! report (`SubscribedQualities`). What a hostile or broken node
//! can queue is bounded; beyond the bounds reports are dropped and counted. Link changes are
//! never dropped (a link yields at most two per connection).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use mooyaho_control::{Event, Speaker};
use tokio::sync::Notify;

use super::ports::NodeReport;

/// Distinct (room, session) renegotiations waiting at once.
const MAX_RENEGOTIATIONS: usize = 10_000;
/// Distinct rooms with a speaker ranking waiting at once.
const MAX_SPEAKER_ROOMS: usize = 10_000;
/// Distinct (room, session, mid) dynacast reports waiting at once.
const MAX_QUALITY_TRACKS: usize = 10_000;
/// Other reports waiting at once.
pub(super) const MAX_OTHER: usize = 1_024;

/// A node's reports waiting to be handled (one producer, one consumer).
#[derive(Debug, Default)]
pub(super) struct NodeQueue {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct State {
    order: VecDeque<Waiting>,
    renegotiations: HashSet<(String, String)>,
    /// The latest ranking per room: (member, speakers).
    speakers: HashMap<String, (String, Vec<Speaker>)>,
    /// The latest dynacast report per (room, session, mid): (qualities, layers).
    qualities: HashMap<QualityKey, (Vec<String>, Vec<u8>)>,
    /// Other reports in `order`.
    other: usize,
    dropped: u64,
}

#[derive(Debug)]
enum Waiting {
    Report(NodeReport),
    Renegotiation { room: String, session: String },
    Speakers { room: String },
    Qualities(QualityKey),
}

/// Which publisher track a dynacast report is about: (room, session, mid).
type QualityKey = (String, String, String);

/// What [`NodeQueue::push`] did with a report.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Queued {
    /// Waits in order.
    Added,
    /// Merged with one already waiting.
    Coalesced,
    /// Over a bound: dropped (the total so far).
    Dropped(u64),
}

impl NodeQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a report without waiting.
    pub(super) fn push(&self, report: NodeReport) -> Queued {
        let queued = self.lock().push(report);
        if queued == Queued::Added {
            self.ready.notify_one();
        }
        queued
    }

    /// The next report, waiting for one.
    pub(super) async fn next(&self) -> NodeReport {
        loop {
            if let Some(report) = self.lock().pop() {
                return report;
            }
            self.ready.notified().await;
        }
    }

    /// Reports dropped over the bounds so far.
    #[cfg(test)]
    pub(super) fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

impl State {
    fn push(&mut self, report: NodeReport) -> Queued {
        let waiting = match report {
            NodeReport::Event(Event::RenegotiationNeeded { room, session }) => {
                if self
                    .renegotiations
                    .contains(&(room.clone(), session.clone()))
                {
                    return Queued::Coalesced;
                }
                if self.renegotiations.len() >= MAX_RENEGOTIATIONS {
                    return self.drop_one();
                }
                self.renegotiations.insert((room.clone(), session.clone()));
                Waiting::Renegotiation { room, session }
            }
            NodeReport::Event(Event::ActiveSpeakers {
                room,
                member,
                speakers,
            }) => {
                if let Some(latest) = self.speakers.get_mut(&room) {
                    *latest = (member, speakers);
                    return Queued::Coalesced;
                }
                if self.speakers.len() >= MAX_SPEAKER_ROOMS {
                    return self.drop_one();
                }
                self.speakers.insert(room.clone(), (member, speakers));
                Waiting::Speakers { room }
            }
            NodeReport::Event(Event::SubscribedQualities {
                room,
                session,
                mid,
                qualities,
                layers,
            }) => {
                // Only the latest set matters: a dropped one could leave a layer switched off.
                let key = (room, session, mid);
                if let Some(latest) = self.qualities.get_mut(&key) {
                    *latest = (qualities, layers);
                    return Queued::Coalesced;
                }
                if self.qualities.len() >= MAX_QUALITY_TRACKS {
                    return self.drop_one();
                }
                self.qualities.insert(key.clone(), (qualities, layers));
                Waiting::Qualities(key)
            }
            report @ (NodeReport::LinkUp | NodeReport::LinkDown) => Waiting::Report(report),
            report => {
                if self.other >= MAX_OTHER {
                    return self.drop_one();
                }
                self.other += 1;
                Waiting::Report(report)
            }
        };
        self.order.push_back(waiting);
        Queued::Added
    }

    fn drop_one(&mut self) -> Queued {
        self.dropped += 1;
        Queued::Dropped(self.dropped)
    }

    fn pop(&mut self) -> Option<NodeReport> {
        Some(match self.order.pop_front()? {
            Waiting::Report(report) => {
                if !matches!(report, NodeReport::LinkUp | NodeReport::LinkDown) {
                    self.other -= 1;
                }
                report
            }
            Waiting::Renegotiation { room, session } => {
                self.renegotiations.remove(&(room.clone(), session.clone()));
                NodeReport::Event(Event::RenegotiationNeeded { room, session })
            }
            Waiting::Qualities(key) => {
                let (qualities, layers) = self.qualities.remove(&key).unwrap_or_default();
                let (room, session, mid) = key;
                NodeReport::Event(Event::SubscribedQualities {
                    room,
                    session,
                    mid,
                    qualities,
                    layers,
                })
            }
            Waiting::Speakers { room } => {
                let (member, speakers) = self.speakers.remove(&room).unwrap_or_default();
                NodeReport::Event(Event::ActiveSpeakers {
                    room,
                    member,
                    speakers,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renegotiate(room: &str, session: &str) -> NodeReport {
        NodeReport::Event(Event::RenegotiationNeeded {
            room: room.into(),
            session: session.into(),
        })
    }

    fn speakers(room: &str, level: u8) -> NodeReport {
        NodeReport::Event(Event::ActiveSpeakers {
            room: room.into(),
            member: "m".into(),
            speakers: vec![Speaker {
                session: "s".into(),
                level,
            }],
        })
    }

    fn closed(session: &str) -> NodeReport {
        NodeReport::Event(Event::TransportClosed {
            room: "r".into(),
            session: session.into(),
            side: "publish".into(),
            reason: "gone".into(),
        })
    }

    fn pop_all(queue: &NodeQueue) -> Vec<NodeReport> {
        std::iter::from_fn(|| queue.lock().pop()).collect()
    }

    #[test]
    fn idempotent_reports_coalesce_and_order_is_kept() {
        let queue = NodeQueue::default();
        assert_eq!(queue.push(NodeReport::LinkUp), Queued::Added);
        for level in 1..=50 {
            assert_ne!(queue.push(speakers("r1", level)), Queued::Dropped(1));
            assert_ne!(queue.push(renegotiate("r1", "a")), Queued::Dropped(1));
        }
        assert_eq!(queue.push(closed("a")), Queued::Added);
        assert_eq!(queue.push(renegotiate("r1", "b")), Queued::Added);
        assert_eq!(queue.push(NodeReport::LinkDown), Queued::Added);
        assert_eq!(
            pop_all(&queue),
            [
                NodeReport::LinkUp,
                speakers("r1", 50),
                renegotiate("r1", "a"),
                closed("a"),
                renegotiate("r1", "b"),
                NodeReport::LinkDown,
            ]
        );
        // Once handled, the same renegotiation waits again.
        assert_eq!(queue.push(renegotiate("r1", "a")), Queued::Added);
        assert_eq!(pop_all(&queue), [renegotiate("r1", "a")]);
        assert_eq!(queue.dropped(), 0);
    }

    #[test]
    fn a_flood_is_bounded_and_counted_but_link_changes_always_wait() {
        let queue = NodeQueue::default();
        for n in 0..MAX_RENEGOTIATIONS + 5 {
            queue.push(renegotiate("r", &n.to_string()));
        }
        for n in 0..MAX_SPEAKER_ROOMS + 5 {
            queue.push(speakers(&n.to_string(), 1));
        }
        for n in 0..MAX_OTHER + 5 {
            queue.push(closed(&n.to_string()));
        }
        assert_eq!(queue.dropped(), 15);
        assert_eq!(queue.push(NodeReport::LinkDown), Queued::Added);
        let all = pop_all(&queue);
        assert_eq!(
            all.len(),
            MAX_RENEGOTIATIONS + MAX_SPEAKER_ROOMS + MAX_OTHER + 1
        );
        assert_eq!(all.last(), Some(&NodeReport::LinkDown));
        // Handled reports free their room under the bounds.
        assert_eq!(queue.push(closed("again")), Queued::Added);
    }

    fn qualities(session: &str, layers: &[u8]) -> NodeReport {
        NodeReport::Event(Event::SubscribedQualities {
            room: "r".into(),
            session: session.into(),
            mid: "1".into(),
            qualities: layers.iter().map(|l| l.to_string()).collect(),
            layers: layers.to_vec(),
        })
    }

    #[test]
    fn dynacast_reports_coalesce_per_track_to_the_latest_and_are_bounded() {
        let queue = NodeQueue::default();
        assert_eq!(queue.push(qualities("a", &[0])), Queued::Added);
        assert_eq!(queue.push(qualities("b", &[0])), Queued::Added);
        assert_eq!(queue.push(qualities("a", &[0, 2])), Queued::Coalesced);
        assert_eq!(
            pop_all(&queue),
            [qualities("a", &[0, 2]), qualities("b", &[0])]
        );
        for n in 0..MAX_QUALITY_TRACKS + 3 {
            queue.push(qualities(&n.to_string(), &[0]));
        }
        assert_eq!(queue.dropped(), 3);
        assert_eq!(pop_all(&queue).len(), MAX_QUALITY_TRACKS);
    }

    #[tokio::test]
    async fn next_waits_for_a_report() {
        let queue = std::sync::Arc::new(NodeQueue::default());
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        tokio::task::yield_now().await;
        queue.push(NodeReport::LinkUp);
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert_eq!(next.unwrap().unwrap(), NodeReport::LinkUp);
    }
}
