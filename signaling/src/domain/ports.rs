//! The seams the domain needs from the outside world: a [`Store`] for shared state and a [`Bus`]
//! that carries messages to sessions held by other instances. Both are chosen once, in
//! `state.rs`; the domain never sees Redis or files.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::ids::{ChannelId, ConnectionId, InstanceId, SessionId, SfuServerId};
use super::model::{
    CallState, ChannelRecord, NewSfuServer, SessionRecord, SessionRoute, SessionUpdate,
    SfuServerRecord, SfuSpan, Takeover, TokenHash,
};

/// A failure of the store or the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backing service cannot be reached now; the request may succeed later.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded (a bug or a foreign writer).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// Channels and their memberships.
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// Stores a new channel.
    async fn create_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError>;
    /// One channel.
    async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError>;
    /// Every channel, oldest first.
    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError>;
    /// Places an unplaced channel on `server`'s `room`, atomically. Returns the channel as it
    /// now is (placed by this call or by a concurrent one), or `None` if it does not exist.
    async fn place_channel(
        &self,
        id: &ChannelId,
        server: SfuServerId,
        room: &str,
    ) -> Result<Option<ChannelRecord>, StoreError>;
    /// Clears the placement if the channel is still on `room` (its node lost it), atomically.
    /// Returns whether this call cleared it, so that of several instances noticing one lost
    /// room only one places the channel again and tells its members.
    async fn unplace_channel(&self, id: &ChannelId, room: &str) -> Result<bool, StoreError>;
    /// Adds `span` (a further node serving the channel, with its room there) if the channel is
    /// still placed on `first_room` and no node of its serves it already, atomically. Returns the
    /// channel as it now is (with this span, or with the one a concurrent call added on that
    /// node), or `None` if it does not exist. Unplacing clears the spans too.
    async fn add_channel_span(
        &self,
        id: &ChannelId,
        first_room: &str,
        span: &SfuSpan,
    ) -> Result<Option<ChannelRecord>, StoreError>;
    /// Removes `span` if the channel still has it (its node failed, or serves nobody any
    /// more), atomically. Returns whether this call removed it.
    async fn remove_channel_span(&self, id: &ChannelId, span: &SfuSpan)
    -> Result<bool, StoreError>;
    /// Deletes a channel and its memberships; returns the members it had, or `None` if unknown.
    async fn delete_channel(&self, id: &ChannelId) -> Result<Option<Vec<SessionId>>, StoreError>;
    /// Adds or removes a member. Returns whether this call changed the membership, so that of
    /// several instances removing one stale member only one tells the others.
    async fn set_member(
        &self,
        channel: &ChannelId,
        session: &SessionId,
        member: bool,
    ) -> Result<bool, StoreError>;
    /// The channel's member sessions (possibly including sessions whose presence expired).
    async fn members(&self, channel: &ChannelId) -> Result<Vec<SessionId>, StoreError>;
    /// The member sessions of several channels, in order, in one round trip (unknown channels
    /// have none).
    async fn members_of(&self, channels: &[ChannelId]) -> Result<Vec<Vec<SessionId>>, StoreError>;
}

/// Sessions, with presence.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session.
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// One live session.
    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// Several sessions, in order; missing ones are `None`.
    async fn sessions(&self, ids: &[SessionId]) -> Result<Vec<Option<SessionRecord>>, StoreError>;
    /// Where several sessions are (instance and channel), in order, in one round trip; missing
    /// ones are `None`.
    async fn routes(&self, ids: &[SessionId]) -> Result<Vec<Option<SessionRoute>>, StoreError>;
    /// Changes some fields; returns false if the session does not exist.
    async fn update_session(
        &self,
        id: &SessionId,
        update: &SessionUpdate,
    ) -> Result<bool, StoreError>;
    /// Sets (or with `None` removes) the call relation `session` → `peer`.
    async fn set_call(
        &self,
        session: &SessionId,
        peer: &SessionId,
        state: Option<CallState>,
    ) -> Result<(), StoreError>;
    /// Moves session `id` to a new holder if `presented` (a token hash) is its current or
    /// previous resume token and that token is still valid at `now_ms`; both tokens are replaced
    /// by `takeover.token`. Atomic: of concurrent calls presenting one token, at most one
    /// succeeds. Returns the record as it was before the move, or `None` when nothing matched.
    async fn resume_session(
        &self,
        id: &SessionId,
        presented: &str,
        now_ms: u64,
        takeover: &Takeover,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// Rotates the resume token of a session that `connection` still holds: the current token
    /// becomes the previous one and `next` the current one. Returns false otherwise.
    async fn rotate_token(
        &self,
        id: &SessionId,
        connection: &ConnectionId,
        next: &TokenHash,
    ) -> Result<bool, StoreError>;
    /// Counts one direct call offered to `callee` and returns how many it was offered in the
    /// current fixed `window` (this one included), across every instance: by anyone when
    /// `caller` is `None`, by that caller alone otherwise (separate counters).
    async fn count_direct_call(
        &self,
        callee: &SessionId,
        caller: Option<&SessionId>,
        window: std::time::Duration,
    ) -> Result<u64, StoreError>;
    /// Takes a dropped session out of reach of resumes if `connection` still holds it and it is
    /// not connected: its resume tokens expire. Atomic with [`Self::resume_session`], so a resume
    /// either happened before (and this returns false) or fails after. Idempotent.
    async fn retire_session(
        &self,
        id: &SessionId,
        connection: &ConnectionId,
    ) -> Result<bool, StoreError>;
    /// Deletes a session.
    async fn delete_session(&self, id: &SessionId) -> Result<(), StoreError>;
    /// Refreshes the presence of sessions held by this instance (Redis keys expire otherwise).
    /// Returns the ids that no longer exist (lost, e.g. expired during a store outage).
    async fn touch_sessions(&self, ids: &[SessionId]) -> Result<Vec<SessionId>, StoreError>;
}

/// The SFU fleet registry.
#[async_trait]
pub trait SfuRegistry: Send + Sync {
    /// Registers a node and assigns its id.
    async fn create_sfu_server(&self, new: &NewSfuServer) -> Result<SfuServerRecord, StoreError>;
    /// Every node, by id.
    async fn sfu_servers(&self) -> Result<Vec<SfuServerRecord>, StoreError>;
    /// Replaces a node's record; returns false if unknown.
    async fn update_sfu_server(&self, record: &SfuServerRecord) -> Result<bool, StoreError>;
    /// Removes a node; returns false if unknown.
    async fn delete_sfu_server(&self, id: SfuServerId) -> Result<bool, StoreError>;
    /// Records the fleet's view of a node's control link (`up` or down), atomically, and returns
    /// whether this call changed it: of several instances that see one change, exactly one
    /// learns it changed (and reports it once for the fleet). Unknown at first (either value is
    /// a change); not persisted by the embedded store.
    async fn set_sfu_link(&self, id: SfuServerId, up: bool) -> Result<bool, StoreError>;
}

/// All the state a signaling instance shares with its peers.
pub trait Store: ChannelStore + SessionStore + SfuRegistry {}
impl<T: ChannelStore + SessionStore + SfuRegistry> Store for T {}

/// What one instance sends another over the bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Envelope {
    /// Deliver an already-encoded server message to these sessions' sockets.
    Deliver {
        /// Target sessions held by the receiving instance.
        to: Vec<SessionId>,
        /// The JSON text frame.
        text: String,
    },
    /// Close the connection that holds `session`, unless it is `except` (the resuming one).
    Kick {
        /// The session that moved.
        session: SessionId,
        /// The connection that now holds it.
        except: ConnectionId,
    },
}

/// Carries envelopes between instances.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Sends an envelope to one instance's inbox (its own included).
    async fn publish(&self, to: &InstanceId, envelope: &Envelope) -> Result<(), StoreError>;
    /// Starts delivering this instance's inbox to `sink`. Called once at start-up; the bus keeps
    /// (re)subscribing in the background until the sink closes.
    fn subscribe(self: Arc<Self>, instance: InstanceId, sink: mpsc::Sender<Envelope>);
}

/// A failure talking to an SFU node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// No live control connection to the node.
    #[error("SFU node unreachable")]
    Unreachable,
    /// The exchange failed.
    #[error("SFU control request failed: {0}")]
    Failed(String),
}

/// What this instance knows of a node's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// A control connection is up.
    pub connected: bool,
    /// Connected and reporting load.
    pub healthy: bool,
    /// The last load report.
    pub load: Option<mooyaho_control::Load>,
    /// Why the last connection attempt failed.
    pub last_error: Option<String>,
}

/// What the fleet reports about one node, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeReport {
    /// This instance's control link to the node came up (the node proved the cluster secret).
    LinkUp,
    /// That link went down (the node stopped, restarted or was unregistered).
    LinkDown,
    /// An event the node sent (load reports are kept by the fleet, not reported).
    Event(mooyaho_control::Event),
}

/// The SFU nodes, as the domain uses them.
#[async_trait]
pub trait SfuNodes: Send + Sync {
    /// Sends a request to a node and waits for its reply.
    async fn call(
        &self,
        node: SfuServerId,
        request: mooyaho_control::Request,
    ) -> Result<mooyaho_control::Response, SfuError>;
    /// The node's state as of now.
    fn status(&self, node: SfuServerId) -> NodeStatus;
}
