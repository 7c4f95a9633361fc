//! The SFU node as a library: per-core workers plus the API the control plane calls (create a
//! room, answer a publish offer, offer and finish a subscribe transport, close, stats).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sfu_core::RoomId;
use tokio::sync::mpsc;

use crate::connection::dtls::DtlsIdentity;
use crate::worker::{
    Command, FailureSender, MediaError, NodeEvent, PIPE_DEPTH, PipeSender, PublishPolicy,
    WorkerFailure, WorkerHandle, WorkerStats,
};
use mooyaho_net::udp::{Socket, Wake};

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Address the workers' UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// One UDP port per worker (0 = any free port); its length is the number of workers.
    pub ports: Vec<u16>,
    /// Address announced in SDP candidates (defaults to `bind_ip`; must be reachable by clients).
    pub announced_ip: Option<IpAddr>,
    /// Subscribe transports a room keeps on its home worker before new subscribers go to the
    /// least-loaded worker (the room then spans workers through pipes).
    pub spill_after: usize,
    /// Forwarding tunables of every worker's sfu-core (retransmission limits, SR throttle,
    /// publisher bitrate caps per track).
    pub core: sfu_core::Config,
    /// What publishers may ask of the node: tracks and m-lines per offer, publishes per second.
    pub publish: PublishPolicy,
}

impl NodeConfig {
    /// `workers` workers on free loopback ports (tests, `mooyaho dev`).
    pub fn loopback(workers: usize) -> Self {
        Self {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            ports: vec![0; workers.max(1)],
            announced_ip: None,
            spill_after: DEFAULT_SPILL_AFTER,
            core: sfu_core::Config::default(),
            publish: PublishPolicy::default(),
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
}

/// A running SFU node.
#[derive(Debug)]
pub struct Node {
    workers: Vec<WorkerHandle>,
    identity: DtlsIdentity,
    next_worker: AtomicUsize,
    spill_after: usize,
    spans: Mutex<Spans>,
    /// Serialises pipe setup, so two subscribers cannot open the same pipe twice.
    setup: tokio::sync::Mutex<()>,
    /// No new rooms (existing rooms finish).
    draining: std::sync::atomic::AtomicBool,
    /// The first worker that died, if any (kept here so the channel never closes).
    failures: FailureSender,
}

/// Which workers each room uses. Touched by control requests only, never by the packet path.
#[derive(Debug, Default)]
struct Spans {
    rooms: HashMap<RoomKey, Span>,
    /// A remote part of a room → the room as the control plane knows it.
    aliases: HashMap<RoomKey, RoomKey>,
    /// Subscribe transports per worker, across rooms (placement weight).
    load: Vec<usize>,
}

#[derive(Debug, Default)]
struct Span {
    /// Worker → this room's part there (the home worker's is the room itself).
    parts: HashMap<usize, RoomId>,
    /// Session → worker holding its subscribe transport.
    subscribers: HashMap<String, usize>,
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
        let mut workers = Vec::with_capacity(count);
        for ((index, port), inbox) in config.ports.iter().enumerate().zip(inboxes) {
            let socket = Socket::bind(SocketAddr::new(config.bind_ip, *port))?;
            let local = socket.local_addr()?;
            let announced = SocketAddr::new(
                config.announced_ip.unwrap_or_else(|| local.ip()),
                local.port(),
            );
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
            )?);
        }
        Ok((
            Self {
                spans: Mutex::new(Spans {
                    load: vec![0; workers.len()],
                    ..Spans::default()
                }),
                workers,
                identity,
                next_worker: AtomicUsize::new(0),
                spill_after: config.spill_after.max(1),
                setup: tokio::sync::Mutex::new(()),
                draining: std::sync::atomic::AtomicBool::new(false),
                failures,
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

    fn worker(&self, index: usize) -> Result<&WorkerHandle, MediaError> {
        self.workers.get(index).ok_or(MediaError::UnknownRoom)
    }

    fn spans(&self) -> std::sync::MutexGuard<'_, Spans> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room (as the control plane names it) that a worker's part of a room belongs to.
    pub fn room_of(&self, worker: usize, room: RoomId) -> RoomKey {
        let part = RoomKey { worker, room };
        self.spans().aliases.get(&part).copied().unwrap_or(part)
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
        self.spans().rooms.keys().copied().collect()
    }

    /// Opens a room on the next worker (round robin).
    pub async fn create_room(&self) -> Result<RoomKey, MediaError> {
        if self.is_draining() {
            return Err(MediaError::Draining);
        }
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let room = self.worker(worker)?.call(Command::CreateRoom).await?;
        let key = RoomKey { worker, room };
        let mut span = Span::default();
        span.parts.insert(worker, room);
        self.spans().rooms.insert(key, span);
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
        let publish = |reply| Command::Publish {
            room: room.room,
            session: session.to_owned(),
            offer: offer.to_owned(),
            reply,
        };
        self.worker(room.worker)?.call(publish).await
    }

    /// The (re-)offer for `session`'s subscribe transport; `None` while nobody publishes. A new
    /// subscriber of a room that fills its home worker is placed on the least-loaded worker.
    pub async fn subscribe_offer(
        &self,
        room: RoomKey,
        session: &str,
    ) -> Result<Option<String>, MediaError> {
        let (worker, part) = self.subscriber_part(room, session).await?;
        let subscribe_offer = |reply| Command::SubscribeOffer {
            room: part,
            session: session.to_owned(),
            reply,
        };
        let offer = self.worker(worker)?.call(subscribe_offer).await?;
        if offer.is_some() {
            let mut spans = self.spans();
            let placed = spans
                .rooms
                .get_mut(&room)
                .and_then(|s| s.subscribers.insert(session.to_owned(), worker))
                .is_none();
            if placed && let Some(load) = spans.load.get_mut(worker) {
                *load += 1;
            }
        }
        Ok(offer)
    }

    /// Applies `session`'s answer to its latest subscribe offer.
    pub async fn subscribe_answer(
        &self,
        room: RoomKey,
        session: &str,
        answer: &str,
    ) -> Result<(), MediaError> {
        let (worker, part) = {
            let spans = self.spans();
            let span = spans.rooms.get(&room).ok_or(MediaError::UnknownRoom)?;
            let worker = *span
                .subscribers
                .get(session)
                .ok_or(MediaError::NoTransport("subscribe"))?;
            (worker, span.parts[&worker])
        };
        let subscribe_answer = |reply| Command::SubscribeAnswer {
            room: part,
            session: session.to_owned(),
            answer: answer.to_owned(),
            reply,
        };
        self.worker(worker)?.call(subscribe_answer).await
    }

    /// Removes a session's transports (others are told to renegotiate).
    pub async fn close_session(&self, room: RoomKey, session: &str) -> Result<(), MediaError> {
        let subscriber = {
            let mut spans = self.spans();
            let span = spans.rooms.get_mut(&room).ok_or(MediaError::UnknownRoom)?;
            let worker = span.subscribers.remove(session);
            let part = worker.map(|w| (w, span.parts[&w]));
            if let Some((w, _)) = part
                && let Some(load) = spans.load.get_mut(w)
            {
                *load = load.saturating_sub(1);
            }
            part
        };
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

    /// Closes a room and every transport in it, on every worker it spans.
    pub async fn close_room(&self, room: RoomKey) -> Result<(), MediaError> {
        let span = {
            let mut spans = self.spans();
            let span = spans.rooms.remove(&room).ok_or(MediaError::UnknownRoom)?;
            for (worker, part) in &span.parts {
                spans.aliases.remove(&RoomKey {
                    worker: *worker,
                    room: *part,
                });
            }
            for worker in span.subscribers.values() {
                if let Some(load) = spans.load.get_mut(*worker) {
                    *load = load.saturating_sub(1);
                }
            }
            span
        };
        // Remote parts first, so no pipe outlives its home.
        let mut parts: Vec<_> = span.parts.into_iter().collect();
        parts.sort_by_key(|(worker, _)| *worker == room.worker);
        for (worker, part) in parts {
            let close_room = |reply| Command::CloseRoom { room: part, reply };
            self.worker(worker)?.call(close_room).await?;
        }
        Ok(())
    }

    fn known(&self, room: RoomKey) -> Result<(), MediaError> {
        if self.spans().rooms.contains_key(&room) {
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
            let spans = self.spans();
            let span = spans.rooms.get(&room).ok_or(MediaError::UnknownRoom)?;
            if let Some(worker) = span.subscribers.get(session) {
                return Ok((*worker, span.parts[worker]));
            }
            let at_home = span
                .subscribers
                .values()
                .filter(|w| **w == room.worker)
                .count();
            if at_home < self.spill_after {
                room.worker
            } else {
                (0..self.workers.len())
                    .min_by_key(|w| (spans.load[*w], *w != room.worker))
                    .unwrap_or(room.worker)
            }
        };
        if let Some(part) = self.spans().rooms[&room].parts.get(&worker) {
            return Ok((worker, *part));
        }
        let accept_pipe = |reply| Command::AcceptPipe {
            home: room.worker,
            reply,
        };
        let (part, transport) = self.worker(worker)?.call(accept_pipe).await?;
        {
            let mut spans = self.spans();
            spans.aliases.insert(RoomKey { worker, room: part }, room);
            if let Some(span) = spans.rooms.get_mut(&room) {
                span.parts.insert(worker, part);
            }
        }
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

    /// The first worker that died, if one did: the node is then unhealthy (its rooms on that
    /// worker are gone) and should exit so the fleet places new rooms elsewhere.
    pub fn worker_failure(&self) -> Option<WorkerFailure> {
        self.failures.borrow().clone()
    }

    /// Waits until a worker dies (never returns while all are running).
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

    /// Statistics of every worker.
    pub async fn stats(&self) -> Result<NodeStats, MediaError> {
        let mut stats = NodeStats::default();
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
