//! A worker: one thread owning one UDP socket and one `sfu_core::Worker`, with every transport
//! of the rooms it hosts. The packet path (socket → SRTP → sfu-core → SRTP → socket) runs on this
//! thread alone: no lock, no queue between stages.

mod fuzzing;
mod link;
mod negotiate;
mod pipe;
mod relay;
mod thread;
mod timers;
mod watchdog;
mod wishes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use sfu_core::{CommandError, Direction, RoomId, TransportId};
use tokio::sync::{mpsc as async_mpsc, oneshot};

pub use fuzzing::fuzz_media_worker;
pub use negotiate::{PublishPolicy, PublishRate};
pub(crate) use pipe::{PIPE_DEPTH, PipeMessage, PipeSender};
pub use relay::{RelayKeys, RelayLinkCounts};
pub use thread::{WorkerCounters, WorkerStats};
pub(crate) use watchdog::{Progress, spawn as spawn_watchdog};

use crate::sdp::SdpError;
use mooyaho_net::dtls::DtlsIdentity;
use mooyaho_net::udp::{Socket, Wake};

/// Why a request to the media node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The client's SDP was refused.
    #[error(transparent)]
    Sdp(#[from] SdpError),
    /// sfu-core refused the command.
    #[error("sfu-core: {0}")]
    Core(#[from] CommandError),
    /// No such room on this node.
    #[error("unknown room")]
    UnknownRoom,
    /// The session has no transport of that kind in the room.
    #[error("the session has no {0} transport in this room")]
    NoTransport(&'static str),
    /// The answer changed the client's DTLS fingerprint mid-session.
    #[error("the client's DTLS fingerprint changed")]
    FingerprintChanged,
    /// DTLS setup failed.
    #[error("dtls: {0}")]
    Dtls(String),
    /// The session published again sooner than its [`PublishRate`] allows.
    #[error("publishing too often: try again in {:.1} s", retry_after.as_secs_f64())]
    RateLimited {
        /// When the next publish will be accepted.
        retry_after: std::time::Duration,
    },
    /// The node is draining: no new rooms.
    #[error("the node is draining")]
    Draining,
    /// The node holds as many client transports as its cap allows (`--max-transports`).
    #[error("the node is full: it holds its cap of {max} transports")]
    Full {
        /// The cap.
        max: usize,
    },
    /// A subscriber named more publishers in its wishes than a node keeps.
    #[error("at most {0} subscription wishes per subscriber")]
    TooManyWishes(usize),
    /// A client offered a subscribe session for a session that already has one.
    #[error("the session already has a subscribe transport in this room")]
    AlreadySubscribed,
    /// A session cannot subscribe to its own media.
    #[error("a session does not receive its own media")]
    OwnMedia,
    /// The worker already holds a relay link of that id.
    #[error("a relay link of that id already exists")]
    RelayExists,
    /// No relay link of that id in that room.
    #[error("unknown relay link")]
    UnknownRelay,
    /// The worker thread is gone (node shutting down).
    #[error("media worker stopped")]
    WorkerGone,
}

/// Something the control plane must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The session's subscribe PeerConnection needs a (re-)offer: tracks came or went.
    RenegotiationNeeded {
        /// Worker index.
        worker: usize,
        /// Room.
        room: RoomId,
        /// The subscribing session.
        session: String,
    },
    /// A transport completed ICE and DTLS.
    TransportConnected {
        /// Worker index.
        worker: usize,
        /// Room.
        room: RoomId,
        /// Its session.
        session: String,
        /// Which PeerConnection: the client's publish or subscribe side.
        direction: Direction,
    },
    /// A room's active speakers changed (at most once per room per speaker interval).
    ActiveSpeakers {
        /// Worker index.
        worker: usize,
        /// Room.
        room: RoomId,
        /// A session with a transport in the room, so the control plane can find its channel
        /// even when nobody speaks.
        member: String,
        /// Loudest first; empty when nobody speaks.
        speakers: Vec<Speaker>,
    },
    /// Dynacast: the layers anyone consumes of a session's simulcast video changed.
    SubscribedQualities {
        /// Worker index.
        worker: usize,
        /// Room.
        room: RoomId,
        /// The publishing session.
        session: String,
        /// The track's mid in the session's publish offer.
        mid: String,
        /// The consumed layers' rids, lowest first (empty for a layer without one).
        rids: Vec<String>,
        /// The consumed layers (0 = lowest).
        layers: Vec<u8>,
    },
    /// A transport was closed by the node (consent expired, never connected, DTLS closed).
    TransportClosed {
        /// Worker index.
        worker: usize,
        /// Room.
        room: RoomId,
        /// Its session.
        session: String,
        /// Which PeerConnection: the client's publish or subscribe side.
        direction: Direction,
        /// Why.
        reason: &'static str,
    },
    /// The worker closed the sending end of a relay link by itself: the receiving node
    /// answered nothing authentic (no feedback, no keepalive) for a while (it died, or its end
    /// was closed).
    RelayClosed {
        /// Worker index.
        worker: usize,
        /// Room.
        room: RoomId,
        /// The link.
        link: u64,
        /// The publisher whose tracks it carried.
        publisher: String,
        /// Why.
        reason: &'static str,
    },
}

/// One entry of a room's speaker ranking: the control protocol's own type, so the ranking goes
/// on the wire as the worker made it.
pub use mooyaho_control::Speaker;

/// A worker thread that died (a bug: packets and commands are handled without panicking) or is
/// stuck (its progress counter stood still, see `watchdog`). Its rooms are gone; the node must
/// not look healthy after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerFailure {
    /// Worker index.
    pub worker: usize,
    /// The panic message, or how long it made no progress.
    pub reason: String,
}

/// Where worker threads report their death: the node watches it.
pub(crate) type FailureSender = Arc<tokio::sync::watch::Sender<Option<WorkerFailure>>>;

/// Where a command's result goes: a oneshot typed by what that command answers, so a reply
/// never needs matching against the other commands' replies.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, MediaError>>;

/// A request to a worker, with the channel its reply goes to.
#[derive(Debug)]
pub(crate) enum Command {
    CreateRoom(Reply<RoomId>),
    CloseRoom {
        room: RoomId,
        reply: Reply<()>,
    },
    /// Answers with the SDP answer.
    Publish {
        room: RoomId,
        session: String,
        offer: String,
        reply: Reply<String>,
    },
    /// Answers with the (re-)offer, `None` while there is nothing to receive.
    SubscribeOffer {
        room: RoomId,
        session: String,
        reply: Reply<Option<String>>,
    },
    /// Answers a client's subscribe offer (WHEP) with the SDP answer.
    SubscribeClientOffer {
        room: RoomId,
        session: String,
        offer: String,
        publisher: Option<String>,
        reply: Reply<String>,
    },
    SubscribeAnswer {
        room: RoomId,
        session: String,
        answer: String,
        reply: Reply<()>,
    },
    CloseSession {
        room: RoomId,
        session: String,
        reply: Reply<()>,
    },
    SetSubscription {
        room: RoomId,
        session: String,
        publisher: String,
        video: mooyaho_control::VideoQuality,
        audio: Option<bool>,
        reply: Reply<()>,
    },
    Stats(Reply<Box<WorkerStats>>),
    /// Answers with the room's speaker ranking (see `Worker::speakers`).
    Speakers {
        room: RoomId,
        reply: Reply<Vec<Speaker>>,
    },
    /// Remote side of a spanning room: open a mirror room and its pipe transport.
    AcceptPipe {
        home: usize,
        reply: Reply<(RoomId, TransportId)>,
    },
    /// Receiving side of a relay link between nodes: answers with the address to send to.
    AcceptRelay {
        room: RoomId,
        link: u64,
        publisher: String,
        keys: RelayKeys,
        reply: Reply<SocketAddr>,
    },
    /// Sending side of a relay link: `publisher`'s tracks in `room` to `peer`.
    OpenRelay {
        room: RoomId,
        link: u64,
        publisher: String,
        keys: RelayKeys,
        peer: SocketAddr,
        reply: Reply<()>,
    },
    /// Tears a relay link down (either side).
    CloseRelay {
        room: RoomId,
        link: u64,
        reply: Reply<()>,
    },
    /// Home side: pipe every track of `room` to `worker`'s pipe transport.
    OpenPipe {
        room: RoomId,
        worker: usize,
        remote_room: RoomId,
        remote_transport: TransportId,
        reply: Reply<()>,
    },
}

/// The node's handle on one worker thread.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    requests: mpsc::Sender<Command>,
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
    /// What the watchdog reads (and whether it judged the thread stuck).
    progress: Arc<Progress>,
    pub(crate) local_addr: SocketAddr,
}

impl WorkerHandle {
    /// Starts worker `index` on `socket`; `announced` are its SDP candidates.
    /// `wake` and `pipe_inbox` are this worker's; `pipe_peers` reach every worker.
    #[allow(clippy::too_many_arguments)] // one call site, in Node::start
    pub(crate) fn spawn(
        index: usize,
        socket: Socket,
        announced: Arc<[crate::sdp::Candidate]>,
        identity: DtlsIdentity,
        events: async_mpsc::UnboundedSender<NodeEvent>,
        wake: Arc<Wake>,
        pipe_inbox: mpsc::Receiver<PipeMessage>,
        pipe_peers: Vec<PipeSender>,
        failures: FailureSender,
        core: sfu_core::Config,
        publish_policy: PublishPolicy,
        progress: Arc<Progress>,
        relay_origin: u64,
    ) -> std::io::Result<Self> {
        let local_addr = socket.local_addr()?;
        let (requests, inbox) = mpsc::channel();
        let thread_wake = wake.clone();
        let thread_progress = progress.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mooyaho-worker-{index}"))
            .spawn(move || {
                // The worker state is dropped with the panic: nothing observes it half-updated.
                let run = std::panic::AssertUnwindSafe(|| {
                    let mut worker = thread::Worker::new(
                        index,
                        Some(socket),
                        announced, identity, events, pipe_peers, pipe_inbox, core,
                    );
                    worker.publish_policy = publish_policy;
                    worker.relays.origin = relay_origin;
                    worker.progress = thread_progress;
                    worker.run(&inbox, &thread_wake);
                });
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let reason = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic".to_owned());
                    tracing::error!(worker = index, %reason, "media worker died; its rooms are lost");
                    failures.send_replace(Some(WorkerFailure {
                        worker: index,
                        reason,
                    }));
                }
            })?;
        Ok(Self {
            requests,
            wake,
            thread: Some(thread),
            progress,
            local_addr,
        })
    }

    /// Sends the command `build` makes around its reply channel, and waits for the reply.
    pub(crate) async fn call<T>(
        &self,
        build: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, MediaError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(build(reply))
            .map_err(|_| MediaError::WorkerGone)?;
        self.wake.wake();
        answer.await.map_err(|_| MediaError::WorkerGone)?
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        // Closing the request channel tells the loop to stop.
        let (closed, _) = mpsc::channel();
        self.requests = closed;
        self.wake.wake();
        // A stuck thread never ends: waiting for it would hang the node's exit.
        if let Some(thread) = self.thread.take()
            && !self.progress.is_stuck()
        {
            let _ = thread.join();
        }
    }
}
