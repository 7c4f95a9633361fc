//! The harness: virtual clock, fake peers, lossy links.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sfu_core::rtcp::{Compound, RtcpPacket, TwccRecorder, write_nack, write_pli};
use sfu_core::rtp::{Codec, ExtensionKind, ExtensionMap, OutExtensions, RtpHeader, RtpPacket};
use sfu_core::time::extend_u16;
use sfu_core::*;

pub(crate) use mooyaho_test_support::bottleneck::Bottleneck;
pub(crate) use mooyaho_test_support::rng::TestRng;

pub(crate) const MS: Duration = Duration::from_millis(1);

/// One direction of a network path.
#[derive(Default)]
pub(crate) struct Link {
    pub(crate) latency: Duration,
    pub(crate) loss: f64,
    /// Indices (0-based, counting RTP packets through this link) that are always dropped.
    pub(crate) drop: BTreeSet<u64>,
    pub(crate) rtp_count: u64,
}

impl Link {
    pub(crate) fn new(latency_ms: u64) -> Self {
        Self {
            latency: Duration::from_millis(latency_ms),
            ..Self::default()
        }
    }

    pub(crate) fn passes_rtp(&mut self, rng: &mut TestRng) -> bool {
        let index = self.rtp_count;
        self.rtp_count += 1;
        !self.drop.contains(&index) && !rng.chance(self.loss)
    }
}

pub(crate) struct Publisher {
    pub(crate) transport: TransportId,
    pub(crate) track: TrackId,
    pub(crate) kind: MediaKind,
    pub(crate) ssrc: u32,
    pub(crate) pt: u8,
    pub(crate) rtx: Option<(u32, u8)>,
    pub(crate) seq: u16,
    pub(crate) rtx_seq: u16,
    pub(crate) ts: u32,
    pub(crate) frame: Duration,
    pub(crate) packets_per_frame: usize,
    /// Payload bytes of each packet.
    pub(crate) payload_len: usize,
    pub(crate) next_frame: Instant,
    pub(crate) keyframe_pending: bool,
    pub(crate) history: HashMap<u16, Bytes>,
    pub(crate) sent: u64,
    pub(crate) plis: usize,
    pub(crate) nacked: Vec<u16>,
    pub(crate) remb: Option<Bitrate>,
    /// An encoder that follows the REMB up to this bitrate (a browser's send-side estimate
    /// capped by the receiver's), as [`Sim::set_bitrate`] would set it.
    pub(crate) follows_remb: Option<u64>,
    pub(crate) rrs: usize,
    pub(crate) twcc: usize,
    pub(crate) twcc_seq: u16,
    /// Simulcast: this entry is one layer, sending mid + rid header extensions.
    pub(crate) rid: Option<&'static [u8]>,
    /// Counts PLIs but sends no keyframe (an encoder slow to answer).
    pub(crate) ignores_pli: bool,
    /// Sends nothing (a simulcast layer the encoder stopped).
    pub(crate) stopped: bool,
    pub(crate) uplink: Link,
    pub(crate) downlink: Link,
}

#[derive(Default)]
pub(crate) struct Stream {
    pub(crate) highest: Option<SeqNo>,
    /// Extended seq → (timestamp, payload, arrival time).
    pub(crate) received: BTreeMap<u64, (u32, Bytes, Instant)>,
    /// Seqs in arrival order (duplicates included).
    pub(crate) arrivals: Vec<u64>,
    pub(crate) nacks: HashMap<u64, (u8, Instant)>,
}

impl Stream {
    /// Sequence numbers missing between the first and last received, ignoring the newest
    /// `recent` (still being recovered).
    pub(crate) fn missing(&self, recent: Duration, now: Instant) -> Vec<u64> {
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

pub(crate) struct Subscriber {
    pub(crate) transport: TransportId,
    pub(crate) subscriptions: Vec<(SubscriptionId, u32)>,
    pub(crate) rtx: HashMap<u32, (u32, u8)>,
    pub(crate) streams: HashMap<u32, Stream>,
    pub(crate) send_nacks: bool,
    pub(crate) srs: usize,
    pub(crate) uplink: Link,
    pub(crate) downlink: Link,
    /// A capacity-limited downlink for RTP (on top of `downlink`'s loss; replaces its latency).
    pub(crate) bottleneck: Option<Bottleneck>,
    /// Transport-wide CC feedback the subscriber sends, and when next.
    pub(crate) twcc: Option<(TwccRecorder, Instant)>,
    /// Padding-only packets received (bandwidth probes), dropped after feedback counted them.
    pub(crate) padding_received: u64,
}

/// How often a subscriber sends transport-wide CC feedback (libwebrtc: ~100 ms).
pub(crate) const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) enum Delivery {
    Rtp(TransportId, Bytes),
    Rtcp(TransportId, Bytes),
    ToPublisher(usize, Bytes),
    ToSubscriber(usize, Bytes, bool),
}

pub(crate) struct Sim {
    pub(crate) rng: TestRng,
    pub(crate) now: Instant,
    pub(crate) worker: Worker,
    pub(crate) room: RoomId,
    pub(crate) publishers: Vec<Publisher>,
    pub(crate) subscribers: Vec<Subscriber>,
    pub(crate) in_flight: Vec<(Instant, u64, Delivery)>,
    pub(crate) order: u64,
    pub(crate) events: Vec<Event>,
}

/// Packets per frame and payload bytes per packet for about `bps` at 30 frames per second.
fn frame_shape(bps: u64) -> (usize, usize) {
    let per_frame = (bps / 8 / 30) as usize;
    let packets = per_frame.div_ceil(1100).max(1);
    (packets, (per_frame / packets).max(10))
}

pub(crate) fn payload_type(kind: MediaKind) -> u8 {
    if kind == MediaKind::Video { 96 } else { 111 }
}

impl Sim {
    pub(crate) fn new(seed: u64) -> Self {
        let now = Instant::now();
        let mut worker = Worker::new(Config::default());
        let room = worker.create_room().unwrap();
        Self {
            rng: TestRng::new(seed | 1),
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

    pub(crate) fn add_publisher(&mut self, kind: MediaKind, rtx: bool) -> usize {
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
            pt: Pt(payload_type(kind)),
            clock_rate: ClockRate(if video { 90_000 } else { 48_000 }),
            rtx_pt: rtx.then_some(Pt(97)),
            mid: None,
            encodings: Encodings::single(Ssrc(ssrc), rtx.then_some(Ssrc(ssrc + 1))),
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
            seq: (self.rng.next_u64() as u16) | 0xff00, // wraps within seconds
            rtx_seq: 0,
            ts: self.rng.next_u64() as u32,
            frame: if video { 33 * MS } else { 20 * MS },
            packets_per_frame: if video { 3 } else { 1 },
            payload_len: 100,
            next_frame: self.now,
            keyframe_pending: true,
            history: HashMap::new(),
            sent: 0,
            plis: 0,
            nacked: vec![],
            remb: None,
            follows_remb: None,
            rrs: 0,
            twcc: 0,
            twcc_seq: 0,
            rid: None,
            ignores_pli: false,
            stopped: false,
            uplink: Link::new(10),
            downlink: Link::new(10),
        });
        self.publishers.len() - 1
    }

    /// A VP8 simulcast track with three layers announced by rid only (the browser case): the
    /// worker learns their SSRCs from the first packets. Returns the publisher entries, one per
    /// layer, lowest first.
    pub(crate) fn add_simulcast_publisher(&mut self) -> Vec<usize> {
        let extensions = ExtensionMap::new(&[
            (1, ExtensionKind::Mid),
            (2, ExtensionKind::Rid),
            (3, ExtensionKind::TransportCc),
        ]);
        let config = TransportConfig {
            direction: Direction::Publish,
            extensions,
        };
        let transport = self
            .worker
            .add_transport(self.now, self.room, config)
            .unwrap();
        let rids: [&'static [u8]; 3] = [b"q", b"h", b"f"];
        let layer = |rid: &[u8]| Encoding {
            rid: Rid::new(rid),
            ssrc: None,
            rtx_ssrc: None,
        };
        let config = TrackConfig {
            kind: MediaKind::Video,
            codec: Codec::Vp8,
            pt: Pt(96),
            clock_rate: ClockRate(90_000),
            rtx_pt: None,
            mid: Mid::new(b"v"),
            encodings: Encodings::simulcast(&rids.map(layer)).unwrap(),
        };
        let track = self
            .worker
            .publish_track(self.now, transport, config)
            .unwrap();
        rids.iter()
            .enumerate()
            .map(|(i, rid)| {
                self.publishers.push(Publisher {
                    transport,
                    track,
                    kind: MediaKind::Video,
                    ssrc: 2000 + 10 * i as u32,
                    pt: 96,
                    rtx: None,
                    seq: self.rng.next_u64() as u16,
                    rtx_seq: 0,
                    ts: self.rng.next_u64() as u32,
                    frame: 33 * MS,
                    packets_per_frame: 1 + i,
                    payload_len: 100,
                    next_frame: self.now,
                    keyframe_pending: true,
                    history: HashMap::new(),
                    sent: 0,
                    plis: 0,
                    nacked: vec![],
                    remb: None,
                    follows_remb: None,
                    rrs: 0,
                    twcc: 0,
                    twcc_seq: 0,
                    rid: Some(rid),
                    ignores_pli: false,
                    stopped: false,
                    uplink: Link::new(10),
                    downlink: Link::new(10),
                });
                self.publishers.len() - 1
            })
            .collect()
    }

    pub(crate) fn add_subscriber(&mut self, rtx: bool) -> usize {
        self.add_subscriber_where(|_| rtx)
    }

    /// A subscriber of every track, negotiating RTX for the kinds `rtx` names (browsers: video
    /// only).
    pub(crate) fn add_subscriber_where(&mut self, rtx: impl Fn(MediaKind) -> bool) -> usize {
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
            bottleneck: None,
            twcc: None,
            padding_received: 0,
        });
        let index = self.subscribers.len() - 1;
        for p in 0..self.publishers.len() {
            // Simulcast layers share one track: subscribe once, through the first layer.
            if !self.publishers[..p]
                .iter()
                .any(|q| q.track == self.publishers[p].track)
            {
                let kind = self.publishers[p].kind;
                self.subscribe(index, p, rtx(kind));
            }
        }
        index
    }

    pub(crate) fn subscribe(&mut self, s: usize, p: usize, rtx: bool) -> u32 {
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

    /// Makes a publisher entry send about `bps` (30 frames per second, packets of ≤ 1100
    /// payload bytes).
    pub(crate) fn set_bitrate(&mut self, p: usize, bps: u64) {
        let (packets, len) = frame_shape(bps);
        let publisher = &mut self.publishers[p];
        publisher.packets_per_frame = packets;
        publisher.payload_len = len;
    }

    /// The subscriber sends transport-wide CC feedback every [`FEEDBACK_INTERVAL`].
    pub(crate) fn send_feedback(&mut self, s: usize) {
        self.subscribers[s].twcc =
            Some((TwccRecorder::new(self.now), self.now + FEEDBACK_INTERVAL));
    }

    pub(crate) fn send(&mut self, at: Instant, delivery: Delivery) {
        self.order += 1;
        self.in_flight.push((at, self.order, delivery));
    }

    /// Moves everything the worker produced onto the links.
    pub(crate) fn drain(&mut self) {
        while let Some(tx) = self.worker.poll_transmit() {
            let mut buf = BytesMut::new();
            tx.packet.write_to(&mut buf);
            let bytes = buf.freeze();
            let is_rtp = matches!(tx.packet, OutPacket::Rtp { .. } | OutPacket::Padding { .. });
            if self.publishers.iter().any(|p| p.transport == tx.to) {
                for p in 0..self.publishers.len() {
                    if self.publishers[p].transport == tx.to {
                        let at = self.now + self.publishers[p].downlink.latency;
                        self.send(at, Delivery::ToPublisher(p, bytes.clone()));
                    }
                }
            } else if let Some(s) = self.subscribers.iter().position(|s| s.transport == tx.to) {
                let sub = &mut self.subscribers[s];
                if is_rtp && !sub.downlink.passes_rtp(&mut self.rng) {
                    continue;
                }
                let at = match &mut sub.bottleneck {
                    Some(link) if is_rtp => match link.send(self.now, bytes.len()) {
                        Some(at) => at,
                        None => continue,
                    },
                    _ => self.now + sub.downlink.latency,
                };
                self.send(at, Delivery::ToSubscriber(s, bytes, is_rtp));
            }
        }
        self.events
            .extend(std::iter::from_fn(|| self.worker.poll_event()));
    }

    pub(crate) fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            let frames = self.publishers.iter().map(|p| p.next_frame);
            let flights = self.in_flight.iter().map(|f| f.0);
            let feedback = self
                .subscribers
                .iter()
                .filter_map(|s| s.twcc.as_ref().map(|t| t.1));
            let Some(next) = frames
                .chain(flights)
                .chain(feedback)
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
            for s in 0..self.subscribers.len() {
                self.subscriber_feedback(s);
            }
            if self.worker.poll_timeout().is_some_and(|t| t <= self.now) {
                self.worker.handle_timeout(self.now);
                self.drain();
            }
        }
        self.now = end;
    }

    pub(crate) fn deliver(&mut self, delivery: Delivery) {
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

    pub(crate) fn emit_frame(&mut self, p: usize) {
        let now = self.now;
        let publisher = &mut self.publishers[p];
        publisher.next_frame = now + publisher.frame;
        if publisher.stopped {
            return;
        }
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
            let mut payload = vec![0u8; publisher.payload_len];
            if publisher.kind == MediaKind::Video {
                payload[0] = if i == 0 { 0x10 } else { 0x00 };
                payload[1] = if keyframe { 0x00 } else { 0x01 };
            }
            payload[2..4].copy_from_slice(&publisher.seq.to_be_bytes());
            // Which publisher entry (simulcast layer) sent it, for tests to tell layers apart.
            payload[4] = p as u8;
            let header = RtpHeader {
                ssrc: Ssrc(publisher.ssrc),
                pt: Pt(publisher.pt),
                seq: SeqNo(u64::from(publisher.seq)),
                timestamp: RtpTime(u64::from(publisher.ts)),
                marker: i + 1 == publisher.packets_per_frame,
                extensions: {
                    let mut ext = OutExtensions::EMPTY;
                    ext.push(3, &publisher.twcc_seq.to_be_bytes());
                    if let Some(rid) = publisher.rid {
                        ext.push(1, b"v");
                        ext.push(2, rid);
                    }
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
    pub(crate) fn publisher_rtcp(&mut self, p: usize, bytes: &Bytes) {
        let mut resend = Vec::new();
        let publisher = &mut self.publishers[p];
        for message in Compound::new(bytes) {
            match message.expect("worker RTCP must parse") {
                RtcpPacket::Nack(n) if n.media.0 == publisher.ssrc => {
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
                RtcpPacket::Pli { media, .. } if media.0 == publisher.ssrc => {
                    publisher.plis += 1;
                    publisher.keyframe_pending |= !publisher.ignores_pli;
                }
                RtcpPacket::ReceiverReport(_) => publisher.rrs += 1,
                RtcpPacket::Remb { bitrate, .. } => {
                    publisher.remb = Some(bitrate);
                    if let Some(most) = publisher.follows_remb {
                        let (packets, len) = frame_shape(bitrate.0.min(most));
                        publisher.packets_per_frame = packets;
                        publisher.payload_len = len;
                    }
                }
                RtcpPacket::TransportCc { .. } => publisher.twcc += 1,
                _ => {}
            }
        }
        let (at, transport) = (self.now + publisher.uplink.latency, publisher.transport);
        for packet in resend {
            self.send(at, Delivery::Rtp(transport, packet));
        }
    }

    /// Sends the subscriber's transport-wide CC feedback if it is due.
    fn subscriber_feedback(&mut self, s: usize) {
        let now = self.now;
        let sub = &mut self.subscribers[s];
        let Some((twcc, next)) = &mut sub.twcc else {
            return;
        };
        if *next > now {
            return;
        }
        *next = now + FEEDBACK_INTERVAL;
        let mut buf = BytesMut::new();
        twcc.write_feedback(&mut buf, Ssrc(9), Ssrc(0));
        if !buf.is_empty() {
            let (at, transport) = (now + sub.uplink.latency, sub.transport);
            self.send(at, Delivery::Rtcp(transport, buf.freeze()));
        }
    }

    pub(crate) fn subscriber_rtp(&mut self, s: usize, bytes: Bytes) {
        let now = self.now;
        let sub = &mut self.subscribers[s];
        let mut packet = RtpPacket::parse(bytes).expect("worker RTP must parse");
        if let Some((twcc, _)) = &mut sub.twcc
            && let Some((_, data)) = packet.extensions().find(|(id, _)| *id == 3)
            && let &[a, b] = data
        {
            twcc.record(now, u16::from_be_bytes([a, b]));
        }
        if packet.payload().is_empty() && packet.padding() > 0 {
            // A padding-only probe: counted by the feedback above, then dropped (as libwebrtc's
            // RTX receiver drops a packet without an OSN).
            sub.padding_received += 1;
            return;
        }
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
        // Only the recent window is worth asking for (the SFU keeps ~512 packets).
        let first = (*stream.received.keys().next().unwrap()).max(highest.saturating_sub(600));
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

    pub(crate) fn subscriber_pli(&mut self, s: usize, media: u32) {
        let mut buf = BytesMut::new();
        write_pli(&mut buf, Ssrc(9), Ssrc(media));
        let (at, transport) = (
            self.now + self.subscribers[s].uplink.latency,
            self.subscribers[s].transport,
        );
        self.send(at, Delivery::Rtcp(transport, buf.freeze()));
    }

    pub(crate) fn stream(&self, s: usize, ssrc: u32) -> &Stream {
        self.subscribers[s]
            .streams
            .get(&ssrc)
            .expect("subscriber received the stream")
    }
}
