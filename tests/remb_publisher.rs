//! The REMB a publisher gets follows what its viewers can take, against real processes:
//! `mooyaho dev`, a scripted single-encoding publisher (raw SRTP) whose encoder follows the
//! node's REMB as a browser's does, and `webrtc`-crate viewers (real transport-wide CC
//! feedback). With nobody watching the REMB is the ceiling; with one viewer behind a 600 kbps
//! UDP relay (200 ms drop-tail queue) it comes down to about that downlink; when an unshaped
//! viewer joins, its downlink sets it again (the best-connected viewer decides, so the weak one
//! does not hold the publisher back).

#[path = "support/relay.rs"]
mod relay;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mooyaho_test_support::bottleneck::Bottleneck;
use mooyaho_test_support::peer::Media;
use mooyaho_test_support::sfu_client::SfuClient;
use relay::Relay;
use sfu_core::rtcp::{Compound, RtcpPacket};
use support::Server;
use support::raw::{self, RawParticipant};
use tokio::sync::watch;

const SHAPED_BPS: u64 = 600_000;
/// The node's REMB ceiling per video track (`sfu_core::Config::default().remb_bitrate`).
const REMB_CEILING: u64 = 2_500_000;
/// What the scripted single-encoding encoder sends at most.
const ENCODER_MAX: u64 = 1_200_000;

/// Sends one VP8 stream of `ssrc` at 30 frames per second (a keyframe every second) at the
/// latest REMB's rate up to [`ENCODER_MAX`], reading the node's RTCP between frames; every REMB
/// is published on the returned channel.
fn spawn_following_publisher(
    mut transport: raw::RawTransport,
    ssrc: u32,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<Option<u64>>) {
    let (remb_tx, remb_rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut rate = ENCODER_MAX;
        let mut seq = 1u16;
        let mut next = tokio::time::Instant::now();
        for frame in 0u32.. {
            let keyframe = frame % 30 == 0;
            let frame_bytes = (rate / 8 / 30) as usize;
            let packets = frame_bytes.div_ceil(1000).max(1);
            for i in 0..packets {
                let body = vec![0x55; frame_bytes / packets];
                let payload = raw::vp8_payload(keyframe && i == 0, &body);
                let Ok(packet) = raw::rtp(ssrc, seq, frame * 3000, 96, i + 1 == packets, &payload)
                else {
                    return;
                };
                seq = seq.wrapping_add(1);
                if transport.send_rtp(&packet).await.is_err() {
                    return;
                }
            }
            next += Duration::from_millis(33);
            // Reads the node's RTCP until the next frame is due.
            loop {
                let left = next.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                let Ok(Some(raw::Inbound::Rtcp(rtcp))) = transport.recv(left).await else {
                    continue;
                };
                for message in Compound::new(&rtcp).flatten() {
                    if let RtcpPacket::Remb { bitrate, .. } = message {
                        rate = bitrate.0.min(ENCODER_MAX);
                        let _ = remb_tx.send(Some(bitrate.0));
                    }
                }
            }
        }
    });
    (task, remb_rx)
}

/// Waits up to `within` for a REMB that `holds`, returning it.
async fn remb_until(
    rembs: &mut watch::Receiver<Option<u64>>,
    within: Duration,
    what: &str,
    holds: impl Fn(u64) -> bool,
) -> u64 {
    let found = tokio::time::timeout(within, async {
        loop {
            if let Some(remb) = (*rembs.borrow_and_update()).filter(|&r| holds(r)) {
                return remb;
            }
            if rembs.changed().await.is_err() {
                panic!("the publisher stopped");
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "no REMB {what} within {within:?}: last {:?}",
            *rembs.borrow()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_remb_to_a_publisher_follows_its_best_viewers_downlink() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    let channel = rest.create_channel(true).await;
    let ws_url = server.ws_url();

    let mut publisher = RawParticipant::join(&server.url(""), &server.api_key, &channel, "camera")
        .await
        .unwrap();
    const SSRC: u32 = 0x7100;
    let transport = publisher
        .publish(&[raw::Track {
            kind: raw::TrackKind::Video,
            ssrc: SSRC,
        }])
        .await
        .unwrap();
    let (media, mut rembs) = spawn_following_publisher(transport, SSRC);
    // Nobody watches yet: the ceiling.
    let first = remb_until(&mut rembs, Duration::from_secs(10), "at all", |_| true).await;
    assert_eq!(first, REMB_CEILING);

    let relay = Relay::start(Bottleneck::new(
        SHAPED_BPS,
        Duration::from_millis(200),
        Duration::from_millis(10),
    ))
    .await;
    let shaped = SfuClient::join_filtered(
        &ws_url,
        &rest,
        &channel,
        "shaped",
        Some(relay.offer_filter()),
    )
    .await;
    let started = Instant::now();
    let low = remb_until(&mut rembs, Duration::from_secs(30), "near 600 kbps", |r| {
        r <= SHAPED_BPS + 100_000
    })
    .await;
    let lowered_after = started.elapsed();
    // It stays near the shaped downlink (the estimate saws around the capacity) while that
    // viewer is the only one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = (*rembs.borrow()).unwrap_or_default();
    assert!(
        held <= SHAPED_BPS * 3 / 2,
        "REMB {held} with only the shaped viewer"
    );
    let video_packets =
        |received: HashMap<String, Media>| received.values().map(|m| m.video.len()).sum::<usize>();
    let shaped_before = video_packets(shaped.received().await) as i64;

    // An unshaped viewer joins: its downlink sets the REMB, up to the encoder's maximum.
    let free = SfuClient::join(&ws_url, &rest, &channel, "free").await;
    let joined = Instant::now();
    let high = remb_until(&mut rembs, Duration::from_secs(40), "above 1 Mbps", |r| {
        r > 1_000_000
    })
    .await;
    let raised_after = joined.elapsed();
    let free_video = video_packets(free.received().await);
    let shaped_after = video_packets(shaped.received().await) as i64;
    eprintln!(
        "REMB: {first} with no viewer; {low} after {lowered_after:?} with the 600 kbps viewer \
         ({held} 5 s later); {high} {raised_after:?} after an unshaped viewer joined; video \
         packets: shaped +{}, free {free_video}",
        shaped_after - shaped_before
    );
    assert!(free_video > 0, "the unshaped viewer receives the video");

    media.abort();
    drop((shaped, free, publisher, relay, server));
}
