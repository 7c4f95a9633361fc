//! What a real subscriber sends back, so the server under test does its real per-receiver work:
//! receiver reports every second per stream, and generic NACKs (RFC 4585) for video packets
//! that did not arrive — with `--loss`, the generator drops that share of arriving packets as a
//! lossy downlink would, and the NACKs make the server retransmit. Sans-IO: packets and `now`
//! in, RTCP contents out.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A NACKed packet is asked for again after this long, at most [`NACK_ATTEMPTS`] times (a
/// browser's NACK module waits about one RTT; loopback's is well under this).
const NACK_INTERVAL: Duration = Duration::from_millis(50);
const NACK_ATTEMPTS: u8 = 3;
/// Missing packets remembered per stream (older ones are given up, as libwebrtc's list is bounded).
const MAX_MISSING: usize = 256;
/// Receiver reports, per stream.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// One received stream's state.
#[derive(Debug)]
struct Stream {
    /// NACK only video (the loadgen's Opus has no `nack` feedback negotiated).
    video: bool,
    highest: u64,
    /// Received packets, for the cumulative loss of receiver reports.
    received: u64,
    first: u64,
    /// At the last report: expected and received, for the fraction lost since.
    reported: (u64, u64),
    next_report: Instant,
    /// Extended sequence number → (NACKs sent, when the next may go).
    missing: BTreeMap<u64, (u8, Instant)>,
}

/// A receiver report's contents for one stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReportBlock {
    pub(crate) ssrc: u32,
    pub(crate) highest: u32,
    pub(crate) total_lost: u32,
    pub(crate) fraction_lost: u8,
}

/// How an arriving packet was taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// New, in order or after a gap.
    New,
    /// A packet we had NACKed: recovered.
    Recovered,
    /// Seen before, or older than anything we still wait for.
    Duplicate,
}

/// Per subscriber: its streams' sequence state and what is due to send.
#[derive(Debug, Default)]
pub(crate) struct ReceiverFeedback {
    streams: HashMap<u32, Stream>,
}

impl ReceiverFeedback {
    /// Takes a packet that arrived (after the simulated loss).
    pub(crate) fn on_packet(&mut self, now: Instant, ssrc: u32, seq: u16, video: bool) -> Arrival {
        let stream = self.streams.entry(ssrc).or_insert_with(|| Stream {
            video,
            highest: u64::from(seq) + 0x1_0000,
            received: 0,
            first: u64::from(seq) + 0x1_0000,
            reported: (0, 0),
            next_report: now + REPORT_INTERVAL,
            missing: BTreeMap::new(),
        });
        let ext = extend(stream.highest, seq);
        if ext > stream.highest {
            if stream.video {
                for lost in (stream.highest + 1).max(ext.saturating_sub(MAX_MISSING as u64))..ext {
                    stream.missing.insert(lost, (0, now));
                }
                while stream.missing.len() > MAX_MISSING {
                    stream.missing.pop_first();
                }
            }
            stream.highest = ext;
            stream.received += 1;
            return Arrival::New;
        }
        if ext == stream.highest && stream.received > 0 {
            return Arrival::Duplicate;
        }
        if stream.missing.remove(&ext).is_some() {
            stream.received += 1;
            return Arrival::Recovered;
        }
        if stream.received == 0 {
            stream.received += 1;
            return Arrival::New;
        }
        Arrival::Duplicate
    }

    /// Sequence numbers to NACK now, per stream (each asked at most [`NACK_ATTEMPTS`] times,
    /// [`NACK_INTERVAL`] apart); packets asked for the last time are given up.
    pub(crate) fn due_nacks(&mut self, now: Instant) -> Vec<(u32, Vec<u16>)> {
        let mut due = Vec::new();
        for (&ssrc, stream) in &mut self.streams {
            let mut seqs = Vec::new();
            stream.missing.retain(|&ext, (sent, next)| {
                if *next > now {
                    return true;
                }
                if *sent == NACK_ATTEMPTS {
                    return false;
                }
                *sent += 1;
                *next = now + NACK_INTERVAL;
                seqs.push(ext as u16);
                true
            });
            if !seqs.is_empty() {
                due.push((ssrc, seqs));
            }
        }
        due
    }

    /// Receiver report blocks due now (one per stream per second).
    pub(crate) fn due_reports(&mut self, now: Instant) -> Vec<ReportBlock> {
        let mut due = Vec::new();
        for (&ssrc, stream) in &mut self.streams {
            if stream.next_report > now {
                continue;
            }
            stream.next_report = now + REPORT_INTERVAL;
            let expected = stream.highest - stream.first + 1;
            let total_lost = expected.saturating_sub(stream.received);
            let (expected_before, received_before) = stream.reported;
            let expected_since = expected - expected_before;
            let received_since = stream.received - received_before;
            let lost_since = expected_since.saturating_sub(received_since);
            let fraction_lost = (lost_since * 256)
                .checked_div(expected_since)
                .map_or(0, |f| f.min(255) as u8);
            stream.reported = (expected, stream.received);
            due.push(ReportBlock {
                ssrc,
                highest: stream.highest as u32,
                total_lost: total_lost.min(0x7f_ffff) as u32,
                fraction_lost,
            });
        }
        due
    }
}

/// `seq` extended next to `highest` (wraparound either way).
fn extend(highest: u64, seq: u16) -> u64 {
    let candidate = (highest & !0xffff) | u64::from(seq);
    if candidate + 0x8000 < highest {
        candidate + 0x1_0000
    } else if candidate > highest + 0x8000 && candidate >= 0x1_0000 {
        candidate - 0x1_0000
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_nacked_three_times_then_given_up_and_a_late_packet_is_recovered() {
        let t0 = Instant::now();
        let mut feedback = ReceiverFeedback::default();
        assert_eq!(feedback.on_packet(t0, 7, 100, true), Arrival::New);
        assert_eq!(feedback.on_packet(t0, 7, 103, true), Arrival::New);
        assert_eq!(feedback.due_nacks(t0), [(7, vec![101, 102])]);
        assert!(
            feedback.due_nacks(t0).is_empty(),
            "not again before the interval"
        );
        assert_eq!(feedback.on_packet(t0, 7, 101, true), Arrival::Recovered);
        assert_eq!(feedback.on_packet(t0, 7, 101, true), Arrival::Duplicate);
        let t1 = t0 + NACK_INTERVAL;
        assert_eq!(feedback.due_nacks(t1), [(7, vec![102])]);
        let t2 = t1 + NACK_INTERVAL;
        assert_eq!(feedback.due_nacks(t2), [(7, vec![102])]);
        assert!(
            feedback.due_nacks(t2 + NACK_INTERVAL).is_empty(),
            "given up after 3"
        );
        assert_eq!(feedback.on_packet(t2, 7, 102, true), Arrival::Duplicate);
    }

    #[test]
    fn audio_is_not_nacked_and_sequence_numbers_wrap() {
        let t0 = Instant::now();
        let mut feedback = ReceiverFeedback::default();
        feedback.on_packet(t0, 1, 10, false);
        feedback.on_packet(t0, 1, 20, false);
        assert!(feedback.due_nacks(t0).is_empty());
        feedback.on_packet(t0, 2, 65534, true);
        assert_eq!(feedback.on_packet(t0, 2, 1, true), Arrival::New);
        assert_eq!(feedback.due_nacks(t0), [(2, vec![65535, 0])]);
    }

    #[test]
    fn receiver_reports_carry_cumulative_and_fractional_loss_once_a_second() {
        let t0 = Instant::now();
        let mut feedback = ReceiverFeedback::default();
        for seq in (0..100u16).filter(|s| s % 10 != 0 || *s == 0) {
            feedback.on_packet(t0, 9, seq, false);
        }
        assert!(feedback.due_reports(t0).is_empty(), "first one a second in");
        let t1 = t0 + REPORT_INTERVAL;
        let blocks = feedback.due_reports(t1);
        assert_eq!(blocks.len(), 1);
        let block = &blocks[0];
        assert_eq!(
            (block.ssrc, block.highest as u16, block.total_lost),
            (9, 99, 9)
        );
        assert_eq!(block.fraction_lost, (9 * 256 / 100) as u8);
        assert!(feedback.due_reports(t1).is_empty());
        // No new loss in the next second: fraction 0, cumulative kept.
        for seq in 100..150u16 {
            feedback.on_packet(t1, 9, seq, false);
        }
        let blocks = feedback.due_reports(t1 + REPORT_INTERVAL);
        assert_eq!((blocks[0].total_lost, blocks[0].fraction_lost), (9, 0));
    }

    #[test]
    fn a_huge_jump_remembers_only_the_last_missing_packets() {
        let t0 = Instant::now();
        let mut feedback = ReceiverFeedback::default();
        feedback.on_packet(t0, 3, 0, true);
        feedback.on_packet(t0, 3, 30000, true);
        let nacks = feedback.due_nacks(t0);
        assert_eq!(nacks[0].1.len(), MAX_MISSING);
        assert_eq!(nacks[0].1.last(), Some(&29999));
    }
}
