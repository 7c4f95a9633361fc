//! Media sessions over HTTP: WHIP publishers (RFC 9725) and WHEP viewers. Each is a session held
//! by this instance and a member of an SFU channel like a socket's, but without a socket: a
//! resource (`/whip/{channel}/{id}`, `/whep/{channel}/{id}`) names it until `DELETE`, until the
//! node closes its transport (never connected, consent expired), until its channel's media
//! restarts on another node, or until it leaves the channel (the channel was deleted), so an
//! abandoned one never lingers. The negotiation is the SFU path every member uses
//! ([`Placement::publish`], and [`Placement::answer_subscribe`] for a viewer's own offer); this
//! module only opens, names and ends the sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::channels::Channels;
use super::error::SignalError;
use super::events::{DomainEvent, Emitted, EventSubscriber};
use super::ids::{ChannelId, ConnectionId, SessionId};
use super::join_token::{JoinGrant, JoinTokenError};
use super::placement::Placement;
use super::ports::StoreError;
use super::session::{ConnectOptions, Connection, Sessions};
use super::shared::Shared;
use crate::turn::IceServer;

/// WHIP (or WHEP) sessions one user may hold in one channel at once. A further POST ends the
/// oldest (a server may end a session, RFC 9725 §4.2); more than this many still being set up
/// at once are refused. Without it one reusable join token opened members and tracks by the
/// hundred, each re-offered to every subscriber.
pub(crate) const MAX_SESSIONS_PER_USER: usize = 2;

/// Which protocol a resource speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpMediaKind {
    /// WHIP (RFC 9725): the client publishes.
    Whip,
    /// WHEP: the client views the channel's publishers.
    Whep,
}

impl HttpMediaKind {
    /// The path segment: `whip` or `whep`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whip => "whip",
            Self::Whep => "whep",
        }
    }
}

/// A resource just created: what the `201 Created` carries.
#[derive(Clone, Debug)]
pub struct CreatedResource {
    /// The resource id (the last segment of its `Location`).
    pub id: String,
    /// Its entity tag (RFC 9725 §4.3.1), quoted.
    pub etag: String,
    /// The node's SDP answer.
    pub answer: String,
    /// TURN servers the client may use (`Link: <…>; rel="ice-server"`), if the server has TURN.
    pub ice_servers: Vec<IceServer>,
}

/// Why a WHIP/WHEP request was refused. The API maps each to one status.
#[derive(Debug, thiserror::Error)]
pub enum HttpMediaError {
    /// No `Authorization: Bearer` (401).
    #[error("an `Authorization: Bearer <join token>` header is required")]
    MissingToken,
    /// The join token does not verify (401).
    #[error(transparent)]
    Token(#[from] JoinTokenError),
    /// The token's grant does not allow this (403).
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such channel (404).
    #[error("no such channel")]
    ChannelNotFound,
    /// A mesh channel has no SFU to publish to or view through (409).
    #[error(
        "this channel is a mesh channel (sfuEnabled: false): WHIP and WHEP need an SFU channel"
    )]
    NotSfu,
    /// No such WHIP/WHEP session here (404).
    #[error("no such {0} session (ended, or created on another signaling instance)")]
    UnknownResource(&'static str),
    /// A PATCH without `If-Match` (428).
    #[error("a PATCH needs `If-Match` with the session's ETag (RFC 9725 §4.3.1)")]
    PreconditionRequired,
    /// A PATCH whose `If-Match` is not the session's ETag (412).
    #[error("`If-Match` does not match the session's ETag")]
    EtagMismatch,
    /// The session's media went while its POST was still at the node: its channel was deleted,
    /// or its node failed over or restarted (503; a new POST places it again).
    #[error("this {0} session's channel or node changed while it was being set up: POST again")]
    EndedWhileOpening(&'static str),
    /// Too many sessions of this user in this channel are being set up at once (429).
    #[error("too many {0} sessions of this user are being set up at once: retry after they finish")]
    TooManyPending(&'static str),
    /// A PATCH asking for an ICE restart (422): not supported.
    #[error("ICE restarts are not supported: DELETE this session and POST a new offer instead")]
    IceRestart,
    /// The negotiation or the membership was refused (status by its code).
    #[error("{}", .0.message)]
    Refused(SignalError),
    /// Shared state failed (503/500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SignalError> for HttpMediaError {
    fn from(e: SignalError) -> Self {
        Self::Refused(e)
    }
}

/// One WHIP or WHEP session held here.
#[derive(Debug)]
struct Resource {
    kind: HttpMediaKind,
    channel: ChannelId,
    /// The join token's user id: the cap counts per user.
    user: String,
    session: SessionId,
    connection: ConnectionId,
    etag: String,
    /// The client's `a=ice-ufrag`: a PATCH naming another one is an ICE restart.
    ice_ufrag: Option<String>,
}

impl Resource {
    fn connection(&self) -> Connection {
        Connection {
            id: self.connection.clone(),
            session: self.session.clone(),
        }
    }
}

/// The WHIP/WHEP sessions this instance holds, by resource id and by session.
#[derive(Debug, Default)]
pub(super) struct Registry {
    inner: Mutex<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    by_id: HashMap<String, Resource>,
    by_session: HashMap<SessionId, String>,
    /// Per user and channel: its resource ids, oldest first, and how many are being set up.
    by_user: HashMap<UserKey, UserSessions>,
    /// Sessions opened but not yet registered (their POST is at the node), and whether what
    /// ends a session happened to them meanwhile: registering one that ended would hold a
    /// member whose media is gone, never ended (review 2026-12-02, finding 8).
    opening: HashMap<SessionId, bool>,
}

/// A user's sessions of one kind in one channel.
type UserKey = (HttpMediaKind, ChannelId, String);

#[derive(Debug, Default)]
struct UserSessions {
    ids: std::collections::VecDeque<String>,
    pending: usize,
}

impl Maps {
    fn forget(&mut self, id: &str) -> Option<Resource> {
        let resource = self.by_id.remove(id)?;
        self.by_session.remove(&resource.session);
        let key = (
            resource.kind,
            resource.channel.clone(),
            resource.user.clone(),
        );
        if let Some(user) = self.by_user.get_mut(&key) {
            user.ids.retain(|other| other != id);
            if user.ids.is_empty() && user.pending == 0 {
                self.by_user.remove(&key);
            }
        }
        Some(resource)
    }
}

/// A session opened but not yet registered (forgotten when dropped, e.g. when its POST fails).
pub(super) struct Opening {
    registry: Arc<Registry>,
    session: SessionId,
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.registry.lock().opening.remove(&self.session);
    }
}

/// A session being set up for a user (counted until dropped).
pub(super) struct Reservation {
    registry: Arc<Registry>,
    key: UserKey,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut maps = self.registry.lock();
        if let Some(user) = maps.by_user.get_mut(&self.key) {
            user.pending = user.pending.saturating_sub(1);
            if user.ids.is_empty() && user.pending == 0 {
                maps.by_user.remove(&self.key);
            }
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `session` as being set up until the returned guard is registered or dropped.
    fn opening(self: &Arc<Self>, session: SessionId) -> Opening {
        self.lock().opening.insert(session.clone(), false);
        Opening {
            registry: self.clone(),
            session,
        }
    }

    /// Registers the resource of an opened session. Refused (`false`, nothing held) when the
    /// session ended while it was being set up.
    fn register(&self, opening: Opening, id: String, resource: Resource) -> bool {
        let mut maps = self.lock();
        let ended = maps.opening.remove(&opening.session).unwrap_or(true);
        if ended {
            return false;
        }
        Self::insert_into(&mut maps, id, resource);
        true
    }

    #[cfg(test)]
    fn insert(&self, id: String, resource: Resource) {
        Self::insert_into(&mut self.lock(), id, resource);
    }

    fn insert_into(maps: &mut Maps, id: String, resource: Resource) {
        let key = (
            resource.kind,
            resource.channel.clone(),
            resource.user.clone(),
        );
        maps.by_user
            .entry(key)
            .or_default()
            .ids
            .push_back(id.clone());
        maps.by_session.insert(resource.session.clone(), id.clone());
        maps.by_id.insert(id, resource);
    }

    /// Counts a new session of `key`'s user as being set up, and takes out of the registry the
    /// oldest ones it must replace to stay within [`MAX_SESSIONS_PER_USER`] (to be ended).
    /// Refused while that many are already being set up.
    fn reserve(
        self: &Arc<Self>,
        key: UserKey,
    ) -> Result<(Reservation, Vec<Resource>), HttpMediaError> {
        let mut maps = self.lock();
        let user = maps.by_user.entry(key.clone()).or_default();
        if user.pending >= MAX_SESSIONS_PER_USER {
            return Err(HttpMediaError::TooManyPending(key.0.as_str()));
        }
        user.pending += 1;
        let excess = (user.ids.len() + user.pending).saturating_sub(MAX_SESSIONS_PER_USER);
        let oldest: Vec<String> = user.ids.iter().take(excess).cloned().collect();
        let replaced = oldest.iter().filter_map(|id| maps.forget(id)).collect();
        let reservation = Reservation {
            registry: self.clone(),
            key,
        };
        Ok((reservation, replaced))
    }

    fn holds(&self, session: &SessionId) -> bool {
        let maps = self.lock();
        maps.by_session.contains_key(session) || maps.opening.contains_key(session)
    }

    /// Takes out the registered resource of `session`; a session still being set up is marked
    /// ended instead (its registration will be refused).
    fn remove_session(&self, session: &SessionId) -> Option<Resource> {
        let mut maps = self.lock();
        if let Some(ended) = maps.opening.get_mut(session) {
            *ended = true;
            return None;
        }
        let id = maps.by_session.get(session)?.clone();
        maps.forget(&id)
    }

    /// Removes the resource `id` if it is a `kind` resource of `channel`.
    fn remove(&self, kind: HttpMediaKind, channel: &ChannelId, id: &str) -> Option<Resource> {
        let mut maps = self.lock();
        let matches = maps
            .by_id
            .get(id)
            .is_some_and(|r| r.kind == kind && &r.channel == channel);
        if !matches {
            return None;
        }
        maps.forget(id)
    }

    /// The entity tag and ICE ufrag of resource `id`, if it is a `kind` resource of `channel`.
    fn ice_state(
        &self,
        kind: HttpMediaKind,
        channel: &ChannelId,
        id: &str,
    ) -> Option<(String, Option<String>)> {
        let maps = self.lock();
        let resource = maps.by_id.get(id)?;
        (resource.kind == kind && &resource.channel == channel)
            .then(|| (resource.etag.clone(), resource.ice_ufrag.clone()))
    }
}

/// Hears of what ends a WHIP/WHEP session without a `DELETE` and queues the session for ending:
/// its transport closed on the node (never connected, consent expired), its channel's media
/// restarted (the client's PeerConnection is dead; it POSTs again), or it left the channel.
pub(super) struct EndWatch {
    registry: Arc<Registry>,
    ended: mpsc::UnboundedSender<SessionId>,
}

impl EndWatch {
    pub(super) fn new(registry: Arc<Registry>, ended: mpsc::UnboundedSender<SessionId>) -> Self {
        Self { registry, ended }
    }

    fn end(&self, session: &SessionId) {
        // Unbounded, yet only sessions held here are queued, each a few times at most.
        if self.registry.holds(session) {
            let _ = self.ended.send(session.clone());
        }
    }
}

#[async_trait]
impl EventSubscriber for EndWatch {
    async fn on_event(&self, emitted: &Emitted) {
        match &emitted.event {
            DomainEvent::SfuTransportClosed { session, .. }
            | DomainEvent::MemberLeft { session, .. } => self.end(session),
            DomainEvent::SfuRestarted { .. } | DomainEvent::MediaStranded { .. } => {
                for recipient in &emitted.audience {
                    self.end(&recipient.session);
                }
            }
            _ => {}
        }
    }
}

/// A session whose negotiation is under way, with what its registration needs.
struct Opened {
    kind: HttpMediaKind,
    channel: ChannelId,
    user: String,
    connection: Connection,
    opening: Opening,
    ice_ufrag: Option<String>,
}

/// WHIP publishers and WHEP viewers: open, name and end their sessions.
pub struct HttpMedia {
    shared: Arc<Shared>,
    sessions: Arc<Sessions>,
    channels: Arc<Channels>,
    placement: Arc<Placement>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for HttpMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMedia").finish_non_exhaustive()
    }
}

impl HttpMedia {
    pub(super) fn new(
        shared: Arc<Shared>,
        sessions: Arc<Sessions>,
        channels: Arc<Channels>,
        placement: Arc<Placement>,
        registry: Arc<Registry>,
    ) -> Self {
        Self {
            shared,
            sessions,
            channels,
            placement,
            registry,
        }
    }

    /// `POST /whip/{channel}`: the token's user enters `channel` and publishes `offer` through
    /// its node. Returns the new resource with the node's answer.
    pub async fn publish(
        &self,
        token: Option<&str>,
        channel: ChannelId,
        offer: String,
    ) -> Result<CreatedResource, HttpMediaError> {
        let kind = HttpMediaKind::Whip;
        let grant = self.admit(kind, token, &channel).await?;
        let (_reservation, user) = self.reserve(kind, &channel, &grant.0).await?;
        let opened = self.open(kind, grant, user, ice_ufrag(&offer)).await?;
        let answer = match self.placement.publish(&opened.connection, offer).await {
            Ok(answer) => answer,
            Err(e) => return Err(self.abandon(&opened.connection, e).await),
        };
        self.register(opened, answer).await
    }

    /// `POST /whep/{channel}`: the token's user enters `channel` and receives what is
    /// published there now (only `publisher`'s media when named) on the m-lines of `offer`.
    /// Returns the new resource with the node's answer.
    pub async fn view(
        &self,
        token: Option<&str>,
        channel: ChannelId,
        publisher: Option<SessionId>,
        offer: String,
    ) -> Result<CreatedResource, HttpMediaError> {
        let kind = HttpMediaKind::Whep;
        let grant = self.admit(kind, token, &channel).await?;
        let (_reservation, user) = self.reserve(kind, &channel, &grant.0).await?;
        let opened = self.open(kind, grant, user, ice_ufrag(&offer)).await?;
        let answer = match self
            .placement
            .answer_subscribe(&opened.connection, offer, publisher)
            .await
        {
            Ok(answer) => answer,
            Err(e) => return Err(self.abandon(&opened.connection, e).await),
        };
        self.register(opened, answer).await
    }

    /// Makes room for one more session of the token's user in `channel` (see
    /// [`MAX_SESSIONS_PER_USER`]): ends the oldest it replaces. Returns the reservation (held
    /// until the new session is registered or refused) and the user's key.
    async fn reserve(
        &self,
        kind: HttpMediaKind,
        channel: &ChannelId,
        join: &super::join_token::VerifiedJoin,
    ) -> Result<(Reservation, String), HttpMediaError> {
        let user = match &join.user["id"] {
            serde_json::Value::String(id) => id.clone(),
            other => other.to_string(),
        };
        let (reservation, replaced) =
            self.registry
                .reserve((kind, channel.clone(), user.clone()))?;
        for resource in replaced {
            tracing::info!(kind = kind.as_str(), %channel, session = %resource.session,
                "WHIP/WHEP session replaced by a newer one of its user");
            if let Err(e) = self.sessions.end_now(&resource.connection()).await {
                tracing::warn!(error = %e, "ending a replaced WHIP/WHEP session failed");
            }
        }
        Ok((reservation, user))
    }

    /// Checks the token and the channel before anything is created.
    async fn admit(
        &self,
        kind: HttpMediaKind,
        token: Option<&str>,
        channel: &ChannelId,
    ) -> Result<(super::join_token::VerifiedJoin, ChannelId), HttpMediaError> {
        let token = token.ok_or(HttpMediaError::MissingToken)?;
        let join = self.sessions.verify_join_token(token)?;
        if &join.grant.channel != channel {
            return Err(HttpMediaError::Forbidden(
                "this join token admits to another channel",
            ));
        }
        match kind {
            HttpMediaKind::Whip if !join.grant.publish => {
                return Err(HttpMediaError::Forbidden(
                    "this join token does not allow publishing",
                ));
            }
            HttpMediaKind::Whep if !join.grant.subscribe => {
                return Err(HttpMediaError::Forbidden(
                    "this join token does not allow receiving media",
                ));
            }
            _ => {}
        }
        let record = self
            .shared
            .store
            .channel(channel)
            .await?
            .ok_or(HttpMediaError::ChannelNotFound)?;
        if !record.sfu_enabled {
            return Err(HttpMediaError::NotSfu);
        }
        Ok((join, record.id))
    }

    /// Opens the session (the token's user, in its channel) with an outbox nobody reads: what a
    /// member hears on its socket has no HTTP counterpart. The session's own grant never lets
    /// the node offer to it: a WHIP publisher receives nothing, and a WHEP viewer receives what
    /// its own offer asked for (and publishes nothing).
    async fn open(
        &self,
        kind: HttpMediaKind,
        (mut join, channel): (super::join_token::VerifiedJoin, ChannelId),
        user: String,
        ice_ufrag: Option<String>,
    ) -> Result<Opened, HttpMediaError> {
        join.grant = JoinGrant {
            publish: join.grant.publish && kind == HttpMediaKind::Whip,
            subscribe: false,
            receives_own_offer: kind == HttpMediaKind::Whep,
            ..join.grant
        };
        let options = ConnectOptions {
            allow_direct_call: false,
            join: Some(join),
        };
        let (outbox, mut unread) = mpsc::channel(64);
        let (connection, _resume_token) = self.sessions.open(options, outbox).await?;
        let opening = self.registry.opening(connection.session.clone());
        let registry = self.registry.clone();
        let session = connection.session.clone();
        tokio::spawn(async move {
            while unread.recv().await.is_some() {}
            // The hub dropped the outbox: the session ended or was lost from the store.
            registry.remove_session(&session);
        });
        if let Err(e) = self.channels.enter(&connection, channel.clone()).await {
            return Err(self.abandon(&connection, e).await);
        }
        Ok(Opened {
            kind,
            channel,
            user,
            connection,
            opening,
            ice_ufrag,
        })
    }

    /// Ends a session whose negotiation failed and returns the failure.
    async fn abandon(&self, connection: &Connection, e: SignalError) -> HttpMediaError {
        if let Err(store) = self.sessions.end_now(connection).await {
            tracing::warn!(error = %store, "ending a refused WHIP/WHEP session failed");
        }
        HttpMediaError::Refused(e)
    }

    /// Holds the negotiated session under a new resource id, unless it ended meanwhile (then
    /// it is ended for good and the POST refused).
    async fn register(
        &self,
        opened: Opened,
        answer: String,
    ) -> Result<CreatedResource, HttpMediaError> {
        let Opened {
            kind,
            channel,
            user,
            connection,
            opening,
            ice_ufrag,
        } = opened;
        let id = random_hex();
        let etag = format!("\"{}\"", &random_hex()[..16]);
        let ice_servers = self.shared.config.ice_servers(&connection.session);
        let resource = Resource {
            kind,
            channel: channel.clone(),
            user,
            session: connection.session.clone(),
            connection: connection.id.clone(),
            etag: etag.clone(),
            ice_ufrag,
        };
        if !self.registry.register(opening, id.clone(), resource) {
            tracing::info!(kind = kind.as_str(), %channel, session = %connection.session,
                "WHIP/WHEP session ended while it was set up: refused");
            if let Err(e) = self.sessions.end_now(&connection).await {
                tracing::warn!(error = %e, "ending a WHIP/WHEP session that ended early failed");
            }
            return Err(HttpMediaError::EndedWhileOpening(kind.as_str()));
        }
        tracing::info!(kind = kind.as_str(), %channel, session = %connection.session,
            "WHIP/WHEP session created");
        Ok(CreatedResource {
            id,
            etag,
            answer,
            ice_servers,
        })
    }

    /// `DELETE` of a resource: its session leaves the channel and ends.
    pub async fn delete(
        &self,
        kind: HttpMediaKind,
        channel: &ChannelId,
        id: &str,
    ) -> Result<(), HttpMediaError> {
        let resource = self
            .registry
            .remove(kind, channel, id)
            .ok_or(HttpMediaError::UnknownResource(kind.as_str()))?;
        tracing::info!(kind = kind.as_str(), %channel, session = %resource.session,
            "WHIP/WHEP session deleted");
        self.sessions.end_now(&resource.connection()).await?;
        Ok(())
    }

    /// `PATCH` of a resource with a trickle-ICE fragment (RFC 8840). The node is ICE-lite and
    /// learns the client's addresses from its connectivity checks, so trickled candidates are
    /// not needed and are accepted as such; an ICE restart (a new ufrag, or `If-Match: *`) is
    /// refused, as RFC 9725 §4.3.2 allows a session that does not support it.
    pub fn trickle(
        &self,
        kind: HttpMediaKind,
        channel: &ChannelId,
        id: &str,
        if_match: Option<&str>,
        fragment: &str,
    ) -> Result<(), HttpMediaError> {
        let (etag, ufrag) = self
            .registry
            .ice_state(kind, channel, id)
            .ok_or(HttpMediaError::UnknownResource(kind.as_str()))?;
        check_trickle(&etag, ufrag.as_deref(), if_match, fragment)
    }

    /// Ends the session if it is a WHIP/WHEP session held here (see [`EndWatch`]).
    pub(super) async fn end_session(&self, session: &SessionId) {
        let Some(resource) = self.registry.remove_session(session) else {
            return;
        };
        tracing::info!(kind = resource.kind.as_str(), channel = %resource.channel,
            %session, "WHIP/WHEP session ended: its media is gone");
        if let Err(e) = self.sessions.end_now(&resource.connection()).await {
            tracing::warn!(error = %e, %session, "ending a WHIP/WHEP session failed");
        }
    }

    /// WHIP/WHEP sessions held here.
    pub fn len(&self) -> usize {
        self.registry.lock().by_id.len()
    }

    /// No WHIP/WHEP session is held here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A trickle PATCH against a session whose entity tag is `etag` and whose client ICE ufrag is
/// `ufrag`: `If-Match` is required and must be the tag; `If-Match: *` or another ufrag is an ICE
/// restart (RFC 9725 §4.3.1, §4.3.2).
fn check_trickle(
    etag: &str,
    ufrag: Option<&str>,
    if_match: Option<&str>,
    fragment: &str,
) -> Result<(), HttpMediaError> {
    let if_match = if_match.ok_or(HttpMediaError::PreconditionRequired)?.trim();
    if if_match == "*" {
        return Err(HttpMediaError::IceRestart);
    }
    if if_match != etag {
        return Err(HttpMediaError::EtagMismatch);
    }
    match (ice_ufrag(fragment), ufrag) {
        (Some(asked), Some(current)) if asked != current => Err(HttpMediaError::IceRestart),
        _ => Ok(()),
    }
}

/// The first `a=ice-ufrag` of an SDP or SDP fragment.
fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=ice-ufrag:"))
        .map(|ufrag| ufrag.trim().to_owned())
}

/// 128 random bits in hex: resource ids are capabilities (knowing one lets you end the session).
fn random_hex() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::Recipient;
    use crate::domain::ids::InstanceId;

    const FRAGMENT: &str = "a=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecretsecret\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\n";

    #[test]
    fn trickle_needs_the_entity_tag_and_the_same_ufrag() {
        let ok = check_trickle("\"t1\"", Some("abcd"), Some("\"t1\""), FRAGMENT);
        assert!(ok.is_ok(), "{ok:?}");
        // A fragment without a ufrag (candidates only) is trickle too.
        assert!(check_trickle("\"t1\"", Some("abcd"), Some(" \"t1\" "), "a=mid:0\r\n").is_ok());
        let cases = [
            (None, FRAGMENT, "PreconditionRequired"),
            (Some("\"t0\""), FRAGMENT, "EtagMismatch"),
            (Some("*"), FRAGMENT, "IceRestart"),
            (
                Some("\"t1\""),
                "a=ice-ufrag:efgh\r\na=ice-pwd:x\r\n",
                "IceRestart",
            ),
        ];
        for (if_match, fragment, expected) in cases {
            let refused = check_trickle("\"t1\"", Some("abcd"), if_match, fragment).unwrap_err();
            assert!(
                format!("{refused:?}").starts_with(expected),
                "{if_match:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn the_offer_s_first_ufrag_is_the_session_s() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag: u1 \r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:u2\r\n";
        assert_eq!(ice_ufrag(offer).as_deref(), Some("u1"));
        assert_eq!(ice_ufrag("v=0\r\n"), None);
    }

    fn resource(kind: HttpMediaKind, session: &str) -> Resource {
        Resource {
            kind,
            channel: ChannelId::from("c"),
            user: "u".to_owned(),
            session: SessionId::from(session),
            connection: ConnectionId::from("conn"),
            etag: "\"t\"".to_owned(),
            ice_ufrag: None,
        }
    }

    #[test]
    fn a_user_keeps_at_most_two_sessions_per_channel_and_kind() {
        let registry = Arc::new(Registry::default());
        let key = (HttpMediaKind::Whip, ChannelId::from("c"), "u".to_owned());
        for (i, session) in ["s1", "s2"].iter().enumerate() {
            let (reservation, replaced) = registry.reserve(key.clone()).unwrap();
            assert!(replaced.is_empty());
            registry.insert(format!("r{i}"), resource(HttpMediaKind::Whip, session));
            drop(reservation);
        }
        // A third replaces the oldest.
        let (held, replaced) = registry.reserve(key.clone()).unwrap();
        assert_eq!(replaced.len(), 1);
        assert_eq!(replaced[0].session, SessionId::from("s1"));
        // Two being set up at once is the most: a third waits its turn (429).
        let (held_too, _) = registry.reserve(key.clone()).unwrap();
        assert!(matches!(
            registry.reserve(key.clone()),
            Err(HttpMediaError::TooManyPending("whip"))
        ));
        drop((held, held_too));
        // Another kind or channel counts apart; nothing is left behind once all are gone.
        let other = (HttpMediaKind::Whep, ChannelId::from("c"), "u".to_owned());
        assert!(registry.reserve(other).unwrap().1.is_empty());
        registry.remove_session(&SessionId::from("s1"));
        registry.remove_session(&SessionId::from("s2"));
        let maps = registry.lock();
        assert!(
            maps.by_id.is_empty() && maps.by_user.is_empty(),
            "{:?}",
            maps.by_user
        );
    }

    #[test]
    fn resources_are_found_only_under_their_protocol_and_channel() {
        let registry = Registry::default();
        registry.insert("r1".to_owned(), resource(HttpMediaKind::Whip, "s1"));
        let c = ChannelId::from("c");
        assert!(registry.ice_state(HttpMediaKind::Whep, &c, "r1").is_none());
        assert!(
            registry
                .ice_state(HttpMediaKind::Whip, &ChannelId::from("d"), "r1")
                .is_none()
        );
        assert!(registry.remove(HttpMediaKind::Whep, &c, "r1").is_none());
        assert!(registry.holds(&SessionId::from("s1")));
        let removed = registry.remove(HttpMediaKind::Whip, &c, "r1").unwrap();
        assert_eq!(removed.session, SessionId::from("s1"));
        assert!(!registry.holds(&SessionId::from("s1")));
        assert!(registry.remove_session(&SessionId::from("s1")).is_none());
    }

    /// Review finding 8: what ends a session while its POST is at the node (channel deleted,
    /// node failed over) must not be forgotten when the POST comes back.
    #[tokio::test]
    async fn a_session_that_ends_while_it_is_set_up_is_not_registered() {
        let registry = Arc::new(Registry::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watch = EndWatch::new(registry.clone(), tx);
        let opening = registry.opening(SessionId::from("whip"));
        assert!(registry.holds(&SessionId::from("whip")));
        let gone = Emitted {
            event: DomainEvent::SfuRestarted {
                channel: ChannelId::from("c"),
            },
            audience: vec![Recipient {
                session: SessionId::from("whip"),
                instance: InstanceId::from("i"),
            }],
        };
        watch.on_event(&gone).await;
        assert_eq!(rx.try_recv().ok(), Some(SessionId::from("whip")));
        assert!(registry.remove_session(&SessionId::from("whip")).is_none());
        let whip = resource(HttpMediaKind::Whip, "whip");
        assert!(!registry.register(opening, "r1".to_owned(), whip));
        assert!(!registry.holds(&SessionId::from("whip")));
        assert!(registry.lock().by_id.is_empty() && registry.lock().by_user.is_empty());

        // Untouched while it was set up: registered; a failed POST's guard leaves nothing.
        let opening = registry.opening(SessionId::from("whep"));
        assert!(registry.register(
            opening,
            "r2".to_owned(),
            resource(HttpMediaKind::Whep, "whep")
        ));
        assert!(registry.holds(&SessionId::from("whep")));
        assert!(registry.lock().opening.is_empty());
        drop(registry.opening(SessionId::from("failed")));
        assert!(!registry.holds(&SessionId::from("failed")));
    }

    #[tokio::test]
    async fn the_watch_queues_only_sessions_held_here_whose_media_went() {
        let registry = Arc::new(Registry::default());
        registry.insert("r1".to_owned(), resource(HttpMediaKind::Whip, "whip"));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watch = EndWatch::new(registry, tx);
        let recipient = |s: &str| Recipient {
            session: SessionId::from(s),
            instance: InstanceId::from("i"),
        };
        let events = [
            DomainEvent::SfuTransportClosed {
                node: crate::domain::ids::SfuServerId(1),
                session: SessionId::from("whip"),
                side: "publish".to_owned(),
                reason: "consent expired".to_owned(),
            },
            DomainEvent::SfuTransportClosed {
                node: crate::domain::ids::SfuServerId(1),
                session: SessionId::from("socket-member"),
                side: "publish".to_owned(),
                reason: "consent expired".to_owned(),
            },
            DomainEvent::SessionEnded {
                session: SessionId::from("whip"),
            },
        ];
        for event in events {
            let emitted = Emitted {
                event,
                audience: Vec::new(),
            };
            watch.on_event(&emitted).await;
        }
        let restarted = Emitted {
            event: DomainEvent::SfuRestarted {
                channel: ChannelId::from("c"),
            },
            audience: vec![recipient("socket-member"), recipient("whip")],
        };
        watch.on_event(&restarted).await;
        let mut queued = Vec::new();
        while let Ok(session) = rx.try_recv() {
            queued.push(session);
        }
        assert_eq!(queued, [SessionId::from("whip"), SessionId::from("whip")]);
    }
}
