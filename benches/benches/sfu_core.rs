//! Criterion benchmarks of sfu-core's hot paths. Group names follow `area/parameter` so reports
//! read as `worker/fanout/subscribers_100` and throughput is in packets (elements) per second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mooyaho_benches::{audio_fanout_worker, audio_packet, fanout_worker, video_packet};
use sfu_core::rtp::{Rewriter, RtpHeader, RtpPacket};
use sfu_core::stream::RetransmitBuffer;
use sfu_core::time::{extend_u16, extend_u32};
use sfu_core::{ClockRate, Pt, SeqNo, Ssrc, TransportId, Worker};

fn rtp(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Elements(1));
    let packet = video_packet(1, 1, 1100, false);
    group.bench_function("parse", |b| {
        b.iter(|| RtpPacket::parse(black_box(packet.clone())).expect("valid"))
    });

    // Rewriter + header write into a scratch buffer: the per-subscriber work of the media layer
    // before encryption (the payload copy is included: it is the one copy SRTP needs anyway).
    let parsed = RtpPacket::parse(packet.clone()).expect("valid");
    let mut rewriter = Rewriter::new(ClockRate(90_000));
    let now = Instant::now();
    let mut scratch = [0u8; 1500];
    let mut seq = extend_u16(None, 1);
    let ts = extend_u32(None, 1);
    group.bench_function("rewrite", |b| {
        b.iter(|| {
            seq.0 += 1;
            let out = rewriter.rewrite(now, seq, ts).expect("in epoch");
            let header = RtpHeader {
                ssrc: Ssrc(7),
                pt: Pt(96),
                seq: out.seq,
                timestamp: out.timestamp,
                marker: parsed.marker(),
                extensions: sfu_core::rtp::OutExtensions::EMPTY,
                rtx_osn: None,
            };
            header
                .write(parsed.payload(), black_box(&mut scratch))
                .expect("fits")
        })
    });
    group.finish();
}

/// Packets with consecutive sequence numbers, built outside the measured region.
/// Routing only: one packet through `handle_rtp`, then every transmit drained (null crypto, no
/// serialisation); returns the copies.
fn route_and_drain(
    worker: &mut Worker,
    now: Instant,
    publisher: TransportId,
    packet: Bytes,
) -> usize {
    worker.handle_rtp(now, publisher, packet);
    let mut n = 0;
    while let Some(t) = worker.poll_transmit() {
        n += 1;
        black_box(t);
    }
    n
}

fn packet_source() -> impl FnMut() -> Bytes {
    let mut seq = 0u16;
    let mut ts = 0u32;
    move || {
        seq = seq.wrapping_add(1);
        if seq.is_multiple_of(3) {
            ts = ts.wrapping_add(3000);
        }
        // One keyframe first so every subscription is past its keyframe wait.
        video_packet(seq, ts, 1100, seq == 1)
    }
}

fn worker(c: &mut Criterion) {
    let mut group = c.benchmark_group("worker");
    for subscribers in [1usize, 10, 100, 1000] {
        let now = Instant::now();
        let (mut worker, publisher) = fanout_worker(now, subscribers);
        let mut next = packet_source();
        worker.handle_rtp(now, publisher, next());
        while worker.poll_transmit().is_some() {}
        group.throughput(Throughput::Elements(subscribers as u64));
        // Routing only: handle_rtp + draining the transmits (null crypto, no serialisation).
        group.bench_function(format!("fanout/subscribers_{subscribers}"), |b| {
            b.iter_batched(
                &mut next,
                |packet| route_and_drain(&mut worker, now, publisher, packet),
                BatchSize::SmallInput,
            )
        });
        // Routing plus writing every transmit into a scratch buffer (what precedes SRTP).
        let mut scratch = [0u8; 1500];
        group.bench_function(format!("fanout_write/subscribers_{subscribers}"), |b| {
            b.iter_batched(
                &mut next,
                |packet| {
                    worker.handle_rtp(now, publisher, packet);
                    while let Some(t) = worker.poll_transmit() {
                        black_box(t.packet.write(&mut scratch).expect("fits"));
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    // Audio of a large meeting: one Opus packet (with its audio level) to 500 subscribers.
    let subscribers = 500;
    let now = Instant::now();
    let (mut worker, publisher) = audio_fanout_worker(now, subscribers);
    let mut seq = 0u16;
    let mut next = move || {
        seq = seq.wrapping_add(1);
        audio_packet(
            seq,
            u32::from(seq) * 960,
            if seq % 50 < 25 { 20 } else { 90 },
        )
    };
    group.throughput(Throughput::Elements(subscribers as u64));
    group.bench_function(format!("audio_fanout/subscribers_{subscribers}"), |b| {
        b.iter_batched(
            &mut next,
            |packet| route_and_drain(&mut worker, now, publisher, packet),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn retransmit_buffer(c: &mut Criterion) {
    let mut group = c.benchmark_group("retransmit_buffer");
    group.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let mut buffer = RetransmitBuffer::new(512, Duration::from_secs(1));
    for seq in 0..512u16 {
        let packet = RtpPacket::parse(video_packet(seq, 0, 1100, false)).expect("valid");
        buffer.insert(now, SeqNo(u64::from(seq) + 65_536), &packet);
    }
    let mut i = 0u64;
    group.bench_function("lookup", |b| {
        b.iter(|| {
            i = (i + 97) % 512;
            black_box(buffer.get(now, SeqNo(65_536 + i)).is_some())
        })
    });
    let packet = RtpPacket::parse(video_packet(1, 0, 1100, false)).expect("valid");
    let mut seq = 65_536 + 512;
    group.bench_function("insert", |b| {
        b.iter(|| {
            seq += 1;
            buffer.insert(now, SeqNo(seq), black_box(&packet))
        })
    });
    group.finish();
}

criterion_group!(benches, rtp, worker, retransmit_buffer);
criterion_main!(benches);
