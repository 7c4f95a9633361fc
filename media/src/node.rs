//! The SFU node as a library: per-core workers plus the API the control plane calls (create a
//! room, answer a publish offer, offer and finish a subscribe transport, close, stats).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sfu_core::{Direction, RoomId};
use tokio::sync::mpsc;

use crate::ice_tcp::{IceTcp, IceTcpLimits, IceTcpStats};
use crate::sdp::Candidate;
use crate::worker::{
    Command, FailureSender, MediaError, NodeEvent, PIPE_DEPTH, PipeSender, Progress, PublishPolicy,
    RelayKeys, RelayLinkCounts, Speaker, WorkerFailure, WorkerHandle, WorkerStats, spawn_watchdog,
};
use mooyaho_net::dtls::DtlsIdentity;
use mooyaho_net::udp::{Socket, Wake};

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Address the workers' UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// One UDP port per worker (0 = any free port); its length is the number of workers.
    pub ports: Vec<u16>,
    /// Addresses announced in SDP candidates, most preferred first (empty: `bind_ip`; they must
    /// be reachable by clients). Needed when `bind_ip` is unspecified (`0.0.0.0`): the workers
    /// answer from whichever local address the kernel routes the reply through, so announce
    /// addresses the clients reach this host at.
    pub announced_ips: Vec<IpAddr>,
    /// Subscribe transports a room keeps on its home worker before new subscribers go to the
    /// least-loaded worker (the room then spans workers through pipes).
    pub spill_after: usize,
    /// Forwarding tunables of every worker's sfu-core (retransmission limits, SR throttle,
    /// publisher bitrate caps per track).
    pub core: sfu_core::Config,
    /// What publishers may ask of the node: tracks and m-lines per offer, publishes per second.
    pub publish: PublishPolicy,
    /// ICE-TCP: a TCP listener per worker (on its UDP port number when free) announced as
    /// passive candidates after the UDP ones, for clients whose UDP is blocked; `None` = off.
    pub ice_tcp: Option<IceTcpLimits>,
    /// Client transports (publish and subscribe PeerConnections) the node holds at once: at it,
    /// a session new to the node is refused with [`MediaError::Full`] (one already on it may
    /// open its other side); 0 = no cap. Reported in every load report, so signaling serves
    /// further members from other nodes.
    pub max_transports: usize,
}

impl NodeConfig {
    /// `workers` workers on free loopback ports (tests, `mooyaho dev`).
    pub fn loopback(workers: usize) -> Self {
        Self {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            ports: vec![0; workers.max(1)],
            announced_ips: Vec::new(),
            spill_after: DEFAULT_SPILL_AFTER,
            core: sfu_core::Config::default(),
            publish: PublishPolicy::default(),
            ice_tcp: None,
            max_transports: 0,
        }
    }
}

/// One core forwards to a few hundred subscribers comfortably (DESIGN §4: single-threaded rooms
/// stall at ~100–300); past that a room borrows other cores.
pub const DEFAULT_SPILL_AFTER: usize = 150;

/// A room's address on the node: the worker hosting it and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoomKey {
    /// Worker index.
    pub worker: usize,
    /// Room id within the worker.
    pub room: RoomId,
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.worker, self.room.to_u64())
    }
}

impl FromStr for RoomKey {
    type Err = MediaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (worker, room) = s.split_once('.').ok_or(MediaError::UnknownRoom)?;
        Ok(Self {
            worker: worker.parse().map_err(|_| MediaError::UnknownRoom)?,
            room: RoomId::from_u64(room.parse().map_err(|_| MediaError::UnknownRoom)?),
        })
    }
}

/// Statistics of the whole node.
#[derive(Clone, Debug, Default)]
pub struct NodeStats {
    /// One entry per worker.
    pub workers: Vec<WorkerStats>,
    /// ICE-TCP connections (all zero when ICE-TCP is off).
    pub ice_tcp: IceTcpStats,
}

impl NodeStats {
    /// Rooms across workers.
    pub fn rooms(&self) -> usize {
        self.workers.iter().map(|w| w.rooms).sum()
    }

    /// Transports across workers.
    pub fn transports(&self) -> usize {
        self.workers.iter().map(|w| w.transports).sum()
    }

    /// Relay links to and from other nodes, across workers.
    pub fn relay_links(&self) -> RelayLinkCounts {
        self.workers
            .iter()
            .fold(RelayLinkCounts::default(), |sum, w| RelayLinkCounts {
                sending: sum.sending + w.relay_links.sending,
                receiving: sum.receiving + w.relay_links.receiving,
            })
    }
}

/// A running SFU node.
#[derive(Debug)]
pub struct Node {
    workers: Vec<WorkerHandle>,
    identity: DtlsIdentity,
    next_worker: AtomicUsize,
    spill_after: usize,
    placement: Mutex<Placement>,
    /// Serialises pipe setup, so two subscribers cannot open the same pipe twice.
    setup: tokio::sync::Mutex<()>,
    /// No new rooms (existing rooms finish).
    draining: std::sync::atomic::AtomicBool,
    /// The first worker that died or got stuck, if any (kept here so the channel never closes).
    failures: FailureSender,
    /// Each worker's progress counter; the watchdog thread holds a weak reference and ends
    /// with the node.
    _progress: Arc<[Arc<Progress>]>,
    /// The ICE-TCP listeners, when enabled.
    ice_tcp: Option<IceTcp>,
    /// The client transports the node holds, against [`NodeConfig::max_transports`].
    admission: Mutex<Admission>,
}

/// Whether [`Admission::admit`] made room for a new transport or the session already held one
/// of that side (re-offers and re-publishes replace it in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admitted {
    New,
    Held,
}

/// The node's client transports against its cap: a slot is taken before a worker is asked to
/// make a transport (so concurrent requests cannot overshoot), and given back when the
/// request fails, the session or room closes, or the worker closes the transport.
#[derive(Debug, Default)]
struct Admission {
    /// 0 = no cap.
    max: usize,
    held: std::collections::HashSet<(RoomKey, String, Direction)>,
}

impl Admission {
    fn admit(
        &mut self,
        room: RoomKey,
        session: &str,
        side: Direction,
    ) -> Result<Admitted, MediaError> {
        let key = (room, session.to_owned(), side);
        if self.held.contains(&key) {
            return Ok(Admitted::Held);
        }
        // A session already on the node may open its other side: a member's publish and
        // subscribe transports stay on one node (so the cap can be passed by at most one
        // transport per session; a full node takes no new session).
        let on_node = || self.held.iter().any(|(r, s, _)| *r == room && s == session);
        if self.max > 0 && self.held.len() >= self.max && !on_node() {
            return Err(MediaError::Full { max: self.max });
        }
        self.held.insert(key);
        Ok(Admitted::New)
    }

    fn release(&mut self, room: RoomKey, session: &str, side: Direction) {
        self.held.remove(&(room, session.to_owned(), side));
    }

    fn release_session(&mut self, room: RoomKey, session: &str) {
        self.held
            .retain(|(r, s, _)| !(*r == room && s.as_str() == session));
    }

    fn release_room(&mut self, room: RoomKey) {
        self.held.retain(|(r, _, _)| *r != room);
    }
}

/// Where each room lives on this node: the workers it spans and which one holds each
/// subscriber. Node-level only (a room's media state is in each worker's sfu-core); touched by
/// control requests, never by the packet path.
#[derive(Debug, Default)]
struct Placement {
    rooms: HashMap<RoomKey, RoomWorkers>,
    /// A room's part on another worker → the room as the control plane knows it.
    aliases: HashMap<RoomKey, RoomKey>,
    /// Subscribe transports per worker, across rooms (placement weight).
    load: Vec<usize>,
}

/// The workers one room spans.
#[derive(Debug, Default)]
struct RoomWorkers {
    /// Worker → this room's part there (the home worker's is the room itself).
    parts: HashMap<usize, RoomId>,
    /// Session → worker holding its subscribe transport.
    subscribers: HashMap<String, usize>,
}

impl Placement {
    fn new(workers: usize) -> Self {
        Self {
            load: vec![0; workers],
            ..Self::default()
        }
    }

    /// A room just opened on its home worker.
    fn open(&mut self, room: RoomKey) {
        let mut workers = RoomWorkers::default();
        workers.parts.insert(room.worker, room.room);
        self.rooms.insert(room, workers);
    }

    /// The room's part on `worker`, once it spans it.
    fn part(&self, room: RoomKey, worker: usize) -> Option<RoomId> {
        self.rooms.get(&room)?.parts.get(&worker).copied()
    }

    /// The room now spans `worker` through `part`.
    fn add_part(&mut self, room: RoomKey, worker: usize, part: RoomId) {
        if let Some(workers) = self.rooms.get_mut(&room) {
            workers.parts.insert(worker, part);
            self.aliases.insert(RoomKey { worker, room: part }, room);
        }
    }

    /// The room a worker's part belongs to (the part itself for a home room).
    fn room_of(&self, part: RoomKey) -> RoomKey {
        self.aliases.get(&part).copied().unwrap_or(part)
    }

    /// The worker (and the room's part there) holding `session`'s subscribe transport.
    fn subscriber(
        &self,
        room: RoomKey,
        session: &str,
    ) -> Result<Option<(usize, RoomId)>, MediaError> {
        let workers = self.rooms.get(&room).ok_or(MediaError::UnknownRoom)?;
        Ok(workers
            .subscribers
            .get(session)
            .map(|&w| (w, workers.parts[&w])))
    }

    /// Where a new subscriber of `room` goes: its home worker until `spill_after` subscribers
    /// are there, then the least-loaded worker (home on a tie).
    fn worker_for_new_subscriber(
        &self,
        room: RoomKey,
        spill_after: usize,
    ) -> Result<usize, MediaError> {
        let workers = self.rooms.get(&room).ok_or(MediaError::UnknownRoom)?;
        let at_home = workers
            .subscribers
            .values()
            .filter(|w| **w == room.worker)
            .count();
        if at_home < spill_after {
            return Ok(room.worker);
        }
        Ok((0..self.load.len())
            .min_by_key(|w| (self.load[*w], *w != room.worker))
            .unwrap_or(room.worker))
    }

    /// `session` subscribes on `worker` (counted once however often it is re-offered).
    fn place_subscriber(&mut self, room: RoomKey, session: &str, worker: usize) {
        let placed = self
            .rooms
            .get_mut(&room)
            .and_then(|w| w.subscribers.insert(session.to_owned(), worker))
            .is_none();
        if placed && let Some(load) = self.load.get_mut(worker) {
            *load += 1;
        }
    }

    /// `session` left: where its subscribe transport was, if it had one.
    fn remove_subscriber(
        &mut self,
        room: RoomKey,
        session: &str,
    ) -> Result<Option<(usize, RoomId)>, MediaError> {
        let workers = self.rooms.get_mut(&room).ok_or(MediaError::UnknownRoom)?;
        let Some(worker) = workers.subscribers.remove(session) else {
            return Ok(None);
        };
        let part = workers.parts[&worker];
        if let Some(load) = self.load.get_mut(worker) {
            *load = load.saturating_sub(1);
        }
        Ok(Some((worker, part)))
    }

    /// The room closed: every part it had, its home last (so no pipe outlives its home).
    fn close(&mut self, room: RoomKey) -> Result<Vec<(usize, RoomId)>, MediaError> {
        let workers = self.rooms.remove(&room).ok_or(MediaError::UnknownRoom)?;
        for (worker, part) in &workers.parts {
            self.aliases.remove(&RoomKey {
                worker: *worker,
                room: *part,
            });
        }
        for worker in workers.subscribers.values() {
            if let Some(load) = self.load.get_mut(*worker) {
                *load = load.saturating_sub(1);
            }
        }
        let mut parts: Vec<_> = workers.parts.into_iter().collect();
        parts.sort_by_key(|(worker, _)| *worker == room.worker);
        Ok(parts)
    }
}

impl Node {
    /// Binds the workers' sockets and starts their threads. Node events (renegotiation needed,
    /// transport state) arrive on the returned receiver.
    pub fn start(
        config: &NodeConfig,
    ) -> std::io::Result<(Self, mpsc::UnboundedReceiver<NodeEvent>)> {
        let identity = DtlsIdentity::generate().map_err(std::io::Error::other)?;
        let (events, receiver) = mpsc::unbounded_channel();
        let count = config.ports.len().max(1);
        let mut inboxes = Vec::with_capacity(count);
        let mut peers = Vec::with_capacity(count);
        for _ in 0..count {
            let (queue, inbox) = std::sync::mpsc::sync_channel(PIPE_DEPTH);
            let wake = Arc::new(Wake::new()?);
            peers.push(PipeSender { queue, wake });
            inboxes.push(inbox);
        }
        let failures: FailureSender = Arc::new(tokio::sync::watch::channel(None).0);
        let progress: Arc<[Arc<Progress>]> = (0..count).map(|_| Arc::default()).collect();
        let mut workers = Vec::with_capacity(count);
        let mut tcp_listeners = Vec::new();
        // This node as the origin of its tracks on relay links (a cycle brings it back).
        let relay_origin: u64 = rand::random();
        for ((index, port), inbox) in config.ports.iter().enumerate().zip(inboxes) {
            let socket = Socket::bind(SocketAddr::new(config.bind_ip, *port))?;
            let local = socket.local_addr()?;
            let ips = if config.announced_ips.is_empty() {
                vec![local.ip()]
            } else {
                config.announced_ips.clone()
            };
            let mut announced: Vec<Candidate> = ips
                .iter()
                .map(|ip| Candidate::udp(SocketAddr::new(*ip, local.port())))
                .collect();
            if config.ice_tcp.is_some() {
                // The UDP port number when TCP's is free there (one port to open in firewalls).
                let listener = std::net::TcpListener::bind(local)
                    .or_else(|_| std::net::TcpListener::bind(SocketAddr::new(local.ip(), 0)))?;
                let tcp_port = listener.local_addr()?.port();
                announced.extend(
                    ips.iter()
                        .map(|ip| Candidate::tcp_passive(SocketAddr::new(*ip, tcp_port))),
                );
                tcp_listeners.push((listener, local));
            }
            let announced: Arc<[Candidate]> = announced.into();
            workers.push(WorkerHandle::spawn(
                index,
                socket,
                announced,
                identity.clone(),
                events.clone(),
                peers[index].wake.clone(),
                inbox,
                peers.clone(),
                failures.clone(),
                config.core.clone(),
                config.publish,
                progress[index].clone(),
                relay_origin,
            )?);
        }
        spawn_watchdog(Arc::downgrade(&progress), failures.clone())?;
        let ice_tcp = match config.ice_tcp {
            Some(limits) => Some(IceTcp::start(tcp_listeners, limits)?),
            None => None,
        };
        Ok((
            Self {
                ice_tcp,
                placement: Mutex::new(Placement::new(workers.len())),
                workers,
                identity,
                next_worker: AtomicUsize::new(0),
                spill_after: config.spill_after.max(1),
                setup: tokio::sync::Mutex::new(()),
                draining: std::sync::atomic::AtomicBool::new(false),
                failures,
                _progress: progress,
                admission: Mutex::new(Admission {
                    max: config.max_transports,
                    ..Admission::default()
                }),
            },
            receiver,
        ))
    }

    /// SHA-256 fingerprint of the node's DTLS certificate.
    pub fn fingerprint(&self) -> &str {
        &self.identity.fingerprint
    }

    /// The workers' UDP addresses.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.local_addr).collect()
    }

    /// The workers' ICE-TCP listener addresses (empty when ICE-TCP is off).
    pub fn tcp_addresses(&self) -> Vec<SocketAddr> {
        self.ice_tcp
            .as_ref()
            .map(|t| t.local_addrs().to_vec())
            .unwrap_or_default()
    }

    /// ICE-TCP counters (zero when ICE-TCP is off).
    pub fn ice_tcp_stats(&self) -> IceTcpStats {
        self.ice_tcp.as_ref().map(IceTcp::stats).unwrap_or_default()
    }

    fn worker(&self, index: usize) -> Result<&WorkerHandle, MediaError> {
        self.workers.get(index).ok_or(MediaError::UnknownRoom)
    }

    fn placement(&self) -> std::sync::MutexGuard<'_, Placement> {
        self.placement.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room (as the control plane names it) that a worker's part of a room belongs to.
    pub fn room_of(&self, worker: usize, room: RoomId) -> RoomKey {
        self.placement().room_of(RoomKey { worker, room })
    }

    /// Starts or stops draining: while draining, [`Node::create_room`] fails with
    /// [`MediaError::Draining`]; existing rooms keep working.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// The node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The rooms the node hosts (as the control plane names them; a room's parts on other
    /// workers are not listed).
    pub fn rooms(&self) -> Vec<RoomKey> {
        self.placement().rooms.keys().copied().collect()
    }

    /// Opens a room on the next worker (round robin).
    pub async fn create_room(&self) -> Result<RoomKey, MediaError> {
        if self.is_draining() {
            return Err(MediaError::Draining);
        }
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let room = self.worker(worker)?.call(Command::CreateRoom).await?;
        let key = RoomKey { worker, room };
        self.placement().open(key);
        Ok(key)
    }

    /// Answers `session`'s publish offer (publishers always connect to the room's home worker).
    pub async fn publish(
        &self,
        room: RoomKey,
        session: &str,
        offer: &str,
    ) -> Result<String, MediaError> {
        self.known(room)?;
        let admitted = self.admit(room, session, Direction::Publish)?;
        let publish = |reply| Command::Publish {
            room: room.room,
            session: session.to_owned(),
            offer: offer.to_owned(),
            reply,
        };
        let answer = self.call_worker(room.worker, publish).await;
        self.keep_if(answer.is_ok(), admitted, room, session, Direction::Publish);
        answer
    }

    /// The (re-)offer for `session`'s subscribe transport; `None` while nobody publishes. A new
    /// subscriber of a room that fills its home worker is placed on the least-loaded worker.
    pub async fn subscribe_offer(
        &self,
        room: RoomKey,
        session: &str,
    ) -> Result<Option<String>, MediaError> {
        let (worker, part) = self.subscriber_part(room, session).await?;
        let admitted = self.admit(room, session, Direction::Subscribe)?;
        let subscribe_offer = |reply| Command::SubscribeOffer {
            room: part,
            session: session.to_owned(),
            reply,
        };
        let offer = self.call_worker(worker, subscribe_offer).await;
        // No offer (nothing published yet) makes no transport: the slot is given back.
        let made = matches!(offer, Ok(Some(_)));
        self.keep_if(made, admitted, room, session, Direction::Subscribe);
        if made {
            self.placement().place_subscriber(room, session, worker);
        }
        offer
    }

    /// Answers `session`'s own subscribe offer (WHEP) with the room's tracks (only
    /// `publisher`'s when named), placed like any new subscriber.
    pub async fn subscribe_client_offer(
        &self,
        room: RoomKey,
        session: &str,
        offer: &str,
        publisher: Option<&str>,
    ) -> Result<String, MediaError> {
        let (worker, part) = self.subscriber_part(room, session).await?;
        let admitted = self.admit(room, session, Direction::Subscribe)?;
        let answer_offer = |reply| Command::SubscribeClientOffer {
            room: part,
            session: session.to_owned(),
            offer: offer.to_owned(),
            publisher: publisher.map(str::to_owned),
            reply,
        };
        let answer = self.call_worker(worker, answer_offer).await;
        self.keep_if(
            answer.is_ok(),
            admitted,
            room,
            session,
            Direction::Subscribe,
        );
        let answer = answer?;
        self.placement().place_subscriber(room, session, worker);
        Ok(answer)
    }

    /// Applies `session`'s answer to its latest subscribe offer.
    pub async fn subscribe_answer(
        &self,
        room: RoomKey,
        session: &str,
        answer: &str,
    ) -> Result<(), MediaError> {
        let (worker, part) = self
            .placement()
            .subscriber(room, session)?
            .ok_or(MediaError::NoTransport("subscribe"))?;
        let subscribe_answer = |reply| Command::SubscribeAnswer {
            room: part,
            session: session.to_owned(),
            answer: answer.to_owned(),
            reply,
        };
        self.worker(worker)?.call(subscribe_answer).await
    }

    /// Records what `session` wants of `publisher`'s media (its layer, or none) on the worker
    /// that holds (or will hold) its subscribe transport, and applies it there.
    pub async fn set_subscription(
        &self,
        room: RoomKey,
        session: &str,
        publisher: &str,
        video: mooyaho_control::VideoQuality,
        audio: Option<bool>,
    ) -> Result<(), MediaError> {
        let (worker, part) = self.subscriber_part(room, session).await?;
        let set_subscription = |reply| Command::SetSubscription {
            room: part,
            session: session.to_owned(),
            publisher: publisher.to_owned(),
            video,
            audio,
            reply,
        };
        self.worker(worker)?.call(set_subscription).await?;
        // Placed now if it was not: its subscribe transport will be made on that worker, and
        // the session's close reaches it there.
        self.placement().place_subscriber(room, session, worker);
        Ok(())
    }

    /// Removes a session's transports (others are told to renegotiate).
    pub async fn close_session(&self, room: RoomKey, session: &str) -> Result<(), MediaError> {
        let subscriber = self.placement().remove_subscriber(room, session)?;
        self.admission().release_session(room, session);
        let mut targets = vec![(room.worker, room.room)];
        if let Some(part) = subscriber.filter(|(w, _)| *w != room.worker) {
            targets.push(part);
        }
        for (worker, part) in targets {
            let close_session = |reply| Command::CloseSession {
                room: part,
                session: session.to_owned(),
                reply,
            };
            self.worker(worker)?.call(close_session).await?;
        }
        Ok(())
    }

    /// The room's speaker ranking now, loudest first (its home worker has every publisher).
    pub async fn speakers(&self, room: RoomKey) -> Result<Vec<Speaker>, MediaError> {
        self.known(room)?;
        let speakers = |reply| Command::Speakers {
            room: room.room,
            reply,
        };
        self.worker(room.worker)?.call(speakers).await
    }

    /// Closes a room and every transport in it, on every worker it spans.
    pub async fn close_room(&self, room: RoomKey) -> Result<(), MediaError> {
        let parts = self.placement().close(room)?;
        self.admission().release_room(room);
        for (worker, part) in parts {
            let close_room = |reply| Command::CloseRoom { room: part, reply };
            self.worker(worker)?.call(close_room).await?;
        }
        Ok(())
    }

    fn admission(&self) -> std::sync::MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a transport slot for `session`'s `side` in `room`, unless it holds one already.
    fn admit(&self, room: RoomKey, session: &str, side: Direction) -> Result<Admitted, MediaError> {
        let admitted = self.admission().admit(room, session, side);
        if let Err(MediaError::Full { max }) = &admitted {
            tracing::info!(%room, session, ?side, max, "transport refused: the node is full");
        }
        admitted
    }

    /// Gives back a slot taken for a new transport that was not made after all.
    fn keep_if(
        &self,
        made: bool,
        admitted: Admitted,
        room: RoomKey,
        session: &str,
        side: Direction,
    ) {
        if !made && admitted == Admitted::New {
            self.admission().release(room, session, side);
        }
    }

    async fn call_worker<T>(
        &self,
        worker: usize,
        command: impl FnOnce(crate::worker::Reply<T>) -> Command,
    ) -> Result<T, MediaError> {
        self.worker(worker)?.call(command).await
    }

    /// A worker closed `session`'s `side` transport in the part `room` of worker `worker`
    /// (consent expired, DTLS closed, never connected): its slot is free again.
    pub fn transport_closed(&self, worker: usize, room: RoomId, session: &str, side: Direction) {
        let room = self.room_of(worker, room);
        self.admission().release(room, session, side);
    }

    /// The node's transport cap (0 = none) and the client transports it holds now.
    pub fn transport_capacity(&self) -> (usize, usize) {
        let admission = self.admission();
        (admission.max, admission.held.len())
    }

    /// Receiving side of a relay link (cascading): `room` here is fed the tracks of a room on
    /// another node through link `link` (only `publisher`'s tracks), sealed under `keys.receive`; feedback goes back under
    /// `keys.send`. Returns the address the other node sends to (the room's home worker: it
    /// fans the tracks out to its subscribers, and through pipes to the node's other workers).
    pub async fn accept_relay(
        &self,
        room: RoomKey,
        link: u64,
        publisher: &str,
        keys: RelayKeys,
    ) -> Result<SocketAddr, MediaError> {
        self.known(room)?;
        let accept = |reply| Command::AcceptRelay {
            room: room.room,
            link,
            publisher: publisher.to_owned(),
            keys,
            reply,
        };
        self.worker(room.worker)?.call(accept).await
    }

    /// Sending side of a relay link: `publisher`'s tracks in `room` (its own or relayed here,
    /// now and later) go to `peer` (the other node's [`Node::accept_relay`] address) through
    /// link `link`.
    pub async fn open_relay(
        &self,
        room: RoomKey,
        link: u64,
        publisher: &str,
        keys: RelayKeys,
        peer: SocketAddr,
    ) -> Result<(), MediaError> {
        self.known(room)?;
        let open = |reply| Command::OpenRelay {
            room: room.room,
            link,
            publisher: publisher.to_owned(),
            keys,
            peer,
            reply,
        };
        self.worker(room.worker)?.call(open).await
    }

    /// Tears relay link `link` of `room` down (either side).
    pub async fn close_relay(&self, room: RoomKey, link: u64) -> Result<(), MediaError> {
        self.known(room)?;
        let close = |reply| Command::CloseRelay {
            room: room.room,
            link,
            reply,
        };
        self.worker(room.worker)?.call(close).await
    }

    fn known(&self, room: RoomKey) -> Result<(), MediaError> {
        if self.placement().rooms.contains_key(&room) {
            Ok(())
        } else {
            Err(MediaError::UnknownRoom)
        }
    }

    /// The worker (and the room's part there) for `session`'s subscribe transport, opening a
    /// pipe to that worker first if the room does not span it yet.
    async fn subscriber_part(
        &self,
        room: RoomKey,
        session: &str,
    ) -> Result<(usize, RoomId), MediaError> {
        let _setup = self.setup.lock().await;
        let worker = {
            let placement = self.placement();
            if let Some(placed) = placement.subscriber(room, session)? {
                return Ok(placed);
            }
            placement.worker_for_new_subscriber(room, self.spill_after)?
        };
        if let Some(part) = self.placement().part(room, worker) {
            return Ok((worker, part));
        }
        let accept_pipe = |reply| Command::AcceptPipe {
            home: room.worker,
            reply,
        };
        let (part, transport) = self.worker(worker)?.call(accept_pipe).await?;
        self.placement().add_part(room, worker, part);
        let open_pipe = |reply| Command::OpenPipe {
            room: room.room,
            worker,
            remote_room: part,
            remote_transport: transport,
            reply,
        };
        self.worker(room.worker)?.call(open_pipe).await?;
        tracing::info!(%room, worker, "room now spans another worker");
        Ok((worker, part))
    }

    /// The first worker that died or got stuck, if one did: the node is then unhealthy (its
    /// rooms on that worker are gone) and should exit so the fleet places new rooms elsewhere.
    pub fn worker_failure(&self) -> Option<WorkerFailure> {
        self.failures.borrow().clone()
    }

    /// Waits until a worker dies or is judged stuck (never returns while all are running).
    pub async fn worker_failed(&self) -> WorkerFailure {
        let mut failures = self.failures.subscribe();
        loop {
            if let Some(failure) = failures.borrow_and_update().clone() {
                return failure;
            }
            if failures.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// How many workers the node runs.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Statistics of worker `index`, when it gets to the request.
    pub async fn worker_stats(&self, index: usize) -> Result<WorkerStats, MediaError> {
        let worker = self.workers.get(index).ok_or(MediaError::WorkerGone)?;
        Ok(*worker.call(Command::Stats).await?)
    }

    /// Statistics of every worker.
    pub async fn stats(&self) -> Result<NodeStats, MediaError> {
        let mut stats = NodeStats {
            ice_tcp: self.ice_tcp_stats(),
            ..NodeStats::default()
        };
        for worker in &self.workers {
            stats.workers.push(*worker.call(Command::Stats).await?);
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_draining_node_refuses_new_rooms_but_keeps_old_ones() {
        let (node, _events) = Node::start(&NodeConfig::loopback(1)).unwrap();
        let room = node.create_room().await.unwrap();
        node.set_draining(true);
        assert!(matches!(
            node.create_room().await,
            Err(MediaError::Draining)
        ));
        assert_eq!(node.stats().await.unwrap().rooms(), 1);
        node.close_room(room).await.unwrap();
        node.set_draining(false);
        node.create_room().await.unwrap();
    }

    /// The cap counts client transports, a session's re-publish reuses its slot, and a closed
    /// session gives its slots back.
    #[tokio::test]
    async fn a_full_node_refuses_new_transports_with_a_typed_error_until_a_slot_frees() {
        let offer = include_str!("../tests/sdp_offers/chrome.sdp");
        let config = NodeConfig {
            max_transports: 2,
            ..NodeConfig::loopback(1)
        };
        let (node, _events) = Node::start(&config).unwrap();
        let room = node.create_room().await.unwrap();
        node.publish(room, "a", offer).await.unwrap();
        node.publish(room, "b", offer).await.unwrap();
        assert_eq!(node.transport_capacity(), (2, 2));
        assert!(matches!(
            node.publish(room, "c", offer).await,
            Err(MediaError::Full { max: 2 })
        ));
        // A new session's subscribe transport is refused too; `a`, already on the node, may
        // open its other side (a member stays whole on one node).
        assert!(matches!(
            node.subscribe_offer(room, "c").await,
            Err(MediaError::Full { max: 2 })
        ));
        assert!(node.subscribe_offer(room, "a").await.unwrap().is_some());
        assert_eq!(node.transport_capacity(), (2, 3));
        // Publishing again replaces a's transport in its own slot.
        node.publish(room, "a", offer).await.unwrap();
        assert_eq!(node.transport_capacity(), (2, 3));
        node.close_session(room, "b").await.unwrap();
        node.close_session(room, "a").await.unwrap();
        assert_eq!(node.transport_capacity(), (2, 0));
        node.publish(room, "c", offer).await.unwrap();
        // A refused request gives its slot back: a bad offer takes nothing.
        assert!(node.publish(room, "d", "not sdp").await.is_err());
        assert_eq!(node.transport_capacity(), (2, 1));
        node.close_room(room).await.unwrap();
        assert_eq!(node.transport_capacity(), (2, 0));
    }

    #[test]
    fn admission_without_a_cap_admits_everything_and_counts_it() {
        let mut admission = Admission::default();
        let room = key(0, 1);
        for n in 0..1000 {
            let session = n.to_string();
            assert_eq!(
                admission
                    .admit(room, &session, Direction::Subscribe)
                    .unwrap(),
                Admitted::New
            );
        }
        assert_eq!(
            admission.admit(room, "7", Direction::Subscribe).unwrap(),
            Admitted::Held
        );
        assert_eq!(admission.held.len(), 1000);
        admission.release_session(room, "7");
        admission.release(room, "8", Direction::Subscribe);
        assert_eq!(admission.held.len(), 998);
    }

    fn key(worker: usize, room: u64) -> RoomKey {
        RoomKey {
            worker,
            room: RoomId::from_u64(room),
        }
    }

    #[test]
    fn subscribers_stay_home_until_it_is_full_then_go_to_the_least_loaded_worker() {
        let mut placement = Placement::new(3);
        let room = key(1, 7);
        placement.open(room);
        for session in ["a", "b"] {
            assert_eq!(placement.worker_for_new_subscriber(room, 2).unwrap(), 1);
            placement.place_subscriber(room, session, 1);
        }
        // Re-offering a placed subscriber does not count it twice.
        placement.place_subscriber(room, "a", 1);
        assert_eq!(placement.load, [0, 2, 0]);
        // Home is full: the least-loaded worker, the lowest index on a tie.
        assert_eq!(placement.worker_for_new_subscriber(room, 2).unwrap(), 0);
        placement.add_part(room, 0, RoomId::from_u64(9));
        placement.place_subscriber(room, "c", 0);
        assert_eq!(
            placement.subscriber(room, "c").unwrap(),
            Some((0, RoomId::from_u64(9)))
        );
        assert_eq!(placement.worker_for_new_subscriber(room, 2).unwrap(), 2);
        // The remote part names the room the control plane knows.
        assert_eq!(placement.room_of(key(0, 9)), room);
        assert_eq!(placement.room_of(key(2, 9)), key(2, 9));
        assert!(placement.worker_for_new_subscriber(key(0, 1), 2).is_err());
    }

    #[test]
    fn leaving_and_closing_give_back_the_load_and_close_the_home_part_last() {
        let mut placement = Placement::new(2);
        let room = key(0, 1);
        placement.open(room);
        placement.add_part(room, 1, RoomId::from_u64(5));
        placement.place_subscriber(room, "a", 0);
        placement.place_subscriber(room, "b", 1);
        placement.place_subscriber(room, "c", 1);
        assert_eq!(
            placement.remove_subscriber(room, "b").unwrap(),
            Some((1, RoomId::from_u64(5)))
        );
        assert_eq!(placement.remove_subscriber(room, "b").unwrap(), None);
        assert_eq!(placement.load, [1, 1]);
        let parts = placement.close(room).unwrap();
        assert_eq!(parts, [(1, RoomId::from_u64(5)), (0, RoomId::from_u64(1))]);
        assert_eq!(placement.load, [0, 0]);
        assert!(placement.aliases.is_empty());
        assert!(placement.close(room).is_err());
        assert!(placement.remove_subscriber(room, "a").is_err());
    }

    #[test]
    fn room_keys_round_trip_and_reject_garbage() {
        let key = RoomKey {
            worker: 1,
            room: RoomId::from_u64(42),
        };
        assert_eq!(key.to_string().parse::<RoomKey>().unwrap(), key);
        for bad in ["", "1", "x.2", "1.y", "1.2.3"] {
            assert!(bad.parse::<RoomKey>().is_err(), "{bad}");
        }
    }
}
