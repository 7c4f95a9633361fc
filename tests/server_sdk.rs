//! The Rust server SDK (`mooyaho_server_sdk::Mooyaho`) against a real `mooyaho server` process.

mod support;

use mooyaho_server_sdk::{Error, Mooyaho, SfuServerPatch};
use reqwest::StatusCode;
use serde_json::json;
use support::{Server, Ws};

fn sdk(server: &Server) -> Mooyaho {
    Mooyaho::new(format!("http://{}", server.addr), &server.api_key).unwrap()
}

fn status(error: &Error) -> StatusCode {
    error
        .status()
        .unwrap_or_else(|| panic!("not an API error: {error}"))
}

const FINGERPRINT_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn channel_methods_create_get_list_and_delete() {
    let server = Server::start(&[]);
    let mooyaho = sdk(&server);

    let mesh = mooyaho.create_channel(false).await.unwrap();
    assert!(!mesh.sfu_enabled);
    assert_eq!(mesh.sfu_server_id, None);
    assert!(!mesh.id.is_empty());
    let sfu = mooyaho.create_channel(true).await.unwrap();
    assert!(sfu.sfu_enabled);
    assert_ne!(mesh.id, sfu.id);

    let list = mooyaho.list_channels().await.unwrap();
    let listed: Vec<(&str, bool, Option<usize>)> = list
        .iter()
        .map(|c| (c.id.as_str(), c.sfu_enabled, c.session_count))
        .collect();
    assert_eq!(
        listed,
        vec![
            (mesh.id.as_str(), false, Some(0)),
            (sfu.id.as_str(), true, Some(0))
        ]
    );

    let detail = mooyaho.get_channel(&sfu.id).await.unwrap();
    assert_eq!(detail.id, sfu.id);
    assert!(detail.sfu_enabled);
    assert!(detail.channel_sessions.is_empty());

    mooyaho.delete_channel(&mesh.id).await.unwrap();
    let error = mooyaho.get_channel(&mesh.id).await.unwrap_err();
    assert_eq!(status(&error), StatusCode::NOT_FOUND);
    assert!(
        matches!(&error, Error::Api { message, .. } if message == "Channel is not found"),
        "{error:?}"
    );
    let error = mooyaho.delete_channel(&mesh.id).await.unwrap_err();
    assert_eq!(status(&error), StatusCode::NOT_FOUND);
    // An id that would escape its path segment stays in it (the SDK encodes it) and is refused
    // as an invalid channel id: it never reaches another route.
    let error = mooyaho.get_channel("../sfu-servers").await.unwrap_err();
    assert_eq!(status(&error), StatusCode::BAD_REQUEST);

    let a = mooyaho.create_channel(false).await.unwrap();
    let result = mooyaho
        .bulk_delete_channels(&[&a.id, &sfu.id, "no-such-channel"])
        .await
        .unwrap();
    assert_eq!(result.deleted, vec![a.id.clone(), sfu.id.clone()]);
    assert_eq!(result.not_found, vec!["no-such-channel".to_owned()]);
    assert!(mooyaho.list_channels().await.unwrap().is_empty());
    let error = mooyaho.bulk_delete_channels(&[]).await.unwrap_err();
    assert_eq!(status(&error), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn integrate_user_binds_a_live_session_that_can_then_enter() {
    let server = Server::start(&[]);
    let mooyaho = sdk(&server);
    let channel = mooyaho.create_channel(false).await.unwrap();
    let mut ws = Ws::connect(&server.ws_url()).await;

    let user = json!({"id": "user-1", "name": "Ada", "avatar": "a.png"});
    let integrated = mooyaho.integrate_user(&ws.id, user.clone()).await.unwrap();
    assert_eq!(integrated.session_id, ws.id);
    assert_eq!(integrated.user, user);
    assert_eq!(ws.expect("integrated").await["user"], user);

    ws.send(json!({"type": "enter", "channel": channel.id}))
        .await;
    ws.expect("enterSuccess").await;
    let detail = mooyaho.get_channel(&channel.id).await.unwrap();
    assert_eq!(detail.channel_sessions.len(), 1);
    assert_eq!(detail.channel_sessions[0].session_id, ws.id);
    assert_eq!(detail.channel_sessions[0].user, user);
    let listed = mooyaho.list_channels().await.unwrap();
    assert_eq!(listed[0].session_count, Some(1));

    let error = mooyaho
        .integrate_user("no-such-session", json!({"id": "u"}))
        .await
        .unwrap_err();
    assert_eq!(status(&error), StatusCode::NOT_FOUND);
    let error = mooyaho
        .integrate_user(&ws.id, json!({"name": "no id"}))
        .await
        .unwrap_err();
    assert_eq!(status(&error), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sfu_server_methods_register_list_update_drain_and_delete() {
    let server = Server::start(&[]);
    let mooyaho = sdk(&server);

    let first = mooyaho
        .create_sfu_server("10.0.0.1:4433", Some(FINGERPRINT_HEX))
        .await
        .unwrap();
    assert_eq!(first.address, "10.0.0.1:4433");
    let expected_fingerprint = FINGERPRINT_HEX
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(
        first.fingerprint.as_deref(),
        Some(expected_fingerprint.as_str())
    );
    assert!(!first.disabled && !first.draining);
    assert_eq!((first.rooms, first.sessions), (0, 0));
    assert_eq!(first.health, "unknown");
    let second = mooyaho
        .create_sfu_server("sfu-2.example.com:4433", None)
        .await
        .unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(second.fingerprint, None);

    let list = mooyaho.list_sfu_servers().await.unwrap();
    assert_eq!(list, vec![first.clone(), second.clone()]);
    assert_eq!(mooyaho.get_sfu_server(second.id).await.unwrap(), second);

    let patch = SfuServerPatch {
        address: Some("10.0.0.9:5000".into()),
        disabled: Some(true),
        ..SfuServerPatch::default()
    };
    let updated = mooyaho.update_sfu_server(first.id, &patch).await.unwrap();
    assert_eq!(updated.address, "10.0.0.9:5000");
    assert!(updated.disabled);
    // Fields absent from the patch are kept.
    assert_eq!(updated.fingerprint, first.fingerprint);
    assert!(!updated.draining);
    assert_eq!(mooyaho.get_sfu_server(first.id).await.unwrap(), updated);

    let drained = mooyaho.drain_sfu_server(second.id).await.unwrap();
    assert!(drained.draining);
    assert!(mooyaho.get_sfu_server(second.id).await.unwrap().draining);

    mooyaho.delete_sfu_server(first.id, false).await.unwrap();
    let error = mooyaho.get_sfu_server(first.id).await.unwrap_err();
    assert_eq!(status(&error), StatusCode::NOT_FOUND);
    let error = mooyaho.delete_sfu_server(first.id, true).await.unwrap_err();
    assert_eq!(status(&error), StatusCode::NOT_FOUND);
    let error = mooyaho
        .update_sfu_server(first.id, &SfuServerPatch::default())
        .await
        .unwrap_err();
    assert_eq!(status(&error), StatusCode::NOT_FOUND);
    let error = mooyaho.drain_sfu_server(first.id).await.unwrap_err();
    assert_eq!(status(&error), StatusCode::NOT_FOUND);
    mooyaho.delete_sfu_server(second.id, true).await.unwrap();
    assert!(mooyaho.list_sfu_servers().await.unwrap().is_empty());
}

#[tokio::test]
async fn errors_are_typed_bad_address_bad_fingerprint_and_wrong_key() {
    let server = Server::start(&[]);
    let mooyaho = sdk(&server);

    for bad in ["no-port", "host:0", "host:99999", ":4433", "a b:1"] {
        let error = mooyaho.create_sfu_server(bad, None).await.unwrap_err();
        assert_eq!(status(&error), StatusCode::BAD_REQUEST, "{bad}");
        let Error::Api { message, .. } = &error else {
            panic!("{error:?}")
        };
        assert!(message.contains("address"), "{message}");
    }
    let error = mooyaho
        .create_sfu_server("10.0.0.1:4433", Some("not-a-fingerprint"))
        .await
        .unwrap_err();
    assert_eq!(status(&error), StatusCode::BAD_REQUEST);
    let node = mooyaho
        .create_sfu_server("10.0.0.1:4433", None)
        .await
        .unwrap();
    let patch = SfuServerPatch {
        address: Some("nope".into()),
        ..SfuServerPatch::default()
    };
    let error = mooyaho
        .update_sfu_server(node.id, &patch)
        .await
        .unwrap_err();
    assert_eq!(status(&error), StatusCode::BAD_REQUEST);
    assert_eq!(
        mooyaho.get_sfu_server(node.id).await.unwrap().address,
        "10.0.0.1:4433"
    );

    let wrong = Mooyaho::new(format!("http://{}", server.addr), "wrong-key-wrong-key").unwrap();
    let error = wrong.list_channels().await.unwrap_err();
    assert_eq!(status(&error), StatusCode::UNAUTHORIZED);
    assert!(matches!(error, Error::Api { .. }));
    let error = wrong.create_channel(false).await.unwrap_err();
    assert_eq!(status(&error), StatusCode::UNAUTHORIZED);
    assert!(mooyaho.list_channels().await.unwrap().is_empty());

    // Nothing listens there: a transport error, not an API status.
    let port = support::free_port();
    let down = Mooyaho::new(format!("http://127.0.0.1:{port}"), "key-key-key-key-key").unwrap();
    let error = down.list_channels().await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert_eq!(error.status(), None);
    assert!(matches!(
        Mooyaho::new("127.0.0.1:8080", "key"),
        Err(Error::InvalidUrl(_))
    ));
}

#[tokio::test]
async fn two_clients_with_their_own_url_and_key_do_not_interfere() {
    const OTHER_KEY: &str = "another-test-key-9876543210";
    let first = Server::start(&[]);
    let args = ["server", "--listen", "127.0.0.1:0", "--api-key", OTHER_KEY];
    let second = Server::spawn(&args, None, OTHER_KEY);
    let one = sdk(&first);
    let two = sdk(&second);

    let on_one = one.create_channel(false).await.unwrap();
    let on_two = two.create_channel(true).await.unwrap();
    let one_ids: Vec<String> = one
        .list_channels()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let two_ids: Vec<String> = two
        .list_channels()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(one_ids, vec![on_one.id.clone()]);
    assert_eq!(two_ids, vec![on_two.id.clone()]);
    assert_eq!(
        status(&one.get_channel(&on_two.id).await.unwrap_err()),
        StatusCode::NOT_FOUND
    );
    assert!(two.get_channel(&on_two.id).await.unwrap().sfu_enabled);

    // Each key only opens its own server.
    let crossed = Mooyaho::new(format!("http://{}", second.addr), &first.api_key).unwrap();
    assert_eq!(
        status(&crossed.list_channels().await.unwrap_err()),
        StatusCode::UNAUTHORIZED
    );
    // Using one client did not change the other (the original SDK shared a global client).
    let node = two.create_sfu_server("10.0.0.2:4433", None).await.unwrap();
    assert!(one.list_sfu_servers().await.unwrap().is_empty());
    assert_eq!(two.list_sfu_servers().await.unwrap(), vec![node]);
}

#[tokio::test]
async fn a_join_token_signed_offline_by_the_sdk_is_accepted_by_the_server() {
    use mooyaho_server_sdk::{JoinToken, create_join_token};
    const SECRET: &str = "sdk-token-secret-0123456789";
    let server = Server::start(&["--token-secret", SECRET]);
    let channel = sdk(&server).create_channel(false).await.unwrap().id;
    let mut grant = JoinToken::new("ada", channel.clone());
    grant.name = Some("Ada".into());
    let token = create_join_token(SECRET, &grant).unwrap();
    let url = format!("{}?token={token}", server.ws_url());
    let (stream, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut ws = Ws::from_stream(stream).await;
    ws.send(json!({ "type": "enter", "channel": channel }))
        .await;
    ws.expect("enterSuccess").await;
    let list = ws.request(json!({ "type": "listSessions" })).await;
    assert_eq!(
        list["sessions"][0]["user"],
        json!({ "id": "ada", "name": "Ada" })
    );
    // Signed with another secret (here the API key, which a token secret replaces): refused.
    let wrong = create_join_token(&server.api_key, &grant).unwrap();
    let url = format!("{}?token={wrong}", server.ws_url());
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    assert!(matches!(
        create_join_token("", &grant),
        Err(Error::JoinToken(_))
    ));
}
