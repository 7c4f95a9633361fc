//! Shared fixtures for Mooyaho's criterion benchmarks and the allocation-count test.
//!
//! The benches live in `benches/`; this library builds the worker setups they measure, so the
//! benchmark and the test that guards "no allocation per forwarded packet" measure the same
//! thing.

#![deny(unsafe_code)]

pub mod counting_alloc;

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sfu_core::rtp::{Codec, ExtensionKind, ExtensionMap, OutExtensions, RtpHeader};
use sfu_core::{
    Bitrate, ClockRate, Config, Direction, Encodings, MediaKind, Mid, Pt, RtpTime, Rtx, SeqNo,
    Ssrc, SubscriptionConfig, TrackConfig, TransportConfig, TransportId, Worker,
};

/// A worker without publisher bitrate caps: benches replay packets at one instant, far above
/// any real rate.
fn uncapped_worker() -> Worker {
    Worker::new(Config {
        max_video_track_bitrate: Bitrate(u64::MAX),
        max_audio_track_bitrate: Bitrate(u64::MAX),
        ..Config::default()
    })
}

/// Publisher SSRC of the fixture's video track.
pub const PUBLISHER_SSRC: Ssrc = Ssrc(0x1000);

/// A worker with one room, one publisher of a VP8 track and `subscribers` subscriber
/// transports, each subscribed with RTX, mid and transport-cc negotiated (the browser case).
pub fn fanout_worker(now: Instant, subscribers: usize) -> (Worker, TransportId) {
    let mut worker = uncapped_worker();
    let room = worker.create_room().expect("room");
    let publish = TransportConfig {
        direction: Direction::Publish,
        extensions: ExtensionMap::new(&[
            (1, ExtensionKind::AbsSendTime),
            (3, ExtensionKind::TransportCc),
        ]),
    };
    let publisher = worker.add_transport(now, room, publish).expect("publisher");
    let track = TrackConfig {
        kind: MediaKind::Video,
        codec: Codec::Vp8,
        pt: Pt(96),
        clock_rate: ClockRate(90_000),
        rtx_pt: Some(Pt(97)),
        mid: Mid::new(b"0"),
        encodings: Encodings::single(PUBLISHER_SSRC, Some(Ssrc(0x1001))),
    };
    let track = worker.publish_track(now, publisher, track).expect("track");
    let subscribe = TransportConfig {
        direction: Direction::Subscribe,
        extensions: ExtensionMap::new(&[
            (1, ExtensionKind::AbsSendTime),
            (3, ExtensionKind::TransportCc),
            (4, ExtensionKind::Mid),
        ]),
    };
    for i in 0..subscribers as u32 {
        let transport = worker
            .add_transport(now, room, subscribe)
            .expect("subscriber");
        let config = SubscriptionConfig {
            ssrc: Ssrc(0x10_0000 + 2 * i),
            pt: Pt(96),
            rtx: Some(Rtx {
                ssrc: Ssrc(0x10_0001 + 2 * i),
                pt: Pt(97),
            }),
            mid: Mid::new(b"0"),
        };
        worker
            .subscribe(now, transport, track, config)
            .expect("subscription");
    }
    while worker.poll_transmit().is_some() {}
    while worker.poll_event().is_some() {}
    (worker, publisher)
}

/// A VP8 RTP packet as a publisher sends it: abs-send-time and transport-cc extensions and a
/// `payload_len`-byte payload; `keyframe` marks the first packet of a key frame.
pub fn video_packet(seq: u16, timestamp: u32, payload_len: usize, keyframe: bool) -> Bytes {
    let mut extensions = OutExtensions::EMPTY;
    extensions.push(1, &[0x12, 0x34, 0x56]);
    extensions.push(3, &seq.to_be_bytes());
    let header = RtpHeader {
        ssrc: PUBLISHER_SSRC,
        pt: Pt(96),
        seq: SeqNo(u64::from(seq)),
        timestamp: RtpTime(u64::from(timestamp)),
        marker: false,
        extensions,
        rtx_osn: None,
    };
    let mut payload = vec![0xab; payload_len];
    payload[0] = 0x10;
    payload[1] = if keyframe { 0x00 } else { 0x01 };
    let mut buf = BytesMut::with_capacity(1500);
    header.write_to(&payload, &mut buf);
    buf.freeze()
}

/// Publisher SSRC of the fixture's audio track.
pub const AUDIO_SSRC: Ssrc = Ssrc(0x2000);

/// A worker with one room, one publisher of an Opus track carrying the audio-level extension
/// (RFC 6464) and `subscribers` subscriber transports (mid, transport-cc and audio level
/// negotiated): the audio fan-out of a large meeting.
pub fn audio_fanout_worker(now: Instant, subscribers: usize) -> (Worker, TransportId) {
    let mut worker = uncapped_worker();
    let room = worker.create_room().expect("room");
    let extensions = ExtensionMap::new(&[
        (1, ExtensionKind::AudioLevel),
        (3, ExtensionKind::TransportCc),
        (4, ExtensionKind::Mid),
    ]);
    let publish = TransportConfig {
        direction: Direction::Publish,
        extensions,
    };
    let publisher = worker.add_transport(now, room, publish).expect("publisher");
    let track = TrackConfig {
        kind: MediaKind::Audio,
        codec: Codec::Opus,
        pt: Pt(111),
        clock_rate: ClockRate(48_000),
        rtx_pt: None,
        mid: Mid::new(b"0"),
        encodings: Encodings::single(AUDIO_SSRC, None),
    };
    let track = worker.publish_track(now, publisher, track).expect("track");
    let subscribe = TransportConfig {
        direction: Direction::Subscribe,
        extensions,
    };
    for i in 0..subscribers as u32 {
        let transport = worker
            .add_transport(now, room, subscribe)
            .expect("subscriber");
        let config = SubscriptionConfig {
            ssrc: Ssrc(0x20_0000 + i),
            pt: Pt(111),
            rtx: None,
            mid: Mid::new(b"0"),
        };
        worker
            .subscribe(now, transport, track, config)
            .expect("subscription");
    }
    while worker.poll_transmit().is_some() {}
    while worker.poll_event().is_some() {}
    (worker, publisher)
}

/// An Opus RTP packet as a browser sends it: audio level (`level` in -dBov, RFC 6464, voice
/// activity set) and transport-cc extensions, 80 payload bytes.
pub fn audio_packet(seq: u16, timestamp: u32, level: u8) -> Bytes {
    let mut extensions = OutExtensions::EMPTY;
    extensions.push(1, &[0x80 | (level & 0x7f)]);
    extensions.push(3, &seq.to_be_bytes());
    let header = RtpHeader {
        ssrc: AUDIO_SSRC,
        pt: Pt(111),
        seq: SeqNo(u64::from(seq)),
        timestamp: RtpTime(u64::from(timestamp)),
        marker: false,
        extensions,
        rtx_osn: None,
    };
    let mut buf = BytesMut::with_capacity(200);
    header.write_to(&[0x5a; 80], &mut buf);
    buf.freeze()
}
