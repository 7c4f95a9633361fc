//! SRTP/SRTCP contexts of one transport, keyed from the DTLS exporter (RFC 5764 §4.2).
//! Inbound contexts keep replay protection on (a replayed packet is dropped and counted) and
//! state for at most [`crate::srtp_fast::MAX_REMOTE_SSRCS`] remote SSRCs; the outbound context
//! refuses to reuse a packet index with different bytes (AES-GCM nonce reuse).
//!
//! The DTLS exporter plumbing (`rtc_srtp::config::Config`) comes from `rtc-srtp`; the packet
//! work is [`crate::srtp_fast`], which protects and unprotects in place with no allocation per
//! packet and is tested byte-identical to `rtc-srtp` (see `BENCHMARKS.md` for the speed-up).

use bytes::BytesMut;
use rtc_crypto::RTCCryptoProvider;
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_dtls::state::State;
use rtc_srtp::config::Config;
use rtc_srtp::protection_profile::ProtectionProfile;

pub use crate::srtp_fast::SrtpError;
use crate::srtp_fast::{SrtpContext, SrtpProfile};

/// Deriving SRTP keys from a completed DTLS handshake failed (unsupported profile, exporter
/// error). The DTLS layer reports it as its own handshake failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyingError(pub String);

/// The two directions of one transport's SRTP.
pub struct SrtpSession {
    inbound: SrtpContext,
    outbound: SrtpContext,
    /// The negotiated profile.
    pub profile: ProtectionProfile,
}

impl std::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpSession")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl SrtpSession {
    /// Derives both contexts from a completed handshake. `provider` is unused since the packet
    /// work moved to [`crate::srtp_fast`]; it stays so the DTLS layer's calls are unchanged.
    pub fn from_dtls(state: &State, provider: &dyn RTCCryptoProvider) -> Result<Self, KeyingError> {
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                ProtectionProfile::Aes128CmHmacSha1_80
            }
            other => return Err(KeyingError(format!("unsupported SRTP profile {other:?}"))),
        };
        let mut config = Config {
            profile,
            ..Config::default()
        };
        let material = state
            .export_keying_material(
                rtc_srtp::config::LABEL_EXTRACTOR_DTLS_SRTP,
                &[],
                config.keying_material_len(),
            )
            .map_err(|e| KeyingError(e.to_string()))?;
        config
            .set_session_keys_from_keying_material(material.as_ref(), state.is_client())
            .map_err(|e| KeyingError(e.to_string()))?;
        Self::from_keys(&config, provider).map_err(|e| KeyingError(e.to_string()))
    }

    /// Builds the contexts from explicit keys (tests and benches). `provider` is unused, as in
    /// [`Self::from_dtls`].
    pub fn from_keys(
        config: &Config,
        _provider: &dyn RTCCryptoProvider,
    ) -> Result<Self, SrtpError> {
        let profile = match config.profile {
            ProtectionProfile::Aes128CmHmacSha1_80 => SrtpProfile::AesCm128HmacSha1_80,
            ProtectionProfile::AeadAes128Gcm => SrtpProfile::AeadAes128Gcm,
            _ => return Err(SrtpError::Key("unsupported SRTP profile")),
        };
        let keys = &config.keys;
        Ok(Self {
            inbound: SrtpContext::new(profile, &keys.remote_master_key, &keys.remote_master_salt)?,
            outbound: SrtpContext::new(profile, &keys.local_master_key, &keys.local_master_salt)?,
            profile: config.profile,
        })
    }

    /// Decrypts and authenticates an SRTP packet `buf` in place; returns the plaintext length.
    /// The worker's receive path.
    pub fn unprotect_rtp_in_place(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        self.inbound.unprotect_rtp(buf)
    }

    /// Decrypts and authenticates an SRTCP packet `buf` in place; returns the RTCP length.
    pub fn unprotect_rtcp_in_place(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        self.inbound.unprotect_rtcp(buf)
    }

    /// Encrypts the RTP packet in `buf[..len]` in place and appends the tag; returns the
    /// protected length. `buf` needs `len + 16` bytes at most. The worker's send path.
    pub fn protect_rtp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.outbound.protect_rtp(buf, len)
    }

    /// Encrypts the RTCP packet in `buf[..len]` in place and appends the SRTCP trailer;
    /// returns the protected length. `buf` needs `len + 20` bytes at most.
    pub fn protect_rtcp_in_place(
        &mut self,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, SrtpError> {
        self.outbound.protect_rtcp(buf, len)
    }

    /// Remote SSRCs the inbound context keeps SRTP and SRTCP state for (each capped at
    /// [`crate::srtp_fast::MAX_REMOTE_SSRCS`]).
    pub fn remote_ssrcs(&self) -> (usize, usize) {
        self.inbound.ssrcs()
    }

    /// Protects refused because an index would have been reused with other bytes.
    pub fn index_reuse_refused(&self) -> u64 {
        self.outbound.index_reuse_refused()
    }

    /// Decrypts and authenticates an SRTP packet into a new buffer (tests, cold paths).
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        let mut buf = BytesMut::from(packet);
        let len = self.inbound.unprotect_rtp(&mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Decrypts and authenticates an SRTCP packet into a new buffer.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        let mut buf = BytesMut::from(packet);
        let len = self.inbound.unprotect_rtcp(&mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Encrypts an RTP packet into a new buffer.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        let overhead = self.outbound.profile().rtp_overhead();
        let mut buf = BytesMut::zeroed(packet.len() + overhead);
        buf[..packet.len()].copy_from_slice(packet);
        let len = self.outbound.protect_rtp(&mut buf, packet.len())?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Encrypts an RTCP packet into a new buffer.
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        let overhead = self.outbound.profile().rtcp_overhead();
        let mut buf = BytesMut::zeroed(packet.len() + overhead);
        buf[..packet.len()].copy_from_slice(packet);
        let len = self.outbound.protect_rtcp(&mut buf, packet.len())?;
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use mooyaho_test_support::packets::rtp;
    use rtc_srtp::config::SessionKeys;

    use super::*;

    /// Two sessions keyed as the two ends of one DTLS association (each one's local keys are
    /// the other's remote keys).
    fn pair(profile: ProtectionProfile, salt_len: usize) -> (SrtpSession, SrtpSession) {
        let (a_key, a_salt) = (vec![0x11; 16], vec![0x22; salt_len]);
        let (b_key, b_salt) = (vec![0x33; 16], vec![0x44; salt_len]);
        let config = |local: (&[u8], &[u8]), remote: (&[u8], &[u8])| Config {
            keys: SessionKeys {
                local_master_key: local.0.to_vec(),
                local_master_salt: local.1.to_vec(),
                remote_master_key: remote.0.to_vec(),
                remote_master_salt: remote.1.to_vec(),
            },
            profile,
            ..Config::default()
        };
        let provider = rtc_crypto::default_provider().unwrap();
        let a = config((&a_key, &a_salt), (&b_key, &b_salt));
        let b = config((&b_key, &b_salt), (&a_key, &a_salt));
        (
            SrtpSession::from_keys(&a, provider.as_ref()).unwrap(),
            SrtpSession::from_keys(&b, provider.as_ref()).unwrap(),
        )
    }

    /// A receiver report with no blocks from SSRC 0xcafebabe.
    const RTCP: [u8; 8] = [0x80, 201, 0, 1, 0xca, 0xfe, 0xba, 0xbe];

    #[test]
    fn both_ends_round_trip_rtp_and_rtcp_for_both_profiles() {
        for (profile, salt_len) in [
            (ProtectionProfile::Aes128CmHmacSha1_80, 14),
            (ProtectionProfile::AeadAes128Gcm, 12),
        ] {
            let (mut a, mut b) = pair(profile, salt_len);
            let protected = a.protect_rtp(&rtp(1)).unwrap();
            assert_ne!(
                &protected[12..],
                &rtp(1)[12..],
                "{profile:?}: payload encrypted"
            );
            assert_eq!(&b.unprotect_rtp(&protected).unwrap()[..], &rtp(1)[..]);
            let back = b.protect_rtcp(&RTCP).unwrap();
            assert_eq!(&a.unprotect_rtcp(&back).unwrap()[..], &RTCP[..]);

            // In place, as the worker does it: the tag fits in the slack after the packet.
            let mut buf = rtp(2);
            let len = buf.len();
            buf.resize(len + 16, 0);
            let protected_len = a.protect_rtp_in_place(&mut buf, len).unwrap();
            let plain_len = b.unprotect_rtp_in_place(&mut buf[..protected_len]).unwrap();
            assert_eq!(&buf[..plain_len], &rtp(2)[..]);
            assert_eq!(b.remote_ssrcs().0, 1);
        }
    }

    #[test]
    fn a_replayed_or_tampered_packet_is_refused() {
        let (mut a, mut b) = pair(ProtectionProfile::AeadAes128Gcm, 12);
        let protected = a.protect_rtp(&rtp(7)).unwrap();
        b.unprotect_rtp(&protected).unwrap();
        assert!(b.unprotect_rtp(&protected).unwrap_err().is_replay());
        let mut tampered = a.protect_rtp(&rtp(8)).unwrap().to_vec();
        tampered[20] ^= 1;
        assert!(b.unprotect_rtp(&tampered).is_err());
    }

    #[test]
    fn an_unsupported_profile_is_an_error() {
        let config = Config {
            profile: ProtectionProfile::AeadAes256Gcm,
            ..Config::default()
        };
        let provider = rtc_crypto::default_provider().unwrap();
        assert!(matches!(
            SrtpSession::from_keys(&config, provider.as_ref()),
            Err(SrtpError::Key(_))
        ));
    }
}
