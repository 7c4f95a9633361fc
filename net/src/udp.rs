//! The only file that touches a file descriptor: a non-blocking UDP socket with batched
//! `recvmmsg`/`sendmmsg` (Linux), plus `poll` on the socket and the worker's wake-up eventfd.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Datagrams per batched syscall.
pub const BATCH: usize = 32;
/// Largest datagram handled (above any WebRTC MTU).
pub const MAX_DATAGRAM: usize = 1500;

/// A batch of received datagrams.
pub struct RecvBatch {
    buffers: Vec<[u8; MAX_DATAGRAM]>,
    lengths: [usize; BATCH],
    sources: [SocketAddr; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            buffers: vec![[0; MAX_DATAGRAM]; BATCH],
            lengths: [0; BATCH],
            sources: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// A batch without buffers, to stand in (without allocating) while the real one is moved
    /// out for processing. Receiving into it is a bug.
    pub fn detached() -> Self {
        Self {
            buffers: Vec::new(),
            lengths: [0; BATCH],
            sources: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
            count: 0,
        }
    }

    /// The datagrams of the last receive, with their sources.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.count).map(|i| (self.sources[i], &self.buffers[i][..self.lengths[i]]))
    }

    /// The datagrams of the last receive, writable: SRTP decrypts in place here.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SocketAddr, &mut [u8])> {
        let sources = &self.sources;
        let lengths = &self.lengths;
        self.buffers[..self.count]
            .iter_mut()
            .enumerate()
            .map(|(i, buffer)| (sources[i], &mut buffer[..lengths[i]]))
    }
}

/// Datagrams a [`SendBatch`] should hold at most: four full `sendmmsg` calls. Its owner sends
/// once [`SendBatch::is_full`] says so, even in the middle of a fan-out: the arena keeps its
/// high-water mark for good, and one receive batch fanned out to a large room (32 packets × N
/// subscribers) grew it with the room (28 KiB per subscriber at 200); bounded, it stays under
/// 200 KB, and the first copies leave before the last ones are encrypted.
pub const SEND_BATCH_LIMIT: usize = 4 * BATCH;

/// Datagrams queued for `sendmmsg`, stored back to back in one arena that is reused from flush
/// to flush: once it has grown to the largest burst, queueing a datagram never allocates
/// (DESIGN §4).
#[derive(Default)]
pub struct SendBatch {
    /// Destination, offset in `arena` and length of each datagram.
    items: Vec<(SocketAddr, usize, usize)>,
    /// GSO runs of the last flush (kept for its capacity).
    runs: Vec<Run>,
    /// Datagram bytes; its length is a high-water mark, only `used` bytes are queued.
    arena: Vec<u8>,
    used: usize,
}

impl SendBatch {
    /// Queues a copy of `datagram`.
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.push_with(to, datagram.len(), |slot| {
            slot.copy_from_slice(datagram);
            Some(datagram.len())
        });
    }

    /// Queues a datagram written in place: `write` gets a `room`-byte slot of the arena and
    /// returns the length it wrote, or `None` to queue nothing.
    pub fn push_with(
        &mut self,
        to: SocketAddr,
        room: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) {
        let start = self.used;
        if self.arena.len() < start + room {
            self.arena.resize(start + room, 0);
        }
        let Some(len) = write(&mut self.arena[start..start + room]) else {
            return;
        };
        let len = len.min(room);
        self.items.push((to, start, len));
        self.used += len;
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.used
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// [`SEND_BATCH_LIMIT`] datagrams are queued: send them before queueing more.
    pub fn is_full(&self) -> bool {
        self.items.len() >= SEND_BATCH_LIMIT
    }

    fn clear(&mut self) {
        self.items.clear();
        self.used = 0;
    }

    /// Every queued datagram, copied out, and the batch emptied (tests and the fuzz harness,
    /// which have no socket).
    pub fn take_all(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let taken = self
            .items
            .iter()
            .map(|(to, start, len)| (*to, self.arena[*start..*start + *len].to_vec()))
            .collect();
        self.clear();
        taken
    }
}

/// A worker's UDP socket.
#[derive(Debug)]
pub struct Socket {
    socket: UdpSocket,
    /// Segmentation offload works on this socket (cleared at the first refusal).
    gso: std::cell::Cell<bool>,
}

impl Socket {
    /// Binds non-blocking with large buffers (bursts of video keyframes to many subscribers).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            let size: libc::c_int = 8 * 1024 * 1024;
            // Best effort: the kernel caps it at rmem_max/wmem_max.
            // SAFETY: valid fd, option value is a c_int of the stated size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&raw const size).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        Ok(Self {
            socket,
            gso: std::cell::Cell::new(true),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives up to [`BATCH`] datagrams without blocking; 0 when none are waiting.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        // SAFETY: all-zero is a valid bit pattern for these C structs.
        let mut storage: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iovecs[i] = libc::iovec {
                iov_base: batch.buffers[i].as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
            headers[i].msg_hdr.msg_name = (&raw mut storage[i]).cast();
            headers[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            headers[i].msg_hdr.msg_iov = &raw mut iovecs[i];
            headers[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers/storage sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            batch.count = 0;
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        let n = n as usize;
        let mut kept = 0;
        for i in 0..n {
            // Truncated datagrams (larger than any WebRTC packet) are dropped.
            if headers[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            let Some(source) = to_socket_addr(&storage[i]) else {
                continue;
            };
            if kept != i {
                batch.buffers.swap(kept, i);
            }
            batch.lengths[kept] = headers[i].msg_len as usize;
            batch.sources[kept] = source;
            kept += 1;
        }
        batch.count = kept;
        Ok(kept)
    }

    /// Sends every queued datagram with `sendmmsg`, [`BATCH`] messages per call. Consecutive
    /// datagrams to one destination of equal size (the last may be shorter) leave as one GSO
    /// message (`UDP_SEGMENT`, Linux ≥ 4.18): the kernel segments them, one syscall and one
    /// route lookup for the run. Datagrams the kernel refuses are dropped and counted in the
    /// return value's second field; the first is the number of datagrams sent.
    pub fn send_batch(&self, batch: &mut SendBatch) -> (usize, usize) {
        let mut runs = std::mem::take(&mut batch.runs);
        gso_runs(&batch.items, self.gso.get(), &mut runs);
        let (mut sent, mut dropped) = (0, 0);
        for chunk in runs.chunks(BATCH) {
            // SAFETY: all-zero is a valid bit pattern for these C structs.
            let mut storage: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
            let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            let mut control = [[0u64; CMSG_WORDS]; BATCH];
            for (i, run) in chunk.iter().enumerate() {
                let datagram = &batch.arena[run.offset..run.offset + run.len];
                let name_len = write_socket_addr(run.to, &mut storage[i]);
                iovecs[i] = libc::iovec {
                    iov_base: datagram.as_ptr() as *mut libc::c_void,
                    iov_len: datagram.len(),
                };
                let header = &mut headers[i].msg_hdr;
                header.msg_name = (&raw mut storage[i]).cast();
                header.msg_namelen = name_len;
                header.msg_iov = &raw mut iovecs[i];
                header.msg_iovlen = 1;
                if run.segments > 1 {
                    set_segment_size(header, &mut control[i], run.segment);
                }
            }
            let mut at = 0;
            while at < chunk.len() {
                // SAFETY: headers[at..] point at live storage, control buffers and datagrams.
                let n = unsafe {
                    libc::sendmmsg(
                        self.socket.as_raw_fd(),
                        headers[at..].as_mut_ptr(),
                        (chunk.len() - at) as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    let error = io::Error::last_os_error();
                    if error.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    let run = &chunk[at];
                    if run.segments > 1
                        && matches!(error.raw_os_error(), Some(libc::EIO | libc::EINVAL))
                    {
                        // The device cannot segment: stop using GSO and send this run one by one.
                        self.gso.set(false);
                        sent += self.send_run_plain(batch, run);
                    } else {
                        // Skip what the kernel refused (full buffer, unreachable peer) and keep
                        // going: one bad destination must not stall the others.
                        dropped += run.segments;
                    }
                    at += 1;
                    continue;
                }
                sent += chunk[at..at + n as usize]
                    .iter()
                    .map(|r| r.segments)
                    .sum::<usize>();
                at += n as usize;
            }
        }
        batch.runs = runs;
        batch.clear();
        (sent, dropped)
    }

    /// Sends a run as separate datagrams (GSO fallback).
    fn send_run_plain(&self, batch: &SendBatch, run: &Run) -> usize {
        let mut sent = 0;
        let mut offset = run.offset;
        let end = run.offset + run.len;
        while offset < end {
            let len = run.segment.min(end - offset);
            if self
                .socket
                .send_to(&batch.arena[offset..offset + len], run.to)
                .is_ok()
            {
                sent += 1;
            }
            offset += len;
        }
        sent
    }

    /// Waits until the socket or `wake` is readable, or `timeout` passes.
    pub fn wait(&self, wake: &Wake, timeout: Duration) {
        let mut fds = [
            libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = timeout.as_millis().clamp(0, 1000) as libc::c_int;
        // SAFETY: two valid pollfd entries.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if fds[1].revents & libc::POLLIN != 0 {
            wake.drain();
        }
    }
}

/// An eventfd that lets other threads wake a worker blocked in [`Socket::wait`].
#[derive(Debug)]
pub struct Wake {
    fd: OwnedFd,
}

impl Wake {
    /// A fresh eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wakes the waiting worker.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to an eventfd.
        unsafe { libc::write(self.raw(), (&raw const one).cast(), 8) };
    }

    fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reading 8 bytes into a live u64.
        unsafe { libc::read(self.raw(), (&raw mut value).cast(), 8) };
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The address in a `sockaddr_storage` filled by the kernel (`recvmsg`, `recvmmsg`); `None`
/// for families other than IPv4 and IPv6.
pub fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let addr: &libc::sockaddr_in = unsafe { &*(storage as *const _ as *const _) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(addr.sin_addr.s_addr).into(),
                u16::from_be(addr.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let addr: &libc::sockaddr_in6 = unsafe { &*(storage as *const _ as *const _) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                addr.sin6_addr.s6_addr.into(),
                u16::from_be(addr.sin6_port),
                addr.sin6_flowinfo,
                addr.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn write_socket_addr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let out: &mut libc::sockaddr_in = unsafe { &mut *(storage as *mut _ as *mut _) };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = v4.port().to_be();
            out.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let out: &mut libc::sockaddr_in6 = unsafe { &mut *(storage as *mut _ as *mut _) };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = v6.port().to_be();
            out.sin6_addr.s6_addr = v6.ip().octets();
            out.sin6_flowinfo = v6.flowinfo();
            out.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// `SOL_UDP` option carrying the GSO segment size (linux/udp.h).
const UDP_SEGMENT: libc::c_int = 103;
/// Most segments one GSO message may carry (`UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// Largest GSO message (an IP datagram's 64 KiB, minus headers).
const MAX_GSO_BYTES: usize = 65_000;
/// Control buffer for one `cmsghdr` with a `u16`, in `u64` words for alignment.
const CMSG_WORDS: usize = 4;

/// One message of a `sendmmsg`: `segments` datagrams of `segment` bytes (the last may be
/// shorter), contiguous in the batch's arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    to: SocketAddr,
    offset: usize,
    len: usize,
    segment: usize,
    segments: usize,
}

/// Groups queued datagrams into GSO runs (or one run per datagram without GSO).
fn gso_runs(items: &[(SocketAddr, usize, usize)], gso: bool, runs: &mut Vec<Run>) {
    runs.clear();
    for &(to, offset, len) in items {
        if gso && let Some(run) = runs.last_mut() {
            // Same destination, contiguous, same size as the run's segments, and the run has
            // not yet taken its (possibly shorter) last segment.
            let extends = run.to == to
                && run.offset + run.len == offset
                && len <= run.segment
                && run.len == run.segment * run.segments
                && run.segments < MAX_SEGMENTS
                && run.len + len <= MAX_GSO_BYTES;
            if extends {
                run.len += len;
                run.segments += 1;
                continue;
            }
        }
        runs.push(Run {
            to,
            offset,
            len,
            segment: len,
            segments: 1,
        });
    }
}

/// Attaches a `UDP_SEGMENT` control message to `header`.
fn set_segment_size(header: &mut libc::msghdr, control: &mut [u64; CMSG_WORDS], segment: usize) {
    let size = segment as u16;
    header.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE of a u16 (24 bytes on 64-bit) fits the 32-byte buffer.
    header.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
    // SAFETY: msg_control points at a zeroed buffer large enough for one cmsghdr + u16.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(header);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_over_loopback() {
        let a = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = b.local_addr().unwrap();
        let mut out = SendBatch::default();
        for i in 0..40u8 {
            out.push(to, &[i; 100]);
        }
        assert_eq!(a.send_batch(&mut out), (40, 0));
        assert!(out.is_empty());
        let wake = Wake::new().unwrap();
        let mut received = Vec::new();
        let mut batch = RecvBatch::default();
        while received.len() < 40 {
            b.wait(&wake, Duration::from_millis(500));
            let n = b.recv_batch(&mut batch).unwrap();
            assert!(n <= BATCH);
            for (from, data) in batch.iter() {
                assert_eq!(from, a.local_addr().unwrap());
                received.push(data.to_vec());
            }
        }
        let firsts: Vec<u8> = received.iter().map(|d| d[0]).collect();
        assert_eq!(firsts, (0..40).collect::<Vec<_>>());
        assert!(received.iter().all(|d| d.len() == 100));
        // Nothing more: a non-blocking receive returns 0.
        assert_eq!(b.recv_batch(&mut batch).unwrap(), 0);
    }

    #[test]
    fn send_arena_is_reused_across_flushes() {
        let a = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = a.local_addr().unwrap();
        let mut out = SendBatch::default();
        let mut grown = None;
        for _ in 0..3 {
            for i in 0..10u8 {
                out.push_with(to, 64, |slot| {
                    slot[..10].fill(i);
                    (i % 2 == 0).then_some(10)
                });
            }
            assert_eq!(out.len(), 5, "`None` queues nothing");
            assert_eq!(out.used, 50);
            let arena = *grown.get_or_insert(out.arena.as_ptr());
            assert_eq!(out.arena.as_ptr(), arena, "no reallocation once grown");
            assert_eq!(a.send_batch(&mut out), (5, 0));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn a_burst_sent_whenever_the_batch_is_full_keeps_the_arena_bounded() {
        let a = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = a.local_addr().unwrap();
        let room = MAX_DATAGRAM + 20;
        let mut out = SendBatch::default();
        let (mut sent, mut flushes) = (0, 0);
        // One fan-out: 32 packets to 100 subscribers, sent as the worker's drain does.
        for i in 0..3200usize {
            out.push_with(to, room, |slot| {
                slot[..100].fill(i as u8);
                Some(100)
            });
            if out.is_full() {
                let (ok, dropped) = a.send_batch(&mut out);
                sent += ok + dropped;
                flushes += 1;
            }
        }
        assert_eq!(flushes, 3200 / SEND_BATCH_LIMIT);
        assert_eq!(sent, 3200, "every datagram went to the kernel");
        // The arena never held more than one full batch (plus one slot's room).
        assert!(
            out.arena.capacity() <= 2 * (SEND_BATCH_LIMIT * 100 + room),
            "arena {} bytes",
            out.arena.capacity()
        );
    }

    #[test]
    fn runs_group_equal_datagrams_to_one_destination() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let items = [
            (a, 0, 100),
            (a, 100, 100),
            (a, 200, 60), // shorter last segment closes the run
            (a, 260, 60),
            (b, 320, 60),
            (b, 380, 100), // larger than the run's segment: new run
        ];
        let mut runs = Vec::new();
        gso_runs(&items, true, &mut runs);
        let shape: Vec<_> = runs
            .iter()
            .map(|r| (r.to, r.segments, r.segment, r.len))
            .collect();
        assert_eq!(
            shape,
            vec![
                (a, 3, 100, 260),
                (a, 1, 60, 60),
                (b, 1, 60, 60),
                (b, 1, 100, 100)
            ]
        );
        gso_runs(&items, false, &mut runs);
        assert_eq!(runs.len(), items.len());
    }

    #[test]
    fn gso_runs_arrive_as_separate_datagrams() {
        let a = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let c = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let mut out = SendBatch::default();
        // 30 equal video-sized packets to b (one GSO run), a short tail, then interleaved c.
        for i in 0..30u8 {
            out.push(to_b, &[i; 1200]);
        }
        out.push(to_b, &[200; 300]);
        for i in 0..5u8 {
            out.push(to_c, &[i; 500]);
            out.push(to_b, &[100 + i; 700]);
        }
        assert_eq!(a.send_batch(&mut out), (41, 0));
        assert!(
            a.gso.get(),
            "loopback on Linux segments: GSO must not have been given up"
        );
        let wake = Wake::new().unwrap();
        let mut batch = RecvBatch::default();
        let mut receive = |socket: &Socket, n: usize| {
            let mut got = Vec::new();
            while got.len() < n {
                socket.wait(&wake, Duration::from_millis(500));
                socket.recv_batch(&mut batch).unwrap();
                got.extend(batch.iter().map(|(_, d)| d.to_vec()));
            }
            got
        };
        let at_b = receive(&b, 36);
        let at_c = receive(&c, 5);
        let expected_b: Vec<Vec<u8>> = (0..30u8)
            .map(|i| vec![i; 1200])
            .chain([vec![200; 300]])
            .chain((0..5u8).map(|i| vec![100 + i; 700]))
            .collect();
        assert_eq!(at_b, expected_b);
        assert_eq!(at_c, (0..5u8).map(|i| vec![i; 500]).collect::<Vec<_>>());
    }

    #[test]
    fn wake_interrupts_wait() {
        let socket = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let wake = std::sync::Arc::new(Wake::new().unwrap());
        let waker = wake.clone();
        let started = std::time::Instant::now();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
        });
        socket.wait(&wake, Duration::from_secs(1));
        handle.join().unwrap();
        assert!(started.elapsed() < Duration::from_millis(900));
    }
}
