//! One transport's network side: ICE-lite connectivity checks, per-path consent, the DTLS
//! handshake and the SRTP contexts it keys (`mooyaho_net::srtp`), behind one sans-IO [`Connection`] (quinn-proto's `Connection`,
//! str0m's `Rtc`): datagrams and `now` in (`handle_*`), datagrams, events and the next deadline
//! out (`poll_*`), no socket, clock, thread or lock inside. The worker owns the socket and the
//! demultiplexing tables (ufrag → transport, validated address → transport); it hands each
//! datagram to the one connection it belongs to, routes what comes out decrypted into sfu-core,
//! and drains `poll_transmit` into its send batch.
//!
//! ICE-lite (RFC 8445 §2.5): the node only answers connectivity checks. A binding request is
//! accepted only when its USERNAME names a transport we created, its MESSAGE-INTEGRITY verifies
//! with that transport's password and its FINGERPRINT is correct; only then does its source
//! address become (or stay) a valid path for media ([`paths`]). The wire format (STUN, DTLS,
//! SRTP) lives in `mooyaho_net`.
//!
//! Why the sans-IO webrtc-rs line (`rtc-dtls`/`rtc-srtp` 0.21) rather than the async `dtls`
//! 0.17: a worker thread owns its transports and must never wait on a task or a lock; the
//! sans-IO `Endpoint` is driven by the worker's own loop and timers like `sfu-core`, and its ring
//! AES-GCM is 3.3× faster than `webrtc-srtp`'s on this machine (environment notes §3).
//!
//! # Where the next transports attach
//! - **WHEP** (the client offers, we answer a subscribe; done this way): only the negotiation
//!   differs. `Worker::subscribe_client_offer` builds the same `Connection` with
//!   [`Connection::negotiate`] called from the answer path (`sdp::answer_subscribe_offer`)
//!   instead of the offer path; DTLS role (server) and ICE credentials come from the client's
//!   offer.
//! - **ICE-TCP** (RFC 6544, RFC 4571 framing): a stream is a datagram source. A framing reader
//!   on the worker's TCP listener cuts frames and calls the same `handle_datagram`; `from`
//!   becomes a path key that names the stream, and `poll_transmit` output for that path is
//!   framed onto it. The connection's paths, consent and DTLS do not change.
//! - **Node-to-node relay** (cascading): a relay link is another case of the worker's transport
//!   table beside `Connection` (today's in-process `Pipe` is the first such case: it forwards
//!   plain packets to another worker without ICE/DTLS). A relay to another node would be a
//!   `Connection` whose ICE side is a fixed, pre-authorised path (no consent from a browser) and
//!   whose SRTP keys come from the control plane: a new constructor, not a new worker path.

pub(crate) mod paths;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sdp::IceCredentials;
use mooyaho_net::PacketClass;
use mooyaho_net::dtls::{DtlsError, DtlsOutcome, DtlsTransport};
use mooyaho_net::srtp::{SrtpError, SrtpSession};
use mooyaho_net::stun::{self, BindingRequest};
use paths::{AddressChange, CheckCredentials, Paths};

/// A transport that never connects is given up after this long without a check.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// DTLS datagrams kept while no path has answered our check (a flight is a few datagrams, and
/// the handshake's retransmissions make new ones).
const MAX_HELD_DTLS: usize = 8;

/// Why a datagram (or an outgoing packet) was refused. Each case is one of the worker's drop
/// counters: a bad packet is dropped and counted, never an error up the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// STUN: malformed, not for us, bad integrity or fingerprint, or a response to no check.
    Stun,
    /// DTLS before the client's SDP gave us its fingerprint.
    DtlsUnexpected,
    /// A DTLS handshake or record failed (including fingerprint mismatches).
    DtlsFailure,
    /// RTP/RTCP before DTLS completed.
    NotConnected,
    /// SRTP/SRTCP authentication failed.
    SrtpAuth,
    /// SRTP/SRTCP replay.
    SrtpReplay,
    /// A new SSRC beyond the context's cap.
    SrtpSsrcCap,
    /// Outgoing: the packet index was already used with other bytes (AES-GCM nonce reuse).
    SrtpIndexReused,
    /// Outgoing: SRTP refused the packet for another reason (too large).
    SrtpProtect,
    /// Not STUN, DTLS, RTP or RTCP.
    Unknown,
}

/// What a datagram accepted by [`Connection::handle_datagram`] was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Decrypted RTP in place: the first `len` bytes of the datagram, for sfu-core.
    Rtp(usize),
    /// Decrypted RTCP in place: the first `len` bytes of the datagram, for sfu-core.
    Rtcp(usize),
    /// ICE or DTLS: consumed here (answers, if any, wait in [`Connection::poll_transmit`]).
    Consumed,
}

/// Something the worker must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectionEvent {
    /// DTLS completed: SRTP flows from now.
    Connected,
    /// Our DTLS client could not start its handshake (counted in `dtls_failures`); `Closed`
    /// follows, since nothing else would ever start it.
    DtlsStartFailed,
    /// The connection is over; the worker removes the transport.
    Closed(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for ICE and DTLS.
    Connecting,
    /// DTLS done; SRTP flowing.
    Connected,
    /// Closed (an event said why); inert from now.
    Closed,
}

/// One transport's ICE-lite, consent, DTLS and SRTP state.
#[derive(Debug)]
pub(crate) struct Connection {
    /// Our credentials (the USERNAME of valid checks starts with our ufrag).
    local_ice: IceCredentials,
    /// The client's credentials, once its SDP is known.
    remote_ice: Option<IceCredentials>,
    /// DTLS endpoint, once the client's fingerprint is known.
    dtls: Option<DtlsTransport>,
    /// SRTP, once DTLS completed.
    srtp: Option<SrtpSession>,
    /// Validated addresses (media accepted from) and the consented one media goes to.
    paths: Paths,
    /// Last authenticated check from the client (a connection that never connects is given up).
    last_check: Instant,
    state: State,
    /// Binding responses waiting for `poll_transmit` (the paths and DTLS keep their own).
    responses: VecDeque<(SocketAddr, Vec<u8>)>,
    /// DTLS output held until a path answers our check ([`Self::poll_transmit`]).
    held_dtls: VecDeque<Vec<u8>>,
    /// The latest `now` of a check, STUN response, DTLS record or timeout (what consent is
    /// judged against in `poll_transmit`; media packets leave it alone).
    now: Instant,
    events: VecDeque<ConnectionEvent>,
}

impl Connection {
    /// A connection waiting for the client, answering checks signed for `local_ice`.
    pub(crate) fn new(now: Instant, local_ice: IceCredentials) -> Self {
        Self {
            local_ice,
            remote_ice: None,
            dtls: None,
            srtp: None,
            paths: Paths::new(now),
            last_check: now,
            state: State::Connecting,
            responses: VecDeque::new(),
            held_dtls: VecDeque::new(),
            now,
            events: VecDeque::new(),
        }
    }

    /// Our ICE credentials (in our SDP).
    pub(crate) fn local_ice(&self) -> &IceCredentials {
        &self.local_ice
    }

    /// Whether the client's SDP was applied ([`Self::negotiate`]).
    pub(crate) fn is_negotiated(&self) -> bool {
        self.dtls.is_some()
    }

    /// The client's ICE credentials, once negotiated.
    pub(crate) fn remote_ice(&self) -> Option<&IceCredentials> {
        self.remote_ice.as_ref()
    }

    /// Applies the client's SDP: its ICE credentials (our consent checks start) and the DTLS
    /// endpoint checking its fingerprint. In the client role the handshake starts at once if a
    /// path is already selected, else when one is.
    pub(crate) fn negotiate(
        &mut self,
        now: Instant,
        remote: IceCredentials,
        mut dtls: DtlsTransport,
    ) -> Result<(), DtlsError> {
        if let Some(selected) = self.paths.selected() {
            dtls.start(now, selected)?;
        }
        self.dtls = Some(dtls);
        self.paths.set_credentials(
            now,
            CheckCredentials {
                username: format!("{}:{}", remote.ufrag, self.local_ice.ufrag),
                remote_pwd: remote.pwd.clone(),
            },
        );
        self.remote_ice = Some(remote);
        Ok(())
    }

    /// First half of a check routed here by its ufrag: whether it is signed for us (and, once
    /// the client's SDP is known, names its ufrag). The worker then decides whether the source
    /// address may be taken ([`Self::handle_check`]).
    pub(crate) fn authenticate(&self, request: &mut BindingRequest) -> Result<(), Rejected> {
        let remote_matches = self
            .remote_ice
            .as_ref()
            .is_none_or(|ice| ice.ufrag == request.remote_ufrag);
        if !remote_matches || request.authenticate(&self.local_ice.pwd).is_err() {
            return Err(Rejected::Stun);
        }
        Ok(())
    }

    /// Second half of an authenticated check from `from`: validates the address, answers, and
    /// sends our own checks. The worker mirrors the returned change in its address table.
    pub(crate) fn handle_check(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request: &BindingRequest,
    ) -> AddressChange {
        self.now = self.now.max(now);
        self.last_check = now;
        let change = self.paths.handle_check(now, from, request.use_candidate);
        self.responses
            .push_back((from, request.success(from, &self.local_ice.pwd)));
        self.start_dtls(now);
        change
    }

    /// A datagram from a validated address of this connection: a STUN response (consent), DTLS,
    /// or SRTP/SRTCP (decrypted in place).
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Result<Received, Rejected> {
        if self.state == State::Closed {
            return Err(Rejected::NotConnected);
        }
        match PacketClass::of(datagram) {
            PacketClass::Stun => self.handle_stun_response(now, from, datagram),
            PacketClass::Dtls => self.handle_dtls(now, from, datagram),
            PacketClass::Rtp => self.unprotect(datagram, false).map(Received::Rtp),
            PacketClass::Rtcp => self.unprotect(datagram, true).map(Received::Rtcp),
            PacketClass::Unknown => Err(Rejected::Unknown),
        }
    }

    fn handle_stun_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Received, Rejected> {
        if !stun::is_response(datagram) {
            return Err(Rejected::Stun); // requests are routed by ufrag, not by address
        }
        self.now = self.now.max(now);
        match self.paths.handle_response(now, from, datagram) {
            Ok(switched) => {
                if switched {
                    tracing::debug!(%from, "media path selected");
                }
                // `from` has just answered our check: DTLS held for want of such a path goes now.
                if let Some(to) = self.dtls_destination(from) {
                    let held = self.held_dtls.drain(..).map(|flight| (to, flight));
                    self.responses.extend(held);
                }
                self.start_dtls(now);
                Ok(Received::Consumed)
            }
            Err(e) => {
                tracing::debug!(error = %e, %from, "STUN response refused");
                Err(Rejected::Stun)
            }
        }
    }

    fn handle_dtls(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Received, Rejected> {
        self.now = self.now.max(now);
        // No endpoint: the client answered our offer in DTLS before its SDP answer reached us.
        let dtls = self.dtls.as_mut().ok_or(Rejected::DtlsUnexpected)?;
        match dtls.handle(now, from, datagram) {
            Ok(DtlsOutcome::Pending) => {}
            Ok(DtlsOutcome::Connected(srtp)) => {
                self.srtp = Some(*srtp);
                if self.state == State::Connecting {
                    self.state = State::Connected;
                    self.events.push_back(ConnectionEvent::Connected);
                }
            }
            Ok(DtlsOutcome::Closed) => self.close("DTLS closed by the client"),
            Err(e) => {
                tracing::debug!(error = %e, %from, "DTLS failure");
                return Err(Rejected::DtlsFailure);
            }
        }
        Ok(Received::Consumed)
    }

    /// The SRTP contexts while the connection is open: a closed connection neither decrypts
    /// nor encrypts, whatever keys it still holds.
    fn open_srtp(&mut self) -> Result<&mut SrtpSession, Rejected> {
        if self.state == State::Closed {
            return Err(Rejected::NotConnected);
        }
        self.srtp.as_mut().ok_or(Rejected::NotConnected)
    }

    /// Decrypts an SRTP/SRTCP packet in place; returns the plain length.
    pub(crate) fn unprotect(&mut self, datagram: &mut [u8], rtcp: bool) -> Result<usize, Rejected> {
        let srtp = self.open_srtp()?;
        let result = if rtcp {
            srtp.unprotect_rtcp_in_place(datagram)
        } else {
            srtp.unprotect_rtp_in_place(datagram)
        };
        result.map_err(|e| match e {
            e if e.is_replay() => Rejected::SrtpReplay,
            SrtpError::TooManySsrcs { .. } => Rejected::SrtpSsrcCap,
            _ => Rejected::SrtpAuth,
        })
    }

    /// Where media goes: the consented path, once SRTP is up (`None` before: the subscriber
    /// catches up with a keyframe once connected).
    pub(crate) fn media_destination(&self) -> Option<SocketAddr> {
        self.srtp.as_ref()?;
        self.paths.selected()
    }

    /// Encrypts the `len`-byte plain packet at the start of `buf` in place (`buf` has room for
    /// the SRTP trailer); returns the protected length.
    pub(crate) fn protect(
        &mut self,
        buf: &mut [u8],
        len: usize,
        rtcp: bool,
    ) -> Result<usize, Rejected> {
        let srtp = self.open_srtp()?;
        let result = if rtcp {
            srtp.protect_rtcp_in_place(buf, len)
        } else {
            srtp.protect_rtp_in_place(buf, len)
        };
        result.map_err(|e| {
            tracing::debug!(error = %e, "SRTP protect failed");
            match e {
                SrtpError::IndexReused { .. } => Rejected::SrtpIndexReused,
                _ => Rejected::SrtpProtect,
            }
        })
    }

    /// The next datagram to send: binding responses, then our checks, then DTLS flights.
    ///
    /// DTLS goes only to a path that answered our check (RFC 7675 consent), never merely to the
    /// validated address a record came from: a check spoofed from a victim's address (signed
    /// with the sender's own credentials) validates that address, and a ClientHello spoofed
    /// from it would otherwise reflect the certificate flight and its retransmissions there.
    /// Until some path answers, flights wait, and go out the moment one does (a browser's
    /// ClientHello often races its answer to our first check).
    pub(crate) fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        if let Some(response) = self.responses.pop_front() {
            return Some(response);
        }
        if let Some(check) = self.paths.poll_transmit() {
            return Some(check);
        }
        loop {
            let (to, flight) = self.dtls.as_mut()?.poll_transmit()?;
            if let Some(to) = self.dtls_destination(to) {
                return Some((to, Vec::from(flight)));
            }
            if self.held_dtls.len() == MAX_HELD_DTLS {
                self.held_dtls.pop_front();
            }
            self.held_dtls.push_back(Vec::from(flight));
        }
    }

    /// Where DTLS meant for `to` may go: `to` if it has consent, else the selected path (the
    /// client's, which has), else nowhere yet.
    fn dtls_destination(&self, to: SocketAddr) -> Option<SocketAddr> {
        if self.paths.is_live(self.now, to) {
            Some(to)
        } else {
            self.paths.selected()
        }
    }

    /// The next event for the worker.
    pub(crate) fn poll_event(&mut self) -> Option<ConnectionEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] has work next: a DTLS retransmission, a consent or
    /// candidate check, a delayed path switch, or the connect/consent deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let expiry = match self.state {
            State::Connecting => self.last_check + CONNECT_TIMEOUT,
            State::Connected => self.paths.consent_deadline(),
            State::Closed => return None,
        };
        let earliest = [
            self.dtls.as_ref().and_then(DtlsTransport::poll_timeout),
            self.paths.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .fold(expiry, Instant::min);
        Some(earliest)
    }

    /// Runs whatever is due at `now`; a connection past its deadline closes (an event says why).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.now = self.now.max(now);
        if let Some(dtls) = self.dtls.as_mut()
            && dtls.poll_timeout().is_some_and(|t| t <= now)
        {
            // A failed retransmission leaves the handshake to the client's own retries.
            let _ = dtls.handle_timeout(now);
        }
        if self.paths.poll_timeout().is_some_and(|t| t <= now) {
            self.paths.handle_timeout(now);
            self.start_dtls(now);
        }
        match self.state {
            // The reason says which layer failed, for the node's log and the operator.
            State::Connecting if now >= self.last_check + CONNECT_TIMEOUT => {
                if self.paths.selected().is_none() {
                    self.close("never connected: no ICE connectivity check succeeded")
                } else {
                    self.close("never connected: the DTLS handshake did not complete")
                }
            }
            State::Connected if self.paths.consent_expired(now) => self.close("consent expired"),
            _ => {}
        }
    }

    /// In the DTLS client role, starts the handshake toward the first consented path (nothing
    /// in the server role or once started). A start that fails is final (the client config is
    /// spent): the connection closes rather than wait for checks that would keep it alive.
    fn start_dtls(&mut self, now: Instant) {
        if let (Some(dtls), Some(selected)) = (self.dtls.as_mut(), self.paths.selected())
            && let Err(e) = dtls.start(now, selected)
        {
            tracing::warn!(error = %e, "DTLS client start failed");
            self.events.push_back(ConnectionEvent::DtlsStartFailed);
            self.close("DTLS client start failed");
        }
    }

    fn close(&mut self, reason: &'static str) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.events.push_back(ConnectionEvent::Closed(reason));
        }
    }

    /// DTLS completed and the connection has not closed.
    pub(crate) fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// The paths (validated addresses, selected path, consent).
    pub(crate) fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Another transport validated `addr` (the worker's address table moved it): forget it here.
    pub(crate) fn forget_address(&mut self, addr: SocketAddr) {
        self.paths.forget(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's side of a connection test, on an in-memory link with virtual time: ICE
    /// checks signed with our credentials, a DTLS client (as Pion answers `passive`, or a
    /// browser's `active` role seen from our server), answers to our consent checks from the
    /// addresses it really owns.
    mod two_ends {
        use std::net::{IpAddr, Ipv4Addr};

        use mooyaho_net::dtls::{DtlsIdentity, DtlsRole};
        use mooyaho_net::stun::{Check, HOST_PRIORITY, IceRole};
        use mooyaho_test_support::packets::rtp;

        use super::super::paths::{CONSENT_TIMEOUT, SWITCH_INTERVAL};
        use super::*;

        const NODE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
        const HOME: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5000);
        const MOBILE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5001);

        fn ice(ufrag: &str) -> IceCredentials {
            IceCredentials {
                ufrag: ufrag.to_owned(),
                pwd: format!("{ufrag}-password-0123456789"),
            }
        }

        struct Client {
            ice: IceCredentials,
            dtls: DtlsTransport,
            srtp: Option<SrtpSession>,
            /// Addresses the client owns: it answers our checks sent there.
            owns: Vec<SocketAddr>,
        }

        struct Pair {
            now: Instant,
            node: Connection,
            client: Client,
            events: Vec<ConnectionEvent>,
        }

        impl Pair {
            /// A node connection in the DTLS server role and a client, negotiated.
            fn new() -> Self {
                let now = Instant::now();
                let (node_id, client_id) = (
                    DtlsIdentity::generate().unwrap(),
                    DtlsIdentity::generate().unwrap(),
                );
                let client_ice = ice("client");
                let mut node = Connection::new(now, ice("node"));
                let dtls =
                    DtlsTransport::new(&node_id, &client_id.fingerprint, DtlsRole::Server).unwrap();
                node.negotiate(now, client_ice.clone(), dtls).unwrap();
                let client = Client {
                    ice: client_ice,
                    dtls: DtlsTransport::new(&client_id, &node_id.fingerprint, DtlsRole::Client)
                        .unwrap(),
                    srtp: None,
                    owns: vec![HOME],
                };
                Self {
                    now,
                    node,
                    client,
                    events: Vec::new(),
                }
            }

            /// A check from `from`, signed with `pwd`: whether the node accepted it.
            fn check(&mut self, from: SocketAddr, nominate: bool, pwd: &str) -> bool {
                let username = format!("{}:{}", self.node.local_ice().ufrag, self.client.ice.ufrag);
                let raw = Check {
                    username: &username,
                    receiver_pwd: pwd,
                    transaction: stun::new_transaction_id(),
                    priority: HOST_PRIORITY,
                    role: IceRole::Controlling(7),
                    use_candidate: nominate,
                }
                .to_bytes();
                let mut request = BindingRequest::parse(&raw).unwrap();
                if self.node.authenticate(&mut request).is_err() {
                    return false;
                }
                self.node.handle_check(self.now, from, &request);
                self.pump();
                true
            }

            /// Delivers everything both ends queued until both are quiet.
            fn pump(&mut self) {
                for _ in 0..20 {
                    let mut moved = false;
                    while let Some((to, mut datagram)) = self.node.poll_transmit() {
                        moved = true;
                        if !self.client.owns.contains(&to) {
                            continue; // a spoofed address: nobody answers
                        }
                        match PacketClass::of(&datagram) {
                            PacketClass::Stun if !stun::is_response(&datagram) => {
                                let mut ours = BindingRequest::parse(&datagram).unwrap();
                                ours.authenticate(&self.client.ice.pwd).unwrap();
                                let mut answer = ours.success(to, &self.client.ice.pwd);
                                let _ = self.node.handle_datagram(self.now, to, &mut answer);
                            }
                            PacketClass::Dtls => {
                                if let Ok(DtlsOutcome::Connected(srtp)) =
                                    self.client.dtls.handle(self.now, NODE, &datagram)
                                {
                                    self.client.srtp = Some(*srtp);
                                }
                            }
                            _ => datagram.clear(), // binding responses to our client's checks
                        }
                    }
                    while let Some((_, datagram)) = self.client.dtls.poll_transmit() {
                        moved = true;
                        let mut datagram = datagram.to_vec();
                        let from = self.client.owns[0];
                        let _ = self.node.handle_datagram(self.now, from, &mut datagram);
                    }
                    self.events
                        .extend(std::iter::from_fn(|| self.node.poll_event()));
                    if !moved {
                        return;
                    }
                }
            }

            /// Runs the node's timers (and the client's DTLS timer) until `until`.
            fn advance(&mut self, until: Instant) {
                while let Some(deadline) = self.node.poll_timeout().filter(|t| *t <= until) {
                    self.now = self.now.max(deadline);
                    self.node.handle_timeout(self.now);
                    self.pump();
                    assert!(
                        self.node.poll_timeout().is_none_or(|next| next > self.now),
                        "handle_timeout left its own deadline due: a worker would spin"
                    );
                }
                self.now = until;
                let _ = self.client.dtls.handle_timeout(until);
                self.pump();
            }

            /// ICE from HOME, then the DTLS handshake: both ends connected.
            fn connect(&mut self) {
                let pwd = self.node.local_ice().pwd.clone();
                assert!(self.check(HOME, true, &pwd));
                assert_eq!(self.node.paths().selected(), Some(HOME), "HOME answered");
                self.client.dtls.start(self.now, NODE).unwrap();
                self.pump();
                assert_eq!(self.events, [ConnectionEvent::Connected]);
                assert!(self.node.is_connected() && self.client.srtp.is_some());
            }
        }

        #[test]
        fn handshake_connects_and_srtp_flows_both_ways_once() {
            let mut pair = Pair::new();
            // Media before DTLS completed is refused, not decrypted.
            assert_eq!(
                pair.node.handle_datagram(pair.now, HOME, &mut rtp(1)),
                Err(Rejected::NotConnected)
            );
            assert_eq!(pair.node.media_destination(), None);
            pair.connect();
            assert_eq!(pair.node.media_destination(), Some(HOME));

            let plain = rtp(7);
            let mut protected = pair
                .client
                .srtp
                .as_mut()
                .unwrap()
                .protect_rtp(&plain)
                .unwrap()
                .to_vec();
            let mut replayed = protected.clone();
            let len = match pair.node.handle_datagram(pair.now, HOME, &mut protected) {
                Ok(Received::Rtp(len)) => len,
                other => panic!("{other:?}"),
            };
            assert_eq!(&protected[..len], &plain[..]);
            assert_eq!(
                pair.node.handle_datagram(pair.now, HOME, &mut replayed),
                Err(Rejected::SrtpReplay)
            );
            let mut tampered = pair
                .client
                .srtp
                .as_mut()
                .unwrap()
                .protect_rtp(&rtp(8))
                .unwrap();
            tampered[20] ^= 1;
            assert_eq!(
                pair.node.handle_datagram(pair.now, HOME, &mut tampered),
                Err(Rejected::SrtpAuth)
            );

            // Outgoing: protected in place, readable by the client.
            let mut buf = rtp(9);
            let plain_len = buf.len();
            buf.resize(plain_len + 20, 0);
            let len = pair.node.protect(&mut buf, plain_len, false).unwrap();
            let received = pair
                .client
                .srtp
                .as_mut()
                .unwrap()
                .unprotect_rtp(&buf[..len])
                .unwrap();
            assert_eq!(&received[..], &rtp(9)[..]);
        }

        #[test]
        fn checks_with_the_wrong_password_are_refused() {
            let mut pair = Pair::new();
            assert!(!pair.check(HOME, true, "not-the-node-password-01234"));
            assert_eq!(pair.node.paths().addresses().count(), 0);
        }

        #[test]
        fn consent_expires_without_answers_and_the_connection_closes_once() {
            let mut pair = Pair::new();
            pair.connect();
            // While the client answers, consent holds far beyond the timeout.
            let t0 = pair.now;
            pair.advance(t0 + 3 * CONSENT_TIMEOUT);
            assert_eq!(pair.events, [ConnectionEvent::Connected]);
            // The client leaves: our checks go unanswered.
            pair.client.owns.clear();
            let t1 = pair.now;
            pair.advance(t1 + CONSENT_TIMEOUT - Duration::from_secs(6));
            assert_eq!(
                pair.events.len(),
                1,
                "no answer for < 30 s is not expiry yet"
            );
            pair.advance(t1 + CONSENT_TIMEOUT + Duration::from_secs(1));
            assert_eq!(
                pair.events,
                [
                    ConnectionEvent::Connected,
                    ConnectionEvent::Closed("consent expired")
                ]
            );
            assert_eq!(
                pair.node.poll_timeout(),
                None,
                "a closed connection has no timer"
            );
            assert_eq!(
                pair.node.handle_datagram(pair.now, HOME, &mut rtp(1)),
                Err(Rejected::NotConnected)
            );
            // The SRTP keys are still held, but a closed connection uses them for nothing.
            let mut buf = rtp(2);
            let len = buf.len();
            buf.resize(len + 20, 0);
            assert_eq!(
                pair.node.protect(&mut buf, len, false),
                Err(Rejected::NotConnected)
            );
            assert_eq!(
                pair.node.unprotect(&mut rtp(3), false),
                Err(Rejected::NotConnected)
            );
        }

        #[test]
        fn a_dtls_client_that_cannot_start_says_so_and_closes() {
            let mut pair = Pair::new();
            let identity = DtlsIdentity::generate().unwrap();
            let mut dtls =
                DtlsTransport::new(&identity, &identity.fingerprint, DtlsRole::Client).unwrap();
            dtls.refuse_start();
            let mut node = Connection::new(pair.now, ice("node"));
            node.negotiate(pair.now, pair.client.ice.clone(), dtls)
                .unwrap();
            pair.node = node;
            let pwd = pair.node.local_ice().pwd.clone();
            assert!(pair.check(HOME, true, &pwd));
            assert_eq!(
                pair.events,
                [
                    ConnectionEvent::DtlsStartFailed,
                    ConnectionEvent::Closed("DTLS client start failed")
                ],
                "the first consented path starts the handshake, which fails"
            );
            assert_eq!(pair.node.poll_timeout(), None);
        }

        #[test]
        fn a_connection_never_connected_is_given_up_after_the_connect_timeout() {
            let mut pair = Pair::new();
            let t0 = pair.now;
            let deadline = pair.node.poll_timeout().unwrap();
            assert_eq!(deadline, t0 + CONNECT_TIMEOUT);
            pair.advance(deadline - Duration::from_millis(1));
            assert!(pair.events.is_empty());
            pair.advance(deadline);
            assert_eq!(
                pair.events,
                [ConnectionEvent::Closed(
                    "never connected: no ICE connectivity check succeeded"
                )]
            );
        }

        #[test]
        fn a_connection_whose_dtls_never_completes_says_so_when_given_up() {
            let mut pair = Pair::new();
            let pwd = pair.node.local_ice().pwd.clone();
            assert!(pair.check(HOME, true, &pwd));
            assert_eq!(pair.node.paths().selected(), Some(HOME));
            // The client never starts its DTLS handshake, nor checks again.
            pair.advance(pair.now + CONNECT_TIMEOUT + Duration::from_millis(1));
            assert_eq!(
                pair.events,
                [ConnectionEvent::Closed(
                    "never connected: the DTLS handshake did not complete"
                )]
            );
        }

        /// Review finding (2026-12-01): a participant validates a victim's address with a check
        /// spoofed from it (signed with its own credentials) and speaks DTLS "from" there before
        /// any path answered our check. No DTLS goes to the victim; the flight waits and goes to
        /// the first path that answers, where the handshake completes as usual.
        #[test]
        fn dtls_flights_go_only_to_a_path_that_answered_our_check() {
            const VICTIM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6000);
            let mut pair = Pair::new();
            pair.client.owns.clear(); // the sender answers no check yet
            let pwd = pair.node.local_ice().pwd.clone();
            assert!(pair.check(VICTIM, true, &pwd));
            assert!(
                pair.node.paths().contains(VICTIM),
                "the spoofed check validated it"
            );

            pair.client.dtls.start(pair.now, NODE).unwrap();
            let mut to_victim = 0;
            for _ in 0..3 {
                while let Some((_, datagram)) = pair.client.dtls.poll_transmit() {
                    let mut datagram = datagram.to_vec();
                    let _ = pair.node.handle_datagram(pair.now, VICTIM, &mut datagram);
                }
                while let Some((to, datagram)) = pair.node.poll_transmit() {
                    if to == VICTIM && PacketClass::of(&datagram) == PacketClass::Dtls {
                        to_victim += 1;
                    }
                }
                // Retransmissions on both sides do not leak either, and stay bounded.
                let later = pair.now + Duration::from_secs(2);
                pair.now = later;
                pair.node.handle_timeout(later);
                let _ = pair.client.dtls.handle_timeout(later);
            }
            assert_eq!(
                to_victim, 0,
                "DTLS reflected to an address that never consented"
            );
            assert!(pair.node.held_dtls.len() <= MAX_HELD_DTLS);
            assert!(!pair.node.is_connected());

            // The real client answers from HOME: the held flight goes there and DTLS completes.
            pair.client.owns = vec![HOME];
            assert!(pair.check(HOME, true, &pwd));
            assert!(pair.node.held_dtls.is_empty());
            pair.advance(pair.now + Duration::from_secs(3));
            assert!(pair.node.is_connected(), "{:?}", pair.events);
            assert_eq!(pair.events, [ConnectionEvent::Connected]);
            assert_eq!(pair.node.media_destination(), Some(HOME));
        }

        #[test]
        fn media_moves_only_to_a_path_that_answered_our_check() {
            let mut pair = Pair::new();
            pair.connect();
            let pwd = pair.node.local_ice().pwd.clone();
            let t0 = pair.now;
            // A check names MOBILE, but nobody there answers (spoofed): media stays home.
            assert!(pair.check(MOBILE, true, &pwd));
            pair.advance(t0 + 4 * SWITCH_INTERVAL);
            assert!(pair.node.paths().contains(MOBILE));
            assert_eq!(pair.node.media_destination(), Some(HOME));
            // The client really moves to MOBILE and nominates it again once the unanswered
            // candidate may be checked again: it answers there, and media follows once the
            // switch interval allows.
            pair.client.owns = vec![MOBILE, HOME];
            let t1 = pair.now + 2 * paths::RETRY_AFTER;
            pair.advance(t1);
            assert!(pair.check(MOBILE, true, &pwd));
            pair.advance(t1 + SWITCH_INTERVAL);
            assert_eq!(pair.node.media_destination(), Some(MOBILE));
            assert_eq!(pair.events, [ConnectionEvent::Connected]);
        }
    }
}
