//! One simulated PeerConnection: a UDP socket, ICE (controlling, toward the ICE-lite SFU), a DTLS
//! client and SRTP — built from the same pieces as the SFU, so the load is real crypto and real
//! syscalls, without a full WebRTC stack per participant.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mooyaho_media::connection::PacketClass;
use mooyaho_media::connection::dtls::{DtlsIdentity, DtlsOutcome, DtlsRole, DtlsTransport};
use mooyaho_media::connection::srtp::SrtpSession;
use stun::attributes::{ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USE_CANDIDATE, ATTR_USERNAME};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{BINDING_REQUEST, Message, Setter};
use tokio::net::UdpSocket;

use crate::sdp::Remote;

/// A connected transport.
pub(crate) struct Connected {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) remote: SocketAddr,
    pub(crate) srtp: SrtpSession,
    pub(crate) check: Vec<u8>,
}

/// ICE credentials of a simulated client.
pub(crate) struct LocalIce {
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
}

impl LocalIce {
    pub(crate) fn random() -> Self {
        let creds = mooyaho_media::sdp::random_ice_credentials();
        Self {
            ufrag: creds.ufrag,
            pwd: creds.pwd,
        }
    }
}

/// A connectivity check toward the SFU (we are the controlling agent and nominate at once).
pub(crate) fn binding_request(local: &LocalIce, remote: &Remote) -> Vec<u8> {
    let mut m = Message::new();
    m.typ = BINDING_REQUEST;
    m.new_transaction_id().expect("random transaction id");
    m.write_header();
    m.add(
        ATTR_USERNAME,
        format!("{}:{}", remote.ufrag, local.ufrag).as_bytes(),
    );
    m.add(ATTR_PRIORITY, &2_130_706_431u32.to_be_bytes());
    m.add(ATTR_ICE_CONTROLLING, &rand::random::<u64>().to_be_bytes());
    m.add(ATTR_USE_CANDIDATE, &[]);
    MessageIntegrity::new_short_term_integrity(remote.pwd.clone())
        .add_to(&mut m)
        .expect("integrity on a fresh message");
    FINGERPRINT
        .add_to(&mut m)
        .expect("fingerprint on a fresh message");
    m.raw
}

/// Runs ICE and the DTLS handshake (we are the DTLS client: the SFU answered or offered so that
/// it serves) until SRTP is ready.
pub(crate) async fn connect(
    identity: &DtlsIdentity,
    local: &LocalIce,
    remote: &Remote,
) -> anyhow::Result<Connected> {
    let target = remote.candidate.context("SFU SDP has no candidate")?;
    let socket = Arc::new(UdpSocket::bind(SocketAddr::new(target.ip(), 0)).await?);
    let mut dtls = DtlsTransport::new(identity, &remote.fingerprint, DtlsRole::Client)
        .map_err(|e| anyhow::anyhow!(e.0))?;
    let check = binding_request(local, remote);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut started = false;
    let mut buf = vec![0u8; 2048];
    let mut next_check = Instant::now();
    while Instant::now() < deadline {
        let now = Instant::now();
        if now >= next_check && !dtls.is_connected() {
            socket.send_to(&check, target).await?;
            next_check = now + Duration::from_millis(100);
        }
        if dtls.poll_timeout().is_some_and(|t| t <= now) {
            let _ = dtls.handle_timeout(now);
        }
        while let Some((to, datagram)) = dtls.poll_transmit() {
            socket.send_to(&datagram, to).await?;
        }
        let wait = tokio::time::timeout(Duration::from_millis(20), socket.recv_from(&mut buf));
        let Ok(Ok((n, from))) = wait.await else {
            continue;
        };
        if from != target {
            continue;
        }
        match PacketClass::of(&buf[..n]) {
            PacketClass::Stun if !started => {
                // The SFU answered our check: the path is valid, start DTLS.
                dtls.start(Instant::now(), target)
                    .map_err(|e| anyhow::anyhow!(e.0))?;
                started = true;
            }
            PacketClass::Dtls => {
                if let Ok(DtlsOutcome::Connected(srtp)) =
                    dtls.handle(Instant::now(), from, &buf[..n])
                {
                    while let Some((to, datagram)) = dtls.poll_transmit() {
                        socket.send_to(&datagram, to).await?;
                    }
                    return Ok(Connected {
                        socket,
                        remote: target,
                        srtp: *srtp,
                        check,
                    });
                }
            }
            _ => {}
        }
    }
    bail!("ICE/DTLS did not complete within 15 s")
}
