//! The composition root: picks the store and the bus once, here.

use std::path::Path;
use std::sync::Arc;

use crate::api::ws::PerIpConnections;
use crate::bus::{InProcessBus, RedisBus};
use crate::delivery::WireDelivery;
use crate::domain::events::Events;
use crate::domain::hub::Hub;
use crate::domain::ids::InstanceId;
use crate::domain::ports::{Bus, Store, StoreError};
use crate::domain::{Ports, Signaling, SignalingConfig};
use crate::metrics::Metrics;
use crate::sfu::Fleet;
use crate::store::{EmbeddedStore, KeySpace, RedisStore};
use crate::webhooks::Webhooks;

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS.
    pub url: String,
    /// Every key and pub/sub channel is under `{prefix}:`.
    pub prefix: String,
    /// PEM root certificates that verify a `rediss://` server instead of the platform's.
    pub ca_pem: Option<Vec<u8>>,
}

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The domain service.
    pub signaling: Arc<Signaling>,
    /// Open WebSocket connections per client IP address.
    pub ws_per_ip: Arc<PerIpConnections>,
}

impl AppState {
    /// State around an already composed domain service.
    pub fn new(signaling: Arc<Signaling>) -> Self {
        Self {
            signaling,
            ws_per_ip: Arc::default(),
        }
    }

    /// Single instance: embedded store (persisted under `data_dir` when given) and in-process bus.
    pub fn embedded(config: SignalingConfig, data_dir: Option<&Path>) -> Result<Self, StoreError> {
        let store = match data_dir {
            Some(dir) => EmbeddedStore::open(dir)?,
            None => EmbeddedStore::in_memory(),
        };
        let store: Arc<dyn Store> = Arc::new(store);
        let secret = config.cluster_secret.clone();
        let signaling = compose(
            config,
            store.clone(),
            Arc::new(InProcessBus::new()),
            Arc::new(Metrics::new()),
        )?;
        attach_fleet(&signaling, store, secret)?;
        Ok(Self::new(signaling))
    }

    /// One of many instances sharing state and fan-out through Redis.
    pub async fn redis(
        config: SignalingConfig,
        options: &RedisOptions,
    ) -> Result<Self, StoreError> {
        let keys = KeySpace::new(&options.prefix)
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis key prefix: {e}")))?;
        // The errors name no part of the URL: it may hold a password.
        let client = match &options.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                options.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(options.url.as_str()),
        }
        .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL or TLS settings: {e}")))?;
        let store = RedisStore::connect(client.clone(), keys.clone(), config.presence_ttl).await?;
        let bus = RedisBus::new(client, store.connection(), keys);
        let store: Arc<dyn Store> = Arc::new(store);
        let secret = config.cluster_secret.clone();
        let signaling = compose(
            config,
            store.clone(),
            Arc::new(bus),
            Arc::new(Metrics::new()),
        )?;
        attach_fleet(&signaling, store, secret)?;
        Ok(Self::new(signaling))
    }
}

/// Starts the domain service of a new instance over `store` and `bus`. Its domain events go to
/// the wire (rendered and delivered to sockets here or through the bus), then to the metrics,
/// then to the webhooks when `--webhook-url` names receivers.
pub fn compose(
    config: SignalingConfig,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
) -> Result<Arc<Signaling>, StoreError> {
    let instance = InstanceId::random();
    let hub = Arc::new(Hub::default());
    let wire = WireDelivery::start(instance.clone(), hub.clone(), bus.clone(), metrics.clone());
    let mut events = Events::new(vec![wire, metrics.clone()]);
    if !config.webhooks.urls.is_empty() {
        if config.webhooks.secret.is_none() {
            tracing::warn!(
                "no --webhook-secret: webhooks are signed with HMAC-SHA256(API key, \"mooyaho-webhook-v1\") \
                 in hex (`mooyaho dev` prints it); set --webhook-secret to choose your own"
            );
        }
        let webhooks = Webhooks::start(&config.webhooks, &config.webhook_secret(), metrics.clone())
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        events.subscribe(webhooks);
    }
    let ports = Ports {
        store,
        bus,
        hub,
        events,
    };
    Ok(Signaling::start(config, instance, ports, metrics))
}

/// Connects this instance to the SFU fleet when it has the cluster secret.
fn attach_fleet(
    signaling: &Arc<Signaling>,
    store: Arc<dyn Store>,
    secret: Option<String>,
) -> Result<(), StoreError> {
    let Some(secret) = secret else {
        return Ok(());
    };
    let (fleet, events) = Fleet::start(store, signaling.instance().clone(), secret)
        .map_err(|e| StoreError::Unavailable(format!("QUIC endpoint: {e}")))?;
    signaling.placement().attach(fleet, events);
    Ok(())
}
