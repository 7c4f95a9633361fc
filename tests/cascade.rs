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

/// Outside review G4: the relay links are kept per signaling instance, so `--span-nodes` with a
/// shared store (`--redis-url`) is refused at start, with the reason (before Redis is dialled).
#[test]
fn span_nodes_with_redis_is_refused_at_start_with_the_reason() {
    let output = support::refused_start(&["--span-nodes", "--redis-url", "redis://127.0.0.1:1/"]);
    assert!(
        output.contains("--span-nodes cannot be combined with --redis-url"),
        "{output}"
    );
    assert!(!output.contains("connecting to Redis"), "{output}");
}

mod through_signaling {
    //! The same through `mooyaho server`: signaling places members on three `mooyaho sfu
    //! --max-transports 3` nodes and opens (and closes) the relay links its plan needs.

    use std::future::Future;
    use std::time::Duration;

    use mooyaho_test_support::peer::payloads;
    use mooyaho_test_support::sfu_client::SfuClient;
    use serde_json::{Value, json};

    use super::SECRET;
    use crate::support::{Rest, Server, SfuNode, eventually};

    /// Every step of these tests is bounded: a wedged step fails, naming itself, instead of
    /// hanging the test binary.
    async fn within<T>(secs: u64, what: &str, step: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(secs), step)
            .await
            .unwrap_or_else(|_| panic!("{what}: not done within {secs} s"))
    }

    async fn get(rest: &Rest, path: &str) -> Value {
        let (status, body) = within(10, path, rest.call("GET", path, None)).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn load(rest: &Rest, node: u64) -> Value {
        get(rest, &format!("/sfu-servers/{node}")).await["load"].clone()
    }

    async fn healthy(rest: &Rest, node: &SfuNode) {
        let id = node.id();
        let healthy = eventually(Duration::from_secs(10), || async {
            get(rest, &format!("/sfu-servers/{id}")).await["health"] == "healthy"
        })
        .await;
        assert!(healthy, "node {id} never healthy");
    }

    /// Waits until node `from` sends `out` relay links and node `to` receives `inn`.
    async fn links(rest: &Rest, from: u64, out: u64, to: u64, inn: u64) {
        let linked = eventually(Duration::from_secs(10), || async {
            load(rest, from).await["relayLinksOut"] == out
                && load(rest, to).await["relayLinksIn"] == inn
        })
        .await;
        assert!(
            linked,
            "wanted {out} out of {from}, {inn} into {to}: {} / {}",
            load(rest, from).await,
            load(rest, to).await
        );
    }

    async fn serving(rest: &Rest, channel: &str) -> Value {
        get(rest, &format!("/channels/{channel}")).await["sfuServerIds"].clone()
    }

    async fn receive_all(viewers: &[SfuClient], publisher: &str, first: usize, tag: u8) {
        const PACKETS: usize = 60;
        let (audio, video) = payloads(tag, PACKETS);
        for viewer in viewers {
            let got = within(
                30,
                &format!("{} receiving", viewer.name),
                viewer.wait_for(&[publisher], first + PACKETS, Duration::from_secs(20)),
            )
            .await;
            let media = &got[publisher];
            assert_eq!(media.audio[first..], audio, "{}", viewer.name);
            assert_eq!(media.video[first..], video, "{}", viewer.name);
        }
    }

    /// A publisher and two viewers fill the first node (cap 3); two more viewers are served by
    /// a second node, fed by one relay link signaling opened. Every viewer gets the publisher's
    /// payloads intact and in order. The second node is killed: its viewers get `sfuRestart`,
    /// are served by the third node and receive again through a new link. When they leave, the
    /// link is closed and the third node no longer serves the channel. Then the first node is
    /// disabled: a new viewer is served by the third node through a new link.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn viewers_beyond_the_first_node_get_the_publisher_through_one_relay_link() {
        let server = Server::start(&["--cluster-secret", SECRET, "--span-nodes"]);
        let rest = server.rest();
        let cap = ["--max-transports", "3"];
        // The publisher first, with one node: the channel's first node is A.
        let a = SfuNode::start_with(SECRET, Some(&server), &cap);
        healthy(&rest, &a).await;
        let channel = within(10, "create channel", rest.create_channel(true)).await;
        let mut publisher = within(
            20,
            "publisher joins",
            SfuClient::join(&server.ws_url(), &rest, &channel, "pub"),
        )
        .await;
        within(20, "publish", publisher.publish()).await;
        within(20, "publish connected", publisher.publish_connected()).await;
        let publisher_id = publisher.id.clone();
        let mut others = [
            SfuNode::start_with(SECRET, Some(&server), &cap),
            SfuNode::start_with(SECRET, Some(&server), &cap),
        ];
        for node in &others {
            healthy(&rest, node).await;
        }

        let mut viewers = Vec::new();
        for name in ["v1", "v2", "v3", "v4"] {
            let viewer = within(
                20,
                &format!("{name} joins"),
                SfuClient::join(&server.ws_url(), &rest, &channel, name),
            )
            .await;
            within(
                30,
                &format!("{name} subscribed"),
                viewer.subscribed_to(&[publisher_id.as_str()]),
            )
            .await;
            viewers.push(viewer);
        }
        let ids = serving(&rest, &channel).await;
        let span = ids[1]
            .as_u64()
            .unwrap_or_else(|| panic!("no second node: {ids}"));
        assert_eq!(ids.as_array().map(Vec::len), Some(2), "{ids}");
        assert_eq!(ids[0], a.id(), "{ids}");
        let relay = others
            .iter()
            .position(|n| n.id() == span)
            .unwrap_or_else(|| panic!("{span} is not one of the other nodes"));
        let spare = others[1 - relay].id();
        links(&rest, a.id(), 1, span, 1).await;
        let (audio, video) = payloads(0x31, 60);
        within(
            20,
            "first round sent",
            publisher.send_media(&audio, &video, Duration::from_millis(10)),
        )
        .await;
        receive_all(&viewers, &publisher_id, 0, 0x31).await;

        // The relay node dies: its viewers are told, served by the spare node, fed again.
        others[relay].kill();
        for viewer in &viewers[2..] {
            let mut state = viewer.sub_state.clone();
            let recovered = within(20, &format!("{} recovery", viewer.name), async {
                state.wait_for(|s| s.recoveries >= 1).await.is_ok()
            })
            .await;
            assert!(recovered, "{}", viewer.name);
        }
        for viewer in &viewers[2..] {
            within(
                30,
                &format!("{} subscribed again", viewer.name),
                viewer.subscribed_to(&[publisher_id.as_str()]),
            )
            .await;
        }
        assert_eq!(serving(&rest, &channel).await, json!([a.id(), spare]));
        links(&rest, a.id(), 1, spare, 1).await;
        let (audio, video) = payloads(0x32, 60);
        within(
            20,
            "second round sent",
            publisher.send_media_from(60, &audio, &video, Duration::from_millis(10)),
        )
        .await;
        // The re-served viewers' new subscribe connections count from 0.
        receive_all(&viewers[2..], &publisher_id, 0, 0x32).await;
        receive_all(&viewers[..2], &publisher_id, 60, 0x32).await;

        // The spare node's viewers leave: the link goes, and the span with it.
        for mut viewer in viewers.drain(2..) {
            let reply = within(10, "leave", viewer.request(json!({ "type": "leave" }))).await;
            assert_ne!(reply["type"], "error", "{reply}");
            within(10, "viewer closes", viewer.close()).await;
        }
        links(&rest, a.id(), 0, spare, 0).await;
        assert_eq!(serving(&rest, &channel).await, json!([a.id()]));

        // A is disabled (DESIGN §7.2): it keeps its members, but a new viewer is served by the
        // spare node, fed through a new link.
        let path = format!("/sfu-servers/{}", a.id());
        let (status, body) = within(
            10,
            "disable A",
            rest.call("PATCH", &path, Some(json!({ "disabled": true }))),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let late = within(
            20,
            "v5 joins",
            SfuClient::join(&server.ws_url(), &rest, &channel, "v5"),
        )
        .await;
        within(
            30,
            "v5 subscribed",
            late.subscribed_to(&[publisher_id.as_str()]),
        )
        .await;
        assert_eq!(serving(&rest, &channel).await, json!([a.id(), spare]));
        links(&rest, a.id(), 1, spare, 1).await;
        let (audio, video) = payloads(0x33, 60);
        within(
            20,
            "third round sent",
            publisher.send_media_from(120, &audio, &video, Duration::from_millis(10)),
        )
        .await;
        receive_all(std::slice::from_ref(&late), &publisher_id, 0, 0x33).await;
        receive_all(&viewers, &publisher_id, 120, 0x33).await;
    }
}
