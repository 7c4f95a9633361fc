//! Typed identifiers: arena keys for the entities a [`Worker`](crate::Worker) owns, and
//! protocol quantities that must never be confused with one another.

use std::fmt;

macro_rules! arena_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// An arena key plus a generation: a stale id (its entity was removed and the slot
        /// reused) never resolves to the new occupant.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            index: u32,
            generation: u32,
        }

        impl $name {
            pub(crate) fn new(index: usize, generation: u32) -> Self {
                // Slab indices are bounded by the number of live entities, far below u32::MAX.
                let index = u32::try_from(index).expect("arena index exceeds u32");
                Self { index, generation }
            }

            pub(crate) fn index(self) -> usize {
                self.index as usize
            }

            /// The raw value, for logs and wire formats: generation in the high half.
            pub fn to_u64(self) -> u64 {
                (u64::from(self.generation) << 32) | u64::from(self.index)
            }

            /// Rebuilds an id from [`Self::to_u64`]; an id that was never issued simply
            /// resolves to nothing.
            pub fn from_u64(raw: u64) -> Self {
                Self { index: raw as u32, generation: (raw >> 32) as u32 }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({}v{})"), self.index, self.generation)
            }
        }
    };
}

arena_id!(
    /// A room: the routing domain tracks fan out in (closing it frees everything inside).
    RoomId
);
arena_id!(
    /// A transport: the publish or subscribe side of one PeerConnection.
    TransportId
);
arena_id!(
    /// A published track (one source, audio or video).
    TrackId
);
arena_id!(
    /// One track delivered to one subscriber transport.
    SubscriptionId
);

/// RTP synchronization source identifier (RFC 3550 §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Ssrc(pub u32);

/// RTP payload type (7 bits on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Pt(pub u8);

/// RTP sequence number extended to 64 bits, so it never wraps inside the core; truncated to 16
/// bits only when written.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The 16 bits that go on the wire.
    pub fn wire(self) -> u16 {
        self.0 as u16
    }
}

/// RTP timestamp extended to 64 bits (media clock ticks); truncated to 32 bits when written.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct RtpTime(pub u64);

impl RtpTime {
    /// The 32 bits that go on the wire.
    pub fn wire(self) -> u32 {
        self.0 as u32
    }
}

/// Bits per second, as carried by REMB and used for bandwidth configuration.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Bitrate(pub u64);

/// Media clock rate in Hz (48 000 for Opus, 90 000 for video).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ClockRate(pub u32);

macro_rules! short_str {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Stored inline (at most 16 bytes, the one-byte header extension limit) so it is `Copy`.
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name {
            len: u8,
            bytes: [u8; 16],
        }

        impl $name {
            /// `None` when `value` is empty or longer than 16 bytes.
            pub fn new(value: &[u8]) -> Option<Self> {
                if value.is_empty() || value.len() > 16 {
                    return None;
                }
                let mut bytes = [0; 16];
                bytes[..value.len()].copy_from_slice(value);
                Some(Self { len: value.len() as u8, bytes })
            }

            /// The bytes as they appear in SDP and header extensions.
            pub fn as_bytes(&self) -> &[u8] {
                &self.bytes[..usize::from(self.len)]
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), String::from_utf8_lossy(self.as_bytes()))
            }
        }
    };
}

short_str!(
    /// Media identification (`a=mid`, RFC 8843).
    Mid
);
short_str!(
    /// RTP stream id (`a=rid`, RFC 8852): names a simulcast layer.
    Rid
);
