//! What a [`Worker`](crate::Worker) asks the media layer to do.

use bytes::{Bytes, BytesMut};

use crate::dynacast::LayerSet;
use crate::rtp::{BufferTooSmall, RtpHeader};
use crate::{RoomId, SubscriptionId, TrackId, TransportId};

/// One datagram to send on a transport (before SRTP/SRTCP protection).
#[derive(Clone, Debug)]
pub struct Transmit {
    /// The transport to send on.
    pub to: TransportId,
    /// What to send.
    pub packet: OutPacket,
}

/// The content of a [`Transmit`].
#[derive(Clone, Debug)]
pub enum OutPacket {
    /// RTP: a rewritten header plus the publisher's payload, shared (not copied).
    Rtp {
        /// The subscriber-specific header.
        header: RtpHeader,
        /// The payload, a slice of the received packet's allocation.
        payload: Bytes,
    },
    /// A complete (compound) RTCP packet.
    Rtcp(Bytes),
}

impl OutPacket {
    /// Serialises into `out` (a scratch buffer of at least MTU size) and returns the length; the
    /// media layer then protects `out[..len]` in place.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        match self {
            Self::Rtp { header, payload } => header.write(payload, out),
            Self::Rtcp(bytes) => {
                let Some(dst) = out.get_mut(..bytes.len()) else {
                    return Err(BufferTooSmall {
                        need: bytes.len(),
                        have: out.len(),
                    });
                };
                dst.copy_from_slice(bytes);
                Ok(bytes.len())
            }
        }
    }

    /// Serialises appending to `buf` (which keeps its capacity between packets).
    pub fn write_to(&self, buf: &mut BytesMut) {
        match self {
            Self::Rtp { header, payload } => header.write_to(payload, buf),
            Self::Rtcp(bytes) => buf.extend_from_slice(bytes),
        }
    }
}

/// Something the control plane should know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A subscription forwarded its first packet (for video: the keyframe it waited for).
    SubscriptionStarted {
        /// The subscription.
        subscription: SubscriptionId,
    },
    /// A subscription switched simulcast layer (at a keyframe of the new layer).
    LayerSwitched {
        /// The subscription.
        subscription: SubscriptionId,
        /// The layer now forwarded (0 = lowest).
        layer: u8,
    },
    /// A subscription ended (unsubscribed, its track closed, or its transport removed): the
    /// subscriber's transport needs renegotiation.
    SubscriptionClosed {
        /// The subscription.
        subscription: SubscriptionId,
        /// The subscriber's transport.
        transport: TransportId,
    },
    /// A room's speaker ranking changed (other tracks, or another order): read it with
    /// [`Worker::active_speakers`](crate::Worker::active_speakers). At most once per room per
    /// [`Config::speaker_interval`](crate::Config::speaker_interval).
    ActiveSpeakersChanged {
        /// The room.
        room: RoomId,
    },
    /// Dynacast: the layers of a simulcast track that any subscription consumes changed (the
    /// lowest is always in). At once when a layer becomes needed; a layer no longer needed at
    /// most once per [`Config::dynacast_interval`](crate::Config::dynacast_interval) per track.
    SubscribedLayersChanged {
        /// The track.
        track: TrackId,
        /// Its room.
        room: RoomId,
        /// The layers consumed now (0 = lowest).
        layers: LayerSet,
    },
    /// A published track ended (unpublished or its transport removed).
    TrackClosed {
        /// The track.
        track: TrackId,
        /// Its room.
        room: RoomId,
    },
}
