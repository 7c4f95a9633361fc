//! The node's QUIC control server: signaling instances connect, prove the cluster secret, then
//! send one request per bidirectional stream; the node pushes events on a unidirectional stream.
//! The node's TLS certificate is self-signed; clients pin its SHA-256 fingerprint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mooyaho_control::{ALPN, ErrorCode, Event, Load, Request, Response};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use crate::node::{Node, RoomKey};
use crate::worker::{MediaError, NodeEvent, Side};

/// How the control server runs.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// The cluster secret every client must present.
    pub secret: String,
}

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
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const KEEP_ALIVE: Duration = Duration::from_millis(500);
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const LOAD_INTERVAL: Duration = Duration::from_secs(1);

impl ControlServer {
    /// Binds the endpoint and serves `node` until the returned server is dropped.
    pub fn start(
        node: Arc<Node>,
        events: mpsc::UnboundedReceiver<NodeEvent>,
        config: ControlConfig,
    ) -> Result<Self, ControlError> {
        let certified = rcgen::generate_simple_self_signed(vec!["mooyaho-sfu".to_owned()])
            .map_err(|e| ControlError(e.to_string()))?;
        let der = certified.cert.der().clone();
        let fingerprint = mooyaho_control::fingerprint(der.as_ref());
        let key =
            rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ControlError(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![der], key.into())
            .map_err(|e| ControlError(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| ControlError(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("small duration")))
            .keep_alive_interval(Some(KEEP_ALIVE));
        server.transport_config(Arc::new(transport));
        let endpoint =
            Endpoint::server(server, config.listen).map_err(|e| ControlError(e.to_string()))?;
        let clients = Arc::new(Mutex::new(Clients::default()));
        tokio::spawn(route_events(events, clients.clone(), node.clone()));
        tokio::spawn(report_load(node.clone(), clients.clone()));
        let accept = endpoint.clone();
        let secret = Arc::new(config.secret);
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                let (node, clients, secret) = (node.clone(), clients.clone(), secret.clone());
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(connection) => serve(connection, node, clients, &secret).await,
                        Err(e) => tracing::debug!(error = %e, "control handshake failed"),
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
        self.endpoint.close(0u32.into(), b"node stopping");
    }
}

fn lock(clients: &Mutex<Clients>) -> std::sync::MutexGuard<'_, Clients> {
    clients.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(
    connection: Connection,
    node: Arc<Node>,
    clients: Arc<Mutex<Clients>>,
    secret: &str,
) {
    let remote = connection.remote_address();
    // The first stream must be a hello with the right secret, promptly.
    let hello = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi()).await;
    let Ok(Ok((mut send, mut recv))) = hello else {
        connection.close(1u32.into(), b"no hello");
        return;
    };
    let authorized = match read_frame::<Request>(&mut recv).await {
        Ok(Request::Hello {
            secret: given,
            instance,
        }) => {
            let ok: bool = given.as_bytes().ct_eq(secret.as_bytes()).into();
            if ok {
                tracing::info!(%remote, %instance, "signaling instance connected");
            }
            ok
        }
        _ => false,
    };
    if !authorized {
        tracing::warn!(%remote, "control connection refused: bad hello or cluster secret");
        let refusal = Response::Error {
            code: ErrorCode::Unauthorized,
            message: "bad cluster secret or protocol version".into(),
        };
        let _ = write_frame(&mut send, &refusal).await;
        let _ = send.finish();
        tokio::time::sleep(Duration::from_millis(100)).await;
        connection.close(2u32.into(), b"unauthorized");
        return;
    }
    let workers = node.addresses().len();
    if write_frame(&mut send, &Response::Welcome { workers })
        .await
        .is_err()
    {
        return;
    }
    let _ = send.finish();

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
        let (node, clients) = (node.clone(), clients.clone());
        tokio::spawn(async move { answer(send, recv, &node, &clients, id).await });
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
    client: u64,
) {
    let response = match read_frame::<Request>(&mut recv).await {
        Ok(request) => {
            if let Some(key) = session_key(&request) {
                lock(clients).owners.insert(key, client);
            }
            handle(node, request).await
        }
        Err(e) => Response::Error {
            code: ErrorCode::BadRequest,
            message: e,
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
        | Request::SubscribeAnswer { room, session, .. } => Some((room.clone(), session.clone())),
        _ => None,
    }
}

async fn handle(node: &Node, request: Request) -> Response {
    let result = match request {
        Request::Hello { .. } => Err(MediaError::Dtls("hello twice".into())),
        Request::CreateRoom => node.create_room().await.map(|room| Response::Room {
            room: room.to_string(),
        }),
        Request::Publish {
            room,
            session,
            offer,
        } => match room.parse::<RoomKey>() {
            Ok(room) => node
                .publish(room, &session, &offer)
                .await
                .map(|sdp| Response::Sdp { sdp: Some(sdp) }),
            Err(e) => Err(e),
        },
        Request::SubscribeOffer { room, session } => match room.parse::<RoomKey>() {
            Ok(room) => node
                .subscribe_offer(room, &session)
                .await
                .map(|sdp| Response::Sdp { sdp }),
            Err(e) => Err(e),
        },
        Request::SubscribeAnswer {
            room,
            session,
            answer,
        } => match room.parse::<RoomKey>() {
            Ok(room) => node
                .subscribe_answer(room, &session, &answer)
                .await
                .map(|()| Response::Done),
            Err(e) => Err(e),
        },
        Request::CloseSession { room, session } => match room.parse::<RoomKey>() {
            Ok(room) => node
                .close_session(room, &session)
                .await
                .map(|()| Response::Done),
            Err(e) => Err(e),
        },
        Request::CloseRoom { room } => match room.parse::<RoomKey>() {
            Ok(room) => node.close_room(room).await.map(|()| Response::Done),
            Err(e) => Err(e),
        },
        Request::Stats => match load(node, &mut LoadMeter::default()).await {
            Some(load) => return Response::Stats(load),
            None => Err(MediaError::WorkerGone),
        },
        Request::Drain { draining } => {
            node.set_draining(draining);
            tracing::info!(draining, "drain state changed by the control plane");
            return Response::Done;
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
            MediaError::Sdp(_) | MediaError::FingerprintChanged => ErrorCode::BadSdp,
            MediaError::NoTransport(_) | MediaError::Core(_) => ErrorCode::BadRequest,
            MediaError::WorkerGone | MediaError::Draining => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        },
        message: e.to_string(),
    })
}

async fn route_events(
    mut events: mpsc::UnboundedReceiver<NodeEvent>,
    clients: Arc<Mutex<Clients>>,
    node: Arc<Node>,
) {
    while let Some(event) = events.recv().await {
        let (room, session, event) = match event {
            NodeEvent::RenegotiationNeeded {
                worker,
                room,
                session,
            } => {
                let room = node.room_of(worker, room).to_string();
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
                side,
            } => {
                let room = node.room_of(worker, room).to_string();
                let event = Event::TransportConnected {
                    room: room.clone(),
                    session: session.clone(),
                    side: side_name(side).into(),
                };
                (room, session, event)
            }
            NodeEvent::TransportClosed {
                worker,
                room,
                session,
                side,
                reason,
            } => {
                let room = node.room_of(worker, room).to_string();
                let event = Event::TransportClosed {
                    room: room.clone(),
                    session: session.clone(),
                    side: side_name(side).into(),
                    reason: reason.into(),
                };
                (room, session, event)
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

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Publish => "publish",
        Side::Subscribe => "subscribe",
    }
}

/// Turns counters into per-second rates and CPU use between two reports.
#[derive(Default)]
struct LoadMeter {
    last: Option<(Instant, u64, u64, u64)>,
}

async fn report_load(node: Arc<Node>, clients: Arc<Mutex<Clients>>) {
    let mut meter = LoadMeter::default();
    let mut tick = tokio::time::interval(LOAD_INTERVAL);
    loop {
        tick.tick().await;
        // A node whose worker stats cannot be read sends no load: its controllers' view goes
        // stale and they mark it unhealthy (a default "empty" load would look healthy and idle).
        let Some(load) = load(&node, &mut meter).await else {
            tracing::error!("worker stats unreadable: not reporting load (node unhealthy)");
            continue;
        };
        for sender in lock(&clients).senders.values() {
            let _ = sender.send(Event::Load(load.clone()));
        }
    }
}

/// The node's load, or `None` when a worker's stats cannot be read (the worker died).
async fn load(node: &Node, meter: &mut LoadMeter) -> Option<Load> {
    let stats = node.stats().await.ok()?;
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
            + w.counters.stale_routes;
    }
    let now = Instant::now();
    let cpu = process_cpu_ticks();
    let mut load = Load {
        rooms: stats.rooms() as u64,
        transports: stats.transports() as u64,
        sessions: stats.workers.iter().map(|w| w.sessions as u64).sum(),
        security_drops: drops,
        draining: node.is_draining(),
        ..Load::default()
    };
    if let Some((then, last_in, last_out, last_cpu)) = meter.last {
        let secs = now.duration_since(then).as_secs_f64().max(1e-3);
        load.packets_in_per_sec = ((packets_in - last_in) as f64 / secs) as u64;
        load.packets_out_per_sec = ((packets_out - last_out) as f64 / secs) as u64;
        load.cpu_percent =
            ((cpu.saturating_sub(last_cpu)) as f64 / ticks_per_second() / secs * 100.0) as u64;
    }
    meter.last = Some((now, packets_in, packets_out, cpu));
    Some(load)
}

/// utime + stime of this process, in clock ticks (`/proc/self/stat` fields 14 and 15).
fn process_cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn ticks_per_second() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        ticks => ticks as f64,
    }
}

/// Writes one frame.
pub async fn write_frame<T: serde::Serialize>(
    send: &mut SendStream,
    message: &T,
) -> Result<(), String> {
    send.write_all(&mooyaho_control::encode(message))
        .await
        .map_err(|e| e.to_string())
}

/// Reads one frame, refusing oversized ones before buffering them.
pub async fn read_frame<T: for<'de> serde::Deserialize<'de>>(
    recv: &mut RecvStream,
) -> Result<T, String> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| e.to_string())?;
    let len = mooyaho_control::frame_len(header).map_err(|e| e.to_string())?;
    let mut rest = vec![0u8; len];
    recv.read_exact(&mut rest)
        .await
        .map_err(|e| e.to_string())?;
    mooyaho_control::decode(&rest).map_err(|e| e.to_string())
}
