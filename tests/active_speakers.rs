//! Active speakers end to end: publishers built with the `webrtc` crate send RFC 6464 audio
//! levels through `mooyaho dev`'s embedded node, and the channel's members hear who speaks.

mod support;

use std::time::{Duration, Instant};

use mooyaho_test_support::sfu_client::SfuClient;
use serde_json::Value;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loud_publisher_is_named_and_silence_and_malformed_levels_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    let healthy = eventually(Duration::from_secs(10), || async {
        let (_, nodes) = rest.call("GET", "/sfu-servers", None).await;
        nodes
            .as_array()
            .is_some_and(|n| n.len() == 1 && n[0]["health"] == "healthy")
    })
    .await;
    assert!(healthy, "the embedded node never became healthy");

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
