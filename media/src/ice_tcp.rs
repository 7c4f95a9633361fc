//! ICE-TCP (RFC 6544 passive candidates, RFC 4571 framing) for clients whose UDP to the node is
//! blocked. Each worker gets a TCP listener; every accepted connection is a framing adapter in
//! front of that worker's UDP socket: its frames go to the worker as datagrams from a UDP socket
//! of its own, and the worker's datagrams back to that socket go out as frames. The worker sees
//! one more source address and runs the very same ICE, consent, DTLS and SRTP path — its hot
//! path does not change, and a TCP client costs one loopback hop per packet.
//!
//! Hostile input (each refusal or drop is counted):
//! - a connection must open with a STUN message within [`FIRST_FRAME_TIMEOUT`], and until the
//!   worker has answered one of its checks (a binding success seen going back) only STUN
//!   passes, at [`UNVALIDATED_STUN_PER_SEC`]; unanswered for [`VALIDATE_TIMEOUT`], it closes —
//!   so holding a slot needs a participant's ICE credentials;
//! - frames of length 0 or over [`MAX_FRAME`] close the connection; frames of no RTC protocol
//!   (RFC 7983) are dropped; after validation a token bucket per connection bounds frames and
//!   bytes per second (a stream of tiny frames would otherwise multiply datagrams);
//! - a connection closes when either side is silent for [`IDLE_TIMEOUT`] (the worker answers
//!   consent checks every few seconds);
//! - connections are capped in all and per client address (IPv6 per /64);
//! - a closed connection keeps its relay socket and its slot for [`PORT_QUARANTINE`], so no
//!   other connection gets that port while the worker may still hold it as a live path.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mooyaho_net::PacketClass;
use mooyaho_net::stun::is_binding_success;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::Instant;

/// Longest frame accepted: browsers packetise for a UDP MTU over TCP too (~1200 bytes).
pub(crate) const MAX_FRAME: usize = 4096;
/// A new connection must send its first (STUN) frame within this.
pub(crate) const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with nothing from the client, or nothing from the worker, for this long is
/// closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection whose checks the worker has not answered within this is closed.
pub(crate) const VALIDATE_TIMEOUT: Duration = Duration::from_secs(10);
/// STUN frames a connection may send per second before the worker answered one.
pub(crate) const UNVALIDATED_STUN_PER_SEC: u32 = 10;
/// Frames and bytes per second a validated connection may send (a simulcast camera with
/// audio is a few hundred packets and a few Mbit/s).
pub(crate) const FRAMES_PER_SEC: u32 = 2_000;
pub(crate) const BYTES_PER_SEC: u32 = 1_250_000;
/// How long a closed connection keeps its relay socket: the worker's consent timeout.
pub(crate) const PORT_QUARANTINE: Duration = Duration::from_secs(30);
/// Read buffer per connection: many small frames cost one read, not two each.
const READ_BUFFER: usize = 16 * 1024;

/// Limits of the ICE-TCP listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IceTcpLimits {
    /// Open connections in all (across workers).
    pub max_connections: usize,
    /// Open connections from one client IP address.
    pub max_per_ip: usize,
}

impl Default for IceTcpLimits {
    fn default() -> Self {
        // Per address: an office behind one NAT whose UDP is blocked is who ICE-TCP is for, and
        // each of its users opens 2–6 connections (two PeerConnections, one per interface).
        Self {
            max_connections: 1024,
            max_per_ip: 64,
        }
    }
}

/// ICE-TCP counters since the node started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IceTcpStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused at once: over the limits.
    pub refused: u64,
    /// Connections closed for bad input: a first frame that is not STUN, a frame of length 0
    /// or over [`MAX_FRAME`], no first frame in time, or no check answered in time.
    pub dropped: u64,
    /// Frames dropped on open connections: not STUN before validation, of no RTC protocol, or
    /// over the connection's rate.
    pub frames_dropped: u64,
    /// Connections open now.
    pub open: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    frames_dropped: AtomicU64,
    open: AtomicU64,
}

/// Open connections per client address, for the limits.
#[derive(Debug)]
struct Admission {
    limits: IceTcpLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Admission {
    /// Counts a new connection from `ip` in, unless it would pass a limit.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        let from_ip = per_ip.entry(ip).or_default();
        if *total >= self.limits.max_connections || *from_ip >= self.limits.max_per_ip {
            if *from_ip == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *from_ip += 1;
        *total += 1;
        Some(Admitted {
            admission: self.clone(),
            ip,
        })
    }
}

/// One admitted connection; counted out when dropped.
struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// The node's ICE-TCP listeners, served by one thread of their own (off the workers' cores'
/// hot path); they stop when this is dropped.
#[derive(Debug)]
pub(crate) struct IceTcp {
    counters: Arc<Counters>,
    local: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IceTcp {
    /// Serves `listeners`, each in front of the worker UDP address paired with it.
    pub(crate) fn start(
        listeners: Vec<(std::net::TcpListener, SocketAddr)>,
        limits: IceTcpLimits,
    ) -> io::Result<Self> {
        let counters = Arc::new(Counters::default());
        let admission = Arc::new(Admission {
            limits,
            open: Mutex::new((0, HashMap::new())),
        });
        let mut local = Vec::with_capacity(listeners.len());
        for (listener, _) in &listeners {
            listener.set_nonblocking(true)?;
            local.push(listener.local_addr()?);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("mooyaho-ice-tcp".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for (listener, worker) in listeners {
                        let listener = match TcpListener::from_std(listener) {
                            Ok(listener) => listener,
                            Err(e) => {
                                tracing::error!(error = %e, "ICE-TCP listener unusable");
                                continue;
                            }
                        };
                        tasks.spawn(accept_loop(
                            listener,
                            worker,
                            admission.clone(),
                            thread_counters.clone(),
                        ));
                    }
                    let _ = stopped.await;
                    tasks.abort_all();
                });
            })?;
        Ok(Self {
            counters,
            local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The listeners' addresses, one per worker in worker order.
    pub(crate) fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    pub(crate) fn stats(&self) -> IceTcpStats {
        IceTcpStats {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            frames_dropped: self.counters.frames_dropped.load(Ordering::Relaxed),
            open: self.counters.open.load(Ordering::Relaxed),
        }
    }
}

impl Drop for IceTcp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    worker: SocketAddr,
    admission: Arc<Admission>,
    counters: Arc<Counters>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(admitted) = admission.admit(limit_key(peer.ip())) else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "ICE-TCP connection refused: over the limits");
            continue; // dropping the stream closes it
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let counters = counters.clone();
        tokio::spawn(async move {
            counters.open.fetch_add(1, Ordering::Relaxed);
            let relay = serve(stream, worker, &counters).await;
            counters.open.fetch_sub(1, Ordering::Relaxed);
            let relay = match relay {
                Ok(relay) => relay,
                Err((reason, relay)) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, reason, "ICE-TCP connection dropped");
                    relay
                }
            };
            // The slot and the relay port stay taken while the worker may still hold that
            // port as a live path of some transport.
            if relay.is_some() {
                tokio::time::sleep(PORT_QUARANTINE).await;
            }
            drop((relay, admitted));
        });
    }
}

/// The address the per-client limit counts: IPv4, or an IPv6 /64 (one subscriber's prefix).
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
        v4 => v4,
    }
}

/// Why a connection was dropped for bad input (a clean close or an I/O error is not one), with
/// its relay socket if it had one.
type Dropped = (&'static str, Option<Arc<UdpSocket>>);

/// Relays one connection until either side ends or breaks the rules; gives back its relay
/// socket (if one was bound) to be held through the quarantine.
async fn serve(
    stream: TcpStream,
    worker: SocketAddr,
    counters: &Counters,
) -> Result<Option<Arc<UdpSocket>>, Dropped> {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut frame = vec![0u8; MAX_FRAME];
    // No socket, no port, until the client has shown it speaks STUN.
    let first = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, read_frame(&mut reader, &mut frame))
        .await
    {
        Err(_) => return Err(("no first frame in time", None)),
        Ok(Err(FrameError::Closed)) => return Ok(None),
        Ok(Err(FrameError::Bad(reason))) => return Err((reason, None)),
        Ok(Ok(len)) => len,
    };
    if !looks_like_stun(&frame[..first]) {
        return Err(("first frame is not STUN", None));
    }
    // The worker must see each connection as its own address: a UDP socket per connection,
    // connected to the worker so nothing else can write into it.
    let relay_ip = match worker.ip() {
        ip if !ip.is_unspecified() => ip,
        IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    };
    let Ok(udp) = UdpSocket::bind(SocketAddr::new(relay_ip, 0)).await else {
        return Ok(None); // out of sockets: the client retries or uses another candidate
    };
    if udp.connect(worker).await.is_err() {
        return Ok(None);
    }
    let udp = Arc::new(udp);
    let _ = udp.send(&frame[..first]).await;
    let state = Arc::new(RelayState::new());
    let mut to_client = tokio::spawn(worker_to_client(udp.clone(), writer, state.clone()));
    let result = tokio::select! {
        result = client_to_worker(&mut reader, &mut frame, &udp, &state, counters) => result,
        _ = &mut to_client => Ok(()),
        result = watchdog(&state) => result,
    };
    to_client.abort();
    match result {
        Ok(()) => Ok(Some(udp)),
        Err(reason) => Err((reason, Some(udp))),
    }
}

/// What the two directions of one relay share.
struct RelayState {
    start: Instant,
    /// The worker answered one of the client's checks (a binding success went back).
    validated: std::sync::atomic::AtomicBool,
    /// When the worker last sent anything, in ms since `start`.
    worker_heard_ms: AtomicU64,
}

impl RelayState {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            validated: std::sync::atomic::AtomicBool::new(false),
            worker_heard_ms: AtomicU64::new(0),
        }
    }

    fn since_start(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A token bucket: `rate` per second, as deep as one second's worth.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant, amount: f64) -> bool {
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }
}

/// Frames from the client → datagrams to the worker, within the rules (module docs).
async fn client_to_worker<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame: &mut [u8],
    udp: &UdpSocket,
    state: &RelayState,
    counters: &Counters,
) -> Result<(), &'static str> {
    let mut stun = Bucket::new(UNVALIDATED_STUN_PER_SEC);
    let (mut frames, mut bytes) = (Bucket::new(FRAMES_PER_SEC), Bucket::new(BYTES_PER_SEC));
    loop {
        // Cancelling a read mid-frame would lose the framing: only the idle timeout (which
        // closes the connection anyway) wraps it; other deadlines are [`watchdog`]'s.
        let len = match tokio::time::timeout(IDLE_TIMEOUT, read_frame(reader, frame)).await {
            Err(_) | Ok(Err(FrameError::Closed)) => return Ok(()),
            Ok(Err(FrameError::Bad(reason))) => return Err(reason),
            Ok(Ok(len)) => len,
        };
        let validated = state.validated.load(Ordering::Relaxed);
        let datagram = &frame[..len];
        let now = Instant::now();
        let class = PacketClass::of(datagram);
        let allowed = if validated {
            class != PacketClass::Unknown && frames.take(now, 1.0) && bytes.take(now, len as f64)
        } else {
            class == PacketClass::Stun && stun.take(now, 1.0)
        };
        if !allowed {
            counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // A full socket buffer drops the datagram, as the network would.
        let _ = udp.send(datagram).await;
    }
}

/// Ends a connection the worker never validated in time, or has stopped answering (its path
/// dropped: consent expired, transport gone).
async fn watchdog(state: &RelayState) -> Result<(), &'static str> {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now_ms = state.since_start();
        if !state.validated.load(Ordering::Relaxed) {
            if now_ms > VALIDATE_TIMEOUT.as_millis() as u64 {
                return Err("no check answered in time");
            }
        } else if now_ms.saturating_sub(state.worker_heard_ms.load(Ordering::Relaxed))
            > IDLE_TIMEOUT.as_millis() as u64
        {
            return Ok(());
        }
    }
}

/// Datagrams from the worker → frames to the client. A client that stops reading stalls only
/// this task; the worker's datagrams then drop in this socket's buffer.
async fn worker_to_client(udp: Arc<UdpSocket>, mut writer: OwnedWriteHalf, state: Arc<RelayState>) {
    // The worker sends nothing near this long (its datagrams fit a UDP MTU); a longer one
    // would be truncated by recv, so it is skipped below.
    let mut frame = vec![0u8; 2 + MAX_FRAME + 1];
    loop {
        let Ok(len) = udp.recv(&mut frame[2..]).await else {
            continue; // ICMP errors surface here; the next datagram may be fine
        };
        if len > MAX_FRAME {
            continue;
        }
        let Ok(prefix) = u16::try_from(len) else {
            continue;
        };
        state
            .worker_heard_ms
            .store(state.since_start(), Ordering::Relaxed);
        if is_binding_success(&frame[2..2 + len]) {
            state.validated.store(true, Ordering::Relaxed);
        }
        frame[..2].copy_from_slice(&prefix.to_be_bytes());
        if writer.write_all(&frame[..2 + len]).await.is_err() {
            return;
        }
    }
}

enum FrameError {
    Closed,
    Bad(&'static str),
}

/// Reads one RFC 4571 frame (16-bit big-endian length, then that many bytes) into `buf`.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<usize, FrameError> {
    let mut prefix = [0u8; 2];
    reader
        .read_exact(&mut prefix)
        .await
        .map_err(|_| FrameError::Closed)?;
    let len = usize::from(u16::from_be_bytes(prefix));
    if len == 0 {
        return Err(FrameError::Bad("empty frame"));
    }
    if len > buf.len() {
        return Err(FrameError::Bad("frame longer than the limit"));
    }
    reader
        .read_exact(&mut buf[..len])
        .await
        .map_err(|_| FrameError::Closed)?;
    Ok(len)
}

/// A STUN message header (RFC 5389 §6): two zero bits, then the magic cookie.
fn looks_like_stun(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] < 2 && datagram[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_connections_in_all_and_per_address_and_counts_them_out() {
        let admission = Arc::new(Admission {
            limits: IceTcpLimits {
                max_connections: 3,
                max_per_ip: 2,
            },
            open: Mutex::new((0, HashMap::new())),
        });
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let a1 = admission.admit(a).unwrap();
        let a2 = admission.admit(a).unwrap();
        assert!(admission.admit(a).is_none(), "per address");
        let b1 = admission.admit(b).unwrap();
        assert!(admission.admit(b).is_none(), "in all");
        drop(a1);
        let b2 = admission.admit(b).unwrap();
        drop((a2, b1, b2));
        let open = admission.open.lock().unwrap();
        assert_eq!(open.0, 0);
        assert!(open.1.is_empty(), "no entry left behind: {:?}", open.1);
    }

    #[test]
    fn only_a_stun_header_opens_a_connection() {
        let mut binding = [0u8; 20];
        binding[1] = 1;
        binding[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        assert!(looks_like_stun(&binding));
        let mut dtls = binding;
        dtls[0] = 22;
        assert!(!looks_like_stun(&dtls));
        assert!(!looks_like_stun(&binding[..19]));
        let mut no_cookie = binding;
        no_cookie[5] = 0;
        assert!(!looks_like_stun(&no_cookie));
    }

    #[test]
    fn ipv6_clients_are_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let key = |text: &str| limit_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
    }

    #[test]
    fn a_bucket_allows_its_rate_and_refills_with_time() {
        let mut bucket = Bucket::new(10);
        let t0 = bucket.at;
        assert_eq!((0..20).filter(|_| bucket.take(t0, 1.0)).count(), 10);
        assert!(!bucket.take(t0 + Duration::from_millis(50), 1.0));
        assert!(bucket.take(t0 + Duration::from_millis(150), 1.0));
        // Never deeper than one second's worth, however long it rested.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| bucket.take(later, 1.0)).count(), 10);
    }

    /// A worker stand-in (a UDP socket) behind a real listener.
    async fn relay() -> (IceTcp, UdpSocket) {
        let worker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = IceTcp::start(
            vec![(listener, worker.local_addr().unwrap())],
            IceTcpLimits::default(),
        )
        .unwrap();
        (tcp, worker)
    }

    /// A signed binding request and the worker's success answer to it.
    fn check_and_answer() -> (Vec<u8>, Vec<u8>) {
        use mooyaho_net::stun::{BindingRequest, Check, HOST_PRIORITY, IceRole};
        let request = Check {
            username: "node:client",
            receiver_pwd: "nodePasswordNodePassword",
            transaction: mooyaho_net::stun::new_transaction_id(),
            priority: HOST_PRIORITY,
            role: IceRole::Controlling(1),
            use_candidate: false,
        }
        .to_bytes();
        let mut parsed = BindingRequest::parse(&request).unwrap();
        parsed.authenticate("nodePasswordNodePassword").unwrap();
        let answer = parsed.success(
            SocketAddr::from(([127, 0, 0, 1], 5)),
            "nodePasswordNodePassword",
        );
        (request, answer)
    }

    fn stun() -> Vec<u8> {
        check_and_answer().0
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    async fn read_one(client: &mut TcpStream) -> Vec<u8> {
        let mut prefix = [0u8; 2];
        client.read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        client.read_exact(&mut body).await.unwrap();
        body
    }

    async fn quiet(worker: &UdpSocket) -> bool {
        let mut buf = [0u8; 2048];
        tokio::time::timeout(Duration::from_millis(200), worker.recv_from(&mut buf))
            .await
            .is_err()
    }

    async fn wait_for(what: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if what() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn frames_become_datagrams_only_stun_until_the_worker_answers_a_check() {
        let (tcp, worker) = relay().await;
        let (request, answer) = check_and_answer();
        let mut client = TcpStream::connect(tcp.local_addrs()[0]).await.unwrap();
        client.write_all(&framed(&request)).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, relay) = worker.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &request[..]);
        // Media before the worker answered: dropped and counted, never forwarded.
        let media = [0x80u8; 300];
        client.write_all(&framed(&media)).await.unwrap();
        assert!(quiet(&worker).await);
        assert!(wait_for(|| tcp.stats().frames_dropped == 1).await);
        // The worker answers the check: the frame goes back, and media now passes. Two frames
        // in one write, the second split across writes: framing, not segments.
        worker.send_to(&answer, relay).await.unwrap();
        assert_eq!(read_one(&mut client).await, answer);
        let mut both = framed(&media);
        both.extend_from_slice(&framed(&media[..100])[..50]);
        client.write_all(&both).await.unwrap();
        client
            .write_all(&framed(&media[..100])[50..])
            .await
            .unwrap();
        assert_eq!(worker.recv_from(&mut buf).await.unwrap(), (300, relay));
        assert_eq!(worker.recv_from(&mut buf).await.unwrap(), (100, relay));
        // Bytes of no RTC protocol (RFC 7983) are dropped even then.
        client.write_all(&framed(&[7u8; 40])).await.unwrap();
        assert!(quiet(&worker).await);
        assert_eq!(tcp.stats().accepted, 1);
        assert_eq!(tcp.stats().dropped, 0);
        assert_eq!(tcp.stats().frames_dropped, 2);
    }

    #[tokio::test]
    async fn a_flood_of_tiny_frames_is_held_to_the_connections_rate() {
        let (tcp, worker) = relay().await;
        let (request, answer) = check_and_answer();
        let mut client = TcpStream::connect(tcp.local_addrs()[0]).await.unwrap();
        client.write_all(&framed(&request)).await.unwrap();
        let mut buf = [0u8; 2048];
        let (_, relay) = worker.recv_from(&mut buf).await.unwrap();
        worker.send_to(&answer, relay).await.unwrap();
        read_one(&mut client).await;
        // 10 000 RTCP-looking 2-byte frames in one write (60 kB that would be 10 000 datagrams).
        let flood: Vec<u8> = (0..10_000).flat_map(|_| framed(&[0x80, 200])).collect();
        client.write_all(&flood).await.unwrap();
        assert!(
            wait_for(|| tcp.stats().frames_dropped >= 10_000 - 2 * FRAMES_PER_SEC as u64).await
        );
        let mut forwarded = 0;
        while !quiet(&worker).await {
            forwarded += 1;
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(1), worker.recv_from(&mut buf)).await
            {
                forwarded += 1;
            }
        }
        assert!(
            forwarded <= 2 * FRAMES_PER_SEC as usize,
            "{forwarded} datagrams forwarded"
        );
    }

    #[tokio::test]
    async fn bad_framing_drops_the_connection_and_counts_it() {
        let (tcp, worker) = relay().await;
        // (after a valid STUN frame?, then)
        for (stun_first, garbage) in [
            (false, framed(&[22u8; 60])),              // DTLS before any STUN
            (true, vec![0, 0]),                        // an empty frame
            (false, (5000u16).to_be_bytes().to_vec()), // longer than the limit
        ] {
            let mut client = TcpStream::connect(tcp.local_addrs()[0]).await.unwrap();
            if stun_first {
                client.write_all(&framed(&stun())).await.unwrap();
            }
            client.write_all(&garbage).await.unwrap();
            let mut rest = Vec::new();
            // The node closes the connection (FIN or reset), sending nothing.
            let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
                .await
                .expect("closed in time");
            assert!(rest.is_empty(), "{read:?}");
        }
        assert!(wait_for(|| tcp.stats().dropped == 3).await);
        // Only the one STUN frame ever reached the worker.
        let mut buf = [0u8; 2048];
        let (n, _) = worker.recv_from(&mut buf).await.unwrap();
        assert!(n == stun().len() && looks_like_stun(&buf[..n]));
        assert!(quiet(&worker).await);
    }
}
