//! The SFU's own ICE credentials and certificate fingerprint.

use rand::Rng;

use super::{Fingerprint, IceCredentials, SdpError};

/// Fresh ICE credentials for one transport: an 8-character ufrag and a 24-character password
/// from the `ice-char` set (RFC 8839 §5.4 asks for at least 24 bits and 128 bits of randomness;
/// 8 × 6 and 24 × 6 bits give 48 and 144).
pub fn random_ice_credentials() -> IceCredentials {
    let mut rng = rand::rng();
    let mut pick = |len: usize| -> String {
        (0..len)
            .map(|_| char::from(ICE_CHARS[rng.random_range(0..ICE_CHARS.len())]))
            .collect()
    };
    IceCredentials {
        ufrag: pick(8),
        pwd: pick(24),
    }
}

impl Fingerprint {
    /// The `sha-256` fingerprint (RFC 8122 §5) of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(mooyaho_control::fingerprint(der))
    }

    /// Parses the value of an `a=fingerprint:sha-256` attribute, normalising to upper case so
    /// that comparison with [`Fingerprint::of_der`] is a string comparison.
    pub(super) fn parse_sha256(value: &str) -> Result<Self, SdpError> {
        let bytes: Vec<&str> = value.split(':').collect();
        let well_formed = bytes.len() == 32
            && bytes
                .iter()
                .all(|byte| byte.len() == 2 && byte.bytes().all(|b| b.is_ascii_hexdigit()));
        if !well_formed {
            return Err(SdpError::Malformed(
                "sha-256 fingerprint is not 32 hex bytes".to_owned(),
            ));
        }
        Ok(Self(value.to_ascii_uppercase()))
    }
}

impl IceCredentials {
    /// Checks untrusted credentials against RFC 8839 §5.4: ufrag 4–256 and password 22–256
    /// `ice-char`s. They end up in STUN USERNAME and MESSAGE-INTEGRITY, so nothing else may pass.
    pub(super) fn parse(ufrag: &str, pwd: &str) -> Result<Self, SdpError> {
        let valid = |s: &str, min: usize| {
            (min..=256).contains(&s.len()) && s.bytes().all(|b| ICE_CHARS.contains(&b))
        };
        if !valid(ufrag, 4) {
            return Err(SdpError::Malformed(
                "ice-ufrag is not 4–256 ice-chars".to_owned(),
            ));
        }
        if !valid(pwd, 22) {
            return Err(SdpError::Malformed(
                "ice-pwd is not 22–256 ice-chars".to_owned(),
            ));
        }
        Ok(Self {
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
        })
    }
}

/// `ice-char = ALPHA / DIGIT / "+" / "/"` (RFC 8839 §5.4).
const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_credentials_have_rfc_8839_lengths_and_charset() {
        let first = random_ice_credentials();
        assert_eq!(first.ufrag.len(), 8);
        assert_eq!(first.pwd.len(), 24);
        assert_eq!(
            IceCredentials::parse(&first.ufrag, &first.pwd),
            Ok(first.clone())
        );
        assert_ne!(random_ice_credentials(), first);
    }

    #[test]
    fn fingerprint_of_der_is_upper_case_colon_hex_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            Fingerprint::of_der(b"abc").0,
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
        let parsed = Fingerprint::parse_sha256(&Fingerprint::of_der(b"abc").0.to_lowercase());
        assert_eq!(parsed, Ok(Fingerprint::of_der(b"abc")));
        assert!(Fingerprint::parse_sha256("AB:CD").is_err());
        assert!(Fingerprint::parse_sha256(&format!("{}ZZ", "AB:".repeat(31))).is_err());
    }
}
