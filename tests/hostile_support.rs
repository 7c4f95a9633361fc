//! The hostile client (`mooyaho_loadgen::raw`) against a real `mooyaho dev`: what attack tests
//! rely on works end to end — raw SRTP from a publisher reaches a raw subscriber byte for byte,
//! SRTCP feedback from the subscriber reaches the publisher, and a binding check signed with
//! the transport's keys is answered from a socket the node has never seen.

mod support;

use std::time::{Duration, Instant};

use support::Server;
use support::raw::{self, Inbound, RawParticipant, Track, TrackKind};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_participants_exchange_media_feedback_and_checks_through_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(dir.path(), &[]);
    let channel = server.rest().create_channel(true).await;
    let url = server.url("");

    let mut publisher = RawParticipant::join(&url, &server.api_key, &channel, "pub")
        .await
        .unwrap();
    let ssrc = 0x5151_0001;
    let mut sending = publisher
        .publish(&[Track {
            kind: TrackKind::Video,
            ssrc,
        }])
        .await
        .unwrap();
    let mut subscriber = RawParticipant::join(&url, &server.api_key, &channel, "sub")
        .await
        .unwrap();
    let mut receiving = subscriber.subscribe(WAIT).await.unwrap();
    let video = receiving
        .remote_media
        .iter()
        .find(|m| m.kind == "video")
        .cloned()
        .unwrap_or_else(|| panic!("no video m-line: {:?}", receiving.remote_media));
    let forwarded_ssrc = video.ssrc.expect("the subscribe offer declares an SSRC");

    // Keyframes until the subscriber's transport carries them, then check the bytes.
    let deadline = Instant::now() + WAIT;
    let mut seq = 1000u16;
    let received = loop {
        assert!(Instant::now() < deadline, "no media reached the subscriber");
        let body = format!("frame {seq}");
        let payload = raw::vp8_payload(true, body.as_bytes());
        let packet = raw::rtp(ssrc, seq, u32::from(seq) * 3000, 96, true, &payload).unwrap();
        sending.send_rtp(&packet).await.unwrap();
        seq = seq.wrapping_add(1);
        if let Some(Inbound::Rtp(rtp)) = receiving.recv(Duration::from_millis(50)).await.unwrap() {
            break rtp;
        }
    };
    // The node rewrites the header (SSRC, extensions) and the VP8 descriptor, not the frame.
    assert_eq!(&received[8..12], &forwarded_ssrc.to_be_bytes());
    let text = String::from_utf8_lossy(&received);
    let sent_seq: u16 = text
        .rsplit_once("frame ")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("not one of our frames: {text:?}"));
    assert!((1000..seq).contains(&sent_seq), "{sent_seq} not sent");

    // A PLI from the subscriber is relayed to the publisher as a keyframe request.
    let pli = raw::pli(0x0bad_cafe, forwarded_ssrc).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut asked = false;
    while !asked && Instant::now() < deadline {
        receiving.send_rtcp(&pli).await.unwrap();
        let until = Instant::now() + Duration::from_millis(300);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Some(Inbound::Rtcp(rtcp)) = sending.recv(left).await.unwrap() {
                asked |= is_pli_for(&rtcp, ssrc);
            }
        }
    }
    assert!(asked, "the publisher never saw a keyframe request");

    // A check signed with the subscriber's keys, from a fresh socket, gets a success response.
    let other = raw::bind_shared("127.0.0.2:0".parse().unwrap()).unwrap();
    let check = receiving.binding_request(false);
    other.send_to(&check, receiving.remote).await.unwrap();
    let mut buf = [0u8; 512];
    let (_, from) = tokio::time::timeout(WAIT, other.recv_from(&mut buf))
        .await
        .expect("a response to the check")
        .unwrap();
    assert_eq!(from, receiving.remote);
    assert_eq!(&buf[..2], &[0x01, 0x01], "binding success response");
    assert_eq!(&buf[8..20], &check[8..20], "same transaction id");

    subscriber.leave().await;
    publisher.leave().await;
}

/// Whether a compound RTCP packet holds a PLI (PSFB FMT 1) for `media_ssrc`.
fn is_pli_for(mut rtcp: &[u8], media_ssrc: u32) -> bool {
    while rtcp.len() >= 12 {
        let len = (usize::from(u16::from_be_bytes([rtcp[2], rtcp[3]])) + 1) * 4;
        if rtcp[1] == 206 && rtcp[0] & 0x1f == 1 && rtcp[8..12] == media_ssrc.to_be_bytes() {
            return true;
        }
        rtcp = rtcp.get(len..).unwrap_or_default();
    }
    false
}
