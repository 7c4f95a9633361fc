//! Per-transport security: ICE-lite connectivity checks, the DTLS handshake and SRTP contexts.
//! Everything here is sans-IO: datagrams and `now` in, datagrams and events out.
//!
//! Why the sans-IO webrtc-rs line (`rtc-dtls`/`rtc-srtp` 0.21) rather than the async `dtls`
//! 0.17: a worker thread owns its transports and must never wait on a task or a lock; the
//! sans-IO `Endpoint` is driven by the worker's own loop and timers like `sfu-core`, and its ring
//! AES-GCM is 3.3× faster than `webrtc-srtp`'s on this machine (environment notes §3).

pub mod dtls;
pub mod ice;
pub mod paths;
pub mod srtp;
pub mod srtp_fast;

/// First-byte classification of a datagram on a shared port (RFC 7983 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketClass {
    /// 0–3: STUN.
    Stun,
    /// 20–63: DTLS.
    Dtls,
    /// 128–191 with an RTCP packet type (192–223 in byte 1, RFC 5761 §4).
    Rtcp,
    /// 128–191 otherwise.
    Rtp,
    /// Anything else: dropped.
    Unknown,
}

impl PacketClass {
    /// Classifies `datagram`.
    pub fn of(datagram: &[u8]) -> Self {
        match datagram.first() {
            Some(0..=3) => Self::Stun,
            Some(20..=63) => Self::Dtls,
            Some(128..=191) if datagram.len() >= 2 => match datagram[1] {
                192..=223 => Self::Rtcp,
                _ => Self::Rtp,
            },
            _ => Self::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_first_byte() {
        assert_eq!(PacketClass::of(&[0, 1]), PacketClass::Stun);
        assert_eq!(PacketClass::of(&[22, 254, 253]), PacketClass::Dtls);
        assert_eq!(PacketClass::of(&[0x80, 96]), PacketClass::Rtp);
        assert_eq!(PacketClass::of(&[0x80, 0xe0]), PacketClass::Rtp); // marker + pt 96
        assert_eq!(PacketClass::of(&[0x81, 200]), PacketClass::Rtcp);
        assert_eq!(PacketClass::of(&[0x80]), PacketClass::Unknown);
        assert_eq!(PacketClass::of(&[]), PacketClass::Unknown);
        assert_eq!(PacketClass::of(&[255, 0]), PacketClass::Unknown);
    }
}
