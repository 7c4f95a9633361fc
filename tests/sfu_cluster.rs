//! The control plane end to end, with real processes on loopback: two `mooyaho server` instances
//! sharing a real `redis-server`, two `mooyaho sfu` nodes reached over QUIC, and clients built
//! with the independent `webrtc` crate speaking the WebSocket API.

mod support;

use std::time::{Duration, Instant};

use mooyaho_test_support::peer::payloads;
use mooyaho_test_support::sfu_client::SfuClient;
use serde_json::{Value, json};
use support::{Redis, Rest, Server, SfuNode, eventually, media_flows_between};

const SECRET: &str = "cluster-secret-0123456789abcdef";
/// Payloads each publisher sends per kind.
const PACKETS: usize = 120;

/// Redis + 2 signaling instances + 2 SFU nodes (registered through the first instance), with
/// both nodes healthy as seen by both instances.
struct Cluster {
    servers: Vec<Server>,
    nodes: Vec<SfuNode>,
    _redis: Redis,
}

impl Cluster {
    async fn start() -> Self {
        let redis = Redis::start();
        let url = redis.url();
        let servers: Vec<_> = (0..2)
            .map(|_| {
                Server::start(&[
                    "--redis-url",
                    &url,
                    "--cluster-secret",
                    SECRET,
                    "--resume-grace-ms",
                    "300",
                ])
            })
            .collect();
        let nodes: Vec<_> = (0..2)
            .map(|_| SfuNode::start(SECRET, Some(&servers[0])))
            .collect();
        for server in &servers {
            for node in &nodes {
                wait_health(&server.rest(), node.id(), "healthy").await;
            }
        }
        Self {
            servers,
            nodes,
            _redis: redis,
        }
    }

    fn rest(&self, server: usize) -> Rest {
        self.servers[server].rest()
    }
}

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

/// The node a channel is placed on.
async fn placed_on(rest: &Rest, channel: &str) -> Option<u64> {
    let (status, body) = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["sfuServerId"].as_u64()
}

/// A new SFU channel with one publishing client (placement happens at the first publish);
/// returns the channel, its node and the client.
async fn place(server: &Server, name: &str) -> (String, u64, SfuClient) {
    let rest = server.rest();
    let channel = rest.create_channel(true).await;
    assert_eq!(
        placed_on(&rest, &channel).await,
        None,
        "placed before any publish"
    );
    let mut client = SfuClient::join(&server.ws_url(), &rest, &channel, name).await;
    client.publish().await;
    let node = placed_on(&rest, &channel)
        .await
        .unwrap_or_else(|| panic!("channel {channel} not placed after a publish"));
    (channel, node, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_webrtc_clients_on_two_instances_receive_each_others_media_and_a_second_channel_uses_the_other_node()
 {
    let cluster = Cluster::start().await;
    let channel = cluster.rest(0).create_channel(true).await;

    // Clients on instance 0, 1, 0: media events for sessions on instance 1 cross the bus.
    let mut clients = Vec::new();
    for (i, server) in [0usize, 1, 0].into_iter().enumerate() {
        let s = &cluster.servers[server];
        clients.push(SfuClient::join(&s.ws_url(), &s.rest(), &channel, &format!("user-{i}")).await);
    }
    for client in &mut clients {
        client.publish().await;
    }
    let node = placed_on(&cluster.rest(1), &channel).await.expect("placed");
    assert!(
        cluster.nodes.iter().any(|n| n.id() == node),
        "placed on unknown node {node}"
    );

    let ids: Vec<String> = clients.iter().map(|c| c.id.clone()).collect();
    let others = |i: usize| -> Vec<&str> {
        ids.iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| id.as_str())
            .collect()
    };
    for (i, client) in clients.iter_mut().enumerate() {
        client.publish_connected().await;
        client.subscribed_to(&others(i)).await;
        // The node is ICE-lite with its candidate in the SDP: trickled candidates are accepted.
        let reply = client
            .request(json!({ "type": "candidate", "isSFU": true, "candidate": null }))
            .await;
        assert_eq!(reply["type"], "ack", "{reply}");
    }

    let sent: Vec<_> = (0..clients.len())
        .map(|i| payloads(0xA0 + i as u8, PACKETS))
        .collect();
    futures_util::future::join_all(
        clients
            .iter()
            .zip(&sent)
            .map(|(c, (audio, video))| c.send_media(audio, video, Duration::from_millis(5))),
    )
    .await;

    for (i, client) in clients.iter().enumerate() {
        let received = client
            .wait_for(&others(i), PACKETS, Duration::from_secs(15))
            .await;
        for (j, id) in ids.iter().enumerate() {
            if i == j {
                let own = received.get(id).map(|m| m.audio.len() + m.video.len());
                assert!(
                    own.unwrap_or(0) == 0,
                    "{} got its own media back",
                    client.name
                );
                continue;
            }
            let got = &received[id];
            assert_eq!(
                got.audio.len(),
                PACKETS,
                "{} ← {id}: audio count",
                client.name
            );
            assert_eq!(
                got.video.len(),
                PACKETS,
                "{} ← {id}: video count",
                client.name
            );
            assert!(
                got.audio == sent[j].0,
                "{} ← {id}: audio payloads differ",
                client.name
            );
            assert!(
                got.video == sent[j].1,
                "{} ← {id}: video payloads differ",
                client.name
            );
        }
    }

    // The first node now reports three sessions; a second channel goes to the idle node.
    let rest = cluster.rest(1);
    let reported = eventually(Duration::from_secs(5), || async {
        sfu_server(&rest, node).await["load"]["sessions"].as_u64() >= Some(3)
    })
    .await;
    assert!(reported, "{}", sfu_server(&rest, node).await);
    let (second, second_node, _client) = place(&cluster.servers[1], "user-second").await;
    assert_ne!(second, channel);
    assert_ne!(
        second_node, node,
        "second channel placed on the busy node too"
    );
    assert_eq!(placed_on(&cluster.rest(0), &channel).await, Some(node));
}

/// Flips the first byte of a fingerprint.
fn wrong_fingerprint(fingerprint: &str) -> String {
    let replacement = if fingerprint.starts_with("00") {
        "11"
    } else {
        "00"
    };
    format!("{replacement}{}", &fingerprint[2..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_fingerprint_or_cluster_secret_is_refused() {
    let redis = Redis::start();
    let good_instance = Server::start(&["--redis-url", &redis.url(), "--cluster-secret", SECRET]);
    let bad_instance = Server::start(&[
        "--redis-url",
        &redis.url(),
        "--cluster-secret",
        "not-the-cluster-secret-at-all",
    ]);
    let good = SfuNode::start(SECRET, Some(&good_instance));
    let impostor = SfuNode::start(SECRET, None);
    let rest = good_instance.rest();
    let (status, body) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({
                "address": impostor.control.to_string(),
                "fingerprint": wrong_fingerprint(&impostor.fingerprint),
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let impostor_id = body["id"].as_u64().expect("id");

    // Control: the right fingerprint and secret give a healthy node.
    wait_health(&rest, good.id(), "healthy").await;

    // The pinned fingerprint does not match: never connected, and the reason is given.
    let refused = eventually(Duration::from_secs(5), || async {
        let view = sfu_server(&rest, impostor_id).await;
        view["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("fingerprint"))
    })
    .await;
    let view = sfu_server(&rest, impostor_id).await;
    assert!(refused, "no fingerprint error: {view}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let view = sfu_server(&rest, impostor_id).await;
        assert_eq!(view["health"], "unreachable", "{view}");
        assert!(
            view["load"].is_null(),
            "an unpinned node reported load: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The instance with the wrong secret is refused by the node.
    let bad_rest = bad_instance.rest();
    let refused = eventually(Duration::from_secs(5), || async {
        let view = sfu_server(&bad_rest, good.id()).await;
        view["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("refused"))
    })
    .await;
    let view = sfu_server(&bad_rest, good.id()).await;
    assert!(
        refused,
        "no refusal seen by the wrong-secret instance: {view}"
    );
    assert_ne!(view["health"], "healthy", "{view}");
    // …so it cannot place a room anywhere.
    let channel = bad_rest.create_channel(true).await;
    let mut client = SfuClient::join(&bad_instance.ws_url(), &bad_rest, &channel, "nobody").await;
    let reply = client
        .request(json!({ "type": "call", "isSFU": true, "sdp": "v=0\r\n" }))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "sfu_unavailable", "{reply}");
    assert_eq!(placed_on(&bad_rest, &channel).await, None);

    // Rooms only ever go to the node whose identity checks out.
    for i in 0..3 {
        let (_, node, _client) = place(&good_instance, &format!("user-{i}")).await;
        assert_eq!(node, good.id());
    }
    assert_eq!(
        sfu_server(&rest, impostor_id).await["health"],
        "unreachable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_and_disable_steer_new_rooms_and_undrain_restores_eligibility() {
    let cluster = Cluster::start().await;
    let rest = cluster.rest(0);
    let (a, b) = (cluster.nodes[0].id(), cluster.nodes[1].id());
    let server = &cluster.servers[1];

    let (status, body) = rest
        .call("POST", &format!("/sfu-servers/{a}/drain"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sfu_server(&cluster.rest(1), a).await["draining"], true);
    let mut keep = Vec::new();
    for i in 0..2 {
        let (_, node, client) = place(server, &format!("drained-{i}")).await;
        assert_eq!(node, b, "a room was placed on the draining node");
        keep.push(client);
    }

    // Undrain A and disable B: A is eligible again, and B is not.
    let (status, body) = rest
        .call(
            "PATCH",
            &format!("/sfu-servers/{a}"),
            Some(json!({ "draining": false })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest
        .call(
            "PATCH",
            &format!("/sfu-servers/{b}"),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["disabled"], true, "{body}");
    for i in 0..2 {
        let (_, node, client) = place(server, &format!("disabled-{i}")).await;
        assert_eq!(node, a, "a room was placed on the disabled node");
        keep.push(client);
    }

    // Re-enable B, disable A: placement follows.
    for (id, disabled) in [(b, false), (a, true)] {
        let (status, body) = rest
            .call(
                "PATCH",
                &format!("/sfu-servers/{id}"),
                Some(json!({ "disabled": disabled })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, node, _client) = place(server, "enabled").await;
    assert_eq!(node, b);

    // B hosts live rooms: deleting it is refused unless forced, which unplaces its channels.
    let (status, body) = rest
        .call("DELETE", &format!("/sfu-servers/{b}"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = rest
        .call("DELETE", &format!("/sfu-servers/{b}?force=true"), None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = rest.call("GET", &format!("/sfu-servers/{b}"), None).await;
    assert_eq!(status, 404);
    let (_, channels) = rest.call("GET", "/channels", None).await;
    let channels = channels.as_array().expect("channel list").clone();
    assert!(channels.len() >= 5, "{channels:?}");
    for channel in channels {
        assert_ne!(channel["sfuServerId"].as_u64(), Some(b), "{channel}");
    }
    // …and closes the rooms it hosted: registered again, the node reports none.
    let node_b = &cluster.nodes[1];
    let (status, body) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(
                json!({ "address": node_b.control.to_string(), "fingerprint": node_b.fingerprint }),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let again = body["id"].as_u64().expect("id");
    wait_health(&rest, again, "healthy").await;
    wait_usage(&rest, again, (0, 0), "a forced delete").await;
    drop(keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_is_unhealthy_within_three_seconds_and_new_rooms_avoid_it() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.nodes[0].id(), cluster.nodes[1].id());
    let rest = cluster.rest(1);
    // A hosts a room when it dies.
    let disable = |id: u64, disabled: bool| {
        let rest = rest.clone();
        async move {
            let path = format!("/sfu-servers/{id}");
            let (status, body) = rest
                .call("PATCH", &path, Some(json!({ "disabled": disabled })))
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    disable(b, true).await;
    let (channel, node, _client) = place(&cluster.servers[0], "victim").await;
    assert_eq!(node, a);
    disable(b, false).await;

    cluster.nodes[0].kill();
    let killed = Instant::now();
    // Both instances must see it within 3 s (3.5 s allows for the polling itself).
    for instance in [cluster.rest(1), cluster.rest(0)] {
        let mut last = Value::Null;
        while killed.elapsed() < Duration::from_millis(3500) {
            last = sfu_server(&instance, a).await;
            if last["health"] != "healthy" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = killed.elapsed();
        assert!(
            last["health"] == "unhealthy" || last["health"] == "unreachable",
            "{}: still {last} {took:?} after the kill",
            instance.base
        );
        eprintln!(
            "{}: node {a} {} {took:?} after the kill",
            instance.base, last["health"]
        );
    }

    for i in 0..3 {
        let (_, node, _client) = place(&cluster.servers[i % 2], &format!("after-{i}")).await;
        assert_eq!(node, b, "a new room was placed on the dead node");
    }
    // The dead node's channel was moved too (failover), not left pointing at it.
    assert_eq!(placed_on(&rest, &channel).await, Some(b));
}

/// The node's reported (rooms, transports).
async fn node_usage(rest: &Rest, id: u64) -> (u64, u64) {
    let view = sfu_server(rest, id).await;
    let load = &view["load"];
    (
        load["rooms"].as_u64().unwrap_or(u64::MAX),
        load["transports"].as_u64().unwrap_or(u64::MAX),
    )
}

async fn wait_usage(rest: &Rest, id: u64, want: (u64, u64), after: &str) {
    let ok = eventually(Duration::from_secs(8), || async {
        node_usage(rest, id).await == want
    })
    .await;
    let now = node_usage(rest, id).await;
    assert!(
        ok,
        "after {after}: node {id} has (rooms, transports) {now:?}, want {want:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaving_disconnecting_and_deleting_the_channel_release_transports_and_rooms() {
    let cluster = Cluster::start().await;
    let rest = cluster.rest(0);

    // Two members, one on each instance, each publishing and subscribing: 4 transports.
    let channel = rest.create_channel(true).await;
    let mut a = SfuClient::join(&cluster.servers[0].ws_url(), &rest, &channel, "a").await;
    let mut b = SfuClient::join(
        &cluster.servers[1].ws_url(),
        &cluster.rest(1),
        &channel,
        "b",
    )
    .await;
    a.publish().await;
    b.publish().await;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.subscribed_to(&[&b_id]).await;
    b.subscribed_to(&[&a_id]).await;
    a.publish_connected().await;
    b.publish_connected().await;
    let node = placed_on(&rest, &channel).await.expect("placed");
    wait_usage(&rest, node, (1, 4), "two members publish and subscribe").await;

    // `leave`: a's publish and subscribe transports go (its PeerConnections stay open).
    let reply = a.request(json!({ "type": "leave" })).await;
    assert_ne!(reply["type"], "error", "{reply}");
    wait_usage(&rest, node, (1, 2), "leave").await;
    // b is re-offered without a's tracks.
    b.subscribed_exactly(&[]).await;

    // b's socket drops; once the resume grace (300 ms) passes, its transports go.
    b.drop_socket();
    wait_usage(&rest, node, (1, 0), "disconnect").await;

    // A member that is still in the channel when it is deleted: the room and its transports go.
    let c_server = &cluster.servers[1];
    let mut c = SfuClient::join(&c_server.ws_url(), &c_server.rest(), &channel, "c").await;
    c.publish().await;
    c.publish_connected().await;
    assert_eq!(
        placed_on(&rest, &channel).await,
        Some(node),
        "the room moved"
    );
    wait_usage(&rest, node, (1, 1), "a new publisher").await;
    let (status, body) = rest
        .call("DELETE", &format!("/channels/{channel}"), None)
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    wait_usage(&rest, node, (0, 0), "deleting the channel").await;
    for other in &cluster.nodes {
        wait_usage(&rest, other.id(), (0, 0), "everything").await;
    }
    drop((a, b, c));
}

/// Issue 13 item 1: `mooyaho sfu --data-dir` keeps the node's certificate across restarts, and
/// registering again at the same address is idempotent — the same record (same id, one per
/// address), healthy again because the pinned fingerprint still matches. A restart without the
/// data dir re-pins the record to the new certificate; a data dir holding half an identity is
/// refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_its_data_dir_keeps_its_identity_and_its_record() {
    let server = Server::start(&["--cluster-secret", SECRET]);
    let rest = server.rest();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node");
    let listen = format!("127.0.0.1:{}", support::free_port());
    let with_dir = [
        "--control-listen",
        listen.as_str(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];

    let mut first = SfuNode::start_with(SECRET, Some(&server), &with_dir);
    wait_health(&rest, first.id(), "healthy").await;
    first.kill();
    let mut second = SfuNode::start_with(SECRET, Some(&server), &with_dir);
    assert_eq!(
        second.fingerprint, first.fingerprint,
        "the identity was kept"
    );
    assert_eq!(second.id(), first.id(), "the same record");
    wait_health(&rest, second.id(), "healthy").await;
    let (_, nodes) = rest.call("GET", "/sfu-servers", None).await;
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");

    // Without its data dir: a new certificate at the same address; the record follows it.
    second.kill();
    let third = SfuNode::start_with(SECRET, Some(&server), &["--control-listen", &listen]);
    assert_ne!(third.fingerprint, first.fingerprint);
    assert_eq!(third.id(), first.id());
    wait_health(&rest, third.id(), "healthy").await;
    let node = sfu_server(&rest, third.id()).await;
    let bare = |f: &str| f.replace(':', "").to_uppercase();
    assert_eq!(
        node["fingerprint"].as_str().map(bare),
        Some(bare(&third.fingerprint)),
        "{node}"
    );
    drop(third);

    // Half an identity (the certificate lost) is an error, not a silent new fingerprint.
    std::fs::remove_file(data_dir.join("control-certificate.der")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args([
            "sfu",
            "--cluster-secret",
            SECRET,
            "--control-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("holds only one of"), "{stderr}");
}

/// Issue 13 item 2: SIGKILL the node hosting an SFU channel whose three members (on two
/// signaling instances) stream media. Within the 3 s health window plus a look, the channel is
/// placed on the other node, every member gets `sfuRestart`, and the test client — like the
/// browser SDK, with nothing asked of the test — drops its PeerConnections, publishes again and
/// takes the new subscribe offer: media flows again, and the gap is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_hosting_node_moves_its_channel_and_media_flows_again() {
    let mut cluster = Cluster::start().await;
    let channel = cluster.rest(0).create_channel(true).await;
    let mut clients = Vec::new();
    for (i, server) in [0usize, 1, 0].into_iter().enumerate() {
        let s = &cluster.servers[server];
        clients.push(SfuClient::join(&s.ws_url(), &s.rest(), &channel, &format!("fo-{i}")).await);
    }
    for client in &mut clients {
        client.publish().await;
    }
    let streams: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.stream_media(0xB0 + i as u8, Duration::from_millis(20)))
        .collect();
    let started = Instant::now();
    let first = media_flows_between(&clients, 0, started, Duration::from_secs(15)).await;
    assert!(first.is_some(), "media never flowed before the kill");

    let host = placed_on(&cluster.rest(0), &channel).await.expect("placed");
    let (dead, survivor) = if cluster.nodes[0].id() == host {
        (0, 1)
    } else {
        (1, 0)
    };
    let survivor_id = cluster.nodes[survivor].id();
    cluster.nodes[dead].kill();
    let killed = Instant::now();

    // Where the gap goes: detection and re-placement (every member told), then the clients'
    // new PeerConnections.
    let told = eventually(Duration::from_secs(10), || async {
        clients.iter().all(|c| c.sub_state.borrow().restarts >= 1)
    })
    .await
    .then(|| killed.elapsed());
    let gap = media_flows_between(&clients, 1, killed, Duration::from_secs(10)).await;
    let states: Vec<_> = clients
        .iter()
        .map(|c| c.sub_state.borrow().clone())
        .collect();
    let gap = gap.unwrap_or_else(|| panic!("media did not flow again within 10 s: {states:?}"));
    eprintln!(
        "failover: media flowed again {gap:?} after SIGKILL of the hosting node (every member \
         told sfuRestart after {told:?})"
    );
    assert!(gap < Duration::from_secs(10));
    for (client, state) in clients.iter().zip(&states) {
        assert_eq!(state.restarts, 1, "{}: {state:?}", client.name);
        assert_eq!(state.recoveries, 1, "{}: {state:?}", client.name);
        assert!(
            state.restart_errors.is_empty(),
            "{}: {state:?}",
            client.name
        );
    }
    for server in 0..2 {
        assert_eq!(
            placed_on(&cluster.rest(server), &channel).await,
            Some(survivor_id)
        );
    }
    // Nothing was lost from the store: the channel keeps its three members.
    let (status, detail) = cluster
        .rest(1)
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail["channelSessions"].as_array().map(Vec::len),
        Some(3),
        "{detail}"
    );
    for stream in streams {
        stream.abort();
    }
}

/// Issue 13 item 2, bad case: the last healthy node dies. Members are told clearly (an
/// `error` with `sfu_unavailable`, not silence), the channel and its members stay, and once a
/// node is back a publish places the channel again and media flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_last_healthy_node_dies_members_are_told_and_a_later_publish_recovers() {
    let server = Server::start(&["--cluster-secret", SECRET, "--resume-grace-ms", "300"]);
    let rest = server.rest();
    let mut node = SfuNode::start(SECRET, Some(&server));
    wait_health(&rest, node.id(), "healthy").await;
    let channel = rest.create_channel(true).await;
    let mut a = SfuClient::join(&server.ws_url(), &rest, &channel, "last-a").await;
    let mut b = SfuClient::join(&server.ws_url(), &rest, &channel, "last-b").await;
    a.publish().await;
    b.publish().await;
    node.kill();

    for client in [&mut a, &mut b] {
        let error = client.expect("error").await;
        assert_eq!(error["code"], "sfu_unavailable", "{error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(&channel), "{error}");
    }
    assert_eq!(placed_on(&rest, &channel).await, None, "unplaced");
    let (_, detail) = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(detail["channelSessions"].as_array().map(Vec::len), Some(2));
    // A publish now is refused clearly too.
    let reply = a
        .request(json!({ "type": "call", "isSFU": true, "sdp": "v=0" }))
        .await;
    assert_eq!(reply["code"], "sfu_unavailable", "{reply}");

    // A new node: the next publishes place the channel there and media flows.
    let replacement = SfuNode::start(SECRET, Some(&server));
    wait_health(&rest, replacement.id(), "healthy").await;
    a.publish().await;
    b.publish().await;
    assert_eq!(placed_on(&rest, &channel).await, Some(replacement.id()));
    a.publish_connected().await;
    b.subscribed_to(&[&a.id]).await;
    let (audio, video) = payloads(0xC1, 40);
    a.send_media(&audio, &video, Duration::from_millis(5)).await;
    let received = b.wait_for(&[&a.id], 20, Duration::from_secs(15)).await;
    assert!(received[&a.id].audio.len() >= 20);
}

/// Issue 13 item 1: a node that restarted with its identity but without its rooms (SIGKILL,
/// then `mooyaho sfu --data-dir` at the same address) while signaling was down too. When the
/// signaling instance's link to it comes up, it asks the node which rooms it still has and places
/// the channel whose room was lost again at once — before anyone publishes — on the same record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_room_a_restart_lost_is_placed_again_when_the_link_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let signaling_dir = dir.path().join("signaling");
    let node_dir = dir.path().join("node");
    let listen = format!("127.0.0.1:{}", support::free_port());
    let signaling_args = [
        "--cluster-secret",
        SECRET,
        "--data-dir",
        signaling_dir.to_str().unwrap(),
    ];
    let node_args = [
        "--control-listen",
        listen.as_str(),
        "--data-dir",
        node_dir.to_str().unwrap(),
    ];

    let mut server = Server::start(&signaling_args);
    let mut node = SfuNode::start_with(SECRET, Some(&server), &node_args);
    let id = node.id();
    wait_health(&server.rest(), id, "healthy").await;
    let (channel, placed, client) = place(&server, "before-restart").await;
    assert_eq!(placed, id);
    let rooms = |rest: Rest| async move { sfu_server(&rest, id).await["load"]["rooms"].as_u64() };
    let reported = eventually(Duration::from_secs(5), || async {
        rooms(server.rest()).await == Some(1)
    })
    .await;
    assert!(reported, "{}", sfu_server(&server.rest(), id).await);
    drop(client);
    server.kill();
    node.kill();

    let server = Server::start(&signaling_args);
    let node = SfuNode::start_with(SECRET, Some(&server), &node_args);
    assert_eq!(node.id(), id, "the same record");
    let rest = server.rest();
    let replaced = eventually(Duration::from_secs(10), || async {
        rooms(rest.clone()).await == Some(1)
    })
    .await;
    assert!(
        replaced,
        "the lost room was not replaced: {}",
        sfu_server(&rest, id).await
    );
    assert_eq!(placed_on(&rest, &channel).await, Some(id));

    // Members publish into the new room (no further room is created).
    let mut a = SfuClient::join(&server.ws_url(), &rest, &channel, "after-a").await;
    let mut b = SfuClient::join(&server.ws_url(), &rest, &channel, "after-b").await;
    a.publish().await;
    b.publish().await;
    a.publish_connected().await;
    b.subscribed_to(&[&a.id]).await;
    let (audio, video) = payloads(0xD1, 40);
    a.send_media(&audio, &video, Duration::from_millis(5)).await;
    let received = b.wait_for(&[&a.id], 20, Duration::from_secs(15)).await;
    assert!(received[&a.id].video.len() >= 20);
    assert_eq!(rooms(rest.clone()).await, Some(1));
    assert_eq!(placed_on(&rest, &channel).await, Some(id));
}

/// Issue 13 item 3: `POST /sfu-servers/{id}/drain` moves a live node's channel to the other node
/// while its members stream (they get `sfuRestart` and media flows again), the old room is closed
/// on the node, the node reports `drained: true` and is deleted without `force`. Draining the last
/// healthy node while it hosts a channel is a 409 with a message saying why; an unknown id is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_a_node_moves_its_channel_while_media_flows_then_it_is_deleted_without_force() {
    let cluster = Cluster::start().await;
    let channel = cluster.rest(0).create_channel(true).await;
    let mut clients = Vec::new();
    for (i, server) in [0usize, 1].into_iter().enumerate() {
        let s = &cluster.servers[server];
        clients.push(SfuClient::join(&s.ws_url(), &s.rest(), &channel, &format!("dr-{i}")).await);
    }
    for client in &mut clients {
        client.publish().await;
    }
    let streams: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.stream_media(0xE0 + i as u8, Duration::from_millis(20)))
        .collect();
    let first = media_flows_between(&clients, 0, Instant::now(), Duration::from_secs(15)).await;
    assert!(first.is_some(), "media never flowed before the drain");
    let rest = cluster.rest(1);
    let host = placed_on(&rest, &channel).await.expect("placed");
    let other = cluster
        .nodes
        .iter()
        .map(SfuNode::id)
        .find(|id| *id != host)
        .expect("two nodes");

    let (status, body) = rest.call("POST", "/sfu-servers/9999/drain", None).await;
    assert_eq!(status, 404, "{body}");
    let drained_at = Instant::now();
    let (status, body) = rest
        .call("POST", &format!("/sfu-servers/{host}/drain"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["draining"].clone(), body["drained"].clone()),
        (json!(true), json!(false))
    );

    let gap = media_flows_between(&clients, 1, drained_at, Duration::from_secs(10)).await;
    let states: Vec<_> = clients
        .iter()
        .map(|c| c.sub_state.borrow().clone())
        .collect();
    let gap = gap.unwrap_or_else(|| panic!("media did not flow again after the drain: {states:?}"));
    eprintln!("drain: media flowed again {gap:?} after POST /drain");
    assert_eq!(placed_on(&rest, &channel).await, Some(other));
    let drained = eventually(Duration::from_secs(5), || async {
        sfu_server(&rest, host).await["drained"] == true
    })
    .await;
    assert!(drained, "{}", sfu_server(&rest, host).await);
    wait_usage(&rest, host, (0, 0), "the drain").await;
    let (status, body) = rest
        .call("DELETE", &format!("/sfu-servers/{host}"), None)
        .await;
    assert_eq!(status, 204, "{body}");

    // The other node is the last healthy one and hosts the channel: nowhere to move it.
    let (status, body) = rest
        .call("POST", &format!("/sfu-servers/{other}/drain"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("no other healthy SFU node")),
        "{body}"
    );
    assert_eq!(sfu_server(&rest, other).await["draining"], false);
    assert_eq!(
        placed_on(&rest, &channel).await,
        Some(other),
        "nothing lost"
    );
    for stream in streams {
        stream.abort();
    }
}

/// Issue 13 item 3: SIGTERM on a registered `mooyaho sfu` drains it — its channel moves to the
/// other node while the members stream (media flows again there) — and then it exits by itself,
/// with success, long before its drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_on_a_node_drains_it_then_it_exits() {
    let mut cluster = Cluster::start().await;
    let channel = cluster.rest(0).create_channel(true).await;
    let mut clients = Vec::new();
    for i in 0..2 {
        let s = &cluster.servers[0];
        clients.push(SfuClient::join(&s.ws_url(), &s.rest(), &channel, &format!("term-{i}")).await);
    }
    for client in &mut clients {
        client.publish().await;
    }
    let streams: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.stream_media(0xF0 + i as u8, Duration::from_millis(20)))
        .collect();
    let first = media_flows_between(&clients, 0, Instant::now(), Duration::from_secs(15)).await;
    assert!(first.is_some(), "media never flowed before SIGTERM");
    let rest = cluster.rest(0);
    let host = placed_on(&rest, &channel).await.expect("placed");
    let index = cluster.nodes.iter().position(|n| n.id() == host).unwrap();
    let other = cluster.nodes[1 - index].id();

    let terminated = Instant::now();
    cluster.nodes[index].terminate();
    let gap = media_flows_between(&clients, 1, terminated, Duration::from_secs(10)).await;
    assert!(gap.is_some(), "media did not flow again after SIGTERM");
    assert_eq!(placed_on(&rest, &channel).await, Some(other));
    let status =
        tokio::task::block_in_place(|| cluster.nodes[index].wait_exit(Duration::from_secs(10)));
    let took = terminated.elapsed();
    eprintln!("SIGTERM: media back after {gap:?}; the node exited after {took:?} with {status:?}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(sfu_server(&rest, host).await["drained"], true);
    for stream in streams {
        stream.abort();
    }
}

/// Audio payloads from `stream` carrying `tag` (their first byte) that `client` received.
async fn tagged_audio(client: &SfuClient, stream: &str, tag: u8) -> usize {
    client.received().await.get(stream).map_or(0, |m| {
        m.audio.iter().filter(|p| p.first() == Some(&tag)).count()
    })
}

/// Issue 13 item 4: the signaling instance of an SFU-channel member is killed (SIGKILL). Media
/// does not go through signaling: what the member publishes keeps reaching the others while no
/// instance holds its socket; it resumes its session on the other instance (`reuseId`, same
/// PeerConnections) and publishes again there, and that new publish reaches the others too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_signaling_instance_dies_keeps_its_media_and_publishes_again_after_resuming()
{
    let mut cluster = Cluster::start().await;
    let channel = cluster.rest(1).create_channel(true).await;
    let (doomed, survivor) = (&cluster.servers[0], &cluster.servers[1]);
    let mut member = SfuClient::join(&doomed.ws_url(), &doomed.rest(), &channel, "member").await;
    let mut other = SfuClient::join(&survivor.ws_url(), &survivor.rest(), &channel, "other").await;
    member.publish().await;
    other.publish().await;
    member.publish_connected().await;
    other.subscribed_to(&[&member.id]).await;
    member.subscribed_to(&[&other.id]).await;
    let streaming = member.stream_media(0xB1, Duration::from_millis(10));
    other
        .wait_for(&[&member.id], 20, Duration::from_secs(15))
        .await;

    cluster.servers[0].kill();
    let at_kill = tagged_audio(&other, &member.id, 0xB1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let while_dead = tagged_audio(&other, &member.id, 0xB1).await;
    assert!(
        while_dead >= at_kill + 50,
        "media stalled while the member's instance was dead: {at_kill} → {while_dead}"
    );

    // Resume on the surviving instance, then publish again there: the new publish reaches the
    // other member (a new re-offer through the surviving instance), and the old media stops.
    let survivor = &cluster.servers[1];
    member.resume(&survivor.ws_url()).await;
    let reply = member.request(json!({ "type": "listSessions" })).await;
    let listed = reply.to_string();
    assert!(
        listed.contains(&member.id) && listed.contains(&other.id),
        "{reply}"
    );
    streaming.abort();
    member.publish().await;
    member.publish_connected().await;
    let restarted = member.stream_media(0xB2, Duration::from_millis(10));
    let arrived = eventually(Duration::from_secs(15), || async {
        tagged_audio(&other, &member.id, 0xB2).await >= 20
    })
    .await;
    assert!(
        arrived,
        "the publish made after resuming did not reach the other member: {} payloads",
        tagged_audio(&other, &member.id, 0xB2).await
    );
    // The member still receives the other member's media on its original subscribe PC.
    let other_streaming = other.stream_media(0xC1, Duration::from_millis(10));
    let received = eventually(Duration::from_secs(15), || async {
        tagged_audio(&member, &other.id, 0xC1).await >= 20
    })
    .await;
    assert!(received, "the resumed member stopped receiving");
    restarted.abort();
    other_streaming.abort();
}
