//! What a webhook says: the JSON body `{id, seq, event, createdAt, channel?, session?, user?,
//! track?, sfuServer?}` made from the domain events a backend cares about.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde::Serialize;
use serde_json::Value;

use crate::domain::events::DomainEvent;
use crate::domain::ids::{ChannelId, SessionId};
use crate::domain::model::{PublishedTrack, now_ms};

/// One webhook delivery's body.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// Unique per event (a retry repeats it: receivers dedupe on it).
    pub id: String,
    /// 1, 2, 3, … per signaling instance, in the order it emitted its events (a retry repeats
    /// it): a number a receiver never sees was dropped or given up. Set by the sender.
    pub seq: u64,
    /// `channel.created`, `participant.joined`, … (see [`WebhookEvent::from_domain`]).
    pub event: &'static str,
    /// When the event happened, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// The channel it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelId>,
    /// The session it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    /// That session's user, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
    /// The track it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<PublishedTrack>,
    /// The SFU node it concerns (its id in `/sfu-servers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sfu_server: Option<u64>,
}

/// Every event name a webhook can carry.
pub const EVENT_NAMES: [&str; 8] = [
    "channel.created",
    "channel.deleted",
    "participant.joined",
    "participant.left",
    "track.published",
    "track.unpublished",
    "sfu.up",
    "sfu.down",
];

impl WebhookEvent {
    fn new(event: &'static str) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            seq: 0,
            event,
            created_at: now_ms(),
            channel: None,
            session: None,
            user: None,
            track: None,
            sfu_server: None,
        }
    }

    /// An `event` about `channel` and/or `session`.
    fn about(
        event: &'static str,
        channel: Option<&ChannelId>,
        session: Option<&SessionId>,
    ) -> Self {
        Self {
            channel: channel.cloned(),
            session: session.cloned(),
            ..Self::new(event)
        }
    }

    /// The webhook of a domain event, if backends hear of that kind. Each of these is emitted
    /// once per fleet by the domain (the instance that made the change, or for `sfu.*` the one
    /// whose store write changed the node's recorded state).
    pub fn from_domain(event: &DomainEvent) -> Option<Self> {
        let hook = match event {
            DomainEvent::ChannelCreated { channel, .. } => {
                Self::about("channel.created", Some(channel), None)
            }
            DomainEvent::ChannelDeleted { channel } => {
                Self::about("channel.deleted", Some(channel), None)
            }
            DomainEvent::MemberEntered {
                channel,
                session,
                user,
            } => Self {
                user: Some(user.clone()),
                ..Self::about("participant.joined", Some(channel), Some(session))
            },
            DomainEvent::MemberLeft {
                channel,
                session,
                user,
            } => Self {
                user: user.clone(),
                ..Self::about("participant.left", Some(channel), Some(session))
            },
            DomainEvent::TrackPublished {
                channel,
                session,
                track,
            } => Self {
                track: Some(track.clone()),
                ..Self::about("track.published", Some(channel), Some(session))
            },
            DomainEvent::TrackUnpublished {
                channel,
                session,
                track,
            } => Self {
                track: Some(track.clone()),
                ..Self::about("track.unpublished", Some(channel), Some(session))
            },
            DomainEvent::SfuServerUp { node } => Self {
                sfu_server: Some(node.0),
                ..Self::new("sfu.up")
            },
            DomainEvent::SfuServerDown { node } => Self {
                sfu_server: Some(node.0),
                ..Self::new("sfu.down")
            },
            _ => return None,
        };
        Some(hook)
    }

    /// What must stay in order: the channel, else the node. Events with equal keys are
    /// delivered one after another, in emission order.
    pub fn order_key(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        match (&self.channel, self.sfu_server) {
            (Some(channel), _) => channel.hash(&mut hasher),
            (None, Some(node)) => node.hash(&mut hasher),
            (None, None) => self.id.hash(&mut hasher),
        }
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::ids::SfuServerId;

    fn body(event: DomainEvent) -> Value {
        let hook = WebhookEvent::from_domain(&event).expect("a webhook event");
        let mut body = serde_json::to_value(&hook).unwrap();
        let object = body.as_object_mut().unwrap();
        let id = object.remove("id").unwrap();
        assert_eq!(id.as_str().unwrap().len(), 36, "a UUID");
        assert_eq!(
            object.remove("seq"),
            Some(json!(0)),
            "numbered by the sender"
        );
        assert!(object.remove("createdAt").unwrap().as_u64().unwrap() > 1_600_000_000_000);
        body
    }

    #[test]
    fn each_backend_event_has_its_name_and_only_its_fields() {
        let channel = ChannelId::from("c1");
        let session = SessionId::from("s1");
        let track = PublishedTrack {
            id: "mic".into(),
            mid: "0".into(),
            kind: "audio".into(),
        };
        assert_eq!(
            body(DomainEvent::ChannelCreated {
                channel: channel.clone(),
                sfu_enabled: true
            }),
            json!({"event": "channel.created", "channel": "c1"})
        );
        assert_eq!(
            body(DomainEvent::MemberEntered {
                channel: channel.clone(),
                session: session.clone(),
                user: json!({"id": "ada"})
            }),
            json!({"event": "participant.joined", "channel": "c1", "session": "s1",
                   "user": {"id": "ada"}})
        );
        assert_eq!(
            body(DomainEvent::MemberLeft {
                channel: channel.clone(),
                session: session.clone(),
                user: None
            }),
            json!({"event": "participant.left", "channel": "c1", "session": "s1"})
        );
        assert_eq!(
            body(DomainEvent::TrackUnpublished {
                channel: channel.clone(),
                session,
                track
            }),
            json!({"event": "track.unpublished", "channel": "c1", "session": "s1",
                   "track": {"id": "mic", "mid": "0", "kind": "audio"}})
        );
        assert_eq!(
            body(DomainEvent::SfuServerDown {
                node: SfuServerId(4)
            }),
            json!({"event": "sfu.down", "sfuServer": 4})
        );
        assert_eq!(
            body(DomainEvent::ChannelDeleted { channel }),
            json!({"event": "channel.deleted", "channel": "c1"})
        );
    }

    #[test]
    fn per_instance_and_wire_only_events_make_no_webhook() {
        for event in [
            DomainEvent::SfuNodeUp {
                node: SfuServerId(1),
            },
            DomainEvent::SessionStarted {
                session: SessionId::from("s"),
            },
            DomainEvent::ChatSent {
                channel: ChannelId::from("c"),
                from: SessionId::from("s"),
                message: crate::domain::model::ChatMessage::Text { text: "x".into() },
            },
        ] {
            assert_eq!(WebhookEvent::from_domain(&event), None, "{event:?}");
        }
    }

    #[test]
    fn a_channels_events_share_an_order_key() {
        let channel = ChannelId::from("c1");
        let created = WebhookEvent::from_domain(&DomainEvent::ChannelCreated {
            channel: channel.clone(),
            sfu_enabled: false,
        })
        .unwrap();
        let deleted = WebhookEvent::from_domain(&DomainEvent::ChannelDeleted { channel }).unwrap();
        assert_eq!(created.order_key(), deleted.order_key());
        assert_ne!(created.id, deleted.id);
    }
}
