//! A Redis deployment's security against real `mooyaho server` processes and a real
//! `redis-server` (issue 11, item 8; `docs/security.md`): an ACL user and password in the URL,
//! TLS (`rediss://`) with a private CA, key prefixes that keep deployments apart on one Redis,
//! resume tokens stored only as hashes, and atomic single-use resumes across instances.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;
use support::{Redis, Server, Ws, free_port, refused_start};

/// Offer and answer from `a` to `b`, checking what is relayed.
async fn offer_answer(a: &mut Ws, b: &mut Ws, tag: &str) {
    a.send(json!({"type": "call", "to": b.id, "sdp": format!("offer {tag}")}))
        .await;
    let called = b.expect("called").await;
    assert_eq!(called["from"], json!(a.id), "{called}");
    assert_eq!(called["sdp"], json!(format!("offer {tag}")));
    b.send(json!({"type": "answer", "to": a.id, "sdp": format!("answer {tag}")}))
        .await;
    let answered = a.expect("answered").await;
    assert_eq!(
        answered["sdp"],
        json!(format!("answer {tag}")),
        "{answered}"
    );
}

/// Two instances with `extra` arguments; a channel created on the first; one member on each
/// instance; an offer/answer across them.
async fn exchange_across(extra: &[&str], tag: &str) -> (Server, Server) {
    let one = Server::start(extra);
    let two = Server::start(extra);
    let rest = one.rest();
    let channel = rest.create_channel(false).await;
    let mut a = Ws::join(&one.ws_url(), &rest, &channel, "a").await;
    let mut b = Ws::join(&two.ws_url(), &two.rest(), &channel, "b").await;
    offer_answer(&mut a, &mut b, tag).await;
    offer_answer(&mut b, &mut a, tag).await;
    (one, two)
}

/// A plain connection to `redis` as the default user (with `password` if it has one).
fn raw_redis(port: u16, password: Option<&str>) -> redis::Connection {
    let url = match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}/"),
        None => format!("redis://127.0.0.1:{port}/"),
    };
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// Every key with every value, as text.
fn dump(conn: &mut redis::Connection) -> HashMap<String, String> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    keys.into_iter()
        .map(|key| {
            let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
            let value = match kind.as_str() {
                "hash" => {
                    let all: Vec<String> = redis::cmd("HGETALL").arg(&key).query(conn).unwrap();
                    all.join(" ")
                }
                "set" => {
                    let all: Vec<String> = redis::cmd("SMEMBERS").arg(&key).query(conn).unwrap();
                    all.join(" ")
                }
                _ => redis::cmd("GET").arg(&key).query(conn).unwrap(),
            };
            (key, value)
        })
        .collect()
}

#[tokio::test]
async fn an_acl_user_in_the_url_authenticates_and_a_wrong_password_fails_clearly() {
    const ACL_PASSWORD: &str = "acl-SECRET-3e1f9a";
    const WRONG: &str = "wrong-SECRET-77b2c0";
    let redis = Redis::start_with(&[
        "--requirepass",
        "default-SECRET-5d0c",
        "--user",
        "mooyaho",
        "on",
        &format!(">{ACL_PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ]);
    let url = format!("redis://mooyaho:{ACL_PASSWORD}@127.0.0.1:{}/", redis.port);
    let (_one, _two) = exchange_across(&["--redis-url", &url], "acl").await;

    // Without credentials, or with a wrong password: a clear error at start, no secret in it.
    for bad in [
        format!("redis://mooyaho:{WRONG}@127.0.0.1:{}/", redis.port),
        format!("redis://127.0.0.1:{}/", redis.port),
    ] {
        let output = refused_start(&["--redis-url", &bad]);
        assert!(output.contains("connecting to Redis"), "{output}");
        let lower = output.to_lowercase();
        assert!(
            lower.contains("authentication failed") || lower.contains("noauth"),
            "the reason is named: {output}"
        );
        for secret in [WRONG, ACL_PASSWORD] {
            assert!(!output.contains(secret), "{secret} leaked: {output}");
        }
    }
}

/// A throwaway CA and a certificate for 127.0.0.1 signed by it: (CA PEM, cert PEM, key PEM).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mooyaho test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "redis test server");
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn rediss_with_a_private_ca_works_and_an_untrusted_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("ca.pem"), ca).unwrap();
    std::fs::write(path("cert.pem"), cert).unwrap();
    std::fs::write(path("key.pem"), key).unwrap();
    let tls_port = free_port();
    // The plain port (kept for the harness's readiness PING) is not the one mooyaho uses.
    let _redis = Redis::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path("cert.pem"),
        "--tls-key-file",
        &path("key.pem"),
        "--tls-ca-cert-file",
        &path("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let (_one, _two) = exchange_across(
        &["--redis-url", &url, "--redis-ca-file", &path("ca.pem")],
        "tls",
    )
    .await;

    // The platform's roots do not know the private CA: refused at start, not silently trusted.
    let output = refused_start(&["--redis-url", &url]);
    assert!(output.contains("connecting to Redis"), "{output}");
    // `#insecure` (the redis crate's switch that skips verification) is not compiled in.
    let output = refused_start(&["--redis-url", &format!("{url}#insecure")]);
    assert!(output.contains("insecure"), "{output}");
    // A plain-text client on the TLS port gets nowhere either.
    let output = refused_start(&["--redis-url", &format!("redis://127.0.0.1:{tls_port}/")]);
    assert!(output.contains("connecting to Redis"), "{output}");
}

#[tokio::test]
async fn deployments_with_different_prefixes_share_one_redis_without_meeting() {
    let redis = Redis::start();
    let url = redis.url();
    let alpha_args = ["--redis-url", url.as_str(), "--redis-prefix", "alpha"];
    let beta_args = ["--redis-url", url.as_str(), "--redis-prefix", "beta"];

    // Record every pub/sub channel name published on the server while both deployments work.
    let port = redis.port;
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let watcher = std::thread::spawn(move || {
        let mut conn = raw_redis(port, None);
        let mut pubsub = conn.as_pubsub();
        pubsub.psubscribe("*").unwrap();
        pubsub
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut names = BTreeSet::new();
        while stop_rx.try_recv().is_err() {
            if let Ok(message) = pubsub.get_message() {
                names.insert(message.get_channel_name().to_owned());
            }
        }
        names
    });

    let (alpha, alpha2) = exchange_across(&alpha_args, "alpha").await;
    let (beta, _beta2) = exchange_across(&beta_args, "beta").await;
    let alpha_channel = alpha.rest().create_channel(false).await;

    // A channel of one deployment does not exist in the other.
    let (status, body) = beta
        .rest()
        .call("GET", &format!("/channels/{alpha_channel}"), None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, listed) = beta.rest().call("GET", "/channels", None).await;
    assert!(!listed.to_string().contains(&alpha_channel), "{listed}");
    let (status, _) = alpha2
        .rest()
        .call("GET", &format!("/channels/{alpha_channel}"), None)
        .await;
    assert_eq!(status, 200, "the same deployment shares it");

    // A session of one cannot be resumed in the other.
    let owner = Ws::connect(&alpha.ws_url()).await;
    let (id, token) = (owner.id.clone(), owner.token.clone());
    let mut intruder = Ws::connect(&beta.ws_url()).await;
    intruder
        .expect_error(
            json!({"type": "reuseId", "id": id, "token": token}),
            "invalid_token",
        )
        .await;

    stop_tx.send(()).unwrap();
    let names = watcher.join().unwrap();
    assert!(
        names.iter().any(|n| n.starts_with("alpha:instance:")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("beta:instance:")),
        "{names:?}"
    );
    for name in &names {
        assert!(
            name.starts_with("alpha:") || name.starts_with("beta:"),
            "{name} is outside both prefixes"
        );
    }
    let keys = dump(&mut raw_redis(port, None));
    assert!(!keys.is_empty());
    for key in keys.keys() {
        assert!(
            key.starts_with("alpha:") || key.starts_with("beta:"),
            "{key} is outside both prefixes"
        );
    }
}

#[tokio::test]
async fn resume_tokens_are_stored_only_as_hashes() {
    let redis = Redis::start();
    let server = Server::start(&["--redis-url", &redis.url(), "--resume-grace-ms", "5000"]);
    let first = Ws::connect(&server.ws_url()).await;
    let (id, token) = (first.id.clone(), first.token.clone());
    first.abort();
    let mut second = Ws::connect(&server.ws_url()).await;
    let reply = second
        .request(json!({"type": "reuseId", "id": id, "token": token}))
        .await;
    assert_eq!(reply["type"], "reuseIdSuccess", "{reply}");
    let next = reply["token"].as_str().unwrap().to_owned();

    let store = dump(&mut raw_redis(redis.port, None));
    let everything = format!("{store:?}");
    for secret in [&token, &next] {
        assert!(
            !everything.contains(secret.as_str()),
            "plaintext token in Redis"
        );
    }
    let mut conn = raw_redis(redis.port, None);
    let stored: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("mooyaho:session:{id}"))
        .query(&mut conn)
        .unwrap();
    let hash = &stored["token"];
    assert_eq!(hash.len(), 64, "{stored:?}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{stored:?}");
    // The hash itself is not a token: presenting it does not resume.
    let mut thief = Ws::connect(&server.ws_url()).await;
    thief
        .expect_error(
            json!({"type": "reuseId", "id": id, "token": hash}),
            "invalid_token",
        )
        .await;
}

#[tokio::test]
async fn racing_resumes_across_instances_let_exactly_one_win() {
    let redis = Redis::start();
    let args = ["--redis-url", &redis.url(), "--resume-grace-ms", "5000"];
    let (one, two) = (Server::start(&args), Server::start(&args));
    support::race_resumes(&one.ws_url(), &two.ws_url(), 40).await;
}
