//! Attacks on the SFU's publish path by one participant of a room, against a real `mooyaho dev`
//! (signaling + embedded node): an offer with hundreds of m-lines, publishing in a tight loop,
//! and churning tracks hundreds of times. Each test then proves the node holds no more state than
//! the live tracks need and that an honest publisher's media still reaches an honest subscriber
//! intact (both use the `webrtc` crate).

#[path = "support/simulcast.rs"]
mod simulcast;
mod support;

use std::time::{Duration, Instant};

use mooyaho_test_support::peer::payloads;
use mooyaho_test_support::sfu_client::SfuClient;
use serde_json::json;
use simulcast::{rid_packet, simulcast_offer};
use support::raw::{self, RawParticipant};
use support::{Rest, Server, Ws, healthy_node, security_drops};

const PACKETS: usize = 50;

/// `mooyaho dev` on a free port with one worker (so every transport is counted on one worker) and
/// `extra` flags, its REST client, and its embedded node's id once healthy.
async fn dev(extra: &[&str]) -> (Server, tempfile::TempDir, Rest, u64) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), extra);
    let rest = server.rest();
    let node = healthy_node(&rest).await;
    (server, dir, rest, node)
}

/// The node's last load report: `(transports, tracks, subscriptions)`.
async fn node_state(rest: &Rest, node: u64) -> (u64, u64, u64) {
    let (_, view) = rest
        .call("GET", &format!("/sfu-servers/{node}"), None)
        .await;
    let load = &view["load"];
    let count = |key: &str| {
        load[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no load.{key}: {view}"))
    };
    (count("transports"), count("tracks"), count("subscriptions"))
}

/// Waits until the node reports a state `accept` likes (it reports once a second); returns it.
async fn wait_state(
    rest: &Rest,
    node: u64,
    what: &str,
    accept: impl Fn((u64, u64, u64)) -> bool,
) -> (u64, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = node_state(rest, node).await;
        if accept(state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: node (transports, tracks, subscriptions) = {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A publish offer as a hostile client writes it: valid transport attributes at session level
/// and `audio` + `video` short sendonly m-lines with SSRCs from `ssrc_base`. It is never meant to
/// connect; the node only has to accept or refuse it.
fn hostile_offer(audio: usize, video: usize, ssrc_base: u32) -> String {
    let mids: Vec<String> = (0..audio + video).map(|i| i.to_string()).collect();
    let fingerprint: Vec<String> = (0..32).map(|i| format!("{:02X}", i * 7 % 256)).collect();
    let mut offer = format!(
        "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\na=group:BUNDLE {}\n\
         a=ice-ufrag:hstl\na=ice-pwd:hostilehostilehostile1\n\
         a=fingerprint:sha-256 {}\na=setup:actpass\n",
        mids.join(" "),
        fingerprint.join(":")
    );
    for i in 0..audio + video {
        let (media, rtpmap) = if i < audio {
            ("audio 9 UDP/TLS/RTP/SAVPF 111", "111 opus/48000/2")
        } else {
            ("video 9 UDP/TLS/RTP/SAVPF 96", "96 VP8/90000")
        };
        offer += &format!(
            "m={media}\na=mid:{i}\na=sendonly\na=rtcp-mux\na=rtpmap:{rtpmap}\na=ssrc:{} cname:h\n",
            ssrc_base.wrapping_add(i as u32)
        );
    }
    offer
}

/// `a` publishes, `b` subscribes to it; both honest `webrtc` crate clients.
async fn honest_pair(server: &Server, rest: &Rest, channel: &str) -> (SfuClient, SfuClient) {
    let mut a = SfuClient::join(&server.ws_url(), rest, channel, "a").await;
    let b = SfuClient::join(&server.ws_url(), rest, channel, "b").await;
    a.publish().await;
    a.publish_connected().await;
    b.subscribed_to(&[&a.id]).await;
    (a, b)
}

/// `a`'s media reaches `b` complete and byte-identical.
async fn media_flows(a: &SfuClient, b: &SfuClient, tag: u8) {
    let before = b.received().await.get(&a.id).cloned().unwrap_or_default();
    let sent = payloads(tag, PACKETS);
    a.send_media(&sent.0, &sent.1, Duration::from_millis(5))
        .await;
    let want = before.audio.len() + PACKETS;
    let received = b.wait_for(&[&a.id], want, Duration::from_secs(15)).await;
    let got = &received[a.id.as_str()];
    assert!(
        got.audio[before.audio.len()..] == sent.0[..],
        "b: a's audio payloads differ"
    );
    assert!(
        got.video[before.video.len()..] == sent.1[..],
        "b: a's video payloads differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offer_of_500_m_lines_is_refused_and_the_node_holds_nothing_for_it() {
    let (server, _dir, rest, node) = dev(&[]).await;
    let channel = rest.create_channel(true).await;
    let (a, b) = honest_pair(&server, &rest, &channel).await;
    let mut hostile = Ws::join(&server.ws_url(), &rest, &channel, "hostile").await;
    // a's publish transport with its 2 tracks; b's subscribe transport receiving them, and the
    // one offered to hostile on entering.
    let before = wait_state(&rest, node, "honest pair", |(t, k, s)| {
        t == 3 && k == 2 && s == 2
    })
    .await;
    let offer = hostile_offer(500, 0, 1000);
    let frame = json!({ "type": "call", "isSFU": true, "sdp": offer }).to_string();
    assert!(frame.len() < 64 * 1024, "fits one WebSocket frame");
    let reply = hostile
        .expect_error(
            json!({ "type": "call", "isSFU": true, "sdp": offer }),
            "limit_exceeded",
        )
        .await;
    assert_eq!(
        reply["message"],
        "SDP refused: limit exceeded: the offer has 500 m-lines; at most 16 are accepted"
    );
    // Fewer m-lines but more tracks of a kind than one publisher may send.
    let reply = hostile
        .expect_error(
            json!({ "type": "call", "isSFU": true, "sdp": hostile_offer(1, 5, 5000) }),
            "limit_exceeded",
        )
        .await;
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("5 video tracks; at most 4")),
        "{reply}"
    );

    // Nothing was created for the hostile offers: two load reports later the node is unchanged.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(node_state(&rest, node).await, before);
    // An acceptable offer from the same participant still works.
    let reply = hostile
        .request(json!({ "type": "call", "isSFU": true, "sdp": hostile_offer(1, 1, 9000) }))
        .await;
    assert_eq!(reply["type"], "answered", "{reply}");

    media_flows(&a, &b, 0x51).await;
    drop((a, b, hostile, server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_in_a_tight_loop_is_rate_limited_and_leaves_no_state() {
    // The defaults: 5 publishes at once, then one per 2 s.
    let (server, _dir, rest, node) = dev(&[]).await;
    let channel = rest.create_channel(true).await;
    let (a, b) = honest_pair(&server, &rest, &channel).await;

    let mut hostile = Ws::join(&server.ws_url(), &rest, &channel, "hostile").await;
    let started = Instant::now();
    let (mut answered, mut limited) = (0u64, 0u64);
    for i in 0..100u32 {
        let offer = hostile_offer(1, 1, 10_000 + 2 * i);
        let reply = hostile
            .request(json!({ "type": "call", "isSFU": true, "sdp": offer }))
            .await;
        match reply["type"].as_str() {
            Some("answered") => answered += 1,
            Some("error") => {
                assert_eq!(reply["code"], "rate_limited", "{reply}");
                assert!(
                    reply["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("publishing too often: try again in")),
                    "{reply}"
                );
                limited += 1;
            }
            _ => panic!("unexpected reply {reply}"),
        }
    }
    let elapsed = started.elapsed().as_secs();
    // The burst, plus one per 2 s of the loop (rounded up).
    assert!(
        (5..=5 + elapsed / 2 + 1).contains(&answered),
        "{answered} publishes accepted in {elapsed} s"
    );
    assert_eq!(answered + limited, 100);

    // Bounded: a's and hostile's publish transports, three subscribe transports at most
    // (a, b, and hostile's, which never connects); each publisher's 2 live tracks; b and a
    // subscribe to each other's publishers' tracks.
    let state = wait_state(&rest, node, "after 100 publishes", |(t, k, s)| {
        t <= 5 && k == 4 && s <= 6
    })
    .await;
    assert!(state.0 >= 4, "{state:?}");
    media_flows(&a, &b, 0x52).await;
    // b renegotiated a few times, not once per attempt.
    b.subscribed_exactly(&[&a.id, &hostile.id]).await;
    let b_state = b.sub_state.borrow().clone();
    eprintln!("b after {answered} accepted publishes: {b_state:?}");
    assert!(
        b_state.offers >= 2,
        "b was re-offered hostile's tracks: {b_state:?}"
    );
    assert!(b_state.offers <= 2 * answered as usize + 2, "{b_state:?}");
    assert!(b_state.max_m_lines <= 8, "{b_state:?}");
    assert!(
        b_state.local_errors.is_empty() && b_state.errors.is_empty(),
        "{b_state:?}"
    );
    drop((a, b, hostile, server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publisher_churning_tracks_200_times_leaves_subscribers_sdp_bounded() {
    // No publish rate limit, so every churn is accepted: the bound must come from recycling.
    let (server, _dir, rest, node) = dev(&["--publish-interval-ms", "0"]).await;
    let channel = rest.create_channel(true).await;
    let (a, b) = honest_pair(&server, &rest, &channel).await;

    let mut hostile = Ws::join(&server.ws_url(), &rest, &channel, "hostile").await;
    for i in 0..200u32 {
        // A new audio and video track every time (new SSRCs, a new publish transport).
        let offer = hostile_offer(1, 1, 100_000 + 2 * i);
        let reply = hostile
            .request(json!({ "type": "call", "isSFU": true, "sdp": offer }))
            .await;
        assert_eq!(reply["type"], "answered", "churn {i}: {reply}");
        // Stay under the WebSocket message rate (50/s): this test is about the SFU.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let hostile_id = hostile.id.clone();
    // b's negotiation settles on a's and hostile's latest tracks.
    b.subscribed_exactly(&[&a.id, &hostile_id]).await;
    let b_state = b.sub_state.borrow().clone();
    eprintln!("b after 200 publishes: {b_state:?}");
    assert!(
        b_state.offers >= 3,
        "b renegotiated during the churn: {b_state:?}"
    );
    // 4 live tracks (a's and hostile's latest), the m-lines of the tracks that ended since the
    // previous answer (2), and the first m-line if its track ended: never 400 m-lines.
    assert!(
        b_state.max_m_lines <= 8,
        "b's SDP grew to {} m-lines: {b_state:?}",
        b_state.max_m_lines
    );
    // Every offer applied, every answer taken: churn elsewhere never breaks b's negotiation.
    assert!(
        b_state.local_errors.is_empty() && b_state.errors.is_empty(),
        "{b_state:?}"
    );

    // No leak on the node after 200 publishes: the live tracks' state only.
    let state = wait_state(&rest, node, "after 200 publishes", |(t, k, s)| {
        t <= 5 && k == 4 && s <= 6
    })
    .await;
    assert!(state.0 >= 4, "{state:?}");
    media_flows(&a, &b, 0x53).await;
    drop((a, b, hostile, server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_never_answers_gets_two_offers_and_holds_up_no_one() {
    let (server, _dir, rest, _node) = dev(&["--publish-interval-ms", "0"]).await;
    let channel = rest.create_channel(true).await;
    let (a, b) = honest_pair(&server, &rest, &channel).await;

    // `silent` enters and is offered a's tracks, then answers nothing, ever, while `churner`
    // replaces its tracks twice a second for 16 s.
    let mut silent = Ws::join(&server.ws_url(), &rest, &channel, "silent").await;
    let watch = Duration::from_secs(16);
    let silent_heard = tokio::spawn(async move { silent.collect_for(watch).await });
    let mut churner = Ws::join(&server.ws_url(), &rest, &channel, "churner").await;
    let churn_until = Instant::now() + watch - Duration::from_secs(1);
    let mut churns = 0u32;
    while Instant::now() < churn_until {
        let offer = hostile_offer(1, 1, 200_000 + 2 * churns);
        let reply = churner
            .request(json!({ "type": "call", "isSFU": true, "sdp": offer }))
            .await;
        assert_eq!(reply["type"], "answered", "churn {churns}: {reply}");
        churns += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // An honest viewer joining now is offered everything live and connects, as if nobody were
    // silent.
    let c = SfuClient::join(&server.ws_url(), &rest, &channel, "c").await;
    c.subscribed_to(&[&a.id, &churner.id]).await;
    c.subscribed_exactly(&[&a.id, &churner.id]).await;
    b.subscribed_exactly(&[&a.id, &churner.id]).await;

    let heard = silent_heard.await.unwrap();
    let offers: Vec<&str> = heard
        .iter()
        .filter(|m| m["type"] == "called" && m["isSFU"] == true)
        .filter_map(|m| m["sdp"].as_str())
        .collect();
    eprintln!("silent: {} offers during {churns} churns", offers.len());
    // The first offer and one re-offer after 5 s unanswered, then nothing until it answers:
    // before, one more every 5 s, each with more m-lines than the last.
    assert!(
        offers.len() <= 2,
        "{} offers to a subscriber that never answered",
        offers.len()
    );
    let m_lines = offers.last().map_or(0, |sdp| sdp.matches("m=").count());
    assert!(
        m_lines <= 6,
        "the silent subscriber's last offer has {m_lines} m-lines"
    );
    media_flows(&a, &b, 0x61).await;
    drop((a, b, c, churner, server));
}

/// `mooyaho_sfu_<name>_total` of `node`, from `/metrics` (0 before the first report).
async fn node_counter(server: &Server, node: u64, name: &str) -> u64 {
    let text = reqwest::Client::new()
        .get(server.url("/metrics"))
        .bearer_auth(&server.api_key)
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics body");
    let series = format!("mooyaho_sfu_{name}_total{{node=\"{node}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_simulcast_publisher_spraying_rids_and_ssrcs_is_dropped_counted_and_bounded() {
    let (server, _dir, rest, node) = dev(&[]).await;
    let honest_channel = rest.create_channel(true).await;
    let (a, b) = honest_pair(&server, &rest, &honest_channel).await;
    let (transports, tracks, _) =
        wait_state(&rest, node, "honest pair", |(t, k, _)| t == 2 && k == 2).await;

    let channel = rest.create_channel(true).await;
    let mut hostile = RawParticipant::join(&server.url(""), &server.api_key, &channel, "hostile")
        .await
        .unwrap();
    let ice = raw::IceCredentials {
        ufrag: "smcstHostile".to_owned(),
        pwd: "simulcastHostilePassword1".to_owned(),
    };
    let offer = simulcast_offer(&ice, hostile.fingerprint());
    let mut sending = hostile.publish_sdp(&offer, &ice).await.unwrap();
    // Its three layers bind to their SSRCs from the rid extension; one track on the node.
    for (i, rid) in [b"q", b"h", b"f"].iter().enumerate() {
        sending
            .send_rtp(&rid_packet(
                0x5100 + i as u32,
                1,
                3000,
                *rid,
                true,
                &[0x55; 200],
            ))
            .await
            .unwrap();
    }
    wait_state(&rest, node, "hostile publish", |(t, k, _)| {
        t == transports + 1 && k == tracks + 1
    })
    .await;
    let unknown_before = node_counter(&server, node, "rtp_unknown_rid").await;
    let drops_before = security_drops(&rest, node).await;
    let rss_before = rss_kib(server.pid());

    // 20 000 packets at 5 000/s: rids nobody announced and the announced ones again, each on a
    // new SSRC, while the honest pair's media flows.
    let sprayed = 20_000u32;
    let flood = async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..sprayed {
            if i % 100 == 0 {
                tick.tick().await;
            }
            let rid = match i % 4 {
                0 => b"q".to_vec(),
                1 => b"f".to_vec(),
                _ => format!("r{}", i % 5000).into_bytes(),
            };
            sending
                .send_rtp(&rid_packet(
                    0x7000_0000 + i,
                    2,
                    6000,
                    &rid,
                    true,
                    &[0x55; 200],
                ))
                .await
                .unwrap();
        }
    };
    let ((), ()) = tokio::join!(flood, media_flows(&a, &b, 0x5c));

    // Every sprayed packet is accounted for: refused by sfu-core (unknown rid, or a layer
    // already bound) or, past the SRTP context's SSRC cap, dropped by the security layer.
    let counted = support::eventually(Duration::from_secs(10), || async {
        let unknown = node_counter(&server, node, "rtp_unknown_rid").await - unknown_before;
        let drops = security_drops(&rest, node).await - drops_before;
        unknown + drops >= u64::from(sprayed)
    })
    .await;
    let unknown = node_counter(&server, node, "rtp_unknown_rid").await - unknown_before;
    let drops = security_drops(&rest, node).await - drops_before;
    let rss_after = rss_kib(server.pid());
    eprintln!(
        "rid spray: {sprayed} packets → {unknown} unknown-rid drops, {drops} security drops; \
         RSS {rss_before} → {rss_after} KiB"
    );
    assert!(
        counted,
        "unknown rid {unknown} + security drops {drops} < {sprayed}"
    );
    assert!(unknown > 0, "sfu-core saw and refused some of them");
    // No state for the spray: the node still holds one track for the hostile publisher.
    wait_state(&rest, node, "after the spray", |(t, k, _)| {
        t == transports + 1 && k == tracks + 1
    })
    .await;
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    // The honest pair's media, sent during the spray, arrived complete (`media_flows` above).
    drop((a, b, sending, hostile, server));
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
