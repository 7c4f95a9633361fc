//! Interop through real UDP on loopback with aiortc ([`mooyaho_test_support::aiortc`]): an
//! aiortc publisher encodes and sends Opus + VP8 through the SFU; two aiortc subscribers receive
//! the publisher's RTP payloads byte-identical and in order, and decode the video. The control
//! plane's role is played by this test.

use std::time::Duration;

use anyhow::Context as _;
use mooyaho_media::{Node, NodeConfig};
use mooyaho_test_support::aiortc::PyPeer;
use serde_json::{Value, json};

/// Bound on each signaling step.
const STEP: Duration = Duration::from_secs(20);
/// Bound on all subscribers getting enough media (they report ready at 100 packets per kind and
/// 20 decoded frames; aiortc sends ~50 audio and ~60 video packets a second).
const MEDIA: Duration = Duration::from_secs(25);
const SUBSCRIBERS: usize = 2;
const MIN_PACKETS: usize = 50;
const MIN_FRAMES: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publisher_reaches_two_aiortc_subscribers_intact() -> anyhow::Result<()> {
    let (node, _events) = Node::start(&NodeConfig::loopback(1))?;
    let room = node.create_room().await?;

    // Start every interpreter first: importing aiortc takes a while.
    let mut publisher = PyPeer::spawn("publisher", "publisher")?;
    let mut subscribers = (0..SUBSCRIBERS)
        .map(|i| PyPeer::spawn("subscriber", &format!("subscriber-{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let offer = publisher.recv("offer", STEP).await?;
    let answer = node.publish(room, "publisher", as_str(&offer)?).await?;
    publisher.send(json!({ "answer": answer })).await?;

    for subscriber in &mut subscribers {
        let offer = node
            .subscribe_offer(room, &subscriber.name)
            .await?
            .context("nothing to subscribe to")?;
        subscriber.send(json!({ "offer": offer })).await?;
        let answer = subscriber.recv("answer", STEP).await?;
        node.subscribe_answer(room, &subscriber.name, as_str(&answer)?)
            .await?;
    }

    let deadline = tokio::time::Instant::now() + MEDIA;
    for subscriber in &mut subscribers {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        subscriber.recv("ready", left).await?;
    }
    // Subscribers report first, so that the publisher's log covers all they received.
    let mut received = Vec::new();
    for subscriber in &mut subscribers {
        received.push(subscriber.report().await?);
    }
    let sent = publisher.report().await?;
    let sent_audio = hex_list(&sent, "audio")?;
    let sent_video = hex_list(&sent, "video")?;

    for (subscriber, report) in subscribers.iter().zip(&received) {
        let name = &subscriber.name;
        let audio = hex_list(report, "audio")?;
        let video = hex_list(report, "video")?;
        let audio_start = assert_contiguous_run(name, "audio", &audio, &sent_audio);
        let video_start = assert_contiguous_run(name, "video", &video, &sent_video);
        eprintln!(
            "{name}: audio {} packets from sent[{audio_start}], video {} packets from \
             sent[{video_start}] (publisher sent {} / {}), {} RTX, frames {}",
            audio.len(),
            video.len(),
            sent_audio.len(),
            sent_video.len(),
            report["rtx_packets"],
            report["frames"],
        );
        assert!(
            starts_vp8_keyframe(&hex::decode(&video[0])),
            "{name}: video does not start at a VP8 keyframe: {}",
            &video[0][..video[0].len().min(40)]
        );
        let frames = report["frames"]["video"].as_u64().unwrap_or(0);
        assert!(
            frames >= MIN_FRAMES,
            "{name}: decoded {frames} video frames"
        );
        // The stream id of every forwarded track names the publishing session.
        assert_eq!(
            report["stream_ids"],
            json!(["publisher", "publisher"]),
            "{name}: stream ids"
        );
        assert_eq!(report["connection_state"], "connected", "{name}");
    }

    let stats = node.stats().await?;
    let counters = stats.workers[0].counters;
    assert_eq!(counters.srtp_auth_failures, 0, "{counters:?}");
    assert_eq!(counters.media_unauthenticated, 0, "{counters:?}");
    // Every RTP packet aiortc sent was understood (negotiated SSRCs and payload types).
    let core = stats.workers[0].core.counters;
    assert_eq!(
        (core.rtp_unknown_ssrc, core.rtp_unknown_pt),
        (0, 0),
        "{core:?}"
    );

    node.close_room(room).await?;
    let stats = node.stats().await?;
    assert_eq!((stats.rooms(), stats.transports()), (0, 0));
    Ok(())
}

/// `received` must be a run of consecutive entries of `sent` (a subscriber may join late and
/// the publisher keeps sending after the subscriber's report), and long enough to mean something.
fn assert_contiguous_run(name: &str, kind: &str, received: &[String], sent: &[String]) -> usize {
    assert!(
        received.len() >= MIN_PACKETS,
        "{name}: only {} {kind} packets received (publisher sent {})",
        received.len(),
        sent.len()
    );
    let found = (0..sent.len())
        .filter(|&start| sent[start] == received[0])
        .find(|&start| sent[start..].starts_with(received));
    if let Some(start) = found {
        return start;
    }
    // Say where it goes wrong: align on the first payload and find the first difference.
    let detail = match sent.iter().position(|p| *p == received[0]) {
        None => "the first received payload was never sent".to_owned(),
        Some(start) => {
            let at = received
                .iter()
                .zip(&sent[start..])
                .position(|(r, s)| r != s)
                .unwrap_or(sent.len() - start);
            let unknown = received.iter().filter(|p| !sent.contains(p)).count();
            format!(
                "aligned at sent[{start}], differs at received[{at}] of {}; {unknown} payloads \
                 were never sent",
                received.len()
            )
        }
    };
    panic!("{name}: {kind} payloads are not a contiguous run of the publisher's: {detail}");
}

/// Whether a VP8 RTP payload (RFC 7741 §4.2) starts a keyframe: S=1, partition 0, P bit clear.
fn starts_vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let (start, partition) = (first & 0x10 != 0, first & 0x07);
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&x) = payload.get(1) else {
            return false;
        };
        at = 2;
        if x & 0x80 != 0 {
            // PictureID, 15 bits when M is set.
            at += if payload.get(2).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/KEYIDX
        }
    }
    start && partition == 0 && payload.get(at).is_some_and(|b| b & 0x01 == 0)
}

fn as_str(value: &Value) -> anyhow::Result<&str> {
    value.as_str().context("expected a string")
}

fn hex_list(report: &Value, key: &str) -> anyhow::Result<Vec<String>> {
    report[key]
        .as_array()
        .with_context(|| format!("report has no {key:?} list"))?
        .iter()
        .map(|v| as_str(v).map(str::to_owned))
        .collect()
}

mod hex {
    pub(super) fn decode(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex payload"))
            .collect()
    }
}
