//! The header of an outgoing (rewritten) RTP packet and the writer that serialises it.

use bytes::BytesMut;

use super::ext::OutExtensions;
use crate::{Pt, RtpTime, SeqNo, Ssrc};

/// The header the media layer writes in front of a forwarded payload. Everything that differs
/// per subscriber lives here; the payload itself is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// Outgoing SSRC (the subscription's, or its RTX SSRC).
    pub ssrc: Ssrc,
    /// Outgoing payload type.
    pub pt: Pt,
    /// Outgoing sequence number (truncated to 16 bits when written).
    pub seq: SeqNo,
    /// Outgoing timestamp (truncated to 32 bits when written).
    pub timestamp: RtpTime,
    /// Marker bit, copied from the source.
    pub marker: bool,
    /// Extension elements the subscriber negotiated.
    pub extensions: OutExtensions,
    /// For RTX (RFC 4588 §4): the original sequence number, written as the first two payload
    /// bytes so the payload itself need not be copied to prepend it.
    pub rtx_osn: Option<SeqNo>,
}

/// The scratch buffer passed to [`RtpHeader::write`] cannot hold the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer of {have} bytes cannot hold a {need}-byte RTP packet")]
pub struct BufferTooSmall {
    /// Bytes required.
    pub need: usize,
    /// Bytes available.
    pub have: usize,
}

impl RtpHeader {
    /// Bytes the header occupies, including the RTX OSN.
    pub fn len(&self) -> usize {
        let ext = self.extensions.as_bytes().len();
        let ext_block = if ext == 0 { 0 } else { 4 + ext.div_ceil(4) * 4 };
        12 + ext_block + if self.rtx_osn.is_some() { 2 } else { 0 }
    }

    /// Never empty; present for the `len`/`is_empty` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes header then `payload` into `out` and returns the packet length. The media layer
    /// then encrypts `out[..len]` in place; this is the one copy of the payload per subscriber.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let header = self.len();
        let need = header + payload.len();
        if out.len() < need {
            return Err(BufferTooSmall {
                need,
                have: out.len(),
            });
        }
        let ext = self.extensions.as_bytes();
        out[0] = 0x80 | if ext.is_empty() { 0 } else { 0x10 };
        out[1] = self.pt.0 & 0x7f | if self.marker { 0x80 } else { 0 };
        out[2..4].copy_from_slice(&self.seq.wire().to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.wire().to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let mut at = 12;
        if !ext.is_empty() {
            let words = ext.len().div_ceil(4);
            out[at..at + 2].copy_from_slice(&[0xbe, 0xde]);
            out[at + 2..at + 4].copy_from_slice(&(words as u16).to_be_bytes());
            at += 4;
            out[at..at + ext.len()].copy_from_slice(ext);
            out[at + ext.len()..at + words * 4].fill(0);
            at += words * 4;
        }
        if let Some(osn) = self.rtx_osn {
            out[at..at + 2].copy_from_slice(&osn.wire().to_be_bytes());
            at += 2;
        }
        out[at..need].copy_from_slice(payload);
        Ok(need)
    }

    /// [`write`](Self::write) appending to a growable buffer (which reuses its capacity).
    pub fn write_to(&self, payload: &[u8], buf: &mut BytesMut) {
        let start = buf.len();
        buf.resize(start + self.len() + payload.len(), 0);
        // The buffer was just sized for exactly this packet.
        self.write(payload, &mut buf[start..])
            .expect("buffer sized by len()");
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::rtp::RtpPacket;

    #[test]
    fn written_packet_parses_back_with_same_fields() {
        let mut extensions = OutExtensions::EMPTY;
        extensions.push(1, b"mid0");
        extensions.push(3, &[0, 7]);
        let header = RtpHeader {
            ssrc: Ssrc(42),
            pt: Pt(111),
            seq: SeqNo((3 << 16) | 0xfffe),
            timestamp: RtpTime((5 << 32) | 1234),
            marker: true,
            extensions,
            rtx_osn: None,
        };
        let mut buf = [0u8; 1500];
        let n = header.write(b"payload", &mut buf).unwrap();
        let p = RtpPacket::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
        assert_eq!(
            (p.ssrc(), p.pt(), p.seq(), p.timestamp(), p.marker()),
            (Ssrc(42), Pt(111), 0xfffe, 1234, true)
        );
        assert_eq!(
            p.extensions().collect::<Vec<_>>(),
            vec![(1, &b"mid0"[..]), (3, &[0, 7][..])]
        );
        assert_eq!(&p.payload()[..], b"payload");
    }

    /// A bare header (no extensions) of SSRC 9, PT 97, sequence number 1.
    fn bare_header(rtx_osn: Option<SeqNo>) -> RtpHeader {
        RtpHeader {
            ssrc: Ssrc(9),
            pt: Pt(97),
            seq: SeqNo(1),
            timestamp: RtpTime(0),
            marker: false,
            extensions: OutExtensions::EMPTY,
            rtx_osn,
        }
    }

    #[test]
    fn rtx_osn_precedes_payload() {
        let header = bare_header(Some(SeqNo(0x1_abcd)));
        let mut buf = BytesMut::new();
        header.write_to(b"xy", &mut buf);
        assert_eq!(&buf[12..], &[0xab, 0xcd, b'x', b'y']);
    }

    #[test]
    fn small_buffer_is_refused() {
        let header = bare_header(None);
        assert_eq!(
            header.write(b"abc", &mut [0; 14]),
            Err(BufferTooSmall { need: 15, have: 14 })
        );
    }
}
