//! TURN credentials for clients, in coturn's `use-auth-secret` scheme (the "TURN REST API"
//! draft, draft-uberti-behave-turn-rest-00): the username is `<unix expiry>:<session id>`, the
//! password base64(HMAC-SHA1(secret, username)). The TURN server checks both with the same
//! secret and refuses the username once its expiry has passed; nothing is stored anywhere.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Serialize;

/// Shortest accepted TURN secret, characters (as for the other secrets).
pub const MIN_SECRET_LEN: usize = 16;

/// How long handed-out credentials stay valid by default. coturn checks the expiry on every
/// authenticated request, allocation refreshes included, so a PeerConnection relayed with them
/// keeps its relay for at most this long after its session's last connect or resume (choose a
/// lifetime longer than the calls); it also bounds how long a leaked pair is of use.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 3600);

/// Where clients relay through, and the secret shared with those TURN servers.
#[derive(Clone)]
pub struct TurnConfig {
    urls: Vec<String>,
    secret: String,
    ttl: Duration,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why a TURN setting was refused (at startup).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TurnConfigError {
    #[error("{0:?} is not a TURN URL: expected turn:HOST[:PORT][?transport=udp|tcp] or turns:…")]
    BadUrl(String),
    #[error(
        "TURN URLs need a shared secret (--turn-secret) of at least {MIN_SECRET_LEN} characters"
    )]
    Secret,
    #[error("the TURN credential lifetime must be between 1 minute and 7 days")]
    Ttl,
}

/// One `RTCIceServer` as the browser takes it (`connected {iceServers}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

impl TurnConfig {
    /// Validates every URL (RFC 7065 syntax), the secret and the lifetime.
    pub fn new(urls: &[String], secret: &str, ttl: Duration) -> Result<Self, TurnConfigError> {
        let urls = urls
            .iter()
            .map(|url| parse_url(url.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if secret.chars().count() < MIN_SECRET_LEN {
            return Err(TurnConfigError::Secret);
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(7 * 86_400)).contains(&ttl) {
            return Err(TurnConfigError::Ttl);
        }
        Ok(Self {
            urls,
            secret: secret.to_owned(),
            ttl,
        })
    }

    /// Credentials for `session`, valid until `now + ttl`.
    pub fn ice_server(&self, session: &str, now: SystemTime) -> IceServer {
        let expiry = (now + self.ttl)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let username = format!("{expiry}:{session}");
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            self.secret.as_bytes(),
        );
        let tag = ring::hmac::sign(&key, username.as_bytes());
        IceServer {
            urls: self.urls.clone(),
            username,
            credential: base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        }
    }
}

/// A `turn:`/`turns:` URI (RFC 7065): a host (name, IPv4 or bracketed IPv6), an optional port,
/// and optionally `?transport=udp|tcp`. Anything else would reach every browser and make its
/// `RTCPeerConnection` constructor throw, so it is refused at startup.
pub fn parse_url(url: &str) -> Result<String, TurnConfigError> {
    let bad = || TurnConfigError::BadUrl(url.to_owned());
    let rest = url
        .strip_prefix("turn:")
        .or_else(|| url.strip_prefix("turns:"))
        .ok_or_else(bad)?;
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    if !matches!(query, None | Some("transport=udp" | "transport=tcp")) {
        return Err(bad());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (address, after) = v6.split_once(']').ok_or_else(bad)?;
        address.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        // Only `:PORT` may follow the bracket.
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
        };
        (address, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(url.to_owned())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TurnConfig {
        let urls = [
            "turn:127.0.0.1:3478".to_owned(),
            "turns:turn.example.com:5349?transport=tcp".to_owned(),
        ];
        TurnConfig::new(&urls, "0123456789abcdef", Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn credentials_follow_coturns_rest_scheme() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let server = config().ice_server("session-1", now);
        assert_eq!(server.username, "1700003600:session-1");
        // base64(HMAC-SHA1("0123456789abcdef", "1700003600:session-1")), computed independently
        // with Python's hmac module.
        assert_eq!(server.credential, "tFFZzfPuBabsy/94zztKiySh+eQ=");
        assert_eq!(server.urls.len(), 2);
        let json = serde_json::to_value(&server).unwrap();
        assert_eq!(json["urls"][0], "turn:127.0.0.1:3478");
    }

    #[test]
    fn urls_secrets_and_lifetimes_are_checked() {
        for good in [
            "turn:turn.example.com",
            "turn:10.0.0.1:3478?transport=udp",
            "turns:[2001:db8::1]:5349?transport=tcp",
            "turn:[::1]",
        ] {
            assert_eq!(parse_url(good).as_deref(), Ok(good), "{good}");
        }
        for bad in [
            "stun:turn.example.com",
            "http://turn.example.com",
            "turn:",
            "turn:host:0",
            "turn:host:99999",
            "turn:host:3478?transport=sctp",
            "turn:host name",
            "turn:[not-v6]:3478",
            "turn:[::1]junk",
            "turn:[::1]:",
            "turn:host\"><script>",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let urls = ["turn:127.0.0.1".to_owned()];
        assert_eq!(
            TurnConfig::new(&urls, "short", DEFAULT_TTL).unwrap_err(),
            TurnConfigError::Secret
        );
        assert_eq!(
            TurnConfig::new(&urls, "0123456789abcdef", Duration::from_secs(1)).unwrap_err(),
            TurnConfigError::Ttl
        );
        assert!(
            !format!("{:?}", config()).contains("0123456789abcdef"),
            "the secret stays out of logs"
        );
    }
}
