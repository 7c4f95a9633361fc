//! A WebRTC peer built with the independent `webrtc` crate (0.21): the default interceptors make
//! it a realistic endpoint (NACK, RTCP reports, TWCC). It can publish Opus + VP8
//! ([`LocalMedia`]) and records every RTP payload it receives, per remote stream id (the SFU sets
//! a forwarded track's stream id to the publishing session's id).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{Mutex, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState,
};
use webrtc::runtime::{Runtime, default_runtime};

/// How long a peer waits for ICE gathering or a connection.
pub const WAIT: Duration = Duration::from_secs(10);

/// Payloads received from one remote stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Media {
    pub audio: Vec<Vec<u8>>,
    pub video: Vec<Vec<u8>>,
}

/// What a peer received so far.
#[derive(Clone, Debug, Default)]
struct Recorded {
    by_stream: HashMap<String, Media>,
    /// The stream id of each remote track, in the order the tracks arrived.
    track_streams: Vec<String>,
    /// (stream id, track id) already being read, so a renegotiation does not read a track twice.
    reading: BTreeSet<(String, String)>,
}

struct Handler {
    runtime: Arc<dyn Runtime>,
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    recorded: Arc<Mutex<Recorded>>,
}

fn debug() -> bool {
    std::env::var("SFU_CLIENT_DEBUG").is_ok()
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let recorded = self.recorded.clone();
        self.runtime.spawn(Box::pin(async move {
            let kind = track.kind().await;
            let stream = track.stream_id().await;
            let key = (stream.clone(), track.track_id().await);
            if debug() {
                eprintln!("on_track {key:?} {kind}");
            }
            {
                let mut recorded = recorded.lock().await;
                if !recorded.reading.insert(key) {
                    return;
                }
                recorded.track_streams.push(stream.clone());
                recorded.by_stream.entry(stream.clone()).or_default();
            }
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        let mut recorded = recorded.lock().await;
                        let media = recorded.by_stream.entry(stream.clone()).or_default();
                        match kind {
                            RtpCodecKind::Audio => media.audio.push(packet.payload.to_vec()),
                            _ => media.video.push(packet.payload.to_vec()),
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        }));
    }
}

/// One PeerConnection on loopback with its gathering and connection state.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    recorded: Arc<Mutex<Recorded>>,
}

impl Peer {
    /// A new PeerConnection with the default codecs and interceptors, on a loopback socket.
    pub async fn new() -> anyhow::Result<Self> {
        let runtime =
            default_runtime().ok_or_else(|| anyhow::anyhow!("webrtc: no tokio runtime"))?;
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        // Browsers offer the RFC 6464 audio level on every audio m-line; so do our peers.
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                runtime: runtime.clone(),
                gathered: gathered_tx,
                state: state_tx,
                recorded: recorded.clone(),
            }))
            .with_runtime(runtime)
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await?;
        Ok(Self {
            pc: Arc::new(pc),
            gathered,
            state,
            recorded,
        })
    }

    /// Applies a remote offer and returns our answer once ICE gathering is complete (the answer
    /// carries every candidate: the SFU does no trickle).
    pub async fn answer(&self, offer: String) -> anyhow::Result<String> {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(offer)?)
            .await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        self.gathered_description("answer").await
    }

    /// Offers to receive one audio and one video track (`recvonly` transceivers, as a WHEP
    /// viewer does) and returns the offer once ICE gathering is complete.
    pub async fn receive_offer(&self) -> anyhow::Result<String> {
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: Vec::new(),
                send_encodings: Vec::new(),
            };
            self.pc.add_transceiver_from_kind(kind, Some(init)).await?;
        }
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.gathered_description("receive offer").await
    }

    /// Applies the remote answer to our offer.
    pub async fn apply_answer(&self, answer: String) -> anyhow::Result<()> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer)?)
            .await?;
        Ok(())
    }

    /// Our local description once ICE gathering is complete.
    async fn gathered_description(&self, what: &str) -> anyhow::Result<String> {
        let mut gathered = self.gathered.clone();
        tokio::time::timeout(WAIT, gathered.wait_for(|done| *done))
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for ICE gathering ({what})"))??;
        let description = self.pc.local_description().await;
        Ok(description
            .ok_or_else(|| anyhow::anyhow!("no local description ({what})"))?
            .sdp)
    }

    /// Waits until the connection is up; an error if it failed, closed or took longer than
    /// [`WAIT`].
    pub async fn wait_connected(&self, what: &str) -> anyhow::Result<()> {
        let mut state = self.state.clone();
        let settled = tokio::time::timeout(
            WAIT,
            state.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await
        .is_ok();
        let now = *state.borrow();
        anyhow::ensure!(
            settled && now == RTCPeerConnectionState::Connected,
            "{what}: PeerConnection {now:?}, not connected"
        );
        Ok(())
    }

    /// What arrived from each remote stream so far.
    pub async fn received(&self) -> HashMap<String, Media> {
        self.recorded.lock().await.by_stream.clone()
    }

    /// Polls what arrived every 20 ms until `enough` holds (`Ok`) or `within` passes (`Err`
    /// with what had arrived by then).
    pub async fn wait_for(
        &self,
        within: Duration,
        enough: impl Fn(&HashMap<String, Media>) -> bool,
    ) -> Result<HashMap<String, Media>, HashMap<String, Media>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let received = self.received().await;
            if enough(&received) {
                return Ok(received);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(received);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The stream id of each remote track read so far, in arrival order.
    pub async fn track_streams(&self) -> Vec<String> {
        self.recorded.lock().await.track_streams.clone()
    }

    /// Closes the PeerConnection.
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// The RFC 6464 client-to-mixer audio level header extension.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The Opus and VP8 tracks a peer publishes, with the SSRCs and payload types it offered.
pub struct LocalMedia {
    /// The extension id the offer gave the audio level.
    audio_level_id: Option<u8>,
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    audio_ssrc: u32,
    video_ssrc: u32,
    audio_pt: u8,
    video_pt: u8,
}

impl LocalMedia {
    /// Adds an Opus and a VP8 track (random SSRCs) to `peer` and returns them with the offer,
    /// complete with candidates.
    pub async fn offer(peer: &Peer) -> anyhow::Result<(Self, String)> {
        let (audio_ssrc, video_ssrc) = (rand::random(), rand::random());
        let audio = local_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, 48000, 2, audio_ssrc);
        let video = local_track(RtpCodecKind::Video, MIME_TYPE_VP8, 90000, 0, video_ssrc);
        peer.pc
            .add_track(audio.clone() as Arc<dyn TrackLocal>)
            .await?;
        peer.pc
            .add_track(video.clone() as Arc<dyn TrackLocal>)
            .await?;
        let offer = peer.pc.create_offer(None).await?;
        peer.pc.set_local_description(offer).await?;
        let offer = peer.gathered_description("offer").await?;
        let media = Self {
            audio_level_id: extension_id(&offer, AUDIO_LEVEL_URI),
            audio,
            video,
            audio_ssrc,
            video_ssrc,
            audio_pt: payload_type(&offer, "opus")?,
            video_pt: payload_type(&offer, "VP8")?,
        };
        Ok((media, offer))
    }

    /// Sends the payloads as RTP, one audio and one video packet per `interval`, with sequence
    /// numbers from `first` (a later round of the same streams continues their numbering).
    pub async fn send_from(
        &self,
        first: usize,
        audio: &[Vec<u8>],
        video: &[Vec<u8>],
        interval: Duration,
    ) -> anyhow::Result<()> {
        for n in 0..audio.len().max(video.len()) {
            let i = first + n;
            if let Some(payload) = audio.get(n) {
                let packet = rtp(self.audio_pt, self.audio_ssrc, i, 960, payload, false);
                self.audio.write_rtp(packet).await?;
            }
            if let Some(payload) = video.get(n) {
                let packet = rtp(self.video_pt, self.video_ssrc, i, 3000, payload, true);
                self.video.write_rtp(packet).await?;
            }
            tokio::time::sleep(interval).await;
        }
        Ok(())
    }
}

impl LocalMedia {
    /// Sends `n` Opus packets (20 ms of audio each, one per `interval`) from sequence number
    /// `first`, each carrying `level` as its audio level element: `[0x80 | dBov]` is RFC 6464,
    /// anything longer is a malformed element a hostile publisher might send.
    pub async fn send_audio_levels(
        &self,
        first: usize,
        n: usize,
        interval: Duration,
        level: &[u8],
    ) -> anyhow::Result<()> {
        let id = self
            .audio_level_id
            .ok_or_else(|| anyhow::anyhow!("the offer has no audio level extension"))?;
        for i in first..first + n {
            let mut packet = rtp(
                self.audio_pt,
                self.audio_ssrc,
                i,
                960,
                &[0xfc, 0xff, 0xfe],
                false,
            );
            packet
                .header
                .set_extension(id, bytes::Bytes::copy_from_slice(level))?;
            self.audio.write_rtp(packet).await?;
            tokio::time::sleep(interval).await;
        }
        Ok(())
    }
}

/// The id an SDP's `a=extmap` gives `uri` (first match).
fn extension_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let (id, rest) = line.strip_prefix("a=extmap:")?.split_once(' ')?;
        let id = id.split('/').next()?;
        (rest.split_whitespace().next() == Some(uri))
            .then(|| id.parse().ok())
            .flatten()
    })
}

fn local_track(
    kind: RtpCodecKind,
    mime: &str,
    clock_rate: u32,
    channels: u16,
    ssrc: u32,
) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "local-stream".to_owned(),
        // The same ids for every publisher, as many non-browser clients do: the SFU must keep
        // the forwarded tracks apart.
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

/// The `index`th packet of a stream: sequence number and timestamp (`index` × `ticks`) wrap.
fn rtp(
    pt: u8,
    ssrc: u32,
    index: usize,
    ticks: u32,
    payload: &[u8],
    marker: bool,
) -> rtc::rtp::packet::Packet {
    rtc::rtp::packet::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: index as u16,
            timestamp: (index as u32).wrapping_mul(ticks),
            ssrc,
            marker,
            ..Default::default()
        },
        payload: bytes::Bytes::copy_from_slice(payload),
    }
}

/// The payload type the offer maps to `codec` (first match).
fn payload_type(sdp: &str, codec: &str) -> anyhow::Result<u8> {
    sdp.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("a=rtpmap:")?;
            let (pt, name) = rest.split_once(' ')?;
            name.to_ascii_lowercase()
                .starts_with(&codec.to_ascii_lowercase())
                .then(|| pt.parse().ok())
                .flatten()
        })
        .ok_or_else(|| anyhow::anyhow!("no {codec} in offer:\n{sdp}"))
}

/// The stream ids of an SDP's `a=msid:` lines.
pub fn msid_streams(sdp: &str) -> BTreeSet<String> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=msid:"))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `n` audio and `n` VP8 payloads unique to `tag` and to their index (the first video payload a
/// keyframe, every one a frame start).
pub fn payloads(tag: u8, n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let audio = (0..n)
        .map(|i| {
            let mut p = vec![tag];
            p.extend((i as u32).to_be_bytes());
            p.extend((0..100).map(|j| (i * 7 + j) as u8 ^ tag));
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
            p.push(tag);
            p.extend((i as u32).to_be_bytes());
            p.extend((0..700).map(|j| (i * 13 + j) as u8 ^ tag));
            p
        })
        .collect();
    (audio, video)
}

/// Audio and VP8 payload number `n` of a stream tagged `tag`, every video payload a keyframe
/// (a subscriber that starts receiving mid-stream, e.g. after a failover, needs no PLI).
pub fn keyframe_payloads(tag: u8, n: u32) -> (Vec<u8>, Vec<u8>) {
    let mut audio = vec![tag];
    audio.extend(n.to_be_bytes());
    audio.extend((0..100u32).map(|j| (n + j) as u8 ^ tag));
    // VP8 payload descriptor S=1, PID 0; keyframe tag and start code (RFC 7741 §4.3).
    let mut video = vec![
        0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
    ];
    video.push(tag);
    video.extend(n.to_be_bytes());
    video.extend((0..700u32).map(|j| (n * 13 + j) as u8 ^ tag));
    (audio, video)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_distinct_and_video_starts_with_a_keyframe() {
        let (audio, video) = payloads(7, 300);
        let (other_audio, _) = payloads(8, 300);
        let unique: BTreeSet<&Vec<u8>> = audio.iter().chain(&other_audio).collect();
        assert_eq!(unique.len(), 600);
        assert_eq!(video[0][1] & 1, 0, "P bit 0: keyframe");
        assert!(video[1..].iter().all(|p| p[1] & 1 == 1));
    }

    #[test]
    fn finds_payload_types_and_stream_ids() {
        let sdp = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                   a=msid:alice a0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n\
                   a=msid:bob v0\r\n";
        assert_eq!(payload_type(sdp, "opus").unwrap(), 111);
        assert_eq!(payload_type(sdp, "VP8").unwrap(), 96);
        assert!(payload_type(sdp, "H264").is_err());
        assert_eq!(
            msid_streams(sdp),
            BTreeSet::from(["alice".to_owned(), "bob".to_owned()])
        );
    }
}
