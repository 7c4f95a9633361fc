//! A room: the routing domain. Tracks fan out only to subscriptions in the same room.
//!
//! Entities live in the [`Worker`](crate::Worker)'s sibling arenas (so one id names an entity
//! worker-wide and the fan-out loop can borrow a track and its subscriptions at once); the room
//! records membership so closing it frees everything it owns.

use crate::{TrackId, TransportId};

#[derive(Debug, Default)]
pub(crate) struct Room {
    pub(crate) transports: Vec<TransportId>,
    pub(crate) tracks: Vec<TrackId>,
}
