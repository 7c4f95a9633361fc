//! Who is in a room: participants, the transports and tracks that are theirs, and their publish
//! budget. Commands here follow the command tier's rule (fully applied, or `Err` and nothing
//! changed); the queries give the media layer everything it needs to negotiate, so it keeps no
//! room model of its own.

use std::time::Instant;

use super::Worker;
use crate::error::CommandError;
use crate::room::{PublishRate, Room};
use crate::transport::{Direction, TransportConfig};
use crate::{RoomId, TrackId, TransportId};

impl Worker {
    /// Whether `room` is open.
    pub fn has_room(&self, room: RoomId) -> bool {
        self.rooms.get(room).is_some()
    }

    /// Adds `participant` to `room`; a participant already there is unchanged.
    pub fn join(&mut self, room: RoomId, participant: &str) -> Result<(), CommandError> {
        self.room_mut(room)?.join(participant);
        Ok(())
    }

    /// Adds a transport owned by `participant` (who joins if absent) to `room`.
    pub fn add_participant_transport(
        &mut self,
        now: Instant,
        room: RoomId,
        participant: &str,
        config: TransportConfig,
    ) -> Result<TransportId, CommandError> {
        let transport = self.add_transport(now, room, config)?;
        self.room_mut(room)
            .expect("add_transport checked the room")
            .join(participant)
            .transports
            .push(transport);
        Ok(transport)
    }

    /// Removes `participant` from `room` with its transports (their tracks and subscriptions
    /// end) and the tracks relayed on its behalf. Returns the transports removed; none when it
    /// was not there.
    pub fn leave(
        &mut self,
        room: RoomId,
        participant: &str,
    ) -> Result<Vec<TransportId>, CommandError> {
        let Some(gone) = self.room_mut(room)?.participants.remove(participant) else {
            return Ok(Vec::new());
        };
        for &transport in &gone.transports {
            self.remove_transport(transport)
                .expect("a participant lists only live transports");
        }
        for &track in &gone.tracks {
            // Tracks on its own transports ended with them.
            let _ = self.unpublish_track(track);
        }
        Ok(gone.transports)
    }

    /// Takes one publish from `participant`'s budget in `room` (its count survives leaving and
    /// joining again). [`CommandError::RateLimited`] says when the next one is allowed.
    pub fn take_publish(
        &mut self,
        now: Instant,
        room: RoomId,
        participant: &str,
        rate: PublishRate,
    ) -> Result<(), CommandError> {
        self.room_mut(room)?
            .take_publish(participant, now, rate)
            .map_err(|retry_after| CommandError::RateLimited { retry_after })
    }

    /// The room's participants by name, in a stable order (none for an unknown room).
    pub fn participants(&self, room: RoomId) -> impl Iterator<Item = &str> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.participants.keys().map(String::as_str))
    }

    /// `participant`'s newest transport of `direction` in `room`.
    pub fn participant_transport(
        &self,
        room: RoomId,
        participant: &str,
        direction: Direction,
    ) -> Option<TransportId> {
        let p = self.rooms.get(room)?.participants.get(participant)?;
        p.transports.iter().rev().copied().find(|&t| {
            self.transports
                .get(t)
                .is_some_and(|t| t.config.direction == direction)
        })
    }

    /// The tracks `participant` publishes in `room`, in publish order.
    pub fn participant_tracks(&self, room: RoomId, participant: &str) -> &[TrackId] {
        self.rooms
            .get(room)
            .and_then(|r| r.participants.get(participant))
            .map_or(&[], |p| p.tracks.as_slice())
    }

    /// Every track published in `room` with its participant: by participant name, then in
    /// publish order. Tracks of no participant (published on an unowned transport) are not
    /// listed.
    pub fn published(&self, room: RoomId) -> impl Iterator<Item = (&str, TrackId)> {
        self.rooms.get(room).into_iter().flat_map(|r| {
            r.participants
                .iter()
                .flat_map(|(name, p)| p.tracks.iter().map(move |&t| (name.as_str(), t)))
        })
    }

    /// Every transport in `room`, owned or not (none for an unknown room).
    pub fn room_transports(&self, room: RoomId) -> &[TransportId] {
        self.rooms
            .get(room)
            .map_or(&[], |r| r.transports.as_slice())
    }

    /// The tracks published on `transport` (none for an unknown transport).
    pub fn transport_tracks(&self, transport: TransportId) -> &[TrackId] {
        self.transports
            .get(transport)
            .map_or(&[], |t| t.tracks.as_slice())
    }

    fn room_mut(&mut self, room: RoomId) -> Result<&mut Room, CommandError> {
        self.rooms
            .get_mut(room)
            .ok_or(CommandError::UnknownRoom(room))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::rtp::ExtensionMap;
    use crate::*;

    fn config(direction: Direction) -> TransportConfig {
        TransportConfig {
            direction,
            extensions: ExtensionMap::new(&[]),
        }
    }

    fn audio(ssrc: u32) -> TrackConfig {
        TrackConfig {
            encodings: Encodings::single(Ssrc(ssrc), None),
            ..worker::tests::audio_track()
        }
    }

    fn published(worker: &Worker, room: RoomId) -> Vec<(String, TrackId)> {
        worker
            .published(room)
            .map(|(p, t)| (p.to_owned(), t))
            .collect()
    }

    #[test]
    fn a_room_knows_whose_transports_and_tracks_are_which() {
        let now = Instant::now();
        let mut worker = Worker::new(Config::default());
        let room = worker.create_room().unwrap();
        let b_pub = worker
            .add_participant_transport(now, room, "b", config(Direction::Publish))
            .unwrap();
        let a_pub = worker
            .add_participant_transport(now, room, "a", config(Direction::Publish))
            .unwrap();
        let a_sub = worker
            .add_participant_transport(now, room, "a", config(Direction::Subscribe))
            .unwrap();
        let b1 = worker.publish_track(now, b_pub, audio(1)).unwrap();
        let a1 = worker.publish_track(now, a_pub, audio(2)).unwrap();
        let b2 = worker.publish_track(now, b_pub, audio(3)).unwrap();
        worker.join(room, "c").unwrap();
        worker.check_invariants();

        assert_eq!(
            worker.participants(room).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        // By participant, then in publish order.
        assert_eq!(
            published(&worker, room),
            [("a".into(), a1), ("b".into(), b1), ("b".into(), b2)]
        );
        assert_eq!(
            worker.participant_transport(room, "a", Direction::Subscribe),
            Some(a_sub)
        );
        assert_eq!(
            worker.participant_transport(room, "c", Direction::Publish),
            None
        );
        assert_eq!(worker.participant_tracks(room, "b"), [b1, b2]);
        assert_eq!(worker.transport_tracks(b_pub), [b1, b2]);
        assert_eq!(worker.room_transports(room), [b_pub, a_pub, a_sub]);
        // `c` joined but has nothing here: not counted as present.
        assert_eq!(worker.stats().participants, 2);

        // A second publish transport is the newest; removing the first ends its tracks only.
        let b_pub2 = worker
            .add_participant_transport(now, room, "b", config(Direction::Publish))
            .unwrap();
        assert_eq!(
            worker.participant_transport(room, "b", Direction::Publish),
            Some(b_pub2)
        );
        let b3 = worker.publish_track(now, b_pub2, audio(1)).unwrap();
        worker.remove_transport(b_pub).unwrap();
        assert_eq!(worker.participant_tracks(room, "b"), [b3]);
        worker.check_invariants();

        // Leaving removes its transports (and their tracks); it no longer gets re-offers.
        assert_eq!(worker.leave(room, "a").unwrap(), [a_pub, a_sub]);
        assert_eq!(worker.participants(room).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(published(&worker, room), [("b".into(), b3)]);
        assert!(worker.track_stats(a1).is_none());
        assert_eq!(worker.leave(room, "a").unwrap(), []);
        worker.check_invariants();

        let unknown = RoomId::from_u64(u64::MAX);
        assert_eq!(
            worker.join(unknown, "x"),
            Err(CommandError::UnknownRoom(unknown))
        );
        assert_eq!(worker.participants(unknown).count(), 0);
        assert!(!worker.has_room(unknown));
        worker.close_room(room).unwrap();
        assert!(!worker.has_room(room));
        assert_eq!(worker.stats().participants, 0);
    }

    #[test]
    fn relayed_tracks_belong_to_their_publisher_who_goes_with_the_last_one() {
        let now = Instant::now();
        let mut worker = Worker::new(Config::default());
        let room = worker.create_room().unwrap();
        // A pipe: one unowned transport carrying several publishers' tracks.
        let pipe = worker
            .add_transport(now, room, config(Direction::Publish))
            .unwrap();
        let x1 = worker
            .publish_relayed_track(now, pipe, "x", audio(1))
            .unwrap();
        let x2 = worker
            .publish_relayed_track(now, pipe, "x", audio(2))
            .unwrap();
        let y1 = worker
            .publish_relayed_track(now, pipe, "y", audio(3))
            .unwrap();
        // `y` also subscribes here.
        let y_sub = worker
            .add_participant_transport(now, room, "y", config(Direction::Subscribe))
            .unwrap();
        worker.check_invariants();
        assert_eq!(
            published(&worker, room),
            [("x".into(), x1), ("x".into(), x2), ("y".into(), y1)]
        );

        worker.unpublish_track(x1).unwrap();
        assert!(worker.participants(room).any(|p| p == "x"));
        worker.unpublish_track(x2).unwrap();
        assert!(!worker.participants(room).any(|p| p == "x"));
        // A participant with a transport of its own stays after its relayed tracks end.
        worker.unpublish_track(y1).unwrap();
        assert!(worker.participants(room).any(|p| p == "y"));

        // Leaving ends the tracks relayed for it, never the pipe others' tracks use.
        let y2 = worker
            .publish_relayed_track(now, pipe, "y", audio(4))
            .unwrap();
        let z1 = worker
            .publish_relayed_track(now, pipe, "z", audio(5))
            .unwrap();
        assert_eq!(worker.leave(room, "y").unwrap(), [y_sub]);
        assert!(worker.track_stats(y2).is_none());
        assert!(worker.track_stats(z1).is_some());
        assert_eq!(worker.transport_tracks(pipe), [z1]);
        worker.check_invariants();
    }

    #[test]
    fn the_publish_budget_is_the_rooms_and_outlives_leaving() {
        let now = Instant::now();
        let mut worker = Worker::new(Config::default());
        let room = worker.create_room().unwrap();
        let rate = PublishRate {
            burst: 1,
            interval: Duration::from_secs(2),
        };
        assert_eq!(worker.take_publish(now, room, "a", rate), Ok(()));
        worker.join(room, "a").unwrap();
        worker.leave(room, "a").unwrap();
        assert_eq!(
            worker.take_publish(now, room, "a", rate),
            Err(CommandError::RateLimited {
                retry_after: Duration::from_secs(2)
            })
        );
        let unknown = RoomId::from_u64(u64::MAX);
        assert_eq!(
            worker.take_publish(now, unknown, "a", rate),
            Err(CommandError::UnknownRoom(unknown))
        );
    }
}
