//! A client of the WebSocket API in an SFU channel, with media from the independent `webrtc` crate
//! (see [`crate::peer`]): one publish peer (Opus + VP8, `call {isSFU}` → `answered {isSFU}`) and
//! one subscribe peer that a background task renegotiates on every `called {isSFU}` offer
//! (answered with `answer {isSFU}`). Received RTP payloads are recorded per remote stream id,
//! which the SFU sets to the publishing session's id.
//!
//! On `sfuRestart {channel}` (the channel's media moved to another room: its node failed or
//! restarted) the client does what the browser SDK does, with no help from the test: it drops
//! both PeerConnections, publishes again on a new one if it was publishing, and takes the new
//! subscribe offers on a new subscribe PeerConnection.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::peer::{LocalMedia, Media, Peer, WAIT, msid_streams};
use crate::ws::{Rest, Ws};

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
    /// `sfuRestart` messages received.
    pub restarts: usize,
    /// Restarts handled: new PeerConnections made and, if publishing, the new publish answered.
    pub recoveries: usize,
    /// Why a restart's new publish failed (the server's `error`, or a local failure).
    pub restart_errors: Vec<String>,
}

/// What the negotiator task does next, in the order the server said it.
enum Negotiation {
    /// Apply a subscribe offer.
    Offer(String),
    /// `sfuRestart`: new PeerConnections, publish again.
    Restart,
}

/// The publish PeerConnection and its tracks.
struct Published {
    peer: Peer,
    media: LocalMedia,
}

/// The current publish side, replaced on a restart.
type PublishSlot = Arc<std::sync::Mutex<Option<Arc<Published>>>>;
/// The current subscribe PeerConnection, replaced on a restart.
type SubscribeSlot = Arc<std::sync::Mutex<Arc<Peer>>>;
/// Rewrites each subscribe offer before the peer applies it (e.g. its candidates, to route the
/// subscriber's media through a relay the test controls).
pub type OfferFilter = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// One client: a WebSocket session in an SFU channel with a publish and a subscribe PC.
pub struct SfuClient {
    pub id: String,
    /// The session's resume token (`connected`/`reuseIdSuccess`).
    pub token: String,
    pub name: String,
    out: mpsc::UnboundedSender<Message>,
    inbox: mpsc::UnboundedReceiver<Value>,
    /// Shared with the negotiator task, which applies the node's offers to it.
    subscribe: SubscribeSlot,
    publish: PublishSlot,
    pub sub_state: watch::Receiver<SubscribeState>,
    tasks: Vec<JoinHandle<()>>,
    next_request: u64,
    offer_filter: Option<OfferFilter>,
}

/// One socket's worth of a client: its writer, its reader (routing SFU offers, restarts and
/// replies) and the negotiator that applies offers to the current PeerConnections.
struct Session {
    out: mpsc::UnboundedSender<Message>,
    inbox: mpsc::UnboundedReceiver<Value>,
    sub_state: watch::Receiver<SubscribeState>,
    tasks: Vec<JoinHandle<()>>,
}

impl Session {
    fn spawn(
        ws: Ws,
        subscribe: SubscribeSlot,
        publish: PublishSlot,
        offer_filter: Option<OfferFilter>,
    ) -> Self {
        let (sink, mut stream) = ws.into_stream().split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (offers_tx, mut offers_rx) = mpsc::unbounded_channel::<Negotiation>();
        let (publish_replies_tx, mut publish_replies) = mpsc::unbounded_channel::<Value>();
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
                        let _ = offers_tx.send(Negotiation::Offer(sdp));
                        continue;
                    }
                    if message["type"] == "sfuRestart" {
                        state_tx.send_modify(|s| s.restarts += 1);
                        let _ = offers_tx.send(Negotiation::Restart);
                        continue;
                    }
                    if message["requestId"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("pub-"))
                    {
                        let _ = publish_replies_tx.send(message);
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

        // Offers (and restarts) are applied one at a time, in order.
        let negotiator = {
            let (subscribe, publish, out) = (subscribe.clone(), publish.clone(), out.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut republished = 0u64;
                while let Some(next) = offers_rx.recv().await {
                    let offer = match next {
                        Negotiation::Offer(offer) => match &offer_filter {
                            Some(filter) => filter(&offer),
                            None => offer,
                        },
                        Negotiation::Restart => {
                            republished += 1;
                            let request = format!("pub-{republished}");
                            let outcome =
                                restart(&subscribe, &publish, &out, &mut publish_replies, &request)
                                    .await;
                            state_tx.send_modify(|s| {
                                s.acked_streams.clear();
                                match outcome {
                                    Ok(()) => s.recoveries += 1,
                                    Err(e) => s.restart_errors.push(e),
                                }
                            });
                            continue;
                        }
                    };
                    let peer = subscribe.lock().unwrap().clone();
                    let m_lines = offer.lines().filter(|l| l.starts_with("m=")).count();
                    state_tx.send_modify(|s| {
                        s.offers += 1;
                        s.max_m_lines = s.max_m_lines.max(m_lines);
                    });
                    if std::env::var("SFU_CLIENT_DEBUG").is_ok() {
                        eprintln!("offer:\n{offer}");
                    }
                    let streams = msid_streams(&offer);
                    match peer.answer(offer).await {
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
            out,
            inbox,
            sub_state,
            tasks: vec![writer, reader, negotiator],
        }
    }
}

impl SfuClient {
    /// Connects to `ws_url`, gets integrated through `rest` as `name`, enters the SFU channel
    /// (asserting `enterSuccess {sfuEnabled:true}`) and starts answering the node's offers.
    pub async fn join(ws_url: &str, rest: &Rest, channel: &str, name: &str) -> Self {
        Self::join_filtered(ws_url, rest, channel, name, None).await
    }

    /// [`join`](Self::join), with every subscribe offer passed through `offer_filter` first.
    pub async fn join_filtered(
        ws_url: &str,
        rest: &Rest,
        channel: &str,
        name: &str,
        offer_filter: Option<OfferFilter>,
    ) -> Self {
        let (ws, success) = Ws::enter(ws_url, rest, channel, name).await;
        assert_eq!(success["sfuEnabled"], true, "not an SFU channel: {success}");
        let id = ws.id.clone();
        let token = ws.token.clone();
        let subscribe: SubscribeSlot = Arc::new(std::sync::Mutex::new(Arc::new(
            Peer::new().await.expect("subscribe peer"),
        )));
        let publish: PublishSlot = Arc::default();
        let session = Session::spawn(ws, subscribe.clone(), publish.clone(), offer_filter.clone());
        Self {
            id,
            token,
            name: name.to_owned(),
            out: session.out,
            inbox: session.inbox,
            subscribe,
            publish,
            sub_state: session.sub_state,
            tasks: session.tasks,
            next_request: 0,
            offer_filter,
        }
    }

    /// Resumes this session on another signaling instance (`reuseId` with the session's token),
    /// as the browser SDK does after its socket dropped: a new socket, the same session, the same
    /// PeerConnections. The old socket's tasks stop first.
    pub async fn resume(&mut self, ws_url: &str) {
        self.drop_socket();
        let mut ws = Ws::connect(ws_url).await;
        let reply = ws
            .request(json!({ "type": "reuseId", "id": self.id, "token": self.token }))
            .await;
        assert_eq!(
            reply["type"], "reuseIdSuccess",
            "{}: resume refused: {reply}",
            self.name
        );
        self.token = reply["token"].as_str().expect("a new token").to_owned();
        ws.id = self.id.clone();
        let session = Session::spawn(
            ws,
            self.subscribe.clone(),
            self.publish.clone(),
            self.offer_filter.clone(),
        );
        self.out = session.out;
        self.inbox = session.inbox;
        self.sub_state = session.sub_state;
        self.tasks = session.tasks;
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

    /// Publishes Opus + VP8 on a new peer: `call {isSFU}` → `answered {isSFU}`.
    pub async fn publish(&mut self) {
        let peer = Peer::new().await.expect("publish peer");
        let (media, offer) = LocalMedia::offer(&peer).await.expect("publish offer");
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
        peer.apply_answer(answer).await.expect("publish answer");
        *self.publish.lock().unwrap() = Some(Arc::new(Published { peer, media }));
    }

    fn published(&self) -> Arc<Published> {
        let published = self.publish.lock().unwrap().clone();
        published.unwrap_or_else(|| panic!("{}: not published", self.name))
    }

    fn subscriber(&self) -> Arc<Peer> {
        self.subscribe.lock().unwrap().clone()
    }

    /// Waits until the publish PC is connected.
    pub async fn publish_connected(&self) {
        let what = format!("{} publish", self.name);
        self.published().peer.wait_connected(&what).await.unwrap();
    }

    /// Sends one audio and one video payload every `interval` for as long as the returned task
    /// runs, on whichever publish PeerConnection is current (a restart's new one included;
    /// sequence numbers start again on a new one). Payloads are
    /// [`crate::peer::keyframe_payloads`], so a subscriber that joins late decodes at once.
    pub fn stream_media(&self, tag: u8, interval: Duration) -> JoinHandle<()> {
        let publish = self.publish.clone();
        tokio::spawn(async move {
            let mut current: Option<Arc<Published>> = None;
            let (mut first, mut n) = (0usize, 0u32);
            loop {
                let now = publish.lock().unwrap().clone();
                if let Some(now) = now {
                    if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &now)) {
                        current = Some(now);
                        first = 0;
                    }
                    let media = &current.as_ref().expect("just set").media;
                    let (audio, video) = crate::peer::keyframe_payloads(tag, n);
                    let sent = media.send_from(first, &[audio], &[video], interval).await;
                    if sent.is_err() {
                        // The PeerConnection was closed by a restart: the next one takes over.
                        tokio::time::sleep(interval).await;
                    }
                    first += 1;
                    n += 1;
                } else {
                    tokio::time::sleep(interval).await;
                }
            }
        })
    }

    /// Waits until the subscribe PC is connected and the node acknowledged an answer to an offer
    /// that carries every one of `streams`.
    pub async fn subscribed_to(&self, streams: &[&str]) {
        let mut state = self.sub_state.clone();
        let wanted: BTreeSet<String> = streams.iter().map(|s| (*s).to_owned()).collect();
        // `wait_for` returns a read guard on the state: dropped here (`is_ok`), never held
        // across the awaits below, or the negotiator task's next state update blocks its
        // runtime thread for good (the hang of `tests/cascade.rs::through_signaling`).
        let done =
            tokio::time::timeout(WAIT, state.wait_for(|s| wanted.is_subset(&s.acked_streams)))
                .await
                .is_ok_and(|guard| guard.is_ok());
        let state = self.sub_state.borrow().clone();
        assert!(
            done,
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
        let what = format!("{} subscribe", self.name);
        self.subscriber().wait_connected(&what).await.unwrap();
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
        let published = self.published();
        let sent = published
            .media
            .send_from(first, audio, video, interval)
            .await;
        sent.unwrap_or_else(|e| panic!("{}: sending media: {e}", self.name));
    }

    /// Sends `n` audio packets (one per `interval`) carrying `level` as their audio level
    /// element (see [`LocalMedia::send_audio_levels`]).
    pub async fn send_audio_levels(
        &self,
        first: usize,
        n: usize,
        interval: Duration,
        level: &[u8],
    ) {
        let published = self.published();
        let sent = published
            .media
            .send_audio_levels(first, n, interval, level)
            .await;
        sent.unwrap_or_else(|e| panic!("{}: sending audio: {e}", self.name));
    }

    /// What arrived from each remote stream so far.
    pub async fn received(&self) -> HashMap<String, Media> {
        self.subscriber().received().await
    }

    /// Waits until at least `n` audio and `n` video payloads arrived from each of `streams`.
    pub async fn wait_for(
        &self,
        streams: &[&str],
        n: usize,
        within: Duration,
    ) -> HashMap<String, Media> {
        let enough = |received: &HashMap<String, Media>| {
            streams.iter().all(|s| {
                received
                    .get(*s)
                    .is_some_and(|m| m.audio.len() >= n && m.video.len() >= n)
            })
        };
        self.subscriber()
            .wait_for(within, enough)
            .await
            .unwrap_or_else(|received| {
                let counts: Vec<_> = received
                    .iter()
                    .map(|(s, m)| (s.clone(), m.audio.len(), m.video.len()))
                    .collect();
                panic!(
                    "{}: wanted {n} audio + {n} video payloads from each of {streams:?}; got {counts:?}",
                    self.name
                )
            })
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
        self.subscriber().close().await;
        let published = self.publish.lock().unwrap().take();
        if let Some(published) = published {
            published.peer.close().await;
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

/// Handles `sfuRestart`: a new subscribe PeerConnection for the offers that follow, and, if
/// publishing, a new publish PeerConnection offered with request id `request` (its reply comes
/// through `replies`). The old PeerConnections are closed.
async fn restart(
    subscribe: &SubscribeSlot,
    publish: &PublishSlot,
    out: &mpsc::UnboundedSender<Message>,
    replies: &mut mpsc::UnboundedReceiver<Value>,
    request: &str,
) -> Result<(), String> {
    let fresh = Arc::new(Peer::new().await.map_err(|e| e.to_string())?);
    let old = std::mem::replace(&mut *subscribe.lock().unwrap(), fresh);
    old.close().await;
    let was_publishing = publish.lock().unwrap().clone();
    let Some(old) = was_publishing else {
        return Ok(());
    };
    old.peer.close().await;
    let peer = Peer::new().await.map_err(|e| e.to_string())?;
    let (media, offer) = LocalMedia::offer(&peer).await.map_err(|e| e.to_string())?;
    let call = json!({ "type": "call", "isSFU": true, "sdp": offer, "requestId": request });
    let _ = out.send(Message::Text(call.to_string().into()));
    let reply = loop {
        let reply = tokio::time::timeout(WAIT, replies.recv())
            .await
            .map_err(|_| format!("no reply to the new publish {request}"))?
            .ok_or("socket closed")?;
        if reply["requestId"] == request {
            break reply;
        }
    };
    if reply["type"] != "answered" {
        return Err(format!("new publish refused: {reply}"));
    }
    let answer = reply["sdp"].as_str().unwrap_or_default().to_owned();
    peer.apply_answer(answer).await.map_err(|e| e.to_string())?;
    *publish.lock().unwrap() = Some(Arc::new(Published { peer, media }));
    Ok(())
}
