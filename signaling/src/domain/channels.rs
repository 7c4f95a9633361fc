//! Channels: administration for the service server (REST: create, list, inspect, delete) and
//! membership for sessions (enter, leave, chat and media state to the members). A write to a
//! channel's members first removes stale members (and tells the live ones); reads change nothing.

use std::sync::Arc;

use serde_json::Value;

use super::DomainError;
use super::error::ErrorCode;
use super::error::SignalError;
use super::events::{DomainEvent, Recipient};
use super::ids::{ChannelId, SessionId};
use super::model::{ChannelRecord, ChatMessage, MediaKey, SessionRecord, SessionUpdate, now_ms};
use super::placement::Placement;
use super::ports::StoreError;
use super::session::Connection;
use super::shared::{Shared, in_channel, split_members};

/// A channel with its member count.
#[derive(Clone, Debug)]
pub struct ChannelSummary {
    /// The channel.
    pub channel: ChannelRecord,
    /// Sessions in it.
    pub session_count: usize,
}

/// A channel with its members.
#[derive(Clone, Debug)]
pub struct ChannelDetail {
    /// The channel.
    pub channel: ChannelRecord,
    /// Live member sessions and their users.
    pub sessions: Vec<(SessionId, Value)>,
}

/// Result of a bulk delete.
#[derive(Clone, Debug, Default)]
pub struct BulkDeleteOutcome {
    /// Channels that existed and were deleted.
    pub deleted: Vec<ChannelId>,
    /// Ids that matched no channel.
    pub not_found: Vec<ChannelId>,
}

/// The channel a session is in after `enter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelEntry {
    /// The channel.
    pub channel: ChannelId,
    /// Its media goes through the SFU.
    pub sfu_enabled: bool,
}

/// Channels: their administration (REST) and their membership (enter, leave, chat, media state).
pub struct Channels {
    shared: Arc<Shared>,
    placement: Arc<Placement>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels").finish_non_exhaustive()
    }
}

impl Channels {
    pub(super) fn new(shared: Arc<Shared>, placement: Arc<Placement>) -> Self {
        Self { shared, placement }
    }

    /// Creates a channel. SFU channels are placed on a node when the first member publishes.
    pub async fn create(&self, sfu_enabled: bool) -> Result<ChannelRecord, DomainError> {
        let channel = ChannelRecord {
            id: ChannelId::random(),
            sfu_enabled,
            sfu_server_id: None,
            sfu_room: None,
            sfu_spans: Vec::new(),
            created_at_ms: now_ms(),
        };
        self.shared.store.create_channel(&channel).await?;
        let created = DomainEvent::ChannelCreated {
            channel: channel.id.clone(),
            sfu_enabled,
        };
        self.shared.events.record(created).await;
        Ok(channel)
    }

    /// Every channel with its live member count (members whose presence expired are not
    /// counted). A read: three store round trips however many channels, and nothing changes.
    pub async fn list(&self) -> Result<Vec<ChannelSummary>, DomainError> {
        let channels = self.shared.store.channels().await?;
        let ids: Vec<ChannelId> = channels.iter().map(|c| c.id.clone()).collect();
        let live = self.shared.live_members_of(&ids).await?;
        Ok(channels
            .into_iter()
            .zip(live)
            .map(|(channel, members)| ChannelSummary {
                channel,
                session_count: members.len(),
            })
            .collect())
    }

    /// One channel with its live members.
    pub async fn detail(&self, id: &ChannelId) -> Result<ChannelDetail, DomainError> {
        let channel = self
            .shared
            .store
            .channel(id)
            .await?
            .ok_or(DomainError::NotFound("Channel is not found"))?;
        let sessions = self
            .shared
            .live_members(id)
            .await?
            .into_iter()
            .map(|s| (s.id, s.user.unwrap_or(Value::Null)))
            .collect();
        Ok(ChannelDetail { channel, sessions })
    }

    /// Deletes a channel; its members get `channelClosed` and are no longer in it.
    pub async fn delete(&self, id: &ChannelId) -> Result<(), DomainError> {
        let placed = self.shared.store.channel(id).await?;
        let members = self
            .shared
            .store
            .delete_channel(id)
            .await?
            .ok_or(DomainError::NotFound("Channel is not found"))?;
        let records = self.shared.store.sessions(&members).await?;
        let mut targets = Vec::new();
        for record in records.into_iter().flatten() {
            if record.channel.as_ref() != Some(id) {
                continue;
            }
            let update = SessionUpdate::out_of_channel();
            self.shared
                .store
                .update_session(&record.id, &update)
                .await?;
            // Each member's tracks and membership end with the channel; the sockets hear only
            // `channelClosed` (below), the other subscribers (webhooks) hear each step.
            let left = self.shared.member_left(id, &record).await;
            self.shared.events.record(left).await;
            targets.push(record);
        }
        let deleted = DomainEvent::ChannelDeleted {
            channel: id.clone(),
        };
        self.shared
            .emit(deleted, &targets.iter().collect::<Vec<_>>())
            .await;
        if let Some(channel) = placed {
            self.placement.close_room(&channel).await;
        }
        Ok(())
    }

    /// Deletes several channels; unknown ids are reported, not fatal.
    pub async fn bulk_delete(&self, ids: Vec<ChannelId>) -> Result<BulkDeleteOutcome, DomainError> {
        let mut outcome = BulkDeleteOutcome::default();
        for id in ids {
            match self.delete(&id).await {
                Ok(()) => outcome.deleted.push(id),
                Err(DomainError::NotFound(_)) => outcome.not_found.push(id),
                Err(e) => return Err(e),
            }
        }
        Ok(outcome)
    }

    /// `enter`: the session enters a channel (leaving the one it was in); every member, the
    /// newcomer included, hears of it.
    pub async fn enter(
        &self,
        connection: &Connection,
        channel_id: ChannelId,
    ) -> Result<ChannelEntry, SignalError> {
        let me = self.shared.me(connection).await?;
        let Some(user) = me.user.clone() else {
            return Err(SignalError::new(
                ErrorCode::NotIntegrated,
                "integrate a user with this session before entering a channel",
            ));
        };
        if let Some(grant) = &me.grant
            && grant.channel != channel_id
        {
            return Err(SignalError::new(
                ErrorCode::Forbidden,
                "this session's join token allows only its own channel",
            ));
        }
        let Some(channel) = self.shared.store.channel(&channel_id).await? else {
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
        self.shared
            .store
            .set_member(&channel.id, &me.id, true)
            .await?;
        let update = SessionUpdate {
            channel: Some(Some(channel.id.clone())),
            ..SessionUpdate::default()
        };
        self.shared.store.update_session(&me.id, &update).await?;
        let entered = DomainEvent::MemberEntered {
            channel: channel.id.clone(),
            session: me.id.clone(),
            user,
        };
        self.broadcast(&channel.id, entered).await?;
        if channel.sfu_enabled {
            self.placement.entered(&me, &channel).await;
        }
        Ok(success)
    }

    /// `leave`: the session leaves its channel; the remaining members hear of it.
    pub async fn leave(&self, connection: &Connection) -> Result<(), SignalError> {
        let me = self.shared.me(connection).await?;
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
        let removed = self.shared.store.set_member(channel, &me.id, false).await?;
        let update = SessionUpdate::out_of_channel();
        self.shared.store.update_session(&me.id, &update).await?;
        // Whoever removed the membership tells of the tracks and the leave: a sweep that found
        // this member stale, or a channel delete running at the same time, did already.
        if removed {
            let left = self.shared.member_left(channel, me).await;
            self.broadcast(channel, left).await?;
        }
        self.placement.release(me, channel).await;
        Ok(())
    }

    /// `listSessions`: the live members of the session's channel, itself included.
    pub async fn members(
        &self,
        connection: &Connection,
    ) -> Result<Vec<SessionRecord>, SignalError> {
        let me = self.shared.me(connection).await?;
        let channel = in_channel(&me)?;
        Ok(self.shared.live_members(channel).await?)
    }

    /// `message`: chat to the session's channel.
    pub async fn send_chat(
        &self,
        connection: &Connection,
        message: ChatMessage,
    ) -> Result<(), SignalError> {
        let me = self.shared.me(connection).await?;
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
        let me = self.shared.me(connection).await?;
        let channel = in_channel(&me)?;
        let mut state = me.state;
        state.set(key, value);
        let update = SessionUpdate {
            state: Some(state),
            ..SessionUpdate::default()
        };
        self.shared.store.update_session(&me.id, &update).await?;
        let changed = DomainEvent::MediaStateChanged {
            channel: channel.clone(),
            session: me.id.clone(),
            key,
            value,
        };
        self.broadcast(channel, changed).await?;
        Ok(())
    }

    /// Emits `event` to every live member of `channel`.
    pub(super) async fn broadcast(
        &self,
        channel: &ChannelId,
        event: DomainEvent,
    ) -> Result<(), StoreError> {
        let members = self.prune_members(channel).await?;
        self.shared.events.emit(event, members).await;
        Ok(())
    }

    /// Where the live members of `channel` are, for a write: stale members are removed and the
    /// live ones told they left. Reads each member's route (instance and channel), not its whole
    /// record: every join into a room of N broadcasts to it.
    pub(super) async fn prune_members(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<Recipient>, StoreError> {
        let ids = self
            .shared
            .store
            .members_of(std::slice::from_ref(channel))
            .await?
            .pop()
            .unwrap_or_default();
        let routes = if ids.is_empty() {
            Vec::new()
        } else {
            self.shared.store.routes(&ids).await?
        };
        let mut live = Vec::with_capacity(ids.len());
        let mut stale = Vec::new();
        for (session, route) in ids.into_iter().zip(routes) {
            match route {
                Some(route) if route.channel.as_ref() == Some(channel) => live.push(Recipient {
                    session,
                    instance: route.instance,
                }),
                _ => stale.push(session),
            }
        }
        self.remove_members(channel, &live, stale).await?;
        Ok(live)
    }

    /// The timeout path (run with the presence refresh): members of any channel whose session
    /// expired from the store (their instance died) are removed, and the live ones told they left.
    pub(super) async fn sweep_expired_members(&self) -> Result<(), StoreError> {
        let channels: Vec<ChannelId> = self
            .shared
            .store
            .channels()
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let per_channel = self.shared.member_records(&channels).await?;
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
            let live: Vec<Recipient> = live.iter().map(Recipient::from).collect();
            self.remove_members(channel, &live, expired).await?;
        }
        Ok(())
    }

    /// Removes `gone` from `channel` and tells `live` of each removal this call made (another
    /// instance sweeping at the same time tells them of the rest).
    async fn remove_members(
        &self,
        channel: &ChannelId,
        live: &[Recipient],
        gone: Vec<SessionId>,
    ) -> Result<(), StoreError> {
        for id in gone {
            if self.shared.store.set_member(channel, &id, false).await? {
                let left = DomainEvent::MemberLeft {
                    channel: channel.clone(),
                    session: id,
                    user: None,
                };
                self.shared.events.emit(left, live.to_vec()).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::MediaKey;
    use crate::domain::events::{DomainEvent, Emitted};
    use crate::domain::tests::{
        audience, drain, integrated, kinds, member, recorded_service, rendered, sorted, two_members,
    };
    use crate::protocol::ServerMessage;

    #[tokio::test]
    async fn entering_emits_member_entered_once_to_every_member_as_entered() {
        let (signaling, _, recorder) = recorded_service();
        let channel = signaling.channels().create(false).await.unwrap().id;
        let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
        let (bob, mut bob_queue) = integrated(&signaling, "bob", false).await;
        recorder.take();

        let entry = signaling
            .channels()
            .enter(&bob, channel.clone())
            .await
            .unwrap();
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
        signaling.channels().enter(&bob, channel).await.unwrap();
        assert_eq!(kinds(&recorder.take()), Vec::<&str>::new());
        assert!(drain(&mut alice_queue).is_empty());
    }

    #[tokio::test]
    async fn leaving_emits_member_left_to_the_remaining_members_as_left() {
        let (signaling, _, recorder) = recorded_service();
        let (_, (alice, mut alice_queue), (bob, mut bob_queue)) =
            two_members(&signaling, &recorder, false).await;

        signaling.channels().leave(&alice).await.unwrap();
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
        let (_, (alice, mut alice_queue), (bob, mut bob_queue)) =
            two_members(&signaling, &recorder, false).await;

        let text = crate::protocol::ChatMessage::Text { text: "hi".into() };
        signaling.channels().send_chat(&alice, text).await.unwrap();
        signaling
            .channels()
            .update_media_state(&bob, MediaKey::Muted, true)
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
    async fn channel_life_emits_created_without_audience_and_deleted_to_members_as_channel_closed()
    {
        let (signaling, _, recorder) = recorded_service();
        let channel = signaling.channels().create(true).await.unwrap().id;
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

        signaling.channels().delete(&channel).await.unwrap();
        let seen = recorder.take();
        // Each member leaves with the channel (no socket hears of that: they get
        // `channelClosed`), then the channel goes.
        assert_eq!(kinds(&seen), ["member_left", "channel_deleted"]);
        assert_eq!(
            seen[0].event,
            DomainEvent::MemberLeft {
                channel: channel.clone(),
                session: alice.session.clone(),
                user: Some(json!({"id": "alice"})),
            }
        );
        assert!(seen[0].audience.is_empty());
        assert_eq!(audience(&seen[1]), vec![alice.session.clone()]);
        assert_eq!(
            drain(&mut alice_queue),
            [format!(
                r#"{{"type":"channelClosed","channel":"{channel}"}}"#
            )]
        );
    }
}
