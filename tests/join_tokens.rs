//! Join tokens through the real server: `GET /websocket?token=` integrates at connect, limits the
//! session to its channel and grants; bad tokens get HTTP 401 with the JSON error body;
//! `POST /tokens` signs over REST. The integrateUser flow is unchanged alongside.

mod support;

use std::time::Duration;

use mooyaho_server_sdk::{JoinToken, create_join_token};
use mooyaho_test_support::sfu_client::SfuClient;
use serde_json::{Value, json};
use support::{API_KEY, Server, Ws, healthy_node};
use tokio_tungstenite::tungstenite;

/// Connects and expects the upgrade to be refused: returns the status and JSON body.
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

fn token_url(server: &Server, token: &str) -> String {
    format!("{}?token={token}", server.ws_url())
}

/// Signs `claims` as a third party would (any HS256 JWT library).
fn sign_raw(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_token_session_is_integrated_at_connect_and_kept_to_its_channel_across_resume() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let mine = rest.create_channel(false).await;
    let other = rest.create_channel(false).await;
    // An honest participant through the integrateUser flow, unchanged.
    let mut honest = Ws::join(&server.ws_url(), &rest, &mine, "bob").await;

    let mut grant = JoinToken::new("ada", mine.clone());
    grant.name = Some("Ada".into());
    let token = create_join_token(API_KEY, &grant).unwrap();
    let (stream, _) = tokio_tungstenite::connect_async(token_url(&server, &token))
        .await
        .unwrap();
    let mut ada = Ws::from_stream(stream).await;

    // Another channel is refused, even one that exists; the session's own is allowed.
    let refused = ada
        .expect_error(json!({ "type": "enter", "channel": other }), "forbidden")
        .await;
    assert!(
        refused["message"].as_str().unwrap().contains("join token"),
        "{refused}"
    );
    // The token's user cannot be replaced by the client.
    ada.expect_error(
        json!({ "type": "integrateUser", "user": { "id": "mallory" } }),
        "forbidden",
    )
    .await;
    ada.send(json!({ "type": "enter", "channel": mine })).await;
    ada.expect("enterSuccess").await;
    let entered = honest
        .expect_where("entered", |m| m["sessionId"] == ada.id.as_str())
        .await;
    assert_eq!(entered["user"], json!({ "id": "ada", "name": "Ada" }));

    // The honest member's view and chat are unaffected.
    let list = honest.request(json!({ "type": "listSessions" })).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2, "{list}");

    // Resume: a plain connection that takes the session over keeps its grants.
    let (id, resume) = (ada.id.clone(), ada.token.clone());
    ada.abort();
    let mut back = Ws::connect(&server.ws_url()).await;
    let resumed = back
        .request(json!({ "type": "reuseId", "id": id, "token": resume }))
        .await;
    assert_eq!(resumed["type"], "reuseIdSuccess", "{resumed}");
    assert_eq!(resumed["user"]["id"], "ada");
    back.expect_error(json!({ "type": "enter", "channel": other }), "forbidden")
        .await;
    back.expect_error(
        json!({ "type": "integrateUser", "user": { "id": "mallory" } }),
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn the_connected_message_names_the_token_user() {
    let server = Server::start(&[]);
    let channel = server.rest().create_channel(false).await;
    let token = create_join_token(API_KEY, &JoinToken::new("ada", channel)).unwrap();
    let (mut stream, _) = tokio_tungstenite::connect_async(token_url(&server, &token))
        .await
        .unwrap();
    use futures_util::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    let connected: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(connected["type"], "connected", "{connected}");
    assert_eq!(connected["user"], json!({ "id": "ada" }));
    // Without a token, `connected` has no user (the integrateUser flow).
    let (mut plain, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .unwrap();
    let first = plain.next().await.unwrap().unwrap();
    let connected: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert!(connected.get("user").is_none(), "{connected}");
}

#[tokio::test]
async fn expired_early_forged_and_malformed_tokens_get_401_with_the_json_body() {
    const SECRET: &str = "a-separate-token-secret-42";
    let server = Server::start(&["--token-secret", SECRET]);
    let rest = server.rest();
    let channel = rest.create_channel(false).await;
    let now = now();
    let claims = |exp: u64, nbf: Option<u64>| {
        let mut claims = json!({ "sub": "ada", "channel": channel, "exp": exp });
        if let Some(nbf) = nbf {
            claims["nbf"] = nbf.into();
        }
        claims
    };
    let honest = sign_raw(SECRET, &claims(now + 600, None));
    let mut tampered: Vec<String> = honest.split('.').map(str::to_owned).collect();
    tampered[1] = sign_raw(
        SECRET,
        &json!({ "sub": "root", "channel": channel, "exp": now + 600 }),
    )
    .split('.')
    .nth(1)
    .unwrap()
    .to_owned();
    for (what, token) in [
        ("expired", sign_raw(SECRET, &claims(now - 3600, None))),
        (
            "not yet valid",
            sign_raw(SECRET, &claims(now + 7200, Some(now + 3600))),
        ),
        (
            "signed with the API key when a token secret is set",
            sign_raw(API_KEY, &claims(now + 600, None)),
        ),
        ("another payload under the signature", tampered.join(".")),
        ("malformed", "not-a-jwt".to_owned()),
        ("empty", String::new()),
        (
            "a channel id the server refuses",
            sign_raw(
                SECRET,
                &json!({ "sub": "ada", "channel": "a:b", "exp": now + 600 }),
            ),
        ),
    ] {
        let (status, body) = refused_upgrade(&token_url(&server, &token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["statusCode"], 401, "{what}: {body}");
        assert_eq!(body["error"], "Unauthorized", "{what}: {body}");
        assert!(body["message"].is_string(), "{what}: {body}");
    }
    // Alongside: the valid token, and the integrateUser flow, still work.
    let (stream, _) = tokio_tungstenite::connect_async(token_url(&server, &honest))
        .await
        .unwrap();
    let mut ada = Ws::from_stream(stream).await;
    ada.send(json!({ "type": "enter", "channel": channel }))
        .await;
    ada.expect("enterSuccess").await;
    let mut bob = Ws::join(&server.ws_url(), &rest, &channel, "bob").await;
    let list = bob.request(json!({ "type": "listSessions" })).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test]
async fn a_token_secret_shorter_than_an_api_key_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mooyaho"))
        .args(["server", "--listen", "127.0.0.1:0", "--api-key", API_KEY])
        .args(["--token-secret", "short"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("token secret"), "{stderr}");
}

#[tokio::test]
async fn post_tokens_signs_a_usable_token_and_refuses_bad_input() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let channel = rest.create_channel(false).await;
    let (status, body) = rest
        .call(
            "POST",
            "/tokens",
            Some(json!({ "userId": "ada", "name": "Ada", "channel": channel, "ttlSeconds": 60 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let expires_at = body["expiresAt"].as_u64().unwrap();
    assert!((now() + 50..=now() + 70).contains(&expires_at), "{body}");
    let token = body["token"].as_str().unwrap();
    let (stream, _) = tokio_tungstenite::connect_async(token_url(&server, token))
        .await
        .unwrap();
    let mut ada = Ws::from_stream(stream).await;
    ada.send(json!({ "type": "enter", "channel": channel }))
        .await;
    ada.expect("enterSuccess").await;

    for bad in [
        json!({ "userId": "ada", "channel": channel, "ttlSeconds": 0 }),
        json!({ "userId": "ada", "channel": channel, "ttlSeconds": 86401 }),
        json!({ "userId": "ada", "channel": channel, "ttlSeconds": -1 }),
        json!({ "userId": "ada" }),
        json!({ "channel": channel }),
        json!({ "userId": "", "channel": channel }),
        json!({ "userId": "a:b", "channel": channel }),
        json!({ "userId": "ada", "channel": "mooyaho:sfus" }),
        json!({ "userId": "ada", "channel": channel, "name": "x".repeat(300) }),
        json!({ "userId": "ada", "channel": channel, "publish": "yes" }),
        json!({ "userId": "ada", "channel": channel, "admin": true }),
        json!(["ada"]),
    ] {
        let (status, body) = rest.call("POST", "/tokens", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["statusCode"], 400, "{bad}: {body}");
    }
    let (status, _) = rest
        .call_raw(
            "POST",
            "/tokens",
            Some(json!({ "userId": "ada", "channel": channel }).to_string()),
            Some("wrong-key-0123456789"),
        )
        .await;
    assert_eq!(status, 401);
}

/// `mooyaho dev` with its embedded node: `publish: false` is refused with `forbidden`, and a
/// `subscribe: false` session gets no subscribe offer while an integrated member alongside gets
/// one for the same publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_and_subscribe_grants_are_enforced_in_an_sfu_channel() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    healthy_node(&rest).await;
    let channel = rest.create_channel(true).await;
    let connect = |grant: JoinToken| {
        let url = token_url(
            &server,
            &create_join_token(&server.api_key, &grant).unwrap(),
        );
        let enter = json!({ "type": "enter", "channel": grant.channel });
        async move {
            let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut ws = Ws::from_stream(stream).await;
            ws.send(enter).await;
            ws.expect("enterSuccess").await;
            ws
        }
    };
    let mut viewer = connect(JoinToken {
        publish: false,
        ..JoinToken::new("viewer", channel.clone())
    })
    .await;
    let mut deaf = connect(JoinToken {
        subscribe: false,
        ..JoinToken::new("deaf", channel.clone())
    })
    .await;
    let mut watcher = Ws::join(&server.ws_url(), &rest, &channel, "watcher").await;

    // A publish from the viewer is refused before any SDP reaches the node.
    let refused = viewer
        .expect_error(
            json!({ "type": "call", "isSFU": true, "sdp": "v=0\r\n" }),
            "forbidden",
        )
        .await;
    assert!(
        refused["message"].as_str().unwrap().contains("publish"),
        "{refused}"
    );

    // An honest publisher: the integrated watcher and the viewer get offers, `deaf` none.
    let mut publisher = SfuClient::join(&server.ws_url(), &rest, &channel, "publisher").await;
    publisher.publish().await;
    let is_offer = |m: &Value| m["isSFU"] == true;
    let offer = watcher.expect_where("called", is_offer).await;
    assert!(
        offer["sdp"].as_str().unwrap().contains("m=audio"),
        "{offer}"
    );
    viewer.expect_where("called", is_offer).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(message) = tokio::time::timeout_at(deadline, deaf.next()).await {
        assert_ne!(message["type"], "called", "deaf got an offer: {message}");
    }
    // `deaf` may still publish (only subscribing was withheld).
    let published = deaf
        .request(json!({ "type": "call", "isSFU": true, "sdp": "v=0\r\n" }))
        .await;
    assert_ne!(published["code"], "forbidden", "{published}");
}
