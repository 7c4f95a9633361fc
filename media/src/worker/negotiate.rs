//! The worker's command side: publish and subscribe negotiation per session, and keeping each
//! subscriber's track list (and so its SDP) in step with what the room publishes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use sfu_core::PublishRate;

use sfu_core::rtp::{Codec, ExtensionKind, ExtensionMap};
use sfu_core::{
    ClockRate, CommandError, Direction, Encoding, Encodings, Event, LayerSet, MediaKind, Mid, Pt,
    Rid, RoomId, Rtx, Ssrc, SubscriptionConfig, SubscriptionId, TrackConfig, TrackId,
    TransportConfig, TransportId,
};

use super::link::Link;
use super::thread::Worker;
use super::{MediaError, NodeEvent, Speaker};
use crate::connection::Connection;
use crate::sdp::{
    self, ForwardedTrack, Kind, LocalDescription, PublishLimits, PublishedTrack,
    SUBSCRIBE_EXTENSIONS,
};
use mooyaho_net::dtls::{DtlsRole, DtlsTransport};

/// What a publisher may ask of the node: the shape of one offer, and how often it may publish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishPolicy {
    /// m-lines and tracks per offer.
    pub limits: PublishLimits,
    /// Publishes per session and room (sfu-core keeps the budget with the room).
    pub rate: PublishRate,
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

/// Offers a subscriber may have unanswered at once: the one in flight and one more after
/// [`ANSWER_WAIT`] (an answer lost on the way must not freeze what it receives). A subscriber
/// that answers neither gets no further offer until it answers: every offer adds the new
/// tracks' m-lines while the ended ones wait for the answer to be recycled, so offering a
/// silent client every [`ANSWER_WAIT`] would grow its SDP and our state with every change.
const MAX_UNANSWERED_OFFERS: u32 = 2;

/// A subscribe transport's negotiation: the m-lines it was offered and what the client
/// answered. Kept with the transport's [`Link`]; sfu-core has no word for SDP.
#[derive(Debug, Default)]
pub(super) struct Subscribing {
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
    /// Offers made since the client last answered the newest one.
    unanswered: u32,
    /// Tracks came or went while an offer was unanswered: re-offer once it is answered.
    changed: bool,
}

impl Subscribing {
    /// Whether a change must wait for the client's answer instead of being offered now: while
    /// the newest offer is younger than [`ANSWER_WAIT`], or once [`MAX_UNANSWERED_OFFERS`]
    /// went unanswered.
    fn must_wait(&self, now: Instant) -> bool {
        self.awaiting_answer.is_some_and(|sent| {
            now.saturating_duration_since(sent) < ANSWER_WAIT
                || self.unanswered >= MAX_UNANSWERED_OFFERS
        })
    }

    /// The live subscriptions: each with its track and the publishing session.
    pub(super) fn subscriptions(&self) -> impl Iterator<Item = (SubscriptionId, TrackId, &str)> {
        self.forwarded.iter().filter_map(|f| {
            let subscription = f.subscription?;
            Some((subscription, f.track, f.sdp.stream_id.as_str()))
        })
    }
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

impl Worker {
    pub(super) fn create_room(&mut self) -> Result<RoomId, MediaError> {
        Ok(self.core.create_room()?)
    }

    /// [`MediaError::UnknownRoom`] unless `room` is open on this worker.
    pub(super) fn known_room(&self, room: RoomId) -> Result<(), MediaError> {
        if self.core.has_room(room) {
            Ok(())
        } else {
            Err(MediaError::UnknownRoom)
        }
    }

    /// Every track published in `room` with its session and what it negotiated, in a stable
    /// order (by session, then publish order).
    pub(super) fn published(&self, room: RoomId) -> Vec<(String, TrackId, PublishedTrack)> {
        self.core
            .published(room)
            .filter_map(|(session, track)| {
                let sdp = self.track_sdp.get(&track)?;
                Some((session.to_owned(), track, sdp.clone()))
            })
            .collect()
    }

    /// `session`'s subscribe transport in `room` and its negotiation.
    fn subscribing_mut(
        &mut self,
        room: RoomId,
        session: &str,
    ) -> Option<(TransportId, &mut Subscribing)> {
        let transport = self
            .core
            .participant_transport(room, session, Direction::Subscribe)?;
        let subscribing = self.links.get_mut(&transport)?.subscribing.as_mut()?;
        Some((transport, subscribing))
    }

    fn local_description(&self, ice: &sdp::IceCredentials) -> LocalDescription {
        LocalDescription {
            ice: ice.clone(),
            fingerprint: sdp::Fingerprint(self.identity.fingerprint.clone()),
            candidates: self.announced.to_vec(),
        }
    }

    /// A subscribe transport for `session` in sfu-core, with the header extensions its SDP
    /// negotiated (node-offered or client-offered).
    fn add_subscribe_transport(
        &mut self,
        now: Instant,
        room: RoomId,
        session: &str,
        extensions: ExtensionMap,
    ) -> Result<TransportId, MediaError> {
        let config = TransportConfig {
            direction: Direction::Subscribe,
            extensions,
        };
        Ok(self
            .core
            .add_participant_transport(now, room, session, config)?)
    }

    /// The connection of a transport whose client offered (a publish, or a client-offered
    /// subscribe): our side answers, so we are the DTLS server (`a=setup:passive`).
    fn answering_connection(
        &self,
        now: Instant,
        ice: sdp::IceCredentials,
        remote_ice: &sdp::IceCredentials,
        remote_fingerprint: &sdp::Fingerprint,
    ) -> Result<Connection, MediaError> {
        let dtls = DtlsTransport::new(&self.identity, &remote_fingerprint.0, DtlsRole::Server)
            .map_err(|e| MediaError::Dtls(e.0))?;
        let mut connection = Connection::new(now, ice);
        connection
            .negotiate(now, remote_ice.clone(), dtls)
            .map_err(|e| MediaError::Dtls(e.0))?;
        Ok(connection)
    }

    /// Answers a publish offer. A session that publishes again replaces its publish transport.
    pub(super) fn publish(
        &mut self,
        now: Instant,
        room: RoomId,
        session: String,
        offer: &str,
    ) -> Result<(TransportId, String), MediaError> {
        // The fuzz harness (`worker::fuzzing`) takes these same three steps, with its offers
        // parsed once.
        self.take_publish_token(now, room, &session)?;
        let offer = sdp::PublishOffer::parse(offer)?;
        self.publish_parsed(now, room, session, &offer)
    }

    /// Before any work on an offer: a refused offer costs a token too, or a loop of bad offers
    /// would be free to parse.
    pub(super) fn take_publish_token(
        &mut self,
        now: Instant,
        room: RoomId,
        session: &str,
    ) -> Result<(), MediaError> {
        self.known_room(room)?;
        self.core
            .take_publish(now, room, session, self.publish_policy.rate)
            .map_err(|e| match e {
                CommandError::RateLimited { retry_after } => {
                    MediaError::RateLimited { retry_after }
                }
                other => other.into(),
            })
    }

    /// [`Self::publish`] once its token is taken and its offer parsed.
    pub(super) fn publish_parsed(
        &mut self,
        now: Instant,
        room: RoomId,
        session: String,
        offer: &sdp::PublishOffer,
    ) -> Result<(TransportId, String), MediaError> {
        let policy = self.publish_policy;
        let ice = sdp::random_ice_credentials();
        let negotiation =
            sdp::negotiate_parsed_publish(offer, &self.local_description(&ice), &policy.limits)?;
        let connection = self.answering_connection(
            now,
            ice,
            &negotiation.remote_ice,
            &negotiation.remote_fingerprint,
        )?;
        let extensions = extension_map(
            negotiation
                .extensions
                .iter()
                .map(|e| (e.id, e.uri.as_str())),
        );
        let joined = self.core.participants(room).any(|p| p == session);
        let previous = self
            .core
            .participant_transport(room, &session, Direction::Publish);
        let transport = self.core.add_participant_transport(
            now,
            room,
            &session,
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
                    // Nothing changes: the refused offer leaves no transport and no member.
                    let _ = self.core.remove_transport(transport);
                    if !joined {
                        let _ = self.core.leave(room, &session);
                    }
                    return Err(e.into());
                }
            }
        }
        self.track_sdp.extend(tracks.iter().cloned());
        let link = Link {
            room,
            session: session.clone(),
            direction: Direction::Publish,
            connection,
            subscribing: None,
        };
        self.add_link(now, transport, link);
        if let Some(previous) = previous {
            self.remove_transport(previous);
        }
        self.pipe_new_tracks(now, room, &session, &tracks);
        self.relay_new_tracks(now, room, &session, &tracks);
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
        self.known_room(room)?;
        // A session that asked is in the room from now on: later publishes re-offer it.
        self.core.join(room, session)?;
        let mut available = self.published(room);
        available.retain(|(publisher, _, _)| publisher != session);
        let existing = self
            .core
            .participant_transport(room, session, Direction::Subscribe);
        if existing.is_none() && available.is_empty() {
            return Ok(None);
        }
        if existing.is_none() {
            let ice = sdp::random_ice_credentials();
            let extensions =
                extension_map(SUBSCRIBE_EXTENSIONS.iter().map(|(id, uri)| (*id, *uri)));
            let transport = self.add_subscribe_transport(now, room, session, extensions)?;
            let link = Link {
                room,
                session: session.to_owned(),
                direction: Direction::Subscribe,
                connection: Connection::new(now, ice),
                subscribing: Some(Subscribing::default()),
            };
            self.add_link(now, transport, link);
        }
        let (transport, subscribing) = self.subscribing_mut(room, session).expect("created above");
        if subscribing.must_wait(now) {
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
                rtx_ssrc: published.has_rtx().then(rand::random),
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
        let version = subscribing.version;
        for subscription in stale_subscriptions {
            // The core may already have closed it with its track.
            let _ = self.core.unsubscribe(subscription);
        }
        let ice = self.links[&transport].connection.local_ice().clone();
        let offer = sdp::subscribe_offer(&self.local_description(&ice), version, &tracks)?;
        let (_, subscribing) = self.subscribing_mut(room, session).expect("created above");
        // Only an offer the client gets is waited for.
        if subscribing.offers.len() == OFFER_HISTORY {
            subscribing.offers.pop_front();
        }
        subscribing.offers.push_back(tracks);
        subscribing.awaiting_answer = Some(now);
        subscribing.unanswered += 1;
        subscribing.changed = false;
        if subscribing.unanswered == MAX_UNANSWERED_OFFERS {
            tracing::info!(
                session,
                "subscriber left its subscribe offer unanswered; no further offer until it answers"
            );
        }
        Ok(Some(offer))
    }

    /// Answers a subscribe session the client offers (WHEP): a new subscribe transport whose
    /// m-lines are the client's, each filled with a track published in the room (only
    /// `publisher`'s when named). The node is the DTLS server. Tracks published later are not
    /// added (the client made the offer; a new one is a new session).
    pub(super) fn subscribe_client_offer(
        &mut self,
        now: Instant,
        room: RoomId,
        session: &str,
        offer: &str,
        publisher: Option<&str>,
    ) -> Result<String, MediaError> {
        self.known_room(room)?;
        if publisher == Some(session) {
            return Err(MediaError::OwnMedia);
        }
        if self
            .core
            .participant_transport(room, session, Direction::Subscribe)
            .is_some()
        {
            return Err(MediaError::AlreadySubscribed);
        }
        let mut available = self.published(room);
        available.retain(|(from, _, _)| from != session && publisher.is_none_or(|p| p == from));
        let candidates: Vec<ForwardedTrack> = available
            .iter()
            .map(|(from, _, published)| ForwardedTrack {
                mid: String::new(),
                kind: published.kind,
                codec: published.codec.clone(),
                ssrc: rand::random(),
                rtx_ssrc: published.has_rtx().then(rand::random),
                stream_id: from.clone(),
                track_id: published
                    .msid
                    .as_ref()
                    .map_or_else(|| published.mid.clone(), |(_, track)| track.clone()),
                active: true,
            })
            .collect();
        let ice = sdp::random_ice_credentials();
        let negotiation =
            sdp::answer_subscribe_offer(offer, &self.local_description(&ice), &candidates)?;
        let connection = self.answering_connection(
            now,
            ice,
            &negotiation.remote_ice,
            &negotiation.remote_fingerprint,
        )?;
        self.core.join(room, session)?;
        let extensions = extension_map(
            negotiation
                .extensions
                .iter()
                .map(|e| (e.id, e.uri.as_str())),
        );
        let transport = self.add_subscribe_transport(now, room, session, extensions)?;
        let forwarded: Vec<Forwarded> = negotiation
            .tracks
            .into_iter()
            .filter_map(|(i, sdp)| {
                let (_, track, _) = available.get(i)?;
                Some(Forwarded {
                    track: *track,
                    sdp,
                    accepted: true,
                    subscription: None,
                    recyclable: false,
                })
            })
            .collect();
        // Mids the node would mint in a re-offer of its own start past the client's numeric ones.
        let next_mid = forwarded
            .iter()
            .filter_map(|f| f.sdp.mid.parse::<u32>().ok())
            .max()
            .map_or(0, |mid| mid.saturating_add(1));
        let subscribing = Subscribing {
            version: 1,
            forwarded,
            next_mid,
            ..Subscribing::default()
        };
        let link = Link {
            room,
            session: session.to_owned(),
            direction: Direction::Subscribe,
            connection,
            subscribing: Some(subscribing),
        };
        self.add_link(now, transport, link);
        self.service(now, transport);
        self.sync_subscriptions(now, transport)?;
        Ok(negotiation.answer)
    }

    /// Applies the client's answer to our latest subscribe offer.
    pub(super) fn subscribe_answer(
        &mut self,
        now: Instant,
        room: RoomId,
        session: &str,
        answer: &str,
    ) -> Result<(), MediaError> {
        self.known_room(room)?;
        let (transport, subscribing) = self
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
            subscribing.unanswered = 0;
            subscribing.changed = false;
        }
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
        let Some(subscribing) = self
            .links
            .get_mut(&transport)
            .and_then(|l| l.subscribing.as_mut())
        else {
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
        self.sync_subscriptions(now, transport)
    }

    /// Makes the core's subscriptions of a subscribe transport match its active, accepted
    /// m-lines. Subscriptions start only once the transport is connected: started earlier, a
    /// video subscription would spend its keyframe on a transport that cannot send yet, and
    /// the client would start mid-stream with undecodable delta frames.
    pub(super) fn sync_subscriptions(
        &mut self,
        now: Instant,
        transport: TransportId,
    ) -> Result<(), MediaError> {
        let Some(link) = self.links.get_mut(&transport) else {
            return Ok(());
        };
        let connected = link.connection.is_connected();
        let (room, session) = (link.room, link.session.clone());
        let Some(subscribing) = link.subscribing.as_mut() else {
            return Ok(());
        };
        let mut started = Vec::new();
        let mut stopped = false;
        for forwarded in &mut subscribing.forwarded {
            let wanted = forwarded.sdp.active && forwarded.accepted;
            match (wanted, forwarded.subscription) {
                (true, None) if connected => {
                    let config = subscription_config(&forwarded.sdp);
                    match self.core.subscribe(now, transport, forwarded.track, config) {
                        Ok(subscription) => {
                            forwarded.subscription = Some(subscription);
                            started.push((
                                subscription,
                                forwarded.track,
                                forwarded.sdp.stream_id.clone(),
                            ));
                        }
                        // Its publisher replaced or ended it after our offer: the renegotiation
                        // that change started rejects the m-line; the rest of the answer stands.
                        Err(CommandError::UnknownTrack(_)) => forwarded.sdp.active = false,
                        Err(e) => return Err(e.into()),
                    }
                }
                (false, Some(subscription)) => {
                    stopped = true;
                    forwarded.subscription = None;
                    // The core may already have closed it with its track.
                    let _ = self.core.unsubscribe(subscription);
                }
                _ => {}
            }
        }
        let changed = stopped || !started.is_empty();
        for (subscription, track, publisher) in started {
            self.apply_wish(now, room, &session, &publisher, subscription, track);
        }
        if changed {
            self.pipe_report_demand(room);
        }
        Ok(())
    }

    /// Subscribers whose offer went unanswered for [`ANSWER_WAIT`] while tracks changed are
    /// re-offered anyway (a lost answer must not freeze what they receive), once: see
    /// [`MAX_UNANSWERED_OFFERS`].
    pub(super) fn reoffer_overdue(&mut self, now: Instant) {
        let mut overdue = Vec::new();
        for link in self.links.values_mut() {
            let Some(subscribing) = link.subscribing.as_mut() else {
                continue;
            };
            if subscribing.changed && !subscribing.must_wait(now) {
                subscribing.changed = false;
                overdue.push((link.room, link.session.clone()));
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

    /// Removes a session's transports and the tracks relayed for it; the others are told to
    /// renegotiate if it published.
    pub(super) fn close_session(&mut self, room: RoomId, session: &str) -> Result<(), MediaError> {
        self.known_room(room)?;
        self.wishes.forget_session(room, session);
        let published = !self.core.participant_tracks(room, session).is_empty();
        for transport in self.core.leave(room, session)? {
            self.remove_transport(transport);
        }
        if published {
            self.renegotiate_others(room, session);
        }
        self.pipe_report_demand(room);
        Ok(())
    }

    /// Every other session in the room must re-offer its subscribe side.
    pub(super) fn renegotiate_others(&self, room: RoomId, publisher: &str) {
        for session in self.core.participants(room).filter(|s| *s != publisher) {
            self.emit(NodeEvent::RenegotiationNeeded {
                worker: self.index,
                room,
                session: session.to_owned(),
            });
        }
    }

    pub(super) fn handle_core_event(&mut self, event: Event) {
        match event {
            Event::ActiveSpeakersChanged { room } => self.report_speakers(room),
            Event::TrackClosed { track, .. } => {
                self.track_sdp.remove(&track);
            }
            Event::SubscribedLayersChanged {
                track,
                room,
                layers,
            } => self.report_subscribed_layers(room, track, layers),
            Event::SubscriptionClosed {
                subscription,
                transport,
            } => {
                self.pipe_subscription_closed(transport, subscription);
                self.relay_subscription_closed(transport, subscription);
                let Some(subscribing) = self
                    .links
                    .get_mut(&transport)
                    .and_then(|l| l.subscribing.as_mut())
                else {
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
            _ => {}
        }
    }
}

impl Worker {
    /// Dynacast: tells the control plane which layers of a session's video anyone consumes, so
    /// its publisher can stop encoding the others.
    fn report_subscribed_layers(&self, room: RoomId, track: TrackId, layers: LayerSet) {
        let Some(sdp) = self.track_sdp.get(&track) else {
            return;
        };
        let Some((session, _)) = self.core.published(room).find(|(_, t)| *t == track) else {
            return;
        };
        let consumed: Vec<u8> = layers
            .iter()
            .filter(|&l| usize::from(l) < sdp.encodings.len())
            .collect();
        let rids = consumed
            .iter()
            .map(|&l| {
                sdp.encodings[usize::from(l)]
                    .rid
                    .clone()
                    .unwrap_or_default()
            })
            .collect();
        self.emit(NodeEvent::SubscribedQualities {
            worker: self.index,
            room,
            session: session.to_owned(),
            mid: sdp.mid.clone(),
            rids,
            layers: consumed,
        });
    }

    /// Tells the control plane a room's new speaker ranking, by session. A room mirrored here
    /// from its home worker (the remote end of a pipe) or from another node (the receiving end
    /// of a relay link) stays quiet: its tracks are the home's, and so is the report.
    fn report_speakers(&self, room: RoomId) {
        let mirror = self
            .core
            .room_transports(room)
            .iter()
            .any(|t| self.pipes.incoming.contains_key(t) || self.relays.is_receiving(*t));
        if mirror {
            return;
        }
        let Some(member) = self.core.participants(room).next() else {
            return;
        };
        let Some(speakers) = self.speakers(room) else {
            return;
        };
        self.emit(NodeEvent::ActiveSpeakers {
            worker: self.index,
            room,
            member: member.to_owned(),
            speakers,
        });
    }

    /// A room's speaker ranking by session, loudest first; `None` for a room not here. Asked of
    /// the home worker, whose room has every publisher.
    pub(super) fn speakers(&self, room: RoomId) -> Option<Vec<Speaker>> {
        let ranking = self.core.active_speakers(room)?;
        let speakers = ranking
            .iter()
            .filter_map(|s| {
                let (session, _) = self.core.published(room).find(|(_, t)| *t == s.track)?;
                Some(Speaker {
                    session: session.to_owned(),
                    level: s.level,
                })
            })
            .collect();
        Some(speakers)
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
        encodings: encodings(track),
    }
}

/// The track's encodings for sfu-core. The SDP layer accepted at most three, each named by
/// SSRC or by a valid rid, so none is dropped here.
fn encodings(track: &PublishedTrack) -> Encodings {
    let layers: Vec<Encoding> = track
        .encodings
        .iter()
        .map(|e| Encoding {
            rid: e.rid.as_deref().and_then(|rid| Rid::new(rid.as_bytes())),
            ssrc: e.ssrc.map(Ssrc),
            rtx_ssrc: e.rtx_ssrc.map(Ssrc),
        })
        .collect();
    Encodings::simulcast(&layers).expect("the SDP layer accepts one to three encodings")
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
    use std::sync::Arc;

    use super::*;
    use crate::worker::fuzzing::{identity, publish_offer, subscribe_answer};
    use crate::worker::{NodeEvent, PipeMessage};

    /// One socketless worker with one room, driven as the control plane drives it: every
    /// `RenegotiationNeeded` it emits is answered with a `subscribe_offer` call.
    struct Room {
        worker: Worker,
        events: tokio::sync::mpsc::UnboundedReceiver<NodeEvent>,
        _pipe: std::sync::mpsc::SyncSender<PipeMessage>,
        room: RoomId,
        now: Instant,
    }

    impl Room {
        fn new() -> Self {
            let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
            let (pipe, pipe_rx) = std::sync::mpsc::sync_channel(1);
            let local = sdp::Candidate::udp(std::net::SocketAddr::from(([127, 0, 0, 1], 9)));
            let mut worker = Worker::new(
                0,
                None,
                Arc::from([local]),
                identity().clone(),
                events_tx,
                Vec::new(),
                pipe_rx,
                sfu_core::Config::default(),
            );
            // Track churn as fast as the test makes it (the publish budget has its own tests).
            worker.publish_policy.rate.interval = Duration::ZERO;
            let room = worker.create_room().expect("room");
            Self {
                worker,
                events,
                _pipe: pipe,
                room,
                now: Instant::now(),
            }
        }

        fn publish(&mut self, session: &str) {
            let offer = publish_offer(session);
            self.worker
                .publish(self.now, self.room, session.to_owned(), &offer)
                .expect("publish");
        }

        /// The offers the control plane sends the viewer after the worker's renegotiation
        /// events so far (the publishers get theirs, unanswered: not the subject here).
        fn renegotiate(&mut self) -> Vec<(String, String)> {
            let mut offers = Vec::new();
            while let Ok(event) = self.events.try_recv() {
                if let NodeEvent::RenegotiationNeeded { session, .. } = event
                    && let Some(offer) = self
                        .worker
                        .subscribe_offer(self.now, self.room, &session)
                        .expect("subscribe offer")
                {
                    offers.push((session, offer));
                }
            }
            offers.retain(|(session, _)| session == "viewer");
            offers
        }

        fn answer(&mut self, session: &str, offer: &str) {
            let answer = subscribe_answer(session, offer, "active");
            self.worker
                .subscribe_answer(self.now, self.room, session, &answer)
                .expect("answer");
        }

        fn subscribing(&mut self, session: &str) -> &Subscribing {
            self.worker
                .subscribing_mut(self.room, session)
                .expect("subscribe transport")
                .1
        }

        /// The live tracks every other session publishes, and those `session`'s m-lines
        /// carry as active.
        fn live_and_offered(&mut self, session: &str) -> (Vec<TrackId>, Vec<TrackId>) {
            let mut live: Vec<TrackId> = self
                .worker
                .published(self.room)
                .into_iter()
                .filter(|(publisher, _, _)| publisher != session)
                .map(|(_, track, _)| track)
                .collect();
            let mut offered: Vec<TrackId> = self
                .subscribing(session)
                .forwarded
                .iter()
                .filter(|f| f.sdp.active)
                .map(|f| f.track)
                .collect();
            live.sort_by_key(|t| format!("{t:?}"));
            offered.sort_by_key(|t| format!("{t:?}"));
            (live, offered)
        }
    }

    fn m_lines(offer: &str) -> usize {
        offer.matches("\r\nm=").count()
    }

    #[test]
    fn fifty_track_changes_during_one_unanswered_offer_make_one_more_offer_of_the_live_tracks() {
        let mut room = Room::new();
        let joined = room.worker.subscribe_offer(room.now, room.room, "viewer");
        assert!(
            matches!(joined, Ok(None)),
            "nothing to receive yet, the viewer only joins: {joined:?}"
        );
        room.publish("alice");
        let mut offers = room.renegotiate();
        assert_eq!(offers.len(), 1, "the first publish is offered at once");
        let (_, first) = offers.pop().expect("one offer");

        // 50 changes while that offer is on its way: each republish ends a track and adds one.
        for i in 0..50 {
            room.now += Duration::from_millis(20);
            room.publish(if i % 2 == 0 { "bob" } else { "alice" });
            let made = room.renegotiate();
            assert!(made.is_empty(), "change {i} waits for the answer: {made:?}");
        }
        room.answer("viewer", &first);
        let mut offers = room.renegotiate();
        assert_eq!(
            offers.len(),
            1,
            "the answer releases one offer of every change"
        );
        let (_, second) = offers.pop().expect("one offer");
        // alice's and bob's live tracks, and alice's first (ended) track, kept bundled at m-line
        // 0: never one m-line per change.
        assert_eq!(m_lines(&second), 3, "{second}");
        room.answer("viewer", &second);
        assert!(room.renegotiate().is_empty(), "nothing changed since");
        let (live, offered) = room.live_and_offered("viewer");
        assert_eq!(live.len(), 2);
        assert_eq!(offered, live, "the viewer ends with every live track");
        let accepted = room.subscribing("viewer").forwarded.iter();
        let accepted = accepted.filter(|f| f.sdp.active && f.accepted).count();
        assert_eq!(accepted, 2, "the viewer's answer accepted both live tracks");
    }

    #[test]
    fn a_subscriber_that_stops_answering_gets_one_overdue_offer_and_its_sdp_stops_growing() {
        let mut room = Room::new();
        room.worker
            .subscribe_offer(room.now, room.room, "viewer")
            .expect("join");
        room.publish("alice");
        let (_, first) = room.renegotiate().pop().expect("first offer");
        room.answer("viewer", &first);

        // From now on the viewer answers nothing, while alice republishes every second for
        // two minutes and the worker's housekeeping runs.
        let mut offers = Vec::new();
        for _ in 0..120 {
            room.now += Duration::from_secs(1);
            room.publish("alice");
            offers.extend(room.renegotiate());
            room.worker.reoffer_overdue(room.now);
            offers.extend(room.renegotiate());
        }
        assert_eq!(
            offers.len(),
            MAX_UNANSWERED_OFFERS as usize,
            "the change after the answer, then one overdue re-offer; before the bound, one \
             every {ANSWER_WAIT:?}"
        );
        let forwarded = room.subscribing("viewer").forwarded.len();
        assert!(
            forwarded <= 3,
            "{forwarded} m-lines kept for a silent viewer"
        );
        let newest = offers
            .last()
            .map(|(_, offer)| offer.clone())
            .expect("offers");
        assert!(m_lines(&newest) <= 3, "{newest}");

        // It answers again: the next offer carries alice's live track, its SDP recycled.
        room.answer("viewer", &newest);
        let (_, next) = room
            .renegotiate()
            .pop()
            .expect("the waiting change is offered");
        assert!(m_lines(&next) <= 3, "{next}");
        room.answer("viewer", &next);
        let (live, offered) = room.live_and_offered("viewer");
        assert_eq!(live.len(), 1);
        assert_eq!(offered, live, "the viewer ends with alice's live track");
    }
}
