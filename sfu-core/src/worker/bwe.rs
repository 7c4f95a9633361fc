//! Downlink bandwidth estimation in the worker: subscribers' transport-wide CC feedback feeds
//! their transport's [`BandwidthEstimator`](crate::bwe::BandwidthEstimator); at every layer
//! check the estimate is divided among the transport's subscriptions ([`allocate`]): audio
//! first, then video layers within the wishes, pausing video that does not fit (without loss,
//! one such video per subscriber is held at its lowest layer instead); an upgrade
//! that does not fit asks for a probe, which the tick sends as retransmissions of recent
//! packets on the RTX stream, or padding-only packets there when nothing can be resent.

use std::num::NonZeroU8;
use std::time::Instant;

use super::Worker;
use super::rtcp::request_keyframe;
use super::rtp::CopiedExtensions;
use crate::allocation::{Allotted, VideoDemand, allocate};
use crate::output::{OutPacket, Transmit};
use crate::rtcp::TwccFeedback;
use crate::track::MediaKind;
use crate::{Bitrate, SeqNo, TransportId};

/// The loss (share of a judged feedback batch) from which a video that does not fit even at
/// its lowest layer is paused; below it the lowest layer keeps flowing.
const PAUSE_LOSS: f64 = 0.02;
/// Probe packets are taken from the newest this many packets forwarded (cycling).
const PROBE_DEPTH: u64 = 32;
/// Padding bytes per padding-only probe packet (the most one RTP packet's padding can say).
const PADDING_BYTES: NonZeroU8 = NonZeroU8::MAX;
/// Padding-only packets per probe call, at most (~18 kB: a 100 ms cluster's share of a tick).
const PADDING_PER_CALL: usize = 64;

impl Worker {
    /// Transport-wide CC feedback from a subscriber: its downlink estimate learns from it. At
    /// most one message per `Config::twcc_min_interval` is used (browsers send one per
    /// 50–100 ms); the rest are dropped and counted (`twcc_throttled`), so a subscriber packing
    /// datagrams with feedback cannot turn the estimator into its CPU sink.
    pub(super) fn consume_twcc(
        &mut self,
        now: Instant,
        from: TransportId,
        feedback: &TwccFeedback<'_>,
    ) {
        let Some(transport) = self.transports.get_mut(from) else {
            return;
        };
        let Some(bwe) = transport.bwe.as_mut() else {
            return;
        };
        if transport
            .last_twcc_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.twcc_min_interval)
        {
            self.counters.twcc_throttled += 1;
            return;
        }
        transport.last_twcc_at = Some(now);
        bwe.on_feedback(now, feedback);
        self.counters.twcc_received += 1;
    }

    /// A subscriber transport's downlink estimate, once its feedback has been flowing long
    /// enough to decide layers (`None` without transport-wide CC, or before).
    pub fn bandwidth_estimate(&self, now: Instant, transport: TransportId) -> Option<Bitrate> {
        let bwe = self.transports.get(transport)?.bwe.as_ref()?;
        bwe.is_warm(now).then(|| bwe.estimate())
    }

    /// Measures every layer's rate, then divides each warm estimate among its transport's
    /// subscriptions. Runs at the layer check, before the layers are reselected.
    pub(super) fn allocate_bandwidth(&mut self, now: Instant) {
        let Self {
            config,
            transports,
            tracks,
            subscriptions,
            outbox,
            counters,
            scratch_demands,
            scratch_allotted,
            scratch_subscriptions,
            scratch_potential,
            scratch_potential_allotted,
            ..
        } = self;
        for (_, track) in tracks.iter_mut() {
            for layer in &mut track.layers {
                layer.conclude_rate(now, config.layer_check_interval);
            }
        }
        for (_, transport) in transports.iter_mut() {
            let Some(bwe) = transport.bwe.as_mut().filter(|b| b.is_warm(now)) else {
                continue;
            };
            let estimate = bwe.estimate().0;
            let mut budget = estimate;
            scratch_demands.clear();
            scratch_potential.clear();
            scratch_subscriptions.clear();
            for &id in &transport.subscriptions {
                let s = subscriptions
                    .get(id)
                    .expect("a transport lists only live subscriptions");
                if s.layers.paused {
                    continue;
                }
                let track = tracks
                    .get(s.track)
                    .expect("a subscription's track outlives it");
                match track.config.kind {
                    MediaKind::Audio => budget = budget.saturating_sub(track.layers[0].rate.bps()),
                    MediaKind::Video => {
                        let live = track.live_layers(now, config.layer_idle);
                        let mut rates = [None; 3];
                        let mut potential = [None; 3];
                        for (i, layer) in track.layers.iter().enumerate() {
                            rates[i] = live[i].then(|| layer.cost());
                            // A layer never measured (the publisher stopped it before it
                            // ever flowed) counts as free: asked for, it gets measured.
                            potential[i] = rates[i].or(Some(layer.last_live_bps));
                        }
                        let demand = VideoDemand {
                            rates,
                            wanted: s.layers.wanted,
                            current: s.layers.current.filter(|_| !s.layers.starved),
                        };
                        scratch_demands.push(demand);
                        scratch_potential.push(VideoDemand {
                            rates: potential,
                            ..demand
                        });
                        scratch_subscriptions.push(id);
                    }
                }
            }
            let audio = estimate - budget;
            // A pause is the last resort, for a downlink that loses packets: an estimate that
            // is low without loss (a receiver whose host is too busy to timestamp arrivals
            // evenly reads as a growing queue) picks lower layers and holds one video that does
            // not fit at its lowest layer rather than blacking it out. One: on a deep-buffered
            // link that really is full, the over-commitment (and the queue audio waits in)
            // stays one lowest layer until loss shows.
            let mut may_hold = bwe.loss() < PAUSE_LOSS;
            let mut blocked = allocate(budget, scratch_demands, scratch_allotted);
            // Dynacast's view: the same division were the layers the publisher stopped still
            // flowing. It decides which layers to ask back, and its first blocked upgrade is the
            // probe target (a stopped layer that would fit after probing is worth asking for).
            let demands = if scratch_potential == scratch_demands {
                &*scratch_allotted
            } else {
                blocked = allocate(budget, scratch_potential, scratch_potential_allotted);
                &*scratch_potential_allotted
            };
            for (((&id, &allotted), &demand), video) in scratch_subscriptions
                .iter()
                .zip(scratch_allotted.iter())
                .zip(demands)
                .zip(scratch_demands.iter())
            {
                let s = subscriptions
                    .get_mut(id)
                    .expect("a transport lists only live subscriptions");
                let l = &mut s.layers;
                l.demand = match demand {
                    Allotted::Layer(layer) => Some(layer),
                    Allotted::Paused | Allotted::Idle => None,
                };
                match allotted {
                    Allotted::Layer(layer) => {
                        l.bwe_layer = Some(layer);
                        if l.starved {
                            // Resumes like a new subscription: at a keyframe of the layer.
                            l.starved = false;
                            l.target = layer;
                            counters.bwe_resumes += 1;
                            if l.needs_keyframe {
                                let track = tracks
                                    .get_mut(s.track)
                                    .expect("a subscription's track outlives it");
                                request_keyframe(track, layer, now, config, outbox, counters);
                            }
                        }
                    }
                    Allotted::Paused if !l.starved && may_hold => {
                        may_hold = false;
                        l.bwe_layer = video.lowest_allowed().or(l.bwe_layer);
                    }
                    Allotted::Paused if !l.starved => {
                        l.starved = true;
                        l.current = None;
                        counters.bwe_pauses += 1;
                    }
                    Allotted::Paused => {}
                    Allotted::Idle => l.bwe_layer = None,
                }
            }
            if let Some(need) = blocked {
                bwe.request_probe(now, Bitrate(need + audio));
            }
        }
    }

    /// Keeps running probe clusters at their rate: retransmissions of the newest packets of a
    /// video subscription with RTX (the subscriber drops them as duplicates; the feedback about
    /// them measures the path).
    pub(super) fn send_probes(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.scratch_probes);
        due.clear();
        for (to, transport) in self.transports.iter_mut() {
            if let Some(deficit) = transport
                .bwe
                .as_mut()
                .map(|b| b.probe_deficit(now))
                .filter(|&d| d > 0)
            {
                due.push((to, deficit));
            }
        }
        for &(to, deficit) in &due {
            self.probe(now, to, deficit);
        }
        self.scratch_probes = due;
    }

    /// Sends about `deficit` bytes of probe packets on transport `to`: retransmissions of
    /// recent media of a flowing video, or padding when none flows (a subscriber whose every
    /// video is paused for its downlink has nothing to resend, and its estimate cannot grow on
    /// audio alone: without padding such a pause would never end).
    fn probe(&mut self, now: Instant, to: TransportId, deficit: usize) {
        // Padding only where no video flows: a flowing video's probes stay what the buffer
        // holds (a full-rate padded cluster overshoots token-bucket shapers).
        if self.probe_with_media(now, to, deficit).is_none() {
            self.probe_with_padding(now, to, deficit);
        }
    }

    /// Padding-only packets on the RTX stream of one of the transport's video subscriptions
    /// (paused ones too: padding carries no media), at most [`PADDING_PER_CALL`] per call.
    fn probe_with_padding(&mut self, now: Instant, to: TransportId, mut deficit: usize) {
        let Self {
            transports,
            subscriptions,
            outbox,
            counters,
            ..
        } = self;
        let transport = transports.get_mut(to).expect("collected from the arena");
        let Some(&id) = transport.subscriptions.iter().find(|&&id| {
            subscriptions
                .get(id)
                .is_some_and(|s| s.config.rtx.is_some())
        }) else {
            return;
        };
        let s = subscriptions
            .get_mut(id)
            .expect("a transport lists only live subscriptions");
        for _ in 0..PADDING_PER_CALL {
            if deficit == 0 {
                break;
            }
            let Some(mut header) = s.padding_header() else {
                return;
            };
            // No mid: the RTX SSRC is in the offer, and a receiver that binds unsignalled
            // SSRCs by mid must not take a padding stream for the track's media.
            let (extensions, twcc) =
                CopiedExtensions::default().for_subscriber(transport, None, None);
            header.extensions = extensions;
            let size = header.len() + usize::from(PADDING_BYTES.get());
            if let (Some(twcc), Some(bwe)) = (twcc, transport.bwe.as_mut()) {
                bwe.on_sent(now, twcc, size);
            }
            deficit = deficit.saturating_sub(size);
            outbox.push_back(Transmit {
                to,
                packet: OutPacket::Padding {
                    header,
                    len: PADDING_BYTES,
                },
            });
            counters.probe_packets_sent += 1;
            counters.probe_padding_sent += 1;
        }
    }

    /// Retransmissions of the newest packets of a flowing video subscription with RTX, up to
    /// `deficit` bytes; `None` when there is no such subscription.
    fn probe_with_media(
        &mut self,
        now: Instant,
        to: TransportId,
        mut deficit: usize,
    ) -> Option<usize> {
        let Self {
            transports,
            tracks,
            subscriptions,
            outbox,
            counters,
            ..
        } = self;
        let transport = transports.get(to).expect("collected from the arena");
        let id = transport.subscriptions.iter().copied().find(|&id| {
            subscriptions.get(id).is_some_and(|s| {
                s.config.rtx.is_some() && s.layers.current.is_some() && !s.layers.starved
            })
        })?;
        let s = subscriptions
            .get_mut(id)
            .expect("a transport lists only live subscriptions");
        let track = tracks
            .get(s.track)
            .expect("a subscription's track outlives it");
        let (Some(current), Some(highest)) = (s.layers.current, s.rewriter.highest_seq()) else {
            return None;
        };
        let publisher_map = transports
            .get(track.transport)
            .expect("a track's transport outlives it")
            .config
            .extensions;
        let layer = &track.layers[usize::from(current)];
        let transport = transports.get_mut(to).expect("collected from the arena");
        let mut misses = 0;
        while deficit > 0 && misses < PROBE_DEPTH {
            let back = transport.probe_cursor % PROBE_DEPTH;
            transport.probe_cursor += 1;
            let out = SeqNo(highest.0.saturating_sub(back));
            let Some(packet) = s
                .rewriter
                .input_seq(out)
                .and_then(|input| layer.buffer.get(now, input))
            else {
                misses += 1;
                continue;
            };
            let mut header = s.retransmit(packet, out);
            let (extensions, twcc) = CopiedExtensions::new(packet, &publisher_map).for_subscriber(
                transport,
                s.config.mid,
                None,
            );
            header.extensions = extensions;
            let size = header.len() + packet.payload().len();
            if let (Some(twcc), Some(bwe)) = (twcc, transport.bwe.as_mut()) {
                bwe.on_sent(now, twcc, size);
            }
            deficit = deficit.saturating_sub(size);
            outbox.push_back(Transmit {
                to,
                packet: OutPacket::Rtp {
                    header,
                    payload: packet.payload().clone(),
                },
            });
            counters.probe_packets_sent += 1;
        }
        Some(deficit)
    }
}
