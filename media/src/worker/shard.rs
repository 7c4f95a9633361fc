//! The worker thread's state and loop: receive a batch, demultiplex, run each datagram through
//! its transport's security layer into `sfu_core`, drain the core's transmits through SRTP into
//! one `sendmmsg` batch, and keep the timers.

use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sfu_core::{OutPacket, RoomId, TransportId};
use tokio::sync::mpsc as async_mpsc;

use super::negotiate::{PublishPolicy, RoomMedia};
use super::peer::{Peer, PeerState, Side};
use super::pipe::{PipeMessage, PipeSender, Pipes};
use super::{Command, MediaError, NodeEvent, Reply, Request};
use crate::connection::dtls::{DtlsIdentity, DtlsOutcome, DtlsTransport};
use crate::connection::ice::{self, BindingRequest};
use crate::connection::paths::AddressChange;
use mooyaho_net::PacketClass;
use mooyaho_net::srtp::SrtpError;
use mooyaho_net::udp::{MAX_DATAGRAM, RecvBatch, SendBatch, Socket, Wake};

/// Drop and error counters of one worker (every dropped packet is counted somewhere here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
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
    /// Datagrams whose ufrag or source address led to a transport that no longer exists. The
    /// tables are kept consistent, so this stays 0; a packet must never crash the worker.
    pub stale_routes: u64,
    /// Authenticated checks from an address another transport holds as a live path (selected,
    /// or consented within the consent timeout): dropped, so a participant who spoofs another's
    /// source address cannot take its media path.
    pub live_address_claims: u64,
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
}

pub(super) struct Shard {
    pub(super) index: usize,
    /// The worker's UDP socket; `None` in the fuzz harness, which feeds datagrams to
    /// [`Self::handle_datagram`] and takes what would be sent with [`Self::take_sent`].
    socket: Option<Socket>,
    pub(super) announced: SocketAddr,
    pub(super) identity: DtlsIdentity,
    pub(super) events: async_mpsc::UnboundedSender<NodeEvent>,
    pub(super) core: sfu_core::Worker,
    pub(super) rooms: HashMap<RoomId, RoomMedia>,
    /// Transport network state. Keys are ids we allocate, looked up once per sent packet:
    /// FxHash (no attacker chooses them).
    pub(super) peers: FxHashMap<TransportId, Peer>,
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
    next_housekeeping: Instant,
    /// Transports whose DTLS has a retransmission timer armed (handshakes in flight): the loop
    /// visits only these for timers, not every peer on every turn (with 500 connected
    /// subscribers the full walk was 10 % of an audio profile).
    dtls_timers: FxHashSet<TransportId>,
    /// Pipes of rooms that span workers.
    pub(super) pipes: Pipes,
    /// Every worker's pipe queue, by worker index (ours included, unused).
    pub(super) pipe_peers: Vec<PipeSender>,
    /// Messages from other workers' pipes.
    pipe_inbox: mpsc::Receiver<PipeMessage>,
    /// Test hook, debug builds only: panic on `CreateRoom` (`MOOYAHO_DEBUG_WORKER_PANIC=create-room`),
    /// so tests can prove a dead worker takes the node down instead of leaving it looking healthy.
    #[cfg(debug_assertions)]
    panic_on_create_room: bool,
    /// What publishers may ask of this worker.
    pub(super) publish_policy: PublishPolicy,
}

/// How often consent and connect timeouts are checked.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Bytes SRTP appends at most (SRTCP with GCM: 16-byte tag + 4-byte index word).
const SRTP_TRAILER: usize = 20;
/// Pooled chunk for decrypted packets: about 50 video packets per allocation.
const RECEIVE_CHUNK: usize = 64 * 1024;

impl Shard {
    #[allow(clippy::too_many_arguments)] // one call site, in WorkerHandle::spawn
    pub(super) fn new(
        index: usize,
        socket: Option<Socket>,
        announced: SocketAddr,
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
            rooms: HashMap::new(),
            peers: FxHashMap::default(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            counters: WorkerCounters::default(),
            recv: RecvBatch::default(),
            send: SendBatch::default(),
            received: BytesMut::new(),
            next_housekeeping: Instant::now() + HOUSEKEEPING,
            dtls_timers: FxHashSet::default(),
            pipes: Pipes::default(),
            pipe_peers,
            pipe_inbox,
            #[cfg(debug_assertions)]
            panic_on_create_room: std::env::var("MOOYAHO_DEBUG_WORKER_PANIC")
                .is_ok_and(|v| v == "create-room"),
            publish_policy: PublishPolicy::default(),
        }
    }

    /// Runs until the request channel closes.
    pub(super) fn run(&mut self, inbox: &mpsc::Receiver<Request>, wake: &Wake) {
        loop {
            loop {
                match inbox.try_recv() {
                    Ok(request) => self.handle_request(request),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
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
                    socket.wait(wake, timeout.max(Duration::from_micros(100)));
                }
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

    fn handle_request(&mut self, request: Request) {
        // A command may depend on pipe messages queued before it was sent (a subscriber placed
        // here right after its room's pipe opened must see the piped tracks).
        self.handle_pipe_inbox();
        let now = Instant::now();
        #[cfg(debug_assertions)]
        if self.panic_on_create_room && matches!(request.command, Command::CreateRoom) {
            panic!(
                "MOOYAHO_DEBUG_WORKER_PANIC: worker {} panics on CreateRoom",
                self.index
            );
        }
        let result = match request.command {
            Command::CreateRoom => self.create_room().map(Reply::Room),
            Command::CloseRoom(room) => self.close_room(room).map(|()| Reply::Done),
            Command::Publish {
                room,
                session,
                offer,
            } => self
                .publish(now, room, session, &offer)
                .map(|(_, answer)| Reply::Published { answer }),
            Command::SubscribeOffer { room, session } => {
                self.subscribe_offer(now, room, &session).map(Reply::Offer)
            }
            Command::SubscribeAnswer {
                room,
                session,
                answer,
            } => self
                .subscribe_answer(now, room, &session, &answer)
                .map(|()| Reply::Done),
            Command::CloseSession { room, session } => {
                self.close_session(room, &session).map(|()| Reply::Done)
            }
            Command::Stats => Ok(Reply::Stats(Box::new(self.stats()))),
            Command::AcceptPipe { home } => self
                .accept_pipe(now, home)
                .map(|(room, transport)| Reply::Pipe { room, transport }),
            Command::OpenPipe {
                room,
                worker,
                remote_room,
                remote_transport,
            } => self
                .open_pipe(now, room, worker, remote_room, remote_transport)
                .map(|()| Reply::Done),
        };
        self.drain();
        let _ = request.reply.send(result);
    }

    fn stats(&self) -> WorkerStats {
        WorkerStats {
            worker: self.index,
            rooms: self.rooms.len(),
            sessions: self.rooms.values().map(RoomMedia::sessions).sum(),
            transports: self.peers.len(),
            connected: self
                .peers
                .values()
                .filter(|p| p.state == PeerState::Connected)
                .count(),
            counters: self.counters,
            core: self.core.stats(),
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

    /// One received datagram through demultiplexing, ICE/paths, DTLS or SRTP into sfu-core
    /// (the caller drains the core afterwards). Sockets stay outside: the fuzz harness calls this.
    pub(super) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) {
        self.counters.datagrams_in += 1;
        match PacketClass::of(datagram) {
            PacketClass::Stun => self.handle_stun(now, from, datagram),
            PacketClass::Dtls => self.handle_dtls(now, from, datagram),
            PacketClass::Rtp => self.handle_media(now, from, datagram, false),
            PacketClass::Rtcp => self.handle_media(now, from, datagram, true),
            PacketClass::Unknown => self.counters.unknown_datagrams += 1,
        }
    }

    /// Everything queued for sending since the last call (socketless shard: the fuzz harness).
    pub(super) fn take_sent(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.send.take_all()
    }

    fn handle_stun(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if ice::is_response(datagram) {
            self.handle_stun_response(now, from, datagram);
            return;
        }
        let Ok(mut request) = BindingRequest::parse(datagram) else {
            self.counters.stun_rejected += 1;
            return;
        };
        let Some(&transport) = self.by_ufrag.get(&request.local_ufrag) else {
            self.counters.stun_rejected += 1;
            return;
        };
        let Some(peer) = self.peers.get(&transport) else {
            self.counters.stale_routes += 1;
            return;
        };
        let remote_matches = peer
            .remote_ice
            .as_ref()
            .is_none_or(|ice| ice.ufrag == request.remote_ufrag);
        if !remote_matches || request.authenticate(&peer.local_ice.pwd).is_err() {
            self.counters.stun_rejected += 1;
            tracing::debug!(%from, "STUN check failed authentication");
            return;
        }
        // The check proves knowledge of this transport's password, not ownership of `from`: an
        // address another transport uses (or has fresh consent on) is not taken from it.
        if let Some(&owner) = self.by_addr.get(&from)
            && owner != transport
            && self
                .peers
                .get(&owner)
                .is_some_and(|p| p.paths.is_live(now, from))
        {
            self.counters.live_address_claims += 1;
            tracing::debug!(%from, "check from another transport's live path dropped");
            return;
        }
        let Some(peer) = self.peers.get_mut(&transport) else {
            self.counters.stale_routes += 1;
            return;
        };
        let change = peer.validate(now, from, request.use_candidate);
        let response = request.success(from, &peer.local_ice.pwd);
        self.send.push(from, &response);
        self.apply_address_change(transport, change);
        self.drive_paths(now, transport);
    }

    /// Our consent check answered (or a forged/stray response, dropped and counted).
    fn handle_stun_response(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(&transport) = self.by_addr.get(&from) else {
            self.counters.stun_rejected += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&transport) else {
            self.counters.stale_routes += 1;
            return;
        };
        match peer.paths.handle_response(now, from, datagram) {
            Ok(switched) => {
                if switched {
                    tracing::debug!(session = %peer.session, side = ?peer.side, %from, "media path selected");
                }
                self.drive_paths(now, transport);
            }
            Err(e) => {
                self.counters.stun_rejected += 1;
                tracing::debug!(error = %e, %from, "STUN response refused");
            }
        }
    }

    /// Sends what `transport`'s paths queued (our checks) and, in the DTLS client role, starts
    /// the handshake toward the first consented path.
    fn drive_paths(&mut self, now: Instant, transport: TransportId) {
        let Some(peer) = self.peers.get_mut(&transport) else {
            return;
        };
        while let Some((to, check)) = peer.paths.poll_transmit() {
            self.send.push(to, &check);
        }
        if let (Some(dtls), Some(selected)) = (peer.dtls.as_mut(), peer.paths.selected()) {
            if let Err(e) = dtls.start(now, selected) {
                self.counters.dtls_failures += 1;
                tracing::debug!(error = %e, "DTLS client start failed");
            }
            while let Some((to, datagram)) = dtls.poll_transmit() {
                self.send.push(to, &datagram);
            }
        }
        self.track_dtls_timer(transport);
    }

    /// Files `transport` under [`Self::dtls_timers`] after anything that may have moved its
    /// DTLS timer.
    pub(super) fn track_dtls_timer(&mut self, transport: TransportId) {
        let armed = self
            .peers
            .get(&transport)
            .and_then(|p| p.dtls.as_ref())
            .is_some_and(|d| d.poll_timeout().is_some());
        if armed {
            self.dtls_timers.insert(transport);
        } else {
            self.dtls_timers.remove(&transport);
        }
    }

    fn handle_dtls(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(&transport) = self.by_addr.get(&from) else {
            self.counters.dtls_unauthenticated += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&transport) else {
            self.counters.stale_routes += 1;
            return;
        };
        let Some(dtls) = peer.dtls.as_mut() else {
            // The client answered our offer in DTLS before its SDP answer reached us.
            self.counters.dtls_unauthenticated += 1;
            return;
        };
        let outcome = dtls.handle(now, from, datagram);
        while let Some((to, datagram)) = dtls.poll_transmit() {
            self.send.push(to, &datagram);
        }
        self.track_dtls_timer(transport);
        let Some(peer) = self.peers.get_mut(&transport) else {
            return; // unreachable: nothing above removes it
        };
        match outcome {
            Ok(DtlsOutcome::Pending) => {}
            Ok(DtlsOutcome::Connected(srtp)) => {
                peer.srtp = Some(*srtp);
                peer.state = PeerState::Connected;
                tracing::debug!(session = %peer.session, side = ?peer.side, "transport connected");
                let (room, session, side) = (peer.room, peer.session.clone(), peer.side);
                if side == Side::Subscribe {
                    // Forwarding starts now, at a keyframe requested now.
                    if let Err(e) = self.sync_subscriptions(now, room, &session) {
                        tracing::warn!(error = %e, %session, "starting subscriptions failed");
                    }
                }
                let _ = self.events.send(NodeEvent::TransportConnected {
                    worker: self.index,
                    room,
                    session,
                    side,
                });
            }
            Ok(DtlsOutcome::Closed) => self.fail_transport(transport, "DTLS closed by the client"),
            Err(e) => {
                self.counters.dtls_failures += 1;
                tracing::debug!(error = %e, %from, "DTLS failure");
            }
        }
    }

    fn handle_media(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8], rtcp: bool) {
        let Some(&transport) = self.by_addr.get(&from) else {
            self.counters.media_unauthenticated += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&transport) else {
            self.counters.stale_routes += 1;
            return;
        };
        let Some(srtp) = peer.srtp.as_mut() else {
            self.counters.media_unauthenticated += 1;
            return;
        };
        // Decrypted in place in the receive buffer, then copied once into a pooled chunk.
        let result = if rtcp {
            srtp.unprotect_rtcp_in_place(datagram)
        } else {
            srtp.unprotect_rtp_in_place(datagram)
        };
        let packet = match result {
            Ok(len) => self.pooled(&datagram[..len]),
            Err(e) if e.is_replay() => {
                self.counters.srtp_replays += 1;
                return;
            }
            Err(SrtpError::TooManySsrcs { .. }) => {
                self.counters.srtp_ssrc_cap_drops += 1;
                return;
            }
            Err(_) => {
                self.counters.srtp_auth_failures += 1;
                return;
            }
        };
        if rtcp {
            self.core.handle_rtcp(now, transport, packet);
        } else {
            self.core.handle_rtp(now, transport, packet);
        }
    }

    /// Drains sfu-core: transmits through SRTP into the send batch, events to the control plane,
    /// then flushes the batch.
    pub(super) fn drain(&mut self) {
        while let Some(transmit) = self.core.poll_transmit() {
            let Some(peer) = self.peers.get_mut(&transmit.to) else {
                self.pipe_transmit(transmit.to, &transmit.packet);
                continue;
            };
            let (Some(srtp), Some(to)) = (peer.srtp.as_mut(), peer.paths.selected()) else {
                continue; // not connected yet: the subscriber catches up with a keyframe
            };
            let counters = &mut self.counters;
            // Written and protected in place in the send batch's arena: no copy, no allocation.
            self.send
                .push_with(to, MAX_DATAGRAM + SRTP_TRAILER, |slot| {
                    let len = transmit.packet.write(&mut slot[..MAX_DATAGRAM]).ok()?;
                    let protected = match &transmit.packet {
                        OutPacket::Rtp { .. } => srtp.protect_rtp_in_place(slot, len),
                        OutPacket::Rtcp(_) => srtp.protect_rtcp_in_place(slot, len),
                    };
                    protected
                        .inspect_err(|e| {
                            if matches!(e, SrtpError::IndexReused { .. }) {
                                counters.srtp_index_reuse_refused += 1;
                            }
                            tracing::debug!(error = %e, "SRTP protect failed")
                        })
                        .ok()
                });
        }
        while let Some(event) = self.core.poll_event() {
            self.handle_core_event(event);
        }
        self.flush();
        self.pipe_wake();
    }

    /// A shared copy of a decrypted packet, cut from the pooled chunk.
    fn pooled(&mut self, plain: &[u8]) -> Bytes {
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
        let (sent, dropped) = socket.send_batch(&mut self.send);
        self.counters.datagrams_out += sent as u64;
        self.counters.send_errors += dropped as u64;
    }

    pub(super) fn handle_timers(&mut self, now: Instant) {
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        let due: Vec<TransportId> = self
            .dtls_timers
            .iter()
            .copied()
            .filter(|t| {
                self.peers
                    .get(t)
                    .and_then(|p| p.dtls.as_ref())
                    .and_then(DtlsTransport::poll_timeout)
                    .is_some_and(|deadline| deadline <= now)
            })
            .collect();
        for transport in due {
            if let Some(dtls) = self.peers.get_mut(&transport).and_then(|p| p.dtls.as_mut()) {
                let _ = dtls.handle_timeout(now);
                while let Some((to, datagram)) = dtls.poll_transmit() {
                    self.send.push(to, &datagram);
                }
            }
            self.track_dtls_timer(transport);
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            // Consent checks, candidate retransmissions, rate-limited switches.
            let due: Vec<TransportId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.paths.poll_timeout().is_some_and(|t| t <= now))
                .map(|(id, _)| *id)
                .collect();
            for transport in due {
                if let Some(peer) = self.peers.get_mut(&transport) {
                    peer.paths.handle_timeout(now);
                }
                self.drive_paths(now, transport);
            }
            let expired: Vec<_> = self
                .peers
                .iter()
                .filter(|(_, p)| p.expired(now))
                .map(|(id, p)| (*id, p.state))
                .collect();
            for (transport, state) in expired {
                let reason = match state {
                    PeerState::Connecting => "never connected",
                    PeerState::Connected => "consent expired",
                };
                self.fail_transport(transport, reason);
            }
            self.reoffer_overdue(now);
        }
        self.drain();
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = self.next_housekeeping;
        if let Some(t) = self.core.poll_timeout() {
            deadline = deadline.min(t);
        }
        for transport in &self.dtls_timers {
            if let Some(t) = self
                .peers
                .get(transport)
                .and_then(|p| p.dtls.as_ref())
                .and_then(DtlsTransport::poll_timeout)
            {
                deadline = deadline.min(t);
            }
        }
        deadline
    }

    /// Removes a transport the network gave up on and tells the control plane.
    fn fail_transport(&mut self, transport: TransportId, reason: &'static str) {
        let Some(peer) = self.peers.get(&transport) else {
            return;
        };
        let (room, session, side) = (peer.room, peer.session.clone(), peer.side);
        tracing::info!(%session, ?side, reason, "closing transport");
        self.remove_transport(transport);
        self.forget_closed_transport(room, &session, side);
        let _ = self.events.send(NodeEvent::TransportClosed {
            worker: self.index,
            room,
            session,
            side,
            reason,
        });
    }

    /// Removes a transport from sfu-core and the demux tables.
    pub(super) fn remove_transport(&mut self, transport: TransportId) {
        self.dtls_timers.remove(&transport);
        if let Some(peer) = self.peers.remove(&transport) {
            if self.by_ufrag.get(&peer.local_ice.ufrag) == Some(&transport) {
                self.by_ufrag.remove(&peer.local_ice.ufrag);
            }
            for addr in peer.paths.addresses() {
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
            && let Some(other) = self.peers.get_mut(&previous)
        {
            other.paths.forget(added);
        }
    }

    /// Removes `addr` from the address table if `transport` owns it there.
    fn release_address(&mut self, transport: TransportId, addr: SocketAddr) {
        if self.by_addr.get(&addr) == Some(&transport) {
            self.by_addr.remove(&addr);
        }
    }

    /// Registers a new transport's network state.
    pub(super) fn add_peer(&mut self, transport: TransportId, peer: Peer) {
        self.by_ufrag
            .insert(peer.local_ice.ufrag.clone(), transport);
        self.peers.insert(transport, peer);
    }

    pub(super) fn emit(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    pub(super) fn side_of(&self, transport: TransportId) -> Option<Side> {
        self.peers.get(&transport).map(|p| p.side)
    }

    pub(super) fn close_room(&mut self, room: RoomId) -> Result<(), MediaError> {
        let media = self.rooms.remove(&room).ok_or(MediaError::UnknownRoom)?;
        for transport in media.transports() {
            self.remove_transport(transport);
        }
        self.drop_pipes(room, &media);
        self.core.close_room(room)?;
        Ok(())
    }
}
