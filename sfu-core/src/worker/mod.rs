//! The [`Worker`]: one core's share of the SFU.

mod bwe;
mod command;
mod participants;
mod rtcp;
mod rtp;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Instant;

pub use command::{Command, Response};

use crate::allocation::{Allotted, VideoDemand};
use crate::arena::Arena;
use crate::config::Config;
use crate::dynacast::{LayerSet, consumed_by};
use crate::output::{Event, Transmit};
use crate::room::Room;
use crate::speakers::{self, ActiveSpeaker};
use crate::stats::{Counters, Stats};
use crate::subscription::{Subscription, SubscriptionStats, effective_layer};
use crate::track::MediaKind;
use crate::track::Track;
use crate::transport::Transport;
use crate::{RoomId, SeqNo, SubscriptionId, TrackId, TransportId};
use rtcp::request_keyframe;

/// One core's share of the SFU: owns rooms, transports, tracks and subscriptions, and turns
/// received packets and commands into transmits and events. Performs no I/O and reads no
/// clock; see the [crate docs](crate) for the drain contract.
#[derive(Debug)]
pub struct Worker {
    config: Config,
    /// Bumped on every insert so ids of removed entities never match a slot's new occupant.
    generation: u32,
    rooms: Arena<RoomId, Room>,
    transports: Arena<TransportId, Transport>,
    tracks: Arena<TrackId, Track>,
    subscriptions: Arena<SubscriptionId, Subscription>,
    /// Reused between inputs: after warm-up, queuing a transmit does not allocate.
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
    next_tick: Option<Instant>,
    /// Reused list of sequence numbers for NACK building.
    scratch_seqs: Vec<SeqNo>,
    /// When retransmit buffers next release packets past their maximum age.
    next_buffer_sweep: Option<Instant>,
    /// When rooms' speakers are next ranked (the current speaker interval's end).
    next_speaker_ranking: Option<Instant>,
    /// When subscriptions of simulcast tracks are checked against the layers flowing next.
    next_layer_check: Option<Instant>,
    /// Reused between rankings.
    scratch_speakers: Vec<ActiveSpeaker>,
    /// Reused between bandwidth allocations: one subscriber transport's video subscriptions,
    /// their options and what each got.
    scratch_subscriptions: Vec<SubscriptionId>,
    scratch_demands: Vec<VideoDemand>,
    scratch_allotted: Vec<Allotted>,
    /// The same options with stopped layers at their last rates, and what each would get
    /// (dynacast's view).
    scratch_potential: Vec<VideoDemand>,
    scratch_potential_allotted: Vec<Allotted>,
    /// Reused between ticks: transports whose probe cluster wants bytes now.
    scratch_probes: Vec<(TransportId, usize)>,
    /// Reused between ticks: publisher transports whose REMB is due, and its bitrate.
    scratch_rembs: Vec<(TransportId, Option<crate::Bitrate>)>,
}

/// Receive-side statistics of one track.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackStats {
    /// Packets accepted (duplicates and probation excluded).
    pub packets_received: u64,
    /// Payload octets accepted.
    pub octets_received: u64,
    /// Packets currently missing and being NACKed.
    pub missing: usize,
    /// Packets held for answering NACKs (bounded by count and age).
    pub buffered: usize,
    /// Live subscriptions.
    pub subscriptions: usize,
}

impl Worker {
    /// An empty worker.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            generation: 0,
            rooms: Arena::new(),
            transports: Arena::new(),
            tracks: Arena::new(),
            subscriptions: Arena::new(),
            outbox: VecDeque::with_capacity(1024),
            events: VecDeque::new(),
            counters: Counters::default(),
            next_tick: None,
            scratch_seqs: Vec::new(),
            next_buffer_sweep: None,
            next_speaker_ranking: None,
            next_layer_check: None,
            scratch_speakers: Vec::new(),
            scratch_subscriptions: Vec::new(),
            scratch_demands: Vec::new(),
            scratch_allotted: Vec::new(),
            scratch_potential: Vec::new(),
            scratch_potential_allotted: Vec::new(),
            scratch_probes: Vec::new(),
            scratch_rembs: Vec::new(),
        }
    }

    /// The configuration the worker runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs the periodic work (NACK retries, throttled keyframe requests, receiver reports,
    /// REMB, transport-wide CC feedback) if its deadline has passed. Calling it early is
    /// harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.arm(now);
        if self.next_tick.is_some_and(|t| now >= t) {
            self.tick(now);
            self.send_probes(now);
            self.next_tick = Some(now + self.config.tick);
            if self.next_layer_check.is_none_or(|at| now >= at) {
                self.allocate_bandwidth(now);
                self.reselect_layers(now);
                self.announce_subscribed_layers(now);
                self.next_layer_check = Some(now + self.config.layer_check_interval);
            }
            match self.next_speaker_ranking {
                Some(at) if now >= at => {
                    self.rank_speakers();
                    self.next_speaker_ranking = Some(now + self.config.speaker_interval);
                }
                Some(_) => {}
                None => self.next_speaker_ranking = Some(now + self.config.speaker_interval),
            }
        }
    }

    /// Points every subscription of a simulcast track at the layer its downlink estimate allows
    /// or, before an estimate decides, the best flowing layer within its wish (a publisher
    /// stopped or resumed a layer); a changed target asks for a keyframe of it.
    fn reselect_layers(&mut self, now: Instant) {
        let Self {
            config,
            tracks,
            subscriptions,
            outbox,
            counters,
            ..
        } = self;
        for (_, track) in tracks.iter_mut() {
            if track.layers.len() < 2 {
                continue;
            }
            let live = track.live_layers(now, config.layer_idle);
            let live = &live[..track.layers.len()];
            let mut wanted_keyframes = [false; 3];
            for &id in &track.subscriptions {
                let s = subscriptions
                    .get_mut(id)
                    .expect("a track lists only live subscriptions");
                let l = &mut s.layers;
                let target = l
                    .bwe_layer
                    .unwrap_or_else(|| effective_layer(l.wanted, live));
                if l.paused || l.starved || target == l.target {
                    continue;
                }
                l.target = target;
                if l.needs_keyframe && l.current != Some(target) {
                    wanted_keyframes[usize::from(target)] = true;
                }
            }
            for (layer, wanted) in wanted_keyframes.into_iter().enumerate() {
                if wanted {
                    request_keyframe(track, layer as u8, now, config, outbox, counters);
                }
            }
        }
    }

    /// Dynacast: works out which layers of each simulcast track its subscriptions consume
    /// (always the lowest) and announces a changed set, debounced per track.
    fn announce_subscribed_layers(&mut self, now: Instant) {
        let Self {
            config,
            tracks,
            subscriptions,
            events,
            ..
        } = self;
        for (id, track) in tracks.iter_mut() {
            if track.layers.len() < 2 {
                continue;
            }
            let consumed = track
                .subscriptions
                .iter()
                .map(|&s| {
                    let s = subscriptions
                        .get(s)
                        .expect("a track lists only live subscriptions");
                    consumed_by(&s.layers, s.layers.demand)
                })
                .fold(LayerSet::lowest(1), LayerSet::union);
            if let Some(layers) = track
                .dynacast
                .update(now, consumed, config.dynacast_interval)
            {
                events.push_back(Event::SubscribedLayersChanged {
                    track: id,
                    room: track.room,
                    layers,
                });
            }
        }
    }

    /// The layers of `track` its publisher was last told anyone consumes (every layer until a
    /// first [`Event::SubscribedLayersChanged`]); `None` for an unknown track.
    pub fn subscribed_layers(&self, track: TrackId) -> Option<LayerSet> {
        Some(self.tracks.get(track)?.dynacast.announced())
    }

    /// The latest speaker ranking of a room, loudest first (empty while nobody speaks).
    pub fn active_speakers(&self, room: RoomId) -> Option<&[ActiveSpeaker]> {
        Some(&self.rooms.get(room)?.speakers)
    }

    /// Ends the speaker interval: every audio track's levels become a smoothed loudness, each
    /// room's tracks are ranked by it, and a room whose ranking changed is announced.
    fn rank_speakers(&mut self) {
        let Self {
            config,
            rooms,
            tracks,
            events,
            scratch_speakers,
            ..
        } = self;
        for (room_id, room) in rooms.iter_mut() {
            scratch_speakers.clear();
            for &id in &room.tracks {
                let track = tracks.get_mut(id).expect("a room lists only live tracks");
                if track.config.kind != MediaKind::Audio {
                    continue;
                }
                let level = track.speech.conclude(config.speech);
                if level > 0 {
                    scratch_speakers.push(ActiveSpeaker { track: id, level });
                }
            }
            speakers::rank(scratch_speakers, config.max_active_speakers);
            let changed = !speakers::same_order(scratch_speakers, &room.speakers);
            std::mem::swap(scratch_speakers, &mut room.speakers);
            if changed {
                events.push_back(Event::ActiveSpeakersChanged { room: room_id });
            }
        }
    }

    /// The next datagram to send. Drain until `None` after every `handle_*` call.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// The next event for the control plane. Drain after the transmits.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next; `None` while the
    /// worker has no transports (nothing periodic to do).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.transports.len() == 0 {
            None
        } else {
            self.next_tick
        }
    }

    /// Entity counts and counters.
    pub fn stats(&self) -> Stats {
        Stats {
            rooms: self.rooms.len(),
            participants: self.rooms.iter().map(|(_, r)| r.present()).sum(),
            transports: self.transports.len(),
            tracks: self.tracks.len(),
            subscriptions: self.subscriptions.len(),
            counters: self.counters,
        }
    }

    /// Statistics of one track.
    pub fn track_stats(&self, track: TrackId) -> Option<TrackStats> {
        let t = self.tracks.get(track)?;
        Some(TrackStats {
            packets_received: t.packets_received,
            octets_received: t.octets_received,
            missing: t.layers.iter().map(|l| l.nack.missing()).sum(),
            buffered: t.layers.iter().map(|l| l.buffer.len()).sum(),
            subscriptions: t.subscriptions.len(),
        })
    }

    /// Statistics of one subscription.
    pub fn subscription_stats(&self, subscription: SubscriptionId) -> Option<SubscriptionStats> {
        let s = self.subscriptions.get(subscription)?;
        Some(SubscriptionStats {
            active: s.layers.current.is_some(),
            current_layer: s.layers.current,
            target_layer: s.layers.target,
            wanted_layer: s.layers.wanted,
            paused: s.layers.paused,
            bandwidth_layer: s.layers.bwe_layer,
            starved: s.layers.starved,
            ..s.stats
        })
    }

    /// The direction of a live transport; `None` once it is removed (a transmit still queued for
    /// a removed transport is simply dropped by the media layer).
    pub fn transport_direction(&self, transport: TransportId) -> Option<crate::Direction> {
        Some(self.transports.get(transport)?.config.direction)
    }

    /// The latest REMB estimate a subscriber transport reported.
    pub fn remb_estimate(&self, transport: TransportId) -> Option<crate::Bitrate> {
        self.transports.get(transport)?.remb
    }

    /// Panics if the arenas disagree about who owns whom. For tests and the fuzzer: every
    /// command sequence must leave these links intact.
    pub fn check_invariants(&self) {
        let mut transports = 0;
        let mut tracks = 0;
        for (room_id, room) in self.rooms.iter() {
            for &t in &room.transports {
                let transport = self.transports.get(t).expect("room lists a dead transport");
                assert_eq!(transport.room, room_id, "transport in two rooms");
                transports += 1;
            }
            for &t in &room.tracks {
                assert_eq!(
                    self.tracks.get(t).expect("room lists a dead track").room,
                    room_id
                );
                tracks += 1;
            }
            let mut owned = std::collections::HashSet::new();
            for participant in room.participants.values() {
                for &t in &participant.transports {
                    assert!(
                        room.transports.contains(&t),
                        "participant owns a foreign transport"
                    );
                    assert!(owned.insert(t), "transport owned by two participants");
                }
                for &t in &participant.tracks {
                    assert!(
                        room.tracks.contains(&t),
                        "participant lists a foreign track"
                    );
                }
            }
        }
        assert_eq!(
            transports,
            self.transports.len(),
            "transport outside any room"
        );
        assert_eq!(tracks, self.tracks.len(), "track outside any room");
        let mut subscriptions = 0;
        for (track_id, track) in self.tracks.iter() {
            let transport = self
                .transports
                .get(track.transport)
                .expect("track on a dead transport");
            assert!(transport.tracks.contains(&track_id));
            for &s in &track.subscriptions {
                let sub = self
                    .subscriptions
                    .get(s)
                    .expect("track lists a dead subscription");
                assert_eq!(sub.track, track_id);
                let t = self
                    .transports
                    .get(sub.transport)
                    .expect("subscription on a dead transport");
                assert!(t.subscriptions.contains(&s));
                assert_eq!(t.room, track.room, "subscription across rooms");
                subscriptions += 1;
            }
        }
        assert_eq!(
            subscriptions,
            self.subscriptions.len(),
            "subscription not listed by its track"
        );
    }

    /// The first input after an idle period starts the timer.
    fn arm(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.config.tick);
        }
    }

    fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }
}
