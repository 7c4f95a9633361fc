//! The Mooyaho SFU node: per-core worker threads, each owning one UDP socket (ICE-lite demux by
//! STUN username, then by validated 5-tuple), the DTLS and SRTP state of its transports and one
//! sans-IO [`sfu_core::Worker`]. [`Node`] is the library API the control plane drives.
//!
//! ```text
//! recvmmsg → classify (RFC 7983) → STUN: ICE-lite check → binding success
//!                                → DTLS: handshake → SRTP keys
//!                                → SRTP: unprotect in place → one copy into a pooled chunk
//!                                        → sfu_core::Worker::handle_rtp/rtcp
//! sfu_core::Worker::poll_transmit → write header+payload into the send arena
//!                                 → SRTP protect in place → sendmmsg
//! ```

#![deny(unsafe_code)]

pub(crate) mod connection;
pub mod control;
pub(crate) mod ice_tcp;
pub mod node;
pub mod sdp;
pub(crate) mod worker;

pub use control::{ControlConfig, ControlIdentity, ControlServer};
pub use ice_tcp::{IceTcpLimits, IceTcpStats};
pub use mooyaho_net::relay_frame::RelayKey;
pub use node::{Node, NodeConfig, NodeStats, RoomKey};
pub use worker::{
    MediaError, NodeEvent, PublishPolicy, PublishRate, RelayKeys, RelayLinkCounts, Speaker,
    WorkerCounters, WorkerFailure, WorkerStats, fuzz_media_worker,
};
