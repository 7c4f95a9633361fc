//! The WebSocket API against the real binary: every message, its errors, and the three
//! signaling scenarios' rules (mesh relay, direct call accept/decline, resume).

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, Ws};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn malformed_frames_get_errors_and_the_socket_stays_open() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(&server.ws_url()).await;

    ws.send_text("{oops".into()).await;
    let error = ws.next().await;
    assert_eq!(
        (error["type"].clone(), error["code"].clone()),
        (json!("error"), json!("invalid_json"))
    );
    ws.send_text("[1,2]".into()).await;
    assert_eq!(ws.next().await["code"], "invalid_message");
    ws.expect_error(
        json!({"type": "subscribe", "key": "channel:x"}),
        "unknown_type",
    )
    .await;
    ws.expect_error(json!({"type": "enter"}), "invalid_message")
        .await;
    ws.expect_error(json!({"type": "enter", "channel": 5}), "invalid_message")
        .await;
    ws.expect_error(
        json!({"type": "updateMediaState", "key": "admin", "value": true}),
        "invalid_message",
    )
    .await;
    ws.expect_error(
        json!({"type": "message", "message": {"type": "html"}}),
        "invalid_message",
    )
    .await;
    ws.expect_error(
        json!({"type": "candidate", "to": "x", "candidate": "str"}),
        "invalid_message",
    )
    .await;
    ws.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(ws.next().await["code"], "unsupported_frame");
    let big = json!({"type": "message", "message": {"type": "text", "text": "x".repeat(70_000)}});
    ws.send(big).await;
    assert_eq!(ws.next().await["code"], "frame_too_large");

    // Still usable; getId echoes requestId.
    let reply = ws.request(json!({"type": "getId"})).await;
    assert_eq!(reply["type"], "getIdSuccess");
    assert_eq!(reply["id"], ws.id);
    let pong = ws.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn requests_need_integration_a_channel_and_known_ids() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let channel = rest.create_channel(false).await;
    let mut ws = Ws::connect(&server.ws_url()).await;

    ws.expect_error(
        json!({"type": "enter", "channel": channel}),
        "not_integrated",
    )
    .await;
    // Anonymous integration is off by default (the original shipped it on).
    ws.expect_error(
        json!({"type": "integrateUser", "user": {"name": "x"}}),
        "forbidden",
    )
    .await;
    for needs_channel in [
        json!({"type": "leave"}),
        json!({"type": "listSessions"}),
        json!({"type": "message", "message": {"type": "text", "text": "hi"}}),
        json!({"type": "updateMediaState", "key": "muted", "value": true}),
        json!({"type": "call", "isSFU": true, "sdp": "v=0"}),
    ] {
        ws.expect_error(needs_channel, "not_in_channel").await;
    }
    rest.integrate(&ws.id, json!({"id": "u1"})).await;
    ws.expect_error(
        json!({"type": "enter", "channel": "no-such-channel"}),
        "channel_not_found",
    )
    .await;
    ws.expect_error(
        json!({"type": "call", "to": "no-such-session", "sdp": "v=0"}),
        "session_not_found",
    )
    .await;
    ws.expect_error(json!({"type": "call", "sdp": "v=0"}), "invalid_message")
        .await;
    ws.expect_error(
        json!({"type": "call", "to": ws.id, "sdp": "v=0"}),
        "invalid_message",
    )
    .await;
    ws.expect_error(json!({"type": "reject", "to": "nobody"}), "no_pending_call")
        .await;
    ws.expect_error(
        json!({"type": "reuseId", "id": "nobody", "token": "x"}),
        "invalid_token",
    )
    .await;

    let reply = ws
        .request(json!({"type": "enter", "channel": channel}))
        .await;
    assert_eq!(reply["type"], "enterSuccess");
    assert_eq!(reply["sfuEnabled"], false);
    // Entering again is idempotent.
    let again = ws
        .request(json!({"type": "enter", "channel": channel}))
        .await;
    assert_eq!(again["type"], "enterSuccess");
    ws.expect_error(
        json!({"type": "call", "isSFU": true, "sdp": "v=0"}),
        "invalid_message",
    )
    .await;
    let ack = ws.request(json!({"type": "leave"})).await;
    assert_eq!(ack["type"], "ack");
}

#[tokio::test]
async fn mesh_channel_relays_offers_answers_and_candidates_among_three() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let channel = rest.create_channel(false).await;
    let url = server.ws_url();
    let mut a = Ws::join(&url, &rest, &channel, "alice").await;
    let mut b = Ws::join(&url, &rest, &channel, "bob").await;
    let entered = a.expect("entered").await;
    assert_eq!(entered["sessionId"], b.id);
    assert_eq!(entered["user"], json!({"id": "bob", "name": "bob"}));
    let mut c = Ws::join(&url, &rest, &channel, "carol").await;
    for ws in [&mut a, &mut b] {
        assert_eq!(ws.expect("entered").await["sessionId"], c.id);
    }

    let list = c.request(json!({"type": "listSessions"})).await;
    let mut ids: Vec<_> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected = vec![a.id.clone(), b.id.clone(), c.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(
        list["sessions"][0]["state"],
        json!({"muted": false, "videoOff": false})
    );

    // Existing members offer to the newcomer; the newcomer answers; candidates trickle both ways.
    for (offerer, name) in [(&mut a, "a"), (&mut b, "b")] {
        offerer
            .send(json!({"type": "call", "to": c.id, "sdp": format!("offer-from-{name}")}))
            .await;
        let from = offerer.id.clone();
        let called = c.expect("called").await;
        assert_eq!(
            called,
            json!({"type": "called", "from": from, "sdp": format!("offer-from-{name}"), "isSFU": false})
        );
        c.send(json!({"type": "answer", "to": from, "sdp": format!("answer-to-{name}")}))
            .await;
        let answered = offerer.expect("answered").await;
        assert_eq!(
            answered,
            json!({"type": "answered", "from": c.id, "sdp": format!("answer-to-{name}"), "isSFU": false})
        );
        let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
        offerer
            .send(json!({"type": "candidate", "to": c.id, "candidate": candidate}))
            .await;
        let candidated = c.expect("candidated").await;
        assert_eq!(
            (candidated["from"].clone(), candidated["candidate"].clone()),
            (json!(from), candidate.clone())
        );
        c.send(json!({"type": "candidate", "to": from, "candidate": null}))
            .await;
        assert_eq!(offerer.expect("candidated").await["candidate"], Value::Null);
    }

    // Chat and media state reach every member, the sender included.
    a.send(json!({"type": "message", "message": {"type": "text", "text": "hello"}}))
        .await;
    for ws in [&mut a, &mut b, &mut c] {
        let messaged = ws.expect("messaged").await;
        assert_eq!(
            messaged["message"],
            json!({"type": "text", "text": "hello"})
        );
    }
    b.send(json!({"type": "updateMediaState", "key": "muted", "value": true}))
        .await;
    for ws in [&mut a, &mut b, &mut c] {
        let updated = ws.expect("updatedMediaState").await;
        assert_eq!(
            (updated["key"].clone(), updated["value"].clone()),
            (json!("muted"), json!(true))
        );
    }
    let list = a.request(json!({"type": "listSessions"})).await;
    let bob = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == b.id)
        .unwrap()
        .clone();
    assert_eq!(bob["state"]["muted"], true);

    // A leaves: the others see `left`, and A may no longer signal them.
    a.send(json!({"type": "leave"})).await;
    for ws in [&mut b, &mut c] {
        assert_eq!(ws.expect("left").await["sessionId"], a.id);
    }
    let c_id = c.id.clone();
    a.expect_error(json!({"type": "call", "to": c_id, "sdp": "x"}), "forbidden")
        .await;
    let detail = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await
        .1;
    assert_eq!(detail["channelSessions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn sessions_cannot_signal_outside_their_channel() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let url = server.ws_url();
    let one = rest.create_channel(false).await;
    let two = rest.create_channel(false).await;
    let mut a = Ws::join(&url, &rest, &one, "a").await;
    let mut b = Ws::join(&url, &rest, &two, "b").await;
    let b_id = b.id.clone();
    a.expect_error(json!({"type": "call", "to": b_id, "sdp": "x"}), "forbidden")
        .await;
    a.expect_error(
        json!({"type": "answer", "to": b_id, "sdp": "x"}),
        "no_pending_call",
    )
    .await;
    a.expect_error(
        json!({"type": "candidate", "to": b_id, "candidate": null}),
        "forbidden",
    )
    .await;
    b.expect_silence(Duration::from_millis(200)).await;
    // Moving to another channel leaves the first one.
    a.send(json!({"type": "enter", "channel": two})).await;
    a.expect("enterSuccess").await;
    assert_eq!(b.expect("entered").await["sessionId"], a.id);
    let detail = rest.call("GET", &format!("/channels/{one}"), None).await.1;
    assert_eq!(detail["channelSessions"], json!([]));
}

#[tokio::test]
async fn direct_call_is_delivered_only_when_both_allow_and_needs_an_answer() {
    let server = Server::start(&[]);
    let direct = format!("{}?allowDirectCall=true", server.ws_url());
    let mut caller = Ws::connect(&direct).await;
    let mut callee = Ws::connect(&direct).await;
    let mut closed = Ws::connect(&server.ws_url()).await;

    // The callee did not allow direct calls: refused, and it hears nothing.
    let closed_id = closed.id.clone();
    caller
        .expect_error(
            json!({"type": "call", "to": closed_id, "sdp": "offer"}),
            "forbidden",
        )
        .await;
    closed.expect_silence(Duration::from_millis(200)).await;
    // Nor may a session that did not allow direct calls place one.
    let callee_id = callee.id.clone();
    closed
        .expect_error(
            json!({"type": "call", "to": callee_id, "sdp": "offer"}),
            "forbidden",
        )
        .await;

    // Accept: the offer arrives, the callee may not trickle before answering, then answers.
    caller
        .send(json!({"type": "call", "to": callee.id, "sdp": "offer-1"}))
        .await;
    let called = callee.expect("called").await;
    assert_eq!(
        (called["from"].clone(), called["sdp"].clone()),
        (json!(caller.id), json!("offer-1"))
    );
    caller
        .send(json!({"type": "candidate", "to": callee.id, "candidate": {"candidate": "c1"}}))
        .await;
    assert_eq!(
        callee.expect("candidated").await["candidate"]["candidate"],
        "c1"
    );
    let caller_id = caller.id.clone();
    callee
        .expect_error(
            json!({"type": "candidate", "to": caller_id, "candidate": null}),
            "forbidden",
        )
        .await;
    callee
        .send(json!({"type": "answer", "to": caller.id, "sdp": "answer-1"}))
        .await;
    let answered = caller.expect("answered").await;
    assert_eq!(
        (answered["from"].clone(), answered["sdp"].clone()),
        (json!(callee.id), json!("answer-1"))
    );
    callee
        .send(json!({"type": "candidate", "to": caller.id, "candidate": {"candidate": "c2"}}))
        .await;
    assert_eq!(
        caller.expect("candidated").await["candidate"]["candidate"],
        "c2"
    );

    // Decline: a second caller is rejected with the callee's reason; no answer is possible then.
    let mut second = Ws::connect(&direct).await;
    second
        .send(json!({"type": "call", "to": callee.id, "sdp": "offer-2"}))
        .await;
    let called = callee.expect("called").await;
    assert_eq!(called["from"], second.id);
    callee
        .send(json!({"type": "reject", "to": second.id, "reason": "busy"}))
        .await;
    let rejected = second.expect("rejected").await;
    assert_eq!(
        (rejected["from"].clone(), rejected["reason"].clone()),
        (json!(callee.id), json!("busy"))
    );
    let second_id = second.id.clone();
    callee
        .expect_error(
            json!({"type": "answer", "to": second_id, "sdp": "late"}),
            "no_pending_call",
        )
        .await;
    let callee_id = callee.id.clone();
    second
        .expect_error(
            json!({"type": "candidate", "to": callee_id, "candidate": null}),
            "forbidden",
        )
        .await;
}

#[tokio::test]
async fn dropped_socket_resumes_same_session_and_channel() {
    let server = Server::start(&["--resume-grace-ms", "3000"]);
    let rest = server.rest();
    let url = server.ws_url();
    let channel = rest.create_channel(false).await;
    let mut a = Ws::join(&url, &rest, &channel, "a").await;
    let b = Ws::join(&url, &rest, &channel, "b").await;
    a.expect("entered").await;
    let (b_id, b_token) = (b.id.clone(), b.token.clone());
    b.abort();

    let mut b2 = Ws::connect(&url).await;
    assert_ne!(b2.id, b_id);
    let resumed = b2
        .request(json!({"type": "reuseId", "id": b_id, "token": b_token}))
        .await;
    assert_eq!(resumed["type"], "reuseIdSuccess", "{resumed}");
    assert_eq!(resumed["id"], b_id);
    assert_eq!(resumed["channel"], channel);
    assert_eq!(resumed["user"]["id"], "b");
    let next_token = resumed["token"].as_str().unwrap().to_owned();
    assert_ne!(next_token, b_token);
    let get_id = b2.request(json!({"type": "getId"})).await;
    assert_eq!(get_id["id"], b_id);

    // Still a member, still reachable; nobody saw it leave.
    a.send(json!({"type": "call", "to": b_id, "sdp": "after-resume"}))
        .await;
    assert_eq!(b2.expect("called").await["sdp"], "after-resume");
    let list = a.request(json!({"type": "listSessions"})).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);

    // Tokens are single-use.
    let mut b3 = Ws::connect(&url).await;
    b3.expect_error(
        json!({"type": "reuseId", "id": b_id, "token": b_token}),
        "invalid_token",
    )
    .await;
    // The current token moves the session again and closes the previous socket.
    let moved = b3
        .request(json!({"type": "reuseId", "id": b_id, "token": next_token}))
        .await;
    assert_eq!(moved["type"], "reuseIdSuccess");
    assert!(b2.closed_by_server(Duration::from_secs(2)).await);
    a.send(json!({"type": "message", "message": {"type": "text", "text": "hi"}}))
        .await;
    assert_eq!(b3.expect("messaged").await["message"]["text"], "hi");
    // `a` sees only its own chat echo: no `left`/`entered` flapping across the resumes.
    assert_eq!(a.next().await["type"], "messaged");
    a.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn expired_session_leaves_its_channel() {
    let server = Server::start(&["--resume-grace-ms", "300"]);
    let rest = server.rest();
    let url = server.ws_url();
    let channel = rest.create_channel(false).await;
    let mut a = Ws::join(&url, &rest, &channel, "a").await;
    let b = Ws::join(&url, &rest, &channel, "b").await;
    a.expect("entered").await;
    let (b_id, b_token) = (b.id.clone(), b.token.clone());
    b.close().await;
    assert_eq!(a.expect("left").await["sessionId"], b_id);
    let mut late = Ws::connect(&url).await;
    late.expect_error(
        json!({"type": "reuseId", "id": b_id, "token": b_token}),
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn silent_sockets_are_reaped() {
    let server = Server::start(&["--ping-interval-ms", "200", "--resume-grace-ms", "100"]);
    let rest = server.rest();
    let channel = rest.create_channel(false).await;
    let mut a = Ws::join(&server.ws_url(), &rest, &channel, "a").await;

    // A raw TCP client that completes the upgrade and then never answers pings.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let upgrade = format!(
        "GET /websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    raw.write_all(upgrade.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = raw.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let connected = head.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    let id = match connected.find("\"id\":\"") {
        Some(i) => connected[i + 6..i + 42].to_owned(),
        None => {
            let n = raw.read(&mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let i = text.find("\"id\":\"").expect("connected frame");
            text[i + 6..i + 42].to_owned()
        }
    };
    rest.integrate(&id, json!({"id": "silent"})).await;
    // Enter via a masked client frame written by hand.
    let enter = json!({"type": "enter", "channel": channel}).to_string();
    raw.write_all(&masked_text_frame(enter.as_bytes()))
        .await
        .unwrap();
    assert_eq!(a.expect("entered").await["sessionId"], id);
    // Now stay silent: reaped after two ping intervals, then the grace window ends.
    let left = a.expect("left").await;
    assert_eq!(left["sessionId"], id);
    let (_, metrics) = rest.call("GET", "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("mooyaho_ws_reaped_total 1")
    );
}

#[tokio::test]
async fn rate_limit_refuses_floods_without_closing() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(&server.ws_url()).await;
    // The burst (200) and a few dozen over it: refused, but fewer than the 50 refusals per 10 s
    // that close a socket (`hardening.rs` floods past that).
    for _ in 0..240 {
        ws.send(json!({"type": "ping"})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..240 {
        match ws.next().await["type"].as_str().unwrap() {
            "pong" => pongs += 1,
            "error" => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(limited > 0, "no message was rate limited");
    assert!(pongs >= 200, "burst not honoured: {pongs}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ws.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn anonymous_mode_lets_clients_integrate_themselves() {
    let server = Server::start(&["--allow-anonymous"]);
    let channel = server.rest().create_channel(false).await;
    let mut ws = Ws::connect(&server.ws_url()).await;
    let integrated = ws
        .request(json!({"type": "integrateUser", "user": {"id": "spoofed", "name": "Guest"}}))
        .await;
    // The user's id is the session id: a client cannot claim someone else's identity.
    assert_eq!(integrated["user"], json!({"id": ws.id, "name": "Guest"}));
    ws.expect_error(
        json!({"type": "integrateUser", "user": "name"}),
        "invalid_message",
    )
    .await;
    let entered = ws
        .request(json!({"type": "enter", "channel": channel}))
        .await;
    assert_eq!(entered["type"], "enterSuccess");
}

#[tokio::test]
async fn sfu_requests_in_an_sfu_channel_are_refused_with_a_reason() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let channel = rest.create_channel(true).await;
    let mut ws = Ws::connect(&server.ws_url()).await;
    rest.integrate(&ws.id, json!({"id": "u"})).await;
    let entered = ws
        .request(json!({"type": "enter", "channel": channel}))
        .await;
    assert_eq!(entered["sfuEnabled"], true);
    ws.expect_error(
        json!({"type": "call", "isSFU": true, "sdp": "v=0"}),
        "sfu_unavailable",
    )
    .await;
}

/// A masked WebSocket text frame (clients must mask), for the raw-socket test.
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn racing_resumes_with_one_token_let_exactly_one_win() {
    let server = Server::start(&["--resume-grace-ms", "5000"]);
    support::race_resumes(&server.ws_url(), &server.ws_url(), 40).await;
    // The server still serves an honest pair afterwards.
    let rest = server.rest();
    let channel = rest.create_channel(false).await;
    let mut a = Ws::join(&server.ws_url(), &rest, &channel, "a").await;
    let mut b = Ws::join(&server.ws_url(), &rest, &channel, "b").await;
    a.expect("entered").await;
    a.send(json!({"type": "call", "to": b.id, "sdp": "v=0"}))
        .await;
    assert_eq!(b.expect("called").await["sdp"], "v=0");
}

#[tokio::test]
async fn resume_tokens_of_connected_sessions_rotate_and_expire() {
    // Lifetime 4 s: a connected session gets a new token every 2 s.
    let server = Server::start(&[
        "--ping-interval-ms",
        "200",
        "--resume-grace-ms",
        "1000",
        "--resume-token-lifetime-ms",
        "4000",
    ]);
    let url = server.ws_url();
    let a = Ws::connect(&url).await;
    let (id, first) = (a.id.clone(), a.token.clone());
    let mut a = a;
    let second = a.expect("resumeToken").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let third = a.expect("resumeToken").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first != second && second != third);

    // The first token is no longer accepted although its session never disconnected: a token
    // that leaked once cannot take over a long-lived session.
    let mut thief = Ws::connect(&url).await;
    thief
        .expect_error(
            json!({"type": "reuseId", "id": id, "token": first}),
            "invalid_token",
        )
        .await;
    assert_eq!(a.request(json!({"type": "getId"})).await["id"], json!(id));

    // A client whose socket died before it saw the last rotation resumes with the one before.
    a.abort();
    let mut back = Ws::connect(&url).await;
    let reply = back
        .request(json!({"type": "reuseId", "id": id, "token": second}))
        .await;
    assert_eq!(reply["type"], "reuseIdSuccess", "{reply}");
    // Resuming spent both: neither the previous nor the current token works again.
    for spent in [&second, &third] {
        let mut late = Ws::connect(&url).await;
        late.expect_error(
            json!({"type": "reuseId", "id": id, "token": spent}),
            "invalid_token",
        )
        .await;
    }
}

#[tokio::test]
async fn ids_with_key_namespace_characters_are_refused() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let long = "a".repeat(129);
    for bad in [
        "a:b",
        "mooyaho:channels",
        "x*",
        "%7Bt%7D",
        "a%0Ab",
        long.as_str(),
    ] {
        for (method, path) in [
            ("GET", format!("/channels/{bad}")),
            ("DELETE", format!("/channels/{bad}")),
        ] {
            let (status, body) = rest.call(method, &path, None).await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            assert_eq!(body["statusCode"], 400, "{body}");
        }
        let (status, body) = rest
            .call(
                "POST",
                &format!("/sessions/{bad}"),
                Some(json!({"id": "u"})),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = rest
        .call(
            "POST",
            "/channels/bulk-delete",
            Some(json!({"ids": ["fine", "a:b"]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let mut ws = Ws::connect(&server.ws_url()).await;
    for user in [json!({"id": "user:1"}), json!({"id": "a\u{1}b"})] {
        let (status, body) = rest
            .call("POST", &format!("/sessions/{}", ws.id), Some(user))
            .await;
        assert_eq!(status, 400, "{body}");
    }
    for message in [
        json!({"type": "enter", "channel": "mooyaho:channels"}),
        json!({"type": "enter", "channel": long}),
        json!({"type": "call", "to": "a:b", "sdp": "v=0"}),
        json!({"type": "candidate", "to": "s*", "candidate": null}),
        json!({"type": "reject", "to": "{s}"}),
        json!({"type": "reuseId", "id": "x:y", "token": "t"}),
    ] {
        ws.expect_error(message, "invalid_message").await;
    }
    // The socket stays usable and honest ids work.
    let channel = rest.create_channel(false).await;
    rest.integrate(&ws.id, json!({"id": "ada@example.com"}))
        .await;
    let reply = ws
        .request(json!({"type": "enter", "channel": channel}))
        .await;
    assert_eq!(reply["type"], "enterSuccess", "{reply}");
}

#[tokio::test]
async fn direct_calls_to_one_callee_are_rate_limited() {
    let server = Server::start(&[]);
    let url = format!("{}?allowDirectCall=true", server.ws_url());
    let mut callee = Ws::connect(&url).await;
    let mut outcomes = Vec::new();
    let mut callers = Vec::new();
    for _ in 0..35 {
        let mut caller = Ws::connect(&url).await;
        let reply = caller
            .request(json!({"type": "call", "to": callee.id, "sdp": "v=0 flood"}))
            .await;
        outcomes.push(reply["type"] == "ack" || reply["code"] == "rate_limited");
        if reply["type"] == "error" {
            assert_eq!(reply["code"], "rate_limited", "{reply}");
        }
        callers.push((caller, reply["type"] == "ack"));
    }
    assert!(outcomes.iter().all(|ok| *ok));
    let delivered = callers.iter().filter(|(_, acked)| *acked).count();
    assert_eq!(
        delivered, 30,
        "the default limit is 30 calls per 10 s per callee"
    );
    for _ in 0..delivered {
        assert_eq!(callee.expect("called").await["sdp"], "v=0 flood");
    }
    callee.expect_silence(Duration::from_millis(300)).await;

    // The limit is the callee's: another callee is still reachable by the same callers.
    let mut other = Ws::connect(&url).await;
    let (caller, _) = &mut callers[34];
    let reply = caller
        .request(json!({"type": "call", "to": other.id, "sdp": "v=0 honest"}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    assert_eq!(other.expect("called").await["sdp"], "v=0 honest");
}

#[tokio::test]
async fn one_caller_cannot_lock_a_callee_out_of_direct_calls() {
    let server = Server::start(&[]);
    let url = format!("{}?allowDirectCall=true", server.ws_url());
    let mut callee = Ws::connect(&url).await;
    let mut attacker = Ws::connect(&url).await;
    let mut acked = 0;
    for _ in 0..40 {
        let reply = attacker
            .request(json!({"type": "call", "to": callee.id, "sdp": "v=0 flood"}))
            .await;
        if reply["type"] == "ack" {
            acked += 1;
        } else {
            assert_eq!(reply["code"], "rate_limited", "{reply}");
        }
    }
    assert_eq!(
        acked, 3,
        "the default limit is 3 calls per 10 s per caller and callee"
    );
    for _ in 0..acked {
        assert_eq!(callee.expect("called").await["sdp"], "v=0 flood");
    }
    callee.expect_silence(Duration::from_millis(300)).await;
    // The callee's own budget was not spent by the attacker: an honest caller gets through.
    let mut honest = Ws::connect(&url).await;
    let reply = honest
        .request(json!({"type": "call", "to": callee.id, "sdp": "v=0 honest"}))
        .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    assert_eq!(callee.expect("called").await["sdp"], "v=0 honest");
}
