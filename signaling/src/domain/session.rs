//! A session's life: connect, integrate, enter/leave channels, resume after a dropped socket, end.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::Signaling;
use super::hub::Outgoing;
use super::ids::{ChannelId, ConnectionId, SessionId};
use super::model::{MediaState, ResumeTokens, SessionRecord, SessionUpdate, Takeover, now_ms};
use super::ports::StoreError;
use super::token;
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage, SessionInfo, SignalError};

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

type Reply = Result<Option<ServerMessage>, SignalError>;

impl Signaling {
    /// Opens a session for a new socket. Returns the connection and its `connected` message.
    pub async fn connect(
        &self,
        options: ConnectOptions,
        outbox: mpsc::Sender<Outgoing>,
    ) -> Result<(Connection, ServerMessage), SignalError> {
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
        let connected = ServerMessage::Connected {
            id: record.id.clone(),
            token,
        };
        let connection = Connection {
            id: record.connection,
            session: record.id,
        };
        Ok((connection, connected))
    }

    /// Applies one client message; returns the reply for the sender's socket, if any.
    pub async fn handle(&self, connection: &mut Connection, message: ClientMessage) -> Reply {
        match message {
            ClientMessage::GetId => Ok(Some(ServerMessage::GetIdSuccess {
                id: connection.session.clone(),
            })),
            ClientMessage::Ping => Ok(Some(ServerMessage::Pong)),
            ClientMessage::ReuseId { id, token } => self.reuse(connection, id, &token).await,
            ClientMessage::Enter { channel } => self.enter(connection, channel).await,
            ClientMessage::Leave => self.leave(connection).await,
            ClientMessage::IntegrateUser { user } => self.integrate_self(connection, user).await,
            ClientMessage::ListSessions => self.list_sessions(connection).await,
            ClientMessage::Message { message } => {
                let me = self.me(connection).await?;
                let channel = in_channel(&me)?;
                let messaged = ServerMessage::Messaged {
                    session_id: me.id.clone(),
                    message,
                };
                self.broadcast(channel, &messaged).await?;
                Ok(None)
            }
            ClientMessage::UpdateMediaState { key, value } => {
                let me = self.me(connection).await?;
                let channel = in_channel(&me)?;
                let mut state = me.state;
                state.set(key, value);
                let update = SessionUpdate {
                    state: Some(state),
                    ..SessionUpdate::default()
                };
                self.store.update_session(&me.id, &update).await?;
                let updated = ServerMessage::UpdatedMediaState {
                    session_id: me.id.clone(),
                    key,
                    value,
                };
                self.broadcast(channel, &updated).await?;
                Ok(None)
            }
            ClientMessage::Call { to, sdp, is_sfu } => {
                self.relay_call(connection, to, sdp, is_sfu).await
            }
            ClientMessage::Answer { to, sdp, is_sfu } => {
                self.relay_answer(connection, to, sdp, is_sfu).await
            }
            ClientMessage::Candidate {
                to,
                candidate,
                is_sfu,
            } => {
                self.relay_candidate(connection, to, candidate, is_sfu)
                    .await
            }
            ClientMessage::Reject { to, reason } => self.relay_reject(connection, to, reason).await,
        }
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
            match self.store.session(&connection.session).await {
                Ok(Some(record)) if record.connection == connection.id && !record.connected => {
                    match self.end_session(&record).await {
                        Ok(()) => return,
                        Err(e) => tracing::warn!(error = %e, attempt, "ending session failed"),
                    }
                }
                Ok(_) => return,
                Err(e) => tracing::warn!(error = %e, attempt, "ending session failed"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
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
        self.metrics.sessions_ended.inc();
        tracing::debug!(session = %record.id, "session ended");
        Ok(())
    }

    /// Replaces the resume token of the session `connection` holds (the previous one stays valid
    /// until its own expiry). Returns the message that hands the new token to the client, or
    /// `None` if the connection no longer holds the session.
    pub async fn rotate_token(
        &self,
        connection: &Connection,
    ) -> Result<Option<ServerMessage>, StoreError> {
        let (token, token_hash) = token::issue(self.token_expiry());
        let rotated = self
            .store
            .rotate_token(&connection.session, &connection.id, &token_hash)
            .await?;
        Ok(rotated.then_some(ServerMessage::ResumeToken { token }))
    }

    /// When a token issued now stops being accepted, milliseconds since the Unix epoch.
    fn token_expiry(&self) -> u64 {
        let lifetime =
            u64::try_from(self.config.resume_token_lifetime.as_millis()).unwrap_or(u64::MAX);
        now_ms().saturating_add(lifetime)
    }

    async fn reuse(&self, connection: &mut Connection, id: SessionId, presented: &str) -> Reply {
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
        self.metrics.sessions_resumed.inc();
        Ok(Some(ServerMessage::ReuseIdSuccess {
            id,
            user: old.user.unwrap_or(Value::Null),
            channel: old.channel,
            token,
        }))
    }

    async fn enter(&self, connection: &Connection, channel_id: ChannelId) -> Reply {
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
        let success = ServerMessage::EnterSuccess {
            channel: channel.id.clone(),
            sfu_enabled: channel.sfu_enabled,
        };
        match &me.channel {
            Some(current) if current == &channel.id => return Ok(Some(success)),
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
        let entered = ServerMessage::Entered {
            session_id: me.id.clone(),
            user,
        };
        self.broadcast(&channel.id, &entered).await?;
        if channel.sfu_enabled {
            self.sfu_entered(&me, &channel).await;
        }
        Ok(Some(success))
    }

    async fn leave(&self, connection: &Connection) -> Reply {
        let me = self.me(connection).await?;
        let channel = in_channel(&me)?;
        self.leave_channel(&me, channel).await?;
        Ok(None)
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
        let left = ServerMessage::Left {
            session_id: me.id.clone(),
        };
        self.broadcast(channel, &left).await?;
        self.sfu_release(&me.id, channel).await;
        Ok(())
    }

    async fn integrate_self(&self, connection: &Connection, user: Value) -> Reply {
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
        Ok(Some(ServerMessage::Integrated { user }))
    }

    async fn list_sessions(&self, connection: &Connection) -> Reply {
        let me = self.me(connection).await?;
        let channel = in_channel(&me)?;
        let members = self.live_members(channel).await?;
        let sessions = members
            .into_iter()
            .map(|m| SessionInfo {
                id: m.id,
                user: m.user.unwrap_or(Value::Null),
                state: m.state,
            })
            .collect();
        Ok(Some(ServerMessage::ListSessionsSuccess { sessions }))
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
                let left = ServerMessage::Left { session_id: id };
                self.deliver(&live.iter().collect::<Vec<_>>(), &left).await;
            }
        }
        Ok(())
    }

    /// Sends `message` to every live member of `channel`.
    pub(super) async fn broadcast(
        &self,
        channel: &ChannelId,
        message: &ServerMessage,
    ) -> Result<(), StoreError> {
        let members = self.prune_members(channel).await?;
        self.deliver(&members.iter().collect::<Vec<_>>(), message)
            .await;
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
