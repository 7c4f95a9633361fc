//! SFU channels: placement of a channel's room on a node, the publish and subscribe negotiation
//! relayed between a session and its node, and releasing media when sessions and channels end.
//!
//! Flow for one session (DESIGN §3): `call {isSFU, sdp}` → node answers → `answered {isSFU, sdp}`;
//! whenever the session has something to receive, the node offers → `called {isSFU, sdp}` →
//! `answer {isSFU, sdp}` → node. Node events (tracks came or went) trigger new offers, for
//! sessions held by any instance (delivery crosses the bus).

use std::sync::Arc;

use mooyaho_control::{ErrorCode as NodeError, Event, Request, Response};
use tokio::sync::mpsc;

use serde_json::Value;

use super::Signaling;
use super::error::{ErrorCode, SignalError};
use super::events::DomainEvent;
use super::ids::{ChannelId, SessionId, SfuServerId};
use super::model::{ChannelRecord, SessionRecord};
use super::ports::{SfuError, SfuNodes};
use super::relay::check_candidate;
use super::session::{Connection, in_channel};

impl Signaling {
    /// Connects the SFU fleet and starts handling its events. Called once, at composition.
    pub fn attach_sfu(
        self: &Arc<Self>,
        nodes: Arc<dyn SfuNodes>,
        mut events: mpsc::Receiver<(SfuServerId, Event)>,
    ) {
        if self.sfu.set(nodes).is_err() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some((node, event)) = events.recv().await {
                let Some(signaling) = weak.upgrade() else {
                    break;
                };
                signaling.on_sfu_event(node, event).await;
            }
        });
    }

    /// The fleet, if this instance has one.
    pub(super) fn sfu_nodes(&self) -> Option<&Arc<dyn SfuNodes>> {
        self.sfu.get()
    }

    /// `call {isSFU:true, sdp}`: the session publishes through its channel's node. Returns the
    /// node's answer.
    pub async fn sfu_publish(
        &self,
        connection: &Connection,
        offer: String,
    ) -> Result<String, SignalError> {
        let me = &self.me(connection).await?;
        let channel = self.sfu_channel(me).await?;
        let mut retried = false;
        loop {
            let (node, room, placed_now) = self.room_for(&channel.id).await?;
            let request = Request::Publish {
                room: room.clone(),
                session: me.id.0.clone(),
                offer: offer.clone(),
            };
            match self.node_call(node, request).await? {
                Response::Sdp { sdp: Some(answer) } => {
                    // Whatever the others already publish, this session can receive now.
                    self.sfu_offer(node, &room, me).await;
                    if placed_now {
                        // Members that entered before the channel had a room are unknown to the
                        // node, so its renegotiation events cannot reach them: offer directly.
                        self.sfu_offer_members(node, &room, &channel.id, &me.id)
                            .await;
                    }
                    let published = DomainEvent::TracksPublished {
                        channel: channel.id.clone(),
                        session: me.id.clone(),
                    };
                    self.events.record(published).await;
                    return Ok(answer);
                }
                Response::Error {
                    code: NodeError::UnknownRoom,
                    ..
                } if !retried => {
                    // The node restarted and lost the room: place the channel again, once.
                    self.store.unplace_channel(&channel.id, &room).await?;
                    retried = true;
                }
                other => return Err(node_refusal(other)),
            }
        }
    }

    /// `answer {isSFU:true, sdp}`: the session answers the node's latest subscribe offer.
    pub async fn sfu_answer(
        &self,
        connection: &Connection,
        answer: String,
    ) -> Result<(), SignalError> {
        let me = self.me(connection).await?;
        let channel = self.sfu_channel(&me).await?;
        let (Some(node), Some(room)) = (channel.sfu_server_id, channel.sfu_room) else {
            return Err(SignalError::new(
                ErrorCode::InvalidMessage,
                "no SFU offer is pending for this session",
            ));
        };
        let request = Request::SubscribeAnswer {
            room,
            session: me.id.0.clone(),
            answer,
        };
        match self.node_call(node, request).await? {
            Response::Done => Ok(()),
            other => Err(node_refusal(other)),
        }
    }

    /// `candidate {isSFU:true}`: the node is ICE-lite with its candidate in the SDP and learns
    /// the client's addresses from its connectivity checks, so trickled candidates are not
    /// needed. Accepted (not an error) so standard clients can trickle as usual.
    pub async fn sfu_candidate(
        &self,
        connection: &Connection,
        candidate: &Value,
    ) -> Result<(), SignalError> {
        check_candidate(candidate)?;
        let me = self.me(connection).await?;
        self.sfu_channel(&me).await?;
        Ok(())
    }

    /// Sends `session` the node's current subscribe offer, if it has something to receive.
    pub(super) async fn sfu_offer(&self, node: SfuServerId, room: &str, session: &SessionRecord) {
        let request = Request::SubscribeOffer {
            room: room.to_owned(),
            session: session.id.0.clone(),
        };
        match self.node_call(node, request).await {
            Ok(Response::Sdp { sdp: Some(offer) }) => {
                let offered = DomainEvent::SubscribeOffered {
                    session: session.id.clone(),
                    sdp: offer,
                };
                self.emit(offered, &[session]).await;
            }
            Ok(Response::Sdp { sdp: None }) => {}
            Ok(other) => tracing::warn!(?other, "subscribe offer refused"),
            Err(e) => tracing::warn!(error = %e.message, "subscribe offer failed"),
        }
    }

    /// After `enter`: a receive-only member gets an offer as soon as anyone publishes. The
    /// channel is read again after the membership was written, so a concurrent first publish
    /// either sees this member or this member sees its placement.
    pub(super) async fn sfu_entered(&self, me: &SessionRecord, channel: &ChannelRecord) {
        let Ok(Some(channel)) = self.store.channel(&channel.id).await else {
            return;
        };
        if let (Some(node), Some(room)) = (channel.sfu_server_id, &channel.sfu_room) {
            self.sfu_offer(node, room, me).await;
        }
    }

    /// Offers to every live member of `channel` but `except`.
    async fn sfu_offer_members(
        &self,
        node: SfuServerId,
        room: &str,
        channel: &ChannelId,
        except: &SessionId,
    ) {
        match self.live_members(channel).await {
            Ok(members) => {
                for member in members.iter().filter(|m| &m.id != except) {
                    self.sfu_offer(node, room, member).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing members for SFU offers failed"),
        }
    }

    /// The session left an SFU channel: its transports go (others are re-offered by the node).
    pub(super) async fn sfu_release(&self, session: &SessionId, channel: &ChannelId) {
        let Ok(Some(channel)) = self.store.channel(channel).await else {
            return;
        };
        let (Some(node), Some(room)) = (channel.sfu_server_id, channel.sfu_room) else {
            return;
        };
        let request = Request::CloseSession {
            room,
            session: session.0.clone(),
        };
        if let Err(e) = self.node_call(node, request).await {
            tracing::warn!(error = %e.message, "releasing SFU session failed");
        }
        let released = DomainEvent::MediaReleased {
            channel: channel.id,
            session: session.clone(),
        };
        self.events.record(released).await;
    }

    /// Tells a node its drain state (best effort: an unreachable node is not placed on anyway).
    pub(super) async fn tell_node_draining(&self, node: SfuServerId, draining: bool) {
        if self.sfu_nodes().is_none() {
            return;
        }
        if let Err(e) = self.node_call(node, Request::Drain { draining }).await {
            tracing::warn!(%node, error = %e.message, "could not tell the node its drain state");
        }
    }

    /// The channel was deleted: its room goes.
    pub(super) async fn sfu_close_room(&self, channel: &ChannelRecord) {
        let (Some(node), Some(room)) = (channel.sfu_server_id, channel.sfu_room.clone()) else {
            return;
        };
        if let Err(e) = self.node_call(node, Request::CloseRoom { room }).await {
            tracing::warn!(error = %e.message, "closing SFU room failed");
        }
    }

    async fn on_sfu_event(&self, node: SfuServerId, event: Event) {
        match event {
            Event::RenegotiationNeeded { room, session } => {
                match self.store.session(&SessionId(session)).await {
                    Ok(Some(record)) => self.sfu_offer(node, &room, &record).await,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "SFU event: store unavailable"),
                }
            }
            Event::TransportClosed {
                session,
                side,
                reason,
                ..
            } => {
                tracing::info!(%session, %side, %reason, "SFU closed a transport");
                let closed = DomainEvent::SfuTransportClosed {
                    node,
                    session: SessionId(session),
                    side,
                    reason,
                };
                self.events.record(closed).await;
            }
            _ => {}
        }
    }

    /// The session's channel, which must be SFU-enabled.
    async fn sfu_channel(&self, me: &SessionRecord) -> Result<ChannelRecord, SignalError> {
        let id = in_channel(me)?;
        let channel = self
            .store
            .channel(id)
            .await?
            .ok_or_else(|| SignalError::new(ErrorCode::ChannelNotFound, "no such channel"))?;
        if !channel.sfu_enabled {
            return Err(SignalError::new(
                ErrorCode::InvalidMessage,
                "this channel is not SFU-enabled",
            ));
        }
        Ok(channel)
    }

    /// The channel's node and room, placing it on the least-loaded healthy node if needed
    /// (`true` when this call placed it).
    async fn room_for(
        &self,
        channel: &ChannelId,
    ) -> Result<(SfuServerId, String, bool), SignalError> {
        let record = self
            .store
            .channel(channel)
            .await?
            .ok_or_else(|| SignalError::new(ErrorCode::ChannelNotFound, "no such channel"))?;
        if let (Some(node), Some(room)) = (record.sfu_server_id, record.sfu_room) {
            return Ok((node, room, false));
        }
        let node = self.pick_node().await?;
        let room = match self.node_call(node, Request::CreateRoom).await? {
            Response::Room { room } => room,
            other => return Err(node_refusal(other)),
        };
        let placed = self
            .store
            .place_channel(channel, node, &room)
            .await?
            .ok_or_else(|| SignalError::new(ErrorCode::ChannelNotFound, "no such channel"))?;
        match (placed.sfu_server_id, placed.sfu_room) {
            (Some(winner), Some(winner_room)) if winner == node && winner_room == room => {
                tracing::info!(%channel, %node, %room, "channel placed");
                let placed = DomainEvent::ChannelPlaced {
                    channel: channel.clone(),
                    node,
                    room: room.clone(),
                };
                self.events.record(placed).await;
                Ok((node, room, true))
            }
            (Some(winner), Some(winner_room)) => {
                // Another instance placed it first: use its room, drop ours.
                let _ = self.node_call(node, Request::CloseRoom { room }).await;
                Ok((winner, winner_room, false))
            }
            _ => Err(SignalError::new(
                ErrorCode::SfuUnavailable,
                "placement failed",
            )),
        }
    }

    /// Least-loaded healthy node that is neither disabled nor draining.
    async fn pick_node(&self) -> Result<SfuServerId, SignalError> {
        let nodes = self.sfu_nodes().ok_or_else(no_fleet)?;
        let records = self.store.sfu_servers().await?;
        records
            .iter()
            .filter(|r| !r.disabled && !r.draining)
            .filter_map(|r| {
                let status = nodes.status(r.id);
                let load = status.load.filter(|_| status.healthy)?;
                Some(((load.sessions, load.cpu_percent, load.rooms, r.id), r.id))
            })
            .min()
            .map(|(_, id)| id)
            .ok_or_else(|| {
                SignalError::new(
                    ErrorCode::SfuUnavailable,
                    "no healthy SFU node is available for new rooms",
                )
            })
    }

    async fn node_call(
        &self,
        node: SfuServerId,
        request: Request,
    ) -> Result<Response, SignalError> {
        let nodes = self.sfu_nodes().ok_or_else(no_fleet)?;
        nodes.call(node, request).await.map_err(|e| {
            tracing::warn!(%node, error = %e, "SFU request failed");
            match e {
                SfuError::Unreachable => SignalError::new(
                    ErrorCode::SfuUnavailable,
                    "the channel's SFU node is unreachable",
                ),
                SfuError::Failed(_) => {
                    SignalError::new(ErrorCode::SfuUnavailable, "the SFU node did not answer")
                }
            }
        })
    }
}

fn no_fleet() -> SignalError {
    SignalError::new(
        ErrorCode::SfuUnavailable,
        "this signaling instance has no cluster secret configured, so it uses no SFU nodes",
    )
}

/// Maps a node's refusal to a client error.
fn node_refusal(response: Response) -> SignalError {
    match response {
        Response::Error {
            code: NodeError::BadSdp,
            message,
        } => SignalError::new(ErrorCode::InvalidMessage, format!("SDP refused: {message}")),
        Response::Error {
            code: NodeError::LimitExceeded,
            message,
        } => SignalError::new(ErrorCode::LimitExceeded, format!("SDP refused: {message}")),
        Response::Error {
            code: NodeError::RateLimited,
            message,
        } => SignalError::new(ErrorCode::RateLimited, message),
        Response::Error { message, .. } => SignalError::new(ErrorCode::SfuUnavailable, message),
        other => {
            tracing::warn!(?other, "unexpected SFU reply");
            SignalError::new(ErrorCode::SfuUnavailable, "unexpected SFU reply")
        }
    }
}
