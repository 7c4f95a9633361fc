//! `--ceiling`: this machine's physical reference for a scenario, measured in the same run —
//! how many packets one core can SRTP-encrypt, how many it can push through batched `sendmmsg`
//! to loopback receivers, and how many it can do both for. No SFU can forward more than the
//! last figure per core with SRTP on both legs, so every report shows the SFU as a fraction of it.
//!
//! Costs are thread CPU time (`CLOCK_THREAD_CPUTIME_ID`), the same unit as the SFU's
//! out-packets per CPU-second. On loopback the kernel delivers each datagram to its receiver
//! in the sender's context, exactly as it does for the SFU's sends to our subscribers.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mooyaho_net::srtp_fast::{SrtpContext, SrtpProfile};
use mooyaho_net::udp::{SendBatch, Socket};
use serde::Serialize;

/// The measured reference.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ceiling {
    /// RTP packet size measured (before SRTP), bytes.
    pub packet_size: usize,
    /// Distinct receivers the sends rotate over.
    pub receivers: usize,
    /// SRTP (AES-128-GCM) protections per CPU-second.
    pub srtp_packets_per_cpu_second: f64,
    /// Datagrams sent per CPU-second through batched `sendmmsg` (no encryption).
    pub udp_packets_per_cpu_second: f64,
    /// Both, as an SFU does for each forwarded packet: encrypt in place into the send batch,
    /// then `sendmmsg`. The best possible out-packets per core.
    pub out_packets_per_cpu_second: f64,
}

/// Datagrams queued per `send_batch` flush (the SFU flushes after each receive batch).
const FLUSH: usize = 256;

/// Measures for about `3 × budget`: SRTP alone, UDP alone, then both.
pub fn measure(packet_size: usize, receivers: usize, budget: Duration) -> std::io::Result<Ceiling> {
    let packet_size = packet_size.clamp(32, 1400);
    let receivers = receivers.clamp(2, 512);
    let sinks = (0..receivers)
        .map(|_| Socket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        .collect::<std::io::Result<Vec<_>>>()?;
    let targets = sinks
        .iter()
        .map(Socket::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    let sender = Socket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let profile = SrtpProfile::AeadAes128Gcm;
    let mut srtp = SrtpContext::new(profile, &[7; 16], &[9; 12]).expect("valid key lengths");
    let room = packet_size + profile.rtp_overhead();
    let mut seq: u16 = 0;
    let mut write_rtp = |buf: &mut [u8]| {
        seq = seq.wrapping_add(1);
        rtp_packet(buf, seq, packet_size);
        packet_size
    };

    let mut buf = vec![0u8; room];
    let srtp_rate = rate(budget, |n| {
        for _ in 0..n {
            let len = write_rtp(&mut buf);
            srtp.protect_rtp(&mut buf, len).expect("room for the tag");
        }
    });
    let mut batch = SendBatch::default();
    let mut sinks_drained = 0usize;
    let datagram = vec![0x80u8; room];
    let mut next = 0usize;
    let udp_rate = rate(budget, |n| {
        for _ in 0..n {
            batch.push(targets[next % targets.len()], &datagram);
            next += 1;
            if batch.len() == FLUSH {
                sender.send_batch(&mut batch);
            }
        }
        sender.send_batch(&mut batch);
        sinks_drained += drain(&sinks);
    });
    let both_rate = rate(budget, |n| {
        for _ in 0..n {
            let to = targets[next % targets.len()];
            next += 1;
            batch.push_with(to, room, |slot| {
                let len = write_rtp(slot);
                srtp.protect_rtp(slot, len).ok()
            });
            if batch.len() == FLUSH {
                sender.send_batch(&mut batch);
            }
        }
        sender.send_batch(&mut batch);
        sinks_drained += drain(&sinks);
    });
    tracing::debug!(sinks_drained, "ceiling measured");
    Ok(Ceiling {
        packet_size,
        receivers,
        srtp_packets_per_cpu_second: srtp_rate,
        udp_packets_per_cpu_second: udp_rate,
        out_packets_per_cpu_second: both_rate,
    })
}

/// A plain RTP packet of `len` bytes (VP8-like payload type, no extensions).
fn rtp_packet(buf: &mut [u8], seq: u16, len: usize) {
    buf[0] = 0x80;
    buf[1] = 96;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&u32::from(seq).wrapping_mul(3000).to_be_bytes());
    buf[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    buf[12..len].fill(0x5a);
}

/// Empties the receivers' queues (off the clock of the sends: their cost is not the sender's).
fn drain(sinks: &[Socket]) -> usize {
    let mut batch = mooyaho_net::udp::RecvBatch::default();
    let mut drained = 0;
    for sink in sinks {
        while let Ok(n @ 1..) = sink.recv_batch(&mut batch) {
            drained += n;
        }
    }
    drained
}

/// Operations per CPU-second of `work(n)`, grown in rounds of 4096 operations until `budget`
/// of thread CPU time has been spent (work outside the rounds, like draining, included, so
/// the figure is conservative).
fn rate(budget: Duration, mut work: impl FnMut(usize)) -> f64 {
    const ROUND: usize = 4096;
    work(ROUND); // warm caches, grow the batch arena
    let start = thread_cpu();
    let mut done = 0usize;
    while thread_cpu() - start < budget.as_secs_f64() {
        work(ROUND);
        done += ROUND;
    }
    done as f64 / (thread_cpu() - start)
}

/// CPU time of the calling thread, seconds.
fn thread_cpu() -> f64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_positive_rates_with_both_below_each_part() {
        let ceiling = measure(1200, 8, Duration::from_millis(50)).unwrap();
        assert!(ceiling.srtp_packets_per_cpu_second > 0.0);
        assert!(ceiling.udp_packets_per_cpu_second > 0.0);
        assert!(ceiling.out_packets_per_cpu_second > 0.0);
        // Doing both cannot be cheaper than either alone (generous slack for a noisy machine).
        assert!(
            ceiling.out_packets_per_cpu_second < 1.5 * ceiling.srtp_packets_per_cpu_second,
            "{ceiling:?}"
        );
        assert_eq!((ceiling.packet_size, ceiling.receivers), (1200, 8));
    }
}
