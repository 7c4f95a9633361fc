//! Resume tokens: 256-bit random secrets handed to the client; the store keeps only their
//! SHA-256, so reading the store (a Redis `HGETALL`, a memory dump) does not let anyone resume.

use rand::RngCore;
use subtle::ConstantTimeEq;

use super::model::TokenHash;

/// A fresh token (hex) and the hash the store keeps, valid until `expires_ms`.
pub(super) fn issue(expires_ms: u64) -> (String, TokenHash) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex(&bytes);
    let hash = TokenHash {
        hash: hash(&token),
        expires_ms,
    };
    (token, hash)
}

/// The lower-case hex SHA-256 of a presented token.
pub(crate) fn hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// True when `presented` (a hash) equals `stored` (compared in constant time) and `stored` is
/// still valid at `now_ms`.
pub(crate) fn accepts(stored: &TokenHash, presented: &str, now_ms: u64) -> bool {
    let equal: bool = stored.hash.as_bytes().ct_eq(presented.as_bytes()).into();
    equal && now_ms < stored.expires_ms
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_sees_only_the_hash_and_expiry_is_enforced() {
        let (token, stored) = issue(1_000);
        assert_eq!(token.len(), 64);
        assert_ne!(stored.hash, token);
        assert_eq!(stored.hash, hash(&token));
        assert!(accepts(&stored, &hash(&token), 999));
        assert!(!accepts(&stored, &hash(&token), 1_000), "expired");
        assert!(
            !accepts(&stored, &token, 0),
            "the plaintext is not the hash"
        );
        let (other, _) = issue(1_000);
        assert!(!accepts(&stored, &hash(&other), 0));
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
