//! The domain test harness (the service composed as `state.rs` does, over the embedded store
//! wrapped to count store round trips, with a recorder of its events) and the tests that cross
//! concepts. Each concept's own tests are in its file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::mpsc;

use super::events::recording::Recorder;
use super::events::{DomainEvent, Emitted, Events, Recipient};
use super::hub::{Hub, Outgoing};
use super::ids::{ChannelId, ConnectionId, InstanceId, SessionId, SfuServerId};
use super::model::{
    CallState, ChannelRecord, NewSfuServer, SessionRecord, SessionRoute, SessionUpdate,
    SfuServerRecord, SfuSpan, Takeover, TokenHash,
};
use super::ports::{ChannelStore, SessionStore, SfuRegistry, StoreError};
use super::{ConnectOptions, Connection, Ports, Signaling, SignalingConfig};
use crate::bus::InProcessBus;
use crate::delivery::WireDelivery;
use crate::metrics::Metrics;
use crate::protocol::ServerMessage;
use crate::store::EmbeddedStore;

/// A store call as a [`StoreHook`] sees it: the session it is about, for the calls tests hook.
#[derive(Clone, Copy, Debug)]
pub(super) enum StoreCall<'a> {
    /// `SessionStore::session`.
    Session(&'a SessionId),
    /// `SessionStore::retire_session`.
    RetireSession(&'a SessionId),
    /// `SessionStore::sessions`.
    Sessions(&'a [SessionId]),
    /// `SessionStore::routes`.
    Routes(&'a [SessionId]),
    /// Any other method.
    Other,
}

/// What a test wants done around every call of a [`HookedStore`] (both default to nothing).
#[async_trait]
pub(super) trait StoreHook: Send + Sync {
    /// Before the call reaches the embedded store.
    async fn before(&self, _inner: &EmbeddedStore, _call: StoreCall<'_>) {}
    /// After it returned (its result is handed back unchanged).
    async fn after(&self, _inner: &EmbeddedStore, _call: StoreCall<'_>) {}
}

/// The embedded store with a test's hook around every call: the one delegating store of the
/// domain tests ([`CountingStore`] here; `session.rs` races a resume against an expiry).
#[derive(Debug)]
pub(super) struct HookedStore<H> {
    pub(super) inner: EmbeddedStore,
    pub(super) hook: H,
}

impl<H: StoreHook> HookedStore<H> {
    pub(super) fn new(hook: H) -> Self {
        Self {
            inner: EmbeddedStore::in_memory(),
            hook,
        }
    }

    async fn run<T>(&self, call: StoreCall<'_>, method: impl Future<Output = T>) -> T {
        self.hook.before(&self.inner, call).await;
        let result = method.await;
        self.hook.after(&self.inner, call).await;
        result
    }
}

#[async_trait]
impl<H: StoreHook> ChannelStore for HookedStore<H> {
    async fn create_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        self.run(StoreCall::Other, self.inner.create_channel(channel))
            .await
    }
    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        self.run(StoreCall::Other, self.inner.channel(id)).await
    }
    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.run(StoreCall::Other, self.inner.channels()).await
    }
    async fn place_channel(
        &self,
        id: &ChannelId,
        server: SfuServerId,
        room: &str,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        self.run(StoreCall::Other, self.inner.place_channel(id, server, room))
            .await
    }
    async fn unplace_channel(&self, id: &ChannelId, room: &str) -> Result<bool, StoreError> {
        self.run(StoreCall::Other, self.inner.unplace_channel(id, room))
            .await
    }
    async fn add_channel_span(
        &self,
        id: &ChannelId,
        first_room: &str,
        span: &SfuSpan,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let method = self.inner.add_channel_span(id, first_room, span);
        self.run(StoreCall::Other, method).await
    }
    async fn remove_channel_span(
        &self,
        id: &ChannelId,
        span: &SfuSpan,
    ) -> Result<bool, StoreError> {
        self.run(StoreCall::Other, self.inner.remove_channel_span(id, span))
            .await
    }
    async fn delete_channel(&self, id: &ChannelId) -> Result<Option<Vec<SessionId>>, StoreError> {
        self.run(StoreCall::Other, self.inner.delete_channel(id))
            .await
    }
    async fn set_member(
        &self,
        channel: &ChannelId,
        session: &SessionId,
        member: bool,
    ) -> Result<bool, StoreError> {
        let method = self.inner.set_member(channel, session, member);
        self.run(StoreCall::Other, method).await
    }
    async fn members(&self, channel: &ChannelId) -> Result<Vec<SessionId>, StoreError> {
        self.run(StoreCall::Other, self.inner.members(channel))
            .await
    }
    async fn members_of(&self, channels: &[ChannelId]) -> Result<Vec<Vec<SessionId>>, StoreError> {
        self.run(StoreCall::Other, self.inner.members_of(channels))
            .await
    }
}

#[async_trait]
impl<H: StoreHook> SessionStore for HookedStore<H> {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.run(StoreCall::Other, self.inner.create_session(session))
            .await
    }
    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.run(StoreCall::Session(id), self.inner.session(id))
            .await
    }
    async fn sessions(&self, ids: &[SessionId]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        self.run(StoreCall::Sessions(ids), self.inner.sessions(ids))
            .await
    }
    async fn routes(&self, ids: &[SessionId]) -> Result<Vec<Option<SessionRoute>>, StoreError> {
        self.run(StoreCall::Routes(ids), self.inner.routes(ids))
            .await
    }
    async fn update_session(
        &self,
        id: &SessionId,
        update: &SessionUpdate,
    ) -> Result<bool, StoreError> {
        self.run(StoreCall::Other, self.inner.update_session(id, update))
            .await
    }
    async fn set_call(
        &self,
        session: &SessionId,
        peer: &SessionId,
        state: Option<CallState>,
    ) -> Result<(), StoreError> {
        self.run(StoreCall::Other, self.inner.set_call(session, peer, state))
            .await
    }
    async fn resume_session(
        &self,
        id: &SessionId,
        presented: &str,
        now_ms: u64,
        takeover: &Takeover,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let method = self.inner.resume_session(id, presented, now_ms, takeover);
        self.run(StoreCall::Other, method).await
    }
    async fn rotate_token(
        &self,
        id: &SessionId,
        connection: &ConnectionId,
        next: &TokenHash,
    ) -> Result<bool, StoreError> {
        let method = self.inner.rotate_token(id, connection, next);
        self.run(StoreCall::Other, method).await
    }
    async fn count_direct_call(
        &self,
        callee: &SessionId,
        caller: Option<&SessionId>,
        window: Duration,
    ) -> Result<u64, StoreError> {
        let method = self.inner.count_direct_call(callee, caller, window);
        self.run(StoreCall::Other, method).await
    }
    async fn retire_session(
        &self,
        id: &SessionId,
        connection: &ConnectionId,
    ) -> Result<bool, StoreError> {
        let method = self.inner.retire_session(id, connection);
        self.run(StoreCall::RetireSession(id), method).await
    }
    async fn delete_session(&self, id: &SessionId) -> Result<(), StoreError> {
        self.run(StoreCall::Other, self.inner.delete_session(id))
            .await
    }
    async fn touch_sessions(&self, ids: &[SessionId]) -> Result<Vec<SessionId>, StoreError> {
        self.run(StoreCall::Other, self.inner.touch_sessions(ids))
            .await
    }
}

#[async_trait]
impl<H: StoreHook> SfuRegistry for HookedStore<H> {
    async fn create_sfu_server(&self, new: &NewSfuServer) -> Result<SfuServerRecord, StoreError> {
        self.run(StoreCall::Other, self.inner.create_sfu_server(new))
            .await
    }
    async fn sfu_servers(&self) -> Result<Vec<SfuServerRecord>, StoreError> {
        self.run(StoreCall::Other, self.inner.sfu_servers()).await
    }
    async fn update_sfu_server(&self, record: &SfuServerRecord) -> Result<bool, StoreError> {
        self.run(StoreCall::Other, self.inner.update_sfu_server(record))
            .await
    }
    async fn delete_sfu_server(&self, id: SfuServerId) -> Result<bool, StoreError> {
        self.run(StoreCall::Other, self.inner.delete_sfu_server(id))
            .await
    }
    async fn set_sfu_link(&self, id: SfuServerId, up: bool) -> Result<bool, StoreError> {
        self.run(StoreCall::Other, self.inner.set_sfu_link(id, up))
            .await
    }
}

/// Counts every store call (the domain's round trips), the session records and the session
/// routes read.
#[derive(Debug, Default)]
pub(super) struct CallCounter {
    calls: AtomicUsize,
    records: AtomicUsize,
    routes: AtomicUsize,
}

#[async_trait]
impl StoreHook for CallCounter {
    async fn before(&self, _inner: &EmbeddedStore, call: StoreCall<'_>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let records = match call {
            StoreCall::Session(_) => 1,
            StoreCall::Sessions(ids) => ids.len(),
            StoreCall::RetireSession(_) | StoreCall::Routes(_) | StoreCall::Other => 0,
        };
        self.records.fetch_add(records, Ordering::Relaxed);
        if let StoreCall::Routes(ids) = call {
            self.routes.fetch_add(ids.len(), Ordering::Relaxed);
        }
    }
}

/// The embedded store, counting every call.
pub(super) type CountingStore = HookedStore<CallCounter>;

impl CountingStore {
    fn calls(&self) -> usize {
        self.hook.calls.load(Ordering::Relaxed)
    }

    /// Session records read so far (one per `session`, one per id of `sessions`).
    pub(super) fn records_read(&self) -> usize {
        self.hook.records.load(Ordering::Relaxed)
    }

    /// Session routes read so far (one per id of `routes`).
    pub(super) fn routes_read(&self) -> usize {
        self.hook.routes.load(Ordering::Relaxed)
    }
}

pub(super) fn service() -> (Arc<Signaling>, Arc<CountingStore>) {
    let (signaling, store, _) = recorded_service();
    (signaling, store)
}

/// The service composed as `state.rs` does, with a recorder after the wire delivery.
pub(super) fn recorded_service() -> (Arc<Signaling>, Arc<CountingStore>, Arc<Recorder>) {
    recorded_service_with(|_| {})
}

/// [`recorded_service`] with `adjust` applied to its configuration.
pub(super) fn recorded_service_with(
    adjust: impl FnOnce(&mut SignalingConfig),
) -> (Arc<Signaling>, Arc<CountingStore>, Arc<Recorder>) {
    let store = Arc::new(CountingStore::new(CallCounter::default()));
    let mut config = SignalingConfig::new("key");
    // The periodic sweep runs only when a test calls it.
    config.presence_ttl = Duration::from_secs(3600);
    // Spans on: the span tests need them; no other test fills a node.
    config.span_nodes = true;
    adjust(&mut config);
    let instance = InstanceId::random();
    let hub = Arc::new(Hub::default());
    let bus = Arc::new(InProcessBus::new());
    let metrics = Arc::new(Metrics::new());
    let recorder = Arc::new(Recorder::default());
    let wire = WireDelivery::start(instance.clone(), hub.clone(), bus.clone(), metrics.clone());
    let events = Events::new(vec![wire, metrics.clone(), recorder.clone()]);
    let ports = Ports {
        store: store.clone(),
        bus,
        hub,
        events,
    };
    let signaling = Signaling::start(config, instance, ports, metrics);
    (signaling, store, recorder)
}

/// A member and its socket's queue.
pub(super) type Member = (Connection, mpsc::Receiver<Outgoing>);

/// A new channel (`sfu` or mesh) with "alice" and then "bob" in it; what their entering emitted
/// is already taken from alice's queue and `recorder`, so a test sees only what it does next.
pub(super) async fn two_members(
    signaling: &Signaling,
    recorder: &Recorder,
    sfu: bool,
) -> (ChannelId, Member, Member) {
    let channel = signaling.channels().create(sfu).await.unwrap().id;
    let (alice, mut alice_queue) = member(signaling, &channel, "alice").await;
    let (bob, bob_queue) = member(signaling, &channel, "bob").await;
    drain(&mut alice_queue);
    recorder.take();
    (channel, (alice, alice_queue), (bob, bob_queue))
}

/// A connected session with a user that entered `channel` now, with its frames so far.
pub(super) async fn entered(signaling: &Signaling, channel: &ChannelId, name: &str) -> Member {
    let (connection, queue) = integrated(signaling, name, false).await;
    signaling
        .channels()
        .enter(&connection, channel.clone())
        .await
        .unwrap();
    (connection, queue)
}

/// A connected session with a user, inside `channel`; returns it and its socket's queue.
pub(super) async fn member(signaling: &Signaling, channel: &ChannelId, name: &str) -> Member {
    let (connection, mut queue) = entered(signaling, channel, name).await;
    while queue.try_recv().is_ok() {}
    (connection, queue)
}

pub(super) fn drain(queue: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
    let mut texts = Vec::new();
    while let Ok(Outgoing::Text(text)) = queue.try_recv() {
        texts.push(text.to_string());
    }
    texts
}

#[tokio::test]
async fn reads_change_nothing_and_the_sweep_removes_expired_members_once() {
    let (signaling, store) = service();
    let channel = signaling.channels().create(false).await.unwrap().id;
    let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
    let (bob, _bob_queue) = member(&signaling, &channel, "bob").await;
    drain(&mut alice_queue);
    // Bob's presence expires (his instance died): his session is gone, his membership is not.
    store.inner.delete_session(&bob.session).await.unwrap();

    let before = store.inner.members(&channel).await.unwrap();
    assert_eq!(before.len(), 2);
    let listed = signaling.channels().list().await.unwrap();
    assert_eq!(
        listed[0].session_count, 1,
        "an expired member is not counted"
    );
    let detail = signaling.channels().detail(&channel).await.unwrap();
    assert_eq!(detail.sessions.len(), 1);
    signaling.channels().members(&alice).await.unwrap();
    signaling.sfu_servers().list().await.unwrap();
    assert_eq!(
        store.inner.members(&channel).await.unwrap(),
        before,
        "reads removed nobody"
    );
    assert_eq!(
        drain(&mut alice_queue),
        Vec::<String>::new(),
        "reads sent nothing"
    );

    signaling.channels().sweep_expired_members().await.unwrap();
    assert_eq!(
        store.inner.members(&channel).await.unwrap(),
        vec![alice.session.clone()]
    );
    let told = drain(&mut alice_queue);
    assert_eq!(told.len(), 1, "{told:?}");
    let left: serde_json::Value = serde_json::from_str(&told[0]).unwrap();
    assert_eq!(left["type"], "left");
    assert_eq!(left["sessionId"], json!(bob.session));
    signaling.channels().sweep_expired_members().await.unwrap();
    assert_eq!(drain(&mut alice_queue), Vec::<String>::new(), "told once");
}

#[tokio::test]
async fn listing_channels_and_nodes_costs_the_same_store_calls_for_one_or_many() {
    let (signaling, store) = service();
    let node = register_node(&signaling).await;
    let mut costs = Vec::new();
    let mut members = Vec::new();
    for round in 0..2 {
        for _ in 0..[1, 20][round] {
            let channel = signaling.channels().create(true).await.unwrap().id;
            store
                .inner
                .place_channel(&channel, node, &format!("room-{channel}"))
                .await
                .unwrap();
            members.push(member(&signaling, &channel, "user").await);
            members.push(member(&signaling, &channel, "user").await);
        }
        let start = store.calls();
        let channels = signaling.channels().list().await.unwrap();
        let listing = store.calls() - start;
        let start = store.calls();
        let view = signaling.sfu_servers().get(node).await.unwrap();
        let one_node = store.calls() - start;
        assert_eq!(view.rooms, channels.len());
        assert_eq!(view.sessions, 2 * channels.len());
        assert!(channels.iter().all(|c| c.session_count == 2));
        costs.push((channels.len(), listing, one_node));
    }
    assert_eq!(costs[0].0, 1);
    assert_eq!(costs[1].0, 21);
    assert_eq!(
        (costs[0].1, costs[0].2),
        (costs[1].1, costs[1].2),
        "store calls must not grow with the channel count: {costs:?}"
    );
    assert!(costs[1].1 <= 3 && costs[1].2 <= 3, "{costs:?}");
}

/// A connected session with a user, in no channel.
pub(super) async fn integrated(
    signaling: &Signaling,
    name: &str,
    allow_direct_call: bool,
) -> (Connection, mpsc::Receiver<Outgoing>) {
    let (outbox, mut queue) = mpsc::channel(64);
    let (connection, _) = signaling
        .sessions()
        .connect(
            ConnectOptions {
                allow_direct_call,
                join: None,
            },
            outbox,
        )
        .await
        .unwrap();
    signaling
        .sessions()
        .bind_user(&connection.session, json!({"id": name}))
        .await
        .unwrap();
    while queue.try_recv().is_ok() {}
    (connection, queue)
}

/// Registers a node (without a fingerprint: no instance connects to it).
pub(super) async fn register_node(signaling: &Signaling) -> SfuServerId {
    signaling
        .sfu_servers()
        .register("127.0.0.1:4000".into(), None)
        .await
        .unwrap()
        .record
        .id
}

pub(super) fn kinds(seen: &[Emitted]) -> Vec<&'static str> {
    seen.iter().map(|e| e.event.kind()).collect()
}

pub(super) fn audience(emitted: &Emitted) -> Vec<SessionId> {
    let mut sessions: Vec<_> = emitted
        .audience
        .iter()
        .map(|r: &Recipient| r.session.clone())
        .collect();
    sessions.sort();
    sessions
}

pub(super) fn sorted(mut sessions: Vec<SessionId>) -> Vec<SessionId> {
    sessions.sort();
    sessions
}

/// The frame the event's audience receives.
pub(super) fn rendered(event: &DomainEvent) -> String {
    ServerMessage::render(event)
        .expect("this event has a wire message")
        .encode(None)
}

/// The client transports fake nodes hold.
#[derive(Debug, Default)]
pub(super) struct Transports {
    /// (node, room, session, publish side).
    held: std::collections::HashSet<(SfuServerId, String, String, bool)>,
    /// Per node: transports, and transports per (room, session).
    per_node: std::collections::HashMap<SfuServerId, NodeTransports>,
}

#[derive(Debug, Default)]
pub(super) struct NodeTransports {
    count: usize,
    sessions: std::collections::HashMap<(String, String), usize>,
}

impl Transports {
    fn insert(&mut self, node: SfuServerId, room: &str, session: &str, publish: bool) {
        if self
            .held
            .insert((node, room.to_owned(), session.to_owned(), publish))
        {
            let on = self.per_node.entry(node).or_default();
            on.count += 1;
            *on.sessions
                .entry((room.to_owned(), session.to_owned()))
                .or_default() += 1;
        }
    }

    fn remove_where(&mut self, keep: impl Fn(&(SfuServerId, String, String, bool)) -> bool) {
        let removed: Vec<_> = self.held.iter().filter(|t| !keep(t)).cloned().collect();
        for (node, room, session, publish) in removed {
            self.held
                .remove(&(node, room.clone(), session.clone(), publish));
            let on = self.per_node.entry(node).or_default();
            on.count -= 1;
            let key = (room, session);
            if let Some(n) = on.sessions.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    on.sessions.remove(&key);
                }
            }
        }
    }

    fn on(&self, node: SfuServerId) -> (usize, usize) {
        self.per_node
            .get(&node)
            .map_or((0, 0), |on| (on.count, on.sessions.len()))
    }
}

/// An SFU fleet of nodes that accept everything: rooms are `room-<n>` (never reused), a publish is answered
/// `answer`, and a subscribe offer for session `s` is `offer-for-s`. Keeps every request. Nodes
/// are healthy until [`FakeNodes::set_healthy`] says otherwise; rooms are hosted until
/// [`FakeNodes::lose_rooms`] (a restart): requests naming a lost room get `unknown_room`.
#[derive(Debug, Default)]
pub(super) struct FakeNodes {
    requests: std::sync::Mutex<Vec<mooyaho_control::Request>>,
    unhealthy: std::sync::Mutex<std::collections::HashSet<SfuServerId>>,
    /// Rooms created and not lost, per node.
    hosted: std::sync::Mutex<Vec<(SfuServerId, String)>>,
    /// Rooms lost by a restart.
    lost: std::sync::Mutex<Vec<String>>,
    /// Rooms created so far (room names are never reused).
    created: AtomicUsize,
    /// What every room's speaker ranking is, when asked.
    speakers: std::sync::Mutex<Vec<mooyaho_control::Speaker>>,
    /// Nodes whose requests never get an answer.
    stalled: std::sync::Mutex<std::collections::HashSet<SfuServerId>>,
    /// Rooms whose relay requests (`acceptRelay`, `openRelay`, `closeRelay`) never get an
    /// answer (a node slow on one channel's links).
    stalled_relay_rooms: std::sync::Mutex<std::collections::HashSet<String>>,
    /// `speakers` requests never get an answer (a busy worker).
    speakers_stalled: std::sync::atomic::AtomicBool,
    /// Transport caps per node, enforced as `mooyaho sfu --max-transports` does: a session new
    /// to a node at its cap is refused `full`.
    caps: std::sync::Mutex<std::collections::HashMap<SfuServerId, usize>>,
    /// Client transports held: (node, room, session, publish side).
    transports: std::sync::Mutex<Transports>,
    /// Load reports say what each node holds (else they stay empty, as if not sent yet).
    live_load: std::sync::atomic::AtomicBool,
    /// `openRelay` is refused (a sending node that cannot open a relay link).
    refuse_open_relay: std::sync::atomic::AtomicBool,
    /// What `acceptRelay` answers instead of 127.0.0.1:9.
    relay_address: std::sync::Mutex<Option<String>>,
}

impl FakeNodes {
    /// Attaches a fresh fake to `signaling`; returns it and the sender of node events.
    pub(super) fn attach(
        signaling: &Signaling,
    ) -> (
        Arc<Self>,
        mpsc::Sender<(SfuServerId, super::ports::NodeReport)>,
    ) {
        let nodes = Arc::new(Self::default());
        let (events, receiver) = mpsc::channel(16);
        signaling.placement().attach(nodes.clone(), receiver);
        (nodes, events)
    }

    /// Takes the requests received so far.
    pub(super) fn take(&self) -> Vec<mooyaho_control::Request> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }

    /// Makes `node` (un)healthy from now on.
    pub(super) fn set_healthy(&self, node: SfuServerId, healthy: bool) {
        let mut unhealthy = self.unhealthy.lock().unwrap();
        if healthy {
            unhealthy.remove(&node);
        } else {
            unhealthy.insert(node);
        }
    }

    /// From now on every room ranks these speakers when asked.
    pub(super) fn set_speakers(&self, speakers: Vec<mooyaho_control::Speaker>) {
        *self.speakers.lock().unwrap() = speakers;
    }

    /// From now on every node names `address` as its relay address.
    pub(super) fn name_relay_address(&self, address: &str) {
        *self.relay_address.lock().unwrap() = Some(address.to_owned());
    }

    /// From now on every node refuses `openRelay`.
    pub(super) fn refuse_open_relay(&self) {
        self.refuse_open_relay.store(true, Ordering::Relaxed);
    }

    /// From now on relay requests naming `room` never get an answer.
    pub(super) fn stall_relays_in(&self, room: &str) {
        self.stalled_relay_rooms
            .lock()
            .unwrap()
            .insert(room.to_owned());
    }

    /// From now on requests to `node` never get an answer.
    pub(super) fn stall(&self, node: SfuServerId) {
        self.stalled.lock().unwrap().insert(node);
    }

    /// From now on no node answers `speakers`.
    pub(super) fn stall_speakers(&self) {
        self.speakers_stalled.store(true, Ordering::Relaxed);
    }

    /// From now on `node` holds at most `max` client transports (a session already on it may
    /// open its other side); past it a new session is refused `full`.
    pub(super) fn set_cap(&self, node: SfuServerId, max: usize) {
        self.caps.lock().unwrap().insert(node, max);
    }

    /// From now on load reports carry what each node holds (sessions, transports, cap).
    pub(super) fn report_load(&self, live: bool) {
        self.live_load.store(live, Ordering::Relaxed);
    }

    /// Client transports `node` holds.
    pub(super) fn transports_on(&self, node: SfuServerId) -> usize {
        self.transports.lock().unwrap().on(node).0
    }

    /// The sessions holding a transport on `node`.
    pub(super) fn sessions_on(&self, node: SfuServerId) -> std::collections::BTreeSet<String> {
        let transports = self.transports.lock().unwrap();
        transports
            .per_node
            .get(&node)
            .map_or_else(Default::default, |on| {
                on.sessions.keys().map(|(_, s)| s.clone()).collect()
            })
    }

    /// Every (node, session) holding a transport.
    pub(super) fn placements(&self) -> std::collections::BTreeSet<(SfuServerId, String)> {
        let transports = self.transports.lock().unwrap();
        (transports.held.iter())
            .map(|(n, _, s, _)| (*n, s.clone()))
            .collect()
    }

    /// Takes a transport slot as the node would; `false` when it refuses (`full`).
    fn admit(&self, node: SfuServerId, room: &str, session: &str, publish: bool) -> bool {
        let mut transports = self.transports.lock().unwrap();
        let key = (node, room.to_owned(), session.to_owned(), publish);
        if transports.held.contains(&key) {
            return true;
        }
        if let Some(&max) = self.caps.lock().unwrap().get(&node) {
            let (held, _) = transports.on(node);
            let on_node = transports.per_node.get(&node).is_some_and(|on| {
                on.sessions
                    .contains_key(&(room.to_owned(), session.to_owned()))
            });
            if held >= max && !on_node {
                return false;
            }
        }
        transports.insert(node, room, session, publish);
        true
    }

    /// `node` restarted: the rooms it hosted are gone.
    pub(super) fn lose_rooms(&self, node: SfuServerId) {
        (self.transports.lock().unwrap()).remove_where(|(n, ..)| *n != node);
        let mut hosted = self.hosted.lock().unwrap();
        let mut lost = self.lost.lock().unwrap();
        lost.extend(
            hosted
                .iter()
                .filter(|(n, _)| *n == node)
                .map(|(_, r)| r.clone()),
        );
        hosted.retain(|(n, _)| *n != node);
    }
}

#[async_trait]
impl super::ports::SfuNodes for FakeNodes {
    async fn call(
        &self,
        node: SfuServerId,
        request: mooyaho_control::Request,
    ) -> Result<mooyaho_control::Response, super::ports::SfuError> {
        use mooyaho_control::{ErrorCode, Request, Response};
        let stalled = self.stalled.lock().unwrap().contains(&node);
        let relay_room = match &request {
            Request::AcceptRelay { room, .. }
            | Request::OpenRelay { room, .. }
            | Request::CloseRelay { room, .. } => Some(room),
            _ => None,
        };
        let relay_stalled =
            relay_room.is_some_and(|room| self.stalled_relay_rooms.lock().unwrap().contains(room));
        let speakers_stalled = matches!(request, Request::Speakers { .. })
            && self.speakers_stalled.load(Ordering::Relaxed);
        if stalled || relay_stalled || speakers_stalled {
            std::future::pending::<()>().await;
        }
        let room = match &request {
            Request::Publish { room, .. }
            | Request::SubscribeOffer { room, .. }
            | Request::SubscribeAnswer { room, .. }
            | Request::CloseSession { room, .. }
            | Request::CloseRoom { room }
            | Request::Speakers { room } => Some(room.clone()),
            _ => None,
        };
        let mut requests = self.requests.lock().unwrap();
        let lost = room.is_some_and(|room| self.lost.lock().unwrap().contains(&room));
        let response = match &request {
            _ if lost => Response::Error {
                code: ErrorCode::UnknownRoom,
                message: "no such room".into(),
            },
            Request::CreateRoom => {
                let room = format!("room-{}", self.created.fetch_add(1, Ordering::Relaxed));
                self.hosted.lock().unwrap().push((node, room.clone()));
                Response::Room { room }
            }
            Request::Rooms => Response::Rooms {
                rooms: (self.hosted.lock().unwrap().iter())
                    .filter(|(n, _)| *n == node)
                    .map(|(_, r)| r.clone())
                    .collect(),
            },
            Request::Publish { room, session, .. } | Request::SubscribeOffer { room, session }
                if !self.admit(
                    node,
                    room,
                    session,
                    matches!(request, Request::Publish { .. }),
                ) =>
            {
                Response::Error {
                    code: ErrorCode::Full,
                    message: "the node is full".into(),
                }
            }
            Request::CloseSession { room, session } => {
                (self.transports.lock().unwrap())
                    .remove_where(|(n, r, s, _)| !(*n == node && r == room && s == session));
                Response::Done
            }
            Request::CloseRoom { room } => {
                (self.transports.lock().unwrap())
                    .remove_where(|(n, r, ..)| !(*n == node && r == room));
                self.hosted
                    .lock()
                    .unwrap()
                    .retain(|(n, r)| !(*n == node && r == room));
                Response::Done
            }
            // An offer with media lines is answered with them all accepted (same ports).
            Request::Publish { offer, .. } => Response::Sdp {
                sdp: Some(if offer.contains("m=") {
                    offer.clone()
                } else {
                    "answer".into()
                }),
            },
            Request::Speakers { .. } => Response::Speakers {
                speakers: self.speakers.lock().unwrap().clone(),
            },
            Request::SubscribeOffer { session, .. } => Response::Sdp {
                sdp: Some(format!("offer-for-{session}")),
            },
            Request::SubscribeClientOffer { session, .. } => Response::Sdp {
                sdp: Some(format!("answer-for-{session}")),
            },
            Request::AcceptRelay { .. } => Response::RelayAddress {
                address: (self.relay_address.lock().unwrap().clone())
                    .unwrap_or_else(|| "127.0.0.1:9".into()),
            },
            Request::OpenRelay { .. } if self.refuse_open_relay.load(Ordering::Relaxed) => {
                Response::Error {
                    code: ErrorCode::BadRequest,
                    message: "refused".into(),
                }
            }
            _ => Response::Done,
        };
        requests.push(request);
        Ok(response)
    }

    fn status(&self, node: SfuServerId) -> super::ports::NodeStatus {
        let healthy = !self.unhealthy.lock().unwrap().contains(&node);
        let mut load = mooyaho_control::Load::default();
        if self.live_load.load(Ordering::Relaxed) {
            let (transports, sessions) = self.transports.lock().unwrap().on(node);
            load.admitted_transports = transports as u64;
            load.sessions = sessions as u64;
            load.max_transports = self.caps.lock().unwrap().get(&node).copied().unwrap_or(0) as u64;
        }
        super::ports::NodeStatus {
            connected: healthy,
            healthy,
            load: Some(load),
            last_error: None,
        }
    }
}
