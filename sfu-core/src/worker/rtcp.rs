//! RTCP policy: what the worker consumes, generates, forwards and ignores. This file is the
//! code form of `docs/rtcp.md`; the `match` in [`Worker::handle_rtcp`] has one arm per row.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::Worker;
use super::rtp::CopiedExtensions;
use crate::config::Config;
use crate::output::{OutPacket, Transmit};
use crate::remb::{Room, STARVED_SHARE, video_track_allowance};
use crate::rtcp::{
    Compound, Nack, ReportBlock, RtcpPacket, SenderReport, write_nack, write_pli, write_remb,
    write_rr, write_sr,
};
use crate::rtp::ExtensionKind;
use crate::stats::{Counters, LOSS_BUCKETS, RTT_BUCKETS};
use crate::stream::Refused;
use crate::track::{MediaKind, Track};
use crate::transport::{Direction, Route};
use crate::{Bitrate, SeqNo, Ssrc, SubscriptionId, SubscriptionStats, TrackId, TransportId};

impl Worker {
    /// A decrypted (compound) RTCP packet arrived on transport `from`. Never fails: malformed
    /// or unroutable messages are dropped and counted.
    pub fn handle_rtcp(&mut self, now: Instant, from: TransportId, packet: Bytes) {
        self.arm(now);
        self.counters.rtcp_received += 1;
        let Some(direction) = self.transports.get(from).map(|t| t.config.direction) else {
            self.counters.rtcp_unknown_transport += 1;
            return;
        };
        for message in Compound::new(&packet) {
            let Ok(message) = message else {
                self.counters.rtcp_malformed += 1;
                break;
            };
            use Direction::{Publish, Subscribe};
            match (direction, message) {
                (Publish, RtcpPacket::SenderReport(sr)) => {
                    self.forward_sender_report(now, from, &sr)
                }
                (Subscribe, RtcpPacket::SenderReport(sr)) => sr
                    .blocks()
                    .for_each(|b| self.consume_report_block(now, from, b)),
                (Publish, RtcpPacket::ReceiverReport(_)) => {}
                (Subscribe, RtcpPacket::ReceiverReport(rr)) => rr
                    .blocks()
                    .for_each(|b| self.consume_report_block(now, from, b)),
                (_, RtcpPacket::SourceDescription) => {}
                (_, RtcpPacket::Goodbye) => {} // transport lifetime belongs to signaling
                (_, RtcpPacket::App) => {}
                (_, RtcpPacket::ExtendedReport) => {}
                (Publish, RtcpPacket::Nack(_)) => {} // we send no media to publishers
                (Subscribe, RtcpPacket::Nack(nack)) => self.serve_nack(now, from, &nack),
                (Publish, RtcpPacket::TransportCc { .. }) => {} // we send no media to publishers
                (Subscribe, RtcpPacket::TransportCc { feedback, .. }) => {
                    self.consume_twcc(now, from, &feedback)
                }
                (Publish, RtcpPacket::Pli { .. } | RtcpPacket::Fir(_)) => {}
                (Subscribe, RtcpPacket::Pli { media, .. }) => {
                    self.forward_keyframe_request(now, from, media)
                }
                (Subscribe, RtcpPacket::Fir(fir)) => fir
                    .entries()
                    .for_each(|(media, _)| self.forward_keyframe_request(now, from, media)),
                (Publish, RtcpPacket::Remb { .. }) => {}
                (Subscribe, RtcpPacket::Remb { bitrate, .. }) => self.consume_remb(from, bitrate),
                (_, RtcpPacket::OtherFeedback { .. }) => {}
                (_, RtcpPacket::Unknown { .. }) => {}
            }
        }
    }

    fn subscription_for(&mut self, transport: TransportId, ssrc: Ssrc) -> Option<SubscriptionId> {
        let route = self.transports.get(transport)?.routes.get(&ssrc).copied();
        match route {
            Some(Route::Subscription(id)) => Some(id),
            _ => {
                self.counters.rtcp_unknown_ssrc += 1;
                None
            }
        }
    }

    /// Publisher SR: remembered for our RR's LSR/DLSR, and forwarded to every active
    /// subscription with its SSRC, timestamp and counts, so subscribers keep lip sync.
    fn forward_sender_report(&mut self, now: Instant, from: TransportId, sr: &SenderReport<'_>) {
        let Some(&Route::Track {
            track: track_id,
            layer,
        }) = self
            .transports
            .get(from)
            .and_then(|t| t.routes.get(&sr.sender))
        else {
            self.counters.rtcp_unknown_ssrc += 1;
            return;
        };
        let track = self
            .tracks
            .get_mut(track_id)
            .expect("routes name only live tracks");
        let l = &mut track.layers[usize::from(layer)];
        l.inbound.sender_report(now, sr.info.ntp);
        // Each translated SR costs one packet per subscriber: a publisher flooding SRs must
        // not multiply into N× output per packet in.
        if l.sr_forwarded_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.sr_forward_interval)
        {
            self.counters.sr_throttled += 1;
            return;
        }
        l.sr_forwarded_at = Some(now);
        for &id in &track.subscriptions {
            let s = self
                .subscriptions
                .get_mut(id)
                .expect("a track lists only live subscriptions");
            // Only the layer a subscriber receives maps onto its timeline.
            if s.layers.current != Some(layer) || s.rewriter.highest_seq().is_none() {
                continue;
            }
            let mut info = sr.info;
            info.rtp_time = s.rewriter.output_timestamp(sr.info.rtp_time).wire();
            info.packet_count = s.stats.packets_sent as u32;
            info.octet_count = s.stats.octets_sent as u32;
            let mut buf = BytesMut::with_capacity(28);
            write_sr(&mut buf, s.config.ssrc, info, &[]);
            s.last_sr = Some(((sr.info.ntp >> 16) as u32, now));
            self.outbox.push_back(Transmit {
                to: s.transport,
                packet: OutPacket::Rtcp(buf.freeze()),
            });
            self.counters.sr_forwarded += 1;
        }
    }

    fn consume_report_block(&mut self, now: Instant, from: TransportId, block: ReportBlock) {
        let Some(id) = self.subscription_for(from, block.ssrc) else {
            return;
        };
        let subscription = self
            .subscriptions
            .get_mut(id)
            .expect("routes name only live subscriptions");
        subscription.stats.last_report = Some(block);
        let counters = &mut self.counters;
        counters
            .subscriber_loss
            .observe(&LOSS_BUCKETS, loss_millionths(block.fraction_lost));
        // LSR 0 means "no SR received yet"; an LSR that is not our last SR's is stale (or
        // made up) and says nothing about the round trip.
        if let Some((lsr, sent)) = subscription.last_sr
            && block.last_sr != 0
            && block.last_sr == lsr
        {
            let held =
                Duration::from_micros(u64::from(block.delay_since_last_sr) * 1_000_000 / 65_536);
            if let Some(rtt) = now.saturating_duration_since(sent).checked_sub(held) {
                let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
                counters.subscriber_rtt.observe(&RTT_BUCKETS, micros);
            }
        }
    }

    fn consume_remb(&mut self, from: TransportId, bitrate: Bitrate) {
        if let Some(t) = self.transports.get_mut(from) {
            t.remb = Some(bitrate);
        }
    }

    /// NACK from a subscriber: map each output sequence number back to the track's and resend
    /// from the retransmit buffer (on the RTX stream when negotiated), each packet at most once
    /// per resend interval and within the subscriber's budget (see
    /// [`RetransmitLimiter`](crate::stream::RetransmitLimiter)).
    fn serve_nack(&mut self, now: Instant, from: TransportId, nack: &Nack<'_>) {
        let Some(id) = self.subscription_for(from, nack.media) else {
            return;
        };
        let Self {
            transports,
            tracks,
            subscriptions,
            outbox,
            counters,
            ..
        } = self;
        let s = subscriptions
            .get_mut(id)
            .expect("routes name only live subscriptions");
        let track = tracks
            .get(s.track)
            .expect("a subscription's track outlives it");
        let publisher_map = transports
            .get(track.transport)
            .expect("a track's transport outlives it")
            .config
            .extensions;
        // The rewriting epoch belongs to the layer being forwarded; older epochs cannot be served.
        let Some(layer) = s.layers.current.map(|l| &track.layers[usize::from(l)]) else {
            counters.retransmit_misses += nack.lost().count() as u64;
            return;
        };
        for wire in nack.lost() {
            counters.nack_received += 1;
            let stored = s
                .rewriter
                .extend_output_seq(wire)
                .and_then(|out| Some((out, s.rewriter.input_seq(out)?)));
            let Some(packet) = stored.and_then(|(_, input)| layer.buffer.get(now, input)) else {
                counters.retransmit_misses += 1;
                continue;
            };
            let (out_seq, _) = stored.expect("packet found implies mapping");
            // Refuse repeats and unaffordable packets before building anything: a storm of
            // NACKs costs a lookup per sequence number, not a resend's worth of work.
            if let Err(refused) = s.limiter.precheck(now, out_seq, packet.payload().len()) {
                count_refusal(refused, counters, &mut s.stats);
                continue;
            }
            let mut header = s.retransmit(packet, out_seq);
            let transport = transports
                .get_mut(s.transport)
                .expect("a subscription's transport outlives it");
            // Without RTX the resend reuses the original's SRTP index: it must carry the
            // original's transport-wide sequence number to be byte-identical.
            let reuse_twcc = if s.config.rtx.is_none()
                && transport
                    .config
                    .extensions
                    .id(ExtensionKind::TransportCc)
                    .is_some()
            {
                let Some(twcc) = s.sent_twcc(out_seq) else {
                    counters.retransmits_unrepeatable += 1;
                    s.stats.retransmits_refused += 1;
                    continue;
                };
                Some(twcc)
            } else {
                None
            };
            // A fresh transport-wide number is written without being taken, and taken only once
            // the resend is admitted: refusals leave no hole in the sequence.
            let twcc = reuse_twcc.unwrap_or(transport.twcc_seq);
            let (extensions, written) = CopiedExtensions::new(packet, &publisher_map)
                .for_subscriber(transport, s.config.mid, Some(twcc));
            header.extensions = extensions;
            if let Err(refused) =
                s.limiter
                    .admit(now, out_seq, header.len() + packet.payload().len())
            {
                count_refusal(refused, counters, &mut s.stats);
                continue;
            }
            if reuse_twcc.is_none() && written.is_some() {
                transport.twcc_seq = twcc.wrapping_add(1);
                if let Some(bwe) = &mut transport.bwe {
                    bwe.on_sent(now, twcc, header.len() + packet.payload().len());
                }
            }
            s.stats.retransmits_sent += 1;
            outbox.push_back(Transmit {
                to: s.transport,
                packet: OutPacket::Rtp {
                    header,
                    payload: packet.payload().clone(),
                },
            });
            counters.retransmits_sent += 1;
        }
    }

    fn forward_keyframe_request(&mut self, now: Instant, from: TransportId, media: Ssrc) {
        self.counters.keyframe_requests_received += 1;
        let Some(id) = self.subscription_for(from, media) else {
            return;
        };
        let s = self
            .subscriptions
            .get(id)
            .expect("routes name only live subscriptions");
        // A paused subscriber has nothing to decode: its requests do not reach the publisher.
        if s.layers.paused {
            return;
        }
        let (track, layer) = (s.track, s.layers.target);
        self.request_keyframe_of(track, layer, now);
    }

    /// The REMB toward publisher transport `id` ([`crate::remb`]): its video tracks'
    /// allowances plus what its audio sends. `None` when REMB is disabled.
    fn publisher_remb(&self, now: Instant, id: TransportId) -> Option<Bitrate> {
        let ceiling = self
            .config
            .remb_bitrate?
            .0
            .min(self.config.max_video_track_bitrate.0);
        let transport = self.transports.get(id)?;
        let mut total = 0u64;
        for &t in &transport.tracks {
            let track = self
                .tracks
                .get(t)
                .expect("a transport lists only live tracks");
            total += match track.config.kind {
                MediaKind::Audio => track.layers[0].rate.bps(),
                MediaKind::Video => {
                    let rooms = track
                        .subscriptions
                        .iter()
                        .map(|&s| {
                            let sub = self
                                .subscriptions
                                .get(s)
                                .expect("a track lists only live subscriptions");
                            (s, sub)
                        })
                        .filter(|(_, sub)| !sub.layers.paused)
                        .map(|(s, sub)| self.downlink_room(now, s, sub.transport));
                    video_track_allowance(track.layers.len() > 1, rooms, ceiling)
                }
            };
        }
        Some(Bitrate(total))
    }

    /// What subscriber transport `transport`'s downlink estimate leaves for subscription `id`
    /// after the others it forwards. A subscription paused because it did not fit gets
    /// [`STARVED_SHARE`] of it, so that it can resume.
    fn downlink_room(&self, now: Instant, id: SubscriptionId, transport: TransportId) -> Room {
        let transport = self
            .transports
            .get(transport)
            .expect("a subscription's transport outlives it");
        let Some(bwe) = &transport.bwe else {
            return Room::Unbounded;
        };
        if !bwe.is_warm(now) {
            return Room::WarmingUp;
        }
        let estimate = bwe.estimate();
        let others: u64 = transport
            .subscriptions
            .iter()
            .filter(|&&other| other != id)
            .filter_map(|&other| {
                let s = self
                    .subscriptions
                    .get(other)
                    .expect("a transport lists only live subscriptions");
                let layer = s
                    .layers
                    .current
                    .filter(|_| !s.layers.paused && !s.layers.starved)?;
                let track = self
                    .tracks
                    .get(s.track)
                    .expect("a subscription's track outlives it");
                Some(track.layers[usize::from(layer)].rate.bps())
            })
            .sum();
        let room = estimate.0.saturating_sub(others);
        let starved = self
            .subscriptions
            .get(id)
            .expect("callers name a live subscription")
            .layers
            .starved;
        Room::Bps(if starved {
            (room as f64 * STARVED_SHARE) as u64
        } else {
            room
        })
    }

    /// Periodic work: NACK retries, pending keyframe requests, RR + REMB, TWCC feedback.
    pub(super) fn tick(&mut self, now: Instant) {
        // The REMBs due now, worked out before the transports are borrowed for writing.
        let mut rembs = std::mem::take(&mut self.scratch_rembs);
        rembs.clear();
        for (id, transport) in self.transports.iter() {
            if transport.config.direction == Direction::Publish
                && !transport.tracks.is_empty()
                && now >= transport.next_report
            {
                rembs.push((id, self.publisher_remb(now, id)));
            }
        }
        let Self {
            config,
            transports,
            tracks,
            outbox,
            counters,
            scratch_seqs,
            next_buffer_sweep,
            ..
        } = self;
        let sweep = next_buffer_sweep.is_none_or(|at| now >= at);
        if sweep {
            *next_buffer_sweep = Some(now + config.retransmit_max_age / 2);
        }
        for (_, track) in tracks.iter_mut() {
            if sweep {
                track.layers.iter_mut().for_each(|l| l.buffer.expire(now));
            }
            nack_upstream(track, now, config, scratch_seqs, outbox, counters);
            for layer in 0..track.layers.len() as u8 {
                if track.layers[usize::from(layer)].keyframes.poll(now) {
                    send_pli(track, layer, config, outbox, counters);
                }
            }
        }
        for (id, transport) in transports.iter_mut() {
            if transport.config.direction != Direction::Publish || transport.tracks.is_empty() {
                continue;
            }
            if now >= transport.next_report {
                transport.next_report = now + config.report_interval;
                let mut blocks = Vec::with_capacity(transport.tracks.len());
                let mut video = Vec::new();
                for &t in &transport.tracks {
                    let track = tracks
                        .get_mut(t)
                        .expect("a transport lists only live tracks");
                    for layer in track
                        .layers
                        .iter_mut()
                        .filter(|l| l.encoding.ssrc.is_some())
                    {
                        if let Some(block) = layer.inbound.report_block(now) {
                            counters
                                .publisher_loss
                                .observe(&LOSS_BUCKETS, loss_millionths(block.fraction_lost));
                            blocks.push(block);
                        }
                        if track.config.kind == MediaKind::Video {
                            video.extend(layer.encoding.ssrc);
                        }
                    }
                }
                let mut buf = BytesMut::new();
                write_rr(&mut buf, config.rtcp_ssrc, &blocks);
                counters.rr_sent += 1;
                let remb = rembs
                    .iter()
                    .find(|(due, _)| *due == id)
                    .and_then(|&(_, bitrate)| bitrate);
                if let Some(bitrate) = remb.filter(|_| !video.is_empty()) {
                    write_remb(&mut buf, config.rtcp_ssrc, bitrate, &video);
                    counters.remb_sent += 1;
                }
                outbox.push_back(Transmit {
                    to: id,
                    packet: OutPacket::Rtcp(buf.freeze()),
                });
            }
            let Some(twcc) = transport
                .twcc
                .as_mut()
                .filter(|t| t.has_pending() && now >= transport.next_twcc)
            else {
                continue;
            };
            transport.next_twcc = now + config.twcc_interval;
            let media = transport
                .tracks
                .first()
                .and_then(|&t| tracks.get(t)?.layers[0].encoding.ssrc)
                .unwrap_or_default();
            let mut buf = BytesMut::new();
            twcc.write_feedback(&mut buf, config.rtcp_ssrc, media);
            outbox.push_back(Transmit {
                to: id,
                packet: OutPacket::Rtcp(buf.freeze()),
            });
            counters.twcc_sent += 1;
        }
        self.scratch_rembs = rembs;
    }
}

/// An RTCP fraction lost (1/256 units) in millionths.
fn loss_millionths(fraction_lost: u8) -> u64 {
    u64::from(fraction_lost) * 1_000_000 / 256
}

fn count_refusal(refused: Refused, counters: &mut Counters, stats: &mut SubscriptionStats) {
    match refused {
        Refused::Repeated => counters.retransmits_repeated += 1,
        Refused::OverBudget => counters.retransmits_over_budget += 1,
    }
    stats.retransmits_refused += 1;
}

/// Sends a NACK upstream for every missing packet of every layer of `track` that is due.
pub(super) fn nack_upstream(
    track: &mut Track,
    now: Instant,
    config: &Config,
    scratch: &mut Vec<SeqNo>,
    outbox: &mut VecDeque<Transmit>,
    counters: &mut Counters,
) {
    for layer in &mut track.layers {
        let Some(media) = layer.encoding.ssrc else {
            continue;
        };
        scratch.clear();
        layer.nack.due(now, scratch);
        // One NACK message holds any number of pairs; 280 keeps it under an MTU.
        for chunk in scratch.chunks(280) {
            let mut buf = BytesMut::with_capacity(12 + 4 * chunk.len());
            write_nack(
                &mut buf,
                config.rtcp_ssrc,
                media,
                chunk.iter().map(|s| s.wire()),
            );
            outbox.push_back(Transmit {
                to: track.transport,
                packet: OutPacket::Rtcp(buf.freeze()),
            });
        }
        counters.nack_sent += scratch.len() as u64;
    }
}

/// Asks the publisher of `track` for a keyframe on `layer`, unless its throttle window is open.
impl Worker {
    /// Asks `track`'s publisher for a keyframe of `layer`, throttled by the layer's
    /// [`KeyframeRequester`](crate::stream::KeyframeRequester).
    pub(super) fn request_keyframe_of(&mut self, track: TrackId, layer: u8, now: Instant) {
        let track = self
            .tracks
            .get_mut(track)
            .expect("callers name a live track");
        request_keyframe(
            track,
            layer,
            now,
            &self.config,
            &mut self.outbox,
            &mut self.counters,
        );
    }
}

pub(super) fn request_keyframe(
    track: &mut Track,
    layer: u8,
    now: Instant,
    config: &Config,
    outbox: &mut VecDeque<Transmit>,
    counters: &mut Counters,
) {
    if track.layers[usize::from(layer)].keyframes.request(now) {
        send_pli(track, layer, config, outbox, counters);
    }
}

fn send_pli(
    track: &Track,
    layer: u8,
    config: &Config,
    outbox: &mut VecDeque<Transmit>,
    counters: &mut Counters,
) {
    // A simulcast layer whose SSRC is not learned yet cannot be named; the request stays
    // pending in its KeyframeRequester and is retried on the next window.
    let Some(media) = track.layers[usize::from(layer)].encoding.ssrc else {
        return;
    };
    let mut buf = BytesMut::with_capacity(12);
    write_pli(&mut buf, config.rtcp_ssrc, media);
    outbox.push_back(Transmit {
        to: track.transport,
        packet: OutPacket::Rtcp(buf.freeze()),
    });
    counters.pli_sent += 1;
}
