//! Channel administration for the service server (REST): create, list, inspect, delete, and
//! binding users to sessions.

use serde_json::Value;

use super::events::DomainEvent;
use super::ids::{ChannelId, SessionId};
use super::model::{ChannelRecord, SessionUpdate, now_ms};
use super::{DomainError, Signaling};

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

impl Signaling {
    /// Creates a channel. SFU channels are placed on a node when the first member publishes.
    pub async fn create_channel(&self, sfu_enabled: bool) -> Result<ChannelRecord, DomainError> {
        let channel = ChannelRecord {
            id: ChannelId::random(),
            sfu_enabled,
            sfu_server_id: None,
            sfu_room: None,
            created_at_ms: now_ms(),
        };
        self.store.create_channel(&channel).await?;
        let created = DomainEvent::ChannelCreated {
            channel: channel.id.clone(),
            sfu_enabled,
        };
        self.events.record(created).await;
        Ok(channel)
    }

    /// Every channel with its live member count (members whose presence expired are not
    /// counted). A read: three store round trips however many channels, and nothing changes.
    pub async fn list_channels(&self) -> Result<Vec<ChannelSummary>, DomainError> {
        let channels = self.store.channels().await?;
        let ids: Vec<ChannelId> = channels.iter().map(|c| c.id.clone()).collect();
        let live = self.live_members_of(&ids).await?;
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
    pub async fn channel_detail(&self, id: &ChannelId) -> Result<ChannelDetail, DomainError> {
        let channel = self
            .store
            .channel(id)
            .await?
            .ok_or(DomainError::NotFound("Channel is not found"))?;
        let sessions = self
            .live_members(id)
            .await?
            .into_iter()
            .map(|s| (s.id, s.user.unwrap_or(Value::Null)))
            .collect();
        Ok(ChannelDetail { channel, sessions })
    }

    /// Deletes a channel; its members get `channelClosed` and are no longer in it.
    pub async fn delete_channel(&self, id: &ChannelId) -> Result<(), DomainError> {
        let placed = self.store.channel(id).await?;
        let members = self
            .store
            .delete_channel(id)
            .await?
            .ok_or(DomainError::NotFound("Channel is not found"))?;
        let records = self.store.sessions(&members).await?;
        let mut targets = Vec::new();
        for record in records.into_iter().flatten() {
            if record.channel.as_ref() != Some(id) {
                continue;
            }
            let update = SessionUpdate {
                channel: Some(None),
                ..SessionUpdate::default()
            };
            self.store.update_session(&record.id, &update).await?;
            targets.push(record);
        }
        let deleted = DomainEvent::ChannelDeleted {
            channel: id.clone(),
        };
        self.emit(deleted, &targets.iter().collect::<Vec<_>>())
            .await;
        if let Some(channel) = placed {
            self.sfu_close_room(&channel).await;
        }
        Ok(())
    }

    /// Deletes several channels; unknown ids are reported, not fatal.
    pub async fn bulk_delete_channels(
        &self,
        ids: Vec<ChannelId>,
    ) -> Result<BulkDeleteOutcome, DomainError> {
        let mut outcome = BulkDeleteOutcome::default();
        for id in ids {
            match self.delete_channel(&id).await {
                Ok(()) => outcome.deleted.push(id),
                Err(DomainError::NotFound(_)) => outcome.not_found.push(id),
                Err(e) => return Err(e),
            }
        }
        Ok(outcome)
    }

    /// Binds `user` to a live session (re-binding replaces the previous user) and tells its socket.
    pub async fn integrate_user(
        &self,
        session: &SessionId,
        user: Value,
    ) -> Result<Value, DomainError> {
        let update = SessionUpdate {
            user: Some(user.clone()),
            ..SessionUpdate::default()
        };
        if !self.store.update_session(session, &update).await? {
            return Err(DomainError::NotFound("Session is not found"));
        }
        if let Some(record) = self.store.session(session).await? {
            let integrated = DomainEvent::UserIntegrated {
                session: session.clone(),
                user: user.clone(),
            };
            self.emit(integrated, &[&record]).await;
        }
        Ok(user)
    }
}
