//! WHIP (RFC 9725) against `mooyaho dev`: a `webrtc`-crate client publishes with one HTTP
//! request and a join token, and an SDK-style member of the channel receives its media; the
//! resource takes trickle PATCHes, refuses ICE restarts, and DELETE ends it (the member hears it
//! leave). Hostile requests (no or wrong token, wrong grant, wrong content type, garbage and
//! malformed SDP, unknown and mesh channels) are refused with their status and a JSON reason,
//! leave no session behind, and do not disturb the member already watching. An abandoned
//! publisher (never deleted, its PeerConnection gone) leaves the channel once its consent expires.

mod support;

use std::time::Duration;

use mooyaho_test_support::peer::{LocalMedia, Peer, payloads};
use mooyaho_test_support::sfu_client::SfuClient;
use mooyaho_test_support::ws::Rest;
use serde_json::{Value, json};
use support::{Server, eventually, healthy_node};

const PACKETS: usize = 60;

/// A join token for `sub` in `channel`, signed by the server (`POST /tokens`).
async fn join_token(
    rest: &Rest,
    sub: &str,
    channel: &str,
    publish: bool,
    subscribe: bool,
) -> String {
    let (status, body) = rest
        .call(
            "POST",
            "/tokens",
            Some(json!({ "sub": sub, "name": sub, "channel": channel,
                "publish": publish, "subscribe": subscribe })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// What a WHIP/WHEP request got back.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The JSON error body's `message`, asserting the body is the JSON error shape.
    fn reason(&self) -> String {
        let body: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", self.body));
        assert_eq!(body["statusCode"], self.status, "{body}");
        body["message"].as_str().unwrap_or_default().to_owned()
    }
}

async fn send(
    rest: &Rest,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = rest.http.request(method, format!("{}{path}", rest.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("request");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

/// `POST /whip/{channel}` with `offer`, as a WHIP client sends it.
async fn whip_post(rest: &Rest, channel: &str, token: &str, offer: &str) -> Reply {
    let auth = format!("Bearer {token}");
    send(
        rest,
        "POST",
        &format!("/whip/{channel}"),
        &[
            ("authorization", &auth),
            ("content-type", "application/sdp"),
        ],
        Some(offer.to_owned()),
    )
    .await
}

/// The session of the member whose user id is `user` in `channel`, once there is one.
async fn member_session(rest: &Rest, channel: &str, user: &str) -> Option<String> {
    let (status, detail) = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(status, 200, "{detail}");
    detail["channelSessions"]
        .as_array()?
        .iter()
        .find(|s| s["user"]["id"] == user)
        .and_then(|s| s["sessionId"].as_str())
        .map(str::to_owned)
}

/// A connected `webrtc`-crate WHIP publisher: its peer, media, resource path and ETag.
struct WhipPublisher {
    peer: Peer,
    media: LocalMedia,
    location: String,
    etag: String,
    session: String,
    /// The `a=ice-ufrag` of its offer (a trickle PATCH names the same one).
    ufrag: String,
}

async fn whip_publish(rest: &Rest, channel: &str, user: &str) -> WhipPublisher {
    let token = join_token(rest, user, channel, true, false).await;
    let peer = Peer::new().await.unwrap();
    let (media, offer) = LocalMedia::offer(&peer).await.unwrap();
    let ufrag = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("the offer has an ICE ufrag")
        .trim()
        .to_owned();
    let reply = whip_post(rest, channel, &token, &offer).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.header("content-type"), "application/sdp");
    assert!(reply.body.starts_with("v=0"), "{}", reply.body);
    let location = reply.header("location").to_owned();
    assert!(
        location.starts_with(&format!("/whip/{channel}/")),
        "{location}"
    );
    let etag = reply.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    assert_eq!(
        reply.header("accept-patch"),
        "application/trickle-ice-sdpfrag"
    );
    peer.apply_answer(reply.body).await.unwrap();
    peer.wait_connected("WHIP publisher").await.unwrap();
    let session = member_session(rest, channel, user)
        .await
        .expect("the WHIP publisher is a member of the channel");
    WhipPublisher {
        peer,
        media,
        location,
        etag,
        session,
        ufrag,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webrtc_whip_publisher_reaches_a_member_and_delete_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    healthy_node(&rest).await;
    let channel = rest.create_channel(true).await;
    let mut viewer = SfuClient::join(&server.ws_url(), &rest, &channel, "viewer").await;

    let whip = whip_publish(&rest, &channel, "encoder").await;
    // Its own `entered` first, then the WHIP publisher's, named by the token's user.
    let own = viewer.expect("entered").await;
    assert_eq!(own["sessionId"], viewer.id.as_str(), "{own}");
    let entered = viewer.expect("entered").await;
    assert_eq!(entered["sessionId"], whip.session.as_str(), "{entered}");
    assert_eq!(entered["user"]["id"], "encoder", "{entered}");
    viewer.subscribed_to(&[&whip.session]).await;
    let sent = payloads(0x3A, PACKETS);
    whip.media
        .send_from(0, &sent.0, &sent.1, Duration::from_millis(5))
        .await
        .unwrap();
    let received = viewer
        .wait_for(&[&whip.session], PACKETS, Duration::from_secs(15))
        .await;
    let got = &received[whip.session.as_str()];
    assert!(got.audio == sent.0, "audio payloads differ");
    assert!(got.video == sent.1, "video payloads differ");

    // Trickle: accepted (the node is ICE-lite and needs none); preconditions per RFC 9725.
    let fragment =
        "a=ice-ufrag:{}\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    let trickle = fragment.replace("{}", &whip.ufrag);
    let patch = |headers: Vec<(&'static str, String)>, body: String| {
        let rest = rest.clone();
        let location = whip.location.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            send(&rest, "PATCH", &location, &headers, Some(body)).await
        }
    };
    let frag = ("content-type", "application/trickle-ice-sdpfrag".to_owned());
    let ok = patch(
        vec![frag.clone(), ("if-match", whip.etag.clone())],
        trickle.clone(),
    )
    .await;
    assert_eq!(ok.status, 204, "{}", ok.body);
    let missing = patch(vec![frag.clone()], trickle.clone()).await;
    assert_eq!(missing.status, 428, "{}", missing.reason());
    let stale = patch(
        vec![frag.clone(), ("if-match", "\"stale\"".into())],
        trickle.clone(),
    )
    .await;
    assert_eq!(stale.status, 412, "{}", stale.reason());
    let restart = patch(
        vec![frag.clone(), ("if-match", "*".into())],
        trickle.clone(),
    )
    .await;
    assert_eq!(restart.status, 422, "{}", restart.body);
    assert!(restart.reason().contains("ICE restarts are not supported"));
    let new_ufrag = fragment.replace("{}", "someotherufrag");
    let restart = patch(
        vec![frag.clone(), ("if-match", whip.etag.clone())],
        new_ufrag,
    )
    .await;
    assert_eq!(restart.status, 422, "{}", restart.reason());
    let wrong_type = patch(
        vec![
            ("content-type", "text/plain".into()),
            ("if-match", whip.etag.clone()),
        ],
        trickle.clone(),
    )
    .await;
    assert_eq!(wrong_type.status, 415, "{}", wrong_type.reason());

    // OPTIONS names the methods.
    let options = send(&rest, "OPTIONS", &whip.location, &[], None).await;
    assert_eq!(options.status, 204);
    assert_eq!(options.header("allow"), "OPTIONS, PATCH, DELETE");
    let options = send(&rest, "OPTIONS", &format!("/whip/{channel}"), &[], None).await;
    assert_eq!(options.header("allow"), "OPTIONS, POST");

    // DELETE ends it: the member hears it leave, and the resource is gone.
    let deleted = send(&rest, "DELETE", &whip.location, &[], None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let left = viewer.expect("left").await;
    assert_eq!(left["sessionId"], whip.session.as_str(), "{left}");
    assert_eq!(member_session(&rest, &channel, "encoder").await, None);
    let again = send(&rest, "DELETE", &whip.location, &[], None).await;
    assert_eq!(again.status, 404, "{}", again.reason());
    whip.peer.close().await;
    viewer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_whip_requests_are_refused_with_reasons_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    healthy_node(&rest).await;
    let channel = rest.create_channel(true).await;
    let mesh = rest.create_channel(false).await;
    let other = rest.create_channel(true).await;
    // An honest publisher and member already in the channel.
    let viewer = SfuClient::join(&server.ws_url(), &rest, &channel, "viewer").await;
    let honest = whip_publish(&rest, &channel, "honest").await;
    viewer.subscribed_to(&[&honest.session]).await;

    let peer = Peer::new().await.unwrap();
    let (_media, offer) = LocalMedia::offer(&peer).await.unwrap();
    let publisher = join_token(&rest, "mallory", &channel, true, true).await;
    let viewer_only = join_token(&rest, "mallory", &channel, false, true).await;
    let elsewhere = join_token(&rest, "mallory", &other, true, true).await;
    let mesh_token = join_token(&rest, "mallory", &mesh, true, true).await;
    let path = format!("/whip/{channel}");
    let sdp = ("content-type", "application/sdp");

    let cases: Vec<(&str, Reply, u16, &str)> = vec![
        (
            "no token",
            send(&rest, "POST", &path, &[sdp], Some(offer.clone())).await,
            401,
            "Authorization",
        ),
        (
            "the API key instead of a join token",
            send(
                &rest,
                "POST",
                &path,
                &[sdp, ("authorization", &format!("Bearer {}", rest.key))],
                Some(offer.clone()),
            )
            .await,
            401,
            "join token",
        ),
        (
            "a token without publish",
            whip_post(&rest, &channel, &viewer_only, &offer).await,
            403,
            "publishing",
        ),
        (
            "a token for another channel",
            whip_post(&rest, &channel, &elsewhere, &offer).await,
            403,
            "another channel",
        ),
        (
            "a JSON body",
            send(
                &rest,
                "POST",
                &path,
                &[
                    ("content-type", "application/json"),
                    ("authorization", &format!("Bearer {publisher}")),
                ],
                Some("{}".into()),
            )
            .await,
            415,
            "application/sdp",
        ),
        (
            "not SDP",
            whip_post(&rest, &channel, &publisher, "hello, world").await,
            400,
            "v=0",
        ),
        (
            "malformed SDP",
            whip_post(
                &rest,
                &channel,
                &publisher,
                "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF\r\n",
            )
            .await,
            400,
            "SDP refused",
        ),
        (
            "an answer's direction only (no media to publish)",
            whip_post(
                &rest,
                &channel,
                &publisher,
                &offer
                    .replace("a=sendrecv", "a=recvonly")
                    .replace("a=sendonly", "a=recvonly"),
            )
            .await,
            400,
            "SDP refused",
        ),
        (
            "an unknown channel",
            whip_post(
                &rest,
                "00000000-0000-4000-8000-000000000000",
                &join_token(
                    &rest,
                    "mallory",
                    "00000000-0000-4000-8000-000000000000",
                    true,
                    true,
                )
                .await,
                &offer,
            )
            .await,
            404,
            "no such channel",
        ),
        (
            "a mesh channel",
            whip_post(&rest, &mesh, &mesh_token, &offer).await,
            409,
            "mesh",
        ),
        (
            "a resource that does not exist",
            send(
                &rest,
                "DELETE",
                &format!("{path}/0123456789abcdef"),
                &[],
                None,
            )
            .await,
            404,
            "no such whip session",
        ),
    ];
    for (what, reply, status, reason) in cases {
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        let message = reply.reason();
        assert!(message.contains(reason), "{what}: {message}");
    }
    // Nothing of mallory's stayed in any channel.
    for id in [&channel, &mesh, &other] {
        assert_eq!(member_session(&rest, id, "mallory").await, None, "{id}");
    }
    // The honest publisher still reaches the member.
    let sent = payloads(0x3B, PACKETS);
    honest
        .media
        .send_from(0, &sent.0, &sent.1, Duration::from_millis(5))
        .await
        .unwrap();
    let received = viewer
        .wait_for(&[&honest.session], PACKETS, Duration::from_secs(15))
        .await;
    assert!(received[honest.session.as_str()].video == sent.1);
    peer.close().await;
    honest.peer.close().await;
    viewer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_whip_publisher_leaves_when_its_transport_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    healthy_node(&rest).await;
    let channel = rest.create_channel(true).await;
    // One publisher connects then vanishes (consent expires); one never connects at all.
    let gone = whip_publish(&rest, &channel, "vanished").await;
    gone.peer.close().await;
    let token = join_token(&rest, "never", &channel, true, false).await;
    let silent = Peer::new().await.unwrap();
    let (_media, offer) = LocalMedia::offer(&silent).await.unwrap();
    let reply = whip_post(&rest, &channel, &token, &offer).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    silent.close().await;
    assert!(member_session(&rest, &channel, "never").await.is_some());
    // Consent expires 30 s after the last check; a transport never connected is given up 30 s
    // after its offer. Both sessions end by themselves: no DELETE was sent.
    let ended = eventually(Duration::from_secs(60), || async {
        member_session(&rest, &channel, "vanished").await.is_none()
            && member_session(&rest, &channel, "never").await.is_none()
    })
    .await;
    assert!(ended, "abandoned WHIP sessions are still members");
    let location = reply.header("location").to_owned();
    let deleted = send(&rest, "DELETE", &location, &[], None).await;
    assert_eq!(
        deleted.status, 404,
        "its resource went with it: {}",
        deleted.body
    );
}

/// Review finding (2026-12-02): one reusable publish token POSTed in a loop opened a member
/// with up to 8 tracks per request (never connecting), every one re-offered to every
/// subscriber. Now a user holds at most 2 WHIP sessions per channel: each further POST ends
/// the oldest, so the channel's membership stays bounded while an honest member keeps its media.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whip_token_posted_in_a_loop_holds_at_most_two_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    healthy_node(&rest).await;
    let channel = rest.create_channel(true).await;
    let mut honest = SfuClient::join(&server.ws_url(), &rest, &channel, "honest").await;
    honest.publish().await;
    honest.publish_connected().await;

    let token = join_token(&rest, "looper", &channel, true, false).await;
    let offer = whip_offer_text();
    let mut locations = Vec::new();
    for _ in 0..12 {
        let reply = whip_post(&rest, &channel, &token, &offer).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        locations.push(reply.header("location").to_owned());
    }
    let members = |detail: Value| {
        detail["channelSessions"]
            .as_array()
            .map(|all| all.iter().filter(|s| s["user"]["id"] == "looper").count())
            .unwrap_or(0)
    };
    let (_, detail) = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(members(detail), 2, "the looper's sessions in the channel");
    // The replaced ones are gone (their resources too); the last two answer.
    for old in &locations[..10] {
        let deleted = send(&rest, "DELETE", old, &[], None).await;
        assert_eq!(deleted.status, 404, "{old}: {}", deleted.body);
    }
    for live in &locations[10..] {
        let deleted = send(&rest, "DELETE", live, &[], None).await;
        assert_eq!(deleted.status, 200, "{live}: {}", deleted.body);
    }
    // The honest member still publishes: its own media goes through the node.
    let (audio, video) = payloads(0x42, PACKETS);
    honest
        .send_media_from(0, &audio, &video, Duration::from_millis(5))
        .await;
    assert_eq!(healthy_node(&rest).await, healthy_node(&rest).await);
}

/// `POST /whep/{channel}{query}` with `offer`, as a WHEP player sends it.
async fn whep_post(rest: &Rest, channel: &str, query: &str, token: &str, offer: &str) -> Reply {
    let auth = format!("Bearer {token}");
    send(
        rest,
        "POST",
        &format!("/whep/{channel}{query}"),
        &[
            ("authorization", &auth),
            ("content-type", "application/sdp"),
        ],
        Some(offer.to_owned()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webrtc_whep_viewer_receives_the_whip_publisher_and_delete_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    healthy_node(&rest).await;
    let channel = rest.create_channel(true).await;
    let whip = whip_publish(&rest, &channel, "encoder").await;
    let other = whip_publish(&rest, &channel, "other-encoder").await;

    // A viewer of one publisher (`?publisher=`), with a token that may only receive.
    let token = join_token(&rest, "player", &channel, false, true).await;
    let viewer = Peer::new().await.unwrap();
    let offer = viewer.receive_offer().await.unwrap();
    let query = format!("?publisher={}", whip.session);
    let reply = whep_post(&rest, &channel, &query, &token, &offer).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.header("content-type"), "application/sdp");
    let location = reply.header("location").to_owned();
    assert!(
        location.starts_with(&format!("/whep/{channel}/")),
        "{location}"
    );
    assert!(reply.header("etag").starts_with('"'));
    let answer = reply.body.clone();
    assert!(
        answer.contains(&format!("a=msid:{} ", whip.session)),
        "{answer}"
    );
    assert!(
        !answer.contains(&other.session),
        "only the named publisher: {answer}"
    );
    viewer.apply_answer(answer).await.unwrap();
    viewer.wait_connected("WHEP viewer").await.unwrap();
    assert!(member_session(&rest, &channel, "player").await.is_some());

    let sent = payloads(0x3C, PACKETS);
    let viewer_got = async {
        // Keyframe-gated video starts at the first keyframe the node asked for: keep sending
        // until the viewer has PACKETS of each.
        for round in 0..10 {
            whip.media
                .send_from(round * PACKETS, &sent.0, &sent.1, Duration::from_millis(5))
                .await
                .unwrap();
            let got = viewer.received().await;
            if got
                .get(whip.session.as_str())
                .is_some_and(|m| m.audio.len() >= PACKETS && m.video.len() >= PACKETS)
            {
                return got;
            }
        }
        viewer.received().await
    }
    .await;
    let got = &viewer_got[whip.session.as_str()];
    assert!(
        got.audio.len() >= PACKETS && got.video.len() >= PACKETS,
        "{} audio, {} video",
        got.audio.len(),
        got.video.len()
    );
    assert!(
        got.audio.iter().all(|p| sent.0.contains(p)),
        "audio payloads are the publisher's"
    );
    assert!(
        got.video.iter().all(|p| sent.1.contains(p)),
        "video payloads are the publisher's"
    );

    let deleted = send(&rest, "DELETE", &location, &[], None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(member_session(&rest, &channel, "player").await, None);
    viewer.close().await;
    whip.peer.close().await;
    other.peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_whep_requests_are_refused_with_reasons_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let rest = server.rest();
    healthy_node(&rest).await;
    let channel = rest.create_channel(true).await;
    let empty = rest.create_channel(true).await;
    let mesh = rest.create_channel(false).await;
    let publisher = whip_publish(&rest, &channel, "honest").await;
    let peer = Peer::new().await.unwrap();
    let offer = peer.receive_offer().await.unwrap();
    let viewer = join_token(&rest, "mallory", &channel, true, true).await;
    let publish_only = join_token(&rest, "mallory", &channel, true, false).await;
    let cases: Vec<(&str, Reply, u16, &str)> = vec![
        (
            "no token",
            send(
                &rest,
                "POST",
                &format!("/whep/{channel}"),
                &[("content-type", "application/sdp")],
                Some(offer.clone()),
            )
            .await,
            401,
            "Authorization",
        ),
        (
            "a token without subscribe",
            whep_post(&rest, &channel, "", &publish_only, &offer).await,
            403,
            "receiving",
        ),
        (
            "not SDP",
            whep_post(&rest, &channel, "", &viewer, "GET / HTTP/1.1").await,
            400,
            "v=0",
        ),
        (
            "a publish offer (nothing to receive)",
            whep_post(&rest, &channel, "", &viewer, &whip_offer_text()).await,
            400,
            "SDP refused",
        ),
        (
            "an unknown publisher",
            whep_post(&rest, &channel, "?publisher=nobody", &viewer, &offer).await,
            404,
            "no such publisher",
        ),
        (
            "a bad publisher id",
            whep_post(&rest, &channel, "?publisher=a:b", &viewer, &offer).await,
            400,
            "publisher",
        ),
        (
            "a channel nobody publishes in",
            whep_post(
                &rest,
                &empty,
                "",
                &join_token(&rest, "mallory", &empty, false, true).await,
                &offer,
            )
            .await,
            503,
            "nobody publishes",
        ),
        (
            "a mesh channel",
            whep_post(
                &rest,
                &mesh,
                "",
                &join_token(&rest, "mallory", &mesh, false, true).await,
                &offer,
            )
            .await,
            409,
            "mesh",
        ),
    ];
    for (what, reply, status, reason) in cases {
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        let message = reply.reason();
        assert!(message.contains(reason), "{what}: {message}");
    }
    for id in [&channel, &empty, &mesh] {
        assert_eq!(member_session(&rest, id, "mallory").await, None, "{id}");
    }
    // The honest publisher is still there and can be watched.
    let honest_viewer = join_token(&rest, "honest-viewer", &channel, false, true).await;
    let reply = whep_post(&rest, &channel, "", &honest_viewer, &offer).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    peer.close().await;
    publisher.peer.close().await;
}

/// A `recvonly`-free publish offer from Chrome's fixture shape: sendonly m-lines only.
fn whip_offer_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/media/tests/sdp_offers/chrome.sdp"
    ))
    .unwrap()
    .replace('\n', "\r\n")
}

/// Outside review G3 against real processes: `mooyaho server --span-nodes` with two `mooyaho
/// sfu`, the first capped at one transport. A WHIP publisher fills the first node; a WHEP
/// viewer is served by the second, which signaling feeds through a relay link opened before
/// the node answers the viewer's offer: the answer carries the publisher's tracks and the
/// viewer receives its payloads. (Before, a WHEP viewer's node counted as receiving nothing:
/// no link, an answer without tracks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whep_viewer_served_by_another_node_receives_through_a_relay_link() {
    const SECRET: &str = "cluster-secret-whep-span-0123456789abcdef";
    let server = Server::start(&["--cluster-secret", SECRET, "--span-nodes"]);
    let rest = server.rest();
    let a = support::SfuNode::start_with(SECRET, Some(&server), &["--max-transports", "1"]);
    assert_eq!(healthy_node(&rest).await, a.id());
    let channel = rest.create_channel(true).await;
    let whip = whip_publish(&rest, &channel, "encoder").await;
    let b = support::SfuNode::start_with(SECRET, Some(&server), &[]);
    let both = eventually(Duration::from_secs(10), || async {
        let (_, nodes) = rest.call("GET", "/sfu-servers", None).await;
        nodes.as_array().is_some_and(|n| {
            n.len() == 2
                && n.iter().all(|n| n["health"] == "healthy")
                && n.iter()
                    .any(|n| n["id"] == a.id() && n["load"]["admittedTransports"] == 1)
        })
    })
    .await;
    assert!(both, "both nodes healthy, a full");

    let token = join_token(&rest, "player", &channel, false, true).await;
    let viewer = Peer::new().await.unwrap();
    let offer = viewer.receive_offer().await.unwrap();
    let reply = whep_post(&rest, &channel, "", &token, &offer).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let (_, detail) = rest
        .call("GET", &format!("/channels/{channel}"), None)
        .await;
    assert_eq!(detail["sfuServerIds"], json!([a.id(), b.id()]), "{detail}");
    let answer = reply.body.clone();
    assert!(
        answer.contains(&format!("a=msid:{} ", whip.session)),
        "the answer carries the relayed tracks: {answer}"
    );
    viewer.apply_answer(answer).await.unwrap();
    viewer
        .wait_connected("WHEP viewer on the second node")
        .await
        .unwrap();

    let sent = payloads(0x3D, PACKETS);
    let mut got = Default::default();
    for round in 0..10 {
        whip.media
            .send_from(round * PACKETS, &sent.0, &sent.1, Duration::from_millis(5))
            .await
            .unwrap();
        got = viewer.received().await;
        if got
            .get(whip.session.as_str())
            .is_some_and(|m| m.audio.len() >= PACKETS && m.video.len() >= PACKETS)
        {
            break;
        }
    }
    let media = got
        .get(whip.session.as_str())
        .unwrap_or_else(|| panic!("nothing from the publisher: {:?}", got.keys()));
    assert!(
        media.audio.len() >= PACKETS && media.video.len() >= PACKETS,
        "{} audio, {} video",
        media.audio.len(),
        media.video.len()
    );
    assert!(media.audio.iter().all(|p| sent.0.contains(p)));
    assert!(media.video.iter().all(|p| sent.1.contains(p)));
    // Its load report (once a second) names the link in.
    let linked = eventually(Duration::from_secs(5), || async {
        let (_, node_b) = rest
            .call("GET", &format!("/sfu-servers/{}", b.id()), None)
            .await;
        node_b["load"]["relayLinksIn"] == 1
    })
    .await;
    assert!(linked, "b reports one relay link in");
    viewer.close().await;
    whip.peer.close().await;
}
