//! Interop through real UDP on loopback with an independent WebRTC stack (the `webrtc` crate,
//! 0.21): one publisher sends Opus + VP8 through the SFU; three subscribers receive every RTP
//! payload byte-identical and in order.

mod peer;

use std::time::Duration;

use mooyaho_media::{Node, NodeConfig};
use mooyaho_test_support::peer::payloads;
use peer::relay::{Policy, Relay};
use peer::{Publisher, Subscriber};

const PACKETS: usize = 150;

/// These tests run real peers with their own runtimes; on a 2-core machine several at once starve
/// each other's timers (a NACK answered after its packet left the 1 s retransmission window is
/// lost for good). Run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_crate_publisher_reaches_three_subscribers_intact() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (node, _events) = Node::start(&NodeConfig::loopback(1))?;
    let room = node.create_room().await?;

    let publisher = Publisher::connect(&node, room, "publisher").await?;
    let mut subscribers = Vec::new();
    for i in 0..3 {
        subscribers.push(Subscriber::connect(&node, room, &format!("subscriber-{i}")).await?);
    }
    publisher.wait_connected().await?;
    for subscriber in &subscribers {
        subscriber.wait_connected().await?;
    }

    let (audio, video) = payloads(0, PACKETS);
    publisher
        .send(&audio, &video, Duration::from_millis(5))
        .await?;

    for subscriber in &subscribers {
        let received = subscriber
            .wait_for(PACKETS, PACKETS, Duration::from_secs(10))
            .await?;
        assert_eq!(
            received.audio, audio,
            "audio payloads differ for {}",
            subscriber.name
        );
        assert_eq!(
            received.video, video,
            "video payloads differ for {}",
            subscriber.name
        );
        // The stream id of every forwarded track names the publishing session.
        assert_eq!(received.stream_ids, vec!["publisher".to_owned(); 2]);
    }

    let stats = node.stats().await?;
    let counters = stats.workers[0].counters;
    assert_eq!(counters.srtp_auth_failures, 0);
    assert_eq!(counters.media_unauthenticated, 0);

    publisher.close().await;
    for subscriber in subscribers {
        subscriber.close().await;
    }
    node.close_room(room).await?;
    let stats = node.stats().await?;
    assert_eq!((stats.rooms(), stats.transports()), (0, 0));
    Ok(())
}

/// The webrtc-crate subscriber NACKs what the relay drops; the SFU answers from its
/// retransmission buffer, so the lossy subscriber still gets every video payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_recovers_five_percent_loss_toward_one_subscriber() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (node, _events) = Node::start(&NodeConfig::loopback(1))?;
    let sfu = node.addresses()[0];
    let room = node.create_room().await?;
    let publisher = Publisher::connect(&node, room, "publisher").await?;
    let clean = Subscriber::connect(&node, room, "clean").await?;
    let relay = Relay::start(sfu, Policy::DropRtpToClient { one_in: 20 }).await;
    let lossy =
        Subscriber::connect_with(&node, room, "lossy", |sdp| relay.rewrite(&sdp, sfu)).await?;
    publisher.wait_connected().await?;
    clean.wait_connected().await?;
    lossy.wait_connected().await?;

    // 300 payloads checked, then a tail: a receiver learns of a lost packet only from a later
    // one, so a drop among the very last packets could never be NACKed (the relay drops every
    // 20th RTP packet, retransmissions included, so where that falls varies run to run).
    const CHECKED: usize = 300;
    let (audio, video) = payloads(0, CHECKED + 20);
    publisher
        .send(&audio, &video, Duration::from_millis(4))
        .await?;

    let got = clean
        .wait_for(video.len(), video.len(), Duration::from_secs(10))
        .await?;
    assert_eq!(got.video, video);
    // Every checked video payload arrives at the lossy subscriber (retransmissions come late,
    // so compare as sets).
    let mut expected = video[..CHECKED].to_vec();
    expected.sort();
    let recovered = |got: &[Vec<u8>]| expected.iter().filter(|p| got.contains(p)).count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lossy_video = loop {
        let mut got = lossy.received().await.video;
        got.sort();
        got.dedup();
        if recovered(&got) == CHECKED || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dropped = relay.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped >= 15, "relay dropped only {dropped} packets");
    assert_eq!(
        recovered(&lossy_video),
        CHECKED,
        "{} of {CHECKED} video payloads recovered",
        recovered(&lossy_video)
    );
    assert!(
        lossy_video.iter().all(|p| video.contains(p)),
        "only payloads the publisher sent"
    );
    let core = node.stats().await?.workers[0].core.counters;
    assert!(
        core.nack_received > 0 && core.retransmits_sent > 0,
        "{core:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_checks_with_a_wrong_password_are_rejected_and_counted() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (node, _events) = Node::start(&NodeConfig::loopback(1))?;
    let room = node.create_room().await?;
    // The client signs its checks with the password it was given: give it the wrong one.
    let publisher = Publisher::connect_with(&node, room, "publisher", |sdp| {
        if !sdp.contains("a=ice-lite") {
            return sdp; // the client's offer stays intact
        }
        sdp.lines()
            .map(|l| {
                if l.starts_with("a=ice-pwd:") {
                    "a=ice-pwd:wrongwrongwrongwrongwrong"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
            + "\r\n"
    })
    .await?;
    let stats = wait_stats(&node, |s| s.counters.stun_rejected > 0).await?;
    assert_eq!(stats.connected, 0);
    assert_eq!(stats.counters.dtls_failures, 0);
    drop(publisher);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtls_with_a_mismatched_fingerprint_is_rejected_and_counted() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (node, _events) = Node::start(&NodeConfig::loopback(1))?;
    let room = node.create_room().await?;
    let forged = format!("a=fingerprint:sha-256 {}", vec!["AB"; 32].join(":"));
    let _publisher = Publisher::connect_with(&node, room, "publisher", |sdp| {
        if sdp.contains("a=ice-lite") {
            return sdp; // the node's answer stays intact
        }
        sdp.lines()
            .map(|l| {
                if l.starts_with("a=fingerprint:") {
                    forged.clone()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
            + "\r\n"
    })
    .await?;
    let stats = wait_stats(&node, |s| s.counters.dtls_failures > 0).await?;
    assert_eq!(stats.connected, 0);
    assert_eq!(stats.core.counters.rtp_received, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_srtp_is_dropped_and_counted() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (node, _events) = Node::start(&NodeConfig::loopback(1))?;
    let sfu = node.addresses()[0];
    let room = node.create_room().await?;
    let relay = Relay::start(sfu, Policy::ReplayRtpToSfu { nth: 40 }).await;
    let publisher =
        Publisher::connect_with(&node, room, "publisher", |sdp| relay.rewrite(&sdp, sfu)).await?;
    let subscriber = Subscriber::connect(&node, room, "subscriber").await?;
    publisher.wait_connected().await?;
    subscriber.wait_connected().await?;
    let (audio, video) = payloads(0, 100);
    publisher
        .send(&audio, &video, Duration::from_millis(4))
        .await?;
    let got = subscriber
        .wait_for(100, 100, Duration::from_secs(10))
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got_after = subscriber.received().await;
    assert_eq!(relay.replayed.load(std::sync::atomic::Ordering::Relaxed), 1);
    // Nothing forwarded twice.
    assert_eq!((got.audio, got.video), (audio.clone(), video.clone()));
    assert_eq!((got_after.audio, got_after.video), (audio, video));
    let stats = node.stats().await?;
    assert_eq!(stats.workers[0].counters.srtp_replays, 1);
    Ok(())
}

/// Polls the single worker's stats until `check` holds (10 s at most).
async fn wait_stats(
    node: &Node,
    check: impl Fn(&mooyaho_media::WorkerStats) -> bool,
) -> anyhow::Result<mooyaho_media::WorkerStats> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = node.stats().await?.workers.remove(0);
        if check(&stats) {
            return Ok(stats);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("condition never held: {stats:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A room whose home worker is "full" spreads its subscribers over the other worker: packets
/// reach them through the pipe, intact and in order, and closing the room clears both workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_workers_once_its_home_fills() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut config = NodeConfig::loopback(2);
    config.spill_after = 1;
    let (node, _events) = Node::start(&config)?;
    let room = node.create_room().await?;
    let publisher = Publisher::connect(&node, room, "publisher").await?;
    let mut subscribers = Vec::new();
    for i in 0..3 {
        subscribers.push(Subscriber::connect(&node, room, &format!("subscriber-{i}")).await?);
    }
    publisher.wait_connected().await?;
    for subscriber in &subscribers {
        subscriber.wait_connected().await?;
    }
    let stats = node.stats().await?;
    assert!(
        stats.workers.iter().all(|w| w.transports > 0),
        "the room should use both workers: {:?}",
        stats
            .workers
            .iter()
            .map(|w| w.transports)
            .collect::<Vec<_>>()
    );

    let (audio, video) = payloads(0, PACKETS);
    publisher
        .send(&audio, &video, Duration::from_millis(5))
        .await?;
    for subscriber in &subscribers {
        let received = subscriber
            .wait_for(PACKETS, PACKETS, Duration::from_secs(10))
            .await?;
        assert_eq!(
            received.audio, audio,
            "audio differs for {}",
            subscriber.name
        );
        assert_eq!(
            received.video, video,
            "video differs for {}",
            subscriber.name
        );
        assert_eq!(received.stream_ids, vec!["publisher".to_owned(); 2]);
    }
    let stats = node.stats().await?;
    assert!(stats.workers.iter().all(|w| w.counters.pipe_drops == 0));

    node.close_room(room).await?;
    let stats = node.stats().await?;
    assert_eq!((stats.rooms(), stats.transports()), (0, 0));
    Ok(())
}

/// Media (and DTLS) from an address that never passed an ICE check is dropped and counted, even
/// while a room is live on that worker: nothing reaches the subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_from_unvalidated_addresses_are_dropped_and_counted() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (node, _events) = Node::start(&NodeConfig::loopback(1))?;
    let sfu = node.addresses()[0];
    let room = node.create_room().await?;
    let publisher = Publisher::connect(&node, room, "publisher").await?;
    let subscriber = Subscriber::connect(&node, room, "subscriber").await?;
    publisher.wait_connected().await?;
    subscriber.wait_connected().await?;

    let rogue = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    for seq in 0..20u8 {
        // RTP-shaped (first byte 0x80), then DTLS-shaped (22 = handshake record).
        rogue
            .send_to(&[0x80, 96, 0, seq, 0, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9], sfu)
            .await?;
        rogue
            .send_to(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, seq, 0, 1, 1], sfu)
            .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let counters = loop {
        let counters = node.stats().await?.workers[0].counters;
        if counters.media_unauthenticated >= 20 && counters.dtls_unauthenticated >= 20 {
            break counters;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not counted: {counters:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        counters.srtp_auth_failures, 0,
        "never reached SRTP: {counters:?}"
    );
    let received = subscriber.received().await;
    assert!(
        received.audio.is_empty() && received.video.is_empty(),
        "{received:?}"
    );
    Ok(())
}
