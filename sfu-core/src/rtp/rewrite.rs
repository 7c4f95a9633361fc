//! Per-subscription SSRC/sequence/timestamp rewriting (mediasoup's `SeqManager`, LiveKit's
//! `RTPMunger`).
//!
//! A subscriber sees one continuous stream even when the source behind it changes (publisher
//! restart, simulcast layer switch): at each switch the next output sequence number is the
//! previous one plus one, and the output timestamp advances by the wall-clock time elapsed since
//! the last forwarded packet, so the receiver's jitter buffer neither sees a gap nor a jump back.

use std::time::Instant;

use crate::time::ticks;
use crate::{ClockRate, RtpTime, SeqNo};

/// Output sequence number and timestamp of one forwarded packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// Sequence number toward the subscriber.
    pub seq: SeqNo,
    /// Timestamp toward the subscriber.
    pub timestamp: RtpTime,
}

#[derive(Clone, Copy, Debug)]
struct Highest {
    seq: SeqNo,
    timestamp: RtpTime,
    at: Instant,
}

/// Offsets between one source epoch and the subscriber's stream.
#[derive(Clone, Debug)]
pub struct Rewriter {
    clock_rate: ClockRate,
    seq_offset: u64,
    ts_offset: u64,
    /// First input sequence number of the current epoch; older input belongs to the previous
    /// source and is dropped. `None` until the first packet (or after [`Self::resync`]).
    epoch_start: Option<SeqNo>,
    highest: Option<Highest>,
}

impl Rewriter {
    /// A rewriter for a stream clocked at `clock_rate`.
    pub fn new(clock_rate: ClockRate) -> Self {
        Self {
            clock_rate,
            seq_offset: 0,
            ts_offset: 0,
            epoch_start: None,
            highest: None,
        }
    }

    /// The next packet starts a new source epoch (publisher restart, layer switch).
    pub fn resync(&mut self) {
        self.epoch_start = None;
    }

    /// Maps an input (extended) sequence number and timestamp to the subscriber's; `None` for
    /// a packet that predates the current epoch.
    pub fn rewrite(&mut self, now: Instant, seq: SeqNo, timestamp: RtpTime) -> Option<Rewritten> {
        let epoch_start = match self.epoch_start {
            Some(start) => start,
            None => {
                self.start_epoch(now, seq, timestamp);
                seq
            }
        };
        if seq < epoch_start {
            return None;
        }
        let out = Rewritten {
            seq: SeqNo(seq.0.wrapping_add(self.seq_offset)),
            timestamp: RtpTime(timestamp.0.wrapping_add(self.ts_offset)),
        };
        if self.highest.is_none_or(|h| out.seq > h.seq) {
            self.highest = Some(Highest {
                seq: out.seq,
                timestamp: out.timestamp,
                at: now,
            });
        }
        Some(out)
    }

    fn start_epoch(&mut self, now: Instant, seq: SeqNo, timestamp: RtpTime) {
        let (out_seq, out_ts) = match self.highest {
            // Continue right after the last packet the subscriber saw; a frame's worth of
            // timestamp is at least one tick so time never stands still.
            Some(h) => {
                let elapsed = ticks(now.saturating_duration_since(h.at), self.clock_rate).max(1);
                (h.seq.0 + 1, h.timestamp.0 + elapsed)
            }
            None => (seq.0, timestamp.0),
        };
        self.seq_offset = out_seq.wrapping_sub(seq.0);
        self.ts_offset = out_ts.wrapping_sub(timestamp.0);
        self.epoch_start = Some(seq);
    }

    /// Extends a 16-bit sequence number the subscriber reported (NACK) relative to the highest
    /// one sent.
    pub fn extend_output_seq(&self, wire: u16) -> Option<SeqNo> {
        let highest = self.highest?;
        Some(crate::time::extend_u16(Some(highest.seq), wire))
    }

    /// The input sequence number behind an output one, if it belongs to the current epoch.
    pub fn input_seq(&self, out: SeqNo) -> Option<SeqNo> {
        let input = SeqNo(out.0.wrapping_sub(self.seq_offset));
        (input >= self.epoch_start?).then_some(input)
    }

    /// The output timestamp for an input timestamp of the current epoch (for sender reports and
    /// retransmissions; only the low 32 bits matter on the wire).
    pub fn output_timestamp(&self, input: u32) -> RtpTime {
        RtpTime(u64::from(input).wrapping_add(self.ts_offset))
    }

    /// Highest output sequence number sent so far.
    pub fn highest_seq(&self) -> Option<SeqNo> {
        self.highest.map(|h| h.seq)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use mooyaho_test_support::rng::TestRng;

    const VIDEO: ClockRate = ClockRate(90_000);

    #[test]
    fn first_epoch_passes_numbers_through() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(VIDEO);
        assert_eq!(
            r.rewrite(t0, SeqNo(100), RtpTime(5000)),
            Some(Rewritten {
                seq: SeqNo(100),
                timestamp: RtpTime(5000)
            })
        );
        assert_eq!(
            r.rewrite(t0, SeqNo(101), RtpTime(8000)).unwrap().seq,
            SeqNo(101)
        );
    }

    #[test]
    fn resync_continues_seq_and_advances_ts_by_elapsed_time() {
        // (input seq, input ts, ms since start, resync before?, expected out seq, out ts)
        let rows: &[(u64, u64, u64, bool, u64, u64)] = &[
            (1000, 90_000, 0, false, 1000, 90_000),
            (1001, 93_000, 33, false, 1001, 93_000),
            (50, 7, 133, true, 1002, 93_000 + 9_000),
            (51, 3007, 166, false, 1003, 105_000),
            (49, 0, 170, false, u64::MAX, 0), // older than the epoch: dropped
            (70_000, 1, 200, true, 1004, 105_000 + 3_060),
        ];
        let t0 = Instant::now();
        let mut r = Rewriter::new(VIDEO);
        for &(seq, ts, ms, resync, out_seq, out_ts) in rows {
            if resync {
                r.resync();
            }
            let got = r.rewrite(t0 + Duration::from_millis(ms), SeqNo(seq), RtpTime(ts));
            if out_seq == u64::MAX {
                assert_eq!(got, None);
            } else {
                assert_eq!(
                    got,
                    Some(Rewritten {
                        seq: SeqNo(out_seq),
                        timestamp: RtpTime(out_ts)
                    }),
                    "row {seq}"
                );
            }
        }
    }

    #[test]
    fn nack_mapping_round_trips_within_epoch_only() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(VIDEO);
        r.rewrite(t0, SeqNo(10), RtpTime(0));
        r.resync();
        let out = r.rewrite(t0, SeqNo(500), RtpTime(0)).unwrap().seq;
        assert_eq!(out, SeqNo(11));
        assert_eq!(r.input_seq(out), Some(SeqNo(500)));
        assert_eq!(r.input_seq(SeqNo(10)), None, "previous epoch");
        assert_eq!(r.extend_output_seq(11), Some(SeqNo(11)));
    }

    #[test]
    fn output_is_contiguous_and_monotonic_over_random_restarts_and_wraps() {
        for seed in 1..40u64 {
            let mut rng = TestRng::scrambled(seed);
            let t0 = Instant::now();
            let mut r = Rewriter::new(VIDEO);
            let mut in_seq = crate::time::extend_u16(None, rng.below(65536) as u16);
            let mut in_ts = crate::time::extend_u32(None, rng.next_u64() as u32);
            let mut prev: Option<Rewritten> = None;
            for i in 0..5_000u64 {
                let now = t0 + Duration::from_millis(i * 20);
                if rng.below(200) == 0 {
                    // Publisher restart: unrelated numbers, 16/32-bit wraps included.
                    in_seq = crate::time::extend_u16(None, rng.below(65536) as u16);
                    in_ts = crate::time::extend_u32(None, rng.next_u64() as u32);
                    r.resync();
                }
                let out = r.rewrite(now, in_seq, in_ts).unwrap();
                if let Some(p) = prev {
                    assert_eq!(out.seq.0, p.seq.0 + 1, "seed {seed} step {i}");
                    assert!(out.timestamp > p.timestamp, "seed {seed} step {i}");
                    assert_eq!(out.seq.wire(), p.seq.wire().wrapping_add(1));
                }
                prev = Some(out);
                in_seq.0 += 1;
                in_ts.0 += 1800;
            }
        }
    }
}
