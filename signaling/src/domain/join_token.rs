//! Join tokens: HS256 JWTs a backend mints (offline with a server SDK, or `POST /tokens`) that let
//! one user into one channel with given rights, without a REST round trip at connect time.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::ids::{ChannelId, check_user_id};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
pub const CLOCK_SKEW_SECS: u64 = 10;
/// Longest lifetime `POST /tokens` signs, seconds (a day).
pub const MAX_TTL_SECS: u64 = 24 * 60 * 60;
/// Longest accepted `name` claim, characters.
pub const MAX_NAME_LEN: usize = 256;

/// The claims of a join token (JSON names as on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// The user's id.
    pub sub: String,
    /// The user's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The one channel the session may enter.
    pub channel: String,
    /// May publish media (SFU channels). Absent = true.
    #[serde(default = "yes")]
    pub publish: bool,
    /// May receive media (SFU subscribe offers). Absent = true.
    #[serde(default = "yes")]
    pub subscribe: bool,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

fn yes() -> bool {
    true
}

/// What a verified token grants the session it opens; kept with the session (and so across
/// resumes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGrant {
    /// The one channel the session may enter.
    pub channel: ChannelId,
    /// May publish media.
    pub publish: bool,
    /// May receive media.
    pub subscribe: bool,
    /// Receives on the m-lines of its own offer (a WHEP viewer): the node never offers to it
    /// (`subscribe` is off for that), but its node needs the channel's tracks (relay planning).
    #[serde(default)]
    pub receives_own_offer: bool,
}

/// Why a token was refused. The messages name the claim, never the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinTokenError {
    /// Bad signature, wrong algorithm, or not a JWT at all.
    #[error("the join token is malformed or not signed with this server's token secret")]
    BadToken,
    /// `exp` has passed.
    #[error("the join token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("the join token is not valid yet")]
    NotYetValid,
    /// A claim is missing or out of range.
    #[error("invalid join token claim: {0}")]
    Claim(String),
}

/// A verified token: the user it names and its grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedJoin {
    /// `{id, name?}`: the session's user.
    pub user: serde_json::Value,
    /// What the session may do.
    pub grant: JoinGrant,
}

/// Checks the claims that do not depend on the signature. `now` is seconds since the Unix epoch.
pub fn check_claims(claims: &JoinClaims, now: u64) -> Result<VerifiedJoin, JoinTokenError> {
    if claims.exp.saturating_add(CLOCK_SKEW_SECS) <= now {
        return Err(JoinTokenError::Expired);
    }
    let future = |t: Option<u64>| t.is_some_and(|t| t > now.saturating_add(CLOCK_SKEW_SECS));
    if future(claims.nbf) || future(claims.iat) {
        return Err(JoinTokenError::NotYetValid);
    }
    check_user_id(&claims.sub).map_err(|e| JoinTokenError::Claim(format!("sub: {e}")))?;
    let channel = ChannelId::parse(claims.channel.clone())
        .map_err(|e| JoinTokenError::Claim(format!("channel: {e}")))?;
    let mut user = serde_json::Map::new();
    user.insert("id".into(), claims.sub.clone().into());
    if let Some(name) = &claims.name {
        if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(JoinTokenError::Claim(format!(
                "name: at most {MAX_NAME_LEN} characters, no control characters"
            )));
        }
        user.insert("name".into(), name.clone().into());
    }
    Ok(VerifiedJoin {
        user: serde_json::Value::Object(user),
        grant: JoinGrant {
            channel,
            publish: claims.publish,
            subscribe: claims.subscribe,
            receives_own_offer: false,
        },
    })
}

/// Signs and verifies join tokens with one HS256 secret.
pub struct JoinTokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JoinTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinTokenKey(..)")
    }
}

impl JoinTokenKey {
    /// A key from the shared secret.
    pub fn new(secret: &str) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// Signs `claims` (checked first, so this server never mints a token it would refuse).
    pub fn sign(&self, claims: &JoinClaims, now: u64) -> Result<String, JoinTokenError> {
        check_claims(claims, now)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| JoinTokenError::BadToken)
    }

    /// Verifies the signature (HS256 only) and the claims at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedJoin, JoinTokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Time claims are checked by `check_claims` against the caller's clock (testable).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp", "sub"].into_iter().map(String::from).collect();
        let data = jsonwebtoken::decode::<JoinClaims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(claim) => {
                    JoinTokenError::Claim(format!("{claim} is required"))
                }
                jsonwebtoken::errors::ErrorKind::Json(_) => JoinTokenError::Claim(
                    "malformed header or claims (sub, channel: strings; exp: seconds; publish, \
                     subscribe: booleans)"
                        .into(),
                ),
                _ => JoinTokenError::BadToken,
            },
        )?;
        check_claims(&data.claims, now)
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn claims() -> JoinClaims {
        JoinClaims {
            sub: "ada".into(),
            name: Some("Ada".into()),
            channel: "room-1".into(),
            publish: false,
            subscribe: true,
            exp: NOW + 60,
            nbf: None,
            iat: Some(NOW),
        }
    }

    #[test]
    fn a_signed_token_verifies_to_its_user_and_grant() {
        let key = JoinTokenKey::new("a-secret-of-sixteen+");
        let token = key.sign(&claims(), NOW).unwrap();
        let verified = key.verify(&token, NOW).unwrap();
        assert_eq!(
            verified.user,
            serde_json::json!({"id": "ada", "name": "Ada"})
        );
        assert_eq!(
            verified.grant,
            JoinGrant {
                channel: ChannelId::parse("room-1").unwrap(),
                publish: false,
                subscribe: true,
                receives_own_offer: false,
            }
        );
    }

    #[test]
    fn time_claims_are_enforced_with_a_small_skew() {
        let key = JoinTokenKey::new("a-secret-of-sixteen+");
        let token = key.sign(&claims(), NOW).unwrap();
        assert!(key.verify(&token, NOW + 60 + CLOCK_SKEW_SECS - 1).is_ok());
        assert_eq!(
            key.verify(&token, NOW + 60 + CLOCK_SKEW_SECS),
            Err(JoinTokenError::Expired)
        );
        let early = JoinClaims {
            nbf: Some(NOW + 30),
            ..claims()
        };
        assert_eq!(check_claims(&early, NOW), Err(JoinTokenError::NotYetValid));
        assert!(check_claims(&early, NOW + 30).is_ok());
        let issued_later = JoinClaims {
            iat: Some(NOW + 3600),
            ..claims()
        };
        assert_eq!(
            check_claims(&issued_later, NOW),
            Err(JoinTokenError::NotYetValid)
        );
    }

    #[test]
    fn another_secret_tampering_or_another_algorithm_is_refused() {
        let key = JoinTokenKey::new("a-secret-of-sixteen+");
        let token = key.sign(&claims(), NOW).unwrap();
        let other = JoinTokenKey::new("another-secret-of-16");
        assert_eq!(other.verify(&token, NOW), Err(JoinTokenError::BadToken));
        // Swap the payload for one granting publish, keep the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = base64url(br#"{"sub":"ada","channel":"room-1","exp":1800000060}"#);
        parts[1] = &forged;
        assert_eq!(
            key.verify(&parts.join("."), NOW),
            Err(JoinTokenError::BadToken)
        );
        // `alg: none` and garbage.
        let none = format!(
            "{}.{}.",
            base64url(br#"{"alg":"none","typ":"JWT"}"#),
            base64url(br#"{"sub":"ada","channel":"room-1","exp":1800000060}"#)
        );
        // jsonwebtoken has no `none` algorithm: the header itself does not parse.
        assert!(key.verify(&none, NOW).is_err());
        for garbage in ["", "x", "a.b.c", "..", "\u{0}"] {
            assert!(key.verify(garbage, NOW).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn bad_claims_are_refused_and_never_signed() {
        let key = JoinTokenKey::new("a-secret-of-sixteen+");
        for bad in [
            JoinClaims {
                sub: String::new(),
                ..claims()
            },
            JoinClaims {
                sub: "a:b".into(),
                ..claims()
            },
            JoinClaims {
                channel: "mooyaho:sfus".into(),
                ..claims()
            },
            JoinClaims {
                name: Some("a\nb".into()),
                ..claims()
            },
            JoinClaims {
                name: Some("n".repeat(MAX_NAME_LEN + 1)),
                ..claims()
            },
        ] {
            assert!(
                matches!(key.sign(&bad, NOW), Err(JoinTokenError::Claim(_))),
                "{bad:?}"
            );
        }
        // A signed token missing a required claim.
        let header = Header::new(Algorithm::HS256);
        let encoding = EncodingKey::from_secret(b"a-secret-of-sixteen+");
        let no_channel = serde_json::json!({"sub": "ada", "exp": NOW + 60});
        let token = jsonwebtoken::encode(&header, &no_channel, &encoding).unwrap();
        assert!(matches!(
            key.verify(&token, NOW),
            Err(JoinTokenError::Claim(_))
        ));
        let no_exp = serde_json::json!({"sub": "ada", "channel": "room-1"});
        let token = jsonwebtoken::encode(&header, &no_exp, &encoding).unwrap();
        assert!(matches!(
            key.verify(&token, NOW),
            Err(JoinTokenError::Claim(_))
        ));
        // Absent grants default to allowed.
        let minimal = serde_json::json!({"sub": "ada", "channel": "room-1", "exp": NOW + 60});
        let token = jsonwebtoken::encode(&header, &minimal, &encoding).unwrap();
        let grant = key.verify(&token, NOW).unwrap().grant;
        assert!(grant.publish && grant.subscribe);
    }

    fn base64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}
