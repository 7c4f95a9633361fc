//! The forwarding hot path: one received RTP packet → its track → every subscription.
//!
//! Per packet and subscriber this does one arena lookup for the subscription, one for its
//! transport (extension ids, transport-wide sequence number), the rewrite, and one `push_back`
//! into the reused outbox. The payload is a `Bytes` clone (a reference count increment).

use std::time::Instant;

use bytes::Bytes;

use super::Worker;
use super::rtcp::{nack_upstream, request_keyframe};
use crate::arena::Arena;
use crate::output::{Event, OutPacket, Transmit};
use crate::rtp::{ExtensionKind, ExtensionMap, OutExtensions, RtpPacket};
use crate::stats::Counters;
use crate::stream::NackOutcome;
use crate::track::Dropped;
use crate::track::{MediaKind, Track};
use crate::transport::{Direction, Route, Transport};
use crate::{Mid, Rid, TrackId, TransportId};

/// End-to-end extension elements of the received packet (abs-send-time, audio level, video
/// orientation, playout delay), resolved once per packet and written per subscriber under the
/// subscriber's ids.
#[derive(Clone, Copy, Default)]
pub(super) struct CopiedExtensions<'a> {
    len: usize,
    elements: [(Option<ExtensionKind>, &'a [u8]); 4],
    /// The RFC 6464 level byte, when the packet carries a well-formed one.
    pub(super) audio_level: Option<u8>,
    /// The packet carries an audio level element that is not one byte: neither read nor
    /// forwarded.
    pub(super) audio_level_malformed: bool,
}

impl<'a> CopiedExtensions<'a> {
    pub(super) fn new(packet: &'a RtpPacket, map: &ExtensionMap) -> Self {
        let mut copied = Self::default();
        for (id, data) in packet.extensions() {
            let Some(kind) = map.kind(id).filter(|k| k.is_copied()) else {
                continue;
            };
            if kind == ExtensionKind::AudioLevel {
                let &[level] = data else {
                    copied.audio_level_malformed = true;
                    continue;
                };
                copied.audio_level = Some(level);
            }
            if copied.len < copied.elements.len() {
                copied.elements[copied.len] = (Some(kind), data);
                copied.len += 1;
            }
        }
        copied
    }

    /// The elements for one subscriber transport: its mid, the copied elements, and a
    /// transport-wide sequence number: `twcc` when given (a byte-identical resend), else a
    /// fresh one. Returns the number written, if the transport negotiated the extension.
    pub(super) fn for_subscriber(
        &self,
        transport: &mut Transport,
        mid: Option<Mid>,
        twcc: Option<u16>,
    ) -> (OutExtensions, Option<u16>) {
        let map = &transport.config.extensions;
        let mut out = OutExtensions::EMPTY;
        if let (Some(id), Some(mid)) = (map.id(ExtensionKind::Mid), mid) {
            out.push(id, mid.as_bytes());
        }
        for &(kind, data) in &self.elements[..self.len] {
            if let Some(id) = kind.and_then(|k| map.id(k)) {
                out.push(id, data);
            }
        }
        let twcc = map.id(ExtensionKind::TransportCc).map(|id| {
            let seq = twcc.unwrap_or_else(|| {
                let fresh = transport.twcc_seq;
                transport.twcc_seq = fresh.wrapping_add(1);
                fresh
            });
            out.push(id, &seq.to_be_bytes());
            seq
        });
        (out, twcc)
    }
}

impl Worker {
    /// A decrypted RTP packet arrived on transport `from`. Never fails: packets that cannot be
    /// routed are dropped and counted in [`Counters`](crate::Counters).
    pub fn handle_rtp(&mut self, now: Instant, from: TransportId, packet: Bytes) {
        self.arm(now);
        self.counters.rtp_received += 1;
        let Ok(packet) = RtpPacket::parse(packet) else {
            self.counters.rtp_malformed += 1;
            return;
        };
        let Self {
            config,
            transports,
            tracks,
            subscriptions,
            outbox,
            events,
            counters,
            scratch_seqs,
            ..
        } = self;
        let Some(transport) = transports
            .get_mut(from)
            .filter(|t| t.config.direction == Direction::Publish)
        else {
            counters.rtp_unknown_transport += 1;
            return;
        };
        if let Some(twcc) = &mut transport.twcc {
            let map = &transport.config.extensions;
            if let Some((_, data)) = packet.extensions().find(|&(id, data)| {
                map.kind(id) == Some(ExtensionKind::TransportCc) && data.len() == 2
            }) {
                twcc.record(now, u16::from_be_bytes([data[0], data[1]]));
            }
        }
        let Some((track_id, layer, packet)) = resolve(transport, tracks, packet, counters) else {
            return;
        };
        let copied = CopiedExtensions::new(&packet, &transport.config.extensions);
        if copied.audio_level_malformed {
            counters.audio_level_malformed += 1;
        }
        let track = tracks
            .get_mut(track_id)
            .expect("routes name only live tracks");
        if packet.pt() != track.config.pt {
            counters.rtp_unknown_pt += 1;
            return;
        }
        // Before any state is touched: over-cap packets neither fan out nor fill the buffer.
        if !track.ingress.try_take(now, packet.raw().len()) {
            counters.rtp_over_bitrate += 1;
            return;
        }
        let forward = match track.receive(now, layer, &packet) {
            Ok(forward) => forward,
            Err(Dropped::Duplicate) => {
                counters.rtp_duplicate += 1;
                return;
            }
            Err(Dropped::Probation) => {
                counters.rtp_probation += 1;
                return;
            }
        };
        if let Some(level) = copied.audio_level
            && track.config.kind == MediaKind::Audio
        {
            track.speech.observe(level, config.speech);
        }
        match forward.nack {
            NackOutcome::Nothing => {}
            NackOutcome::Gap => nack_upstream(track, now, config, scratch_seqs, outbox, counters),
            NackOutcome::KeyframeNeeded => {
                request_keyframe(track, layer, now, config, outbox, counters)
            }
        }
        for &id in &track.subscriptions {
            let subscription = subscriptions
                .get_mut(id)
                .expect("a track lists only live subscriptions");
            let before = subscription.layers.current;
            let Some(mut header) = subscription.forward(now, &packet, &forward) else {
                // Other simulcast layers are skipped silently; only a start wait is news.
                if subscription.layers.current.is_none() && !subscription.layers.paused {
                    counters.rtp_waiting_for_keyframe += 1;
                }
                continue;
            };
            if subscription.stats.packets_sent == 1 {
                events.push_back(Event::SubscriptionStarted { subscription: id });
            } else if before != subscription.layers.current {
                events.push_back(Event::LayerSwitched {
                    subscription: id,
                    layer,
                });
            }
            let to = subscription.transport;
            let transport = transports
                .get_mut(to)
                .expect("a subscription's transport outlives it");
            let (extensions, twcc) =
                copied.for_subscriber(transport, subscription.config.mid, None);
            header.extensions = extensions;
            let size = header.len() + packet.payload().len();
            if let Some(twcc) = twcc {
                subscription.record_twcc(header.seq, twcc);
                if let Some(bwe) = &mut transport.bwe {
                    bwe.on_sent(now, twcc, size);
                }
            }
            subscription.limiter.credit(size);
            outbox.push_back(Transmit {
                to,
                packet: OutPacket::Rtp {
                    header,
                    payload: packet.payload().clone(),
                },
            });
            counters.rtp_forwarded += 1;
        }
    }
}

/// The track and layer a packet belongs to, with RTX unwrapped into the original packet.
fn resolve(
    transport: &mut Transport,
    tracks: &mut Arena<TrackId, Track>,
    packet: RtpPacket,
    counters: &mut Counters,
) -> Option<(TrackId, u8, RtpPacket)> {
    let route = match transport.routes.get(&packet.ssrc()) {
        Some(&route) => Some(route),
        None => match learn_ssrc(transport, tracks, &packet) {
            Learned::Route(route) => Some(route),
            Learned::NoRid => None,
            Learned::Refused => {
                counters.rtp_unknown_rid += 1;
                return None;
            }
        },
    };
    match route {
        Some(Route::Track { track, layer }) => Some((track, layer, packet)),
        Some(Route::TrackRtx { track: id, layer }) => {
            let track = tracks.get(id).expect("routes name only live tracks");
            let media = track.layers[usize::from(layer)].encoding.ssrc;
            let unwrapped = (Some(packet.pt()) == track.config.rtx_pt)
                .then_some(media)
                .flatten()
                // Padding-only RTX (bandwidth probes) carries no OSN and ends here too.
                .and_then(|media| packet.unwrap_rtx(media, track.config.pt));
            if unwrapped.is_none() {
                counters.rtp_unknown_pt += 1;
            }
            Some((id, layer, unwrapped?))
        }
        Some(Route::Subscription(_) | Route::SubscriptionRtx(_)) | None => {
            counters.rtp_unknown_ssrc += 1;
            None
        }
    }
}

/// What an unknown SSRC's first packet taught [`learn_ssrc`].
enum Learned {
    /// The SSRC is now bound to a layer (or its RTX).
    Route(Route),
    /// The packet names no rid: an undeclared SSRC.
    NoRid,
    /// It names a rid no track of the transport announced, or a layer already bound to
    /// another SSRC: dropped, so a publisher cannot rebind or add layers by packet.
    Refused,
}

/// Binds an unknown SSRC to a simulcast layer announced by rid (RFC 8852): browsers do not
/// signal simulcast SSRCs, so the first packet carrying the mid and rid (or repaired-rid, for
/// RTX) header extensions names its layer. Each layer binds once, so a peer cannot grow the
/// route table by spraying SSRCs.
fn learn_ssrc(
    transport: &mut Transport,
    tracks: &mut Arena<TrackId, Track>,
    packet: &RtpPacket,
) -> Learned {
    let map = transport.config.extensions;
    let (mut mid, mut rid, mut repaired) = (None, None, None);
    for (id, data) in packet.extensions() {
        match map.kind(id) {
            Some(ExtensionKind::Mid) => mid = Mid::new(data),
            Some(ExtensionKind::Rid) => rid = Rid::new(data),
            Some(ExtensionKind::RepairedRid) => repaired = Rid::new(data),
            _ => {}
        }
    }
    let (name, is_rtx) = match (rid, repaired) {
        (Some(rid), _) => (rid, false),
        (None, Some(rid)) => (rid, true),
        (None, None) => return Learned::NoRid,
    };
    let ssrc = packet.ssrc();
    for &track_id in &transport.tracks {
        let track = tracks
            .get_mut(track_id)
            .expect("a transport lists only live tracks");
        if mid.is_some_and(|m| track.config.mid != Some(m))
            || (is_rtx && track.config.rtx_pt.is_none())
        {
            continue;
        }
        let Some(layer) = track
            .layers
            .iter()
            .position(|l| l.encoding.rid == Some(name))
        else {
            continue;
        };
        let l = &mut track.layers[layer];
        let slot = if is_rtx {
            &mut l.encoding.rtx_ssrc
        } else {
            &mut l.encoding.ssrc
        };
        if slot.is_some() {
            return Learned::Refused;
        }
        *slot = Some(ssrc);
        let layer = layer as u8;
        let route = if is_rtx {
            Route::TrackRtx {
                track: track_id,
                layer,
            }
        } else {
            l.inbound.bind(ssrc);
            Route::Track {
                track: track_id,
                layer,
            }
        };
        transport.routes.insert(ssrc, route);
        return Learned::Route(route);
    }
    Learned::Refused
}
