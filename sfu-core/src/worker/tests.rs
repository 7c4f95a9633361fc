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

pub(super) fn audio_track() -> TrackConfig {
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
        Self::with_config(track, Config::default())
    }

    fn with_config(track: TrackConfig, config: Config) -> Self {
        let now = Instant::now();
        let mut worker = Worker::new(config);
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
            OutPacket::Rtcp(_) | OutPacket::Padding { .. } => unreachable!(),
        })
        .collect();
    assert_eq!(ssrcs, vec![Ssrc(5000), Ssrc(5001), Ssrc(5002)]);
    assert_eq!(f.worker.stats().counters.rtp_forwarded, 3);
}

/// A subscription feeding another node (a relay link) is forwarded to before the local ones,
/// whenever it subscribed.
#[test]
fn a_subscription_forwarded_first_gets_each_packet_before_the_others() {
    let mut f = Fixture::new(audio_track());
    let _locals: Vec<_> = (0..3).map(|i| f.subscriber(5000 + i)).collect();
    let (relay, relay_subscription) = f.subscriber(6000);
    f.worker.forward_first(relay_subscription).unwrap();
    let raw = build(7, 960, PUB_SSRC, 111, true, &[], b"opus frame");
    f.worker.handle_rtp(f.now, f.publisher, raw);
    let out = f.drain();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].to, relay);
    f.worker.unsubscribe(relay_subscription).unwrap();
    assert_eq!(
        f.worker.forward_first(relay_subscription),
        Err(CommandError::UnknownSubscription(relay_subscription))
    );
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
                OutPacket::Rtp { .. } | OutPacket::Padding { .. } => None,
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

/// A subscriber transport with mid and transport-cc, subscribed with or without RTX.
fn nacking_subscriber(f: &mut Fixture, rtx: bool) -> TransportId {
    let t = f
        .worker
        .add_transport(
            f.now,
            f.room,
            transport(
                Direction::Subscribe,
                &[(4, ExtensionKind::Mid), (6, ExtensionKind::TransportCc)],
            ),
        )
        .unwrap();
    let config = SubscriptionConfig {
        rtx: rtx.then_some(Rtx {
            ssrc: Ssrc(6001),
            pt: Pt(101),
        }),
        ..subscription(6000)
    };
    f.worker.subscribe(f.now, t, f.track, config).unwrap();
    t
}

fn publish(f: &mut Fixture, ms: u64, seq: u16, payload: usize) {
    let at = f.now + Duration::from_millis(ms);
    f.worker.handle_rtp(
        at,
        f.publisher,
        build(
            seq,
            u32::from(seq) * 960,
            PUB_SSRC,
            111,
            false,
            &[(3, &seq.to_be_bytes())],
            &vec![seq as u8; payload],
        ),
    );
}

fn nack(f: &mut Fixture, ms: u64, from: TransportId, lost: impl IntoIterator<Item = u16>) {
    let at = f.now + Duration::from_millis(ms);
    let mut buf = bytes::BytesMut::new();
    rtcp::write_nack(&mut buf, Ssrc(77), Ssrc(6000), lost);
    f.worker.handle_rtcp(at, from, buf.freeze());
}

/// Written bytes of every RTP transmit to `to`, split into (original seq → bytes) of media
/// packets and total bytes of everything.
fn written(out: &[Transmit], to: TransportId) -> Vec<Vec<u8>> {
    out.iter()
        .filter(|t| t.to == to && matches!(t.packet, OutPacket::Rtp { .. }))
        .map(|t| {
            let mut buf = [0u8; 1500];
            let n = t.packet.write(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

#[test]
fn repeated_sequence_numbers_in_one_nack_are_resent_once() {
    let mut f = Fixture::new(audio_track());
    let t = nacking_subscriber(&mut f, true);
    for seq in 100..110 {
        publish(&mut f, 0, seq, 100);
    }
    f.drain();
    nack(&mut f, 10, t, [103, 103, 103, 105, 103, 105]);
    assert_eq!(written(&f.drain(), t).len(), 2);
    let c = f.worker.stats().counters;
    assert_eq!(
        (c.nack_received, c.retransmits_sent, c.retransmits_repeated),
        (6, 2, 4)
    );
    // Across NACKs, within the interval: refused; after it: an honest second loss is resent.
    nack(&mut f, 60, t, [103]);
    assert!(written(&f.drain(), t).is_empty());
    nack(&mut f, 115, t, [103]);
    assert_eq!(written(&f.drain(), t).len(), 1);
    let c = f.worker.stats().counters;
    assert_eq!((c.retransmits_sent, c.retransmits_repeated), (3, 5));
}

#[test]
fn nack_storm_resends_at_most_the_forwarded_bytes() {
    let mut f = Fixture::new(audio_track());
    let attacker = nacking_subscriber(&mut f, true);
    // Two seconds of 50 packets/s; every millisecond a NACK naming the last 100 packets, each
    // pid with all 16 following bits set, every pair three times.
    let (mut forwarded, mut resent, mut requested) = (0usize, 0usize, 0u64);
    let mut seq = 1000u16;
    for ms in 0..2000u64 {
        let now = f.now + Duration::from_millis(ms);
        if ms % 20 == 0 {
            publish(&mut f, ms, seq, 160);
            seq += 1;
            forwarded += written(&f.drain(), attacker)
                .iter()
                .map(Vec::len)
                .sum::<usize>();
        }
        let lost: Vec<u16> = (0..3)
            .flat_map(|_| (seq.saturating_sub(100)..seq).step_by(17))
            .flat_map(|pid| pid..=pid + 16)
            .collect();
        requested += lost.len() as u64;
        nack(&mut f, ms, attacker, lost);
        f.worker.handle_timeout(now);
        resent += written(&f.drain(), attacker)
            .iter()
            .map(Vec::len)
            .sum::<usize>();
    }
    let c = f.worker.stats().counters;
    assert!(requested > 500_000, "{requested}");
    assert!(resent > 0, "some resends are within the budget");
    assert!(
        resent <= forwarded,
        "resent {resent} B > forwarded {forwarded} B (budget is 1× the media)"
    );
    assert!(
        c.retransmits_over_budget > 0 && c.retransmits_repeated > 0,
        "{c:?}"
    );
    assert_eq!(
        c.nack_received,
        c.retransmits_sent
            + c.retransmit_misses
            + c.retransmits_repeated
            + c.retransmits_over_budget
            + c.retransmits_unrepeatable,
        "every NACKed sequence number is accounted once"
    );
}

#[test]
fn resend_without_rtx_is_byte_identical_to_the_original() {
    let mut f = Fixture::new(audio_track());
    let t = nacking_subscriber(&mut f, false);
    let (t1, _) = f.subscriber(5000); // another transport: its own twcc numbering
    let mut originals = Vec::new();
    for seq in 100..110 {
        publish(&mut f, 0, seq, 100);
        let out = f.drain();
        assert_eq!(written(&out, t1).len(), 1);
        originals.extend(written(&out, t));
    }
    nack(&mut f, 20, t, [103, 107]);
    let resent = written(&f.drain(), t);
    assert_eq!(resent, vec![originals[3].clone(), originals[7].clone()]);
    // The resend spent no transport-wide number: the next packet continues the sequence.
    publish(&mut f, 30, 110, 100);
    let next = RtpPacket::parse(Bytes::from(written(&f.drain(), t).remove(0))).unwrap();
    let ext: Vec<_> = next.extensions().collect();
    assert!(ext.contains(&(6, &[0, 10][..])), "{ext:?}");
}

#[test]
fn sender_report_flood_is_translated_once_per_interval() {
    let mut f = Fixture::new(audio_track());
    let subs: Vec<_> = (0..5).map(|i| f.subscriber(5000 + i)).collect();
    publish(&mut f, 0, 1, 100);
    f.drain();
    let sr = |f: &mut Fixture, ms: u64| {
        let at = f.now + Duration::from_millis(ms);
        let mut buf = bytes::BytesMut::new();
        let info = rtcp::SenderInfo {
            ntp: 1 << 32,
            rtp_time: 960,
            packet_count: 1,
            octet_count: 100,
        };
        rtcp::write_sr(&mut buf, Ssrc(PUB_SSRC), info, &[]);
        f.worker.handle_rtcp(at, f.publisher, buf.freeze());
        f.drain().len()
    };
    let flood: usize = (0..1000).map(|_| sr(&mut f, 0)).sum();
    assert_eq!(flood, subs.len(), "one SR per subscriber, not 1000×");
    assert_eq!(sr(&mut f, 100), 0);
    assert_eq!(sr(&mut f, 300), subs.len());
    let c = f.worker.stats().counters;
    assert_eq!((c.sr_forwarded, c.sr_throttled), (10, 1000));
}

#[test]
fn publisher_over_its_track_bitrate_cap_is_dropped_before_fan_out() {
    let config = Config {
        max_audio_track_bitrate: Bitrate(256_000),
        track_bitrate_burst: Duration::from_millis(500),
        ..Config::default()
    };
    let mut f = Fixture::with_config(audio_track(), config);
    let (t, _) = f.subscriber(5000);
    // 1000-byte payloads every millisecond (≈ 8.2 Mbit/s) for 4 s; the cap counts the packets
    // as received (1020 bytes with header and extension).
    let mut delivered = 0usize;
    for ms in 0..4000u64 {
        publish(&mut f, ms, ms as u16, 1000);
        delivered += written(&f.drain(), t).len() * 1020;
    }
    let cap = 256_000 / 8 * 4 + 256_000 / 8 / 2; // 4 s at the cap plus the burst
    assert!(delivered <= cap, "{delivered} > {cap}");
    assert!(
        delivered >= cap * 9 / 10,
        "the cap itself passes: {delivered}"
    );
    let c = f.worker.stats().counters;
    assert!(c.rtp_over_bitrate > 3000, "{c:?}");
    assert_eq!(c.rtp_over_bitrate + c.rtp_forwarded, 4000);
}

#[test]
fn honest_publisher_under_the_cap_loses_nothing() {
    let mut f = Fixture::new(audio_track());
    let (t, _) = f.subscriber(5000);
    // Opus at ~64 kbit/s: 160 bytes every 20 ms.
    for i in 0..500u16 {
        publish(&mut f, u64::from(i) * 20, i, 160);
        assert_eq!(written(&f.drain(), t).len(), 1);
    }
    assert_eq!(f.worker.stats().counters.rtp_over_bitrate, 0);
}

#[test]
fn retransmit_buffer_releases_packets_once_they_age_out() {
    let mut f = Fixture::new(audio_track());
    f.subscriber(5000);
    let raw = build(1, 0, PUB_SSRC, 111, false, &[], &[0; 50]);
    f.worker.handle_rtp(f.now, f.publisher, raw.clone());
    for seq in 2..200 {
        publish(&mut f, 0, seq, 50);
    }
    f.drain();
    assert_eq!(f.worker.track_stats(f.track).unwrap().buffered, 199);
    assert!(!raw.is_unique(), "the buffer holds the received packet");
    for ms in (0..=2000).step_by(20) {
        f.worker.handle_timeout(f.now + Duration::from_millis(ms));
        f.drain();
    }
    assert_eq!(f.worker.track_stats(f.track).unwrap().buffered, 0);
    assert!(raw.is_unique(), "nothing pins the receive buffer any more");
}

/// Publishes one more audio track in the fixture's room, on its own publisher transport.
fn audio_publisher(f: &mut Fixture, ssrc: u32) -> (TransportId, TrackId) {
    let t = f
        .worker
        .add_transport(
            f.now,
            f.room,
            transport(Direction::Publish, &[(1, ExtensionKind::AudioLevel)]),
        )
        .unwrap();
    let track = TrackConfig {
        encodings: Encodings::single(Ssrc(ssrc), None),
        ..audio_track()
    };
    (t, f.worker.publish_track(f.now, t, track).unwrap())
}

/// The speaker rankings announced while `levels(packet index)` gives each publisher's level
/// for 20 ms packets over `ms` of virtual time: `(ms, ranking)` per event.
fn speaker_events(
    f: &mut Fixture,
    publishers: &[(TransportId, u32)],
    start_ms: u64,
    ms: u64,
    levels: impl Fn(usize, u64) -> u8,
) -> Vec<(u64, Vec<ActiveSpeaker>)> {
    let mut announced = Vec::new();
    for step in 0..ms / 20 {
        let at_ms = start_ms + step * 20;
        let now = f.now + Duration::from_millis(at_ms);
        let seq = (at_ms / 20) as u16 + 1;
        for (i, &(transport, ssrc)) in publishers.iter().enumerate() {
            let level = levels(i, at_ms / 20);
            let packet = build(
                seq,
                u32::from(seq) * 960,
                ssrc,
                111,
                false,
                &[(1, &[level])],
                b"o",
            );
            f.worker.handle_rtp(now, transport, packet);
        }
        f.worker.handle_timeout(now);
        while let Some(event) = f.worker.poll_event() {
            if let Event::ActiveSpeakersChanged { room } = event {
                let ranking = f.worker.active_speakers(room).unwrap().to_vec();
                announced.push((at_ms, ranking));
            }
        }
        f.drain();
    }
    announced
}

#[test]
fn the_loud_track_is_ranked_and_silence_and_clicks_are_not() {
    let mut f = Fixture::new(audio_track());
    let (silent, silent_track) = (f.publisher, f.track);
    let (loud, loud_track) = audio_publisher(&mut f, 2222);
    let (clicking, _) = audio_publisher(&mut f, 3333);
    let publishers = [(silent, PUB_SSRC), (loud, 2222), (clicking, 3333)];
    // Silence is 127; the click is one 0 dBov packet in every ten.
    let levels = |publisher: usize, packet: u64| match publisher {
        0 => 127,
        1 => 0x80 | 15,
        _ if packet % 10 == 3 => 0,
        _ => 120,
    };
    let events = speaker_events(&mut f, &publishers, 0, 3000, levels);
    let (first_ms, first) = &events[0];
    assert!(*first_ms <= 1000, "named after {first_ms} ms");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].track, loud_track);
    assert!(first[0].level > 0);
    assert_eq!(
        events.len(),
        1,
        "a steady ranking is announced once: {events:?}"
    );
    assert!(
        f.worker
            .active_speakers(f.room)
            .unwrap()
            .iter()
            .all(|s| s.track == loud_track),
        "neither silence nor clicks rank"
    );

    // The loud one stops and the silent one starts: the ranking moves over within a second,
    // never announced more than once per interval.
    let swapped = |publisher: usize, _| if publisher == 0 { 20 } else { 127 };
    let events = speaker_events(&mut f, &publishers, 3000, 3000, swapped);
    for pair in events.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= 200, "{events:?}");
    }
    let leader = events
        .iter()
        .find(|(_, ranking)| ranking.first().is_some_and(|s| s.track == silent_track))
        .expect("the new speaker leads");
    assert!(leader.0 - 3000 <= 1000, "took {} ms", leader.0 - 3000);
    let last = &events.last().unwrap().1;
    assert_eq!(
        last.iter().map(|s| s.track).collect::<Vec<_>>(),
        [silent_track]
    );
}

#[test]
fn a_malformed_audio_level_is_counted_and_neither_read_nor_forwarded() {
    let mut f = Fixture::new(audio_track());
    let (sub, _) = f.subscriber(5000);
    for step in 0..100u16 {
        let now = f.now + Duration::from_millis(u64::from(step) * 20);
        // Two bytes (and sixteen) under the audio level's id: not RFC 6464.
        let level: &[u8] = if step % 2 == 0 { &[0, 0] } else { &[0; 16] };
        let packet = build(
            step + 1,
            u32::from(step) * 960,
            PUB_SSRC,
            111,
            false,
            &[(1, level)],
            b"o",
        );
        f.worker.handle_rtp(now, f.publisher, packet);
        f.worker.handle_timeout(now);
    }
    assert_eq!(f.worker.stats().counters.audio_level_malformed, 100);
    let out = f.drain();
    let forwarded = written(&out, sub);
    assert_eq!(forwarded.len(), 100, "the packets themselves are forwarded");
    for raw in forwarded {
        let packet = RtpPacket::parse(Bytes::from(raw)).unwrap();
        assert!(
            packet.extensions().all(|(id, _)| id != 5),
            "no level forwarded"
        );
    }
    assert!(f.worker.active_speakers(f.room).unwrap().is_empty());
    assert!(
        std::iter::from_fn(|| f.worker.poll_event())
            .all(|e| !matches!(e, Event::ActiveSpeakersChanged { .. }))
    );
}

#[test]
fn subscriber_reports_feed_the_loss_and_round_trip_histograms() {
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
    f.drain();
    let block = |last_sr: u32| rtcp::ReportBlock {
        ssrc: Ssrc(5000),
        fraction_lost: 20, // ~7.8 %
        cumulative_lost: 3,
        highest_seq: 10,
        jitter: 0,
        last_sr,
        delay_since_last_sr: 65_536 / 50, // held 20 ms
    };
    // Arrives 100 ms after the SR went out: 80 ms round trip.
    let mut rr = bytes::BytesMut::new();
    rtcp::write_rr(&mut rr, Ssrc(77), &[block(0xbbbb_cccc)]);
    f.worker
        .handle_rtcp(f.now + Duration::from_millis(100), sub_t, rr.freeze());
    // A report naming an SR we never forwarded counts its loss but no round trip.
    let mut rr = bytes::BytesMut::new();
    rtcp::write_rr(&mut rr, Ssrc(77), &[block(0x1234_5678)]);
    f.worker
        .handle_rtcp(f.now + Duration::from_millis(150), sub_t, rr.freeze());
    let c = f.worker.stats().counters;
    assert_eq!(c.subscriber_loss.count(), 2);
    assert_eq!(
        c.subscriber_loss.counts[4], 2,
        "in the 5–10 % bucket: {c:?}"
    );
    assert_eq!(c.subscriber_rtt.count(), 1);
    assert_eq!(
        c.subscriber_rtt.counts[4], 1,
        "in the 50–100 ms bucket: {c:?}"
    );
    assert!(
        (79_000..=81_000).contains(&c.subscriber_rtt.sum),
        "{}",
        c.subscriber_rtt.sum
    );
}

#[test]
fn rid_layers_bind_once_and_unknown_or_rebinding_rids_are_counted_drops() {
    let now = Instant::now();
    let mut worker = Worker::new(Config::default());
    let room = worker.create_room().unwrap();
    let publisher = worker
        .add_transport(
            now,
            room,
            transport(
                Direction::Publish,
                &[(1, ExtensionKind::Mid), (2, ExtensionKind::Rid)],
            ),
        )
        .unwrap();
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
        mid: Mid::new(b"0"),
        encodings: Encodings::simulcast(&[layer(b"q"), layer(b"f")]).unwrap(),
    };
    worker.publish_track(now, publisher, config).unwrap();
    let keyframe = [0x10, 0x00, 0x9d, 0x01, 0x2a];
    let send = |worker: &mut Worker, ssrc: u32, seq: u16, rid: &[u8]| {
        let packet = build(seq, 0, ssrc, 96, true, &[(1, b"0"), (2, rid)], &keyframe);
        worker.handle_rtp(now, publisher, packet);
    };
    send(&mut worker, 10, 1, b"q");
    send(&mut worker, 20, 1, b"f");
    assert_eq!(worker.stats().counters.rtp_unknown_rid, 0);
    // A rid nobody announced, and the announced rids again under a thousand new SSRCs.
    for ssrc in 0..1000u32 {
        send(&mut worker, 1000 + ssrc, 1, b"x");
        send(
            &mut worker,
            5000 + ssrc,
            1,
            if ssrc % 2 == 0 { b"q" } else { b"f" },
        );
    }
    // Once bound, a layer's own SSRC keeps flowing.
    send(&mut worker, 10, 2, b"q");
    send(&mut worker, 20, 2, b"f");
    let c = worker.stats().counters;
    assert_eq!(c.rtp_unknown_rid, 2000);
    assert_eq!(c.rtp_unknown_ssrc, 0);
    assert_eq!(
        worker.transports.get(publisher).unwrap().routes.len(),
        2,
        "only the two announced layers are routed"
    );
    let track = worker.tracks.iter().next().unwrap().1;
    let bound: Vec<_> = track.layers.iter().map(|l| l.encoding.ssrc).collect();
    assert_eq!(bound, [Some(Ssrc(10)), Some(Ssrc(20))]);
    assert_eq!(track.packets_received, 4);
}
