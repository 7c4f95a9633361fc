//! What a [`Worker`](crate::Worker) asks the media layer to do.

use std::num::NonZeroU8;

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
    /// An RTP packet of `len` padding bytes and no payload (RFC 3550 §5.1, the P bit) on a
    /// subscription's RTX stream: a bandwidth probe when no media can be resent. Receivers
    /// count its transport-wide sequence number, then drop it (RFC 4588 needs an OSN).
    Padding {
        /// The RTX header (its own sequence number, the transport-wide one in `extensions`).
        header: RtpHeader,
        /// Padding bytes (the last one says how many).
        len: NonZeroU8,
    },
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
            Self::Padding { header, len } => {
                let at = header.write(&[], out)?;
                let need = at + usize::from(len.get());
                let Some(padding) = out.get_mut(at..need) else {
                    return Err(BufferTooSmall {
                        need,
                        have: out.len(),
                    });
                };
                padding.fill(0);
                padding[padding.len() - 1] = len.get();
                out[0] |= 0x20;
                Ok(need)
            }
        }
    }

    /// Serialises appending to `buf` (which keeps its capacity between packets).
    pub fn write_to(&self, buf: &mut BytesMut) {
        match self {
            Self::Rtp { header, payload } => header.write_to(payload, buf),
            Self::Rtcp(bytes) => buf.extend_from_slice(bytes),
            Self::Padding { header, len } => {
                let start = buf.len();
                buf.resize(start + header.len() + usize::from(len.get()), 0);
                // The buffer was just sized for exactly this packet.
                self.write(&mut buf[start..])
                    .expect("buffer sized for the header and padding");
            }
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

#[cfg(test)]
mod tests {
    use std::num::NonZeroU8;

    use bytes::BytesMut;
    use webrtc_util::Unmarshal;

    use super::OutPacket;
    use crate::rtp::{OutExtensions, RtpHeader};
    use crate::{Pt, RtpTime, SeqNo, Ssrc};

    #[test]
    fn a_padding_packet_is_rtp_with_the_p_bit_and_no_payload_for_the_reference_parser() {
        let mut extensions = OutExtensions::EMPTY;
        extensions.push(3, &[0x12, 0x34]);
        let packet = OutPacket::Padding {
            header: RtpHeader {
                ssrc: Ssrc(0x0102_0304),
                pt: Pt(97),
                seq: SeqNo(70_000),
                timestamp: RtpTime(9000),
                marker: false,
                extensions,
                rtx_osn: None,
            },
            len: NonZeroU8::new(200).unwrap(),
        };
        let mut scratch = [0u8; 1500];
        let n = packet.write(&mut scratch).unwrap();
        let mut grown = BytesMut::new();
        packet.write_to(&mut grown);
        assert_eq!(&grown[..], &scratch[..n]);
        // 12 header bytes, 8 of extension block, 200 of padding.
        assert_eq!(n, 12 + 8 + 200);
        let parsed = rtp::packet::Packet::unmarshal(&mut &scratch[..n]).unwrap();
        assert!(parsed.header.padding);
        assert!(parsed.payload.is_empty());
        assert_eq!(parsed.header.ssrc, 0x0102_0304);
        assert_eq!(parsed.header.payload_type, 97);
        assert_eq!(parsed.header.sequence_number, 70_000u64 as u16);
        assert_eq!(
            parsed.header.get_extension(3).unwrap().as_ref(),
            &[0x12, 0x34]
        );
        assert!(
            packet.write(&mut scratch[..n - 1]).is_err(),
            "too small a buffer"
        );
    }
}
