//! The SFU fleet as this signaling instance sees it: one QUIC control connection per registered
//! node (certificate pinned by fingerprint, proofs of the cluster secret both ways in the hello),
//! reconnected with backoff; health from the connection and the node's load reports
//! ([`liveness`]); requests on fresh streams.

mod link;
mod liveness;
#[cfg(test)]
mod tests;
mod verifier;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mooyaho_control::{Load, Request, Response};
use tokio::sync::{mpsc, watch};

use crate::domain::ids::{InstanceId, SfuServerId};
use crate::domain::model::SfuServerRecord;
use crate::domain::ports::{NodeReport, NodeStatus, SfuError, SfuNodes, Store};
use liveness::Liveness;

/// How often the registry is re-read to connect new nodes and drop removed ones.
const RECONCILE: Duration = Duration::from_secs(1);

/// Node reports (link up/down, node events), tagged with the node.
pub type FleetEvents = mpsc::Receiver<(SfuServerId, NodeReport)>;

/// Connections to every registered node.
pub struct Fleet {
    endpoint: quinn::Endpoint,
    instance: InstanceId,
    secret: Arc<[u8]>,
    links: Mutex<HashMap<SfuServerId, LinkHandle>>,
    events: mpsc::Sender<(SfuServerId, NodeReport)>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

/// Shared between a link task and the fleet.
#[derive(Debug, Default)]
struct LinkShared {
    connection: Option<quinn::Connection>,
    /// Whether the node counts as alive (kept with `connection` and each load report).
    liveness: Liveness,
    last_load: Option<Load>,
    /// Why the last attempt failed (shown in logs).
    last_error: Option<String>,
}

struct LinkHandle {
    address: String,
    fingerprint: Option<String>,
    shared: Arc<Mutex<LinkShared>>,
    stop: watch::Sender<bool>,
}

impl Fleet {
    /// Starts reconciling with the store's registry. Node reports arrive on the returned receiver.
    pub fn start(
        store: Arc<dyn Store>,
        instance: InstanceId,
        secret: String,
    ) -> std::io::Result<(Arc<Self>, FleetEvents)> {
        let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().expect("valid address"))?;
        let (events, receiver) = mpsc::channel(1024);
        let fleet = Arc::new(Self {
            endpoint,
            instance,
            secret: secret.into_bytes().into(),
            links: Mutex::new(HashMap::new()),
            events,
        });
        let weak = Arc::downgrade(&fleet);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECONCILE);
            loop {
                tick.tick().await;
                let Some(fleet) = weak.upgrade() else { break };
                match store.sfu_servers().await {
                    Ok(records) => fleet.reconcile(&records),
                    Err(e) => tracing::debug!(error = %e, "fleet: registry unavailable"),
                }
            }
        });
        Ok((fleet, receiver))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SfuServerId, LinkHandle>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects to new or changed nodes and forgets removed ones.
    fn reconcile(&self, records: &[SfuServerRecord]) {
        let mut links = self.lock();
        links.retain(|id, link| {
            let keep = records.iter().any(|r| {
                r.id == *id && r.address == link.address && r.fingerprint == link.fingerprint
            });
            if !keep {
                let _ = link.stop.send(true);
            }
            keep
        });
        for record in records {
            if links.contains_key(&record.id) {
                continue;
            }
            let shared = Arc::new(Mutex::new(LinkShared::default()));
            let (stop, stopped) = watch::channel(false);
            let task = link::LinkTask {
                node: record.id,
                address: record.address.clone(),
                fingerprint: record.fingerprint.clone(),
                endpoint: self.endpoint.clone(),
                instance: self.instance.clone(),
                secret: self.secret.clone(),
                shared: shared.clone(),
                events: self.events.clone(),
                stopped,
                up: false,
            };
            tokio::spawn(task.run());
            links.insert(
                record.id,
                LinkHandle {
                    address: record.address.clone(),
                    fingerprint: record.fingerprint.clone(),
                    shared,
                    stop,
                },
            );
        }
    }

    fn shared(&self, node: SfuServerId) -> Option<Arc<Mutex<LinkShared>>> {
        self.lock().get(&node).map(|l| l.shared.clone())
    }
}

#[async_trait]
impl SfuNodes for Fleet {
    async fn call(&self, node: SfuServerId, request: Request) -> Result<Response, SfuError> {
        let connection = self
            .shared(node)
            .and_then(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .connection
                    .clone()
            })
            .ok_or(SfuError::Unreachable)?;
        link::call(&connection, &request).await
    }

    fn status(&self, node: SfuServerId) -> NodeStatus {
        let Some(shared) = self.shared(node) else {
            return NodeStatus::default();
        };
        let shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        NodeStatus {
            connected: shared.connection.is_some(),
            healthy: shared.liveness.healthy(Instant::now()),
            load: shared.last_load.clone(),
            last_error: shared.last_error.clone(),
        }
    }
}
