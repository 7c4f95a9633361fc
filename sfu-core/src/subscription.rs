//! One track delivered to one subscriber transport: rewriting, keyframe wait and send-side
//! statistics.

use std::time::Instant;

use crate::config::Config;
use crate::rtcp::ReportBlock;
use crate::rtp::{OutExtensions, Rewriter, RtpHeader, RtpPacket};
use crate::stream::RetransmitLimiter;
use crate::track::{Forward, Rtx};
use crate::{ClockRate, Mid, Pt, SeqNo, Ssrc, TrackId, TransportId};

/// What the subscriber's transport negotiated for this track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionConfig {
    /// SSRC the subscriber will see (announced in the subscriber's SDP).
    pub ssrc: Ssrc,
    /// Payload type the subscriber negotiated for the track's codec.
    pub pt: Pt,
    /// RTX toward the subscriber, if negotiated; NACKs are then answered on this stream.
    pub rtx: Option<Rtx>,
    /// The subscriber-side mid (written into the mid header extension).
    pub mid: Option<Mid>,
}

/// Which encoding of the track the subscription forwards (LayerSelector): `wanted` is what the
/// control plane asked for; `target` the layer to forward, which is `wanted` unless that layer
/// stopped flowing ([`effective_layer`]); `current` is what is being forwarded. A switch happens
/// only at a keyframe of the target layer (for video), so the subscriber's decoder never sees a
/// layer start mid-picture; until then the current layer keeps flowing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayerSelector {
    pub(crate) wanted: u8,
    pub(crate) target: u8,
    /// `None` until the first packet is forwarded (a video joiner waits for a keyframe).
    pub(crate) current: Option<u8>,
    /// Video: switches and the start wait for a keyframe; audio: any packet will do.
    pub(crate) needs_keyframe: bool,
    /// The subscriber asked for none of this track (`off`): nothing is forwarded, and the
    /// resume starts like a new subscription (at a keyframe, in a fresh rewriting epoch).
    pub(crate) paused: bool,
    /// The layer the subscriber's downlink estimate allows (`None`: no estimate decides yet);
    /// the target is this layer instead of the wish's.
    pub(crate) bwe_layer: Option<u8>,
    /// The layer the downlink estimate would allow within the wish were every layer the
    /// publisher has sent flowing (layers it stopped at their last measured rate): what dynacast
    /// asks the publisher to keep encoding for this subscription. `None`: no estimate decides.
    pub(crate) demand: Option<u8>,
    /// Not even the lowest layer fits the subscriber's downlink: paused like `paused`, and
    /// resumed (at a keyframe) when it fits again.
    pub(crate) starved: bool,
}

/// The layer to forward for a wish of `wanted`, given which layers are flowing: the best live
/// layer at or below it, else the lowest live one above it (a viewer asking for `low` of a
/// publisher sending only its top layer still sees something), else `wanted` itself (nothing
/// flows yet, or any more).
pub(crate) fn effective_layer(wanted: u8, live: &[bool]) -> u8 {
    let is_live = |l: u8| live.get(usize::from(l)).copied().unwrap_or(false);
    (0..=wanted)
        .rev()
        .find(|&l| is_live(l))
        .or_else(|| (wanted..live.len() as u8).find(|&l| is_live(l)))
        .unwrap_or(wanted)
}

/// Send-side statistics of one subscription.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Media packets forwarded (retransmissions excluded).
    pub packets_sent: u64,
    /// Payload octets forwarded.
    pub octets_sent: u64,
    /// Retransmissions sent in answer to NACKs.
    pub retransmits_sent: u64,
    /// NACKed packets not resent: repeated within the resend interval, over the budget, or
    /// not reproducible byte-identical (no RTX).
    pub retransmits_refused: u64,
    /// Whether the subscription is past its keyframe wait.
    pub active: bool,
    /// The layer being forwarded (`None` while waiting for the first keyframe).
    pub current_layer: Option<u8>,
    /// The layer being switched to: the one asked for, or the best flowing instead of it.
    pub target_layer: u8,
    /// The layer asked for ([`Worker::set_preferred_layer`](crate::Worker::set_preferred_layer)).
    pub wanted_layer: u8,
    /// Whether forwarding is paused ([`Worker::set_paused`](crate::Worker::set_paused)).
    pub paused: bool,
    /// The layer the subscriber's downlink estimate allows, once it decides.
    pub bandwidth_layer: Option<u8>,
    /// Whether forwarding is paused because not even the lowest layer fits the downlink.
    pub starved: bool,
    /// The subscriber's latest reception report about this stream.
    pub last_report: Option<ReportBlock>,
}

#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) track: TrackId,
    pub(crate) transport: TransportId,
    pub(crate) config: SubscriptionConfig,
    pub(crate) rewriter: Rewriter,
    pub(crate) layers: LayerSelector,
    /// Next sequence number of the RTX stream (its own numbering, RFC 4588 §4).
    rtx_seq: SeqNo,
    pub(crate) stats: SubscriptionStats,
    /// Resend interval per packet and byte budget for NACK answers.
    pub(crate) limiter: RetransmitLimiter,
    /// Without RTX a resend reuses the original's SRTP index, so it must be byte-identical
    /// (AES-GCM nonce reuse otherwise): the transport-wide sequence number written into each
    /// forwarded packet, by output sequence number. Allocated at the first record.
    sent_twcc: Option<Box<[(SeqNo, u16)]>>,
    sent_twcc_capacity: usize,
    /// The last sender report forwarded: its NTP timestamp's middle 32 bits and when it went
    /// out, to measure the round trip when the subscriber's report names it.
    pub(crate) last_sr: Option<(u32, Instant)>,
}

impl Subscription {
    pub(crate) fn new(
        track: TrackId,
        transport: TransportId,
        config: SubscriptionConfig,
        clock_rate: ClockRate,
        target_layer: u8,
        needs_keyframe: bool,
        worker: &Config,
    ) -> Self {
        Self {
            track,
            transport,
            config,
            rewriter: Rewriter::new(clock_rate),
            layers: LayerSelector {
                wanted: target_layer,
                target: target_layer,
                current: None,
                needs_keyframe,
                paused: false,
                bwe_layer: None,
                demand: None,
                starved: false,
            },
            rtx_seq: SeqNo(u64::from(config.ssrc.0 as u16)),
            stats: SubscriptionStats::default(),
            limiter: RetransmitLimiter::new(
                worker.retransmit_capacity,
                worker.retransmit_min_interval,
                worker.retransmit_burst_bytes,
            ),
            sent_twcc: None,
            sent_twcc_capacity: worker.retransmit_capacity.max(1).next_power_of_two(),
            last_sr: None,
        }
    }

    /// Remembers the transport-wide sequence number written into output packet `seq` (only
    /// needed, and only kept, when resends go out on the media SSRC itself).
    pub(crate) fn record_twcc(&mut self, seq: SeqNo, twcc: u16) {
        if self.config.rtx.is_some() {
            return;
        }
        let capacity = self.sent_twcc_capacity;
        let log = self
            .sent_twcc
            .get_or_insert_with(|| vec![(SeqNo(0), 0); capacity].into_boxed_slice());
        log[(seq.0 as usize) & (capacity - 1)] = (seq, twcc);
    }

    /// The transport-wide sequence number output packet `seq` was sent with, if remembered.
    pub(crate) fn sent_twcc(&self, seq: SeqNo) -> Option<u16> {
        let log = self.sent_twcc.as_ref()?;
        let (at, twcc) = log[(seq.0 as usize) & (self.sent_twcc_capacity - 1)];
        (at == seq).then_some(twcc)
    }

    /// The header for forwarding `packet`, or `None` when it is not for this subscriber: another
    /// layer, a delta frame while waiting for a keyframe, or a packet older than the current
    /// rewriting epoch. Extensions are filled in by the caller.
    pub(crate) fn forward(
        &mut self,
        now: Instant,
        packet: &RtpPacket,
        forward: &Forward,
    ) -> Option<RtpHeader> {
        let l = &mut self.layers;
        if l.paused || l.starved {
            return None;
        }
        let can_start = forward.layer == l.target && (forward.keyframe || !l.needs_keyframe);
        match l.current {
            // Start or switch: a fresh rewriting epoch at a decodable packet, numbering
            // continuing from whatever the subscriber saw before (if anything).
            _ if can_start && l.current != Some(l.target) => {
                l.current = Some(l.target);
                self.rewriter.resync();
            }
            Some(current) if current == forward.layer => {
                if forward.restarted {
                    self.rewriter.resync();
                }
            }
            _ => return None,
        }
        let out = self.rewriter.rewrite(now, forward.seq, forward.timestamp)?;
        self.stats.packets_sent += 1;
        self.stats.octets_sent += packet.payload().len() as u64;
        Some(RtpHeader {
            ssrc: self.config.ssrc,
            pt: self.config.pt,
            seq: out.seq,
            timestamp: out.timestamp,
            marker: packet.marker(),
            extensions: OutExtensions::EMPTY,
            rtx_osn: None,
        })
    }

    /// The header of a padding-only probe packet on the RTX stream (its own next sequence
    /// number), if RTX was negotiated. Receivers never play it, so the timestamp is the
    /// rewriter's (any value would do; this one stays near the stream's).
    pub(crate) fn padding_header(&mut self) -> Option<RtpHeader> {
        let rtx = self.config.rtx?;
        let seq = self.rtx_seq;
        self.rtx_seq.0 += 1;
        Some(RtpHeader {
            ssrc: rtx.ssrc,
            pt: rtx.pt,
            seq,
            timestamp: self.rewriter.output_timestamp(0),
            marker: false,
            extensions: OutExtensions::EMPTY,
            rtx_osn: None,
        })
    }

    /// The header for resending `packet` (stored under output sequence number `out_seq`): on the
    /// RTX stream when negotiated, otherwise as a copy of the original (the caller writes the
    /// original's extensions, so the packet is byte-identical to the first send).
    pub(crate) fn retransmit(&mut self, packet: &RtpPacket, out_seq: SeqNo) -> RtpHeader {
        let timestamp = self.rewriter.output_timestamp(packet.timestamp());
        let (ssrc, pt, seq, rtx_osn) = match self.config.rtx {
            Some(rtx) => {
                let seq = self.rtx_seq;
                self.rtx_seq.0 += 1;
                (rtx.ssrc, rtx.pt, seq, Some(out_seq))
            }
            None => (self.config.ssrc, self.config.pt, out_seq, None),
        };
        RtpHeader {
            ssrc,
            pt,
            seq,
            timestamp,
            marker: packet.marker(),
            extensions: OutExtensions::EMPTY,
            rtx_osn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::effective_layer;

    #[test]
    fn the_effective_layer_is_the_best_flowing_within_the_wish_else_the_lowest_above() {
        // (wanted, live) → forwarded
        let rows: &[(u8, &[bool], u8)] = &[
            (2, &[true, true, true], 2),
            (2, &[true, true, false], 1),
            (2, &[true, false, false], 0),
            (1, &[true, true, true], 1),
            (0, &[false, false, true], 2),
            (0, &[false, true, true], 1),
            (1, &[false, false, true], 2),
            (2, &[false, false, false], 2),
            (1, &[true, true], 1),
            (0, &[true], 0),
        ];
        for &(wanted, live, expected) in rows {
            assert_eq!(effective_layer(wanted, live), expected, "{wanted} {live:?}");
        }
    }
}
