//! Identifiers of the signaling domain. Each is a newtype so a channel id can never be passed where a
//! session id is expected.
//!
//! Channel and session ids reach store keys (`{prefix}:channel:{id}`), so the ones a client or a
//! REST caller supplies are checked by [`check_key_id`]: a `:` or a glob character would let a
//! caller address another key namespace. Decoding them with serde checks too.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest channel or session id accepted from outside (ours are 36-character UUIDs).
pub const MAX_KEY_ID_LEN: usize = 128;

/// Longest user id (`user.id`) accepted from outside.
pub const MAX_USER_ID_LEN: usize = 256;

/// [`check_key_id`] as a regular expression (published in the OpenAPI document).
pub const KEY_ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";

/// [`check_user_id`] as a regular expression (published in the OpenAPI document).
pub const USER_ID_PATTERN: &str = r"^[^:\u0000-\u001F\u007F-\u009F]{1,256}$";

/// Why an id supplied from outside is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is the empty string.
    #[error("an id must not be empty")]
    Empty,
    /// The id is longer than allowed.
    #[error("an id is at most {0} characters long")]
    TooLong(usize),
    /// The id holds a character outside its alphabet.
    #[error("an id may hold only {0}")]
    BadCharacter(&'static str),
}

/// Checks a channel or session id: 1 to [`MAX_KEY_ID_LEN`] characters of `A-Z a-z 0-9 - _ .`,
/// so it can never reach across a key's namespace (`:`), glob (`* ? [ ]`) or hash tag (`{ }`).
pub fn check_key_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_KEY_ID_LEN {
        return Err(IdError::TooLong(MAX_KEY_ID_LEN));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !id.bytes().all(allowed) {
        return Err(IdError::BadCharacter("the characters A-Z a-z 0-9 - _ ."));
    }
    Ok(())
}

/// Checks a user id (`user.id` of an integrated user): 1 to [`MAX_USER_ID_LEN`] characters, no
/// control characters and no `:`. User ids are stored inside session records, never as keys,
/// so they may hold any other character (e-mail addresses, `auth0|…` subjects).
pub fn check_user_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.chars().count() > MAX_USER_ID_LEN {
        return Err(IdError::TooLong(MAX_USER_ID_LEN));
    }
    if id.chars().any(|c| c.is_control() || c == ':') {
        return Err(IdError::BadCharacter(
            "characters other than `:` and control characters",
        ));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// A fresh random (UUID v4) id.
            pub fn random() -> Self {
                Self(uuid::Uuid::new_v4().to_string())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

/// Ids whose text is checked with [`check_key_id`] when parsed or decoded from outside.
macro_rules! checked_id {
    ($name:ident) => {
        impl $name {
            /// Parses an id supplied from outside.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_key_id(&value)?;
                Ok(Self(value))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::parse(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Ids only this server mints and reads back (never supplied by a client): decoded as they are.
macro_rules! unchecked_id {
    ($name:ident) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self)
            }
        }
    };
}

string_id!(
    /// A channel (a video room), addressed by its UUID.
    ChannelId
);
checked_id!(ChannelId);
string_id!(
    /// A session: one WebSocket connection's identity, kept across resumes.
    SessionId
);
checked_id!(SessionId);
string_id!(
    /// One running signaling instance; the bus addresses instances.
    InstanceId
);
unchecked_id!(InstanceId);
string_id!(
    /// One accepted WebSocket connection. A session is held by exactly one connection at a time;
    /// a resume moves it to a new one.
    ConnectionId
);
unchecked_id!(ConnectionId);

/// Numeric id of a registered SFU node (numeric as in the original Mooyaho API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SfuServerId(pub u64);

impl fmt::Display for SfuServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_refuse_namespace_and_control_characters() {
        assert!(ChannelId::parse(uuid::Uuid::new_v4().to_string()).is_ok());
        assert!(SessionId::parse("a-b_c.9").is_ok());
        for bad in [
            "", "a:b", "x*", "a?", "[a]", "{tag}", "a b", "a\nb", "é", "a\u{0}b",
        ] {
            assert!(ChannelId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            SessionId::parse("a".repeat(MAX_KEY_ID_LEN + 1)),
            Err(IdError::TooLong(MAX_KEY_ID_LEN))
        );
        assert!(SessionId::parse("a".repeat(MAX_KEY_ID_LEN)).is_ok());
        let decoded: Result<ChannelId, _> = serde_json::from_str(r#""mooyaho:sfus""#);
        assert!(decoded.is_err());
    }

    #[test]
    fn user_ids_refuse_colons_and_control_characters() {
        assert!(check_user_id("ada@example.com").is_ok());
        assert!(check_user_id("auth0|5f1c").is_ok());
        for bad in ["", "user:1", "a\nb", "a\u{7f}"] {
            assert!(check_user_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_user_id(&"é".repeat(MAX_USER_ID_LEN)).is_ok());
        assert!(check_user_id(&"é".repeat(MAX_USER_ID_LEN + 1)).is_err());
    }
}
