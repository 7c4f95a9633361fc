//! What the simulated peers put on and take off the wire besides the handshake: the send time
//! in every payload, kernel receive timestamps (`SO_TIMESTAMPNS`) so that latency is measured
//! up to the moment the datagram reached our socket — not up to when the generator, busy with
//! hundreds of other subscribers, got to it — and keyframe requests in the server's RTCP.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// `CLOCK_REALTIME` in nanoseconds: the clock the kernel stamps received datagrams with, so
/// send and arrival times compare directly (one machine, one clock).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Asks the kernel to stamp every datagram this socket receives.
pub(crate) fn enable_receive_timestamps(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: valid fd; the option value is a c_int of the stated size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One waiting datagram, without blocking: its length, source and kernel arrival time (ns of
/// `CLOCK_REALTIME`, when stamping is on). `WouldBlock` when nothing is waiting.
pub(crate) fn try_recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u64>)> {
    socket.try_io(Interest::READABLE, || {
        // SAFETY: all-zero is a valid bit pattern for these C structs.
        let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 8];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw mut name).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        // SAFETY: every pointer in `msg` refers to live, writable memory of the stated size.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut stamp = None;
        // SAFETY: the kernel filled `msg_control` with well-formed headers within
        // `msg_controllen`; the CMSG macros stay inside it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
            }
        }
        let from = mooyaho_net::udp::to_socket_addr(&name)
            .ok_or_else(|| io::Error::other("datagram from an unknown address family"))?;
        Ok((n as usize, from, stamp))
    })
}

/// Whether a (decrypted) compound RTCP packet asks the media sender for a keyframe: a PLI
/// (PSFB, FMT 1) or FIR (PSFB, FMT 4), RFC 4585 / RFC 5104.
pub(crate) fn requests_keyframe(mut rtcp: &[u8]) -> bool {
    while rtcp.len() >= 4 {
        let (first, pt) = (rtcp[0], rtcp[1]);
        if first >> 6 != 2 {
            return false;
        }
        if pt == 206 && matches!(first & 0x1f, 1 | 4) {
            return true;
        }
        let len = (usize::from(u16::from_be_bytes([rtcp[2], rtcp[3]])) + 1) * 4;
        rtcp = rtcp.get(len..).unwrap_or_default();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_are_found_in_compound_packets() {
        let receiver_report = [0x80, 201, 0, 1, 0, 0, 0, 1];
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        let fir = [0x84, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0];
        let remb = [0x8f, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(!requests_keyframe(&receiver_report));
        assert!(requests_keyframe(&[&receiver_report[..], &pli].concat()));
        assert!(requests_keyframe(&fir));
        assert!(!requests_keyframe(&remb));
        assert!(!requests_keyframe(&[0x00, 206, 0, 2]), "not RTP version 2");
        assert!(
            !requests_keyframe(&[0x80, 201, 0, 200]),
            "length past the end"
        );
    }

    #[tokio::test]
    async fn received_datagrams_carry_a_kernel_timestamp() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable_receive_timestamps(&b).unwrap();
        let before = now_ns();
        a.send_to(b"hello", b.local_addr().unwrap()).await.unwrap();
        b.readable().await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from, stamp) = try_recv_stamped(&b, &mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], a.local_addr().unwrap()));
        let stamp = stamp.expect("SO_TIMESTAMPNS stamp");
        assert!(stamp >= before && stamp <= now_ns(), "{before} ≤ {stamp}");
        let err = try_recv_stamped(&b, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
