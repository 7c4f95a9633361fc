//! A room: the routing domain (tracks fan out only to subscriptions in the same room) and who is
//! in it.
//!
//! Entities live in the [`Worker`](crate::Worker)'s sibling arenas (so one id names an entity
//! worker-wide and the fan-out loop can borrow a track and its subscriptions at once); the room
//! records membership, so closing it frees everything it owns, and its *participants*: which
//! transports and tracks are whose. This is the one model of a room's media state: the media
//! layer asks it who publishes what and whom to re-offer, and keeps beside it only what
//! sfu-core has no word for (SDP, ICE, DTLS).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::speakers::ActiveSpeaker;
use crate::{TrackId, TransportId};

#[derive(Debug, Default)]
pub(crate) struct Room {
    pub(crate) transports: Vec<TransportId>,
    pub(crate) tracks: Vec<TrackId>,
    /// By name (the control plane's id of a peer), so listings come in a stable order.
    pub(crate) participants: BTreeMap<String, Participant>,
    /// Per participant, when its publish budget is full again (GCRA's theoretical arrival
    /// time). Kept apart from `participants` so leaving and re-entering does not refill it;
    /// entries whose budget is full are dropped, so the map holds only recent publishers.
    publish_budget: HashMap<String, Instant>,
    /// The latest speaker ranking, loudest first.
    pub(crate) speakers: Vec<ActiveSpeaker>,
}

/// One peer in a room. It stays until it leaves, even with no transport left (it may still
/// subscribe), except one present only through relayed tracks: it goes with the last of them.
#[derive(Debug, Default)]
pub(crate) struct Participant {
    /// Its transports, oldest first.
    pub(crate) transports: Vec<TransportId>,
    /// The tracks it publishes, in publish order: on its own publish transport, or relayed on
    /// its behalf from another worker (on a transport it does not own).
    pub(crate) tracks: Vec<TrackId>,
}

impl Participant {
    fn is_empty(&self) -> bool {
        self.transports.is_empty() && self.tracks.is_empty()
    }
}

/// A token bucket over one participant's publishes: `burst` at once, then one per `interval`.
/// Every publish costs the media layer a transport, a DTLS handshake and a re-offer to every
/// other participant, so publishing in a loop would make the room renegotiate without end.
/// `interval` zero means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishRate {
    /// Publishes allowed back to back.
    pub burst: u32,
    /// Time that earns one more publish.
    pub interval: Duration,
}

impl Default for PublishRate {
    /// 5 at once, then one every 2 s: a client that (re)publishes on every device change is
    /// never slowed down; one that publishes in a loop makes its room renegotiate at most every
    /// 2 s.
    fn default() -> Self {
        Self {
            burst: 5,
            interval: Duration::from_secs(2),
        }
    }
}

impl Room {
    /// The participant named `name`, added if absent.
    pub(crate) fn join(&mut self, name: &str) -> &mut Participant {
        if !self.participants.contains_key(name) {
            self.participants
                .insert(name.to_owned(), Participant::default());
        }
        self.participants.get_mut(name).expect("inserted above")
    }

    /// Forgets a removed transport; its owner stays (it may still subscribe).
    pub(crate) fn forget_transport(&mut self, transport: TransportId) {
        self.transports.retain(|&t| t != transport);
        if let Some(owner) = self
            .participants
            .values_mut()
            .find(|p| p.transports.contains(&transport))
        {
            owner.transports.retain(|&t| t != transport);
        }
    }

    /// Forgets an ended track. `relayed`: it was published on a transport its participant does
    /// not own; a participant left with nothing then leaves too.
    pub(crate) fn forget_track(&mut self, track: TrackId, relayed: bool) {
        self.tracks.retain(|&t| t != track);
        let Some((name, owner)) = self
            .participants
            .iter_mut()
            .find(|(_, p)| p.tracks.contains(&track))
        else {
            return;
        };
        owner.tracks.retain(|&t| t != track);
        if relayed && owner.is_empty() {
            let name = name.clone();
            self.participants.remove(&name);
        }
    }

    /// Participants with a transport or a track here.
    pub(crate) fn present(&self) -> usize {
        self.participants.values().filter(|p| !p.is_empty()).count()
    }

    /// Takes one publish from `name`'s budget, or says how long until one is available.
    pub(crate) fn take_publish(
        &mut self,
        name: &str,
        now: Instant,
        rate: PublishRate,
    ) -> Result<(), Duration> {
        if rate.interval.is_zero() {
            return Ok(());
        }
        self.publish_budget.retain(|_, full_at| *full_at > now);
        let full_at = self.publish_budget.get(name).copied().unwrap_or(now);
        let after = full_at.max(now) + rate.interval;
        // Allowed while the bucket holds a token: `after` is at most `burst` intervals ahead.
        let capacity = rate.interval.saturating_mul(rate.burst.max(1));
        if after.saturating_duration_since(now) > capacity {
            return Err(after.saturating_duration_since(now) - capacity);
        }
        self.publish_budget.insert(name.to_owned(), after);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(n: u32) -> TransportId {
        TransportId::new(n as usize, n)
    }

    fn track(n: u32) -> TrackId {
        TrackId::new(n as usize, n)
    }

    #[test]
    fn a_participant_stays_without_transports_until_it_leaves() {
        let mut room = Room::default();
        room.join("a").transports.push(transport(1));
        room.transports.push(transport(1));
        assert_eq!(room.present(), 1);
        room.forget_transport(transport(1));
        assert!(room.transports.is_empty());
        assert!(room.participants["a"].transports.is_empty());
        // Still in the room (it may subscribe again), but no longer counted as present.
        assert!(room.participants.contains_key("a"));
        assert_eq!(room.present(), 0);
    }

    #[test]
    fn a_participant_present_only_through_relayed_tracks_leaves_with_the_last() {
        let mut room = Room::default();
        room.join("relayed").tracks.extend([track(1), track(2)]);
        room.join("local").tracks.push(track(3));
        room.forget_track(track(1), true);
        assert!(room.participants.contains_key("relayed"));
        room.forget_track(track(2), true);
        assert!(!room.participants.contains_key("relayed"));
        // Its own tracks ending never removes a participant.
        room.forget_track(track(3), false);
        assert!(room.participants.contains_key("local"));
        // A participant with a transport of its own stays after its relayed tracks end.
        let both = room.join("both");
        both.transports.push(transport(4));
        both.tracks.push(track(5));
        room.forget_track(track(5), true);
        assert!(room.participants.contains_key("both"));
    }

    #[test]
    fn publish_budget_allows_a_burst_then_one_per_interval_and_forgets_full_buckets() {
        let rate = PublishRate {
            burst: 3,
            interval: Duration::from_secs(2),
        };
        let mut room = Room::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(room.take_publish("a", t0, rate), Ok(()));
        }
        assert_eq!(
            room.take_publish("a", t0, rate),
            Err(Duration::from_secs(2))
        );
        // Another participant has its own budget.
        assert_eq!(room.take_publish("b", t0, rate), Ok(()));
        // One interval later: exactly one more, and the refusal says when the next comes.
        let t1 = t0 + Duration::from_millis(2_500);
        assert_eq!(room.take_publish("a", t1, rate), Ok(()));
        assert_eq!(
            room.take_publish("a", t1, rate),
            Err(Duration::from_millis(1_500))
        );
        // A loop of attempts earns nothing: refusals do not spend or delay the budget.
        for ms in (2_600..4_000).step_by(100) {
            assert!(
                room.take_publish("a", t0 + Duration::from_millis(ms), rate)
                    .is_err()
            );
        }
        assert_eq!(
            room.take_publish("a", t0 + Duration::from_secs(4), rate),
            Ok(())
        );
        // Full buckets are dropped: the map only holds participants that published lately.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(room.take_publish("c", later, rate), Ok(()));
        assert_eq!(
            room.publish_budget.keys().collect::<Vec<_>>(),
            [&"c".to_owned()]
        );
        // Interval zero: no limit.
        let unlimited = PublishRate {
            burst: 1,
            interval: Duration::ZERO,
        };
        for _ in 0..1000 {
            assert_eq!(room.take_publish("a", later, unlimited), Ok(()));
        }
    }
}
