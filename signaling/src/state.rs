//! The composition root: picks the store and the bus once, here.

use std::path::Path;
use std::sync::Arc;

use crate::bus::{InProcessBus, RedisBus};
use crate::domain::ports::StoreError;
use crate::domain::{Signaling, SignalingConfig};
use crate::metrics::Metrics;
use crate::store::{EmbeddedStore, RedisStore};

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The domain service.
    pub signaling: Arc<Signaling>,
}

impl AppState {
    /// Single instance: embedded store (persisted under `data_dir` when given) and in-process bus.
    pub fn embedded(config: SignalingConfig, data_dir: Option<&Path>) -> Result<Self, StoreError> {
        let store = match data_dir {
            Some(dir) => EmbeddedStore::open(dir)?,
            None => EmbeddedStore::in_memory(),
        };
        let signaling = Signaling::start(
            config,
            Arc::new(store),
            Arc::new(InProcessBus::new()),
            Arc::new(Metrics::new()),
        );
        Ok(Self { signaling })
    }

    /// One of many instances sharing state and fan-out through Redis at `url`.
    pub async fn redis(config: SignalingConfig, url: &str) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let store = RedisStore::connect(client.clone(), config.presence_ttl).await?;
        let bus = RedisBus::new(client, store.connection());
        let signaling = Signaling::start(
            config,
            Arc::new(store),
            Arc::new(bus),
            Arc::new(Metrics::new()),
        );
        Ok(Self { signaling })
    }
}
