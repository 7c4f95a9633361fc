//! The Mooyaho SFU node (work in progress): SDP negotiation and per-transport security.

pub mod connection;
pub mod sdp;
