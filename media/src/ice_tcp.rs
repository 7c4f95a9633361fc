//! ICE-TCP (RFC 6544 passive candidates, RFC 4571 framing) for clients whose UDP to the node is
//! blocked. Each worker gets a TCP listener; every accepted connection is a framing adapter in
//! front of that worker's UDP socket: its frames go to the worker as datagrams from a UDP socket
//! of its own, and the worker's datagrams back to that socket go out as frames. The worker sees
//! one more source address and runs the very same ICE, consent, DTLS and SRTP path — its hot
//! path does not change, and a TCP client costs one loopback hop per packet.
//!
//! Hostile input: a connection must open with a STUN message within [`FIRST_FRAME_TIMEOUT`], no
//! frame may be empty or longer than [`MAX_FRAME`], and a connection silent for
//! [`IDLE_TIMEOUT`] is closed (browsers send consent checks every few seconds); connections are
//! capped in all and per client address. Each refusal or drop is counted.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Longest frame accepted: browsers packetise for a UDP MTU over TCP too (~1200 bytes).
pub(crate) const MAX_FRAME: usize = 4096;
/// A new connection must send its first (STUN) frame within this.
pub(crate) const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no frame from the client for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
        Self {
            max_connections: 1024,
            max_per_ip: 16,
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
    /// or over [`MAX_FRAME`], or no first frame in time.
    pub dropped: u64,
    /// Connections open now.
    pub open: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
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
        let Some(admitted) = admission.admit(peer.ip()) else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "ICE-TCP connection refused: over the limits");
            continue; // dropping the stream closes it
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let counters = counters.clone();
        tokio::spawn(async move {
            counters.open.fetch_add(1, Ordering::Relaxed);
            if let Err(reason) = serve(stream, worker).await {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, reason, "ICE-TCP connection dropped");
            }
            counters.open.fetch_sub(1, Ordering::Relaxed);
            drop(admitted);
        });
    }
}

/// Why a connection was dropped for bad input (a clean close or an I/O error is not one).
type BadInput = &'static str;

/// Relays one connection until either side ends; `Err` when the client broke the rules.
async fn serve(stream: TcpStream, worker: SocketAddr) -> Result<(), BadInput> {
    let _ = stream.set_nodelay(true);
    // The worker must see each connection as its own address: a UDP socket per connection,
    // connected to the worker so nothing else can write into it.
    let relay_ip = match worker.ip() {
        ip if !ip.is_unspecified() => ip,
        IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    };
    let Ok(udp) = UdpSocket::bind(SocketAddr::new(relay_ip, 0)).await else {
        return Ok(()); // out of sockets: the client retries or uses another candidate
    };
    if udp.connect(worker).await.is_err() {
        return Ok(());
    }
    let udp = Arc::new(udp);
    let (reader, writer) = stream.into_split();
    let mut to_client = tokio::spawn(worker_to_client(udp.clone(), writer));
    let result = tokio::select! {
        result = client_to_worker(reader, &udp) => result,
        _ = &mut to_client => Ok(()),
    };
    to_client.abort();
    result
}

/// Frames from the client → datagrams to the worker.
async fn client_to_worker(mut reader: OwnedReadHalf, udp: &UdpSocket) -> Result<(), BadInput> {
    let mut frame = vec![0u8; MAX_FRAME];
    let mut first = true;
    loop {
        let wait = if first {
            FIRST_FRAME_TIMEOUT
        } else {
            IDLE_TIMEOUT
        };
        let len = match tokio::time::timeout(wait, read_frame(&mut reader, &mut frame)).await {
            Err(_) if first => return Err("no first frame in time"),
            Err(_) => return Ok(()), // idle: the client went away
            Ok(Err(FrameError::Closed)) => return Ok(()),
            Ok(Err(FrameError::Bad(reason))) => return Err(reason),
            Ok(Ok(len)) => len,
        };
        let datagram = &frame[..len];
        if first && !looks_like_stun(datagram) {
            return Err("first frame is not STUN");
        }
        first = false;
        // A full socket buffer drops the datagram, as the network would.
        let _ = udp.send(datagram).await;
    }
}

/// Datagrams from the worker → frames to the client. A client that stops reading stalls only
/// this task; the worker's datagrams then drop in this socket's buffer.
async fn worker_to_client(udp: Arc<UdpSocket>, mut writer: OwnedWriteHalf) {
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
        frame[..2].copy_from_slice(&prefix.to_be_bytes());
        if writer.write_all(&frame[..2 + len]).await.is_err() {
            return;
        }
    }
}

enum FrameError {
    Closed,
    Bad(BadInput),
}

/// Reads one RFC 4571 frame (16-bit big-endian length, then that many bytes) into `buf`.
async fn read_frame(reader: &mut OwnedReadHalf, buf: &mut [u8]) -> Result<usize, FrameError> {
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

    /// A worker stand-in (a UDP socket) behind a real listener: frames in, datagrams out and back.
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

    fn stun() -> Vec<u8> {
        let mut binding = vec![0u8; 20];
        binding[1] = 1;
        binding[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        binding
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn frames_become_datagrams_and_datagrams_frames() {
        let (tcp, worker) = relay().await;
        let mut client = TcpStream::connect(tcp.local_addrs()[0]).await.unwrap();
        client.write_all(&framed(&stun())).await.unwrap();
        // Two frames in one write, the second split across writes: framing, not segments.
        let media = [0x80u8; 300];
        let mut both = framed(&media);
        both.extend_from_slice(&framed(&media[..100])[..50]);
        client.write_all(&both).await.unwrap();
        client
            .write_all(&framed(&media[..100])[50..])
            .await
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, relay) = worker.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &stun()[..]);
        assert_eq!(worker.recv_from(&mut buf).await.unwrap(), (300, relay));
        assert_eq!(worker.recv_from(&mut buf).await.unwrap(), (100, relay));
        worker.send_to(&[7u8; 40], relay).await.unwrap();
        let mut back = [0u8; 42];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back[..2], &40u16.to_be_bytes());
        assert!(back[2..].iter().all(|&b| b == 7));
        assert_eq!(tcp.stats().accepted, 1);
        assert_eq!(tcp.stats().dropped, 0);
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tcp.stats().dropped < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(tcp.stats().dropped, 3);
        // Only the one STUN frame ever reached the worker.
        let mut buf = [0u8; 64];
        let (n, _) = worker.recv_from(&mut buf).await.unwrap();
        assert_eq!(n, 20);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), worker.recv_from(&mut buf))
                .await
                .is_err()
        );
    }
}
