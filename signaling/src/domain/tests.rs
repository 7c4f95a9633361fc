//! Domain tests over the embedded store, wrapped to count store round trips.

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
    CallState, ChannelRecord, NewSfuServer, SessionRecord, SessionUpdate, SfuServerRecord,
    Takeover, TokenHash,
};
use super::ports::{ChannelStore, SessionStore, SfuRegistry, StoreError};
use super::{ConnectOptions, Connection, Ports, Signaling, SignalingConfig};
use crate::bus::InProcessBus;
use crate::delivery::WireDelivery;
use crate::metrics::Metrics;
use crate::protocol::ServerMessage;
use crate::store::EmbeddedStore;

/// The embedded store, counting every call.
#[derive(Debug)]
struct CountingStore {
    inner: EmbeddedStore,
    calls: AtomicUsize,
}

impl CountingStore {
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ChannelStore for CountingStore {
    async fn create_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        self.count();
        self.inner.create_channel(channel).await
    }
    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        self.count();
        self.inner.channel(id).await
    }
    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.count();
        self.inner.channels().await
    }
    async fn place_channel(
        &self,
        id: &ChannelId,
        server: SfuServerId,
        room: &str,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        self.count();
        self.inner.place_channel(id, server, room).await
    }
    async fn unplace_channel(&self, id: &ChannelId, room: &str) -> Result<(), StoreError> {
        self.count();
        self.inner.unplace_channel(id, room).await
    }
    async fn delete_channel(&self, id: &ChannelId) -> Result<Option<Vec<SessionId>>, StoreError> {
        self.count();
        self.inner.delete_channel(id).await
    }
    async fn set_member(
        &self,
        channel: &ChannelId,
        session: &SessionId,
        member: bool,
    ) -> Result<bool, StoreError> {
        self.count();
        self.inner.set_member(channel, session, member).await
    }
    async fn members(&self, channel: &ChannelId) -> Result<Vec<SessionId>, StoreError> {
        self.count();
        self.inner.members(channel).await
    }
    async fn members_of(&self, channels: &[ChannelId]) -> Result<Vec<Vec<SessionId>>, StoreError> {
        self.count();
        self.inner.members_of(channels).await
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.count();
        self.inner.create_session(session).await
    }
    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.count();
        self.inner.session(id).await
    }
    async fn sessions(&self, ids: &[SessionId]) -> Result<Vec<Option<SessionRecord>>, StoreError> {
        self.count();
        self.inner.sessions(ids).await
    }
    async fn update_session(
        &self,
        id: &SessionId,
        update: &SessionUpdate,
    ) -> Result<bool, StoreError> {
        self.count();
        self.inner.update_session(id, update).await
    }
    async fn set_call(
        &self,
        session: &SessionId,
        peer: &SessionId,
        state: Option<CallState>,
    ) -> Result<(), StoreError> {
        self.count();
        self.inner.set_call(session, peer, state).await
    }
    async fn resume_session(
        &self,
        id: &SessionId,
        presented: &str,
        now_ms: u64,
        takeover: &Takeover,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.count();
        self.inner
            .resume_session(id, presented, now_ms, takeover)
            .await
    }
    async fn rotate_token(
        &self,
        id: &SessionId,
        connection: &ConnectionId,
        next: &TokenHash,
    ) -> Result<bool, StoreError> {
        self.count();
        self.inner.rotate_token(id, connection, next).await
    }
    async fn count_direct_call(
        &self,
        callee: &SessionId,
        caller: Option<&SessionId>,
        window: Duration,
    ) -> Result<u64, StoreError> {
        self.count();
        self.inner.count_direct_call(callee, caller, window).await
    }
    async fn retire_session(
        &self,
        id: &SessionId,
        connection: &ConnectionId,
    ) -> Result<bool, StoreError> {
        self.count();
        self.inner.retire_session(id, connection).await
    }
    async fn delete_session(&self, id: &SessionId) -> Result<(), StoreError> {
        self.count();
        self.inner.delete_session(id).await
    }
    async fn touch_sessions(&self, ids: &[SessionId]) -> Result<Vec<SessionId>, StoreError> {
        self.count();
        self.inner.touch_sessions(ids).await
    }
}

#[async_trait]
impl SfuRegistry for CountingStore {
    async fn create_sfu_server(&self, new: &NewSfuServer) -> Result<SfuServerRecord, StoreError> {
        self.count();
        self.inner.create_sfu_server(new).await
    }
    async fn sfu_servers(&self) -> Result<Vec<SfuServerRecord>, StoreError> {
        self.count();
        self.inner.sfu_servers().await
    }
    async fn update_sfu_server(&self, record: &SfuServerRecord) -> Result<bool, StoreError> {
        self.count();
        self.inner.update_sfu_server(record).await
    }
    async fn delete_sfu_server(&self, id: SfuServerId) -> Result<bool, StoreError> {
        self.count();
        self.inner.delete_sfu_server(id).await
    }
}

fn service() -> (Arc<Signaling>, Arc<CountingStore>) {
    let (signaling, store, _) = recorded_service();
    (signaling, store)
}

/// The service composed as `state.rs` does, with a recorder after the wire delivery.
fn recorded_service() -> (Arc<Signaling>, Arc<CountingStore>, Arc<Recorder>) {
    let store = Arc::new(CountingStore {
        inner: EmbeddedStore::in_memory(),
        calls: AtomicUsize::new(0),
    });
    let mut config = SignalingConfig::new("key");
    // The periodic sweep runs only when a test calls it.
    config.presence_ttl = Duration::from_secs(3600);
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

/// A connected session with a user, inside `channel`; returns it and its socket's queue.
async fn member(
    signaling: &Signaling,
    channel: &ChannelId,
    name: &str,
) -> (Connection, mpsc::Receiver<Outgoing>) {
    let (outbox, mut queue) = mpsc::channel(64);
    let (connection, _) = signaling
        .connect(ConnectOptions::default(), outbox)
        .await
        .unwrap();
    signaling
        .integrate_user(&connection.session, json!({"id": name}))
        .await
        .unwrap();
    signaling.enter(&connection, channel.clone()).await.unwrap();
    while queue.try_recv().is_ok() {}
    (connection, queue)
}

fn drain(queue: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
    let mut texts = Vec::new();
    while let Ok(Outgoing::Text(text)) = queue.try_recv() {
        texts.push(text.to_string());
    }
    texts
}

#[tokio::test]
async fn reads_change_nothing_and_the_sweep_removes_expired_members_once() {
    let (signaling, store) = service();
    let channel = signaling.create_channel(false).await.unwrap().id;
    let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
    let (bob, _bob_queue) = member(&signaling, &channel, "bob").await;
    drain(&mut alice_queue);
    // Bob's presence expires (his instance died): his session is gone, his membership is not.
    store.inner.delete_session(&bob.session).await.unwrap();

    let before = store.inner.members(&channel).await.unwrap();
    assert_eq!(before.len(), 2);
    let listed = signaling.list_channels().await.unwrap();
    assert_eq!(
        listed[0].session_count, 1,
        "an expired member is not counted"
    );
    let detail = signaling.channel_detail(&channel).await.unwrap();
    assert_eq!(detail.sessions.len(), 1);
    signaling.list_sessions(&alice).await.unwrap();
    signaling.sfu_servers().await.unwrap();
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

    signaling.sweep_expired_members().await.unwrap();
    assert_eq!(
        store.inner.members(&channel).await.unwrap(),
        vec![alice.session.clone()]
    );
    let told = drain(&mut alice_queue);
    assert_eq!(told.len(), 1, "{told:?}");
    let left: serde_json::Value = serde_json::from_str(&told[0]).unwrap();
    assert_eq!(left["type"], "left");
    assert_eq!(left["sessionId"], json!(bob.session));
    signaling.sweep_expired_members().await.unwrap();
    assert_eq!(drain(&mut alice_queue), Vec::<String>::new(), "told once");
}

#[tokio::test]
async fn listing_channels_and_nodes_costs_the_same_store_calls_for_one_or_many() {
    let (signaling, store) = service();
    let node = signaling
        .register_sfu_server("127.0.0.1:4000".into(), None)
        .await
        .unwrap()
        .record
        .id;
    let mut costs = Vec::new();
    let mut members = Vec::new();
    for round in 0..2 {
        for _ in 0..[1, 20][round] {
            let channel = signaling.create_channel(true).await.unwrap().id;
            store
                .inner
                .place_channel(&channel, node, &format!("room-{channel}"))
                .await
                .unwrap();
            members.push(member(&signaling, &channel, "user").await);
            members.push(member(&signaling, &channel, "user").await);
        }
        let start = store.calls();
        let channels = signaling.list_channels().await.unwrap();
        let listing = store.calls() - start;
        let start = store.calls();
        let view = signaling.sfu_server(node).await.unwrap();
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
async fn integrated(
    signaling: &Signaling,
    name: &str,
    allow_direct_call: bool,
) -> (Connection, mpsc::Receiver<Outgoing>) {
    let (outbox, mut queue) = mpsc::channel(64);
    let (connection, _) = signaling
        .connect(ConnectOptions { allow_direct_call }, outbox)
        .await
        .unwrap();
    signaling
        .integrate_user(&connection.session, json!({"id": name}))
        .await
        .unwrap();
    while queue.try_recv().is_ok() {}
    (connection, queue)
}

fn kinds(seen: &[Emitted]) -> Vec<&'static str> {
    seen.iter().map(|e| e.event.kind()).collect()
}

fn audience(emitted: &Emitted) -> Vec<SessionId> {
    let mut sessions: Vec<_> = emitted
        .audience
        .iter()
        .map(|r: &Recipient| r.session.clone())
        .collect();
    sessions.sort();
    sessions
}

fn sorted(mut sessions: Vec<SessionId>) -> Vec<SessionId> {
    sessions.sort();
    sessions
}

/// The frame the event's audience receives.
fn rendered(event: &DomainEvent) -> String {
    ServerMessage::render(event)
        .expect("this event has a wire message")
        .encode(None)
}

#[tokio::test]
async fn entering_emits_member_entered_once_to_every_member_as_entered() {
    let (signaling, _, recorder) = recorded_service();
    let channel = signaling.create_channel(false).await.unwrap().id;
    let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
    let (bob, mut bob_queue) = integrated(&signaling, "bob", false).await;
    recorder.take();

    let entry = signaling.enter(&bob, channel.clone()).await.unwrap();
    assert_eq!((entry.channel, entry.sfu_enabled), (channel.clone(), false));
    let seen = recorder.take();
    assert_eq!(kinds(&seen), ["member_entered"]);
    assert_eq!(
        seen[0].event,
        DomainEvent::MemberEntered {
            channel: channel.clone(),
            session: bob.session.clone(),
            user: json!({"id": "bob"}),
        }
    );
    assert_eq!(
        audience(&seen[0]),
        sorted(vec![alice.session.clone(), bob.session.clone()]),
        "every member, the newcomer included"
    );
    let expected = format!(
        r#"{{"type":"entered","sessionId":"{}","user":{{"id":"bob"}}}}"#,
        bob.session
    );
    assert_eq!(rendered(&seen[0].event), expected);
    assert_eq!(drain(&mut alice_queue), std::slice::from_ref(&expected));
    assert_eq!(drain(&mut bob_queue), [expected]);

    // Entering the channel one is in changes nothing and tells nobody.
    signaling.enter(&bob, channel).await.unwrap();
    assert_eq!(kinds(&recorder.take()), Vec::<&str>::new());
    assert!(drain(&mut alice_queue).is_empty());
}

#[tokio::test]
async fn leaving_emits_member_left_to_the_remaining_members_as_left() {
    let (signaling, _, recorder) = recorded_service();
    let channel = signaling.create_channel(false).await.unwrap().id;
    let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
    let (bob, mut bob_queue) = member(&signaling, &channel, "bob").await;
    drain(&mut alice_queue);
    recorder.take();

    signaling.leave(&alice).await.unwrap();
    let seen = recorder.take();
    assert_eq!(kinds(&seen), ["member_left"]);
    assert_eq!(audience(&seen[0]), vec![bob.session.clone()]);
    let expected = format!(r#"{{"type":"left","sessionId":"{}"}}"#, alice.session);
    assert_eq!(drain(&mut bob_queue), [expected]);
    assert!(drain(&mut alice_queue).is_empty(), "the leaver is not told");
}

#[tokio::test]
async fn chat_and_media_state_reach_the_channel_as_messaged_and_updated_media_state() {
    let (signaling, _, recorder) = recorded_service();
    let channel = signaling.create_channel(false).await.unwrap().id;
    let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
    let (bob, mut bob_queue) = member(&signaling, &channel, "bob").await;
    drain(&mut alice_queue);
    recorder.take();

    let text = crate::protocol::ChatMessage::Text { text: "hi".into() };
    signaling.send_chat(&alice, text).await.unwrap();
    signaling
        .update_media_state(&bob, super::model::MediaKey::Muted, true)
        .await
        .unwrap();
    let seen = recorder.take();
    assert_eq!(kinds(&seen), ["chat_sent", "media_state_changed"]);
    let everyone = sorted(vec![alice.session.clone(), bob.session.clone()]);
    assert_eq!(audience(&seen[0]), everyone);
    assert_eq!(audience(&seen[1]), everyone);
    let messaged = format!(
        r#"{{"type":"messaged","sessionId":"{}","message":{{"type":"text","text":"hi"}}}}"#,
        alice.session
    );
    let muted = format!(
        r#"{{"type":"updatedMediaState","sessionId":"{}","key":"muted","value":true}}"#,
        bob.session
    );
    assert_eq!(drain(&mut alice_queue), [messaged.clone(), muted.clone()]);
    assert_eq!(drain(&mut bob_queue), [messaged, muted]);
}

#[tokio::test]
async fn channel_peers_relay_offer_answer_and_candidate_as_events_to_the_target() {
    let (signaling, _, recorder) = recorded_service();
    let channel = signaling.create_channel(false).await.unwrap().id;
    let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
    let (bob, mut bob_queue) = member(&signaling, &channel, "bob").await;
    drain(&mut alice_queue);
    recorder.take();

    let (a, b) = (alice.session.clone(), bob.session.clone());
    signaling
        .relay_call(&alice, Some(b.clone()), "offer".into())
        .await
        .unwrap();
    signaling
        .relay_candidate(&alice, Some(b.clone()), json!({"candidate": "c"}))
        .await
        .unwrap();
    signaling
        .relay_answer(&bob, Some(a.clone()), "answer".into())
        .await
        .unwrap();
    let seen = recorder.take();
    assert_eq!(
        seen.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        [
            DomainEvent::CallOffered {
                from: a.clone(),
                to: b.clone(),
                sdp: "offer".into()
            },
            DomainEvent::CandidateSent {
                from: a.clone(),
                to: b.clone(),
                candidate: json!({"candidate": "c"})
            },
            DomainEvent::CallAnswered {
                from: b.clone(),
                to: a.clone(),
                sdp: "answer".into()
            },
        ]
    );
    assert_eq!(audience(&seen[0]), vec![b.clone()]);
    assert_eq!(audience(&seen[1]), vec![b.clone()]);
    assert_eq!(audience(&seen[2]), vec![a.clone()]);
    assert_eq!(
        drain(&mut bob_queue),
        [
            format!(r#"{{"type":"called","from":"{a}","sdp":"offer","isSFU":false}}"#),
            format!(
                r#"{{"type":"candidated","from":"{a}","candidate":{{"candidate":"c"}},"isSFU":false}}"#
            ),
        ]
    );
    assert_eq!(
        drain(&mut alice_queue),
        [format!(
            r#"{{"type":"answered","from":"{b}","sdp":"answer","isSFU":false}}"#
        )]
    );

    // A refused relay emits nothing.
    let stranger = SessionId::from("nobody");
    assert!(
        signaling
            .relay_call(&alice, Some(stranger), "offer".into())
            .await
            .is_err()
    );
    assert!(recorder.take().is_empty());
}

#[tokio::test]
async fn a_rejected_direct_call_emits_call_rejected_to_the_caller_as_rejected() {
    let (signaling, _, recorder) = recorded_service();
    let (alice, mut alice_queue) = integrated(&signaling, "alice", true).await;
    let (bob, mut bob_queue) = integrated(&signaling, "bob", true).await;
    recorder.take();
    signaling
        .relay_call(&alice, Some(bob.session.clone()), "offer".into())
        .await
        .unwrap();
    assert_eq!(drain(&mut bob_queue).len(), 1);
    signaling
        .relay_reject(&bob, alice.session.clone(), Some("busy".into()))
        .await
        .unwrap();
    let seen = recorder.take();
    assert_eq!(kinds(&seen), ["call_offered", "call_rejected"]);
    assert_eq!(audience(&seen[1]), vec![alice.session.clone()]);
    assert_eq!(
        drain(&mut alice_queue),
        [format!(
            r#"{{"type":"rejected","from":"{}","reason":"busy"}}"#,
            bob.session
        )]
    );
}

#[tokio::test]
async fn channel_life_emits_created_without_audience_and_deleted_to_members_as_channel_closed() {
    let (signaling, _, recorder) = recorded_service();
    let channel = signaling.create_channel(true).await.unwrap().id;
    let seen = recorder.take();
    assert_eq!(
        seen,
        [Emitted {
            event: DomainEvent::ChannelCreated {
                channel: channel.clone(),
                sfu_enabled: true,
            },
            audience: Vec::new(),
        }]
    );
    assert!(ServerMessage::render(&seen[0].event).is_none());
    let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
    recorder.take();

    signaling.delete_channel(&channel).await.unwrap();
    let seen = recorder.take();
    assert_eq!(kinds(&seen), ["channel_deleted"]);
    assert_eq!(audience(&seen[0]), vec![alice.session.clone()]);
    assert_eq!(
        drain(&mut alice_queue),
        [format!(
            r#"{{"type":"channelClosed","channel":"{channel}"}}"#
        )]
    );
}

#[tokio::test]
async fn ending_a_session_in_a_channel_emits_member_left_then_session_ended() {
    let (signaling, store, recorder) = recorded_service();
    let channel = signaling.create_channel(false).await.unwrap().id;
    let (alice, _alice_queue) = member(&signaling, &channel, "alice").await;
    let (bob, mut bob_queue) = member(&signaling, &channel, "bob").await;
    recorder.take();
    let record = store.inner.session(&alice.session).await.unwrap().unwrap();
    signaling.end_session(&record).await.unwrap();
    let seen = recorder.take();
    assert_eq!(kinds(&seen), ["member_left", "session_ended"]);
    assert_eq!(audience(&seen[0]), vec![bob.session.clone()]);
    assert!(seen[1].audience.is_empty());
    assert_eq!(
        drain(&mut bob_queue),
        [format!(
            r#"{{"type":"left","sessionId":"{}"}}"#,
            alice.session
        )]
    );
    let metrics = signaling.metrics().render();
    assert!(
        metrics.contains("mooyaho_sessions_ended_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mooyaho_domain_events_total{kind="member_left"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_lost_session_is_told_through_its_event_and_closed() {
    let (signaling, _, recorder) = recorded_service();
    let (alice, mut alice_queue) = integrated(&signaling, "alice", false).await;
    recorder.take();
    signaling
        .close_lost(std::slice::from_ref(&alice.session))
        .await;
    let seen = recorder.take();
    assert_eq!(kinds(&seen), ["session_lost"]);
    assert_eq!(audience(&seen[0]), vec![alice.session.clone()]);
    let frame: serde_json::Value = match alice_queue.try_recv() {
        Ok(Outgoing::Text(text)) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected the error frame, got {other:?}"),
    };
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["code"], "session_not_found");
    assert!(
        matches!(
            alice_queue.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ),
        "the socket's outbox is closed after the frame"
    );
}
