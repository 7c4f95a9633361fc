//! Reading compound RTCP without copying: every message is a view over the received bytes.

use super::twcc_feedback::TwccFeedback;
use super::{fmt, pt};
use crate::{Bitrate, Ssrc};

/// A malformed RTCP packet. Never leaves the [`Worker`](crate::Worker), which counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Shorter than a header or than its length field claims.
    #[error("RTCP packet truncated")]
    Truncated,
    /// Version field is not 2.
    #[error("unsupported RTCP version")]
    Version,
    /// A fixed-size body does not match its header's count or length.
    #[error("RTCP body inconsistent with its header")]
    Body,
}

/// One message of a compound packet.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum RtcpPacket<'a> {
    /// SR (200).
    SenderReport(SenderReport<'a>),
    /// RR (201).
    ReceiverReport(ReceiverReport<'a>),
    /// SDES (202): not interpreted.
    SourceDescription,
    /// BYE (203): not interpreted.
    Goodbye,
    /// APP (204): not interpreted.
    App,
    /// XR (207): not interpreted.
    ExtendedReport,
    /// RTPFB FMT 1 (RFC 4585 §6.2.1).
    Nack(Nack<'a>),
    /// RTPFB FMT 15: transport-wide congestion control feedback.
    TransportCc {
        /// SSRC of the feedback's sender.
        sender: Ssrc,
        /// The statuses and arrival times it reports.
        feedback: TwccFeedback<'a>,
    },
    /// PSFB FMT 1 (RFC 4585 §6.3.1).
    Pli {
        /// SSRC of the feedback's sender.
        sender: Ssrc,
        /// SSRC of the stream that needs a keyframe.
        media: Ssrc,
    },
    /// PSFB FMT 4 (RFC 5104 §4.3.1).
    Fir(Fir<'a>),
    /// PSFB FMT 15 "REMB" (draft-alvestrand-rmcat-remb).
    Remb {
        /// SSRC of the feedback's sender.
        sender: Ssrc,
        /// Estimated maximum bitrate.
        bitrate: Bitrate,
    },
    /// Any other RTPFB/PSFB message (TMMBR, SLI, RPSI, other AFB…): not interpreted.
    OtherFeedback {
        /// Packet type (205 or 206).
        pt: u8,
        /// Feedback message type.
        fmt: u8,
    },
    /// A packet type this reader does not know.
    Unknown {
        /// Packet type.
        pt: u8,
    },
}

/// Iterator over the messages of a compound RTCP packet. Yields at most one `Err`, after which
/// it stops: the rest of a malformed compound cannot be framed.
#[derive(Clone, Debug)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Compound<'a> {
    /// Reads `buf`, which may hold one or several RTCP packets.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = split(self.rest).and_then(|(packet, rest)| {
            self.rest = rest;
            parse(packet)
        });
        if result.is_err() {
            self.rest = &[];
        }
        Some(result)
    }
}

/// Splits one packet off the front; the returned packet excludes its padding.
fn split(buf: &[u8]) -> Result<(&[u8], &[u8]), RtcpError> {
    if buf.len() < 4 {
        return Err(RtcpError::Truncated);
    }
    if buf[0] >> 6 != 2 {
        return Err(RtcpError::Version);
    }
    let len = (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1) * 4;
    if buf.len() < len {
        return Err(RtcpError::Truncated);
    }
    let (mut packet, rest) = buf.split_at(len);
    if packet[0] & 0x20 != 0 {
        let padding = usize::from(packet[len - 1]);
        if padding == 0 || padding > len - 4 {
            return Err(RtcpError::Body);
        }
        packet = &packet[..len - padding];
    }
    Ok((packet, rest))
}

fn parse(packet: &[u8]) -> Result<RtcpPacket<'_>, RtcpError> {
    let count = packet[0] & 0x1f;
    let body = &packet[4..];
    Ok(match packet[1] {
        pt::SR => {
            let blocks = report_blocks(body, 24, count)?;
            RtcpPacket::SenderReport(SenderReport {
                sender: ssrc_at(body, 0),
                info: SenderInfo {
                    ntp: u64::from_be_bytes(body[4..12].try_into().expect("length checked")),
                    rtp_time: u32_at(body, 12),
                    packet_count: u32_at(body, 16),
                    octet_count: u32_at(body, 20),
                },
                blocks,
            })
        }
        pt::RR => RtcpPacket::ReceiverReport(ReceiverReport {
            sender: need(body, 4).map(|b| ssrc_at(b, 0))?,
            blocks: report_blocks(body, 4, count)?,
        }),
        pt::SDES => RtcpPacket::SourceDescription,
        pt::BYE => RtcpPacket::Goodbye,
        pt::APP => RtcpPacket::App,
        pt::XR => RtcpPacket::ExtendedReport,
        pt::RTPFB => {
            let body = need(body, 8)?;
            let sender = ssrc_at(body, 0);
            match count {
                fmt::NACK => RtcpPacket::Nack(Nack {
                    sender,
                    media: ssrc_at(body, 4),
                    pairs: &body[8..],
                }),
                fmt::TWCC => RtcpPacket::TransportCc {
                    sender,
                    feedback: TwccFeedback::parse(&body[8..])?,
                },
                fmt => RtcpPacket::OtherFeedback { pt: pt::RTPFB, fmt },
            }
        }
        pt::PSFB => {
            let body = need(body, 8)?;
            let sender = ssrc_at(body, 0);
            match count {
                fmt::PLI => RtcpPacket::Pli {
                    sender,
                    media: ssrc_at(body, 4),
                },
                fmt::FIR => RtcpPacket::Fir(Fir {
                    sender,
                    entries: &body[8..],
                }),
                fmt::AFB if body.get(8..12) == Some(b"REMB") => {
                    let remb = need(body, 16)?;
                    let exponent = remb[13] >> 2;
                    let mantissa = (u64::from(remb[13] & 0x03) << 16)
                        | (u64::from(remb[14]) << 8)
                        | u64::from(remb[15]);
                    RtcpPacket::Remb {
                        sender,
                        bitrate: Bitrate(
                            mantissa
                                .checked_shl(u32::from(exponent))
                                .unwrap_or(u64::MAX),
                        ),
                    }
                }
                fmt => RtcpPacket::OtherFeedback { pt: pt::PSFB, fmt },
            }
        }
        pt => RtcpPacket::Unknown { pt },
    })
}

fn need(body: &[u8], len: usize) -> Result<&[u8], RtcpError> {
    if body.len() < len {
        Err(RtcpError::Body)
    } else {
        Ok(body)
    }
}

fn report_blocks(body: &[u8], offset: usize, count: u8) -> Result<ReportBlocks<'_>, RtcpError> {
    let end = offset + 24 * usize::from(count);
    let blocks = body.get(offset..end).ok_or(RtcpError::Body)?;
    Ok(ReportBlocks { raw: blocks })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn ssrc_at(b: &[u8], at: usize) -> Ssrc {
    Ssrc(u32_at(b, at))
}

/// Sender information of an SR (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp (64-bit fixed point).
    pub ntp: u64,
    /// RTP timestamp corresponding to `ntp`.
    pub rtp_time: u32,
    /// Packets sent.
    pub packet_count: u32,
    /// Payload octets sent.
    pub octet_count: u32,
}

/// An SR view.
#[derive(Clone, Copy, Debug)]
pub struct SenderReport<'a> {
    /// SSRC of the sender.
    pub sender: Ssrc,
    /// Sender information.
    pub info: SenderInfo,
    blocks: ReportBlocks<'a>,
}

impl SenderReport<'_> {
    /// Reception report blocks.
    pub fn blocks(&self) -> impl Iterator<Item = ReportBlock> + '_ {
        self.blocks.iter()
    }
}

/// An RR view.
#[derive(Clone, Copy, Debug)]
pub struct ReceiverReport<'a> {
    /// SSRC of the reporter.
    pub sender: Ssrc,
    blocks: ReportBlocks<'a>,
}

impl ReceiverReport<'_> {
    /// Reception report blocks.
    pub fn blocks(&self) -> impl Iterator<Item = ReportBlock> + '_ {
        self.blocks.iter()
    }
}

#[derive(Clone, Copy, Debug)]
struct ReportBlocks<'a> {
    raw: &'a [u8],
}

impl ReportBlocks<'_> {
    fn iter(&self) -> impl Iterator<Item = ReportBlock> + '_ {
        self.raw.chunks_exact(24).map(|b| ReportBlock {
            ssrc: ssrc_at(b, 0),
            fraction_lost: b[4],
            // 24-bit two's complement (RFC 3550 §6.4.1).
            cumulative_lost: (i32::from_be_bytes([b[5], b[6], b[7], 0])) >> 8,
            highest_seq: u32_at(b, 8),
            jitter: u32_at(b, 12),
            last_sr: u32_at(b, 16),
            delay_since_last_sr: u32_at(b, 20),
        })
    }
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// SSRC the block reports on.
    pub ssrc: Ssrc,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// A NACK view (RFC 4585 §6.2.1).
#[derive(Clone, Copy, Debug)]
pub struct Nack<'a> {
    /// SSRC of the feedback's sender.
    pub sender: Ssrc,
    /// SSRC of the stream with losses.
    pub media: Ssrc,
    pairs: &'a [u8],
}

impl Nack<'_> {
    /// The lost sequence numbers: each PID and the set bits of its BLP.
    pub fn lost(&self) -> impl Iterator<Item = u16> + '_ {
        self.pairs.chunks_exact(4).flat_map(|pair| {
            let pid = u16::from_be_bytes([pair[0], pair[1]]);
            let blp = u16::from_be_bytes([pair[2], pair[3]]);
            std::iter::once(pid).chain(
                (0..16)
                    .filter(move |bit| blp & (1 << bit) != 0)
                    .map(move |bit| pid.wrapping_add(bit + 1)),
            )
        })
    }
}

/// A FIR view (RFC 5104 §4.3.1).
#[derive(Clone, Copy, Debug)]
pub struct Fir<'a> {
    /// SSRC of the feedback's sender.
    pub sender: Ssrc,
    entries: &'a [u8],
}

impl Fir<'_> {
    /// `(ssrc, command sequence number)` per entry.
    pub fn entries(&self) -> impl Iterator<Item = (Ssrc, u8)> + '_ {
        self.entries.chunks_exact(8).map(|e| (ssrc_at(e, 0), e[4]))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rtcp::goodbye::Goodbye;
    use rtcp::packet::Packet;
    use rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
    use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    use rtcp::receiver_report::ReceiverReport as TheirRr;
    use rtcp::reception_report::ReceptionReport;
    use rtcp::sender_report::SenderReport as TheirSr;
    use rtcp::source_description::{
        SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
    };
    use rtcp::transport_feedbacks::transport_layer_nack::{
        TransportLayerNack, nack_pairs_from_sequence_numbers,
    };

    use super::*;

    fn report(ssrc: u32) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            fraction_lost: 12,
            total_lost: 0xff_fffe, // -2 in 24-bit two's complement
            last_sequence_number: 0x0001_0005,
            jitter: 77,
            last_sender_report: 0xdead_beef,
            delay: 65_536,
        }
    }

    /// Compound packets marshalled by the `rtcp` crate (0.17.2) read the same with our reader.
    #[test]
    fn reader_agrees_with_rtcp_crate() {
        let nacked: Vec<u16> = vec![65_530, 65_535, 2, 100];
        let packets: Vec<Box<dyn Packet + Send + Sync>> = vec![
            Box::new(TheirSr {
                ssrc: 1,
                ntp_time: 0x1122_3344_5566_7788,
                rtp_time: 99,
                packet_count: 5,
                octet_count: 500,
                reports: vec![report(10), report(11)],
                profile_extensions: Bytes::new(),
            }),
            Box::new(TheirRr {
                ssrc: 2,
                reports: vec![report(12)],
                profile_extensions: Bytes::new(),
            }),
            Box::new(SourceDescription {
                chunks: vec![SourceDescriptionChunk {
                    source: 1,
                    items: vec![SourceDescriptionItem {
                        sdes_type: SdesType::SdesCname,
                        text: Bytes::from_static(b"cname"),
                    }],
                }],
            }),
            Box::new(TransportLayerNack {
                sender_ssrc: 3,
                media_ssrc: 4,
                nacks: nack_pairs_from_sequence_numbers(&nacked),
            }),
            Box::new(PictureLossIndication {
                sender_ssrc: 5,
                media_ssrc: 6,
            }),
            Box::new(FullIntraRequest {
                sender_ssrc: 7,
                media_ssrc: 0,
                fir: vec![
                    FirEntry {
                        ssrc: 8,
                        sequence_number: 3,
                    },
                    FirEntry {
                        ssrc: 9,
                        sequence_number: 4,
                    },
                ],
            }),
            Box::new(ReceiverEstimatedMaximumBitrate {
                sender_ssrc: 10,
                bitrate: 1_000_000.0,
                ssrcs: vec![6],
            }),
            Box::new(Goodbye {
                sources: vec![1],
                reason: Bytes::from_static(b"bye"),
            }),
        ];
        let raw = rtcp::packet::marshal(&packets).expect("marshal");
        let ours: Vec<RtcpPacket<'_>> = Compound::new(&raw)
            .collect::<Result<_, _>>()
            .expect("we read it");
        assert_eq!(ours.len(), 8);
        let RtcpPacket::SenderReport(sr) = ours[0] else {
            panic!("{:?}", ours[0])
        };
        assert_eq!(
            (
                sr.sender,
                sr.info.ntp,
                sr.info.rtp_time,
                sr.info.packet_count,
                sr.info.octet_count
            ),
            (Ssrc(1), 0x1122_3344_5566_7788, 99, 5, 500)
        );
        let blocks: Vec<ReportBlock> = sr.blocks().collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            blocks[1],
            ReportBlock {
                ssrc: Ssrc(11),
                fraction_lost: 12,
                cumulative_lost: -2,
                highest_seq: 0x0001_0005,
                jitter: 77,
                last_sr: 0xdead_beef,
                delay_since_last_sr: 65_536
            }
        );
        let RtcpPacket::ReceiverReport(rr) = ours[1] else {
            panic!()
        };
        assert_eq!((rr.sender, rr.blocks().count()), (Ssrc(2), 1));
        assert!(matches!(ours[2], RtcpPacket::SourceDescription));
        let RtcpPacket::Nack(nack) = ours[3] else {
            panic!()
        };
        assert_eq!((nack.sender, nack.media), (Ssrc(3), Ssrc(4)));
        assert_eq!(nack.lost().collect::<Vec<_>>(), nacked);
        assert!(matches!(
            ours[4],
            RtcpPacket::Pli {
                sender: Ssrc(5),
                media: Ssrc(6)
            }
        ));
        let RtcpPacket::Fir(fir) = ours[5] else {
            panic!()
        };
        assert_eq!(
            fir.entries().collect::<Vec<_>>(),
            vec![(Ssrc(8), 3), (Ssrc(9), 4)]
        );
        assert!(
            matches!(ours[6], RtcpPacket::Remb { sender: Ssrc(10), bitrate: Bitrate(b) } if b.abs_diff(1_000_000) < 8)
        );
        assert!(matches!(ours[7], RtcpPacket::Goodbye));
    }

    #[test]
    fn truncated_or_inconsistent_compounds_stop_with_one_error() {
        let rr = rtcp::packet::marshal(&[Box::new(TheirRr {
            ssrc: 2,
            reports: vec![report(1)],
            profile_extensions: Bytes::new(),
        }) as Box<dyn Packet + Send + Sync>])
        .unwrap();
        for cut in 0..rr.len() {
            let items: Vec<_> = Compound::new(&rr[..cut]).collect();
            assert!(
                cut == 0 || (items.len() == 1 && items[0].is_err()),
                "cut {cut}: {items:?}"
            );
        }
        // Claims two report blocks but carries one.
        let mut lying = rr.to_vec();
        lying[0] = (lying[0] & !0x1f) | 2;
        assert_eq!(
            Compound::new(&lying).next().unwrap().unwrap_err(),
            RtcpError::Body
        );
        lying[0] = 0x40 | 1;
        assert_eq!(
            Compound::new(&lying).next().unwrap().unwrap_err(),
            RtcpError::Version
        );
    }
}
