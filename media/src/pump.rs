//! The relay thread ("pump"): one OS thread per [`crate::Relay`] that owns every media socket
//! of that relay and moves the packets, in a plain `epoll` loop — no task per stream, no
//! runtime (docs/decisions/0011-relay-thread.md).
//!
//! - Each RTP/RTCP socket is registered once, level-triggered, with a token naming its port
//!   pair and whether it is the RTCP socket; it stays registered while its pair is warm
//!   between calls, and a packet on a pair without a stream is read and dropped (so nothing
//!   old is left for the pair's next call).
//! - A readable socket gives what it holds, up to 8 packets, in one `recvmmsg`; each is checked
//!   and accounted by the stream's [`TaskState`], and they are sent on from the other leg's
//!   socket in one `sendmmsg`. Two system calls per readable socket (one packet at light load,
//!   several when the thread is busy), and one `epoll_wait` for all the sockets that became
//!   readable together.
//! - Commands from the SIP worker (open, remotes, answered, close) come as one queue behind a
//!   mutex; the worker wakes the thread with an eventfd once per batch ([`Link::signal`]).
//! - Every 500 ms the thread checks the answered streams for the RTP timeout.
//!
//! Sockets are never closed by the worker once handed over: the thread closes them (when a
//! pair is not kept warm, or at exit), so no fd number it polls can be reused under it.

use crate::engine::{MediaEvent, MediaId, Side};
use crate::sdp::Stream;
use crate::stream::{is_rtcp, RelayConfig, TaskState};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A stream's two pairs: (pair index, its sockets when newly bound; `None`: warm, the thread
/// has them).
pub(crate) type NewStream = [(usize, Option<[UdpSocket; 2]>); 2];

/// What the worker asks of the thread.
pub(crate) enum Cmd {
    Open {
        id: MediaId,
        streams: Vec<NewStream>,
    },
    Remote {
        id: MediaId,
        side: Side,
        streams: Vec<Stream>,
    },
    Answered {
        id: MediaId,
    },
    Record {
        id: MediaId,
        path: std::path::PathBuf,
    },
    Dtmf {
        id: MediaId,
        toward: Side,
        digit: char,
        duration_ms: u32,
    },
    Close {
        id: MediaId,
    },
    Exit,
}

/// The worker's end: the command queue, the wake-up, the pairs coming back.
pub(crate) struct Link {
    cmds: Mutex<Vec<Cmd>>,
    /// The thread has been woken and has not yet taken the queue.
    signalled: AtomicBool,
    wake: std::os::fd::OwnedFd,
    /// Pairs whose call ended: (pair index, sockets kept warm).
    pub(crate) released: Mutex<Vec<(usize, bool)>>,
    /// Pairs bound to calls now (health checks).
    pub(crate) in_use: Arc<AtomicUsize>,
}

impl Link {
    pub(crate) fn push(&self, cmd: Cmd) {
        self.cmds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cmd);
    }

    /// Wake the thread for what was pushed (callers signal only after a push), unless it is
    /// already awake for it.
    pub(crate) fn signal(&self) {
        if !self.signalled.swap(true, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a live u64 to our eventfd.
            unsafe {
                libc::write(
                    self.wake.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }
}

const WAKE: u64 = u64::MAX;
/// How often answered streams are checked for the RTP timeout.
const SWEEP: Duration = Duration::from_millis(500);
/// The thread looks at its queue at least this often, even if nobody signalled.
const POLL_CMDS: Duration = Duration::from_millis(50);
/// Warm pairs kept at most; beyond, a freed pair's sockets are closed.
pub(crate) const MAX_IDLE: usize = 4096;

struct StreamSlot {
    id: MediaId,
    /// The first stream of its call reports for the call.
    reports: bool,
    /// Its packets go to the recorder too.
    recorded: bool,
    pairs: [usize; 2],
    st: TaskState,
}

#[derive(Default)]
struct Pair {
    socks: Option<[UdpSocket; 2]>,
    /// (stream slot, side index 0 = A / 1 = B) while a call uses the pair.
    user: Option<(usize, usize)>,
}

struct Pump {
    cfg: RelayConfig,
    epfd: std::os::fd::OwnedFd,
    wake: std::os::fd::OwnedFd,
    link: Arc<Link>,
    events: mpsc::UnboundedSender<MediaEvent>,
    pairs: Vec<Pair>,
    streams: Vec<Option<StreamSlot>>,
    free: Vec<usize>,
    calls: HashMap<MediaId, Vec<usize>>,
    idle: usize,
    burst: Box<Burst>,
    /// Stream slots with telephone-events of DCE's own to play.
    injecting: Vec<usize>,
    /// The recorder thread, started with the first recorded call.
    recorder: Option<(crate::record::RecorderLink, std::thread::JoinHandle<()>)>,
}

/// Packets read from one socket at once.
const BURST: usize = 8;
const UNSPECIFIED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// Buffers for one `recvmmsg` of up to [`BURST`] packets, and the `sendmmsg` that relays them.
struct Burst {
    data: [[u8; 2048]; BURST],
    len: [usize; BURST],
    from: [libc::sockaddr_storage; BURST],
}

impl Burst {
    fn new() -> Box<Burst> {
        // SAFETY: all-zero is a valid value for every field (bytes, lengths, sockaddr_storage).
        Box::new(unsafe { std::mem::zeroed() })
    }

    /// Read what `fd` holds, up to [`BURST`] packets; how many (0 on any error).
    fn recv(&mut self, fd: i32) -> usize {
        // SAFETY: zeroed iovec/mmsghdr are valid; each points into `self`, alive for the call.
        let mut iov: [libc::iovec; BURST] = unsafe { std::mem::zeroed() };
        let mut hdr: [libc::mmsghdr; BURST] = unsafe { std::mem::zeroed() };
        for i in 0..BURST {
            iov[i].iov_base = self.data[i].as_mut_ptr().cast();
            iov[i].iov_len = self.data[i].len();
            hdr[i].msg_hdr.msg_iov = &mut iov[i];
            hdr[i].msg_hdr.msg_iovlen = 1;
            hdr[i].msg_hdr.msg_name = (&mut self.from[i] as *mut libc::sockaddr_storage).cast();
            hdr[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: hdr holds BURST valid entries.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdr.as_mut_ptr(),
                BURST as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        for (len, h) in self.len.iter_mut().zip(&hdr).take(n) {
            // a datagram longer than the buffer is cut (MSG_TRUNC): dropped below
            *len = if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                0
            } else {
                h.msg_len as usize
            };
        }
        n
    }

    /// Packet `i` of the last read (to be relayed as it is left) and its source.
    fn get(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        let len = self.len[i];
        if len == 0 {
            return None;
        }
        let from = crate::sys::sockaddr(&self.from[i])?;
        Some((&mut self.data[i][..len], from))
    }

    /// Send packets `(index, destination)` of the last read from `fd`; how many left.
    fn send(&self, fd: i32, sends: &[(usize, SocketAddr)]) -> usize {
        if sends.is_empty() {
            return 0;
        }
        // SAFETY: as in `recv`; the iovecs point at `self.data`, the names at `dest`.
        let mut iov: [libc::iovec; BURST] = unsafe { std::mem::zeroed() };
        let mut hdr: [libc::mmsghdr; BURST] = unsafe { std::mem::zeroed() };
        let mut dest: [(libc::sockaddr_storage, libc::socklen_t); BURST] =
            unsafe { std::mem::zeroed() };
        for (k, &(i, to)) in sends.iter().enumerate() {
            dest[k] = crate::sys::to_storage(to);
            iov[k].iov_base = self.data[i].as_ptr() as *mut libc::c_void;
            iov[k].iov_len = self.len[i];
            hdr[k].msg_hdr.msg_iov = &mut iov[k];
            hdr[k].msg_hdr.msg_iovlen = 1;
            hdr[k].msg_hdr.msg_name = (&mut dest[k].0 as *mut libc::sockaddr_storage).cast();
            hdr[k].msg_hdr.msg_namelen = dest[k].1;
        }
        // SAFETY: hdr holds sends.len() valid entries.
        let n =
            unsafe { libc::sendmmsg(fd, hdr.as_mut_ptr(), sends.len() as u32, libc::MSG_DONTWAIT) };
        n.max(0) as usize
    }
}

fn cvt(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Start the thread for a relay of `pairs` port pairs; returns the worker's end.
pub(crate) fn start(
    cfg: RelayConfig,
    pairs: usize,
    events: mpsc::UnboundedSender<MediaEvent>,
) -> std::io::Result<(Arc<Link>, std::thread::JoinHandle<()>)> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system calls; each fd is wrapped in an OwnedFd at once.
    let epfd = unsafe {
        std::os::fd::OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?)
    };
    let wake = unsafe {
        std::os::fd::OwnedFd::from_raw_fd(cvt(libc::eventfd(
            0,
            libc::EFD_NONBLOCK | libc::EFD_CLOEXEC,
        ))?)
    };
    let wake_dup = wake.try_clone()?;
    add(epfd.as_raw_fd(), wake.as_raw_fd(), WAKE)?;
    let link = Arc::new(Link {
        cmds: Mutex::new(Vec::new()),
        signalled: AtomicBool::new(false),
        wake: wake_dup,
        released: Mutex::new(Vec::new()),
        in_use: Arc::new(AtomicUsize::new(0)),
    });
    let mut pump = Pump {
        cfg,
        epfd,
        wake,
        link: link.clone(),
        events,
        pairs: (0..pairs).map(|_| Pair::default()).collect(),
        streams: Vec::new(),
        free: Vec::new(),
        calls: HashMap::new(),
        idle: 0,
        burst: Burst::new(),
        injecting: Vec::new(),
        recorder: None,
    };
    let handle = std::thread::Builder::new()
        .name("dce-rtp".into())
        .spawn(move || pump.run())?;
    Ok((link, handle))
}

fn add(epfd: i32, fd: i32, token: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: ev is a valid epoll_event for the duration of the call.
    cvt(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(|_| ())
}

impl Pump {
    fn run(&mut self) {
        let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut next_sweep = Instant::now() + SWEEP;
        loop {
            let now = Instant::now();
            let mut wait = next_sweep.saturating_duration_since(now).min(POLL_CMDS);
            for &s in &self.injecting {
                if let Some(at) = self
                    .streams
                    .get(s)
                    .and_then(|s| s.as_ref()?.st.next_injection())
                {
                    wait = wait.min(at.saturating_duration_since(now));
                }
            }
            let wait = wait.as_millis() as i32;
            // SAFETY: evs has room for evs.len() events.
            let n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    evs.as_mut_ptr(),
                    evs.len() as i32,
                    wait.max(1),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    eprintln!("dce-rtp: epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            // Woken for commands: those that set a call up go before the packets of this wait
            // (the carrier's first RTP can come in the same wake-up as the buyer's address,
            // and must find it); a Close waits until after them, so what already arrived is
            // relayed and counted.
            let woke = evs[..n as usize].iter().any(|e| e.u64 == WAKE);
            let mut closes = Vec::new();
            if woke && !self.take_commands(Some(&mut closes)) {
                self.shut_down();
                return;
            }
            for ev in &evs[..n as usize] {
                let token = ev.u64;
                if token != WAKE {
                    self.readable(token);
                }
            }
            for id in closes {
                self.close(id);
            }
            if !self.take_commands(None) {
                self.shut_down();
                return;
            }
            let now = Instant::now();
            if !self.injecting.is_empty() {
                self.inject(now);
            }
            if now >= next_sweep {
                self.sweep();
                next_sweep = now + SWEEP;
            }
        }
    }

    /// Run the queued commands; false on `Exit`.
    fn take_commands(&mut self, mut defer_close: Option<&mut Vec<MediaId>>) -> bool {
        let mut drained = [0u8; 8];
        // SAFETY: reading at most 8 bytes into a live buffer; EAGAIN when nothing is pending.
        unsafe { libc::read(self.wake.as_raw_fd(), drained.as_mut_ptr().cast(), 8) };
        self.link.signalled.store(false, Ordering::SeqCst);
        let cmds = std::mem::take(&mut *self.link.cmds.lock().unwrap_or_else(|p| p.into_inner()));
        for c in cmds {
            match c {
                Cmd::Open { id, streams } => self.open(id, streams),
                Cmd::Remote { id, side, streams } => {
                    if let Some(slots) = self.calls.get(&id) {
                        for (&s, st) in slots.iter().zip(streams) {
                            if let Some(Some(slot)) = self.streams.get_mut(s) {
                                slot.st.remote(side, st);
                            }
                        }
                    }
                }
                Cmd::Answered { id } => {
                    let now = Instant::now();
                    for &s in self.calls.get(&id).into_iter().flatten() {
                        if let Some(Some(slot)) = self.streams.get_mut(s) {
                            slot.st.answered = Some(now);
                        }
                    }
                }
                Cmd::Dtmf {
                    id,
                    toward,
                    digit,
                    duration_ms,
                } => {
                    // the first stream carries the call's audio
                    let first = self.calls.get(&id).and_then(|s| s.first().copied());
                    if let Some(Some(slot)) = first.and_then(|s| self.streams.get_mut(s)) {
                        let side = if toward == Side::A { 0 } else { 1 };
                        if slot.st.queue_dtmf(side, digit, duration_ms, Instant::now())
                            && !self.injecting.contains(&first.unwrap_or(usize::MAX))
                        {
                            self.injecting.extend(first);
                        }
                    }
                }
                Cmd::Record { id, path } => self.record(id, path),
                Cmd::Close { id } => match defer_close.as_deref_mut() {
                    Some(later) => later.push(id),
                    None => self.close(id),
                },
                Cmd::Exit => return false,
            }
        }
        true
    }

    fn open(&mut self, id: MediaId, streams: Vec<NewStream>) {
        let mut slots = Vec::with_capacity(streams.len());
        for (n, pairs) in streams.into_iter().enumerate() {
            let slot = self.free.pop().unwrap_or_else(|| {
                self.streams.push(None);
                self.streams.len() - 1
            });
            let mut idx = [0usize; 2];
            for (side, (p, socks)) in pairs.into_iter().enumerate() {
                idx[side] = p;
                self.attach(p, socks, slot, side);
            }
            self.streams[slot] = Some(StreamSlot {
                id,
                reports: n == 0,
                recorded: false,
                pairs: idx,
                st: TaskState::new(self.cfg.clone()),
            });
            slots.push(slot);
        }
        self.calls.insert(id, slots);
    }

    /// Give pair `p` to `slot`'s `side`: newly bound sockets are registered; a warm pair's
    /// already are.
    fn attach(&mut self, p: usize, socks: Option<[UdpSocket; 2]>, slot: usize, side: usize) {
        let Some(pair) = self.pairs.get_mut(p) else {
            return;
        };
        match socks {
            Some(s) => {
                for (k, sock) in s.iter().enumerate() {
                    if let Err(e) = add(
                        self.epfd.as_raw_fd(),
                        sock.as_raw_fd(),
                        (p as u64) << 1 | k as u64,
                    ) {
                        eprintln!("dce-rtp: cannot watch a media socket: {e}");
                    }
                }
                pair.socks = Some(s);
            }
            // warm: its sockets stayed watched while the pair rested, and whatever arrived
            // for them then was read and dropped (`readable`), so there is nothing to empty
            None => self.idle = self.idle.saturating_sub(1),
        }
        pair.user = Some((slot, side));
    }

    fn close(&mut self, id: MediaId) {
        let Some(slots) = self.calls.remove(&id) else {
            return;
        };
        let mut released = Vec::with_capacity(slots.len() * 2);
        for s in slots {
            let Some(slot) = self.streams.get_mut(s).and_then(Option::take) else {
                continue;
            };
            self.free.push(s);
            if slot.reports {
                let report = Box::new(slot.st.report());
                match (&self.recorder, slot.recorded) {
                    // the recorder finishes the file, then sends the report
                    (Some((rec, _)), true) => {
                        rec.send(crate::record::RecMsg::Stop {
                            id,
                            report,
                            at: Instant::now(),
                        });
                    }
                    _ => {
                        let _ = self.events.send(MediaEvent::Closed { id, report });
                    }
                }
            }
            for p in slot.pairs {
                let pair = &mut self.pairs[p];
                pair.user = None;
                let warm = pair.socks.is_some() && self.idle < MAX_IDLE;
                if warm {
                    self.idle += 1;
                } else {
                    pair.socks = None; // closed: the kernel forgets the registration
                }
                released.push((p, warm));
            }
        }
        self.link
            .in_use
            .fetch_sub(released.len(), Ordering::Relaxed);
        self.link
            .released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(released);
    }

    /// What the socket `token` names holds (up to [`BURST`] packets, one `recvmmsg`), each
    /// checked and accounted by its stream, sent on from the other leg's socket (one
    /// `sendmmsg`). Level-triggered: what is left is reported again at the next wait.
    fn readable(&mut self, token: u64) {
        let (p, k) = ((token >> 1) as usize, (token & 1) as usize);
        let Some(pair) = self.pairs.get(p) else {
            return;
        };
        let Some(socks) = &pair.socks else { return };
        let n = self.burst.recv(socks[k].as_raw_fd());
        if n == 0 {
            return;
        }
        let Some((slot, side)) = pair.user else {
            return; // a pair between calls: dropped
        };
        let Some(Some(stream)) = self.streams.get_mut(slot) else {
            return;
        };
        let which = side * 2 + k;
        let mut out_sock = None;
        let mut sends: [(usize, SocketAddr); BURST] = [(0, UNSPECIFIED); BURST];
        // per send: an RTP packet (what the report counts as relayed), not RTCP
        let mut media = [false; BURST];
        let mut m = 0;
        for i in 0..n {
            let Some((pkt, src)) = self.burst.get(i) else {
                continue;
            };
            let Some((dest, out)) = stream.st.on_packet(which, pkt, src) else {
                continue;
            };
            out_sock = Some(out);
            media[m] = out % 2 == 0 && !is_rtcp(which, pkt);
            if stream.recorded && media[m] {
                if let Some((rec, _)) = &self.recorder {
                    rec.send(crate::record::RecMsg::Packet {
                        id: stream.id,
                        side: which / 2,
                        at: std::time::Instant::now(),
                        pkt: pkt.to_vec(),
                    });
                }
            }
            sends[m] = (i, dest);
            m += 1;
        }
        let Some(out) = out_sock else { return };
        let out_pair = stream.pairs[out / 2];
        let Some(osocks) = &self.pairs[out_pair].socks else {
            return;
        };
        // what did not leave (send buffer full) is not counted as relayed
        let sent = self.burst.send(osocks[out % 2].as_raw_fd(), &sends[..m]);
        stream.st.legs[out / 2].forwarded_out +=
            media[..sent].iter().filter(|&&rtp| rtp).count() as u64;
    }

    /// Send the telephone-events of DCE's own that are due, each from the socket facing its
    /// destination; a stream with nothing more to play leaves the list.
    fn inject(&mut self, now: Instant) {
        let mut due = Vec::new();
        let (streams, pairs) = (&mut self.streams, &self.pairs);
        self.injecting.retain(|&s| {
            let Some(Some(slot)) = streams.get_mut(s) else {
                return false; // closed
            };
            due.clear();
            slot.st.due_injections(now, &mut due);
            for (pkt, dest, sock) in &due {
                if let Some(socks) = &pairs[slot.pairs[sock / 2]].socks {
                    let _ = socks[sock % 2].send_to(pkt, dest);
                }
            }
            slot.st.next_injection().is_some()
        });
    }

    fn sweep(&mut self) {
        for slot in self.streams.iter_mut().flatten() {
            if slot.st.check_timeout() {
                let _ = self.events.send(MediaEvent::Timeout { id: slot.id });
            }
        }
    }

    /// Exit: every call still open is closed (its report sent), then every socket.
    fn shut_down(&mut self) {
        let ids: Vec<MediaId> = self.calls.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        self.pairs.clear();
        if let Some((rec, h)) = self.recorder.take() {
            // after the open calls' Stops: their files are finished and reported first
            rec.send(crate::record::RecMsg::Exit);
            let _ = h.join();
        }
    }

    /// Record call `id`'s first stream from now on into `path`.
    fn record(&mut self, id: MediaId, path: std::path::PathBuf) {
        let Some(&first) = self.calls.get(&id).and_then(|s| s.first()) else {
            return;
        };
        if self.recorder.is_none() {
            match crate::record::spawn(self.events.clone()) {
                Ok(r) => self.recorder = Some(r),
                Err(e) => {
                    eprintln!("dce-rtp: cannot start the recorder: {e}");
                    return;
                }
            }
        }
        let (Some((rec, _)), Some(Some(slot))) = (&self.recorder, self.streams.get_mut(first))
        else {
            return;
        };
        let at = Instant::now();
        if !slot.recorded && rec.send(crate::record::RecMsg::Start { id, path, at }) {
            slot.recorded = true;
        }
    }
}
