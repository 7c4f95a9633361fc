//! Per-transport security: ICE-lite connectivity checks and the DTLS handshake that keys the
//! transport's SRTP contexts (`mooyaho_net::srtp`).
//! Everything here is sans-IO: datagrams and `now` in, datagrams and events out.
//!
//! Why the sans-IO webrtc-rs line (`rtc-dtls`/`rtc-srtp` 0.21) rather than the async `dtls`
//! 0.17: a worker thread owns its transports and must never wait on a task or a lock; the
//! sans-IO `Endpoint` is driven by the worker's own loop and timers like `sfu-core`, and its ring
//! AES-GCM is 3.3× faster than `webrtc-srtp`'s on this machine (environment notes §3).

pub mod dtls;
pub mod ice;
pub mod paths;

// The SRTP layer lives in the network crate; `dtls` keys it from the finished handshake.
pub(crate) use mooyaho_net::srtp;

impl From<srtp::KeyingError> for dtls::DtlsError {
    fn from(error: srtp::KeyingError) -> Self {
        Self(error.0)
    }
}
