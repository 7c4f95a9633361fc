//! Mooyaho's network layer, shared by the SFU node (`mooyaho-media`), the load generator, the
//! benches and the fuzz targets: batched UDP I/O, first-byte demultiplexing of a shared port,
//! and the wire protocols of a transport: STUN binding messages, the DTLS handshake and the
//! SRTP/SRTCP security layer it keys (`stun`, `dtls` and `srtp` are sans-IO: bytes and `now` in,
//! bytes out). No signalling, room or ICE-agent logic lives here.
//!
//! ```text
//! udp::Socket::recv_batch → PacketClass::of (RFC 7983) ─┬─ Stun → stun::BindingRequest
//!                                                       ├─ Dtls → dtls::DtlsTransport → SrtpSession
//!                                                       └─ Rtp/Rtcp → srtp::SrtpSession::unprotect_*_in_place
//! srtp::SrtpSession::protect_*_in_place → udp::SendBatch → udp::Socket::send_batch
//! ```

#![deny(unsafe_code)]

pub mod cpu;
pub mod dtls;
pub mod relay_frame;
pub mod srtp;
pub mod srtp_fast;
pub mod stun;
// The crate's one FFI module: `recvmmsg`/`sendmmsg` with GSO control messages, `poll`, an
// eventfd and `sockaddr` conversions through libc. Sound because every pointer handed to the
// kernel refers to a live, correctly sized local buffer for the duration of the call, the C
// structs are plain data (all-zero is valid), and `sockaddr_storage` is reinterpreted only as
// the family the kernel wrote. Each `unsafe` block carries its own SAFETY note.
#[allow(unsafe_code)]
pub mod udp;

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
