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
    let track = TrackConfig {
        kind: MediaKind::Video,
        codec: Codec::Vp8,
        pt: Pt(96),
        clock_rate: ClockRate(90_000),
        rtx_pt: Some(Pt(97)),
        mid: Mid::new(b"0"),
        encodings: Encodings::single(PUBLISHER_SSRC, Some(Ssrc(0x1001))),
    };
    one_track_room(
        now,
        ExtensionMap::new(&[
            (1, ExtensionKind::AbsSendTime),
            (3, ExtensionKind::TransportCc),
        ]),
        track,
        ExtensionMap::new(&[
            (1, ExtensionKind::AbsSendTime),
            (3, ExtensionKind::TransportCc),
            (4, ExtensionKind::Mid),
        ]),
        (0..subscribers as u32).map(|i| SubscriptionConfig {
            ssrc: Ssrc(0x10_0000 + 2 * i),
            pt: Pt(96),
            rtx: Some(Rtx {
                ssrc: Ssrc(0x10_0001 + 2 * i),
                pt: Pt(97),
            }),
            mid: Mid::new(b"0"),
        }),
    )
}

/// A VP8 RTP packet as a publisher sends it: abs-send-time and transport-cc extensions and a
/// `payload_len`-byte payload; `keyframe` marks the first packet of a key frame.
pub fn video_packet(seq: u16, timestamp: u32, payload_len: usize, keyframe: bool) -> Bytes {
    let mut extensions = OutExtensions::EMPTY;
    extensions.push(1, &[0x12, 0x34, 0x56]);
    extensions.push(3, &seq.to_be_bytes());
    let mut payload = vec![0xab; payload_len];
    payload[0] = 0x10;
    payload[1] = if keyframe { 0x00 } else { 0x01 };
    rtp_packet(PUBLISHER_SSRC, Pt(96), seq, timestamp, extensions, &payload)
}

/// Publisher SSRC of the fixture's audio track.
pub const AUDIO_SSRC: Ssrc = Ssrc(0x2000);

/// A worker with one room, one publisher of an Opus track carrying the audio-level extension
/// (RFC 6464) and `subscribers` subscriber transports (mid, transport-cc and audio level
/// negotiated): the audio fan-out of a large meeting.
pub fn audio_fanout_worker(now: Instant, subscribers: usize) -> (Worker, TransportId) {
    let extensions = ExtensionMap::new(&[
        (1, ExtensionKind::AudioLevel),
        (3, ExtensionKind::TransportCc),
        (4, ExtensionKind::Mid),
    ]);
    let track = TrackConfig {
        kind: MediaKind::Audio,
        codec: Codec::Opus,
        pt: Pt(111),
        clock_rate: ClockRate(48_000),
        rtx_pt: None,
        mid: Mid::new(b"0"),
        encodings: Encodings::single(AUDIO_SSRC, None),
    };
    one_track_room(
        now,
        extensions,
        track,
        extensions,
        (0..subscribers as u32).map(|i| SubscriptionConfig {
            ssrc: Ssrc(0x20_0000 + i),
            pt: Pt(111),
            rtx: None,
            mid: Mid::new(b"0"),
        }),
    )
}

/// An Opus RTP packet as a browser sends it: audio level (`level` in -dBov, RFC 6464, voice
/// activity set) and transport-cc extensions, 80 payload bytes.
pub fn audio_packet(seq: u16, timestamp: u32, level: u8) -> Bytes {
    let mut extensions = OutExtensions::EMPTY;
    extensions.push(1, &[0x80 | (level & 0x7f)]);
    extensions.push(3, &seq.to_be_bytes());
    rtp_packet(AUDIO_SSRC, Pt(111), seq, timestamp, extensions, &[0x5a; 80])
}

/// The fan-out both fixtures measure: a worker with one room, one publisher transport
/// (`publish_extensions`) publishing `track`, and one subscriber transport
/// (`subscribe_extensions`) per item of `subscriptions`, subscribed to it; everything the setup
/// queued (transmits, events) is drained so a bench starts from a quiet worker.
fn one_track_room(
    now: Instant,
    publish_extensions: ExtensionMap,
    track: TrackConfig,
    subscribe_extensions: ExtensionMap,
    subscriptions: impl Iterator<Item = SubscriptionConfig>,
) -> (Worker, TransportId) {
    let mut worker = uncapped_worker();
    let room = worker.create_room().expect("room");
    let publish = TransportConfig {
        direction: Direction::Publish,
        extensions: publish_extensions,
    };
    let publisher = worker.add_transport(now, room, publish).expect("publisher");
    let track = worker.publish_track(now, publisher, track).expect("track");
    let subscribe = TransportConfig {
        direction: Direction::Subscribe,
        extensions: subscribe_extensions,
    };
    for config in subscriptions {
        let transport = worker
            .add_transport(now, room, subscribe)
            .expect("subscriber");
        worker
            .subscribe(now, transport, track, config)
            .expect("subscription");
    }
    while worker.poll_transmit().is_some() {}
    while worker.poll_event().is_some() {}
    (worker, publisher)
}

/// One RTP packet of the publisher `ssrc` (marker clear, no RTX).
fn rtp_packet(
    ssrc: Ssrc,
    pt: Pt,
    seq: u16,
    timestamp: u32,
    extensions: OutExtensions,
    payload: &[u8],
) -> Bytes {
    let header = RtpHeader {
        ssrc,
        pt,
        seq: SeqNo(u64::from(seq)),
        timestamp: RtpTime(u64::from(timestamp)),
        marker: false,
        extensions,
        rtx_osn: None,
    };
    let mut buf = BytesMut::with_capacity(1500); // one MTU, as a datagram arrives
    header.write_to(payload, &mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both fixtures are what the benches claim: every subscriber gets a copy of a packet.
    #[test]
    fn every_subscriber_of_either_fixture_receives_the_publishers_packet() {
        let now = Instant::now();
        let (mut video, publisher) = fanout_worker(now, 7);
        video.handle_rtp(now, publisher, video_packet(1, 3000, 1100, true));
        assert_eq!(std::iter::from_fn(|| video.poll_transmit()).count(), 7);
        let (mut audio, publisher) = audio_fanout_worker(now, 5);
        audio.handle_rtp(now, publisher, audio_packet(1, 960, 30));
        assert_eq!(std::iter::from_fn(|| audio.poll_transmit()).count(), 5);
    }
}
