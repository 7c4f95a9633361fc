//! Interop through real UDP on loopback with an independent WebRTC stack (the `webrtc` crate,
//! 0.21): one publisher sends Opus + VP8 through the SFU; three subscribers receive every RTP
//! payload byte-identical and in order.

mod peer;

use std::time::Duration;

use mooyaho_media::{Node, NodeConfig};
use peer::{Publisher, Subscriber, payloads};

const PACKETS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_crate_publisher_reaches_three_subscribers_intact() -> anyhow::Result<()> {
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

    let (audio, video) = payloads(PACKETS);
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
