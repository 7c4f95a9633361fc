//! A UDP relay between one client and the SFU, so tests can lose or replay packets on a real
//! path. The client is pointed at the relay by rewriting the SFU's candidate in the SDP; the SFU
//! sees the relay's SFU-facing socket as the client's address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What the relay does to traffic.
#[derive(Clone, Copy, Debug)]
pub enum Policy {
    /// Forward everything.
    Pass,
    /// Drop one in `n` RTP packets toward the client (RTCP and STUN/DTLS always pass).
    DropRtpToClient { one_in: u64 },
    /// Send the `nth` RTP packet from the client to the SFU twice (a replay).
    ReplayRtpToSfu { nth: u64 },
    /// Drop one in `n` node-to-node relay datagrams from the "client" (the sending node) to the
    /// "SFU" (the receiving node), announcements and retransmissions included.
    DropRelayToSfu { one_in: u64 },
}

/// A running relay.
pub struct Relay {
    /// The address clients must use instead of the SFU's.
    pub addr: SocketAddr,
    /// RTP packets dropped.
    pub dropped: Arc<AtomicU64>,
    /// RTP packets replayed.
    pub replayed: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(128..=191))
        && datagram.get(1).is_some_and(|b| !(192..=223).contains(b))
}

impl Relay {
    pub async fn start(sfu: SocketAddr, policy: Policy) -> Self {
        let client_side = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sfu_side = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = client_side.local_addr().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let replayed = Arc::new(AtomicU64::new(0));
        let (d, r) = (dropped.clone(), replayed.clone());
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let (mut to_client_rtp, mut to_sfu_rtp) = (0u64, 0u64);
            let mut a = vec![0u8; 2048];
            let mut b = vec![0u8; 2048];
            loop {
                tokio::select! {
                    Ok((n, from)) = client_side.recv_from(&mut a) => {
                        client = Some(from);
                        let datagram = &a[..n];
                        if let Policy::DropRelayToSfu { one_in } = policy
                            && mooyaho_net::relay_frame::is_relay(datagram)
                        {
                            to_sfu_rtp += 1;
                            if to_sfu_rtp % one_in == one_in / 2 {
                                d.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                        let _ = sfu_side.send_to(datagram, sfu).await;
                        if is_rtp(datagram) {
                            to_sfu_rtp += 1;
                            if let Policy::ReplayRtpToSfu { nth } = policy && to_sfu_rtp == nth {
                                let _ = sfu_side.send_to(datagram, sfu).await;
                                r.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok((n, _)) = sfu_side.recv_from(&mut b) => {
                        let Some(client) = client else { continue };
                        let datagram = &b[..n];
                        if is_rtp(datagram) {
                            to_client_rtp += 1;
                            if let Policy::DropRtpToClient { one_in } = policy
                                && to_client_rtp % one_in == one_in / 2
                            {
                                d.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                        let _ = client_side.send_to(datagram, client).await;
                    }
                }
            }
        });
        Self {
            addr,
            dropped,
            replayed,
            task,
        }
    }

    /// Points an SDP's candidate at the relay instead of `sfu`.
    pub fn rewrite(&self, sdp: &str, sfu: SocketAddr) -> String {
        sdp.replace(
            &format!("{} {} typ host", sfu.ip(), sfu.port()),
            &format!("{} {} typ host", self.addr.ip(), self.addr.port()),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
