//! Node capacity and a channel spanning nodes (issue 15 items 1 and 3), with real processes:
//! `mooyaho server` and two `mooyaho sfu --max-transports 2`, clients built with the `webrtc`
//! crate. Members beyond the first node's cap are served by the second node; with both full a
//! member gets `sfu_full` and nothing is lost; a garbage cap is refused at start.

mod support;

use std::time::{Duration, Instant};

use mooyaho_test_support::sfu_client::SfuClient;
use serde_json::{Value, json};
use support::{Rest, Server, SfuNode, eventually};

const SECRET: &str = "cluster-secret-0123456789abcdef";

async fn get(rest: &Rest, path: &str) -> Value {
    let (status, body) = rest.call("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn wait_healthy(rest: &Rest, id: u64) {
    let path = format!("/sfu-servers/{id}");
    let ok = eventually(Duration::from_secs(10), || async {
        get(rest, &path).await["health"] == "healthy"
    })
    .await;
    assert!(ok, "node {id} never healthy: {}", get(rest, &path).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_beyond_the_first_node_s_cap_are_served_by_the_second_and_a_full_fleet_says_so() {
    // Spans are opt-in (several signaling instances do not share their relay links yet).
    let server = Server::start(&["--cluster-secret", SECRET, "--span-nodes"]);
    let rest = server.rest();
    let cap = ["--max-transports", "2"];
    let first = SfuNode::start_with(SECRET, Some(&server), &cap);
    wait_healthy(&rest, first.id()).await;
    let channel = rest.create_channel(true).await;

    // Two publishers fill the first node (the only one yet): each publishes and receives the
    // other, so it holds 4 transports — a member already on a node may open its other side.
    let mut members = Vec::new();
    for name in ["p1", "p2"] {
        let mut client = SfuClient::join(&server.ws_url(), &rest, &channel, name).await;
        client.publish().await;
        members.push(client);
    }
    let detail = get(&rest, &format!("/channels/{channel}")).await;
    assert_eq!(detail["sfuServerIds"], json!([first.id()]), "{detail}");
    let node_path = format!("/sfu-servers/{}", first.id());
    let reported = eventually(Duration::from_secs(5), || async {
        let load = &get(&rest, &node_path).await["load"];
        load["maxTransports"] == 2 && load["admittedTransports"].as_u64() >= Some(2)
    })
    .await;
    assert!(reported, "{}", get(&rest, &node_path).await);

    // A second node joins (room for two members' publish and subscribe sides: the first
    // node's publishers are relayed to it, so its members subscribe at once); the next
    // members are served there, and the channel spans both.
    let second = SfuNode::start_with(SECRET, Some(&server), &["--max-transports", "4"]);
    wait_healthy(&rest, second.id()).await;
    for name in ["p3", "p4"] {
        let mut client = SfuClient::join(&server.ws_url(), &rest, &channel, name).await;
        client.publish().await;
        members.push(client);
    }
    let detail = get(&rest, &format!("/channels/{channel}")).await;
    assert_eq!(detail["sfuServerId"], json!(first.id()), "{detail}");
    assert_eq!(
        detail["sfuServerIds"],
        json!([first.id(), second.id()]),
        "{detail}"
    );
    let second_path = format!("/sfu-servers/{}", second.id());
    let served = eventually(Duration::from_secs(5), || async {
        let view = get(&rest, &second_path).await;
        view["rooms"] == 1
            && view["sessions"] == 2
            && view["load"]["admittedTransports"].as_u64() >= Some(2)
    })
    .await;
    assert!(served, "{}", get(&rest, &second_path).await);
    let first_view = get(&rest, &node_path).await;
    assert_eq!(first_view["sessions"], 2, "{first_view}");
    // The two publishers on the second node receive each other from it, and the first node's
    // publishers through the relay links signaling opened (and the first node's theirs).
    let (p1, p2) = (members[0].id.clone(), members[1].id.clone());
    let (p3, p4) = (members[2].id.clone(), members[3].id.clone());
    members[2].subscribed_to(&[&p1, &p2, &p4]).await;
    members[3].subscribed_to(&[&p1, &p2, &p3]).await;
    members[0].subscribed_to(&[&p3, &p4]).await;

    // Both nodes full: a fifth member hears so at once, and its publish is refused the same
    // way; it stays a member and nothing else changes.
    let mut fifth = SfuClient::join(&server.ws_url(), &rest, &channel, "p5").await;
    let error = fifth.expect("error").await;
    assert_eq!(error["code"], "sfu_full", "{error}");
    let reply = fifth
        .request(json!({ "type": "call", "isSFU": true, "sdp": "v=0\r\n" }))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "sfu_full", "{reply}");
    let detail = get(&rest, &format!("/channels/{channel}")).await;
    let sessions = detail["channelSessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 5, "{detail}");
    assert_eq!(
        detail["sfuServerIds"],
        json!([first.id(), second.id()]),
        "{detail}"
    );
    // The honest members are unharmed: the publishers on the first node still receive each
    // other.
    members[0].subscribed_to(&[p2.as_str()]).await;
    members[1].subscribed_to(&[p1.as_str()]).await;
}

/// `--max-transports` takes a count: anything else stops the process at start with a message
/// naming the flag, for `sfu` and `dev` alike.
#[test]
fn a_garbage_transport_cap_is_refused_at_start() {
    let runs: [&[&str]; 4] = [
        &["sfu", "--cluster-secret", SECRET, "--max-transports", "abc"],
        &["sfu", "--cluster-secret", SECRET, "--max-transports=-1"],
        &[
            "sfu",
            "--cluster-secret",
            SECRET,
            "--max-transports",
            "99999999999999999999999",
        ],
        &["dev", "--max-transports", "2.5"],
    ];
    for args in runs {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mooyaho"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let exited = child.try_wait().unwrap();
        if exited.is_none() {
            let _ = child.kill();
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            exited.is_some_and(|status| !status.success()),
            "{args:?} started"
        );
        assert!(
            stderr.contains("invalid value") && stderr.contains("--max-transports"),
            "{args:?}: {stderr}"
        );
    }
}
