//! A published track: one source with one or (simulcast) up to three encodings, each with its
//! receive state, retransmission buffer, loss detection and keyframe throttle, and the list of
//! the track's subscriptions.

use std::time::Instant;

use crate::config::Config;
use crate::rtp::{Codec, RtpPacket, is_keyframe};
use crate::speakers::SpeechMeter;
use crate::stream::{
    InboundRtp, KeyframeRequester, NackGenerator, NackOutcome, RateMeter, RetransmitBuffer,
    TokenBucket,
};
use crate::{ClockRate, Mid, Pt, Rid, RoomId, RtpTime, SeqNo, Ssrc, SubscriptionId, TransportId};

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

/// One encoding of a track: the only one of a plain track, or one simulcast layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// `a=rid` of the layer. With a rid and no SSRC, the SSRC is learned from the first packet
    /// carrying the rid header extension (what browsers do for simulcast).
    pub rid: Option<Rid>,
    /// Media SSRC, when signalled (`a=ssrc`).
    pub ssrc: Option<Ssrc>,
    /// RTX SSRC, when signalled (`a=ssrc-group:FID`); otherwise learned from repaired-rid.
    pub rtx_ssrc: Option<Ssrc>,
}

/// The encodings of a track, lowest quality first: one for a plain track, up to three layers
/// for simulcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encodings([Option<Encoding>; 3]);

impl Encodings {
    /// A plain (non-simulcast) track with signalled SSRCs.
    pub fn single(ssrc: Ssrc, rtx_ssrc: Option<Ssrc>) -> Self {
        Self([
            Some(Encoding {
                rid: None,
                ssrc: Some(ssrc),
                rtx_ssrc,
            }),
            None,
            None,
        ])
    }

    /// Simulcast layers, lowest quality first; `None` unless there are one to three.
    pub fn simulcast(layers: &[Encoding]) -> Option<Self> {
        if layers.is_empty() || layers.len() > 3 {
            return None;
        }
        let mut encodings = [None; 3];
        for (slot, layer) in encodings.iter_mut().zip(layers) {
            *slot = Some(*layer);
        }
        Some(Self(encodings))
    }

    /// The encodings in layer order.
    pub fn iter(&self) -> impl Iterator<Item = Encoding> + '_ {
        self.0.iter().map_while(|e| *e)
    }
}

/// What the publisher negotiated for one track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackConfig {
    /// Audio or video.
    pub kind: MediaKind,
    /// Codec, for keyframe detection.
    pub codec: Codec,
    /// Media payload type the publisher sends.
    pub pt: Pt,
    /// Media clock rate.
    pub clock_rate: ClockRate,
    /// The publisher's RTX payload type, if RTX is negotiated.
    pub rtx_pt: Option<Pt>,
    /// The publisher's mid for this track (needed to learn simulcast SSRCs by rid).
    pub mid: Option<Mid>,
    /// SSRCs and rids.
    pub encodings: Encodings,
}

/// What one received packet means for the fan-out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Forward {
    pub(crate) layer: u8,
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

/// Receive state of one encoding: each simulcast layer has its own sequence space, losses,
/// retransmission buffer and keyframes.
#[derive(Debug)]
pub(crate) struct Layer {
    /// SSRCs filled in as they are learned.
    pub(crate) encoding: Encoding,
    pub(crate) inbound: InboundRtp,
    pub(crate) nack: NackGenerator,
    pub(crate) buffer: RetransmitBuffer,
    pub(crate) keyframes: KeyframeRequester,
    /// When the layer's last sender report was translated to subscribers (SR throttle).
    pub(crate) sr_forwarded_at: Option<Instant>,
    /// When the layer's latest packet was accepted: whether it is flowing.
    pub(crate) last_packet_at: Option<Instant>,
    /// Its received bitrate (what forwarding it costs a subscriber's downlink).
    pub(crate) rate: RateMeter,
}

#[derive(Debug)]
pub(crate) struct Track {
    pub(crate) room: RoomId,
    pub(crate) transport: TransportId,
    pub(crate) config: TrackConfig,
    /// One per encoding, lowest quality first; never empty.
    pub(crate) layers: Vec<Layer>,
    /// Subscriptions in join order; the fan-out loop walks this list.
    pub(crate) subscriptions: Vec<SubscriptionId>,
    pub(crate) packets_received: u64,
    pub(crate) octets_received: u64,
    /// The publisher bitrate cap (all layers and RTX together).
    pub(crate) ingress: TokenBucket,
    /// Audio levels of the current speaker interval (audio tracks only).
    pub(crate) speech: SpeechMeter,
}

impl Track {
    pub(crate) fn new(
        now: Instant,
        room: RoomId,
        transport: TransportId,
        config: TrackConfig,
        worker: &Config,
    ) -> Self {
        let layers = config
            .encodings
            .iter()
            .map(|encoding| Layer {
                encoding,
                inbound: InboundRtp::new(encoding.ssrc.unwrap_or_default(), config.clock_rate, now),
                nack: NackGenerator::new(worker.nack_retry_interval),
                buffer: RetransmitBuffer::new(
                    worker.retransmit_capacity,
                    worker.retransmit_max_age,
                ),
                keyframes: KeyframeRequester::new(worker.keyframe_window),
                sr_forwarded_at: None,
                last_packet_at: None,
                rate: RateMeter::default(),
            })
            .collect();
        let cap = match config.kind {
            MediaKind::Audio => worker.max_audio_track_bitrate,
            MediaKind::Video => worker.max_video_track_bitrate,
        };
        Self {
            room,
            transport,
            config,
            layers,
            subscriptions: Vec::new(),
            packets_received: 0,
            octets_received: 0,
            ingress: TokenBucket::new(now, cap, worker.track_bitrate_burst),
            speech: SpeechMeter::default(),
        }
    }

    /// The highest layer index.
    pub(crate) fn top_layer(&self) -> u8 {
        (self.layers.len() - 1) as u8
    }

    /// Which layers are flowing: a packet accepted within `idle`.
    pub(crate) fn live_layers(&self, now: Instant, idle: std::time::Duration) -> [bool; 3] {
        let mut live = [false; 3];
        for (slot, layer) in live.iter_mut().zip(&self.layers) {
            *slot = layer
                .last_packet_at
                .is_some_and(|at| now.saturating_duration_since(at) < idle);
        }
        live
    }

    /// Accounts one media packet (original or unwrapped RTX) of `layer` and decides whether it
    /// fans out.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        layer: u8,
        packet: &RtpPacket,
    ) -> Result<Forward, Dropped> {
        let kind = self.config.kind;
        let codec = self.config.codec;
        let l = &mut self.layers[usize::from(layer)];
        let received = l
            .inbound
            .receive(now, packet.seq(), packet.timestamp())
            .ok_or(Dropped::Probation)?;
        if received.restarted {
            l.nack.reset();
            l.buffer.clear();
        }
        if !l.buffer.insert(now, received.seq, packet) {
            return Err(Dropped::Duplicate);
        }
        l.last_packet_at = Some(now);
        l.rate.add(packet.raw().len());
        self.packets_received += 1;
        self.octets_received += packet.payload().len() as u64;
        let nack = l.nack.receive(now, received.seq);
        let keyframe = kind == MediaKind::Video && is_keyframe(codec, packet.payload());
        if keyframe {
            l.keyframes.keyframe_received();
        }
        Ok(Forward {
            layer,
            seq: received.seq,
            timestamp: received.timestamp,
            restarted: received.restarted,
            keyframe,
            nack,
        })
    }
}
