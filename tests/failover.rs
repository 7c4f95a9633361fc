//! Failover beyond a killed node (issue 13, DESIGN §7.1), with real processes on loopback:
//! `mooyaho server` instances (on a real Redis where there are several), `mooyaho sfu` nodes
//! reached over QUIC, and clients built with the independent `webrtc` crate.
//!
//! - A node whose worker is stuck (alive, making no progress) is failed over like a dead one.

mod support;

use std::time::{Duration, Instant};

use mooyaho_test_support::sfu_client::SfuClient;
use serde_json::{Value, json};
use support::{Rest, Server, SfuNode, eventually, media_flows_between};

const SECRET: &str = "cluster-secret-0123456789abcdef";

async fn sfu_server(rest: &Rest, id: u64) -> Value {
    let (status, body) = rest.call("GET", &format!("/sfu-servers/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_health(rest: &Rest, id: u64, health: &str) {
    let ok = eventually(Duration::from_secs(10), || async {
        sfu_server(rest, id).await["health"] == health
    })
    .await;
    assert!(
        ok,
        "node {id} never {health}: {}",
        sfu_server(rest, id).await
    );
}

async fn set_disabled(rest: &Rest, id: u64, disabled: bool) {
    let (status, body) = rest
        .call(
            "PATCH",
            &format!("/sfu-servers/{id}"),
            Some(json!({ "disabled": disabled })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The node a channel is placed on.
async fn placed_on(rest: &Rest, channel: &str) -> Option<u64> {
    let (status, body) = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["sfuServerId"].as_u64()
}

/// A new SFU channel placed on `node` (every other node in `others` is disabled meanwhile),
/// with `members` publishing clients streaming media tagged from `tag`.
async fn channel_on(
    server: &Server,
    node: u64,
    others: &[u64],
    members: usize,
    tag: u8,
) -> (String, Vec<SfuClient>) {
    let rest = server.rest();
    for other in others {
        set_disabled(&rest, *other, true).await;
    }
    let channel = rest.create_channel(true).await;
    let mut clients = Vec::new();
    for i in 0..members {
        let name = format!("c{tag:x}-{i}");
        let mut client = SfuClient::join(&server.ws_url(), &rest, &channel, &name).await;
        client.publish().await;
        clients.push(client);
    }
    for other in others {
        set_disabled(&rest, *other, false).await;
    }
    assert_eq!(placed_on(&rest, &channel).await, Some(node));
    (channel, clients)
}

/// Audio payloads each client has received from each other one so far.
async fn audio_counts(clients: &[SfuClient]) -> Vec<usize> {
    let mut counts = Vec::new();
    for client in clients {
        let received = client.received().await;
        for other in clients.iter().filter(|o| o.id != client.id) {
            counts.push(received.get(&other.id).map_or(0, |m| m.audio.len()));
        }
    }
    counts
}

/// Issue 13 review: a worker that stops making progress (here: blocked for good by the
/// debug-build hook `MOOYAHO_DEBUG_WORKER_WEDGE`, its thread alive) used to hide behind its last
/// stats for 10 s + 3 s. The node's watchdog sees its progress counter stand still for 2 s, the
/// node exits like one whose worker died, and signaling moves its channel: every member gets
/// `sfuRestart` and media flows again on the other node. A channel on that other node never
/// notices (no restart, its media keeps flowing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_worker_fails_its_node_over_like_a_dead_one_and_a_room_elsewhere_is_unharmed() {
    let dir = tempfile::tempdir().unwrap();
    let wedge = dir.path().join("wedge");
    let server = Server::start(&["--cluster-secret", SECRET]);
    let rest = server.rest();
    let mut stuck = SfuNode::start_with_env(
        SECRET,
        Some(&server),
        &[],
        &[("MOOYAHO_DEBUG_WORKER_WEDGE", wedge.to_str().unwrap())],
    );
    let honest = SfuNode::start(SECRET, Some(&server));
    let (a, b) = (stuck.id(), honest.id());
    wait_health(&rest, a, "healthy").await;
    wait_health(&rest, b, "healthy").await;

    let (channel, clients) = channel_on(&server, a, &[b], 3, 0x10).await;
    let (_, bystanders) = channel_on(&server, b, &[a], 2, 0x20).await;
    let streams: Vec<_> = clients
        .iter()
        .chain(&bystanders)
        .enumerate()
        .map(|(i, c)| c.stream_media(0xA0 + i as u8, Duration::from_millis(20)))
        .collect();
    let started = Instant::now();
    for group in [&clients, &bystanders] {
        let flowing = media_flows_between(group, 0, started, Duration::from_secs(15)).await;
        assert!(flowing.is_some(), "media never flowed before the wedge");
    }

    std::fs::write(&wedge, b"").unwrap();
    let wedged = Instant::now();
    let exited = tokio::task::spawn_blocking(move || {
        let status = stuck.wait_exit(Duration::from_secs(15));
        (status, wedged.elapsed(), stuck)
    });
    let told = eventually(Duration::from_secs(15), || async {
        clients.iter().all(|c| c.sub_state.borrow().restarts >= 1)
    })
    .await
    .then(|| wedged.elapsed());
    let gap = media_flows_between(&clients, 1, wedged, Duration::from_secs(15)).await;
    let (status, exit_after, _stuck) = exited.await.unwrap();
    let states: Vec<_> = clients
        .iter()
        .map(|c| c.sub_state.borrow().clone())
        .collect();
    eprintln!(
        "stuck worker: node exited {exit_after:?} after the wedge ({status:?}); every member \
         told sfuRestart after {told:?}; media flowed again after {gap:?}"
    );
    let status = status.expect("the node with a stuck worker kept running");
    assert!(
        !status.success(),
        "a stuck worker must exit non-zero: {status}"
    );
    // The watchdog's 2 s plus at most one housekeeping second before the hook wedges: well
    // inside the 10 s + 3 s a stuck worker used to hide for.
    assert!(exit_after < Duration::from_secs(8), "{exit_after:?}");
    // Told within the dead-node budget's order (a stuck worker used to hide for 10 s + 3 s).
    let told = told.unwrap_or_else(|| panic!("not every member was told: {states:?}"));
    assert!(told < Duration::from_secs(8), "{told:?}");
    let gap = gap.unwrap_or_else(|| panic!("media did not flow again: {states:?}"));
    assert!(gap < Duration::from_secs(15));
    assert_eq!(placed_on(&rest, &channel).await, Some(b));
    for (client, state) in clients.iter().zip(&states) {
        assert_eq!(state.restarts, 1, "{}: {state:?}", client.name);
        assert!(
            state.restart_errors.is_empty(),
            "{}: {state:?}",
            client.name
        );
    }

    // The channel on the other node: no restart, and its media still advances.
    let before = audio_counts(&bystanders).await;
    let advanced = eventually(Duration::from_secs(10), || async {
        let now = audio_counts(&bystanders).await;
        now.iter().zip(&before).all(|(now, then)| now > then)
    })
    .await;
    assert!(advanced, "the bystanders' media stopped: {before:?}");
    for client in &bystanders {
        assert_eq!(client.sub_state.borrow().restarts, 0, "{}", client.name);
    }
    for stream in streams {
        stream.abort();
    }
}
