//! The worker's command side: publish and subscribe negotiation per session, and keeping each
//! subscriber's track list (and so its SDP) in step with what the room publishes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use sfu_core::rtp::{Codec, ExtensionKind, ExtensionMap};
use sfu_core::{
    ClockRate, Direction, Encodings, Event, MediaKind, Mid, Pt, RoomId, Rtx, Ssrc,
    SubscriptionConfig, SubscriptionId, TrackConfig, TrackId, TransportConfig, TransportId,
};

use super::link::Link;
use super::thread::Worker;
use super::{MediaError, NodeEvent};
use crate::connection::Connection;
use crate::connection::dtls::{DtlsRole, DtlsTransport};
use crate::sdp::{
    self, ForwardedTrack, Kind, LocalDescription, PublishLimits, PublishedTrack,
    SUBSCRIBE_EXTENSIONS,
};

/// What a publisher may ask of the node: the shape of one offer, and how often it may publish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishPolicy {
    /// m-lines and tracks per offer.
    pub limits: PublishLimits,
    /// Publishes per session and room.
    pub rate: PublishRate,
}

/// A token bucket over publishes of one session in one room: `burst` at once, then one per
/// `interval`. Every publish builds a transport, a DTLS handshake and tracks, and re-offers every
/// subscriber in the room, so one participant publishing in a loop would make everyone
/// renegotiate without end. `interval` zero means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishRate {
    /// Publishes allowed back to back.
    pub burst: u32,
    /// Time that earns one more publish.
    pub interval: Duration,
}

impl Default for PublishRate {
    /// 5 at once, then one every 2 s: a client that (re)publishes on every device change is
    /// never slowed down; one that publishes in a loop makes its room renegotiate at most every
    /// 2 s.
    fn default() -> Self {
        Self {
            burst: 5,
            interval: Duration::from_secs(2),
        }
    }
}

/// Offers kept to match late answers against: the client answers offers in order, so an answer
/// lags the newest offer by the few re-offers made while it was on its way.
const OFFER_HISTORY: usize = 8;

/// How long a subscriber's offer may stay unanswered before changes are offered anyway. Until
/// then a change waits for the answer: a subscriber renegotiates at most once per round trip
/// however fast publishers churn, and an ended track's m-line is recycled only after the client
/// answered its rejection, so its SDP cannot outgrow the live tracks by more than one round of
/// changes.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The media side of a room: per session, its publish and subscribe transports.
#[derive(Debug, Default)]
pub(crate) struct RoomMedia {
    sessions: BTreeMap<String, SessionMedia>,
    /// Per session, when its publish budget is full again (GCRA's theoretical arrival time).
    /// Kept apart from `sessions` so leaving and re-entering does not refill it; entries whose
    /// budget is full are dropped, so the map holds only sessions that published lately.
    publish_budget: HashMap<String, Instant>,
}

#[derive(Debug, Default)]
struct SessionMedia {
    publish: Option<Publishing>,
    subscribe: Option<Subscribing>,
}

#[derive(Debug)]
struct Publishing {
    transport: TransportId,
    tracks: Vec<(TrackId, PublishedTrack)>,
}

#[derive(Debug)]
struct Subscribing {
    transport: TransportId,
    /// SDP session version, bumped on every offer.
    version: u64,
    /// The m-lines in order: live tracks, and ended ones until a new track of their kind
    /// recycles the position (mids are never reused).
    forwarded: Vec<Forwarded>,
    next_mid: u32,
    /// The latest offers' m-lines, newest last, to tell which one an answer answers.
    offers: VecDeque<Vec<ForwardedTrack>>,
    /// When the newest offer was made, while it is unanswered.
    awaiting_answer: Option<Instant>,
    /// Tracks came or went while an offer was unanswered: re-offer once it is answered.
    changed: bool,
}

#[derive(Debug)]
struct Forwarded {
    track: TrackId,
    sdp: ForwardedTrack,
    /// Whether the client's latest answer accepted this m-line.
    accepted: bool,
    subscription: Option<SubscriptionId>,
    /// The track ended and the client answered an offer that rejected its m-line: the position
    /// may carry a new track of the same kind (RFC 8829 §5.2.2). Never set on the first m-line,
    /// which [`sdp::subscribe_offer`] keeps bundled.
    recyclable: bool,
}

impl RoomMedia {
    /// Every transport in the room.
    pub(crate) fn transports(&self) -> Vec<TransportId> {
        self.sessions
            .values()
            .flat_map(|s| {
                let publish = s.publish.as_ref().map(|p| p.transport);
                let subscribe = s.subscribe.as_ref().map(|p| p.transport);
                publish.into_iter().chain(subscribe)
            })
            .collect()
    }

    /// Every published track with its session, in a stable order.
    pub(crate) fn published(&self) -> Vec<(String, TrackId, PublishedTrack)> {
        self.sessions
            .iter()
            .filter_map(|(id, s)| s.publish.as_ref().map(|p| (id, p)))
            .flat_map(|(id, p)| {
                p.tracks
                    .iter()
                    .map(move |(t, sdp)| (id.clone(), *t, sdp.clone()))
            })
            .collect()
    }

    /// Remote side of a pipe: a home session's track now published here.
    pub(crate) fn add_piped_track(
        &mut self,
        session: &str,
        transport: TransportId,
        track: TrackId,
        sdp: PublishedTrack,
    ) {
        let entry = self.sessions.entry(session.to_owned()).or_default();
        entry
            .publish
            .get_or_insert_with(|| Publishing {
                transport,
                tracks: Vec::new(),
            })
            .tracks
            .push((track, sdp));
    }

    /// Remote side of a pipe: a home session's track ended; returns the local track.
    pub(crate) fn remove_piped_track(&mut self, session: &str, ssrc: u32) -> Option<TrackId> {
        let media = self.sessions.get_mut(session)?;
        let publishing = media.publish.as_mut()?;
        let index = publishing.tracks.iter().position(|(_, t)| t.ssrc == ssrc)?;
        let (track, _) = publishing.tracks.remove(index);
        if publishing.tracks.is_empty() {
            media.publish = None;
        }
        if media.publish.is_none() && media.subscribe.is_none() {
            self.sessions.remove(session);
        }
        Some(track)
    }

    /// Takes one publish from `session`'s budget, or says how long until one is available.
    fn take_publish(
        &mut self,
        session: &str,
        now: Instant,
        rate: PublishRate,
    ) -> Result<(), Duration> {
        if rate.interval.is_zero() {
            return Ok(());
        }
        self.publish_budget.retain(|_, full_at| *full_at > now);
        let full_at = self.publish_budget.get(session).copied().unwrap_or(now);
        let after = full_at.max(now) + rate.interval;
        // Allowed while the bucket holds a token: `after` is at most `burst` intervals ahead.
        let capacity = rate.interval.saturating_mul(rate.burst.max(1));
        if after.saturating_duration_since(now) > capacity {
            return Err(after.saturating_duration_since(now) - capacity);
        }
        self.publish_budget.insert(session.to_owned(), after);
        Ok(())
    }

    /// Sessions with any transport here.
    pub(crate) fn sessions(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.publish.is_some() || s.subscribe.is_some())
            .count()
    }

    /// Forgets a transport the worker already removed; true when it published tracks.
    pub(crate) fn forget_transport(&mut self, session: &str, direction: Direction) -> bool {
        let Some(media) = self.sessions.get_mut(session) else {
            return false;
        };
        match direction {
            Direction::Publish => media.publish.take().is_some_and(|p| !p.tracks.is_empty()),
            Direction::Subscribe => {
                media.subscribe = None;
                false
            }
        }
    }

    /// Published tracks of everyone but `session`, in a stable order.
    fn tracks_for(&self, session: &str) -> Vec<(String, TrackId, PublishedTrack)> {
        let mut tracks = self.published();
        tracks.retain(|(publisher, _, _)| publisher != session);
        tracks
    }

    /// `session`'s subscribe side.
    fn subscribing_mut(&mut self, session: &str) -> Option<&mut Subscribing> {
        self.sessions.get_mut(session)?.subscribe.as_mut()
    }

    /// Sessions that subscribe (or could): everyone but `publisher`.
    fn others(&self, publisher: &str) -> Vec<String> {
        self.sessions
            .keys()
            .filter(|id| id.as_str() != publisher)
            .cloned()
            .collect()
    }
}

impl Worker {
    /// `session`'s subscribe side in `room`.
    fn subscribing_mut(&mut self, room: RoomId, session: &str) -> Option<&mut Subscribing> {
        self.rooms.get_mut(&room)?.subscribing_mut(session)
    }

    pub(super) fn create_room(&mut self) -> Result<RoomId, MediaError> {
        let room = self.core.create_room()?;
        self.rooms.insert(room, RoomMedia::default());
        Ok(room)
    }

    fn local_description(&self, ice: &sdp::IceCredentials) -> LocalDescription {
        LocalDescription {
            ice: ice.clone(),
            fingerprint: sdp::Fingerprint(self.identity.fingerprint.clone()),
            candidate: self.announced,
        }
    }

    /// Answers a publish offer. A session that publishes again replaces its publish transport.
    pub(super) fn publish(
        &mut self,
        now: Instant,
        room: RoomId,
        session: String,
        offer: &str,
    ) -> Result<(TransportId, String), MediaError> {
        let policy = self.publish_policy;
        let media = self.rooms.get_mut(&room).ok_or(MediaError::UnknownRoom)?;
        // Before any work: a refused offer costs a token too, or a loop of bad offers would be
        // free to parse.
        media
            .take_publish(&session, now, policy.rate)
            .map_err(|retry_after| MediaError::RateLimited { retry_after })?;
        let ice = sdp::random_ice_credentials();
        let negotiation =
            sdp::negotiate_publish(offer, &self.local_description(&ice), &policy.limits)?;
        let dtls = DtlsTransport::new(
            &self.identity,
            &negotiation.remote_fingerprint.0,
            DtlsRole::Server,
        )
        .map_err(|e| MediaError::Dtls(e.0))?;
        let mut connection = Connection::new(now, ice);
        connection
            .negotiate(now, negotiation.remote_ice.clone(), dtls)
            .map_err(|e| MediaError::Dtls(e.0))?;
        let extensions = extension_map(
            negotiation
                .extensions
                .iter()
                .map(|e| (e.id, e.uri.as_str())),
        );
        let transport = self.core.add_transport(
            now,
            room,
            TransportConfig {
                direction: Direction::Publish,
                extensions,
            },
        )?;
        let mut tracks = Vec::with_capacity(negotiation.tracks.len());
        for track in &negotiation.tracks {
            match self.core.publish_track(now, transport, track_config(track)) {
                Ok(id) => tracks.push((id, track.clone())),
                Err(e) => {
                    let _ = self.core.remove_transport(transport);
                    return Err(e.into());
                }
            }
        }
        let link = Link {
            room,
            session: session.clone(),
            direction: Direction::Publish,
            connection,
        };
        self.add_link(now, transport, link);

        let media = self.rooms.get_mut(&room).expect("checked above");
        let previous = media
            .sessions
            .entry(session.clone())
            .or_default()
            .publish
            .replace(Publishing {
                transport,
                tracks: tracks.clone(),
            });
        if let Some(previous) = previous {
            self.remove_transport(previous.transport);
        }
        self.pipe_new_tracks(now, room, &session, &tracks);
        self.renegotiate_others(room, &session);
        Ok((transport, negotiation.answer))
    }

    /// Offers (or re-offers) the session's subscribe transport with every other publisher's
    /// tracks. `None` when there is nothing to receive and no transport yet.
    pub(super) fn subscribe_offer(
        &mut self,
        now: Instant,
        room: RoomId,
        session: &str,
    ) -> Result<Option<String>, MediaError> {
        let media = self.rooms.get_mut(&room).ok_or(MediaError::UnknownRoom)?;
        let available = media.tracks_for(session);
        let entry = media.sessions.entry(session.to_owned()).or_default();
        if entry.subscribe.is_none() && available.is_empty() {
            return Ok(None);
        }
        if entry.subscribe.is_none() {
            let ice = sdp::random_ice_credentials();
            let extensions =
                extension_map(SUBSCRIBE_EXTENSIONS.iter().map(|(id, uri)| (*id, *uri)));
            let transport = self.core.add_transport(
                now,
                room,
                TransportConfig {
                    direction: Direction::Subscribe,
                    extensions,
                },
            )?;
            let link = Link {
                room,
                session: session.to_owned(),
                direction: Direction::Subscribe,
                connection: Connection::new(now, ice),
            };
            self.add_link(now, transport, link);
            let media = self.rooms.get_mut(&room).expect("checked above");
            media
                .sessions
                .get_mut(session)
                .expect("inserted above")
                .subscribe = Some(Subscribing {
                transport,
                version: 0,
                forwarded: Vec::new(),
                next_mid: 0,
                offers: VecDeque::new(),
                awaiting_answer: None,
                changed: false,
            });
        }
        let subscribing = self.subscribing_mut(room, session).expect("created above");
        if subscribing
            .awaiting_answer
            .is_some_and(|sent| now.saturating_duration_since(sent) < ANSWER_WAIT)
        {
            // One offer in flight at a time: this change goes out once the client answered.
            subscribing.changed = true;
            return Ok(None);
        }
        for forwarded in &mut subscribing.forwarded {
            if !available.iter().any(|(_, t, _)| *t == forwarded.track) {
                forwarded.sdp.active = false;
            }
        }
        let mut stale_subscriptions = Vec::new();
        for (publisher, track, published) in available {
            if subscribing.forwarded.iter().any(|f| f.track == track) {
                continue;
            }
            let mid = subscribing.next_mid.to_string();
            subscribing.next_mid += 1;
            let track_id = unique_track_id(
                published
                    .msid
                    .as_ref()
                    .map_or_else(|| published.mid.clone(), |(_, track)| track.clone()),
                &mid,
                &subscribing.forwarded,
            );
            let mut sdp = ForwardedTrack {
                mid,
                kind: published.kind,
                codec: published.codec.clone(),
                ssrc: rand::random(),
                rtx_ssrc: published.rtx_ssrc.map(|_| rand::random()),
                stream_id: publisher,
                track_id,
                active: true,
            };
            // Slot 0 stays bundled even when its track ended (see `sdp::subscribe_offer`).
            let bundled = subscribing
                .forwarded
                .iter()
                .enumerate()
                .filter(|(i, f)| *i == 0 || f.sdp.active)
                .map(|(_, f)| &f.sdp);
            sdp::assign_payload_types(bundled, &mut sdp);
            let forwarded = Forwarded {
                track,
                sdp,
                accepted: false,
                subscription: None,
                recyclable: false,
            };
            // An ended track's position whose rejection the client has answered takes the new
            // track; only without one does the SDP grow.
            let slot = subscribing
                .forwarded
                .iter_mut()
                .find(|f| f.recyclable && f.sdp.kind == forwarded.sdp.kind);
            match slot {
                Some(slot) => {
                    let old = std::mem::replace(slot, forwarded);
                    stale_subscriptions.extend(old.subscription);
                }
                None => subscribing.forwarded.push(forwarded),
            }
        }
        subscribing.version += 1;
        let tracks: Vec<_> = subscribing
            .forwarded
            .iter()
            .map(|f| f.sdp.clone())
            .collect();
        let (transport, version) = (subscribing.transport, subscribing.version);
        for subscription in stale_subscriptions {
            // The core may already have closed it with its track.
            let _ = self.core.unsubscribe(subscription);
        }
        let ice = self.links[&transport].connection.local_ice().clone();
        let offer = sdp::subscribe_offer(&self.local_description(&ice), version, &tracks)?;
        let subscribing = self.subscribing_mut(room, session).expect("created above");
        // Only an offer the client gets is waited for.
        if subscribing.offers.len() == OFFER_HISTORY {
            subscribing.offers.pop_front();
        }
        subscribing.offers.push_back(tracks);
        subscribing.awaiting_answer = Some(now);
        subscribing.changed = false;
        Ok(Some(offer))
    }

    /// Applies the client's answer to our latest subscribe offer.
    pub(super) fn subscribe_answer(
        &mut self,
        now: Instant,
        room: RoomId,
        session: &str,
        answer: &str,
    ) -> Result<(), MediaError> {
        if !self.rooms.contains_key(&room) {
            return Err(MediaError::UnknownRoom);
        }
        let subscribing = self
            .subscribing_mut(room, session)
            .ok_or(MediaError::NoTransport("subscribe"))?;
        // The client answers our offers in order, but an answer may cross a newer re-offer on
        // the way: it answers the newest offer with its mids, in order.
        let answered: Vec<&str> = answer
            .lines()
            .filter_map(|line| line.trim_end().strip_prefix("a=mid:"))
            .collect();
        let answers_offer = |offer: &Vec<ForwardedTrack>| {
            offer.len() == answered.len()
                && offer.iter().zip(&answered).all(|(t, mid)| t.mid == *mid)
        };
        let newest = subscribing.offers.len().saturating_sub(1);
        let index = subscribing
            .offers
            .iter()
            .rposition(answers_offer)
            .unwrap_or(newest);
        let offered = subscribing
            .offers
            .get(index)
            .ok_or(MediaError::NoTransport("subscribe"))?
            .clone();
        let parsed = sdp::parse_subscribe_answer(answer, &offered)?;
        let reoffer = index == newest && subscribing.changed;
        if index == newest {
            subscribing.awaiting_answer = None;
            subscribing.changed = false;
        }
        let transport = subscribing.transport;
        let connection = &mut self
            .links
            .get_mut(&transport)
            .ok_or(MediaError::NoTransport("subscribe"))?
            .connection;
        if !connection.is_negotiated() {
            // Browsers answer `active` (we serve); Pion and webrtc-rs answer `passive` toward
            // an ICE-lite offerer (we connect).
            let role = match parsed.remote_setup {
                sdp::Setup::Active => DtlsRole::Server,
                sdp::Setup::Passive => DtlsRole::Client,
            };
            let dtls = DtlsTransport::new(&self.identity, &parsed.remote_fingerprint.0, role)
                .map_err(|e| MediaError::Dtls(e.0))?;
            connection
                .negotiate(now, parsed.remote_ice.clone(), dtls)
                .map_err(|e| MediaError::Dtls(e.0))?;
        } else if connection.remote_ice() != Some(&parsed.remote_ice) {
            // An ICE restart is not supported on the subscribe side yet.
            tracing::debug!("subscriber changed ICE credentials; keeping the first ones");
        }
        self.service(now, transport);
        let Some(subscribing) = self.subscribing_mut(room, session) else {
            return Ok(()); // the network closed it meanwhile (an event said so)
        };
        for (i, forwarded) in subscribing.forwarded.iter_mut().enumerate() {
            let Some(offered) = offered.iter().find(|t| t.mid == forwarded.sdp.mid) else {
                // Added or recycled after the answered offer: the next answer covers it.
                continue;
            };
            forwarded.accepted = parsed.accepted_mids.contains(&forwarded.sdp.mid);
            // The client has seen this m-line rejected (the first one is never rejected).
            if i > 0 && !offered.active && !forwarded.sdp.active {
                forwarded.recyclable = true;
            }
        }
        if reoffer {
            self.emit(NodeEvent::RenegotiationNeeded {
                worker: self.index,
                room,
                session: session.to_owned(),
            });
        }
        self.sync_subscriptions(now, room, session)
    }

    /// Makes the core's subscriptions for a session's subscribe transport match the active,
    /// accepted m-lines. Subscriptions start only once the transport is connected: started
    /// earlier, a video subscription would spend its keyframe on a transport that cannot send
    /// yet, and the client would start mid-stream with undecodable delta frames.
    pub(super) fn sync_subscriptions(
        &mut self,
        now: Instant,
        room: RoomId,
        session: &str,
    ) -> Result<(), MediaError> {
        let Some(subscribing) = self
            .rooms
            .get(&room)
            .and_then(|m| m.sessions.get(session))
            .and_then(|s| s.subscribe.as_ref())
        else {
            return Ok(());
        };
        let transport = subscribing.transport;
        let connected = self
            .links
            .get(&transport)
            .is_some_and(|l| l.connection.is_connected());
        let mut changes = Vec::new();
        for forwarded in &subscribing.forwarded {
            let wanted = forwarded.sdp.active && forwarded.accepted;
            match (wanted, forwarded.subscription) {
                (true, None) if connected => {
                    changes.push((forwarded.sdp.mid.clone(), forwarded.track, true))
                }
                (false, Some(_)) => {
                    changes.push((forwarded.sdp.mid.clone(), forwarded.track, false))
                }
                _ => {}
            }
        }
        for (mid, track, subscribe) in changes {
            let subscribing = self
                .rooms
                .get_mut(&room)
                .and_then(|media| media.subscribing_mut(session))
                .expect("checked above");
            let forwarded = subscribing
                .forwarded
                .iter_mut()
                .find(|f| f.sdp.mid == mid)
                .expect("collected above");
            if subscribe {
                let config = subscription_config(&forwarded.sdp);
                match self.core.subscribe(now, transport, track, config) {
                    Ok(subscription) => forwarded.subscription = Some(subscription),
                    // Its publisher replaced or ended it after our offer: the renegotiation
                    // that change started rejects the m-line; the rest of the answer stands.
                    Err(sfu_core::CommandError::UnknownTrack(_)) => forwarded.sdp.active = false,
                    Err(e) => return Err(e.into()),
                }
            } else if let Some(subscription) = forwarded.subscription.take() {
                // The core may already have closed it with its track.
                let _ = self.core.unsubscribe(subscription);
            }
        }
        Ok(())
    }

    /// Subscribers whose offer went unanswered for [`ANSWER_WAIT`] while tracks changed are
    /// re-offered anyway (a lost answer must not freeze what they receive).
    pub(super) fn reoffer_overdue(&mut self, now: Instant) {
        let mut overdue = Vec::new();
        for (room, media) in &mut self.rooms {
            for (session, entry) in &mut media.sessions {
                let Some(subscribing) = entry.subscribe.as_mut() else {
                    continue;
                };
                let expired = subscribing
                    .awaiting_answer
                    .is_some_and(|sent| now.saturating_duration_since(sent) >= ANSWER_WAIT);
                if expired && subscribing.changed {
                    subscribing.changed = false;
                    overdue.push((*room, session.clone()));
                }
            }
        }
        for (room, session) in overdue {
            self.emit(NodeEvent::RenegotiationNeeded {
                worker: self.index,
                room,
                session,
            });
        }
    }

    /// After the node closed a transport itself (DTLS closed, consent expired, never
    /// connected): forgets it, and if it published, the others are re-offered without its
    /// tracks (their m-lines are rejected and become recyclable).
    pub(super) fn forget_closed_transport(
        &mut self,
        room: RoomId,
        session: &str,
        direction: Direction,
    ) {
        let published = self
            .rooms
            .get_mut(&room)
            .is_some_and(|media| media.forget_transport(session, direction));
        if published {
            self.renegotiate_others(room, session);
        }
    }

    /// Removes a session's transports; the others are told to renegotiate.
    pub(super) fn close_session(&mut self, room: RoomId, session: &str) -> Result<(), MediaError> {
        let media = self.rooms.get_mut(&room).ok_or(MediaError::UnknownRoom)?;
        let Some(removed) = media.sessions.remove(session) else {
            return Ok(());
        };
        let had_tracks = removed
            .publish
            .as_ref()
            .is_some_and(|p| !p.tracks.is_empty());
        for transport in [
            removed.publish.map(|p| p.transport),
            removed.subscribe.map(|s| s.transport),
        ]
        .into_iter()
        .flatten()
        {
            self.remove_transport(transport);
        }
        if had_tracks {
            self.renegotiate_others(room, session);
        }
        Ok(())
    }

    /// Every other session in the room must re-offer its subscribe side.
    pub(super) fn renegotiate_others(&self, room: RoomId, publisher: &str) {
        let Some(media) = self.rooms.get(&room) else {
            return;
        };
        for session in media.others(publisher) {
            self.emit(NodeEvent::RenegotiationNeeded {
                worker: self.index,
                room,
                session,
            });
        }
    }

    pub(super) fn handle_core_event(&mut self, event: Event) {
        let Event::SubscriptionClosed {
            subscription,
            transport,
        } = event
        else {
            return;
        };
        self.pipe_subscription_closed(transport, subscription);
        if self.direction_of(transport) != Some(Direction::Subscribe) {
            return;
        }
        let Some(link) = self.links.get(&transport) else {
            return;
        };
        let (room, session) = (link.room, link.session.clone());
        let Some(subscribing) = self.subscribing_mut(room, &session) else {
            return;
        };
        if let Some(forwarded) = subscribing
            .forwarded
            .iter_mut()
            .find(|f| f.subscription == Some(subscription))
        {
            forwarded.subscription = None;
            forwarded.sdp.active = false;
        }
    }
}

/// The publisher's track id, unless another track on this subscribe transport already carries
/// it (publishers choose ids freely, and many non-browser clients use `audio`/`video`): then it
/// gets the m-line's mid appended. Receivers such as the `webrtc` crate tell remote tracks apart
/// by track id and would merge two publishers' media into one track.
fn unique_track_id(track_id: String, mid: &str, forwarded: &[Forwarded]) -> String {
    if !forwarded.iter().any(|f| f.sdp.track_id == track_id) {
        return track_id;
    }
    // Within the 64-character limit of subscribe offers; the mid alone keeps it unique.
    let prefix: String = track_id.chars().take(64 - mid.len() - 1).collect();
    format!("{prefix}-{mid}")
}

pub(super) fn extension_map<'a>(pairs: impl Iterator<Item = (u8, &'a str)>) -> ExtensionMap {
    let pairs: Vec<(u8, ExtensionKind)> = pairs
        .filter_map(|(id, uri)| ExtensionKind::from_uri(uri).map(|kind| (id, kind)))
        .collect();
    ExtensionMap::new(&pairs)
}

fn codec(name: &str) -> Codec {
    match name.to_ascii_lowercase().as_str() {
        "opus" => Codec::Opus,
        "vp8" => Codec::Vp8,
        "vp9" => Codec::Vp9,
        "h264" => Codec::H264,
        "av1" => Codec::Av1,
        _ => Codec::Other,
    }
}

pub(super) fn track_config(track: &PublishedTrack) -> TrackConfig {
    TrackConfig {
        kind: match track.kind {
            Kind::Audio => MediaKind::Audio,
            Kind::Video => MediaKind::Video,
        },
        codec: codec(&track.codec.name),
        pt: Pt(track.codec.pt),
        clock_rate: ClockRate(track.codec.clock_rate),
        rtx_pt: track.codec.rtx_pt.map(Pt),
        mid: Mid::new(track.mid.as_bytes()),
        encodings: Encodings::single(Ssrc(track.ssrc), track.rtx_ssrc.map(Ssrc)),
    }
}

fn subscription_config(track: &ForwardedTrack) -> SubscriptionConfig {
    SubscriptionConfig {
        ssrc: Ssrc(track.ssrc),
        pt: Pt(track.codec.pt),
        rtx: match (track.rtx_ssrc, track.codec.rtx_pt) {
            (Some(ssrc), Some(pt)) => Some(Rtx {
                ssrc: Ssrc(ssrc),
                pt: Pt(pt),
            }),
            _ => None,
        },
        mid: Mid::new(track.mid.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_budget_allows_a_burst_then_one_per_interval_and_forgets_full_buckets() {
        let rate = PublishRate {
            burst: 3,
            interval: Duration::from_secs(2),
        };
        let mut room = RoomMedia::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(room.take_publish("a", t0, rate), Ok(()));
        }
        assert_eq!(
            room.take_publish("a", t0, rate),
            Err(Duration::from_secs(2))
        );
        // Another session has its own budget.
        assert_eq!(room.take_publish("b", t0, rate), Ok(()));
        // One interval later: exactly one more, and the refusal says when the next comes.
        let t1 = t0 + Duration::from_millis(2_500);
        assert_eq!(room.take_publish("a", t1, rate), Ok(()));
        assert_eq!(
            room.take_publish("a", t1, rate),
            Err(Duration::from_millis(1_500))
        );
        // A loop of attempts earns nothing: refusals do not spend or delay the budget.
        for ms in (2_600..4_000).step_by(100) {
            assert!(
                room.take_publish("a", t0 + Duration::from_millis(ms), rate)
                    .is_err()
            );
        }
        assert_eq!(
            room.take_publish("a", t0 + Duration::from_secs(4), rate),
            Ok(())
        );
        // Full buckets are dropped: the map only holds sessions that published lately.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(room.take_publish("c", later, rate), Ok(()));
        assert_eq!(
            room.publish_budget.keys().collect::<Vec<_>>(),
            [&"c".to_owned()]
        );
        // Interval zero: no limit.
        let unlimited = PublishRate {
            burst: 1,
            interval: Duration::ZERO,
        };
        for _ in 0..1000 {
            assert_eq!(room.take_publish("a", later, unlimited), Ok(()));
        }
    }
}
