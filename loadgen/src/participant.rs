//! One simulated participant: joins through the target's signaling, publishes and/or
//! subscribes over real ICE/DTLS/SRTP, and counts what it sends and receives.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use mooyaho_net::PacketClass;
use mooyaho_net::dtls::DtlsIdentity;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use webrtc_util::marshal::Marshal;

use super::feedback::{Arrival, ReceiverFeedback, TwccRecorder, extend, transport_sequence};
use super::janus::{self, Janus};
use super::peer::{self, ConnectOptions, LocalIce};
use super::report::JoinPhase;
use super::sdp::{self, Local, RtxMap};
use super::signal::{SfuEvent, Signal};
use super::simulcast;
use super::{LoadConfig, Role, Scenario, Target, Totals, wire};

/// The server side of a run, set up once: a Mooyaho SFU channel, or a Janus VideoRoom.
#[derive(Clone)]
pub(super) enum Backend {
    Mooyaho {
        rest: mooyaho_server_sdk::Mooyaho,
        ws_url: String,
        channel: String,
    },
    Janus {
        janus: Janus,
        room: u64,
    },
}

/// One load run as each simulated participant sees it: the settings, the one DTLS identity
/// every participant presents, the counters it adds to, and the instant the run stops at.
/// Cloning it clones four `Arc`s.
#[derive(Clone)]
pub(crate) struct Run {
    pub(crate) config: Arc<LoadConfig>,
    pub(crate) identity: Arc<DtlsIdentity>,
    pub(crate) totals: Arc<Totals>,
    pub(crate) stop_at: Arc<Mutex<Instant>>,
}

impl Run {
    /// The same run with its own counters (the churn movers are reported apart).
    pub(crate) fn counted_in(&self, totals: Arc<Totals>) -> Self {
        Self {
            totals,
            ..self.clone()
        }
    }

    /// Whether the run has stopped, and if not how long it has left.
    fn remaining(&self) -> Duration {
        let stop = *self.stop_at.lock().expect("lock");
        stop.saturating_duration_since(Instant::now())
    }

    /// Runs participant `name`'s future in a task; a failure is counted and its error kept
    /// (the first ten). Returns whether it succeeded.
    pub(crate) fn spawn_participant(
        &self,
        name: String,
        participant: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> tokio::task::JoinHandle<bool> {
        let totals = self.totals.clone();
        tokio::spawn(async move {
            let result = participant.await;
            if let Err(e) = &result {
                totals.failed.fetch_add(1, Ordering::Relaxed);
                let mut errors = totals.errors.lock().expect("lock");
                if errors.len() < 10 {
                    errors.push(format!("{name}: {e:#}"));
                }
            }
            result.is_ok()
        })
    }
}

impl Backend {
    /// Creates the channel (Mooyaho) or the room (Janus) everyone joins.
    pub(super) async fn open(config: &LoadConfig) -> anyhow::Result<Self> {
        match &config.target {
            Target::Mooyaho => {
                anyhow::ensure!(
                    !config.api_key.is_empty(),
                    "the mooyaho target needs the deployment's REST API key"
                );
                let rest =
                    mooyaho_server_sdk::Mooyaho::new(config.url.as_str(), config.api_key.as_str())?;
                let channel = rest
                    .create_channel(true)
                    .await
                    .context("creating the SFU channel")?;
                let ws_url = format!("{}/websocket", config.url.replacen("http", "ws", 1));
                Ok(Self::Mooyaho {
                    rest,
                    ws_url,
                    channel: channel.id,
                })
            }
            Target::Janus { url } => {
                let janus = Janus::new(url)?;
                janus
                    .info()
                    .await
                    .with_context(|| format!("reaching Janus at {url}"))?;
                let session = janus.session().await?;
                let handle = session.attach().await?;
                let created = session
                    .request(handle, janus::create_room_body(config.publishers))
                    .await;
                // The room outlives this session; the session is only needed to create it.
                let _ = session.destroy().await;
                let room = janus::created_room(&created?)?;
                Ok(Self::Janus { janus, room })
            }
        }
    }

    /// The Mooyaho REST client (for the nodes' load reports).
    pub(super) fn rest(&self) -> Option<&mooyaho_server_sdk::Mooyaho> {
        match self {
            Self::Mooyaho { rest, .. } => Some(rest),
            Self::Janus { .. } => None,
        }
    }

    /// Deletes the channel or destroys the room (best effort: the run's numbers are in).
    pub(super) async fn close(&self) {
        match self {
            Self::Mooyaho { rest, channel, .. } => {
                let _ = rest.delete_channel(channel).await;
            }
            Self::Janus { janus, room } => {
                if let Ok(session) = janus.session().await {
                    if let Ok(handle) = session.attach().await {
                        let _ = session
                            .request(handle, janus::destroy_room_body(*room))
                            .await;
                    }
                    let _ = session.destroy().await;
                }
            }
        }
    }
}

/// Joins, publishes and/or subscribes, then keeps the session alive until the run ends.
pub(super) async fn run(
    run: &Run,
    backend: &Backend,
    name: &str,
    role: Role,
) -> anyhow::Result<()> {
    match backend {
        Backend::Mooyaho {
            rest,
            ws_url,
            channel,
        } => run_mooyaho(run, rest, ws_url, channel, name, role).await,
        Backend::Janus { janus, room } => run_janus(run, janus, *room, name, role).await,
    }
}

async fn run_mooyaho(
    run: &Run,
    rest: &mooyaho_server_sdk::Mooyaho,
    ws_url: &str,
    channel: &str,
    name: &str,
    role: Role,
) -> anyhow::Result<()> {
    let (config, identity, totals) = (&run.config, &run.identity, &run.totals);
    let started = Instant::now();
    let mut signal = Signal::join(ws_url, rest, channel, name).await?;
    let entered = Instant::now();
    let mut tasks = Vec::new();
    let audio = config.scenario == Scenario::Audio;
    let simulcast = config.scenario == Scenario::Simulcast;
    // One stream identity for the whole run, also across a re-publish after `sfuRestart`: the
    // subscribers' receipts and the window count follow it.
    let ssrc: u32 = rand::random();
    // Video is offered with RTX, as browsers do (the node then offers RTX to subscribers);
    // simulcast layers each with its own (the top layer's SSRC is `ssrc`).
    let rtx_ssrc = (!audio && !simulcast).then(rand::random::<u32>);
    let layers = simulcast.then(|| [rand::random(), rand::random(), ssrc]);
    let stream = (audio, ssrc, rtx_ssrc, layers.map(|l| (l, rand::random())));
    let mut publisher = None;
    if role.publish {
        if let Some(layers) = layers {
            totals.simulcast.register(layers);
        }
        let connected = publish(&mut signal, identity, stream).await?;
        totals.negotiated(&connected.srtp);
        if config.scenario == Scenario::Span {
            totals.span.publisher_at(connected.remote);
        }
        let (swap, swaps) = mpsc::unbounded_channel();
        let sent = Stream {
            audio,
            ssrc,
            layers,
        };
        tasks.push(spawn_sender(run, connected, swaps, sent, role));
        publisher = Some(swap);
    }
    let continuity = Arc::new(Mutex::new(Continuity::default()));
    let mut subscription = None;
    // Publishers whose video this subscriber asked at `low` (`simulcast`).
    let mut asked_low = Vec::new();
    if role.subscribe {
        let offer = tokio::time::timeout(Duration::from_secs(20), signal.next_offer())
            .await
            .context("no subscribe offer within 20 s")??;
        let offered = Instant::now();
        let first = Subscription::start(&mut signal, &offer, run, &continuity, false).await?;
        let ms = |from: Instant, to: Instant| to.duration_since(from).as_millis() as u32;
        let phase = JoinPhase {
            signaling: ms(started, entered),
            offer: ms(entered, offered),
            answer: ms(offered, first.answered_at),
            connect: ms(first.answered_at, Instant::now()),
        };
        totals.join_phases.lock().expect("lock").push(phase);
        totals.add_receiver(role.room);
        subscription = Some(first);
        if role.asks_low {
            ask_low(&mut signal, &offer, &mut asked_low, totals).await?;
        }
    }
    joined(totals, started);
    // Until the run ends: answer re-offers (publishers joining later), and on `sfuRestart` do
    // what the SDKs do — drop both transports, publish again, take the new room's offer on a
    // new transport (new ICE credentials, new DTLS handshake with the new node).
    loop {
        let remaining = run.remaining();
        if remaining.is_zero() {
            break;
        }
        let event = match tokio::time::timeout(
            remaining.min(Duration::from_millis(500)),
            signal.next_event(),
        )
        .await
        {
            Ok(event) => event?,
            Err(_) => continue,
        };
        match event {
            SfuEvent::Offer(offer) if role.subscribe => match &subscription {
                Some(current) => {
                    current.reoffered(&offer);
                    let answer = sdp::subscribe_answer(
                        &current.local(&identity.fingerprint),
                        &offer,
                        ConnectOptions::ICE_LITE_SFU.answer_setup.attribute(),
                    );
                    signal
                        .send(&json!({ "type": "answer", "isSFU": true, "sdp": answer }))
                        .await?;
                    if role.asks_low {
                        ask_low(&mut signal, &offer, &mut asked_low, totals).await?;
                    }
                }
                None => {
                    match Subscription::start(&mut signal, &offer, run, &continuity, true).await {
                        Ok(next) => {
                            totals.failover.resubscribed.fetch_add(1, Ordering::Relaxed);
                            subscription = Some(next);
                        }
                        Err(e) => totals.failover.failed(name, "new subscription", &e),
                    }
                }
            },
            SfuEvent::Offer(_) => {}
            SfuEvent::Restart => {
                totals.failover.restarts.fetch_add(1, Ordering::Relaxed);
                if let Some(old) = subscription.take() {
                    tasks.push(old.detach());
                }
                if let Some(swap) = &publisher {
                    let _ = swap.send(None);
                    match republish(&mut signal, identity, stream, &run.stop_at).await {
                        Ok(connected) => {
                            totals.negotiated(&connected.srtp);
                            let _ = swap.send(Some(connected));
                            totals.failover.republished.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => totals.failover.failed(name, "publishing again", &e),
                    }
                }
            }
        }
    }
    if let Some(last) = subscription {
        tasks.push(last.task);
    }
    for task in tasks {
        task.await??;
    }
    if role.subscribe {
        let continuity = *continuity.lock().expect("lock");
        totals
            .failover
            .continuity
            .lock()
            .expect("lock")
            .push(continuity);
    }
    signal.close().await;
    Ok(())
}

/// Asks the video of every publisher in `offer` not asked yet at `low` (`setSubscription`,
/// acknowledged), as a viewer watching thumbnails does.
async fn ask_low(
    signal: &mut Signal,
    offer: &str,
    asked: &mut Vec<String>,
    totals: &Totals,
) -> anyhow::Result<()> {
    for publisher in sdp::video_publishers(offer) {
        if asked.contains(&publisher) {
            continue;
        }
        let reply = signal
            .request(json!({ "type": "setSubscription", "sessionId": publisher, "video": "low" }))
            .await?;
        anyhow::ensure!(reply["type"] == "ack", "setSubscription refused: {reply}");
        totals.simulcast.low_wishes.fetch_add(1, Ordering::Relaxed);
        asked.push(publisher);
    }
    Ok(())
}

/// What a publisher offers: `(audio, ssrc, rtx ssrc, simulcast layers' and their RTX SSRCs)`.
type Offered = (bool, u32, Option<u32>, Option<([u32; 3], [u32; 3])>);

/// Publishes one track (Opus for `audio`, else VP8 with RTX, or VP8 in three simulcast
/// layers) and connects its transport.
async fn publish(
    signal: &mut Signal,
    identity: &DtlsIdentity,
    (audio, ssrc, rtx_ssrc, layers): Offered,
) -> anyhow::Result<peer::Connected> {
    let ice = LocalIce::random();
    let local = ice.local(&identity.fingerprint);
    let offer = match layers {
        Some((layers, rtx)) => sdp::publish_offer_simulcast(&local, layers, rtx),
        None => sdp::publish_offer(&local, audio, ssrc, rtx_ssrc),
    };
    let reply = signal
        .request(json!({ "type": "call", "isSFU": true, "sdp": offer }))
        .await?;
    let answer = reply["sdp"]
        .as_str()
        .with_context(|| format!("publish refused: {reply}"))?;
    let remote = sdp::parse_remote(answer);
    peer::connect(identity, &ice, &remote).await
}

/// Publishes again after `sfuRestart`, as the SDKs do: a refusal (no healthy node yet) is
/// retried after a second while the run lasts, up to [`REPUBLISH_ATTEMPTS`] times.
async fn republish(
    signal: &mut Signal,
    identity: &DtlsIdentity,
    offered: Offered,
    stop_at: &Mutex<Instant>,
) -> anyhow::Result<peer::Connected> {
    let mut attempt = 1;
    loop {
        match publish(signal, identity, offered).await {
            Ok(connected) => return Ok(connected),
            Err(e) if attempt >= REPUBLISH_ATTEMPTS => return Err(e),
            Err(_) => {}
        }
        attempt += 1;
        let retry_at = Instant::now() + Duration::from_secs(1);
        if retry_at >= *stop_at.lock().expect("lock") {
            anyhow::bail!("the run ended before a new publish was answered");
        }
        tokio::time::sleep_until(retry_at.into()).await;
    }
}

/// How often a publisher tries to publish again after one `sfuRestart`.
const REPUBLISH_ATTEMPTS: u32 = 5;

/// A subscriber's receiving transport to one room's node, and the task reading it.
pub(crate) struct Subscription {
    ice: LocalIce,
    /// RTX payload types and SSRCs of the offers on this transport (re-offers add tracks).
    rtx: Arc<Mutex<RtxMap>>,
    /// Tells the task to stop (`sfuRestart`: this room is gone).
    detached: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// When the node acknowledged our answer (the start of ICE and DTLS).
    answered_at: Instant,
}

impl Subscription {
    /// Answers `offer` (waiting for the ack: the node must know our fingerprint before our
    /// ClientHello), connects with fresh ICE credentials and starts receiving.
    /// `after_restart`: this transport replaces one an `sfuRestart` dropped.
    pub(crate) async fn start(
        signal: &mut Signal,
        offer: &str,
        run: &Run,
        continuity: &Arc<Mutex<Continuity>>,
        after_restart: bool,
    ) -> anyhow::Result<Self> {
        let ice = LocalIce::random();
        let answer = sdp::subscribe_answer(
            &ice.local(&run.identity.fingerprint),
            offer,
            ConnectOptions::ICE_LITE_SFU.answer_setup.attribute(),
        );
        let ack = signal
            .request(json!({ "type": "answer", "isSFU": true, "sdp": answer }))
            .await?;
        anyhow::ensure!(ack["type"] == "ack", "subscribe answer refused: {ack}");
        let answered_at = Instant::now();
        let remote = sdp::parse_remote(offer);
        let connected = peer::connect(&run.identity, &ice, &remote).await?;
        run.totals.negotiated(&connected.srtp);
        let detached = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rtx = Arc::new(Mutex::new(RtxMap::of(offer)));
        let reception = Reception {
            loss_percent: run.config.loss_percent,
            twcc_id: sdp::extension_id(offer, sdp::TRANSPORT_CC_URI),
            after_restart,
            detached: detached.clone(),
            continuity: continuity.clone(),
            rtx: rtx.clone(),
        };
        let task = spawn_receiver(run, connected, reception);
        Ok(Self {
            ice,
            rtx,
            detached,
            task,
            answered_at,
        })
    }

    /// Takes note of a re-offer's tracks (their RTX SSRCs) before it is answered.
    fn reoffered(&self, offer: &str) {
        self.rtx.lock().expect("lock").extend(offer);
    }

    /// Our side of the SDP for re-offers on this transport.
    fn local<'a>(&'a self, fingerprint: &'a str) -> Local<'a> {
        self.ice.local(fingerprint)
    }

    /// Stops receiving on this transport; its task (to await) ends within one wake-up.
    pub(crate) fn detach(self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        self.detached.store(true, Ordering::Relaxed);
        self.task
    }
}

pub(crate) fn joined(totals: &Totals, started: Instant) {
    totals
        .join_ms
        .lock()
        .expect("lock")
        .push(started.elapsed().as_millis() as u32);
    totals.joined.fetch_add(1, Ordering::Relaxed);
}

/// The same participant against Janus's VideoRoom: a session per participant, a publisher
/// handle (our offer, Janus's answer, our candidate trickled) and a subscriber handle (Janus's
/// offer for every publisher's streams, our answer with our candidate). Janus does not push
/// re-offers as publishers arrive, so a subscriber waits until the run's publishers publish
/// and subscribes to all of them at once.
async fn run_janus(
    run: &Run,
    janus: &Janus,
    room: u64,
    name: &str,
    role: Role,
) -> anyhow::Result<()> {
    let (config, identity, totals) = (&run.config, &run.identity, &run.totals);
    let started = Instant::now();
    let session = janus.session().await?;
    let mut tasks = Vec::new();
    let mut own_feed = None;
    if role.publish {
        let ice = LocalIce::random();
        let handle = session.attach().await?;
        let audio = config.scenario == Scenario::Audio;
        let ssrc: u32 = rand::random();
        // No candidate yet: ours is on the address family and interface of Janus's, which
        // only its answer tells; it is trickled right after.
        let offer = sdp::publish_offer(&ice.local(&identity.fingerprint), audio, ssrc, None);
        let joined = session
            .message(
                handle,
                janus::publish_body(room, name),
                Some(janus::jsep("offer", &offer)),
            )
            .await
            .context("publishing")?;
        own_feed = Some(janus::joined_id(&joined.data)?);
        let answer = joined.sdp.context("Janus joined without a JSEP answer")?;
        let remote = sdp::parse_remote(&answer);
        let socket = bind_toward(&remote).await?;
        session.trickle(handle, socket.local_addr()?).await?;
        let options = ConnectOptions::full_agent(true);
        let connected = peer::connect_on(identity, &ice, &remote, socket, options)
            .await
            .context("publisher transport to Janus")?;
        totals.negotiated(&connected.srtp);
        // Janus has no failover: the transport is never replaced.
        let (_, swaps) = mpsc::unbounded_channel();
        let sent = Stream {
            audio,
            ssrc,
            layers: None,
        };
        tasks.push(spawn_sender(run, connected, swaps, sent, role));
    }
    // Everyone else who publishes in this run (meeting: the other participants).
    let expected = config.publishers - usize::from(own_feed.is_some());
    if role.subscribe && expected > 0 {
        let feeds = wait_for_publishers(&session, room, expected, own_feed).await?;
        let ice = LocalIce::random();
        let handle = session.attach().await?;
        let attached = session
            .message(handle, janus::subscribe_body(room, &feeds), None)
            .await
            .context("subscribing")?;
        let offer = attached
            .sdp
            .context("Janus attached without a JSEP offer")?;
        let remote = sdp::parse_remote(&offer);
        let socket = bind_toward(&remote).await?;
        let options = ConnectOptions::full_agent(false);
        let answer = sdp::subscribe_answer(
            &Local {
                candidate: Some(socket.local_addr()?),
                ..ice.local(&identity.fingerprint)
            },
            &offer,
            options.answer_setup.attribute(),
        );
        session
            .message(
                handle,
                janus::start_body(),
                Some(janus::jsep("answer", &answer)),
            )
            .await
            .context("starting the subscription")?;
        let connected = peer::connect_on(identity, &ice, &remote, socket, options)
            .await
            .context("subscriber transport to Janus")?;
        totals.negotiated(&connected.srtp);
        totals.add_receiver(role.room);
        let reception = Reception {
            loss_percent: config.loss_percent,
            twcc_id: sdp::extension_id(&offer, sdp::TRANSPORT_CC_URI),
            after_restart: false,
            detached: Arc::default(),
            continuity: Arc::default(),
            rtx: Arc::new(Mutex::new(RtxMap::of(&offer))),
        };
        tasks.push(spawn_receiver(run, connected, reception));
    }
    joined(totals, started);
    // Janus drops sessions without traffic for its session_timeout (60 s by default).
    let mut next_keepalive = Instant::now() + Duration::from_secs(15);
    loop {
        let remaining = run.remaining();
        if remaining.is_zero() {
            break;
        }
        tokio::time::sleep(remaining.min(Duration::from_millis(500))).await;
        if Instant::now() >= next_keepalive {
            session.keepalive().await?;
            next_keepalive = Instant::now() + Duration::from_secs(15);
        }
    }
    for task in tasks {
        task.await??;
    }
    session.destroy().await?;
    Ok(())
}

/// A UDP socket on the local address family and interface of the remote's candidate.
async fn bind_toward(remote: &sdp::Remote) -> anyhow::Result<Arc<UdpSocket>> {
    let target = remote
        .candidate
        .context("Janus SDP has no usable candidate")?;
    let socket = UdpSocket::bind(SocketAddr::new(target.ip(), 0))
        .await
        .with_context(|| format!("binding a UDP socket toward {target}"))?;
    Ok(Arc::new(socket))
}

/// Polls the room until `expected` participants other than `own` publish (30 s at most, as
/// long as the run waits for joins).
async fn wait_for_publishers(
    session: &janus::Session,
    room: u64,
    expected: usize,
    own: Option<u64>,
) -> anyhow::Result<Vec<u64>> {
    let handle = session.attach().await?;
    let feeds = list_publishers(session, handle, room, expected, own).await;
    // Only for listing: a subscriber's Janus state is its subscribe handle, as in a browser.
    let detached = session.detach(handle).await;
    let feeds = feeds?;
    detached?;
    Ok(feeds)
}

async fn list_publishers(
    session: &janus::Session,
    handle: u64,
    room: u64,
    expected: usize,
    own: Option<u64>,
) -> anyhow::Result<Vec<u64>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = session
            .request(handle, janus::list_participants_body(room))
            .await?;
        let feeds: Vec<u64> = janus::publishing(&list)?
            .into_iter()
            .filter(|id| Some(*id) != own)
            .collect();
        if feeds.len() >= expected {
            return Ok(feeds);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {expected} publishers in the Janus room after 30 s",
            feeds.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads what the server sent to a publisher, without blocking: answers ICE checks (Janus, a
/// full ICE agent, checks for consent) and reports whether its RTCP asked for a keyframe
/// (PLI/FIR), as a browser's encoder would honour it.
fn drain_inbound(
    socket: &UdpSocket,
    answer_checks: Option<&LocalIce>,
    srtp: &mut mooyaho_net::srtp::SrtpSession,
    buf: &mut [u8],
) -> anyhow::Result<bool> {
    let mut keyframe_requested = false;
    loop {
        let (n, from) = match socket.try_recv_from(buf) {
            Ok(received) => received,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(keyframe_requested),
            Err(e) => return Err(e.into()),
        };
        match PacketClass::of(&buf[..n]) {
            PacketClass::Stun => {
                if let Some(response) =
                    answer_checks.and_then(|local| peer::answer_check(&buf[..n], from, local))
                {
                    let _ = socket.try_send_to(&response, from);
                }
            }
            PacketClass::Rtcp => {
                if let Ok(len) = srtp.unprotect_rtcp_in_place(&mut buf[..n]) {
                    keyframe_requested |= wire::requests_keyframe(&buf[..len]);
                }
            }
            _ => {}
        }
    }
}

/// Starts a publisher's sending task on `connected` (see [`send_stream`]); when it ends, the
/// packets it sent in the window are noted for the receipts.
fn spawn_sender(
    run: &Run,
    connected: peer::Connected,
    swaps: mpsc::UnboundedReceiver<Option<peer::Connected>>,
    stream: Stream,
    role: Role,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let run = run.clone();
    tokio::spawn(async move {
        let mut windows: Vec<WindowCount> = (0..stream.sends().len())
            .map(|_| WindowCount::default())
            .collect();
        let result = send_stream(connected, swaps, &run, stream, &mut windows).await;
        if stream.layers.is_some() {
            for (layer, window) in windows.iter().enumerate() {
                run.totals.simulcast.sent(layer, window.sent);
            }
        } else {
            run.totals
                .window_sent
                .lock()
                .expect("lock")
                .push((windows[0].sent, role));
        }
        result
    })
}

/// Starts a subscriber's receiving task on `connected` (see [`receive_media`]).
fn spawn_receiver(
    run: &Run,
    connected: peer::Connected,
    reception: Reception,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let run = run.clone();
    tokio::spawn(async move { receive_media(connected, reception, &run).await })
}

/// What a publisher sends: one Opus or VP8 stream, or VP8 in simulcast layers.
#[derive(Clone, Copy)]
struct Stream {
    audio: bool,
    ssrc: u32,
    /// Simulcast: the layers' SSRCs, lowest first.
    layers: Option<[u32; 3]>,
}

impl Stream {
    /// Each RTP stream sent, with how often: `(ssrc, every n-th tick)`.
    fn sends(&self) -> Vec<(u32, u64)> {
        match self.layers {
            Some(layers) => layers.into_iter().zip(simulcast::EVERY).collect(),
            None => vec![(self.ssrc, 1)],
        }
    }
}

/// The transport a publisher sends on, with its own consent and report timers.
struct SendTransport {
    connected: peer::Connected,
    next_consent: Instant,
    next_report: Instant,
}

impl SendTransport {
    fn new(connected: peer::Connected) -> Self {
        Self {
            connected,
            next_consent: Instant::now(),
            next_report: Instant::now() + Duration::from_secs(1),
        }
    }
}

/// Packets a publisher sent while the window was open; each carries its index in the window.
#[derive(Default)]
struct WindowCount {
    sent: u64,
}

impl WindowCount {
    /// The payload's window mark of the next packet: its index, or [`OUTSIDE_WINDOW`].
    fn mark(&mut self, measuring: bool) -> u32 {
        if !measuring {
            return OUTSIDE_WINDOW;
        }
        self.sent += 1;
        (self.sent - 1).min(u64::from(OUTSIDE_WINDOW - 1)) as u32
    }
}

/// The window mark of a packet sent outside the measurement window.
const OUTSIDE_WINDOW: u32 = u32::MAX;

/// Sends at the configured rate until the run stops (simulcast layers at their share of it,
/// each counted in its own `windows` entry). `swaps` replaces the transport: `None` when the
/// node is gone (`sfuRestart`; nothing is sent meanwhile), then the new node's.
async fn send_stream(
    connected: peer::Connected,
    mut swaps: mpsc::UnboundedReceiver<Option<peer::Connected>>,
    run: &Run,
    stream: Stream,
    windows: &mut [WindowCount],
) -> anyhow::Result<()> {
    let Run {
        config,
        totals,
        stop_at,
        ..
    } = run;
    let audio = stream.audio;
    let sends = stream.sends();
    let mut transport = Some(SendTransport::new(connected));
    let mut inbound = vec![0u8; 2048];
    let mut keyframe_requested = false;
    let interval = Duration::from_secs_f64(1.0 / f64::from(config.pps.max(1)));
    let keyframe_every = (config.pps as u64 * 2).max(1); // a keyframe every ~2 s
    let burst = if config.scenario == Scenario::Livestream {
        15
    } else {
        1
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seqs: Vec<u16> = sends.iter().map(|_| rand::random()).collect();
    let mut packet = vec![0u8; config.size.max(32) + 32];
    let mut tick: u64 = 0;
    // Per stream: packets and octets (for its sender reports), and whether a keyframe is due
    // (a layer not sent on this tick sends it on its next one).
    let mut counts = vec![(0u32, 0u32); sends.len()];
    let mut keyframe_due = vec![false; sends.len()];
    loop {
        ticker.tick().await;
        if Instant::now() >= *stop_at.lock().expect("lock") {
            return Ok(());
        }
        while let Ok(next) = swaps.try_recv() {
            transport = next.map(SendTransport::new);
            // A new node's subscribers start with a keyframe, as a browser's new encoder does.
            keyframe_requested = transport.is_some();
        }
        let Some(SendTransport {
            connected,
            next_consent,
            next_report,
        }) = transport.as_mut()
        else {
            tick += 1;
            continue;
        };
        let peer::Connected {
            socket,
            remote,
            srtp,
            check,
            answer_checks,
        } = connected;
        let remote = *remote;
        // Periodic keyframes, and one at the next tick whenever the server asks (a new
        // subscriber's PLI), so joins do not wait for the period.
        if keyframe_requested || tick.is_multiple_of(keyframe_every) {
            keyframe_due.fill(true);
        }
        for (i, &(ssrc, every)) in sends.iter().enumerate() {
            if !tick.is_multiple_of(every) {
                continue;
            }
            let keyframe = std::mem::take(&mut keyframe_due[i]);
            let count = if keyframe { burst } else { 1 };
            for k in 0..count {
                let mark = windows[i].mark(totals.measuring.load(Ordering::Relaxed));
                let len = write_rtp(
                    &mut packet,
                    RtpFields {
                        audio,
                        ssrc,
                        seq: seqs[i],
                        tick,
                        keyframe: keyframe && k == 0,
                        mark,
                    },
                    config.size,
                );
                seqs[i] = seqs[i].wrapping_add(1);
                let len = srtp
                    .protect_rtp_in_place(&mut packet, len)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                socket.send_to(&packet[..len], remote).await?;
                totals.sent.fetch_add(1, Ordering::Relaxed);
                let (packets, octets) = &mut counts[i];
                (*packets, *octets) = (packets.wrapping_add(1), octets.wrapping_add(len as u32));
            }
        }
        tick += 1;
        if Instant::now() >= *next_report {
            // A sender report a second per stream, as a browser sends (lip sync and RTT at the
            // receiver).
            let rtp_time = if audio { tick * 960 } else { tick * 3000 } as u32;
            for (&(ssrc, _), &(packets, octets)) in sends.iter().zip(&counts) {
                let report = crate::raw::sender_report(ssrc, ntp_now(), rtp_time, packets, octets)?;
                let protected = srtp
                    .protect_rtcp(&report)
                    .map_err(|e| anyhow::anyhow!("SRTCP protect: {e}"))?;
                socket.send_to(&protected, remote).await?;
            }
            *next_report = Instant::now() + Duration::from_secs(1);
        }
        if Instant::now() >= *next_consent {
            socket.send_to(check, remote).await?; // consent freshness (RFC 7675)
            *next_consent = Instant::now() + Duration::from_secs(2);
        }
        keyframe_requested = drain_inbound(socket, answer_checks.as_ref(), srtp, &mut inbound)?;
    }
}

/// Now as a 64-bit NTP timestamp (seconds since 1900 . fraction).
fn ntp_now() -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    ((since_unix.as_secs() + UNIX_TO_NTP) << 32) | fraction
}

/// What varies between the synthetic RTP packets of one stream.
struct RtpFields {
    audio: bool,
    ssrc: u32,
    seq: u16,
    tick: u64,
    keyframe: bool,
    /// The packet's index in the measurement window, or [`OUTSIDE_WINDOW`].
    mark: u32,
}

/// Writes a packet: RTP header, (video) VP8 descriptor, then the payload the subscriber reads
/// back — send time (8 bytes), window mark (4), the publisher's SSRC (4) — padded to `size`.
fn write_rtp(buf: &mut [u8], fields: RtpFields, size: usize) -> usize {
    let RtpFields {
        audio,
        ssrc,
        seq,
        tick,
        keyframe,
        mark,
    } = fields;
    let (pt, ts) = if audio {
        (111u8, (tick * 960) as u32)
    } else {
        (96u8, (tick * 3000) as u32)
    };
    buf[0] = 0x80;
    buf[1] = pt | 0x80; // marker: every packet ends a frame
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let mut at = 12;
    if !audio {
        // VP8 descriptor (S=1, PID 0) and frame tag: P bit 0 on keyframes (RFC 7741).
        buf[at..at + 4].copy_from_slice(&[0x10, if keyframe { 0x00 } else { 0x01 }, 0, 0]);
        at += 4;
    }
    let sent_at = wire::now_ns();
    buf[at..at + 8].copy_from_slice(&sent_at.to_be_bytes());
    buf[at + 8..at + 12].copy_from_slice(&mark.to_be_bytes());
    buf[at + 12..at + 16].copy_from_slice(&ssrc.to_be_bytes());
    let len = size.max(at + PAYLOAD_HEADER);
    buf[at + PAYLOAD_HEADER..len].fill(0x5a);
    len
}

/// Send time, window mark and publisher SSRC at the start of every synthetic payload.
const PAYLOAD_HEADER: usize = 16;

/// Which packets sent in the window one subscriber received, per publisher stream: one bit per
/// window index, so a duplicate (a retransmission) counts once.
#[derive(Default)]
struct WindowReceipts {
    streams: std::collections::HashMap<u32, Vec<u64>>,
}

impl WindowReceipts {
    fn record(&mut self, publisher: u32, mark: u32) {
        if mark == OUTSIDE_WINDOW {
            return;
        }
        let bits = self.streams.entry(publisher).or_default();
        let (word, bit) = (mark as usize / 64, mark % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        bits[word] |= 1 << bit;
    }

    /// Distinct window packets per publisher stream.
    fn per_stream(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.streams
            .iter()
            .map(|(&ssrc, bits)| (ssrc, bits.iter().map(|w| u64::from(w.count_ones())).sum()))
    }

    fn distinct(&self) -> u64 {
        self.streams
            .values()
            .flatten()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }
}

/// How one subscriber transport receives.
struct Reception {
    /// Share of arriving packets dropped on purpose (a lossy downlink), percent.
    loss_percent: f64,
    /// The transport-wide-cc extension id, when the offer mapped it.
    twcc_id: Option<u8>,
    /// This transport replaced one an `sfuRestart` dropped.
    after_restart: bool,
    /// Set when the subscriber drops this transport.
    detached: Arc<std::sync::atomic::AtomicBool>,
    /// The subscriber's media continuity across a node kill (merged in when the task ends).
    continuity: Arc<Mutex<Continuity>>,
    /// How to unwrap retransmissions on RTX SSRCs (updated as re-offers add tracks).
    rtx: Arc<Mutex<RtxMap>>,
}

/// A subscriber's media across a node kill: when its last packet before the kill arrived, and
/// when the first SRTP-verified packet on a transport made after `sfuRestart` did (wall-clock
/// nanoseconds, kernel receive stamps where available).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Continuity {
    pub(crate) last_before_kill_ns: Option<u64>,
    pub(crate) first_after_kill_ns: Option<u64>,
}

impl Continuity {
    /// Notes a verified packet that arrived at `arrived_ns`; `killed_ns` is when the node was
    /// killed (none yet: every packet is "before"). A packet arriving after the kill on the old
    /// transport was in flight already: it is neither.
    pub(crate) fn on_packet(
        &mut self,
        arrived_ns: u64,
        killed_ns: Option<u64>,
        after_restart: bool,
    ) {
        match killed_ns {
            Some(killed) if arrived_ns > killed => {
                if after_restart {
                    self.first_after_kill_ns = Some(
                        self.first_after_kill_ns
                            .map_or(arrived_ns, |first| first.min(arrived_ns)),
                    );
                }
            }
            _ => {
                self.last_before_kill_ns = self.last_before_kill_ns.max(Some(arrived_ns));
            }
        }
    }

    /// Both transports' view in one.
    fn merge(&mut self, other: Self) {
        self.last_before_kill_ns = self.last_before_kill_ns.max(other.last_before_kill_ns);
        self.first_after_kill_ns = match (self.first_after_kill_ns, other.first_after_kill_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The media gap: last packet before the kill to the first one after it.
    pub(crate) fn gap_ns(&self) -> Option<u64> {
        Some(
            self.first_after_kill_ns?
                .saturating_sub(self.last_before_kill_ns?),
        )
    }
}

/// Receives until the run stops (or the transport is dropped), as a browser would: drops
/// `loss_percent` of arriving packets (a lossy downlink), NACKs missing video packets, sends
/// receiver reports, and transport-cc feedback when the offer mapped that extension.
async fn receive_media(
    connected: peer::Connected,
    reception: Reception,
    run: &Run,
) -> anyhow::Result<()> {
    let Run {
        totals, stop_at, ..
    } = run;
    let peer::Connected {
        socket,
        remote,
        mut srtp,
        check,
        answer_checks,
    } = connected;
    let Reception {
        loss_percent,
        twcc_id,
        after_restart,
        detached,
        continuity: shared_continuity,
        rtx: shared_rtx,
    } = reception;
    let mut rtx = shared_rtx.lock().expect("lock").clone();
    let mut continuity = Continuity::default();
    wire::enable_receive_timestamps(&socket)?;
    let mut buf = vec![0u8; 2048];
    let mut streams: std::collections::HashMap<u32, (u64, u64, u64)> = Default::default();
    let mut receipts = WindowReceipts::default();
    let mut samples = Vec::new();
    let mut next_consent = Instant::now();
    let mut feedback = ReceiverFeedback::default();
    let mut twcc = twcc_id.map(|id| (id, TwccRecorder::new(Instant::now())));
    let mut twcc_media_ssrc = 0;
    let own_ssrc: u32 = rand::random();
    let drop_share = (loss_percent / 100.0).clamp(0.0, 1.0);
    // With induced loss, wake every 20 ms so NACKs go out in time; transport-cc feedback goes
    // every 100 ms; receiver reports need only 1 s.
    let wake = Duration::from_millis(match (drop_share > 0.0, twcc.is_some()) {
        (true, _) => 20,
        (false, true) => 100,
        (false, false) => 200,
    });
    loop {
        let stop = *stop_at.lock().expect("lock");
        let remaining = stop.saturating_duration_since(Instant::now());
        if remaining.is_zero() || detached.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() >= next_consent {
            socket.send_to(&check, remote).await?;
            next_consent = Instant::now() + Duration::from_secs(2);
        }
        send_feedback(&mut feedback, own_ssrc, &socket, remote, &mut srtp, totals).await?;
        if let Some((_, recorder)) = &mut twcc
            && let Some(report) = recorder.due_feedback(Instant::now(), own_ssrc, twcc_media_ssrc)
        {
            let packet = report
                .marshal()
                .map_err(|e| anyhow::anyhow!("transport-cc feedback: {e}"))?;
            let protected = srtp
                .protect_rtcp(&packet)
                .map_err(|e| anyhow::anyhow!("SRTCP protect: {e}"))?;
            socket.send_to(&protected, remote).await?;
            totals.twcc_feedback.fetch_add(1, Ordering::Relaxed);
        }
        match tokio::time::timeout(remaining.min(wake), socket.readable()).await {
            Ok(ready) => ready?,
            Err(_) => continue,
        }
        // A re-offer may have added tracks (and their RTX SSRCs) since the last wake-up.
        if let Ok(latest) = shared_rtx.try_lock()
            && *latest != rtx
        {
            rtx = latest.clone();
        }
        // Everything waiting, in one wake-up: under load the queue batches by itself.
        loop {
            let (n, from, arrived) = match wire::try_recv_stamped(&socket, &mut buf) {
                Ok(received) => received,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            };
            if let Some(local) = &answer_checks
                && PacketClass::of(&buf[..n]) == PacketClass::Stun
            {
                if let Some(response) = peer::answer_check(&buf[..n], from, local) {
                    socket.send_to(&response, from).await?;
                }
                continue;
            }
            if PacketClass::of(&buf[..n]) != PacketClass::Rtp {
                continue; // STUN responses, RTCP
            }
            // Lost on the way, before SRTP saw it: its resend is then no replay.
            if drop_share > 0.0 && rand::random::<f64>() < drop_share {
                totals.dropped_by_loss.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Ok(len) = srtp.unprotect_rtp_in_place(&mut buf[..n]) else {
                totals.auth_failures.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let packet = &buf[..len];
            let Some((ssrc, seq, payload_at, audio)) = parse_rtp(packet) else {
                continue;
            };
            // A retransmission on an RTX SSRC (RFC 4588): the original sequence number leads
            // the payload; the packet stands for that one of its media SSRC.
            let (ssrc, seq, payload_at) = match rtx.media_ssrc(packet[1] & 0x7f, ssrc) {
                Some(media) => {
                    let Some(osn) = packet.get(payload_at..payload_at + 2) else {
                        continue;
                    };
                    totals.rtx_received.fetch_add(1, Ordering::Relaxed);
                    (media, u16::from_be_bytes([osn[0], osn[1]]), payload_at + 2)
                }
                None => (ssrc, seq, payload_at),
            };
            let arrived = arrived.unwrap_or_else(wire::now_ns);
            let killed = totals.killed_at_ns.load(Ordering::Relaxed);
            continuity.on_packet(arrived, (killed > 0).then_some(killed), after_restart);
            if let Some((id, recorder)) = &mut twcc
                && let Some(transport_seq) = transport_sequence(packet, *id)
            {
                // The kernel's arrival time, not when this busy task got to the packet: the
                // node's delay-based estimate must see the network's queue, not the generator's.
                let waited = Duration::from_nanos(wire::now_ns().saturating_sub(arrived));
                let at = Instant::now()
                    .checked_sub(waited)
                    .unwrap_or_else(Instant::now);
                recorder.on_packet(at, transport_seq);
                twcc_media_ssrc = ssrc;
            }
            if feedback.on_packet(Instant::now(), ssrc, seq, !audio) == Arrival::Recovered {
                totals.recovered.fetch_add(1, Ordering::Relaxed);
            }
            totals.received.fetch_add(1, Ordering::Relaxed);
            let measuring = totals.measuring.load(Ordering::Relaxed);
            if measuring {
                totals.received_in_window.fetch_add(1, Ordering::Relaxed);
            }
            // Loss per stream from sequence gaps (extended across wraparound).
            let entry = streams
                .entry(ssrc)
                .or_insert_with(|| (u64::from(seq), u64::from(seq), 0));
            let ext = extend(entry.1, seq);
            entry.1 = entry.1.max(ext);
            entry.2 += 1;
            let at = payload_at + if audio { 0 } else { 4 };
            if let Some(tail) = packet.get(at + 8..at + PAYLOAD_HEADER) {
                let mark = u32::from_be_bytes(tail[..4].try_into().expect("4 bytes"));
                let publisher = u32::from_be_bytes(tail[4..].try_into().expect("4 bytes"));
                receipts.record(publisher, mark);
            }
            if measuring && let Some(stamp) = packet.get(at..at + 8) {
                let sent = u64::from_be_bytes(stamp.try_into().expect("8 bytes"));
                samples.push((arrived.saturating_sub(sent) / 1000) as u32);
            }
        }
    }
    for (first, last, received) in streams.values() {
        let expected = last - first + 1;
        totals.expected.fetch_add(expected, Ordering::Relaxed);
        totals
            .lost
            .fetch_add(expected.saturating_sub(*received), Ordering::Relaxed);
    }
    totals
        .window_received
        .fetch_add(receipts.distinct(), Ordering::Relaxed);
    if run.config.scenario == Scenario::Simulcast {
        totals.simulcast.received(receipts.per_stream());
    }
    if run.config.scenario == Scenario::Span {
        totals.span.subscriber_samples(remote, &samples);
    }
    totals.latency_us.lock().expect("lock").extend(samples);
    totals
        .unrecovered
        .fetch_add(feedback.unrecovered(), Ordering::Relaxed);
    shared_continuity.lock().expect("lock").merge(continuity);
    Ok(())
}

/// `(ssrc, seq, payload offset, audio)` of a plain RTP packet.
/// Sends the NACKs and receiver reports `feedback` has due, SRTCP-protected.
async fn send_feedback(
    feedback: &mut ReceiverFeedback,
    own_ssrc: u32,
    socket: &UdpSocket,
    remote: SocketAddr,
    srtp: &mut mooyaho_net::srtp::SrtpSession,
    totals: &Totals,
) -> anyhow::Result<()> {
    let now = Instant::now();
    let mut packets = Vec::new();
    for (media_ssrc, seqs) in feedback.due_nacks(now) {
        totals
            .nacked
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
        packets.push(crate::raw::nack(own_ssrc, media_ssrc, &seqs)?);
    }
    for block in feedback.due_reports(now) {
        totals.receiver_reports.fetch_add(1, Ordering::Relaxed);
        packets.push(crate::raw::receiver_report(
            own_ssrc,
            block.ssrc,
            block.highest,
            block.total_lost,
            block.fraction_lost,
        )?);
    }
    for packet in packets {
        let protected = srtp
            .protect_rtcp(&packet)
            .map_err(|e| anyhow::anyhow!("SRTCP protect: {e}"))?;
        socket.send_to(&protected, remote).await?;
    }
    Ok(())
}

fn parse_rtp(p: &[u8]) -> Option<(u32, u16, usize, bool)> {
    if p.len() < 12 {
        return None;
    }
    let cc = usize::from(p[0] & 0x0f);
    let mut at = 12 + cc * 4;
    if p[0] & 0x10 != 0 {
        let words = usize::from(u16::from_be_bytes([*p.get(at + 2)?, *p.get(at + 3)?]));
        at += 4 + words * 4;
    }
    let seq = u16::from_be_bytes([p[2], p[3]]);
    let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
    Some((ssrc, seq, at, p[1] & 0x7f == 111))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuity_spans_the_kill_from_the_last_packet_before_to_the_first_on_a_new_transport() {
        let mut old = Continuity::default();
        old.on_packet(100, None, false);
        old.on_packet(250, None, false);
        old.on_packet(240, Some(1000), false); // reordered: the latest arrival counts
        // In flight on the old transport when the node died: neither before nor after.
        old.on_packet(1010, Some(1000), false);
        assert_eq!(old.last_before_kill_ns, Some(250));
        assert_eq!((old.first_after_kill_ns, old.gap_ns()), (None, None));

        let mut new = Continuity::default();
        new.on_packet(3500, Some(1000), true);
        new.on_packet(3400, Some(1000), true); // kernel stamps may come out of order
        new.on_packet(3600, Some(1000), true);
        let mut subscriber = Continuity::default();
        subscriber.merge(old);
        subscriber.merge(new);
        assert_eq!(subscriber.first_after_kill_ns, Some(3400));
        assert_eq!(subscriber.gap_ns(), Some(3400 - 250));
        // A later transport (a second restart) never moves the first recovery later.
        let mut later = Continuity::default();
        later.on_packet(9000, Some(1000), true);
        subscriber.merge(later);
        assert_eq!(subscriber.gap_ns(), Some(3150));
        // Media only after the kill: recovered, but no gap to measure.
        assert_eq!(new.gap_ns(), None);
    }

    #[test]
    fn window_marks_count_only_packets_sent_while_measuring() {
        let mut window = WindowCount::default();
        assert_eq!(window.mark(false), OUTSIDE_WINDOW);
        assert_eq!(window.mark(true), 0);
        assert_eq!(window.mark(true), 1);
        assert_eq!(window.mark(false), OUTSIDE_WINDOW);
        assert_eq!(window.sent, 2);
    }

    #[test]
    fn receipts_count_distinct_window_packets_per_publisher() {
        let mut receipts = WindowReceipts::default();
        for mark in [0, 1, 1, 63, 64, 200, OUTSIDE_WINDOW] {
            receipts.record(7, mark);
        }
        receipts.record(9, 1); // the same index from another publisher is another packet
        assert_eq!(receipts.distinct(), 6);
    }

    #[test]
    fn the_payload_carries_send_time_window_mark_and_publisher() {
        let mut buf = vec![0u8; 64];
        for audio in [true, false] {
            let fields = RtpFields {
                audio,
                ssrc: 0xdead_beef,
                seq: 9,
                tick: 3,
                keyframe: true,
                mark: 41,
            };
            let len = write_rtp(&mut buf, fields, 32);
            assert_eq!(
                len, 32,
                "the smallest --size still holds the payload header"
            );
            let (ssrc, seq, at, is_audio) = parse_rtp(&buf[..len]).unwrap();
            assert_eq!((ssrc, seq, is_audio), (0xdead_beef, 9, audio));
            let at = at + if audio { 0 } else { 4 };
            assert_eq!(buf[at + 8..at + 12], 41u32.to_be_bytes());
            assert_eq!(buf[at + 12..at + 16], 0xdead_beefu32.to_be_bytes());
        }
    }
}
