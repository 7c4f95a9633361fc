//! Criterion benchmarks of the media node's per-packet security work: SRTP/SRTCP protect and
//! unprotect (ours, `mooyaho_net::srtp_fast`, against the reference `rtc-srtp`
//! 0.21 with its ring provider, same keys and packets), the ICE-lite STUN check, and the relay
//! link between nodes (`mooyaho_net::relay_frame`: seal and open, beside SRTP-GCM from the same
//! run). Throughput is in packets (elements) per second.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the
//! shared build machine often runs at a load average several times its core count, and
//! wall-clock samples then measure the scheduler. CPU time still includes cache and
//! sibling-thread interference, so compare ours and the reference from the same run.

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mooyaho_net::relay_frame::{self, FrameKind, LinkDirection, Opener, RelayKey, Sealer};
use mooyaho_net::srtp_fast::{SrtpContext, SrtpProfile};
use mooyaho_net::stun::{BindingRequest, Check, HOST_PRIORITY, IceRole, new_transaction_id};
use rtc_srtp::context::Context;
use rtc_srtp::protection_profile::ProtectionProfile;

const PROFILES: [(&str, SrtpProfile, ProtectionProfile); 2] = [
    (
        "cm",
        SrtpProfile::AesCm128HmacSha1_80,
        ProtectionProfile::Aes128CmHmacSha1_80,
    ),
    (
        "gcm",
        SrtpProfile::AeadAes128Gcm,
        ProtectionProfile::AeadAes128Gcm,
    ),
];
/// RTP packet sizes (header included): an Opus frame and a full video packet.
const SIZES: [usize; 2] = [160, 1200];
const KEY: [u8; 16] = [0x42; 16];
const SALT: [u8; 14] = [0x17; 14];

fn ours(profile: SrtpProfile) -> SrtpContext {
    SrtpContext::new(profile, &KEY, &SALT[..profile.salt_len()]).expect("valid keys")
}

fn reference(profile: ProtectionProfile, replay: bool) -> Context {
    let provider = rtc_crypto::default_provider().expect("ring provider");
    let (rtp, rtcp) = if replay {
        (
            Some(rtc_srtp::option::srtp_replay_protection(1024)),
            Some(rtc_srtp::option::srtcp_replay_protection(128)),
        )
    } else {
        (None, None)
    };
    Context::new(
        &KEY,
        &SALT[..profile.salt_len()],
        profile,
        rtp,
        rtcp,
        provider.crypto(),
    )
    .expect("valid keys")
}

/// A video-like RTP packet of `size` bytes with a two-word header extension.
fn rtp_packet(size: usize) -> Vec<u8> {
    let mut p = vec![0x90, 96, 0, 1, 0, 0, 0x10, 0, 0, 0, 0x30, 0x39];
    p.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x12, 1, 2, 3, 0x31, 4, 5, 0]);
    let header = p.len();
    p.extend((header..size).map(|i| i as u8));
    p
}

/// Protected packets of `size` bytes with consecutive sequence numbers.
fn sender(profile: SrtpProfile, size: usize) -> impl FnMut() -> Vec<u8> {
    let mut context = ours(profile);
    let mut plain = rtp_packet(size);
    let mut seq = 0u16;
    move || {
        seq = seq.wrapping_add(1);
        set_seq(&mut plain, seq);
        let mut buf = plain.clone();
        buf.resize(size + profile.rtp_overhead(), 0);
        context.protect_rtp(&mut buf, size).expect("protect");
        buf
    }
}

fn set_seq(packet: &mut [u8], seq: u16) {
    packet[2..4].copy_from_slice(&seq.to_be_bytes());
}

fn srtp_protect(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("srtp/protect");
    group.throughput(Throughput::Elements(1));
    for (name, ours_profile, reference_profile) in PROFILES {
        for size in SIZES {
            let id = format!("{name}_{size}");
            let plain = rtp_packet(size);
            // Ours: the worker writes the packet into its send slot, then protects in place;
            // the write is modelled by the copy.
            let mut context = ours(ours_profile);
            let mut slot = vec![0u8; size + ours_profile.rtp_overhead()];
            let mut seq = 0u16;
            group.bench_function(BenchmarkId::new("ours", &id), |b| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    slot[..size].copy_from_slice(&plain);
                    set_seq(&mut slot, seq);
                    black_box(context.protect_rtp(&mut slot, size).expect("protect"))
                })
            });
            let mut context = reference(reference_profile, false);
            let mut packet = plain.clone();
            group.bench_function(BenchmarkId::new("rtc-srtp", &id), |b| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    set_seq(&mut packet, seq);
                    black_box(context.encrypt_rtp(&packet).expect("protect"))
                })
            });
        }
    }
    group.finish();
}

/// The relay link's per-packet work on each node: the sending worker writes the forwarded packet
/// into its send slot after the frame header and seals it in place; the receiving worker opens
/// it in the receive buffer (authentication, replay window, decryption). Compare with
/// `srtp/protect/ours/gcm_*` and `srtp/unprotect/ours/gcm_*`, the same work toward a client.
fn relay_link(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Elements(1));
    let key = RelayKey::from_bytes(KEY);
    for size in SIZES {
        let plain = rtp_packet(size);
        let mut sealer = Sealer::new(7, &key, LinkDirection::Forward);
        let mut slot = vec![0u8; size + relay_frame::OVERHEAD];
        group.bench_function(BenchmarkId::new("seal", size), |b| {
            b.iter(|| {
                slot[relay_frame::PAYLOAD_OFFSET..][..size].copy_from_slice(&plain);
                black_box(sealer.seal(&mut slot, FrameKind::Rtp, size).expect("seal"))
            })
        });
        // Fresh datagrams (setup, not timed), in counter order as a link delivers them.
        let mut sender = Sealer::new(7, &key, LinkDirection::Forward);
        let mut fresh = || {
            let mut datagram = vec![0u8; size + relay_frame::OVERHEAD];
            datagram[relay_frame::PAYLOAD_OFFSET..][..size].copy_from_slice(&plain);
            let len = sender
                .seal(&mut datagram, FrameKind::Rtp, size)
                .expect("seal");
            datagram.truncate(len);
            datagram
        };
        let mut opener = Opener::new(7, &key, LinkDirection::Forward);
        group.bench_function(BenchmarkId::new("open", size), |b| {
            b.iter_batched(
                &mut fresh,
                |mut datagram| {
                    black_box(opener.open(&mut datagram).expect("open").1.len());
                    datagram
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn srtp_unprotect(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("srtp/unprotect");
    group.throughput(Throughput::Elements(1));
    for (name, ours_profile, reference_profile) in PROFILES {
        for size in SIZES {
            let id = format!("{name}_{size}");
            // Each iteration gets a fresh packet (setup, not timed): replay protection is on in
            // both implementations, as in the node. One sender per receiver, both starting at
            // ROC 0.
            let mut fresh = sender(ours_profile, size);
            let mut context = ours(ours_profile);
            group.bench_function(BenchmarkId::new("ours", &id), |b| {
                b.iter_batched(
                    &mut fresh,
                    |mut packet| {
                        let len = context.unprotect_rtp(&mut packet).expect("unprotect");
                        black_box(len);
                        packet
                    },
                    BatchSize::SmallInput,
                )
            });
            let mut context = reference(reference_profile, true);
            let mut fresh = sender(ours_profile, size);
            group.bench_function(BenchmarkId::new("rtc-srtp", &id), |b| {
                b.iter_batched(
                    &mut fresh,
                    |packet| {
                        // Its output buffer is allocated and freed per packet: part of its cost.
                        black_box(context.decrypt_rtp(&packet).expect("unprotect"));
                        packet
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

fn stun(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("stun");
    group.throughput(Throughput::Elements(1));
    let pwd = "a3f1b2c4d5e6f708192a3b4c";
    // A browser's nominating check.
    let datagram = Check {
        username: "sfuUfrag:browserUfrag",
        receiver_pwd: pwd,
        transaction: new_transaction_id(),
        priority: HOST_PRIORITY,
        role: IceRole::Controlling(7),
        use_candidate: true,
    }
    .to_bytes();
    group.bench_function("parse_verify", |b| {
        b.iter(|| {
            let mut request = BindingRequest::parse(black_box(&datagram)).expect("parse");
            request.authenticate(pwd).expect("authentic");
            request
        })
    });
    group.finish();
}

/// Nanoseconds of CPU time consumed by the calling thread.
struct ThreadCpuTime;

impl ThreadCpuTime {
    fn now() -> u64 {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        Self::now()
    }
    fn end(&self, start: u64) -> u64 {
        Self::now() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

/// Formats CPU nanoseconds like criterion's wall-time formatter (time, and elements/s).
struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else {
            (1e-6, "ms")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iteration = match *throughput {
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => n,
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Bits(n) => n,
        } as f64;
        values
            .iter_mut()
            .for_each(|v| *v = per_iteration * 1e9 / *v / 1e3);
        "K/s (CPU)"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = srtp_protect, srtp_unprotect, stun, relay_link
}
criterion_main!(benches);
