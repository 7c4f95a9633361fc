//! Errors of the command tier: the caller asked for something impossible. (Broken invariants
//! panic; bad packets are counted in [`Counters`](crate::Counters), never returned.)

use std::time::Duration;

use crate::{RoomId, Ssrc, SubscriptionId, TrackId, TransportId};

/// Why a command was refused. The worker's state is unchanged when a command fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No such room (never created, or closed).
    #[error("unknown room {0:?}")]
    UnknownRoom(RoomId),
    /// No such transport.
    #[error("unknown transport {0:?}")]
    UnknownTransport(TransportId),
    /// No such track.
    #[error("unknown track {0:?}")]
    UnknownTrack(TrackId),
    /// No such subscription.
    #[error("unknown subscription {0:?}")]
    UnknownSubscription(SubscriptionId),
    /// Publishing on a subscribe transport, or subscribing on a publish transport.
    #[error("transport {0:?} has the wrong direction for this command")]
    WrongDirection(TransportId),
    /// The track and the subscriber transport are in different rooms.
    #[error("track {track:?} is not in the room of transport {transport:?}")]
    DifferentRoom {
        /// The track.
        track: TrackId,
        /// The subscriber transport.
        transport: TransportId,
    },
    /// The SSRC is already used on that transport.
    #[error("SSRC {0:?} already in use on the transport")]
    SsrcInUse(Ssrc),
    /// A track's encodings are unusable: a layer without SSRC or rid, or an RTX SSRC without
    /// an RTX payload type.
    #[error("invalid track encodings")]
    InvalidEncodings,
    /// The track has no such simulcast layer.
    #[error("track {track:?} has no layer {layer}")]
    UnknownLayer {
        /// The track.
        track: TrackId,
        /// The requested layer.
        layer: u8,
    },
    /// The transport already subscribes to that track.
    #[error("track {0:?} is already subscribed on this transport")]
    AlreadySubscribed(TrackId),
    /// The participant published again sooner than its [`PublishRate`](crate::PublishRate)
    /// allows.
    #[error("publishing too often: try again in {:.1} s", retry_after.as_secs_f64())]
    RateLimited {
        /// When the next publish will be accepted.
        retry_after: Duration,
    },
}
