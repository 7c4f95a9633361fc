//! `mooyaho dev` alone: its embedded SFU node is registered and healthy, and two clients built
//! with the `webrtc` crate receive each other's media in an SFU channel.

mod support;

use std::time::Duration;

use mooyaho_test_support::peer::payloads;
use mooyaho_test_support::sfu_client::SfuClient;
use support::{Server, eventually, healthy_node};

const PACKETS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_embedded_node_carries_two_webrtc_clients_media_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &["--workers", "2"]);
    let rest = server.rest();

    // The embedded node is registered and reports load.
    let node = healthy_node(&rest).await;

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
    let (_, detail) = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(detail["sfuServerId"].as_u64(), Some(node), "{detail}");

    let sent_a = payloads(0x1A, PACKETS);
    let sent_b = payloads(0x1B, PACKETS);
    tokio::join!(
        a.send_media(&sent_a.0, &sent_a.1, Duration::from_millis(5)),
        b.send_media(&sent_b.0, &sent_b.1, Duration::from_millis(5)),
    );
    for (client, other, sent) in [(&a, &b_id, &sent_b), (&b, &a_id, &sent_a)] {
        let received = client
            .wait_for(&[other], PACKETS, Duration::from_secs(15))
            .await;
        let got = &received[other.as_str()];
        assert_eq!(got.audio.len(), PACKETS, "{}: audio count", client.name);
        assert_eq!(got.video.len(), PACKETS, "{}: video count", client.name);
        assert!(
            got.audio == sent.0,
            "{}: audio payloads differ",
            client.name
        );
        assert!(
            got.video == sent.1,
            "{}: video payloads differ",
            client.name
        );
        assert_eq!(received.len(), 1, "{}: unexpected streams", client.name);
    }

    // Deleting the channel empties the embedded node.
    let (status, body) = rest
        .call("DELETE", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(status, 204, "{body}");
    let empty = eventually(Duration::from_secs(8), || async {
        let (_, view) = rest
            .call("GET", &format!("/sfu-servers/{node}"), None)
            .await;
        view["load"]["rooms"] == 0 && view["load"]["transports"] == 0
    })
    .await;
    let (_, view) = rest
        .call("GET", &format!("/sfu-servers/{node}"), None)
        .await;
    assert!(empty, "{view}");
    drop((a, b));
}
