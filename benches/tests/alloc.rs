//! Guards DESIGN.md §4's "no heap allocation per packet on the hot path": after warm-up,
//! forwarding one packet to N subscribers performs zero allocations inside the worker (the
//! outbox `VecDeque` keeps its capacity; payloads are shared `Bytes`).

use std::time::{Duration, Instant};

use mooyaho_benches::counting_alloc::{CountingAllocator, allocations};
use mooyaho_benches::{fanout_worker, video_packet};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn forwarding_allocates_nothing_per_packet_after_warm_up() {
    for subscribers in [1, 10, 100, 1000] {
        let start = Instant::now();
        let (mut worker, publisher) = fanout_worker(start, subscribers);
        let mut scratch = [0u8; 1500];
        let mut counted = 0;
        let mut forwarded = 0;
        for seq in 1..3_000u16 {
            // 100 packets/s of virtual time, so the timer (RR, REMB, TWCC) runs too.
            let now = start + Duration::from_millis(u64::from(seq) * 10);
            let packet = video_packet(seq, u32::from(seq / 3) * 3000, 1100, seq == 1);
            let before = allocations();
            worker.handle_rtp(now, publisher, packet);
            while let Some(t) = worker.poll_transmit() {
                t.packet.write(&mut scratch).expect("fits");
                forwarded += 1;
            }
            let after = allocations();
            if seq > 1_000 {
                counted += after - before;
            }
            // Periodic RTCP (outside the per-packet path) may allocate; not counted.
            worker.handle_timeout(now);
            while worker.poll_transmit().is_some() {}
            while worker.poll_event().is_some() {}
        }
        assert_eq!(
            counted, 0,
            "{subscribers} subscribers: {counted} allocations in 2000 forwarded packets"
        );
        assert_eq!(forwarded, 2999 * subscribers as u64);
    }
}
