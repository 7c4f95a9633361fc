//! A client of the WebSocket API in an SFU channel, with media from the independent `webrtc` crate
//! (0.21): one publish PeerConnection (Opus + VP8, `call {isSFU}` → `answered {isSFU}`) and one
//! subscribe PeerConnection that a background task renegotiates on every `called {isSFU}` offer
//! (answered with `answer {isSFU}`). Received RTP payloads are recorded per remote stream id,
//! which the SFU sets to the publishing session's id.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState,
};
use webrtc::runtime::{Runtime, default_runtime};

use crate::support::{Rest, Ws};

const WAIT: Duration = Duration::from_secs(10);

/// Payloads received from one remote publisher.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Media {
    pub audio: Vec<Vec<u8>>,
    pub video: Vec<Vec<u8>>,
}

type ByStream = Arc<Mutex<HashMap<String, Media>>>;

struct Handler {
    runtime: Arc<dyn Runtime>,
    gathered: watch::Sender<bool>,
    connected: watch::Sender<RTCPeerConnectionState>,
    received: ByStream,
    /// (stream id, track id) already being read, so a renegotiation does not read a track twice.
    reading: Arc<Mutex<BTreeSet<(String, String)>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.connected.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        let reading = self.reading.clone();
        self.runtime.spawn(Box::pin(async move {
            let kind = track.kind().await;
            let stream = track.stream_id().await;
            let key = (stream.clone(), track.track_id().await);
            if std::env::var("SFU_CLIENT_DEBUG").is_ok() {
                eprintln!("on_track {key:?} {kind}");
            }
            if !reading.lock().await.insert(key) {
                return;
            }
            received.lock().await.entry(stream.clone()).or_default();
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        let mut received = received.lock().await;
                        let media = received.entry(stream.clone()).or_default();
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

struct Pc {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    received: ByStream,
}

async fn peer_connection() -> anyhow::Result<Pc> {
    let runtime = default_runtime().expect("tokio runtime feature");
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let (gathered_tx, gathered) = watch::channel(false);
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let received = ByStream::default();
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            runtime: runtime.clone(),
            gathered: gathered_tx,
            connected: state_tx,
            received: received.clone(),
            reading: Arc::default(),
        }))
        .with_runtime(runtime)
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await?;
    Ok(Pc {
        pc: Arc::new(pc),
        gathered,
        state,
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
    clock: u32,
    ch: u16,
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
                clock_rate: clock,
                channels: ch,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )))
}

/// The latest subscribe negotiation as the node acknowledged it.
#[derive(Clone, Debug, Default)]
pub struct SubscribeState {
    /// Offers received (`called {isSFU}`).
    pub offers: usize,
    /// The most m-lines any offer had.
    pub max_m_lines: usize,
    /// Stream ids (publishing sessions) in the last offer whose answer the server acknowledged.
    pub acked_streams: BTreeSet<String>,
    /// Answers sent so far (the latest is `sub-{answers}`).
    pub answers: u64,
    /// Refusals of our answers. The node applies an answer to its latest offer, so an answer to
    /// an offer that a newer one superseded in flight is refused; only a refused latest answer
    /// is a failure.
    pub errors: Vec<(u64, Value)>,
    /// Offers that could not be applied locally.
    pub local_errors: Vec<String>,
}

/// One client: a WebSocket session in an SFU channel with a publish and a subscribe PC.
pub struct SfuClient {
    pub id: String,
    pub name: String,
    out: mpsc::UnboundedSender<Message>,
    inbox: mpsc::UnboundedReceiver<Value>,
    subscribe: Pc,
    publish: Option<Publish>,
    pub sub_state: watch::Receiver<SubscribeState>,
    tasks: Vec<JoinHandle<()>>,
    next_request: u64,
}

struct Publish {
    pc: Pc,
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    audio_ssrc: u32,
    video_ssrc: u32,
    audio_pt: u8,
    video_pt: u8,
}

impl SfuClient {
    /// Connects to `ws_url`, gets integrated through `rest` as `name`, enters the SFU channel
    /// (asserting `enterSuccess {sfuEnabled:true}`) and starts answering the node's offers.
    pub async fn join(ws_url: &str, rest: &Rest, channel: &str, name: &str) -> Self {
        let mut ws = Ws::connect(ws_url).await;
        rest.integrate(&ws.id, json!({ "id": name, "name": name }))
            .await;
        ws.expect("integrated").await;
        ws.send(json!({ "type": "enter", "channel": channel }))
            .await;
        let success = ws.expect("enterSuccess").await;
        assert_eq!(success["channel"], channel, "{success}");
        assert_eq!(success["sfuEnabled"], true, "not an SFU channel: {success}");
        let id = ws.id.clone();
        let (sink, mut stream) = ws.into_stream().split();

        let subscribe = peer_connection().await.expect("subscribe PC");
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (offers_tx, mut offers_rx) = mpsc::unbounded_channel::<String>();
        let (state_tx, sub_state) = watch::channel(SubscribeState::default());
        let state_tx = Arc::new(state_tx);
        // Request id of each answer sent → the stream ids its offer carried.
        let pending: Arc<std::sync::Mutex<HashMap<String, BTreeSet<String>>>> = Arc::default();

        let writer = tokio::spawn(async move {
            let mut sink = sink;
            while let Some(message) = out_rx.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let reader = {
            let (state_tx, pending) = (state_tx.clone(), pending.clone());
            tokio::spawn(async move {
                while let Some(Ok(frame)) = stream.next().await {
                    let Message::Text(text) = frame else { continue };
                    let Ok(message) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if message["type"] == "called" && message["isSFU"] == true {
                        let sdp = message["sdp"].as_str().unwrap_or_default().to_owned();
                        let _ = offers_tx.send(sdp);
                        continue;
                    }
                    if let Some(request) = message["requestId"].as_str()
                        && request.starts_with("sub-")
                    {
                        let streams = pending.lock().unwrap().remove(request);
                        state_tx.send_modify(|s| {
                            if message["type"] == "ack" {
                                s.acked_streams = streams.unwrap_or_default();
                            } else {
                                let n = request["sub-".len()..].parse().unwrap_or(0);
                                s.errors.push((n, message.clone()));
                            }
                        });
                        continue;
                    }
                    if inbox_tx.send(message).is_err() {
                        break;
                    }
                }
            })
        };

        // Offers are applied one at a time, in order.
        let negotiator = {
            let (pc, mut gathered, out) = (
                subscribe.pc.clone(),
                subscribe.gathered.clone(),
                out.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(offer) = offers_rx.recv().await {
                    let m_lines = offer.lines().filter(|l| l.starts_with("m=")).count();
                    state_tx.send_modify(|s| {
                        s.offers += 1;
                        s.max_m_lines = s.max_m_lines.max(m_lines);
                    });
                    if std::env::var("SFU_CLIENT_DEBUG").is_ok() {
                        eprintln!("offer:\n{offer}");
                    }
                    let streams = msid_streams(&offer);
                    let result = async {
                        pc.set_remote_description(RTCSessionDescription::offer(offer)?)
                            .await?;
                        let answer = pc.create_answer(None).await?;
                        pc.set_local_description(answer).await?;
                        wait_true(&mut gathered, "subscriber ICE gathering").await?;
                        let answer = pc
                            .local_description()
                            .await
                            .ok_or_else(|| anyhow::anyhow!("no local description"))?;
                        anyhow::Ok(answer.sdp)
                    }
                    .await;
                    match result {
                        Ok(sdp) => {
                            n += 1;
                            let request = format!("sub-{n}");
                            pending.lock().unwrap().insert(request.clone(), streams);
                            state_tx.send_modify(|s| s.answers = n);
                            let answer = json!({
                                "type": "answer", "isSFU": true, "sdp": sdp, "requestId": request,
                            });
                            let _ = out.send(Message::Text(answer.to_string().into()));
                        }
                        Err(e) => state_tx.send_modify(|s| s.local_errors.push(e.to_string())),
                    }
                }
            })
        };

        Self {
            id,
            name: name.to_owned(),
            out,
            inbox,
            subscribe,
            publish: None,
            sub_state,
            tasks: vec![writer, reader, negotiator],
            next_request: 0,
        }
    }

    pub fn send(&self, message: Value) {
        let _ = self.out.send(Message::Text(message.to_string().into()));
    }

    /// The next message from the server other than SFU offers and answer acks (10 s at most).
    pub async fn next(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no message within {WAIT:?}", self.name))
            .unwrap_or_else(|| panic!("{}: socket closed", self.name))
    }

    /// Skips messages until one of `kind` arrives.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let mut seen = Vec::new();
        loop {
            let message = self.next().await;
            if message["type"] == kind {
                return message;
            }
            seen.push(message);
            assert!(seen.len() < 100, "{}: no `{kind}`: {seen:?}", self.name);
        }
    }

    /// Sends a request with a `requestId`; returns the reply that carries it.
    pub async fn request(&mut self, mut message: Value) -> Value {
        self.next_request += 1;
        let id = format!("req-{}", self.next_request);
        message["requestId"] = json!(id);
        self.send(message);
        let mut seen = Vec::new();
        loop {
            let reply = self.next().await;
            if reply["requestId"] == json!(id) {
                return reply;
            }
            seen.push(reply);
            assert!(
                seen.len() < 100,
                "{}: no reply to {id}: {seen:?}",
                self.name
            );
        }
    }

    /// Publishes Opus + VP8 on a new PeerConnection: `call {isSFU}` → `answered {isSFU}`.
    pub async fn publish(&mut self) {
        let mut pc = peer_connection().await.expect("publish PC");
        let (audio_ssrc, video_ssrc) = (rand::random(), rand::random());
        let audio = local_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, 48000, 2, audio_ssrc);
        let video = local_track(RtpCodecKind::Video, MIME_TYPE_VP8, 90000, 0, video_ssrc);
        pc.pc
            .add_track(audio.clone() as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        pc.pc
            .add_track(video.clone() as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        let offer = pc.pc.create_offer(None).await.unwrap();
        pc.pc.set_local_description(offer).await.unwrap();
        wait_true(&mut pc.gathered, "publisher ICE gathering")
            .await
            .unwrap();
        let offer = pc.pc.local_description().await.unwrap().sdp;
        let (audio_pt, video_pt) = (payload_type(&offer, "opus"), payload_type(&offer, "VP8"));
        let reply = self
            .request(json!({ "type": "call", "isSFU": true, "sdp": offer }))
            .await;
        assert_eq!(
            reply["type"], "answered",
            "{}: publish refused: {reply}",
            self.name
        );
        assert_eq!(reply["isSFU"], true, "{reply}");
        let answer = reply["sdp"].as_str().expect("answer sdp").to_owned();
        pc.pc
            .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();
        self.publish = Some(Publish {
            pc,
            audio,
            video,
            audio_ssrc,
            video_ssrc,
            audio_pt,
            video_pt,
        });
    }

    /// Waits until the publish PC is connected.
    pub async fn publish_connected(&self) {
        let publish = self.publish.as_ref().expect("published");
        wait_connected(&publish.pc.state, &format!("{} publish", self.name)).await;
    }

    /// Waits until the subscribe PC is connected and the node acknowledged an answer to an offer
    /// that carries every one of `streams`.
    pub async fn subscribed_to(&self, streams: &[&str]) {
        let mut state = self.sub_state.clone();
        let wanted: BTreeSet<String> = streams.iter().map(|s| (*s).to_owned()).collect();
        let done =
            tokio::time::timeout(WAIT, state.wait_for(|s| wanted.is_subset(&s.acked_streams)))
                .await;
        let state = self.sub_state.borrow().clone();
        assert!(
            done.is_ok(),
            "{}: subscribe offers never covered {wanted:?}: {state:?}",
            self.name
        );
        assert!(
            state.errors.iter().all(|(n, _)| *n < state.answers),
            "{}: answers refused: {state:?}",
            self.name
        );
        assert!(
            state.local_errors.is_empty(),
            "{}: offers unusable: {state:?}",
            self.name
        );
        wait_connected(&self.subscribe.state, &format!("{} subscribe", self.name)).await;
    }

    /// Waits until the node acknowledged an answer to an offer carrying exactly `streams`.
    pub async fn subscribed_exactly(&self, streams: &[&str]) {
        let mut state = self.sub_state.clone();
        let wanted: BTreeSet<String> = streams.iter().map(|s| (*s).to_owned()).collect();
        let done = tokio::time::timeout(WAIT, state.wait_for(|s| s.acked_streams == wanted))
            .await
            .is_ok();
        let state = self.sub_state.borrow().clone();
        assert!(
            done,
            "{}: no acknowledged offer with exactly {wanted:?}: {state:?}",
            self.name
        );
    }

    /// Sends the payloads as RTP, one audio and one video packet per `interval`.
    pub async fn send_media(&self, audio: &[Vec<u8>], video: &[Vec<u8>], interval: Duration) {
        self.send_media_from(0, audio, video, interval).await;
    }

    /// [`Self::send_media`] with sequence numbers from `first` (a later round of the same
    /// streams continues their numbering).
    pub async fn send_media_from(
        &self,
        first: usize,
        audio: &[Vec<u8>],
        video: &[Vec<u8>],
        interval: Duration,
    ) {
        let p = self.publish.as_ref().expect("published");
        for n in 0..audio.len().max(video.len()) {
            let (i, n) = (first + n, n);
            if let Some(payload) = audio.get(n) {
                p.audio
                    .write_rtp(packet(
                        p.audio_pt,
                        p.audio_ssrc,
                        i as u16,
                        i as u32 * 960,
                        payload,
                        false,
                    ))
                    .await
                    .unwrap();
            }
            if let Some(payload) = video.get(n) {
                p.video
                    .write_rtp(packet(
                        p.video_pt,
                        p.video_ssrc,
                        i as u16,
                        i as u32 * 3000,
                        payload,
                        true,
                    ))
                    .await
                    .unwrap();
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// What arrived from each remote stream so far.
    pub async fn received(&self) -> HashMap<String, Media> {
        self.subscribe.received.lock().await.clone()
    }

    /// Waits until at least `n` audio and `n` video payloads arrived from each of `streams`.
    pub async fn wait_for(
        &self,
        streams: &[&str],
        n: usize,
        within: Duration,
    ) -> HashMap<String, Media> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let received = self.received().await;
            let enough = streams.iter().all(|s| {
                received
                    .get(*s)
                    .is_some_and(|m| m.audio.len() >= n && m.video.len() >= n)
            });
            if enough {
                return received;
            }
            if tokio::time::Instant::now() > deadline {
                let counts: Vec<_> = received
                    .iter()
                    .map(|(s, m)| (s.clone(), m.audio.len(), m.video.len()))
                    .collect();
                panic!(
                    "{}: wanted {n} audio + {n} video payloads from each of {streams:?}; got {counts:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drops the WebSocket without a close handshake; the PeerConnections stay up.
    pub fn drop_socket(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    /// Closes both PeerConnections and the socket.
    pub async fn close(mut self) {
        self.drop_socket();
        let _ = self.subscribe.pc.close().await;
        if let Some(p) = self.publish.take() {
            let _ = p.pc.pc.close().await;
        }
    }
}

impl Drop for SfuClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn wait_connected(state: &watch::Receiver<RTCPeerConnectionState>, what: &str) {
    let mut state = state.clone();
    let result = tokio::time::timeout(
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
    assert!(
        result && now == RTCPeerConnectionState::Connected,
        "{what}: PeerConnection {now:?}, not connected"
    );
}

/// The stream ids of an SDP's `a=msid:` lines.
pub fn msid_streams(sdp: &str) -> BTreeSet<String> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=msid:"))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
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

/// `n` audio and `n` VP8 payloads unique to `tag` (the first video payload a keyframe).
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
