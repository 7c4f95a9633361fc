//! Writers for the RTCP messages the core generates. Each appends one packet to `buf`, so a
//! compound is built by calling several in a row.

use bytes::{BufMut, BytesMut};

use super::read::{ReportBlock, SenderInfo};
use super::{fmt, pt};
use crate::{Bitrate, Ssrc};

/// Appends the common header; `len_words` is the packet length in 32-bit words minus one.
fn header(buf: &mut BytesMut, count: u8, packet_type: u8, len_words: usize) {
    buf.put_u8(0x80 | (count & 0x1f));
    buf.put_u8(packet_type);
    buf.put_u16(len_words as u16);
}

fn block(buf: &mut BytesMut, b: &ReportBlock) {
    buf.put_u32(b.ssrc.0);
    buf.put_u8(b.fraction_lost);
    let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32;
    buf.put_slice(&lost.to_be_bytes()[1..]);
    buf.put_u32(b.highest_seq);
    buf.put_u32(b.jitter);
    buf.put_u32(b.last_sr);
    buf.put_u32(b.delay_since_last_sr);
}

/// SR (RFC 3550 §6.4.1) with up to 31 report blocks (extra ones are dropped).
pub fn write_sr(buf: &mut BytesMut, sender: Ssrc, info: SenderInfo, blocks: &[ReportBlock]) {
    let blocks = &blocks[..blocks.len().min(31)];
    header(buf, blocks.len() as u8, pt::SR, 6 + 6 * blocks.len());
    buf.put_u32(sender.0);
    buf.put_u64(info.ntp);
    buf.put_u32(info.rtp_time);
    buf.put_u32(info.packet_count);
    buf.put_u32(info.octet_count);
    blocks.iter().for_each(|b| block(buf, b));
}

/// RR (RFC 3550 §6.4.2) with up to 31 report blocks.
pub fn write_rr(buf: &mut BytesMut, sender: Ssrc, blocks: &[ReportBlock]) {
    let blocks = &blocks[..blocks.len().min(31)];
    header(buf, blocks.len() as u8, pt::RR, 1 + 6 * blocks.len());
    buf.put_u32(sender.0);
    blocks.iter().for_each(|b| block(buf, b));
}

/// Generic NACK (RFC 4585 §6.2.1). `lost` must be ascending (mod 2^16); consecutive numbers
/// within 16 of a PID share its bitmask.
pub fn write_nack(
    buf: &mut BytesMut,
    sender: Ssrc,
    media: Ssrc,
    lost: impl IntoIterator<Item = u16>,
) {
    let start = buf.len();
    header(buf, fmt::NACK, pt::RTPFB, 0);
    buf.put_u32(sender.0);
    buf.put_u32(media.0);
    let mut pair: Option<(u16, u16)> = None;
    for seq in lost {
        match pair {
            Some((pid, ref mut blp)) if (1..=16).contains(&seq.wrapping_sub(pid)) => {
                *blp |= 1 << (seq.wrapping_sub(pid) - 1)
            }
            _ => {
                if let Some((pid, blp)) = pair {
                    buf.put_u16(pid);
                    buf.put_u16(blp);
                }
                pair = Some((seq, 0));
            }
        }
    }
    if let Some((pid, blp)) = pair {
        buf.put_u16(pid);
        buf.put_u16(blp);
    }
    patch_length(buf, start);
}

/// PLI (RFC 4585 §6.3.1).
pub fn write_pli(buf: &mut BytesMut, sender: Ssrc, media: Ssrc) {
    header(buf, fmt::PLI, pt::PSFB, 2);
    buf.put_u32(sender.0);
    buf.put_u32(media.0);
}

/// REMB (draft-alvestrand-rmcat-remb §2.2) for the given media SSRCs (at most 255).
pub fn write_remb(buf: &mut BytesMut, sender: Ssrc, bitrate: Bitrate, ssrcs: &[Ssrc]) {
    let ssrcs = &ssrcs[..ssrcs.len().min(255)];
    header(buf, fmt::AFB, pt::PSFB, 4 + ssrcs.len());
    buf.put_u32(sender.0);
    buf.put_u32(0);
    buf.put_slice(b"REMB");
    // 18-bit mantissa and 6-bit exponent: shift until the mantissa fits.
    let mut mantissa = bitrate.0;
    let mut exponent = 0u8;
    while mantissa >= 1 << 18 {
        mantissa >>= 1;
        exponent += 1;
    }
    buf.put_u8(ssrcs.len() as u8);
    buf.put_u8((exponent << 2) | (mantissa >> 16) as u8);
    buf.put_u16(mantissa as u16);
    ssrcs.iter().for_each(|s| buf.put_u32(s.0));
}

/// Fixes the length field of the packet that starts at `start`, padding to a word boundary.
pub(super) fn patch_length(buf: &mut BytesMut, start: usize) {
    while !(buf.len() - start).is_multiple_of(4) {
        buf.put_u8(0);
    }
    let words = ((buf.len() - start) / 4 - 1) as u16;
    buf[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rtcp::packet::Packet;

    use super::*;
    use crate::rtcp::{Compound, RtcpPacket};

    fn reference(buf: &BytesMut) -> Vec<Box<dyn Packet + Send + Sync>> {
        rtcp::packet::unmarshal(&mut Bytes::copy_from_slice(buf))
            .expect("rtcp crate parses our output")
    }

    #[test]
    fn our_sr_rr_nack_pli_remb_parse_in_the_rtcp_crate() {
        let mut buf = BytesMut::new();
        let rb = ReportBlock {
            ssrc: Ssrc(7),
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq: 70_000,
            jitter: 12,
            last_sr: 99,
            delay_since_last_sr: 1000,
        };
        write_sr(
            &mut buf,
            Ssrc(1),
            SenderInfo {
                ntp: 0x0102_0304_0506_0708,
                rtp_time: 9,
                packet_count: 10,
                octet_count: 11,
            },
            &[rb],
        );
        write_rr(&mut buf, Ssrc(2), &[rb]);
        write_nack(&mut buf, Ssrc(3), Ssrc(4), [65535, 0, 5, 40]);
        write_pli(&mut buf, Ssrc(5), Ssrc(6));
        write_remb(&mut buf, Ssrc(8), Bitrate(2_500_000), &[Ssrc(6), Ssrc(7)]);
        let packets = reference(&buf);
        assert_eq!(packets.len(), 5);
        let sr = packets[0]
            .as_any()
            .downcast_ref::<rtcp::sender_report::SenderReport>()
            .unwrap();
        assert_eq!(
            (
                sr.ssrc,
                sr.ntp_time,
                sr.rtp_time,
                sr.packet_count,
                sr.octet_count
            ),
            (1, 0x0102_0304_0506_0708, 9, 10, 11)
        );
        assert_eq!(
            sr.reports[0].total_lost, 0xff_fffd,
            "24-bit two's complement"
        );
        assert_eq!(sr.reports[0].last_sequence_number, 70_000);
        let nack = packets[2]
            .as_any()
            .downcast_ref::<rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack>()
            .unwrap();
        let lost: Vec<u16> = nack.nacks.iter().flat_map(|p| p.packet_list()).collect();
        assert_eq!(lost, vec![65535, 0, 5, 40]);
        let remb = packets[4]
            .as_any()
            .downcast_ref::<rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate>()
            .unwrap();
        assert!((remb.bitrate - 2_500_000.0).abs() < 2_500_000.0 * 0.001);
        assert_eq!(remb.ssrcs, vec![6, 7]);

        // And our reader agrees with what we wrote.
        let ours: Vec<_> = Compound::new(&buf).collect::<Result<_, _>>().unwrap();
        assert!(matches!(
            ours[3],
            RtcpPacket::Pli {
                sender: Ssrc(5),
                media: Ssrc(6)
            }
        ));
        assert!(
            matches!(ours[4], RtcpPacket::Remb { bitrate, .. } if bitrate.0.abs_diff(2_500_000) < 10)
        );
        let RtcpPacket::Nack(n) = ours[2] else {
            panic!()
        };
        assert_eq!(n.lost().collect::<Vec<_>>(), vec![65535, 0, 5, 40]);
    }
}
