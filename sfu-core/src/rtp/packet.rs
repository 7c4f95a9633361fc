//! A parsed, zero-copy view of one RTP packet (RFC 3550 §5.1, RFC 8285).

use bytes::Bytes;

use super::ext::Extensions;
use crate::{Pt, Ssrc};

/// Why a datagram is not an RTP packet. Network data never turns into an `Err` out of the
/// [`Worker`](crate::Worker); this type exists for direct users of the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than its headers claim.
    #[error("packet truncated")]
    Truncated,
    /// Version field is not 2.
    #[error("unsupported RTP version {0}")]
    Version(u8),
    /// Padding count is zero or larger than the payload.
    #[error("invalid padding")]
    Padding,
    /// A header extension element overruns the extension block.
    #[error("malformed header extension")]
    Extension,
}

/// One received RTP packet. Parsing checks every length once; the accessors cannot fail.
///
/// The packet owns a `Bytes` handle to the datagram; [`payload`](Self::payload) and
/// extension data are slices of that same allocation, so forwarding never copies them.
#[derive(Clone, Debug)]
pub struct RtpPacket {
    raw: Bytes,
    payload: Bytes,
    marker: bool,
    pt: Pt,
    seq: u16,
    timestamp: u32,
    ssrc: Ssrc,
    csrc_count: u8,
    /// Extension profile (0xBEDE one-byte, 0x100x two-byte, or other) and block range in `raw`.
    extension: Option<(u16, usize, usize)>,
    padding: u8,
}

impl RtpPacket {
    /// Parses `raw` without copying it.
    pub fn parse(raw: Bytes) -> Result<Self, ParseError> {
        let b = &raw[..];
        if b.len() < 12 {
            return Err(ParseError::Truncated);
        }
        let version = b[0] >> 6;
        if version != 2 {
            return Err(ParseError::Version(version));
        }
        let has_padding = b[0] & 0x20 != 0;
        let has_extension = b[0] & 0x10 != 0;
        let csrc_count = b[0] & 0x0f;
        let mut offset = 12 + 4 * usize::from(csrc_count);
        if b.len() < offset {
            return Err(ParseError::Truncated);
        }
        let mut extension = None;
        if has_extension {
            if b.len() < offset + 4 {
                return Err(ParseError::Truncated);
            }
            let profile = u16::from_be_bytes([b[offset], b[offset + 1]]);
            let words = usize::from(u16::from_be_bytes([b[offset + 2], b[offset + 3]]));
            let start = offset + 4;
            let end = start + 4 * words;
            if b.len() < end {
                return Err(ParseError::Truncated);
            }
            Extensions::validate(profile, &b[start..end])?;
            extension = Some((profile, start, end));
            offset = end;
        }
        let mut end = b.len();
        let mut padding = 0;
        if has_padding {
            padding = b[end - 1];
            if padding == 0 || usize::from(padding) > end - offset {
                return Err(ParseError::Padding);
            }
            end -= usize::from(padding);
        }
        Ok(Self {
            payload: raw.slice(offset..end),
            marker: b[1] & 0x80 != 0,
            pt: Pt(b[1] & 0x7f),
            seq: u16::from_be_bytes([b[2], b[3]]),
            timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: Ssrc(u32::from_be_bytes([b[8], b[9], b[10], b[11]])),
            csrc_count,
            extension,
            padding,
            raw,
        })
    }

    /// The marker bit (end of frame for video).
    pub fn marker(&self) -> bool {
        self.marker
    }

    /// Payload type.
    pub fn pt(&self) -> Pt {
        self.pt
    }

    /// Wire sequence number; the core extends it with [`crate::time::extend_u16`].
    pub fn seq(&self) -> u16 {
        self.seq
    }

    /// Wire timestamp.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Synchronization source.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Contributing sources (RFC 3550 §5.1).
    pub fn csrcs(&self) -> impl Iterator<Item = Ssrc> + '_ {
        self.raw[12..12 + 4 * usize::from(self.csrc_count)]
            .chunks_exact(4)
            .map(|c| Ssrc(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
    }

    /// Number of padding bytes at the end (0 without the padding bit).
    pub fn padding(&self) -> u8 {
        self.padding
    }

    /// Header extension elements (empty when the packet has none or uses an unknown profile).
    pub fn extensions(&self) -> Extensions<'_> {
        match self.extension {
            Some((profile, start, end)) => Extensions::new(profile, &self.raw[start..end]),
            None => Extensions::new(0, &[]),
        }
    }

    /// The extension profile word (0xBEDE for one-byte, 0x1000..=0x100F for two-byte).
    pub fn extension_profile(&self) -> Option<u16> {
        self.extension.map(|(profile, _, _)| profile)
    }

    /// Payload without padding: a slice of the received allocation.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The whole datagram as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Turns an RTX packet (RFC 4588 §4) into the original it repairs: the first two payload
    /// bytes are the original sequence number; `pt` and `ssrc` are the original stream's.
    /// `None` when the payload is too short to carry an OSN (a padding-only probe).
    pub fn unwrap_rtx(mut self, ssrc: Ssrc, pt: Pt) -> Option<Self> {
        if self.payload.len() < 2 {
            return None;
        }
        self.seq = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        self.payload = self.payload.slice(2..);
        self.ssrc = ssrc;
        self.pt = pt;
        Some(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an RTP packet by hand; `ext` is a one-byte-form list of `(id, data)`.
    pub(crate) fn build(
        seq: u16,
        ts: u32,
        ssrc: u32,
        pt: u8,
        marker: bool,
        ext: &[(u8, &[u8])],
        payload: &[u8],
    ) -> Bytes {
        let mut out = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&ssrc.to_be_bytes());
        if !ext.is_empty() {
            out[0] |= 0x10;
            let mut block = Vec::new();
            for (id, data) in ext {
                block.push((id << 4) | (data.len() as u8 - 1));
                block.extend_from_slice(data);
            }
            while block.len() % 4 != 0 {
                block.push(0);
            }
            out.extend_from_slice(&[0xbe, 0xde]);
            out.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
            out.extend_from_slice(&block);
        }
        out.extend_from_slice(payload);
        Bytes::from(out)
    }

    #[test]
    fn parses_fixed_header_and_payload_as_slice_of_input() {
        let raw = build(
            0xfffe,
            0xdead_beef,
            0x1234_5678,
            96,
            true,
            &[(1, &[0xaa]), (3, &[1, 2, 3])],
            b"hello",
        );
        let p = RtpPacket::parse(raw.clone()).unwrap();
        assert_eq!(
            (p.seq(), p.timestamp(), p.ssrc(), p.pt(), p.marker()),
            (0xfffe, 0xdead_beef, Ssrc(0x1234_5678), Pt(96), true)
        );
        assert_eq!(&p.payload()[..], b"hello");
        let ext: Vec<_> = p.extensions().collect();
        assert_eq!(ext, vec![(1, &[0xaa][..]), (3, &[1, 2, 3][..])]);
        let range = raw.as_ptr() as usize..raw.as_ptr() as usize + raw.len();
        assert!(range.contains(&(p.payload().as_ptr() as usize)));
    }

    #[test]
    fn rejects_truncated_bad_version_and_bad_padding() {
        assert_eq!(
            RtpPacket::parse(Bytes::from_static(&[0x80; 11])).unwrap_err(),
            ParseError::Truncated
        );
        let mut v1 = build(1, 1, 1, 96, false, &[], b"x").to_vec();
        v1[0] = 0x40;
        assert_eq!(
            RtpPacket::parse(v1.into()).unwrap_err(),
            ParseError::Version(1)
        );
        let mut pad = build(1, 1, 1, 96, false, &[], b"xy").to_vec();
        pad[0] |= 0x20;
        *pad.last_mut().unwrap() = 9;
        assert_eq!(
            RtpPacket::parse(pad.into()).unwrap_err(),
            ParseError::Padding
        );
        let mut csrc = build(1, 1, 1, 96, false, &[], b"").to_vec();
        csrc[0] |= 0x03;
        assert_eq!(
            RtpPacket::parse(csrc.into()).unwrap_err(),
            ParseError::Truncated
        );
    }

    #[test]
    fn strips_padding_from_payload() {
        let mut raw = build(1, 1, 1, 96, false, &[], b"abc\0\0\x03").to_vec();
        raw[0] |= 0x20;
        let p = RtpPacket::parse(raw.into()).unwrap();
        assert_eq!(&p.payload()[..], b"abc");
        assert_eq!(p.padding(), 3);
    }

    #[test]
    fn unwraps_rtx_osn() {
        let raw = build(7, 1000, 0x2222, 97, false, &[], &[0x12, 0x34, 9, 9]);
        let p = RtpPacket::parse(raw)
            .unwrap()
            .unwrap_rtx(Ssrc(0x1111), Pt(96))
            .unwrap();
        assert_eq!(
            (p.seq(), p.ssrc(), p.pt(), &p.payload()[..]),
            (0x1234, Ssrc(0x1111), Pt(96), &[9u8, 9][..])
        );
    }
}
