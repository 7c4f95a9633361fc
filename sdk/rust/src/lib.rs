//! Rust server SDK for the Mooyaho REST API: what a service server calls to create channels,
//! bind users to sessions and manage the SFU fleet.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mooyaho_server_sdk::Error> {
//! use mooyaho_server_sdk::Mooyaho;
//! use serde_json::json;
//!
//! let mooyaho = Mooyaho::new("http://127.0.0.1:8080", "my-api-key")?;
//! let channel = mooyaho.create_channel(false).await?;
//! // The browser tells the service server its session id (from `connected`):
//! mooyaho.integrate_user("session-id", json!({"id": "user-1", "name": "Ada"})).await?;
//! # let _ = channel;
//! # Ok(()) }
//! ```
//!
//! Webhooks the server sends (`--webhook-url`) are checked with [`verify_webhook`].
//!
//! Each [`Mooyaho`] value carries its own base URL and key (the original SDK shared one global
//! HTTP client, so a second instance overwrote the first).

#![deny(unsafe_code)]

mod webhook;

pub use webhook::{
    MAX_SIGNATURE_HEADER_LEN, MAX_SIGNATURES, MIN_SECRET_LEN, SIGNATURE_HEADER, WebhookError,
    WebhookEvent, WebhookTrack, verify_webhook, verify_webhook_at,
};

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A client of one Mooyaho signaling deployment.
#[derive(Clone, Debug)]
pub struct Mooyaho {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status.
    #[error("{status}: {message}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The server's explanation (`message` of its JSON error body).
        message: String,
    },
    /// The request could not be sent or the response not read.
    #[error("transport error: {0}")]
    Transport(#[from] reqwest::Error),
    /// The base URL is unusable.
    #[error("invalid base URL: {0}")]
    InvalidUrl(String),
    /// A join token could not be signed (an empty secret or field).
    #[error("cannot sign join token: {0}")]
    JoinToken(String),
}

impl Error {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What a join token lets its holder do: open a session as `user_id` (no `integrateUser`
/// needed) that may enter only `channel`. Build with [`JoinToken::new`], sign with
/// [`create_join_token`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// The user's id (`sub`).
    pub user_id: String,
    /// The user's display name.
    pub name: Option<String>,
    /// The one channel the session may enter.
    pub channel: String,
    /// May publish media (SFU channels).
    pub publish: bool,
    /// May receive media (SFU subscribe offers).
    pub subscribe: bool,
    /// How long the token is accepted for connecting.
    pub ttl: Duration,
}

impl JoinToken {
    /// A token for `user_id` into `channel`, publish and subscribe allowed, valid one hour.
    pub fn new(user_id: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            name: None,
            channel: channel.into(),
            publish: true,
            subscribe: true,
            ttl: Duration::from_secs(3600),
        }
    }
}

#[derive(Serialize)]
struct JoinClaims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    channel: &'a str,
    publish: bool,
    subscribe: bool,
    iat: u64,
    exp: u64,
}

/// Signs a join token offline (HS256 with the server's `--token-secret`, by default its API key),
/// for the browser to connect with (`GET /websocket?token=…`, `new Mooyaho({ token })`).
pub fn create_join_token(secret: &str, token: &JoinToken) -> Result<String, Error> {
    if secret.is_empty() || token.user_id.is_empty() || token.channel.is_empty() {
        return Err(Error::JoinToken(
            "secret, user id and channel must not be empty".into(),
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::JoinToken("the system clock is before 1970".into()))?
        .as_secs();
    let claims = JoinClaims {
        sub: &token.user_id,
        name: token.name.as_deref(),
        channel: &token.channel,
        publish: token.publish,
        subscribe: token.subscribe,
        iat: now,
        exp: now.saturating_add(token.ttl.as_secs().max(1)),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| Error::JoinToken(e.to_string()))
}

/// A channel as returned by create/list.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// Channel id.
    pub id: String,
    /// Hosting SFU node, once placed.
    pub sfu_server_id: Option<u64>,
    /// Media goes through an SFU.
    pub sfu_enabled: bool,
    /// Member count (listings only).
    #[serde(default)]
    pub session_count: Option<usize>,
}

/// A member of a channel.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSession {
    /// Session id.
    pub session_id: String,
    /// Integrated user.
    pub user: Value,
}

/// A channel with its members.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelWithSessions {
    /// Channel id.
    pub id: String,
    /// Hosting SFU node, once placed.
    pub sfu_server_id: Option<u64>,
    /// Media goes through an SFU.
    pub sfu_enabled: bool,
    /// Live members.
    pub channel_sessions: Vec<ChannelSession>,
}

/// Result of a bulk delete.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkDeleteResult {
    /// Deleted ids.
    pub deleted: Vec<String>,
    /// Ids that matched no channel.
    pub not_found: Vec<String>,
}

/// Result of integrating a user.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegratedSession {
    /// The session.
    pub session_id: String,
    /// Its user now.
    pub user: Value,
}

/// A registered SFU node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SfuServer {
    /// Node id.
    pub id: u64,
    /// QUIC control address.
    pub address: String,
    /// Pinned certificate fingerprint.
    pub fingerprint: Option<String>,
    /// Excluded from new placements.
    pub disabled: bool,
    /// Draining.
    pub draining: bool,
    /// Draining and hosting no channel any more (`DELETE` needs no `force`).
    #[serde(default)]
    pub drained: bool,
    /// Health as this signaling instance sees it: `healthy`, `unhealthy`, `unreachable`, or
    /// `unknown` (the instance has no cluster secret).
    pub health: String,
    /// Why the last control connection attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The node's last load report.
    #[serde(default)]
    pub load: Option<SfuLoad>,
    /// Channels placed on the node.
    pub rooms: usize,
    /// Sessions in those channels.
    pub sessions: usize,
}

/// A node's live load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SfuLoad {
    /// Rooms hosted.
    pub rooms: u64,
    /// Sessions with a transport.
    pub sessions: u64,
    /// Transports.
    pub transports: u64,
    /// Datagrams received per second.
    pub packets_in_per_sec: u64,
    /// Datagrams sent per second.
    pub packets_out_per_sec: u64,
    /// CPU use, percent of one core.
    pub cpu_percent: u64,
    /// Packets dropped by the security layer since the node started.
    pub security_drops: u64,
    /// Control connections refused since the node started: too many waiting to authenticate.
    #[serde(default)]
    pub control_over_capacity: u64,
    /// Control connections closed since the node started: no hello in time.
    #[serde(default)]
    pub control_hello_timeouts: u64,
    /// Control connections refused since the node started: a bad hello or a wrong proof of the
    /// cluster secret.
    #[serde(default)]
    pub control_bad_hellos: u64,
    /// Relay links sending this node's publishers' tracks to other nodes of their channels.
    #[serde(default)]
    pub relay_links_out: u64,
    /// Relay links feeding this node other nodes' publishers' tracks.
    #[serde(default)]
    pub relay_links_in: u64,
}

/// Changes to an SFU node; `None` keeps a field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SfuServerPatch {
    /// New control address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// New certificate fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Exclude from / re-include in placement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Start or stop draining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draining: Option<bool>,
}

impl Mooyaho {
    /// A client for the deployment at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Result<Self, Error> {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::InvalidUrl(base_url));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base_url,
            api_key: api_key.into(),
        })
    }

    /// Creates a channel (`sfu_enabled` routes media through an SFU node).
    pub async fn create_channel(&self, sfu_enabled: bool) -> Result<Channel, Error> {
        let body = json!({ "sfuEnabled": sfu_enabled });
        self.request(Method::POST, "/channels", Some(&body)).await
    }

    /// One channel with its members.
    pub async fn get_channel(&self, id: &str) -> Result<ChannelWithSessions, Error> {
        self.request(Method::GET, &format!("/channels/{}", segment(id)), None)
            .await
    }

    /// Every channel with its member count.
    pub async fn list_channels(&self) -> Result<Vec<Channel>, Error> {
        self.request(Method::GET, "/channels", None).await
    }

    /// Deletes a channel; its members receive `channelClosed`.
    pub async fn delete_channel(&self, id: &str) -> Result<(), Error> {
        self.request_empty(Method::DELETE, &format!("/channels/{}", segment(id)), None)
            .await
    }

    /// Deletes several channels.
    pub async fn bulk_delete_channels(&self, ids: &[&str]) -> Result<BulkDeleteResult, Error> {
        let body = json!({ "ids": ids });
        self.request(Method::POST, "/channels/bulk-delete", Some(&body))
            .await
    }

    /// Binds `user` (an object with a string `id`) to a live session.
    pub async fn integrate_user(
        &self,
        session_id: &str,
        user: Value,
    ) -> Result<IntegratedSession, Error> {
        let path = format!("/sessions/{}", segment(session_id));
        self.request(Method::POST, &path, Some(&user)).await
    }

    /// Registers an SFU node.
    pub async fn create_sfu_server(
        &self,
        address: &str,
        fingerprint: Option<&str>,
    ) -> Result<SfuServer, Error> {
        let body = json!({ "address": address, "fingerprint": fingerprint });
        self.request(Method::POST, "/sfu-servers", Some(&body))
            .await
    }

    /// Every SFU node, least loaded first.
    pub async fn list_sfu_servers(&self) -> Result<Vec<SfuServer>, Error> {
        self.request(Method::GET, "/sfu-servers", None).await
    }

    /// One SFU node.
    pub async fn get_sfu_server(&self, id: u64) -> Result<SfuServer, Error> {
        self.request(Method::GET, &format!("/sfu-servers/{id}"), None)
            .await
    }

    /// Changes an SFU node.
    pub async fn update_sfu_server(
        &self,
        id: u64,
        patch: &SfuServerPatch,
    ) -> Result<SfuServer, Error> {
        let body = serde_json::to_value(patch).expect("patch serializes");
        self.request(Method::PATCH, &format!("/sfu-servers/{id}"), Some(&body))
            .await
    }

    /// Starts draining an SFU node.
    pub async fn drain_sfu_server(&self, id: u64) -> Result<SfuServer, Error> {
        self.request(Method::POST, &format!("/sfu-servers/{id}/drain"), None)
            .await
    }

    /// Removes an SFU node (`force` even while channels are placed on it).
    pub async fn delete_sfu_server(&self, id: u64, force: bool) -> Result<(), Error> {
        let path = format!("/sfu-servers/{id}?force={force}");
        self.request_empty(Method::DELETE, &path, None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, Error> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&self.api_key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or(text);
        Err(Error::Api { status, message })
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, Error> {
        Ok(self.send(method, path, body).await?.json().await?)
    }

    async fn request_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), Error> {
        self.send(method, path, body).await.map(drop)
    }
}

/// Percent-encodes a path segment so an id can never change the route.
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(segment("abc-123"), "abc-123");
        assert_eq!(segment("../sfu-servers"), "..%2Fsfu-servers");
        assert_eq!(segment("a b?c#d"), "a%20b%3Fc%23d");
    }

    #[test]
    fn base_url_must_be_http() {
        assert!(matches!(
            Mooyaho::new("localhost:8080", "k"),
            Err(Error::InvalidUrl(_))
        ));
        let a = Mooyaho::new("http://a:1/", "key-a").unwrap();
        let b = Mooyaho::new("http://b:2", "key-b").unwrap();
        // Two clients keep their own settings.
        assert_eq!(
            (a.base_url.as_str(), a.api_key.as_str()),
            ("http://a:1", "key-a")
        );
        assert_eq!(
            (b.base_url.as_str(), b.api_key.as_str()),
            ("http://b:2", "key-b")
        );
    }
}
