//! The worker thread's state and loop: receive a batch, demultiplex each datagram to its
//! transport's [`Connection`](crate::connection::Connection) (ufrag and address tables), route
//! what it decrypts into `sfu_core`, drain the core's transmits through the connections' SRTP
//! into one `sendmmsg` batch, and run the connections' timers from one deadline queue.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sfu_core::{Direction, OutPacket, RoomId, TrackId, TransportId};
use tokio::sync::mpsc as async_mpsc;

use super::link::Link;
use super::negotiate::PublishPolicy;
use super::pipe::{PipeMessage, PipeSender, Pipes};
use super::relay::{RelayLinkCounts, Relays};
use super::timers::TimerQueue;
use super::watchdog::Progress;
use super::wishes::Wishes;
use super::{Command, MediaError, NodeEvent, Reply};
use crate::connection::paths::AddressChange;
use crate::connection::{ConnectionEvent, Received, Rejected};
use crate::sdp::PublishedTrack;
use mooyaho_net::PacketClass;
use mooyaho_net::dtls::DtlsIdentity;
use mooyaho_net::stun::{self, BindingRequest};
use mooyaho_net::udp::{MAX_DATAGRAM, RecvBatch, SendBatch, Socket, Wake};

/// Drop and error counters of one worker (every dropped packet is counted somewhere here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes of the datagrams received.
    pub bytes_in: u64,
    /// Bytes of the datagrams sent.
    pub bytes_out: u64,
    /// Transports whose DTLS handshake completed.
    pub dtls_handshakes: u64,
    /// Packets sent to other workers through pipes.
    pub pipe_packets: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    /// STUN messages dropped: malformed, unknown ufrag, bad integrity or fingerprint.
    pub stun_rejected: u64,
    /// DTLS datagrams from addresses that never passed ICE.
    pub dtls_unauthenticated: u64,
    /// DTLS handshakes or records that failed (including fingerprint mismatches).
    pub dtls_failures: u64,
    /// RTP/RTCP from addresses that never passed ICE, or before DTLS completed.
    pub media_unauthenticated: u64,
    /// SRTP/SRTCP packets that failed authentication.
    pub srtp_auth_failures: u64,
    /// SRTP/SRTCP packets refused as replays.
    pub srtp_replays: u64,
    /// SRTP/SRTCP packets of a new SSRC refused because the transport's context already keeps
    /// state for its maximum number of SSRCs (an SSRC flood).
    pub srtp_ssrc_cap_drops: u64,
    /// Outgoing packets SRTP refused to protect: their index was already used with other
    /// bytes (AES-GCM nonce reuse). Never expected; non-zero means a resend path is wrong.
    pub srtp_index_reuse_refused: u64,
    /// Datagrams of no known protocol.
    pub unknown_datagrams: u64,
    /// Packets dropped because another worker's pipe queue was full.
    pub pipe_drops: u64,
    /// Datagrams sent to other nodes over relay links (media, feedback, announcements).
    pub relay_packets_out: u64,
    /// Relay datagrams received that authenticated.
    pub relay_packets_in: u64,
    /// Relay datagrams naming no link of this worker (or too short to name one).
    pub relay_unknown_link: u64,
    /// Relay datagrams that failed authentication under their link's key (or carried what
    /// their direction never does).
    pub relay_auth_failures: u64,
    /// Relay datagrams refused as replays.
    pub relay_replays: u64,
    /// Packets or announcements too large for one relay datagram, not sent.
    pub relay_oversized: u64,
    /// Authentic track announcements refused as a relay cycle could make them: another session
    /// than the link's publisher, a publisher with tracks here already, this node's own
    /// tracks come back, too many hops or too many tracks on the link.
    pub relay_tracks_refused: u64,
    /// Receiving links whose tracks were unpublished after they heard nothing authentic for a
    /// while (the sending node died or closed its end).
    pub relay_links_silenced: u64,
    /// Sending links closed because their receiving node answered nothing authentic (no
    /// feedback, no keepalive) for a while: it died or its end was closed (outside review G5).
    pub relay_links_abandoned: u64,
    /// Datagrams whose ufrag or source address led to a transport that no longer exists. The
    /// tables are kept consistent, so this stays 0; a packet must never crash the worker.
    pub stale_routes: u64,
    /// Authenticated checks from an address another transport holds as a live path (selected,
    /// or consented within the consent timeout): dropped, so a participant who spoofs another's
    /// source address cannot take its media path.
    pub live_address_claims: u64,
}

impl WorkerCounters {
    /// Counts a datagram (or outgoing packet) a connection refused.
    fn count(&mut self, rejected: Rejected) {
        let counter = match rejected {
            Rejected::Stun => &mut self.stun_rejected,
            Rejected::DtlsUnexpected => &mut self.dtls_unauthenticated,
            Rejected::DtlsFailure => &mut self.dtls_failures,
            Rejected::NotConnected => &mut self.media_unauthenticated,
            Rejected::SrtpAuth => &mut self.srtp_auth_failures,
            Rejected::SrtpReplay => &mut self.srtp_replays,
            Rejected::SrtpSsrcCap => &mut self.srtp_ssrc_cap_drops,
            Rejected::SrtpIndexReused => &mut self.srtp_index_reuse_refused,
            Rejected::Unknown => &mut self.unknown_datagrams,
            // Too large to protect: logged by the connection; nothing was on the wire yet.
            Rejected::SrtpProtect => return,
        };
        *counter += 1;
    }
}

/// Snapshot of a worker.
#[derive(Clone, Debug)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: usize,
    /// Rooms hosted.
    pub rooms: usize,
    /// Sessions with a transport in those rooms.
    pub sessions: usize,
    /// Transports (publish + subscribe).
    pub transports: usize,
    /// Connected transports.
    pub connected: usize,
    /// Counters.
    pub counters: WorkerCounters,
    /// sfu-core statistics.
    pub core: sfu_core::Stats,
    /// Relay links to and from other nodes.
    pub relay_links: RelayLinkCounts,
    /// Time since the worker started.
    pub uptime: Duration,
    /// Of that, time spent waiting for packets, commands or timers.
    pub idle: Duration,
}

pub(super) struct Worker {
    pub(super) index: usize,
    /// The worker's UDP socket; `None` in the fuzz harness, which feeds datagrams to
    /// [`Self::handle_datagram`] and takes what would be sent with [`Self::take_sent`].
    socket: Option<Socket>,
    pub(super) announced: Arc<[crate::sdp::Candidate]>,
    pub(super) identity: DtlsIdentity,
    pub(super) events: async_mpsc::UnboundedSender<NodeEvent>,
    /// The rooms' media state: who is in each room, their transports and tracks.
    pub(super) core: sfu_core::Worker,
    /// What each live track's publisher negotiated (its m-line), for subscribe offers and
    /// pipes; an entry goes when sfu-core reports the track closed.
    pub(super) track_sdp: FxHashMap<TrackId, PublishedTrack>,
    /// Subscribers' wishes about publishers' media (`setSubscription`).
    pub(super) wishes: Wishes,
    /// Client transports' connections. Keys are ids we allocate, looked up once per sent
    /// packet: FxHash (no attacker chooses them).
    pub(super) links: FxHashMap<TransportId, Link>,
    /// Local ufrag → transport. Keys come from the network (attacker-chosen): default SipHash.
    pub(super) by_ufrag: HashMap<String, TransportId>,
    /// Validated remote address → transport. Attacker-influenced keys: default SipHash.
    pub(super) by_addr: HashMap<SocketAddr, TransportId>,
    pub(super) counters: WorkerCounters,
    recv: RecvBatch,
    pub(super) send: SendBatch,
    /// Decrypted received packets are carved from this chunk (`split` per packet, a fresh
    /// chunk when it runs out), so the allocation sfu-core's `Bytes` needs is amortised over
    /// dozens of packets. A chunk lives while any packet cut from it is still referenced.
    received: BytesMut,
    /// When subscribers whose offer went unanswered are looked at next.
    next_housekeeping: Instant,
    /// Every connection's next deadline: a loop turn looks at the earliest only (walking every
    /// transport on each turn was 10 % of an audio profile with 500 subscribers).
    pub(super) timers: TimerQueue<TransportId>,
    /// Pipes of rooms that span workers.
    pub(super) pipes: Pipes,
    /// Relay links to and from other nodes.
    pub(super) relays: Relays,
    /// Every worker's pipe queue, by worker index (ours included, unused).
    pub(super) pipe_peers: Vec<PipeSender>,
    /// Messages from other workers' pipes.
    pipe_inbox: mpsc::Receiver<PipeMessage>,
    /// Test hook, debug builds only: panic on `CreateRoom` (`MOOYAHO_DEBUG_WORKER_PANIC=create-room`),
    /// so tests can prove a dead worker takes the node down instead of leaving it looking healthy.
    #[cfg(debug_assertions)]
    panic_on_create_room: bool,
    /// Test hook, debug builds only: worker 0 wedges (blocks for good, still alive) at its next
    /// housekeeping once the file `MOOYAHO_DEBUG_WORKER_WEDGE` names exists, so tests can prove
    /// a stuck worker takes the node down like a dead one.
    #[cfg(debug_assertions)]
    wedge_when: Option<std::path::PathBuf>,
    /// Bumped as the worker goes; the node's watchdog reads it (see `watchdog`).
    pub(super) progress: Arc<Progress>,
    /// What publishers may ask of this worker.
    pub(super) publish_policy: PublishPolicy,
    /// When the worker started, and how long it has waited since (its busy share is the rest).
    started: Instant,
    idle: Duration,
}

/// How often unanswered subscribe offers are looked at, and the earliest a connection whose
/// timer did nothing is looked at again.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Bytes SRTP appends at most (SRTCP with GCM: 16-byte tag + 4-byte index word).
const SRTP_TRAILER: usize = 20;
/// Pooled chunk for decrypted packets: about 50 video packets per allocation.
const RECEIVE_CHUNK: usize = 64 * 1024;

impl Worker {
    #[allow(clippy::too_many_arguments)] // one call site, in WorkerHandle::spawn
    pub(super) fn new(
        index: usize,
        socket: Option<Socket>,
        announced: Arc<[crate::sdp::Candidate]>,
        identity: DtlsIdentity,
        events: async_mpsc::UnboundedSender<NodeEvent>,
        pipe_peers: Vec<PipeSender>,
        pipe_inbox: mpsc::Receiver<PipeMessage>,
        core: sfu_core::Config,
    ) -> Self {
        Self {
            index,
            socket,
            announced,
            identity,
            events,
            core: sfu_core::Worker::new(core),
            track_sdp: FxHashMap::default(),
            wishes: Wishes::default(),
            links: FxHashMap::default(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            counters: WorkerCounters::default(),
            recv: RecvBatch::default(),
            send: SendBatch::default(),
            received: BytesMut::new(),
            next_housekeeping: Instant::now() + HOUSEKEEPING,
            timers: TimerQueue::default(),
            pipes: Pipes::default(),
            relays: Relays::default(),
            pipe_peers,
            pipe_inbox,
            #[cfg(debug_assertions)]
            panic_on_create_room: std::env::var("MOOYAHO_DEBUG_WORKER_PANIC")
                .is_ok_and(|v| v == "create-room"),
            #[cfg(debug_assertions)]
            wedge_when: std::env::var_os("MOOYAHO_DEBUG_WORKER_WEDGE")
                .filter(|_| index == 0)
                .map(std::path::PathBuf::from),
            progress: Arc::default(),
            publish_policy: PublishPolicy::default(),
            started: Instant::now(),
            idle: Duration::ZERO,
        }
    }

    /// Runs until the request channel closes.
    pub(super) fn run(&mut self, inbox: &mpsc::Receiver<Command>, wake: &Wake) {
        loop {
            self.progress.bump();
            if !self.handle_commands(inbox) {
                return;
            }
            let piped = self.handle_pipe_inbox();
            let now = Instant::now();
            self.handle_timers(now);
            // Read every waiting datagram before sleeping: under load the loop never blocks.
            let mut received = 0;
            loop {
                let Some(socket) = &self.socket else {
                    return;
                };
                match socket.recv_batch(&mut self.recv) {
                    Ok(0) => break,
                    Ok(n) => {
                        received += n;
                        self.handle_batch(Instant::now());
                        self.progress.bump();
                        // A control request (a joining subscriber's offer or answer) waits for
                        // one batch, not for a whole turn of up to 4,096 datagrams and their
                        // fan-out: under a join wave into a busy room that was seconds.
                        if !self.handle_commands(inbox) {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "recvmmsg failed");
                        break;
                    }
                }
                if received > 4096 {
                    break; // let commands and timers in under sustained load
                }
            }
            if received == 0 && piped == 0 {
                let timeout = self
                    .next_deadline()
                    .saturating_duration_since(Instant::now());
                if let Some(socket) = &self.socket {
                    let waiting = Instant::now();
                    socket.wait(wake, timeout.max(Duration::from_micros(100)));
                    self.idle += waiting.elapsed();
                }
            }
        }
    }

    /// Handles every queued command; `false` once the node dropped the channel (stop).
    fn handle_commands(&mut self, inbox: &mpsc::Receiver<Command>) -> bool {
        loop {
            match inbox.try_recv() {
                Ok(command) => self.handle_command(command),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Applies every queued pipe message; returns how many.
    fn handle_pipe_inbox(&mut self) -> usize {
        let mut piped = 0;
        while let Ok(message) = self.pipe_inbox.try_recv() {
            self.handle_pipe_message(Instant::now(), message);
            piped += 1;
            if piped % 256 == 0 {
                self.drain(); // keep fan-out latency low under a burst
            }
        }
        if piped > 0 {
            self.drain();
        }
        piped
    }

    fn handle_command(&mut self, command: Command) {
        // A command may depend on pipe messages queued before it was sent (a subscriber placed
        // here right after its room's pipe opened must see the piped tracks).
        self.handle_pipe_inbox();
        self.progress.bump();
        let now = Instant::now();
        #[cfg(debug_assertions)]
        if self.panic_on_create_room && matches!(command, Command::CreateRoom(_)) {
            panic!(
                "MOOYAHO_DEBUG_WORKER_PANIC: worker {} panics on CreateRoom",
                self.index
            );
        }
        match command {
            Command::CreateRoom(reply) => {
                let result = self.create_room();
                self.reply(reply, result);
            }
            Command::CloseRoom { room, reply } => {
                let result = self.close_room(room);
                self.reply(reply, result);
            }
            Command::Publish {
                room,
                session,
                offer,
                reply,
            } => {
                let result = self.publish(now, room, session, &offer);
                self.reply(reply, result.map(|(_, answer)| answer));
            }
            Command::SubscribeOffer {
                room,
                session,
                reply,
            } => {
                let result = self.subscribe_offer(now, room, &session);
                self.reply(reply, result);
            }
            Command::SubscribeClientOffer {
                room,
                session,
                offer,
                publisher,
                reply,
            } => {
                let result =
                    self.subscribe_client_offer(now, room, &session, &offer, publisher.as_deref());
                self.reply(reply, result);
            }
            Command::SubscribeAnswer {
                room,
                session,
                answer,
                reply,
            } => {
                let result = self.subscribe_answer(now, room, &session, &answer);
                self.reply(reply, result);
            }
            Command::CloseSession {
                room,
                session,
                reply,
            } => {
                let result = self.close_session(room, &session);
                self.reply(reply, result);
            }
            Command::Speakers { room, reply } => {
                let speakers = self.speakers(room).ok_or(MediaError::UnknownRoom);
                self.reply(reply, speakers);
            }
            Command::SetSubscription {
                room,
                session,
                publisher,
                video,
                audio,
                reply,
            } => {
                let result = self.set_subscription(now, room, &session, &publisher, video, audio);
                self.reply(reply, result);
            }
            Command::Stats(reply) => {
                let stats = Box::new(self.stats());
                self.reply(reply, Ok(stats));
            }
            Command::AcceptPipe { home, reply } => {
                let result = self.accept_pipe(now, home);
                self.reply(reply, result);
            }
            Command::AcceptRelay {
                room,
                link,
                publisher,
                keys,
                reply,
            } => {
                let result = self.accept_relay(now, room, link, publisher, &keys);
                self.reply(reply, result);
            }
            Command::OpenRelay {
                room,
                link,
                publisher,
                keys,
                peer,
                reply,
            } => {
                let result = self.open_relay(now, room, link, publisher, &keys, peer);
                self.reply(reply, result);
            }
            Command::CloseRelay { room, link, reply } => {
                let result = self.close_relay(room, link);
                self.reply(reply, result);
            }
            Command::OpenPipe {
                room,
                worker,
                remote_room,
                remote_transport,
                reply,
            } => {
                let result = self.open_pipe(now, room, worker, remote_room, remote_transport);
                self.reply(reply, result);
            }
        }
    }

    /// Sends what the command queued, then its reply (the caller may act on the network at
    /// once: the answer's packets are already out).
    fn reply<T>(&mut self, to: Reply<T>, result: Result<T, MediaError>) {
        self.drain();
        let _ = to.send(result);
    }

    fn stats(&self) -> WorkerStats {
        let core = self.core.stats();
        WorkerStats {
            worker: self.index,
            rooms: core.rooms,
            sessions: core.participants,
            transports: self.links.len(),
            connected: self
                .links
                .values()
                .filter(|l| l.connection.is_connected())
                .count(),
            counters: self.counters,
            relay_links: self.relays.counts(),
            core,
            uptime: self.started.elapsed(),
            idle: self.idle,
        }
    }

    fn handle_batch(&mut self, now: Instant) {
        // Move the batch out so the datagrams can be borrowed while `self` is mutated.
        let mut batch = std::mem::replace(&mut self.recv, RecvBatch::detached());
        for (from, datagram) in batch.iter_mut() {
            self.handle_datagram(now, from, datagram);
        }
        self.recv = batch;
        self.drain();
    }

    /// One received datagram through demultiplexing to its connection, and what it decrypts
    /// into sfu-core (the caller drains the core afterwards). Sockets stay outside: the fuzz
    /// harness calls this.
    pub(super) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += datagram.len() as u64;
        let class = PacketClass::of(datagram);
        match class {
            // Checks are routed by the ufrag they name; everything else by validated address.
            PacketClass::Stun if !stun::is_response(datagram) => {
                self.handle_check(now, from, datagram)
            }
            PacketClass::Unknown if mooyaho_net::relay_frame::is_relay(datagram) => {
                self.handle_relay_datagram(now, from, datagram)
            }
            PacketClass::Unknown => self.counters.unknown_datagrams += 1,
            _ => self.handle_routed(now, from, datagram, class),
        }
    }

    /// Everything queued for sending since the last call (socketless worker: the fuzz harness).
    pub(super) fn take_sent(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.send.take_all()
    }

    /// A connectivity check: to the connection whose ufrag it names, unless its source is
    /// another transport's live path.
    fn handle_check(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Ok(mut request) = BindingRequest::parse(datagram) else {
            self.counters.stun_rejected += 1;
            return;
        };
        let Some(&transport) = self.by_ufrag.get(&request.local_ufrag) else {
            self.counters.stun_rejected += 1;
            return;
        };
        let Some(link) = self.links.get(&transport) else {
            self.counters.stale_routes += 1;
            return;
        };
        if let Err(rejected) = link.connection.authenticate(&mut request) {
            self.counters.count(rejected);
            tracing::debug!(%from, "STUN check failed authentication");
            return;
        }
        // The check proves knowledge of this transport's password, not ownership of `from`: an
        // address another transport uses (or has fresh consent on) is not taken from it.
        if let Some(&owner) = self.by_addr.get(&from)
            && owner != transport
            && self
                .links
                .get(&owner)
                .is_some_and(|l| l.connection.paths().is_live(now, from))
        {
            self.counters.live_address_claims += 1;
            tracing::debug!(%from, "check from another transport's live path dropped");
            return;
        }
        let Some(link) = self.links.get_mut(&transport) else {
            self.counters.stale_routes += 1;
            return;
        };
        let change = link.connection.handle_check(now, from, &request);
        self.apply_address_change(transport, change);
        self.service(now, transport);
    }

    /// A datagram routed by its validated source address: consent answers, DTLS, SRTP.
    fn handle_routed(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
        class: PacketClass,
    ) {
        let Some(&transport) = self.by_addr.get(&from) else {
            match class {
                PacketClass::Stun => self.counters.stun_rejected += 1,
                PacketClass::Dtls => self.counters.dtls_unauthenticated += 1,
                _ => self.counters.media_unauthenticated += 1,
            }
            return;
        };
        let Some(link) = self.links.get_mut(&transport) else {
            self.counters.stale_routes += 1;
            return;
        };
        match link.connection.handle_datagram(now, from, datagram) {
            Ok(Received::Rtp(len)) => {
                // Decrypted in place in the receive buffer, then copied once into a pooled chunk.
                let packet = self.pooled(&datagram[..len]);
                self.core.handle_rtp(now, transport, packet);
            }
            Ok(Received::Rtcp(len)) => {
                let packet = self.pooled(&datagram[..len]);
                self.core.handle_rtcp(now, transport, packet);
            }
            Ok(Received::Consumed) => self.service(now, transport),
            Err(rejected) => {
                self.counters.count(rejected);
                if matches!(class, PacketClass::Dtls | PacketClass::Stun) {
                    self.service(now, transport); // a failed record may still have answers
                }
            }
        }
    }

    /// After a connection handled something: sends what it queued, acts on its events and
    /// files its next deadline.
    pub(super) fn service(&mut self, now: Instant, transport: TransportId) {
        // Handshakes are the slow steps (a crowd joining at once): each one is progress.
        self.progress.bump();
        let Some(link) = self.links.get_mut(&transport) else {
            return;
        };
        while let Some((to, datagram)) = link.connection.poll_transmit() {
            self.send.push(to, &datagram);
        }
        self.timers
            .schedule(transport, link.connection.poll_timeout());
        while let Some(event) = self
            .links
            .get_mut(&transport)
            .and_then(|l| l.connection.poll_event())
        {
            self.handle_connection_event(now, transport, event);
        }
    }

    fn handle_connection_event(
        &mut self,
        now: Instant,
        transport: TransportId,
        event: ConnectionEvent,
    ) {
        let Some(link) = self.links.get(&transport) else {
            return;
        };
        match event {
            ConnectionEvent::Connected => {
                self.counters.dtls_handshakes += 1;
                tracing::debug!(session = %link.session, direction = ?link.direction, "transport connected");
                let (room, session, direction) = (link.room, link.session.clone(), link.direction);
                if direction == Direction::Subscribe {
                    // Forwarding starts now, at a keyframe requested now.
                    if let Err(e) = self.sync_subscriptions(now, transport) {
                        tracing::warn!(error = %e, %session, "starting subscriptions failed");
                    }
                }
                self.emit(NodeEvent::TransportConnected {
                    worker: self.index,
                    room,
                    session,
                    direction,
                });
            }
            ConnectionEvent::DtlsStartFailed => self.counters.dtls_failures += 1,
            ConnectionEvent::Closed(reason) => self.fail_transport(transport, reason),
        }
    }

    /// Drains sfu-core: transmits through SRTP into the send batch, events to the control plane,
    /// then flushes the batch.
    pub(super) fn drain(&mut self) {
        while let Some(transmit) = self.core.poll_transmit() {
            let Some(link) = self.links.get_mut(&transmit.to) else {
                if !self.relay_transmit(transmit.to, &transmit.packet) {
                    self.pipe_transmit(transmit.to, &transmit.packet);
                }
                continue;
            };
            let Some(to) = link.connection.media_destination() else {
                continue; // not connected yet: the subscriber catches up with a keyframe
            };
            let (connection, counters) = (&mut link.connection, &mut self.counters);
            let rtcp = matches!(transmit.packet, OutPacket::Rtcp(_));
            // Written and protected in place in the send batch's arena: no copy, no allocation.
            self.send
                .push_with(to, MAX_DATAGRAM + SRTP_TRAILER, |slot| {
                    let len = transmit.packet.write(&mut slot[..MAX_DATAGRAM]).ok()?;
                    connection
                        .protect(slot, len, rtcp)
                        .inspect_err(|rejected| counters.count(*rejected))
                        .ok()
                });
            // Sent in the middle of a fan-out, so the arena stays bounded (SEND_BATCH_LIMIT).
            if self.send.is_full() {
                self.flush();
            }
        }
        while let Some(event) = self.core.poll_event() {
            self.handle_core_event(event);
        }
        self.flush();
        self.pipe_wake();
    }

    /// A shared copy of a decrypted packet, cut from the pooled chunk.
    pub(super) fn pooled(&mut self, plain: &[u8]) -> Bytes {
        if self.received.capacity() < plain.len() {
            self.received = BytesMut::with_capacity(RECEIVE_CHUNK);
        }
        self.received.extend_from_slice(plain);
        self.received.split().freeze()
    }

    fn flush(&mut self) {
        if self.send.is_empty() {
            return;
        }
        let Some(socket) = &self.socket else {
            return; // the fuzz harness takes the batch (`take_sent`)
        };
        let (queued, bytes) = (self.send.len(), self.send.bytes());
        let (sent, dropped) = socket.send_batch(&mut self.send);
        self.counters.datagrams_out += sent as u64;
        // Refused datagrams are rare (and sized like the rest): their share of the bytes is
        // left out.
        self.counters.bytes_out += (bytes * sent / queued.max(1)) as u64;
        self.counters.send_errors += dropped as u64;
    }

    pub(super) fn handle_timers(&mut self, now: Instant) {
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        while let Some(transport) = self.timers.pop_due(now) {
            let Some(link) = self.links.get_mut(&transport) else {
                continue;
            };
            link.connection.handle_timeout(now);
            self.service(now, transport);
            // A deadline the timer did not move (a path switch still waiting for a better
            // candidate) is looked at again on the housekeeping tick, not in a spin.
            if let Some(link) = self.links.get(&transport)
                && link.connection.poll_timeout().is_some_and(|t| t <= now)
            {
                self.timers.schedule(transport, Some(now + HOUSEKEEPING));
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.reoffer_overdue(now);
            self.relay_housekeeping(now);
            #[cfg(debug_assertions)]
            self.wedge_if_asked();
        }
        self.drain();
    }

    /// The `MOOYAHO_DEBUG_WORKER_WEDGE` test hook: blocks this thread for good once its file
    /// exists (the thread stays alive; only its progress stops).
    #[cfg(debug_assertions)]
    fn wedge_if_asked(&self) {
        if self
            .wedge_when
            .as_deref()
            .is_some_and(std::path::Path::exists)
        {
            tracing::warn!(
                worker = self.index,
                "MOOYAHO_DEBUG_WORKER_WEDGE: wedging this worker"
            );
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }

    fn next_deadline(&mut self) -> Instant {
        [self.core.poll_timeout(), self.timers.next_deadline()]
            .into_iter()
            .flatten()
            .fold(self.next_housekeeping, Instant::min)
    }

    /// Removes a transport the network gave up on and tells the control plane.
    fn fail_transport(&mut self, transport: TransportId, reason: &'static str) {
        let Some(link) = self.links.get(&transport) else {
            return;
        };
        let (room, session, direction) = (link.room, link.session.clone(), link.direction);
        tracing::info!(%session, ?direction, reason, "closing transport");
        let published = !self.core.transport_tracks(transport).is_empty();
        self.remove_transport(transport);
        // The others are re-offered without its tracks (their m-lines are rejected and become
        // recyclable); the session stays in the room.
        if published {
            self.renegotiate_others(room, &session);
        }
        self.emit(NodeEvent::TransportClosed {
            worker: self.index,
            room,
            session,
            direction,
            reason,
        });
    }

    /// Removes a transport from sfu-core and the demux tables.
    pub(super) fn remove_transport(&mut self, transport: TransportId) {
        self.timers.schedule(transport, None);
        if let Some(link) = self.links.remove(&transport) {
            let ufrag = &link.connection.local_ice().ufrag;
            if self.by_ufrag.get(ufrag) == Some(&transport) {
                self.by_ufrag.remove(ufrag);
            }
            for addr in link.connection.paths().addresses() {
                self.release_address(transport, addr);
            }
        }
        // The core may already have dropped it with its room.
        let _ = self.core.remove_transport(transport);
    }

    /// Mirrors a change of `transport`'s validated addresses in [`Self::by_addr`]. With
    /// [`Self::release_address`] the only code that writes the table, so it always holds
    /// exactly the addresses in live transports' lists: an address one transport validates is
    /// taken from any other transport that had it (both lists cannot name it). Only
    /// unconfirmed or stale paths get here: `handle_stun` drops checks that claim another
    /// transport's live path.
    fn apply_address_change(&mut self, transport: TransportId, change: AddressChange) {
        if let Some(evicted) = change.evicted {
            self.release_address(transport, evicted);
        }
        if let Some(added) = change.added
            && let Some(previous) = self.by_addr.insert(added, transport)
            && previous != transport
            && let Some(other) = self.links.get_mut(&previous)
        {
            other.connection.forget_address(added);
        }
    }

    /// Removes `addr` from the address table if `transport` owns it there.
    fn release_address(&mut self, transport: TransportId, addr: SocketAddr) {
        if self.by_addr.get(&addr) == Some(&transport) {
            self.by_addr.remove(&addr);
        }
    }

    /// Registers a new client transport's connection.
    pub(super) fn add_link(&mut self, now: Instant, transport: TransportId, link: Link) {
        self.by_ufrag
            .insert(link.connection.local_ice().ufrag.clone(), transport);
        self.links.insert(transport, link);
        self.service(now, transport);
    }

    pub(super) fn emit(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    pub(super) fn close_room(&mut self, room: RoomId) -> Result<(), MediaError> {
        self.known_room(room)?;
        let transports = self.core.room_transports(room).to_vec();
        self.drop_pipes(room, &transports);
        self.drop_relays(room);
        for transport in transports {
            self.remove_transport(transport);
        }
        self.core.close_room(room)?;
        self.wishes.forget_room(room);
        Ok(())
    }
}
