//! Test peers built with the independent `webrtc` crate (0.21): a publisher sending Opus + VP8
//! and subscribers that record every RTP payload they receive, negotiated directly against a
//! [`mooyaho_media::Node`] (the control plane's role).

#![allow(dead_code, unreachable_pub)]

pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use mooyaho_media::{Node, RoomKey};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{Mutex, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState,
};
use webrtc::runtime::{Runtime, default_runtime};

const WAIT: Duration = Duration::from_secs(10);

/// Events a test waits on.
struct Handler {
    runtime: Arc<dyn Runtime>,
    gathered: watch::Sender<bool>,
    connected: watch::Sender<bool>,
    received: Arc<Mutex<Received>>,
}

/// What a subscriber got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub audio: Vec<Vec<u8>>,
    pub video: Vec<Vec<u8>>,
    pub stream_ids: Vec<String>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            let _ = self.connected.send(true);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        self.runtime.spawn(Box::pin(async move {
            let kind = track.kind().await;
            received
                .lock()
                .await
                .stream_ids
                .push(track.stream_id().await);
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        let mut received = received.lock().await;
                        let list = match kind {
                            RtpCodecKind::Audio => &mut received.audio,
                            _ => &mut received.video,
                        };
                        list.push(packet.payload.to_vec());
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        }));
    }
}

struct Pc {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    connected: watch::Receiver<bool>,
    received: Arc<Mutex<Received>>,
}

async fn peer_connection() -> anyhow::Result<Pc> {
    let runtime = default_runtime().expect("tokio runtime feature");
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    // The default interceptors make this a realistic receiver: NACK, RTCP reports, TWCC.
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let (gathered_tx, gathered) = watch::channel(false);
    let (connected_tx, connected) = watch::channel(false);
    let received = Arc::new(Mutex::new(Received::default()));
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            runtime: runtime.clone(),
            gathered: gathered_tx,
            connected: connected_tx,
            received: received.clone(),
        }))
        .with_runtime(runtime)
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await?;
    Ok(Pc {
        pc: Arc::new(pc),
        gathered,
        connected,
        received,
    })
}

async fn wait_true(rx: &mut watch::Receiver<bool>, what: &str) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, rx.wait_for(|v| *v))
        .await
        .map_err(|_| anyhow::anyhow!("timed out waiting for {what}"))??;
    Ok(())
}

fn local_track(
    kind: RtpCodecKind,
    mime: &str,
    clock_rate: u32,
    channels: u16,
    ssrc: u32,
) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "publisher-stream".to_owned(),
        format!("{kind}-track"),
        format!("{kind}-label"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )))
}

/// A publishing client.
pub struct Publisher {
    pc: Pc,
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    audio_ssrc: u32,
    video_ssrc: u32,
    audio_pt: u8,
    video_pt: u8,
}

impl Publisher {
    /// Offers Opus + VP8 to the node and applies its answer.
    pub async fn connect(node: &Node, room: RoomKey, session: &str) -> anyhow::Result<Self> {
        Self::connect_with(node, room, session, |sdp| sdp).await
    }

    /// Like [`Self::connect`], passing each SDP through `edit` on its way (offer to the node,
    /// answer to the client) — how tests tamper with signaling or insert a relay.
    pub async fn connect_with(
        node: &Node,
        room: RoomKey,
        session: &str,
        edit: impl Fn(String) -> String,
    ) -> anyhow::Result<Self> {
        let mut pc = peer_connection().await?;
        let (audio_ssrc, video_ssrc) = (rand::random(), rand::random());
        let audio = local_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, 48000, 2, audio_ssrc);
        let video = local_track(RtpCodecKind::Video, MIME_TYPE_VP8, 90000, 0, video_ssrc);
        pc.pc
            .add_track(audio.clone() as Arc<dyn TrackLocal>)
            .await?;
        pc.pc
            .add_track(video.clone() as Arc<dyn TrackLocal>)
            .await?;
        let offer = pc.pc.create_offer(None).await?;
        pc.pc.set_local_description(offer).await?;
        wait_true(&mut pc.gathered, "publisher ICE gathering").await?;
        let offer = pc
            .pc
            .local_description()
            .await
            .expect("local description")
            .sdp;
        let audio_pt = payload_type(&offer, "opus");
        let video_pt = payload_type(&offer, "VP8");
        let answer = edit(node.publish(room, session, &edit(offer)).await?);
        pc.pc
            .set_remote_description(RTCSessionDescription::answer(answer)?)
            .await?;
        Ok(Self {
            pc,
            audio,
            video,
            audio_ssrc,
            video_ssrc,
            audio_pt,
            video_pt,
        })
    }

    pub async fn wait_connected(&self) -> anyhow::Result<()> {
        wait_true(&mut self.pc.connected.clone(), "publisher connected").await
    }

    /// Sends the payloads as RTP, one audio and one video packet per `interval`.
    pub async fn send(
        &self,
        audio: &[Vec<u8>],
        video: &[Vec<u8>],
        interval: Duration,
    ) -> anyhow::Result<()> {
        for i in 0..audio.len().max(video.len()) {
            if let Some(payload) = audio.get(i) {
                self.audio
                    .write_rtp(packet(
                        self.audio_pt,
                        self.audio_ssrc,
                        i as u16,
                        i as u32 * 960,
                        payload,
                        false,
                    ))
                    .await?;
            }
            if let Some(payload) = video.get(i) {
                self.video
                    .write_rtp(packet(
                        self.video_pt,
                        self.video_ssrc,
                        i as u16,
                        i as u32 * 3000,
                        payload,
                        true,
                    ))
                    .await?;
            }
            tokio::time::sleep(interval).await;
        }
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.pc.pc.close().await;
    }
}

/// A subscribing client.
pub struct Subscriber {
    pc: Pc,
    pub name: String,
}

impl Subscriber {
    /// Takes the node's subscribe offer and answers it.
    pub async fn connect(node: &Node, room: RoomKey, session: &str) -> anyhow::Result<Self> {
        Self::connect_with(node, room, session, |sdp| sdp).await
    }

    /// Like [`Self::connect`], passing each SDP through `edit`.
    pub async fn connect_with(
        node: &Node,
        room: RoomKey,
        session: &str,
        edit: impl Fn(String) -> String,
    ) -> anyhow::Result<Self> {
        let mut pc = peer_connection().await?;
        let offer = node
            .subscribe_offer(room, session)
            .await?
            .ok_or_else(|| anyhow::anyhow!("nothing to subscribe to"))?;
        pc.pc
            .set_remote_description(RTCSessionDescription::offer(edit(offer))?)
            .await?;
        let answer = pc.pc.create_answer(None).await?;
        pc.pc.set_local_description(answer).await?;
        wait_true(&mut pc.gathered, "subscriber ICE gathering").await?;
        let answer = pc
            .pc
            .local_description()
            .await
            .expect("local description")
            .sdp;
        node.subscribe_answer(room, session, &edit(answer)).await?;
        Ok(Self {
            pc,
            name: session.to_owned(),
        })
    }

    pub async fn wait_connected(&self) -> anyhow::Result<()> {
        wait_true(&mut self.pc.connected.clone(), "subscriber connected").await
    }

    /// Waits until at least this many packets of each kind arrived (or the timeout).
    pub async fn wait_for(
        &self,
        audio: usize,
        video: usize,
        within: Duration,
    ) -> anyhow::Result<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let received = self.pc.received.lock().await.clone();
            if received.audio.len() >= audio && received.video.len() >= video {
                return Ok(received);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{}: got {} audio / {} video packets, wanted {audio} / {video}",
                    self.name,
                    received.audio.len(),
                    received.video.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn received(&self) -> Received {
        self.pc.received.lock().await.clone()
    }

    pub async fn close(self) {
        let _ = self.pc.pc.close().await;
    }
}

fn packet(
    pt: u8,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    payload: &[u8],
    marker: bool,
) -> rtc::rtp::packet::Packet {
    rtc::rtp::packet::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp,
            ssrc,
            marker,
            ..Default::default()
        },
        payload: bytes::Bytes::copy_from_slice(payload),
    }
}

/// The payload type the offer maps to `codec` (first match).
fn payload_type(sdp: &str, codec: &str) -> u8 {
    sdp.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("a=rtpmap:")?;
            let (pt, name) = rest.split_once(' ')?;
            name.to_ascii_lowercase()
                .starts_with(&codec.to_ascii_lowercase())
                .then(|| pt.parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no {codec} in offer:\n{sdp}"))
}

/// Distinct audio payloads and VP8 payloads (the first a keyframe, every packet a frame start).
pub fn payloads(n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    // Each payload carries its index, so no two are alike however many there are.
    let audio = (0..n)
        .map(|i| {
            let mut p = (i as u32).to_be_bytes().to_vec();
            p.extend((0..120).map(|j| (i * 7 + j) as u8));
            p
        })
        .collect();
    let video = (0..n)
        .map(|i| {
            // VP8 payload descriptor S=1, PID 0; frame tag P bit 0 = keyframe (RFC 7741 §4.3).
            let mut p = vec![0x10, if i == 0 { 0x00 } else { 0x01 }, 0x00, 0x00];
            if i == 0 {
                p.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
            }
            p.extend_from_slice(&(i as u32).to_be_bytes());
            p.extend((0..900).map(|j| (i * 13 + j) as u8));
            p
        })
        .collect();
    (audio, video)
}
