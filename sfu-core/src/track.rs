//! A published track: one source stream with its receive state, retransmission buffer, loss
//! detection and keyframe throttle, and the list of its subscriptions.

use std::time::Instant;

use crate::config::Config;
use crate::rtp::{Codec, RtpPacket, is_keyframe};
use crate::stream::{InboundRtp, KeyframeRequester, NackGenerator, NackOutcome, RetransmitBuffer};
use crate::{ClockRate, Mid, Pt, RoomId, RtpTime, SeqNo, Ssrc, SubscriptionId, TransportId};

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// The RTX (RFC 4588) stream paired with a media stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rtx {
    /// SSRC of the retransmission stream.
    pub ssrc: Ssrc,
    /// Its payload type (`a=rtpmap:<pt> rtx/<rate>` with `apt=` the media pt).
    pub pt: Pt,
}

/// What the publisher negotiated for one track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackConfig {
    /// Audio or video.
    pub kind: MediaKind,
    /// Codec, for keyframe detection.
    pub codec: Codec,
    /// Media SSRC the publisher sends.
    pub ssrc: Ssrc,
    /// Media payload type the publisher sends.
    pub pt: Pt,
    /// Media clock rate.
    pub clock_rate: ClockRate,
    /// The publisher's RTX stream, if negotiated.
    pub rtx: Option<Rtx>,
    /// The publisher's mid for this track.
    pub mid: Option<Mid>,
}

/// What one received packet means for the fan-out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Forward {
    pub(crate) seq: SeqNo,
    pub(crate) timestamp: RtpTime,
    pub(crate) restarted: bool,
    pub(crate) keyframe: bool,
    pub(crate) nack: NackOutcome,
}

/// Why a packet was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// First packet of a suspected restart (probation).
    Probation,
    /// Already received (duplicate or RTX for a packet we have).
    Duplicate,
}

#[derive(Debug)]
pub(crate) struct Track {
    pub(crate) room: RoomId,
    pub(crate) transport: TransportId,
    pub(crate) config: TrackConfig,
    pub(crate) inbound: InboundRtp,
    pub(crate) nack: NackGenerator,
    pub(crate) buffer: RetransmitBuffer,
    pub(crate) keyframes: KeyframeRequester,
    /// Subscriptions in join order; the fan-out loop walks this list.
    pub(crate) subscriptions: Vec<SubscriptionId>,
    pub(crate) packets_received: u64,
    pub(crate) octets_received: u64,
}

impl Track {
    pub(crate) fn new(
        now: Instant,
        room: RoomId,
        transport: TransportId,
        config: TrackConfig,
        worker: &Config,
    ) -> Self {
        Self {
            room,
            transport,
            config,
            inbound: InboundRtp::new(config.ssrc, config.clock_rate, now),
            nack: NackGenerator::new(worker.nack_retry_interval),
            buffer: RetransmitBuffer::new(worker.retransmit_capacity, worker.retransmit_max_age),
            keyframes: KeyframeRequester::new(worker.keyframe_window),
            subscriptions: Vec::new(),
            packets_received: 0,
            octets_received: 0,
        }
    }

    /// Accounts one media packet (original or unwrapped RTX) and decides whether it fans out.
    pub(crate) fn receive(&mut self, now: Instant, packet: &RtpPacket) -> Result<Forward, Dropped> {
        let received = self
            .inbound
            .receive(now, packet.seq(), packet.timestamp())
            .ok_or(Dropped::Probation)?;
        if received.restarted {
            self.nack.reset();
            self.buffer.clear();
        }
        if !self.buffer.insert(now, received.seq, packet) {
            return Err(Dropped::Duplicate);
        }
        self.packets_received += 1;
        self.octets_received += packet.payload().len() as u64;
        let nack = self.nack.receive(now, received.seq);
        let keyframe = self.config.kind == MediaKind::Video
            && is_keyframe(self.config.codec, packet.payload());
        if keyframe {
            self.keyframes.keyframe_received();
        }
        Ok(Forward {
            seq: received.seq,
            timestamp: received.timestamp,
            restarted: received.restarted,
            keyframe,
            nack,
        })
    }
}
