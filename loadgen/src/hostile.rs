//! `--hostile`: one participant in the honest load's channel that attacks the node for the whole
//! measurement window with real keys (a [`RawParticipant`]), while the report measures what the
//! honest participants still get. Per tick (`hostile_pps` ticks per second) it sends:
//!
//! - a **NACK storm** packet: SRTCP on its subscription, [`NACK_ENTRIES`] generic-NACK entries
//!   naming the last [`NACKED_SEQUENCES`] sequence numbers it received, each repeated;
//! - an **address churn** check: an authenticated binding request with USE-CANDIDATE for its
//!   subscription, from a fresh socket on `127.0.0.x` (x cycling over 2–254, a new port each
//!   time) that answers the node's consent checks for [`CHURN_SOCKET_LIFETIME`] — the worst case,
//!   a path that can prove consent — then closes;
//! - an **SSRC flood** packet: SRTP on its publish transport under one of [`FLOOD_SSRCS`] SSRCs it
//!   never declared, in turn.
//!
//! It also sends a check with USE-CANDIDATE from its real sockets every second, pulling its
//! paths back, and answers the node's checks there.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use mooyaho_net::PacketClass;
use serde::Serialize;
use tokio::net::UdpSocket;

use crate::raw::{self, RawParticipant, RawTransport, Track, TrackKind};
use crate::{LoadConfig, Totals};

/// Generic-NACK entries per storm packet.
pub(crate) const NACK_ENTRIES: usize = 128;
/// How many of the most recent sequence numbers the entries cycle over (each repeated
/// `NACK_ENTRIES / NACKED_SEQUENCES` times).
pub(crate) const NACKED_SEQUENCES: u16 = 32;
/// Distinct undeclared SSRCs the flood cycles through.
pub(crate) const FLOOD_SSRCS: u32 = 5000;
/// How long a churn socket stays open answering consent checks.
const CHURN_SOCKET_LIFETIME: Duration = Duration::from_secs(1);

/// What the hostile participant sent in the measurement window.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostileReport {
    /// Packets per second of each kind it aimed for (`--hostile-pps`).
    pub target_pps: u32,
    /// Why it could not join or attack, if so.
    pub error: Option<String>,
    /// Seconds it attacked.
    pub seconds: f64,
    /// SRTCP NACK packets sent.
    pub nack_packets: u64,
    /// NACK entries in them (repeats included).
    pub nack_entries: u64,
    /// NACK packets per second.
    pub nack_packets_per_second: f64,
    /// Authenticated binding requests with USE-CANDIDATE sent from fresh addresses.
    pub churn_checks: u64,
    /// Distinct source addresses (IP and port) they came from.
    pub churn_source_addresses: u64,
    /// Churn checks per second.
    pub churn_checks_per_second: f64,
    /// Node consent checks answered on churn sockets (the node checked a churned path).
    pub churn_consent_answered: u64,
    /// SRTP packets sent under undeclared SSRCs.
    pub flood_packets: u64,
    /// Distinct undeclared SSRCs among them.
    pub flood_ssrcs: u64,
    /// Flood packets per second.
    pub flood_packets_per_second: f64,
    /// RTP packets the hostile subscription received (on any of its sockets).
    pub media_received: u64,
}

impl HostileReport {
    /// One line for a terminal.
    pub fn summary(&self) -> String {
        match &self.error {
            Some(error) => format!("hostile participant failed: {error}"),
            None => format!(
                "hostile ({:.1} s): NACK {:.0} pkt/s ({} entries each), address churn {:.0} \
                 checks/s from {} addresses ({} consent checks answered), SSRC flood {:.0} \
                 pkt/s over {} SSRCs",
                self.seconds,
                self.nack_packets_per_second,
                NACK_ENTRIES,
                self.churn_checks_per_second,
                self.churn_source_addresses,
                self.churn_consent_answered,
                self.flood_packets_per_second,
                self.flood_ssrcs,
            ),
        }
    }
}

/// The hostile participant, joined and connected, before the window opens.
pub(crate) struct Hostile {
    participant: RawParticipant,
    publish: RawTransport,
    subscribe: RawTransport,
    declared_ssrc: u32,
    pps: u32,
}

/// Counters shared with the churn sockets' tasks.
#[derive(Default)]
struct Shared {
    /// `1 << 48 | ssrc << 16 | seq` of the latest RTP packet received on any subscription
    /// socket (0: none yet). Headers are not encrypted: no SRTP session is needed to read them.
    latest_rtp: AtomicU64,
    media_received: AtomicU64,
    consent_answered: AtomicU64,
}

impl Shared {
    fn saw_rtp(&self, datagram: &[u8]) {
        if datagram.len() >= 12 {
            let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
            let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
            self.latest_rtp.store(
                1 << 48 | u64::from(ssrc) << 16 | u64::from(seq),
                Ordering::Relaxed,
            );
            self.media_received.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn latest(&self) -> Option<(u32, u16)> {
        let v = self.latest_rtp.load(Ordering::Relaxed);
        (v != 0).then_some(((v >> 16) as u32, v as u16))
    }
}

impl Hostile {
    /// Joins the run's channel, publishes one video track and subscribes (the honest
    /// publishers are already there, so the node's offer comes at once).
    pub(crate) async fn join(config: &LoadConfig, channel: &str) -> anyhow::Result<Self> {
        let mut participant =
            RawParticipant::join(&config.url, &config.api_key, channel, "hostile").await?;
        let declared_ssrc = rand::random();
        let publish = participant
            .publish(&[Track {
                kind: TrackKind::Video,
                ssrc: declared_ssrc,
            }])
            .await
            .context("hostile publish")?;
        let subscribe = participant
            .subscribe(Duration::from_secs(20))
            .await
            .context("hostile subscribe")?;
        Ok(Self {
            participant,
            publish,
            subscribe,
            declared_ssrc,
            pps: config.hostile_pps.max(1),
        })
    }

    /// Attacks while the window is open, then leaves; returns what it sent.
    pub(crate) async fn attack(mut self, totals: Arc<Totals>) -> HostileReport {
        let started = Instant::now();
        let shared = Arc::new(Shared::default());
        let mut report = HostileReport {
            target_pps: self.pps,
            ..HostileReport::default()
        };
        let result = self.run(&totals, &shared, &mut report).await;
        report.seconds = started.elapsed().as_secs_f64();
        let per_second = |n: u64| n as f64 / report.seconds.max(1e-3);
        report.nack_packets_per_second = per_second(report.nack_packets);
        report.churn_checks_per_second = per_second(report.churn_checks);
        report.flood_packets_per_second = per_second(report.flood_packets);
        report.media_received = shared.media_received.load(Ordering::Relaxed);
        report.churn_consent_answered = shared.consent_answered.load(Ordering::Relaxed);
        if let Err(e) = result {
            report.error = Some(format!("{e:#}"));
        }
        self.participant.leave().await;
        report
    }

    async fn run(
        &mut self,
        totals: &Totals,
        shared: &Arc<Shared>,
        report: &mut HostileReport,
    ) -> anyhow::Result<()> {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(self.pps)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let offered_ssrc = self
            .subscribe
            .remote_media
            .iter()
            .find_map(|m| m.ssrc)
            .unwrap_or_default();
        let nack_sender: u32 = rand::random();
        let mut sources = HashSet::new();
        let mut next_host = 0u32;
        let mut flood_seq = 0u16;
        let mut next_keepalive = Instant::now();
        let mut buf = vec![0u8; 2048];
        while totals.measuring.load(Ordering::Relaxed) {
            ticker.tick().await;
            drain(&self.subscribe, shared, &mut buf).await?;
            drain(&self.publish, shared, &mut buf).await?;
            if Instant::now() >= next_keepalive {
                self.subscribe
                    .send(&self.subscribe.binding_request(true))
                    .await?;
                self.publish
                    .send(&self.publish.binding_request(true))
                    .await?;
                next_keepalive = Instant::now() + Duration::from_secs(1);
            }

            // NACK storm: the most recent sequence numbers, each asked for several times.
            let (media_ssrc, highest) = shared.latest().unwrap_or((offered_ssrc, 0));
            let entries: Vec<u16> = (0..NACK_ENTRIES)
                .map(|i| highest.wrapping_sub(i as u16 % NACKED_SEQUENCES))
                .collect();
            let nack = raw::nack(nack_sender, media_ssrc, &entries)?;
            self.subscribe.send_rtcp(&nack).await?;
            report.nack_packets += 1;
            report.nack_entries += entries.len() as u64;

            // Address churn: a fresh source address nominating itself for the subscription.
            let host = 2 + (next_host % 253) as u8;
            next_host += 1;
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0);
            let socket = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding a churn socket on {addr}"))?;
            sources.insert(socket.local_addr()?);
            socket
                .send_to(&self.subscribe.binding_request(true), self.subscribe.remote)
                .await?;
            report.churn_checks += 1;
            tokio::spawn(serve_churn_socket(
                socket,
                self.subscribe.local_ice.clone(),
                shared.clone(),
            ));

            // SSRC flood: SRTP under an SSRC never declared (skipping the declared one).
            let index = (report.flood_packets % u64::from(FLOOD_SSRCS)) as u32;
            let ssrc = self.declared_ssrc.wrapping_add(1 + index);
            let payload = raw::vp8_payload(false, &[0x5a; 200]);
            flood_seq = flood_seq.wrapping_add(1);
            let packet = raw::rtp(
                ssrc,
                flood_seq,
                u32::from(flood_seq) * 3000,
                96,
                true,
                &payload,
            )?;
            self.publish.send_rtp(&packet).await?;
            report.flood_packets += 1;
        }
        report.churn_source_addresses = sources.len() as u64;
        report.flood_ssrcs = report.flood_packets.min(u64::from(FLOOD_SSRCS));
        Ok(())
    }
}

/// Reads what waits on a transport's socket without blocking: answers the node's checks and
/// notes the latest RTP header.
async fn drain(transport: &RawTransport, shared: &Shared, buf: &mut [u8]) -> anyhow::Result<()> {
    loop {
        let (n, from) = match transport.socket.try_recv_from(buf) {
            Ok(received) => received,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match PacketClass::of(&buf[..n]) {
            PacketClass::Stun => {
                if let Some(response) = transport.answer_check(&buf[..n], from) {
                    transport.socket.send_to(&response, from).await?;
                }
            }
            PacketClass::Rtp => shared.saw_rtp(&buf[..n]),
            _ => {}
        }
    }
}

/// A churned path: answers the node's consent checks (as a real second device would) and
/// notes the media the node sent there, for [`CHURN_SOCKET_LIFETIME`].
async fn serve_churn_socket(
    socket: UdpSocket,
    local_ice: raw::IceCredentials,
    shared: Arc<Shared>,
) {
    let ice = crate::peer::LocalIce {
        ufrag: local_ice.ufrag,
        pwd: local_ice.pwd,
    };
    let until = Instant::now() + CHURN_SOCKET_LIFETIME;
    let mut buf = vec![0u8; 2048];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Ok(Ok((n, from))) = tokio::time::timeout(left, socket.recv_from(&mut buf)).await else {
            continue;
        };
        match PacketClass::of(&buf[..n]) {
            PacketClass::Stun => {
                if let Some(response) = crate::peer::answer_check(&buf[..n], from, &ice) {
                    let _ = socket.send_to(&response, from).await;
                    shared.consent_answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            PacketClass::Rtp => shared.saw_rtp(&buf[..n]),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_rtp_header_is_read_without_decryption() {
        let shared = Shared::default();
        assert_eq!(shared.latest(), None);
        shared.saw_rtp(&raw::rtp(0, 0, 0, 96, false, b"x").unwrap());
        assert_eq!(
            shared.latest(),
            Some((0, 0)),
            "SSRC 0, seq 0 is still a packet"
        );
        shared.saw_rtp(&raw::rtp(0xffff_ffff, 65_535, 1, 96, false, b"x").unwrap());
        assert_eq!(shared.latest(), Some((0xffff_ffff, 65_535)));
        shared.saw_rtp(&[0x80; 11]);
        assert_eq!(shared.media_received.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_summary_names_every_kind_or_the_failure() {
        let report = HostileReport {
            nack_packets_per_second: 200.0,
            churn_checks_per_second: 199.0,
            churn_source_addresses: 3980,
            flood_packets_per_second: 198.0,
            flood_ssrcs: 3960,
            ..HostileReport::default()
        };
        let line = report.summary();
        assert!(line.contains("NACK 200 pkt/s") && line.contains("3980 addresses"));
        assert!(line.contains("flood 198 pkt/s over 3960 SSRCs"), "{line}");
        let failed = HostileReport {
            error: Some("no subscribe offer".into()),
            ..report
        };
        assert!(failed.summary().contains("failed: no subscribe offer"));
    }
}
