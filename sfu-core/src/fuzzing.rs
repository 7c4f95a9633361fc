//! Fuzz target bodies (quinn's `fuzzing` module idea): plain public functions, compiled in
//! every build so CI type-checks them; `fuzz/` holds three-line `libfuzzer` wrappers. With the
//! `arbitrary` feature, [`Op`] derives `Arbitrary` for the structured `worker_ops` target.
//!
//! The bodies assert invariants, not just "no panic": a parsed packet written back parses to the
//! same fields, and after every operation the worker's arenas agree and every transmit goes to a
//! live transport and serialises to valid RTP/RTCP.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::rtcp::{Compound, RtcpPacket, write_nack, write_pli};
use crate::rtp::{
    Codec, ExtensionKind, ExtensionMap, Extensions, OutExtensions, RtpHeader, RtpPacket,
};
use crate::{
    ClockRate, Config, Direction, Encoding, Encodings, MediaKind, Mid, OutPacket, Pt, Rid, RoomId,
    RtpTime, Rtx, SeqNo, Ssrc, SubscriptionConfig, SubscriptionId, TrackConfig, TrackId,
    TransportConfig, TransportId, Worker,
};

/// `rtp_packet` target: parse arbitrary bytes; what parses must survive a write/parse round trip.
pub fn rtp_packet(data: &[u8]) {
    let Ok(packet) = RtpPacket::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = packet.csrcs().count();
    let mut extensions = OutExtensions::EMPTY;
    for (id, value) in packet.extensions() {
        extensions.push(id, value);
    }
    let header = RtpHeader {
        ssrc: packet.ssrc(),
        pt: packet.pt(),
        seq: SeqNo(u64::from(packet.seq())),
        timestamp: RtpTime(u64::from(packet.timestamp())),
        marker: packet.marker(),
        extensions,
        rtx_osn: None,
    };
    let mut buf = BytesMut::new();
    header.write_to(packet.payload(), &mut buf);
    let again = RtpPacket::parse(buf.freeze()).expect("our own output parses");
    assert_eq!(
        (
            again.ssrc(),
            again.pt(),
            again.seq(),
            again.timestamp(),
            again.marker()
        ),
        (
            packet.ssrc(),
            packet.pt(),
            packet.seq(),
            packet.timestamp(),
            packet.marker()
        )
    );
    assert_eq!(again.payload(), packet.payload());
    assert_eq!(
        again.extensions().collect::<Vec<_>>(),
        extensions.iter().collect::<Vec<_>>()
    );
}

/// `rtcp_compound` target: read arbitrary bytes as compound RTCP and feed them to a worker from
/// both a publish and a subscribe transport.
pub fn rtcp_compound(start: Instant, data: &[u8]) {
    for message in Compound::new(data) {
        match message {
            Ok(RtcpPacket::SenderReport(sr)) => assert!(sr.blocks().count() <= 31),
            Ok(RtcpPacket::ReceiverReport(rr)) => assert!(rr.blocks().count() <= 31),
            Ok(RtcpPacket::Nack(nack)) => assert!(nack.lost().count() <= data.len() * 17 / 4),
            Ok(RtcpPacket::Fir(fir)) => assert!(fir.entries().count() <= data.len() / 8),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let mut ops = Fixture::new(start);
    let bytes = Bytes::copy_from_slice(data);
    ops.apply(&Op::CreateRoom);
    ops.apply(&Op::AddTransport {
        room: 0,
        publish: true,
        twcc: true,
    });
    ops.apply(&Op::AddTransport {
        room: 0,
        publish: false,
        twcc: true,
    });
    ops.apply(&Op::Publish {
        transport: 0,
        video: true,
        ssrc: 1,
        rtx: true,
        simulcast: false,
    });
    ops.apply(&Op::Subscribe {
        transport: 1,
        track: 0,
        ssrc: 2,
        rtx: true,
    });
    ops.apply(&Op::Rtp {
        transport: 0,
        ssrc: 1,
        seq: 1,
        timestamp: 0,
        keyframe: true,
        payload_len: 10,
        rid: 0,
    });
    for &transport in &ops.transports.clone() {
        ops.worker.handle_rtcp(start, transport, bytes.clone());
        ops.drain_and_check();
    }
}

/// `rtp_extensions` target: an arbitrary header-extension block (RFC 8285, any profile) under
/// arbitrary negotiated id maps. The first 5 bytes are the publisher's and subscriber's id maps
/// (a nibble per kind), then a profile selector, a sequence number and an SSRC byte; the rest
/// is the block. Checks: the validator and the iterator agree with the packet parser; a packet
/// from a publisher with a simulcast track (rid → layer learning) reaches its subscriber with
/// only elements the subscriber negotiated — its own mid, a two-byte transport-cc sequence, and
/// copied elements carrying bytes the publisher sent under the same meaning. Returns how many
/// packets reached the subscriber.
pub fn rtp_extensions(start: Instant, data: &[u8]) -> usize {
    let [p0, p1, p2, p3, s0, selector, seq, ssrc, block @ ..] = data else {
        return 0;
    };
    let nibbles = |a: u8, b: u8| [a & 15, a >> 4, b & 15, b >> 4];
    let kinds = [
        ExtensionKind::Mid,
        ExtensionKind::Rid,
        ExtensionKind::RepairedRid,
        ExtensionKind::TransportCc,
        ExtensionKind::AbsSendTime,
        ExtensionKind::AudioLevel,
        ExtensionKind::VideoOrientation,
        ExtensionKind::PlayoutDelay,
    ];
    let ids: Vec<u8> = [nibbles(*p0, *p1), nibbles(*p2, *p3)].concat();
    let pairs: Vec<(u8, ExtensionKind)> = ids.iter().copied().zip(kinds).collect();
    let publish_map = ExtensionMap::new(&pairs);
    let subscribe_map = ExtensionMap::new(&[
        (s0 & 15, ExtensionKind::Mid),
        (s0 >> 4, ExtensionKind::TransportCc),
        (selector >> 4, ExtensionKind::AudioLevel),
        (ssrc >> 4, ExtensionKind::AbsSendTime),
    ]);
    let profile = match selector & 3 {
        0 | 1 => 0xbede,
        2 => 0x1000 | u16::from(*seq & 15),
        _ => u16::from_be_bytes([*seq, *ssrc]),
    };
    // The block as it travels: whole 32-bit words (the parser cannot see finer lengths).
    let mut block = block.to_vec();
    block.truncate(4 * 255);
    block.resize(block.len().div_ceil(4) * 4, 0);

    let valid = Extensions::validate(profile, &block).is_ok();
    let elements: Vec<(u8, &[u8])> = Extensions::new(profile, &block).collect();
    let range = block.as_ptr_range();
    for (_, value) in &elements {
        assert!(range.start <= value.as_ptr() && value.as_ptr_range().end <= range.end);
    }
    assert!(elements.len() <= block.len());

    let packet = |seq: u16| {
        let mut raw = vec![0x90, 96];
        raw.extend_from_slice(&seq.to_be_bytes());
        raw.extend_from_slice(&3000u32.to_be_bytes());
        raw.extend_from_slice(&u32::from(*ssrc % 4).to_be_bytes());
        raw.extend_from_slice(&profile.to_be_bytes());
        raw.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
        raw.extend_from_slice(&block);
        raw.extend_from_slice(&[0x10, 0x00, 0x9d, 0x01, 0x2a]); // VP8 keyframe start
        Bytes::from(raw)
    };
    let parsed = RtpPacket::parse(packet(u16::from(*seq)));
    assert_eq!(parsed.is_ok(), valid, "parser and validator disagree");
    if let Ok(parsed) = &parsed {
        assert!(parsed.extensions().eq(elements.iter().copied()));
    }

    let mut fixture = Fixture::new(start);
    let w = &mut fixture.worker;
    let room = w.create_room().expect("create_room cannot fail");
    let transport = |w: &mut Worker, direction, extensions| {
        w.add_transport(
            start,
            room,
            TransportConfig {
                direction,
                extensions,
            },
        )
        .expect("fresh room takes transports")
    };
    let publisher = transport(w, Direction::Publish, publish_map);
    let subscriber = transport(w, Direction::Subscribe, subscribe_map);
    let layer = |rid: &[u8]| Encoding {
        rid: Rid::new(rid),
        ssrc: None,
        rtx_ssrc: None,
    };
    let track = w
        .publish_track(
            start,
            publisher,
            TrackConfig {
                kind: MediaKind::Video,
                codec: Codec::Vp8,
                pt: Pt(96),
                clock_rate: ClockRate(90_000),
                rtx_pt: Some(Pt(97)),
                mid: Mid::new(b"v"),
                encodings: Encodings::simulcast(&[layer(b"l"), layer(b"m"), layer(b"h")])
                    .expect("three layers"),
            },
        )
        .expect("valid track");
    let subscriber_mid = Mid::new(b"s");
    w.subscribe(
        start,
        subscriber,
        track,
        SubscriptionConfig {
            ssrc: Ssrc(50),
            pt: Pt(100),
            rtx: None,
            mid: subscriber_mid,
        },
    )
    .expect("valid subscription");
    fixture.drain_and_check();
    let mut forwarded = 0;
    for i in 0..3u16 {
        let now = start + Duration::from_millis(u64::from(i) * 20);
        fixture
            .worker
            .handle_rtp(now, publisher, packet(u16::from(*seq).wrapping_add(i)));
        let mut scratch = [0u8; 2048];
        while let Some(tx) = fixture.worker.poll_transmit() {
            let n = tx.packet.write(&mut scratch).expect("fits an MTU");
            if !matches!(tx.packet, OutPacket::Rtp { .. }) {
                continue;
            }
            let out = RtpPacket::parse(Bytes::copy_from_slice(&scratch[..n])).expect("valid RTP");
            forwarded += 1;
            for (id, value) in out.extensions() {
                match subscribe_map.kind(id) {
                    Some(ExtensionKind::Mid) => {
                        assert_eq!(Some(value), subscriber_mid.as_ref().map(Mid::as_bytes));
                    }
                    Some(ExtensionKind::TransportCc) => assert_eq!(value.len(), 2),
                    Some(kind) if kind.is_copied() => assert!(
                        elements
                            .iter()
                            .any(|&(i, v)| publish_map.kind(i) == Some(kind) && v == value),
                        "a copied element carries what the publisher sent"
                    ),
                    other => panic!("element {id} ({other:?}) was not negotiated or not copied"),
                }
            }
        }
        fixture.drain_and_check();
    }
    forwarded
}

/// One step of the `worker_ops` target. Indices select among entities created so far
/// (modulo their count, stale ones included); SSRCs come from a tiny space to force clashes.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub enum Op {
    CreateRoom,
    CloseRoom(u8),
    AddTransport {
        room: u8,
        publish: bool,
        twcc: bool,
    },
    RemoveTransport(u8),
    Publish {
        transport: u8,
        video: bool,
        ssrc: u8,
        rtx: bool,
        simulcast: bool,
    },
    Unpublish(u8),
    Subscribe {
        transport: u8,
        track: u8,
        ssrc: u8,
        rtx: bool,
    },
    Unsubscribe(u8),
    /// `rid`: 1–3 rid "l"/"m"/"h", 4–6 repaired-rid of those, anything else none.
    Rtp {
        transport: u8,
        ssrc: u8,
        seq: u16,
        timestamp: u32,
        keyframe: bool,
        payload_len: u8,
        rid: u8,
    },
    SetLayer {
        subscription: u8,
        layer: u8,
    },
    RawRtp {
        transport: u8,
        data: Vec<u8>,
    },
    Rtcp {
        transport: u8,
        data: Vec<u8>,
    },
    Nack {
        transport: u8,
        ssrc: u8,
        seqs: Vec<u16>,
    },
    Pli {
        transport: u8,
        ssrc: u8,
    },
    Advance {
        millis: u16,
    },
}

/// `worker_ops` target: apply `ops` to a fresh worker, checking invariants after each.
pub fn worker_ops(start: Instant, ops: &[Op]) {
    let mut fixture = Fixture::new(start);
    for op in ops {
        fixture.apply(op);
    }
    // Closing everything frees everything.
    for room in fixture.rooms.clone() {
        let _ = fixture.worker.close_room(room);
    }
    fixture.drain_and_check();
    let stats = fixture.worker.stats();
    assert_eq!(
        (
            stats.rooms,
            stats.transports,
            stats.tracks,
            stats.subscriptions
        ),
        (0, 0, 0, 0)
    );
}

struct Fixture {
    now: Instant,
    worker: Worker,
    rooms: Vec<RoomId>,
    transports: Vec<TransportId>,
    tracks: Vec<TrackId>,
    subscriptions: Vec<SubscriptionId>,
}

fn pick<T: Copy>(items: &[T], index: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(index) % items.len()])
}

impl Fixture {
    fn new(now: Instant) -> Self {
        Self {
            now,
            worker: Worker::new(Config::default()),
            rooms: vec![],
            transports: vec![],
            tracks: vec![],
            subscriptions: vec![],
        }
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        let w = &mut self.worker;
        match op {
            Op::CreateRoom => self
                .rooms
                .push(w.create_room().expect("create_room cannot fail")),
            Op::CloseRoom(i) => {
                if let Some(r) = pick(&self.rooms, *i) {
                    let _ = w.close_room(r);
                }
            }
            Op::AddTransport {
                room,
                publish,
                twcc,
            } => {
                let Some(room) = pick(&self.rooms, *room) else {
                    return;
                };
                let direction = if *publish {
                    Direction::Publish
                } else {
                    Direction::Subscribe
                };
                let pairs = [
                    (1, ExtensionKind::Mid),
                    (2, ExtensionKind::AudioLevel),
                    (4, ExtensionKind::Rid),
                    (5, ExtensionKind::RepairedRid),
                    (
                        3,
                        if *twcc {
                            ExtensionKind::TransportCc
                        } else {
                            ExtensionKind::AbsSendTime
                        },
                    ),
                ];
                if let Ok(t) = w.add_transport(
                    now,
                    room,
                    TransportConfig {
                        direction,
                        extensions: ExtensionMap::new(&pairs),
                    },
                ) {
                    self.transports.push(t);
                }
            }
            Op::RemoveTransport(i) => {
                if let Some(t) = pick(&self.transports, *i) {
                    let _ = w.remove_transport(t);
                }
            }
            Op::Publish {
                transport,
                video,
                ssrc,
                rtx,
                simulcast,
            } => {
                let Some(transport) = pick(&self.transports, *transport) else {
                    return;
                };
                let config = TrackConfig {
                    kind: if *video {
                        MediaKind::Video
                    } else {
                        MediaKind::Audio
                    },
                    codec: if *video { Codec::Vp8 } else { Codec::Opus },
                    pt: Pt(96),
                    clock_rate: ClockRate(90_000),
                    rtx_pt: rtx.then_some(Pt(97)),
                    mid: Mid::new(b"v"),
                    encodings: if *simulcast {
                        let layer = |rid: &[u8]| Encoding {
                            rid: Rid::new(rid),
                            ssrc: None,
                            rtx_ssrc: None,
                        };
                        Encodings::simulcast(&[layer(b"l"), layer(b"m"), layer(b"h")])
                            .expect("three layers")
                    } else {
                        let rtx_ssrc = rtx.then_some(Ssrc(u32::from(*ssrc) + 256));
                        Encodings::single(Ssrc(u32::from(*ssrc)), rtx_ssrc)
                    },
                };
                if let Ok(t) = w.publish_track(now, transport, config) {
                    self.tracks.push(t);
                }
            }
            Op::Unpublish(i) => {
                if let Some(t) = pick(&self.tracks, *i) {
                    let _ = w.unpublish_track(t);
                }
            }
            Op::Subscribe {
                transport,
                track,
                ssrc,
                rtx,
            } => {
                let (Some(transport), Some(track)) = (
                    pick(&self.transports, *transport),
                    pick(&self.tracks, *track),
                ) else {
                    return;
                };
                let config = SubscriptionConfig {
                    ssrc: Ssrc(u32::from(*ssrc)),
                    pt: Pt(100),
                    rtx: rtx.then_some(Rtx {
                        ssrc: Ssrc(u32::from(*ssrc) + 256),
                        pt: Pt(101),
                    }),
                    mid: None,
                };
                if let Ok(s) = w.subscribe(now, transport, track, config) {
                    self.subscriptions.push(s);
                }
            }
            Op::Unsubscribe(i) => {
                if let Some(s) = pick(&self.subscriptions, *i) {
                    let _ = w.unsubscribe(s);
                }
            }
            Op::Rtp {
                transport,
                ssrc,
                seq,
                timestamp,
                keyframe,
                payload_len,
                rid,
            } => {
                let Some(transport) = pick(&self.transports, *transport) else {
                    return;
                };
                let mut payload = vec![0u8; usize::from(*payload_len).max(2)];
                payload[0] = 0x10;
                payload[1] = u8::from(!keyframe);
                let header = RtpHeader {
                    ssrc: Ssrc(u32::from(*ssrc)),
                    pt: Pt(96),
                    seq: SeqNo(u64::from(*seq)),
                    timestamp: RtpTime(u64::from(*timestamp)),
                    marker: false,
                    extensions: {
                        let mut ext = OutExtensions::EMPTY;
                        ext.push(1, b"v");
                        if let Some(name) = [b"l", b"m", b"h"]
                            .get(usize::from(rid % 3))
                            .filter(|_| (1..=6).contains(rid))
                        {
                            ext.push(if *rid <= 3 { 4 } else { 5 }, &name[..]);
                        }
                        ext
                    },
                    rtx_osn: None,
                };
                let mut buf = BytesMut::new();
                header.write_to(&payload, &mut buf);
                w.handle_rtp(now, transport, buf.freeze());
            }
            Op::SetLayer {
                subscription,
                layer,
            } => {
                if let Some(s) = pick(&self.subscriptions, *subscription) {
                    let _ = w.set_preferred_layer(now, s, layer % 4);
                }
            }
            Op::RawRtp { transport, data } => {
                let Some(transport) = pick(&self.transports, *transport) else {
                    return;
                };
                w.handle_rtp(now, transport, Bytes::copy_from_slice(data));
            }
            Op::Rtcp { transport, data } => {
                let Some(transport) = pick(&self.transports, *transport) else {
                    return;
                };
                w.handle_rtcp(now, transport, Bytes::copy_from_slice(data));
            }
            Op::Nack {
                transport,
                ssrc,
                seqs,
            } => {
                let Some(transport) = pick(&self.transports, *transport) else {
                    return;
                };
                let mut buf = BytesMut::new();
                let mut seqs = seqs.clone();
                seqs.sort_unstable();
                write_nack(&mut buf, Ssrc(9), Ssrc(u32::from(*ssrc)), seqs);
                w.handle_rtcp(now, transport, buf.freeze());
            }
            Op::Pli { transport, ssrc } => {
                let Some(transport) = pick(&self.transports, *transport) else {
                    return;
                };
                let mut buf = BytesMut::new();
                write_pli(&mut buf, Ssrc(9), Ssrc(u32::from(*ssrc)));
                w.handle_rtcp(now, transport, buf.freeze());
            }
            Op::Advance { millis } => {
                self.now += Duration::from_millis(u64::from(*millis));
                w.handle_timeout(self.now);
            }
        }
        self.drain_and_check();
    }

    fn drain_and_check(&mut self) {
        let mut scratch = [0u8; 2048];
        while let Some(tx) = self.worker.poll_transmit() {
            // Draining after every op: whatever was queued was queued for a live transport.
            let direction = self
                .worker
                .transport_direction(tx.to)
                .expect("transmit to a removed transport");
            if matches!(tx.packet, OutPacket::Rtp { .. } | OutPacket::Padding { .. }) {
                assert_eq!(
                    direction,
                    Direction::Subscribe,
                    "media goes to subscribers only"
                );
            }
            let n = tx
                .packet
                .write(&mut scratch)
                .expect("transmits fit an MTU-sized buffer");
            match tx.packet {
                OutPacket::Rtp { .. } => drop(
                    RtpPacket::parse(Bytes::copy_from_slice(&scratch[..n])).expect("valid RTP"),
                ),
                OutPacket::Padding { .. } => assert!(
                    RtpPacket::parse(Bytes::copy_from_slice(&scratch[..n]))
                        .expect("valid RTP")
                        .payload()
                        .is_empty(),
                    "padding carries no payload"
                ),
                OutPacket::Rtcp(_) => assert!(
                    Compound::new(&scratch[..n]).all(|m| m.is_ok()),
                    "valid RTCP"
                ),
            }
        }
        while self.worker.poll_event().is_some() {}
        self.worker.check_invariants();
        if let Some(deadline) = self.worker.poll_timeout() {
            assert!(
                deadline <= self.now + self.worker.config().tick,
                "timer never further than one tick"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooyaho_test_support::rng::TestRng;

    /// A cheap, deterministic stand-in for the fuzzer so `cargo test` exercises the bodies.
    #[test]
    fn random_op_sequences_keep_invariants() {
        let start = Instant::now();
        for seed in 1..60 {
            let mut rng = TestRng::scrambled(seed);
            let mut b = || rng.next_u64() as u8;
            let ops: Vec<Op> = (0..200)
                .map(|_| match b() % 15 {
                    0 => Op::CreateRoom,
                    1 => Op::CloseRoom(b()),
                    2 | 3 => Op::AddTransport {
                        room: b(),
                        publish: b() % 2 == 0,
                        twcc: b() % 2 == 0,
                    },
                    4 => Op::RemoveTransport(b()),
                    5 => Op::Publish {
                        transport: b(),
                        video: b() % 2 == 0,
                        ssrc: b() % 8,
                        rtx: b() % 2 == 0,
                        simulcast: b() % 3 == 0,
                    },
                    6 => Op::Unpublish(b()),
                    7 => Op::Subscribe {
                        transport: b(),
                        track: b(),
                        ssrc: b() % 8,
                        rtx: b() % 2 == 0,
                    },
                    8 => Op::Unsubscribe(b()),
                    9 | 10 => Op::Rtp {
                        transport: b(),
                        ssrc: b() % 8,
                        seq: u16::from(b()),
                        timestamp: u32::from(b()) * 3000,
                        keyframe: b() % 4 == 0,
                        payload_len: b(),
                        rid: b() % 8,
                    },
                    11 => Op::Nack {
                        transport: b(),
                        ssrc: b() % 8,
                        seqs: (0..b() % 5).map(|_| u16::from(b())).collect(),
                    },
                    13 => Op::SetLayer {
                        subscription: b(),
                        layer: b(),
                    },
                    12 => Op::Pli {
                        transport: b(),
                        ssrc: b() % 8,
                    },
                    _ => Op::Advance {
                        millis: u16::from(b()) * 4,
                    },
                })
                .collect();
            worker_ops(start, &ops);
        }
    }

    #[test]
    fn rtp_extensions_body_forwards_negotiated_elements_only() {
        let start = Instant::now();
        // Publisher: mid=1 rid=2 rrid=3 twcc=4 abs=5 level=6; subscriber: mid=7 twcc=8,
        // level=9 (selector high nibble), abs=10 (ssrc high nibble). One-byte profile.
        let mut input = vec![0x21, 0x43, 0x65, 0x00, 0x87, 0x90, 7, 0xa0];
        // mid "v", rid "h", audio level, abs-send-time, twcc, then padding.
        input.extend_from_slice(&[
            0x10, b'v', 0x20, b'h', 0x60, 0x7f, 0x52, 1, 2, 3, 0x41, 0, 9,
        ]);
        assert_eq!(
            rtp_extensions(start, &input),
            3,
            "the rid-bound layer is forwarded"
        );
        let mut rng = TestRng::scrambled(11);
        for _ in 0..2000 {
            let len = 8 + rng.below(40) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            data[..8].copy_from_slice(&input[..8]);
            rtp_extensions(start, &data);
            data[5] = rng.next_u64() as u8;
            rtp_extensions(start, &data);
        }
    }

    #[test]
    fn rtp_and_rtcp_bodies_accept_garbage() {
        let start = Instant::now();
        let mut rng = TestRng::scrambled(7);
        for _ in 0..2000 {
            let len = rng.below(80) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if let Some(first) = data.first_mut() {
                *first = 0x80 | (*first & 0x3f);
            }
            rtp_packet(&data);
            if data.len() > 1 {
                data[1] = 200 + (data[1] % 8);
            }
            rtcp_compound(start, &data);
        }
    }
}
