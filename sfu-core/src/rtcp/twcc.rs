//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
//! extensions-01 §3.1): the receive side records arrival times per transport-wide sequence
//! number; the sender's estimator (GoogCC in browsers) turns our feedback into its bitrate.

use std::time::Instant;

use bytes::{BufMut, BytesMut};

use super::write::patch_length;
use super::{fmt, pt};
use crate::time::extend_u16;
use crate::{SeqNo, Ssrc};

/// Most packets kept between two feedback messages; beyond it the oldest are reported lost
/// rather than letting a silent estimator grow memory.
const MAX_PENDING: usize = 2048;
/// Receive delta unit: 250 µs.
const DELTA_US: i64 = 250;
/// Reference time unit: 64 ms.
const REFERENCE_US: i64 = 64_000;

/// Arrival times of one publish transport's packets, pending the next feedback.
#[derive(Debug)]
pub struct TwccRecorder {
    epoch: Instant,
    highest: Option<SeqNo>,
    /// First sequence number the next feedback covers.
    next_base: Option<SeqNo>,
    pending: Vec<(SeqNo, i64)>,
    feedback_count: u8,
}

impl TwccRecorder {
    /// A recorder whose reference clock starts at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            highest: None,
            next_base: None,
            pending: Vec::new(),
            feedback_count: 0,
        }
    }

    /// Notes that the packet carrying transport-wide sequence number `wire` arrived at `now`.
    pub fn record(&mut self, now: Instant, wire: u16) {
        let seq = extend_u16(self.highest, wire);
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        if self.next_base.is_some_and(|base| seq < base) {
            return; // already reported as lost; a late arrival cannot be un-reported
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        let micros = now.saturating_duration_since(self.epoch).as_micros() as i64;
        self.pending.push((seq, micros));
    }

    /// Whether there is anything to report.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Appends one feedback message covering every packet recorded since the previous one.
    pub fn write_feedback(&mut self, buf: &mut BytesMut, sender: Ssrc, media: Ssrc) {
        if self.pending.is_empty() {
            return;
        }
        self.pending.sort_unstable_by_key(|&(seq, _)| seq);
        self.pending.dedup_by_key(|&mut (seq, _)| seq);
        let first = self.pending[0].0;
        // Report the packets never seen since the last feedback as lost, unless the gap is so
        // large that the sender has long given up on them.
        let base = self
            .next_base
            .filter(|b| first.0 - b.0 < 1000)
            .unwrap_or(first);
        let last = self.pending[self.pending.len() - 1].0;
        let count = (last.0 - base.0 + 1).min(u64::from(u16::MAX)) as usize;
        let reference = self.pending[0].1 / REFERENCE_US;

        let start = buf.len();
        buf.put_u8(0x80 | fmt::TWCC);
        buf.put_u8(pt::RTPFB);
        buf.put_u16(0);
        buf.put_u32(sender.0);
        buf.put_u32(media.0);
        buf.put_u16(base.wire());
        buf.put_u16(count as u16);
        buf.put_slice(&(reference as u32).to_be_bytes()[1..]);
        buf.put_u8(self.feedback_count);
        self.feedback_count = self.feedback_count.wrapping_add(1);

        // Status vector chunks, 7 two-bit symbols each: 0 = lost, 1 = small delta, 2 = large.
        let mut deltas = Vec::with_capacity(self.pending.len());
        let mut previous = reference * REFERENCE_US / DELTA_US;
        let mut received = self.pending.iter().peekable();
        let mut symbols = Vec::with_capacity(count);
        for i in 0..count as u64 {
            let seq = SeqNo(base.0 + i);
            let Some(&&(_, micros)) = received.peek().filter(|(s, _)| *s == seq) else {
                symbols.push(0u16);
                continue;
            };
            received.next();
            let ticks = micros / DELTA_US;
            let delta = (ticks - previous).clamp(i64::from(i16::MIN), i64::from(i16::MAX));
            previous += delta;
            symbols.push(if (0..=255).contains(&delta) { 1 } else { 2 });
            deltas.push(delta as i16);
        }
        for chunk in symbols.chunks(7) {
            let mut word = 0xc000u16;
            for (i, symbol) in chunk.iter().enumerate() {
                word |= symbol << (12 - 2 * i);
            }
            buf.put_u16(word);
        }
        for delta in deltas {
            if (0..=255).contains(&delta) {
                buf.put_u8(delta as u8);
            } else {
                buf.put_i16(delta);
            }
        }
        patch_length(buf, start);
        self.next_base = Some(SeqNo(last.0 + 1));
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

    /// The feedback `twcc` writes now, as the rtcp crate parses it.
    fn feedback(twcc: &mut TwccRecorder) -> TransportLayerCc {
        let mut buf = BytesMut::new();
        twcc.write_feedback(&mut buf, Ssrc(1), Ssrc(2));
        let packets = rtcp::packet::unmarshal(&mut Bytes::copy_from_slice(&buf)).unwrap();
        packets[0]
            .as_any()
            .downcast_ref::<TransportLayerCc>()
            .unwrap()
            .clone()
    }

    #[test]
    fn feedback_parses_in_the_rtcp_crate_with_losses_and_large_deltas() {
        let t0 = Instant::now();
        let mut twcc = TwccRecorder::new(t0);
        // seq 10..=20, 13 and 14 lost, 18 arrives 100 ms late (large delta), 19 out of order.
        let arrivals = [
            (10u16, 5u64),
            (11, 6),
            (12, 7),
            (15, 9),
            (16, 10),
            (17, 11),
            (19, 12),
            (18, 112),
            (20, 113),
        ];
        for (seq, ms) in arrivals {
            twcc.record(t0 + Duration::from_millis(ms), seq);
        }
        let cc = feedback(&mut twcc);
        assert_eq!(
            (
                cc.base_sequence_number,
                cc.packet_status_count,
                cc.fb_pkt_count
            ),
            (10, 11, 0)
        );
        assert_eq!(cc.recv_deltas.len(), 9);
        // The rtcp crate reports deltas in microseconds.
        let total: i64 = cc.recv_deltas.iter().map(|d| d.delta).sum();
        assert_eq!(i64::from(cc.reference_time) * 64_000 + total, 113_000);
        assert!(!twcc.has_pending());

        twcc.record(t0 + Duration::from_millis(120), 21);
        let cc = feedback(&mut twcc);
        assert_eq!(
            (
                cc.base_sequence_number,
                cc.packet_status_count,
                cc.fb_pkt_count
            ),
            (21, 1, 1)
        );
    }
}
