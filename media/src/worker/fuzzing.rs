//! The stateful fuzz target of a media worker (`fuzz/fuzz_targets/media_worker.rs`): sequences
//! of commands (publish, subscribe, leave, close a room), datagrams from a few source addresses
//! (connectivity checks signed with the right credentials or not, answers to the node's own
//! checks, DTLS/SRTP-shaped bytes, garbage) and time steps, driven through a socketless worker's
//! demultiplexing, ICE/paths and DTLS/SRTP handling, with the worker's invariants checked after
//! every step: the address table names only live transports and exactly their own addresses,
//! per-transport address/candidate counts stay within their caps, a transport's selected media
//! path is never taken away while it lives (no other transport's check claims it), and every
//! live connection has its deadline in the timer queue, none left due once the timers ran.
//!
//! The input is a compact byte program (so crashes minimise and regressions can be written by
//! hand): an opcode byte, then that op's argument bytes (missing bytes read as 0).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mooyaho_net::dtls::DtlsIdentity;
use mooyaho_net::stun::{self, BindingRequest, Check, HOST_PRIORITY, IceRole};
use sfu_core::{RoomId, TransportId};

use super::thread::Worker;
use crate::connection::paths::{MAX_ADDRESSES, MAX_PENDING, MAX_SENT};
use crate::sdp::{IceCredentials, PublishOffer};

const ROOMS: usize = 2;
const SESSIONS: u8 = 4;
const ADDRESSES: u8 = 16;
/// What the node sent, kept for the program's answers (bounded).
const OUTBOX: usize = 64;

pub(super) fn identity() -> &'static DtlsIdentity {
    static IDENTITY: OnceLock<DtlsIdentity> = OnceLock::new();
    IDENTITY.get_or_init(|| DtlsIdentity::generate().expect("a DTLS identity can be generated"))
}

fn address(index: u8) -> SocketAddr {
    let index = index % ADDRESSES;
    SocketAddr::from(([10, 0, 0, index], 5000 + u16::from(index)))
}

fn session_name(session: u8) -> String {
    format!("s{}", session % SESSIONS)
}

/// The client's ICE credentials of a session (fixed: the program can sign with them).
fn client_ice(session: &str) -> IceCredentials {
    IceCredentials {
        ufrag: format!("cli{session}"),
        pwd: format!("clientpassword{session}0123456789"),
    }
}

pub(super) fn publish_offer(session: &str) -> String {
    let ice = client_ice(session);
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n\
         a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=setup:actpass\r\na=mid:0\r\n\
         a=sendonly\r\na=rtcp-mux\r\na=msid:{session} v\r\na=ssrc:{} cname:{session}\r\n",
        ice.ufrag,
        ice.pwd,
        identity().fingerprint,
        1000 + session.len(),
    )
}

/// `publish_offer` of session `session`, parsed once: the four texts never change, and parsing
/// them again on every publish was a fifth of the target's time.
fn parsed_offer(session: u8) -> &'static PublishOffer {
    static OFFERS: OnceLock<Vec<PublishOffer>> = OnceLock::new();
    let offers = OFFERS.get_or_init(|| {
        (0..SESSIONS)
            .map(|s| {
                PublishOffer::parse(&publish_offer(&session_name(s)))
                    .expect("the harness's publish offers parse")
            })
            .collect()
    });
    &offers[usize::from(session % SESSIONS)]
}

/// Receives every m-line of the node's offer with its first codec.
pub(super) fn subscribe_answer(session: &str, offer: &str, setup: &str) -> String {
    let ice = client_ice(session);
    let mut mids = Vec::new();
    let mut body = String::new();
    for section in offer.split("\r\nm=").skip(1) {
        let first = section.lines().next().unwrap_or_default();
        let fields: Vec<&str> = first.split_whitespace().collect();
        let (kind, pt) = (
            fields.first().copied().unwrap_or("video"),
            fields.get(3).copied().unwrap_or("96"),
        );
        let mid = section
            .lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .unwrap_or("0");
        mids.push(mid.to_owned());
        body += &format!("m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\n");
        for line in section.lines() {
            if line.starts_with(&format!("a=rtpmap:{pt} ")) {
                body += &format!("{line}\r\n");
            }
        }
        body += &format!("a=setup:{setup}\r\na=mid:{mid}\r\na=recvonly\r\na=rtcp-mux\r\n");
    }
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n\
         a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\n{body}",
        mids.join(" "),
        ice.ufrag,
        ice.pwd,
        identity().fingerprint,
    )
}

/// A client's check to the node: USERNAME `<node ufrag>:<client ufrag>`.
fn check(node: &IceCredentials, client: &IceCredentials, nominate: bool, pwd: &str) -> Vec<u8> {
    Check {
        username: &format!("{}:{}", node.ufrag, client.ufrag),
        receiver_pwd: pwd,
        transaction: stun::new_transaction_id(),
        priority: HOST_PRIORITY,
        role: IceRole::Controlling(7),
        use_candidate: nominate,
    }
    .to_bytes()
}

/// sfu-core's defaults but a small retransmit ring. A program cannot complete a DTLS handshake
/// (it has no DTLS client), so no packet passes SRTP into sfu-core and no ring slot is ever
/// filled: the size changes no reachable state. The default ring (512 slots per track) was
/// allocated, page-faulted and freed on every publish of every input: a tenth of the target's
/// time under libFuzzer.
fn harness_core_config() -> sfu_core::Config {
    sfu_core::Config {
        retransmit_capacity: 16,
        ..sfu_core::Config::default()
    }
}

struct Program<'a> {
    data: &'a [u8],
}

impl Program<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        *first
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte()).min(self.data.len());
        let (taken, rest) = self.data.split_at(len);
        self.data = rest;
        taken.to_vec()
    }
}

struct Harness {
    worker: Worker,
    now: Instant,
    rooms: [Option<RoomId>; ROOMS],
    /// What the node sent, latest last.
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    _events: tokio::sync::mpsc::UnboundedReceiver<super::NodeEvent>,
    _pipe_inbox: std::sync::mpsc::SyncSender<super::PipeMessage>,
}

impl Harness {
    fn new() -> Self {
        let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let (pipe_tx, pipe_rx) = std::sync::mpsc::sync_channel(1);
        let mut worker = Worker::new(
            0,
            None,
            std::sync::Arc::from([crate::sdp::Candidate::udp(SocketAddr::from((
                [127, 0, 0, 1],
                9,
            )))]),
            identity().clone(),
            events,
            Vec::new(),
            pipe_rx,
            harness_core_config(),
        );
        // No publish rate limit: a program republishes far faster than any honest client, and
        // refusing those publishes would hide the states they reach (the limit has its own tests).
        worker.publish_policy.rate.interval = Duration::ZERO;
        Self {
            worker,
            now: Instant::now(),
            rooms: [None; ROOMS],
            outbox: Vec::new(),
            _events: events_rx,
            _pipe_inbox: pipe_tx,
        }
    }

    fn room(&mut self, index: u8) -> Option<RoomId> {
        let slot = usize::from(index) % ROOMS;
        if self.rooms[slot].is_none() {
            self.rooms[slot] = self.worker.create_room().ok();
        }
        self.rooms[slot]
    }

    fn datagram(&mut self, from: SocketAddr, mut datagram: Vec<u8>) {
        self.worker.handle_datagram(self.now, from, &mut datagram);
        self.worker.drain();
    }

    fn step(&mut self, program: &mut Program<'_>) {
        match program.byte() % 9 {
            0 => {
                let (room, session) = (program.byte(), program.byte() % SESSIONS);
                if let Some(room) = self.room(room) {
                    // `Worker::publish`'s steps, the session's offer parsed once per process.
                    let name = session_name(session);
                    let _ = self
                        .worker
                        .take_publish_token(self.now, room, &name)
                        .and_then(|()| {
                            self.worker
                                .publish_parsed(self.now, room, name, parsed_offer(session))
                        });
                }
            }
            1 => {
                let (room, session) = (program.byte(), session_name(program.byte()));
                let setup = if program.byte().is_multiple_of(2) {
                    "active"
                } else {
                    "passive"
                };
                if let Some(room) = self.room(room)
                    && let Ok(Some(offer)) = self.worker.subscribe_offer(self.now, room, &session)
                {
                    let answer = subscribe_answer(&session, &offer, setup);
                    let _ = self
                        .worker
                        .subscribe_answer(self.now, room, &session, &answer);
                }
            }
            2 => {
                let (room, session) = (program.byte(), session_name(program.byte()));
                if let Some(room) = self.rooms[usize::from(room) % ROOMS] {
                    let _ = self.worker.close_session(room, &session);
                }
            }
            3 => {
                let slot = usize::from(program.byte()) % ROOMS;
                if let Some(room) = self.rooms[slot].take() {
                    let _ = self.worker.close_room(room);
                }
            }
            4 => {
                // A check to the `target`-th live transport (in id order), from `from`.
                let (target, from, flags) = (program.byte(), program.byte(), program.byte());
                let mut transports: Vec<_> = self.worker.links.keys().copied().collect();
                transports.sort_by_key(|t| t.to_u64());
                let Some(transport) = transports.get(usize::from(target) % transports.len().max(1))
                else {
                    return;
                };
                let link = &self.worker.links[transport];
                let client = client_ice(&link.session);
                let local = link.connection.local_ice();
                let pwd = if flags & 2 == 0 {
                    local.pwd.clone()
                } else {
                    "a-wrong-password-0123456789".to_owned()
                };
                let request = check(local, &client, flags & 1 == 1, &pwd);
                self.datagram(address(from), request);
            }
            5 => {
                // The client at `from` answers every check the node sent there.
                let to = address(program.byte());
                let answers: Vec<Vec<u8>> = self
                    .outbox
                    .iter()
                    .filter(|(dest, _)| *dest == to)
                    .filter_map(|(_, datagram)| {
                        let mut request = BindingRequest::parse(datagram).ok()?;
                        let session = request.local_ufrag.strip_prefix("cli")?.to_owned();
                        let pwd = client_ice(&session).pwd;
                        request.authenticate(&pwd).ok()?;
                        Some(request.success(to, &pwd))
                    })
                    .collect();
                for answer in answers {
                    self.datagram(to, answer);
                }
            }
            6 => {
                let from = address(program.byte());
                let bytes = program.bytes();
                self.datagram(from, bytes);
            }
            7 => {
                // DTLS-, RTP- or RTCP-shaped bytes.
                let (from, kind) = (address(program.byte()), program.byte() % 3);
                let mut bytes = program.bytes();
                bytes.resize(bytes.len().max(12), 0);
                match kind {
                    0 => bytes[0] = 20 + bytes[0] % 44,
                    1 => (bytes[0], bytes[1]) = (0x80, bytes[1] & 0x7f),
                    _ => (bytes[0], bytes[1]) = (0x80, 200 + bytes[1] % 8),
                }
                self.datagram(from, bytes);
            }
            _ => {
                self.now += Duration::from_millis(100) * u32::from(program.byte());
                self.worker.handle_timers(self.now);
                // Nothing is left due: a deadline a timer did not move would spin the loop.
                for transport in self.worker.links.keys() {
                    assert!(
                        self.worker.timers.deadline(transport) > Some(self.now),
                        "{transport:?}'s timer is still due after handle_timers"
                    );
                }
            }
        }
        self.worker.drain();
        self.outbox.extend(self.worker.take_sent());
        let excess = self.outbox.len().saturating_sub(OUTBOX);
        self.outbox.drain(..excess);
    }

    /// The worker's invariants (a panic here is a finding).
    fn check(&self) {
        let worker = &self.worker;
        for (addr, transport) in &worker.by_addr {
            let link = worker
                .links
                .get(transport)
                .unwrap_or_else(|| panic!("{addr} names a gone transport"));
            assert!(
                link.connection.paths().contains(*addr),
                "{addr} is in the table but not in its transport's list"
            );
        }
        for (transport, link) in &worker.links {
            let paths = link.connection.paths();
            for addr in paths.addresses() {
                assert_eq!(
                    worker.by_addr.get(&addr),
                    Some(transport),
                    "{addr} of a transport is missing from the table"
                );
            }
            assert!(paths.addresses().count() <= MAX_ADDRESSES);
            assert!(paths.pending() <= MAX_PENDING);
            assert!(paths.remembered_checks() <= MAX_SENT);
            if let Some(selected) = paths.selected() {
                assert!(paths.contains(selected), "media goes to an unknown path");
            }
        }
        // Every live connection has its deadline queued (one that lost it would never expire),
        // and the queue names no gone transport.
        for (transport, link) in &worker.links {
            if link.connection.poll_timeout().is_some() {
                assert!(
                    worker.timers.deadline(transport).is_some(),
                    "{transport:?} has no timer"
                );
            }
        }
        for transport in worker.timers.keys() {
            assert!(
                worker.links.contains_key(transport),
                "a timer names a gone transport"
            );
        }
        for transport in worker.by_ufrag.values() {
            assert!(
                worker.links.contains_key(transport),
                "a ufrag names a gone transport"
            );
        }
    }

    /// Every transport's selected media path.
    fn selected_paths(&self) -> Vec<(TransportId, SocketAddr)> {
        self.worker
            .links
            .iter()
            .filter_map(|(t, l)| Some((*t, l.connection.paths().selected()?)))
            .collect()
    }

    /// Across one step: a transport that had a selected path and still lives has one (media
    /// only switches to another consented path), and its old selected path was not handed to
    /// another transport.
    fn check_selected_kept(&self, before: &[(TransportId, SocketAddr)]) {
        for (transport, selected) in before {
            let Some(link) = self.worker.links.get(transport) else {
                continue;
            };
            assert!(
                link.connection.paths().selected().is_some(),
                "{transport:?} lost its media path {selected}"
            );
            if let Some(owner) = self.worker.by_addr.get(selected) {
                assert_eq!(
                    owner, transport,
                    "another transport took the selected path {selected}"
                );
            }
        }
    }
}

/// Runs one step and checks the invariants.
fn step_and_check(harness: &mut Harness, program: &mut Program<'_>) {
    let before = harness.selected_paths();
    harness.step(program);
    harness.check();
    harness.check_selected_kept(&before);
}

/// Fuzz body: runs the program, checking the invariants after every step.
pub fn fuzz_media_worker(data: &[u8]) {
    let mut harness = Harness::new();
    let mut program = Program { data };
    let mut steps = 0;
    while !program.data.is_empty() && steps < 256 {
        step_and_check(&mut harness, &mut program);
        steps += 1;
    }
    // What `harness_core_config` rests on: had a packet reached sfu-core, the ring's size
    // would matter.
    assert_eq!(
        harness.worker.core.stats().counters.rtp_received,
        0,
        "an RTP packet passed SRTP without a DTLS handshake"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 item 1: one transport validated from 9 addresses, the session leaves, then RTP-,
    /// RTCP- and DTLS-shaped datagrams from the evicted first address.
    pub(crate) fn address_churn() -> Vec<u8> {
        let mut program = vec![0, 0, 0]; // publish: room 0, session 0
        for from in 0..9 {
            program.extend([4, 0, from, 1]); // nominating check to transport 0 from `from`
        }
        program.extend([2, 0, 0]); // leave
        for kind in 0..3 {
            program.extend([7, 0, kind, 12, 0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7]);
        }
        program
    }

    #[test]
    fn address_churn_program_keeps_the_tables_consistent() {
        let mut harness = Harness::new();
        let program = address_churn();
        let mut reader = Program { data: &program };
        let mut max_addresses = 0;
        while !reader.data.is_empty() {
            harness.step(&mut reader);
            harness.check();
            max_addresses = max_addresses.max(harness.worker.by_addr.len());
        }
        assert_eq!(
            max_addresses, MAX_ADDRESSES,
            "the ninth address evicted one"
        );
        assert!(harness.worker.links.is_empty() && harness.worker.by_addr.is_empty());
        assert!(
            harness.worker.counters.media_unauthenticated
                + harness.worker.counters.dtls_unauthenticated
                >= 3
        );
        assert_eq!(harness.worker.counters.stale_routes, 0);
    }

    #[test]
    fn consent_answers_select_a_path_and_subscribers_connect_their_paths() {
        // Publish, check from address 1, answer the node's check there: media path selected.
        let program = [
            0, 0, 0, 4, 0, 1, 1, 5, 1, 1, 0, 1, 0, 4, 1, 2, 1, 5, 2, 8, 50, 5, 1,
        ];
        let mut harness = Harness::new();
        let mut reader = Program { data: &program };
        while !reader.data.is_empty() {
            harness.step(&mut reader);
            harness.check();
        }
        let selected: Vec<_> = harness
            .worker
            .links
            .values()
            .filter_map(|l| l.connection.paths().selected())
            .collect();
        assert!(selected.contains(&address(1)), "{selected:?}");
    }

    /// Review 1 finding 1: transport 1 signs a nominating check from transport 0's selected
    /// path (address 1) — dropped and counted; from transport 0's unconfirmed candidate
    /// (address 3) — it moves.
    pub(crate) fn live_address_claim() -> Vec<u8> {
        vec![
            0, 0, 0, // publish: room 0, session 0 (transport 0)
            4, 0, 1, 1, // its nominating check from address 1
            5, 1, // address 1 answers the node's check: selected
            0, 0, 1, // publish: room 0, session 1 (transport 1)
            4, 1, 1, 1, // transport 1's check from address 1 (spoofed)
            4, 0, 3, 0, // transport 0's check from address 3, never answered
            4, 1, 3, 1, // transport 1's check from address 3
        ]
    }

    #[test]
    fn a_check_from_another_transports_live_path_is_dropped_and_counted() {
        let mut harness = Harness::new();
        let program = live_address_claim();
        let mut reader = Program { data: &program };
        while !reader.data.is_empty() {
            step_and_check(&mut harness, &mut reader);
        }
        let mut transports: Vec<_> = harness.worker.links.keys().copied().collect();
        transports.sort_by_key(|t| t.to_u64());
        let [owner, claimant] = transports[..] else {
            panic!("two transports expected: {transports:?}");
        };
        let worker = &harness.worker;
        assert_eq!(worker.counters.live_address_claims, 1);
        assert_eq!(
            worker.links[&owner].connection.paths().selected(),
            Some(address(1))
        );
        assert_eq!(worker.by_addr.get(&address(1)), Some(&owner));
        assert!(
            !worker.links[&claimant]
                .connection
                .paths()
                .contains(address(1))
        );
        // An unconfirmed candidate is not protected (it may be the claimant's real address).
        assert_eq!(worker.by_addr.get(&address(3)), Some(&claimant));
        assert!(!worker.links[&owner].connection.paths().contains(address(3)));
    }

    #[test]
    fn the_publish_offer_is_accepted() {
        let mut harness = Harness::new();
        let room = harness.room(0).unwrap();
        let now = harness.now;
        harness
            .worker
            .publish(now, room, "s0".into(), &publish_offer("s0"))
            .unwrap();
    }

    /// The harness publishes offers parsed once; they must negotiate exactly as their text does
    /// through `Worker::publish`.
    #[test]
    fn a_parsed_offer_negotiates_as_its_text_does() {
        let local = crate::sdp::LocalDescription {
            ice: client_ice("node"),
            fingerprint: crate::sdp::Fingerprint(identity().fingerprint.clone()),
            candidates: vec![crate::sdp::Candidate::udp(address(0))],
        };
        let limits = crate::sdp::PublishLimits::default();
        for session in 0..SESSIONS {
            let text = publish_offer(&session_name(session));
            let from_text = crate::sdp::negotiate_publish(&text, &local, &limits).unwrap();
            let parsed =
                crate::sdp::negotiate_parsed_publish(parsed_offer(session), &local, &limits)
                    .unwrap();
            assert_eq!(format!("{from_text:?}"), format!("{parsed:?}"));
            assert_eq!(parsed.tracks.len(), 1);
        }
    }

    #[test]
    fn garbage_programs_run() {
        for seed in 0u8..64 {
            let program: Vec<u8> = (0..200u32)
                .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed ^ 0x5a))
                .collect();
            fuzz_media_worker(&program);
        }
    }
}
