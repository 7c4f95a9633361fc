//! In-place SRTP/SRTCP (RFC 3711, RFC 7714) for the two profiles Mooyaho negotiates:
//! `AES_CM_128_HMAC_SHA1_80` and `AEAD_AES_128_GCM`.
//!
//! Why not `rtc-srtp` on the hot path: its `encrypt_rtp`/`decrypt_rtp` return a fresh `BytesMut`
//! per packet (allocate + copy), and DESIGN §4 allows no heap allocation per packet. Here every
//! operation works on the caller's buffer: protect appends the tag after the plaintext, unprotect
//! verifies and decrypts where the packet lies. The keyed cipher objects are built once per
//! context. `rtc-srtp` stays the reference: the tests in `srtp_fast/tests.rs` check byte-identical
//! output in both directions, and `benches/benches/media.rs` measures both (`BENCHMARKS.md`).
//! One file for both profiles: they share all RTP/RTCP framing, index and replay logic and
//! differ only in the two `Cipher` arms.
//!
//! Crypto: ring's AES-128-GCM (AES-NI + CLMUL) for GCM; RustCrypto `aes` + `ctr` for AES-CM and
//! RustCrypto `hmac` + `sha1` for the HMAC-SHA1 tag. ring has no public AES-CTR, and its SHA-1 is
//! a portable implementation that webrtc-rs measured 3.3× slower than RustCrypto's (the reason
//! `rtc-crypto`'s ring provider also uses RustCrypto for HMAC-SHA1).

use rustc_hash::FxHashMap;

use aes::Aes128Enc;
use aes::cipher::{BlockEncrypt, InnerIvInit, KeyInit, StreamCipher};
use ctr::{Ctr128BE, CtrCore};
use hmac::{Hmac, Mac};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use sha1::Sha1;

/// An SRTP profile this module implements (RFC 5764 §4.1.2, RFC 7714 §14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80`: AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_80,
    /// `SRTP_AEAD_AES_128_GCM`: AES-128-GCM, 128-bit tag.
    AeadAes128Gcm,
}

impl SrtpProfile {
    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes (112 bits for AES-CM, RFC 3711 §8.2; 96 bits for GCM,
    /// RFC 7714 §12).
    pub fn salt_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 => 14,
            Self::AeadAes128Gcm => 12,
        }
    }

    /// Bytes protect adds to an RTP packet (the auth tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 => CM_TAG_LEN,
            Self::AeadAes128Gcm => GCM_TAG_LEN,
        }
    }

    /// Bytes protect adds to an RTCP packet (tag and the E-flag/index word).
    pub fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + SRTCP_INDEX_LEN
    }
}

/// An SRTP/SRTCP failure. Every variant is bad network data or a caller's too-small buffer;
/// none is a broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// The packet index was already received (RFC 3711 §3.3.2).
    #[error("srtp: replayed packet (ssrc {ssrc:#x}, index {index})")]
    Replay {
        /// Sender SSRC.
        ssrc: u32,
        /// Extended SRTP index or SRTCP index.
        index: u64,
    },
    /// The packet index is older than the replay window (RFC 3711 §3.3.2): it cannot be told
    /// apart from a replay.
    #[error("srtp: packet older than the replay window (ssrc {ssrc:#x}, index {index})")]
    TooOld {
        /// Sender SSRC.
        ssrc: u32,
        /// Extended SRTP index or SRTCP index.
        index: u64,
    },
    /// The authentication tag did not verify.
    #[error("srtp: authentication failed")]
    Authentication,
    /// Not an RTP/RTCP packet, or too short for its header and tag.
    #[error("srtp: malformed packet")]
    Malformed,
    /// The caller's buffer has no room for the tag.
    #[error("srtp: buffer too small for the auth tag")]
    BufferTooSmall,
    /// 2^48 SRTP or 2^31 SRTCP packets sent with one key: RFC 3711 §9.2 requires a rekey.
    #[error("srtp: packet index exhausted, the key must be renegotiated")]
    IndexExhausted,
    /// Key material of the wrong length.
    #[error("srtp: bad key material: {0}")]
    Key(&'static str),
    /// Protect was asked to reuse a packet index with bytes that differ from the first packet
    /// protected under it (or the index is too old to tell): with AES-GCM that would reuse the
    /// nonce (keystream and authentication key leak), with AES-CM the keystream. Refused; the
    /// buffer is zeroed.
    #[error("srtp: packet index {index} of ssrc {ssrc:#x} already protected with other bytes")]
    IndexReused {
        /// Sender SSRC.
        ssrc: u32,
        /// Extended SRTP index.
        index: u64,
    },
    /// A packet of a new SSRC arrived while the context already tracks its maximum number of
    /// remote SSRCs: dropped before any crypto or state is created.
    #[error("srtp: too many SSRCs in one context (ssrc {ssrc:#x} refused)")]
    TooManySsrcs {
        /// The refused SSRC.
        ssrc: u32,
    },
}

impl SrtpError {
    /// The packet was refused by replay protection (counted apart from authentication
    /// failures).
    pub fn is_replay(&self) -> bool {
        matches!(self, Self::Replay { .. } | Self::TooOld { .. })
    }
}

/// One direction of SRTP/SRTCP: either only protects or only unprotects (RFC 3711 §3.2: a
/// cryptographic context per direction). Unprotect keeps per-SSRC replay windows.
pub struct SrtpContext {
    profile: SrtpProfile,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    /// Per-SSRC rollover state. Inbound entries are created only once a packet of that SSRC
    /// authenticated, so only the holder of the session keys — the peer itself — chooses keys:
    /// colliding SSRCs could only slow its own context. Hence FxHash, not SipHash, which cost
    /// 4 % of a fan-out profile (one lookup per protected packet).
    rtp_streams: FxHashMap<u32, RtpStream>,
    /// Per-SSRC SRTCP index state, same rules as `rtp_streams`.
    rtcp_streams: FxHashMap<u32, RtcpStream>,
    /// Protects refused with [`SrtpError::IndexReused`].
    index_reuse_refused: u64,
}

/// Remote SSRCs one context keeps state for (each of SRTP and SRTCP). A publisher needs two per
/// simulcast layer (media + RTX) of each track, a subscriber one or two for its RTCP; past this
/// a peer is making up SSRCs, and each would cost a replay window.
pub const MAX_REMOTE_SSRCS: usize = 64;

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("rtp_streams", &self.rtp_streams.len())
            .field("rtcp_streams", &self.rtcp_streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the session keys from a master key and salt (RFC 3711 §4.3, key derivation rate
    /// 0 as DTLS-SRTP mandates, RFC 5764 §4.1.2).
    pub fn new(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, SrtpError> {
        if master_key.len() != profile.key_len() {
            return Err(SrtpError::Key("master key length"));
        }
        if master_salt.len() != profile.salt_len() {
            return Err(SrtpError::Key("master salt length"));
        }
        let prf = Aes128Enc::new_from_slice(master_key).map_err(|_| SrtpError::Key("aes key"))?;
        Ok(Self {
            profile,
            rtp: SessionKeys::derive(profile, &prf, master_salt, LABEL_SRTP_ENCRYPTION),
            rtcp: SessionKeys::derive(profile, &prf, master_salt, LABEL_SRTCP_ENCRYPTION),
            rtp_streams: FxHashMap::default(),
            rtcp_streams: FxHashMap::default(),
            index_reuse_refused: 0,
        })
    }

    /// The profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Protects the RTP packet in `buf[..len]` in place and appends the tag; returns the
    /// protected length (`len + profile.rtp_overhead()`). `buf` must have that room.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::Malformed)?;
        let header_len = rtp_header_len(packet)?;
        let (ssrc, seq) = rtp_ssrc_seq(packet);
        let out_len = len + self.profile.rtp_overhead();
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        // RFC 3711 §3.3.1: the sender starts with ROC 0 and the first sequence number.
        let stream = self.rtp_streams.entry(ssrc).or_insert_with(|| RtpStream {
            highest: u64::from(seq),
            replay: ReplayWindow::default(),
            sent: SentLog::Empty,
        });
        let index = estimate_index(stream.highest, seq);
        if index >> 48 != 0 {
            return Err(SrtpError::IndexExhausted); // RFC 3711 §9.2
        }
        let repeated = match stream.sent.lookup(stream.highest, index) {
            Sent::Fresh => None,
            Sent::Repeated(tag) => Some(tag),
            Sent::Unknown => {
                buf[..len].fill(0);
                self.index_reuse_refused += 1;
                return Err(SrtpError::IndexReused { ssrc, index });
            }
        };
        let roc = (index >> 16) as u32;
        match &self.rtp.cipher {
            Cipher::Cm { aes, mac } => {
                let iv = cm_iv(&self.rtp.salt, ssrc, index);
                aes_ctr(aes, iv, &mut buf[header_len..len]);
                // RFC 3711 §4.2: the tag covers the authenticated portion || ROC.
                let mut mac = mac.clone();
                mac.update(&buf[..len]);
                mac.update(&roc.to_be_bytes());
                buf[len..out_len].copy_from_slice(&mac.finalize().into_bytes()[..CM_TAG_LEN]);
            }
            Cipher::Gcm(key) => {
                let nonce = gcm_rtp_nonce(&self.rtp.salt, ssrc, roc, seq);
                let (header, payload) = buf[..len].split_at_mut(header_len);
                let tag = key
                    .seal_in_place_separate_tag(nonce, Aad::from(&*header), payload)
                    .map_err(|_| SrtpError::BufferTooSmall)?;
                buf[len..out_len].copy_from_slice(tag.as_ref());
            }
        }
        // The tag authenticates every byte of the packet under this index: equal tags prove a
        // byte-identical resend (which reveals nothing new); a different one must never leave.
        let tag = SentLog::tag_prefix(&buf[len..out_len]);
        if let Some(first) = repeated {
            if first != tag {
                buf[..out_len].fill(0);
                self.index_reuse_refused += 1;
                return Err(SrtpError::IndexReused { ssrc, index });
            }
        } else {
            stream.sent.record(index, tag);
        }
        stream.highest = stream.highest.max(index);
        Ok(out_len)
    }

    /// Remote SSRCs this context keeps SRTP and SRTCP state for (each at most
    /// [`MAX_REMOTE_SSRCS`]).
    pub fn ssrcs(&self) -> (usize, usize) {
        (self.rtp_streams.len(), self.rtcp_streams.len())
    }

    /// Protects refused because the index was already used with other bytes.
    pub fn index_reuse_refused(&self) -> u64 {
        self.index_reuse_refused
    }

    /// Authenticates and decrypts the SRTP packet `buf` in place; returns the plaintext length
    /// (the tag is cut off). Replays and packets older than the window are refused before any
    /// crypto (RFC 3711 §3.3, step 3).
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_overhead();
        let len = buf.len().checked_sub(tag_len).ok_or(SrtpError::Malformed)?;
        let header_len = rtp_header_len(&buf[..len])?;
        let (ssrc, seq) = rtp_ssrc_seq(buf);
        let stream = self.rtp_streams.get(&ssrc);
        if stream.is_none() && self.rtp_streams.len() >= MAX_REMOTE_SSRCS {
            return Err(SrtpError::TooManySsrcs { ssrc });
        }
        // RFC 3711 §3.3.1: an unknown SSRC starts at ROC 0.
        let index = stream.map_or_else(|| u64::from(seq), |s| estimate_index(s.highest, seq));
        if let Some(stream) = stream {
            stream.replay.check(ssrc, index)?;
        }
        let roc = (index >> 16) as u32;
        match &self.rtp.cipher {
            Cipher::Cm { aes, mac } => {
                let mut mac = mac.clone();
                mac.update(&buf[..len]);
                mac.update(&roc.to_be_bytes());
                mac.verify_truncated_left(&buf[len..])
                    .map_err(|_| SrtpError::Authentication)?;
                let iv = cm_iv(&self.rtp.salt, ssrc, index);
                aes_ctr(aes, iv, &mut buf[header_len..len]);
            }
            Cipher::Gcm(key) => {
                let nonce = gcm_rtp_nonce(&self.rtp.salt, ssrc, roc, seq);
                let (header, payload) = buf.split_at_mut(header_len);
                key.open_in_place(nonce, Aad::from(&*header), payload)
                    .map_err(|_| SrtpError::Authentication)?;
            }
        }
        // Authenticated: only now may the packet move the rollover and replay state.
        let stream = self.rtp_streams.entry(ssrc).or_insert_with(|| RtpStream {
            highest: index,
            replay: ReplayWindow::default(),
            sent: SentLog::Empty,
        });
        stream.highest = stream.highest.max(index);
        stream.replay.accept(index);
        Ok(len)
    }

    /// Protects the RTCP packet (compound or not) in `buf[..len]` in place, appending the
    /// E-flag/SRTCP-index word and the tag in the profile's order (RFC 3711 §3.4; RFC 7714 §17:
    /// the GCM tag comes before the word). Returns the protected length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::Malformed)?;
        let ssrc = rtcp_ssrc(packet)?;
        let out_len = len + self.profile.rtcp_overhead();
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        let stream = self.rtcp_streams.entry(ssrc).or_default();
        // The first packet carries index 1 (as `rtc-srtp` and libsrtp do); 2^31 packets
        // exhaust the key (RFC 3711 §9.2) rather than wrapping into keystream reuse.
        let index = stream.sent + 1;
        if index > MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        stream.sent = index;
        let word = (index | SRTCP_E_FLAG).to_be_bytes();
        match &self.rtcp.cipher {
            Cipher::Cm { aes, mac } => {
                let iv = cm_iv(&self.rtcp.salt, ssrc, u64::from(index));
                aes_ctr(aes, iv, &mut buf[RTCP_HEADER_LEN..len]);
                buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&word);
                let mut mac = mac.clone();
                mac.update(&buf[..len + SRTCP_INDEX_LEN]);
                buf[len + SRTCP_INDEX_LEN..out_len]
                    .copy_from_slice(&mac.finalize().into_bytes()[..CM_TAG_LEN]);
            }
            Cipher::Gcm(key) => {
                let nonce = gcm_rtcp_nonce(&self.rtcp.salt, ssrc, index);
                let aad = gcm_rtcp_aad(&buf[..RTCP_HEADER_LEN], word);
                let tag = key
                    .seal_in_place_separate_tag(
                        nonce,
                        Aad::from(aad),
                        &mut buf[RTCP_HEADER_LEN..len],
                    )
                    .map_err(|_| SrtpError::BufferTooSmall)?;
                buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                buf[len + GCM_TAG_LEN..out_len].copy_from_slice(&word);
            }
        }
        Ok(out_len)
    }

    /// Authenticates and, when its E flag is set, decrypts the SRTCP packet `buf` in place;
    /// returns the RTCP length. The SRTCP index is checked against a replay window per SSRC
    /// before any crypto (RFC 3711 §3.4).
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtcp_overhead();
        let len = buf
            .len()
            .checked_sub(overhead)
            .filter(|&len| len >= RTCP_HEADER_LEN)
            .ok_or(SrtpError::Malformed)?;
        let ssrc = rtcp_ssrc(&buf[..len])?;
        let word_at = match self.profile {
            SrtpProfile::AesCm128HmacSha1_80 => len,
            SrtpProfile::AeadAes128Gcm => len + GCM_TAG_LEN,
        };
        let word: [u8; 4] = buf[word_at..word_at + SRTCP_INDEX_LEN]
            .try_into()
            .expect("four bytes");
        let encrypted = word[0] & 0x80 != 0;
        let index = u32::from_be_bytes(word) & MAX_SRTCP_INDEX;
        match self.rtcp_streams.get(&ssrc) {
            Some(stream) => stream.replay.check(ssrc, u64::from(index))?,
            None if self.rtcp_streams.len() >= MAX_REMOTE_SSRCS => {
                return Err(SrtpError::TooManySsrcs { ssrc });
            }
            None => {}
        }
        match &self.rtcp.cipher {
            Cipher::Cm { aes, mac } => {
                // RFC 3711 §3.4: authentication is mandatory whatever the E flag says
                // (`rtc-srtp` 0.21 returns E = 0 packets without checking the tag).
                let mut mac = mac.clone();
                mac.update(&buf[..len + SRTCP_INDEX_LEN]);
                mac.verify_truncated_left(&buf[len + SRTCP_INDEX_LEN..])
                    .map_err(|_| SrtpError::Authentication)?;
                if encrypted {
                    let iv = cm_iv(&self.rtcp.salt, ssrc, u64::from(index));
                    aes_ctr(aes, iv, &mut buf[RTCP_HEADER_LEN..len]);
                }
            }
            Cipher::Gcm(key) => {
                let nonce = gcm_rtcp_nonce(&self.rtcp.salt, ssrc, index);
                if encrypted {
                    let aad = gcm_rtcp_aad(&buf[..RTCP_HEADER_LEN], word);
                    key.open_in_place(nonce, Aad::from(aad), &mut buf[RTCP_HEADER_LEN..word_at])
                        .map_err(|_| SrtpError::Authentication)?;
                } else {
                    // RFC 7714 §9.2 (E = 0): everything but the tag is AAD, the plaintext is
                    // empty. The AAD must be contiguous, so the word moves over the tag.
                    let tag = Tag::try_from(&buf[len..word_at]).expect("16-byte tag");
                    buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&word);
                    key.open_in_place_separate_tag(
                        nonce,
                        Aad::from(&buf[..len + SRTCP_INDEX_LEN]),
                        tag,
                        &mut [],
                        0..,
                    )
                    .map_err(|_| SrtpError::Authentication)?;
                }
            }
        }
        self.rtcp_streams
            .entry(ssrc)
            .or_default()
            .replay
            .accept(u64::from(index));
        Ok(len)
    }
}

/// The keys of one of SRTP or SRTCP (RFC 3711 §4.3.1 derives a separate set for each).
struct SessionKeys {
    cipher: Cipher,
    /// Session salt, zero-padded to one AES block (14 bytes used by AES-CM, 12 by GCM).
    salt: [u8; 16],
}

/// A keyed cipher, built once per context: nothing is keyed per packet.
#[expect(
    clippy::large_enum_variant,
    reason = "two per context, built once and never moved per packet; a Box would add a \
              pointer chase to every packet"
)]
enum Cipher {
    Cm {
        aes: Aes128Enc,
        /// HMAC keyed once; each packet clones the precomputed inner/outer state.
        mac: Hmac<Sha1>,
    },
    Gcm(LessSafeKey),
}

impl SessionKeys {
    /// `encryption_label` is 0x00 (SRTP) or 0x03 (SRTCP); the auth and salt labels follow it
    /// (RFC 3711 §4.3.2).
    fn derive(
        profile: SrtpProfile,
        prf: &Aes128Enc,
        master_salt: &[u8],
        encryption_label: u8,
    ) -> Self {
        let key = kdf::<16>(prf, master_salt, encryption_label);
        let mut salt = kdf::<16>(prf, master_salt, encryption_label + 2);
        salt[master_salt.len()..].fill(0);
        let cipher = match profile {
            SrtpProfile::AesCm128HmacSha1_80 => Cipher::Cm {
                aes: Aes128Enc::new(&key.into()),
                mac: <Hmac<Sha1> as Mac>::new_from_slice(&kdf::<20>(
                    prf,
                    master_salt,
                    encryption_label + 1,
                ))
                .expect("HMAC takes any key length"),
            },
            SrtpProfile::AeadAes128Gcm => Cipher::Gcm(LessSafeKey::new(
                UnboundKey::new(&AES_128_GCM, &key).expect("16-byte AES-128 key"),
            )),
        };
        Self { cipher, salt }
    }
}

/// RFC 3711 §4.3.1/§4.3.3 with kdr = 0: `x = (label << 48) XOR master_salt`, output the AES-CM
/// keystream of the master key starting at `x * 2^16`. RFC 7714 §11 uses the same PRF for the
/// GCM key and its 96-bit salt.
fn kdf<const N: usize>(prf: &Aes128Enc, master_salt: &[u8], label: u8) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = [0u8; 16];
        block[..master_salt.len()].copy_from_slice(master_salt);
        block[7] ^= label;
        block[14..].copy_from_slice(&(i as u16).to_be_bytes());
        let mut block = block.into();
        prf.encrypt_block(&mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    out
}

/// Per-SSRC SRTP state: the highest authenticated (or sent) 48-bit index `ROC << 16 | SEQ`
/// (RFC 3711 §3.3.1 "s_l" with its ROC), the replay window (inbound only) and the log of
/// recently protected indices (outbound only).
struct RtpStream {
    highest: u64,
    replay: ReplayWindow<RTP_REPLAY_WORDS>,
    sent: SentLog,
}

/// What protect knows about an index it is asked to use.
enum Sent {
    /// Never used: protect and record it.
    Fresh,
    /// Used before; the first packet's tag prefix.
    Repeated([u8; 8]),
    /// Older than the log reaches: it cannot be shown unused or identical.
    Unknown,
}

/// What an SSRC's protected indices were, so a resend under a used index is let through only
/// when byte-identical: the last [`SENT_LOG`] indices with a prefix of each one's tag. One
/// 16-byte write per protected packet. An SSRC that sent one packet keeps it inline; the 8 KiB
/// ring is allocated at its second packet, so a context protecting many short-lived SSRCs (a
/// test's SSRC flood) does not pay for rings it never needs.
enum SentLog {
    /// Nothing protected yet (an inbound stream, or a fresh one).
    Empty,
    /// One packet protected.
    One(u64, [u8; 8]),
    /// By `index % SENT_LOG`.
    Ring(Box<[(u64, [u8; 8])]>),
}

/// Packets of history: a resend more than this many packets behind the newest is refused
/// (sfu-core keeps 512 packets per track for NACKs, and resends on RTX when negotiated).
const SENT_LOG: usize = 512;

impl SentLog {
    fn lookup(&self, highest: u64, index: u64) -> Sent {
        let recorded = match self {
            Self::Empty => return Sent::Fresh,
            Self::One(at, tag) => (*at, *tag),
            Self::Ring(ring) => ring[index as usize % SENT_LOG],
        };
        if recorded.0 == index {
            Sent::Repeated(recorded.1)
        } else if index + (SENT_LOG as u64) <= highest {
            Sent::Unknown
        } else {
            // Within the log's reach and not recorded: never protected (every protect records).
            Sent::Fresh
        }
    }

    fn record(&mut self, index: u64, tag: [u8; 8]) {
        match self {
            Self::Empty => *self = Self::One(index, tag),
            Self::One(first, first_tag) => {
                // u64::MAX is no 48-bit index: an empty slot matches nothing.
                let mut ring = vec![(u64::MAX, [0; 8]); SENT_LOG].into_boxed_slice();
                ring[*first as usize % SENT_LOG] = (*first, *first_tag);
                ring[index as usize % SENT_LOG] = (index, tag);
                *self = Self::Ring(ring);
            }
            Self::Ring(ring) => ring[index as usize % SENT_LOG] = (index, tag),
        }
    }

    fn tag_prefix(tag: &[u8]) -> [u8; 8] {
        let mut prefix = [0; 8];
        prefix.copy_from_slice(&tag[..8]);
        prefix
    }
}

/// Per-SSRC SRTCP state.
#[derive(Default)]
struct RtcpStream {
    /// Last SRTCP index sent (outbound).
    sent: u32,
    replay: ReplayWindow<RTCP_REPLAY_WORDS>,
}

/// The packet index estimate of RFC 3711 Appendix A: the index closest to `highest` whose low
/// 16 bits are `seq` (ROC - 1, ROC or ROC + 1), never below ROC 0.
fn estimate_index(highest: u64, seq: u16) -> u64 {
    let roc = highest >> 16;
    let s_l = highest as u16;
    let guess = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 && roc > 0 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    guess << 16 | u64::from(seq)
}

/// A sliding replay window of `64 * WORDS` indices (RFC 3711 §3.3.2) as a ring bitmap: bit
/// `index % size` marks `index` as received while `index` is within the window below `top`.
/// Fixed size, so checking and accepting never allocate.
#[derive(Clone)]
struct ReplayWindow<const WORDS: usize> {
    /// Highest accepted index; `None` before the first.
    top: Option<u64>,
    bits: [u64; WORDS],
}

impl<const WORDS: usize> Default for ReplayWindow<WORDS> {
    fn default() -> Self {
        Self {
            top: None,
            bits: [0; WORDS],
        }
    }
}

impl<const WORDS: usize> ReplayWindow<WORDS> {
    const SIZE: u64 = 64 * WORDS as u64;

    fn check(&self, ssrc: u32, index: u64) -> Result<(), SrtpError> {
        let Some(top) = self.top else {
            return Ok(());
        };
        if index > top {
            return Ok(());
        }
        if top - index >= Self::SIZE {
            return Err(SrtpError::TooOld { ssrc, index });
        }
        if self.bit(index) {
            return Err(SrtpError::Replay { ssrc, index });
        }
        Ok(())
    }

    /// Records `index`; call only after `check` passed and the packet authenticated.
    fn accept(&mut self, index: u64) {
        let top = self.top.unwrap_or(index);
        if index > top {
            if index - top >= Self::SIZE {
                self.bits = [0; WORDS];
            } else {
                // Forget the indices that fall out of the window as it slides up.
                for stale in top + 1..=index {
                    self.set(stale, false);
                }
            }
        }
        self.top = Some(top.max(index));
        self.set(index, true);
    }

    fn bit(&self, index: u64) -> bool {
        let slot = index % Self::SIZE;
        self.bits[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    fn set(&mut self, index: u64, on: bool) {
        let slot = index % Self::SIZE;
        let word = &mut self.bits[(slot / 64) as usize];
        if on {
            *word |= 1 << (slot % 64);
        } else {
            *word &= !(1 << (slot % 64));
        }
    }
}

/// Length of the RTP header including CSRCs and the extension (RFC 3550 §5.1, §5.3.1): what
/// SRTP leaves in the clear.
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let mut len = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4).ok_or(SrtpError::Malformed)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    if len > packet.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(len)
}

/// SSRC and sequence number of a packet `rtp_header_len` accepted.
fn rtp_ssrc_seq(packet: &[u8]) -> (u32, u16) {
    (
        u32::from_be_bytes(packet[8..12].try_into().expect("four bytes")),
        u16::from_be_bytes([packet[2], packet[3]]),
    )
}

/// Sender SSRC of the first RTCP packet (RFC 3550 §6.4), which keys the SRTCP context.
fn rtcp_ssrc(packet: &[u8]) -> Result<u32, SrtpError> {
    if packet.len() < RTCP_HEADER_LEN || packet[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    Ok(u32::from_be_bytes(
        packet[4..8].try_into().expect("four bytes"),
    ))
}

/// AES-CM (RFC 3711 §4.1.1): XORs the keystream of the 128-bit big-endian counter starting at
/// `iv` into `data`, with the session key's precomputed schedule (borrowed, not re-expanded).
fn aes_ctr(aes: &Aes128Enc, iv: [u8; 16], data: &mut [u8]) {
    Ctr128BE::from_core(CtrCore::inner_iv_init(aes, &iv.into())).apply_keystream(data);
}

/// AES-CM IV (RFC 3711 §4.1.1): `(k_s << 16) XOR (SSRC << 64) XOR (index << 16)`; for SRTCP
/// the index is the 31-bit SRTCP index.
fn cm_iv(salt: &[u8; 16], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[4..8].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..14].copy_from_slice(&index.to_be_bytes()[2..]);
    for (byte, salt) in iv.iter_mut().zip(&salt[..14]) {
        *byte ^= salt;
    }
    iv
}

/// GCM SRTP nonce (RFC 7714 §8.1): `00 00 || SSRC || ROC || SEQ` XOR the 96-bit salt.
fn gcm_rtp_nonce(salt: &[u8; 16], ssrc: u32, roc: u32, seq: u16) -> Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..10].copy_from_slice(&roc.to_be_bytes());
    iv[10..].copy_from_slice(&seq.to_be_bytes());
    for (byte, salt) in iv.iter_mut().zip(salt) {
        *byte ^= salt;
    }
    Nonce::assume_unique_for_key(iv)
}

/// GCM SRTCP nonce (RFC 7714 §9.1): `00 00 || SSRC || 00 00 || 0 || index` XOR the salt.
fn gcm_rtcp_nonce(salt: &[u8; 16], ssrc: u32, index: u32) -> Nonce {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..].copy_from_slice(&index.to_be_bytes());
    for (byte, salt) in iv.iter_mut().zip(salt) {
        *byte ^= salt;
    }
    Nonce::assume_unique_for_key(iv)
}

/// GCM SRTCP AAD for an encrypted packet (RFC 7714 §9.2): the first 8 header bytes and the
/// E-flag/index word.
fn gcm_rtcp_aad(header: &[u8], word: [u8; 4]) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(header);
    aad[8..].copy_from_slice(&word);
    aad
}

/// Fuzz target body for `fuzz/fuzz_targets/srtp_unprotect.rs`: arbitrary bytes through SRTP
/// and SRTCP unprotect with fixed keys, both profiles. Must never panic.
pub fn fuzz_srtp(data: &[u8]) {
    for profile in [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm] {
        let key = [7u8; 16];
        let salt = &[9u8; 14][..profile.salt_len()];
        let mut context = SrtpContext::new(profile, &key, salt).expect("fixed key lengths");
        let mut buf = data.to_vec();
        let _ = context.unprotect_rtp(&mut buf);
        buf.copy_from_slice(data);
        let _ = context.unprotect_rtcp(&mut buf);
        // Also with room for a tag: protect must refuse or succeed, never panic.
        let len = buf.len();
        buf.resize(len + profile.rtcp_overhead(), 0);
        let _ = context.protect_rtp(&mut buf, len);
        buf[..len].copy_from_slice(data);
        let _ = context.protect_rtcp(&mut buf, len);
    }
}

const LABEL_SRTP_ENCRYPTION: u8 = 0x00;
const LABEL_SRTCP_ENCRYPTION: u8 = 0x03;
const CM_TAG_LEN: usize = 10;
const GCM_TAG_LEN: usize = 16;
const SRTCP_INDEX_LEN: usize = 4;
const SRTCP_E_FLAG: u32 = 1 << 31;
const MAX_SRTCP_INDEX: u32 = SRTCP_E_FLAG - 1;
const RTCP_HEADER_LEN: usize = 8;
/// 1024 packets: wide enough for video bursts reordered on a real network (RFC 3711 §3.3.2
/// asks for at least 64).
const RTP_REPLAY_WORDS: usize = 16;
/// 128 SRTCP packets.
const RTCP_REPLAY_WORDS: usize = 2;

#[cfg(test)]
mod tests;
