//! The names of every Redis key and pub/sub channel, all under one prefix, so deployments that
//! share a Redis (`--redis-prefix`) never see each other's state or messages.

use crate::domain::ids::{ChannelId, IdError, InstanceId, SessionId, SfuServerId, check_key_id};

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "mooyaho";

/// Key and channel names under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    /// A key space under `prefix` (the characters of an id: `A-Z a-z 0-9 - _ .`, so one
    /// prefix can never be the start of another's keys, e.g. `a` and `a:b`).
    pub fn new(prefix: &str) -> Result<Self, IdError> {
        check_key_id(prefix)?;
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// `{prefix}:channel:{id}`: a channel's JSON record.
    pub fn channel(&self, id: &ChannelId) -> String {
        format!("{}:channel:{id}", self.prefix)
    }

    /// `{prefix}:channel:{id}:members`: a channel's member session ids.
    pub fn members(&self, id: &ChannelId) -> String {
        format!("{}:channel:{id}:members", self.prefix)
    }

    /// `{prefix}:channels`: every channel id.
    pub fn channels(&self) -> String {
        format!("{}:channels", self.prefix)
    }

    /// `{prefix}:session:{id}`: a session's hash.
    pub fn session(&self, id: &SessionId) -> String {
        format!("{}:session:{id}", self.prefix)
    }

    /// `{prefix}:call-rate:{id}`: direct calls offered to a session in the current window.
    pub fn call_rate(&self, id: &SessionId) -> String {
        format!("{}:call-rate:{id}", self.prefix)
    }

    /// `{prefix}:call-rate:{callee}:{caller}`: direct calls one caller offered to a session in
    /// the current window (ids have no `:`, so this never names another key).
    pub fn call_rate_from(&self, callee: &SessionId, caller: &SessionId) -> String {
        format!("{}:call-rate:{callee}:{caller}", self.prefix)
    }

    /// `{prefix}:sfu:{id}`: an SFU node's JSON record.
    pub fn sfu(&self, id: SfuServerId) -> String {
        format!("{}:sfu:{id}", self.prefix)
    }

    /// `{prefix}:sfu:{id}:link`: the fleet's recorded control-link state of a node.
    pub fn sfu_link(&self, id: SfuServerId) -> String {
        format!("{}:sfu:{id}:link", self.prefix)
    }

    /// `{prefix}:sfus`: every SFU node id.
    pub fn sfus(&self) -> String {
        format!("{}:sfus", self.prefix)
    }

    /// `{prefix}:sfu:next-id`: the SFU node id counter.
    pub fn sfu_next_id(&self) -> String {
        format!("{}:sfu:next-id", self.prefix)
    }

    /// `{prefix}:instance:{id}`: the pub/sub inbox of one signaling instance.
    pub fn inbox(&self, instance: &InstanceId) -> String {
        format!("{}:instance:{instance}", self.prefix)
    }
}

impl Default for KeySpace {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_under_the_prefix() {
        let keys = KeySpace::new("tenant-a").unwrap();
        let channel = ChannelId::from("c");
        let session = SessionId::from("s");
        for name in [
            keys.channel(&channel),
            keys.members(&channel),
            keys.channels(),
            keys.session(&session),
            keys.call_rate(&session),
            keys.call_rate_from(&session, &session),
            keys.sfu(SfuServerId(1)),
            keys.sfu_link(SfuServerId(1)),
            keys.sfus(),
            keys.sfu_next_id(),
            keys.inbox(&InstanceId::from("i")),
        ] {
            assert!(name.starts_with("tenant-a:"), "{name}");
        }
        assert_eq!(KeySpace::default().channels(), "mooyaho:channels");
        for bad in ["", "a:b", "a*", "{a}"] {
            assert!(KeySpace::new(bad).is_err(), "{bad:?}");
        }
    }
}
