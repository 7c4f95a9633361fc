//! Media metrics end to end: a `mooyaho server` and a `mooyaho sfu` process, two clients built
//! with the `webrtc` crate exchanging media through the node, and `/metrics` (with the key, and
//! on `--metrics-listen` without it) showing the node's counters move, labelled by node. The
//! Grafana dashboard in `docs/` uses only metrics that appear there.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use mooyaho_test_support::peer::payloads;
use mooyaho_test_support::sfu_client::SfuClient;
use support::{Server, SfuNode, eventually};

const SECRET: &str = "cluster-secret-0123456789abcdef";
const PACKETS: usize = 100;

/// The value of the sample `name{labels}` in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Metric names of the exposition (`# TYPE` lines), with the suffixes a query may add.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {}
        }
        names.insert(name.to_owned());
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_counters_move_per_node_and_the_dashboard_names_only_real_metrics() {
    let server = Server::start(&[
        "--cluster-secret",
        SECRET,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics_url = server
        .stdout_lines
        .iter()
        .find_map(|l| l.strip_prefix("mooyaho metrics on "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics line in {:?}", server.stdout_lines))
        .to_owned();
    let node = SfuNode::start(SECRET, Some(&server));
    let rest = server.rest();
    let id = node.id();
    let healthy = eventually(Duration::from_secs(10), || async {
        let (_, nodes) = rest.call("GET", &format!("/sfu-servers/{id}"), None).await;
        nodes["health"] == "healthy"
    })
    .await;
    assert!(healthy, "the node never became healthy");

    let channel = rest.create_channel(true).await;
    let mut a = SfuClient::join(&server.ws_url(), &rest, &channel, "a").await;
    let mut b = SfuClient::join(&server.ws_url(), &rest, &channel, "b").await;
    a.publish().await;
    b.publish().await;
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    for (client, other) in [(&a, &b_id), (&b, &a_id)] {
        client.publish_connected().await;
        client.subscribed_to(&[other]).await;
    }
    let (sent_a, sent_b) = (payloads(0x2A, PACKETS), payloads(0x2B, PACKETS));
    tokio::join!(
        a.send_media(&sent_a.0, &sent_a.1, Duration::from_millis(5)),
        b.send_media(&sent_b.0, &sent_b.1, Duration::from_millis(5)),
    );
    a.wait_for(&[&b_id], PACKETS, Duration::from_secs(15)).await;
    b.wait_for(&[&a_id], PACKETS, Duration::from_secs(15)).await;

    // The scraper's listener needs no key; the API's /metrics still does.
    let http = reqwest::Client::new();
    let scrape = || async {
        let response = http
            .get(&metrics_url)
            .send()
            .await
            .expect("metrics listener");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let label = format!("{{node=\"{id}\"}}");
    let series = |name: &str| format!("mooyaho_sfu_{name}{label}");
    // Counters arrive with the node's next load report (every second).
    let moved = eventually(Duration::from_secs(10), || async {
        let text = scrape().await;
        sample(&text, &series("rtp_forwarded_total")).is_some_and(|v| v >= (4 * PACKETS) as f64)
    })
    .await;
    let text = scrape().await;
    assert!(moved, "forwarding never showed:\n{text}");
    for counter in [
        "packets_in_total",
        "packets_out_total",
        "bytes_in_total",
        "bytes_out_total",
        "rtp_in_total",
    ] {
        let value = sample(&text, &series(counter)).unwrap_or_else(|| panic!("{counter}:\n{text}"));
        assert!(value >= (4 * PACKETS) as f64, "{counter} = {value}");
    }
    // Two publish and two subscribe transports, each through one DTLS handshake.
    assert_eq!(
        sample(&text, &series("dtls_handshakes_total")),
        Some(4.0),
        "{text}"
    );
    assert_eq!(sample(&text, &series("transports")), Some(4.0), "{text}");
    assert_eq!(sample(&text, &series("rooms")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &series("subscribers")), Some(4.0), "{text}");
    assert_eq!(
        sample(&text, &series("srtp_auth_failures_total")),
        Some(0.0),
        "{text}"
    );
    let busy = format!("mooyaho_sfu_worker_busy_ratio{{node=\"{id}\",worker=\"0\"}}");
    let ratio = sample(&text, &busy).unwrap_or_else(|| panic!("no busy ratio:\n{text}"));
    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    assert!(
        text.contains(&format!("mooyaho_sfu_subscriber_loss_ratio_count{label}")),
        "{text}"
    );

    let (status, _) = (
        http.get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(status, 401, "the API's /metrics still needs the key");
    let (status, _) = rest.call("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let api_only = metrics_url.replace("/metrics", "/channels");
    assert_eq!(http.get(&api_only).send().await.unwrap().status(), 404);

    // Every metric the dashboard queries is in the exposition.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/grafana/mooyaho-sfu.json"
        ))
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    let exposed = exposed_names(&text);
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("mooyaho_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() > 20, "{queried:?}");
    let missing: Vec<_> = queried.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics lacks: {missing:?}"
    );
}
