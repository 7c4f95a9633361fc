//! Identifiers of the signaling domain. Each is a newtype so a channel id can never be passed where a
//! session id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

string_id!(
    /// A channel (a video room), addressed by its UUID.
    ChannelId
);
string_id!(
    /// A session: one WebSocket connection's identity, kept across resumes.
    SessionId
);
string_id!(
    /// One running signaling instance; the bus addresses instances.
    InstanceId
);
string_id!(
    /// One accepted WebSocket connection. A session is held by exactly one connection at a time;
    /// a resume moves it to a new one.
    ConnectionId
);

/// Numeric id of a registered SFU node (numeric as in the original Mooyaho API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SfuServerId(pub u64);

impl fmt::Display for SfuServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
