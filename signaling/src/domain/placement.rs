//! SFU placement: a channel's room on a node, the publish and subscribe negotiation relayed
//! between a session and its node, and releasing media when sessions and channels end.
//!
//! Flow for one session (DESIGN §3): `call {isSFU, sdp}` → node answers → `answered {isSFU, sdp}`;
//! whenever the session has something to receive, the node offers → `called {isSFU, sdp}` →
//! `answer {isSFU, sdp}` → node. Node events (tracks came or went) trigger new offers, for
//! sessions held by any instance (delivery crosses the bus).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mooyaho_control::{ErrorCode as NodeError, Event, Request, Response, VideoQuality};
use tokio::sync::{Notify, mpsc};

use serde_json::Value;

use super::cascade::{Cascade, RelayAddresses, RelayChange, Target};
use super::error::{ErrorCode, SignalError};
use super::events::DomainEvent;
use super::failover::{
    CHECK_EVERY, DRAIN_BATCH, DRAIN_PAUSE, HOLD_DOWN, NodeWatch, OFFER_AT_ONCE, ORPHAN_GRACE,
    REPLACE_AT_ONCE, TELL_AT_ONCE,
};
use super::ids::{ChannelId, SessionId, SfuServerId};
use super::model::{ChannelRecord, SessionRecord, SessionUpdate, SfuSpan};
use super::node_queue::{NodeQueue, Queued};
use super::ports::{NodeReport, SfuError, SfuNodes};
use super::relay::check_candidate;
use super::sdp_tracks;
use super::session::Connection;
use super::shared::{Shared, in_channel};

/// What [`Placement::relocate`] did with a channel.
#[derive(Debug, PartialEq, Eq)]
enum Relocated {
    /// Not placed in that room any more (another instance moved it) or the store failed:
    /// nothing done.
    NotOurs,
    /// Placed again on another node; members told.
    Placed,
    /// Unplaced, and no node could take it: members told it has no media for now.
    Stranded,
}

/// Handles `node`'s reports in order, until the placement is gone.
async fn handle_node_reports(placement: Weak<Placement>, node: SfuServerId, queue: Arc<NodeQueue>) {
    loop {
        let report = queue.next().await;
        let Some(placement) = placement.upgrade() else {
            return;
        };
        placement.on_node_event(node, report).await;
    }
}

/// Where SFU channels' media lives, and the negotiation between sessions and nodes.
pub struct Placement {
    shared: Arc<Shared>,
    /// The SFU fleet, once attached (see [`Placement::attach`]).
    nodes: OnceLock<Arc<dyn SfuNodes>>,
    /// Wakes the failover watch when a control link goes down, so a dead node's channels move
    /// at once rather than at the next look.
    link_lost: Arc<Notify>,
    /// When this instance last failed each node over: such a node takes no new room for
    /// [`HOLD_DOWN`] even if it looks healthy again, so instances with different views of a
    /// flapping node do not move channels back and forth.
    failed_at: Mutex<HashMap<SfuServerId, Instant>>,
    /// When each node last refused a transport as full: such a node takes no new member for
    /// [`FULL_HOLD`] whatever its last load report (sent once a second) said.
    full_at: Mutex<HashMap<SfuServerId, Instant>>,
    /// Relay links between the nodes of channels spanning nodes, as this instance opened them.
    cascade: Cascade,
}

/// How often a WHEP offer to a node fed by relay links is asked again while the node has no
/// track to answer with yet, and the pause between (the in-band announcements of a link just
/// opened normally arrive within milliseconds).
const RELAYED_TRACKS_TRIES: usize = 10;
const RELAYED_TRACKS_PAUSE: Duration = Duration::from_millis(100);
/// How long a node that refused a transport as full is skipped for new members.
const FULL_HOLD: Duration = Duration::from_secs(2);
/// Nodes a member is tried on, one after another refusing it as full, before it is told the
/// fleet is full.
const FULL_TRIES: usize = 4;

/// A channel's publishers and receiving nodes, as relay planning takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayInputs {
    /// Live members publishing tracks, with the node each publishes to.
    pub publishers: Vec<super::relay_plan::PublisherOnNode>,
    /// Nodes serving at least one live member that receives.
    pub receivers: BTreeSet<SfuServerId>,
}

/// Where one member's media is served: a node serving its channel and the channel's room there.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Serving {
    node: SfuServerId,
    room: String,
    /// This call placed the channel (on its first node).
    placed_now: bool,
}

/// What a node said to a subscribe offer request.
enum Offered {
    /// Offered, or nothing to offer, or failed (logged): nothing more to do.
    Done,
    /// The node is full and the member new to it: serve it elsewhere.
    Full,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("attached", &self.nodes.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Placement {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            nodes: OnceLock::new(),
            link_lost: Arc::new(Notify::new()),
            failed_at: Mutex::new(HashMap::new()),
            full_at: Mutex::new(HashMap::new()),
            cascade: Cascade::default(),
        }
    }

    /// Connects the SFU fleet and starts handling its events. Called once, at composition.
    pub fn attach(
        self: &Arc<Self>,
        nodes: Arc<dyn SfuNodes>,
        mut events: mpsc::Receiver<(SfuServerId, NodeReport)>,
    ) {
        if self.nodes.set(nodes).is_err() {
            return;
        }
        // The fleet's links wait on this loop only for a queue push: each node's reports are
        // handled by that node's own task, so a slow one never stops the links being read.
        let weak = Arc::downgrade(self);
        let metrics = self.shared.metrics.clone();
        tokio::spawn(async move {
            let mut queues: HashMap<SfuServerId, Arc<NodeQueue>> = HashMap::new();
            while let Some((node, report)) = events.recv().await {
                let queue = queues.entry(node).or_insert_with(|| {
                    let queue = Arc::new(NodeQueue::default());
                    tokio::spawn(handle_node_reports(weak.clone(), node, queue.clone()));
                    queue
                });
                if let Queued::Dropped(total) = queue.push(report) {
                    metrics.sfu_node_report_dropped(node.0);
                    if total.is_power_of_two() {
                        tracing::warn!(%node, dropped = total,
                            "SFU node reports faster than they can be handled: dropping some");
                    }
                }
            }
        });
        let weak = Arc::downgrade(self);
        let link_lost = self.link_lost.clone();
        tokio::spawn(async move {
            let mut watch = NodeWatch::default();
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = link_lost.notified() => {}
                }
                let Some(placement) = weak.upgrade() else {
                    break;
                };
                placement.watch_nodes(&mut watch).await;
            }
        });
    }

    /// One look at the fleet's health: the channels of every node that failed move at once.
    async fn watch_nodes(&self, watch: &mut NodeWatch) {
        let Some(nodes) = self.nodes() else { return };
        let records = match self.shared.store.sfu_servers().await {
            Ok(records) => records,
            Err(e) => return tracing::debug!(error = %e, "failover: registry unavailable"),
        };
        let health = records.iter().map(|r| (r.id, nodes.status(r.id).healthy));
        for node in watch.look(Instant::now(), health) {
            self.fail_over(node).await;
        }
    }

    /// `node` failed: every channel placed on it is placed again on a healthy node.
    async fn fail_over(&self, node: SfuServerId) {
        self.failed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, Instant::now());
        // Its relay links are gone with it; their other ends are closed.
        if let Some(nodes) = self.nodes.get() {
            self.cascade.node_lost(nodes.as_ref(), node).await;
        }
        let (placed, spans) = match (self.placed_on(node).await, self.spans_on(node).await) {
            (Ok(placed), Ok(spans)) => (placed, spans),
            (Err(e), _) | (_, Err(e)) => {
                return tracing::warn!(%node, error = %e, "failover: store unavailable");
            }
        };
        // Channels it only helped serve keep their first node: only its members move.
        for (channel, room) in spans {
            self.drop_span(&channel, SfuSpan { node, room }, None).await;
        }
        if placed.is_empty() {
            return;
        }
        // Which rule failed it: the connection (closed, or silent past the QUIC idle timeout) or
        // the load reports (connected, none for 3 s); `last_error` says how the link ended.
        let status = self.nodes().map(|n| n.status(node)).unwrap_or_default();
        let cause = if status.connected {
            "no load report for 3 s"
        } else {
            "control connection lost"
        };
        tracing::warn!(%node, channels = placed.len(), cause, last_error = ?status.last_error,
            "SFU node failed: moving its channels");
        self.relocate_all(node, placed, None).await;
    }

    /// This instance's link to `node` came up: channels whose rooms the node no longer has (it
    /// restarted) are placed again, and rooms it still has that no channel is placed in (their
    /// channels moved off while it was unreachable) are closed. The channels are read before the
    /// node is asked, so a room created in between is never taken for a lost one; and again
    /// [`ORPHAN_GRACE`] after, so one being placed is never taken for an orphan.
    async fn reconcile_rooms(&self, node: SfuServerId) {
        let placed = match self.placed_on(node).await {
            Ok(placed) => placed,
            Err(e) => return tracing::warn!(%node, error = %e, "lost rooms: store unavailable"),
        };
        // Its first load report follows the link by up to a second: wait for it, so the node can
        // take its own channels back (any healthy node can, if it never comes).
        for _ in 0..30 {
            if self.nodes().is_some_and(|n| n.status(node).healthy) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let hosted = match self.node_call(node, Request::Rooms).await {
            Ok(Response::Rooms { rooms }) => rooms,
            Ok(other) => return tracing::warn!(%node, ?other, "lost rooms: unexpected reply"),
            Err(e) => return tracing::warn!(%node, error = %e.message, "lost rooms: no reply"),
        };
        let lost: Vec<_> = placed
            .into_iter()
            .filter(|(channel, room)| {
                let lost = !hosted.contains(room);
                if lost {
                    tracing::info!(%node, %channel, %room, "the node lost the channel's room");
                }
                lost
            })
            .collect();
        self.relocate_all(node, lost, None).await;
        match self.spans_on(node).await {
            Ok(spans) => {
                for (channel, room) in spans.into_iter().filter(|(_, r)| !hosted.contains(r)) {
                    tracing::info!(%node, %channel, %room, "the node lost the channel's room");
                    self.drop_span(&channel, SfuSpan { node, room }, None).await;
                }
            }
            Err(e) => tracing::warn!(%node, error = %e, "lost rooms: store unavailable"),
        }
        self.close_orphan_rooms(node, hosted).await;
    }

    /// Closes those of `hosted` (rooms `node` named) that no channel is placed in
    /// [`ORPHAN_GRACE`] later: a failed-over node would otherwise keep serving, and asking
    /// members about, rooms whose channels live elsewhere now.
    async fn close_orphan_rooms(&self, node: SfuServerId, hosted: Vec<String>) {
        if hosted.is_empty() {
            return;
        }
        tokio::time::sleep(ORPHAN_GRACE).await;
        let (mut placed, spans) = match (self.placed_on(node).await, self.spans_on(node).await) {
            (Ok(placed), Ok(spans)) => (placed, spans),
            (Err(e), _) | (_, Err(e)) => {
                return tracing::warn!(%node, error = %e, "orphan rooms: store unavailable");
            }
        };
        placed.extend(spans);
        for room in hosted {
            if placed.iter().any(|(_, placed)| *placed == room) {
                continue;
            }
            tracing::info!(%node, %room, "closing a room no channel is placed in");
            if let Err(e) = self.node_call(node, Request::CloseRoom { room }).await {
                tracing::warn!(%node, error = %e.message, "closing an orphan room failed");
            }
        }
    }

    /// Whether a healthy node other than `node`, neither disabled nor draining, could take rooms.
    pub(super) async fn has_other_eligible_node(
        &self,
        node: SfuServerId,
    ) -> Result<bool, super::ports::StoreError> {
        let Some(nodes) = self.nodes() else {
            return Ok(false);
        };
        let records = self.shared.store.sfu_servers().await?;
        let held = self.held_down();
        Ok(records.iter().any(|r| {
            r.id != node
                && !r.disabled
                && !r.draining
                && !held.contains(&r.id)
                && nodes.status(r.id).healthy
        }))
    }

    /// Nodes this instance failed over less than [`HOLD_DOWN`] ago.
    fn held_down(&self) -> Vec<SfuServerId> {
        let now = Instant::now();
        let mut failed_at = self.failed_at.lock().unwrap_or_else(|e| e.into_inner());
        failed_at.retain(|_, at| now.duration_since(*at) < HOLD_DOWN);
        failed_at.keys().copied().collect()
    }

    /// Moves every channel off a draining `node`, [`DRAIN_BATCH`] at a time with
    /// [`DRAIN_PAUSE`] between batches (so members reconnect spread over a few seconds rather
    /// than all at once), in the background. Each old room is closed once its channel moved.
    /// Stops early if the node stops draining.
    pub(super) fn move_rooms_off(self: &Arc<Self>, node: SfuServerId) {
        let placement = self.clone();
        tokio::spawn(async move {
            loop {
                let still_draining = match placement.shared.store.sfu_servers().await {
                    Ok(records) => records.iter().any(|r| r.id == node && r.draining),
                    Err(e) => return tracing::warn!(%node, error = %e, "drain: store unavailable"),
                };
                if !still_draining {
                    return;
                }
                let placed = match placement.placed_on(node).await {
                    Ok(placed) => placed,
                    Err(e) => return tracing::warn!(%node, error = %e, "drain: store unavailable"),
                };
                if placed.is_empty() {
                    // Channels it only helped serve: their members there move to other nodes.
                    match placement.spans_on(node).await {
                        Ok(spans) => {
                            for (channel, room) in spans {
                                let span = SfuSpan { node, room };
                                placement.drop_span(&channel, span, None).await;
                            }
                        }
                        Err(e) => {
                            return tracing::warn!(%node, error = %e, "drain: store unavailable");
                        }
                    }
                    return tracing::info!(%node, "SFU node drained");
                }
                for (channel, room) in placed.into_iter().take(DRAIN_BATCH) {
                    // A drain never strands a working room: with nowhere to move it, it stops
                    // (the node stays draining, not drained; draining it again resumes).
                    match placement.has_other_eligible_node(node).await {
                        Ok(true) => {}
                        Ok(false) => {
                            return tracing::warn!(%node, %channel,
                                "drain stopped: no other healthy, enabled, non-draining node \
                                 can take its channels; they stay on it");
                        }
                        Err(e) => {
                            return tracing::warn!(%node, error = %e, "drain: store unavailable");
                        }
                    }
                    match placement.relocate(&channel, node, &room, None).await {
                        Relocated::Placed => {
                            let close = Request::CloseRoom { room };
                            if let Err(e) = placement.node_call(node, close).await {
                                tracing::warn!(%node, error = %e.message, "drain: closing the old room failed");
                            }
                        }
                        // Another instance moved it (and closes the room).
                        Relocated::NotOurs => {}
                        Relocated::Stranded => {
                            return tracing::warn!(%node, %channel,
                                "drain stopped: the channel could not be placed elsewhere; its \
                                 old room is kept");
                        }
                    }
                }
                tokio::time::sleep(DRAIN_PAUSE).await;
            }
        });
    }

    /// The channels placed on `node`, with their rooms.
    async fn placed_on(
        &self,
        node: SfuServerId,
    ) -> Result<Vec<(ChannelId, String)>, super::ports::StoreError> {
        Ok(self
            .shared
            .store
            .channels()
            .await?
            .into_iter()
            .filter_map(|c| match (c.sfu_server_id, c.sfu_room) {
                (Some(on), Some(room)) if on == node => Some((c.id, room)),
                _ => None,
            })
            .collect())
    }

    /// The channels `node` serves as a span (not their first node), with their rooms there.
    async fn spans_on(
        &self,
        node: SfuServerId,
    ) -> Result<Vec<(ChannelId, String)>, super::ports::StoreError> {
        Ok(self
            .shared
            .store
            .channels()
            .await?
            .into_iter()
            .flat_map(|c| {
                let id = c.id;
                c.sfu_spans
                    .into_iter()
                    .filter(move |s| s.node == node)
                    .map(move |s| (id.clone(), s.room))
            })
            .collect())
    }

    /// `channel`'s room on `node` is lost: the whole channel is placed again when it was its
    /// first node ([`Self::relocate`]), else only the members that node served move
    /// ([`Self::drop_span`]).
    async fn room_lost(
        &self,
        channel: &ChannelId,
        node: SfuServerId,
        room: &str,
        except: Option<&SessionId>,
    ) {
        let first = match self.shared.store.channel(channel).await {
            Ok(Some(record)) => record.sfu_room.as_deref() == Some(room),
            Ok(None) => return,
            Err(e) => return tracing::warn!(%channel, error = %e, "room lost: store unavailable"),
        };
        if first {
            self.relocate(channel, node, room, except).await;
        } else {
            let span = SfuSpan {
                node,
                room: room.to_owned(),
            };
            self.drop_span(channel, span, except).await;
        }
    }

    /// `channel` no longer spans `span`'s node (it failed, restarted, drains or was removed):
    /// the span goes, its room is closed (best effort), and the members it served (but
    /// `except`, whose own request is being served again) are told `sfuRestart` and offered
    /// media from another node. Of several instances doing this, only the one whose removal
    /// took effect acts.
    pub(super) async fn drop_span(
        &self,
        channel: &ChannelId,
        span: SfuSpan,
        except: Option<&SessionId>,
    ) {
        match self.shared.store.remove_channel_span(channel, &span).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                return tracing::warn!(%channel, error = %e, "dropping a span: store unavailable");
            }
        }
        let SfuSpan { node, room } = span;
        tracing::warn!(%channel, %node, "channel no longer spans the node: its members there move");
        let lost = DomainEvent::RoomLost {
            channel: channel.clone(),
            node,
            room: room.clone(),
        };
        self.shared.events.record(lost).await;
        // Best effort: a failed node is unreachable, a draining one closes its transports.
        let _ = self.node_call(node, Request::CloseRoom { room }).await;
        let members = match self.shared.live_members(channel).await {
            Ok(members) => members,
            Err(e) => {
                return tracing::warn!(%channel, error = %e, "dropping a span: members unavailable");
            }
        };
        let moved: Vec<SessionRecord> = members
            .into_iter()
            .filter(|m| m.sfu_node == Some(node) && Some(&m.id) != except)
            .collect();
        let restarted = DomainEvent::SfuRestarted {
            channel: channel.clone(),
        };
        self.shared
            .emit(restarted, &moved.iter().collect::<Vec<_>>())
            .await;
        futures_util::stream::iter(&moved)
            .for_each_concurrent(OFFER_AT_ONCE, |member| self.offer(channel, member))
            .await;
        self.sync_relays(channel).await;
    }

    /// `channel`'s `room` on `node` is lost (the node failed or restarted): see
    /// [`Self::relocate_all`].
    async fn relocate(
        &self,
        channel: &ChannelId,
        node: SfuServerId,
        room: &str,
        except: Option<&SessionId>,
    ) -> Relocated {
        let lost = vec![(channel.clone(), room.to_owned())];
        match self.relocate_all(node, lost, except).await.pop() {
            Some((_, relocated)) => relocated,
            None => Relocated::NotOurs,
        }
    }

    /// The rooms `lost` (channel, room) on `node` are gone (the node failed or restarted): each
    /// channel is placed again on the least-loaded healthy node, and its members — but
    /// `except`, whose own publish is placing it — are told `sfuRestart` so they publish and
    /// subscribe again. Every member of every channel is told first (store work only,
    /// [`TELL_AT_ONCE`] channels at a time), then
    /// the channels are placed and their members offered [`REPLACE_AT_ONCE`] channels at a
    /// time: the last member's notice never waits on other channels' node requests (a
    /// re-offer may take up to the control timeout), and the clients reconnect while the rest
    /// is placed (a member's own publish may place its channel first; the placement in the
    /// store decides). Of several instances noticing one lost room, only the one whose unplace
    /// took effect does this. With no healthy node left, members are told so (an `error`, then
    /// `sfuRestart`), and the channel stays unplaced until a publish can place it.
    async fn relocate_all(
        &self,
        node: SfuServerId,
        lost: Vec<(ChannelId, String)>,
        except: Option<&SessionId>,
    ) -> Vec<(ChannelId, Relocated)> {
        // Cheap (the registry and this instance's link view): whether telling members to
        // reconnect now can succeed, or they must hear that media is unavailable.
        let can_place = self.pick_node(&[]).await.is_ok();
        let mut outcomes = Vec::with_capacity(lost.len());
        let mut told = Vec::with_capacity(lost.len());
        let mut telling = futures_util::stream::iter(lost)
            .map(|(channel, room)| async move {
                let audience = self
                    .unplace_and_tell(&channel, node, &room, except, can_place)
                    .await;
                (channel, audience)
            })
            .buffer_unordered(TELL_AT_ONCE);
        while let Some((channel, audience)) = telling.next().await {
            match audience {
                Some(audience) if can_place => told.push((channel, audience)),
                Some(_) => outcomes.push((channel, Relocated::Stranded)),
                None => outcomes.push((channel, Relocated::NotOurs)),
            }
        }
        let placed: Vec<_> = futures_util::stream::iter(told)
            .map(|(channel, audience)| async move {
                let relocated = self.place_again(&channel, node, &audience).await;
                (channel, relocated)
            })
            .buffer_unordered(REPLACE_AT_ONCE)
            .collect()
            .await;
        outcomes.extend(placed);
        outcomes
    }

    /// Unplaces `channel` from its lost `room` (if it is still placed there: else another
    /// instance is relocating it, and `None`), and tells its members but `except`: `sfuRestart`,
    /// preceded by `media_stranded` when no node can take it (`can_place` false). Returns them.
    async fn unplace_and_tell(
        &self,
        channel: &ChannelId,
        node: SfuServerId,
        room: &str,
        except: Option<&SessionId>,
        can_place: bool,
    ) -> Option<Vec<SessionRecord>> {
        // Unplacing clears its spans too: their rooms are closed once members were told.
        let spans = match self.shared.store.channel(channel).await {
            Ok(Some(record)) => record.sfu_spans,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "relocating: store unavailable");
                return None;
            }
        };
        match self.shared.store.unplace_channel(channel, room).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "relocating: store unavailable");
                return None;
            }
        }
        let lost = DomainEvent::RoomLost {
            channel: channel.clone(),
            node,
            room: room.to_owned(),
        };
        self.shared.events.record(lost).await;
        let members = match self.shared.live_members(channel).await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "relocating: members unavailable");
                Vec::new()
            }
        };
        let audience: Vec<SessionRecord> = members
            .into_iter()
            .filter(|m| Some(&m.id) != except)
            .collect();
        let listeners: Vec<&SessionRecord> = audience.iter().collect();
        if !can_place {
            tracing::warn!(%channel, from = %node,
                "channel lost its SFU room and no node can take it now");
            let stranded = DomainEvent::MediaStranded {
                channel: channel.clone(),
                node,
            };
            self.shared.emit(stranded, &listeners).await;
        }
        // Their PeerConnections are dead either way: clients drop them and publish again (while
        // no node can take the channel that is refused; the browser SDK retries with backoff).
        let restarted = DomainEvent::SfuRestarted {
            channel: channel.clone(),
        };
        self.shared.emit(restarted, &listeners).await;
        for SfuSpan { node, room } in spans {
            if let Err(e) = self.node_call(node, Request::CloseRoom { room }).await {
                tracing::warn!(%node, error = %e.message, "closing a moved channel's span room failed");
            }
        }
        Some(audience)
    }

    /// Places a channel whose members were told `sfuRestart` again, and offers each of them
    /// the new room: receive-only members publish nothing, so the node would never learn of
    /// them otherwise (offering registers them, and sends the offer when there is something
    /// already). If no node can take it after all, they are told media is unavailable.
    async fn place_again(
        &self,
        channel: &ChannelId,
        node: SfuServerId,
        audience: &[SessionRecord],
    ) -> Relocated {
        match self.room_for(channel, &[]).await {
            Ok((placed, _)) => {
                tracing::info!(%channel, from = %node, to = ?placed.sfu_server_id, "channel placed again");
                futures_util::stream::iter(audience)
                    .for_each_concurrent(OFFER_AT_ONCE, |member| self.offer(channel, member))
                    .await;
                Relocated::Placed
            }
            Err(e) => {
                tracing::warn!(%channel, from = %node, error = %e.message,
                    "channel lost its SFU room and cannot be placed again now");
                let stranded = DomainEvent::MediaStranded {
                    channel: channel.clone(),
                    node,
                };
                self.shared
                    .emit(stranded, &audience.iter().collect::<Vec<_>>())
                    .await;
                Relocated::Stranded
            }
        }
    }

    /// Refuses (`session_not_found`, with `missing`) unless `session` is a member of `channel`.
    async fn in_channel(
        &self,
        session: &SessionId,
        channel: &ChannelId,
        missing: &'static str,
    ) -> Result<(), SignalError> {
        let member = self.shared.store.session(session).await?;
        if member.and_then(|m| m.channel).as_ref() != Some(channel) {
            return Err(SignalError::new(ErrorCode::SessionNotFound, missing));
        }
        Ok(())
    }

    /// The fleet, if this instance has one.
    pub(super) fn nodes(&self) -> Option<&Arc<dyn SfuNodes>> {
        self.nodes.get()
    }

    /// `call {isSFU:true, sdp}`: the session publishes through its channel's node. Returns the
    /// node's answer.
    pub async fn publish(
        &self,
        connection: &Connection,
        offer: String,
    ) -> Result<String, SignalError> {
        let me = &self.shared.me(connection).await?;
        if me.grant.as_ref().is_some_and(|grant| !grant.publish) {
            return Err(SignalError::new(
                ErrorCode::Forbidden,
                "this session's join token does not allow publishing",
            ));
        }
        let channel = self.sfu_channel(me).await?;
        let mut retried = false;
        let mut avoid = Vec::new();
        loop {
            let served = self.serve(&channel.id, me, &avoid).await?;
            let request = Request::Publish {
                room: served.room.clone(),
                session: me.id.0.clone(),
                offer: offer.clone(),
            };
            match self.node_call(served.node, request).await? {
                Response::Sdp { sdp: Some(answer) } => {
                    // Whatever the others already publish, this session can receive now (on
                    // the node it publishes to: it is on that node now, which never refuses
                    // its other side).
                    self.offer_on(served.node, &served.room, me).await;
                    if served.placed_now {
                        // Members that entered before the channel had a room are unknown to the
                        // node, so its renegotiation events cannot reach them: offer directly.
                        self.offer_members(&channel.id, &me.id).await;
                    }
                    self.published(me, &channel.id, &offer, &answer).await?;
                    self.sync_relays(&channel.id).await;
                    return Ok(answer);
                }
                Response::Error {
                    code: NodeError::UnknownRoom,
                    ..
                } if !retried => {
                    // The node restarted and lost the room: serve the channel again, once. The
                    // others restart their media; this publish goes to the new room.
                    self.room_lost(&channel.id, served.node, &served.room, Some(&me.id))
                        .await;
                    retried = true;
                }
                Response::Error {
                    code: NodeError::Full,
                    ..
                } if avoid.len() + 1 < FULL_TRIES => {
                    // Its load report lagged: the member is new to it, so serve it elsewhere.
                    self.refused_full(served.node);
                    avoid.push(served.node);
                }
                other => return Err(node_refusal(other)),
            }
        }
    }

    /// WHEP: answers the session's own receive offer with what its channel publishes now (only
    /// `publisher`'s tracks when named). The channel must already be placed: with nobody
    /// publishing there is nothing to answer with.
    pub async fn answer_subscribe(
        &self,
        connection: &Connection,
        offer: String,
        publisher: Option<SessionId>,
    ) -> Result<String, SignalError> {
        let me = self.shared.me(connection).await?;
        let channel = self.sfu_channel(&me).await?;
        if let Some(publisher) = &publisher {
            self.in_channel(publisher, &channel.id, "no such publisher in this channel")
                .await?;
        }
        if channel.sfu_room.is_none() {
            return Err(SignalError::new(
                ErrorCode::SfuUnavailable,
                "nobody publishes in this channel yet: nothing to receive",
            ));
        }
        let Serving { node, room, .. } = self.serve(&channel.id, &me, &[]).await?;
        // Its node may not receive the channel's tracks yet (outside review G3): links first,
        // so what the node answers with includes them (the sending node announces a link's
        // tracks as it opens; tracks arriving after the answer are not added to it).
        self.sync_relays_after(&channel.id, RelayChange::ServedOn(node))
            .await;
        let request = Request::SubscribeClientOffer {
            room,
            session: me.id.0.clone(),
            offer,
            publisher: publisher.map(|p| p.0),
        };
        // A node fed by a link just opened learns its tracks from the sending node's in-band
        // announcement, which can arrive after this request (two control hops against one
        // datagram, but a busy worker may read it late): a node other than the channel's
        // first that has nothing to answer with yet is asked again, briefly.
        let fed_by_links = channel.sfu_server_id != Some(node);
        let mut tries = 0;
        loop {
            match self.node_call(node, request.clone()).await? {
                Response::Sdp { sdp: Some(answer) } => return Ok(answer),
                Response::Error {
                    code: NodeError::BadSdp,
                    ..
                } if fed_by_links && tries < RELAYED_TRACKS_TRIES => {
                    tries += 1;
                    tokio::time::sleep(RELAYED_TRACKS_PAUSE).await;
                }
                other => return Err(node_refusal(other)),
            }
        }
    }

    /// Records the tracks an accepted publish carries, replacing (and so unpublishing) what the
    /// session published before, as the node does.
    async fn published(
        &self,
        me: &SessionRecord,
        channel: &ChannelId,
        offer: &str,
        answer: &str,
    ) -> Result<(), SignalError> {
        let tracks = sdp_tracks::published_tracks(offer, answer);
        let update = SessionUpdate {
            published: Some(tracks.clone()),
            ..SessionUpdate::default()
        };
        self.shared.store.update_session(&me.id, &update).await?;
        self.shared
            .unpublished(channel, &me.id, me.published.clone())
            .await;
        for track in tracks {
            let published = DomainEvent::TrackPublished {
                channel: channel.clone(),
                session: me.id.clone(),
                track,
            };
            self.shared.events.record(published).await;
        }
        Ok(())
    }

    /// `answer {isSFU:true, sdp}`: the session answers the node's latest subscribe offer.
    pub async fn answer(&self, connection: &Connection, answer: String) -> Result<(), SignalError> {
        let me = self.shared.me(connection).await?;
        let channel = self.sfu_channel(&me).await?;
        let Some((node, room)) = member_room(&channel, &me) else {
            return Err(SignalError::new(
                ErrorCode::InvalidMessage,
                "no SFU offer is pending for this session",
            ));
        };
        let request = Request::SubscribeAnswer {
            room: room.clone(),
            session: me.id.0.clone(),
            answer,
        };
        match self.node_call(node, request).await? {
            Response::Done => Ok(()),
            Response::Error {
                code: NodeError::UnknownRoom,
                ..
            } => {
                // Answering an offer of a room the node lost: every member served there, this one
                // included, restarts its media.
                self.room_lost(&channel.id, node, &room, None).await;
                Err(SignalError::new(
                    ErrorCode::SfuUnavailable,
                    "the SFU node lost this channel's room; its media restarts (sfuRestart)",
                ))
            }
            other => Err(node_refusal(other)),
        }
    }

    /// `setSubscription`: what the session wants of another member's media (a video layer or
    /// none, audio or not), told to the channel's node, which keeps it until either leaves.
    pub async fn set_subscription(
        &self,
        connection: &Connection,
        publisher: SessionId,
        video: VideoQuality,
        audio: Option<bool>,
    ) -> Result<(), SignalError> {
        let me = self.shared.me(connection).await?;
        let channel = self.sfu_channel(&me).await?;
        if publisher == me.id {
            return Err(SignalError::new(
                ErrorCode::InvalidMessage,
                "a session does not receive its own media",
            ));
        }
        self.in_channel(&publisher, &channel.id, "no such session in this channel")
            .await?;
        if channel.sfu_room.is_none() {
            return Err(SignalError::new(
                ErrorCode::SfuUnavailable,
                "nobody publishes in this channel yet: set the subscription once its media arrives",
            ));
        }
        let Serving { node, room, .. } = self.serve(&channel.id, &me, &[]).await?;
        // Serving it may have made a new receiving node (outside review G3).
        self.sync_relays_after(&channel.id, RelayChange::ServedOn(node))
            .await;
        let request = Request::SetSubscription {
            room,
            session: me.id.0.clone(),
            publisher: publisher.0,
            video,
            audio,
        };
        match self.node_call(node, request).await? {
            Response::Done => Ok(()),
            other => Err(node_refusal(other)),
        }
    }

    /// `candidate {isSFU:true}`: the node is ICE-lite with its candidate in the SDP and learns
    /// the client's addresses from its connectivity checks, so trickled candidates are not
    /// needed. Accepted (not an error) so standard clients can trickle as usual.
    pub async fn candidate(
        &self,
        connection: &Connection,
        candidate: &Value,
    ) -> Result<(), SignalError> {
        check_candidate(candidate)?;
        let me = self.shared.me(connection).await?;
        self.sfu_channel(&me).await?;
        Ok(())
    }

    /// Sends member `session` of `channel` its node's current subscribe offer, if it has
    /// something to receive and its join token (if any) allows receiving, serving it first (a
    /// node refusing it as full is skipped for the next). A session never offered is unknown to
    /// the node as a subscriber, so the node's renegotiations never reach it either. If no node
    /// can serve it, it is told why (`sfu_full` or `sfu_unavailable`).
    pub(super) async fn offer(&self, channel: &ChannelId, session: &SessionRecord) {
        if session.grant.as_ref().is_some_and(|grant| !grant.subscribe) {
            return;
        }
        let mut avoid = Vec::new();
        loop {
            let served = match self.serve(channel, session, &avoid).await {
                Ok(served) => served,
                Err(e) => {
                    tracing::warn!(session = %session.id, %channel, error = %e.message,
                        "no SFU node can serve the member");
                    if matches!(e.code, ErrorCode::SfuFull | ErrorCode::SfuUnavailable) {
                        let unserved = DomainEvent::MediaUnserved {
                            channel: channel.clone(),
                            code: e.code,
                            message: e.message,
                        };
                        self.shared.emit(unserved, &[session]).await;
                    }
                    return;
                }
            };
            match self.offer_on(served.node, &served.room, session).await {
                Offered::Done => {
                    let change = RelayChange::ServedOn(served.node);
                    return self.sync_relays_after(channel, change).await;
                }
                Offered::Full if avoid.len() + 1 < FULL_TRIES => {
                    self.refused_full(served.node);
                    avoid.push(served.node);
                }
                Offered::Full => {
                    let unserved = DomainEvent::MediaUnserved {
                        channel: channel.clone(),
                        code: ErrorCode::SfuFull,
                        message: no_open_node(true).message,
                    };
                    return self.shared.emit(unserved, &[session]).await;
                }
            }
        }
    }

    /// Asks `node` for `session`'s subscribe offer in `room` and sends it on.
    async fn offer_on(&self, node: SfuServerId, room: &str, session: &SessionRecord) -> Offered {
        if session.grant.as_ref().is_some_and(|grant| !grant.subscribe) {
            return Offered::Done;
        }
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
                self.shared.emit(offered, &[session]).await;
            }
            Ok(Response::Sdp { sdp: None }) => {}
            Ok(Response::Error {
                code: NodeError::Full,
                ..
            }) => return Offered::Full,
            Ok(other) => tracing::warn!(?other, "subscribe offer refused"),
            Err(e) => tracing::warn!(error = %e.message, "subscribe offer failed"),
        }
        Offered::Done
    }

    /// After `enter`: a receive-only member gets an offer as soon as anyone publishes. The
    /// channel is read again after the membership was written, so a concurrent first publish
    /// either sees this member or this member sees its placement. Who speaks is told after
    /// `enter` is answered, off the join's path: the answer to the offer waits for `enter`'s
    /// reply (a socket's requests are handled in order), and asking the node cost a join one
    /// more wait for a busy worker (seconds in a 1,000-viewer wave).
    pub(super) async fn entered(self: &Arc<Self>, me: &SessionRecord, channel: &ChannelRecord) {
        let Ok(Some(channel)) = self.shared.store.channel(&channel.id).await else {
            return;
        };
        if channel.sfu_room.is_none() {
            return;
        }
        self.offer(&channel.id, me).await;
        let placement = Arc::clone(self);
        let me = me.id.clone();
        tokio::spawn(async move {
            // Re-read: the offer recorded the node serving it.
            let Ok(Some(me)) = placement.shared.store.session(&me).await else {
                return;
            };
            if let Some((node, room)) = member_room(&channel, &me) {
                placement.tell_speakers(node, &room, &channel.id, &me).await;
            }
        });
    }

    /// Tells a member who just entered who speaks now: the node announces only changes, so
    /// without this a ranking that stays the same would never reach it. Only the newcomer is
    /// told (a join costs one message, not one per member).
    async fn tell_speakers(
        &self,
        node: SfuServerId,
        room: &str,
        channel: &ChannelId,
        me: &SessionRecord,
    ) {
        let request = Request::Speakers {
            room: room.to_owned(),
        };
        // A node that cannot say (gone, or older than this request) is no error: the next
        // change of the ranking reaches the member anyway.
        let Ok(Response::Speakers { speakers }) = self.node_call(node, request).await else {
            return;
        };
        if speakers.is_empty() {
            return;
        }
        // Only the named sessions are read, not the whole channel: in a join wave into a large
        // room, reading every member per join made the wave cost O(N²) record reads.
        let named: Vec<SessionId> = speakers
            .iter()
            .map(|s| SessionId(s.session.clone()))
            .collect();
        let members: Vec<SessionRecord> = match self.shared.store.sessions(&named).await {
            Ok(records) => records
                .into_iter()
                .flatten()
                .filter(|r| r.channel.as_ref() == Some(channel))
                .collect(),
            Err(e) => return tracing::warn!(error = %e, "SFU speakers: store unavailable"),
        };
        let speakers = named_members(speakers, &members);
        if !speakers.is_empty() {
            let now = DomainEvent::ActiveSpeakersChanged {
                channel: channel.clone(),
                speakers,
            };
            self.shared.emit(now, &[me]).await;
        }
    }

    /// Offers to every live member of `channel` but `except`, each on the node serving it.
    async fn offer_members(&self, channel: &ChannelId, except: &SessionId) {
        match self.shared.live_members(channel).await {
            Ok(members) => {
                for member in members.iter().filter(|m| &m.id != except) {
                    self.offer(channel, member).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing members for SFU offers failed"),
        }
    }

    /// Member `me` left an SFU channel: its transports go (others are re-offered by the node).
    /// A span node left serving nobody closes its room and leaves the channel.
    pub(super) async fn release(&self, me: &SessionRecord, channel: &ChannelId) {
        let Ok(Some(channel)) = self.shared.store.channel(channel).await else {
            return;
        };
        let Some((node, room)) = member_room(&channel, me) else {
            return;
        };
        let request = Request::CloseSession {
            room: room.clone(),
            session: me.id.0.clone(),
        };
        if let Err(e) = self.node_call(node, request).await {
            tracing::warn!(error = %e.message, "releasing SFU session failed");
        }
        let released = DomainEvent::MediaReleased {
            channel: channel.id.clone(),
            session: me.id.clone(),
        };
        self.shared.events.record(released).await;
        let span_closed = channel.sfu_server_id != Some(node)
            && self
                .close_span_if_unused(&channel.id, SfuSpan { node, room })
                .await;
        // Links change when a publisher leaves or a node stops serving the channel; a viewer
        // leaving a node that still serves others changes none (and its sync would read every
        // member again, per leave, in the largest rooms).
        if span_closed || !me.published.is_empty() {
            self.sync_relays(&channel.id).await;
        }
    }

    /// Removes `span` from the channel and closes its room if no live member is served there.
    /// Returns whether it did.
    async fn close_span_if_unused(&self, channel: &ChannelId, span: SfuSpan) -> bool {
        let members = match self.shared.live_members(channel).await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(error = %e, "span cleanup: store unavailable");
                return false;
            }
        };
        if members.iter().any(|m| m.sfu_node == Some(span.node)) {
            return false;
        }
        match self.shared.store.remove_channel_span(channel, &span).await {
            Ok(true) => {
                tracing::info!(%channel, node = %span.node, "channel no longer spans the node");
                let close = Request::CloseRoom { room: span.room };
                if let Err(e) = self.node_call(span.node, close).await {
                    tracing::warn!(error = %e.message, "closing an unused span room failed");
                }
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "span cleanup: store unavailable");
                false
            }
        }
    }

    /// Brings `channel`'s relay links in step with who publishes on which node and which nodes
    /// serve its receiving members (DESIGN §7.2): the relay plan (kept from the last one where it
    /// still fits) says which publisher's tracks go from which node to which; links no longer
    /// planned, or whose rooms changed, are closed; planned ones are opened. Called wherever that
    /// changes: a publish, a member served, a member gone, a node's span dropped.
    async fn sync_relays(&self, channel: &ChannelId) {
        self.sync_relays_after(channel, RelayChange::Any).await;
    }

    /// [`Self::sync_relays`] after `change`: a member served on a node that already had
    /// receiving members at the last planned sync changes nothing (no read of the members).
    /// Never waits on another sync: one running for the channel takes `change` over.
    async fn sync_relays_after(&self, channel: &ChannelId, change: RelayChange) {
        let Some(nodes) = self.nodes.get() else {
            return;
        };
        let synced = self
            .cascade
            .sync(nodes.as_ref(), channel, change, |change| {
                self.relay_target(channel, change)
            })
            .await;
        if synced.opened + synced.closed + synced.failed > 0 {
            tracing::info!(%channel, opened = synced.opened, closed = synced.closed,
                failed = synced.failed, rounds = synced.rounds, "relay links synced");
        }
    }

    /// Where `channel`'s links should be after `change`, read from the store now; `None` when
    /// nothing needs doing (or the store failed: logged).
    async fn relay_target(&self, channel: &ChannelId, change: RelayChange) -> Option<Target> {
        if change == RelayChange::Closed {
            return Some(Target::default());
        }
        let record = match self.shared.store.channel(channel).await {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "relay links: store unavailable");
                return None;
            }
        };
        let rooms: BTreeMap<SfuServerId, String> = record
            .as_ref()
            .map(|r| {
                r.serving()
                    .into_iter()
                    .map(|(node, room)| (node, room.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        // A channel served by one node needs no link: its members are not read (the common
        // case, at every publish, offer and leave), unless links of an earlier span are still
        // open here, which close now.
        let (plan, receivers) = match record {
            Some(record) if rooms.len() > 1 => {
                if let RelayChange::ServedOn(node) = change
                    && self.cascade.planned_receiver(channel, node)
                {
                    return None;
                }
                let previous = self.cascade.last_plan(channel);
                match self.relay_inputs_of(&record).await {
                    Ok(Some(inputs)) => {
                        let plan = super::relay_plan::plan_relays(
                            &inputs.publishers,
                            &inputs.receivers,
                            super::relay_plan::DEFAULT_RELAY_FAN_OUT,
                            &previous,
                        );
                        (plan, inputs.receivers)
                    }
                    Ok(None) => Default::default(),
                    Err(e) => {
                        tracing::warn!(%channel, error = %e, "relay links: store unavailable");
                        return None;
                    }
                }
            }
            _ if !self.cascade.has_links(channel) => return None,
            _ => Default::default(),
        };
        let addresses = if plan.edges.is_empty() {
            RelayAddresses::default()
        } else {
            match self.shared.store.sfu_servers().await {
                Ok(records) => RelayAddresses {
                    hosts: records
                        .iter()
                        .filter_map(|r| {
                            let control: std::net::SocketAddr = r.address.parse().ok()?;
                            Some((r.id, control.ip()))
                        })
                        .collect(),
                    extra: self.shared.config.relay_ips.clone(),
                },
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "relay links: registry unavailable");
                    return None;
                }
            }
        };
        Some(Target {
            rooms,
            plan,
            receivers,
            addresses,
        })
    }

    /// What relay planning needs of `channel` now ([`super::relay_plan::plan_relays`]): each
    /// live member publishing tracks with the node it publishes to, and the nodes serving live
    /// members that receive (their join token, if any, allows it). `None` for an unknown or
    /// unplaced channel. One store read of the channel and one of its members.
    pub async fn relay_inputs(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<RelayInputs>, super::ports::StoreError> {
        match self.shared.store.channel(channel).await? {
            Some(record) => self.relay_inputs_of(&record).await,
            None => Ok(None),
        }
    }

    /// [`Self::relay_inputs`] of a channel record already read (one store read of its members).
    async fn relay_inputs_of(
        &self,
        record: &ChannelRecord,
    ) -> Result<Option<RelayInputs>, super::ports::StoreError> {
        if record.sfu_server_id.is_none() {
            return Ok(None);
        }
        let members = self.shared.live_members(&record.id).await?;
        let mut inputs = RelayInputs::default();
        for member in &members {
            let Some((node, _)) = member_room(record, member) else {
                continue;
            };
            if !member.published.is_empty() {
                inputs.publishers.push(super::relay_plan::PublisherOnNode {
                    publisher: member.id.clone(),
                    node,
                    tracks: member.published.iter().map(|t| t.id.clone()).collect(),
                });
            }
            if member
                .grant
                .as_ref()
                .is_none_or(|grant| grant.subscribe || grant.receives_own_offer)
            {
                inputs.receivers.insert(node);
            }
        }
        Ok(Some(inputs))
    }

    /// The relay streams `channel` needs now: [`Self::relay_inputs`] planned with
    /// [`super::relay_plan::plan_relays`] (each node feeding at most `fan_out` others; edges of
    /// `previous` kept where they fit). An unknown or unplaced channel needs none.
    pub async fn relay_plan(
        &self,
        channel: &ChannelId,
        fan_out: usize,
        previous: &super::relay_plan::RelayPlan,
    ) -> Result<super::relay_plan::RelayPlan, super::ports::StoreError> {
        Ok(match self.relay_inputs(channel).await? {
            Some(inputs) => super::relay_plan::plan_relays(
                &inputs.publishers,
                &inputs.receivers,
                fan_out,
                previous,
            ),
            None => super::relay_plan::RelayPlan::default(),
        })
    }

    /// Tells a node its drain state (best effort: an unreachable node is not placed on anyway).
    pub(super) async fn tell_node_draining(&self, node: SfuServerId, draining: bool) {
        if self.nodes().is_none() {
            return;
        }
        if let Err(e) = self.node_call(node, Request::Drain { draining }).await {
            tracing::warn!(%node, error = %e.message, "could not tell the node its drain state");
        }
    }

    /// The channel was deleted (or its node unregistered): its rooms go, on every node
    /// serving it.
    pub(super) async fn close_room(&self, channel: &ChannelRecord) {
        self.sync_relays_after(&channel.id, RelayChange::Closed)
            .await;
        for (node, room) in channel.serving() {
            let close = Request::CloseRoom {
                room: room.to_owned(),
            };
            if let Err(e) = self.node_call(node, close).await {
                tracing::warn!(%node, error = %e.message, "closing SFU room failed");
            }
        }
    }

    async fn on_node_event(self: &Arc<Self>, node: SfuServerId, report: NodeReport) {
        let event = match report {
            NodeReport::LinkUp => {
                let up = DomainEvent::SfuNodeUp { node };
                self.shared.events.record(up).await;
                self.fleet_link(node, true).await;
                // Not on the event loop: asking the node waits for its reply.
                let placement = self.clone();
                tokio::spawn(async move { placement.reconcile_rooms(node).await });
                return;
            }
            NodeReport::LinkDown => {
                // The fleet marked the node unhealthy before reporting this: look now.
                self.link_lost.notify_one();
                let down = DomainEvent::SfuNodeDown { node };
                self.shared.events.record(down).await;
                return self.fleet_link(node, false).await;
            }
            NodeReport::Event(event) => event,
        };
        match event {
            Event::RenegotiationNeeded { room, session } => {
                // Only for a session of the channel placed in this room on this node: a node
                // the channel moved off (or a rogue one) must not hand members its offers.
                if let Some((member, _)) = self.member_placed_in(node, &room, session).await {
                    self.offer_on(node, &room, &member).await;
                }
            }
            Event::ActiveSpeakers {
                room,
                member,
                speakers,
            } => self.announce_speakers(node, &room, member, speakers).await,
            Event::SubscribedQualities {
                room,
                session,
                mid,
                qualities,
                layers,
            } => {
                self.tell_subscribed_qualities(node, &room, session, mid, qualities, layers)
                    .await
            }
            Event::TransportClosed {
                room,
                session,
                side,
                reason,
            } => {
                // Like the others, only from where the session's channel is placed: a node
                // naming sessions it does not serve fills no log and no event stream.
                let Some((member, _)) = self.member_placed_in(node, &room, session).await else {
                    return;
                };
                tracing::info!(session = %member.id, %side, %reason, "SFU closed a transport");
                let closed = DomainEvent::SfuTransportClosed {
                    node,
                    session: member.id,
                    side,
                    reason,
                };
                self.shared.events.record(closed).await;
            }
            Event::RelayClosed { room, link, reason } => {
                let Some(nodes) = self.nodes.get() else {
                    return;
                };
                let closed = self
                    .cascade
                    .end_closed_by_node(nodes.as_ref(), node, &room, link)
                    .await;
                if let Some(channel) = closed {
                    tracing::info!(%node, %channel, link, %reason,
                        "SFU node closed a relay link: planning the channel's links again");
                    self.sync_relays(&channel).await;
                }
            }
            _ => {}
        }
    }

    /// Every instance sees its own link to a node come and go; the fleet hears of a change
    /// once, from the instance whose store write changed the node's recorded state.
    async fn fleet_link(&self, node: SfuServerId, up: bool) {
        match self.shared.store.set_sfu_link(node, up).await {
            Ok(true) => {
                let event = if up {
                    DomainEvent::SfuServerUp { node }
                } else {
                    DomainEvent::SfuServerDown { node }
                };
                self.shared.events.record(event).await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%node, up, error = %e, "recording the node's link state failed")
            }
        }
    }

    /// Dynacast: tells a publisher which layers of its video anyone consumes, if the node names
    /// a session of the channel placed in `room` there and a well-formed layer list (at most
    /// three layers, short rids, a short mid); anything else is counted as ignored.
    async fn tell_subscribed_qualities(
        &self,
        node: SfuServerId,
        room: &str,
        session: String,
        mid: String,
        qualities: Vec<String>,
        layers: Vec<u8>,
    ) {
        if !subscribed_qualities_are_valid(&mid, &qualities, &layers) {
            self.shared.metrics.sfu_node_report_ignored(node.0);
            tracing::debug!(%node, %room, "malformed subscribedQualities report: ignored");
            return;
        }
        let Some((member, channel)) = self.member_placed_in(node, room, session).await else {
            return;
        };
        let changed = DomainEvent::SubscribedQualitiesChanged {
            channel,
            session: member.id.clone(),
            mid,
            qualities,
            layers,
        };
        self.shared.emit(changed, &[&member]).await;
    }

    /// Tells the members of the channel placed in `room` who speaks. The node names a session in
    /// the room; the channel is that session's, if that channel is placed in `room` on `node`
    /// (a stale or forged report names no channel and is dropped).
    async fn announce_speakers(
        &self,
        node: SfuServerId,
        room: &str,
        member: String,
        speakers: Vec<mooyaho_control::Speaker>,
    ) {
        let Some((_, channel)) = self.member_placed_in(node, room, member).await else {
            return;
        };
        let members = match self.shared.live_members(&channel).await {
            Ok(members) => members,
            Err(e) => return tracing::warn!(error = %e, "SFU speakers: store unavailable"),
        };
        let speakers = named_members(speakers, &members);
        let changed = DomainEvent::ActiveSpeakersChanged { channel, speakers };
        self.shared
            .emit(changed, &members.iter().collect::<Vec<_>>())
            .await;
    }

    /// The session a node's report names, with its channel, if that channel is placed in `room`
    /// on `node` (a stale or forged report names none).
    async fn member_placed_in(
        &self,
        node: SfuServerId,
        room: &str,
        session: String,
    ) -> Option<(SessionRecord, ChannelId)> {
        let store = &self.shared.store;
        let (member, channel) = match store.session(&SessionId(session)).await {
            Ok(Some(member)) if member.channel.is_some() => {
                let channel = member.channel.clone()?;
                (member, channel)
            }
            // No such session, or one in no channel: nothing of the node's.
            Ok(_) => {
                self.shared.metrics.sfu_node_report_ignored(node.0);
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "SFU event: store unavailable");
                return None;
            }
        };
        match store.channel(&channel).await {
            Ok(Some(record)) if member_room(&record, &member) == Some((node, room.to_owned())) => {
                Some((member, channel))
            }
            Ok(_) => {
                self.shared.metrics.sfu_node_report_ignored(node.0);
                tracing::debug!(%node, %room, session = %member.id, "SFU event for a room the channel is not placed in: ignored");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "SFU event: store unavailable");
                None
            }
        }
    }

    /// The session's channel, which must be SFU-enabled.
    async fn sfu_channel(&self, me: &SessionRecord) -> Result<ChannelRecord, SignalError> {
        let id = in_channel(me)?;
        let channel = self
            .shared
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

    /// The channel, placed on the least-loaded open node (not in `avoid`) if it was not
    /// (`true` when this call placed it).
    async fn room_for(
        &self,
        channel: &ChannelId,
        avoid: &[SfuServerId],
    ) -> Result<(ChannelRecord, bool), SignalError> {
        let record = self
            .shared
            .store
            .channel(channel)
            .await?
            .ok_or_else(|| SignalError::new(ErrorCode::ChannelNotFound, "no such channel"))?;
        if record.sfu_server_id.is_some() && record.sfu_room.is_some() {
            return Ok((record, false));
        }
        let node = self.pick_node(avoid).await?;
        let room = match self.node_call(node, Request::CreateRoom).await? {
            Response::Room { room } => room,
            other => return Err(node_refusal(other)),
        };
        let placed = self
            .shared
            .store
            .place_channel(channel, node, &room)
            .await?
            .ok_or_else(|| SignalError::new(ErrorCode::ChannelNotFound, "no such channel"))?;
        match (placed.sfu_server_id, placed.sfu_room.as_deref()) {
            (Some(winner), Some(winner_room)) if winner == node && winner_room == room => {
                tracing::info!(%channel, %node, %room, "channel placed");
                let event = DomainEvent::ChannelPlaced {
                    channel: channel.clone(),
                    node,
                    room,
                };
                self.shared.events.record(event).await;
                Ok((placed, true))
            }
            (Some(_), Some(_)) => {
                // Another instance placed it first: use its room, drop ours.
                let _ = self.node_call(node, Request::CloseRoom { room }).await;
                Ok((placed, false))
            }
            _ => Err(SignalError::new(
                ErrorCode::SfuUnavailable,
                "placement failed",
            )),
        }
    }

    /// The node and room serving `me` in `channel` (DESIGN §7.2): the node recorded for it if
    /// that node still serves the channel; else the first node serving the channel that is open
    /// for new members (healthy, enabled, not draining, not full, not in `avoid`); else a new
    /// node for the channel, the least loaded open one, which gets a room of the channel (a
    /// span). The choice is recorded on the member. Places the channel first if needed.
    async fn serve(
        &self,
        channel: &ChannelId,
        me: &SessionRecord,
        avoid: &[SfuServerId],
    ) -> Result<Serving, SignalError> {
        let (record, placed_now) = self.room_for(channel, avoid).await?;
        if let Some(node) = me.sfu_node.filter(|n| !avoid.contains(n))
            && let Some(room) = record.room_on(node)
        {
            return Ok(Serving {
                node,
                room: room.to_owned(),
                placed_now,
            });
        }
        // With spans (DESIGN §7.2), a node already serving the channel takes its new members
        // while it is open (healthy, enabled, not draining, not full); else another open node
        // serves them, fed by relay links. Without spans another node could not carry the
        // channel's media, so a node serving it keeps taking its members while healthy and not
        // full, even disabled or draining (those refuse new rooms only; a drain moves the
        // channel whole).
        let kept = if self.shared.config.span_nodes {
            let open = self.open_nodes(avoid).await.unwrap_or_default();
            record
                .serving()
                .into_iter()
                .find(|(node, _)| open.contains(node))
        } else {
            record
                .serving()
                .into_iter()
                .find(|(node, _)| self.keeps_serving(*node, avoid))
        }
        .map(|(node, room)| (node, room.to_owned()));
        let (node, room) = match kept {
            Some(kept) => kept,
            None if !self.shared.config.span_nodes => {
                // Without spans the member is refused, not cut off from the others: a full
                // node frees slots as members leave, a failed one is failed over.
                let full = record
                    .serving()
                    .into_iter()
                    .any(|(node, _)| avoid.contains(&node) || self.reports_full(node));
                return Err(if full {
                    SignalError::new(
                        ErrorCode::SfuFull,
                        "this channel's SFU node is at its transport cap (mooyaho sfu \
                         --max-transports); try again later",
                    )
                } else {
                    SignalError::new(
                        ErrorCode::SfuUnavailable,
                        "this channel's SFU node is unavailable; try again shortly",
                    )
                });
            }
            None => {
                let open = match self.open_nodes(avoid).await {
                    Ok(open) => open,
                    Err(e) => {
                        // The nodes it was just refused by do not serve it: it is served by none.
                        if !avoid.is_empty() {
                            let update = SessionUpdate {
                                sfu_node: Some(None),
                                ..SessionUpdate::default()
                            };
                            self.shared.store.update_session(&me.id, &update).await?;
                        }
                        return Err(e);
                    }
                };
                let Some(&node) = open.first() else {
                    return Err(no_open_node(false));
                };
                self.add_span(&record, node).await?
            }
        };
        if me.sfu_node != Some(node) {
            let update = SessionUpdate {
                sfu_node: Some(Some(node)),
                ..SessionUpdate::default()
            };
            self.shared.store.update_session(&me.id, &update).await?;
        }
        Ok(Serving {
            node,
            room,
            placed_now,
        })
    }

    /// Opens a room of the placed channel `record` on `node` and records it as a span. Of
    /// instances adding one on the same node at once, the store keeps the first (the others
    /// close theirs and use it).
    async fn add_span(
        &self,
        record: &ChannelRecord,
        node: SfuServerId,
    ) -> Result<(SfuServerId, String), SignalError> {
        let moved = || {
            SignalError::new(
                ErrorCode::SfuUnavailable,
                "the channel's media moved while another node was being added; try again",
            )
        };
        let first_room = record.sfu_room.clone().ok_or_else(moved)?;
        let room = match self.node_call(node, Request::CreateRoom).await? {
            Response::Room { room } => room,
            other => return Err(node_refusal(other)),
        };
        let span = SfuSpan {
            node,
            room: room.clone(),
        };
        let now = self
            .shared
            .store
            .add_channel_span(&record.id, &first_room, &span)
            .await?
            .ok_or_else(|| SignalError::new(ErrorCode::ChannelNotFound, "no such channel"))?;
        match now.room_on(node) {
            Some(kept) if kept == room => {
                tracing::info!(channel = %record.id, %node, %room, nodes = ?now.sfu_server_ids(),
                    "channel spans another node");
                Ok((node, room))
            }
            kept => {
                let kept = kept.map(str::to_owned);
                let _ = self.node_call(node, Request::CloseRoom { room }).await;
                kept.map(|kept| (node, kept)).ok_or_else(moved)
            }
        }
    }

    /// Healthy, enabled, non-draining nodes not held down, not full and not in `avoid`, least
    /// loaded first; `sfu_full` when every such node but for its cap is full, `sfu_unavailable`
    /// when there is none at all.
    async fn open_nodes(&self, avoid: &[SfuServerId]) -> Result<Vec<SfuServerId>, SignalError> {
        let nodes = self.nodes().ok_or_else(no_fleet)?;
        let records = self.shared.store.sfu_servers().await?;
        let held = self.held_down();
        let mut some_full = false;
        let mut open = Vec::new();
        for record in records
            .iter()
            .filter(|r| !r.disabled && !r.draining && !held.contains(&r.id))
        {
            let status = nodes.status(record.id);
            let Some(load) = status.load.as_ref().filter(|_| status.healthy) else {
                continue;
            };
            // `avoid` holds only nodes that just refused the member as full.
            if avoid.contains(&record.id) || self.is_full(record.id, load) {
                some_full = true;
                continue;
            }
            open.push((
                (load.sessions, load.cpu_percent, load.rooms, record.id),
                record.id,
            ));
        }
        open.sort();
        if open.is_empty() {
            return Err(no_open_node(some_full));
        }
        Ok(open.into_iter().map(|(_, id)| id).collect())
    }

    /// Least-loaded open node (see [`Self::open_nodes`]).
    async fn pick_node(&self, avoid: &[SfuServerId]) -> Result<SfuServerId, SignalError> {
        let open = self.open_nodes(avoid).await?;
        open.first().copied().ok_or_else(|| no_open_node(false))
    }

    /// `node` can take one more member of a channel it serves when spans are off: healthy (a
    /// load report on a live link), not full, not in `avoid` — disabled or draining as may be.
    fn keeps_serving(&self, node: SfuServerId, avoid: &[SfuServerId]) -> bool {
        let Some(nodes) = self.nodes() else {
            return false;
        };
        let status = nodes.status(node);
        status.healthy
            && !avoid.contains(&node)
            && !self.held_down().contains(&node)
            && status
                .load
                .as_ref()
                .is_some_and(|load| !self.is_full(node, load))
    }

    /// `node`'s last load report says it is full (see [`Self::is_full`]).
    fn reports_full(&self, node: SfuServerId) -> bool {
        self.nodes().is_some_and(|nodes| {
            nodes
                .status(node)
                .load
                .as_ref()
                .is_some_and(|load| self.is_full(node, load))
        })
    }

    /// At its transport cap by its last load report, or refused a transport as full less than
    /// [`FULL_HOLD`] ago.
    fn is_full(&self, node: SfuServerId, load: &mooyaho_control::Load) -> bool {
        if load.max_transports > 0 && load.admitted_transports >= load.max_transports {
            return true;
        }
        let full_at = self.full_at.lock().unwrap_or_else(|e| e.into_inner());
        full_at
            .get(&node)
            .is_some_and(|at| at.elapsed() < FULL_HOLD)
    }

    /// `node` refused a transport as full.
    fn refused_full(&self, node: SfuServerId) {
        tracing::info!(%node, "SFU node full: serving new members elsewhere");
        self.full_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, Instant::now());
    }

    async fn node_call(
        &self,
        node: SfuServerId,
        request: Request,
    ) -> Result<Response, SignalError> {
        let nodes = self.nodes().ok_or_else(no_fleet)?;
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

/// No node can serve a member: `sfu_full` when some could but for their transport cap.
fn no_open_node(some_full: bool) -> SignalError {
    if some_full {
        SignalError::new(
            ErrorCode::SfuFull,
            "every healthy SFU node is at its transport cap (mooyaho sfu --max-transports); \
             try again later",
        )
    } else {
        SignalError::new(
            ErrorCode::SfuUnavailable,
            "no healthy SFU node is available for new rooms",
        )
    }
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
        Response::Error {
            code: NodeError::Full,
            message,
        } => SignalError::new(ErrorCode::SfuFull, format!("SFU node full: {message}")),
        Response::Error { message, .. } => SignalError::new(ErrorCode::SfuUnavailable, message),
        other => {
            tracing::warn!(?other, "unexpected SFU reply");
            SignalError::new(ErrorCode::SfuUnavailable, "unexpected SFU reply")
        }
    }
}

/// Most simulcast layers a track has, and the longest rid (RFC 8851 allows 255; browsers use
/// one or two characters) and mid a `subscribedQualities` report may carry.
const MAX_LAYERS: usize = 3;
const MAX_RID_LEN: usize = 16;
const MAX_MID_LEN: usize = 32;

/// A node's `subscribedQualities` report names at most three distinct layers, lowest first,
/// each with a short alphanumeric rid (or none), and a short mid.
fn subscribed_qualities_are_valid(mid: &str, qualities: &[String], layers: &[u8]) -> bool {
    let token = |s: &str, max: usize| {
        s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !mid.is_empty()
        && token(mid, MAX_MID_LEN)
        && qualities.len() == layers.len()
        && layers.len() <= MAX_LAYERS
        && layers.iter().all(|&l| usize::from(l) < MAX_LAYERS)
        && layers.windows(2).all(|w| w[0] < w[1])
        && qualities.iter().all(|q| token(q, MAX_RID_LEN))
}

/// A node's ranking as the channel hears it: only live members are named (a session that left
/// meanwhile is not news to anyone), levels kept within 1..=100.
fn named_members(
    speakers: Vec<mooyaho_control::Speaker>,
    members: &[SessionRecord],
) -> Vec<(SessionId, u8)> {
    speakers
        .into_iter()
        .map(|s| (SessionId(s.session), s.level.clamp(1, 100)))
        .filter(|(session, _)| members.iter().any(|m| m.id == *session))
        .collect()
}

/// The node serving `member` in `channel` and the channel's room there: its recorded node if
/// that still serves the channel, the channel's first node if it has none recorded (it was
/// never served), else none (its node no longer serves the channel).
fn member_room(channel: &ChannelRecord, member: &SessionRecord) -> Option<(SfuServerId, String)> {
    let node = member.sfu_node.or(channel.sfu_server_id)?;
    channel.room_on(node).map(|room| (node, room.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mooyaho_control::Request;

    use super::*;
    use crate::domain::events::Emitted;
    use crate::domain::node_queue::MAX_OTHER as MAX_OTHER_REPORTS;
    use crate::domain::ports::ChannelStore;
    use crate::domain::tests::{
        FakeNodes, audience, drain, integrated, kinds, member, recorded_service, register_node,
        sorted, two_members,
    };

    /// The room `channel` is placed in now (the test placed it).
    async fn placed_room(
        store: &crate::domain::tests::CountingStore,
        channel: &ChannelId,
    ) -> String {
        let record = store.inner.channel(channel).await.unwrap();
        record
            .and_then(|c| c.sfu_room)
            .expect("the channel is placed")
    }

    /// Relay links are synced at every publish, offer and leave: for a channel served by one
    /// node (no link possible) that costs no read of its members.
    #[tokio::test]
    async fn relay_sync_of_a_channel_on_one_node_reads_no_member() {
        let (signaling, store, recorder) = recorded_service();
        let (_nodes, _events) = FakeNodes::attach(&signaling);
        register_node(&signaling).await;
        let (channel, (alice, _), _) = two_members(&signaling, &recorder, true).await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        let before = store.records_read();
        signaling.placement().sync_relays(&channel).await;
        assert_eq!(store.records_read(), before);
    }

    #[tokio::test]
    async fn the_first_publish_places_the_channel_and_offers_every_member() {
        let (signaling, _, recorder) = recorded_service();
        let (nodes, node_events) = FakeNodes::attach(&signaling);
        let node = register_node(&signaling).await;
        let (channel, (alice, mut alice_queue), (bob, mut bob_queue)) =
            two_members(&signaling, &recorder, true).await;

        let answer = signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        assert_eq!(answer, "answer");
        let seen = recorder.take();
        // An offer without media lines publishes no track.
        assert_eq!(
            kinds(&seen),
            ["channel_placed", "subscribe_offered", "subscribe_offered"]
        );
        let DomainEvent::ChannelPlaced { node: placed, .. } = &seen[0].event else {
            panic!("{seen:?}");
        };
        assert_eq!(*placed, node);
        assert_eq!(audience(&seen[1]), vec![alice.session.clone()]);
        assert_eq!(audience(&seen[2]), vec![bob.session.clone()]);
        let offer = |session: &SessionId| {
            format!(r#"{{"type":"called","from":null,"sdp":"offer-for-{session}","isSFU":true}}"#)
        };
        assert_eq!(drain(&mut alice_queue), [offer(&alice.session)]);
        assert_eq!(drain(&mut bob_queue), [offer(&bob.session)]);

        // Leaving releases the member's media on the node.
        nodes.take();
        signaling.channels().leave(&bob).await.unwrap();
        assert_eq!(kinds(&recorder.take()), ["member_left", "media_released"]);
        drain(&mut alice_queue);
        assert!(nodes.take().iter().any(
            |r| matches!(r, Request::CloseSession { session, .. } if *session == bob.session.0)
        ));

        // A node's renegotiation event reaches the session as a new offer.
        let detail = signaling.channels().detail(&channel).await.unwrap();
        let Some(room) = detail.channel.sfu_room else {
            panic!("the channel is placed");
        };
        node_events
            .send((
                node,
                NodeReport::Event(Event::RenegotiationNeeded {
                    room,
                    session: alice.session.0.clone(),
                }),
            ))
            .await
            .unwrap();
        let seen: Vec<Emitted> = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let seen = recorder.take();
                if !seen.is_empty() {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the node event was handled");
        assert_eq!(kinds(&seen), ["subscribe_offered"]);
        assert_eq!(drain(&mut alice_queue), [offer(&alice.session)]);
    }

    fn offer(tracks: &[(&str, &str)]) -> String {
        let mut sdp = String::from("v=0\r\ns=-\r\n");
        for (mid, (kind, id)) in tracks.iter().enumerate() {
            sdp.push_str(&format!(
                "m={kind} 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\na=msid:s {id}\r\n"
            ));
        }
        sdp
    }

    fn published(seen: &[Emitted]) -> Vec<(&'static str, String)> {
        seen.iter()
            .filter_map(|e| match &e.event {
                DomainEvent::TrackPublished { track, .. } => Some(("published", track.id.clone())),
                DomainEvent::TrackUnpublished { track, .. } => {
                    Some(("unpublished", track.id.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn each_track_is_published_once_and_unpublished_when_replaced_left_or_deleted() {
        let (signaling, _, recorder) = recorded_service();
        let (_nodes, _node_events) = FakeNodes::attach(&signaling);
        register_node(&signaling).await;
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, _alice_queue) = member(&signaling, &channel, "alice").await;
        recorder.take();

        let placement = signaling.placement();
        let two = offer(&[("audio", "mic"), ("video", "cam")]);
        placement.publish(&alice, two).await.unwrap();
        let seen = recorder.take();
        assert_eq!(
            published(&seen),
            [("published", "mic".into()), ("published", "cam".into())]
        );
        let DomainEvent::TrackPublished {
            channel: on,
            session,
            track,
        } = &seen.last().unwrap().event
        else {
            panic!("{seen:?}");
        };
        assert_eq!((on, session), (&channel, &alice.session));
        assert_eq!((track.mid.as_str(), track.kind.as_str()), ("1", "video"));

        // Publishing again replaces the whole publish, as the node does.
        let one = offer(&[("audio", "mic2")]);
        placement.publish(&alice, one).await.unwrap();
        assert_eq!(
            published(&recorder.take()),
            [
                ("unpublished", "mic".into()),
                ("unpublished", "cam".into()),
                ("published", "mic2".into())
            ]
        );

        // Leaving unpublishes what is left, before the member leaves.
        signaling.channels().leave(&alice).await.unwrap();
        let seen = recorder.take();
        assert_eq!(
            kinds(&seen),
            ["track_unpublished", "member_left", "media_released"]
        );
        assert_eq!(published(&seen), [("unpublished", "mic2".into())]);

        // Deleting a channel unpublishes its members' tracks, then they leave, then it goes.
        signaling
            .channels()
            .enter(&alice, channel.clone())
            .await
            .unwrap();
        let cam = offer(&[("video", "cam3")]);
        placement.publish(&alice, cam).await.unwrap();
        recorder.take();
        signaling.channels().delete(&channel).await.unwrap();
        let seen = recorder.take();
        assert_eq!(
            kinds(&seen),
            ["track_unpublished", "member_left", "channel_deleted"]
        );
        assert_eq!(published(&seen), [("unpublished", "cam3".into())]);
    }

    /// The reviewer's L2: a leave racing a channel delete that already removed the member (and
    /// told of its tracks) must not tell of them again.
    #[tokio::test]
    async fn a_leave_whose_membership_was_already_removed_unpublishes_nothing() {
        let (signaling, store, recorder) = recorded_service();
        let (_nodes, _node_events) = FakeNodes::attach(&signaling);
        register_node(&signaling).await;
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, _alice_queue) = member(&signaling, &channel, "alice").await;
        let placement = signaling.placement();
        placement
            .publish(&alice, offer(&[("audio", "mic")]))
            .await
            .unwrap();
        recorder.take();

        // The concurrent delete's removal wins the store write.
        assert!(
            store
                .set_member(&channel, &alice.session, false)
                .await
                .unwrap()
        );
        signaling.channels().leave(&alice).await.unwrap();
        let seen = recorder.take();
        assert_eq!(published(&seen), [], "{:?}", kinds(&seen));
        assert!(!kinds(&seen).contains(&"member_left"));
    }

    /// Waits for the recorder to see something (node events are handled on a task).
    async fn next_events(recorder: &crate::domain::events::recording::Recorder) -> Vec<Emitted> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let seen = recorder.take();
                if !seen.is_empty() {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the node event was handled")
    }

    /// Alice publishing and Bob receiving in a new SFU channel on one fake node, their frames
    /// so far drained and the recorder emptied: what a node report test starts from.
    struct PublishingPair {
        _nodes: Arc<FakeNodes>,
        node_events: mpsc::Sender<(SfuServerId, NodeReport)>,
        node: SfuServerId,
        alice: crate::domain::tests::Member,
        bob: crate::domain::tests::Member,
        room: String,
    }

    async fn publishing_pair(
        signaling: &crate::domain::Signaling,
        recorder: &crate::domain::events::recording::Recorder,
    ) -> PublishingPair {
        let (nodes, node_events) = FakeNodes::attach(signaling);
        let node = register_node(signaling).await;
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, mut alice_queue) = member(signaling, &channel, "alice").await;
        let (bob, mut bob_queue) = member(signaling, &channel, "bob").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        drain(&mut alice_queue);
        drain(&mut bob_queue);
        recorder.take();
        let room = signaling
            .channels()
            .detail(&channel)
            .await
            .unwrap()
            .channel
            .sfu_room
            .expect("placed");
        PublishingPair {
            _nodes: nodes,
            node_events,
            node,
            alice: (alice, alice_queue),
            bob: (bob, bob_queue),
            room,
        }
    }

    #[tokio::test]
    async fn a_node_speaker_report_reaches_the_channel_members_and_a_forged_one_nobody() {
        let (signaling, _, recorder) = recorded_service();
        let PublishingPair {
            node_events,
            node,
            alice: (alice, mut alice_queue),
            bob: (bob, mut bob_queue),
            room,
            ..
        } = publishing_pair(&signaling, &recorder).await;
        let report = |room: String, member: &SessionId, speakers: &[(&SessionId, u8)]| {
            NodeReport::Event(Event::ActiveSpeakers {
                room,
                member: member.0.clone(),
                speakers: speakers
                    .iter()
                    .map(|(s, level)| mooyaho_control::Speaker {
                        session: s.0.clone(),
                        level: *level,
                    })
                    .collect(),
            })
        };
        let stranger = SessionId("not-a-member".into());
        node_events
            .send((
                node,
                report(
                    room.clone(),
                    &bob.session,
                    &[(&alice.session, 42), (&stranger, 90)],
                ),
            ))
            .await
            .unwrap();
        let seen = next_events(&recorder).await;
        assert_eq!(kinds(&seen), ["active_speakers_changed"]);
        assert_eq!(
            audience(&seen[0]),
            sorted(vec![alice.session.clone(), bob.session.clone()])
        );
        let expected = format!(
            r#"{{"type":"activeSpeakers","speakers":[{{"sessionId":"{}","level":0.42}}]}}"#,
            alice.session
        );
        assert_eq!(drain(&mut bob_queue), std::slice::from_ref(&expected));
        assert_eq!(drain(&mut alice_queue), [expected]);

        // A report naming another room (stale, or a node lying about a channel it does not
        // hold) tells nobody.
        node_events
            .send((
                node,
                report("another-room".into(), &bob.session, &[(&alice.session, 42)]),
            ))
            .await
            .unwrap();
        node_events
            .send((node, report(room, &bob.session, &[])))
            .await
            .unwrap();
        let seen = next_events(&recorder).await;
        assert_eq!(
            kinds(&seen),
            ["active_speakers_changed"],
            "only the honest report"
        );
        assert_eq!(
            drain(&mut bob_queue),
            [r#"{"type":"activeSpeakers","speakers":[]}"#]
        );
    }

    /// A join wave into one SFU channel (large-room signaling): join k costs the k members
    /// before it one `entered` each, the newcomer its own `entered`, its subscribe offer and the
    /// current speakers — O(N) frames per join, nothing more to anyone — and reads each
    /// member's route once (the broadcast), never its whole record: a few records per join
    /// however large the room (the newcomer's, the speaker's).
    // Paused time: the presence refresh (which reads every session held) stays out of the
    // counts, as the joins now yield to the task that names the speakers.
    #[tokio::test(start_paused = true)]
    async fn each_join_of_a_wave_costs_one_frame_per_member_and_one_read_of_each() {
        let (signaling, store, _) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        register_node(&signaling).await;
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, alice_queue) = member(&signaling, &channel, "alice").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        nodes.set_speakers(vec![mooyaho_control::Speaker {
            session: alice.session.0.clone(),
            level: 50,
        }]);
        let mut queues = vec![alice_queue];
        drain(&mut queues[0]);
        // The presence refresh's first round (it reads the sessions held) runs at the first
        // yield: let it pass before counting, as the joins below yield.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        const VIEWERS: usize = 40;
        for k in 0..VIEWERS {
            let (viewer, mut queue) = integrated(&signaling, &format!("viewer-{k}"), false).await;
            let (records_before, routes_before) = (store.records_read(), store.routes_read());
            signaling
                .channels()
                .enter(&viewer, channel.clone())
                .await
                .unwrap();
            // The speakers are told once `enter` is answered: the newcomer's frames are all
            // there when they are.
            let mut newcomer_frames = Vec::new();
            let told = tokio::time::timeout(Duration::from_secs(5), async {
                while newcomer_frames.len() < 3 {
                    newcomer_frames.extend(drain(&mut queue));
                    tokio::task::yield_now().await;
                }
            })
            .await;
            assert!(told.is_ok(), "join {k}: {newcomer_frames:?}");
            let records = store.records_read() - records_before;
            let routes = store.routes_read() - routes_before;
            let members_before = queues.len();
            queues.push(queue);
            let entered = format!(r#""type":"entered","sessionId":"{}""#, viewer.session);
            for (i, queue) in queues.iter_mut().enumerate() {
                let newcomer = i == members_before;
                let frames = if newcomer {
                    std::mem::take(&mut newcomer_frames)
                } else {
                    drain(queue)
                };
                let expected = if newcomer { 3 } else { 1 };
                assert_eq!(frames.len(), expected, "join {k}, member {i}: {frames:?}");
                assert!(frames[0].contains(&entered), "{frames:?}");
                if newcomer {
                    assert!(frames[1].contains(r#""type":"called""#), "{frames:?}");
                    assert!(
                        frames[2].contains(r#""type":"activeSpeakers""#),
                        "{frames:?}"
                    );
                }
            }
            // Before: every member's record for the broadcast, and again to name the speakers.
            assert_eq!(routes, members_before + 1, "join {k}: one route per member");
            assert!(
                records <= 4,
                "join {k} into {members_before} members read {records} session records"
            );
        }
    }

    #[tokio::test]
    async fn a_subscribed_qualities_report_reaches_only_its_publisher_and_malformed_ones_nobody() {
        let (signaling, _, recorder) = recorded_service();
        let PublishingPair {
            node_events,
            node,
            alice: (alice, mut alice_queue),
            bob: (_bob, mut bob_queue),
            room,
            ..
        } = publishing_pair(&signaling, &recorder).await;
        let report = |room: &str, mid: &str, qualities: &[&str], layers: &[u8]| {
            NodeReport::Event(Event::SubscribedQualities {
                room: room.to_owned(),
                session: alice.session.0.clone(),
                mid: mid.to_owned(),
                qualities: qualities.iter().map(|q| (*q).to_owned()).collect(),
                layers: layers.to_vec(),
            })
        };
        // Malformed: too many layers, rid/layer count mismatch, unordered, a layer past 2, a
        // rid with markup, an empty or oversized mid; and a room the channel is not in.
        let long_mid = "m".repeat(100);
        let bad = [
            report(&room, "1", &["q", "h", "f", "x"], &[0, 1, 2, 3]),
            report(&room, "1", &["q"], &[0, 2]),
            report(&room, "1", &["f", "q"], &[2, 0]),
            report(&room, "1", &["q", "z"], &[0, 5]),
            report(&room, "1", &["<q>"], &[0]),
            report(&room, "", &["q"], &[0]),
            report(&room, &long_mid, &["q"], &[0]),
            report("another-room", "1", &["q"], &[0]),
        ];
        for bad in bad {
            node_events.send((node, bad)).await.unwrap();
        }
        node_events
            .send((node, report(&room, "1", &["q", "f"], &[0, 2])))
            .await
            .unwrap();
        let seen = next_events(&recorder).await;
        assert_eq!(kinds(&seen), ["subscribed_qualities_changed"]);
        assert_eq!(audience(&seen[0]), std::slice::from_ref(&alice.session));
        assert_eq!(
            drain(&mut alice_queue),
            [r#"{"type":"subscribedQualities","mid":"1","qualities":["q","f"],"layers":[0,2]}"#]
        );
        assert_eq!(
            drain(&mut bob_queue),
            Vec::<String>::new(),
            "only the publisher"
        );
    }

    #[tokio::test]
    async fn a_member_who_enters_hears_the_current_speakers_and_only_it() {
        let (signaling, _, recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        register_node(&signaling).await;
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        let speaker = |session: &str, level| mooyaho_control::Speaker {
            session: session.to_owned(),
            level,
        };
        // The node ranks alice and a session that is no member (left meanwhile).
        nodes.set_speakers(vec![speaker(&alice.session.0, 42), speaker("gone", 90)]);
        drain(&mut alice_queue);
        recorder.take();

        let (bob, mut bob_queue) = integrated(&signaling, "bob", false).await;
        signaling
            .channels()
            .enter(&bob, channel.clone())
            .await
            .unwrap();
        let told = format!(
            r#"{{"type":"activeSpeakers","speakers":[{{"sessionId":"{}","level":0.42}}]}}"#,
            alice.session
        );
        // Told after `enter` was answered.
        let heard = tokio::time::timeout(Duration::from_secs(5), async {
            while !drain(&mut bob_queue).contains(&told) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(heard.is_ok(), "bob hears who speaks");
        let speakers_events: Vec<_> = recorder
            .take()
            .into_iter()
            .filter(|e| e.event.kind() == "active_speakers_changed")
            .collect();
        assert_eq!(speakers_events.len(), 1);
        assert_eq!(
            audience(&speakers_events[0]),
            std::slice::from_ref(&bob.session)
        );
        assert!(
            !drain(&mut alice_queue)
                .iter()
                .any(|m| m.contains("activeSpeakers")),
            "members already told hear nothing new"
        );
        assert!(
            nodes
                .take()
                .iter()
                .any(|r| matches!(r, Request::Speakers { .. }))
        );

        // Nobody speaks: a newcomer is told nothing.
        nodes.set_speakers(Vec::new());
        let (carol, mut carol_queue) = integrated(&signaling, "carol", false).await;
        signaling
            .channels()
            .enter(&carol, channel.clone())
            .await
            .unwrap();
        let asked = tokio::time::timeout(Duration::from_secs(5), async {
            while !(nodes.take().iter()).any(|r| matches!(r, Request::Speakers { .. })) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(asked.is_ok(), "the node is asked who speaks");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !drain(&mut carol_queue)
                .iter()
                .any(|m| m.contains("activeSpeakers")),
            "an empty ranking is not sent"
        );
    }

    /// Asking the node who speaks is off the join's path: a member's `enter` is answered, and
    /// its subscribe offer sent, while the node has not said (a busy worker in a join wave).
    #[tokio::test]
    async fn enter_is_answered_with_the_offer_while_the_node_has_not_named_the_speakers() {
        let (signaling, _, _recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        register_node(&signaling).await;
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, _alice_queue) = member(&signaling, &channel, "alice").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        nodes.stall_speakers();
        let (bob, mut bob_queue) = integrated(&signaling, "bob", false).await;
        let entered = tokio::time::timeout(
            Duration::from_secs(5),
            signaling.channels().enter(&bob, channel.clone()),
        )
        .await
        .expect("enter does not wait for the speakers");
        assert!(entered.is_ok(), "{entered:?}");
        let offer = format!("offer-for-{}", bob.session);
        assert!(
            drain(&mut bob_queue).iter().any(|m| m.contains(&offer)),
            "bob has his subscribe offer"
        );
    }

    #[tokio::test]
    async fn publishing_outside_an_sfu_channel_is_refused_and_emits_nothing() {
        let (signaling, _, recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        let channel = signaling.channels().create(false).await.unwrap().id;
        let (alice, _queue) = member(&signaling, &channel, "alice").await;
        recorder.take();
        let refused = signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidMessage);
        let candidate = serde_json::json!("not an object");
        let refused = signaling
            .placement()
            .candidate(&alice, &candidate)
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidMessage);
        assert!(recorder.take().is_empty());
        assert!(nodes.take().is_empty(), "no node was asked");
    }

    #[tokio::test]
    async fn link_reports_become_node_events_and_fleet_changes_once() {
        let (signaling, _, recorder) = recorded_service();
        let (_nodes, node_events) = FakeNodes::attach(&signaling);
        let node = SfuServerId(7);
        // The second `LinkUp` stands for another instance's link: the fleet heard already.
        for report in [NodeReport::LinkUp, NodeReport::LinkUp, NodeReport::LinkDown] {
            node_events.send((node, report)).await.unwrap();
        }
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            while seen.len() < 5 {
                seen.extend(recorder.take());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("both reports were handled");
        assert_eq!(
            seen.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
            [
                DomainEvent::SfuNodeUp { node },
                DomainEvent::SfuServerUp { node },
                DomainEvent::SfuNodeUp { node },
                DomainEvent::SfuNodeDown { node },
                DomainEvent::SfuServerDown { node },
            ]
        );
        assert!(seen.iter().all(|e| e.audience.is_empty()));
    }

    /// Handling a node's reports can hang (a request to the node, up to 10 s): a node flooding
    /// reports meanwhile must never hold up the links (which then stop reading load reports and
    /// every node looks dead), and another node's reports are still handled.
    #[tokio::test]
    async fn a_node_flooding_reports_while_handling_hangs_holds_up_no_link() {
        let (signaling, store, recorder) = recorded_service();
        let (nodes, node_events) = FakeNodes::attach(&signaling);
        let (a, b) = two_nodes(&signaling).await;
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, _alice_queue) = member(&signaling, &channel, "alice").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        let placed = store.inner.channel(&channel).await.unwrap().unwrap();
        let (Some(node), Some(room)) = (placed.sfu_server_id, placed.sfu_room.clone()) else {
            panic!("placed: {placed:?}");
        };
        let other = if node == a { b } else { a };
        nodes.stall(node);
        recorder.take();

        // The first renegotiation hangs on the node; thousands more and speaker changes follow.
        let flood = async {
            for level in 0..5_000u32 {
                let renegotiate = Event::RenegotiationNeeded {
                    room: room.clone(),
                    session: alice.session.0.clone(),
                };
                let speakers = Event::ActiveSpeakers {
                    room: room.clone(),
                    member: alice.session.0.clone(),
                    speakers: vec![mooyaho_control::Speaker {
                        session: alice.session.0.clone(),
                        level: (level % 100 + 1) as u8,
                    }],
                };
                for event in [renegotiate, speakers] {
                    node_events
                        .send((node, NodeReport::Event(event)))
                        .await
                        .unwrap();
                }
            }
            // Reports that neither coalesce nor can wait past the bound are dropped, counted.
            for n in 0..MAX_OTHER_REPORTS + 10 {
                let closed = Event::TransportClosed {
                    room: room.clone(),
                    session: format!("s{n}"),
                    side: "publish".into(),
                    reason: "flood".into(),
                };
                node_events
                    .send((node, NodeReport::Event(closed)))
                    .await
                    .unwrap();
            }
            node_events.send((other, NodeReport::LinkUp)).await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(10), flood)
            .await
            .expect("reports are taken without waiting for their handling");
        let seen = seen_until(&recorder, "sfu_node_up").await;
        assert!(
            seen.iter()
                .any(|e| e.event == DomainEvent::SfuNodeUp { node: other }),
            "{seen:?}"
        );
        let metrics = signaling.metrics().render();
        let line = format!("mooyaho_sfu_node_reports_dropped_total{{node=\"{node}\"}} 10");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    /// After a failover the old node still has the room; its transports time out and it asks
    /// for renegotiations. Signaling must not fetch offers from it (the member's media would
    /// break), nor act on a renegotiation naming a room the session's channel is not in; and
    /// once the old node's link is back, its orphan room is closed.
    #[tokio::test]
    async fn renegotiations_count_only_from_where_the_channel_is_placed_and_orphans_are_closed() {
        let (signaling, store, recorder) = recorded_service();
        let (nodes, node_events) = FakeNodes::attach(&signaling);
        let (a, b) = two_nodes(&signaling).await;
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        let old_room = placed_room(&store, &channel).await;
        tokio::time::sleep(CHECK_EVERY * 2).await;
        recorder.take();
        nodes.set_healthy(a, false);
        seen_until(&recorder, "sfu_restarted").await;
        let moved = store.inner.channel(&channel).await.unwrap().unwrap();
        assert_eq!(moved.sfu_server_id, Some(b));
        let new_room = moved.sfu_room.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drain(&mut alice_queue);
        nodes.take();
        recorder.take();

        let renegotiate = |room: &str| {
            NodeReport::Event(Event::RenegotiationNeeded {
                room: room.to_owned(),
                session: alice.session.0.clone(),
            })
        };
        // The old node, and the new node naming a room that is not the channel's: ignored.
        for (node, room) in [(a, &old_room), (b, &old_room), (a, &new_room)] {
            node_events.send((node, renegotiate(room))).await.unwrap();
        }
        // The new node for the channel's room: offered (and proves the others were handled).
        node_events.send((b, renegotiate(&new_room))).await.unwrap();
        let mut seen = seen_until(&recorder, "subscribe_offered").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen.extend(recorder.take());
        assert_eq!(kinds(&seen), ["subscribe_offered"], "{seen:?}");
        let asked: Vec<_> = nodes
            .take()
            .into_iter()
            .filter(|r| matches!(r, Request::SubscribeOffer { .. }))
            .collect();
        assert_eq!(
            asked,
            [Request::SubscribeOffer {
                room: new_room.clone(),
                session: alice.session.0.clone()
            }]
        );
        assert_eq!(drain(&mut alice_queue).len(), 1);
        // The three ignored reports are counted, per node.
        let metrics = signaling.metrics().render();
        for (node, ignored) in [(a, 2), (b, 1)] {
            let line =
                format!("mooyaho_sfu_node_reports_ignored_total{{node=\"{node}\"}} {ignored}");
            assert!(metrics.contains(&line), "{line} in {metrics}");
        }

        // The old node's link comes back: its orphan room is closed, the channel's room kept.
        nodes.set_healthy(a, true);
        node_events.send((a, NodeReport::LinkUp)).await.unwrap();
        let closed = tokio::time::timeout(ORPHAN_GRACE + Duration::from_secs(5), async {
            let mut requests = Vec::new();
            loop {
                requests.extend(nodes.take());
                if requests
                    .iter()
                    .any(|r| matches!(r, Request::CloseRoom { .. }))
                {
                    return requests;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the orphan room is closed");
        let closed: Vec<_> = closed
            .into_iter()
            .filter(|r| matches!(r, Request::CloseRoom { .. }))
            .collect();
        assert_eq!(closed, [Request::CloseRoom { room: old_room }]);
        assert_eq!(
            store
                .inner
                .channel(&channel)
                .await
                .unwrap()
                .unwrap()
                .sfu_room,
            Some(new_room)
        );
    }

    /// Two nodes at distinct addresses (no fingerprint: only the fake reaches them).
    async fn two_nodes(signaling: &crate::domain::Signaling) -> (SfuServerId, SfuServerId) {
        let servers = signaling.sfu_servers();
        let a = servers.register("127.0.0.1:4001".into(), None).await;
        let b = servers.register("127.0.0.1:4002".into(), None).await;
        (a.unwrap().record.id, b.unwrap().record.id)
    }

    /// Waits until the recorder has seen an event of `kind`; returns everything seen.
    async fn seen_until(
        recorder: &crate::domain::events::recording::Recorder,
        kind: &str,
    ) -> Vec<Emitted> {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                seen.extend(recorder.take());
                if seen.iter().any(|e| e.event.kind() == kind) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(found.is_ok(), "no {kind}: {:?}", kinds(&seen));
        seen
    }

    fn restart_frame(channel: &ChannelId) -> String {
        format!(r#"{{"type":"sfuRestart","channel":"{channel}"}}"#)
    }

    #[tokio::test]
    async fn a_failed_node_s_channels_move_to_a_healthy_node_and_members_are_told_once() {
        let (signaling, store, recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        let (a, b) = two_nodes(&signaling).await;
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
        let (bob, mut bob_queue) = member(&signaling, &channel, "bob").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        let placed = store.inner.channel(&channel).await.unwrap().unwrap();
        assert_eq!(
            placed.sfu_server_id,
            Some(a),
            "the least-loaded node, lowest id"
        );
        let old_room = placed.sfu_room.unwrap();
        // The failover watch has seen both nodes healthy by now.
        tokio::time::sleep(CHECK_EVERY * 2).await;
        drain(&mut alice_queue);
        drain(&mut bob_queue);
        recorder.take();
        nodes.take();

        nodes.set_healthy(a, false);
        let seen = seen_until(&recorder, "channel_placed").await;
        // Members are told before the channel is placed again.
        assert_eq!(
            kinds(&seen)[..3],
            ["room_lost", "sfu_restarted", "channel_placed"]
        );
        assert_eq!(
            seen[0].event,
            DomainEvent::RoomLost {
                channel: channel.clone(),
                node: a,
                room: old_room.clone()
            }
        );
        let restarted = seen
            .iter()
            .find(|e| e.event.kind() == "sfu_restarted")
            .unwrap();
        assert_eq!(
            audience(restarted),
            sorted(vec![alice.session.clone(), bob.session.clone()])
        );
        let moved = store.inner.channel(&channel).await.unwrap().unwrap();
        assert_eq!(moved.sfu_server_id, Some(b));
        assert_ne!(moved.sfu_room.as_deref(), Some(old_room.as_str()));
        // Both hear of it, first, then each is offered the new room (registering receivers).
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (queue, who) in [(&mut alice_queue, &alice), (&mut bob_queue, &bob)] {
            let frames = drain(queue);
            assert_eq!(frames[0], restart_frame(&channel), "{frames:?}");
            assert!(
                frames[1].contains(&format!("offer-for-{}", who.session)),
                "{frames:?}"
            );
        }
        assert!(matches!(nodes.take()[0], Request::CreateRoom));

        // Another look (or another instance) finds nothing left on the failed node: told once.
        signaling.placement().fail_over(a).await;
        signaling
            .placement()
            .relocate(&channel, a, &old_room, None)
            .await;
        assert!(recorder.take().is_empty());
        assert!(drain(&mut alice_queue).is_empty());
        assert_eq!(store.inner.channel(&channel).await.unwrap().unwrap(), moved);
    }

    /// Review of issue 13: failover placed each channel again and offered its members before
    /// the next channel's members were even told, so the last member's `sfuRestart` waited on
    /// every other channel's node requests (each up to the control timeout). Now every member
    /// of every lost channel is told first: here the node taking the channels never answers,
    /// and all six members of three channels still hear `sfuRestart` at once.
    #[tokio::test]
    async fn every_member_of_every_lost_channel_is_told_before_any_channel_is_placed_again() {
        let (signaling, store, _recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        let (a, b) = two_nodes(&signaling).await;
        let mut members = Vec::new();
        for c in 0..3 {
            let channel = signaling.channels().create(true).await.unwrap().id;
            let (first, first_queue) = member(&signaling, &channel, &format!("{c}-a")).await;
            let (_, second_queue) = member(&signaling, &channel, &format!("{c}-b")).await;
            signaling
                .placement()
                .publish(&first, "offer".into())
                .await
                .unwrap();
            let placed = store.inner.channel(&channel).await.unwrap().unwrap();
            assert_eq!(
                placed.sfu_server_id,
                Some(a),
                "the least-loaded node, lowest id"
            );
            members.push((channel.clone(), first_queue));
            members.push((channel, second_queue));
        }
        // The failover watch has seen both nodes healthy by now.
        tokio::time::sleep(CHECK_EVERY * 2).await;
        for (_, queue) in &mut members {
            drain(queue);
        }

        nodes.stall(b);
        nodes.set_healthy(a, false);
        let told = tokio::time::timeout(Duration::from_secs(5), async {
            let mut told = vec![false; members.len()];
            while told.contains(&false) {
                for ((channel, queue), told) in members.iter_mut().zip(&mut told) {
                    *told |= drain(queue).contains(&restart_frame(channel));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            told.is_ok(),
            "not every member was told while B does not answer"
        );
        // None of them is placed yet (B never answered its CreateRoom): they wait unplaced.
        for (channel, _) in &members {
            let record = store.inner.channel(channel).await.unwrap().unwrap();
            assert_eq!(record.sfu_server_id, None);
        }
    }

    #[tokio::test]
    async fn with_no_healthy_node_left_members_get_an_error_and_nothing_is_lost() {
        let (signaling, store, recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        let (a, b) = two_nodes(&signaling).await;
        nodes.set_healthy(b, false);
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
        let (bob, mut bob_queue) = member(&signaling, &channel, "bob").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        tokio::time::sleep(CHECK_EVERY * 2).await;
        drain(&mut alice_queue);
        drain(&mut bob_queue);
        recorder.take();

        nodes.set_healthy(a, false);
        let seen = seen_until(&recorder, "sfu_restarted").await;
        assert_eq!(
            kinds(&seen),
            ["room_lost", "media_stranded", "sfu_restarted"]
        );
        assert_eq!(
            seen[2].event,
            DomainEvent::SfuRestarted {
                channel: channel.clone(),
            }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        for queue in [&mut alice_queue, &mut bob_queue] {
            let frames = drain(queue);
            assert_eq!(frames.len(), 2, "{frames:?}");
            assert_eq!(frames[1], restart_frame(&channel));
            let error: Value = serde_json::from_str(&frames[0]).unwrap();
            assert_eq!(error["type"], "error");
            assert_eq!(error["code"], "sfu_unavailable");
            assert!(
                error["message"].as_str().unwrap().contains("failed"),
                "{error}"
            );
        }
        // The channel and its members are kept; only the placement went.
        let kept = store.inner.channel(&channel).await.unwrap().unwrap();
        assert_eq!((kept.sfu_server_id, kept.sfu_room), (None, None));
        let members = sorted(store.inner.members(&channel).await.unwrap());
        assert_eq!(
            members,
            sorted(vec![alice.session.clone(), bob.session.clone()])
        );
        // A publish meanwhile is refused clearly; once a node is back, it places the channel.
        let refused = signaling.placement().publish(&bob, "offer".into()).await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::SfuUnavailable);
        nodes.set_healthy(b, true);
        signaling
            .placement()
            .publish(&bob, "offer".into())
            .await
            .unwrap();
        let placed = store.inner.channel(&channel).await.unwrap().unwrap();
        assert_eq!(placed.sfu_server_id, Some(b));
    }

    #[tokio::test]
    async fn a_node_that_restarted_without_its_rooms_has_its_channels_placed_again() {
        let (signaling, store, recorder) = recorded_service();
        let (nodes, node_events) = FakeNodes::attach(&signaling);
        let (a, _b) = two_nodes(&signaling).await;
        let lost = signaling.channels().create(true).await.unwrap().id;
        let (alice, mut alice_queue) = member(&signaling, &lost, "alice").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        let room = placed_room(&store, &lost).await;
        drain(&mut alice_queue);

        // The node restarts (its rooms are gone) and its link comes up again.
        nodes.lose_rooms(a);
        recorder.take();
        node_events.send((a, NodeReport::LinkUp)).await.unwrap();
        let seen = seen_until(&recorder, "channel_placed").await;
        let placement: Vec<_> = kinds(&seen)
            .into_iter()
            .filter(|k| !matches!(*k, "sfu_node_up" | "sfu_server_up"))
            .collect();
        assert_eq!(
            placement[..3],
            ["room_lost", "sfu_restarted", "channel_placed"],
            "{seen:?}"
        );
        let moved = store.inner.channel(&lost).await.unwrap().unwrap();
        assert_ne!(moved.sfu_room, Some(room));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(drain(&mut alice_queue)[0], restart_frame(&lost));

        // A link that comes up to a node that kept its rooms moves nothing.
        recorder.take();
        node_events.send((a, NodeReport::LinkUp)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(kinds(&recorder.take()), ["sfu_node_up"]);
        assert_eq!(store.inner.channel(&lost).await.unwrap().unwrap(), moved);
    }

    #[tokio::test]
    async fn a_publish_to_a_lost_room_places_the_channel_again_and_restarts_the_others() {
        let (signaling, store, recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        let (a, _b) = two_nodes(&signaling).await;
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
        let (bob, mut bob_queue) = member(&signaling, &channel, "bob").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        drain(&mut alice_queue);
        drain(&mut bob_queue);
        nodes.lose_rooms(a);
        recorder.take();

        let answer = signaling.placement().publish(&bob, "offer".into()).await;
        assert_eq!(answer.unwrap(), "answer");
        let seen = kinds(&recorder.take());
        assert_eq!(
            seen[..3],
            ["room_lost", "sfu_restarted", "channel_placed"],
            "{seen:?}"
        );
        assert_eq!(drain(&mut alice_queue)[0], restart_frame(&channel));
        assert!(
            !drain(&mut bob_queue).contains(&restart_frame(&channel)),
            "the publisher's own publish went to the new room"
        );
        assert!(
            store
                .inner
                .channel(&channel)
                .await
                .unwrap()
                .unwrap()
                .sfu_room
                .is_some()
        );
    }

    #[tokio::test]
    async fn draining_moves_channels_off_a_live_node_and_closes_their_old_rooms() {
        let (signaling, store, recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        let (a, b) = two_nodes(&signaling).await;
        let servers = signaling.sfu_servers();
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        let old_room = placed_room(&store, &channel).await;
        drain(&mut alice_queue);

        // Unknown ids are 404; draining the only eligible node while it hosts a channel is 409.
        let unknown = servers.drain(SfuServerId(99)).await.unwrap_err();
        assert!(
            matches!(unknown, crate::domain::DomainError::NotFound(_)),
            "{unknown:?}"
        );
        nodes.set_healthy(b, false);
        let refused = servers.drain(a).await.unwrap_err();
        let crate::domain::DomainError::Conflict(message) = refused else {
            panic!("{refused:?}");
        };
        assert!(message.contains("no other healthy SFU node"), "{message}");
        assert!(
            !servers.get(a).await.unwrap().record.draining,
            "nothing changed"
        );
        nodes.set_healthy(b, true);
        nodes.take();
        recorder.take();

        let view = servers.drain(a).await.unwrap();
        assert!(view.record.draining && !view.drained());
        seen_until(&recorder, "sfu_restarted").await;
        let moved = store.inner.channel(&channel).await.unwrap().unwrap();
        assert_eq!(moved.sfu_server_id, Some(b));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(drain(&mut alice_queue)[0], restart_frame(&channel));
        let requests = nodes.take();
        assert_eq!(requests[0], Request::Drain { draining: true });
        assert!(
            requests.contains(&Request::CloseRoom { room: old_room }),
            "{requests:?}"
        );
        let view = servers.get(a).await.unwrap();
        assert!(view.drained(), "{view:?}");
        servers.delete(a, false).await.unwrap();
    }

    /// A drain that finds no node to move a channel to (the other node failed after the drain
    /// began) stops and keeps the working room, rather than closing it with nowhere to go.
    #[tokio::test]
    async fn a_drain_with_nowhere_left_to_move_keeps_the_room_and_stops() {
        let (signaling, store, recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        let (a, b) = two_nodes(&signaling).await;
        let servers = signaling.sfu_servers();
        let channel = signaling.channels().create(true).await.unwrap().id;
        let (alice, mut alice_queue) = member(&signaling, &channel, "alice").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        let placed = store.inner.channel(&channel).await.unwrap().unwrap();
        assert_eq!(placed.sfu_server_id, Some(a));
        tokio::time::sleep(CHECK_EVERY * 2).await;
        drain(&mut alice_queue);
        nodes.take();
        recorder.take();

        let view = servers.drain(a).await.unwrap();
        assert!(view.record.draining);
        // Before the drain's task first runs (this runtime has one thread), b fails.
        nodes.set_healthy(b, false);
        tokio::time::sleep(DRAIN_PAUSE * 2).await;

        assert_eq!(
            store.inner.channel(&channel).await.unwrap().unwrap(),
            placed
        );
        let requests = nodes.take();
        assert!(
            !requests
                .iter()
                .any(|r| matches!(r, Request::CloseRoom { .. } | Request::CreateRoom)),
            "{requests:?}"
        );
        assert!(
            !kinds(&recorder.take()).contains(&"sfu_restarted"),
            "members keep their media"
        );
        assert!(drain(&mut alice_queue).is_empty());
        let view = servers.get(a).await.unwrap();
        assert!(view.record.draining && !view.drained(), "{view:?}");
    }

    /// A node this instance just failed over takes no new room for a while even when it looks
    /// healthy again (otherwise it would win, as the lowest id at equal load, at once).
    #[tokio::test]
    async fn a_node_just_failed_over_takes_no_new_room_while_held_down() {
        let (signaling, store, recorder) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        let (a, b) = two_nodes(&signaling).await;
        let first = signaling.channels().create(true).await.unwrap().id;
        let (alice, _alice_queue) = member(&signaling, &first, "alice").await;
        signaling
            .placement()
            .publish(&alice, "offer".into())
            .await
            .unwrap();
        tokio::time::sleep(CHECK_EVERY * 2).await;
        recorder.take();
        nodes.set_healthy(a, false);
        seen_until(&recorder, "sfu_restarted").await;
        nodes.set_healthy(a, true);
        tokio::time::sleep(CHECK_EVERY * 2).await;

        let second = signaling.channels().create(true).await.unwrap().id;
        let (bob, _bob_queue) = member(&signaling, &second, "bob").await;
        signaling
            .placement()
            .publish(&bob, "offer".into())
            .await
            .unwrap();
        let placed = store.inner.channel(&second).await.unwrap().unwrap();
        assert_eq!(placed.sfu_server_id, Some(b), "a is held down");
    }

    #[tokio::test]
    async fn disabling_a_node_is_told_to_the_node() {
        let (signaling, _, _) = recorded_service();
        let (nodes, _node_events) = FakeNodes::attach(&signaling);
        let (a, _b) = two_nodes(&signaling).await;
        let servers = signaling.sfu_servers();
        for (disabled, told) in [(true, true), (false, false)] {
            let patch = crate::domain::SfuServerPatch {
                disabled: Some(disabled),
                ..Default::default()
            };
            servers.update(a, patch).await.unwrap();
            assert_eq!(nodes.take(), [Request::Drain { draining: told }]);
        }
    }
}
