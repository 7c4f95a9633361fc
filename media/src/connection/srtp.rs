//! SRTP/SRTCP contexts of one transport, keyed from the DTLS exporter (RFC 5764 §4.2).
//! Inbound contexts keep replay protection on (a replayed packet is dropped and counted).

use bytes::BytesMut;
use rtc_crypto::RTCCryptoProvider;
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_dtls::state::State;
use rtc_srtp::config::Config;
use rtc_srtp::context::Context;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

use super::dtls::DtlsError;

/// Replay windows (packets): wide enough for video bursts reordered on a real network.
const SRTP_REPLAY_WINDOW: usize = 1024;
const SRTCP_REPLAY_WINDOW: usize = 128;

/// The two directions of one transport's SRTP.
pub struct SrtpSession {
    inbound: Context,
    outbound: Context,
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

/// An SRTP failure: authentication, replay, or a malformed packet.
#[derive(Debug, thiserror::Error)]
#[error("srtp: {0}")]
pub struct SrtpError(pub String);

impl SrtpError {
    /// The packet was a replay (counted apart from authentication failures).
    pub fn is_replay(&self) -> bool {
        let text = self.0.to_ascii_lowercase();
        text.contains("replay") || text.contains("duplicated")
    }
}

impl SrtpSession {
    /// Derives both contexts from a completed handshake.
    pub fn from_dtls(state: &State, provider: &dyn RTCCryptoProvider) -> Result<Self, DtlsError> {
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                ProtectionProfile::Aes128CmHmacSha1_80
            }
            other => return Err(DtlsError(format!("unsupported SRTP profile {other:?}"))),
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
            .map_err(|e| DtlsError(e.to_string()))?;
        config
            .set_session_keys_from_keying_material(material.as_ref(), state.is_client())
            .map_err(|e| DtlsError(e.to_string()))?;
        Self::from_keys(&config, provider).map_err(|e| DtlsError(e.0))
    }

    /// Builds the contexts from explicit keys (tests and benches).
    pub fn from_keys(config: &Config, provider: &dyn RTCCryptoProvider) -> Result<Self, SrtpError> {
        let keys = &config.keys;
        let outbound = Context::new(
            &keys.local_master_key,
            &keys.local_master_salt,
            config.profile,
            None,
            None,
            provider.crypto(),
        )
        .map_err(|e| SrtpError(e.to_string()))?;
        let inbound = Context::new(
            &keys.remote_master_key,
            &keys.remote_master_salt,
            config.profile,
            Some(srtp_replay_protection(SRTP_REPLAY_WINDOW)),
            Some(srtcp_replay_protection(SRTCP_REPLAY_WINDOW)),
            provider.crypto(),
        )
        .map_err(|e| SrtpError(e.to_string()))?;
        Ok(Self {
            inbound,
            outbound,
            profile: config.profile,
        })
    }

    /// Decrypts and authenticates an SRTP packet.
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.inbound
            .decrypt_rtp(packet)
            .map_err(|e| SrtpError(e.to_string()))
    }

    /// Decrypts and authenticates an SRTCP packet.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.inbound
            .decrypt_rtcp(packet)
            .map_err(|e| SrtpError(e.to_string()))
    }

    /// Encrypts an RTP packet.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.outbound
            .encrypt_rtp(packet)
            .map_err(|e| SrtpError(e.to_string()))
    }

    /// Encrypts an RTCP packet.
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<BytesMut, SrtpError> {
        self.outbound
            .encrypt_rtcp(packet)
            .map_err(|e| SrtpError(e.to_string()))
    }
}
