//! Attacks on a media worker itself, against real `mooyaho dev` processes.
//!
//! - Address churn: one transport validated from more than 8 source addresses evicts the oldest;
//!   after the transport leaves, a datagram from the evicted address used to find a stale entry
//!   in the worker's address table and panic the worker thread (every room on it lost). Now the
//!   packet is dropped and counted, and an honest room on the same worker keeps its media.
//! - A worker that dies anyway takes the node down (exit non-zero) instead of leaving it looking
//!   healthy with its rooms gone.
//! - ICE-TCP, the framing adapter in front of a worker: garbage framing, a first frame that is
//!   not STUN, floods of tiny frames and slot holders without credentials are dropped or closed
//!   and counted, while an ICE check over TCP is answered and an honest room on the same worker
//!   keeps its media.

#[path = "support/raw_peer.rs"]
mod raw_peer;
mod support;

use std::time::Duration;

use mooyaho_net::dtls::DtlsIdentity;
use mooyaho_net::stun::is_binding_success;
use mooyaho_test_support::peer::payloads;
use mooyaho_test_support::sfu_client::SfuClient;
use raw_peer::{RawPublisher, check, check_until_answered};
use support::{Rest, Server, eventually, healthy_node, security_drops};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const PACKETS: usize = 60;

/// Two `webrtc`-crate clients publishing to each other in a new SFU channel.
async fn honest_room(server: &Server, rest: &Rest) -> (SfuClient, SfuClient) {
    let channel = rest.create_channel(true).await;
    let mut a = SfuClient::join(&server.ws_url(), rest, &channel, "honest-a").await;
    let mut b = SfuClient::join(&server.ws_url(), rest, &channel, "honest-b").await;
    a.publish().await;
    b.publish().await;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    for (client, other) in [(&a, &b_id), (&b, &a_id)] {
        client.publish_connected().await;
        client.subscribed_to(&[other]).await;
    }
    (a, b)
}

/// Both honest clients receive every packet the other sends in round `round` (0, 1, …).
async fn assert_media_flows(a: &SfuClient, b: &SfuClient, round: usize) {
    let tag = 0x10 * (round as u8 + 1);
    let sent_a = payloads(tag, PACKETS);
    let sent_b = payloads(tag.wrapping_add(1), PACKETS);
    tokio::join!(
        a.send_media_from(
            round * PACKETS,
            &sent_a.0,
            &sent_a.1,
            Duration::from_millis(5)
        ),
        b.send_media_from(
            round * PACKETS,
            &sent_b.0,
            &sent_b.1,
            Duration::from_millis(5)
        ),
    );
    for (client, other, sent) in [(a, &b.id, &sent_b), (b, &a.id, &sent_a)] {
        // Every payload of this round arrives (earlier rounds' are in the same lists).
        let all_arrived = eventually(Duration::from_secs(15), || async {
            let received = client.received().await;
            received.get(other.as_str()).is_some_and(|got| {
                sent.0.iter().all(|p| got.audio.contains(p))
                    && sent.1.iter().all(|p| got.video.contains(p))
            })
        })
        .await;
        let counts: Vec<_> = client
            .received()
            .await
            .iter()
            .map(|(s, m)| (s.clone(), m.audio.len(), m.video.len()))
            .collect();
        assert!(
            all_arrived,
            "{}: payloads lost (round {round}): {counts:?}",
            client.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn address_churn_then_a_packet_from_an_evicted_address_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // One worker: the attacker's transport and the honest room share it.
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    let node = healthy_node(&rest).await;
    let (a, b) = honest_room(&server, &rest).await;
    assert_media_flows(&a, &b, 0).await;

    // The attacker validates its publish transport from 10 source addresses (the node keeps 8).
    let channel = rest.create_channel(true).await;
    let mut attacker = RawPublisher::join(&server.ws_url(), &rest, &channel, "churn").await;
    let mut sockets = Vec::new();
    for _ in 0..10 {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let answered = check_until_answered(
            &socket,
            &attacker.local,
            &attacker.node,
            true,
            Duration::from_secs(5),
        )
        .await;
        assert!(answered, "the node must answer an authenticated check");
        sockets.push(socket);
    }

    // It leaves: the transport goes (a check from its latest address is no longer answered).
    attacker
        .ws
        .send(serde_json::json!({ "type": "leave" }))
        .await;
    let latest = sockets.last().unwrap();
    let gone = eventually(Duration::from_secs(10), || async {
        let request = check(&attacker.local, &attacker.node.ice, true);
        latest
            .send_to(&request, attacker.node.candidate)
            .await
            .unwrap();
        let mut buf = [0u8; 1500];
        let reply =
            tokio::time::timeout(Duration::from_millis(300), latest.recv_from(&mut buf)).await;
        !matches!(reply, Ok(Ok((n, _))) if is_binding_success(&buf[..n]))
    })
    .await;
    assert!(gone, "the attacker's transport was not removed after leave");

    // From the evicted (first) address: RTP-, RTCP- and DTLS-shaped datagrams.
    let before = security_drops(&rest, node).await;
    let evicted = &sockets[0];
    let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];
    rtp.extend_from_slice(&[0xAB; 40]);
    let rtcp = [0x81, 201, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0];
    let dtls = [22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for datagram in [&rtp[..], &rtcp[..], &dtls[..]] {
        evicted
            .send_to(datagram, attacker.node.candidate)
            .await
            .unwrap();
    }
    let counted = eventually(Duration::from_secs(10), || async {
        security_drops(&rest, node).await >= before + 3
    })
    .await;
    assert!(
        counted,
        "the three datagrams were not counted as security drops ({before} before)"
    );

    // The node is up, healthy, and the honest room on the same worker still carries media.
    assert_eq!(healthy_node(&rest).await, node);
    assert_media_flows(&a, &b, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_panics_takes_the_dev_node_down_instead_of_looking_healthy() {
    let dir = tempfile::tempdir().unwrap();
    // Debug-build test hook: the worker panics when asked to create a room.
    let mut server = Server::dev_with_env(
        dir.path(),
        "1",
        &[("MOOYAHO_DEBUG_WORKER_PANIC", "create-room")],
    );
    let rest = server.rest();
    healthy_node(&rest).await;
    assert!(server.wait_exit(Duration::from_millis(500)).is_none());

    // The first publish in an SFU channel creates its room on the node: the worker dies.
    let channel = rest.create_channel(true).await;
    let url = server.ws_url();
    let join = tokio::spawn({
        let rest = rest.clone();
        async move {
            let mut ws = support::Ws::join(&url, &rest, &channel, "x").await;
            let local = raw_peer::Ice::random();
            let identity = DtlsIdentity::generate().unwrap();
            let offer = raw_peer::publish_offer(&local, &identity.fingerprint, 1);
            ws.send(serde_json::json!({ "type": "call", "isSFU": true, "sdp": offer }))
                .await;
            // The reply (if any) does not matter: the process is about to exit.
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        }
    });
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(Duration::from_secs(15));
        (status, server)
    })
    .await
    .unwrap();
    join.abort();
    let (status, _server) = status;
    let status = status.expect("the node kept running with a dead worker");
    assert!(
        !status.success(),
        "a dead worker must exit non-zero: {status}"
    );
}

/// One RFC 4571 frame.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Whether the node closes `stream` (FIN or reset) within `within`. (What it sent before does
/// not matter: after a check it may send its own consent check.)
async fn closed_by_node(stream: &mut TcpStream, within: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// A counter of this node in `/metrics` (with the API key).
async fn node_metric(rest: &Rest, node: u64, name: &str) -> f64 {
    let (status, body) = rest.call("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap_or_default().to_owned();
    let series = format!("mooyaho_sfu_{name}{{node=\"{node}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ice_tcp_garbage_and_floods_are_closed_and_counted_while_checks_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    // One worker: the TCP adapter feeds the worker the honest room is on.
    let server = Server::dev(dir.path(), &["--ice-tcp"]);
    let rest = server.rest();
    let node = healthy_node(&rest).await;
    let (a, b) = honest_room(&server, &rest).await;
    assert_media_flows(&a, &b, 0).await;

    // The node announces a passive TCP candidate; an authenticated check framed over TCP is
    // answered over the same connection (the same ICE path as UDP).
    let channel = rest.create_channel(true).await;
    let attacker = RawPublisher::join(&server.ws_url(), &rest, &channel, "tcp").await;
    let tcp = attacker
        .node
        .tcp_candidate
        .expect("a tcp candidate with --ice-tcp");
    let mut honest_tcp = TcpStream::connect(tcp).await.unwrap();
    honest_tcp
        .write_all(&framed(&check(&attacker.local, &attacker.node.ice, false)))
        .await
        .unwrap();
    let mut prefix = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), honest_tcp.read_exact(&mut prefix))
        .await
        .expect("an answer over TCP")
        .unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    honest_tcp.read_exact(&mut answer).await.unwrap();
    assert!(is_binding_success(&answer), "not a binding success");

    // Garbage: DTLS before any STUN, an empty frame, a frame over the limit.
    let binding = check(&attacker.local, &attacker.node.ice, false);
    let garbage: [(bool, Vec<u8>); 3] = [
        (false, framed(&[22u8; 60])),
        (true, vec![0, 0]),
        (false, 60000u16.to_be_bytes().to_vec()),
    ];
    for (stun_first, bytes) in &garbage {
        let mut stream = TcpStream::connect(tcp).await.unwrap();
        if *stun_first {
            stream.write_all(&framed(&binding)).await.unwrap();
            let mut answer = [0u8; 2];
            stream.read_exact(&mut answer).await.unwrap(); // its answer's length, then…
            let mut rest = vec![0u8; usize::from(u16::from_be_bytes(answer))];
            stream.read_exact(&mut rest).await.unwrap();
        }
        stream.write_all(bytes).await.unwrap();
        assert!(
            closed_by_node(&mut stream, Duration::from_secs(5)).await,
            "garbage {bytes:?} did not close the connection"
        );
    }

    // A validated connection floods tiny frames (each would be a datagram into the worker):
    // held to the connection's rate, the rest dropped and counted.
    let flood: Vec<u8> = (0..20_000).flat_map(|_| framed(&[0x80, 200])).collect();
    honest_tcp.write_all(&flood).await.unwrap();
    let held = eventually(Duration::from_secs(10), || async {
        node_metric(&rest, node, "ice_tcp_frames_dropped_total").await >= 15_000.0
    })
    .await;
    assert!(
        held,
        "frames dropped = {}",
        node_metric(&rest, node, "ice_tcp_frames_dropped_total").await
    );

    // Slot holders from one address: a fake STUN header each (no credentials), then nothing.
    // 64 slots per address (two taken: the honest connection, and the empty-frame one kept
    // through its port quarantine): the rest are refused at once; the admitted ones are closed
    // when no check of theirs is answered within 10 s.
    let mut fake = [0u8; 20];
    fake[1] = 1;
    fake[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    let mut holders = Vec::new();
    for _ in 0..80 {
        let mut stream = TcpStream::connect(tcp).await.unwrap();
        let _ = stream.write_all(&framed(&fake)).await;
        holders.push(stream);
    }
    // All at once: well inside the 10 s an admitted one may wait.
    let closed = futures_util::future::join_all(
        holders
            .iter_mut()
            .map(|stream| closed_by_node(stream, Duration::from_millis(500))),
    )
    .await;
    let refused = closed.iter().filter(|&&c| c).count();
    assert!((16..=20).contains(&refused), "{refused} of 80 refused");
    let all_closed = eventually(Duration::from_secs(20), || async {
        node_metric(&rest, node, "ice_tcp_dropped_total").await >= (3 + 80 - refused) as f64
    })
    .await;
    assert!(
        all_closed,
        "dropped = {}",
        node_metric(&rest, node, "ice_tcp_dropped_total").await
    );
    assert!(node_metric(&rest, node, "ice_tcp_refused_total").await >= refused as f64);

    // The node is up, healthy, and the honest room on the same worker still carries media.
    assert_eq!(healthy_node(&rest).await, node);
    assert_media_flows(&a, &b, 1).await;
}
