//! Worker unit tests: one behaviour each, synthetic time, hand-built packets.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::rtcp::{Compound, RtcpPacket};
use crate::rtp::tests_support::build;
use crate::rtp::{Codec, ExtensionKind, ExtensionMap, RtpPacket};
use crate::*;

struct Fixture {
    now: Instant,
    worker: Worker,
    room: RoomId,
    publisher: TransportId,
    track: TrackId,
}

const PUB_SSRC: u32 = 1111;

fn audio_track() -> TrackConfig {
    TrackConfig {
        kind: MediaKind::Audio,
        codec: Codec::Opus,
        pt: Pt(111),
        clock_rate: ClockRate(48_000),
        rtx_pt: None,
        mid: None,
        encodings: Encodings::single(Ssrc(PUB_SSRC), None),
    }
}

fn subscription(ssrc: u32) -> SubscriptionConfig {
    SubscriptionConfig {
        ssrc: Ssrc(ssrc),
        pt: Pt(100),
        rtx: None,
        mid: Mid::new(b"a0"),
    }
}

fn transport(direction: Direction, extensions: &[(u8, ExtensionKind)]) -> TransportConfig {
    TransportConfig {
        direction,
        extensions: ExtensionMap::new(extensions),
    }
}

impl Fixture {
    fn new(track: TrackConfig) -> Self {
        let now = Instant::now();
        let mut worker = Worker::new(Config::default());
        let room = worker.create_room().unwrap();
        let publisher = worker
            .add_transport(
                now,
                room,
                transport(
                    Direction::Publish,
                    &[
                        (1, ExtensionKind::AudioLevel),
                        (3, ExtensionKind::TransportCc),
                    ],
                ),
            )
            .unwrap();
        let track = worker.publish_track(now, publisher, track).unwrap();
        Self {
            now,
            worker,
            room,
            publisher,
            track,
        }
    }

    fn subscriber(&mut self, ssrc: u32) -> (TransportId, SubscriptionId) {
        let t = self
            .worker
            .add_transport(
                self.now,
                self.room,
                transport(
                    Direction::Subscribe,
                    &[
                        (4, ExtensionKind::Mid),
                        (5, ExtensionKind::AudioLevel),
                        (6, ExtensionKind::TransportCc),
                    ],
                ),
            )
            .unwrap();
        let s = self
            .worker
            .subscribe(self.now, t, self.track, subscription(ssrc))
            .unwrap();
        (t, s)
    }

    fn drain(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.worker.poll_transmit()).collect()
    }
}

#[test]
fn packet_fans_out_to_every_subscription_sharing_the_payload_allocation() {
    let mut f = Fixture::new(audio_track());
    let subs: Vec<_> = (0..3).map(|i| f.subscriber(5000 + i)).collect();
    let raw = build(
        7,
        960,
        PUB_SSRC,
        111,
        true,
        &[(1, &[0x85]), (3, &[0, 9])],
        b"opus frame",
    );
    let input = raw.as_ptr() as usize..raw.as_ptr() as usize + raw.len();
    f.worker.handle_rtp(f.now, f.publisher, raw);
    let out = f.drain();
    assert_eq!(out.len(), 3);
    for (tx, (transport, _)) in out.iter().zip(&subs) {
        assert_eq!(tx.to, *transport);
        let OutPacket::Rtp { header, payload } = &tx.packet else {
            panic!("rtp expected")
        };
        assert!(
            input.contains(&(payload.as_ptr() as usize))
                && input.contains(&(payload.as_ptr() as usize + payload.len() - 1)),
            "payload must point into the received allocation"
        );
        assert_eq!(&payload[..], b"opus frame");
        assert_eq!((header.pt, header.marker), (Pt(100), true));
        // Subscriber ids: mid, audio level copied, fresh transport-wide seq 0.
        assert_eq!(
            header.extensions.iter().collect::<Vec<_>>(),
            vec![(4, &b"a0"[..]), (5, &[0x85][..]), (6, &[0, 0][..])]
        );
    }
    let ssrcs: Vec<_> = out
        .iter()
        .map(|t| match &t.packet {
            OutPacket::Rtp { header, .. } => header.ssrc,
            OutPacket::Rtcp(_) => unreachable!(),
        })
        .collect();
    assert_eq!(ssrcs, vec![Ssrc(5000), Ssrc(5001), Ssrc(5002)]);
    assert_eq!(f.worker.stats().counters.rtp_forwarded, 3);
}

#[test]
fn written_forwarded_packet_is_valid_rtp_with_rewritten_fields() {
    let mut f = Fixture::new(audio_track());
    f.subscriber(5000);
    f.worker.handle_rtp(
        f.now,
        f.publisher,
        build(7, 960, PUB_SSRC, 111, false, &[], b"abc"),
    );
    let tx = f.worker.poll_transmit().unwrap();
    let mut scratch = [0u8; 1500];
    let n = tx.packet.write(&mut scratch).unwrap();
    let p = RtpPacket::parse(Bytes::copy_from_slice(&scratch[..n])).unwrap();
    assert_eq!(
        (p.ssrc(), p.pt(), p.seq(), p.timestamp(), &p.payload()[..]),
        (Ssrc(5000), Pt(100), 7, 960, &b"abc"[..])
    );
}

#[test]
fn bad_packets_are_counted_never_forwarded() {
    let mut f = Fixture::new(audio_track());
    let (sub_transport, _) = f.subscriber(5000);
    let w = &mut f.worker;
    w.handle_rtp(f.now, f.publisher, Bytes::from_static(b"\x80\x00"));
    w.handle_rtp(f.now, f.publisher, build(1, 1, 999, 111, false, &[], b"x"));
    w.handle_rtp(
        f.now,
        f.publisher,
        build(1, 1, PUB_SSRC, 96, false, &[], b"x"),
    );
    w.handle_rtp(
        f.now,
        sub_transport,
        build(1, 1, PUB_SSRC, 111, false, &[], b"x"),
    );
    w.handle_rtp(
        f.now,
        TransportId::from_u64(u64::MAX),
        build(1, 1, PUB_SSRC, 111, false, &[], b"x"),
    );
    w.handle_rtp(
        f.now,
        f.publisher,
        build(2, 1, PUB_SSRC, 111, false, &[], b"x"),
    );
    w.handle_rtp(
        f.now,
        f.publisher,
        build(2, 1, PUB_SSRC, 111, false, &[], b"x"),
    );
    w.handle_rtcp(f.now, f.publisher, Bytes::from_static(b"\x80\xc9\x00\x09"));
    let c = w.stats().counters;
    assert_eq!(
        (
            c.rtp_malformed,
            c.rtp_unknown_ssrc,
            c.rtp_unknown_pt,
            c.rtp_unknown_transport,
            c.rtp_duplicate,
            c.rtcp_malformed
        ),
        (1, 1, 1, 2, 1, 1)
    );
    assert_eq!(f.drain().len(), 1, "only the one good packet is forwarded");
}

#[test]
fn nack_is_answered_from_buffer_on_rtx_with_osn() {
    let mut f = Fixture::new(audio_track());
    let t = f
        .worker
        .add_transport(f.now, f.room, transport(Direction::Subscribe, &[]))
        .unwrap();
    let config = SubscriptionConfig {
        rtx: Some(Rtx {
            ssrc: Ssrc(6001),
            pt: Pt(101),
        }),
        ..subscription(6000)
    };
    f.worker.subscribe(f.now, t, f.track, config).unwrap();
    for seq in 100..110 {
        f.worker.handle_rtp(
            f.now,
            f.publisher,
            build(
                seq,
                u32::from(seq) * 960,
                PUB_SSRC,
                111,
                false,
                &[],
                &[seq as u8; 20],
            ),
        );
    }
    f.drain();
    let mut nack = bytes::BytesMut::new();
    rtcp::write_nack(&mut nack, Ssrc(77), Ssrc(6000), [103, 105, 30_000]);
    f.worker
        .handle_rtcp(f.now + Duration::from_millis(50), t, nack.freeze());
    let out = f.drain();
    assert_eq!(out.len(), 2);
    for (tx, (osn, rtx_seq)) in out.iter().zip([(103u16, 6000u16), (105, 6001)]) {
        let mut buf = [0u8; 1500];
        let n = tx.packet.write(&mut buf).unwrap();
        let p = RtpPacket::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
        assert_eq!((p.ssrc(), p.pt(), p.seq()), (Ssrc(6001), Pt(101), rtx_seq));
        let original = p.unwrap_rtx(Ssrc(6000), Pt(100)).unwrap();
        assert_eq!(
            (original.seq(), original.timestamp()),
            (osn, u32::from(osn) * 960)
        );
        assert_eq!(&original.payload()[..], &[osn as u8; 20]);
    }
    let c = f.worker.stats().counters;
    assert_eq!(
        (c.nack_received, c.retransmits_sent, c.retransmit_misses),
        (3, 2, 1)
    );
}

#[test]
fn ingress_gap_sends_nack_to_publisher_and_retries() {
    let mut f = Fixture::new(audio_track());
    f.worker.handle_rtp(
        f.now,
        f.publisher,
        build(1, 0, PUB_SSRC, 111, false, &[], b"x"),
    );
    f.worker.handle_rtp(
        f.now,
        f.publisher,
        build(4, 0, PUB_SSRC, 111, false, &[], b"x"),
    );
    let nacked = |out: Vec<Transmit>| -> Vec<u16> {
        out.iter()
            .filter_map(|t| match &t.packet {
                OutPacket::Rtcp(b) => Some(b.clone()),
                OutPacket::Rtp { .. } => None,
            })
            .flat_map(|b| {
                Compound::new(&b)
                    .filter_map(|m| match m.unwrap() {
                        RtcpPacket::Nack(n) => Some(n.lost().collect::<Vec<_>>()),
                        _ => None,
                    })
                    .flatten()
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(nacked(f.drain()), vec![2, 3]);
    f.worker.handle_rtp(
        f.now,
        f.publisher,
        build(2, 0, PUB_SSRC, 111, false, &[], b"x"),
    );
    let later = f.now + Duration::from_millis(150);
    f.worker.handle_timeout(later);
    assert_eq!(
        nacked(f.drain()),
        vec![3],
        "recovered packet is no longer asked for"
    );
}

#[test]
fn commands_reject_bad_input_without_changing_state() {
    let mut f = Fixture::new(audio_track());
    let (sub_t, sub) = f.subscriber(5000);
    let before = f.worker.stats();
    let other_room = f.worker.create_room().unwrap();
    let other_sub = f
        .worker
        .add_transport(f.now, other_room, transport(Direction::Subscribe, &[]))
        .unwrap();
    let w = &mut f.worker;
    assert_eq!(
        w.publish_track(f.now, sub_t, audio_track()),
        Err(CommandError::WrongDirection(sub_t))
    );
    assert_eq!(
        w.publish_track(f.now, f.publisher, audio_track()),
        Err(CommandError::SsrcInUse(Ssrc(PUB_SSRC)))
    );
    assert_eq!(
        w.subscribe(f.now, f.publisher, f.track, subscription(1)),
        Err(CommandError::WrongDirection(f.publisher))
    );
    assert_eq!(
        w.subscribe(f.now, sub_t, f.track, subscription(9)),
        Err(CommandError::AlreadySubscribed(f.track))
    );
    assert_eq!(
        w.subscribe(f.now, other_sub, f.track, subscription(9)),
        Err(CommandError::DifferentRoom {
            track: f.track,
            transport: other_sub
        })
    );
    w.unsubscribe(sub).unwrap();
    assert_eq!(
        w.unsubscribe(sub),
        Err(CommandError::UnknownSubscription(sub))
    );
    assert_eq!(w.stats().subscriptions, before.subscriptions - 1);
    w.check_invariants();
}

#[test]
fn closing_room_frees_everything_and_stale_ids_stay_dead() {
    let mut f = Fixture::new(audio_track());
    let (sub_t, sub) = f.subscriber(5000);
    f.worker.close_room(f.room).unwrap();
    let s = f.worker.stats();
    assert_eq!(
        (s.rooms, s.transports, s.tracks, s.subscriptions),
        (0, 0, 0, 0)
    );
    assert_eq!(f.worker.poll_timeout(), None);
    let events: Vec<_> = std::iter::from_fn(|| f.worker.poll_event()).collect();
    assert!(events.contains(&Event::SubscriptionClosed {
        subscription: sub,
        transport: sub_t
    }));
    assert!(events.contains(&Event::TrackClosed {
        track: f.track,
        room: f.room
    }));
    // New entities reuse the slots but not the ids.
    let room = f.worker.create_room().unwrap();
    let t = f
        .worker
        .add_transport(f.now, room, transport(Direction::Publish, &[]))
        .unwrap();
    assert_ne!(room, f.room);
    assert_ne!(t, f.publisher);
    assert_eq!(
        f.worker.close_room(f.room),
        Err(CommandError::UnknownRoom(f.room))
    );
    assert_eq!(
        f.worker.remove_transport(f.publisher),
        Err(CommandError::UnknownTransport(f.publisher))
    );
    f.worker.handle_rtp(
        f.now,
        f.publisher,
        build(1, 1, PUB_SSRC, 111, false, &[], b"x"),
    );
    assert_eq!(f.worker.stats().counters.rtp_unknown_transport, 1);
    f.worker.check_invariants();
}

#[test]
fn publisher_sender_report_is_forwarded_with_rewritten_ssrc_and_timestamp() {
    let mut f = Fixture::new(audio_track());
    let (sub_t, _) = f.subscriber(5000);
    f.worker.handle_rtp(
        f.now,
        f.publisher,
        build(10, 48_000, PUB_SSRC, 111, false, &[], b"x"),
    );
    f.drain();
    let mut sr = bytes::BytesMut::new();
    let info = rtcp::SenderInfo {
        ntp: 0xaaaa_bbbb_cccc_dddd,
        rtp_time: 48_960,
        packet_count: 1,
        octet_count: 1,
    };
    rtcp::write_sr(&mut sr, Ssrc(PUB_SSRC), info, &[]);
    f.worker.handle_rtcp(f.now, f.publisher, sr.freeze());
    let out = f.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, sub_t);
    let OutPacket::Rtcp(b) = &out[0].packet else {
        panic!()
    };
    let Some(Ok(RtcpPacket::SenderReport(got))) = Compound::new(b).next() else {
        panic!()
    };
    assert_eq!(
        (
            got.sender,
            got.info.ntp,
            got.info.rtp_time,
            got.info.packet_count
        ),
        (Ssrc(5000), info.ntp, 48_960, 1)
    );
}

#[test]
fn receiver_report_and_remb_go_to_publisher_every_report_interval() {
    let video = TrackConfig {
        kind: MediaKind::Video,
        codec: Codec::Vp8,
        pt: Pt(96),
        clock_rate: ClockRate(90_000),
        rtx_pt: None,
        mid: None,
        encodings: Encodings::single(Ssrc(PUB_SSRC), None),
    };
    let mut f = Fixture::new(video);
    f.worker.handle_rtp(
        f.now,
        f.publisher,
        build(1, 0, PUB_SSRC, 96, false, &[(3, &[0, 1])], &[0x10, 0]),
    );
    f.drain();
    let mut t = f.now;
    let mut kinds = Vec::new();
    while t < f.now + Duration::from_millis(2100) {
        t = f.worker.poll_timeout().unwrap().max(t);
        f.worker.handle_timeout(t);
        for tx in f.drain() {
            let OutPacket::Rtcp(b) = &tx.packet else {
                continue;
            };
            kinds.extend(Compound::new(b).map(|m| match m.unwrap() {
                RtcpPacket::ReceiverReport(_) => "rr",
                RtcpPacket::Remb { .. } => "remb",
                RtcpPacket::TransportCc { .. } => "twcc",
                _ => "other",
            }));
        }
    }
    assert_eq!(kinds.iter().filter(|k| **k == "rr").count(), 3, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "remb").count(), 3);
    assert_eq!(
        kinds.iter().filter(|k| **k == "twcc").count(),
        1,
        "one packet, one feedback"
    );
}

#[test]
fn handle_command_mirrors_the_methods() {
    let now = Instant::now();
    let mut w = Worker::new(Config::default());
    let Ok(Response::Room(room)) = w.handle_command(now, Command::CreateRoom) else {
        panic!()
    };
    let config = transport(Direction::Publish, &[]);
    let Ok(Response::Transport(p)) = w.handle_command(now, Command::AddTransport { room, config })
    else {
        panic!()
    };
    let config = audio_track();
    let Ok(Response::Track(track)) = w.handle_command(
        now,
        Command::PublishTrack {
            transport: p,
            config,
        },
    ) else {
        panic!()
    };
    let config = transport(Direction::Subscribe, &[]);
    let Ok(Response::Transport(s)) = w.handle_command(now, Command::AddTransport { room, config })
    else {
        panic!()
    };
    let config = subscription(5);
    let Ok(Response::Subscription(sub)) = w.handle_command(
        now,
        Command::Subscribe {
            transport: s,
            track,
            config,
        },
    ) else {
        panic!()
    };
    let layer = Command::SetPreferredLayer {
        subscription: sub,
        layer: 1,
    };
    assert_eq!(
        w.handle_command(now, layer),
        Err(CommandError::UnknownLayer { track, layer: 1 })
    );
    let Ok(Response::Stats(stats)) = w.handle_command(now, Command::Stats) else {
        panic!()
    };
    assert_eq!(
        (
            stats.rooms,
            stats.transports,
            stats.tracks,
            stats.subscriptions
        ),
        (1, 2, 1, 1)
    );
    assert_eq!(
        w.handle_command(now, Command::CloseRoom(room)),
        Ok(Response::Done)
    );
    assert_eq!(
        w.handle_command(now, Command::Unsubscribe(sub)),
        Err(CommandError::UnknownSubscription(sub))
    );
}

#[test]
fn unusable_encodings_are_refused() {
    let mut f = Fixture::new(audio_track());
    let nameless = Encoding {
        rid: None,
        ssrc: None,
        rtx_ssrc: None,
    };
    let config = TrackConfig {
        encodings: Encodings::simulcast(&[nameless]).unwrap(),
        ..audio_track()
    };
    assert_eq!(
        f.worker.publish_track(f.now, f.publisher, config),
        Err(CommandError::InvalidEncodings)
    );
    let rtx_without_pt = TrackConfig {
        encodings: Encodings::single(Ssrc(1), Some(Ssrc(2))),
        ..audio_track()
    };
    assert_eq!(
        f.worker.publish_track(f.now, f.publisher, rtx_without_pt),
        Err(CommandError::InvalidEncodings)
    );
    let same = TrackConfig {
        rtx_pt: Some(Pt(97)),
        encodings: Encodings::single(Ssrc(3), Some(Ssrc(3))),
        ..audio_track()
    };
    assert_eq!(
        f.worker.publish_track(f.now, f.publisher, same),
        Err(CommandError::SsrcInUse(Ssrc(3)))
    );
    assert_eq!(Encodings::simulcast(&[]), None);
    assert_eq!(f.worker.stats().tracks, 1);
}
