//! Test support shared by our crates, so every test drives the system with one implementation:
//!
//! - [`rng`]: the deterministic PRNG of property tests, mutation loops and simulations.
//! - [`packets`]: plain RTP packets for the tests of SRTP, DTLS and the transports.
//! - [`bottleneck`]: a capacity-limited link with a drop-tail queue (bandwidth estimation).
//!
//! Those three are all there is without the `clients` feature (sfu-core and net use the crate
//! that way).
//!
//! With the default `clients` feature, the clients of the media node's tests (`media/tests`)
//! and the end-to-end tests (`tests/`):
//!
//! - [`peer`]: a WebRTC peer built with the independent `webrtc` crate (0.21) that publishes
//!   Opus + VP8 and records every RTP payload it receives, per remote stream.
//! - [`ws`]: the browser-like WebSocket client and the REST client with the API key.
//! - [`sfu_client`]: a WebSocket participant of an SFU channel with a publish and a subscribe
//!   [`peer::Peer`].
//! - [`aiortc`]: a second independent WebRTC stack, aiortc (Python), as a child process.

#![deny(unsafe_code)]

#[cfg(feature = "clients")]
pub mod aiortc;
pub mod bottleneck;
pub mod packets;
#[cfg(feature = "clients")]
pub mod peer;
pub mod rng;
#[cfg(feature = "clients")]
pub mod sfu_client;
#[cfg(feature = "clients")]
pub mod ws;
