//! Records the store keeps: channels, sessions and SFU nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{ChannelId, ConnectionId, InstanceId, SessionId, SfuServerId};
use super::join_token::JoinGrant;

/// A channel: a room that sessions enter. Mesh unless `sfu_enabled`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// The channel's id.
    pub id: ChannelId,
    /// Media goes through an SFU node rather than a mesh.
    pub sfu_enabled: bool,
    /// The node hosting the channel's room, once placed (placement happens at the first SFU join).
    pub sfu_server_id: Option<SfuServerId>,
    /// The room's id on that node.
    #[serde(default)]
    pub sfu_room: Option<String>,
    /// Further nodes serving members of the channel (DESIGN §7.2: a member whose channel's node
    /// is full, draining or disabled is served by another), each with the channel's room there.
    /// Empty while one node serves it all. Never serialized empty: Redis' cjson would write an
    /// empty list back as an object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sfu_spans: Vec<SfuSpan>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// A node serving some of a channel's members, besides the channel's first node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SfuSpan {
    /// The node.
    pub node: SfuServerId,
    /// The channel's room on it.
    pub room: String,
}

impl ChannelRecord {
    /// Every node serving the channel with its room there, the first node first (empty while
    /// unplaced).
    pub fn serving(&self) -> Vec<(SfuServerId, &str)> {
        let first = self.sfu_server_id.zip(self.sfu_room.as_deref());
        first
            .into_iter()
            .chain(self.sfu_spans.iter().map(|s| (s.node, s.room.as_str())))
            .collect()
    }

    /// The channel's room on `node`, if `node` serves it.
    pub fn room_on(&self, node: SfuServerId) -> Option<&str> {
        self.serving()
            .into_iter()
            .find(|(on, _)| *on == node)
            .map(|(_, room)| room)
    }

    /// The ids of every node serving the channel, the first node first.
    pub fn sfu_server_ids(&self) -> Vec<SfuServerId> {
        self.serving().into_iter().map(|(node, _)| node).collect()
    }
}

impl ChannelRecord {
    /// Puts channels in listing order, the order every store's `channels()` returns: oldest
    /// first, ties (one millisecond) by id, so a listing is stable across calls and backends.
    pub fn sort_oldest_first(channels: &mut [Self]) {
        channels.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    }
}

/// Microphone/camera state a session announces to its channel (`updateMediaState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaState {
    /// The microphone is muted.
    pub muted: bool,
    /// The camera is off.
    pub video_off: bool,
}

/// The keys of [`MediaState`] a client may update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaKey {
    /// `muted`
    #[serde(rename = "muted")]
    Muted,
    /// `videoOff`
    #[serde(rename = "videoOff")]
    VideoOff,
}

impl MediaState {
    /// Sets one key.
    pub fn set(&mut self, key: MediaKey, value: bool) {
        match key {
            MediaKey::Muted => self.muted = value,
            MediaKey::VideoOff => self.video_off = value,
        }
    }
}

/// Where a direct (channel-less) call between two sessions stands, seen from one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallState {
    /// This session offered; the peer has not answered.
    Outgoing,
    /// The peer offered; this session has not accepted or rejected.
    Incoming,
    /// Both sides may signal each other.
    Accepted,
}

/// Where a live session's socket is and which channel it is in: all a channel broadcast needs
/// of each member (reading whole records made every join into a room of N read N records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRoute {
    /// The instance holding its socket.
    pub instance: InstanceId,
    /// The channel it is in.
    pub channel: Option<ChannelId>,
}

/// A session as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session's id.
    pub id: SessionId,
    /// The signaling instance whose socket holds the session.
    pub instance: InstanceId,
    /// The connection currently holding it (changes on resume).
    pub connection: ConnectionId,
    /// The integrated user object (`None` until `integrateUser`).
    pub user: Option<Value>,
    /// Announced microphone/camera state.
    pub state: MediaState,
    /// The channel the session is in.
    pub channel: Option<ChannelId>,
    /// The client accepts direct calls (a connect-time option).
    pub allow_direct_call: bool,
    /// The hashes of the secrets that let a new connection resume this session (single-use).
    pub resume: ResumeTokens,
    /// A socket holds the session now (false during the resume grace window).
    pub connected: bool,
    /// Direct-call relations with other sessions.
    pub calls: BTreeMap<SessionId, CallState>,
    /// What the join token this session connected with allows (`None`: no token, no limits).
    #[serde(default)]
    pub grant: Option<JoinGrant>,
    /// The tracks its last accepted SFU publish carries (empty when it publishes nothing), so
    /// that whoever ends its publishing can say which tracks went.
    #[serde(default)]
    pub published: Vec<PublishedTrack>,
    /// The SFU node serving this member's publish and subscribe transports (one of its
    /// channel's [`ChannelRecord::serving`] nodes; a stale one is chosen again).
    #[serde(default)]
    pub sfu_node: Option<SfuServerId>,
}

/// One track a session publishes through the SFU, as its publish offer named it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedTrack {
    /// The track id of the offer's `a=msid` (what the browser calls `MediaStreamTrack.id`), or
    /// the mid when the offer names none.
    pub id: String,
    /// The m-line's mid in the publish session.
    pub mid: String,
    /// `audio` or `video`.
    pub kind: String,
}

/// A stored resume token: the SHA-256 of the secret handed to the client, never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenHash {
    /// Lower-case hex SHA-256 of the token.
    pub hash: String,
    /// When it stops being accepted, milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// The tokens that resume a session. A connected session's token is rotated every half
/// lifetime; the one it replaced stays valid until its own expiry, so a client whose socket died
/// before it saw the rotation can still resume. Resuming with either clears both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeTokens {
    /// The token last handed out.
    pub current: TokenHash,
    /// The one it replaced, if a rotation happened since the last resume.
    pub previous: Option<TokenHash>,
}

/// What a successful resume writes: the new holder and its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The instance whose socket now holds the session.
    pub instance: InstanceId,
    /// That socket.
    pub connection: ConnectionId,
    /// The next token.
    pub token: TokenHash,
}

#[cfg(test)]
impl SessionRecord {
    /// A test session `id` held by connection `c0` of instance `i` whose socket dropped (not
    /// connected): no user, no channel, no calls, `current` its only resume token.
    pub(crate) fn dropped_for_test(id: &str, current: TokenHash) -> Self {
        Self {
            id: SessionId::from(id),
            instance: InstanceId::from("i"),
            connection: ConnectionId::from("c0"),
            user: None,
            state: MediaState::default(),
            channel: None,
            allow_direct_call: false,
            resume: ResumeTokens {
                current,
                previous: None,
            },
            connected: false,
            calls: BTreeMap::new(),
            grant: None,
            published: Vec::new(),
            sfu_node: None,
        }
    }
}

/// A change to some fields of a session; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionUpdate {
    /// New holder instance.
    pub instance: Option<InstanceId>,
    /// New holder connection.
    pub connection: Option<ConnectionId>,
    /// New user object.
    pub user: Option<Value>,
    /// New media state.
    pub state: Option<MediaState>,
    /// New channel (`Some(None)` clears it).
    pub channel: Option<Option<ChannelId>>,
    /// Connected flag.
    pub connected: Option<bool>,
    /// The tracks it publishes now (`Some(vec![])` clears them).
    pub published: Option<Vec<PublishedTrack>>,
    /// The SFU node serving it (`Some(None)` clears it).
    pub sfu_node: Option<Option<SfuServerId>>,
}

impl SessionUpdate {
    /// The session is out of its channel: no channel, nothing published, no serving node.
    pub fn out_of_channel() -> Self {
        Self {
            channel: Some(None),
            published: Some(Vec::new()),
            sfu_node: Some(None),
            ..Self::default()
        }
    }
}

/// A registered SFU node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SfuServerRecord {
    /// The node's id.
    pub id: SfuServerId,
    /// The node's QUIC control address, `host:port`.
    pub address: String,
    /// SHA-256 fingerprint of the node's certificate, pinned for the control connection.
    pub fingerprint: Option<String>,
    /// Excluded from new placements.
    pub disabled: bool,
    /// Draining: no new rooms, existing ones finish.
    pub draining: bool,
    /// Registration time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// What a caller gives to register an SFU node.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSfuServer {
    /// The node's QUIC control address, `host:port`.
    pub address: String,
    /// SHA-256 fingerprint of the node's certificate.
    pub fingerprint: Option<String>,
}

/// Milliseconds since the Unix epoch (the store's timestamps; not used for protocol timing).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A chat message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ChatMessage {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// Application data.
    Custom {
        /// Any JSON.
        data: Value,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str, created_at_ms: u64) -> ChannelRecord {
        ChannelRecord {
            id: ChannelId::from(id),
            sfu_enabled: false,
            sfu_server_id: None,
            sfu_room: None,
            sfu_spans: Vec::new(),
            created_at_ms,
        }
    }

    #[test]
    fn channels_list_oldest_first_and_by_id_within_one_millisecond() {
        let mut channels = vec![channel("b", 5), channel("z", 1), channel("a", 5)];
        ChannelRecord::sort_oldest_first(&mut channels);
        let order: Vec<_> = channels.iter().map(|c| c.id.0.as_str()).collect();
        assert_eq!(order, ["z", "a", "b"]);
    }
}
