//! Batched UDP I/O: `recvmmsg(2)` with the kernel's receive timestamp on every datagram, and
//! `sendmmsg(2)`. One system call moves up to [`BATCH`] datagrams; under load that is what
//! keeps a SIP worker's system calls per message well under two.
//!
//! The kernel timestamp (`SO_TIMESTAMPNS`, wall clock) says when the datagram reached the
//! socket, so the time a message waited in the socket's queue is known exactly: the overload
//! gate sheds on it, and the INVITE-in → buyer-INVITE-out delay includes it.

use dce_media::sys::{sockaddr, to_storage};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Datagrams per system call.
pub const BATCH: usize = 32;

/// Control-message room per datagram (one `timespec` cmsg needs 32 bytes on 64-bit Linux).
const CTRL: usize = 64;

/// Ask the kernel to stamp every datagram `fd` receives. Best effort: without it the time of
/// the read stands in.
pub fn enable_timestamps(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the duration of the call; the fd is the caller's.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "SO_TIMESTAMPNS not set");
    }
}

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Its bytes (at most the buffer size; see `truncated`).
    pub bytes: &'a [u8],
    /// Where it came from.
    pub from: SocketAddr,
    /// True when it was longer than the buffer (the rest was discarded by the kernel).
    pub truncated: bool,
    /// How long ago the kernel received it (zero without a timestamp).
    pub waited: Duration,
}

/// Buffers for one `recvmmsg` call, reused for every call.
pub struct RecvBatch {
    size: usize,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u8; CTRL]>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    len: usize,
    read_at: SystemTime,
}

// SAFETY: the raw pointers in `iov` and `hdrs` point into the batch's own heap buffers, which
// move with it; they are re-pointed before every system call.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Room for [`BATCH`] datagrams of up to `size` bytes each.
    pub fn new(size: usize) -> RecvBatch {
        // SAFETY: all-zero is a valid sockaddr_storage, iovec and mmsghdr.
        let (addr, iov, hdr) = unsafe {
            (
                zeroed::<libc::sockaddr_storage>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::mmsghdr>(),
            )
        };
        RecvBatch {
            size,
            bufs: vec![0; size * BATCH],
            addrs: vec![addr; BATCH],
            ctrl: vec![[0; CTRL]; BATCH],
            iov: vec![iov; BATCH],
            hdrs: vec![hdr; BATCH],
            len: 0,
            read_at: UNIX_EPOCH,
        }
    }

    /// Read up to [`BATCH`] datagrams from the non-blocking socket `fd` without waiting:
    /// `WouldBlock` when there is none. Returns how many were read.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.len = 0;
        for i in 0..BATCH {
            self.iov[i] = libc::iovec {
                iov_base: self.bufs[i * self.size..].as_mut_ptr().cast(),
                iov_len: self.size,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_controllen = CTRL as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` that outlive the call, with
        // their true lengths; MSG_DONTWAIT never blocks; a null timeout is allowed.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.len = n as usize;
        self.read_at = SystemTime::now();
        Ok(self.len)
    }

    /// Datagrams read by the last [`RecvBatch::recv`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the last read returned nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagram `i` of the last read (`None` past the end or from an unknown address family).
    pub fn get(&self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.len {
            return None;
        }
        let h = &self.hdrs[i];
        let n = (h.msg_len as usize).min(self.size);
        let from = sockaddr(&self.addrs[i])?;
        let waited = timestamp(&h.msg_hdr)
            .and_then(|t| self.read_at.duration_since(t).ok())
            .unwrap_or_default();
        Some(Datagram {
            bytes: &self.bufs[i * self.size..i * self.size + n],
            from,
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            waited,
        })
    }
}

/// The `SCM_TIMESTAMPNS` control message of a received header, as wall-clock time.
fn timestamp(h: &libc::msghdr) -> Option<SystemTime> {
    if h.msg_controllen == 0 || h.msg_control.is_null() {
        return None;
    }
    // SAFETY: the kernel filled `msg_control` with `msg_controllen` bytes of well-formed
    // control messages; CMSG_FIRSTHDR/CMSG_NXTHDR stay within them; the data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// What one `sendmmsg` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The first `n` datagrams were sent (`n >= 1`).
    Some(usize),
    /// The first datagram failed for good (counted and skipped by the caller).
    Failed(i32),
    /// The socket's send buffer is full: wait until it is writable.
    WouldBlock,
}

/// Send `msgs` (each to its address) from the non-blocking socket `fd`, as many as one
/// `sendmmsg` takes (at most [`BATCH`]).
pub fn send(fd: RawFd, msgs: &[(SocketAddr, &[u8])]) -> Sent {
    let n = msgs.len().min(BATCH);
    if n == 0 {
        return Sent::Some(0);
    }
    let mut addrs = [(unsafe { zeroed::<libc::sockaddr_storage>() }, 0); BATCH];
    // SAFETY: all-zero is a valid iovec and mmsghdr.
    let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for (i, (to, bytes)) in msgs[..n].iter().enumerate() {
        addrs[i] = to_storage(*to);
        iov[i] = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
    }
    for i in 0..n {
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&mut addrs[i].0 as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = addrs[i].1;
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: the headers point at stack arrays and the callers' byte slices, all alive for
    // the call; the kernel only reads them. MSG_DONTWAIT never blocks.
    let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if r > 0 {
        return Sent::Some(r as usize);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Sent::WouldBlock,
        Some(code) => Sent::Failed(code),
        None => Sent::Failed(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_out_in_one_call_and_comes_back_stamped() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        enable_timestamps(rx.as_raw_fd());
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10 + i as usize]).collect();
        let msgs: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, &p[..])).collect();
        let mut off = 0;
        while off < msgs.len() {
            match send(tx.as_raw_fd(), &msgs[off..]) {
                Sent::Some(n) => off += n,
                other => panic!("{other:?}"),
            }
        }
        let mut b = RecvBatch::new(32);
        let mut got = Vec::new();
        for _ in 0..100 {
            match b.recv(rx.as_raw_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let d = b.get(i).unwrap();
                        assert_eq!(d.from, tx.local_addr().unwrap());
                        assert!(d.waited < Duration::from_secs(5), "{:?}", d.waited);
                        got.push((d.bytes.to_vec(), d.truncated));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got.len() == 40 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 40);
        for (i, (bytes, truncated)) in got.iter().enumerate() {
            let want = &payloads[i];
            assert_eq!(*truncated, want.len() > 32, "datagram {i}");
            assert_eq!(&bytes[..], &want[..want.len().min(32)]);
        }
        assert!(matches!(
            b.recv(rx.as_raw_fd()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        ));
    }

    #[test]
    fn ipv6_addresses_round_trip() {
        let Ok(rx) = std::net::UdpSocket::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here; not run");
            return;
        };
        rx.set_nonblocking(true).unwrap();
        let tx = std::net::UdpSocket::bind("[::1]:0").unwrap();
        assert_eq!(
            send(tx.as_raw_fd(), &[(rx.local_addr().unwrap(), b"hi")]),
            Sent::Some(1)
        );
        let mut b = RecvBatch::new(64);
        for _ in 0..100 {
            if b.recv(rx.as_raw_fd()).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let d = b.get(0).unwrap();
        assert_eq!(d.bytes, b"hi");
        assert_eq!(d.from, tx.local_addr().unwrap());
    }
}
