//! Receive statistics of one published stream (RFC 3550 §6.4 and A.1, A.3, A.8).

use std::time::Instant;

use crate::rtcp::ReportBlock;
use crate::time::{extend_u16, extend_u32, ticks};
use crate::{ClockRate, RtpTime, SeqNo, Ssrc};

/// A sequence jump larger than this (forward) starts probation for a stream restart.
const MAX_DROPOUT: u64 = 3000;
/// A packet this far behind the highest is treated like a jump, not a late arrival. RFC 3550
/// A.1 uses 100, but with NACK/RTX a repaired packet routinely arrives an RTT late — at 1 000
/// packets/s and 150 ms that is 150 behind — so the bound matches the NACK window instead.
const MAX_MISORDER: u64 = 1000;

/// Extended numbers of one accepted packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Extended sequence number.
    pub seq: SeqNo,
    /// Extended timestamp.
    pub timestamp: RtpTime,
    /// The stream restarted here (publisher restarted its encoder or changed source):
    /// subscriptions must start a new rewriting epoch.
    pub restarted: bool,
}

/// Receive-side state of one SSRC: sequence extension with restart detection, loss, jitter
/// and the last SR, for the receiver reports we send the publisher.
#[derive(Debug)]
pub struct InboundRtp {
    ssrc: Ssrc,
    clock_rate: ClockRate,
    epoch: Instant,
    highest: Option<SeqNo>,
    highest_ts: Option<RtpTime>,
    base: SeqNo,
    /// RFC 3550 A.1 probation: the wire seq that confirms a restart if it comes next.
    probation: Option<u16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Jitter scaled by 16 (RFC 3550 A.8).
    jitter16: u64,
    last_transit: Option<i64>,
    last_sr: Option<(u32, Instant)>,
}

impl InboundRtp {
    /// State for `ssrc`; `epoch` anchors arrival times for jitter.
    pub fn new(ssrc: Ssrc, clock_rate: ClockRate, epoch: Instant) -> Self {
        Self {
            ssrc,
            clock_rate,
            epoch,
            highest: None,
            highest_ts: None,
            base: SeqNo(0),
            probation: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter16: 0,
            last_transit: None,
            last_sr: None,
        }
    }

    /// Sets the SSRC once it is learned (simulcast layers announced by rid only).
    pub(crate) fn bind(&mut self, ssrc: Ssrc) {
        self.ssrc = ssrc;
    }

    /// Accounts one packet. `None` when it is the first packet of a suspected restart (held in
    /// probation until the next one confirms it).
    pub fn receive(&mut self, now: Instant, wire_seq: u16, wire_ts: u32) -> Option<Received> {
        let mut restarted = false;
        let mut seq = extend_u16(self.highest, wire_seq);
        if let Some(highest) = self.highest {
            let jumped = seq.0 > highest.0 + MAX_DROPOUT || seq.0 + MAX_MISORDER < highest.0;
            if jumped {
                if self.probation != Some(wire_seq) {
                    self.probation = Some(wire_seq.wrapping_add(1));
                    return None;
                }
                self.restart();
                restarted = true;
                seq = extend_u16(None, wire_seq);
            }
        }
        self.probation = None;
        if self.highest.is_none() {
            self.base = seq;
        }
        let timestamp = extend_u32(self.highest_ts, wire_ts);
        self.received += 1;
        if self.highest.is_none_or(|h| seq > h) {
            self.highest = Some(seq);
            self.highest_ts = Some(timestamp);
            // Jitter only from in-order packets; a retransmission's arrival time says nothing
            // about network delay variation.
            let arrival = ticks(now.saturating_duration_since(self.epoch), self.clock_rate) as i64;
            let transit = arrival - timestamp.0 as i64;
            if let Some(last) = self.last_transit {
                let d = (transit - last).unsigned_abs();
                self.jitter16 = self.jitter16 + d - ((self.jitter16 + 8) >> 4);
            }
            self.last_transit = Some(transit);
        }
        Some(Received {
            seq,
            timestamp,
            restarted,
        })
    }

    fn restart(&mut self) {
        self.highest = None;
        self.highest_ts = None;
        self.last_transit = None;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
    }

    /// Remembers an SR from the publisher for LSR/DLSR in our next report.
    pub fn sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// The report block for our next RR (RFC 3550 A.3); `None` before any packet.
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let highest = self.highest?;
        let expected = highest.0 - self.base.0 + 1;
        let lost = expected as i64 - self.received as i64;
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .unwrap_or(0)
            .min(255) as u8;
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => (
                lsr,
                (now.saturating_duration_since(at).as_micros() * 65_536 / 1_000_000) as u32,
            ),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_seq: highest.0 as u32,
            jitter: (self.jitter16 >> 4) as u32,
            last_sr,
            delay_since_last_sr,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn restart_needs_two_sequential_packets() {
        let t0 = Instant::now();
        let mut s = InboundRtp::new(Ssrc(1), ClockRate(90_000), t0);
        assert!(!s.receive(t0, 100, 0).unwrap().restarted);
        assert!(s.receive(t0, 101, 10).is_some());
        assert_eq!(
            s.receive(t0, 40_000, 5),
            None,
            "first packet of a jump is held"
        );
        let r = s.receive(t0, 40_001, 6).unwrap();
        assert!(r.restarted);
        assert_eq!(r.seq.wire(), 40_001);
        assert!(!s.receive(t0, 40_002, 7).unwrap().restarted);
        assert_eq!(s.receive(t0, 5, 7), None, "stray packet from far away");
        assert!(
            s.receive(t0, 40_003, 8).is_some(),
            "stream continues, no restart"
        );
    }

    #[test]
    fn report_block_counts_losses_per_interval() {
        let t0 = Instant::now();
        let mut s = InboundRtp::new(Ssrc(1), ClockRate(90_000), t0);
        for seq in (0..100u16).filter(|s| s % 10 != 3) {
            s.receive(
                t0 + Duration::from_millis(u64::from(seq) * 10),
                seq,
                u32::from(seq) * 900,
            );
        }
        s.sender_report(t0, 0x1234_5678_9abc_def0);
        let rb = s.report_block(t0 + Duration::from_millis(500)).unwrap();
        assert_eq!(rb.cumulative_lost, 10);
        assert_eq!(rb.fraction_lost, (10 * 256 / 100) as u8);
        assert_eq!(rb.last_sr, 0x5678_9abc);
        assert_eq!(rb.delay_since_last_sr, 32_768);
        assert_eq!(rb.jitter, 0, "perfectly paced stream");
        let rb = s.report_block(t0).unwrap();
        assert_eq!(rb.fraction_lost, 0, "nothing new since the last report");
    }
}
