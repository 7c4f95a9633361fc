//! Security hardening of the signaling edge against the real binary (issue 7; `docs/security.md`):
//! per-IP WebSocket connection limit, secrets kept out of logs, CORS only for configured origins.
//! The REST body limit is in `rest_api.rs`, resume tokens and channel/call scoping in
//! `websocket.rs`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Rest, Server, SfuNode, Ws, eventually};
use tokio_tungstenite::tungstenite;

/// Connects a WebSocket and expects the upgrade to be refused: returns status and JSON body.
async fn refused_upgrade(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (response.status().as_u16(), body)
        }
        Err(other) => panic!("unexpected failure: {other}"),
    }
}

#[tokio::test]
async fn websocket_connections_are_limited_per_ip() {
    let server = Server::start(&["--max-connections-per-ip", "3"]);
    let rest = server.rest();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(Ws::connect(&server.ws_url()).await);
    }
    let (status, body) = refused_upgrade(&server.ws_url()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["statusCode"], 429);
    assert_eq!(body["error"], "Too Many Requests");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    // The open ones keep working.
    let reply = open[0].request(json!({ "type": "ping" })).await;
    assert_eq!(reply["type"], "pong", "{reply}");

    let (_, metrics) = rest.call("GET", "/metrics", None).await;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains(r#"mooyaho_ws_connections_refused_total{reason="per_ip_limit"} 1"#),
        "{text}"
    );

    // A closed connection gives its slot back.
    open.pop().unwrap().close().await;
    let url = server.ws_url();
    assert!(
        eventually(Duration::from_secs(5), || {
            let url = url.clone();
            async move { tokio_tungstenite::connect_async(&url).await.is_ok() }
        })
        .await,
        "the slot of the closed connection was not given back"
    );
}

#[tokio::test]
async fn the_default_per_ip_limit_allows_ordinary_use() {
    let server = Server::start(&[]);
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(Ws::connect(&server.ws_url()).await);
    }
}

#[tokio::test]
async fn secrets_are_never_logged() {
    const KEY: &str = "api-key-SECRET-7f3a9c1e5b";
    const CLUSTER: &str = "cluster-SECRET-4d8e2b6a0f";
    const GUESS: &str = "guessed-key-SECRET-0c9d8e7f";
    const TOKEN_SECRET: &str = "token-SECRET-9a1b2c3d4e";
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["server", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .args(["--cluster-secret", CLUSTER])
        .args(["--token-secret", TOKEN_SECRET])
        .env("RUST_LOG", "trace")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn mooyaho");
    let mut addr = None;
    for _ in 0..100 {
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        addr = BufReader::new(out.as_bytes()).lines().find_map(|l| {
            l.ok()?
                .strip_prefix("mooyaho listening on http://")
                .map(str::to_owned)
        });
        if addr.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        panic!("mooyaho did not start");
    };
    let rest = Rest {
        http: reqwest::Client::new(),
        base: format!("http://{addr}"),
        key: KEY.to_owned(),
    };

    // A wrong key, the right key, a node the fleet tries to reach with the cluster secret.
    let (status, _) = rest.call_raw("GET", "/channels", None, Some(GUESS)).await;
    assert_eq!(status, 401);
    let (status, _) = rest
        .call_raw("GET", "/channels", None, Some(&format!("{KEY}x")))
        .await;
    assert_eq!(status, 401);
    let channel = rest.create_channel(false).await;
    // A real node: the control link authenticates with the cluster secret.
    let node = SfuNode::start(CLUSTER, None);
    let (status, body) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({ "address": node.control.to_string(), "fingerprint": node.fingerprint })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let node_path = format!("/sfu-servers/{}", body["id"]);
    assert!(
        eventually(Duration::from_secs(10), || {
            let (rest, path) = (rest.clone(), node_path.clone());
            async move { rest.call("GET", &path, None).await.1["health"] == "healthy" }
        })
        .await,
        "the node never became healthy"
    );
    let mut ws = Ws::join(&format!("ws://{addr}/websocket"), &rest, &channel, "ada").await;
    ws.send(json!({ "type": "message", "message": { "type": "text", "text": "hi" } }))
        .await;
    let _ = ws.request(json!({ "type": "ping" })).await;
    let resumed = Ws::connect(&format!("ws://{addr}/websocket")).await;
    drop(resumed);
    // Join tokens: one signed over REST and used, one forged with a guessed secret and refused.
    let (status, minted) = rest
        .call(
            "POST",
            "/tokens",
            Some(json!({ "userId": "grace", "channel": channel })),
        )
        .await;
    assert_eq!(status, 200, "{minted}");
    let token = minted["token"].as_str().unwrap().to_owned();
    let joined = Ws::connect(&format!("ws://{addr}/websocket?token={token}")).await;
    drop(joined);
    let forged = mooyaho_server_sdk::create_join_token(
        GUESS,
        &mooyaho_server_sdk::JoinToken::new("mallory", channel.clone()),
    )
    .unwrap();
    let (status, _) = refused_upgrade(&format!("ws://{addr}/websocket?token={forged}")).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = child.kill();
    let _ = child.wait();

    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    // The log goes to stdout (tracing-subscriber's default), panics to stderr.
    assert!(
        out.contains("TRACE") && out.contains("DEBUG"),
        "trace logging was not on: {out:.2000}"
    );
    // A JWT's signature is the part only the secret could make; its header and payload are
    // public base64, so the signature is what must not leak.
    let signatures = [&token, &forged].map(|t| t.rsplit('.').next().unwrap().to_owned());
    for secret in [KEY, CLUSTER, GUESS, TOKEN_SECRET]
        .into_iter()
        .chain(signatures.iter().map(String::as_str))
    {
        assert!(!out.contains(secret), "{secret} in stdout");
        assert!(!err.contains(secret), "{secret} in stderr");
    }
}

/// Sends a request with `Origin: origin` and returns its `access-control-allow-origin`.
async fn allowed_origin(server: &Server, method: &str, origin: &str) -> Option<String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = reqwest::Client::new()
        .request(method, server.url("/channels"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .bearer_auth(&server.api_key)
        .send()
        .await
        .unwrap();
    response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_configured() {
    let server = Server::start(&[]);
    for method in ["GET", "OPTIONS"] {
        for origin in ["http://a.example", "http://b.example"] {
            assert_eq!(allowed_origin(&server, method, origin).await, None);
        }
    }

    let server = Server::start(&["--cors-origin", "http://a.example"]);
    for method in ["GET", "OPTIONS"] {
        assert_eq!(
            allowed_origin(&server, method, "http://a.example")
                .await
                .as_deref(),
            Some("http://a.example"),
            "{method}"
        );
        for other in ["http://b.example", "null", "http://a.example.evil"] {
            assert_eq!(
                allowed_origin(&server, method, other).await,
                None,
                "{method} {other}"
            );
        }
    }
}

#[tokio::test]
async fn a_bad_websocket_upgrade_gets_the_json_error_body() {
    let server = Server::start(&[]);
    let response = reqwest::get(server.ws_url().replace("ws://", "http://"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["statusCode"], 400, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn a_resume_token_lifetime_over_a_day_is_refused_at_start() {
    // Half of it is added to a clock reading in every socket task: u64::MAX ms overflows
    // `Instant` on platforms that count nanoseconds in 64 bits.
    for lifetime in ["86400001", "18446744073709551615"] {
        let err = support::refused_start(&["--resume-token-lifetime-ms", lifetime]);
        assert!(err.contains("at most 86400000 ms"), "{lifetime}: {err}");
    }
    // One that follows from a huge ping interval is refused too.
    let err = support::refused_start(&["--ping-interval-ms", "18446744073709551615"]);
    assert!(err.contains("at most 86400000 ms"), "{err}");
    // A day is accepted and sockets work.
    let server = Server::start(&["--resume-token-lifetime-ms", "86400000"]);
    let mut ws = Ws::connect(&server.ws_url()).await;
    assert_eq!(ws.request(json!({ "type": "ping" })).await["type"], "pong");
}

/// Opens a WebSocket with an `X-Forwarded-For` header; true if the upgrade was accepted (the
/// socket is kept open in `keep`), false if refused with 429.
async fn connect_forwarded(url: &str, forwarded_for: &str, keep: &mut Vec<Ws>) -> bool {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, _)) => {
            keep.push(Ws::from_stream(stream).await);
            true
        }
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
            false
        }
        Err(other) => panic!("unexpected failure: {other}"),
    }
}

#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_evade_the_per_ip_limit() {
    // No trusted proxy: the header is ignored, every socket counts for 127.0.0.1.
    let server = Server::start(&["--max-connections-per-ip", "2"]);
    let mut open = Vec::new();
    assert!(connect_forwarded(&server.ws_url(), "203.0.113.1", &mut open).await);
    assert!(connect_forwarded(&server.ws_url(), "203.0.113.2", &mut open).await);
    assert!(!connect_forwarded(&server.ws_url(), "203.0.113.3", &mut open).await);
    assert!(!connect_forwarded(&server.ws_url(), "2001:db8::9", &mut open).await);
    let reply = open[0].request(json!({ "type": "ping" })).await;
    assert_eq!(reply["type"], "pong");
}

#[tokio::test]
async fn behind_a_trusted_proxy_clients_count_by_forwarded_address_and_ipv6_by_64() {
    let server = Server::start(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxy",
        "127.0.0.0/8,::1",
    ]);
    let url = server.ws_url();
    let mut open = Vec::new();
    assert!(connect_forwarded(&url, "203.0.113.1", &mut open).await);
    assert!(connect_forwarded(&url, "203.0.113.2", &mut open).await);
    assert!(!connect_forwarded(&url, "203.0.113.1", &mut open).await);
    // The rightmost untrusted hop counts: a client prepending addresses changes nothing.
    assert!(!connect_forwarded(&url, "198.51.100.1, 203.0.113.1", &mut open).await);
    assert!(!connect_forwarded(&url, "203.0.113.2, 127.0.0.9", &mut open).await);
    // IPv6 counts per /64: another address of the same /64 is the same client.
    assert!(connect_forwarded(&url, "2001:db8:0:1::1", &mut open).await);
    assert!(!connect_forwarded(&url, "2001:db8:0:1:ffff::2", &mut open).await);
    assert!(connect_forwarded(&url, "2001:db8:0:2::1", &mut open).await);
    // A hop written with a port (or a bracketed IPv6 address and port) is that address: two
    // clients behind the proxy do not share the proxy's budget, one client gains nothing.
    assert!(connect_forwarded(&url, "198.51.100.7:5678", &mut open).await);
    assert!(connect_forwarded(&url, "198.51.100.8:5678", &mut open).await);
    assert!(!connect_forwarded(&url, "198.51.100.7:9999", &mut open).await);
    assert!(connect_forwarded(&url, "[2001:db8:0:3::1]:443", &mut open).await);
    assert!(!connect_forwarded(&url, "2001:db8:0:3::2", &mut open).await);
    assert_eq!(open.len(), 7);
    for ws in &mut open {
        assert_eq!(ws.request(json!({ "type": "ping" })).await["type"], "pong");
    }
}

/// Reads frames until the server closes; returns the close frame's code and reason.
async fn close_frame(ws: Ws) -> (u16, String) {
    use futures_util::StreamExt;
    let mut stream = ws.into_stream();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the server did not close the socket");
        match frame {
            Some(Ok(tungstenite::Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string());
            }
            Some(Ok(tungstenite::Message::Close(None))) | None | Some(Err(_)) => {
                panic!("closed without a close frame")
            }
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn binary_and_oversized_frame_floods_close_the_socket() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let channel = rest.create_channel(false).await;
    let url = server.ws_url();
    let mut honest = Ws::join(&url, &rest, &channel, "honest").await;
    let mut peer = Ws::join(&url, &rest, &channel, "peer").await;
    honest.expect("entered").await;

    // Binary frames: each is refused and counted; the 51st refusal within 10 s closes.
    let mut binary = Ws::connect(&url).await;
    for _ in 0..10 {
        binary
            .send_raw(tungstenite::Message::Binary(vec![0u8; 16].into()))
            .await;
        assert_eq!(binary.next().await["code"], "unsupported_frame");
    }
    // Exactly the 51st: nothing is written after the server closes.
    for _ in 0..41 {
        binary
            .send_raw(tungstenite::Message::Binary(vec![0u8; 16].into()))
            .await;
    }
    let (code, reason) = close_frame(binary).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("refused"), "{reason}");

    // Oversized text frames (over the 64 KiB limit, under the hard 1 MiB cap) likewise.
    let mut oversized = Ws::connect(&url).await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(70 * 1024));
    oversized.send_text(big.clone()).await;
    assert_eq!(oversized.next().await["code"], "frame_too_large");
    for _ in 0..50 {
        oversized.send_text(big.clone()).await;
    }
    let (code, _) = close_frame(oversized).await;
    assert_eq!(code, 1008);

    let (_, metrics) = rest.call("GET", "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"mooyaho_ws_connections_refused_total{reason="abuse"} 2"#),
        "{metrics}"
    );
    // The honest pair never noticed.
    honest
        .send(json!({"type": "call", "to": peer.id, "sdp": "v=0 honest"}))
        .await;
    assert_eq!(peer.expect("called").await["sdp"], "v=0 honest");
}

#[tokio::test]
async fn binary_frames_spend_the_rate_limit() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(&server.ws_url()).await;
    // 20 binary frames spend 20 of the 200-frame burst: of 200 pings sent right after, about 20
    // are refused (20 + 20 refusals stay under the 50 that close the socket).
    for _ in 0..20 {
        ws.send_raw(tungstenite::Message::Binary(vec![1u8; 8].into()))
            .await;
    }
    for _ in 0..200 {
        ws.send(json!({"type": "ping"})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..220 {
        let reply = ws.next().await;
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("pong"), _) => pongs += 1,
            (_, Some("rate_limited")) => limited += 1,
            (_, Some("unsupported_frame")) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited > 0, "binary frames did not count: {pongs} pongs");
    assert!(pongs < 200, "{pongs}");
}

/// The soft and hard open-file limits of a running process (`/proc/<pid>/limits`).
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

/// Every WebSocket session holds a descriptor: a server started under the usual soft limit
/// (1024, here 256) would refuse sessions far below what the host allows, so it raises its soft
/// limit to the hard one at start.
#[test]
fn the_server_raises_its_open_file_soft_limit_to_the_hard_limit() {
    let mut child = Command::new("bash")
        .args([
            "-c",
            r#"ulimit -Sn 256 && exec "$0" server --listen 127.0.0.1:0 --api-key "$1""#,
            env!("CARGO_BIN_EXE_mooyaho"),
            "an-api-key-for-the-rlimit-test",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "the server exited");
    }
    let (soft, hard) = open_file_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        soft, hard,
        "soft limit {soft} left below the hard limit {hard}"
    );
    assert_ne!(soft, "256");
}

/// A text frame just under the 64 KiB limit arrives whole through the small per-connection
/// read buffer (4 KiB; it is read in many pieces) and is relayed unchanged.
#[tokio::test]
async fn a_frame_near_the_limit_is_read_through_the_small_buffer() {
    let server = Server::start(&[]);
    let url = format!("{}?allowDirectCall=true", server.ws_url());
    let mut caller = Ws::connect(&url).await;
    let mut callee = Ws::connect(&url).await;
    let sdp = format!("v=0 {}", "s".repeat(60 * 1024));
    caller
        .send(json!({"type": "call", "to": callee.id, "sdp": sdp}))
        .await;
    assert_eq!(callee.expect("called").await["sdp"], sdp);
}

/// Outside review of issue 11, H1: within the general message rate, sockets entering and leaving
/// a channel in a loop had every change broadcast to every member, filling an honest member's
/// outbox until the hub dropped it as a slow consumer. Membership changes have their own budget.
#[tokio::test]
async fn enter_and_leave_loops_are_limited_and_an_honest_member_stays_connected() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let url = server.ws_url();
    let channel = rest.create_channel(false).await;
    let mut honest = Ws::join(&url, &rest, &channel, "honest").await;

    // One socket: past its burst, a change is refused with `rate_limited`.
    let mut churner = Ws::join(&url, &rest, &channel, "churner").await;
    let mut refused = 0;
    for i in 0..16 {
        let change = if i % 2 == 0 {
            json!({ "type": "leave" })
        } else {
            json!({ "type": "enter", "channel": channel })
        };
        let reply = churner.request(change).await;
        if reply["type"] == "error" {
            assert_eq!(reply["code"], "rate_limited", "{reply}");
            assert!(
                reply["message"].as_str().unwrap().contains("enter, leave"),
                "{reply}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 4, "{refused} of 16 changes refused");

    // Forty sockets (within the per-IP limit) each firing 100 leave/enter pairs at once.
    let mut churners = Vec::new();
    for i in 0..40 {
        churners.push(Ws::join(&url, &rest, &channel, &format!("churner-{i}")).await);
    }
    let floods: Vec<_> = churners
        .into_iter()
        .map(|ws| {
            let enter = json!({ "type": "enter", "channel": channel }).to_string();
            let leave = json!({ "type": "leave" }).to_string();
            tokio::spawn(async move {
                use futures_util::SinkExt;
                // The server closes a socket past 50 refusals: its later sends fail, as they may.
                let mut stream = ws.into_stream();
                for _ in 0..100 {
                    let _ = stream.send(leave.as_str().into()).await;
                    let _ = stream.send(enter.as_str().into()).await;
                }
                stream
            })
        })
        .collect();
    // The honest member reads everything for four seconds and is never dropped (a close
    // frame or a dropped socket fails `collect_for`).
    let heard = honest.collect_for(Duration::from_secs(4)).await.len();
    let reply = honest.request(json!({ "type": "ping" })).await;
    assert_eq!(reply["type"], "pong", "{reply}");
    // Each flooding socket got its burst and ~2 a second through, not 200 changes.
    assert!(
        heard < 40 * 30,
        "the honest member heard {heard} membership frames"
    );
    for flood in floods {
        drop(flood.await.unwrap());
    }
}
