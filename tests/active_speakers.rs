//! Active speakers end to end: publishers send RFC 6464 audio levels through `mooyaho dev`'s
//! embedded node, and the channel's members hear who speaks. Levels written by the `webrtc`
//! crate's publishers (chosen bytes, malformed ones included), and levels aiortc computes
//! itself from the audio it encodes (loud noise and digital silence).

mod support;

use std::time::{Duration, Instant};

use mooyaho_test_support::aiortc::PyPeer;
use mooyaho_test_support::sfu_client::SfuClient;
use mooyaho_test_support::ws::Ws;
use serde_json::{Value, json};
use support::{Server, eventually};

/// 20 ms of Opus per packet, as browsers send.
const PTIME: Duration = Duration::from_millis(20);

fn speakers(message: &Value) -> Vec<String> {
    message["speakers"]
        .as_array()
        .unwrap_or_else(|| panic!("no speakers list: {message}"))
        .iter()
        .map(|s| {
            let level = s["level"].as_f64().unwrap_or_else(|| panic!("{message}"));
            assert!(level > 0.0 && level <= 1.0, "{message}");
            s["sessionId"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// `mooyaho dev` once its embedded node reports healthy.
async fn dev_with_healthy_node(dir: &std::path::Path) -> Server {
    let server = Server::dev(dir, &[]);
    let rest = server.rest();
    let healthy = eventually(Duration::from_secs(10), || async {
        let (_, nodes) = rest.call("GET", "/sfu-servers", None).await;
        nodes
            .as_array()
            .is_some_and(|n| n.len() == 1 && n[0]["health"] == "healthy")
    })
    .await;
    assert!(healthy, "the embedded node never became healthy");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loud_publisher_is_named_and_silence_and_malformed_levels_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev_with_healthy_node(dir.path()).await;
    let rest = server.rest();

    let channel = rest.create_channel(true).await;
    let mut loud = SfuClient::join(&server.ws_url(), &rest, &channel, "loud").await;
    let mut quiet = SfuClient::join(&server.ws_url(), &rest, &channel, "quiet").await;
    let mut hostile = SfuClient::join(&server.ws_url(), &rest, &channel, "hostile").await;
    let mut listener = SfuClient::join(&server.ws_url(), &rest, &channel, "listener").await;
    for client in [&mut loud, &mut quiet, &mut hostile] {
        client.publish().await;
    }
    for client in [&loud, &quiet, &hostile] {
        client.publish_connected().await;
    }

    // Four seconds of audio: a steady -10 dBov voice, silence, and a hostile publisher whose
    // level elements are too long (the first byte would read as 0 dBov, the loudest).
    let packets = 200;
    let started = Instant::now();
    let sending = async {
        tokio::join!(
            loud.send_audio_levels(0, packets, PTIME, &[0x80 | 10]),
            quiet.send_audio_levels(0, packets, PTIME, &[0x7f]),
            hostile.send_audio_levels(0, packets / 2, PTIME, &[0x80, 0, 0]),
        );
        hostile
            .send_audio_levels(packets / 2, packets / 2, PTIME, &[0x80; 16])
            .await;
    };
    let listening = async {
        let mut seen = Vec::new();
        loop {
            let message = listener.expect("activeSpeakers").await;
            let named = speakers(&message);
            seen.push(named.clone());
            if named.first() == Some(&loud.id) {
                return (started.elapsed(), seen);
            }
        }
    };
    let ((named_after, seen), ()) = tokio::join!(listening, sending);
    assert!(
        named_after <= Duration::from_secs(1),
        "the loud publisher was named after {named_after:?}: {seen:?}"
    );
    for named in &seen {
        assert!(
            !named.contains(&quiet.id) && !named.contains(&hostile.id),
            "silence or a malformed level ranked: {seen:?}"
        );
    }

    // The malformed elements were dropped and counted (the node reports every second).
    let counted = eventually(Duration::from_secs(10), || async {
        let (_, text) = rest.call("GET", "/metrics", None).await;
        text.as_str().unwrap_or_default().lines().any(|line| {
            line.starts_with("mooyaho_sfu_audio_level_malformed_total{")
                && line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(100.0)
        })
    })
    .await;
    assert!(counted, "malformed audio levels not counted in /metrics");

    // The publishers themselves hear it too (every member of the channel does).
    let heard = quiet.expect("activeSpeakers").await;
    assert!(speakers(&heard).iter().all(|s| *s == loud.id), "{heard}");

    // Once everyone is silent the ranking empties.
    loud.send_audio_levels(packets, 100, PTIME, &[0x7f]).await;
    let emptied = tokio::time::timeout(Duration::from_secs(10), async {
        while !speakers(&listener.expect("activeSpeakers").await).is_empty() {}
    })
    .await;
    assert!(emptied.is_ok(), "the ranking never emptied");
}

/// The independent-stack proof: two aiortc publishers, whose RFC 6464 levels aiortc
/// computes from the audio it encodes, one sending loud noise and one digital silence. A
/// listener hears the loud one named, and the silent one never.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aiortc_levels_name_the_loud_publisher_and_never_the_silent_one() {
    let dir = tempfile::tempdir().unwrap();
    // Importing aiortc takes seconds: start both interpreters before the server.
    let mut loud = PyPeer::spawn("publisher", "loud").unwrap();
    let mut silent = PyPeer::spawn("silent-publisher", "silent").unwrap();
    let server = dev_with_healthy_node(dir.path()).await;
    let rest = server.rest();
    let channel = rest.create_channel(true).await;
    let mut listener = SfuClient::join(&server.ws_url(), &rest, &channel, "listener").await;

    // Each aiortc peer publishes through its own WebSocket session: `call {isSFU}` with
    // aiortc's offer, `answered` back to it.
    let mut sessions = Vec::new();
    for peer in [&mut loud, &mut silent] {
        let (mut ws, _) = Ws::enter(&server.ws_url(), &rest, &channel, &peer.name).await;
        let offer = peer.recv("offer", Duration::from_secs(20)).await.unwrap();
        let reply = ws
            .request(json!({ "type": "call", "isSFU": true, "sdp": offer }))
            .await;
        assert_eq!(reply["type"], "answered", "{}: {reply}", peer.name);
        peer.send(json!({ "answer": reply["sdp"] })).await.unwrap();
        sessions.push(ws);
    }
    let (loud_id, silent_id) = (sessions[0].id.clone(), sessions[1].id.clone());

    // aiortc needs a few seconds for ICE and DTLS on a loaded machine; then the loud publisher
    // must lead the ranking, and no ranking may name the silent one.
    let mut seen = Vec::new();
    let named = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let ranking = speakers(&listener.expect("activeSpeakers").await);
            seen.push(ranking.clone());
            if ranking.first() == Some(&loud_id) {
                return;
            }
        }
    })
    .await;
    assert!(
        named.is_ok(),
        "the loud aiortc publisher was never named: {seen:?}"
    );
    // A few more rankings (every 200 ms while anything changes).
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            seen.push(speakers(&listener.expect("activeSpeakers").await));
        }
    })
    .await;
    assert!(
        seen.iter().all(|ranking| !ranking.contains(&silent_id)),
        "digital silence ranked: {seen:?}"
    );

    // Both really published: their reports name what they sent.
    for peer in [&mut loud, &mut silent] {
        let report = peer.report().await.unwrap();
        let audio = report["audio"].as_array().map_or(0, Vec::len);
        assert!(audio > 0, "{}: sent no audio: {report}", peer.name);
    }
}
