//! A transport as the worker holds it: whose it is (room, session, direction) and its
//! [`Connection`] (ICE-lite, consent, DTLS, SRTP). sfu-core knows the same transport by its
//! [`TransportId`](sfu_core::TransportId); the worker's tables map ids to links.

use sfu_core::{Direction, RoomId};

use crate::connection::Connection;

/// One client transport's network end in the worker.
#[derive(Debug)]
pub(super) struct Link {
    /// Room it belongs to.
    pub(super) room: RoomId,
    /// The signaling session it belongs to.
    pub(super) session: String,
    /// The client's publish or subscribe PeerConnection.
    pub(super) direction: Direction,
    /// Its network state.
    pub(super) connection: Connection,
}
