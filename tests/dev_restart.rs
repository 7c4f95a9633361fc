//! `mooyaho dev` keeps its state and API key across restarts; `mooyaho server` refuses to start
//! without a usable key.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, Ws};

/// Starts `mooyaho dev` in `cwd` with `extra` arguments and adopts the key it prints.
fn start_dev(cwd: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["dev", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut server = Server::spawn(&args, Some(cwd), "");
    server.read_generated_api_key();
    assert!(server.api_key.len() >= 16, "{:?}", server.api_key);
    server
}

/// Runs `mooyaho <args>` to completion (at most 10 s); returns whether it succeeded and stderr.
fn run_to_exit(args: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mooyaho"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("MOOYAHO_") {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().expect("spawn mooyaho");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return (status.success(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mooyaho {args:?} kept running; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn summary(channels: &Value) -> Vec<(String, bool)> {
    channels
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["sfuEnabled"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn dev_restart_keeps_channels_sfu_servers_and_the_generated_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();

    let mut dev = start_dev(tmp.path(), &["--data-dir", data_arg]);
    let key = dev.api_key.clone();
    let rest = dev.rest();
    let mesh = rest.create_channel(false).await;
    let sfu = rest.create_channel(true).await;
    let (status, node) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({"address": "127.0.0.1:4433", "fingerprint": "ab".repeat(32)})),
        )
        .await;
    assert_eq!(status, 200, "{node}");
    let (status, node) = rest
        .call(
            "PATCH",
            &format!("/sfu-servers/{}", node["id"]),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{node}");
    // A member is in a channel when the process dies.
    let mut ws = Ws::join(&dev.ws_url(), &rest, &mesh, "ada").await;
    let (_, before) = rest.call("GET", "/channels", None).await;
    assert_eq!(
        summary(&before),
        vec![(mesh.clone(), false), (sfu.clone(), true)]
    );

    dev.kill();
    assert!(ws.closed_by_server(Duration::from_secs(5)).await);

    let dev = start_dev(tmp.path(), &["--data-dir", data_arg]);
    assert_eq!(dev.api_key, key, "dev must keep its generated key");
    let rest = dev.rest();
    let (status, after) = rest.call("GET", "/channels", None).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(summary(&after), summary(&before));
    assert_eq!(before[0]["sessionCount"], 1, "{before}");
    assert_eq!(after[0]["sessionCount"], 0, "{after}");
    let (status, detail) = rest.call("GET", &format!("/channels/{sfu}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(detail["sfuEnabled"], true);
    // The session of the dead process is not a member any more.
    let (status, detail) = rest.call("GET", &format!("/channels/{mesh}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(detail["channelSessions"], json!([]), "{detail}");

    let (status, nodes) = rest.call("GET", "/sfu-servers", None).await;
    assert_eq!(status, 200);
    // `dev`'s own node keeps its record (re-pointed at its new address) and the one registered
    // by hand is kept as it was; live fields (health, load, lastError) are not compared.
    let stable = |n: &Value| {
        json!({
            "id": n["id"], "address": n["address"], "fingerprint": n["fingerprint"],
            "disabled": n["disabled"], "draining": n["draining"],
        })
    };
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let manual = nodes
        .iter()
        .find(|n| n["id"] == node["id"])
        .expect("registered node kept");
    assert_eq!(stable(manual), stable(&node));
    let own = nodes.iter().find(|n| n["id"] != node["id"]).unwrap();
    assert_eq!(own["health"], "healthy", "dev's embedded node: {own}");
    // Ids are not reused after a restart.
    let (status, second) = rest
        .call(
            "POST",
            "/sfu-servers",
            Some(json!({"address": "127.0.0.2:4433"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(second["id"], node["id"]);

    // The restarted dev serves WebSockets into the kept channels.
    let mut a = Ws::join(&dev.ws_url(), &rest, &mesh, "ada").await;
    let mut b = Ws::join(&dev.ws_url(), &rest, &mesh, "bob").await;
    a.expect_where("entered", |m| m["sessionId"] == json!(b.id))
        .await;
    a.send(json!({"type": "call", "to": b.id, "sdp": "v=0 after restart"}))
        .await;
    let called = b.expect("called").await;
    assert_eq!(
        (&called["from"], &called["sdp"]),
        (&json!(a.id), &json!("v=0 after restart"))
    );

    // Only the kept key opens it.
    let (status, _) = rest
        .call_raw("GET", "/channels", None, Some("some-other-key-0123456789"))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn dev_defaults_to_a_data_dir_in_the_working_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = start_dev(tmp.path(), &[]);
    let key = dev.api_key.clone();
    let channel = dev.rest().create_channel(false).await;
    dev.kill();
    assert!(tmp.path().join("mooyaho-data").is_dir());

    let dev = start_dev(tmp.path(), &[]);
    assert_eq!(dev.api_key, key);
    let (status, detail) = dev
        .rest()
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["id"], channel);
}

#[tokio::test]
async fn dev_with_an_explicit_key_uses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let explicit = "explicit-dev-key-0123456789";
    let dev = start_dev(tmp.path(), &["--api-key", explicit]);
    assert_eq!(dev.api_key, explicit);
    let (status, body) = dev.rest().call("GET", "/channels", None).await;
    assert_eq!((status, body), (200, json!([])));
}

#[test]
fn server_without_an_api_key_refuses_to_start() {
    let (ok, stderr) = run_to_exit(&["server", "--listen", "127.0.0.1:0"]);
    assert!(!ok, "exited successfully: {stderr}");
    assert!(stderr.contains("--api-key"), "unclear message: {stderr}");
    assert!(
        stderr.contains("MOOYAHO_API_KEY"),
        "unclear message: {stderr}"
    );
}

#[test]
fn an_api_key_shorter_than_16_characters_is_refused() {
    for command in ["server", "dev"] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().to_str().unwrap();
        let (ok, stderr) = run_to_exit(&[
            command,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--api-key",
            "short-key-12345",
        ]);
        assert!(!ok, "{command} accepted a 15-character key: {stderr}");
        assert!(
            stderr.contains("16 characters"),
            "unclear message: {stderr}"
        );
    }
    // Exactly 16 is enough.
    let server = Server::spawn(
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "sixteen-chars-ok",
        ],
        None,
        "sixteen-chars-ok",
    );
    assert_eq!(server.api_key.len(), 16);
}

#[tokio::test]
async fn dev_keeps_its_key_file_private_and_warns_when_listening_beyond_loopback() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("mooyaho-data").join("api-key");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

    let server = start_dev(dir.path(), &[]);
    assert_eq!(mode(&key_file), 0o600, "a new key file is private");
    assert!(
        !server
            .stdout_lines
            .iter()
            .any(|l| l.contains("beyond loopback")),
        "{:?}",
        server.stdout_lines
    );
    drop(server);

    // A key file left readable by others (an older version, a careless copy) is fixed at start.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key = std::fs::read_to_string(&key_file).unwrap();
    let server = start_dev(dir.path(), &[]);
    assert_eq!(server.api_key, key.trim(), "the same key is kept");
    assert_eq!(mode(&key_file), 0o600);
    drop(server);

    let server = Server::spawn(&["dev", "--listen", "0.0.0.0:0"], Some(dir.path()), "");
    assert!(
        server
            .stdout_lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("beyond loopback")),
        "{:?}",
        server.stdout_lines
    );
    // Facing other hosts, `dev` keeps `server`'s WebSocket limit per address (64): the 65th
    // socket from one address is refused.
    let url = format!("ws://127.0.0.1:{}/websocket", server.addr.port());
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..65 {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((socket, _)) => open.push(socket),
            Err(_) => refused += 1,
        }
    }
    assert_eq!((open.len(), refused), (64, 1));
}

/// Snapshots are written in the background (one write covers every change made meanwhile); a
/// burst of concurrent creations is all there after a clean shutdown (SIGTERM) and restart.
#[tokio::test]
async fn a_burst_of_channel_creations_survives_a_clean_shutdown() {
    const BURST: usize = 50;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();
    let mut dev = start_dev(tmp.path(), &["--data-dir", data_arg]);
    let rest = dev.rest();
    let created: Vec<String> = futures_util::future::join_all((0..BURST).map(|n| {
        let rest = &rest;
        async move { rest.create_channel(n % 2 == 0).await }
    }))
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &dev.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = dev.wait_exit(Duration::from_secs(15));
    assert!(
        exit.is_some_and(|s| s.success()),
        "dev did not exit cleanly: {exit:?}"
    );

    let dev = start_dev(tmp.path(), &["--data-dir", data_arg]);
    let (status, listed) = dev.rest().call("GET", "/channels", None).await;
    assert_eq!(status, 200, "{listed}");
    let mut kept: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let mut created = created;
    created.sort();
    kept.sort();
    assert_eq!(kept, created);
}
