//! A session's life: connect, integrate, enter/leave channels, resume after a dropped socket, end.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::Signaling;
use super::error::{ErrorCode, SignalError};
use super::events::DomainEvent;
use super::hub::Outgoing;
use super::ids::{ChannelId, ConnectionId, SessionId};
use super::model::{
    ChatMessage, MediaKey, MediaState, ResumeTokens, SessionRecord, SessionUpdate, Takeover, now_ms,
};
use super::ports::StoreError;
use super::token;

/// Options a client chooses when it connects (query parameters of `/websocket`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectOptions {
    /// The client accepts direct calls from sessions outside its channel.
    pub allow_direct_call: bool,
}

/// One WebSocket connection as the domain sees it: which session it holds now.
#[derive(Debug)]
pub struct Connection {
    /// This connection's id.
    pub id: ConnectionId,
    /// The session it holds (changes on `reuseId`).
    pub session: SessionId,
}

/// A session this connection resumed (`reuseId`).
#[derive(Clone, Debug, PartialEq)]
pub struct Resumed {
    /// The resumed session.
    pub id: SessionId,
    /// Its user, if one was integrated.
    pub user: Option<Value>,
    /// The channel it is still in.
    pub channel: Option<ChannelId>,
    /// The next resume token (tokens are single-use).
    pub token: String,
}

/// The channel a session is in after `enter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelEntry {
    /// The channel.
    pub channel: ChannelId,
    /// Its media goes through the SFU.
    pub sfu_enabled: bool,
}

impl Signaling {
    /// Opens a session for a new socket. Returns the connection and its first resume token.
    pub async fn connect(
        &self,
        options: ConnectOptions,
        outbox: mpsc::Sender<Outgoing>,
    ) -> Result<(Connection, String), SignalError> {
        let (token, token_hash) = token::issue(self.token_expiry());
        let record = SessionRecord {
            id: SessionId::random(),
            instance: self.instance.clone(),
            connection: ConnectionId::random(),
            user: None,
            state: MediaState::default(),
            channel: None,
            allow_direct_call: options.allow_direct_call,
            resume: ResumeTokens {
                current: token_hash,
                previous: None,
            },
            connected: true,
            calls: BTreeMap::new(),
        };
        self.store.create_session(&record).await?;
        self.hub
            .register(record.id.clone(), record.connection.clone(), outbox);
        self.metrics.ws_connections.inc();
        self.metrics.ws_connections_total.inc();
        let connection = Connection {
            id: record.connection,
            session: record.id,
        };
        let started = DomainEvent::SessionStarted {
            session: connection.session.clone(),
        };
        self.events.record(started).await;
        Ok((connection, token))
    }

    /// `message`: chat to the session's channel.
    pub async fn send_chat(
        &self,
        connection: &Connection,
        message: ChatMessage,
    ) -> Result<(), SignalError> {
        let me = self.me(connection).await?;
        let channel = in_channel(&me)?;
        let sent = DomainEvent::ChatSent {
            channel: channel.clone(),
            from: me.id.clone(),
            message,
        };
        self.broadcast(channel, sent).await?;
        Ok(())
    }

    /// `updateMediaState`: stores one key of the session's media state and tells its channel.
    pub async fn update_media_state(
        &self,
        connection: &Connection,
        key: MediaKey,
        value: bool,
    ) -> Result<(), SignalError> {
        let me = self.me(connection).await?;
        let channel = in_channel(&me)?;
        let mut state = me.state;
        state.set(key, value);
        let update = SessionUpdate {
            state: Some(state),
            ..SessionUpdate::default()
        };
        self.store.update_session(&me.id, &update).await?;
        let changed = DomainEvent::MediaStateChanged {
            channel: channel.clone(),
            session: me.id.clone(),
            key,
            value,
        };
        self.broadcast(channel, changed).await?;
        Ok(())
    }

    /// The socket closed. The session stays resumable (and in its channel) for the grace window,
    /// then ends unless a new connection resumed it.
    pub async fn disconnect(self: &Arc<Self>, connection: Connection) {
        self.metrics.ws_connections.dec();
        self.hub.unregister(&connection.session, &connection.id);
        let still_ours = match self.store.session(&connection.session).await {
            Ok(Some(record)) => record.connection == connection.id,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "store unavailable at disconnect");
                true
            }
        };
        if !still_ours {
            return;
        }
        let update = SessionUpdate {
            connected: Some(false),
            ..SessionUpdate::default()
        };
        if let Err(e) = self
            .store
            .update_session(&connection.session, &update)
            .await
        {
            tracing::warn!(error = %e, "could not mark session disconnected");
        }
        let signaling = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(signaling.config.resume_grace).await;
            signaling.expire(connection).await;
        });
    }

    /// Ends the session if `connection` still holds it and it was not resumed.
    async fn expire(&self, connection: Connection) {
        // Retry while the store is down: a session must not linger in its channel forever.
        for attempt in 0..30u32 {
            match self.end_if_dropped(&connection).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, attempt, "ending session failed"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Ends the session `connection` held, unless it was resumed. Deciding from a read would let
    /// a resume land between the read and the end (the resumer told `reuseIdSuccess` for a
    /// session then deleted); retiring is one atomic store step that a later resume cannot undo.
    async fn end_if_dropped(&self, connection: &Connection) -> Result<(), StoreError> {
        if !self
            .store
            .retire_session(&connection.session, &connection.id)
            .await?
        {
            return Ok(());
        }
        match self.store.session(&connection.session).await? {
            Some(record) => self.end_session(&record).await,
            None => Ok(()),
        }
    }

    /// Removes a session: leaves its channel (telling the members), drops its calls, deletes it.
    pub(super) async fn end_session(&self, record: &SessionRecord) -> Result<(), StoreError> {
        if let Some(channel) = &record.channel {
            self.leave_channel(record, channel).await?;
        }
        for peer in record.calls.keys() {
            self.store.set_call(peer, &record.id, None).await?;
        }
        self.store.delete_session(&record.id).await?;
        let ended = DomainEvent::SessionEnded {
            session: record.id.clone(),
        };
        self.events.record(ended).await;
        tracing::debug!(session = %record.id, "session ended");
        Ok(())
    }

    /// Replaces the resume token of the session `connection` holds (the previous one stays valid
    /// until its own expiry). Returns the new token for the client, or `None` if the connection
    /// no longer holds the session.
    pub async fn rotate_token(
        &self,
        connection: &Connection,
    ) -> Result<Option<String>, StoreError> {
        let (token, token_hash) = token::issue(self.token_expiry());
        let rotated = self
            .store
            .rotate_token(&connection.session, &connection.id, &token_hash)
            .await?;
        Ok(rotated.then_some(token))
    }

    /// When a token issued now stops being accepted, milliseconds since the Unix epoch.
    fn token_expiry(&self) -> u64 {
        let lifetime =
            u64::try_from(self.config.resume_token_lifetime.as_millis()).unwrap_or(u64::MAX);
        now_ms().saturating_add(lifetime)
    }

    /// `reuseId`: this connection takes over an earlier session, if `presented` is its current
    /// or previous resume token; the fresh session it got at connect time ends.
    pub async fn reuse(
        &self,
        connection: &mut Connection,
        id: SessionId,
        presented: &str,
    ) -> Result<Resumed, SignalError> {
        let invalid = || {
            SignalError::new(
                ErrorCode::InvalidToken,
                "unknown, expired or already used resume token",
            )
        };
        if id == connection.session {
            return Err(SignalError::new(
                ErrorCode::InvalidMessage,
                "this connection already holds that session",
            ));
        }
        // The fresh session this socket got at connect time is replaced by the resumed one.
        let fresh = self.me(connection).await?;
        let (token, token_hash) = token::issue(self.token_expiry());
        let takeover = Takeover {
            instance: self.instance.clone(),
            connection: connection.id.clone(),
            token: token_hash,
        };
        // One atomic step checks and consumes the token: of two racing resumes, one wins.
        let old = self
            .store
            .resume_session(&id, &token::hash(presented), now_ms(), &takeover)
            .await?
            .ok_or_else(invalid)?;
        if old.instance == self.instance {
            self.hub.kick(&id, &connection.id);
        } else {
            let kick = super::ports::Envelope::Kick {
                session: id.clone(),
                except: connection.id.clone(),
            };
            self.bus.publish(&old.instance, &kick).await?;
        }
        self.hub.rekey(&connection.session, &id, &connection.id);
        connection.session = id.clone();
        self.end_session(&fresh).await?;
        let resumed = DomainEvent::SessionResumed {
            session: id.clone(),
        };
        self.events.record(resumed).await;
        Ok(Resumed {
            id,
            user: old.user,
            channel: old.channel,
            token,
        })
    }

    /// `enter`: the session enters a channel (leaving the one it was in); every member, the
    /// newcomer included, hears of it.
    pub async fn enter(
        &self,
        connection: &Connection,
        channel_id: ChannelId,
    ) -> Result<ChannelEntry, SignalError> {
        let me = self.me(connection).await?;
        let Some(user) = me.user.clone() else {
            return Err(SignalError::new(
                ErrorCode::NotIntegrated,
                "integrate a user with this session before entering a channel",
            ));
        };
        let Some(channel) = self.store.channel(&channel_id).await? else {
            return Err(SignalError::new(
                ErrorCode::ChannelNotFound,
                "no such channel",
            ));
        };
        let success = ChannelEntry {
            channel: channel.id.clone(),
            sfu_enabled: channel.sfu_enabled,
        };
        match &me.channel {
            Some(current) if current == &channel.id => return Ok(success),
            Some(current) => self.leave_channel(&me, current).await?,
            None => {}
        }
        // Membership is written before the reply so an immediate `listSessions` sees it.
        self.store.set_member(&channel.id, &me.id, true).await?;
        let update = SessionUpdate {
            channel: Some(Some(channel.id.clone())),
            ..SessionUpdate::default()
        };
        self.store.update_session(&me.id, &update).await?;
        let entered = DomainEvent::MemberEntered {
            channel: channel.id.clone(),
            session: me.id.clone(),
            user,
        };
        self.broadcast(&channel.id, entered).await?;
        if channel.sfu_enabled {
            self.sfu_entered(&me, &channel).await;
        }
        Ok(success)
    }

    /// `leave`: the session leaves its channel; the remaining members hear of it.
    pub async fn leave(&self, connection: &Connection) -> Result<(), SignalError> {
        let me = self.me(connection).await?;
        let channel = in_channel(&me)?;
        self.leave_channel(&me, channel).await?;
        Ok(())
    }

    /// Takes `me` out of `channel` and tells the remaining members.
    pub(super) async fn leave_channel(
        &self,
        me: &SessionRecord,
        channel: &ChannelId,
    ) -> Result<(), StoreError> {
        self.store.set_member(channel, &me.id, false).await?;
        let update = SessionUpdate {
            channel: Some(None),
            ..SessionUpdate::default()
        };
        self.store.update_session(&me.id, &update).await?;
        let left = DomainEvent::MemberLeft {
            channel: channel.clone(),
            session: me.id.clone(),
        };
        self.broadcast(channel, left).await?;
        self.sfu_release(&me.id, channel).await;
        Ok(())
    }

    /// `integrateUser` (anonymous mode only): binds `user` to the session, its id forced to the
    /// session id. Returns the user as bound.
    pub async fn integrate_self(
        &self,
        connection: &Connection,
        user: Value,
    ) -> Result<Value, SignalError> {
        if !self.config.allow_anonymous {
            return Err(SignalError::new(
                ErrorCode::Forbidden,
                "anonymous integration is disabled; the service server integrates users",
            ));
        }
        let Value::Object(mut fields) = user else {
            return Err(SignalError::new(
                ErrorCode::InvalidMessage,
                "`user` must be an object",
            ));
        };
        // In anonymous mode the user's id is the session id: a client cannot claim another's.
        fields.insert("id".to_owned(), Value::String(connection.session.0.clone()));
        let user = Value::Object(fields);
        let update = SessionUpdate {
            user: Some(user.clone()),
            ..SessionUpdate::default()
        };
        self.store
            .update_session(&connection.session, &update)
            .await?;
        // The client learns it from the reply; the event has no audience.
        let integrated = DomainEvent::UserIntegrated {
            session: connection.session.clone(),
            user: user.clone(),
        };
        self.events.record(integrated).await;
        Ok(user)
    }

    /// `listSessions`: the live members of the session's channel, itself included.
    pub async fn list_sessions(
        &self,
        connection: &Connection,
    ) -> Result<Vec<SessionRecord>, SignalError> {
        let me = self.me(connection).await?;
        let channel = in_channel(&me)?;
        Ok(self.live_members(channel).await?)
    }

    /// The session `connection` holds.
    pub(super) async fn me(&self, connection: &Connection) -> Result<SessionRecord, SignalError> {
        self.store
            .session(&connection.session)
            .await?
            .ok_or_else(|| SignalError::new(ErrorCode::SessionNotFound, "session has ended"))
    }

    /// Live members of a channel. A read: members whose presence expired (their instance died)
    /// or who moved on are left out but stay stored; removing them and telling the others is
    /// the write path's job ([`Self::prune_members`], [`Self::sweep_expired_members`]).
    pub(super) async fn live_members(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut per_channel = self.live_members_of(std::slice::from_ref(channel)).await?;
        Ok(per_channel.pop().unwrap_or_default())
    }

    /// Live members of several channels, in order: two store round trips however many channels.
    pub(super) async fn live_members_of(
        &self,
        channels: &[ChannelId],
    ) -> Result<Vec<Vec<SessionRecord>>, StoreError> {
        Ok(self
            .member_records(channels)
            .await?
            .into_iter()
            .zip(channels)
            .map(|(members, channel)| split_members(channel, members).0)
            .collect())
    }

    /// Each channel's stored members with their session records (`None` once expired).
    async fn member_records(
        &self,
        channels: &[ChannelId],
    ) -> Result<Vec<Vec<(SessionId, Option<SessionRecord>)>>, StoreError> {
        let ids = self.store.members_of(channels).await?;
        let flat: Vec<SessionId> = ids.iter().flatten().cloned().collect();
        let mut records = if flat.is_empty() {
            Vec::new()
        } else {
            self.store.sessions(&flat).await?
        }
        .into_iter();
        Ok(ids
            .into_iter()
            .map(|members| {
                members
                    .into_iter()
                    .map(|id| (id, records.next().flatten()))
                    .collect()
            })
            .collect())
    }

    /// Live members of `channel`, for a write: stale members are removed and the live ones told
    /// they left.
    pub(super) async fn prune_members(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut per_channel = self.member_records(std::slice::from_ref(channel)).await?;
        let (live, stale) = split_members(channel, per_channel.pop().unwrap_or_default());
        self.remove_members(channel, &live, stale).await?;
        Ok(live)
    }

    /// The timeout path (run with the presence refresh): members of any channel whose session
    /// expired from the store (their instance died) are removed, and the live ones told they left.
    pub(super) async fn sweep_expired_members(&self) -> Result<(), StoreError> {
        let channels: Vec<ChannelId> = self
            .store
            .channels()
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let per_channel = self.member_records(&channels).await?;
        for (channel, members) in channels.iter().zip(per_channel) {
            // Only expired sessions: a member whose record names another channel may be halfway
            // through `enter`, which writes the membership before the session.
            if members.iter().all(|(_, record)| record.is_some()) {
                continue;
            }
            let expired = members
                .iter()
                .filter(|(_, record)| record.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            let (live, _) = split_members(channel, members);
            self.remove_members(channel, &live, expired).await?;
        }
        Ok(())
    }

    /// Removes `gone` from `channel` and tells `live` of each removal this call made (another
    /// instance sweeping at the same time tells them of the rest).
    async fn remove_members(
        &self,
        channel: &ChannelId,
        live: &[SessionRecord],
        gone: Vec<SessionId>,
    ) -> Result<(), StoreError> {
        for id in gone {
            if self.store.set_member(channel, &id, false).await? {
                let left = DomainEvent::MemberLeft {
                    channel: channel.clone(),
                    session: id,
                };
                self.emit(left, &live.iter().collect::<Vec<_>>()).await;
            }
        }
        Ok(())
    }

    /// Emits `event` to every live member of `channel`.
    pub(super) async fn broadcast(
        &self,
        channel: &ChannelId,
        event: DomainEvent,
    ) -> Result<(), StoreError> {
        let members = self.prune_members(channel).await?;
        self.emit(event, &members.iter().collect::<Vec<_>>()).await;
        Ok(())
    }
}

/// The channel a session is in, or the error for requests that need one.
pub(super) fn in_channel(me: &SessionRecord) -> Result<&ChannelId, SignalError> {
    me.channel
        .as_ref()
        .ok_or_else(|| SignalError::new(ErrorCode::NotInChannel, "enter a channel first"))
}

/// Splits a channel's stored members into live records and stale ids (expired, or now in
/// another channel).
fn split_members(
    channel: &ChannelId,
    members: Vec<(SessionId, Option<SessionRecord>)>,
) -> (Vec<SessionRecord>, Vec<SessionId>) {
    let mut live = Vec::with_capacity(members.len());
    let mut stale = Vec::new();
    for (id, record) in members {
        match record {
            Some(record) if record.channel.as_ref() == Some(channel) => live.push(record),
            _ => stale.push(id),
        }
    }
    (live, stale)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::bus::InProcessBus;
    use crate::domain::SignalingConfig;
    use crate::domain::ids::InstanceId;
    use crate::domain::ids::SfuServerId;
    use crate::domain::model::{
        CallState, ChannelRecord, NewSfuServer, SfuServerRecord, TokenHash,
    };
    use crate::domain::ports::{ChannelStore, SessionStore, SfuRegistry};
    use crate::metrics::Metrics;
    use crate::store::EmbeddedStore;

    /// The embedded store, except that the first time the armed session is read or retired a
    /// resume of it (with the armed token) lands first: the race an expiry must survive.
    struct ResumeInTheGap {
        inner: EmbeddedStore,
        armed: Mutex<Option<(SessionId, String, Takeover)>>,
        resumed: AtomicBool,
    }

    impl ResumeInTheGap {
        async fn resume_now(&self, id: &SessionId) {
            let armed = {
                let mut armed = self.armed.lock().unwrap();
                match armed.as_ref() {
                    Some((session, _, _)) if session == id => armed.take(),
                    _ => None,
                }
            };
            if let Some((session, presented, takeover)) = armed {
                let resumed = self
                    .inner
                    .resume_session(&session, &presented, now_ms(), &takeover)
                    .await
                    .unwrap();
                self.resumed.store(resumed.is_some(), Ordering::SeqCst);
            }
        }
    }

    #[async_trait::async_trait]
    impl ChannelStore for ResumeInTheGap {
        async fn create_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
            self.inner.create_channel(channel).await
        }
        async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
            self.inner.channel(id).await
        }
        async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
            self.inner.channels().await
        }
        async fn place_channel(
            &self,
            id: &ChannelId,
            server: SfuServerId,
            room: &str,
        ) -> Result<Option<ChannelRecord>, StoreError> {
            self.inner.place_channel(id, server, room).await
        }
        async fn unplace_channel(&self, id: &ChannelId, room: &str) -> Result<(), StoreError> {
            self.inner.unplace_channel(id, room).await
        }
        async fn delete_channel(
            &self,
            id: &ChannelId,
        ) -> Result<Option<Vec<SessionId>>, StoreError> {
            self.inner.delete_channel(id).await
        }
        async fn set_member(
            &self,
            channel: &ChannelId,
            session: &SessionId,
            member: bool,
        ) -> Result<bool, StoreError> {
            self.inner.set_member(channel, session, member).await
        }
        async fn members(&self, channel: &ChannelId) -> Result<Vec<SessionId>, StoreError> {
            self.inner.members(channel).await
        }
        async fn members_of(
            &self,
            channels: &[ChannelId],
        ) -> Result<Vec<Vec<SessionId>>, StoreError> {
            self.inner.members_of(channels).await
        }
    }

    #[async_trait::async_trait]
    impl SessionStore for ResumeInTheGap {
        async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
            self.inner.create_session(session).await
        }
        async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
            let read = self.inner.session(id).await;
            // The gap an expiry that decides from a read leaves open.
            self.resume_now(id).await;
            read
        }
        async fn sessions(
            &self,
            ids: &[SessionId],
        ) -> Result<Vec<Option<SessionRecord>>, StoreError> {
            self.inner.sessions(ids).await
        }
        async fn update_session(
            &self,
            id: &SessionId,
            update: &SessionUpdate,
        ) -> Result<bool, StoreError> {
            self.inner.update_session(id, update).await
        }
        async fn set_call(
            &self,
            session: &SessionId,
            peer: &SessionId,
            state: Option<CallState>,
        ) -> Result<(), StoreError> {
            self.inner.set_call(session, peer, state).await
        }
        async fn resume_session(
            &self,
            id: &SessionId,
            presented: &str,
            now_ms: u64,
            takeover: &Takeover,
        ) -> Result<Option<SessionRecord>, StoreError> {
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
            self.inner.rotate_token(id, connection, next).await
        }
        async fn count_direct_call(
            &self,
            callee: &SessionId,
            caller: Option<&SessionId>,
            window: std::time::Duration,
        ) -> Result<u64, StoreError> {
            self.inner.count_direct_call(callee, caller, window).await
        }
        async fn retire_session(
            &self,
            id: &SessionId,
            connection: &ConnectionId,
        ) -> Result<bool, StoreError> {
            self.resume_now(id).await;
            self.inner.retire_session(id, connection).await
        }
        async fn delete_session(&self, id: &SessionId) -> Result<(), StoreError> {
            self.inner.delete_session(id).await
        }
        async fn touch_sessions(&self, ids: &[SessionId]) -> Result<Vec<SessionId>, StoreError> {
            self.inner.touch_sessions(ids).await
        }
    }

    #[async_trait::async_trait]
    impl SfuRegistry for ResumeInTheGap {
        async fn create_sfu_server(
            &self,
            new: &NewSfuServer,
        ) -> Result<SfuServerRecord, StoreError> {
            self.inner.create_sfu_server(new).await
        }
        async fn sfu_servers(&self) -> Result<Vec<SfuServerRecord>, StoreError> {
            self.inner.sfu_servers().await
        }
        async fn update_sfu_server(&self, record: &SfuServerRecord) -> Result<bool, StoreError> {
            self.inner.update_sfu_server(record).await
        }
        async fn delete_sfu_server(&self, id: SfuServerId) -> Result<bool, StoreError> {
            self.inner.delete_sfu_server(id).await
        }
    }

    #[tokio::test]
    async fn a_resume_racing_the_expiry_keeps_its_session() {
        let store = Arc::new(ResumeInTheGap {
            inner: EmbeddedStore::in_memory(),
            armed: Mutex::new(None),
            resumed: AtomicBool::new(false),
        });
        let signaling = crate::state::compose(
            SignalingConfig::new("0123456789abcdef"),
            store.clone(),
            Arc::new(InProcessBus::new()),
            Arc::new(Metrics::new()),
        );
        let dropped = Connection {
            id: ConnectionId::from("dropped"),
            session: SessionId::from("s"),
        };
        let record = SessionRecord {
            id: dropped.session.clone(),
            instance: signaling.instance.clone(),
            connection: dropped.id.clone(),
            user: None,
            state: MediaState::default(),
            channel: None,
            allow_direct_call: false,
            resume: ResumeTokens {
                current: TokenHash {
                    hash: token::hash("secret"),
                    expires_ms: u64::MAX,
                },
                previous: None,
            },
            connected: false,
            calls: BTreeMap::new(),
        };
        store.inner.create_session(&record).await.unwrap();
        let takeover = Takeover {
            instance: InstanceId::from("other"),
            connection: ConnectionId::from("resumer"),
            token: TokenHash {
                hash: token::hash("next"),
                expires_ms: u64::MAX,
            },
        };
        *store.armed.lock().unwrap() =
            Some((dropped.session.clone(), token::hash("secret"), takeover));
        signaling.expire(dropped).await;
        assert!(
            store.resumed.load(Ordering::SeqCst),
            "the resume won the race"
        );
        let after = store.inner.session(&SessionId::from("s")).await.unwrap();
        assert_eq!(
            after.map(|r| r.connection),
            Some(ConnectionId::from("resumer")),
            "the resumed session must survive the expiry of its dropped socket"
        );
    }

    #[tokio::test]
    async fn an_expiry_that_won_leaves_nothing_to_resume() {
        let store = EmbeddedStore::in_memory();
        let id = SessionId::from("s");
        let record = SessionRecord {
            id: id.clone(),
            instance: InstanceId::from("i"),
            connection: ConnectionId::from("dropped"),
            user: None,
            state: MediaState::default(),
            channel: None,
            allow_direct_call: false,
            resume: ResumeTokens {
                current: TokenHash {
                    hash: token::hash("secret"),
                    expires_ms: u64::MAX,
                },
                previous: None,
            },
            connected: false,
            calls: BTreeMap::new(),
        };
        store.create_session(&record).await.unwrap();
        // Retired (the expiry's atomic step) but not yet deleted: a resume now must fail.
        assert!(
            store
                .retire_session(&id, &ConnectionId::from("dropped"))
                .await
                .unwrap()
        );
        let takeover = Takeover {
            instance: InstanceId::from("other"),
            connection: ConnectionId::from("resumer"),
            token: TokenHash {
                hash: token::hash("next"),
                expires_ms: u64::MAX,
            },
        };
        let resumed = store
            .resume_session(&id, &token::hash("secret"), now_ms(), &takeover)
            .await
            .unwrap();
        assert!(resumed.is_none(), "a retired session cannot be resumed");
    }
}
