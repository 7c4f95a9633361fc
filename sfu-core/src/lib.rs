//! Sans-IO SFU core: rooms, transports, tracks and subscriptions; RTP forwarding with
//! per-subscriber rewriting; RTCP (reports, NACK/RTX, PLI/FIR, REMB, transport-wide CC).
//!
//! # Model
//!
//! A [`Worker`] is one core's share of the SFU. It owns [rooms](RoomId); a room holds the
//! [transports](TransportId) of its peers; a publish transport carries [tracks](TrackId); a
//! subscribe transport carries [subscriptions](SubscriptionId), each delivering one track.
//! A room also knows its *participants* (peers, by the control plane's name for them) and
//! which transports and tracks are whose ([`Worker::join`], [`Worker::published`],
//! [`Worker::participant_transport`]): the one model of a room's media state, which the media
//! layer negotiates against instead of keeping its own.
//! Every entity lives in an arena inside the worker and is named by a `Copy` id that carries a
//! generation, so the id of a removed entity never resolves to a later one.
//!
//! The worker performs no I/O, spawns no threads and reads no clock: the media layer decrypts a
//! datagram, hands it in with the current time, then drains what the worker wants sent. Time
//! only moves when the caller says so, which makes every behaviour testable with a virtual
//! clock (see `tests/sim/`).
//!
//! # Vocabulary
//!
//! | ours | meaning | mediasoup | LiveKit | str0m |
//! |---|---|---|---|---|
//! | [`Worker`] | one core's share; owns rooms and demux tables | Worker | (process) | (run loop) |
//! | [`RoomId`] room | routing domain; tracks fan out inside it | Router | Room | (all clients) |
//! | participant ([`Worker::join`]) | one peer in a room: its transports and tracks | (app) | Participant | (client) |
//! | [`TransportId`] transport | publish or subscribe side of one PeerConnection | Transport | PCTransport | `Rtc` |
//! | [`TrackId`] track | one published source (audio/video) | Producer | MediaTrack + Receiver | TrackIn |
//! | [`SubscriptionId`] subscription | one track delivered to one subscriber transport | Consumer | DownTrack | TrackOut |
//! | [`stream::InboundRtp`] | receive state of a published SSRC: loss, jitter, SR | RtpStreamRecv | Buffer + rtpstats | StreamRx |
//! | [`rtp::Rewriter`] | ssrc/seq/ts rewrite with offsets across source switches | SeqManager | RTPMunger | — |
//! | [`stream::RetransmitBuffer`] | extended seq → packet ring, per track | RtpRetransmissionBuffer | buffer.Buffer | rtx_cache |
//! | [`stream::NackGenerator`] | detects ingress gaps, NACKs the publisher | NackGenerator | (pion interceptor) | register_nack |
//! | [`stream::KeyframeRequester`] | aggregates and throttles PLI/FIR toward a publisher | KeyFrameRequestManager | (PLI throttle) | — |
//! | LayerSelector ([`Worker::set_preferred_layer`], [`Worker::set_paused`]) | per-subscription simulcast layer choice (the wish, or the best layer still flowing), switching at keyframes; pausing | SimulcastConsumer | VideoLayerSelector | — |
//! | [`Encoding`] | one simulcast layer of a track (rid and/or SSRC) | RtpEncodingParameters | (layer) | — |
//! | [`bwe::BandwidthEstimator`] | one subscriber transport's downlink estimate from its TWCC feedback (delay + loss, probes) | TransportCongestionControlClient (libwebrtc GCC) | sendsidebwe / StreamAllocator | bwe (SendSideBandwithEstimator) |
//! | dynacast ([`Event::SubscribedLayersChanged`]) | which layers of a simulcast track any subscription consumes, told to its publisher (debounced) | (—) | DynacastManager | — |
//! | allocation ([`Worker::bandwidth_estimate`]) | divides a subscriber's estimate: audio, then video layers within the wishes; pauses video that does not fit | Transport::DistributeAvailableOutgoingBitrate | StreamAllocator | — |
//!
//! # Drain contract
//!
//! Inputs are `handle_*` ([`Worker::handle_rtp`], [`Worker::handle_rtcp`],
//! [`Worker::handle_timeout`]) and the commands ([`Worker::create_room`],
//! [`Worker::add_transport`], [`Worker::publish_track`], [`Worker::subscribe`], …, or
//! [`Worker::handle_command`]). After **every** input, drain in this order:
//!
//! 1. [`Worker::poll_transmit`] until `None` — write each into the destination transport's
//!    scratch buffer with [`OutPacket::write`], protect, batch into `sendmmsg`;
//! 2. [`Worker::poll_event`] until `None` — hand to the control plane;
//! 3. [`Worker::poll_timeout`] — (re)arm the single timer; when it fires, call
//!    [`Worker::handle_timeout`] and drain again.
//!
//! Mutate, then drain to the timeout. Transmits are queued in the order they must be sent; the
//! outbox and event queue are reused, so a caller that drains after each input keeps the
//! forwarding path free of allocations.
//!
//! # Error tiers
//!
//! 1. **Broken invariant** (an arena link that must hold by construction): `expect` with the
//!    reason, i.e. a panic. Never reachable from input.
//! 2. **Bad command** (unknown id, wrong direction, SSRC clash): `Err(`[`CommandError`]`)`, the
//!    worker unchanged; the control plane turns it into an error reply.
//! 3. **Bad packet** (unparseable, unknown SSRC, duplicate, …): dropped and counted in
//!    [`Counters`]; `handle_rtp`/`handle_rtcp` return nothing.
//!
//! # Payload sharing
//!
//! A received packet is parsed as a view over its `Bytes` ([`rtp::RtpPacket`]); every
//! subscriber's [`Transmit`] carries a clone of the same payload `Bytes` plus its own
//! [`rtp::RtpHeader`]. The only copy of the payload is the one [`OutPacket::write`] makes into
//! the subscriber's send buffer, which SRTP encryption needs anyway.
//!
//! RTCP behaviour per message type is documented in `docs/rtcp.md`.
//!
//! # Not here yet
//!
//! - Probing needs a subscription forwarding on a negotiated RTX stream (probes are
//!   retransmissions of recent packets); padding-only probes are not generated, so a
//!   subscriber whose only video is paused for bandwidth and whose audio has no RTX cannot
//!   probe its way back (its estimate grows only from what it receives).
//! - SVC (VP9/AV1 spatial layers) and the dependency-descriptor extension.
//! - Our own sender reports when a publisher sends none (SRs are forwarded, not generated).
//! - Padding-only packets on a media SSRC are forwarded with an empty payload (keeping the
//!   sequence contiguous) rather than dropped with a sequence-number hole as mediasoup does.
//!
//! A room spanning several workers needs little from this crate: the media node relays a track
//! between workers through ordinary transports on each side (`media/src/worker/pipe.rs`), and
//! the receiving side publishes it on its publisher's behalf
//! ([`Worker::publish_relayed_track`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod allocation;
mod arena;
pub mod bwe;
mod config;
mod dynacast;
mod error;
mod id;
mod output;
mod remb;
mod room;
mod speakers;
mod stats;
mod subscription;
mod track;
mod transport;
mod worker;

pub mod fuzzing;
pub mod rtcp;
pub mod rtp;
pub mod stream;
pub mod time;

pub use config::Config;
pub use dynacast::LayerSet;
pub use error::CommandError;
pub use id::{
    Bitrate, ClockRate, Mid, Pt, Rid, RoomId, RtpTime, SeqNo, Ssrc, SubscriptionId, TrackId,
    TransportId,
};
pub use output::{Event, OutPacket, Transmit};
pub use room::PublishRate;
pub use speakers::{ActiveSpeaker, SpeechThresholds};
pub use stats::{Counters, HISTOGRAM_BOUNDS, Histogram, LOSS_BUCKETS, RTT_BUCKETS, Stats};
pub use subscription::{SubscriptionConfig, SubscriptionStats};
pub use track::{Encoding, Encodings, MediaKind, Rtx, TrackConfig};
pub use transport::{Direction, TransportConfig};
pub use worker::{Command, Response, TrackStats, Worker};
