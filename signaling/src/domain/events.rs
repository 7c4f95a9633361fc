//! Domain events: what the rules decided happened, in the domain's own words. The domain never
//! builds a wire message; it emits a [`DomainEvent`] with its [`Recipient`]s (the sessions whose
//! sockets must hear of it, possibly none) to an [`Events`] stream, and every subscriber sees
//! each event in emission order: the wire delivery (renders to the WebSocket message, local socket
//! or bus), the metrics counter, and later webhooks or an audit log.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::ids::{ChannelId, InstanceId, SessionId, SfuServerId};
use super::model::{ChatMessage, MediaKey, PublishedTrack, SessionRecord};

/// Something that happened in the domain.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum DomainEvent {
    /// A socket opened a new session.
    SessionStarted {
        /// The session.
        session: SessionId,
    },
    /// A new connection took over an earlier session (`reuseId`).
    SessionResumed {
        /// The resumed session.
        session: SessionId,
    },
    /// A session ended (its grace window passed, or a resume replaced it).
    SessionEnded {
        /// The session.
        session: SessionId,
    },
    /// A session held here vanished from the shared store (an outage longer than its presence
    /// TTL); its socket is told and closed.
    SessionLost {
        /// The session.
        session: SessionId,
    },
    /// A user was bound to a session.
    UserIntegrated {
        /// The session.
        session: SessionId,
        /// The user object.
        user: Value,
        /// The session's TURN credentials (now that it has a user), if the server has TURN.
        ice_servers: Vec<crate::turn::IceServer>,
    },
    /// A channel was created.
    ChannelCreated {
        /// The channel.
        channel: ChannelId,
        /// Its media goes through the SFU.
        sfu_enabled: bool,
    },
    /// A channel was deleted; its members are no longer in it.
    ChannelDeleted {
        /// The channel.
        channel: ChannelId,
    },
    /// A session entered a channel.
    MemberEntered {
        /// The channel.
        channel: ChannelId,
        /// Who entered.
        session: SessionId,
        /// Their user.
        user: Value,
    },
    /// A session left a channel (by request, by ending, because its presence expired, or
    /// because the channel was deleted). Emitted once per fleet: by the instance whose store
    /// write removed the membership.
    MemberLeft {
        /// The channel.
        channel: ChannelId,
        /// Who left.
        session: SessionId,
        /// Their user (`None` when the session expired with its instance: its record is gone).
        user: Option<Value>,
    },
    /// A member chatted to its channel.
    ChatSent {
        /// The channel.
        channel: ChannelId,
        /// The sender.
        from: SessionId,
        /// The message.
        message: ChatMessage,
    },
    /// A member announced a microphone/camera change.
    MediaStateChanged {
        /// The channel.
        channel: ChannelId,
        /// Whose.
        session: SessionId,
        /// Which key.
        key: MediaKey,
        /// The new value.
        value: bool,
    },
    /// A peer offered SDP to another peer (channel mesh or direct call).
    CallOffered {
        /// The caller.
        from: SessionId,
        /// The callee.
        to: SessionId,
        /// The offer.
        sdp: String,
    },
    /// A peer answered another peer's offer.
    CallAnswered {
        /// The answering peer.
        from: SessionId,
        /// The caller.
        to: SessionId,
        /// The answer.
        sdp: String,
    },
    /// A peer trickled an ICE candidate to another peer.
    CandidateSent {
        /// The sender.
        from: SessionId,
        /// The receiver.
        to: SessionId,
        /// The `RTCIceCandidateInit` object, or null (end of candidates).
        candidate: Value,
    },
    /// A callee declined a direct call.
    CallRejected {
        /// The callee.
        from: SessionId,
        /// The caller.
        to: SessionId,
        /// The callee's reason, at most 200 characters.
        reason: Option<String>,
    },
    /// A channel's room was created on an SFU node.
    ChannelPlaced {
        /// The channel.
        channel: ChannelId,
        /// The node.
        node: SfuServerId,
        /// The room on the node.
        room: String,
    },
    /// The SFU accepted a publish offer with this track (one event per track; a session that
    /// publishes again first unpublishes what it published before, as the node replaces it).
    TrackPublished {
        /// The channel.
        channel: ChannelId,
        /// The publisher.
        session: SessionId,
        /// The track.
        track: PublishedTrack,
    },
    /// A track a session published is gone: it published again, left the channel, or the
    /// channel was deleted.
    TrackUnpublished {
        /// The channel.
        channel: ChannelId,
        /// The publisher.
        session: SessionId,
        /// The track.
        track: PublishedTrack,
    },
    /// A session left a placed SFU channel: the node was told to drop its transports, and the
    /// tracks it published (if any) with them.
    MediaReleased {
        /// The channel.
        channel: ChannelId,
        /// The session.
        session: SessionId,
    },
    /// The SFU node offers a session what it can receive now.
    SubscribeOffered {
        /// The receiving session.
        session: SessionId,
        /// The node's offer.
        sdp: String,
    },
    /// The SFU node ranked a channel's active speakers anew (at most every 200 ms).
    ActiveSpeakersChanged {
        /// The channel.
        channel: ChannelId,
        /// Loudest first, with their smoothed loudness (1..=100); empty when nobody speaks.
        speakers: Vec<(SessionId, u8)>,
    },
    /// Dynacast: which simulcast layers of a session's published video anyone consumes
    /// changed (told to that session only, which stops encoding the others).
    SubscribedQualitiesChanged {
        /// The channel.
        channel: ChannelId,
        /// The publishing session.
        session: SessionId,
        /// The track's mid in the session's publish offer.
        mid: String,
        /// The consumed layers' rids, lowest first (empty for a layer without one).
        qualities: Vec<String>,
        /// The consumed layers (0 = lowest).
        layers: Vec<u8>,
    },
    /// An SFU node closed one of a session's transports.
    SfuTransportClosed {
        /// The node.
        node: SfuServerId,
        /// The session.
        session: SessionId,
        /// `publish` or `subscribe`.
        side: String,
        /// Why, as the node said.
        reason: String,
    },
    /// This instance's control link to an SFU node came up (each instance has its own link).
    SfuNodeUp {
        /// The node.
        node: SfuServerId,
    },
    /// This instance's control link to an SFU node went down.
    SfuNodeDown {
        /// The node.
        node: SfuServerId,
    },
    /// The fleet's recorded link state of a node turned up: emitted by the one instance whose
    /// [`SfuNodeUp`](Self::SfuNodeUp) changed it in the shared store (once per fleet).
    SfuServerUp {
        /// The node.
        node: SfuServerId,
    },
    /// The fleet's recorded link state of a node turned down (once per fleet, like
    /// [`SfuServerUp`](Self::SfuServerUp)).
    SfuServerDown {
        /// The node.
        node: SfuServerId,
    },
    /// A channel's room on a node is gone or out of reach (the node failed or restarted): the
    /// channel is placed again ([`DomainEvent::SfuRestarted`] or
    /// [`DomainEvent::MediaStranded`] follows).
    RoomLost {
        /// The channel.
        channel: ChannelId,
        /// The node.
        node: SfuServerId,
        /// The room it lost.
        room: String,
    },
    /// A channel's room was lost: its members must drop their SFU PeerConnections and publish
    /// and subscribe again (`sfuRestart`). Told before the channel is placed again (its
    /// [`DomainEvent::ChannelPlaced`] follows, or [`DomainEvent::MediaStranded`] when no node
    /// can take it: publishing places it once a node can).
    SfuRestarted {
        /// The channel.
        channel: ChannelId,
    },
    /// A channel's room was lost and no healthy node could host it: its members are told (an
    /// `error`), and the next publish places it once a node can.
    MediaStranded {
        /// The channel.
        channel: ChannelId,
        /// The node that lost it.
        node: SfuServerId,
    },
    /// No SFU node could serve a member's media (every eligible node at its transport cap, or
    /// none healthy) when the member was to be offered it: the member is told (an `error`);
    /// its next publish, or the next publish in its channel, tries again.
    MediaUnserved {
        /// The channel.
        channel: ChannelId,
        /// Why (`sfu_full` or `sfu_unavailable`).
        code: super::error::ErrorCode,
        /// Explanation.
        message: String,
    },
    /// An SFU node was registered.
    SfuServerRegistered {
        /// The node.
        node: SfuServerId,
    },
    /// An SFU node started or stopped draining.
    SfuServerDraining {
        /// The node.
        node: SfuServerId,
        /// Draining now.
        draining: bool,
    },
    /// An SFU node was unregistered.
    SfuServerRemoved {
        /// The node.
        node: SfuServerId,
    },
}

impl DomainEvent {
    /// A stable `snake_case` name of the event's kind (the metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SessionStarted { .. } => "session_started",
            Self::SessionResumed { .. } => "session_resumed",
            Self::SessionEnded { .. } => "session_ended",
            Self::SessionLost { .. } => "session_lost",
            Self::UserIntegrated { .. } => "user_integrated",
            Self::ChannelCreated { .. } => "channel_created",
            Self::ChannelDeleted { .. } => "channel_deleted",
            Self::MemberEntered { .. } => "member_entered",
            Self::MemberLeft { .. } => "member_left",
            Self::ChatSent { .. } => "chat_sent",
            Self::MediaStateChanged { .. } => "media_state_changed",
            Self::CallOffered { .. } => "call_offered",
            Self::CallAnswered { .. } => "call_answered",
            Self::CandidateSent { .. } => "candidate_sent",
            Self::CallRejected { .. } => "call_rejected",
            Self::ChannelPlaced { .. } => "channel_placed",
            Self::TrackPublished { .. } => "track_published",
            Self::TrackUnpublished { .. } => "track_unpublished",
            Self::MediaReleased { .. } => "media_released",
            Self::SubscribeOffered { .. } => "subscribe_offered",
            Self::ActiveSpeakersChanged { .. } => "active_speakers_changed",
            Self::SubscribedQualitiesChanged { .. } => "subscribed_qualities_changed",
            Self::SfuTransportClosed { .. } => "sfu_transport_closed",
            Self::SfuNodeUp { .. } => "sfu_node_up",
            Self::SfuNodeDown { .. } => "sfu_node_down",
            Self::SfuServerUp { .. } => "sfu_server_up",
            Self::SfuServerDown { .. } => "sfu_server_down",
            Self::RoomLost { .. } => "room_lost",
            Self::SfuRestarted { .. } => "sfu_restarted",
            Self::MediaStranded { .. } => "media_stranded",
            Self::MediaUnserved { .. } => "media_unserved",
            Self::SfuServerRegistered { .. } => "sfu_server_registered",
            Self::SfuServerDraining { .. } => "sfu_server_draining",
            Self::SfuServerRemoved { .. } => "sfu_server_removed",
        }
    }
}

/// A session that must hear of an event, and the instance whose socket holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The session.
    pub session: SessionId,
    /// Its holder.
    pub instance: InstanceId,
}

impl From<&SessionRecord> for Recipient {
    fn from(record: &SessionRecord) -> Self {
        Self {
            session: record.id.clone(),
            instance: record.instance.clone(),
        }
    }
}

/// An event as it is emitted: what happened and who must hear of it on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct Emitted {
    /// What happened.
    pub event: DomainEvent,
    /// The sessions whose sockets hear of it (empty: no wire message, e.g. `ChannelCreated`).
    pub audience: Vec<Recipient>,
}

/// Receives every domain event of this instance.
#[async_trait]
pub trait EventSubscriber: Send + Sync {
    /// Called once per event, in emission order, before the rule that emitted it returns (so a
    /// reply never overtakes the messages its request caused). Must not wait on anything slow:
    /// a subscriber with remote work (webhooks) queues it and returns.
    async fn on_event(&self, emitted: &Emitted);
}

/// The event stream: hands each event to every subscriber, in the order they were given.
#[derive(Clone, Default)]
pub struct Events {
    subscribers: Vec<Arc<dyn EventSubscriber>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("subscribers", &self.subscribers.len())
            .finish()
    }
}

impl Events {
    /// A stream with these subscribers.
    pub fn new(subscribers: Vec<Arc<dyn EventSubscriber>>) -> Self {
        Self { subscribers }
    }

    /// Adds a subscriber after the others.
    pub fn subscribe(&mut self, subscriber: Arc<dyn EventSubscriber>) {
        self.subscribers.push(subscriber);
    }

    /// Emits `event` to `audience` through every subscriber.
    pub async fn emit(&self, event: DomainEvent, audience: Vec<Recipient>) {
        let emitted = Emitted { event, audience };
        for subscriber in &self.subscribers {
            subscriber.on_event(&emitted).await;
        }
    }

    /// Emits an event no socket hears of (metrics, webhooks and logs still do).
    pub async fn record(&self, event: DomainEvent) {
        self.emit(event, Vec::new()).await;
    }
}

#[cfg(test)]
pub(crate) mod recording {
    //! A subscriber that keeps what it saw, for tests.

    use std::sync::Mutex;

    use super::*;

    /// Every event seen, in order.
    #[derive(Debug, Default)]
    pub(crate) struct Recorder {
        seen: Mutex<Vec<Emitted>>,
    }

    impl Recorder {
        /// Takes what was seen so far.
        pub(crate) fn take(&self) -> Vec<Emitted> {
            std::mem::take(&mut *self.seen.lock().unwrap())
        }
    }

    #[async_trait]
    impl EventSubscriber for Recorder {
        async fn on_event(&self, emitted: &Emitted) {
            self.seen.lock().unwrap().push(emitted.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::recording::Recorder;
    use super::*;

    #[tokio::test]
    async fn every_subscriber_sees_every_event_in_order() {
        let first = Arc::new(Recorder::default());
        let second = Arc::new(Recorder::default());
        let mut events = Events::new(vec![first.clone()]);
        events.subscribe(second.clone());
        let bob = Recipient {
            session: SessionId::from("bob"),
            instance: InstanceId::from("i"),
        };
        events
            .emit(
                DomainEvent::MemberLeft {
                    channel: ChannelId::from("c"),
                    session: SessionId::from("alice"),
                    user: None,
                },
                vec![bob.clone()],
            )
            .await;
        events
            .record(DomainEvent::ChannelDeleted {
                channel: ChannelId::from("c"),
            })
            .await;
        for recorder in [first, second] {
            let seen = recorder.take();
            let kinds: Vec<_> = seen.iter().map(|e| e.event.kind()).collect();
            assert_eq!(kinds, ["member_left", "channel_deleted"]);
            assert_eq!(seen[0].audience, vec![bob.clone()]);
            assert!(seen[1].audience.is_empty());
        }
    }
}
