//! The command tier: creating and removing rooms, transports, tracks and subscriptions. Every
//! command either fully applies or returns `Err` with the worker unchanged.

use std::time::Instant;

use super::Worker;
use crate::error::CommandError;
use crate::output::Event;
use crate::room::Room;
use crate::stats::Stats;
use crate::subscription::{Subscription, SubscriptionConfig, effective_layer};
use crate::track::{MediaKind, Track, TrackConfig};
use crate::transport::{Direction, Route, Transport, TransportConfig};
use crate::{RoomId, SubscriptionId, TrackId, TransportId};

/// A command as a value, for callers that queue or serialise them (the control plane, the
/// fuzzer). Each variant mirrors one `Worker` method.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Command {
    /// [`Worker::create_room`].
    CreateRoom,
    /// [`Worker::close_room`].
    CloseRoom(RoomId),
    /// [`Worker::add_transport`].
    AddTransport {
        /// Room to join.
        room: RoomId,
        /// What it negotiated.
        config: TransportConfig,
    },
    /// [`Worker::remove_transport`].
    RemoveTransport(TransportId),
    /// [`Worker::publish_track`].
    PublishTrack {
        /// Publish transport.
        transport: TransportId,
        /// What it negotiated.
        config: TrackConfig,
    },
    /// [`Worker::unpublish_track`].
    UnpublishTrack(TrackId),
    /// [`Worker::subscribe`].
    Subscribe {
        /// Subscribe transport.
        transport: TransportId,
        /// Track to receive.
        track: TrackId,
        /// What the subscriber negotiated.
        config: SubscriptionConfig,
    },
    /// [`Worker::unsubscribe`].
    Unsubscribe(SubscriptionId),
    /// [`Worker::set_preferred_layer`].
    SetPreferredLayer {
        /// The subscription.
        subscription: SubscriptionId,
        /// Layer index, 0 = lowest.
        layer: u8,
    },
    /// [`Worker::set_paused`].
    SetPaused {
        /// The subscription.
        subscription: SubscriptionId,
        /// Stop (`true`) or resume (`false`) forwarding.
        paused: bool,
    },
    /// [`Worker::stats`].
    Stats,
}

/// The successful result of a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// A room was created.
    Room(RoomId),
    /// A transport was added.
    Transport(TransportId),
    /// A track was published.
    Track(TrackId),
    /// A subscription was created.
    Subscription(SubscriptionId),
    /// A removal succeeded.
    Done,
    /// Current statistics (boxed: the counters dwarf the other variants).
    Stats(Box<Stats>),
}

impl Worker {
    /// Applies a [`Command`].
    pub fn handle_command(
        &mut self,
        now: Instant,
        command: Command,
    ) -> Result<Response, CommandError> {
        self.arm(now);
        Ok(match command {
            Command::CreateRoom => Response::Room(self.create_room()?),
            Command::CloseRoom(room) => self.close_room(room).map(|()| Response::Done)?,
            Command::AddTransport { room, config } => {
                Response::Transport(self.add_transport(now, room, config)?)
            }
            Command::RemoveTransport(t) => self.remove_transport(t).map(|()| Response::Done)?,
            Command::PublishTrack { transport, config } => {
                Response::Track(self.publish_track(now, transport, config)?)
            }
            Command::UnpublishTrack(track) => {
                self.unpublish_track(track).map(|()| Response::Done)?
            }
            Command::Subscribe {
                transport,
                track,
                config,
            } => Response::Subscription(self.subscribe(now, transport, track, config)?),
            Command::Unsubscribe(s) => self.unsubscribe(s).map(|()| Response::Done)?,
            Command::SetPreferredLayer {
                subscription,
                layer,
            } => self
                .set_preferred_layer(now, subscription, layer)
                .map(|()| Response::Done)?,
            Command::SetPaused {
                subscription,
                paused,
            } => self
                .set_paused(now, subscription, paused)
                .map(|()| Response::Done)?,
            Command::Stats => Response::Stats(Box::new(self.stats())),
        })
    }

    /// Opens a room.
    pub fn create_room(&mut self) -> Result<RoomId, CommandError> {
        let generation = self.next_generation();
        Ok(self.rooms.insert_with(generation, |_| Room::default()))
    }

    /// Closes a room, removing every transport in it (with their tracks and subscriptions).
    pub fn close_room(&mut self, room: RoomId) -> Result<(), CommandError> {
        let transports = self
            .rooms
            .get(room)
            .ok_or(CommandError::UnknownRoom(room))?
            .transports
            .clone();
        for transport in transports {
            self.remove_transport(transport)
                .expect("a room lists only live transports");
        }
        self.rooms.remove(room);
        Ok(())
    }

    /// Adds the publish or subscribe side of a peer's PeerConnection to a room.
    pub fn add_transport(
        &mut self,
        now: Instant,
        room: RoomId,
        config: TransportConfig,
    ) -> Result<TransportId, CommandError> {
        self.rooms
            .get(room)
            .ok_or(CommandError::UnknownRoom(room))?;
        let generation = self.next_generation();
        let id = self.transports.insert_with(generation, |_| {
            Transport::new(now, room, config, &self.config)
        });
        self.rooms
            .get_mut(room)
            .expect("checked above")
            .transports
            .push(id);
        Ok(id)
    }

    /// Removes a transport: its tracks end (and their subscriptions everywhere), and its own
    /// subscriptions end.
    pub fn remove_transport(&mut self, transport: TransportId) -> Result<(), CommandError> {
        let t = self
            .transports
            .get(transport)
            .ok_or(CommandError::UnknownTransport(transport))?;
        let (room, tracks, subscriptions) = (t.room, t.tracks.clone(), t.subscriptions.clone());
        for track in tracks {
            self.unpublish_track(track)
                .expect("a transport lists only live tracks");
        }
        for subscription in subscriptions {
            self.unsubscribe(subscription)
                .expect("a transport lists only live subscriptions");
        }
        self.transports.remove(transport);
        if let Some(room) = self.rooms.get_mut(room) {
            room.forget_transport(transport);
        }
        Ok(())
    }

    /// Publishes a track received on a publish transport; it is the track of the transport's
    /// participant, if the transport has one.
    pub fn publish_track(
        &mut self,
        now: Instant,
        transport: TransportId,
        config: TrackConfig,
    ) -> Result<TrackId, CommandError> {
        self.publish_track_of(now, transport, None, config)
    }

    /// Publishes a track on `participant`'s behalf on a transport it does not own: one relayed
    /// from the worker its publisher is connected to. The participant joins if absent, and
    /// leaves with the last such track unless it has a transport here.
    pub fn publish_relayed_track(
        &mut self,
        now: Instant,
        transport: TransportId,
        participant: &str,
        config: TrackConfig,
    ) -> Result<TrackId, CommandError> {
        self.publish_track_of(now, transport, Some(participant), config)
    }

    fn publish_track_of(
        &mut self,
        now: Instant,
        transport: TransportId,
        relayed_for: Option<&str>,
        config: TrackConfig,
    ) -> Result<TrackId, CommandError> {
        let t = self
            .transports
            .get(transport)
            .ok_or(CommandError::UnknownTransport(transport))?;
        if t.config.direction != Direction::Publish {
            return Err(CommandError::WrongDirection(transport));
        }
        let mut ssrcs = Vec::new();
        for e in config.encodings.iter() {
            // A layer must be nameable (by SSRC or rid); RTX needs a payload type.
            if (e.ssrc.is_none() && e.rid.is_none())
                || (e.rtx_ssrc.is_some() && config.rtx_pt.is_none())
            {
                return Err(CommandError::InvalidEncodings);
            }
            ssrcs.extend(e.ssrc.into_iter().chain(e.rtx_ssrc));
        }
        for (i, ssrc) in ssrcs.iter().enumerate() {
            if t.routes.contains_key(ssrc) || ssrcs[..i].contains(ssrc) {
                return Err(CommandError::SsrcInUse(*ssrc));
            }
        }
        let room = t.room;
        let generation = self.next_generation();
        let id = self.tracks.insert_with(generation, |_| {
            Track::new(now, room, transport, config, &self.config)
        });
        let t = self.transports.get_mut(transport).expect("checked above");
        t.tracks.push(id);
        for (layer, e) in config.encodings.iter().enumerate() {
            let layer = layer as u8;
            if let Some(ssrc) = e.ssrc {
                t.routes.insert(ssrc, Route::Track { track: id, layer });
            }
            if let Some(ssrc) = e.rtx_ssrc {
                t.routes.insert(ssrc, Route::TrackRtx { track: id, layer });
            }
        }
        let room = self
            .rooms
            .get_mut(room)
            .expect("a transport's room is live");
        room.tracks.push(id);
        let owner = match relayed_for {
            Some(participant) => Some(room.join(participant)),
            None => room
                .participants
                .values_mut()
                .find(|p| p.transports.contains(&transport)),
        };
        if let Some(owner) = owner {
            owner.tracks.push(id);
        }
        Ok(id)
    }

    /// Ends a track and every subscription to it.
    pub fn unpublish_track(&mut self, track: TrackId) -> Result<(), CommandError> {
        let t = self
            .tracks
            .get(track)
            .ok_or(CommandError::UnknownTrack(track))?;
        for subscription in t.subscriptions.clone() {
            self.unsubscribe(subscription)
                .expect("a track lists only live subscriptions");
        }
        let t = self.tracks.remove(track).expect("checked above");
        if let Some(transport) = self.transports.get_mut(t.transport) {
            transport.tracks.retain(|&x| x != track);
            transport
                .routes
                .retain(|_, r| !matches!(r, Route::Track { track: x, .. } | Route::TrackRtx { track: x, .. } if *x == track));
        }
        if let Some(room) = self.rooms.get_mut(t.room) {
            let relayed = room
                .participants
                .values()
                .any(|p| p.tracks.contains(&track) && !p.transports.contains(&t.transport));
            room.forget_track(track, relayed);
        }
        self.events.push_back(Event::TrackClosed {
            track,
            room: t.room,
        });
        Ok(())
    }

    /// Delivers a track to a subscribe transport in the same room, starting with its highest
    /// layer. A video subscription waits for a keyframe, and one is requested from the publisher
    /// (throttled).
    pub fn subscribe(
        &mut self,
        now: Instant,
        transport: TransportId,
        track: TrackId,
        config: SubscriptionConfig,
    ) -> Result<SubscriptionId, CommandError> {
        let t = self
            .transports
            .get(transport)
            .ok_or(CommandError::UnknownTransport(transport))?;
        let tr = self
            .tracks
            .get(track)
            .ok_or(CommandError::UnknownTrack(track))?;
        if t.config.direction != Direction::Subscribe {
            return Err(CommandError::WrongDirection(transport));
        }
        if t.room != tr.room {
            return Err(CommandError::DifferentRoom { track, transport });
        }
        if t.subscriptions
            .iter()
            .any(|s| self.subscriptions.get(*s).is_some_and(|s| s.track == track))
        {
            return Err(CommandError::AlreadySubscribed(track));
        }
        let ssrcs = [Some(config.ssrc), config.rtx.map(|r| r.ssrc)];
        if let Some(ssrc) = ssrcs
            .into_iter()
            .flatten()
            .find(|s| t.routes.contains_key(s))
        {
            return Err(CommandError::SsrcInUse(ssrc));
        }
        if config.rtx.is_some_and(|r| r.ssrc == config.ssrc) {
            return Err(CommandError::SsrcInUse(config.ssrc));
        }
        let wait = tr.config.kind == MediaKind::Video && tr.config.codec.needs_keyframe();
        let top = tr.top_layer();
        let live = tr.live_layers(now, self.config.layer_idle);
        let layer = effective_layer(top, &live[..tr.layers.len()]);
        let clock_rate = tr.config.clock_rate;
        let generation = self.next_generation();
        let id = self.subscriptions.insert_with(generation, |_| {
            Subscription::new(
                track,
                transport,
                config,
                clock_rate,
                layer,
                wait,
                &self.config,
            )
        });
        if let Some(s) = self.subscriptions.get_mut(id) {
            s.layers.wanted = top;
        }
        let t = self.transports.get_mut(transport).expect("checked above");
        t.subscriptions.push(id);
        t.routes.insert(config.ssrc, Route::Subscription(id));
        if let Some(rtx) = config.rtx {
            t.routes.insert(rtx.ssrc, Route::SubscriptionRtx(id));
        }
        let tr = self.tracks.get_mut(track).expect("checked above");
        tr.subscriptions.push(id);
        if wait {
            self.request_keyframe_of(track, layer, now);
        }
        Ok(id)
    }

    /// Chooses the simulcast layer a subscription should receive (0 = lowest). The switch
    /// happens at the next keyframe of that layer, which is requested now; until then the
    /// current layer keeps flowing. While the publisher does not send that layer, the best one
    /// it sends below it (else the lowest above) is forwarded instead, until it comes back.
    pub fn set_preferred_layer(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        layer: u8,
    ) -> Result<(), CommandError> {
        let s = self
            .subscriptions
            .get_mut(subscription)
            .ok_or(CommandError::UnknownSubscription(subscription))?;
        let track = self
            .tracks
            .get(s.track)
            .expect("a subscription's track outlives it");
        if layer > track.top_layer() {
            return Err(CommandError::UnknownLayer {
                track: s.track,
                layer,
            });
        }
        let live = track.live_layers(now, self.config.layer_idle);
        let wished = effective_layer(layer, &live[..track.layers.len()]);
        // Within what the downlink allows (the next allocation revisits it for the new wish).
        let target = s
            .layers
            .bwe_layer
            .map_or(wished, |allowed| allowed.min(wished));
        s.layers.wanted = layer;
        s.layers.target = target;
        if s.layers.needs_keyframe && !s.layers.paused && s.layers.current != Some(target) {
            let track = s.track;
            self.request_keyframe_of(track, target, now);
        }
        Ok(())
    }

    /// Stops (`paused`) or resumes forwarding a subscription: a subscriber that turned a
    /// publisher's video off costs no bandwidth. A resumed video subscription restarts like a
    /// new one, at a keyframe of its target layer (requested now), with its sequence numbers
    /// continuing from the last packet sent. Repeating the current state changes nothing.
    pub fn set_paused(
        &mut self,
        now: Instant,
        subscription: SubscriptionId,
        paused: bool,
    ) -> Result<(), CommandError> {
        let s = self
            .subscriptions
            .get_mut(subscription)
            .ok_or(CommandError::UnknownSubscription(subscription))?;
        if s.layers.paused == paused {
            return Ok(());
        }
        s.layers.paused = paused;
        s.layers.current = None;
        if !paused && s.layers.needs_keyframe {
            let (track, layer) = (s.track, s.layers.target);
            self.request_keyframe_of(track, layer, now);
        }
        Ok(())
    }

    /// Makes `subscription` the first its track forwards each packet to: one feeding another
    /// node (a relay link), whose own subscribers would otherwise wait for this node's whole
    /// fan-out before the packet even leaves (issue 15: ≈ 300 sends, ≈ 2.4 ms).
    pub fn forward_first(&mut self, subscription: SubscriptionId) -> Result<(), CommandError> {
        let track = self
            .subscriptions
            .get(subscription)
            .ok_or(CommandError::UnknownSubscription(subscription))?
            .track;
        if let Some(track) = self.tracks.get_mut(track)
            && let Some(at) = track.subscriptions.iter().position(|&s| s == subscription)
        {
            let id = track.subscriptions.remove(at);
            track.subscriptions.insert(0, id);
        }
        Ok(())
    }

    /// Ends a subscription.
    pub fn unsubscribe(&mut self, subscription: SubscriptionId) -> Result<(), CommandError> {
        let s = self
            .subscriptions
            .remove(subscription)
            .ok_or(CommandError::UnknownSubscription(subscription))?;
        if let Some(track) = self.tracks.get_mut(s.track) {
            track.subscriptions.retain(|&x| x != subscription);
        }
        if let Some(transport) = self.transports.get_mut(s.transport) {
            transport.subscriptions.retain(|&x| x != subscription);
            transport
                .routes
                .retain(|_, r| !matches!(r, Route::Subscription(x) | Route::SubscriptionRtx(x) if *x == subscription));
        }
        self.events.push_back(Event::SubscriptionClosed {
            subscription,
            transport: s.transport,
        });
        Ok(())
    }
}
