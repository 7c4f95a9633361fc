//! A published track: one source with one or (simulcast) up to three encodings, each with its
//! receive state, retransmission buffer, loss detection and keyframe throttle, and the list of
//! the track's subscriptions.

use std::time::Instant;

use crate::config::Config;
use crate::dynacast::Announcer;
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
    /// Its rate when it last flowed steadily: what resuming it would cost once the publisher
    /// stopped it (dynacast), and a floor for its cost while it ramps up again; 0 if never
    /// measured.
    pub(crate) last_live_bps: u64,
    /// Since when packets have arrived in every rate interval (`None`: not flowing).
    pub(crate) flowing_since: Option<Instant>,
}

/// A layer flowing this long measures its rate as it is; before that (just started, ramping
/// up) its measurement can only raise the rate remembered for it.
const STEADY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl Layer {
    /// Ends a rate interval of length `interval` at `now` and updates the remembered rate.
    /// The interval in which a layer stops measures only part of it, so the larger of the
    /// rates before and after it counts.
    pub(crate) fn conclude_rate(&mut self, now: Instant, interval: std::time::Duration) {
        let before = self.rate.bps();
        self.rate.conclude(now);
        let measured = before.max(self.rate.bps());
        let flowing = self
            .last_packet_at
            .is_some_and(|at| now.saturating_duration_since(at) < interval);
        if !flowing {
            self.flowing_since = None;
            return;
        }
        let since = *self.flowing_since.get_or_insert(now);
        self.last_live_bps = if now.saturating_duration_since(since) >= STEADY_AFTER {
            measured
        } else {
            self.last_live_bps.max(measured)
        };
    }

    /// What forwarding this layer costs a subscriber's downlink: its measured rate, but no less
    /// than the rate remembered from when it last flowed steadily (a layer restarting or just
    /// stopped measures low).
    pub(crate) fn cost(&self) -> u64 {
        self.rate.bps().max(self.last_live_bps)
    }
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
    /// Which layers the publisher was last told anyone consumes (dynacast).
    pub(crate) dynacast: Announcer,
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
                last_live_bps: 0,
                flowing_since: None,
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
            dynacast: Announcer::new(now, config.encodings.iter().count()),
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn layer() -> Layer {
        let now = Instant::now();
        let config = Config::default();
        Layer {
            encoding: Encoding {
                rid: None,
                ssrc: None,
                rtx_ssrc: None,
            },
            inbound: InboundRtp::new(Ssrc(1), ClockRate(90_000), now),
            nack: NackGenerator::new(config.nack_retry_interval),
            buffer: RetransmitBuffer::new(8, config.retransmit_max_age),
            keyframes: KeyframeRequester::new(config.keyframe_window),
            sr_forwarded_at: None,
            last_packet_at: None,
            rate: RateMeter::default(),
            last_live_bps: 0,
            flowing_since: None,
        }
    }

    #[test]
    fn a_layer_remembers_its_steady_rate_through_a_stop_and_a_ramp_up() {
        let t0 = Instant::now();
        let step = Duration::from_millis(250);
        let mut l = layer();
        let mut now = t0;
        // 25 kB per 250 ms = 800 kbps, steady for 3 s.
        let run = |l: &mut Layer, now: &mut Instant, bytes: usize, intervals: u32| {
            for _ in 0..intervals {
                if bytes > 0 {
                    l.rate.add(bytes);
                    l.last_packet_at = Some(*now + step - Duration::from_millis(10));
                }
                *now += step;
                l.conclude_rate(*now, step);
            }
        };
        run(&mut l, &mut now, 25_000, 12);
        assert!(
            (780_000..=800_000).contains(&l.last_live_bps),
            "{}",
            l.last_live_bps
        );
        // Stopped: the measured rate decays, the remembered one stays (and is its cost).
        run(&mut l, &mut now, 0, 8);
        assert!(l.rate.bps() < 10_000);
        assert!(l.last_live_bps >= 780_000);
        assert_eq!(l.cost(), l.last_live_bps);
        // Restarted: while it ramps up its cost is the remembered rate, not the ramp.
        run(&mut l, &mut now, 25_000, 2);
        assert!(l.rate.bps() < 700_000);
        assert!(l.cost() >= 780_000);
        // A lasting lower rate (the encoder lowered it) is learned once steady.
        run(&mut l, &mut now, 12_500, 12);
        assert!(
            (390_000..=410_000).contains(&l.last_live_bps),
            "{}",
            l.last_live_bps
        );
    }
}
