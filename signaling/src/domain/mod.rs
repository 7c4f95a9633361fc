//! The signaling domain: [`Sessions`], [`Channels`], [`Relay`], [`Placement`] and [`SfuServers`],
//! composed by [`Signaling`] over the ports they share. It sees the outside world only through
//! [`ports::Store`], [`ports::Bus`], [`ports::SfuNodes`] and the local [`hub::Hub`], and tells it
//! what happened only through [`events::Events`]: it never builds a wire message.

pub mod error;
pub mod events;
pub mod hub;
pub mod ids;
pub mod join_token;
pub mod model;
pub mod ports;
pub mod relay_plan;

mod cascade;
mod channels;
mod failover;
mod fleet;
mod http_media;
mod node_queue;
mod placement;
mod relay;
mod sdp_tracks;
mod session;
mod shared;
pub(crate) mod token;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use events::Events;
use hub::Hub;
use ids::InstanceId;
use ports::{Bus, Store, StoreError};
use shared::Shared;

pub use channels::{BulkDeleteOutcome, ChannelDetail, ChannelEntry, ChannelSummary, Channels};
pub use fleet::{ADDRESS_PATTERN, FINGERPRINT_PATTERN, SfuServerPatch, SfuServerView, SfuServers};
pub use http_media::{CreatedResource, HttpMedia, HttpMediaError, HttpMediaKind};
pub use placement::{Placement, RelayInputs};
pub use relay::Relay;
pub use session::{ConnectOptions, Connection, Resumed, Sessions};

/// Behaviour settings of the signaling domain and its WebSocket edge.
#[derive(Clone, Debug)]
pub struct SignalingConfig {
    /// REST bearer key.
    pub api_key: String,
    /// Clients may `integrateUser` themselves.
    pub allow_anonymous: bool,
    /// Serve members of a channel whose node is full from another node (a span), with relay
    /// links between the channel's nodes. Off by default: the links an instance opened are
    /// known only to it (not shared through the store), so several instances would not keep
    /// them in step.
    pub span_nodes: bool,
    /// Addresses a node may name as its relay address (`acceptRelay`) besides its registered
    /// control host: the media addresses of nodes whose media is on another network than
    /// their control connection (outside review G6).
    pub relay_ips: Vec<std::net::IpAddr>,
    /// Interval of server pings; a socket silent for two intervals is reaped.
    pub ping_interval: Duration,
    /// How long a disconnected session stays resumable (and in its channel). Keep it at most
    /// half of `presence_ttl`: a dropped session's presence is no longer refreshed.
    pub resume_grace: Duration,
    /// How long a session's presence lasts in a shared store (Redis) without a refresh from its
    /// instance; the holding instance refreshes it every third of this. When an instance dies,
    /// its sessions leave their channels once this has passed.
    pub presence_ttl: Duration,
    /// Largest accepted text frame, bytes.
    pub max_frame_bytes: usize,
    /// Sustained client messages per second per connection.
    pub messages_per_second: u32,
    /// Burst of client messages allowed above the sustained rate.
    pub message_burst: u32,
    /// Largest accepted REST body, bytes.
    pub max_body_bytes: usize,
    /// Origins allowed by CORS; empty = CORS off.
    pub cors_origins: Vec<String>,
    /// Secret shared with the SFU nodes; without it this instance uses no SFU.
    pub cluster_secret: Option<String>,
    /// Open WebSocket connections allowed from one IP address (0 = no limit); the next upgrade
    /// is refused with 429. IPv6 addresses count per /64 (one host usually owns a whole /64).
    pub max_connections_per_ip: usize,
    /// Reverse proxies whose `X-Forwarded-For` is believed: when the TCP peer is inside one of
    /// these networks, the client address is the rightmost untrusted hop of that header.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a resume token is accepted. A connected session gets a new one (`resumeToken`)
    /// every half lifetime; keep it at least `2 × (resume_grace + 2 × ping_interval)` so a
    /// client that missed the last rotation can still resume within the grace window.
    pub resume_token_lifetime: Duration,
    /// Refused frames (over the rate, over the size limit, binary) tolerated per connection within
    /// `violation_window`; one more closes the socket with 1008.
    pub max_violations: u32,
    /// The window of `max_violations`.
    pub violation_window: Duration,
    /// Direct (channel-less) call offers one session may receive per `direct_call_window`, from
    /// everyone together; further offers get `rate_limited`.
    pub direct_calls_per_callee: u64,
    /// Direct call offers one caller may make to one callee per `direct_call_window`; offers
    /// over it are refused without counting towards `direct_calls_per_callee`, so one caller
    /// cannot use up a callee's budget. Keep it well under `direct_calls_per_callee`.
    pub direct_calls_per_caller: u64,
    /// The window of `direct_calls_per_callee` and `direct_calls_per_caller`.
    pub direct_call_window: Duration,
    /// HS256 secret of join tokens (`--token-secret`); `None` = the API key.
    pub token_secret: Option<String>,
    /// Signed webhooks to the backend (`--webhook-url`); none by default.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// TURN servers whose credentials every session gets (`connected {iceServers}`).
    pub turn: Option<crate::turn::TurnConfig>,
}

impl SignalingConfig {
    /// TURN credentials for `session`, fresh now (none without `--turn-url`). Handed only to
    /// integrated sessions: anyone can open a socket, and the relay is the operator's.
    pub fn ice_servers(&self, session: &ids::SessionId) -> Vec<crate::turn::IceServer> {
        self.turn
            .as_ref()
            .map(|turn| vec![turn.ice_server(&session.0, std::time::SystemTime::now())])
            .unwrap_or_default()
    }

    /// Defaults for everything but the API key.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            allow_anonymous: false,
            span_nodes: false,
            relay_ips: Vec::new(),
            ping_interval: Duration::from_secs(15),
            resume_grace: Duration::from_secs(15),
            presence_ttl: Duration::from_secs(30),
            max_frame_bytes: 64 * 1024,
            messages_per_second: 50,
            message_burst: 200,
            max_body_bytes: 64 * 1024,
            cors_origins: Vec::new(),
            cluster_secret: None,
            max_connections_per_ip: 64,
            trusted_proxies: Vec::new(),
            resume_token_lifetime: Duration::from_secs(600),
            max_violations: 50,
            violation_window: Duration::from_secs(10),
            direct_calls_per_callee: 30,
            direct_calls_per_caller: 3,
            direct_call_window: Duration::from_secs(10),
            token_secret: None,
            webhooks: crate::webhooks::WebhookSettings::default(),
            turn: None,
        }
    }

    /// The key that signs webhooks: the webhook secret, or one derived from the API key
    /// ([`crate::webhooks::signature::derived_secret`]), so receivers never hold the API key.
    pub fn webhook_secret(&self) -> String {
        match &self.webhooks.secret {
            Some(secret) => secret.clone(),
            None => crate::webhooks::signature::derived_secret(&self.api_key),
        }
    }

    /// The key that signs and verifies join tokens: `token_secret`, or the API key.
    pub fn join_token_key(&self) -> join_token::JoinTokenKey {
        join_token::JoinTokenKey::new(self.token_secret.as_deref().unwrap_or(&self.api_key))
    }

    /// The shortest token lifetime that lets a client that missed one rotation (its socket was
    /// dying) still resume within the grace window: `2 × (resume_grace + 2 × ping_interval)`.
    pub fn min_resume_token_lifetime(&self) -> Duration {
        (self.resume_grace + self.ping_interval * 2) * 2
    }
}

/// One signaling instance's domain service, shared by every request and socket: its parts, one
/// per concept, composed over the shared ports.
pub struct Signaling {
    shared: Arc<Shared>,
    sessions: Arc<Sessions>,
    channels: Arc<Channels>,
    relay: Relay,
    placement: Arc<Placement>,
    sfu_servers: SfuServers,
    http_media: HttpMedia,
}

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signaling")
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

/// What the domain is composed with (chosen in `state.rs`).
#[derive(Clone)]
pub struct Ports {
    /// Shared state.
    pub store: Arc<dyn Store>,
    /// Messages between instances (resume kicks; deliveries go through the events).
    pub bus: Arc<dyn Bus>,
    /// The sockets this instance holds.
    pub hub: Arc<Hub>,
    /// Where domain events go: the wire delivery first, then metrics and the rest.
    pub events: Events,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Signaling {
    /// Builds the service and starts its background task (presence refresh and member sweep).
    pub fn start(
        config: SignalingConfig,
        instance: InstanceId,
        ports: Ports,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let registry = Arc::new(http_media::Registry::default());
        let (ended, mut media_ended) = tokio::sync::mpsc::unbounded_channel();
        let mut events = ports.events;
        events.subscribe(Arc::new(http_media::EndWatch::new(registry.clone(), ended)));
        let shared = Arc::new(Shared {
            config,
            instance,
            store: ports.store,
            bus: ports.bus,
            hub: ports.hub,
            events,
            metrics,
        });
        let placement = Arc::new(Placement::new(shared.clone()));
        let channels = Arc::new(Channels::new(shared.clone(), placement.clone()));
        let sessions = Arc::new(Sessions::new(shared.clone(), channels.clone()));
        let http_media = HttpMedia::new(
            shared.clone(),
            sessions.clone(),
            channels.clone(),
            placement.clone(),
            registry,
        );
        let signaling = Arc::new(Self {
            http_media,
            relay: Relay::new(shared.clone()),
            sfu_servers: SfuServers::new(shared.clone(), placement.clone()),
            shared,
            sessions,
            channels,
            placement,
        });
        let weak = Arc::downgrade(&signaling);
        // WHIP/WHEP sessions whose media went (see `http_media::EndWatch`) end here, outside
        // the event stream that reported it.
        tokio::spawn(async move {
            while let Some(session) = media_ended.recv().await {
                let Some(signaling) = weak.upgrade() else {
                    break;
                };
                signaling.http_media.end_session(&session).await;
            }
        });
        let weak = Arc::downgrade(&signaling);
        // The sessions held here are refreshed three times per presence TTL.
        let refresh = signaling.shared.config.presence_ttl / 3;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(refresh);
            loop {
                tick.tick().await;
                let Some(signaling) = weak.upgrade() else {
                    break;
                };
                let shared = &signaling.shared;
                let held = shared.hub.sessions();
                match shared.store.touch_sessions(&held).await {
                    Ok(lost) => signaling.sessions.close_lost(&lost).await,
                    Err(e) => tracing::warn!(error = %e, "presence refresh failed"),
                }
                if let Err(e) = signaling.channels.sweep_expired_members().await {
                    tracing::warn!(error = %e, "sweeping expired channel members failed");
                }
            }
        });
        signaling
    }

    /// Session lives: connect, resume, token rotation, user binding.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Channels: administration and membership.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// Offer/answer/candidate relay between peers.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// SFU placement and the negotiation between sessions and nodes.
    pub fn placement(&self) -> &Arc<Placement> {
        &self.placement
    }

    /// WHIP publishers and WHEP viewers.
    pub fn http_media(&self) -> &HttpMedia {
        &self.http_media
    }

    /// The SFU fleet registry.
    pub fn sfu_servers(&self) -> &SfuServers {
        &self.sfu_servers
    }

    /// The settings.
    pub fn config(&self) -> &SignalingConfig {
        &self.shared.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// This instance's id.
    pub fn instance(&self) -> &InstanceId {
        &self.shared.instance
    }

    /// WebSocket connections held by this instance.
    pub fn connections(&self) -> usize {
        self.shared.hub.len()
    }

    /// Checks that the store answers (`/health`).
    pub async fn check_store(&self) -> Result<(), StoreError> {
        self.shared.store.channels().await.map(drop)
    }
}

/// Why a REST-facing domain operation failed. The API maps each variant to one status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The addressed resource does not exist (404).
    #[error("{0}")]
    NotFound(&'static str),
    /// The request's content is invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// Shared state is unavailable (503) or corrupt (500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod fleet_sim;
#[cfg(test)]
mod span_tests;
#[cfg(test)]
mod tests;
