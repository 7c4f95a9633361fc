//! A room spanning two nodes through a relay link (DESIGN §7.2), driven through the node API the
//! control plane uses: a `webrtc`-crate publisher on node A, subscribers on node B (two workers,
//! so the relayed tracks also cross B's in-process pipes). Real UDP on loopback between the
//! nodes, optionally through a lossy proxy; hostile datagrams straight at B's relay port.

mod peer;

use std::net::SocketAddr;
use std::time::Duration;

use mooyaho_media::{Node, NodeConfig, NodeStats, RelayKeys, RoomKey};
use mooyaho_net::relay_frame::{self, FrameKind, LinkDirection, RelayKey, Sealer};
use mooyaho_test_support::peer::payloads;
use peer::relay::{Policy, Relay};
use peer::{Publisher, Subscriber};

const PACKETS: usize = 150;

/// Real peers with their own runtimes: one test at a time (see interop_webrtc.rs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Cascade {
    a: Node,
    b: Node,
    room_a: RoomKey,
    room_b: RoomKey,
    link: u64,
    /// A→B key (what A seals, B opens).
    forward: RelayKey,
    /// B→A key (feedback).
    back: RelayKey,
    /// B's relay address.
    b_addr: SocketAddr,
}

/// Node A (1 worker) and node B (2 workers, a room spills to the second after one subscriber),
/// a room on each, and a publisher on A.
async fn cascade() -> anyhow::Result<(Cascade, Publisher)> {
    let (a, _) = Node::start(&NodeConfig::loopback(1))?;
    let (b, _) = Node::start(&NodeConfig {
        spill_after: 1,
        ..NodeConfig::loopback(2)
    })?;
    let room_a = a.create_room().await?;
    let room_b = b.create_room().await?;
    let publisher = Publisher::connect(&a, room_a, "publisher").await?;
    publisher.wait_connected().await?;
    let (forward, back) = (RelayKey::generate(), RelayKey::generate());
    let link = rand::random();
    let b_addr = b
        .accept_relay(
            room_b,
            link,
            "publisher",
            RelayKeys {
                send: back.clone(),
                receive: forward.clone(),
            },
        )
        .await?;
    Ok((
        Cascade {
            a,
            b,
            room_a,
            room_b,
            link,
            forward,
            back,
            b_addr,
        },
        publisher,
    ))
}

impl Cascade {
    /// A sends to `to` (B's relay address, or a proxy in front of it).
    async fn open(&self, to: SocketAddr) -> anyhow::Result<()> {
        self.a
            .open_relay(
                self.room_a,
                self.link,
                "publisher",
                RelayKeys {
                    send: self.forward.clone(),
                    receive: self.back.clone(),
                },
                to,
            )
            .await?;
        Ok(())
    }

    /// A subscriber on B, once the relayed tracks are announced there.
    async fn subscriber(&self, name: &str) -> anyhow::Result<Subscriber> {
        subscriber_on(&self.b, self.room_b, name).await
    }
}

/// Opens link `id` carrying `publisher`'s tracks from `from`'s room to `to`'s, as signaling
/// does: `acceptRelay` on the receiving node, then `openRelay` on the sending node.
async fn link(
    (from, from_room): (&Node, RoomKey),
    (to, to_room): (&Node, RoomKey),
    id: u64,
    publisher: &str,
) -> anyhow::Result<()> {
    let (forward, back) = (RelayKey::generate(), RelayKey::generate());
    let keys = |send: &RelayKey, receive: &RelayKey| RelayKeys {
        send: send.clone(),
        receive: receive.clone(),
    };
    let address = to
        .accept_relay(to_room, id, publisher, keys(&back, &forward))
        .await?;
    from.open_relay(from_room, id, publisher, keys(&forward, &back), address)
        .await?;
    Ok(())
}

/// A subscriber named `name` in `room` of `node`, once there are tracks to offer.
async fn subscriber_on(node: &Node, room: RoomKey, name: &str) -> anyhow::Result<Subscriber> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Subscriber::connect(node, room, name).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn wait_until(
    node: &Node,
    what: &str,
    ok: impl Fn(&NodeStats) -> bool,
) -> anyhow::Result<NodeStats> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = node.stats().await?;
        if ok(&stats) {
            return Ok(stats);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{what}: {stats:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sum(stats: &NodeStats, f: impl Fn(&mooyaho_media::WorkerStats) -> u64) -> u64 {
    stats.workers.iter().map(f).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_on_node_a_reaches_subscribers_on_node_b_through_one_link() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let (cascade, publisher) = cascade().await?;
    cascade.open(cascade.b_addr).await?;
    let mut subscribers = Vec::new();
    for i in 0..3 {
        subscribers.push(cascade.subscriber(&format!("viewer-{i}")).await?);
    }
    for s in &subscribers {
        s.wait_connected().await?;
    }

    let (audio, video) = payloads(3, PACKETS);
    publisher
        .send(&audio, &video, Duration::from_millis(5))
        .await?;
    for s in &subscribers {
        let got = s
            .wait_for(PACKETS, PACKETS, Duration::from_secs(10))
            .await?;
        assert_eq!(got.audio, audio, "audio of {}", s.name);
        assert_eq!(got.video, video, "video of {}", s.name);
        assert_eq!(got.stream_ids, vec!["publisher".to_owned(); 2]);
    }

    // Each packet crossed once, whatever the number of subscribers on B; B fanned it out, also
    // to its second worker through a pipe.
    let a_stats = cascade.a.stats().await?;
    let b_stats = cascade.b.stats().await?;
    assert_eq!(
        sum(&a_stats, |w| w.core.counters.rtp_forwarded),
        2 * PACKETS as u64
    );
    assert!(sum(&b_stats, |w| w.core.counters.rtp_forwarded) >= 3 * 2 * PACKETS as u64);
    assert!(
        sum(&b_stats, |w| w.counters.pipe_packets) > 0,
        "B spans its 2 workers"
    );
    assert_eq!(a_stats.relay_links().sending, 1);
    assert_eq!(b_stats.relay_links().receiving, 1);
    let relayed_in = sum(&b_stats, |w| w.counters.relay_packets_in);
    assert!(relayed_in >= 2 * PACKETS as u64, "{relayed_in}");
    assert!(
        sum(&a_stats, |w| w.counters.relay_packets_in) > 0,
        "feedback reached A"
    );
    for stats in [&a_stats, &b_stats] {
        assert_eq!(
            sum(stats, |w| w.counters.relay_auth_failures
                + w.counters.relay_replays
                + w.counters.relay_unknown_link),
            0
        );
    }

    // Teardown: B's subscribers lose the relayed tracks, A stops sending.
    cascade.b.close_relay(cascade.room_b, cascade.link).await?;
    cascade.a.close_relay(cascade.room_a, cascade.link).await?;
    let b_stats = wait_until(&cascade.b, "relayed tracks gone", |s| {
        s.workers.iter().all(|w| w.core.tracks == 0)
    })
    .await?;
    assert_eq!(b_stats.relay_links().receiving, 0);
    assert_eq!(cascade.a.stats().await?.relay_links().sending, 0);
    assert!(matches!(
        cascade.a.close_relay(cascade.room_a, cascade.link).await,
        Err(mooyaho_media::MediaError::UnknownRelay)
    ));
    publisher.close().await;
    for s in subscribers {
        s.close().await;
    }
    Ok(())
}

/// 5 % of the relay datagrams from A to B are lost (media and announcements): B NACKs its
/// "publisher" (the link), A resends from its buffer, every payload reaches B's subscriber.
/// A subscriber's keyframe request on B reaches the publisher's node as a PLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_and_pli_cross_the_relay_and_recover_five_percent_loss() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (cascade, publisher) = cascade().await?;
    let proxy = Relay::start(cascade.b_addr, Policy::DropRelayToSfu { one_in: 20 }).await;
    cascade.open(proxy.addr).await?;
    let viewer = cascade.subscriber("viewer").await?;
    viewer.wait_connected().await?;
    let plis_before = sum(&cascade.a.stats().await?, |w| w.core.counters.pli_sent);

    const CHECKED: usize = 300;
    let (audio, video) = payloads(5, CHECKED + 20);
    publisher
        .send(&audio, &video, Duration::from_millis(4))
        .await?;
    let mut expected = video[..CHECKED].to_vec();
    expected.sort();
    let recovered = |got: &[Vec<u8>]| expected.iter().filter(|p| got.contains(p)).count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let got = loop {
        let mut got = viewer.received().await.video;
        got.sort();
        got.dedup();
        if recovered(&got) == CHECKED || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dropped = proxy.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped >= 15, "the proxy dropped only {dropped}");
    assert_eq!(recovered(&got), CHECKED, "video payloads recovered");
    assert!(got.iter().all(|p| video.contains(p)));
    let (a_stats, b_stats) = (cascade.a.stats().await?, cascade.b.stats().await?);
    assert!(sum(&b_stats, |w| w.core.counters.nack_sent) > 0);
    assert!(sum(&a_stats, |w| w.core.counters.retransmits_sent) > 0);
    // The viewer's subscription started with a keyframe request: it crossed the link.
    assert!(sum(&a_stats, |w| w.core.counters.keyframe_requests_received) > 0);
    assert!(sum(&a_stats, |w| w.core.counters.pli_sent) >= plis_before.max(1));
    publisher.close().await;
    viewer.close().await;
    Ok(())
}

/// Datagrams at B's relay port that are not the link's: an unknown link id, the right id with a
/// forged tag or another key, a replay of an honest counter. All dropped and counted; the
/// honest viewer still gets every payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_unknown_relay_datagrams_are_dropped_and_counted() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let (cascade, publisher) = cascade().await?;
    cascade.open(cascade.b_addr).await?;
    let viewer = cascade.subscriber("viewer").await?;
    viewer.wait_connected().await?;

    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let frame = |sealer: &mut Sealer, kind, payload: &[u8]| {
        let mut buf = vec![0u8; payload.len() + relay_frame::OVERHEAD];
        buf[relay_frame::PAYLOAD_OFFSET..][..payload.len()].copy_from_slice(payload);
        let len = sealer.seal(&mut buf, kind, payload.len()).unwrap();
        buf.truncate(len);
        buf
    };
    let rtp = [
        0x80u8, 0x60, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
    ];
    // Unknown link.
    let mut stranger = Sealer::new(
        cascade.link ^ 1,
        &RelayKey::generate(),
        LinkDirection::Forward,
    );
    attacker
        .send_to(&frame(&mut stranger, FrameKind::Rtp, &rtp), cascade.b_addr)
        .await?;
    // The right link id, another key.
    let mut forger = Sealer::new(cascade.link, &RelayKey::generate(), LinkDirection::Forward);
    attacker
        .send_to(&frame(&mut forger, FrameKind::Rtp, &rtp), cascade.b_addr)
        .await?;
    // The right link and key, a counter A already used (a captured datagram replayed).
    let mut replayer = Sealer::new(cascade.link, &cascade.forward, LinkDirection::Forward);
    attacker
        .send_to(&frame(&mut replayer, FrameKind::Rtp, &rtp), cascade.b_addr)
        .await?;
    // Garbage with the relay's first byte, too short to name a link.
    attacker
        .send_to(&[relay_frame::MAGIC, 1, 2, 3], cascade.b_addr)
        .await?;
    let stats = wait_until(&cascade.b, "attacks counted", |s| {
        sum(s, |w| w.counters.relay_unknown_link) == 2
            && sum(s, |w| w.counters.relay_auth_failures) == 1
            && sum(s, |w| w.counters.relay_replays) == 1
    })
    .await?;
    assert_eq!(sum(&stats, |w| w.core.counters.rtp_received), 0);

    let (audio, video) = payloads(7, PACKETS);
    publisher
        .send(&audio, &video, Duration::from_millis(5))
        .await?;
    let got = viewer
        .wait_for(PACKETS, PACKETS, Duration::from_secs(10))
        .await?;
    assert_eq!((got.audio, got.video), (audio, video));
    publisher.close().await;
    viewer.close().await;
    Ok(())
}

/// A relay tree (DESIGN §7.2: a node that cannot feed every other node has nodes it feeds feed
/// others): A → B → C, where B relays on what it receives. C's viewer gets every payload; B
/// carries the publisher's tracks once in each direction it must, and a link for another
/// publisher carries nothing of this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_tracks_relay_on_down_a_tree_and_links_carry_only_their_publisher()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (cascade, publisher) = cascade().await?;
    cascade.open(cascade.b_addr).await?;
    let (c, _) = Node::start(&NodeConfig::loopback(1))?;
    let room_c = c.create_room().await?;
    link((&cascade.b, cascade.room_b), (&c, room_c), 7, "publisher").await?;
    // A link from B for a publisher with no tracks there carries nothing.
    link(
        (&cascade.b, cascade.room_b),
        (&cascade.a, cascade.room_a),
        8,
        "someone-else",
    )
    .await?;
    let viewer = subscriber_on(&c, room_c, "viewer-c").await?;
    viewer.wait_connected().await?;
    let (audio, video) = payloads(8, PACKETS);
    publisher
        .send(&audio, &video, Duration::from_millis(5))
        .await?;
    let got = viewer
        .wait_for(PACKETS, PACKETS, Duration::from_secs(10))
        .await?;
    assert_eq!((got.audio, got.video), (audio, video));
    assert_eq!(got.stream_ids, vec!["publisher".to_owned(); 2]);
    let b_stats = cascade.b.stats().await?;
    assert_eq!(
        (
            b_stats.relay_links().receiving,
            b_stats.relay_links().sending
        ),
        (1, 2)
    );
    // A has only its own publisher's tracks: nothing came back over link 8.
    let a_stats = cascade.a.stats().await?;
    assert_eq!(
        a_stats.workers.iter().map(|w| w.core.tracks).sum::<usize>(),
        2
    );
    assert_eq!(
        sum(&a_stats, |w| w.core.counters.rtp_received),
        2 * PACKETS as u64,
        "only the publisher's own packets"
    );
    publisher.close().await;
    viewer.close().await;
    Ok(())
}

/// Outside review F1: links that close a cycle for one publisher (A→B→C, then C→A and C→B, as
/// a re-plan that opens new edges before closing old ones would) must not re-publish copies of
/// its tracks without end. A refuses its own tracks coming back (and a publisher it has
/// locally), B refuses a second link's copy; every node keeps exactly the publisher's two tracks
/// through several announcement rounds, and the viewer down the tree is unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cycle_is_refused_and_copies_never_multiply() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (cascade, publisher) = cascade().await?;
    cascade.open(cascade.b_addr).await?;
    let (c, _) = Node::start(&NodeConfig::loopback(1))?;
    let room_c = c.create_room().await?;
    link((&cascade.b, cascade.room_b), (&c, room_c), 7, "publisher").await?;
    let viewer = subscriber_on(&c, room_c, "viewer-c").await?;
    viewer.wait_connected().await?;
    // The cycle: C feeds A (the publisher's own node) and B (fed by A already).
    link((&c, room_c), (&cascade.a, cascade.room_a), 9, "publisher").await?;
    link((&c, room_c), (&cascade.b, cascade.room_b), 10, "publisher").await?;
    let refused = |s: &NodeStats| sum(s, |w| w.counters.relay_tracks_refused);
    wait_until(&cascade.a, "A refuses its own tracks", |s| refused(s) >= 2).await?;
    wait_until(&cascade.b, "B refuses a second copy", |s| refused(s) >= 2).await?;
    // Two more announcement rounds: still exactly two tracks everywhere.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (name, node) in [("A", &cascade.a), ("B", &cascade.b), ("C", &c)] {
        let stats = node.stats().await?;
        let tracks: usize = stats.workers.iter().map(|w| w.core.tracks).sum();
        assert_eq!(tracks, 2, "{name}: {stats:?}");
    }
    assert!(
        refused(&cascade.a.stats().await?) >= 4,
        "repeats refused too"
    );
    let (audio, video) = payloads(9, PACKETS);
    publisher
        .send(&audio, &video, Duration::from_millis(5))
        .await?;
    let got = viewer
        .wait_for(PACKETS, PACKETS, Duration::from_secs(10))
        .await?;
    assert_eq!((got.audio, got.video), (audio, video));
    publisher.close().await;
    viewer.close().await;
    Ok(())
}

/// Outside review F5: a receiving link whose sending end went away without `closeRelay` on
/// the receiving node (the sending node died, or only its end was closed) unpublishes the
/// relayed tracks within a few seconds, so B's subscriber is not left with dead m-lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_s_tracks_are_unpublished() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (cascade, publisher) = cascade().await?;
    cascade.open(cascade.b_addr).await?;
    let viewer = cascade.subscriber("viewer").await?;
    viewer.wait_connected().await?;
    wait_until(&cascade.b, "relayed tracks on B", |s| {
        s.workers.iter().map(|w| w.core.tracks).sum::<usize>() >= 2
    })
    .await?;
    // Only A's end goes: A stops sending, B still holds the link.
    cascade.a.close_relay(cascade.room_a, cascade.link).await?;
    let stats = wait_until(&cascade.b, "B unpublishes the silent link's tracks", |s| {
        s.workers.iter().all(|w| w.core.tracks == 0)
    })
    .await?;
    assert_eq!(sum(&stats, |w| w.counters.relay_links_silenced), 1);
    assert_eq!(
        stats.relay_links().receiving,
        1,
        "the link itself stays until closeRelay"
    );
    publisher.close().await;
    viewer.close().await;
    Ok(())
}

/// Outside review G5 (F5's sending half): a receiving end answers its sender every second (a
/// keepalive, even with nothing to feed back), so a link carrying nothing stays open; once the
/// receiving end is gone (its node died, or only its end was closed), the sender stops within
/// a few seconds by itself, counts it, and tells the control plane which link it closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_stops_when_its_receiver_no_longer_answers_and_says_so() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (a, mut a_events) = Node::start(&NodeConfig::loopback(1))?;
    let (b, _) = Node::start(&NodeConfig::loopback(1))?;
    let (room_a, room_b) = (a.create_room().await?, b.create_room().await?);
    // A publisher with no tracks: nothing flows but announcements and keepalives.
    link((&a, room_a), (&b, room_b), 21, "nobody").await?;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let stats = a.stats().await?;
    assert_eq!(stats.relay_links().sending, 1, "kept open by keepalives");
    assert_eq!(sum(&stats, |w| w.counters.relay_links_abandoned), 0);

    // Only B's end goes: A hears nothing more and closes its end.
    b.close_relay(room_b, 21).await?;
    let stats = wait_until(&a, "A closes the unanswered link", |s| {
        s.relay_links().sending == 0
    })
    .await?;
    assert_eq!(sum(&stats, |w| w.counters.relay_links_abandoned), 1);
    let told = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match a_events.recv().await {
                Some(mooyaho_media::NodeEvent::RelayClosed {
                    worker, room, link, ..
                }) => return (a.room_of(worker, room), link),
                Some(_) => {}
                None => panic!("A's events ended"),
            }
        }
    })
    .await?;
    assert_eq!(told, (room_a, 21));
    Ok(())
}
