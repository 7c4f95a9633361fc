//! Relay links: how a room spans nodes (cascading, DESIGN §7.2). The same idea as [`super::pipe`]
//! across the network: on the publishers' node (the *sending* side) a virtual subscribe
//! transport subscribes to every track of the room and, instead of SRTP toward a client, seals
//! each forwarded packet into a [`mooyaho_net::relay_frame`] datagram toward the other node's worker.
//! There a virtual publish transport feeds it into that room, whose own sfu-core fans it out to
//! the node's subscribers with their own rewriting, retransmission buffers and keyframe gating
//! (and through pipes to the node's other workers). RTCP the receiving core addresses to its
//! "publisher" (NACKs, PLI/FIR, receiver reports) travels back sealed the other way and enters
//! the sending core as if a subscriber sent it: retransmission and the keyframe-request throttle
//! work across the hop as for any subscriber.
//!
//! One link carries one publisher's tracks from one node to another (the control plane's relay
//! plan is per publisher: its tracks travel together), so a track crosses to a node exactly once
//! however many subscribers are there. Relayed tracks can be relayed on (a node fed by the
//! publisher's node feeds others: a tree). The control plane sets a link up (keys for both
//! directions, a link id, the receiver's address) and tears it down. The receiving side learns the sender's
//! address from its first authentic datagram; anything that does not authenticate under the
//! link's key, or repeats a counter, is dropped and counted.
//!
//! Track announcements cross in-band (sealed too): a track added or removed is announced at
//! once, and every second the sender repeats every track and the list of its SSRCs, so a lost
//! announcement heals within a second and the receiver drops tracks the list no longer has.
//!
//! Relay cycles (outside review F1): links that form a loop for one publisher during a re-plan
//! (A→B, B→C, C→A) would re-publish copies of its tracks without end. So a receiving link knows
//! its publisher (`acceptRelay` names it) and takes only that session's tracks, never for a
//! session that already has tracks in the room from anywhere else (a local publish, a pipe, or
//! another receiving link), never more than [`MAX_TRACKS_PER_LINK`]; and each announced track
//! carries its origin (a random id of the node it was published on) and its hop count: a node
//! refuses its own tracks coming back and tracks more than [`MAX_RELAY_HOPS`] hops away. Refused
//! tracks are counted (`relay_tracks_refused`); the repeats heal once the plan settles.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use sfu_core::{
    Direction, OutPacket, RoomId, SubscriptionId, TrackId, TransportConfig, TransportId,
};

use super::MediaError;
use super::negotiate::track_config;
use super::pipe::{mirrored_track, pipe_extensions};
use super::thread::Worker;
use crate::sdp::PublishedTrack;
use mooyaho_net::relay_frame::{
    self, FrameKind, LinkDirection, Opener, PAYLOAD_OFFSET, RelayFrameError, RelayKey, Sealer,
    TAG_LEN,
};
use mooyaho_net::udp::MAX_DATAGRAM;

/// How often the sending side repeats its track announcements.
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// A receiving link that heard nothing authentic for this long (three missed announcement
/// rounds: its sending node died, or closed its end) unpublishes what it carried, so its
/// subscribers are re-offered without dead m-lines (outside review F5); tracks come back with
/// the next authentic announcement.
const LINK_SILENCE: Duration = Duration::from_secs(3);
/// A sending link that heard nothing authentic from its receiving node for this long stops
/// (outside review G5): a live receiver answers every [`ANNOUNCE_INTERVAL`] at least (a
/// keepalive, besides its feedback) once the sender's first datagram told it where to, so
/// this is several missed rounds, not a slow start.
const SENDER_SILENCE: Duration = Duration::from_secs(5);
/// The largest payload a relay datagram carries: the whole datagram fits the receiver's buffer.
const MAX_PAYLOAD: usize = MAX_DATAGRAM - PAYLOAD_OFFSET - TAG_LEN;
/// The most hops a relayed track may have crossed (a relay tree is a few levels deep; a track
/// further away is going round a cycle).
const MAX_RELAY_HOPS: u8 = 8;
/// The most tracks one link may carry (one publisher: a publish holds at most 4 audio and 4
/// video tracks, and a re-publish replaces them).
const MAX_TRACKS_PER_LINK: usize = 16;

/// The keys of one link, seen from one node.
#[derive(Clone, Debug)]
pub struct RelayKeys {
    /// Seals what this node sends.
    pub send: RelayKey,
    /// Opens what this node receives.
    pub receive: RelayKey,
}

/// A track announcement (JSON inside a sealed [`FrameKind::Announce`] frame).
#[derive(Debug, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum Announcement {
    /// A track now crosses the link (repeated every [`ANNOUNCE_INTERVAL`]).
    TrackAdded {
        /// Publishing session.
        session: String,
        /// What it publishes, as the link carries it (one encoding: its SSRC on the link).
        track: Box<PublishedTrack>,
        /// The node it was published on ([`Relays::origin`] there).
        origin: u64,
        /// Links crossed to get here, this one included (1: from the publisher's node).
        hops: u8,
    },
    /// A track ended.
    TrackRemoved {
        /// The track's SSRC on the link.
        ssrc: u32,
    },
    /// Every SSRC the link carries now (repeated every [`ANNOUNCE_INTERVAL`]).
    Tracks {
        /// SSRCs.
        ssrcs: Vec<u32>,
    },
}

/// Where a relayed track comes from: the node it was published on and the links it crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Provenance {
    origin: u64,
    hops: u8,
}

/// A track a sending link carries.
#[derive(Debug)]
struct SentTrack {
    subscription: SubscriptionId,
    /// Its SSRC on the link.
    ssrc: u32,
    /// The announced copy.
    track: PublishedTrack,
    /// As announced (hops counting the link).
    provenance: Provenance,
}

/// Which end of a link this worker holds. Either way the link carries one publisher's tracks.
#[derive(Debug)]
enum Side {
    /// A node with the publisher's tracks: a subscribe transport to them.
    Sending {
        publisher: String,
        tracks: HashMap<TrackId, SentTrack>,
    },
    /// Subscribers' node: a publish transport; SSRC on the link → track here.
    Receiving {
        publisher: String,
        tracks: HashMap<u32, TrackId>,
    },
}

/// One end of a relay link.
#[derive(Debug)]
struct RelayLink {
    room: RoomId,
    transport: TransportId,
    side: Side,
    sealer: Sealer,
    opener: Opener,
    /// Where datagrams go: given (sending side), or learned from the newest authentic datagram
    /// (receiving side; `None` before the first).
    peer: Option<SocketAddr>,
    /// When the last authentic datagram arrived (or the link was made).
    last_heard: Instant,
}

/// A worker's relay links.
#[derive(Debug, Default)]
pub(super) struct Relays {
    /// This node's id as the origin of the tracks published here (random per node process,
    /// the same in all its workers): a track announced with it has come back round a cycle.
    pub(super) origin: u64,
    /// Where each track this worker received over a link comes from (relayed on, it keeps its
    /// origin and counts one more hop).
    provenance: FxHashMap<TrackId, Provenance>,
    /// Link id → link (ids come from the control plane; datagrams name them).
    links: FxHashMap<u64, RelayLink>,
    /// Relay transport → link id.
    by_transport: FxHashMap<TransportId, u64>,
    /// When the sending links repeat their announcements next.
    next_announce: Option<Instant>,
}

/// How many links of each side a worker holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayLinkCounts {
    /// Links sending this node's tracks to another node.
    pub sending: usize,
    /// Links receiving another node's tracks.
    pub receiving: usize,
}

impl Relays {
    /// Whether `transport` is the receiving end of a link (its room mirrors another node's).
    pub(super) fn is_receiving(&self, transport: TransportId) -> bool {
        self.by_transport
            .get(&transport)
            .and_then(|link| self.links.get(link))
            .is_some_and(|l| matches!(l.side, Side::Receiving { .. }))
    }

    /// How many links of each side the worker holds.
    pub(super) fn counts(&self) -> RelayLinkCounts {
        let mut counts = RelayLinkCounts::default();
        for link in self.links.values() {
            match link.side {
                Side::Sending { .. } => counts.sending += 1,
                Side::Receiving { .. } => counts.receiving += 1,
            }
        }
        counts
    }
}

impl Worker {
    /// Receiving side: a publish transport in `room` fed by link `link` with `publisher`'s
    /// tracks. Returns the address the sending node sends to (this worker's first announced UDP
    /// address).
    pub(super) fn accept_relay(
        &mut self,
        now: Instant,
        room: RoomId,
        link: u64,
        publisher: String,
        keys: &RelayKeys,
    ) -> Result<SocketAddr, MediaError> {
        self.known_room(room)?;
        if self.relays.links.contains_key(&link) {
            return Err(MediaError::RelayExists);
        }
        let address = self
            .announced
            .iter()
            .find(|c| c.protocol == crate::sdp::CandidateProtocol::Udp)
            .map(|c| c.address)
            .ok_or(MediaError::WorkerGone)?;
        let transport = self.core.add_transport(
            now,
            room,
            TransportConfig {
                direction: Direction::Publish,
                extensions: pipe_extensions(),
            },
        )?;
        self.add_relay_link(
            now,
            link,
            room,
            transport,
            keys,
            None,
            Side::Receiving {
                publisher,
                tracks: HashMap::new(),
            },
        );
        Ok(address)
    }

    /// Sending side: subscribes a relay transport to every track `publisher` has in `room` (its
    /// own, or relayed here from its node), now and later, and sends them to `peer` over link
    /// `link`.
    pub(super) fn open_relay(
        &mut self,
        now: Instant,
        room: RoomId,
        link: u64,
        publisher: String,
        keys: &RelayKeys,
        peer: SocketAddr,
    ) -> Result<(), MediaError> {
        self.known_room(room)?;
        if self.relays.links.contains_key(&link) {
            return Err(MediaError::RelayExists);
        }
        let published: Vec<_> = self
            .published(room)
            .into_iter()
            .filter(|(session, ..)| *session == publisher)
            .collect();
        let transport = self.core.add_transport(
            now,
            room,
            TransportConfig {
                direction: Direction::Subscribe,
                extensions: pipe_extensions(),
            },
        )?;
        self.add_relay_link(
            now,
            link,
            room,
            transport,
            keys,
            Some(peer),
            Side::Sending {
                publisher,
                tracks: HashMap::new(),
            },
        );
        for (_, track, sdp) in published {
            self.relay_track(now, link, track, sdp)?;
        }
        self.announce_track_list(link);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // the two call sites name every part of a link
    fn add_relay_link(
        &mut self,
        now: Instant,
        link: u64,
        room: RoomId,
        transport: TransportId,
        keys: &RelayKeys,
        peer: Option<SocketAddr>,
        side: Side,
    ) {
        // Media and announcements travel forward (sending → receiving side), feedback back.
        let (sends, receives) = match side {
            Side::Sending { .. } => (LinkDirection::Forward, LinkDirection::Back),
            Side::Receiving { .. } => (LinkDirection::Back, LinkDirection::Forward),
        };
        self.relays.links.insert(
            link,
            RelayLink {
                room,
                transport,
                side,
                sealer: Sealer::new(link, &keys.send, sends),
                opener: Opener::new(link, &keys.receive, receives),
                peer,
                last_heard: now,
            },
        );
        self.relays.by_transport.insert(transport, link);
    }

    /// Tears link `link` of `room` down: its transport goes, and with it what it carried (the
    /// receiving side's subscribers are re-offered without the relayed tracks).
    pub(super) fn close_relay(&mut self, room: RoomId, link: u64) -> Result<(), MediaError> {
        match self.relays.links.get(&link) {
            Some(l) if l.room == room => {}
            _ => return Err(MediaError::UnknownRelay),
        }
        self.forget_relay(link);
        Ok(())
    }

    fn forget_relay(&mut self, link: u64) {
        let Some(relay) = self.relays.links.remove(&link) else {
            return;
        };
        self.relays.by_transport.remove(&relay.transport);
        let _ = self.core.remove_transport(relay.transport);
        if let Side::Receiving { publisher, tracks } = relay.side {
            for track in tracks.into_values() {
                self.relays.provenance.remove(&track);
            }
            self.renegotiate_others(relay.room, &publisher);
        }
    }

    /// Forgets the links of a closed room (its transports go with the room).
    pub(super) fn drop_relays(&mut self, room: RoomId) {
        let links: Vec<u64> = self
            .relays
            .links
            .iter()
            .filter(|(_, l)| l.room == room)
            .map(|(id, _)| *id)
            .collect();
        for link in links {
            if let Some(relay) = self.relays.links.remove(&link) {
                self.relays.by_transport.remove(&relay.transport);
                if let Side::Receiving { tracks, .. } = relay.side {
                    for track in tracks.into_values() {
                        self.relays.provenance.remove(&track);
                    }
                }
            }
        }
    }

    /// Sending side: `session` published tracks in a room (or they were relayed here): send them
    /// through each of its links.
    pub(super) fn relay_new_tracks(
        &mut self,
        now: Instant,
        room: RoomId,
        session: &str,
        tracks: &[(TrackId, PublishedTrack)],
    ) {
        let links: Vec<u64> = self
            .relays
            .links
            .iter()
            .filter(|(_, l)| {
                l.room == room
                    && matches!(&l.side, Side::Sending { publisher, .. } if publisher == session)
            })
            .map(|(id, _)| *id)
            .collect();
        for link in links {
            for (track, sdp) in tracks {
                if let Err(e) = self.relay_track(now, link, *track, sdp.clone()) {
                    tracing::warn!(error = %e, "relaying a new track failed");
                }
            }
        }
    }

    fn relay_track(
        &mut self,
        now: Instant,
        link: u64,
        track: TrackId,
        sdp: PublishedTrack,
    ) -> Result<(), MediaError> {
        let Some(relay) = self.relays.links.get(&link) else {
            return Err(MediaError::UnknownRelay);
        };
        // Published here (or piped from another worker of this node): this node is its
        // origin; relayed here: one more hop from its origin.
        let provenance = match self.relays.provenance.get(&track) {
            Some(p) => Provenance {
                origin: p.origin,
                hops: p.hops.saturating_add(1),
            },
            None => Provenance {
                origin: self.relays.origin,
                hops: 1,
            },
        };
        let (ssrc, config, mirrored) = mirrored_track(sdp);
        let subscription = self.core.subscribe(now, relay.transport, track, config)?;
        // The other node's subscribers wait on this copy: it leaves before the local fan-out.
        self.core.forward_first(subscription)?;
        let Some(RelayLink {
            side: Side::Sending { publisher, tracks },
            ..
        }) = self.relays.links.get_mut(&link)
        else {
            return Ok(());
        };
        let announcement = Announcement::TrackAdded {
            session: publisher.clone(),
            track: Box::new(mirrored.clone()),
            origin: provenance.origin,
            hops: provenance.hops,
        };
        tracks.insert(
            track,
            SentTrack {
                subscription,
                ssrc,
                track: mirrored,
                provenance,
            },
        );
        self.announce(link, &announcement);
        Ok(())
    }

    /// Core event hook (sending side): a relayed track ended; tell the other node.
    pub(super) fn relay_subscription_closed(
        &mut self,
        transport: TransportId,
        subscription: SubscriptionId,
    ) {
        let Some(&link) = self.relays.by_transport.get(&transport) else {
            return;
        };
        let Some(RelayLink {
            side: Side::Sending { tracks, .. },
            ..
        }) = self.relays.links.get_mut(&link)
        else {
            return;
        };
        let Some(track) = tracks
            .iter()
            .find(|(_, sent)| sent.subscription == subscription)
            .map(|(t, _)| *t)
        else {
            return;
        };
        let Some(sent) = tracks.remove(&track) else {
            return;
        };
        self.announce(link, &Announcement::TrackRemoved { ssrc: sent.ssrc });
    }

    /// Housekeeping: every [`ANNOUNCE_INTERVAL`], each sending link repeats its tracks and their
    /// list, so a lost announcement heals, and each receiving link tells its sender it is alive;
    /// a receiving link silent for [`LINK_SILENCE`] unpublishes its tracks, a sending link
    /// unanswered for [`SENDER_SILENCE`] closes.
    pub(super) fn relay_housekeeping(&mut self, now: Instant) {
        if self.relays.links.is_empty() || self.relays.next_announce.is_some_and(|t| now < t) {
            return;
        }
        self.relays.next_announce = Some(now + ANNOUNCE_INTERVAL);
        self.close_unanswered_links(now);
        let receiving: Vec<u64> = (self.relays.links.iter())
            .filter(|(_, l)| matches!(l.side, Side::Receiving { .. }))
            .map(|(id, _)| *id)
            .collect();
        for link in receiving {
            self.seal_to_peer(link, FrameKind::Keepalive, &[]);
        }
        let silent: Vec<(u64, Vec<u32>)> = self
            .relays
            .links
            .iter()
            .filter_map(|(id, l)| match &l.side {
                Side::Receiving { tracks, .. }
                    if !tracks.is_empty() && now.duration_since(l.last_heard) >= LINK_SILENCE =>
                {
                    Some((*id, tracks.keys().copied().collect()))
                }
                _ => None,
            })
            .collect();
        for (link, ssrcs) in silent {
            self.counters.relay_links_silenced += 1;
            tracing::info!(%link, "relay link silent: its tracks are unpublished");
            self.unpublish_relayed(link, &ssrcs);
        }
        let sending: Vec<(u64, Vec<Announcement>)> = self
            .relays
            .links
            .iter()
            .filter_map(|(id, l)| match &l.side {
                Side::Sending { publisher, tracks } => Some((
                    *id,
                    tracks
                        .values()
                        .map(|sent| Announcement::TrackAdded {
                            session: publisher.clone(),
                            track: Box::new(sent.track.clone()),
                            origin: sent.provenance.origin,
                            hops: sent.provenance.hops,
                        })
                        .collect(),
                )),
                Side::Receiving { .. } => None,
            })
            .collect();
        for (link, announcements) in sending {
            for announcement in &announcements {
                self.announce(link, announcement);
            }
            self.announce_track_list(link);
        }
    }

    /// Closes the sending links whose receiving node answered nothing authentic for
    /// [`SENDER_SILENCE`]: it died or its end was closed, and sending on would be wasted
    /// forever (outside review G5). Counted, and told to the control plane, which forgets the
    /// link and plans again.
    fn close_unanswered_links(&mut self, now: Instant) {
        let unanswered: Vec<(u64, RoomId, String)> = (self.relays.links.iter())
            .filter_map(|(id, l)| match &l.side {
                Side::Sending { publisher, .. }
                    if now.duration_since(l.last_heard) >= SENDER_SILENCE =>
                {
                    Some((*id, l.room, publisher.clone()))
                }
                _ => None,
            })
            .collect();
        for (link, room, publisher) in unanswered {
            self.counters.relay_links_abandoned += 1;
            tracing::info!(%link, "relay link unanswered by its receiving node: closed");
            self.forget_relay(link);
            self.emit(super::NodeEvent::RelayClosed {
                worker: self.index,
                room,
                link,
                publisher,
                reason: "the receiving node answered nothing",
            });
        }
    }

    fn announce_track_list(&mut self, link: u64) {
        let Some(RelayLink {
            side: Side::Sending { tracks, .. },
            ..
        }) = self.relays.links.get(&link)
        else {
            return;
        };
        let ssrcs = tracks.values().map(|sent| sent.ssrc).collect();
        self.announce(link, &Announcement::Tracks { ssrcs });
    }

    /// Seals an announcement toward the link's peer (dropped and counted if it cannot fit a
    /// datagram: a room relaying more tracks than one list holds is not pruned by lists).
    fn announce(&mut self, link: u64, announcement: &Announcement) {
        let Ok(json) = serde_json::to_vec(announcement) else {
            return;
        };
        if json.len() > MAX_PAYLOAD {
            self.counters.relay_oversized += 1;
            tracing::warn!(
                bytes = json.len(),
                "relay announcement too large for a datagram"
            );
            return;
        }
        self.seal_to_peer(link, FrameKind::Announce, &json);
    }

    /// Seals `payload` (at most [`MAX_PAYLOAD`] bytes) as a `kind` frame toward the link's
    /// peer, if it has one yet.
    fn seal_to_peer(&mut self, link: u64, kind: FrameKind, payload: &[u8]) {
        let Some(relay) = self.relays.links.get_mut(&link) else {
            return;
        };
        let Some(peer) = relay.peer else {
            return;
        };
        let (sealer, counters) = (&mut relay.sealer, &mut self.counters);
        self.send.push_with(peer, MAX_DATAGRAM, |slot| {
            slot[PAYLOAD_OFFSET..PAYLOAD_OFFSET + payload.len()].copy_from_slice(payload);
            let len = sealer.seal(slot, kind, payload.len()).ok()?;
            counters.relay_packets_out += 1;
            Some(len)
        });
    }

    /// Drain hook: a transmit addressed to a relay transport is sealed toward the other node.
    /// Returns false if `to` is not a relay transport.
    pub(super) fn relay_transmit(&mut self, to: TransportId, packet: &OutPacket) -> bool {
        let Some(link) = self.relays.by_transport.get(&to) else {
            return false;
        };
        let Some(relay) = self.relays.links.get_mut(link) else {
            return true;
        };
        let rtcp = matches!(packet, OutPacket::Rtcp(_));
        // Only feedback flows back from the receiving side.
        if matches!(relay.side, Side::Receiving { .. }) && !rtcp {
            return true;
        }
        let Some(peer) = relay.peer else {
            return true; // nothing authentic arrived yet: no feedback is due either
        };
        let kind = if rtcp {
            FrameKind::Rtcp
        } else {
            FrameKind::Rtp
        };
        let (sealer, counters) = (&mut relay.sealer, &mut self.counters);
        self.send.push_with(peer, MAX_DATAGRAM, |slot| {
            let Ok(len) = packet.write(&mut slot[PAYLOAD_OFFSET..PAYLOAD_OFFSET + MAX_PAYLOAD])
            else {
                counters.relay_oversized += 1;
                return None;
            };
            let len = sealer.seal(slot, kind, len).ok()?;
            counters.relay_packets_out += 1;
            Some(len)
        });
        true
    }

    /// A datagram whose first byte marks it a relay datagram: authenticated against its link,
    /// then into the link's transport (media, feedback) or its track table (announcements).
    pub(super) fn handle_relay_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) {
        let Some((link, relay)) = relay_frame::link_of(datagram)
            .and_then(|id| Some(id).zip(self.relays.links.get_mut(&id)))
        else {
            self.counters.relay_unknown_link += 1;
            return;
        };
        let (kind, payload) = match relay.opener.open(datagram) {
            Ok(opened) => opened,
            Err(RelayFrameError::Replay) => {
                self.counters.relay_replays += 1;
                return;
            }
            Err(_) => {
                self.counters.relay_auth_failures += 1;
                return;
            }
        };
        self.counters.relay_packets_in += 1;
        relay.last_heard = now;
        let transport = relay.transport;
        let receiving = matches!(relay.side, Side::Receiving { .. });
        if receiving {
            // Authentic: feedback goes where the sender is now.
            relay.peer = Some(from);
        }
        match (kind, receiving) {
            (FrameKind::Rtp, true) => {
                let packet = self.pooled(payload);
                self.core.handle_rtp(now, transport, packet);
            }
            (FrameKind::Rtcp, _) => {
                let packet = self.pooled(payload);
                self.core.handle_rtcp(now, transport, packet);
            }
            // The receiving node is alive: `last_heard` above is all a keepalive does.
            (FrameKind::Keepalive, false) => {}
            (FrameKind::Announce, true) => match serde_json::from_slice(payload) {
                Ok(announcement) => self.apply_announcement(now, link, announcement),
                Err(e) => {
                    self.counters.relay_auth_failures += 1;
                    tracing::warn!(error = %e, "malformed relay announcement");
                }
            },
            // Media or announcements toward the sending side: not part of the protocol.
            _ => self.counters.relay_auth_failures += 1,
        }
    }

    /// Receiving side: applies a track announcement.
    fn apply_announcement(&mut self, now: Instant, link: u64, announcement: Announcement) {
        let Some(relay) = self.relays.links.get(&link) else {
            return;
        };
        let (room, transport) = (relay.room, relay.transport);
        let Side::Receiving { publisher, tracks } = &relay.side else {
            return;
        };
        match announcement {
            Announcement::TrackAdded {
                session,
                track,
                origin,
                hops,
            } => {
                if let Err(why) = check_relayed_track(&session, &track) {
                    // Authentic (the link key) but not what a node sends: a bug or version
                    // skew on the sender, never worth a worker (outside review F3).
                    self.counters.relay_auth_failures += 1;
                    tracing::warn!(%link, why, "relayed track refused");
                    return;
                }
                let Some(ssrc) = track.top_ssrc() else {
                    return;
                };
                if tracks.contains_key(&ssrc) {
                    return; // a repeat
                }
                let arrival = Arrival {
                    session: &session,
                    provenance: Provenance { origin, hops },
                    link_tracks: tracks.len(),
                };
                if let Err(why) = self.admit_relayed(room, transport, publisher, &arrival) {
                    self.counters.relay_tracks_refused += 1;
                    tracing::debug!(%link, why, "relayed track refused");
                    return;
                }
                match self.core.publish_relayed_track(
                    now,
                    transport,
                    &session,
                    track_config(&track),
                ) {
                    Ok(id) => {
                        if let Some(RelayLink {
                            side: Side::Receiving { tracks, .. },
                            ..
                        }) = self.relays.links.get_mut(&link)
                        {
                            tracks.insert(ssrc, id);
                        }
                        self.relays.provenance.insert(id, arrival.provenance);
                        let track = *track;
                        self.track_sdp.insert(id, track.clone());
                        let added = [(id, track)];
                        self.pipe_new_tracks(now, room, &session, &added);
                        self.relay_new_tracks(now, room, &session, &added);
                        self.renegotiate_others(room, &session);
                    }
                    Err(e) => tracing::warn!(error = %e, "relayed track refused"),
                }
            }
            Announcement::TrackRemoved { ssrc } => self.unpublish_relayed(link, &[ssrc]),
            Announcement::Tracks { ssrcs } => {
                let gone: Vec<u32> = tracks
                    .keys()
                    .filter(|s| !ssrcs.contains(s))
                    .copied()
                    .collect();
                self.unpublish_relayed(link, &gone);
            }
        }
    }

    /// Whether a new track announced on the receiving link `transport` of `room`, which carries
    /// `publisher`'s tracks, may be published here (outside review F1: a relay cycle must not
    /// re-publish copies without end).
    fn admit_relayed(
        &self,
        room: RoomId,
        transport: TransportId,
        publisher: &str,
        arrival: &Arrival<'_>,
    ) -> Result<(), &'static str> {
        arrival.check(publisher, self.relays.origin)?;
        let on_link = self.core.transport_tracks(transport);
        if self
            .core
            .participant_tracks(room, publisher)
            .iter()
            .any(|t| !on_link.contains(t))
        {
            return Err("the publisher has tracks here already (local, piped or another link)");
        }
        Ok(())
    }

    fn unpublish_relayed(&mut self, link: u64, ssrcs: &[u32]) {
        let Some(RelayLink {
            room,
            side: Side::Receiving { publisher, tracks },
            ..
        }) = self.relays.links.get_mut(&link)
        else {
            return;
        };
        let (room, publisher) = (*room, publisher.clone());
        let removed: Vec<TrackId> = ssrcs.iter().filter_map(|s| tracks.remove(s)).collect();
        if removed.is_empty() {
            return;
        }
        for track in removed {
            self.relays.provenance.remove(&track);
            let _ = self.core.unpublish_track(track);
        }
        self.renegotiate_others(room, &publisher);
    }
}

/// A track announced on a receiving link, as [`Worker::admit_relayed`] judges it.
struct Arrival<'a> {
    session: &'a str,
    provenance: Provenance,
    /// Tracks the link carries already.
    link_tracks: usize,
}

impl Arrival<'_> {
    /// What can be judged from the announcement alone, on a link carrying `publisher`'s tracks
    /// to the node whose origin id is `own_origin`.
    fn check(&self, publisher: &str, own_origin: u64) -> Result<(), &'static str> {
        if self.session != publisher {
            return Err("a track of another session than the link's publisher");
        }
        if self.provenance.origin == own_origin {
            return Err("a track published on this node came back (a relay cycle)");
        }
        if self.provenance.hops == 0 || self.provenance.hops > MAX_RELAY_HOPS {
            return Err("a track from too many hops away");
        }
        if self.link_tracks >= MAX_TRACKS_PER_LINK {
            return Err("too many tracks on one link");
        }
        Ok(())
    }
}

/// Longest id or SDP token a relayed track may carry (mid, msid parts, session, codec name,
/// rid); the SDP layer's own limits are tighter.
const MAX_RELAYED_TOKEN: usize = 64;
/// Longest `a=fmtp` value a relayed track may carry.
const MAX_RELAYED_FMTP: usize = 512;

/// What a relayed track announcement must satisfy before it reaches sfu-core and subscriber
/// offers: what the SDP layer guarantees for a local publish (one to three encodings, each
/// with an SSRC here), and SDP-safe strings of bounded length.
fn check_relayed_track(session: &str, track: &PublishedTrack) -> Result<(), &'static str> {
    let token = |text: &str| {
        !text.is_empty()
            && text.len() <= MAX_RELAYED_TOKEN
            && text
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b':' | b'/'))
    };
    if !(1..=3).contains(&track.encodings.len()) {
        return Err("not one to three encodings");
    }
    if track
        .encodings
        .iter()
        .any(|e| e.ssrc.is_none() || e.rid.as_deref().is_some_and(|rid| !token(rid)))
    {
        return Err("an encoding without an SSRC or with a bad rid");
    }
    if !token(session) || !token(&track.mid) || !token(&track.codec.name) {
        return Err("a bad session, mid or codec name");
    }
    if let Some((stream, id)) = &track.msid
        && !(token(stream) && token(id))
    {
        return Err("a bad msid");
    }
    let fmtp_ok = track.codec.fmtp.as_deref().is_none_or(|fmtp| {
        fmtp.len() <= MAX_RELAYED_FMTP && fmtp.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    });
    let fb_ok = track.codec.rtcp_fb.len() <= 8
        && track.codec.rtcp_fb.iter().all(|fb| {
            fb.len() <= MAX_RELAYED_TOKEN && fb.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        });
    if !fmtp_ok || !fb_ok {
        return Err("a bad fmtp or rtcp-fb");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::{Codec, Kind, PublishedEncoding};

    fn track() -> PublishedTrack {
        PublishedTrack {
            mid: "1".to_owned(),
            kind: Kind::Video,
            codec: Codec {
                name: "VP8".to_owned(),
                pt: 96,
                clock_rate: 90_000,
                channels: None,
                fmtp: Some("max-fs=12288;max-fr=60".to_owned()),
                rtcp_fb: vec!["nack".to_owned(), "nack pli".to_owned()],
                rtx_pt: Some(97),
            },
            encodings: vec![PublishedEncoding {
                rid: None,
                ssrc: Some(1),
                rtx_ssrc: Some(2),
            }],
            msid: Some(("-".to_owned(), "{6f0a-cam}".to_owned())),
        }
    }

    /// Outside review F1: what a receiving link takes from an announcement alone.
    #[test]
    fn a_link_takes_only_its_publisher_s_tracks_from_elsewhere_within_the_hop_and_track_bounds() {
        let arrival = |session, origin, hops, link_tracks| Arrival {
            session,
            provenance: Provenance { origin, hops },
            link_tracks,
        };
        let own = 42;
        assert_eq!(arrival("p", 7, 1, 0).check("p", own), Ok(()));
        assert_eq!(
            arrival("p", 7, MAX_RELAY_HOPS, MAX_TRACKS_PER_LINK - 1).check("p", own),
            Ok(())
        );
        assert!(
            arrival("q", 7, 1, 0).check("p", own).is_err(),
            "another session"
        );
        assert!(
            arrival("p", own, 3, 0).check("p", own).is_err(),
            "came back"
        );
        assert!(
            arrival("p", 7, MAX_RELAY_HOPS + 1, 0)
                .check("p", own)
                .is_err()
        );
        assert!(arrival("p", 7, 0, 0).check("p", own).is_err());
        assert!(
            arrival("p", 7, 1, MAX_TRACKS_PER_LINK)
                .check("p", own)
                .is_err()
        );
    }

    /// Announcements carry where a track comes from (wire names the sender and receiver share).
    #[test]
    fn track_announcements_carry_origin_and_hops() {
        let added = Announcement::TrackAdded {
            session: "p".to_owned(),
            track: Box::new(track()),
            origin: 9,
            hops: 2,
        };
        let json = serde_json::to_value(&added).unwrap();
        assert_eq!(
            (json["origin"].as_u64(), json["hops"].as_u64()),
            (Some(9), Some(2))
        );
        let mut without = json.clone();
        without.as_object_mut().unwrap().remove("hops");
        assert!(
            serde_json::from_value::<Announcement>(without).is_err(),
            "hops is required"
        );
    }

    /// Outside review F3: a relayed announcement with four encodings reached an `expect` in
    /// the worker; what a node would never send is refused before sfu-core or an SDP sees it.
    #[test]
    fn relayed_tracks_are_checked_like_a_local_publish() {
        assert_eq!(check_relayed_track("session-1", &track()), Ok(()));
        let mut four = track();
        four.encodings = (1..=4)
            .map(|ssrc| PublishedEncoding {
                rid: None,
                ssrc: Some(ssrc),
                rtx_ssrc: None,
            })
            .collect();
        assert!(check_relayed_track("session-1", &four).is_err());
        let mut none = track();
        none.encodings.clear();
        assert!(check_relayed_track("session-1", &none).is_err());
        let mut injected = track();
        injected.msid = Some(("-".to_owned(), "cam\r\na=ssrc:1 cname:x".to_owned()));
        assert!(check_relayed_track("session-1", &injected).is_err());
        let mut long = track();
        long.mid = "m".repeat(MAX_RELAYED_TOKEN + 1);
        assert!(check_relayed_track("session-1", &long).is_err());
        assert!(check_relayed_track("a:b", &track()).is_err());
        let mut fmtp = track();
        fmtp.codec.fmtp = Some("x=1\r\na=bad".to_owned());
        assert!(check_relayed_track("session-1", &fmtp).is_err());
    }
}
