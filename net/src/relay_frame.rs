//! The datagrams of a relay link between two nodes serving one channel (cascading, DESIGN
//! §7.2): authenticated encryption with AES-128-GCM under a key per direction that the control
//! plane hands both nodes, a 64-bit counter as nonce and a sliding replay window.
//!
//! ```text
//! 0        1                 9                 17     18
//! | 0xF5   | link id (u64 BE) | counter (u64 BE) | kind | payload … | GCM tag (16) |
//!                                               \________ sealed ________/
//! ```
//!
//! The first byte lies outside every range RFC 7983 assigns (STUN, DTLS, RTP/RTCP, TURN), so a
//! worker socket tells relay datagrams from its clients' by it. The header is authenticated
//! (GCM additional data) and names the link, so the receiver finds the right key with one map
//! lookup and never tries keys. Each direction of a link has its own key, so the counter alone
//! keeps nonces unique; a counter is never sent twice (retransmissions are new datagrams). The
//! nonce is `direction (1) | 0 0 0 | counter (8)`, so even one key for both directions (refused
//! by the node anyway) would not repeat a nonce or let a reflected datagram open.
//!
//! Why not SRTP between nodes: SRTP keeps per-SSRC state and can only carry RTP/RTCP, while a
//! relay also carries its track announcements; and why not QUIC datagrams: they would leave the
//! worker thread (the control connections run on the async runtime) and add a queue hop each
//! way. `BENCHMARKS.md` has the per-packet cost beside SRTP's (`benches/benches/media.rs`). The
//! media node's worker (`mooyaho-media`, `worker/relay.rs`) drives it.

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

/// First byte of every relay datagram.
pub const MAGIC: u8 = 0xF5;
/// Bytes before the sealed part: magic, link id, counter.
pub const HEADER_LEN: usize = 17;
/// Bytes of the GCM tag after the sealed part.
pub const TAG_LEN: usize = 16;
/// Where a frame's payload starts (after the header and the kind byte).
pub const PAYLOAD_OFFSET: usize = HEADER_LEN + 1;
/// Bytes a relay frame adds to its payload.
pub const OVERHEAD: usize = PAYLOAD_OFFSET + TAG_LEN;
/// Length of a relay key.
pub const KEY_LEN: usize = 16;
/// How far behind the newest counter a datagram may arrive (reordering) and still be accepted
/// once.
pub const REPLAY_WINDOW: u64 = 128;

/// Whether `datagram` is a relay datagram (by its first byte).
pub fn is_relay(datagram: &[u8]) -> bool {
    datagram.first() == Some(&MAGIC)
}

/// The link a relay datagram names, if it is long enough to be one.
pub fn link_of(datagram: &[u8]) -> Option<u64> {
    if datagram.len() < OVERHEAD || !is_relay(datagram) {
        return None;
    }
    Some(u64::from_be_bytes(datagram[1..9].try_into().ok()?))
}

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A plain RTP packet.
    Rtp,
    /// A plain RTCP (compound) packet.
    Rtcp,
    /// A track announcement (JSON, see the worker's relay module).
    Announce,
    /// The receiving side is alive (empty payload): a sender that hears neither this nor
    /// feedback for a while stops sending.
    Keepalive,
}

impl FrameKind {
    fn byte(self) -> u8 {
        match self {
            Self::Rtp => 0,
            Self::Rtcp => 1,
            Self::Announce => 2,
            Self::Keepalive => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Rtp),
            1 => Some(Self::Rtcp),
            2 => Some(Self::Announce),
            3 => Some(Self::Keepalive),
            _ => None,
        }
    }
}

/// Why a relay datagram was refused (each is counted by the worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayFrameError {
    /// Too short, not a relay datagram, or an unknown kind after authentication.
    #[error("malformed relay datagram")]
    Malformed,
    /// The tag does not verify under the link's key (forged, corrupted, or another key).
    #[error("relay datagram failed authentication")]
    Auth,
    /// Its counter was already accepted, or is older than the replay window.
    #[error("relay datagram replayed")]
    Replay,
    /// The buffer cannot hold the frame.
    #[error("relay frame does not fit the buffer")]
    BufferTooSmall,
    /// The link direction's counters are used up (2^64 − 1 datagrams): never sent again.
    #[error("relay link counters exhausted")]
    Exhausted,
}

/// One direction's key, as the control plane carries it (32 hex digits).
#[derive(Clone, PartialEq, Eq)]
pub struct RelayKey([u8; KEY_LEN]);

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(..)") // never logged
    }
}

impl RelayKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The key's bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses 32 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != KEY_LEN * 2 || !hex.is_ascii() {
            return None;
        }
        let mut key = [0u8; KEY_LEN];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(Self(key))
    }

    /// The key as 32 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &self.0).expect("16-byte AES-128 key"))
    }
}

/// Which way a datagram travels on its link. It is part of the nonce (not sent), so the two
/// directions never share a nonce and a datagram reflected back to its sender never opens there,
/// even under a controller that (wrongly) gave both directions one key (outside review F2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkDirection {
    /// From the node with the publisher's tracks to the node it feeds: media, announcements.
    Forward,
    /// Back to the sending node: feedback (RTCP).
    Back,
}

fn nonce(direction: LinkDirection, counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[0] = match direction {
        LinkDirection::Forward => 0,
        LinkDirection::Back => 1,
    };
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// The sending side of one direction of a link.
pub struct Sealer {
    key: LessSafeKey,
    link: u64,
    direction: LinkDirection,
    next: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("link", &self.link)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Seals under `key` what travels `direction` on link `link`.
    pub fn new(link: u64, key: &RelayKey, direction: LinkDirection) -> Self {
        Self {
            key: key.aead(),
            link,
            direction,
            next: 0,
        }
    }

    /// Seals the frame whose payload the caller wrote at `buf[PAYLOAD_OFFSET..][..len]`: writes
    /// the header and kind, encrypts in place and appends the tag. Returns the datagram's
    /// length (`len + OVERHEAD`).
    pub fn seal(
        &mut self,
        buf: &mut [u8],
        kind: FrameKind,
        len: usize,
    ) -> Result<usize, RelayFrameError> {
        let total = len + OVERHEAD;
        if buf.len() < total {
            return Err(RelayFrameError::BufferTooSmall);
        }
        // The last counter is never sent: the receiver keeps `counter + 1` (2^64 datagrams of
        // one link direction are out of reach; an error, never a wrap to a reused nonce).
        let counter = self.next;
        if counter == u64::MAX {
            return Err(RelayFrameError::Exhausted);
        }
        self.next += 1;
        buf[0] = MAGIC;
        buf[1..9].copy_from_slice(&self.link.to_be_bytes());
        buf[9..HEADER_LEN].copy_from_slice(&counter.to_be_bytes());
        buf[HEADER_LEN] = kind.byte();
        let (header, rest) = buf.split_at_mut(HEADER_LEN);
        let sealed = &mut rest[..1 + len];
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(self.direction, counter),
                Aad::from(&header[..]),
                sealed,
            )
            .map_err(|_| RelayFrameError::BufferTooSmall)?;
        buf[PAYLOAD_OFFSET + len..total].copy_from_slice(tag.as_ref());
        Ok(total)
    }
}

/// The receiving side of one direction of a link: its key and replay window.
pub struct Opener {
    key: LessSafeKey,
    link: u64,
    direction: LinkDirection,
    /// Highest counter accepted, plus one (0: none yet).
    top: u64,
    /// Bit `i` set: counter `top - 1 - i` was accepted.
    seen: u128,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("link", &self.link)
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// Opens frames of link `link` that travel `direction`, sealed under `key`.
    pub fn new(link: u64, key: &RelayKey, direction: LinkDirection) -> Self {
        Self {
            key: key.aead(),
            link,
            direction,
            top: 0,
            seen: 0,
        }
    }

    /// Authenticates and decrypts `datagram` in place; returns its kind and payload. A datagram
    /// that fails is left unusable and changes nothing (the replay window moves only for
    /// authentic, fresh ones).
    pub fn open<'a>(
        &mut self,
        datagram: &'a mut [u8],
    ) -> Result<(FrameKind, &'a [u8]), RelayFrameError> {
        if link_of(datagram) != Some(self.link) {
            return Err(RelayFrameError::Malformed);
        }
        let counter = u64::from_be_bytes(
            datagram[9..HEADER_LEN]
                .try_into()
                .map_err(|_| RelayFrameError::Malformed)?,
        );
        // Authenticated before the replay check, so a forgery is counted as one whatever
        // counter it claims (the check costs an attacker's datagram nothing it would not cost
        // with a fresh counter).
        let (header, sealed) = datagram.split_at_mut(HEADER_LEN);
        let plain = self
            .key
            .open_in_place(
                nonce(self.direction, counter),
                Aad::from(&header[..]),
                sealed,
            )
            .map_err(|_| RelayFrameError::Auth)?;
        if !self.fresh(counter) {
            return Err(RelayFrameError::Replay);
        }
        self.accept(counter);
        let (&kind, payload) = plain.split_first().ok_or(RelayFrameError::Malformed)?;
        let kind = FrameKind::from_byte(kind).ok_or(RelayFrameError::Malformed)?;
        Ok((kind, payload))
    }

    /// Whether `counter` is new and not older than the window. The last counter is never
    /// sealed ([`Sealer::seal`]); one claiming it (only a peer holding the key can make it
    /// authenticate) would overflow `top`, so it is refused like a replay.
    fn fresh(&self, counter: u64) -> bool {
        if counter == u64::MAX {
            return false;
        }
        if counter >= self.top {
            return true;
        }
        let behind = self.top - 1 - counter;
        behind < REPLAY_WINDOW && self.seen & (1 << behind) == 0
    }

    fn accept(&mut self, counter: u64) {
        if counter >= self.top {
            let shift = counter + 1 - self.top;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = counter + 1;
        } else {
            self.seen |= 1 << (self.top - 1 - counter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(sealer: &mut Sealer, kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; payload.len() + OVERHEAD];
        buf[PAYLOAD_OFFSET..PAYLOAD_OFFSET + payload.len()].copy_from_slice(payload);
        let len = sealer.seal(&mut buf, kind, payload.len()).unwrap();
        buf.truncate(len);
        buf
    }

    fn pair(link: u64) -> (Sealer, Opener) {
        let key = RelayKey::generate();
        (
            Sealer::new(link, &key, LinkDirection::Forward),
            Opener::new(link, &key, LinkDirection::Forward),
        )
    }

    #[test]
    fn a_sealed_frame_opens_to_its_kind_and_payload_and_hides_it() {
        let (mut sealer, mut opener) = pair(7);
        let mut datagram = frame(&mut sealer, FrameKind::Rtp, b"\x80\x60hello media");
        assert!(is_relay(&datagram));
        assert_eq!(link_of(&datagram), Some(7));
        assert!(!datagram.windows(5).any(|w| w == b"hello"));
        let (kind, payload) = opener.open(&mut datagram).unwrap();
        assert_eq!(kind, FrameKind::Rtp);
        assert_eq!(payload, b"\x80\x60hello media");
    }

    #[test]
    fn forged_altered_or_foreign_frames_fail_authentication() {
        let (mut sealer, mut opener) = pair(1);
        let good = frame(&mut sealer, FrameKind::Rtcp, b"feedback");
        // Every single flipped bit after the link id is caught.
        for i in 9..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                opener.open(&mut bad),
                Err(RelayFrameError::Auth),
                "byte {i}"
            );
        }
        // Another key (an attacker's, or another link's) for the same link id.
        let mut stranger = Sealer::new(1, &RelayKey::generate(), LinkDirection::Forward);
        let mut forged = frame(&mut stranger, FrameKind::Rtp, b"forged");
        assert_eq!(opener.open(&mut forged), Err(RelayFrameError::Auth));
        // A frame naming another link, and garbage.
        let mut other = frame(
            &mut Sealer::new(2, &RelayKey::generate(), LinkDirection::Forward),
            FrameKind::Rtp,
            b"x",
        );
        assert_eq!(opener.open(&mut other), Err(RelayFrameError::Malformed));
        assert_eq!(
            opener.open(&mut [MAGIC; 10]),
            Err(RelayFrameError::Malformed)
        );
        // Failures did not move the window: the honest frame still opens once.
        let mut good2 = good.clone();
        assert!(opener.open(&mut good2).is_ok());
    }

    #[test]
    fn replays_are_refused_and_reordering_within_the_window_is_accepted_once() {
        let (mut sealer, mut opener) = pair(3);
        let frames: Vec<Vec<u8>> = (0..300)
            .map(|i: u32| frame(&mut sealer, FrameKind::Rtp, &i.to_be_bytes()))
            .collect();
        // 0..200 in order except 100 (never arrives) and 150 (arrives late).
        for (i, f) in frames.iter().enumerate().take(200) {
            if i != 100 && i != 150 {
                assert!(opener.open(&mut f.clone()).is_ok(), "{i}");
            }
        }
        assert!(opener.open(&mut frames[150].clone()).is_ok());
        for replayed in [150, 199] {
            assert_eq!(
                opener.open(&mut frames[replayed].clone()),
                Err(RelayFrameError::Replay)
            );
        }
        // A jump ahead: 100, never seen but now older than the window, is refused.
        assert!(opener.open(&mut frames[299].clone()).is_ok());
        assert_eq!(
            opener.open(&mut frames[100].clone()),
            Err(RelayFrameError::Replay)
        );
        assert!(opener.open(&mut frames[298].clone()).is_ok());
    }

    /// Outside review F2: with one key for both directions (a controller bug the node also
    /// refuses), a datagram reflected back to its sender still fails authentication there.
    #[test]
    fn a_datagram_reflected_to_its_sender_does_not_open_even_under_one_key() {
        let key = RelayKey::generate();
        let mut forward = Sealer::new(5, &key, LinkDirection::Forward);
        let mut feedback = Opener::new(5, &key, LinkDirection::Back);
        let mut receiving = Opener::new(5, &key, LinkDirection::Forward);
        let datagram = frame(&mut forward, FrameKind::Rtp, b"media");
        assert_eq!(
            feedback.open(&mut datagram.clone()),
            Err(RelayFrameError::Auth)
        );
        assert!(receiving.open(&mut datagram.clone()).is_ok());
    }

    #[test]
    fn keys_round_trip_as_hex_and_bad_hex_is_refused() {
        let key = RelayKey::generate();
        assert_eq!(RelayKey::from_hex(&key.to_hex()), Some(key.clone()));
        for bad in ["", "00", &"g".repeat(32), &"0".repeat(31), &"é".repeat(16)] {
            assert_eq!(RelayKey::from_hex(bad), None, "{bad}");
        }
        assert_eq!(format!("{key:?}"), "RelayKey(..)");
    }

    #[test]
    fn a_too_small_buffer_is_an_error_not_a_panic() {
        let (mut sealer, _) = pair(1);
        let mut buf = [0u8; OVERHEAD + 3];
        assert_eq!(
            sealer.seal(&mut buf, FrameKind::Rtp, 4),
            Err(RelayFrameError::BufferTooSmall)
        );
        assert_eq!(sealer.seal(&mut buf, FrameKind::Rtp, 3), Ok(OVERHEAD + 3));
    }

    /// Outside review: an authenticated peer sealing counter `u64::MAX` overflowed the replay
    /// window's `top` (a debug-build panic); it is refused as a replay, and a sealer never
    /// sends it.
    #[test]
    fn the_last_counter_is_refused_and_never_sealed() {
        let key = RelayKey::generate();
        let mut sealer = Sealer::new(7, &key, LinkDirection::Forward);
        let mut opener = Opener::new(7, &key, LinkDirection::Forward);
        sealer.next = u64::MAX;
        let mut buf = [0u8; OVERHEAD + 4];
        assert_eq!(
            sealer.seal(&mut buf, FrameKind::Rtp, 4),
            Err(RelayFrameError::Exhausted)
        );
        // What a peer with the key could still make: the last counter, authentic.
        sealer.next = u64::MAX - 1;
        let mut before = frame(&mut sealer, FrameKind::Rtp, b"ok");
        assert!(opener.open(&mut before).is_ok());
        let mut last = [0u8; OVERHEAD + 4];
        last[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(b"last");
        // Seal it by hand under the counter the sealer refuses.
        last[0] = MAGIC;
        last[1..9].copy_from_slice(&7u64.to_be_bytes());
        last[9..HEADER_LEN].copy_from_slice(&u64::MAX.to_be_bytes());
        last[HEADER_LEN] = FrameKind::Rtp.byte();
        let (header, rest) = last.split_at_mut(HEADER_LEN);
        let (plain, tag_slot) = rest.split_at_mut(1 + 4);
        let tag = key
            .aead()
            .seal_in_place_separate_tag(
                nonce(LinkDirection::Forward, u64::MAX),
                Aad::from(&header[..]),
                plain,
            )
            .unwrap();
        tag_slot.copy_from_slice(tag.as_ref());
        assert_eq!(opener.open(&mut last), Err(RelayFrameError::Replay));
        // The window did not move: an older counter not seen yet still opens, once.
        let mut honest = Sealer::new(7, &key, LinkDirection::Forward);
        honest.next = u64::MAX - 2;
        let mut older = frame(&mut honest, FrameKind::Rtp, b"x");
        assert!(opener.open(&mut older.clone()).is_ok());
        assert_eq!(opener.open(&mut older), Err(RelayFrameError::Replay));
    }
}
