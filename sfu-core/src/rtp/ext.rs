//! RTP header extensions (RFC 8285): iteration over received elements, the per-transport id
//! map negotiated in SDP, and the inline block written into forwarded packets.

use super::packet::ParseError;

const ONE_BYTE_PROFILE: u16 = 0xbede;
const TWO_BYTE_PROFILE_MASK: u16 = 0xfff0;
const TWO_BYTE_PROFILE: u16 = 0x1000;

/// Iterator over the `(id, data)` elements of a validated extension block.
#[derive(Clone, Debug)]
pub struct Extensions<'a> {
    form: Form,
    block: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    OneByte,
    TwoByte,
    Unknown,
}

impl<'a> Extensions<'a> {
    pub(crate) fn new(profile: u16, block: &'a [u8]) -> Self {
        Self {
            form: form(profile),
            block,
        }
    }

    /// Checks that every element fits in the block, so iteration never needs to fail.
    pub(crate) fn validate(profile: u16, block: &[u8]) -> Result<(), ParseError> {
        let mut it = Extensions::new(profile, block);
        while !it.block.is_empty() {
            if it.step().is_err() {
                return Err(ParseError::Extension);
            }
        }
        Ok(())
    }

    /// One element; `Ok(None)` for padding or a terminator, `Err` on overrun.
    #[allow(clippy::type_complexity)]
    fn step(&mut self) -> Result<Option<(u8, &'a [u8])>, ()> {
        let b = self.block;
        let (id, len, header) = match self.form {
            Form::Unknown => {
                self.block = &[];
                return Ok(None);
            }
            Form::OneByte => {
                let id = b[0] >> 4;
                if id == 0 {
                    self.block = &b[1..];
                    return Ok(None);
                }
                if id == 15 {
                    // RFC 8285 §4.2: id 15 ends processing of the block.
                    self.block = &[];
                    return Ok(None);
                }
                (id, usize::from(b[0] & 0x0f) + 1, 1)
            }
            Form::TwoByte => {
                if b[0] == 0 {
                    self.block = &b[1..];
                    return Ok(None);
                }
                let Some(&len) = b.get(1) else { return Err(()) };
                (b[0], usize::from(len), 2)
            }
        };
        let Some(data) = b.get(header..header + len) else {
            return Err(());
        };
        self.block = &b[header + len..];
        Ok(Some((id, data)))
    }
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.block.is_empty() {
            // Validated at parse time; an overrun here would be a broken invariant, but stopping
            // is the safe answer for data from the network.
            match self.step() {
                Ok(Some(element)) => return Some(element),
                Ok(None) => continue,
                Err(()) => return None,
            }
        }
        None
    }
}

fn form(profile: u16) -> Form {
    if profile == ONE_BYTE_PROFILE {
        Form::OneByte
    } else if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE {
        Form::TwoByte
    } else {
        Form::Unknown
    }
}

/// The header extensions the core understands, by meaning rather than by negotiated id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExtensionKind {
    /// `urn:ietf:params:rtp-hdrext:sdes:mid` — rewritten to the subscription's mid.
    Mid,
    /// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id` — stripped (hop-by-hop).
    Rid,
    /// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id` — stripped.
    RepairedRid,
    /// `http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time` — copied.
    AbsSendTime,
    /// transport-wide-cc-extensions-01 — consumed on ingress; regenerated per subscriber.
    TransportCc,
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level` — copied.
    AudioLevel,
    /// `urn:3gpp:video-orientation` — copied.
    VideoOrientation,
    /// `http://www.webrtc.org/experiments/rtp-hdrext/playout-delay` — copied.
    PlayoutDelay,
}

const KINDS: usize = 8;

impl ExtensionKind {
    /// Maps an `a=extmap` URI to a kind; `None` for extensions the core does not forward.
    pub fn from_uri(uri: &str) -> Option<Self> {
        Some(match uri {
            "urn:ietf:params:rtp-hdrext:sdes:mid" => Self::Mid,
            "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" => Self::Rid,
            "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id" => Self::RepairedRid,
            "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time" => Self::AbsSendTime,
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01" => {
                Self::TransportCc
            }
            "urn:ietf:params:rtp-hdrext:ssrc-audio-level" => Self::AudioLevel,
            "urn:3gpp:video-orientation" => Self::VideoOrientation,
            "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay" => Self::PlayoutDelay,
            _ => return None,
        })
    }

    fn slot(self) -> usize {
        self as usize
    }

    const ALL: [Self; KINDS] = [
        Self::Mid,
        Self::Rid,
        Self::RepairedRid,
        Self::AbsSendTime,
        Self::TransportCc,
        Self::AudioLevel,
        Self::VideoOrientation,
        Self::PlayoutDelay,
    ];

    /// Whether the element is end-to-end data the subscriber should see unchanged.
    pub fn is_copied(self) -> bool {
        matches!(
            self,
            Self::AbsSendTime | Self::AudioLevel | Self::VideoOrientation | Self::PlayoutDelay
        )
    }
}

/// Negotiated extension ids of one transport, both ways: id → kind for parsing, kind → id for
/// writing. Only one-byte ids 1..=14 are writable. Eight bytes: resolving an id scans them,
/// which is cheaper than a 256-entry table is to copy around.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionMap {
    by_kind: [u8; KINDS],
}

impl Default for ExtensionMap {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl ExtensionMap {
    /// A map with the given `(id, kind)` pairs; ids 0 and 15 (reserved in one-byte form) are
    /// ignored, and so is a pair whose id or kind an earlier pair already took: one id names one
    /// meaning (RFC 8285 §6), so a peer that offers an id twice cannot make us write one kind's
    /// bytes under another's id.
    pub fn new(pairs: &[(u8, ExtensionKind)]) -> Self {
        let mut map = Self {
            by_kind: [0; KINDS],
        };
        for &(id, kind) in pairs {
            if id == 0 || id == 15 || map.by_kind.contains(&id) || map.by_kind[kind.slot()] != 0 {
                continue;
            }
            map.by_kind[kind.slot()] = id;
        }
        map
    }

    /// The kind negotiated under `id`.
    pub fn kind(&self, id: u8) -> Option<ExtensionKind> {
        if id == 0 {
            return None;
        }
        let slot = self.by_kind.iter().position(|&k| k == id)?;
        Some(ExtensionKind::ALL[slot])
    }

    /// The id negotiated for `kind`, if it is writable in one-byte form.
    pub fn id(&self, kind: ExtensionKind) -> Option<u8> {
        let id = self.by_kind[kind.slot()];
        (1..=14).contains(&id).then_some(id)
    }
}

/// Capacity of the inline extension block of a forwarded packet: room for mid (16 + 1),
/// transport-cc (3), abs-send-time (4), audio-level (2), orientation (2), playout-delay (4).
const OUT_CAPACITY: usize = 40;

/// Extension elements to write in a forwarded packet, stored inline in one-byte form (RFC 8285
/// §4.2, without the 0xBEDE word and padding) so building them never allocates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OutExtensions {
    len: u8,
    buf: [u8; OUT_CAPACITY],
}

impl OutExtensions {
    /// No extensions.
    pub const EMPTY: Self = Self {
        len: 0,
        buf: [0; OUT_CAPACITY],
    };

    /// Appends one element; silently skipped when it cannot be written in one-byte form or the
    /// block is full (an extension is an optimisation, never a reason to drop media).
    pub fn push(&mut self, id: u8, data: &[u8]) {
        let len = usize::from(self.len);
        if !(1..=14).contains(&id)
            || data.is_empty()
            || data.len() > 16
            || len + 1 + data.len() > OUT_CAPACITY
        {
            return;
        }
        self.buf[len] = (id << 4) | (data.len() as u8 - 1);
        self.buf[len + 1..len + 1 + data.len()].copy_from_slice(data);
        self.len += 1 + data.len() as u8;
    }

    /// The elements, encoded.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// Whether no element was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The decoded `(id, data)` elements.
    pub fn iter(&self) -> Extensions<'_> {
        Extensions::new(ONE_BYTE_PROFILE, self.as_bytes())
    }
}

impl Default for OutExtensions {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl std::fmt::Debug for OutExtensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_form_skips_padding_and_stops_at_id_15() {
        let block = [0x10, 0xaa, 0x00, 0x00, 0x21, 1, 2, 0xf0, 0x30, 9];
        let got: Vec<_> = Extensions::new(ONE_BYTE_PROFILE, &block).collect();
        assert_eq!(got, vec![(1, &[0xaa][..]), (2, &[1, 2][..])]);
    }

    #[test]
    fn an_id_names_one_kind_and_a_kind_has_one_id() {
        let map = ExtensionMap::new(&[
            (1, ExtensionKind::TransportCc),
            (1, ExtensionKind::AbsSendTime),
            (2, ExtensionKind::Mid),
            (3, ExtensionKind::Mid),
        ]);
        assert_eq!(map.kind(1), Some(ExtensionKind::TransportCc));
        assert_eq!(map.id(ExtensionKind::AbsSendTime), None);
        assert_eq!(map.id(ExtensionKind::Mid), Some(2));
        assert_eq!(map.kind(3), None);
    }

    #[test]
    fn two_byte_form_allows_long_and_empty_elements() {
        let mut block = vec![20, 0, 0, 3, 17];
        block.extend_from_slice(&[7; 17]);
        let got: Vec<_> = Extensions::new(0x1000, &block).collect();
        assert_eq!(got, vec![(20, &[][..]), (3, &[7; 17][..])]);
    }

    #[test]
    fn overrun_is_rejected_at_validation() {
        assert!(Extensions::validate(ONE_BYTE_PROFILE, &[0x13, 1, 2]).is_err());
        assert!(Extensions::validate(0x1000, &[5]).is_err());
        assert!(
            Extensions::validate(0x1234, &[5]).is_ok(),
            "unknown profiles are opaque"
        );
    }

    #[test]
    fn out_extensions_refuse_unwritable_elements() {
        let mut ext = OutExtensions::EMPTY;
        ext.push(15, &[1]);
        ext.push(3, &[]);
        ext.push(3, &[0; 17]);
        ext.push(4, &[1, 2]);
        assert_eq!(ext.iter().collect::<Vec<_>>(), vec![(4, &[1, 2][..])]);
        for _ in 0..20 {
            ext.push(5, &[9; 4]);
        }
        assert!(ext.as_bytes().len() <= OUT_CAPACITY);
    }

    #[test]
    fn map_resolves_both_ways() {
        let map = ExtensionMap::new(&[
            (3, ExtensionKind::TransportCc),
            (15, ExtensionKind::Mid),
            (20, ExtensionKind::AudioLevel),
        ]);
        assert_eq!(map.kind(3), Some(ExtensionKind::TransportCc));
        assert_eq!(map.id(ExtensionKind::TransportCc), Some(3));
        assert_eq!(map.id(ExtensionKind::Mid), None);
        assert_eq!(map.kind(20), Some(ExtensionKind::AudioLevel));
        assert_eq!(
            map.id(ExtensionKind::AudioLevel),
            None,
            "two-byte ids are not writable"
        );
    }
}
