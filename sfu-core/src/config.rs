//! Worker configuration.

use std::time::Duration;

use crate::speakers::SpeechThresholds;
use crate::{Bitrate, Ssrc};

/// Tunables of a [`Worker`](crate::Worker). `Default` gives the values the docs and tests
/// assume.
#[derive(Clone, Debug)]
pub struct Config {
    /// Packets kept per track for NACK answers (rounded up to a power of two).
    pub retransmit_capacity: usize,
    /// Oldest packet worth resending: after ~1 s a receiver's jitter buffer has moved on.
    pub retransmit_max_age: Duration,
    /// One packet is resent to one subscriber at most once per this interval (about one RTT:
    /// the subscriber cannot have seen the previous resend earlier). Repeated sequence numbers
    /// within one NACK and across recent NACKs are refused by it.
    pub retransmit_min_interval: Duration,
    /// Bytes a subscriber may have resent beyond what forwarding earned it: each forwarded byte
    /// credits one byte of retransmission budget (≤ 1× the media rate), capped at this.
    pub retransmit_burst_bytes: usize,
    /// At most one sender report per publisher SSRC is translated to subscribers per this
    /// interval; more are dropped and counted (browsers send one per ~1 s).
    pub sr_forward_interval: Duration,
    /// Cap of what a publisher may send on one video track (all layers, RTX included); packets
    /// beyond a token bucket of this rate are dropped and counted.
    pub max_video_track_bitrate: Bitrate,
    /// The same cap for an audio track.
    pub max_audio_track_bitrate: Bitrate,
    /// The bitrate caps' bucket depth: how long a burst at the cap may be absorbed at once
    /// (keyframes arrive in bursts).
    pub track_bitrate_burst: Duration,
    /// At most one keyframe request per track per this window.
    pub keyframe_window: Duration,
    /// NACK retry spacing toward a publisher (about one RTT).
    pub nack_retry_interval: Duration,
    /// Receiver report + REMB period toward publishers (RFC 3550 suggests ~5 s; browsers send
    /// theirs every second, and REMB should be about as frequent).
    pub report_interval: Duration,
    /// Transport-wide CC feedback period (libwebrtc uses 50–250 ms; 100 ms here).
    pub twcc_interval: Duration,
    /// Granularity of the worker's single timer: all periodic work runs on this tick.
    pub tick: Duration,
    /// The most a REMB asks of one video track (at most `max_video_track_bitrate`): what a
    /// simulcast track, a track nobody watches and a track watched by a subscriber without a
    /// downlink estimate are asked for, so encoders ramp up instead of staying at the WebRTC
    /// start rate; a single-encoding track's subscribers lower it to what the best of them can
    /// take (see the `remb` module). `None` disables REMB.
    pub remb_bitrate: Option<Bitrate>,
    /// SSRC the worker uses as the sender of its own RTCP (RR, NACK, PLI, REMB, TWCC).
    pub rtcp_ssrc: Ssrc,
    /// How often each room's active speakers are ranked again from its audio levels (and, when
    /// the ranking changed, announced): at most one [`Event::ActiveSpeakersChanged`] per room
    /// per interval.
    ///
    /// [`Event::ActiveSpeakersChanged`]: crate::Event::ActiveSpeakersChanged
    pub speaker_interval: Duration,
    /// What counts as speech in the audio levels.
    pub speech: SpeechThresholds,
    /// Speakers listed per room at most (loudest first).
    pub max_active_speakers: usize,
    /// A simulcast layer with no packet for this long counts as stopped (publishers drop their
    /// top layers when their bandwidth or CPU runs short): its subscribers get the best layer
    /// still flowing until it comes back.
    pub layer_idle: Duration,
    /// How often subscriptions of simulcast tracks are checked against the layers flowing, and
    /// each subscriber's downlink estimate is divided among its subscriptions.
    pub layer_check_interval: Duration,
    /// Downlink bandwidth estimation (from subscribers' transport-wide CC feedback) starting at
    /// this estimate; it decides each video subscription's layer, and pauses video that does not
    /// fit. `None` disables it: layers follow the wishes only.
    pub bwe_start_bitrate: Option<Bitrate>,
    /// At most one transport-wide CC feedback message per subscriber per this interval is fed to
    /// its estimate; more are dropped and counted (`twcc_throttled`).
    pub twcc_min_interval: Duration,
    /// Dynacast: a simulcast track's publisher is told which layers anyone consumes
    /// ([`Event::SubscribedLayersChanged`](crate::Event::SubscribedLayersChanged)) at once when
    /// a layer becomes needed, and that one is no longer needed at most once per this interval.
    pub dynacast_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            retransmit_capacity: 512,
            retransmit_max_age: Duration::from_secs(1),
            retransmit_min_interval: Duration::from_millis(100),
            retransmit_burst_bytes: 64 * 1024,
            sr_forward_interval: Duration::from_millis(250),
            max_video_track_bitrate: Bitrate(10_000_000),
            max_audio_track_bitrate: Bitrate(256_000),
            track_bitrate_burst: Duration::from_millis(500),
            keyframe_window: Duration::from_millis(500),
            nack_retry_interval: Duration::from_millis(100),
            report_interval: Duration::from_secs(1),
            twcc_interval: Duration::from_millis(100),
            tick: Duration::from_millis(20),
            remb_bitrate: Some(Bitrate(2_500_000)),
            rtcp_ssrc: Ssrc(0x5f5f_5f5f),
            speaker_interval: Duration::from_millis(200),
            speech: SpeechThresholds::default(),
            max_active_speakers: 8,
            layer_idle: Duration::from_secs(1),
            layer_check_interval: Duration::from_millis(250),
            bwe_start_bitrate: Some(Bitrate(1_000_000)),
            twcc_min_interval: Duration::from_millis(10),
            dynacast_interval: Duration::from_millis(500),
        }
    }
}
