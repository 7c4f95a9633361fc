//! Simulation harness (str0m's netem idea): a virtual clock, fake publishers emitting RTP on a
//! synthetic timeline, fake subscribers answering with NACK/PLI, and lossy links with latency.
//! Everything is deterministic: seeded loss, no sleeps, no wall clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sfu_core::rtcp::{Compound, RtcpPacket, write_nack, write_pli};
use sfu_core::rtp::{Codec, ExtensionKind, ExtensionMap, OutExtensions, RtpHeader, RtpPacket};
use sfu_core::time::extend_u16;
use sfu_core::*;

const MS: Duration = Duration::from_millis(1);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

/// One direction of a network path.
#[derive(Default)]
struct Link {
    latency: Duration,
    loss: f64,
    /// Indices (0-based, counting RTP packets through this link) that are always dropped.
    drop: BTreeSet<u64>,
    rtp_count: u64,
}

impl Link {
    fn new(latency_ms: u64) -> Self {
        Self {
            latency: Duration::from_millis(latency_ms),
            ..Self::default()
        }
    }

    fn passes_rtp(&mut self, rng: &mut Rng) -> bool {
        let index = self.rtp_count;
        self.rtp_count += 1;
        !self.drop.contains(&index) && !rng.chance(self.loss)
    }
}

struct Publisher {
    transport: TransportId,
    track: TrackId,
    kind: MediaKind,
    ssrc: u32,
    pt: u8,
    rtx: Option<(u32, u8)>,
    seq: u16,
    rtx_seq: u16,
    ts: u32,
    frame: Duration,
    packets_per_frame: usize,
    next_frame: Instant,
    keyframe_pending: bool,
    history: HashMap<u16, Bytes>,
    sent: u64,
    plis: usize,
    nacked: Vec<u16>,
    remb: Option<Bitrate>,
    rrs: usize,
    twcc: usize,
    twcc_seq: u16,
    uplink: Link,
    downlink: Link,
}

#[derive(Default)]
struct Stream {
    highest: Option<SeqNo>,
    /// Extended seq → (timestamp, payload, arrival time).
    received: BTreeMap<u64, (u32, Bytes, Instant)>,
    /// Seqs in arrival order (duplicates included).
    arrivals: Vec<u64>,
    nacks: HashMap<u64, (u8, Instant)>,
}

impl Stream {
    /// Sequence numbers missing between the first and last received, ignoring the newest
    /// `recent` (still being recovered).
    fn missing(&self, recent: Duration, now: Instant) -> Vec<u64> {
        let (Some(&first), Some(_)) = (self.received.keys().next(), self.received.keys().last())
        else {
            return vec![];
        };
        let settled = self
            .received
            .iter()
            .filter(|(_, (_, _, at))| now.duration_since(*at) >= recent)
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(first);
        (first..=settled)
            .filter(|s| !self.received.contains_key(s))
            .collect()
    }
}

struct Subscriber {
    transport: TransportId,
    subscriptions: Vec<(SubscriptionId, u32)>,
    rtx: HashMap<u32, (u32, u8)>,
    streams: HashMap<u32, Stream>,
    send_nacks: bool,
    srs: usize,
    uplink: Link,
    downlink: Link,
}

enum Delivery {
    Rtp(TransportId, Bytes),
    Rtcp(TransportId, Bytes),
    ToPublisher(usize, Bytes),
    ToSubscriber(usize, Bytes, bool),
}

struct Sim {
    rng: Rng,
    now: Instant,
    worker: Worker,
    room: RoomId,
    publishers: Vec<Publisher>,
    subscribers: Vec<Subscriber>,
    in_flight: Vec<(Instant, u64, Delivery)>,
    order: u64,
    events: Vec<Event>,
}

fn payload_type(kind: MediaKind) -> u8 {
    if kind == MediaKind::Video { 96 } else { 111 }
}

impl Sim {
    fn new(seed: u64) -> Self {
        let now = Instant::now();
        let mut worker = Worker::new(Config::default());
        let room = worker.create_room().unwrap();
        Self {
            rng: Rng(seed | 1),
            now,
            worker,
            room,
            publishers: vec![],
            subscribers: vec![],
            in_flight: vec![],
            order: 0,
            events: vec![],
        }
    }

    fn add_publisher(&mut self, kind: MediaKind, rtx: bool) -> usize {
        let extensions = ExtensionMap::new(&[(3, ExtensionKind::TransportCc)]);
        let transport = self
            .worker
            .add_transport(
                self.now,
                self.room,
                TransportConfig {
                    direction: Direction::Publish,
                    extensions,
                },
            )
            .unwrap();
        let ssrc = 1000 + self.publishers.len() as u32 * 10;
        let video = kind == MediaKind::Video;
        let config = TrackConfig {
            kind,
            codec: if video { Codec::Vp8 } else { Codec::Opus },
            ssrc: Ssrc(ssrc),
            pt: Pt(payload_type(kind)),
            clock_rate: ClockRate(if video { 90_000 } else { 48_000 }),
            rtx: rtx.then_some(Rtx {
                ssrc: Ssrc(ssrc + 1),
                pt: Pt(97),
            }),
            mid: None,
        };
        let track = self
            .worker
            .publish_track(self.now, transport, config)
            .unwrap();
        self.publishers.push(Publisher {
            transport,
            track,
            kind,
            ssrc,
            pt: payload_type(kind),
            rtx: rtx.then_some((ssrc + 1, 97)),
            seq: (self.rng.next() as u16) | 0xff00, // wraps within seconds
            rtx_seq: 0,
            ts: self.rng.next() as u32,
            frame: if video { 33 * MS } else { 20 * MS },
            packets_per_frame: if video { 3 } else { 1 },
            next_frame: self.now,
            keyframe_pending: true,
            history: HashMap::new(),
            sent: 0,
            plis: 0,
            nacked: vec![],
            remb: None,
            rrs: 0,
            twcc: 0,
            twcc_seq: 0,
            uplink: Link::new(10),
            downlink: Link::new(10),
        });
        self.publishers.len() - 1
    }

    fn add_subscriber(&mut self, rtx: bool) -> usize {
        let extensions =
            ExtensionMap::new(&[(1, ExtensionKind::Mid), (3, ExtensionKind::TransportCc)]);
        let transport = self
            .worker
            .add_transport(
                self.now,
                self.room,
                TransportConfig {
                    direction: Direction::Subscribe,
                    extensions,
                },
            )
            .unwrap();
        self.subscribers.push(Subscriber {
            transport,
            subscriptions: vec![],
            rtx: HashMap::new(),
            streams: HashMap::new(),
            send_nacks: true,
            srs: 0,
            uplink: Link::new(10),
            downlink: Link::new(10),
        });
        let index = self.subscribers.len() - 1;
        for p in 0..self.publishers.len() {
            self.subscribe(index, p, rtx);
        }
        index
    }

    fn subscribe(&mut self, s: usize, p: usize, rtx: bool) -> u32 {
        let ssrc = 50_000 + (s as u32) * 100 + p as u32 * 2;
        let pt = payload_type(self.publishers[p].kind);
        let config = SubscriptionConfig {
            ssrc: Ssrc(ssrc),
            pt: Pt(pt),
            rtx: rtx.then_some(Rtx {
                ssrc: Ssrc(ssrc + 1),
                pt: Pt(98),
            }),
            mid: Mid::new(format!("{p}").as_bytes()),
        };
        let id = self
            .worker
            .subscribe(
                self.now,
                self.subscribers[s].transport,
                self.publishers[p].track,
                config,
            )
            .unwrap();
        let sub = &mut self.subscribers[s];
        sub.subscriptions.push((id, ssrc));
        if rtx {
            sub.rtx.insert(ssrc + 1, (ssrc, pt));
        }
        self.drain();
        ssrc
    }

    fn send(&mut self, at: Instant, delivery: Delivery) {
        self.order += 1;
        self.in_flight.push((at, self.order, delivery));
    }

    /// Moves everything the worker produced onto the links.
    fn drain(&mut self) {
        while let Some(tx) = self.worker.poll_transmit() {
            let mut buf = BytesMut::new();
            tx.packet.write_to(&mut buf);
            let bytes = buf.freeze();
            let is_rtp = matches!(tx.packet, OutPacket::Rtp { .. });
            if let Some(p) = self.publishers.iter().position(|p| p.transport == tx.to) {
                let at = self.now + self.publishers[p].downlink.latency;
                self.send(at, Delivery::ToPublisher(p, bytes));
            } else if let Some(s) = self.subscribers.iter().position(|s| s.transport == tx.to) {
                let link = &mut self.subscribers[s].downlink;
                if is_rtp && !link.passes_rtp(&mut self.rng) {
                    continue;
                }
                let at = self.now + link.latency;
                self.send(at, Delivery::ToSubscriber(s, bytes, is_rtp));
            }
        }
        self.events
            .extend(std::iter::from_fn(|| self.worker.poll_event()));
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            let frames = self.publishers.iter().map(|p| p.next_frame);
            let flights = self.in_flight.iter().map(|f| f.0);
            let Some(next) = frames
                .chain(flights)
                .chain(self.worker.poll_timeout())
                .min()
            else {
                break;
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            self.in_flight.sort_by_key(|f| (f.0, f.1));
            while self.in_flight.first().is_some_and(|f| f.0 <= self.now) {
                let (_, _, delivery) = self.in_flight.remove(0);
                self.deliver(delivery);
            }
            for p in 0..self.publishers.len() {
                if self.publishers[p].next_frame <= self.now {
                    self.emit_frame(p);
                }
            }
            if self.worker.poll_timeout().is_some_and(|t| t <= self.now) {
                self.worker.handle_timeout(self.now);
                self.drain();
            }
        }
        self.now = end;
    }

    fn deliver(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Rtp(t, b) => self.worker.handle_rtp(self.now, t, b),
            Delivery::Rtcp(t, b) => self.worker.handle_rtcp(self.now, t, b),
            Delivery::ToPublisher(p, b) => self.publisher_rtcp(p, &b),
            Delivery::ToSubscriber(s, b, true) => self.subscriber_rtp(s, b),
            Delivery::ToSubscriber(s, b, false) => {
                self.subscribers[s].srs += Compound::new(&b)
                    .filter(|m| matches!(m, Ok(RtcpPacket::SenderReport(_))))
                    .count();
            }
        }
        self.drain();
    }

    fn emit_frame(&mut self, p: usize) {
        let now = self.now;
        let publisher = &mut self.publishers[p];
        publisher.next_frame = now + publisher.frame;
        let keyframe = std::mem::take(&mut publisher.keyframe_pending);
        publisher.ts = publisher
            .ts
            .wrapping_add(if publisher.kind == MediaKind::Video {
                2970
            } else {
                960
            });
        let mut packets = Vec::new();
        for i in 0..publisher.packets_per_frame {
            let mut payload = vec![0u8; 100];
            if publisher.kind == MediaKind::Video {
                payload[0] = if i == 0 { 0x10 } else { 0x00 };
                payload[1] = if keyframe { 0x00 } else { 0x01 };
            }
            payload[2..4].copy_from_slice(&publisher.seq.to_be_bytes());
            let header = RtpHeader {
                ssrc: Ssrc(publisher.ssrc),
                pt: Pt(publisher.pt),
                seq: SeqNo(u64::from(publisher.seq)),
                timestamp: RtpTime(u64::from(publisher.ts)),
                marker: i + 1 == publisher.packets_per_frame,
                extensions: {
                    let mut ext = OutExtensions::EMPTY;
                    ext.push(3, &publisher.twcc_seq.to_be_bytes());
                    ext
                },
                rtx_osn: None,
            };
            publisher.twcc_seq = publisher.twcc_seq.wrapping_add(1);
            let mut buf = BytesMut::new();
            header.write_to(&payload, &mut buf);
            let bytes = buf.freeze();
            publisher.history.insert(publisher.seq, bytes.clone());
            publisher.seq = publisher.seq.wrapping_add(1);
            publisher.sent += 1;
            if publisher.uplink.passes_rtp(&mut self.rng) {
                packets.push(bytes);
            }
        }
        let (at, transport) = (now + publisher.uplink.latency, publisher.transport);
        for bytes in packets {
            self.send(at, Delivery::Rtp(transport, bytes));
        }
    }

    /// The publisher's reaction to our RTCP: resend NACKed packets (on RTX when negotiated),
    /// make the next frame a keyframe on PLI, and count reports.
    fn publisher_rtcp(&mut self, p: usize, bytes: &Bytes) {
        let mut resend = Vec::new();
        let publisher = &mut self.publishers[p];
        for message in Compound::new(bytes) {
            match message.expect("worker RTCP must parse") {
                RtcpPacket::Nack(n) => {
                    for seq in n.lost() {
                        publisher.nacked.push(seq);
                        let Some(original) = publisher.history.get(&seq) else {
                            continue;
                        };
                        let packet = match publisher.rtx {
                            None => original.clone(),
                            Some((ssrc, pt)) => {
                                let original = RtpPacket::parse(original.clone()).unwrap();
                                let header = RtpHeader {
                                    ssrc: Ssrc(ssrc),
                                    pt: Pt(pt),
                                    seq: SeqNo(u64::from(publisher.rtx_seq)),
                                    timestamp: RtpTime(u64::from(original.timestamp())),
                                    marker: original.marker(),
                                    extensions: OutExtensions::EMPTY,
                                    rtx_osn: Some(SeqNo(u64::from(seq))),
                                };
                                publisher.rtx_seq = publisher.rtx_seq.wrapping_add(1);
                                let mut buf = BytesMut::new();
                                header.write_to(original.payload(), &mut buf);
                                buf.freeze()
                            }
                        };
                        resend.push(packet);
                    }
                }
                RtcpPacket::Pli { .. } => {
                    publisher.plis += 1;
                    publisher.keyframe_pending = true;
                }
                RtcpPacket::ReceiverReport(_) => publisher.rrs += 1,
                RtcpPacket::Remb { bitrate, .. } => publisher.remb = Some(bitrate),
                RtcpPacket::TransportCc { .. } => publisher.twcc += 1,
                _ => {}
            }
        }
        let (at, transport) = (self.now + publisher.uplink.latency, publisher.transport);
        for packet in resend {
            self.send(at, Delivery::Rtp(transport, packet));
        }
    }

    fn subscriber_rtp(&mut self, s: usize, bytes: Bytes) {
        let now = self.now;
        let sub = &mut self.subscribers[s];
        let mut packet = RtpPacket::parse(bytes).expect("worker RTP must parse");
        if let Some(&(ssrc, pt)) = sub.rtx.get(&packet.ssrc().0) {
            packet = packet
                .unwrap_rtx(Ssrc(ssrc), Pt(pt))
                .expect("RTX carries an OSN");
        }
        let ssrc = packet.ssrc().0;
        let stream = sub.streams.entry(ssrc).or_default();
        let seq = extend_u16(stream.highest, packet.seq());
        stream.arrivals.push(seq.0);
        stream
            .received
            .insert(seq.0, (packet.timestamp(), packet.payload().clone(), now));
        stream.highest = Some(stream.highest.map_or(seq, |h| h.max(seq)));
        if !sub.send_nacks {
            return;
        }
        // NACK every gap at once, then re-NACK every 60 ms, at most 10 times (libwebrtc-like).
        let highest = stream.highest.unwrap().0;
        let first = *stream.received.keys().next().unwrap();
        let mut lost = Vec::new();
        for missing in first..highest {
            if stream.received.contains_key(&missing) {
                continue;
            }
            let entry = stream
                .nacks
                .entry(missing)
                .or_insert((0, now - Duration::from_secs(1)));
            if entry.0 < 10 && now.duration_since(entry.1) >= 60 * MS {
                *entry = (entry.0 + 1, now);
                lost.push(missing as u16);
            }
        }
        if !lost.is_empty() {
            let mut buf = BytesMut::new();
            write_nack(&mut buf, Ssrc(9), Ssrc(ssrc), lost);
            let (at, transport) = (now + sub.uplink.latency, sub.transport);
            self.send(at, Delivery::Rtcp(transport, buf.freeze()));
        }
    }

    fn subscriber_pli(&mut self, s: usize, media: u32) {
        let mut buf = BytesMut::new();
        write_pli(&mut buf, Ssrc(9), Ssrc(media));
        let (at, transport) = (
            self.now + self.subscribers[s].uplink.latency,
            self.subscribers[s].transport,
        );
        self.send(at, Delivery::Rtcp(transport, buf.freeze()));
    }

    fn stream(&self, s: usize, ssrc: u32) -> &Stream {
        self.subscribers[s]
            .streams
            .get(&ssrc)
            .expect("subscriber received the stream")
    }
}

fn is_vp8_keyframe_start(payload: &[u8]) -> bool {
    payload[0] == 0x10 && payload[1] & 1 == 0
}

#[test]
fn nack_recovers_single_loss() {
    let mut sim = Sim::new(1);
    sim.add_publisher(MediaKind::Video, true);
    let s = sim.add_subscriber(true);
    sim.subscribers[s].downlink.drop.insert(30);
    sim.run_for(Duration::from_secs(2));
    let stream = sim.stream(s, 50_000);
    assert_eq!(stream.missing(200 * MS, sim.now), Vec::<u64>::new());
    let c = sim.worker.stats().counters;
    assert_eq!(c.retransmits_sent, 1, "{c:?}");
    assert_eq!(c.retransmit_misses, 0);
    assert_eq!(
        stream.received.len() as u64,
        c.rtp_forwarded,
        "every forwarded packet arrived once"
    );
}

#[test]
fn nack_recovers_uplink_loss_through_publisher_rtx() {
    let mut sim = Sim::new(2);
    let p = sim.add_publisher(MediaKind::Video, true);
    let s = sim.add_subscriber(false);
    sim.publishers[p].uplink.drop.insert(20);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        sim.publishers[p].nacked.len(),
        1,
        "the gap is NACKed once and recovered"
    );
    assert!(sim.stream(s, 50_000).missing(200 * MS, sim.now).is_empty());
    assert_eq!(
        sim.worker
            .track_stats(sim.publishers[p].track)
            .unwrap()
            .missing,
        0
    );
}

#[test]
fn random_loss_on_both_links_is_recovered() {
    let mut sim = Sim::new(3);
    let p = sim.add_publisher(MediaKind::Video, true);
    let s = sim.add_subscriber(true);
    sim.publishers[p].uplink.loss = 0.05;
    sim.subscribers[s].downlink.loss = 0.05;
    sim.run_for(Duration::from_secs(5));
    let stream = sim.stream(s, 50_000);
    assert!(stream.received.len() > 400);
    assert_eq!(
        stream.missing(Duration::from_millis(600), sim.now),
        Vec::<u64>::new()
    );
}

#[test]
fn pli_is_throttled_across_subscribers() {
    let mut sim = Sim::new(4);
    let p = sim.add_publisher(MediaKind::Video, false);
    let subs: Vec<_> = (0..10).map(|_| sim.add_subscriber(false)).collect();
    sim.run_for(Duration::from_millis(200));
    let before = sim.publishers[p].plis;
    for _ in 0..40 {
        for &s in &subs {
            let media = sim.subscribers[s].subscriptions[0].1;
            sim.subscriber_pli(s, media);
        }
        sim.run_for(50 * MS);
    }
    let upstream = sim.publishers[p].plis - before;
    // 2 s of requests from 10 subscribers every 50 ms (400 PLIs) → one per 500 ms window.
    assert!(
        (4..=5).contains(&upstream),
        "{upstream} PLIs reached the publisher"
    );
    assert_eq!(sim.worker.stats().counters.keyframe_requests_received, 400);
}

#[test]
fn late_joiner_waits_for_keyframe() {
    let mut sim = Sim::new(5);
    let p = sim.add_publisher(MediaKind::Video, false);
    let early = sim.add_subscriber(false);
    // The PLI takes 100 ms to reach the publisher, so a few delta frames arrive first.
    sim.publishers[p].downlink.latency = 100 * MS;
    sim.run_for(Duration::from_secs(1));
    let plis = sim.publishers[p].plis;
    let late = sim.add_subscriber(false);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.publishers[p].plis,
        plis + 1,
        "joining asks the publisher for one keyframe"
    );
    let stream = sim.stream(late, 50_100);
    let first = stream.arrivals[0];
    assert!(
        is_vp8_keyframe_start(&stream.received[&first].1),
        "first packet a late joiner sees starts a keyframe"
    );
    assert!(stream.missing(Duration::ZERO, sim.now).is_empty());
    assert!(
        sim.worker.stats().counters.rtp_waiting_for_keyframe > 0,
        "packets before the keyframe were held back"
    );
    assert!(sim.events.contains(&Event::SubscriptionStarted {
        subscription: sim.subscribers[late].subscriptions[0].0
    }));
    // The early subscriber saw an uninterrupted stream meanwhile.
    assert!(
        sim.stream(early, 50_000)
            .missing(Duration::ZERO, sim.now)
            .is_empty()
    );
}

#[test]
fn room_teardown_frees_state() {
    let mut sim = Sim::new(6);
    for _ in 0..3 {
        sim.add_publisher(MediaKind::Video, true);
        sim.add_publisher(MediaKind::Audio, false);
    }
    for _ in 0..5 {
        sim.add_subscriber(true);
    }
    sim.run_for(Duration::from_secs(1));
    let s = sim.worker.stats();
    assert_eq!(
        (s.rooms, s.transports, s.tracks, s.subscriptions),
        (1, 11, 6, 30)
    );
    sim.worker.close_room(sim.room).unwrap();
    sim.drain();
    let s = sim.worker.stats();
    assert_eq!(
        (s.rooms, s.transports, s.tracks, s.subscriptions),
        (0, 0, 0, 0)
    );
    assert_eq!(
        sim.events
            .iter()
            .filter(|e| matches!(e, Event::SubscriptionClosed { .. }))
            .count(),
        30
    );
    assert_eq!(
        sim.events
            .iter()
            .filter(|e| matches!(e, Event::TrackClosed { .. }))
            .count(),
        6
    );
    // In-flight packets to the closed transports are dropped and counted, not a panic.
    let before = sim.worker.stats().counters.rtp_unknown_transport;
    sim.publishers
        .iter_mut()
        .for_each(|p| p.next_frame = sim.now + Duration::from_secs(3600));
    sim.run_for(Duration::from_millis(100));
    assert!(sim.worker.stats().counters.rtp_unknown_transport > before);
    assert_eq!(
        sim.worker.poll_timeout(),
        None,
        "an empty worker has no timer"
    );
    sim.worker.check_invariants();
}

#[test]
fn rewriting_keeps_seq_contiguous_across_publisher_restart() {
    let mut sim = Sim::new(7);
    let p = sim.add_publisher(MediaKind::Audio, false);
    let s = sim.add_subscriber(false);
    sim.subscribers[s].send_nacks = false;
    for _ in 0..3 {
        sim.run_for(Duration::from_millis(700));
        // Encoder restart: unrelated sequence number and timestamp.
        let publisher = &mut sim.publishers[p];
        publisher.seq = sim.rng.next() as u16;
        publisher.ts = sim.rng.next() as u32;
    }
    sim.run_for(Duration::from_millis(700));
    let stream = sim.stream(s, 50_000);
    let seqs: Vec<u64> = stream.arrivals.clone();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "output seq must be contiguous: {seqs:?}"
    );
    let ts: Vec<u32> = seqs.iter().map(|s| stream.received[s].0).collect();
    assert!(
        ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) as i32 > 0),
        "timestamps move forward"
    );
    assert_eq!(
        sim.worker.stats().counters.rtp_probation,
        3,
        "each restart costs one probation packet"
    );
}

#[test]
fn publisher_gets_receiver_reports_remb_and_twcc_feedback() {
    let mut sim = Sim::new(8);
    let p = sim.add_publisher(MediaKind::Video, false);
    sim.add_subscriber(false);
    sim.run_for(Duration::from_secs(3));
    let publisher = &sim.publishers[p];
    assert!((3..=4).contains(&publisher.rrs), "{}", publisher.rrs);
    assert_eq!(publisher.remb, Some(Bitrate(2_500_000)));
    assert!(
        publisher.twcc >= 25,
        "TWCC feedback every ~100 ms, got {}",
        publisher.twcc
    );
}
