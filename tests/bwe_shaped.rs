//! Downlink bandwidth estimation against real processes: `mooyaho dev`, a scripted simulcast
//! publisher (q/h/f at 100 k/350 k/1.2 Mbps, raw SRTP), and two `webrtc`-crate subscribers
//! (real TWCC feedback, NACK, reports). One subscriber reaches the node through a UDP relay
//! written here whose downlink is a 600 kbps bottleneck with a 200 ms drop-tail queue: it must
//! be moved to the layer that fits (h) by the node's estimate alone, with < 1 % loss once
//! converged, while the unshaped subscriber keeps the top layer (f).

#[path = "support/relay.rs"]
mod relay;
#[path = "support/simulcast.rs"]
mod simulcast;
mod support;

use std::time::{Duration, Instant};

use mooyaho_test_support::bottleneck::Bottleneck;
use mooyaho_test_support::sfu_client::SfuClient;
use relay::Relay;
use simulcast::{rid_packet, simulcast_offer};
use support::Server;
use support::raw::{self, RawParticipant};

/// Marks a payload's layer: the four bytes, then the layer index.
const MAGIC: &[u8] = b"LAYR";
const LAYER_BPS: [u64; 3] = [100_000, 350_000, 1_200_000];
const SHAPED_BPS: u64 = 600_000;

/// The layer of each video payload `client` received, in arrival order.
async fn layers_received(client: &SfuClient) -> Vec<u8> {
    let received = client.received().await;
    received
        .values()
        .flat_map(|m| m.video.iter())
        .filter_map(|p| {
            let at = p.windows(MAGIC.len()).position(|w| w == MAGIC)?;
            p.get(at + MAGIC.len()).copied()
        })
        .collect()
}

/// Sends the three layers at their rates, 30 frames per second, a keyframe on each every
/// second (the node's keyframe requests are not read: a GOP of one second answers them).
fn spawn_publisher(mut sending: raw::RawTransport) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        let mut seqs = [1u16, 1, 1];
        for frame in 0u32.. {
            tick.tick().await;
            let keyframe = frame % 30 == 0;
            for (layer, rid) in [b"q", b"h", b"f"].iter().enumerate() {
                let frame_bytes = (LAYER_BPS[layer] / 8 / 30) as usize;
                let packets = frame_bytes.div_ceil(1000);
                for _ in 0..packets {
                    let mut body = MAGIC.to_vec();
                    body.push(layer as u8);
                    body.resize(frame_bytes / packets, 0x55);
                    let packet = rid_packet(
                        0x6100 + layer as u32,
                        seqs[layer],
                        frame * 3000,
                        *rid,
                        keyframe,
                        &body,
                    );
                    seqs[layer] = seqs[layer].wrapping_add(1);
                    if sending.send_rtp(&packet).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shaped_viewer_gets_the_layer_that_fits_without_loss_while_an_unshaped_one_keeps_the_top()
{
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    let channel = rest.create_channel(true).await;
    let ws_url = server.ws_url();

    let mut publisher = RawParticipant::join(&server.url(""), &server.api_key, &channel, "camera")
        .await
        .unwrap();
    let ice = raw::IceCredentials {
        ufrag: "bweShapedPub".to_owned(),
        pwd: "bweShapedPublisherPassword".to_owned(),
    };
    let offer = simulcast_offer(&ice, publisher.fingerprint());
    let sending = publisher.publish_sdp(&offer, &ice).await.unwrap();
    let media = spawn_publisher(sending);

    let relay = Relay::start(Bottleneck::new(
        SHAPED_BPS,
        Duration::from_millis(200),
        Duration::from_millis(10),
    ))
    .await;
    let shaped = SfuClient::join_filtered(
        &ws_url,
        &rest,
        &channel,
        "shaped",
        Some(relay.offer_filter()),
    )
    .await;
    let free = SfuClient::join(&ws_url, &rest, &channel, "free").await;

    // Convergence: within 20 s the shaped viewer's newest packets are all h.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let layers = layers_received(&shaped).await;
        let recent = &layers[layers.len().saturating_sub(60)..];
        if layers.len() > 100 && recent.iter().all(|&l| l == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shaped viewer never settled on h: last {:?} of {}",
            recent,
            layers.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let converged = Instant::now();

    // Ten more seconds: the shaped viewer stays on h with < 1 % loss at its bottleneck; the
    // free viewer gets f.
    let (offered, dropped) = relay.counts();
    let shaped_before = layers_received(&shaped).await.len();
    let free_before = layers_received(&free).await.len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (offered_after, dropped_after) = relay.counts();
    let loss = (dropped_after - dropped) as f64 / (offered_after - offered).max(1) as f64;
    let shaped_layers = layers_received(&shaped).await;
    let free_layers = layers_received(&free).await;
    let shaped_window = &shaped_layers[shaped_before..];
    let free_window = &free_layers[free_before..];
    let share = |w: &[u8], layer: u8| {
        w.iter().filter(|&&l| l == layer).count() as f64 / w.len().max(1) as f64
    };
    eprintln!(
        "converged after {:?}; then 10 s: shaped {} packets ({:.1} % h), loss {:.2} % ({} of {}); \
         free {} packets ({:.1} % f)",
        converged.duration_since(deadline - Duration::from_secs(20)),
        shaped_window.len(),
        100.0 * share(shaped_window, 1),
        100.0 * loss,
        dropped_after - dropped,
        offered_after - offered,
        free_window.len(),
        100.0 * share(free_window, 2),
    );
    assert!(loss < 0.01, "loss after convergence {loss}");
    assert!(
        share(shaped_window, 1) > 0.99,
        "shaped: {:?}",
        &shaped_window[..shaped_window.len().min(50)]
    );
    assert!(
        share(free_window, 2) > 0.99,
        "free: {:?}",
        &free_window[..free_window.len().min(50)]
    );
    // The shaped viewer got about h's rate: its downlink is not wasted on q either.
    assert!(shaped_window.len() > 200, "{}", shaped_window.len());

    media.abort();
    drop((shaped, free, publisher, relay, server));
}
