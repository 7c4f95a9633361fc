//! A room spanning two real `mooyaho sfu` processes (issue 15, DESIGN §7.2), driven over the
//! control plane as signaling drives it: a `webrtc`-crate publisher on node A, a viewer on node
//! B, one relay link between them (`acceptRelay` to B, `openRelay` to A, keys generated here as
//! signaling generates them). Proves the viewer gets the publisher's payloads intact and in
//! order through the link, that NACKs cross it (5 % of the link's datagrams lost), and that
//! forged, replayed and unknown-link datagrams sent to B's relay port are dropped and counted
//! while the honest viewer is unharmed.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mooyaho_control::{Load, RelayKeyHex, Request, Response};
use mooyaho_net::relay_frame::{self, FrameKind, LinkDirection, RelayKey, Sealer};
use mooyaho_test_support::peer::{LocalMedia, Peer, payloads};
use support::SfuNode;
use support::control::{control_call, control_session};
use tokio::net::UdpSocket;

const SECRET: &str = "cluster-secret-cascade-0123456789abcdef";

/// Two nodes, a room on each, a publisher on A, and the keys of one link A → B.
struct Cascade {
    _nodes: (SfuNode, SfuNode),
    a: quinn::Connection,
    b: quinn::Connection,
    room_a: String,
    room_b: String,
    link: u64,
    forward: RelayKey,
    back: RelayKey,
    publisher: (Peer, LocalMedia),
}

async fn room(control: &quinn::Connection) -> String {
    match control_call(control, &Request::CreateRoom).await {
        Response::Room { room } => room,
        other => panic!("{other:?}"),
    }
}

async fn cascade() -> Cascade {
    let nodes = (SfuNode::start(SECRET, None), SfuNode::start(SECRET, None));
    let a = control_session(nodes.0.control, SECRET).await;
    let b = control_session(nodes.1.control, SECRET).await;
    let (room_a, room_b) = (room(&a).await, room(&b).await);
    let peer = Peer::new().await.unwrap();
    let (media, offer) = LocalMedia::offer(&peer).await.unwrap();
    let publish = Request::Publish {
        room: room_a.clone(),
        session: "publisher".into(),
        offer,
    };
    let Response::Sdp { sdp: Some(answer) } = control_call(&a, &publish).await else {
        panic!("publish refused");
    };
    peer.apply_answer(answer).await.unwrap();
    peer.wait_connected("publisher").await.unwrap();
    Cascade {
        _nodes: nodes,
        a,
        b,
        room_a,
        room_b,
        link: rand::random(),
        forward: RelayKey::generate(),
        back: RelayKey::generate(),
        publisher: (peer, media),
    }
}

impl Cascade {
    /// Opens the link; A sends to `via` (a proxy) instead of B's address when given. Returns
    /// B's relay address.
    async fn open(&self, via: Option<&LossyProxy>) -> SocketAddr {
        let accept = Request::AcceptRelay {
            room: self.room_b.clone(),
            link: self.link,
            publisher: "publisher".into(),
            send_key: RelayKeyHex::new(self.back.to_hex()),
            receive_key: RelayKeyHex::new(self.forward.to_hex()),
        };
        let Response::RelayAddress { address } = control_call(&self.b, &accept).await else {
            panic!("acceptRelay refused");
        };
        let b_addr: SocketAddr = address.parse().unwrap();
        let to = match via {
            Some(proxy) => {
                proxy.forward_to(b_addr);
                proxy.addr
            }
            None => b_addr,
        };
        let open = Request::OpenRelay {
            room: self.room_a.clone(),
            link: self.link,
            publisher: "publisher".into(),
            address: to.to_string(),
            send_key: RelayKeyHex::new(self.forward.to_hex()),
            receive_key: RelayKeyHex::new(self.back.to_hex()),
        };
        assert_eq!(control_call(&self.a, &open).await, Response::Done);
        b_addr
    }

    /// A viewer on B, once the relayed tracks are there to offer.
    async fn viewer(&self) -> Peer {
        let offer = Request::SubscribeOffer {
            room: self.room_b.clone(),
            session: "viewer".into(),
        };
        let sdp = eventually("relayed tracks offered on B", || async {
            match control_call(&self.b, &offer).await {
                Response::Sdp { sdp: Some(sdp) } if sdp.matches("m=").count() == 2 => Some(sdp),
                _ => None,
            }
        })
        .await;
        let peer = Peer::new().await.unwrap();
        let answer = peer.answer(sdp).await.unwrap();
        let apply = Request::SubscribeAnswer {
            room: self.room_b.clone(),
            session: "viewer".into(),
            answer,
        };
        assert_eq!(control_call(&self.b, &apply).await, Response::Done);
        peer.wait_connected("viewer").await.unwrap();
        peer
    }

    async fn load(control: &quinn::Connection) -> Load {
        match control_call(control, &Request::Stats).await {
            Response::Stats(load) => load,
            other => panic!("{other:?}"),
        }
    }
}

async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every payload of the viewer's audio and video tracks so far.
async fn received(viewer: &Peer) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let streams = viewer.received().await;
    let media = streams.get("publisher").cloned().unwrap_or_default();
    (media.audio, media.video)
}

/// A UDP forwarder in front of node B's relay port that loses one in `one_in` relay datagrams
/// from A (media, announcements and resends alike) and passes B's feedback back.
struct LossyProxy {
    addr: SocketAddr,
    target: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    async fn start(one_in: u64) -> Self {
        let a_side = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b_side = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = a_side.local_addr().unwrap();
        let target = Arc::new(std::sync::Mutex::new(None));
        let dropped = Arc::new(AtomicU64::new(0));
        let (t, d) = (target.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            let (mut from_a, mut n) = (None, 0u64);
            let (mut x, mut y) = (vec![0u8; 2048], vec![0u8; 2048]);
            loop {
                tokio::select! {
                    Ok((len, from)) = a_side.recv_from(&mut x) => {
                        from_a = Some(from);
                        n += 1;
                        if n % one_in == one_in / 2 {
                            d.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let to = *t.lock().unwrap();
                        if let Some(to) = to {
                            let _ = b_side.send_to(&x[..len], to).await;
                        }
                    }
                    Ok((len, _)) = b_side.recv_from(&mut y) => {
                        if let Some(a) = from_a {
                            let _ = a_side.send_to(&y[..len], a).await;
                        }
                    }
                }
            }
        });
        Self {
            addr,
            target,
            dropped,
            task,
        }
    }

    fn forward_to(&self, b: SocketAddr) {
        *self.target.lock().unwrap() = Some(b);
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_another_node_gets_the_payloads_intact_and_nacks_cross_a_lossy_link() {
    let cascade = cascade().await;
    let proxy = LossyProxy::start(20).await;
    cascade.open(Some(&proxy)).await;
    let viewer = cascade.viewer().await;

    // 300 payloads checked, then a tail (a loss among the very last packets is never NACKed).
    const CHECKED: usize = 300;
    let (audio, video) = payloads(9, CHECKED + 20);
    cascade
        .publisher
        .1
        .send_from(0, &audio, &video, Duration::from_millis(4))
        .await
        .unwrap();
    let got = eventually(
        "every checked video payload through the lossy link",
        || async {
            let (_, got) = received(&viewer).await;
            video[..CHECKED]
                .iter()
                .all(|p| got.contains(p))
                .then_some(got)
        },
    )
    .await;
    assert!(got.iter().all(|p| video.contains(p)), "only what was sent");
    let dropped = proxy.dropped.load(Ordering::Relaxed);
    assert!(dropped >= 15, "the proxy dropped only {dropped}");
    let (a, b) = (
        Cascade::load(&cascade.a).await,
        Cascade::load(&cascade.b).await,
    );
    assert!(b.media.nacks_sent > 0, "B NACKed the link: {:?}", b.media);
    assert!(a.media.retransmits_sent > 0, "A resent: {:?}", a.media);
    assert!(a.media.keyframe_requests_received > 0, "B's PLI reached A");
    assert_eq!((a.relay_links_out, b.relay_links_in), (1, 1));
    assert!(b.media.node_relay_packets_in >= 2 * CHECKED as u64);
    assert!(a.media.node_relay_packets_in > 0, "feedback reached A");
    assert_eq!(b.media.node_relay_rejected, 0);

    // Torn down: B's viewer loses the relayed tracks; neither node keeps the link.
    for (control, room) in [(&cascade.b, &cascade.room_b), (&cascade.a, &cascade.room_a)] {
        let close = Request::CloseRelay {
            room: room.clone(),
            link: cascade.link,
        };
        assert_eq!(control_call(control, &close).await, Response::Done);
    }
    let b = eventually("relayed tracks gone from B", || async {
        let load = Cascade::load(&cascade.b).await;
        (load.tracks == 0).then_some(load)
    })
    .await;
    assert_eq!(b.relay_links_in, 0);
    assert_eq!(Cascade::load(&cascade.a).await.relay_links_out, 0);
}

/// What an attacker on the network can send to B's relay port: datagrams naming an unknown
/// link, the right link id sealed with another key, a replay of a counter A already used (what
/// capturing an honest datagram gives), and garbage carrying the relay's first byte. All are
/// dropped and counted; the honest viewer still gets every payload, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_unknown_relay_datagrams_are_dropped_and_counted_by_a_real_node() {
    let cascade = cascade().await;
    let b_addr = cascade.open(None).await;
    let viewer = cascade.viewer().await;

    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sealed = |sealer: &mut Sealer, payload: &[u8]| {
        let mut buf = vec![0u8; payload.len() + relay_frame::OVERHEAD];
        buf[relay_frame::PAYLOAD_OFFSET..][..payload.len()].copy_from_slice(payload);
        let len = sealer
            .seal(&mut buf, FrameKind::Rtp, payload.len())
            .unwrap();
        buf.truncate(len);
        buf
    };
    let rtp = [
        0x80u8, 0x60, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
    ];
    let mut unknown = Sealer::new(
        cascade.link ^ 1,
        &RelayKey::generate(),
        LinkDirection::Forward,
    );
    let mut forger = Sealer::new(cascade.link, &RelayKey::generate(), LinkDirection::Forward);
    let mut replayer = Sealer::new(cascade.link, &cascade.forward, LinkDirection::Forward); // counters from 0: used
    for _ in 0..10 {
        for datagram in [
            sealed(&mut unknown, &rtp),
            sealed(&mut forger, &rtp),
            sealed(&mut replayer, &rtp),
            vec![relay_frame::MAGIC, 1, 2, 3],
        ] {
            attacker.send_to(&datagram, b_addr).await.unwrap();
        }
    }
    let b = eventually("40 hostile datagrams counted", || async {
        let load = Cascade::load(&cascade.b).await;
        (load.media.node_relay_rejected >= 40).then_some(load)
    })
    .await;
    assert_eq!(b.media.node_relay_rejected, 40);
    assert!(b.security_drops >= 40);

    const PACKETS: usize = 150;
    let (audio, video) = payloads(4, PACKETS);
    cascade
        .publisher
        .1
        .send_from(0, &audio, &video, Duration::from_millis(5))
        .await
        .unwrap();
    let (got_audio, got_video) = eventually("the honest payloads", || async {
        let got = received(&viewer).await;
        (got.0.len() >= PACKETS && got.1.len() >= PACKETS).then_some(got)
    })
    .await;
    assert_eq!((got_audio, got_video), (audio, video));
}

/// One hop more than a node accepts (`MAX_RELAY_HOPS` in `media/src/worker/relay.rs`).
const TOO_MANY_HOPS: u8 = 9;

/// Outside review F1, against real nodes: a controller that loops the publisher's tracks back
/// to its own node (link B → A, as a re-plan opening new edges before closing old ones would),
/// and a sender holding a link's keys that announces tracks of another session, from too far
/// away, or of a publisher the node has through another link. Every such track is refused and
/// counted in `node_relay_rejected`; no node holds more than the publisher's two tracks, and the
/// honest viewer still gets every payload in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_cycles_and_foreign_tracks_are_refused_by_real_nodes() {
    let cascade = cascade().await;
    cascade.open(None).await;
    let viewer = cascade.viewer().await;

    // The cycle: B sends the publisher's (relayed) tracks back to A.
    let (forward, back) = (RelayKey::generate(), RelayKey::generate());
    let accept = Request::AcceptRelay {
        room: cascade.room_a.clone(),
        link: cascade.link ^ 1,
        publisher: "publisher".into(),
        send_key: RelayKeyHex::new(back.to_hex()),
        receive_key: RelayKeyHex::new(forward.to_hex()),
    };
    let Response::RelayAddress { address: a_addr } = control_call(&cascade.a, &accept).await else {
        panic!("acceptRelay refused");
    };
    let open = Request::OpenRelay {
        room: cascade.room_b.clone(),
        link: cascade.link ^ 1,
        publisher: "publisher".into(),
        address: a_addr,
        send_key: RelayKeyHex::new(forward.to_hex()),
        receive_key: RelayKeyHex::new(back.to_hex()),
    };
    assert_eq!(control_call(&cascade.b, &open).await, Response::Done);

    // A hostile sender with the keys of a second link into B for the publisher.
    let hostile = cascade.link ^ 2;
    let (forward, back) = (RelayKey::generate(), RelayKey::generate());
    let accept = Request::AcceptRelay {
        room: cascade.room_b.clone(),
        link: hostile,
        publisher: "publisher".into(),
        send_key: RelayKeyHex::new(back.to_hex()),
        receive_key: RelayKeyHex::new(forward.to_hex()),
    };
    let Response::RelayAddress { address: b_addr } = control_call(&cascade.b, &accept).await else {
        panic!("acceptRelay refused");
    };
    let announce = |session: &str, ssrc: u32, hops: u8| {
        serde_json::json!({
            "type": "trackAdded",
            "session": session,
            "origin": 77,
            "hops": hops,
            "track": {
                "mid": format!("x{ssrc}"),
                "kind": "Audio",
                "codec": {
                    "name": "opus", "pt": 111, "clock_rate": 48000, "channels": 2,
                    "fmtp": null, "rtcp_fb": [], "rtx_pt": null
                },
                "encodings": [{ "rid": null, "ssrc": ssrc, "rtx_ssrc": null }],
                "msid": null
            }
        })
        .to_string()
    };
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sealer = Sealer::new(hostile, &forward, LinkDirection::Forward);
    for json in [
        announce("intruder", 1001, 1),
        announce("publisher", 1002, TOO_MANY_HOPS),
        announce("publisher", 1003, 1),
    ] {
        let mut buf = vec![0u8; json.len() + relay_frame::OVERHEAD];
        buf[relay_frame::PAYLOAD_OFFSET..][..json.len()].copy_from_slice(json.as_bytes());
        let len = sealer
            .seal(&mut buf, FrameKind::Announce, json.len())
            .unwrap();
        attacker.send_to(&buf[..len], &b_addr).await.unwrap();
    }

    let (a, b) = eventually("both nodes refuse", || async {
        let (a, b) = (
            Cascade::load(&cascade.a).await,
            Cascade::load(&cascade.b).await,
        );
        (a.media.node_relay_rejected >= 2 && b.media.node_relay_rejected >= 3).then_some((a, b))
    })
    .await;
    // Two more announcement rounds of the cycle: nothing multiplied.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (name, control) in [("A", &cascade.a), ("B", &cascade.b)] {
        let load = Cascade::load(control).await;
        assert_eq!(load.tracks, 2, "{name}: {load:?}");
    }
    assert!(
        a.media.node_relay_packets_in > 0,
        "the cycle's datagrams reached A"
    );
    assert_eq!(b.relay_links_in, 2);

    let (audio, video) = payloads(5, 100);
    cascade
        .publisher
        .1
        .send_from(0, &audio, &video, Duration::from_millis(5))
        .await
        .unwrap();
    let got = eventually("the viewer's payloads", || async {
        let got = received(&viewer).await;
        (got.0.len() >= 100 && got.1.len() >= 100).then_some(got)
    })
    .await;
    assert_eq!(got, (audio, video));
}
