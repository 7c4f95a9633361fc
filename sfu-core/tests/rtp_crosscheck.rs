//! Our zero-copy RTP parser against the `rtp` crate (0.17.2) on generated packets.

use bytes::Bytes;
use mooyaho_test_support::rng::TestRng;
use sfu_core::rtp::RtpPacket;
use webrtc_util::marshal::{Marshal, Unmarshal};

fn generate(rng: &mut TestRng) -> rtp::packet::Packet {
    let two_byte = rng.below(3) == 0;
    let mut header = rtp::header::Header {
        version: 2,
        padding: rng.below(4) == 0,
        marker: rng.below(2) == 0,
        payload_type: rng.below(128) as u8,
        sequence_number: rng.next_u64() as u16,
        timestamp: rng.next_u64() as u32,
        ssrc: rng.next_u64() as u32,
        csrc: (0..rng.below(4)).map(|_| rng.next_u64() as u32).collect(),
        ..Default::default()
    };
    let elements = rng.below(4);
    if elements > 0 {
        header.extension = true;
        header.extension_profile = if two_byte { 0x1000 } else { 0xbede };
        for i in 0..elements {
            let (id, len) = if two_byte {
                (1 + i as u8 * 40, rng.below(30) as usize + 1)
            } else {
                (1 + i as u8 * 3, rng.below(16) as usize + 1)
            };
            let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            header
                .set_extension(id, Bytes::from(data))
                .expect("valid extension");
        }
    }
    let payload: Vec<u8> = (0..rng.below(300) + 1)
        .map(|_| rng.next_u64() as u8)
        .collect();
    rtp::packet::Packet {
        header,
        payload: Bytes::from(payload),
    }
}

#[test]
fn parser_agrees_with_rtp_crate_on_generated_packets() {
    let mut rng = TestRng::new(0x1234_5678_9abc_def1);
    for i in 0..5_000 {
        let reference = generate(&mut rng);
        let raw = reference.marshal().expect("marshal");
        let theirs = rtp::packet::Packet::unmarshal(&mut raw.clone())
            .expect("rtp crate parses its own output");
        let ours = RtpPacket::parse(raw.clone()).unwrap_or_else(|e| panic!("packet {i}: {e}"));
        let h = &theirs.header;
        assert_eq!(ours.marker(), h.marker, "packet {i}");
        assert_eq!(ours.pt().0, h.payload_type);
        assert_eq!(ours.seq(), h.sequence_number);
        assert_eq!(ours.timestamp(), h.timestamp);
        assert_eq!(ours.ssrc().0, h.ssrc);
        assert_eq!(ours.csrcs().map(|s| s.0).collect::<Vec<_>>(), h.csrc);
        assert_eq!(
            ours.extension_profile(),
            h.extension.then_some(h.extension_profile)
        );
        let their_ext: Vec<(u8, Vec<u8>)> = h
            .extensions
            .iter()
            .map(|e| (e.id, e.payload.to_vec()))
            .collect();
        let our_ext: Vec<(u8, Vec<u8>)> =
            ours.extensions().map(|(id, d)| (id, d.to_vec())).collect();
        assert_eq!(our_ext, their_ext, "packet {i}");
        assert_eq!(ours.payload(), &theirs.payload, "packet {i}");
        // Zero-copy: the payload is a window into the datagram.
        let start = raw.as_ptr() as usize;
        let p = ours.payload().as_ptr() as usize;
        assert!(p >= start && p + ours.payload().len() <= start + raw.len());
    }
}

#[test]
fn parser_never_accepts_what_rtp_crate_rejects_for_truncation() {
    let mut rng = TestRng::new(42);
    for _ in 0..2_000 {
        let raw = generate(&mut rng).marshal().expect("marshal");
        let cut = rng.below(raw.len() as u64) as usize;
        let truncated = raw.slice(..cut);
        let ours = RtpPacket::parse(truncated.clone());
        let theirs = rtp::packet::Packet::unmarshal(&mut truncated.clone());
        if theirs.is_err() && cut < 12 {
            assert!(ours.is_err());
        }
        if let Ok(p) = ours {
            // Whatever we accept must be internally consistent.
            assert!(p.payload().len() <= truncated.len());
        }
    }
}
