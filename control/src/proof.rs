//! Proof of the cluster secret that reveals nothing about it and is good for one connection only.
//!
//! Both ends of a control connection derive the same 32 bytes from its TLS session (a TLS
//! exporter, RFC 8446 §7.5: unique per connection, known only to its two endpoints). Each side
//! proves it knows the cluster secret with `HMAC-SHA256(secret, role label ‖ exporter)`:
//!
//! - the proof differs on every connection, so a peer that receives one (a rogue node the
//!   registry was tricked into naming) cannot replay it on another connection, nor relay it
//!   to a real node (that connection has another exporter);
//! - the role label differs per direction, so the node cannot reflect the client's proof back;
//! - an HMAC output reveals nothing about its key beyond allowing offline guesses, which is why
//!   the secret must be long and random (`mooyaho sfu`, `server` and `dev` refuse one under
//!   [`MIN_SECRET_LEN`] characters).
//!
//! Verification is constant-time (`ring::hmac::verify`).

use std::fmt;

use ring::hmac;
use serde::{Deserialize, Serialize};

/// The TLS exporter label both ends use (the `EXPORTER-` prefix marks it as an application
/// exporter, RFC 5705 §4).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-mooyaho-control-hello";
/// Bytes of exporter output a proof binds to.
pub const EXPORTER_LEN: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;
/// The shortest cluster secret a node or a signaling server accepts: a proof allows offline
/// guesses, so a short secret would be recovered by anyone who receives one proof.
pub const MIN_SECRET_LEN: usize = 16;

/// Which end of the connection proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The signaling instance (QUIC client); proves first, in the hello.
    Signaling,
    /// The SFU node (QUIC server); proves in the welcome, after checking the client's proof.
    Node,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Signaling => b"mooyaho-control/2 hello: signaling",
            Self::Node => b"mooyaho-control/2 hello: node",
        }
    }
}

/// A proof did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the peer's proof of the cluster secret does not verify")]
pub struct ProofMismatch;

/// `HMAC-SHA256(secret, role label ‖ exporter)`; on the wire, 64 lower-case hex digits.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Proof([u8; PROOF_LEN]);

impl Proof {
    /// The proof `role` gives on the connection whose exporter output is `exporter`.
    pub fn new(secret: &[u8], role: Role, exporter: &[u8; EXPORTER_LEN]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mut context = hmac::Context::with_key(&key);
        context.update(role.label());
        context.update(exporter);
        let mut proof = [0; PROOF_LEN];
        proof.copy_from_slice(context.sign().as_ref());
        Self(proof)
    }

    /// Checks, in constant time, that this is the proof `role` must give on this connection.
    pub fn verify(
        &self,
        secret: &[u8],
        role: Role,
        exporter: &[u8; EXPORTER_LEN],
    ) -> Result<(), ProofMismatch> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mut message = Vec::with_capacity(role.label().len() + EXPORTER_LEN);
        message.extend_from_slice(role.label());
        message.extend_from_slice(exporter);
        hmac::verify(&key, &message, &self.0).map_err(|_| ProofMismatch)
    }

    /// The raw tag.
    pub fn as_bytes(&self) -> &[u8; PROOF_LEN] {
        &self.0
    }
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proof({})", String::from(self.clone()))
    }
}

impl From<Proof> for String {
    fn from(proof: Proof) -> Self {
        proof.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl TryFrom<String> for Proof {
    type Error = String;

    fn try_from(hex: String) -> Result<Self, Self::Error> {
        let invalid = || format!("a proof is {} hex digits", 2 * PROOF_LEN);
        if hex.len() != 2 * PROOF_LEN || !hex.is_ascii() {
            return Err(invalid());
        }
        let mut proof = [0; PROOF_LEN];
        for (byte, pair) in proof.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(Self(proof))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"cluster-secret-0123456789abcdef";

    #[test]
    fn a_proof_verifies_only_for_its_secret_role_and_connection() {
        let exporter = [7; EXPORTER_LEN];
        let proof = Proof::new(SECRET, Role::Signaling, &exporter);
        assert_eq!(proof.verify(SECRET, Role::Signaling, &exporter), Ok(()));
        // Another secret, the other direction (reflection), another connection (replay).
        assert_eq!(
            proof.verify(b"another-secret-0123456789", Role::Signaling, &exporter),
            Err(ProofMismatch)
        );
        assert_eq!(
            proof.verify(SECRET, Role::Node, &exporter),
            Err(ProofMismatch)
        );
        assert_eq!(
            proof.verify(SECRET, Role::Signaling, &[8; EXPORTER_LEN]),
            Err(ProofMismatch)
        );
    }

    #[test]
    fn proofs_differ_per_connection_and_role_and_never_contain_the_secret() {
        let a = Proof::new(SECRET, Role::Signaling, &[1; EXPORTER_LEN]);
        let b = Proof::new(SECRET, Role::Signaling, &[2; EXPORTER_LEN]);
        let node = Proof::new(SECRET, Role::Node, &[1; EXPORTER_LEN]);
        assert_ne!(a, b);
        assert_ne!(a, node);
        let wire = serde_json::to_string(&a).unwrap();
        assert!(!wire.contains("cluster-secret"), "{wire}");
        assert!(
            !a.as_bytes()
                .windows(8)
                .any(|w| SECRET.windows(8).any(|s| s == w))
        );
    }

    #[test]
    fn known_answers() {
        // Computed independently (Python: hmac.new(key, label + exporter, sha256)).
        let exporter = [0x5a; EXPORTER_LEN];
        assert_eq!(
            String::from(Proof::new(b"Jefe", Role::Node, &exporter)),
            "903e474b14a59058dd2d8b2c1c64bbc3dd3c52f1bfb229b10d03ff850cc978b3"
        );
        assert_eq!(
            String::from(Proof::new(b"Jefe", Role::Signaling, &exporter)),
            "208a780ba3a02f0ccb9941f04d747a7f04ac996ca40da003602afd4f4ca63eb5"
        );
    }

    #[test]
    fn hex_round_trips_and_bad_hex_is_refused() {
        let proof = Proof::new(SECRET, Role::Node, &[3; EXPORTER_LEN]);
        let text = String::from(proof.clone());
        assert_eq!(text.len(), 64);
        assert_eq!(Proof::try_from(text.to_uppercase()), Ok(proof.clone()));
        assert_eq!(Proof::try_from(text), Ok(proof));
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(65), &"é".repeat(32)] {
            assert!(Proof::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
