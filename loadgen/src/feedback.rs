//! What a real subscriber sends back, so the server under test does its real per-receiver work:
//! receiver reports every second per stream, transport-wide congestion control feedback every
//! 100 ms when the extension is negotiated (as Chromium does), and generic NACKs (RFC 4585) for
//! video packets that did not arrive — with `--loss`, the generator drops that share of arriving packets as a
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
    /// Missing packets given up (NACKed [`NACK_ATTEMPTS`] times, or pushed out of the bounded
    /// list) without arriving.
    given_up: u64,
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
                    self.given_up += 1;
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
        let given_up = &mut self.given_up;
        for (&ssrc, stream) in &mut self.streams {
            let mut seqs = Vec::new();
            stream.missing.retain(|&ext, (sent, next)| {
                if *next > now {
                    return true;
                }
                if *sent == NACK_ATTEMPTS {
                    *given_up += 1;
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

    /// Video packets that went missing and never arrived: given up, or still missing now.
    pub(crate) fn unrecovered(&self) -> u64 {
        self.given_up
            + self
                .streams
                .values()
                .map(|s| s.missing.len() as u64)
                .sum::<u64>()
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
pub(crate) fn extend(highest: u64, seq: u16) -> u64 {
    let candidate = (highest & !0xffff) | u64::from(seq);
    if candidate + 0x8000 < highest {
        candidate + 0x1_0000
    } else if candidate > highest + 0x8000 && candidate >= 0x1_0000 {
        candidate - 0x1_0000
    } else {
        candidate
    }
}

/// Transport-wide-cc feedback is sent this often (Chromium: every 50–250 ms by rate).
const TWCC_INTERVAL: Duration = Duration::from_millis(100);
/// Packets one feedback covers at most (a gap larger than this starts a new base).
const TWCC_MAX_SPAN: u64 = 1024;
/// Receive deltas are in 250 µs units; the reference time in 64 ms units.
const DELTA_UNIT_US: i64 = 250;
const REFERENCE_UNIT_US: i64 = 64_000;

/// Arrival times by transport-wide sequence number, reported every [`TWCC_INTERVAL`] as one
/// transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).
#[derive(Debug)]
pub(crate) struct TwccRecorder {
    epoch: Instant,
    highest: Option<u64>,
    /// Not yet reported: extended sequence number → arrival, µs since `epoch`.
    pending: BTreeMap<u64, i64>,
    /// The first sequence number the next feedback covers.
    next_base: Option<u64>,
    feedback_count: u8,
    next_feedback: Instant,
}

impl TwccRecorder {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            epoch: now,
            highest: None,
            pending: BTreeMap::new(),
            next_base: None,
            feedback_count: 0,
            next_feedback: now + TWCC_INTERVAL,
        }
    }

    /// A packet with transport-wide sequence number `seq` arrived at `arrival`.
    pub(crate) fn on_packet(&mut self, arrival: Instant, seq: u16) {
        let ext = match self.highest {
            None => u64::from(seq) + 0x1_0000,
            Some(highest) => extend(highest, seq),
        };
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        let base = *self.next_base.get_or_insert(ext);
        if ext < base {
            return; // already reported as lost: too late to say otherwise
        }
        let at = arrival.saturating_duration_since(self.epoch).as_micros() as i64;
        self.pending.entry(ext).or_insert(at);
    }

    /// The feedback due now: every sequence number from the last one reported to the highest
    /// received, each received (with its arrival delta) or not.
    pub(crate) fn due_feedback(
        &mut self,
        now: Instant,
        sender_ssrc: u32,
        media_ssrc: u32,
    ) -> Option<rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc> {
        use rtcp::transport_feedbacks::transport_layer_cc::{
            PacketStatusChunk, RecvDelta, StatusChunkTypeTcc, StatusVectorChunk, SymbolSizeTypeTcc,
            SymbolTypeTcc, TransportLayerCc,
        };
        if now < self.next_feedback {
            return None;
        }
        self.next_feedback = now + TWCC_INTERVAL;
        let (&last, _) = self.pending.last_key_value()?;
        let mut base = self.next_base?;
        if last - base >= TWCC_MAX_SPAN {
            // A long gap: report the latest span only (what came before is lost to the sender).
            base = last + 1 - TWCC_MAX_SPAN;
            self.pending.retain(|&seq, _| seq >= base);
        }
        let (&first, &first_at) = self.pending.first_key_value()?;
        let reference = first_at / REFERENCE_UNIT_US;
        let mut previous = reference * REFERENCE_UNIT_US;
        let mut symbols = Vec::new();
        let mut deltas = Vec::new();
        for seq in base..=last {
            let Some(&at) = self.pending.get(&seq) else {
                symbols.push(SymbolTypeTcc::PacketNotReceived);
                continue;
            };
            let units = (at - previous) / DELTA_UNIT_US;
            let kind = if (0..=255).contains(&units) {
                SymbolTypeTcc::PacketReceivedSmallDelta
            } else {
                SymbolTypeTcc::PacketReceivedLargeDelta
            };
            let units = units.clamp(i64::from(i16::MIN), i64::from(i16::MAX));
            // The sender rebuilds arrival times from the deltas it is sent: keep ours in step.
            previous += units * DELTA_UNIT_US;
            symbols.push(kind);
            deltas.push(RecvDelta {
                type_tcc_packet: kind,
                delta: units * DELTA_UNIT_US,
            });
        }
        debug_assert!(first >= base);
        let packet_status_count = symbols.len() as u16;
        let packet_chunks = symbols
            .chunks(7)
            .map(|chunk| {
                let mut symbol_list = chunk.to_vec();
                symbol_list.resize(7, SymbolTypeTcc::PacketNotReceived);
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    symbol_list,
                })
            })
            .collect();
        let feedback = TransportLayerCc {
            sender_ssrc,
            media_ssrc,
            base_sequence_number: base as u16,
            packet_status_count,
            reference_time: (reference as u32) & 0x00ff_ffff,
            fb_pkt_count: self.feedback_count,
            packet_chunks,
            recv_deltas: deltas,
        };
        self.feedback_count = self.feedback_count.wrapping_add(1);
        self.pending.clear();
        self.next_base = Some(last + 1);
        Some(feedback)
    }
}

/// The transport-wide sequence number of an RTP packet whose header extension `id` carries it
/// (one-byte RFC 8285 extensions; two-byte too).
pub(crate) fn transport_sequence(packet: &[u8], id: u8) -> Option<u16> {
    if packet.len() < 12 || packet[0] & 0x10 == 0 {
        return None;
    }
    let at = 12 + usize::from(packet[0] & 0x0f) * 4;
    let profile = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    let words = usize::from(u16::from_be_bytes([
        *packet.get(at + 2)?,
        *packet.get(at + 3)?,
    ]));
    let body = packet.get(at + 4..at + 4 + words * 4)?;
    let mut i = 0;
    while i < body.len() {
        let (ext_id, len, header) = match profile {
            0xBEDE => {
                let b = body[i];
                if b == 0 {
                    i += 1; // padding
                    continue;
                }
                if b >> 4 == 15 {
                    return None;
                }
                (b >> 4, usize::from(b & 0x0f) + 1, 1)
            }
            p if p & 0xfff0 == 0x1000 => {
                let b = body[i];
                if b == 0 {
                    i += 1;
                    continue;
                }
                (b, usize::from(*body.get(i + 1)?), 2)
            }
            _ => return None,
        };
        let data = body.get(i + header..i + header + len)?;
        if ext_id == id && data.len() >= 2 {
            return Some(u16::from_be_bytes([data[0], data[1]]));
        }
        i += header + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twcc_feedback_reports_every_sequence_number_and_round_trips() {
        use rtcp::transport_feedbacks::transport_layer_cc::{SymbolTypeTcc, TransportLayerCc};
        use webrtc_util::marshal::{Marshal, Unmarshal};
        let t0 = Instant::now();
        let mut twcc = TwccRecorder::new(t0);
        // 10, 11, (12 lost), 13 after 100 ms (a large delta), then 14.
        twcc.on_packet(t0 + Duration::from_millis(1), 10);
        twcc.on_packet(t0 + Duration::from_millis(2), 11);
        twcc.on_packet(t0 + Duration::from_millis(102), 13);
        twcc.on_packet(t0 + Duration::from_millis(103), 14);
        assert!(
            twcc.due_feedback(t0, 1, 2).is_none(),
            "not before the interval"
        );
        let feedback = twcc.due_feedback(t0 + TWCC_INTERVAL, 1, 2).unwrap();
        assert_eq!(
            (feedback.base_sequence_number, feedback.packet_status_count),
            (10, 5)
        );
        let kinds: Vec<_> = feedback
            .recv_deltas
            .iter()
            .map(|d| d.type_tcc_packet)
            .collect();
        assert_eq!(
            kinds,
            [
                SymbolTypeTcc::PacketReceivedSmallDelta,
                SymbolTypeTcc::PacketReceivedSmallDelta,
                SymbolTypeTcc::PacketReceivedLargeDelta,
                SymbolTypeTcc::PacketReceivedSmallDelta
            ]
        );
        let deltas: i64 = feedback.recv_deltas.iter().map(|d| d.delta).sum();
        assert_eq!(
            deltas, 103_000,
            "deltas add up to the last arrival since the reference"
        );
        let bytes = feedback.marshal().unwrap();
        let mut reader = &bytes[..];
        let parsed = TransportLayerCc::unmarshal(&mut reader).unwrap();
        assert_eq!(parsed.packet_status_count, 5);
        assert_eq!(parsed.recv_deltas.len(), 4);

        // The next feedback starts after 14; a late 12 is not reported again.
        twcc.on_packet(t0 + Duration::from_millis(150), 12);
        twcc.on_packet(t0 + Duration::from_millis(151), 15);
        let next = twcc.due_feedback(t0 + TWCC_INTERVAL * 2, 1, 2).unwrap();
        assert_eq!(
            (next.base_sequence_number, next.packet_status_count),
            (15, 1)
        );
        assert_eq!(next.fb_pkt_count, 1);
        assert!(
            twcc.due_feedback(t0 + TWCC_INTERVAL * 3, 1, 2).is_none(),
            "nothing new"
        );
    }

    #[test]
    fn transport_sequence_numbers_are_read_from_one_and_two_byte_extensions() {
        // One-byte: id 3 (len 2) after padding and an id-1 extension of 1 byte.
        let mut packet = vec![0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        packet.extend([0xBE, 0xDE, 0, 2, 0x10, 0xAA, 0x00, 0x31, 0x12, 0x34, 0, 0]);
        assert_eq!(transport_sequence(&packet, 3), Some(0x1234));
        assert_eq!(transport_sequence(&packet, 5), None);
        // Two-byte profile: id 3, length 2.
        let mut two = vec![0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        two.extend([0x10, 0x00, 0, 1, 3, 2, 0xAB, 0xCD]);
        assert_eq!(transport_sequence(&two, 3), Some(0xABCD));
        // No extension bit, truncated, or a length past the end: nothing, no panic.
        assert_eq!(transport_sequence(&packet[..12], 3), None);
        assert_eq!(transport_sequence(&packet[..18], 3), None);
        let mut bad = packet.clone();
        bad[15] = 9;
        assert_eq!(transport_sequence(&bad, 3), None);
    }

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
        assert_eq!(feedback.unrecovered(), 2, "both still missing");
        assert_eq!(feedback.on_packet(t0, 7, 101, true), Arrival::Recovered);
        assert_eq!(feedback.on_packet(t0, 7, 101, true), Arrival::Duplicate);
        assert_eq!(feedback.unrecovered(), 1);
        let t1 = t0 + NACK_INTERVAL;
        assert_eq!(feedback.due_nacks(t1), [(7, vec![102])]);
        let t2 = t1 + NACK_INTERVAL;
        assert_eq!(feedback.due_nacks(t2), [(7, vec![102])]);
        assert!(
            feedback.due_nacks(t2 + NACK_INTERVAL).is_empty(),
            "given up after 3"
        );
        assert_eq!(feedback.on_packet(t2, 7, 102, true), Arrival::Duplicate);
        assert_eq!(
            feedback.unrecovered(),
            1,
            "given up: counted once, and still"
        );
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
