//! One node's control connection: connect, hello, read events, reconnect with backoff.
//!
//! The hello proves the cluster secret without sending it (`mooyaho_control::proof`): whoever
//! the registry names — even a rogue node registered through the REST API — receives only a
//! proof bound to this one connection, and must prove the secret in turn before the link
//! counts as up. Until it has, the node is given little: the welcome must arrive within
//! [`HELLO_TIMEOUT`] and fit in [`MAX_HELLO_FRAME`] bytes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mooyaho_control::proof::{EXPORTER_LABEL, EXPORTER_LEN};
use mooyaho_control::{
    ALPN, Event, MAX_FRAME, MAX_HELLO_FRAME, Proof, Request, Response, Role, read_frame,
    write_frame,
};
use tokio::sync::{mpsc, watch};

use super::LinkShared;
use super::verifier::PinnedFingerprint;
use crate::domain::ids::{InstanceId, SfuServerId};
use crate::domain::ports::{NodeReport, SfuError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the node has to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A node that dies without a word is known dead this long after its last packet (see
/// [`super::liveness`]).
const IDLE_TIMEOUT: Duration = mooyaho_control::LINK_IDLE_TIMEOUT;
const KEEP_ALIVE: Duration = mooyaho_control::LINK_KEEP_ALIVE;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) struct LinkTask {
    pub(super) node: SfuServerId,
    pub(super) address: String,
    pub(super) fingerprint: Option<String>,
    pub(super) endpoint: quinn::Endpoint,
    pub(super) instance: InstanceId,
    pub(super) secret: Arc<[u8]>,
    pub(super) shared: Arc<Mutex<LinkShared>>,
    pub(super) events: mpsc::Sender<(SfuServerId, NodeReport)>,
    pub(super) stopped: watch::Receiver<bool>,
    /// The link came up in the current session (reported down when the session ends).
    pub(super) up: bool,
}

impl LinkTask {
    pub(super) async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if *self.stopped.borrow() {
                return;
            }
            match self.session().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    // A link that was up going down is news (a node failing, or a false alarm
                    // under load); failed attempts to bring it up again are not.
                    if self.up {
                        tracing::warn!(node = %self.node, error = %e, "SFU control link down");
                    } else {
                        tracing::debug!(node = %self.node, error = %e, "SFU control link down");
                    }
                    self.set(|s| s.last_error = Some(e));
                }
            }
            // Unhealthy from this moment: before the fleet hears `LinkDown` and looks.
            self.set(|s| {
                s.connection = None;
                s.liveness.disconnected();
            });
            if std::mem::take(&mut self.up) {
                let _ = self.events.send((self.node, NodeReport::LinkDown)).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stopped.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn set(&self, f: impl FnOnce(&mut LinkShared)) {
        f(&mut self.shared.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// One connection's life: returns when it ends.
    async fn session(&mut self) -> Result<(), String> {
        let fingerprint = self
            .fingerprint
            .clone()
            .ok_or("no fingerprint registered: refusing to connect unpinned")?;
        let remote = resolve(&self.address).await?;
        let config = client_config(&fingerprint)?;
        let connecting = self
            .endpoint
            .connect_with(config, remote, "mooyaho-sfu")
            .map_err(|e| e.to_string())?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut exporter = [0; EXPORTER_LEN];
        connection
            .export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
            .map_err(|e| format!("no TLS exporter: {e:?}"))?;
        let hello = Request::Hello {
            instance: self.instance.0.clone(),
            proof: Proof::new(&self.secret, Role::Signaling, &exporter),
        };
        let reply = exchange(&connection, &hello, MAX_HELLO_FRAME, HELLO_TIMEOUT).await;
        let refusal = match reply.map_err(|e| e.to_string())? {
            Response::Welcome { proof, .. } => proof
                .verify(&self.secret, Role::Node, &exporter)
                .err()
                .map(|_| {
                    "the node did not prove it knows the cluster secret (a rogue node, or \
                     another secret)"
                        .to_owned()
                }),
            Response::Error { message, .. } => Some(format!("refused: {message}")),
            other => Some(format!("unexpected hello reply {other:?}")),
        };
        if let Some(refusal) = refusal {
            connection.close(2u32.into(), b"unauthorized");
            tracing::warn!(node = %self.node, address = %self.address, reason = %refusal,
                "SFU control link refused");
            return Err(refusal);
        }
        tracing::info!(node = %self.node, address = %self.address, "SFU control link up");
        self.set(|s| {
            s.connection = Some(connection.clone());
            s.liveness.connected(Instant::now());
            s.last_error = None;
        });
        self.up = true;
        if self
            .events
            .send((self.node, NodeReport::LinkUp))
            .await
            .is_err()
        {
            return Ok(());
        }
        let mut events = tokio::select! {
            uni = connection.accept_uni() => uni.map_err(|e| e.to_string())?,
            _ = self.stopped.changed() => return Ok(()),
        };
        loop {
            let event = tokio::select! {
                event = read_frame::<Event, _>(&mut events, MAX_FRAME) => {
                    event.map_err(|e| e.to_string())?
                }
                _ = self.stopped.changed() => {
                    connection.close(0u32.into(), b"node removed");
                    return Ok(());
                }
            };
            if let Event::Load(load) = &event {
                let load = load.clone();
                self.set(|s| {
                    s.liveness.reported(Instant::now());
                    s.last_load = Some(load);
                });
                continue;
            }
            if self
                .events
                .send((self.node, NodeReport::Event(event)))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
}

async fn resolve(address: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("resolving {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to nothing"))
}

fn client_config(fingerprint: &str) -> Result<quinn::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedFingerprint::new(fingerprint, provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // The node opens exactly one stream (its events) and never a bidirectional one.
    transport
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("small duration")))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(1u32.into())
        // No datagrams in this protocol: no buffer for the node to fill.
        .datagram_receive_buffer_size(None);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// One request on a fresh bidirectional stream.
pub(super) async fn call(
    connection: &quinn::Connection,
    request: &Request,
) -> Result<Response, SfuError> {
    exchange(connection, request, MAX_FRAME, REQUEST_TIMEOUT).await
}

/// A request and its reply of at most `max` bytes, within `timeout`.
async fn exchange(
    connection: &quinn::Connection,
    request: &Request,
    max: usize,
    timeout: Duration,
) -> Result<Response, SfuError> {
    let exchange = async {
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| SfuError::Failed(e.to_string()))?;
        write_frame(&mut send, request)
            .await
            .map_err(|e| SfuError::Failed(e.to_string()))?;
        let _ = send.finish();
        read_frame::<Response, _>(&mut recv, max)
            .await
            .map_err(|e| SfuError::Failed(e.to_string()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| SfuError::Failed("SFU node did not answer in time".into()))?
}
