//! Every REST route against the real binary: success and each bad-input case.

mod support;

use serde_json::{Value, json};
use support::{Server, Ws};

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_key() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let routes = [
        ("GET", "/channels"),
        ("POST", "/channels"),
        ("GET", "/channels/x"),
        ("DELETE", "/channels/x"),
        ("POST", "/channels/bulk-delete"),
        ("POST", "/sessions/x"),
        ("GET", "/sfu-servers"),
        ("POST", "/sfu-servers"),
        ("GET", "/sfu-servers/1"),
        ("PATCH", "/sfu-servers/1"),
        ("DELETE", "/sfu-servers/1"),
        ("POST", "/sfu-servers/1/drain"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ];
    for (method, path) in routes {
        for key in [None, Some("wrong-key-wrong-key"), Some("")] {
            let (status, body) = rest.call_raw(method, path, None, key).await;
            assert_eq!(status, 401, "{method} {path} with {key:?}: {body}");
            assert_eq!(body["statusCode"], 401);
            assert_eq!(body["error"], "Unauthorized");
        }
    }
    let (status, body) = rest.call_raw("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn channels_crud_and_bad_inputs() {
    let server = Server::start(&[]);
    let rest = server.rest();

    // Empty body is allowed (the original answered 500).
    let (status, mesh) = rest
        .call_raw("POST", "/channels", None, Some(&rest.key))
        .await;
    assert_eq!(status, 200, "{mesh}");
    assert_eq!(mesh["sfuEnabled"], false);
    assert_eq!(mesh["sfuServerId"], Value::Null);
    let (status, sfu) = rest
        .call("POST", "/channels", Some(json!({"sfuEnabled": true})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(sfu["sfuEnabled"], true);

    for bad in [r#"{"sfuEnabled":"yes"}"#, "{not json", "[1]", r#""text""#] {
        let (status, body) = rest
            .call_raw("POST", "/channels", Some(bad.into()), Some(&rest.key))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["statusCode"], 400);
        assert_eq!(body["error"], "Bad Request");
    }
    // The server may answer 413 and close before the client has written the whole body; such
    // a reset is the oversize being refused too, so retry until the 413 itself is read.
    let huge = format!(r#"{{"sfuEnabled":true,"pad":"{}"}}"#, "x".repeat(200_000));
    let mut refused = None;
    // A client of its own: the server closes the connection after the 413, and a pooled
    // connection reused by the next request would then fail as an incomplete message.
    let oversize_client = reqwest::Client::new();
    for _ in 0..10 {
        let sent = oversize_client
            .post(format!("{}/channels", rest.base))
            .bearer_auth(&rest.key)
            .body(huge.clone())
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            refused = Some((status, response.json::<Value>().await.unwrap()));
            break;
        }
    }
    let (status, body) = refused.expect("the server answered the oversized request");
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["statusCode"], 413);

    let (status, list) = rest.call("GET", "/channels", None).await;
    assert_eq!(status, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|c| c["sessionCount"] == 0));

    // A member shows up in the detail and the count.
    let mut ws = Ws::connect(&server.ws_url()).await;
    rest.integrate(&ws.id, json!({"id": "u1", "name": "Ada"}))
        .await;
    ws.send(json!({"type": "enter", "channel": mesh["id"]}))
        .await;
    ws.expect("enterSuccess").await;
    let (status, detail) = rest
        .call(
            "GET",
            &format!("/channels/{}", mesh["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        detail["channelSessions"],
        json!([{"sessionId": ws.id, "user": {"id": "u1", "name": "Ada"}}])
    );
    let (_, list) = rest.call("GET", "/channels", None).await;
    let count = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == mesh["id"])
        .unwrap()["sessionCount"]
        .clone();
    assert_eq!(count, 1);

    let (status, body) = rest.call("GET", "/channels/no-such-channel", None).await;
    assert_eq!(
        (status, body["message"].as_str().unwrap()),
        (404, "Channel is not found")
    );

    // Delete: members are told, unknown ids are 404 (the original answered 500).
    let (status, body) = rest
        .call(
            "DELETE",
            &format!("/channels/{}", mesh["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let closed = ws.expect("channelClosed").await;
    assert_eq!(closed["channel"], mesh["id"]);
    ws.expect_error(json!({"type": "listSessions"}), "not_in_channel")
        .await;
    let (status, _) = rest
        .call(
            "DELETE",
            &format!("/channels/{}", mesh["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Bulk delete takes {"ids": [...]} (broken in the original) and reports unknown ids.
    let a = rest.create_channel(false).await;
    let b = rest.create_channel(false).await;
    let (status, body) = rest
        .call(
            "POST",
            "/channels/bulk-delete",
            Some(json!({"ids": [a, b, "nope"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], json!([a, b]));
    assert_eq!(body["notFound"], json!(["nope"]));
    for bad in [
        json!({}),
        json!({"ids": []}),
        json!({"ids": "x"}),
        json!([a]),
    ] {
        let (status, body) = rest
            .call("POST", "/channels/bulk-delete", Some(bad.clone()))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = rest
        .call_raw("POST", "/channels/bulk-delete", None, Some(&rest.key))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn integrate_user_validates_and_rebinds() {
    let server = Server::start(&["--resume-grace-ms", "200"]);
    let rest = server.rest();
    let mut ws = Ws::connect(&server.ws_url()).await;
    let path = format!("/sessions/{}", ws.id);

    let (status, body) = rest
        .call("POST", &path, Some(json!({"id": "u1", "name": "A"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"sessionId": ws.id, "user": {"id": "u1", "name": "A"}})
    );
    assert_eq!(ws.expect("integrated").await["user"]["id"], "u1");
    // Re-integrating re-points the session (the original kept the old user).
    let (status, body) = rest.call("POST", &path, Some(json!({"id": "u2"}))).await;
    assert_eq!((status, body["user"]["id"].clone()), (200, json!("u2")));
    assert_eq!(ws.expect("integrated").await["user"]["id"], "u2");

    for bad in [
        json!({}),
        json!({"id": 5}),
        json!({"id": ""}),
        json!("u1"),
        json!([{"id": "u"}]),
    ] {
        let (status, body) = rest.call("POST", &path, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = rest.call_raw("POST", &path, None, Some(&rest.key)).await;
    assert_eq!(status, 400);
    let (status, body) = rest
        .call(
            "POST",
            "/sessions/unknown-session",
            Some(json!({"id": "u"})),
        )
        .await;
    assert_eq!((status, body["statusCode"].clone()), (404, json!(404)));

    // A closed session is gone once its grace window ends.
    let closed = Ws::connect(&server.ws_url()).await;
    let closed_id = closed.id.clone();
    closed.close().await;
    let gone = support::eventually(std::time::Duration::from_secs(5), || {
        let rest = rest.clone();
        let path = format!("/sessions/{closed_id}");
        async move { rest.call("POST", &path, Some(json!({"id": "u"}))).await.0 == 404 }
    })
    .await;
    assert!(gone, "closed session still integrable");
}

#[tokio::test]
async fn sfu_servers_registry() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let fingerprint = vec!["ab"; 32].join(":");
    let (status, node) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({"address": "127.0.0.1:4433", "fingerprint": fingerprint})),
        )
        .await;
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["id"], 1);
    assert_eq!(node["fingerprint"], vec!["AB"; 32].join(":"));
    assert_eq!(
        (node["disabled"].clone(), node["draining"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(node["health"], "unknown");

    for bad in [
        json!({}),
        json!({"address": "nohost"}),
        json!({"address": "h:0"}),
        json!({"address": 5}),
        json!({"address": "h:1", "fingerprint": "zz"}),
    ] {
        let (status, body) = rest.call("POST", "/sfu-servers", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let (status, list) = rest.call("GET", "/sfu-servers", None).await;
    assert_eq!((status, list.as_array().unwrap().len()), (200, 1));
    let (status, one) = rest.call("GET", "/sfu-servers/1", None).await;
    assert_eq!(
        (status, one["address"].clone()),
        (200, json!("127.0.0.1:4433"))
    );
    for missing in ["/sfu-servers/99", "/sfu-servers/abc", "/sfu-servers/-1"] {
        let (status, _) = rest.call("GET", missing, None).await;
        assert_eq!(status, 404, "{missing}");
    }

    let (status, patched) = rest
        .call("PATCH", "/sfu-servers/1", Some(json!({"disabled": true})))
        .await;
    assert_eq!((status, patched["disabled"].clone()), (200, json!(true)));
    let (status, _) = rest
        .call("PATCH", "/sfu-servers/1", Some(json!({"disabled": "yes"})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = rest
        .call("PATCH", "/sfu-servers/1", Some(json!({"address": "bad"})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = rest
        .call("PATCH", "/sfu-servers/7", Some(json!({"disabled": true})))
        .await;
    assert_eq!(status, 404);
    let (status, drained) = rest.call("POST", "/sfu-servers/1/drain", None).await;
    assert_eq!((status, drained["draining"].clone()), (200, json!(true)));
    let (status, _) = rest.call("POST", "/sfu-servers/9/drain", None).await;
    assert_eq!(status, 404);

    let (status, _) = rest
        .call("DELETE", "/sfu-servers/1?force=maybe", None)
        .await;
    assert_eq!(status, 400);
    let (status, body) = rest.call("DELETE", "/sfu-servers/1", None).await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = rest.call("DELETE", "/sfu-servers/1", None).await;
    assert_eq!(status, 404);
    // Ids are never reused.
    let (_, node) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({"address": "127.0.0.1:4434"})),
        )
        .await;
    assert_eq!(node["id"], 2);
}

#[tokio::test]
async fn operations_routes() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let (status, spec) = rest.call("GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/channels",
        "/channels/{id}",
        "/channels/bulk-delete",
        "/sessions/{id}",
        "/sfu-servers",
        "/sfu-servers/{id}",
        "/sfu-servers/{id}/drain",
        "/health",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());

    let _ws = Ws::connect(&server.ws_url()).await;
    let (status, metrics) = rest.call("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    assert!(text.contains("mooyaho_ws_connections 1"), "{text}");
    assert!(
        text.contains("mooyaho_http_responses_total{status=\"200\"}"),
        "{text}"
    );

    let (status, body) = rest.call("GET", "/no-such-route", None).await;
    assert_eq!((status, body["statusCode"].clone()), (404, json!(404)));
    let (status, body) = rest.call("PUT", "/channels", None).await;
    assert_eq!((status, body["statusCode"].clone()), (405, json!(405)));
}

/// What schemathesis (scripts/schemathesis.sh) found: the code accepts exactly what
/// `/openapi.json` publishes.
#[tokio::test]
async fn bodies_accept_exactly_what_the_schema_publishes() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let key = Some(rest.key.as_str());

    // `POST /channels`: the body may be empty or `null`; an array is no object.
    let (status, body) = rest
        .call_raw("POST", "/channels", Some("null".into()), key)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest
        .call_raw("POST", "/channels", Some("[]".into()), key)
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = rest
        .call_raw(
            "POST",
            "/channels/bulk-delete",
            Some(r#"[["x"]]"#.into()),
            key,
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // `POST /sessions/{id}`: `id` is counted in characters (JSON Schema's maxLength).
    let ws = Ws::connect(&server.ws_url()).await;
    let (status, body) = rest
        .call(
            "POST",
            &format!("/sessions/{}", ws.id),
            Some(json!({ "id": "é".repeat(256), "extra": [1, 2] })),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // SFU addresses and fingerprints follow the published patterns exactly.
    let spec = rest.call("GET", "/openapi.json", None).await.1;
    let schema = &spec["components"]["schemas"]["CreateSfuServerRequest"]["properties"];
    assert!(schema["address"]["pattern"].is_string(), "{schema}");
    assert!(schema["fingerprint"]["pattern"].is_string(), "{schema}");
    let fingerprint = vec!["AB"; 32].join(":");
    for (address, fingerprint, expected) in [
        ("[::1]:4433", Some(fingerprint.clone()), 200),
        ("sfu_1.example:65535", Some("ab".repeat(32)), 200),
        ("", None, 400),
        ("host:+80", None, 400),
        ("host:080", None, 400),
        ("host:65536", None, 400),
        ("::1:4433", None, 400),
        ("host:1\n", None, 400),
        ("host:1", Some(format!(" {fingerprint}")), 400),
        ("host:1", Some("a:b".repeat(32)), 400),
    ] {
        let (status, body) = rest
            .call(
                "POST",
                "/sfu-servers",
                Some(json!({ "address": address, "fingerprint": fingerprint })),
            )
            .await;
        assert_eq!(status, expected, "{address:?} {fingerprint:?}: {body}");
    }
    let links = &spec["paths"]["/sfu-servers"]["post"]["responses"]["200"]["links"];
    assert_eq!(links["get_sfu_server"]["operationId"], "get_sfu_server");
}

/// `/metrics` shows each SFU node's health and security drops as this instance sees them, and the
/// WebSocket error counters by code.
#[tokio::test]
async fn metrics_show_sfu_nodes_and_websocket_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();

    let healthy = support::eventually(std::time::Duration::from_secs(10), || {
        let rest = rest.clone();
        async move {
            let (_, metrics) = rest.call("GET", "/metrics", None).await;
            metrics
                .as_str()
                .is_some_and(|t| t.contains(r#"mooyaho_sfu_healthy{node="1"} 1"#))
        }
    })
    .await;
    let (status, metrics) = rest.call("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap().to_owned();
    assert!(healthy, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"mooyaho_sfu_security_drops{node="1"} "#)),
        "{text}"
    );

    // A node that is registered but unreachable is there with health 0.
    let (status, body) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({ "address": "127.0.0.1:9", "fingerprint": "AB".repeat(32) })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = rest.call("GET", "/metrics", None).await;
    let text = metrics.as_str().unwrap();
    let unreachable = format!("mooyaho_sfu_healthy{{node=\"{}\"}} 0", body["id"]);
    assert!(text.contains(&unreachable), "{text}");

    // WebSocket errors are counted by code.
    let mut ws = Ws::connect(&server.ws_url()).await;
    ws.send_text("{not json".into()).await;
    ws.expect("error").await;
    let (_, metrics) = rest.call("GET", "/metrics", None).await;
    let text = metrics.as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("mooyaho_ws_errors_total{code=") && !l.ends_with(" 0")),
        "{text}"
    );
}

/// `/metrics` counts the domain event stream by kind: the metrics subscriber sees what the wire
/// delivery sees.
#[tokio::test]
async fn metrics_count_domain_events_by_kind() {
    let server = Server::start(&[]);
    let rest = server.rest();
    let channel = rest.create_channel(false).await;
    let mut alice = Ws::join(&server.ws_url(), &rest, &channel, "alice").await;
    let mut bob = Ws::join(&server.ws_url(), &rest, &channel, "bob").await;
    alice
        .send(json!({"type": "message", "message": {"type": "text", "text": "hi"}}))
        .await;
    bob.expect("messaged").await;
    bob.send(json!({"type": "leave"})).await;
    alice.expect("left").await;

    let (status, metrics) = rest.call("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    for line in [
        r#"mooyaho_domain_events_total{kind="channel_created"} 1"#,
        r#"mooyaho_domain_events_total{kind="session_started"} 2"#,
        r#"mooyaho_domain_events_total{kind="member_entered"} 2"#,
        r#"mooyaho_domain_events_total{kind="chat_sent"} 1"#,
        r#"mooyaho_domain_events_total{kind="member_left"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}
