//! RTCP: a zero-copy reader for compound packets (RFC 3550 §6, RFC 4585, RFC 5104, REMB,
//! transport-wide CC) and writers for the messages the core generates.
//!
//! What the core does with each message type is the policy in `docs/rtcp.md`; the `match` in
//! `worker/rtcp.rs` has one arm per row of that table.

mod read;
mod twcc;
mod twcc_feedback;
mod write;

pub use read::{
    Compound, Fir, Nack, ReceiverReport, ReportBlock, RtcpError, RtcpPacket, SenderInfo,
    SenderReport,
};
pub use twcc::TwccRecorder;
pub use twcc_feedback::{TwccFeedback, TwccPackets};
pub use write::{write_nack, write_pli, write_remb, write_rr, write_sr};

/// RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1, RFC 3611).
pub(crate) mod pt {
    pub(crate) const SR: u8 = 200;
    pub(crate) const RR: u8 = 201;
    pub(crate) const SDES: u8 = 202;
    pub(crate) const BYE: u8 = 203;
    pub(crate) const APP: u8 = 204;
    pub(crate) const RTPFB: u8 = 205;
    pub(crate) const PSFB: u8 = 206;
    pub(crate) const XR: u8 = 207;
}

/// Feedback message types (FMT) inside RTPFB/PSFB.
pub(crate) mod fmt {
    pub(crate) const NACK: u8 = 1;
    pub(crate) const TWCC: u8 = 15;
    pub(crate) const PLI: u8 = 1;
    pub(crate) const FIR: u8 = 4;
    pub(crate) const AFB: u8 = 15;
}
