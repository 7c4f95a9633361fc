//! The WebSocket wire contract: every frame is a JSON object with a `type`. Names follow the
//! original Mooyaho protocol; `requestId`, `error`, `reject`/`rejected`, `ping`/`pong` and `ack`
//! are additions (see `docs/websocket.md`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::domain::error::{ErrorCode, SignalError};
use crate::domain::events::DomainEvent;
use crate::domain::ids::{ChannelId, SessionId};
pub use crate::domain::model::ChatMessage;
use crate::domain::model::{MediaKey, MediaState};
use crate::turn::IceServer;

/// A message from a browser.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClientMessage {
    /// Asks for the session id (`getIdSuccess`).
    GetId,
    /// Resumes an earlier session on this connection (`reuseIdSuccess`).
    ReuseId {
        /// The earlier session's id.
        id: SessionId,
        /// Its resume token (from `connected` or the last `reuseIdSuccess`).
        token: String,
    },
    /// Enters a channel (`enterSuccess`, then `entered` to every member).
    Enter {
        /// The channel to enter.
        channel: ChannelId,
    },
    /// Leaves the current channel (`left` to the remaining members).
    Leave,
    /// Chat to the current channel (`messaged` to every member).
    Message {
        /// The chat message.
        message: ChatMessage,
    },
    /// Lists the current channel's sessions (`listSessionsSuccess`).
    ListSessions,
    /// An SDP offer: to a channel peer or a direct-call callee, or with `isSFU` to the SFU.
    Call {
        /// Target session (absent for the SFU).
        #[serde(default)]
        to: Option<SessionId>,
        /// The offer SDP.
        sdp: String,
        /// Addressed to the SFU.
        #[serde(default, rename = "isSFU")]
        is_sfu: bool,
    },
    /// An SDP answer.
    Answer {
        /// Target session: the caller (or, with `isSFU`, the SFU offer's session).
        #[serde(default)]
        to: Option<SessionId>,
        /// The answer SDP.
        sdp: String,
        /// Addressed to the SFU.
        #[serde(default, rename = "isSFU")]
        is_sfu: bool,
    },
    /// A trickled ICE candidate (`null` = end of candidates).
    Candidate {
        /// Target session.
        #[serde(default)]
        to: Option<SessionId>,
        /// The `RTCIceCandidateInit` object, or null.
        candidate: Value,
        /// Addressed to the SFU.
        #[serde(default, rename = "isSFU")]
        is_sfu: bool,
    },
    /// Declines an incoming direct call (`rejected` to the caller).
    Reject {
        /// The caller.
        to: SessionId,
        /// Optional reason shown to the caller.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Binds a user to this session (anonymous mode only; `integrated`).
    IntegrateUser {
        /// The user object.
        user: Value,
    },
    /// Announces a microphone/camera change (`updatedMediaState` to every member).
    UpdateMediaState {
        /// `muted` or `videoOff`.
        key: MediaKey,
        /// The new value.
        value: bool,
    },
    /// What this session wants of another member's media in an SFU channel (acked).
    SetSubscription {
        /// The publishing member.
        session_id: SessionId,
        /// The most video wanted: `high`, `medium`, `low` or `off`.
        video: mooyaho_control::VideoQuality,
        /// Whether its audio is wanted; absent leaves it as it was (wanted by default).
        #[serde(default)]
        audio: Option<bool>,
    },
    /// Application-level heartbeat (`pong`); browsers cannot see WebSocket pings.
    Ping,
}

/// One entry of `listSessionsSuccess`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionInfo {
    /// The session id.
    pub id: SessionId,
    /// Its user.
    pub user: Value,
    /// Its media state.
    pub state: MediaState,
}

/// A message to a browser.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage {
    /// Sent once when the socket opens.
    Connected {
        /// The new session's id.
        id: SessionId,
        /// Resume token for `reuseId`.
        token: String,
        /// The user of a session opened with a join token (`?token=`).
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<Value>,
        /// TURN servers with this session's short-lived credentials (when the server has any).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// A new resume token for the session this socket holds, sent every half token lifetime.
    /// The one it replaces stays valid until its own expiry.
    ResumeToken {
        /// The token for the next `reuseId`.
        token: String,
    },
    /// Reply to `getId`.
    GetIdSuccess {
        /// The session id.
        id: SessionId,
    },
    /// Reply to `reuseId`: this connection now holds the earlier session.
    ReuseIdSuccess {
        /// The resumed session's id.
        id: SessionId,
        /// Its user (or null).
        user: Value,
        /// The channel it is still in.
        channel: Option<ChannelId>,
        /// The next resume token (tokens are single-use).
        token: String,
        /// Fresh TURN credentials, as in `connected`.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// Reply to `listSessions`.
    ListSessionsSuccess {
        /// The channel's sessions, the caller included.
        sessions: Vec<SessionInfo>,
    },
    /// Reply to `enter`.
    EnterSuccess {
        /// The channel entered.
        channel: ChannelId,
        /// Media goes through the SFU.
        sfu_enabled: bool,
    },
    /// A session entered the channel (sent to every member, the newcomer included).
    Entered {
        /// Who entered.
        session_id: SessionId,
        /// Their user.
        user: Value,
    },
    /// A session left the channel.
    Left {
        /// Who left.
        session_id: SessionId,
    },
    /// Chat in the channel.
    Messaged {
        /// The sender.
        session_id: SessionId,
        /// The message.
        message: ChatMessage,
    },
    /// An incoming offer.
    Called {
        /// The caller (for the SFU: the session whose media the offer carries).
        from: Option<SessionId>,
        /// The offer SDP.
        sdp: String,
        /// From the SFU.
        #[serde(rename = "isSFU")]
        is_sfu: bool,
    },
    /// An incoming answer.
    Answered {
        /// The answering peer (absent for the SFU).
        from: Option<SessionId>,
        /// The answer SDP.
        sdp: String,
        /// From the SFU.
        #[serde(rename = "isSFU")]
        is_sfu: bool,
    },
    /// An incoming ICE candidate.
    Candidated {
        /// The peer that sent it.
        from: Option<SessionId>,
        /// The candidate, or null.
        candidate: Value,
        /// From the SFU.
        #[serde(rename = "isSFU")]
        is_sfu: bool,
    },
    /// The callee declined a direct call.
    Rejected {
        /// The callee.
        from: SessionId,
        /// Their reason, if any.
        reason: Option<String>,
    },
    /// A user was bound to this session.
    Integrated {
        /// The user.
        user: Value,
        /// TURN servers with this session's credentials (sessions get them once integrated).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// The channel was deleted; the session is no longer in it.
    ChannelClosed {
        /// The deleted channel.
        channel: ChannelId,
    },
    /// A member's media state changed.
    UpdatedMediaState {
        /// Whose.
        session_id: SessionId,
        /// Which key.
        key: MediaKey,
        /// The new value.
        value: bool,
    },
    /// The channel's SFU media moved to another room (its node failed, restarted or is
    /// drained): drop the SFU PeerConnections, publish again and take the new subscribe offer.
    SfuRestart {
        /// The channel.
        channel: ChannelId,
    },
    /// The SFU channel's active speakers changed (at most every 200 ms).
    ActiveSpeakers {
        /// Loudest first; empty when nobody speaks.
        speakers: Vec<ActiveSpeaker>,
    },
    /// Dynacast: which simulcast layers of this session's published video (the m-line `mid`)
    /// anyone consumes; the SDK deactivates the other encodings. The lowest is always listed.
    SubscribedQualities {
        /// The m-line of the session's publish offer.
        mid: String,
        /// The consumed layers' rids, lowest first (`""` for a layer without a rid).
        qualities: Vec<String>,
        /// The consumed layers' indexes (0 = lowest), in the same order.
        layers: Vec<u8>,
    },
    /// Reply to `ping`.
    Pong,
    /// Success of a request that has no other reply, when it carried a `requestId`.
    Ack,
    /// A refused or malformed request. The connection stays open.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

/// One entry of [`ServerMessage::ActiveSpeakers`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveSpeaker {
    /// The speaking session.
    pub session_id: SessionId,
    /// Smoothed loudness, 0.01..=1 (linear, of full scale).
    pub level: f64,
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A decoded client frame: its optional request id and the message (or why it is invalid).
#[derive(Debug)]
pub struct ClientFrame {
    /// The `requestId` to echo in the reply.
    pub request_id: Option<Value>,
    /// The message, or the error to reply with.
    pub message: Result<ClientMessage, SignalError>,
}

const KNOWN_TYPES: &[&str] = &[
    "getId",
    "reuseId",
    "enter",
    "leave",
    "message",
    "listSessions",
    "call",
    "answer",
    "candidate",
    "reject",
    "integrateUser",
    "updateMediaState",
    "setSubscription",
    "ping",
];

/// Longest accepted `requestId` (as a string or number).
const MAX_REQUEST_ID_LEN: usize = 64;

impl ClientFrame {
    /// Decodes a text frame. Never fails: a bad frame yields an error to reply with.
    pub fn decode(text: &str) -> Self {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                return Self::invalid(None, ErrorCode::InvalidJson, format!("invalid JSON: {e}"));
            }
        };
        let request_id = value
            .get("requestId")
            .filter(|id| match id {
                Value::String(s) => s.len() <= MAX_REQUEST_ID_LEN,
                Value::Number(_) => true,
                _ => false,
            })
            .cloned();
        let Some(kind) = value.get("type").and_then(Value::as_str) else {
            return Self::invalid(
                request_id,
                ErrorCode::InvalidMessage,
                "a message must be a JSON object with a string `type`",
            );
        };
        let kind: String = kind.chars().take(40).collect();
        if !KNOWN_TYPES.contains(&kind.as_str()) {
            return Self::invalid(
                request_id,
                ErrorCode::UnknownType,
                format!("unknown message type `{kind}`"),
            );
        }
        let message = serde_json::from_value::<ClientMessage>(value).map_err(|e| {
            SignalError::new(ErrorCode::InvalidMessage, format!("invalid `{kind}`: {e}"))
        });
        Self {
            request_id,
            message,
        }
    }

    fn invalid(request_id: Option<Value>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request_id,
            message: Err(SignalError::new(code, message)),
        }
    }
}

impl ServerMessage {
    /// Encodes the message, adding `requestId` when the reply answers a request that had one.
    pub fn encode(&self, request_id: Option<&Value>) -> String {
        let Some(id) = request_id else {
            return serde_json::to_string(self).expect("server messages always serialize");
        };
        let mut value = serde_json::to_value(self).expect("server messages always serialize");
        if let Value::Object(map) = &mut value {
            map.insert("requestId".to_owned(), id.clone());
        }
        value.to_string()
    }
}

impl ServerMessage {
    /// The message a domain event's audience receives, or `None` for events no socket hears of
    /// (they still reach metrics and other subscribers). The only place events become wire
    /// messages.
    pub fn render(event: &DomainEvent) -> Option<Self> {
        use DomainEvent as E;
        let message = match event {
            E::MemberEntered { session, user, .. } => Self::Entered {
                session_id: session.clone(),
                user: user.clone(),
            },
            E::MemberLeft { session, .. } => Self::Left {
                session_id: session.clone(),
            },
            E::ChatSent { from, message, .. } => Self::Messaged {
                session_id: from.clone(),
                message: message.clone(),
            },
            E::MediaStateChanged {
                session,
                key,
                value,
                ..
            } => Self::UpdatedMediaState {
                session_id: session.clone(),
                key: *key,
                value: *value,
            },
            E::CallOffered { from, sdp, .. } => Self::Called {
                from: Some(from.clone()),
                sdp: sdp.clone(),
                is_sfu: false,
            },
            E::CallAnswered { from, sdp, .. } => Self::Answered {
                from: Some(from.clone()),
                sdp: sdp.clone(),
                is_sfu: false,
            },
            E::CandidateSent {
                from, candidate, ..
            } => Self::Candidated {
                from: Some(from.clone()),
                candidate: candidate.clone(),
                is_sfu: false,
            },
            E::CallRejected { from, reason, .. } => Self::Rejected {
                from: from.clone(),
                reason: reason.clone(),
            },
            E::UserIntegrated {
                user, ice_servers, ..
            } => Self::Integrated {
                user: user.clone(),
                ice_servers: ice_servers.clone(),
            },
            E::ChannelDeleted { channel } => Self::ChannelClosed {
                channel: channel.clone(),
            },
            E::SubscribeOffered { sdp, .. } => Self::Called {
                from: None,
                sdp: sdp.clone(),
                is_sfu: true,
            },
            E::SfuRestarted { channel, .. } => Self::SfuRestart {
                channel: channel.clone(),
            },
            E::MediaStranded { channel, .. } => Self::Error {
                code: ErrorCode::SfuUnavailable,
                message: format!(
                    "the SFU node of channel {channel} failed and no healthy SFU node can host \
                     its media now; publish again later"
                ),
            },
            E::MediaUnserved { code, message, .. } => Self::Error {
                code: *code,
                message: message.clone(),
            },
            E::ActiveSpeakersChanged { speakers, .. } => Self::ActiveSpeakers {
                speakers: speakers
                    .iter()
                    .map(|(session, level)| ActiveSpeaker {
                        session_id: session.clone(),
                        level: f64::from(*level) / 100.0,
                    })
                    .collect(),
            },
            E::SubscribedQualitiesChanged {
                mid,
                qualities,
                layers,
                ..
            } => Self::SubscribedQualities {
                mid: mid.clone(),
                qualities: qualities.clone(),
                layers: layers.clone(),
            },
            E::SessionLost { .. } => Self::Error {
                code: ErrorCode::SessionNotFound,
                message: "this session was lost while shared state was unavailable; reconnect"
                    .into(),
            },
            E::SessionStarted { .. }
            | E::SessionResumed { .. }
            | E::SessionEnded { .. }
            | E::ChannelCreated { .. }
            | E::ChannelPlaced { .. }
            | E::TrackPublished { .. }
            | E::TrackUnpublished { .. }
            | E::MediaReleased { .. }
            | E::SfuTransportClosed { .. }
            | E::SfuNodeUp { .. }
            | E::SfuNodeDown { .. }
            | E::SfuServerUp { .. }
            | E::SfuServerDown { .. }
            | E::RoomLost { .. }
            | E::SfuServerRegistered { .. }
            | E::SfuServerDraining { .. }
            | E::SfuServerRemoved { .. } => return None,
        };
        Some(message)
    }
}

/// Fuzz body: any text decodes to a message or to an error reply, and every reply encodes.
pub fn fuzz_client_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frame = ClientFrame::decode(text);
    if let Err(e) = &frame.message {
        let reply = ServerMessage::Error {
            code: e.code,
            message: e.message.clone(),
        };
        let encoded = reply.encode(frame.request_id.as_ref());
        assert!(serde_json::from_str::<Value>(&encoded).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_original_mooyaho_messages() {
        let frame = ClientFrame::decode(r#"{"type":"enter","channel":"c1"}"#);
        assert_eq!(
            frame.message.unwrap(),
            ClientMessage::Enter {
                channel: ChannelId::from("c1")
            }
        );
        let frame = ClientFrame::decode(
            r#"{"type":"candidate","to":"s2","candidate":{"candidate":"x"},"isSFU":false,"requestId":7}"#,
        );
        assert_eq!(frame.request_id, Some(serde_json::json!(7)));
        assert!(matches!(
            frame.message.unwrap(),
            ClientMessage::Candidate { is_sfu: false, .. }
        ));
        let frame =
            ClientFrame::decode(r#"{"type":"updateMediaState","key":"videoOff","value":true}"#);
        assert_eq!(
            frame.message.unwrap(),
            ClientMessage::UpdateMediaState {
                key: MediaKey::VideoOff,
                value: true
            }
        );
    }

    #[test]
    fn set_subscription_decodes_with_optional_audio_and_refuses_unknown_qualities() {
        let frame = ClientFrame::decode(
            r#"{"type":"setSubscription","sessionId":"s2","video":"low","requestId":1}"#,
        );
        assert_eq!(
            frame.message.unwrap(),
            ClientMessage::SetSubscription {
                session_id: SessionId::from("s2"),
                video: mooyaho_control::VideoQuality::Low,
                audio: None,
            }
        );
        let frame = ClientFrame::decode(
            r#"{"type":"setSubscription","sessionId":"s2","video":"off","audio":false}"#,
        );
        assert!(matches!(
            frame.message.unwrap(),
            ClientMessage::SetSubscription {
                video: mooyaho_control::VideoQuality::Off,
                audio: Some(false),
                ..
            }
        ));
        let code = |text: &str| ClientFrame::decode(text).message.unwrap_err().code;
        for bad in [
            r#"{"type":"setSubscription","sessionId":"s2","video":"ultra"}"#,
            r#"{"type":"setSubscription","sessionId":"s2","video":"HIGH"}"#,
            r#"{"type":"setSubscription","sessionId":"s2"}"#,
            r#"{"type":"setSubscription","video":"low"}"#,
            r#"{"type":"setSubscription","sessionId":"s2","video":"low","audio":"yes"}"#,
        ] {
            assert_eq!(code(bad), ErrorCode::InvalidMessage, "{bad}");
        }
    }

    #[test]
    fn bad_frames_decode_to_errors() {
        let code = |text: &str| ClientFrame::decode(text).message.unwrap_err().code;
        assert_eq!(code("{"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"subscribe","key":"x"}"#),
            ErrorCode::UnknownType
        );
        assert_eq!(code(r#"{"type":"enter"}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"updateMediaState","key":"admin","value":true}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"message","message":{"type":"html","x":1}}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn fuzz_body_handles_valid_and_hostile_text() {
        for text in [
            r#"{"type":"enter","channel":"c","requestId":"r"}"#,
            r#"{"type":"call","to":5}"#,
            r#"{"requestId":{"deep":[1,2]},"type":"x"}"#,
            "\u{0}\u{ffff}",
            "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
        ] {
            fuzz_client_frame(text.as_bytes());
        }
        fuzz_client_frame(&[0xff, 0xfe]);
    }

    #[test]
    fn replies_echo_request_id() {
        let text = ServerMessage::GetIdSuccess {
            id: SessionId::from("s"),
        }
        .encode(Some(&serde_json::json!("r1")));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "getIdSuccess");
        assert_eq!(value["requestId"], "r1");
        let text = ServerMessage::Called {
            from: Some(SessionId::from("a")),
            sdp: "v=0".into(),
            is_sfu: false,
        }
        .encode(None);
        assert_eq!(
            text,
            r#"{"type":"called","from":"a","sdp":"v=0","isSFU":false}"#
        );
    }

    #[test]
    fn sfu_offers_and_lost_sessions_render_to_todays_frames() {
        let offered = DomainEvent::SubscribeOffered {
            session: SessionId::from("s"),
            sdp: "v=0".into(),
        };
        assert_eq!(
            ServerMessage::render(&offered).unwrap().encode(None),
            r#"{"type":"called","from":null,"sdp":"v=0","isSFU":true}"#
        );
        let lost = DomainEvent::SessionLost {
            session: SessionId::from("s"),
        };
        assert_eq!(
            ServerMessage::render(&lost).unwrap().encode(None),
            r#"{"type":"error","code":"session_not_found","message":"this session was lost while shared state was unavailable; reconnect"}"#
        );
        let restarted = DomainEvent::SfuRestarted {
            channel: ChannelId::from("c"),
        };
        assert_eq!(
            ServerMessage::render(&restarted).unwrap().encode(None),
            r#"{"type":"sfuRestart","channel":"c"}"#
        );
        let stranded = DomainEvent::MediaStranded {
            channel: ChannelId::from("c"),
            node: crate::domain::ids::SfuServerId(2),
        };
        let stranded = ServerMessage::render(&stranded).unwrap().encode(None);
        assert!(
            stranded.starts_with(r#"{"type":"error","code":"sfu_unavailable","message":"the SFU node of channel c failed"#),
            "{stranded}"
        );
        let integrated = DomainEvent::UserIntegrated {
            session: SessionId::from("s"),
            ice_servers: Vec::new(),
            user: serde_json::json!({"id": "u"}),
        };
        assert_eq!(
            ServerMessage::render(&integrated).unwrap().encode(None),
            r#"{"type":"integrated","user":{"id":"u"}}"#
        );
        for silent in [
            DomainEvent::SessionStarted {
                session: SessionId::from("s"),
            },
            DomainEvent::TrackPublished {
                channel: ChannelId::from("c"),
                session: SessionId::from("s"),
                track: crate::domain::model::PublishedTrack {
                    id: "mic".into(),
                    mid: "0".into(),
                    kind: "audio".into(),
                },
            },
        ] {
            assert_eq!(ServerMessage::render(&silent), None, "{silent:?}");
        }
    }
}
