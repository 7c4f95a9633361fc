//! What every part of the domain shares: the settings, this instance's id and the ports, with
//! the reads they all need (the session a connection holds, a channel's live members) and the one
//! way to emit an event.

use std::sync::Arc;

use super::SignalingConfig;
use super::error::{ErrorCode, SignalError};
use super::events::{DomainEvent, Events, Recipient};
use super::hub::Hub;
use super::ids::{ChannelId, InstanceId, SessionId};
use super::model::{PublishedTrack, SessionRecord};
use super::ports::{Bus, Store, StoreError};
use super::session::Connection;
use crate::metrics::Metrics;

/// The settings and ports of one instance's domain, shared by its parts.
pub(super) struct Shared {
    pub(super) config: SignalingConfig,
    pub(super) instance: InstanceId,
    pub(super) store: Arc<dyn Store>,
    pub(super) bus: Arc<dyn Bus>,
    pub(super) hub: Arc<Hub>,
    pub(super) events: Events,
    pub(super) metrics: Arc<Metrics>,
}

impl Shared {
    /// The session `connection` holds.
    pub(super) async fn me(&self, connection: &Connection) -> Result<SessionRecord, SignalError> {
        self.store
            .session(&connection.session)
            .await?
            .ok_or_else(|| SignalError::new(ErrorCode::SessionNotFound, "session has ended"))
    }

    /// Emits `event` to the sockets of `audience`, wherever they are held.
    pub(super) async fn emit(&self, event: DomainEvent, audience: &[&SessionRecord]) {
        let audience = audience.iter().map(|r| Recipient::from(*r)).collect();
        self.events.emit(event, audience).await;
    }

    /// Emits `TrackUnpublished` for each of `tracks` (no socket hears of it: the node's
    /// renegotiation tells the subscribers).
    pub(super) async fn unpublished(
        &self,
        channel: &ChannelId,
        session: &SessionId,
        tracks: Vec<PublishedTrack>,
    ) {
        for track in tracks {
            let unpublished = DomainEvent::TrackUnpublished {
                channel: channel.clone(),
                session: session.clone(),
                track,
            };
            self.events.record(unpublished).await;
        }
    }

    /// `member` leaves `channel`: its tracks end (`TrackUnpublished` each, recorded for the
    /// event subscribers) and the returned `MemberLeft` is the caller's to deliver — to the
    /// channel, or to no socket when the channel itself is going.
    pub(super) async fn member_left(
        &self,
        channel: &ChannelId,
        member: &SessionRecord,
    ) -> DomainEvent {
        self.unpublished(channel, &member.id, member.published.clone())
            .await;
        DomainEvent::MemberLeft {
            channel: channel.clone(),
            session: member.id.clone(),
            user: member.user.clone(),
        }
    }

    /// Live members of a channel. A read: members whose presence expired (their instance died)
    /// or who moved on are left out but stay stored; removing them and telling the others is
    /// the write path's job (`Channels::prune_members`, `Channels::sweep_expired_members`).
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
    pub(super) async fn member_records(
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
}

/// The channel a session is in, or the error for requests that need one.
pub(super) fn in_channel(me: &SessionRecord) -> Result<&ChannelId, SignalError> {
    me.channel
        .as_ref()
        .ok_or_else(|| SignalError::new(ErrorCode::NotInChannel, "enter a channel first"))
}

/// Splits a channel's stored members into live records and stale ids (expired, or now in
/// another channel).
pub(super) fn split_members(
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
