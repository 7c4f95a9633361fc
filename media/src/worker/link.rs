//! A transport as the worker holds it: whose it is (room, session, direction), its
//! [`Connection`] (ICE-lite, consent, DTLS, SRTP) and, on the subscribe side, its SDP
//! negotiation. sfu-core knows the same transport by its [`TransportId`](sfu_core::TransportId)
//! (and whose it is: the room model lives there); the worker's tables map ids to links.

use sfu_core::{Direction, RoomId};

use super::negotiate::Subscribing;
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
    /// Subscribe side: what it was offered and answered (`None` on the publish side).
    pub(super) subscribing: Option<Subscribing>,
}
