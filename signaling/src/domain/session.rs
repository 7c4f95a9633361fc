//! A session's life: connect, integrate, resume after a dropped socket, end.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::channels::Channels;
use super::error::{ErrorCode, SignalError};
use super::events::{DomainEvent, Recipient};
use super::hub::Outgoing;
use super::ids::{ChannelId, ConnectionId, SessionId};
use super::join_token::{JoinClaims, JoinTokenError, VerifiedJoin, now_secs};
use super::model::{MediaState, ResumeTokens, SessionRecord, SessionUpdate, Takeover, now_ms};
use super::ports::StoreError;
use super::shared::Shared;
use super::{DomainError, token};

/// Options a client chooses when it connects (query parameters of `/websocket`).
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// The client accepts direct calls from sessions outside its channel.
    pub allow_direct_call: bool,
    /// The verified join token (`?token=`): the session starts with its user and grant.
    pub join: Option<VerifiedJoin>,
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

/// Session lives: connect, resume, token rotation, user binding, end.
pub struct Sessions {
    shared: Arc<Shared>,
    channels: Arc<Channels>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    pub(super) fn new(shared: Arc<Shared>, channels: Arc<Channels>) -> Self {
        Self { shared, channels }
    }

    /// Opens a session for a new socket. Returns the connection and its first resume token.
    pub async fn connect(
        &self,
        options: ConnectOptions,
        outbox: mpsc::Sender<Outgoing>,
    ) -> Result<(Connection, String), SignalError> {
        let opened = self.open(options, outbox).await?;
        self.shared.metrics.ws_connections.inc();
        self.shared.metrics.ws_connections_total.inc();
        Ok(opened)
    }

    /// Opens a session held by this instance whose messages go to `outbox`: a socket's, or a
    /// WHIP/WHEP resource's (which has no socket and no use for the resume token).
    pub(super) async fn open(
        &self,
        options: ConnectOptions,
        outbox: mpsc::Sender<Outgoing>,
    ) -> Result<(Connection, String), SignalError> {
        let (token, token_hash) = token::issue(self.token_expiry());
        let (user, grant) = options
            .join
            .map_or((None, None), |join| (Some(join.user), Some(join.grant)));
        let record = SessionRecord {
            id: SessionId::random(),
            instance: self.shared.instance.clone(),
            connection: ConnectionId::random(),
            user,
            state: MediaState::default(),
            channel: None,
            allow_direct_call: options.allow_direct_call,
            resume: ResumeTokens {
                current: token_hash,
                previous: None,
            },
            connected: true,
            calls: BTreeMap::new(),
            grant,
            published: Vec::new(),
            sfu_node: None,
        };
        self.shared.store.create_session(&record).await?;
        self.shared
            .hub
            .register(record.id.clone(), record.connection.clone(), outbox);
        let connection = Connection {
            id: record.connection,
            session: record.id,
        };
        let started = DomainEvent::SessionStarted {
            session: connection.session.clone(),
        };
        self.shared.events.record(started).await;
        if let Some(user) = record.user {
            let integrated = DomainEvent::UserIntegrated {
                ice_servers: self.shared.config.ice_servers(&connection.session),
                session: connection.session.clone(),
                user,
            };
            self.shared.events.record(integrated).await;
        }
        Ok((connection, token))
    }

    /// Verifies a join token (`GET /websocket?token=`) against the token secret and the clock.
    pub fn verify_join_token(&self, token: &str) -> Result<VerifiedJoin, JoinTokenError> {
        let verified = self
            .shared
            .config
            .join_token_key()
            .verify(token, now_secs());
        if let Err(e) = &verified {
            // The reason, never the token.
            tracing::debug!(reason = %e, "join token refused");
        }
        verified
    }

    /// Signs a join token with the token secret (`POST /tokens`).
    pub fn sign_join_token(&self, claims: &JoinClaims) -> Result<String, JoinTokenError> {
        self.shared.config.join_token_key().sign(claims, now_secs())
    }

    /// The socket closed. The session stays resumable (and in its channel) for the grace window,
    /// then ends unless a new connection resumed it.
    pub async fn disconnect(self: &Arc<Self>, connection: Connection) {
        self.shared.metrics.ws_connections.dec();
        self.shared
            .hub
            .unregister(&connection.session, &connection.id);
        let still_ours = match self.shared.store.session(&connection.session).await {
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
            .shared
            .store
            .update_session(&connection.session, &update)
            .await
        {
            tracing::warn!(error = %e, "could not mark session disconnected");
        }
        let signaling = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(signaling.shared.config.resume_grace).await;
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
            .shared
            .store
            .retire_session(&connection.session, &connection.id)
            .await?
        {
            return Ok(());
        }
        match self.shared.store.session(&connection.session).await? {
            Some(record) => self.end(&record).await,
            None => Ok(()),
        }
    }

    /// Removes a session: leaves its channel (telling the members), drops its calls, deletes it.
    pub(super) async fn end(&self, record: &SessionRecord) -> Result<(), StoreError> {
        if let Some(channel) = &record.channel {
            self.channels.leave_channel(record, channel).await?;
        }
        for peer in record.calls.keys() {
            self.shared.store.set_call(peer, &record.id, None).await?;
        }
        self.shared.store.delete_session(&record.id).await?;
        let ended = DomainEvent::SessionEnded {
            session: record.id.clone(),
        };
        self.shared.events.record(ended).await;
        tracing::debug!(session = %record.id, "session ended");
        Ok(())
    }

    /// Ends the session `connection` holds now, without a grace window (a WHIP/WHEP resource
    /// deleted or given up: nothing can resume it). Its outbox closes.
    pub(super) async fn end_now(&self, connection: &Connection) -> Result<(), StoreError> {
        self.shared
            .hub
            .unregister(&connection.session, &connection.id);
        match self.shared.store.session(&connection.session).await? {
            Some(record) if record.connection == connection.id => self.end(&record).await,
            _ => Ok(()),
        }
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
            .shared
            .store
            .rotate_token(&connection.session, &connection.id, &token_hash)
            .await?;
        Ok(rotated.then_some(token))
    }

    /// When a token issued now stops being accepted, milliseconds since the Unix epoch.
    fn token_expiry(&self) -> u64 {
        let lifetime =
            u64::try_from(self.shared.config.resume_token_lifetime.as_millis()).unwrap_or(u64::MAX);
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
        let fresh = self.shared.me(connection).await?;
        let (token, token_hash) = token::issue(self.token_expiry());
        let takeover = Takeover {
            instance: self.shared.instance.clone(),
            connection: connection.id.clone(),
            token: token_hash,
        };
        // One atomic step checks and consumes the token: of two racing resumes, one wins.
        let old = self
            .shared
            .store
            .resume_session(&id, &token::hash(presented), now_ms(), &takeover)
            .await?
            .ok_or_else(invalid)?;
        if old.instance == self.shared.instance {
            self.shared.hub.kick(&id, &connection.id);
        } else {
            let kick = super::ports::Envelope::Kick {
                session: id.clone(),
                except: connection.id.clone(),
            };
            self.shared.bus.publish(&old.instance, &kick).await?;
        }
        self.shared
            .hub
            .rekey(&connection.session, &id, &connection.id);
        connection.session = id.clone();
        self.end(&fresh).await?;
        let resumed = DomainEvent::SessionResumed {
            session: id.clone(),
        };
        self.shared.events.record(resumed).await;
        Ok(Resumed {
            id,
            user: old.user,
            channel: old.channel,
            token,
        })
    }

    /// `integrateUser` (anonymous mode only): binds `user` to the session, its id forced to the
    /// session id. Returns the user as bound.
    pub async fn integrate(
        &self,
        connection: &Connection,
        user: Value,
    ) -> Result<Value, SignalError> {
        if self.shared.me(connection).await?.grant.is_some() {
            return Err(SignalError::new(
                ErrorCode::Forbidden,
                "this session's user comes from its join token",
            ));
        }
        if !self.shared.config.allow_anonymous {
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
        self.shared
            .store
            .update_session(&connection.session, &update)
            .await?;
        // The client learns it from the reply; the event has no audience.
        let integrated = DomainEvent::UserIntegrated {
            ice_servers: self.shared.config.ice_servers(&connection.session),
            session: connection.session.clone(),
            user: user.clone(),
        };
        self.shared.events.record(integrated).await;
        Ok(user)
    }

    /// Binds `user` to a live session (re-binding replaces the previous user) and tells its socket.
    pub async fn bind_user(&self, session: &SessionId, user: Value) -> Result<Value, DomainError> {
        let update = SessionUpdate {
            user: Some(user.clone()),
            ..SessionUpdate::default()
        };
        if !self.shared.store.update_session(session, &update).await? {
            return Err(DomainError::NotFound("Session is not found"));
        }
        if let Some(record) = self.shared.store.session(session).await? {
            let integrated = DomainEvent::UserIntegrated {
                ice_servers: self.shared.config.ice_servers(session),
                session: session.clone(),
                user: user.clone(),
            };
            self.shared.emit(integrated, &[&record]).await;
        }
        Ok(user)
    }

    /// Closes the sockets whose sessions vanished from the store (their presence expired during
    /// a store outage longer than the TTL): they cannot be served any more, and a client that
    /// reconnects starts a fresh session. Their channels drop them at the next sweep or broadcast.
    pub(super) async fn close_lost(&self, lost: &[SessionId]) {
        for session in lost {
            tracing::warn!(%session, "session lost from the store; closing its socket");
            let recipient = Recipient {
                session: session.clone(),
                instance: self.shared.instance.clone(),
            };
            let event = DomainEvent::SessionLost {
                session: session.clone(),
            };
            self.shared.events.emit(event, vec![recipient]).await;
            self.shared.hub.close(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::bus::InProcessBus;
    use crate::domain::SignalingConfig;
    use crate::domain::ids::InstanceId;
    use crate::domain::model::TokenHash;
    use crate::domain::ports::SessionStore;
    use crate::domain::tests::{
        HookedStore, StoreCall, StoreHook, audience, drain, integrated, kinds, recorded_service,
        two_members,
    };
    use crate::metrics::Metrics;
    use crate::store::EmbeddedStore;

    /// The embedded store, except that the first time the armed session is read or retired a
    /// resume of it (with the armed token) lands first: the race an expiry must survive.
    #[derive(Default)]
    struct ResumeInTheGap {
        armed: Mutex<Option<(SessionId, String, Takeover)>>,
        resumed: AtomicBool,
    }

    impl ResumeInTheGap {
        async fn resume_now(&self, inner: &EmbeddedStore, id: &SessionId) {
            let armed = {
                let mut armed = self.armed.lock().unwrap();
                match armed.as_ref() {
                    Some((session, _, _)) if session == id => armed.take(),
                    _ => None,
                }
            };
            if let Some((session, presented, takeover)) = armed {
                let resumed = inner
                    .resume_session(&session, &presented, now_ms(), &takeover)
                    .await
                    .unwrap();
                self.resumed.store(resumed.is_some(), Ordering::SeqCst);
            }
        }
    }

    #[async_trait::async_trait]
    impl StoreHook for ResumeInTheGap {
        async fn before(&self, inner: &EmbeddedStore, call: StoreCall<'_>) {
            if let StoreCall::RetireSession(id) = call {
                self.resume_now(inner, id).await;
            }
        }
        async fn after(&self, inner: &EmbeddedStore, call: StoreCall<'_>) {
            // The gap an expiry that decides from a read leaves open.
            if let StoreCall::Session(id) = call {
                self.resume_now(inner, id).await;
            }
        }
    }

    /// A session whose socket dropped (not connected), resumable with the token "secret".
    fn dropped_session(
        id: &SessionId,
        instance: &InstanceId,
        connection: &ConnectionId,
    ) -> SessionRecord {
        let secret = TokenHash {
            hash: token::hash("secret"),
            expires_ms: u64::MAX,
        };
        SessionRecord {
            instance: instance.clone(),
            connection: connection.clone(),
            ..SessionRecord::dropped_for_test(&id.0, secret)
        }
    }

    /// Another instance's connection `resumer` taking a session over with the token "next".
    fn resumer_takeover() -> Takeover {
        Takeover {
            instance: InstanceId::from("other"),
            connection: ConnectionId::from("resumer"),
            token: TokenHash {
                hash: token::hash("next"),
                expires_ms: u64::MAX,
            },
        }
    }

    #[tokio::test]
    async fn a_resume_racing_the_expiry_keeps_its_session() {
        let store = Arc::new(HookedStore::new(ResumeInTheGap::default()));
        let signaling = crate::state::compose(
            SignalingConfig::new("0123456789abcdef"),
            store.clone(),
            Arc::new(InProcessBus::new()),
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let dropped = Connection {
            id: ConnectionId::from("dropped"),
            session: SessionId::from("s"),
        };
        let record = dropped_session(&dropped.session, signaling.instance(), &dropped.id);
        store.inner.create_session(&record).await.unwrap();
        let takeover = resumer_takeover();
        *store.hook.armed.lock().unwrap() =
            Some((dropped.session.clone(), token::hash("secret"), takeover));
        signaling.sessions().expire(dropped).await;
        assert!(
            store.hook.resumed.load(Ordering::SeqCst),
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
        let record = dropped_session(&id, &InstanceId::from("i"), &ConnectionId::from("dropped"));
        store.create_session(&record).await.unwrap();
        // Retired (the expiry's atomic step) but not yet deleted: a resume now must fail.
        assert!(
            store
                .retire_session(&id, &ConnectionId::from("dropped"))
                .await
                .unwrap()
        );
        let takeover = resumer_takeover();
        let resumed = store
            .resume_session(&id, &token::hash("secret"), now_ms(), &takeover)
            .await
            .unwrap();
        assert!(resumed.is_none(), "a retired session cannot be resumed");
    }

    #[tokio::test]
    async fn ending_a_session_in_a_channel_emits_member_left_then_session_ended() {
        let (signaling, store, recorder) = recorded_service();
        let (_, (alice, _alice_queue), (bob, mut bob_queue)) =
            two_members(&signaling, &recorder, false).await;
        let record = store.inner.session(&alice.session).await.unwrap().unwrap();
        signaling.sessions().end(&record).await.unwrap();
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
            .sessions()
            .close_lost(std::slice::from_ref(&alice.session))
            .await;
        let seen = recorder.take();
        assert_eq!(kinds(&seen), ["session_lost"]);
        assert_eq!(audience(&seen[0]), vec![alice.session.clone()]);
        let frame: Value = match alice_queue.try_recv() {
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

    #[tokio::test]
    async fn resuming_ends_the_fresh_session_then_emits_session_resumed_once_per_token() {
        let (signaling, _, recorder) = recorded_service();
        let sessions = signaling.sessions();
        let (outbox, _old_queue) = mpsc::channel(8);
        let (old, token) = sessions
            .connect(ConnectOptions::default(), outbox)
            .await
            .unwrap();
        let (outbox, _new_queue) = mpsc::channel(8);
        let (mut new, _) = sessions
            .connect(ConnectOptions::default(), outbox)
            .await
            .unwrap();
        let fresh = new.session.clone();
        recorder.take();

        let resumed = sessions
            .reuse(&mut new, old.session.clone(), &token)
            .await
            .unwrap();
        assert_eq!((&resumed.id, &new.session), (&old.session, &old.session));
        assert_eq!((resumed.user, resumed.channel), (None, None));
        let seen = recorder.take();
        assert_eq!(
            seen.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
            [
                DomainEvent::SessionEnded { session: fresh },
                DomainEvent::SessionResumed {
                    session: old.session.clone()
                },
            ]
        );
        assert!(seen.iter().all(|e| e.audience.is_empty()));

        // The token was consumed: a second resume with it is refused and emits nothing.
        let (outbox, _third_queue) = mpsc::channel(8);
        let (mut third, _) = sessions
            .connect(ConnectOptions::default(), outbox)
            .await
            .unwrap();
        recorder.take();
        let refused = sessions
            .reuse(&mut third, old.session.clone(), &token)
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidToken);
        assert!(recorder.take().is_empty());
        let metrics = signaling.metrics().render();
        assert!(
            metrics.contains("mooyaho_sessions_resumed_total 1"),
            "{metrics}"
        );
    }
}
