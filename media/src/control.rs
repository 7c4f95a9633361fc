//! The node's QUIC control server: signaling instances connect, prove the cluster secret, then
//! send one request per bidirectional stream; the node pushes events on a unidirectional stream.
//! The node's TLS certificate is self-signed; clients pin its SHA-256 fingerprint.
//!
//! Until a connection has proved the secret it is a stranger's, and it costs the node little: a
//! source address must first prove it receives our packets (a QUIC Retry: spoofed Initials get
//! one stateless packet and nothing else); then at most [`MAX_UNAUTHENTICATED_PER_SOURCE`] such
//! connections per source address and [`ControlConfig::max_unauthenticated`] in all (more are
//! refused before any TLS work), one bidirectional stream and a small receive window each, a
//! hello of at most [`mooyaho_control::MAX_HELLO_FRAME`] bytes, [`HELLO_TIMEOUT`] from its first
//! packet to a verified hello and [`REPLY_TIMEOUT`] for the node's answer to be taken (a peer
//! that never opens its receive window cannot keep its slot). Every refusal is counted (reported
//! in [`Load`]) and logged.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mooyaho_control::proof::{EXPORTER_LABEL, EXPORTER_LEN};
use mooyaho_control::{
    ALPN, ErrorCode, Event, FrameError, HistogramCounts, Load, MAX_FRAME, MAX_HELLO_FRAME,
    MediaCounters, Proof, ReadError, RelayKeyHex, Request, Response, Role, VERSION, read_frame,
    write_frame,
};
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream, VarInt};
use tokio::sync::{Semaphore, mpsc};

use crate::node::{Node, NodeStats, RoomKey};
use crate::sdp::SdpError;
use crate::worker::{MediaError, NodeEvent, RelayKeys, WorkerStats};
use mooyaho_net::relay_frame::RelayKey;

/// How the control server runs.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// The cluster secret every client must prove it knows.
    pub secret: String,
    /// Connections allowed at once between their first packet and a verified hello; more are
    /// refused.
    pub max_unauthenticated: usize,
    /// The certificate and key clients pin (by fingerprint).
    pub identity: ControlIdentity,
}

/// The node's control certificate (self-signed, DER) and its private key (PKCS#8 DER): what a
/// signaling server pins at registration, so a node that keeps it keeps its place in the fleet.
#[derive(Clone)]
pub struct ControlIdentity {
    certificate: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for ControlIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlIdentity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Files of a [`ControlIdentity`] in a data directory.
const CERTIFICATE_FILE: &str = "control-certificate.der";
const KEY_FILE: &str = "control-key.der";

impl ControlIdentity {
    /// A fresh self-signed identity.
    pub fn generate() -> Result<Self, ControlError> {
        let certified = rcgen::generate_simple_self_signed(vec!["mooyaho-sfu".to_owned()])
            .map_err(|e| ControlError(e.to_string()))?;
        Ok(Self {
            certificate: certified.cert.der().to_vec(),
            key: certified.signing_key.serialize_der(),
        })
    }

    /// The identity kept in `dir`, or a new one written there (the key readable by its owner
    /// only). Returns whether it was created. A half-written or unreadable identity is an error,
    /// not silently replaced: replacing it would change the node's fingerprint.
    pub fn load_or_create(dir: &std::path::Path) -> Result<(Self, bool), ControlError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;

        let error = |what: &str, e: std::io::Error| ControlError(format!("{what}: {e}"));
        let (certificate, key) = (dir.join(CERTIFICATE_FILE), dir.join(KEY_FILE));
        match (certificate.exists(), key.exists()) {
            (true, true) => {
                let identity = Self {
                    certificate: std::fs::read(&certificate)
                        .map_err(|e| error(&certificate.display().to_string(), e))?,
                    key: std::fs::read(&key).map_err(|e| error(&key.display().to_string(), e))?,
                };
                identity.check()?;
                Ok((identity, false))
            }
            (false, false) => {
                std::fs::create_dir_all(dir).map_err(|e| error(&dir.display().to_string(), e))?;
                let identity = Self::generate()?;
                let write = |path: &std::path::Path, bytes: &[u8], mode: u32| {
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(mode)
                        .open(path)?;
                    file.write_all(bytes)?;
                    file.sync_all()
                };
                write(&key, &identity.key, 0o600)
                    .map_err(|e| error(&key.display().to_string(), e))?;
                write(&certificate, &identity.certificate, 0o644)
                    .map_err(|e| error(&certificate.display().to_string(), e))?;
                Ok((identity, true))
            }
            _ => Err(ControlError(format!(
                "{} holds only one of {CERTIFICATE_FILE} and {KEY_FILE}; restore the other or \
                 remove both to start with a new identity (a new fingerprint)",
                dir.display()
            ))),
        }
    }

    /// The SHA-256 fingerprint clients pin.
    pub fn fingerprint(&self) -> String {
        mooyaho_control::fingerprint(&self.certificate)
    }

    /// The certificate and key form a usable TLS identity.
    fn check(&self) -> Result<(), ControlError> {
        self.tls_config().map(drop)
    }

    fn tls_config(&self) -> Result<rustls::ServerConfig, ControlError> {
        let der = rustls::pki_types::CertificateDer::from(self.certificate.clone());
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(self.key.clone());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ControlError(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![der], key.into())
            .map_err(|e| ControlError(format!("the control certificate or key is unusable: {e}")))
    }
}

/// Default of [`ControlConfig::max_unauthenticated`]: a few signaling instances reconnecting at
/// once fit many times over.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 16;

/// Time from a connection's first packet to its verified hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(4);

/// Time the node's answer to a hello (welcome or refusal) has to be taken by the peer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections allowed at once from one source address (one IPv6 /64) before they authenticate:
/// one source cannot take the slots of [`ControlConfig::max_unauthenticated`] from everyone else.
pub const MAX_UNAUTHENTICATED_PER_SOURCE: usize = 2;

/// A running control server.
#[derive(Debug)]
pub struct ControlServer {
    endpoint: Endpoint,
    fingerprint: String,
}

/// A failure to start the server.
#[derive(Debug, thiserror::Error)]
#[error("control server: {0}")]
pub struct ControlError(pub String);

/// Events for each connected client; the node sends a session's events to the client that last
/// asked about that session, and load reports to everyone.
#[derive(Default)]
struct Clients {
    next_id: u64,
    senders: HashMap<u64, mpsc::UnboundedSender<Event>>,
    owners: HashMap<(String, String), u64>,
}

/// Idle timeout: a client that stops answering is dropped (and sees the node as unhealthy) fast.
const IDLE_TIMEOUT: Duration = mooyaho_control::LINK_IDLE_TIMEOUT;
const KEEP_ALIVE: Duration = mooyaho_control::LINK_KEEP_ALIVE;
const LOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Flow-control window of a connection before it authenticates: room for the hello, not for a
/// stranger's megabytes.
const UNAUTHENTICATED_RECEIVE_WINDOW: u32 = 16 * 1024;
/// Flow-control window of an authenticated connection: several requests of [`MAX_FRAME`] in flight.
const RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;
/// Requests an authenticated client may have in flight (one bidirectional stream each). A join
/// makes up to three (subscribe offer, answer, speakers) that each wait for a worker, so a wave
/// of 100 joins a second into a busy worker keeps hundreds in flight; a request over the limit
/// waits for a stream on the client before the node sees it (64 made a 1,000-viewer wave's
/// requests queue there until signaling's 10 s timeout). An authenticated client holds the
/// cluster secret; the connection's receive window bounds what its requests can buffer.
const MAX_REQUESTS_IN_FLIGHT: u32 = 4096;

/// Why a connection that never authenticated was let go: counted, reported in [`Load`].
#[derive(Debug, Default)]
struct Refusals {
    over_capacity: RefusalCount,
    over_source_limit: RefusalCount,
    hello_timeouts: RefusalCount,
    bad_hellos: RefusalCount,
}

/// One kind of refusal: a counter, and when it was last logged — strangers can refuse
/// themselves as fast as they can connect, so each kind logs at most once a second (with the
/// running total).
#[derive(Debug, Default)]
struct RefusalCount {
    total: AtomicU64,
    logged: Mutex<Option<Instant>>,
}

impl RefusalCount {
    /// Counts one; the total when this one should be logged.
    fn bump(&self) -> Option<u64> {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return None;
        }
        *logged = Some(Instant::now());
        Some(total)
    }

    fn get(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

impl Refusals {
    fn over_capacity(&self, remote: SocketAddr, limit: usize) {
        if let Some(total) = self.over_capacity.bump() {
            tracing::warn!(
                %remote,
                limit,
                since_start = total,
                "control connection refused: too many connections waiting to authenticate"
            );
        }
    }

    fn over_source_limit(&self, remote: SocketAddr) {
        if let Some(total) = self.over_source_limit.bump() {
            tracing::warn!(
                %remote,
                limit = MAX_UNAUTHENTICATED_PER_SOURCE,
                since_start = total,
                "control connection refused: too many connections from this source waiting to authenticate"
            );
        }
    }

    fn hello_timeout(&self, remote: SocketAddr) {
        if let Some(total) = self.hello_timeouts.bump() {
            tracing::warn!(
                %remote,
                timeout = ?HELLO_TIMEOUT,
                since_start = total,
                "control connection closed: no hello in time"
            );
        }
    }

    fn bad_hello(&self, remote: SocketAddr, reason: &str) {
        if let Some(total) = self.bad_hellos.bump() {
            tracing::warn!(%remote, reason, since_start = total, "control connection refused: bad hello");
        }
    }

    fn fill(&self, load: &mut Load) {
        load.control_over_capacity = self.over_capacity.get() + self.over_source_limit.get();
        load.control_hello_timeouts = self.hello_timeouts.get();
        load.control_bad_hellos = self.bad_hellos.get();
    }
}

/// QUIC application close codes.
mod close {
    pub(super) const STOPPING: u32 = 0;
    pub(super) const HELLO_TIMEOUT: u32 = 1;
    pub(super) const REFUSED: u32 = 2;
}

impl ControlServer {
    /// Binds the endpoint and serves `node` until the returned server is dropped.
    pub fn start(
        node: Arc<Node>,
        events: mpsc::UnboundedReceiver<NodeEvent>,
        config: ControlConfig,
    ) -> Result<Self, ControlError> {
        let fingerprint = config.identity.fingerprint();
        let mut tls = config.identity.tls_config()?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| ControlError(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        // Limits for strangers; `authenticate` raises them once the hello verifies.
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("small duration")))
            .keep_alive_interval(Some(KEEP_ALIVE))
            .max_concurrent_bidi_streams(1u32.into())
            .max_concurrent_uni_streams(0u32.into())
            .receive_window(UNAUTHENTICATED_RECEIVE_WINDOW.into())
            // No datagrams in this protocol: no buffer for a stranger to fill.
            .datagram_receive_buffer_size(None)
            .stream_receive_window(VarInt::from_u32((MAX_FRAME + 64 * 1024) as u32));
        server.transport_config(Arc::new(transport));
        let endpoint =
            Endpoint::server(server, config.listen).map_err(|e| ControlError(e.to_string()))?;
        let clients = Arc::new(Mutex::new(Clients::default()));
        let refusals = Arc::new(Refusals::default());
        let names = RoomNames::new();
        tokio::spawn(route_events(events, clients.clone(), node.clone(), names));
        tokio::spawn(report_load(node.clone(), clients.clone(), refusals.clone()));
        let accept = endpoint.clone();
        let secret: Arc<[u8]> = config.secret.into_bytes().into();
        let limit = config.max_unauthenticated.max(1);
        let unauthenticated = Arc::new(Semaphore::new(limit));
        let sources = Arc::new(Mutex::new(Sources::default()));
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                let remote = incoming.remote_address();
                // A source must show it receives our packets before it costs any state: a
                // spoofed Initial gets one stateless Retry, and its sender never comes back.
                if !incoming.remote_address_validated() {
                    if let Err(validated) = incoming.retry() {
                        validated.into_incoming().refuse();
                    }
                    continue;
                }
                // Refused before any TLS work: a flood of strangers costs one packet each.
                let Some(source) = SourceSlot::take(&sources, remote.ip()) else {
                    refusals.over_source_limit(remote);
                    incoming.refuse();
                    continue;
                };
                let Ok(permit) = unauthenticated.clone().try_acquire_owned() else {
                    refusals.over_capacity(remote, limit);
                    incoming.refuse();
                    continue;
                };
                let (node, clients, refusals, secret) = (
                    node.clone(),
                    clients.clone(),
                    refusals.clone(),
                    secret.clone(),
                );
                tokio::spawn(async move {
                    let workers = node.addresses().len();
                    let authenticated = authenticate(incoming, &secret, workers, &refusals).await;
                    drop((permit, source));
                    if let Some(connection) = authenticated {
                        serve(connection, node, clients, refusals, names).await;
                    }
                });
            }
        });
        Ok(Self {
            endpoint,
            fingerprint,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// SHA-256 fingerprint of the control certificate (what registration pins).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.endpoint
            .close(close::STOPPING.into(), b"node stopping");
    }
}

fn lock(clients: &Mutex<Clients>) -> std::sync::MutexGuard<'_, Clients> {
    clients.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unauthenticated connections per source (see [`source_of`]).
#[derive(Default)]
struct Sources(HashMap<IpAddr, usize>);

/// One unauthenticated connection counted against its source until dropped.
struct SourceSlot {
    sources: Arc<Mutex<Sources>>,
    source: IpAddr,
}

impl SourceSlot {
    /// A slot for a connection from `ip`, or `None` when its source already has
    /// [`MAX_UNAUTHENTICATED_PER_SOURCE`].
    fn take(sources: &Arc<Mutex<Sources>>, ip: IpAddr) -> Option<Self> {
        let source = source_of(ip);
        let mut counts = sources.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.0.entry(source).or_default();
        if *count >= MAX_UNAUTHENTICATED_PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(Self {
            sources: sources.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.0.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.0.remove(&self.source);
            }
        }
    }
}

/// What one source is: an IPv4 address, or an IPv6 /64 (what one host is usually given).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// Takes a new connection through the TLS handshake and the hello, within [`HELLO_TIMEOUT`]:
/// the connection once its proof verified (the node's proof sent back), or `None` after
/// counting, logging and closing it.
async fn authenticate(
    incoming: Incoming,
    secret: &[u8],
    workers: usize,
    refusals: &Refusals,
) -> Option<Connection> {
    let remote = incoming.remote_address();
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let connection = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(connection)) => connection,
        // A handshake left unfinished dies of the idle timeout before the hello's.
        Ok(Err(quinn::ConnectionError::TimedOut)) => {
            refusals.hello_timeout(remote);
            return None;
        }
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "control handshake failed");
            return None;
        }
        Err(_) => {
            refusals.hello_timeout(remote);
            return None;
        }
    };
    let exchange = async {
        let (send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
        let hello = read_frame::<Request, _>(&mut recv, MAX_HELLO_FRAME).await;
        Ok::<_, String>((send, hello))
    };
    let (mut send, hello) = match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => {
            refusals.hello_timeout(remote);
            connection.close(close::HELLO_TIMEOUT.into(), b"no hello in time");
            return None;
        }
        Ok(Err(gone)) => {
            refusals.bad_hello(remote, &format!("closed before its hello: {gone}"));
            return None;
        }
        Ok(Ok(exchange)) => exchange,
    };
    let mut exporter = [0; EXPORTER_LEN];
    if let Err(e) = connection.export_keying_material(&mut exporter, EXPORTER_LABEL, b"") {
        tracing::error!(%remote, error = ?e, "control connection: no TLS exporter");
        connection.close(close::REFUSED.into(), b"internal error");
        return None;
    }
    let refusal = match hello {
        Ok(Request::Hello { instance, proof }) => {
            if proof.verify(secret, Role::Signaling, &exporter).is_ok() {
                connection.set_max_concurrent_bi_streams(MAX_REQUESTS_IN_FLIGHT.into());
                connection.set_receive_window(RECEIVE_WINDOW.into());
                let welcome = Response::Welcome {
                    workers,
                    proof: Proof::new(secret, Role::Node, &exporter),
                };
                // A peer that never opens its receive window must not keep its slot.
                match tokio::time::timeout(REPLY_TIMEOUT, write_frame(&mut send, &welcome)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return None,
                    Err(_) => {
                        refusals.hello_timeout(remote);
                        connection.close(close::HELLO_TIMEOUT.into(), b"welcome not taken in time");
                        return None;
                    }
                }
                let _ = send.finish();
                tracing::info!(%remote, %instance, "signaling instance connected");
                return Some(connection);
            }
            (
                ErrorCode::Unauthorized,
                "the proof of the cluster secret does not verify".to_owned(),
            )
        }
        Ok(_) => (
            ErrorCode::BadRequest,
            "the first request must be a hello".to_owned(),
        ),
        Err(ReadError::Frame(FrameError::Version(version))) => (
            ErrorCode::Unauthorized,
            format!("this node speaks control protocol version {VERSION}, the client {version}"),
        ),
        Err(e) => (ErrorCode::BadRequest, e.to_string()),
    };
    let (code, message) = refusal;
    refusals.bad_hello(remote, &message);
    // Let the error frame arrive before the connection (and its unsent data) goes, but no longer
    // than REPLY_TIMEOUT: a peer that never opens its receive window must not keep its slot.
    let refuse = async {
        write_frame(&mut send, &Response::Error { code, message })
            .await
            .ok()?;
        send.finish().ok()?;
        send.stopped().await.ok()
    };
    let _ = tokio::time::timeout(REPLY_TIMEOUT, refuse).await;
    connection.close(close::REFUSED.into(), b"unauthorized");
    None
}

/// Serves an authenticated client until its connection ends.
async fn serve(
    connection: Connection,
    node: Arc<Node>,
    clients: Arc<Mutex<Clients>>,
    refusals: Arc<Refusals>,
    names: RoomNames,
) {
    let remote = connection.remote_address();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let id = {
        let mut clients = lock(&clients);
        clients.next_id += 1;
        let id = clients.next_id;
        clients.senders.insert(id, events_tx);
        id
    };
    let event_connection = connection.clone();
    let event_task = tokio::spawn(async move {
        let Ok(mut uni) = event_connection.open_uni().await else {
            return;
        };
        while let Some(event) = events_rx.recv().await {
            if write_frame(&mut uni, &event).await.is_err() {
                break;
            }
        }
    });
    while let Ok((send, recv)) = connection.accept_bi().await {
        let (node, clients, refusals) = (node.clone(), clients.clone(), refusals.clone());
        tokio::spawn(async move {
            answer(send, recv, &node, &clients, &refusals, names, id).await;
        });
    }
    event_task.abort();
    let mut clients = lock(&clients);
    clients.senders.remove(&id);
    clients.owners.retain(|_, owner| *owner != id);
    tracing::info!(%remote, "signaling instance disconnected");
}

async fn answer(
    mut send: SendStream,
    mut recv: RecvStream,
    node: &Node,
    clients: &Mutex<Clients>,
    refusals: &Refusals,
    names: RoomNames,
    client: u64,
) {
    let response = match read_frame::<Request, _>(&mut recv, MAX_FRAME).await {
        Ok(request) => {
            if let Some(key) = session_key(&request) {
                lock(clients).owners.insert(key, client);
            }
            handle(node, refusals, names, request).await
        }
        Err(e) => Response::Error {
            code: ErrorCode::BadRequest,
            message: e.to_string(),
        },
    };
    if write_frame(&mut send, &response).await.is_ok() {
        let _ = send.finish();
    }
}

fn session_key(request: &Request) -> Option<(String, String)> {
    match request {
        Request::Publish { room, session, .. }
        | Request::SubscribeOffer { room, session }
        | Request::SubscribeAnswer { room, session, .. }
        | Request::SubscribeClientOffer { room, session, .. } => {
            Some((room.clone(), session.clone()))
        }
        _ => None,
    }
}

async fn handle(node: &Node, refusals: &Refusals, names: RoomNames, request: Request) -> Response {
    let result = match request {
        Request::Hello { .. } => {
            return Response::Error {
                code: ErrorCode::BadRequest,
                message: "hello twice".into(),
            };
        }
        Request::CreateRoom => node.create_room().await.map(|room| Response::Room {
            room: names.name(room),
        }),
        Request::Publish {
            room,
            session,
            offer,
        } => match names.key(&room) {
            Ok(room) => node
                .publish(room, &session, &offer)
                .await
                .map(|sdp| Response::Sdp { sdp: Some(sdp) }),
            Err(e) => Err(e),
        },
        Request::SubscribeOffer { room, session } => match names.key(&room) {
            Ok(room) => node
                .subscribe_offer(room, &session)
                .await
                .map(|sdp| Response::Sdp { sdp }),
            Err(e) => Err(e),
        },
        Request::SubscribeClientOffer {
            room,
            session,
            offer,
            publisher,
        } => match names.key(&room) {
            Ok(room) => node
                .subscribe_client_offer(room, &session, &offer, publisher.as_deref())
                .await
                .map(|sdp| Response::Sdp { sdp: Some(sdp) }),
            Err(e) => Err(e),
        },
        Request::SubscribeAnswer {
            room,
            session,
            answer,
        } => match names.key(&room) {
            Ok(room) => node
                .subscribe_answer(room, &session, &answer)
                .await
                .map(|()| Response::Done),
            Err(e) => Err(e),
        },
        Request::SetSubscription {
            room,
            session,
            publisher,
            video,
            audio,
        } => match names.key(&room) {
            Ok(room) => node
                .set_subscription(room, &session, &publisher, video, audio)
                .await
                .map(|()| Response::Done),
            Err(e) => Err(e),
        },
        Request::CloseSession { room, session } => match names.key(&room) {
            Ok(room) => node
                .close_session(room, &session)
                .await
                .map(|()| Response::Done),
            Err(e) => Err(e),
        },
        Request::Speakers { room } => match names.key(&room) {
            Ok(room) => node
                .speakers(room)
                .await
                .map(|speakers| Response::Speakers { speakers }),
            Err(e) => Err(e),
        },
        Request::CloseRoom { room } => match names.key(&room) {
            Ok(room) => node.close_room(room).await.map(|()| Response::Done),
            Err(e) => Err(e),
        },
        // Asked for explicitly: the answer waits for every worker's fresh stats.
        Request::Stats => match node.stats().await {
            Ok(stats) => {
                return Response::Stats(load(node, stats, refusals, &mut LoadMeter::default()));
            }
            Err(e) => Err(e),
        },
        Request::Drain { draining } => {
            node.set_draining(draining);
            tracing::info!(draining, "drain state changed by the control plane");
            return Response::Done;
        }
        Request::AcceptRelay {
            room,
            link,
            publisher,
            send_key,
            receive_key,
        } => match (names.key(&room), relay_keys(&send_key, &receive_key)) {
            (Ok(room), Ok(keys)) => {
                node.accept_relay(room, link, &publisher, keys)
                    .await
                    .map(|address| Response::RelayAddress {
                        address: address.to_string(),
                    })
            }
            (Err(e), _) => Err(e),
            (_, Err(response)) => return *response,
        },
        Request::OpenRelay {
            room,
            link,
            publisher,
            address,
            send_key,
            receive_key,
        } => {
            let keys = match relay_keys(&send_key, &receive_key) {
                Ok(keys) => keys,
                Err(response) => return *response,
            };
            let Ok(peer) = address.parse() else {
                return Response::Error {
                    code: ErrorCode::BadRequest,
                    message: "the relay address is not ip:port".into(),
                };
            };
            match names.key(&room) {
                Ok(room) => node
                    .open_relay(room, link, &publisher, keys, peer)
                    .await
                    .map(|()| Response::Done),
                Err(e) => Err(e),
            }
        }
        Request::CloseRelay { room, link } => match names.key(&room) {
            Ok(room) => node.close_relay(room, link).await.map(|()| Response::Done),
            Err(e) => Err(e),
        },
        Request::Rooms => {
            let rooms = node.rooms().into_iter().map(|key| names.name(key));
            return Response::Rooms {
                rooms: rooms.collect(),
            };
        }
        _ => {
            return Response::Error {
                code: ErrorCode::BadRequest,
                message: "unsupported request".into(),
            };
        }
    };
    result.unwrap_or_else(|e| Response::Error {
        code: match &e {
            MediaError::UnknownRoom => ErrorCode::UnknownRoom,
            MediaError::Sdp(SdpError::LimitExceeded(_)) => ErrorCode::LimitExceeded,
            MediaError::Sdp(_) | MediaError::FingerprintChanged => ErrorCode::BadSdp,
            MediaError::RateLimited { .. } => ErrorCode::RateLimited,
            MediaError::NoTransport(_)
            | MediaError::Core(_)
            | MediaError::TooManyWishes(_)
            | MediaError::OwnMedia
            | MediaError::AlreadySubscribed
            | MediaError::RelayExists
            | MediaError::UnknownRelay => ErrorCode::BadRequest,
            MediaError::WorkerGone | MediaError::Draining => ErrorCode::Unavailable,
            MediaError::Full { .. } => ErrorCode::Full,
            _ => ErrorCode::Internal,
        },
        message: e.to_string(),
    })
}

/// A relay link's keys from their hex form, or a bad-request response naming the bad one.
fn relay_keys(send: &RelayKeyHex, receive: &RelayKeyHex) -> Result<RelayKeys, Box<Response>> {
    let (send, receive) = (send.expose(), receive.expose());
    let parse = |hex: &str, which: &str| {
        RelayKey::from_hex(hex).ok_or_else(|| {
            Box::new(Response::Error {
                code: ErrorCode::BadRequest,
                message: format!("the relay {which} key is not 32 hex digits"),
            })
        })
    };
    // One key both ways would start both directions' nonces at counter 0 under it (AES-GCM
    // nonce reuse) and let a datagram reflected to its sender authenticate (outside review F2).
    if send.eq_ignore_ascii_case(receive) {
        return Err(Box::new(Response::Error {
            code: ErrorCode::BadRequest,
            message: "the relay send and receive keys must differ".to_owned(),
        }));
    }
    Ok(RelayKeys {
        send: parse(send, "send")?,
        receive: parse(receive, "receive")?,
    })
}

async fn route_events(
    mut events: mpsc::UnboundedReceiver<NodeEvent>,
    clients: Arc<Mutex<Clients>>,
    node: Arc<Node>,
    names: RoomNames,
) {
    while let Some(event) = events.recv().await {
        let (room, session, event) = match event {
            NodeEvent::RenegotiationNeeded {
                worker,
                room,
                session,
            } => {
                let room = names.name(node.room_of(worker, room));
                let event = Event::RenegotiationNeeded {
                    room: room.clone(),
                    session: session.clone(),
                };
                (room, session, event)
            }
            NodeEvent::TransportConnected {
                worker,
                room,
                session,
                direction,
            } => {
                let room = names.name(node.room_of(worker, room));
                let event = Event::TransportConnected {
                    room: room.clone(),
                    session: session.clone(),
                    side: side_name(direction).into(),
                };
                (room, session, event)
            }
            NodeEvent::ActiveSpeakers {
                worker,
                room,
                member,
                speakers,
            } => {
                let room = names.name(node.room_of(worker, room));
                let event = Event::ActiveSpeakers {
                    room: room.clone(),
                    member: member.clone(),
                    speakers,
                };
                (room, member, event)
            }
            NodeEvent::SubscribedQualities {
                worker,
                room,
                session,
                mid,
                rids,
                layers,
            } => {
                let room = names.name(node.room_of(worker, room));
                let event = Event::SubscribedQualities {
                    room: room.clone(),
                    session: session.clone(),
                    mid,
                    qualities: rids,
                    layers,
                };
                (room, session, event)
            }
            NodeEvent::TransportClosed {
                worker,
                room: part,
                session,
                direction,
                reason,
            } => {
                node.transport_closed(worker, part, &session, direction);
                let room = names.name(node.room_of(worker, part));
                let event = Event::TransportClosed {
                    room: room.clone(),
                    session: session.clone(),
                    side: side_name(direction).into(),
                    reason: reason.into(),
                };
                (room, session, event)
            }
            NodeEvent::RelayClosed {
                worker,
                room,
                link,
                publisher,
                reason,
            } => {
                let room = names.name(node.room_of(worker, room));
                let event = Event::RelayClosed {
                    room: room.clone(),
                    link,
                    reason: reason.into(),
                };
                (room, publisher, event)
            }
        };
        let clients = lock(&clients);
        // The client that last spoke for this session gets it; otherwise any client, which can
        // still reach the session through the signaling bus.
        let target = clients
            .owners
            .get(&(room, session))
            .and_then(|id| clients.senders.get(id))
            .or_else(|| clients.senders.values().next());
        if let Some(sender) = target {
            let _ = sender.send(event);
        }
    }
}

/// Room names on the control wire: `{incarnation}-{worker}.{room}`. The incarnation is drawn at
/// random when the process starts, so a restarted node never gives out a name it gave out before:
/// a controller asking about a room the restart lost gets `unknown_room` (and places its channel
/// again) instead of reaching a new room that another channel now uses.
#[derive(Clone, Copy, Debug)]
struct RoomNames {
    incarnation: u64,
}

impl RoomNames {
    fn new() -> Self {
        Self {
            incarnation: rand::random(),
        }
    }

    fn name(self, key: RoomKey) -> String {
        format!("{:016x}-{key}", self.incarnation)
    }

    /// The room a name denotes on this process; a name of another incarnation (or none) is an
    /// unknown room.
    fn key(self, name: &str) -> Result<RoomKey, MediaError> {
        let (incarnation, key) = name.split_once('-').ok_or(MediaError::UnknownRoom)?;
        if u64::from_str_radix(incarnation, 16).ok() != Some(self.incarnation) {
            return Err(MediaError::UnknownRoom);
        }
        key.parse()
    }
}

/// The wire name of a transport's direction (the control protocol's `side`).
fn side_name(direction: sfu_core::Direction) -> &'static str {
    match direction {
        sfu_core::Direction::Publish => "publish",
        sfu_core::Direction::Subscribe => "subscribe",
    }
}

/// Turns counters into per-second rates and CPU use between two reports.
#[derive(Default)]
struct LoadMeter {
    last: Option<(Instant, u64, u64, f64)>,
    /// Per worker, its uptime and idle time at the last report.
    workers: Vec<(Duration, Duration)>,
}

/// The node's media counters, summed over workers, and each worker's busy share since the last
/// report.
fn media_counters(stats: &NodeStats, meter: &mut LoadMeter) -> MediaCounters {
    let mut media = MediaCounters {
        ice_tcp_accepted: stats.ice_tcp.accepted,
        ice_tcp_refused: stats.ice_tcp.refused,
        ice_tcp_dropped: stats.ice_tcp.dropped,
        ice_tcp_frames_dropped: stats.ice_tcp.frames_dropped,
        ice_tcp_open: stats.ice_tcp.open,
        ..MediaCounters::default()
    };
    let (mut subscriber_loss, mut publisher_loss, mut subscriber_rtt) = Default::default();
    for w in &stats.workers {
        let (c, core) = (&w.counters, &w.core.counters);
        media.packets_in += c.datagrams_in;
        media.packets_out += c.datagrams_out;
        media.bytes_in += c.bytes_in;
        media.bytes_out += c.bytes_out;
        media.srtp_auth_failures += c.srtp_auth_failures;
        media.srtp_replays += c.srtp_replays;
        media.srtp_index_reuse_refused += c.srtp_index_reuse_refused;
        media.dtls_handshakes += c.dtls_handshakes;
        media.dtls_failures += c.dtls_failures;
        media.relay_packets += c.pipe_packets;
        media.relay_drops += c.pipe_drops;
        media.node_relay_packets_out += c.relay_packets_out;
        media.node_relay_packets_in += c.relay_packets_in;
        media.node_relay_rejected +=
            c.relay_unknown_link + c.relay_auth_failures + c.relay_replays + c.relay_tracks_refused;
        media.rtp_in += core.rtp_received;
        media.rtp_forwarded += core.rtp_forwarded;
        media.nacks_received += core.nack_received;
        media.nacks_sent += core.nack_sent;
        media.retransmits_sent += core.retransmits_sent;
        media.retransmit_misses += core.retransmit_misses;
        media.retransmits_repeated += core.retransmits_repeated;
        media.retransmits_over_budget += core.retransmits_over_budget;
        media.retransmits_unrepeatable += core.retransmits_unrepeatable;
        media.plis_sent += core.pli_sent;
        media.keyframe_requests_received += core.keyframe_requests_received;
        media.rtp_waiting_for_keyframe += core.rtp_waiting_for_keyframe;
        media.bwe_pauses += core.bwe_pauses;
        media.bwe_resumes += core.bwe_resumes;
        media.probe_packets_sent += core.probe_packets_sent;
        media.sr_throttled += core.sr_throttled;
        media.rtp_over_bitrate += core.rtp_over_bitrate;
        media.rtp_unknown_rid += core.rtp_unknown_rid;
        media.audio_level_malformed += core.audio_level_malformed;
        sfu_core::Histogram::merge(&mut subscriber_loss, &core.subscriber_loss);
        sfu_core::Histogram::merge(&mut publisher_loss, &core.publisher_loss);
        sfu_core::Histogram::merge(&mut subscriber_rtt, &core.subscriber_rtt);
    }
    media.subscriber_loss = histogram_counts(&subscriber_loss, &sfu_core::LOSS_BUCKETS);
    media.publisher_loss = histogram_counts(&publisher_loss, &sfu_core::LOSS_BUCKETS);
    media.subscriber_rtt = histogram_counts(&subscriber_rtt, &sfu_core::RTT_BUCKETS);
    let previous = std::mem::take(&mut meter.workers);
    for (i, w) in stats.workers.iter().enumerate() {
        let (uptime, idle) = previous.get(i).copied().unwrap_or_default();
        let elapsed = w.uptime.saturating_sub(uptime);
        let busy = elapsed.saturating_sub(w.idle.saturating_sub(idle));
        let permille = (busy.as_micros() * 1000)
            .checked_div(elapsed.as_micros())
            .unwrap_or(0);
        media.worker_busy_permille.push(permille.min(1000) as u64);
        meter.workers.push((w.uptime, w.idle));
    }
    media
}

fn histogram_counts(
    histogram: &sfu_core::Histogram,
    bounds: &[u64; sfu_core::HISTOGRAM_BOUNDS],
) -> HistogramCounts {
    HistogramCounts {
        bounds: bounds.to_vec(),
        counts: histogram.counts.to_vec(),
        sum: histogram.sum,
    }
}

async fn report_load(node: Arc<Node>, clients: Arc<Mutex<Clients>>, refusals: Arc<Refusals>) {
    let mut meter = LoadMeter::default();
    let mut poll = WorkerPoll::<WorkerStats>::default();
    let mut tick = tokio::time::interval(LOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A worker died or got stuck: the node is going down; no report may make it look fine.
        if node.worker_failure().is_some() {
            continue;
        }
        // A node whose worker stats cannot be read (a worker died or is stuck) sends no load:
        // its controllers' view goes stale and they mark it unhealthy (a default "empty" load
        // would look healthy and idle).
        let ask = |index| {
            let node = node.clone();
            tokio::spawn(async move { node.worker_stats(index).await })
        };
        let stats = match poll.stats(node.worker_count(), ask).await {
            Ok(workers) => NodeStats {
                workers,
                ice_tcp: node.ice_tcp_stats(),
            },
            Err(why) => {
                tracing::error!(%why, "worker stats unreadable: not reporting load (node unhealthy)");
                continue;
            }
        };
        let load = load(&node, stats, &refusals, &mut meter);
        for sender in lock(&clients).senders.values() {
            let _ = sender.send(Event::Load(load.clone()));
        }
    }
}

/// How long a load report waits for the workers' fresh stats before using what it has.
const STATS_WAIT: Duration = Duration::from_millis(300);
/// A worker that has not answered a stats request for this long is stuck: the node stops
/// reporting load, and its controllers fail it over 3 s later. A backstop only: a worker whose
/// progress counter stands still for 2 s is judged stuck far sooner (`worker::watchdog`) and
/// the node exits.
const STUCK_WORKER: Duration = Duration::from_secs(10);

/// Each worker's latest stats, with at most one request outstanding per worker. A worker busy
/// for a while (the handshakes of a crowd joining at once, a saturated machine) answers late and
/// its previous stats stand in meanwhile: a busy node keeps reporting, so it is not declared
/// dead while it works. One gone (its thread died) or silent for [`STUCK_WORKER`] stops reports.
struct WorkerPoll<T> {
    workers: Vec<PolledWorker<T>>,
}

/// A request for one worker's stats, answered when the worker gets to it.
type StatsRequest<T> = tokio::task::JoinHandle<Result<T, MediaError>>;

struct PolledWorker<T> {
    last: Option<T>,
    /// The outstanding request, and when it was sent.
    pending: Option<(tokio::time::Instant, StatsRequest<T>)>,
}

impl<T> Default for WorkerPoll<T> {
    fn default() -> Self {
        Self {
            workers: Vec::new(),
        }
    }
}

impl<T: Clone> WorkerPoll<T> {
    /// The stats of each of `count` workers (`ask(i)` requests worker `i`'s): fresh from those
    /// that answer within [`STATS_WAIT`], the previous ones from those still busy; why not, when
    /// a worker is gone, stuck or has never answered.
    async fn stats(
        &mut self,
        count: usize,
        mut ask: impl FnMut(usize) -> StatsRequest<T>,
    ) -> Result<Vec<T>, String> {
        self.workers.resize_with(count, || PolledWorker {
            last: None,
            pending: None,
        });
        for (index, worker) in self.workers.iter_mut().enumerate() {
            if worker.pending.is_none() {
                worker.pending = Some((tokio::time::Instant::now(), ask(index)));
            }
        }
        let deadline = tokio::time::Instant::now() + STATS_WAIT;
        let mut stats = Vec::with_capacity(count);
        for (index, worker) in self.workers.iter_mut().enumerate() {
            if let Some((asked, mut request)) = worker.pending.take() {
                match tokio::time::timeout_at(deadline, &mut request).await {
                    Ok(Ok(Ok(fresh))) => worker.last = Some(fresh),
                    Ok(Ok(Err(e))) => return Err(format!("worker {index}: {e}")),
                    Ok(Err(e)) => return Err(format!("worker {index}: {e}")),
                    Err(_) => {
                        worker.pending = Some((asked, request));
                        let waited = asked.elapsed();
                        if waited >= STUCK_WORKER {
                            return Err(format!("worker {index} has not answered for {waited:?}"));
                        }
                        tracing::debug!(
                            worker = index,
                            ?waited,
                            "worker busy: its last stats stand in"
                        );
                    }
                }
            }
            let last = worker.last.clone();
            stats.push(last.ok_or_else(|| format!("worker {index} has not answered yet"))?);
        }
        Ok(stats)
    }
}

/// The node's load from its workers' `stats`.
fn load(node: &Node, stats: NodeStats, refusals: &Refusals, meter: &mut LoadMeter) -> Load {
    let (mut packets_in, mut packets_out, mut drops) = (0, 0, 0);
    for w in &stats.workers {
        packets_in += w.counters.datagrams_in;
        packets_out += w.counters.datagrams_out;
        drops += w.counters.stun_rejected
            + w.counters.dtls_failures
            + w.counters.dtls_unauthenticated
            + w.counters.media_unauthenticated
            + w.counters.srtp_auth_failures
            + w.counters.srtp_replays
            + w.counters.stale_routes
            + w.counters.srtp_ssrc_cap_drops
            + w.counters.live_address_claims
            + w.counters.relay_unknown_link
            + w.counters.relay_auth_failures
            + w.counters.relay_replays;
    }
    let now = Instant::now();
    let cpu = mooyaho_net::cpu::process_cpu_seconds(None).unwrap_or(0.0);
    let (max_transports, admitted_transports) = node.transport_capacity();
    let mut load = Load {
        rooms: stats.rooms() as u64,
        transports: stats.transports() as u64,
        sessions: stats.workers.iter().map(|w| w.sessions as u64).sum(),
        tracks: stats.workers.iter().map(|w| w.core.tracks as u64).sum(),
        subscriptions: stats
            .workers
            .iter()
            .map(|w| w.core.subscriptions as u64)
            .sum(),
        security_drops: drops,
        draining: node.is_draining(),
        max_transports: max_transports as u64,
        admitted_transports: admitted_transports as u64,
        relay_links_out: stats.relay_links().sending as u64,
        relay_links_in: stats.relay_links().receiving as u64,
        ..Load::default()
    };
    if let Some((then, last_in, last_out, last_cpu)) = meter.last {
        let secs = now.duration_since(then).as_secs_f64().max(1e-3);
        load.packets_in_per_sec = ((packets_in - last_in) as f64 / secs) as u64;
        load.packets_out_per_sec = ((packets_out - last_out) as f64 / secs) as u64;
        load.cpu_percent = ((cpu - last_cpu).max(0.0) / secs * 100.0) as u64;
    }
    meter.last = Some((now, packets_in, packets_out, cpu));
    load.media = Box::new(media_counters(&stats, meter));
    refusals.fill(&mut load);
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outside review F2: one key for both directions is refused; distinct hex keys parse.
    #[test]
    fn a_relay_link_needs_two_different_keys() {
        let a = RelayKeyHex::new("00112233445566778899aabbccddeeff");
        let b = RelayKeyHex::new("ffeeddccbbaa99887766554433221100");
        assert!(relay_keys(&a, &b).is_ok());
        assert!(relay_keys(&a, &a).is_err());
        let upper = RelayKeyHex::new(a.expose().to_uppercase());
        assert!(relay_keys(&a, &upper).is_err());
        assert!(relay_keys(&a, &RelayKeyHex::new("not hex")).is_err());
    }

    /// Asks for worker stats that arrive after `delay` (the worker is busy that long).
    fn answering_after(delay: Duration, value: u32) -> StatsRequest<u32> {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            Ok(value)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_worker_s_last_stats_stand_in_until_it_is_stuck() {
        let mut poll = WorkerPoll::default();
        let quick = Duration::from_millis(1);
        assert_eq!(
            poll.stats(2, |i| answering_after(quick, i as u32)).await,
            Ok(vec![0, 1])
        );
        // Worker 1 is busy for 5 s: every report meanwhile carries its previous stats (and asks
        // it nothing more); worker 0 stays fresh.
        let busy = Duration::from_secs(5);
        let ask = |i: usize| answering_after(if i == 1 { busy } else { quick }, 10 + i as u32);
        let started = tokio::time::Instant::now();
        assert_eq!(poll.stats(2, ask).await, Ok(vec![10, 1]));
        let mut asked_again = 0;
        while started.elapsed() < busy - LOAD_INTERVAL {
            tokio::time::sleep(LOAD_INTERVAL).await;
            let ask = |i: usize| {
                asked_again += i;
                answering_after(quick, 20)
            };
            assert_eq!(poll.stats(2, ask).await, Ok(vec![20, 1]));
        }
        assert_eq!(asked_again, 0, "worker 1 was asked again while busy");
        tokio::time::sleep(LOAD_INTERVAL).await;
        assert_eq!(
            poll.stats(2, |_| answering_after(quick, 30)).await,
            Ok(vec![30, 11])
        );

        // Silent for good: reports go on until it has not answered for STUCK_WORKER, then stop.
        let never = Duration::from_secs(3600);
        assert!(
            poll.stats(2, |i| answering_after(
                if i == 1 { never } else { quick },
                40
            ))
            .await
            .is_ok()
        );
        let stuck_since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(LOAD_INTERVAL).await;
            let result = poll.stats(2, |_| answering_after(quick, 50)).await;
            if stuck_since.elapsed() < STUCK_WORKER {
                assert_eq!(result, Ok(vec![50, 11]));
            } else {
                let why = result.unwrap_err();
                assert!(why.contains("worker 1 has not answered"), "{why}");
                break;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_gone_worker_or_one_that_never_answered_stops_the_reports() {
        let mut poll = WorkerPoll::<u32>::default();
        let gone = poll
            .stats(1, |_| tokio::spawn(async { Err(MediaError::WorkerGone) }))
            .await;
        assert!(gone.unwrap_err().contains("worker 0"));
        let mut poll = WorkerPoll::default();
        let slow = poll
            .stats(1, |_| answering_after(Duration::from_secs(2), 1))
            .await;
        assert_eq!(slow, Err("worker 0 has not answered yet".to_owned()));
    }

    #[test]
    fn room_names_of_another_incarnation_are_unknown_rooms() {
        let names = RoomNames { incarnation: 0xabc };
        let key = RoomKey {
            worker: 1,
            room: sfu_core::RoomId::from_u64(7),
        };
        let name = names.name(key);
        assert_eq!(name, "0000000000000abc-1.7");
        assert_eq!(names.key(&name).unwrap(), key);
        let restarted = RoomNames { incarnation: 0xabd };
        for unknown in [
            restarted.name(key).as_str(),
            "1.7",
            "-1.7",
            "zz-1.7",
            "0000000000000abc-",
            "0000000000000abc-1",
            "",
        ] {
            assert!(
                matches!(names.key(unknown), Err(MediaError::UnknownRoom)),
                "{unknown:?}"
            );
        }
    }

    #[test]
    fn an_identity_kept_in_a_directory_keeps_its_fingerprint() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = std::env::temp_dir().join(format!(
            "mooyaho-identity-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let (created, was_new) = ControlIdentity::load_or_create(&dir).unwrap();
        assert!(was_new);
        let (loaded, was_new) = ControlIdentity::load_or_create(&dir).unwrap();
        assert!(!was_new);
        assert_eq!(loaded.fingerprint(), created.fingerprint());
        assert_ne!(
            ControlIdentity::generate().unwrap().fingerprint(),
            created.fingerprint()
        );
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is its owner's only");

        // A corrupt key is refused, and so is half an identity: never a silent new fingerprint.
        std::fs::write(dir.join(KEY_FILE), b"not a key").unwrap();
        let corrupt = ControlIdentity::load_or_create(&dir).unwrap_err();
        assert!(corrupt.0.contains("unusable"), "{corrupt:?}");
        std::fs::remove_file(dir.join(KEY_FILE)).unwrap();
        let half = ControlIdentity::load_or_create(&dir).unwrap_err();
        assert!(half.0.contains("holds only one of"), "{half:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refusals_are_all_counted_but_a_burst_is_logged_once() {
        let count = RefusalCount::default();
        assert_eq!(count.bump(), Some(1));
        for _ in 0..99 {
            assert_eq!(count.bump(), None);
        }
        assert_eq!(count.get(), 100);
        let refusals = Refusals::default();
        refusals.bad_hello("127.0.0.1:1".parse().unwrap(), "test");
        refusals.hello_timeout("127.0.0.1:1".parse().unwrap());
        refusals.hello_timeout("127.0.0.1:1".parse().unwrap());
        refusals.over_capacity("127.0.0.1:1".parse().unwrap(), 16);
        refusals.over_source_limit("127.0.0.1:1".parse().unwrap());
        let mut load = Load::default();
        refusals.fill(&mut load);
        assert_eq!(
            (
                load.control_over_capacity,
                load.control_hello_timeouts,
                load.control_bad_hellos
            ),
            (2, 2, 1)
        );
    }

    #[test]
    fn a_source_holds_at_most_its_share_of_slots_and_gets_them_back() {
        let sources = Arc::new(Mutex::new(Sources::default()));
        let ip = "192.0.2.7".parse().unwrap();
        let held: Vec<_> = (0..MAX_UNAUTHENTICATED_PER_SOURCE)
            .map(|_| SourceSlot::take(&sources, ip).expect("within the share"))
            .collect();
        assert!(SourceSlot::take(&sources, ip).is_none());
        assert!(SourceSlot::take(&sources, "192.0.2.8".parse().unwrap()).is_some());
        drop(held);
        assert!(SourceSlot::take(&sources, ip).is_some());
        assert!(sources.lock().unwrap().0.is_empty(), "no entry left behind");
    }

    #[test]
    fn an_ipv6_source_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
        let a = source_of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = source_of("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = source_of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            source_of("::ffff:192.0.2.1".parse().unwrap()),
            source_of("192.0.2.1".parse().unwrap())
        );
    }
}
