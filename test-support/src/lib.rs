//! Test clients shared by the media node's tests (`media/tests`) and the end-to-end tests
//! (`tests/`), so both drive the system with one implementation:
//!
//! - [`peer`]: a WebRTC peer built with the independent `webrtc` crate (0.21) that publishes
//!   Opus + VP8 and records every RTP payload it receives, per remote stream.
//! - [`ws`]: the browser-like WebSocket client and the REST client with the API key.
//! - [`sfu_client`]: a WebSocket participant of an SFU channel with a publish and a subscribe
//!   [`peer::Peer`].

pub mod peer;
pub mod sfu_client;
pub mod ws;
