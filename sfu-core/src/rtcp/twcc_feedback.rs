//! Reading transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
//! extensions-01 §3.1) without copying: the statuses and arrival deltas are validated once, then
//! iterated as `(sequence number, arrival)` pairs for the send-side estimator.

use super::RtcpError;

/// Receive delta unit: 250 µs.
const DELTA_US: i64 = 250;
/// Reference time unit: 64 ms.
const REFERENCE_US: i64 = 64_000;

/// One transport-wide CC feedback message (the FCI after the two SSRCs), validated: every
/// status chunk and receive delta the status count announces is present.
#[derive(Clone, Copy, Debug)]
pub struct TwccFeedback<'a> {
    /// Transport-wide sequence number of the first packet reported.
    pub base: u16,
    /// Packets reported (received or not).
    pub count: u16,
    /// Reference time in microseconds (the receiver's clock; only differences matter).
    pub reference_us: i64,
    /// Feedback packet counter (wraps).
    pub feedback_count: u8,
    chunks: &'a [u8],
    deltas: &'a [u8],
}

/// The status of one packet in a status chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Symbol {
    NotReceived,
    SmallDelta,
    LargeDelta,
}

impl Symbol {
    fn from_bits(bits: u16) -> Result<Self, RtcpError> {
        match bits {
            0 => Ok(Self::NotReceived),
            1 => Ok(Self::SmallDelta),
            2 => Ok(Self::LargeDelta),
            _ => Err(RtcpError::Body),
        }
    }

    fn delta_len(self) -> usize {
        match self {
            Self::NotReceived => 0,
            Self::SmallDelta => 1,
            Self::LargeDelta => 2,
        }
    }
}

/// A status chunk: how many packets it covers and the symbol of the `i`th.
#[derive(Clone, Copy)]
struct Chunk(u16);

impl Chunk {
    fn len(self) -> usize {
        match (self.0 >> 15, (self.0 >> 14) & 1) {
            (0, _) => usize::from(self.0 & 0x1fff), // run length
            (_, 0) => 14,                           // one-bit symbols
            _ => 7,                                 // two-bit symbols
        }
    }

    fn symbol(self, i: usize) -> Result<Symbol, RtcpError> {
        match (self.0 >> 15, (self.0 >> 14) & 1) {
            (0, _) => Symbol::from_bits((self.0 >> 13) & 0b11),
            (_, 0) => Symbol::from_bits((self.0 >> (13 - i)) & 1),
            _ => Symbol::from_bits((self.0 >> (12 - 2 * i)) & 0b11),
        }
    }
}

impl<'a> TwccFeedback<'a> {
    /// Reads the FCI of an RTPFB FMT 15 message (`fci` starts at the base sequence number).
    pub fn parse(fci: &'a [u8]) -> Result<Self, RtcpError> {
        if fci.len() < 8 {
            return Err(RtcpError::Body);
        }
        let base = u16::from_be_bytes([fci[0], fci[1]]);
        let count = u16::from_be_bytes([fci[2], fci[3]]);
        // 24-bit signed reference time.
        let reference = (i32::from_be_bytes([fci[4], fci[5], fci[6], 0]) >> 8) as i64;
        let feedback_count = fci[7];
        let body = &fci[8..];
        // One pass over the chunks: where they end and how many delta bytes follow.
        let (mut covered, mut at, mut delta_bytes) = (0usize, 0usize, 0usize);
        while covered < usize::from(count) {
            let word = body.get(at..at + 2).ok_or(RtcpError::Body)?;
            let chunk = Chunk(u16::from_be_bytes([word[0], word[1]]));
            at += 2;
            let take = chunk.len().min(usize::from(count) - covered);
            if take == 0 {
                return Err(RtcpError::Body);
            }
            if chunk.0 >> 15 == 0 {
                delta_bytes += chunk.symbol(0)?.delta_len() * take;
            } else {
                for i in 0..take {
                    delta_bytes += chunk.symbol(i)?.delta_len();
                }
            }
            covered += take;
        }
        let deltas = body.get(at..at + delta_bytes).ok_or(RtcpError::Body)?;
        Ok(Self {
            base,
            count,
            reference_us: reference * REFERENCE_US,
            feedback_count,
            chunks: &body[..at],
            deltas,
        })
    }

    /// Every reported packet in sequence order: its wire sequence number and, if it arrived,
    /// its arrival time in the receiver's clock (microseconds).
    pub fn packets(&self) -> TwccPackets<'a> {
        TwccPackets {
            seq: self.base,
            left: usize::from(self.count),
            chunks: self.chunks,
            chunk: None,
            in_chunk: 0,
            deltas: self.deltas,
            arrival_us: self.reference_us,
        }
    }
}

/// Iterator over a [`TwccFeedback`]'s packets.
#[derive(Clone, Debug)]
pub struct TwccPackets<'a> {
    seq: u16,
    left: usize,
    chunks: &'a [u8],
    chunk: Option<(u16, usize)>,
    in_chunk: usize,
    deltas: &'a [u8],
    arrival_us: i64,
}

impl Iterator for TwccPackets<'_> {
    type Item = (u16, Option<i64>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let (word, len) = match self.chunk {
            Some((word, len)) if self.in_chunk < len => (word, len),
            _ => {
                let [a, b, rest @ ..] = self.chunks else {
                    return None; // validated by parse; unreachable for a parsed feedback
                };
                self.chunks = rest;
                let word = u16::from_be_bytes([*a, *b]);
                self.in_chunk = 0;
                let len = Chunk(word).len();
                self.chunk = Some((word, len));
                (word, len)
            }
        };
        debug_assert!(self.in_chunk < len);
        let symbol = Chunk(word).symbol(self.in_chunk).ok()?;
        self.in_chunk += 1;
        self.left -= 1;
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let arrival = match symbol {
            Symbol::NotReceived => None,
            Symbol::SmallDelta => {
                let [d, rest @ ..] = self.deltas else {
                    return None;
                };
                self.deltas = rest;
                self.arrival_us += i64::from(*d) * DELTA_US;
                Some(self.arrival_us)
            }
            Symbol::LargeDelta => {
                let [a, b, rest @ ..] = self.deltas else {
                    return None;
                };
                self.deltas = rest;
                self.arrival_us += i64::from(i16::from_be_bytes([*a, *b])) * DELTA_US;
                Some(self.arrival_us)
            }
        };
        Some((seq, arrival))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::BytesMut;

    use super::*;
    use crate::Ssrc;
    use crate::rtcp::{Compound, RtcpPacket, TwccRecorder};

    fn feedback_of(buf: &[u8]) -> Vec<(u16, Option<i64>)> {
        let Some(Ok(RtcpPacket::TransportCc { feedback, .. })) = Compound::new(buf).next() else {
            panic!("not a TWCC message");
        };
        feedback.packets().collect()
    }

    #[test]
    fn reads_back_what_the_recorder_writes_with_losses_and_large_deltas() {
        let t0 = Instant::now();
        let mut twcc = TwccRecorder::new(t0);
        let arrivals = [(65534u16, 5u64), (65535, 6), (1, 9), (2, 120), (3, 118)];
        for (seq, ms) in arrivals {
            twcc.record(t0 + Duration::from_millis(ms), seq);
        }
        let mut buf = BytesMut::new();
        twcc.write_feedback(&mut buf, Ssrc(1), Ssrc(2));
        let packets = feedback_of(&buf);
        let seqs: Vec<u16> = packets.iter().map(|p| p.0).collect();
        assert_eq!(seqs, [65534, 65535, 0, 1, 2, 3]);
        assert_eq!(packets[2].1, None);
        let times: Vec<i64> = packets.iter().filter_map(|p| p.1).collect();
        let first = times[0];
        let relative: Vec<i64> = times.iter().map(|t| (t - first) / 1000).collect();
        assert_eq!(relative, [0, 1, 4, 115, 113]);
    }

    #[test]
    fn reads_run_length_and_one_bit_chunks_written_by_the_rtcp_crate() {
        use rtcp::transport_feedbacks::transport_layer_cc::*;
        use webrtc_util::Marshal;
        let cc = TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence_number: 100,
            packet_status_count: 20,
            reference_time: 3,
            fb_pkt_count: 9,
            packet_chunks: vec![
                PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                    run_length: 6,
                }),
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::OneBit,
                    symbol_list: [1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
                        .map(|s| {
                            if s == 1 {
                                SymbolTypeTcc::PacketReceivedSmallDelta
                            } else {
                                SymbolTypeTcc::PacketNotReceived
                            }
                        })
                        .to_vec(),
                }),
            ],
            recv_deltas: (0..10)
                .map(|i| RecvDelta {
                    type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                    delta: 250 * i,
                })
                .collect(),
        };
        let bytes = cc.marshal().unwrap();
        let packets = feedback_of(&bytes);
        assert_eq!(packets.len(), 20);
        assert_eq!(packets[0], (100, Some(3 * 64_000)));
        let received: Vec<u16> = packets
            .iter()
            .filter(|p| p.1.is_some())
            .map(|p| p.0 - 100)
            .collect();
        assert_eq!(received, [0, 1, 2, 3, 4, 5, 6, 8, 9, 19]);
        assert_eq!(packets[19].1, Some(3 * 64_000 + 250 * 45));
    }

    #[test]
    fn refuses_truncated_or_reserved_feedback() {
        // Base 0, count 3, reference 0, fb 0, a two-bit vector chunk with a reserved symbol.
        let reserved = [0, 0, 0, 3, 0, 0, 0, 0, 0xf0, 0x00];
        assert!(TwccFeedback::parse(&reserved).is_err());
        // Three small deltas announced, one present.
        let short = [0, 0, 0, 3, 0, 0, 0, 0, 0x20, 0x03, 7];
        assert!(TwccFeedback::parse(&short).is_err());
        // A count no chunk covers (zero-length run).
        let empty_run = [0, 0, 0, 3, 0, 0, 0, 0, 0x20, 0x00];
        assert!(TwccFeedback::parse(&empty_run).is_err());
        assert!(TwccFeedback::parse(&[0; 7]).is_err());
        let fine = [0, 0, 0, 3, 0, 0, 0, 0, 0x20, 0x03, 1, 2, 3];
        let f = TwccFeedback::parse(&fine).unwrap();
        let arrivals: Vec<_> = f.packets().map(|p| p.1.unwrap()).collect();
        assert_eq!(arrivals, [250, 750, 1500]);
    }
}
