//! A UDP relay between one client and the node whose node → client direction is a
//! [`Bottleneck`] in real time: a subscriber behind a shaped downlink, for tests against real
//! processes.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mooyaho_test_support::bottleneck::Bottleneck;
use mooyaho_test_support::sfu_client::OfferFilter;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A UDP relay between one client and the node: client → node passes untouched, node → client
/// goes through a [`Bottleneck`] in real time.
pub struct Relay {
    /// Where the client is told the node is.
    pub client_side: SocketAddr,
    /// The node's address, learned from the first offer that names it.
    node: Arc<Mutex<Option<SocketAddr>>>,
    link: Arc<Mutex<Bottleneck>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Relay {
    pub async fn start(link: Bottleneck) -> Self {
        let client_socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let node_socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let client_side = client_socket.local_addr().unwrap();
        let node: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let link = Arc::new(Mutex::new(link));
        let (deliver_tx, mut deliver_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let upstream = {
            let (client_socket, node_socket) = (client_socket.clone(), node_socket.clone());
            let (node, client) = (node.clone(), client.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok((n, from)) = client_socket.recv_from(&mut buf).await {
                    *client.lock().unwrap() = Some(from);
                    let to = *node.lock().unwrap();
                    if let Some(to) = to {
                        let _ = node_socket.send_to(&buf[..n], to).await;
                    }
                }
            })
        };
        let shaping = {
            let link = link.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok(n) = node_socket.recv(&mut buf).await {
                    let arrival = link.lock().unwrap().send(Instant::now(), n);
                    if let Some(at) = arrival {
                        let _ = deliver_tx.send((at, buf[..n].to_vec()));
                    }
                }
            })
        };
        // The bottleneck hands out non-decreasing times: deliver in order.
        let downstream = tokio::spawn(async move {
            while let Some((at, datagram)) = deliver_rx.recv().await {
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                let to = *client.lock().unwrap();
                if let Some(to) = to {
                    let _ = client_socket.send_to(&datagram, to).await;
                }
            }
        });
        Self {
            client_side,
            node,
            link,
            tasks: vec![upstream, shaping, downstream],
        }
    }

    /// Rewrites an offer's UDP host candidates to the relay (remembering the node's address)
    /// and drops the others (TCP), so all the client's media crosses the relay.
    pub fn offer_filter(&self) -> OfferFilter {
        let (relay, node) = (self.client_side, self.node.clone());
        Arc::new(move |offer: &str| {
            let mut out = String::new();
            for line in offer.split("\r\n").filter(|l| !l.is_empty()) {
                if let Some(candidate) = line.strip_prefix("a=candidate:") {
                    let fields: Vec<&str> = candidate.split(' ').collect();
                    if fields.len() < 6 || !fields[2].eq_ignore_ascii_case("udp") {
                        continue;
                    }
                    if let Ok(addr) = format!("{}:{}", fields[4], fields[5]).parse() {
                        *node.lock().unwrap() = Some(addr);
                    }
                    let mut rewritten = fields.clone();
                    let (ip, port) = (relay.ip().to_string(), relay.port().to_string());
                    rewritten[4] = &ip;
                    rewritten[5] = &port;
                    out.push_str(&format!("a=candidate:{}\r\n", rewritten.join(" ")));
                    continue;
                }
                out.push_str(line);
                out.push_str("\r\n");
            }
            out
        })
    }

    /// Packets offered to and dropped by the bottleneck so far.
    pub fn counts(&self) -> (u64, u64) {
        let link = self.link.lock().unwrap();
        (link.offered, link.dropped)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}
