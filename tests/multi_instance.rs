//! Two `mooyaho server` instances sharing one real `redis-server`: shared channels and SFU
//! registry, the mesh exchange across instances, resume on another instance, a Redis outage and
//! recovery, and the death of an instance.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Redis, Rest, Server, Ws, eventually};

/// Two instances on one Redis, with extra arguments for both.
fn two_instances(redis: &Redis, extra: &[&str]) -> (Server, Server) {
    let url = redis.url();
    let mut args = vec!["--redis-url", url.as_str()];
    args.extend_from_slice(extra);
    (Server::start(&args), Server::start(&args))
}

/// Offer, answer and candidate from `a` to `b` and back, checking every relayed field.
async fn exchange(a: &mut Ws, b: &mut Ws, tag: &str) {
    let offer = format!("v=0 offer {tag}");
    a.send(json!({"type": "call", "to": b.id, "sdp": offer}))
        .await;
    let called = b.expect("called").await;
    assert_eq!(
        (&called["from"], &called["sdp"], &called["isSFU"]),
        (&json!(a.id), &json!(offer), &json!(false)),
        "{called}"
    );

    let answer = format!("v=0 answer {tag}");
    b.send(json!({"type": "answer", "to": a.id, "sdp": answer}))
        .await;
    let answered = a.expect("answered").await;
    assert_eq!(
        (&answered["from"], &answered["sdp"]),
        (&json!(b.id), &json!(answer)),
        "{answered}"
    );

    let candidate = json!({"candidate": format!("candidate:{tag} 1 udp 1 10.0.0.1 9 typ host"),
        "sdpMid": "0", "sdpMLineIndex": 0});
    a.send(json!({"type": "candidate", "to": b.id, "candidate": candidate}))
        .await;
    let candidated = b.expect("candidated").await;
    assert_eq!(
        (&candidated["from"], &candidated["candidate"]),
        (&json!(a.id), &candidate)
    );
    b.send(json!({"type": "candidate", "to": a.id, "candidate": null}))
        .await;
    let candidated = a.expect("candidated").await;
    assert_eq!(
        (&candidated["from"], &candidated["candidate"]),
        (&json!(b.id), &Value::Null)
    );
}

/// The ids in a `listSessionsSuccess`.
fn listed_ids(reply: &Value) -> BTreeSet<String> {
    assert_eq!(reply["type"], "listSessionsSuccess", "{reply}");
    reply["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(sockets: &[&Ws]) -> BTreeSet<String> {
    sockets.iter().map(|ws| ws.id.clone()).collect()
}

/// Retries a call from `from` to `to` until one arrives (the bus may still be resubscribing).
async fn call_arrives(from: &mut Ws, to: &mut Ws, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut attempt = 0;
    while tokio::time::Instant::now() < deadline {
        attempt += 1;
        let sdp = format!("v=0 retry {attempt}");
        let reply = from
            .request(json!({"type": "call", "to": to.id, "sdp": sdp}))
            .await;
        if reply["type"] == "ack" {
            let wanted = json!(sdp);
            let arrived = tokio::time::timeout(
                Duration::from_millis(500),
                to.expect_where("called", |m| m["sdp"] == wanted),
            )
            .await;
            if arrived.is_ok() {
                return true;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    false
}

/// `Ws::join`, but integrates again until `integrated` arrives: right after Redis comes back, the
/// socket's instance may still be resubscribing to the bus (publishes in that window are lost).
async fn join_retrying(url: &str, rest: &Rest, channel: &str, name: &str) -> Ws {
    let mut ws = Ws::connect(url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "never integrated");
        rest.integrate(&ws.id, json!({ "id": name, "name": name }))
            .await;
        let integrated =
            tokio::time::timeout(Duration::from_millis(500), ws.expect("integrated")).await;
        if integrated.is_ok() {
            break;
        }
    }
    let reply = ws
        .request(json!({"type": "enter", "channel": channel}))
        .await;
    assert_eq!(reply["type"], "enterSuccess", "{reply}");
    ws
}

async fn channel_ids(rest: &Rest) -> BTreeSet<String> {
    let (status, body) = rest.call("GET", "/channels", None).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn channels_and_sfu_servers_created_on_one_instance_are_served_by_the_other() {
    let redis = Redis::start();
    let (one, two) = two_instances(&redis, &[]);
    let (rest1, rest2) = (one.rest(), two.rest());

    let mesh = rest1.create_channel(false).await;
    let sfu = rest1.create_channel(true).await;
    let (status, list) = rest2.call("GET", "/channels", None).await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<(String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["sfuEnabled"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, vec![(mesh.clone(), false), (sfu.clone(), true)]);
    let (status, detail) = rest2.call("GET", &format!("/channels/{sfu}"), None).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["id"], sfu);
    assert_eq!(detail["sfuEnabled"], true);
    assert_eq!(detail["channelSessions"], json!([]));

    let (status, node) = rest1
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({"address": "10.1.2.3:4433"})),
        )
        .await;
    assert_eq!(status, 200, "{node}");
    let (status, nodes) = rest2.call("GET", "/sfu-servers", None).await;
    assert_eq!(status, 200);
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes[0]["id"], node["id"]);
    assert_eq!(nodes[0]["address"], "10.1.2.3:4433");
    let (status, fetched) = rest2
        .call("GET", &format!("/sfu-servers/{}", node["id"]), None)
        .await;
    assert_eq!(
        (status, &fetched["address"]),
        (200, &json!("10.1.2.3:4433"))
    );

    // A delete through instance 2 is seen by instance 1.
    let (status, _) = rest2
        .call("DELETE", &format!("/channels/{mesh}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = rest1.call("GET", &format!("/channels/{mesh}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(channel_ids(&rest1).await, BTreeSet::from([sfu]));
}

#[tokio::test]
async fn mesh_exchange_completes_between_sessions_on_different_instances() {
    let redis = Redis::start();
    let (one, two) = two_instances(&redis, &[]);
    let (rest1, rest2) = (one.rest(), two.rest());
    let channel = rest1.create_channel(false).await;

    // Integration goes through the instance that does not hold the socket, on purpose.
    let mut a = Ws::join(&one.ws_url(), &rest2, &channel, "alice").await;
    let mut b = Ws::join(&two.ws_url(), &rest1, &channel, "bob").await;
    let entered = a
        .expect_where("entered", |m| m["sessionId"] == json!(b.id))
        .await;
    assert_eq!(entered["user"], json!({"id": "bob", "name": "bob"}));
    let mut c = Ws::join(&one.ws_url(), &rest2, &channel, "carol").await;
    for member in [&mut a, &mut b] {
        let entered = member
            .expect_where("entered", |m| m["sessionId"] == json!(c.id))
            .await;
        assert_eq!(entered["user"]["name"], "carol");
    }

    // The members already present offer to each newcomer, across instances both ways.
    exchange(&mut a, &mut b, "a-b").await; // 1 → 2
    exchange(&mut b, &mut c, "b-c").await; // 2 → 1
    exchange(&mut a, &mut c, "a-c").await; // 1 → 1

    // Instance 2 lists every member with its user.
    let reply = b.request(json!({"type": "listSessions"})).await;
    assert_eq!(listed_ids(&reply), ids(&[&a, &b, &c]));
    let users: BTreeSet<String> = reply["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["user"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        users,
        BTreeSet::from(["alice", "bob", "carol"].map(String::from))
    );
    let (status, detail) = rest2
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["channelSessions"].as_array().unwrap().len(), 3);

    // Chat reaches every member, the sender included.
    b.send(json!({"type": "message", "message": {"type": "text", "text": "hi all"}}))
        .await;
    let sender = json!(b.id);
    for member in [&mut a, &mut b, &mut c] {
        let messaged = member.expect("messaged").await;
        assert_eq!(messaged["sessionId"], sender);
        assert_eq!(
            messaged["message"],
            json!({"type": "text", "text": "hi all"})
        );
    }

    // A session in another channel, on either instance, cannot signal into this one.
    let other = rest2.create_channel(false).await;
    let mut d = Ws::join(&two.ws_url(), &rest2, &other, "dave").await;
    d.expect_error(
        json!({"type": "call", "to": a.id, "sdp": "v=0 intruder"}),
        "forbidden",
    )
    .await;
    a.expect_error(
        json!({"type": "call", "to": d.id, "sdp": "v=0 outward"}),
        "forbidden",
    )
    .await;
    d.expect_error(
        json!({"type": "candidate", "to": c.id, "candidate": null}),
        "forbidden",
    )
    .await;
    a.expect_silence(Duration::from_millis(200)).await;

    // Leaving is announced to the remaining members on both instances.
    let c_id = json!(c.id);
    c.send(json!({"type": "leave"})).await;
    for member in [&mut a, &mut b] {
        member
            .expect_where("left", |m| m["sessionId"] == c_id)
            .await;
    }
    let reply = a.request(json!({"type": "listSessions"})).await;
    assert_eq!(listed_ids(&reply), ids(&[&a, &b]));
    // Having left, c may no longer signal the channel.
    c.expect_error(
        json!({"type": "call", "to": b.id, "sdp": "v=0 late"}),
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn a_session_resumes_on_another_instance_and_still_receives_relays() {
    let redis = Redis::start();
    let (one, two) = two_instances(&redis, &["--resume-grace-ms", "1000"]);
    let rest = one.rest();
    let channel = rest.create_channel(false).await;

    let a = Ws::join(&one.ws_url(), &rest, &channel, "alice").await;
    let mut b = Ws::join(&two.ws_url(), &rest, &channel, "bob").await;
    let mut c = Ws::join(&one.ws_url(), &rest, &channel, "carol").await;
    let (id, token) = (a.id.clone(), a.token.clone());
    a.abort();

    let mut resumed = Ws::connect(&two.ws_url()).await;
    let fresh_id = resumed.id.clone();
    let reply = resumed
        .request(json!({"type": "reuseId", "id": id, "token": token}))
        .await;
    assert_eq!(reply["type"], "reuseIdSuccess", "{reply}");
    assert_eq!(reply["id"], json!(id));
    assert_eq!(reply["channel"], json!(channel));
    assert_eq!(reply["user"]["name"], "alice");
    let new_token = reply["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    let reply = resumed.request(json!({"type": "getId"})).await;
    assert_eq!(reply["id"], json!(id));
    resumed.id = id.clone();

    // Peers on both instances still reach it, now on instance 2.
    b.send(json!({"type": "call", "to": id, "sdp": "v=0 from bob"}))
        .await;
    let called = resumed.expect("called").await;
    assert_eq!(
        (&called["from"], &called["sdp"]),
        (&json!(b.id), &json!("v=0 from bob"))
    );
    exchange(&mut c, &mut resumed, "c-resumed").await;
    exchange(&mut resumed, &mut b, "resumed-b").await;

    // Still a member, and the throwaway session of the new socket is gone.
    let reply = c.request(json!({"type": "listSessions"})).await;
    assert_eq!(listed_ids(&reply), ids(&[&resumed, &b, &c]));
    let (_, detail) = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert!(!detail.to_string().contains(&fresh_id), "{detail}");

    // The used token is spent; the new one is not usable by a third socket for another id.
    let mut third = Ws::connect(&one.ws_url()).await;
    third
        .expect_error(
            json!({"type": "reuseId", "id": id, "token": token}),
            "invalid_token",
        )
        .await;

    // Outliving the grace window of instance 1's dropped socket does not end the moved session.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let reply = b.request(json!({"type": "listSessions"})).await;
    assert!(listed_ids(&reply).contains(&id));
}

#[tokio::test]
async fn a_redis_outage_gives_503_and_unavailable_and_both_instances_recover() {
    let mut redis = Redis::start();
    let (one, two) = two_instances(&redis, &[]);
    let (rest1, rest2) = (one.rest(), two.rest());
    let kept = rest1.create_channel(false).await;
    let kept_sfu = rest2.create_channel(true).await;
    let mut a = Ws::join(&one.ws_url(), &rest1, &kept, "alice").await;
    let mut b = Ws::join(&two.ws_url(), &rest2, &kept, "bob").await;
    a.expect_where("entered", |m| m["sessionId"] == json!(b.id))
        .await;

    redis.kill();

    for rest in [&rest1, &rest2] {
        let (status, body) = rest.call("GET", "/channels", None).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["statusCode"], 503);
        assert_eq!(body["error"], "Service Unavailable");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        let (status, body) = rest
            .call("POST", "/channels", Some(json!({"sfuEnabled": false})))
            .await;
        assert_eq!((status, &body["statusCode"]), (503, &json!(503)), "{body}");
    }
    let (status, health) = rest1.call_raw("GET", "/health", None, None).await;
    assert_eq!(status, 503, "{health}");
    a.expect_error(json!({"type": "listSessions"}), "unavailable")
        .await;
    b.expect_error(
        json!({"type": "call", "to": a.id, "sdp": "v=0 lost"}),
        "unavailable",
    )
    .await;
    // A socket opened during the outage is told why it cannot get a session.
    let (mut fresh, _) = tokio_tungstenite::connect_async(two.ws_url())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), fresh.next())
        .await
        .expect("no frame on a socket opened during the outage")
        .unwrap()
        .unwrap();
    let first: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(
        (&first["type"], &first["code"]),
        (&json!("error"), &json!("unavailable")),
        "{first}"
    );
    // The sockets stay open.
    assert_eq!(a.request(json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(b.request(json!({"type": "ping"})).await["type"], "pong");

    redis.restart();

    for rest in [&rest1, &rest2] {
        let recovered = eventually(Duration::from_secs(10), || async {
            rest.call("GET", "/channels", None).await.0 == 200
        })
        .await;
        assert!(recovered, "{} did not recover", rest.base);
        assert_eq!(
            channel_ids(rest).await,
            BTreeSet::from([kept.clone(), kept_sfu.clone()])
        );
    }
    let (status, health) = rest2.call_raw("GET", "/health", None, None).await;
    assert_eq!(status, 200, "{health}");

    // The sessions that lived through the outage relay across instances again.
    assert!(
        call_arrives(&mut a, &mut b, Duration::from_secs(10)).await,
        "no relay 1 → 2 after recovery"
    );
    assert!(
        call_arrives(&mut b, &mut a, Duration::from_secs(10)).await,
        "no relay 2 → 1 after recovery"
    );

    // New sessions enter a channel created before the outage and complete the exchange.
    let mut c = Ws::join(&one.ws_url(), &rest2, &kept, "carol").await;
    let mut d = Ws::join(&two.ws_url(), &rest1, &kept, "dave").await;
    c.expect_where("entered", |m| m["sessionId"] == json!(d.id))
        .await;
    exchange(&mut c, &mut d, "after-outage").await;
    let reply = d.request(json!({"type": "listSessions"})).await;
    assert_eq!(listed_ids(&reply), ids(&[&a, &b, &c, &d]));
}

#[tokio::test]
async fn sessions_of_a_killed_instance_leave_once_their_presence_expires() {
    const TTL: Duration = Duration::from_millis(1500);
    let redis = Redis::start();
    let (one, mut two) = two_instances(&redis, &["--presence-ttl-ms", "1500"]);
    let rest = one.rest();
    let channel = rest.create_channel(false).await;
    let mut a = Ws::join(&one.ws_url(), &rest, &channel, "alice").await;
    let b = Ws::join(&two.ws_url(), &rest, &channel, "bob").await;
    let c = Ws::join(&two.ws_url(), &rest, &channel, "carol").await;
    for other in [&b, &c] {
        let id = json!(other.id);
        a.expect_where("entered", |m| m["sessionId"] == id).await;
    }

    two.kill();
    let members = |detail: &Value| -> BTreeSet<String> {
        detail["channelSessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sessionId"].as_str().unwrap().to_owned())
            .collect()
    };
    // Until the presence TTL passes, the dead instance's sessions still count as members.
    let (status, detail) = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(members(&detail), ids(&[&a, &b, &c]));

    let expired = eventually(TTL * 4, || async {
        let (_, detail) = rest
            .call("GET", &format!("/channels/{channel}"), None)
            .await;
        members(&detail) == ids(&[&a])
    })
    .await;
    assert!(expired, "the killed instance's sessions are still members");
    // The survivor is told they left.
    let mut gone: BTreeSet<String> = BTreeSet::new();
    for _ in 0..2 {
        let left = a.expect("left").await;
        gone.insert(left["sessionId"].as_str().unwrap().to_owned());
    }
    assert_eq!(gone, ids(&[&b, &c]));
    let (_, list) = rest.call("GET", "/channels", None).await;
    assert_eq!(list[0]["sessionCount"], 1, "{list}");

    // The survivor's own presence is kept alive by its instance well past the TTL.
    tokio::time::sleep(TTL * 2).await;
    let mut d = Ws::join(&one.ws_url(), &rest, &channel, "dave").await;
    a.expect_where("entered", |m| m["sessionId"] == json!(d.id))
        .await;
    exchange(&mut a, &mut d, "survivors").await;
    let reply = a.request(json!({"type": "listSessions"})).await;
    assert_eq!(listed_ids(&reply), ids(&[&a, &d]));
}

#[tokio::test]
async fn resuming_on_another_instance_closes_the_old_socket_there() {
    let redis = Redis::start();
    let (one, two) = two_instances(&redis, &[]);
    let rest = two.rest();
    let channel = rest.create_channel(false).await;
    let mut old = Ws::join(&one.ws_url(), &rest, &channel, "alice").await;
    let mut b = Ws::join(&two.ws_url(), &rest, &channel, "bob").await;

    // The old socket is still open (say, a half-dead mobile network) when the client resumes.
    let mut resumed = Ws::connect(&two.ws_url()).await;
    let reply = resumed
        .request(json!({"type": "reuseId", "id": old.id, "token": old.token}))
        .await;
    assert_eq!(reply["type"], "reuseIdSuccess", "{reply}");
    resumed.id = old.id.clone();
    assert!(
        old.closed_by_server(Duration::from_secs(5)).await,
        "instance 1 kept the superseded socket open"
    );
    // Relays go to the new socket only, and the session stays in its channel.
    exchange(&mut b, &mut resumed, "after-kick").await;
    let reply = b.request(json!({"type": "listSessions"})).await;
    assert_eq!(listed_ids(&reply), ids(&[&resumed, &b]));
}

#[tokio::test]
async fn channel_events_and_direct_calls_cross_instances() {
    let redis = Redis::start();
    let (one, two) = two_instances(&redis, &[]);
    let (rest1, rest2) = (one.rest(), two.rest());
    let channel = rest1.create_channel(false).await;
    let mut a = Ws::join(&one.ws_url(), &rest1, &channel, "alice").await;
    let mut b = Ws::join(&two.ws_url(), &rest2, &channel, "bob").await;
    a.expect_where("entered", |m| m["sessionId"] == json!(b.id))
        .await;

    // Media state changes reach the member on the other instance.
    a.send(json!({"type": "updateMediaState", "key": "muted", "value": true}))
        .await;
    let updated = b.expect("updatedMediaState").await;
    assert_eq!(
        (&updated["sessionId"], &updated["key"], &updated["value"]),
        (&json!(a.id), &json!("muted"), &json!(true))
    );
    let reply = b.request(json!({"type": "listSessions"})).await;
    let alice = reply["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == json!(a.id))
        .unwrap()
        .clone();
    assert_eq!(alice["state"]["muted"], true, "{alice}");

    // Deleting the channel through instance 2 closes it for members on both instances.
    let (status, _) = rest2
        .call("DELETE", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(status, 204);
    for member in [&mut a, &mut b] {
        let closed = member.expect("channelClosed").await;
        assert_eq!(closed["channel"], json!(channel));
        member
            .expect_error(json!({"type": "listSessions"}), "not_in_channel")
            .await;
    }

    // Direct calls between instances: only when both allowed them; accept and decline.
    let direct1 = format!("{}?allowDirectCall=true", one.ws_url());
    let direct2 = format!("{}?allowDirectCall=true", two.ws_url());
    let mut caller = Ws::connect(&direct1).await;
    let mut callee = Ws::connect(&direct2).await;
    caller
        .expect_error(
            json!({"type": "call", "to": b.id, "sdp": "v=0 not allowed"}),
            "forbidden",
        )
        .await;
    caller
        .send(json!({"type": "call", "to": callee.id, "sdp": "v=0 direct"}))
        .await;
    let called = callee.expect("called").await;
    assert_eq!(
        (&called["from"], &called["sdp"]),
        (&json!(caller.id), &json!("v=0 direct"))
    );
    callee
        .send(json!({"type": "reject", "to": caller.id, "reason": "busy"}))
        .await;
    let rejected = caller.expect("rejected").await;
    assert_eq!(
        (&rejected["from"], &rejected["reason"]),
        (&json!(callee.id), &json!("busy"))
    );
    callee
        .expect_error(
            json!({"type": "answer", "to": caller.id, "sdp": "v=0 too late"}),
            "no_pending_call",
        )
        .await;

    caller
        .send(json!({"type": "call", "to": callee.id, "sdp": "v=0 again"}))
        .await;
    callee
        .expect_where("called", |m| m["sdp"] == "v=0 again")
        .await;
    callee
        .send(json!({"type": "answer", "to": caller.id, "sdp": "v=0 accepted"}))
        .await;
    let answered = caller.expect("answered").await;
    assert_eq!(
        (&answered["from"], &answered["sdp"]),
        (&json!(callee.id), &json!("v=0 accepted"))
    );
    callee
        .send(json!({"type": "candidate", "to": caller.id, "candidate": {"candidate": "c1"}}))
        .await;
    let candidated = caller.expect("candidated").await;
    assert_eq!(candidated["candidate"], json!({"candidate": "c1"}));
}

#[tokio::test]
async fn sessions_lost_in_a_redis_outage_longer_than_the_presence_ttl_are_closed_and_rejoin() {
    let mut redis = Redis::start();
    let (one, two) = two_instances(&redis, &["--presence-ttl-ms", "900"]);
    let (rest1, rest2) = (one.rest(), two.rest());
    let channel = rest1.create_channel(false).await;
    let mut a = Ws::join(&one.ws_url(), &rest1, &channel, "alice").await;
    let mut b = Ws::join(&two.ws_url(), &rest2, &channel, "bob").await;
    a.expect_where("entered", |m| m["sessionId"] == json!(b.id))
        .await;

    redis.kill();
    // Longer than the presence TTL: the persisted presence has expired when Redis is back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    let recovered = eventually(Duration::from_secs(10), || async {
        rest1.call("GET", "/channels", None).await.0 == 200
            && rest2.call("GET", "/channels", None).await.0 == 200
    })
    .await;
    assert!(recovered);

    // The sockets of the lost sessions are told and closed instead of lingering unusable.
    for lost in [&mut a, &mut b] {
        let error = lost.expect("error").await;
        assert_eq!(error["code"], "session_not_found", "{error}");
        assert!(lost.closed_by_server(Duration::from_secs(5)).await);
    }

    // The clients start over in the channel that survived; the lost sessions are gone from it.
    let mut c = join_retrying(&one.ws_url(), &rest2, &channel, "alice").await;
    let mut d = join_retrying(&two.ws_url(), &rest1, &channel, "bob").await;
    c.expect_where("entered", |m| m["sessionId"] == json!(d.id))
        .await;
    exchange(&mut c, &mut d, "rejoined").await;
    let reply = d.request(json!({"type": "listSessions"})).await;
    assert_eq!(listed_ids(&reply), ids(&[&c, &d]));
}

#[tokio::test]
async fn a_channel_whose_members_all_died_lists_no_sessions_after_the_ttl() {
    const TTL: Duration = Duration::from_millis(900);
    let redis = Redis::start();
    let (one, mut two) = two_instances(&redis, &["--presence-ttl-ms", "900"]);
    let rest = one.rest();
    let deserted = rest.create_channel(false).await;
    let _a = Ws::join(&two.ws_url(), &rest, &deserted, "alice").await;
    let _b = Ws::join(&two.ws_url(), &rest, &deserted, "bob").await;
    let count = |list: &Value| list[0]["sessionCount"].as_u64().unwrap();
    let (_, list) = rest.call("GET", "/channels", None).await;
    assert_eq!(count(&list), 2, "{list}");

    two.kill();
    // Nobody is left to broadcast in the channel; listing alone must notice the dead members.
    let emptied = eventually(TTL * 5, || async {
        let (status, list) = rest.call("GET", "/channels", None).await;
        status == 200 && count(&list) == 0
    })
    .await;
    assert!(emptied, "the dead instance's sessions are still counted");
}

#[tokio::test]
async fn a_dropped_session_leaves_after_the_grace_for_members_on_the_other_instance() {
    let redis = Redis::start();
    let (one, two) = two_instances(&redis, &["--resume-grace-ms", "300"]);
    let rest = one.rest();
    let channel = rest.create_channel(false).await;
    let a = Ws::join(&one.ws_url(), &rest, &channel, "alice").await;
    let mut b = Ws::join(&two.ws_url(), &rest, &channel, "bob").await;
    let (id, token) = (a.id.clone(), a.token.clone());
    a.abort();

    let left = b.expect("left").await;
    assert_eq!(left["sessionId"], json!(id));
    let reply = b.request(json!({"type": "listSessions"})).await;
    assert_eq!(listed_ids(&reply), ids(&[&b]));
    // Once ended, the session cannot be resumed on either instance.
    let mut late = Ws::connect(&two.ws_url()).await;
    late.expect_error(
        json!({"type": "reuseId", "id": id, "token": token}),
        "invalid_token",
    )
    .await;
}
