//! Guards DESIGN.md §4's "no heap allocation per packet" for SRTP: after the first packet of an
//! SSRC has created its state, protecting and unprotecting RTP and RTCP in place performs zero
//! allocations (both profiles), and queueing into the worker's send arena stops allocating once
//! it has grown. Run with:
//! `cargo test -p mooyaho-benches --release --test srtp_alloc`.

use mooyaho_benches::counting_alloc::{CountingAllocator, allocations};
use mooyaho_net::srtp_fast::{SrtpContext, SrtpProfile};
use mooyaho_net::udp::SendBatch;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// One test: the counter is per thread, and the checks share their warm-up state.
#[test]
fn srtp_and_send_queueing_allocate_nothing_per_packet() {
    srtp_in_place_allocates_nothing_per_packet();
    send_batch_queueing_stops_allocating_once_grown();
}

fn srtp_in_place_allocates_nothing_per_packet() {
    for profile in [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm] {
        let salt = &[3u8; 14][..profile.salt_len()];
        let mut out = SrtpContext::new(profile, &[1; 16], salt).unwrap();
        let mut inbound = SrtpContext::new(profile, &[1; 16], salt).unwrap();
        let mut rtp = [0u8; 1300];
        let mut rtcp = [0u8; 100];
        let mut round = |seq: u16| {
            rtp[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9]);
            rtp[2..4].copy_from_slice(&seq.to_be_bytes());
            let len = out.protect_rtp(&mut rtp, 1200).unwrap();
            assert_eq!(inbound.unprotect_rtp(&mut rtp[..len]).unwrap(), 1200);
            rtcp[..8].copy_from_slice(&[0x80, 201, 0, 1, 0, 0, 0, 9]);
            let len = out.protect_rtcp(&mut rtcp, 8).unwrap();
            assert_eq!(inbound.unprotect_rtcp(&mut rtcp[..len]).unwrap(), 8);
        };
        round(64_999); // creates the per-SSRC state
        round(65_000); // and its sent-index log (at the second packet)
        let before = allocations();
        for seq in 65_001..=u16::MAX {
            round(seq);
        }
        for seq in 0..1000 {
            round(seq); // across the rollover
        }
        assert_eq!(allocations() - before, 0, "{profile:?}");
    }
}

fn send_batch_queueing_stops_allocating_once_grown() {
    let socket = mooyaho_net::udp::Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let to = socket.local_addr().unwrap();
    let mut batch = SendBatch::default();
    let fill = |batch: &mut SendBatch| {
        for i in 0..64u8 {
            batch.push_with(to, 1520, |slot| {
                slot[..1200].fill(i);
                Some(1200)
            });
        }
    };
    fill(&mut batch);
    socket.send_batch(&mut batch);
    let (mut queueing, mut sending) = (0, 0);
    for _ in 0..10 {
        let before = allocations();
        fill(&mut batch);
        let filled = allocations();
        assert_eq!(socket.send_batch(&mut batch), (64, 0));
        queueing += filled - before;
        sending += allocations() - filled;
    }
    assert_eq!(queueing, 0, "queueing 640 datagrams");
    // The GSO run list is built per flush (one Vec per `send_batch`), never per datagram.
    assert!(sending <= 10, "{sending} allocations in 10 flushes");
}
