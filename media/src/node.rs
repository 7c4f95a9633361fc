//! The SFU node as a library: per-core workers plus the API the control plane calls (create a
//! room, answer a publish offer, offer and finish a subscribe transport, close, stats).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use sfu_core::RoomId;
use tokio::sync::mpsc;

use crate::connection::dtls::DtlsIdentity;
use crate::udp::Socket;
use crate::worker::{Command, MediaError, NodeEvent, Reply, WorkerHandle, WorkerStats};

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Address the workers' UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// One UDP port per worker (0 = any free port); its length is the number of workers.
    pub ports: Vec<u16>,
    /// Address announced in SDP candidates (defaults to `bind_ip`; must be reachable by clients).
    pub announced_ip: Option<IpAddr>,
}

impl NodeConfig {
    /// `workers` workers on free loopback ports (tests, `mooyaho dev`).
    pub fn loopback(workers: usize) -> Self {
        Self {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            ports: vec![0; workers.max(1)],
            announced_ip: None,
        }
    }
}

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
}

impl Node {
    /// Binds the workers' sockets and starts their threads. Node events (renegotiation needed,
    /// transport state) arrive on the returned receiver.
    pub fn start(
        config: &NodeConfig,
    ) -> std::io::Result<(Self, mpsc::UnboundedReceiver<NodeEvent>)> {
        let identity = DtlsIdentity::generate().map_err(std::io::Error::other)?;
        let (events, receiver) = mpsc::unbounded_channel();
        let mut workers = Vec::with_capacity(config.ports.len());
        for (index, port) in config.ports.iter().enumerate() {
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
            )?);
        }
        Ok((
            Self {
                workers,
                identity,
                next_worker: AtomicUsize::new(0),
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

    /// Opens a room on the next worker (round robin).
    pub async fn create_room(&self) -> Result<RoomKey, MediaError> {
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        match self.worker(worker)?.call(Command::CreateRoom).await? {
            Reply::Room(room) => Ok(RoomKey { worker, room }),
            other => unreachable!("CreateRoom answered {other:?}"),
        }
    }

    /// Answers `session`'s publish offer.
    pub async fn publish(
        &self,
        room: RoomKey,
        session: &str,
        offer: &str,
    ) -> Result<String, MediaError> {
        let command = Command::Publish {
            room: room.room,
            session: session.to_owned(),
            offer: offer.to_owned(),
        };
        match self.worker(room.worker)?.call(command).await? {
            Reply::Published { answer, .. } => Ok(answer),
            other => unreachable!("Publish answered {other:?}"),
        }
    }

    /// The (re-)offer for `session`'s subscribe transport; `None` while nobody publishes.
    pub async fn subscribe_offer(
        &self,
        room: RoomKey,
        session: &str,
    ) -> Result<Option<String>, MediaError> {
        let command = Command::SubscribeOffer {
            room: room.room,
            session: session.to_owned(),
        };
        match self.worker(room.worker)?.call(command).await? {
            Reply::Offer(offer) => Ok(offer),
            other => unreachable!("SubscribeOffer answered {other:?}"),
        }
    }

    /// Applies `session`'s answer to its latest subscribe offer.
    pub async fn subscribe_answer(
        &self,
        room: RoomKey,
        session: &str,
        answer: &str,
    ) -> Result<(), MediaError> {
        let command = Command::SubscribeAnswer {
            room: room.room,
            session: session.to_owned(),
            answer: answer.to_owned(),
        };
        self.worker(room.worker)?.call(command).await.map(drop)
    }

    /// Removes a session's transports (others are told to renegotiate).
    pub async fn close_session(&self, room: RoomKey, session: &str) -> Result<(), MediaError> {
        let command = Command::CloseSession {
            room: room.room,
            session: session.to_owned(),
        };
        self.worker(room.worker)?.call(command).await.map(drop)
    }

    /// Closes a room and every transport in it.
    pub async fn close_room(&self, room: RoomKey) -> Result<(), MediaError> {
        self.worker(room.worker)?
            .call(Command::CloseRoom(room.room))
            .await
            .map(drop)
    }

    /// Statistics of every worker.
    pub async fn stats(&self) -> Result<NodeStats, MediaError> {
        let mut stats = NodeStats::default();
        for worker in &self.workers {
            match worker.call(Command::Stats).await? {
                Reply::Stats(s) => stats.workers.push(*s),
                other => unreachable!("Stats answered {other:?}"),
            }
        }
        Ok(stats)
    }
}
