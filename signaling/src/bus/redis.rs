//! Redis pub/sub bus: instance `X` listens on `{prefix}:instance:X`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::domain::ids::InstanceId;
use crate::domain::ports::{Bus, Envelope, StoreError};
use crate::store::KeySpace;

/// Redis pub/sub transport for envelopes.
#[derive(Clone)]
pub struct RedisBus {
    client: redis::Client,
    publisher: ConnectionManager,
    keys: KeySpace,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").finish_non_exhaustive()
    }
}

impl RedisBus {
    /// A bus publishing through `publisher` and subscribing with fresh connections of `client`,
    /// its channels named in `keys`.
    pub fn new(client: redis::Client, publisher: ConnectionManager, keys: KeySpace) -> Self {
        Self {
            client,
            publisher,
            keys,
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, to: &InstanceId, envelope: &Envelope) -> Result<(), StoreError> {
        let payload =
            serde_json::to_string(envelope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.publisher
            .clone()
            .publish::<_, _, ()>(self.keys.inbox(to), payload)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn subscribe(self: Arc<Self>, instance: InstanceId, sink: mpsc::Sender<Envelope>) {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !sink.is_closed() {
                match self.listen(&instance, &sink).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => tracing::warn!(error = %e, "bus subscription lost; retrying"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
    }
}

impl RedisBus {
    /// Forwards messages until the connection drops.
    async fn listen(
        &self,
        instance: &InstanceId,
        sink: &mpsc::Sender<Envelope>,
    ) -> redis::RedisResult<()> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.keys.inbox(instance)).await?;
        tracing::debug!(%instance, "bus subscribed");
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let payload: String = message.get_payload()?;
            match serde_json::from_str::<Envelope>(&payload) {
                Ok(envelope) => {
                    if sink.send(envelope).await.is_err() {
                        return Ok(());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable bus envelope dropped"),
            }
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "pub/sub connection closed",
        )))
    }
}
