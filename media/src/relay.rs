//! The RTP/RTCP relay. [`Relay`] is the SIP worker's side: port pairs and commands. Its
//! thread ([`crate::pump`]) owns every stream's four sockets (RTP and RTCP facing the carrier,
//! RTP and RTCP facing the buyer) and its statistics (`stream.rs`); nothing is shared
//! on the per-packet path: commands come in as a queue, the report goes out as an event when
//! the stream is closed.
//!
//! Which packets each socket accepts, and where they go: `stream.rs`.

use crate::engine::{MediaEngine, MediaError, MediaEvent, MediaId, Side};
use crate::ports::PortPool;
#[cfg(test)]
use crate::ports::QUARANTINE;
use crate::pump::{self, Cmd, Link};
use crate::sdp::Stream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

pub use crate::stream::RelayConfig;

/// The [`MediaEngine`] a SIP worker drives: it hands out port pairs (binding sockets for cold
/// pairs, none at all for warm ones) and queues commands for its relay thread
/// ([`crate::pump`]), which owns the sockets and moves the packets. Commands go to the thread
/// at [`MediaEngine::flush`] (or within 50 ms without one).
pub struct Relay {
    cfg: RelayConfig,
    pool: PortPool,
    /// The RTP port of pair 0.
    base: u16,
    /// Each open call's (A port, B port) per stream.
    sessions: HashMap<MediaId, Vec<[u16; 2]>>,
    /// The open calls whose first stream's side A / B announced telephone-event.
    events_ok: HashMap<MediaId, [bool; 2]>,
    next: MediaId,
    events: mpsc::UnboundedSender<MediaEvent>,
    link: Arc<Link>,
    /// Commands were queued since the last flush.
    queued: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Port pairs in use, readable from other threads (health checks).
#[derive(Debug, Clone)]
pub struct PortGauge {
    in_use: Arc<AtomicUsize>,
    total: usize,
}

impl PortGauge {
    /// Pairs bound to calls now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Pairs in the configured range.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Relay {
    /// A relay reporting to `events`, with its own thread (`dce-rtp`).
    pub fn new(
        cfg: RelayConfig,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> std::io::Result<Relay> {
        let pool = PortPool::new(cfg.port_min, cfg.port_max);
        let base = cfg.port_min + cfg.port_min % 2;
        let (link, thread) = pump::start(cfg.clone(), pool.total(), events.clone())?;
        Ok(Relay {
            pool,
            base,
            cfg,
            sessions: HashMap::new(),
            events_ok: HashMap::new(),
            next: 1,
            events,
            link,
            queued: false,
            thread: Some(thread),
        })
    }

    /// A gauge of the pairs in use, for health checks.
    pub fn port_gauge(&self) -> PortGauge {
        PortGauge {
            in_use: self.link.in_use.clone(),
            total: self.pool.total(),
        }
    }

    /// Port pairs free now.
    pub fn available(&mut self) -> usize {
        self.reclaim();
        self.pool.available()
    }

    /// Queue `cmd` for the thread; it goes at the next flush.
    fn push(&mut self, cmd: Cmd) {
        self.link.push(cmd);
        self.queued = true;
    }

    /// Put the pairs of ended calls back: warm when the thread kept their sockets.
    fn reclaim(&mut self) {
        let now = Instant::now();
        let back =
            std::mem::take(&mut *self.link.released.lock().unwrap_or_else(|p| p.into_inner()));
        for (idx, warm) in back {
            let port = self.base + 2 * idx as u16;
            if warm {
                self.pool.give_warm(port, now);
            } else {
                self.pool.give(port);
            }
        }
    }

    /// Take a pair from the pool: a warm one as it is (the thread holds its sockets), a cold
    /// one with its RTP and RTCP sockets newly bound and prepared. A port in the range may be
    /// taken by another process: that pair goes to the back of the pool (it is retried when
    /// its turn comes again) and the next one is tried, rather than failing the call. On a
    /// preparation error the pair is already back in the pool.
    fn take_pair(
        &mut self,
        prepare: &mut dyn FnMut(&std::net::UdpSocket) -> Result<(), MediaError>,
    ) -> Result<(u16, Option<[std::net::UdpSocket; 2]>), MediaError> {
        let now = Instant::now();
        for _ in 0..self.pool.total().max(1) {
            let Some((port, warm)) = self.pool.take(now) else {
                return Err(MediaError::PortsExhausted);
            };
            if warm {
                return Ok((port, None));
            }
            let rtp = std::net::UdpSocket::bind(SocketAddr::new(self.cfg.bind_ip, port));
            let rtcp = std::net::UdpSocket::bind(SocketAddr::new(self.cfg.bind_ip, port + 1));
            match (rtp, rtcp) {
                (Ok(a), Ok(b)) => match prepare(&a).and_then(|_| prepare(&b)) {
                    Ok(()) => return Ok((port, Some([a, b]))),
                    Err(e) => {
                        self.pool.give(port);
                        return Err(e);
                    }
                },
                _ => self.pool.give(port),
            }
        }
        Err(MediaError::PortsExhausted)
    }

    /// [`MediaEngine::open`] with the step that prepares each new socket passed in (tests make
    /// it fail). Nothing reaches the thread until every pair is taken; on any error every pair
    /// taken goes back to the pool (a warm one warm: its sockets are still the thread's).
    fn open_with(
        &mut self,
        streams: usize,
        prepare: &mut dyn FnMut(&std::net::UdpSocket) -> Result<(), MediaError>,
    ) -> Result<MediaId, MediaError> {
        self.reclaim();
        if self.pool.available() < streams * 2 {
            return Err(MediaError::PortsExhausted);
        }
        let mut taken: Vec<(u16, Option<[std::net::UdpSocket; 2]>)> =
            Vec::with_capacity(streams * 2);
        for _ in 0..streams * 2 {
            match self.take_pair(prepare) {
                Ok(t) => taken.push(t),
                Err(e) => {
                    let now = Instant::now();
                    for (p, socks) in taken {
                        match socks {
                            None => self.pool.give_warm(p, now),
                            Some(_) => self.pool.give(p), // closed here, as they drop
                        }
                    }
                    return Err(e);
                }
            }
        }
        self.link.in_use.fetch_add(taken.len(), Ordering::Relaxed);
        let id = self.next;
        self.next += 1;
        let mut ports = Vec::with_capacity(streams);
        let mut new = Vec::with_capacity(streams);
        let mut it = taken.into_iter();
        while let (Some((a, sa)), Some((b, sb))) = (it.next(), it.next()) {
            ports.push([a, b]);
            let idx = |p: u16| usize::from((p - self.base) / 2);
            new.push([(idx(a), sa), (idx(b), sb)]);
        }
        self.sessions.insert(id, ports);
        self.push(Cmd::Open { id, streams: new });
        Ok(id)
    }
}

fn prepare(s: &std::net::UdpSocket) -> Result<(), MediaError> {
    s.set_nonblocking(true)
        .map_err(|e| MediaError::Bind(e.to_string()))
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.link.push(Cmd::Exit);
        self.link.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl MediaEngine for Relay {
    fn open(&mut self, streams: usize) -> Result<MediaId, MediaError> {
        self.open_with(streams, &mut prepare)
    }

    fn ports(&self, id: MediaId, side: Side) -> Vec<u16> {
        self.sessions
            .get(&id)
            .map(|s| {
                s.iter()
                    .map(|p| if side == Side::A { p[0] } else { p[1] })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_remote(&mut self, id: MediaId, side: Side, streams: &[Stream]) {
        if self.sessions.contains_key(&id) {
            let te = streams.first().is_some_and(|s| s.telephone_event.is_some());
            self.events_ok.entry(id).or_default()[usize::from(side == Side::B)] = te;
            self.push(Cmd::Remote {
                id,
                side,
                streams: streams.to_vec(),
            });
        }
    }

    fn answered(&mut self, id: MediaId) {
        if self.sessions.contains_key(&id) {
            self.push(Cmd::Answered { id });
        }
    }

    fn send_dtmf(&mut self, id: MediaId, toward: Side, digit: char, duration_ms: u32) -> bool {
        let ok = self
            .events_ok
            .get(&id)
            .is_some_and(|te| te[usize::from(toward == Side::B)])
            && crate::dtmf::event_of(digit).is_some();
        if ok {
            self.push(Cmd::Dtmf {
                id,
                toward,
                digit,
                duration_ms,
            });
        }
        ok
    }

    fn record(&mut self, id: MediaId, path: std::path::PathBuf) {
        if self.sessions.contains_key(&id) {
            self.push(Cmd::Record { id, path });
        }
    }

    fn close(&mut self, id: MediaId) {
        self.events_ok.remove(&id);
        match self.sessions.remove(&id) {
            // the thread sends the call's report (`MediaEvent::Closed`) as it closes it
            Some(s) if !s.is_empty() => self.push(Cmd::Close { id }),
            _ => {
                let _ = self.events.send(MediaEvent::Closed {
                    id,
                    report: Box::default(),
                });
            }
        }
    }

    fn flush(&mut self) {
        // the worker flushes every turn; a turn that queued nothing costs nothing here
        if std::mem::take(&mut self.queued) {
            self.link.signal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stream(rtp: &str, rtcp: &str) -> Stream {
        Stream {
            kind: "audio".into(),
            rtp: Some(rtp.parse().unwrap()),
            rtcp: Some(rtcp.parse().unwrap()),
            rtcp_mux: false,
            codec: Some("PCMU".into()),
            clock_rate: 8000,
            telephone_event: None,
        }
    }

    fn relay(port_min: u16, pairs: u16) -> Relay {
        let (tx, _rx) = mpsc::unbounded_channel();
        Relay::new(
            RelayConfig {
                bind_ip: "127.0.0.1".parse().unwrap(),
                port_min,
                port_max: port_min + 2 * pairs - 1,
                rtp_timeout: Duration::from_secs(30),
                strict_source: true,
                latch_any_source: false,
            },
            tx,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_failed_socket_gives_every_port_back() {
        // two streams = four pairs = eight sockets; fail the preparation of each in turn
        let mut r = relay(30400, 4);
        let gauge = r.port_gauge();
        assert_eq!(r.available(), 4);
        for fail_at in 1..=8 {
            let mut calls = 0;
            let mut failing = |s: &std::net::UdpSocket| {
                calls += 1;
                if calls == fail_at {
                    Err(MediaError::Bind("injected".into()))
                } else {
                    prepare(s)
                }
            };
            assert_eq!(
                r.open_with(2, &mut failing),
                Err(MediaError::Bind("injected".into())),
                "failing socket {fail_at}"
            );
            assert_eq!(
                r.available(),
                4,
                "every pair back after failing socket {fail_at}"
            );
            assert_eq!(gauge.in_use(), 0, "gauge after failing socket {fail_at}");
            assert!(r.sessions.is_empty());
        }
        // and the sockets were closed: the same ports bind again
        let id = r.open(2).expect("all four pairs bind again");
        assert_eq!((r.available(), gauge.in_use()), (0, 4));
        r.close(id);
        r.flush();
        // the thread closes the call and gives the pairs back (warm)
        let t0 = Instant::now();
        while gauge.in_use() > 0 && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!((r.available(), gauge.in_use()), (4, 0));
    }

    #[tokio::test]
    async fn a_freed_pair_is_reused_warm_after_its_rest_and_nothing_old_reaches_the_new_call() {
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut r = Relay::new(
            RelayConfig {
                bind_ip: "127.0.0.1".parse().unwrap(),
                port_min: 30500,
                port_max: 30503,
                rtp_timeout: Duration::from_secs(30),
                strict_source: true,
                latch_any_source: false,
            },
            tx,
        )
        .unwrap();
        let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let remote = |addr: SocketAddr| stream(&addr.to_string(), "127.0.0.1:9");
        let open = |r: &mut Relay| {
            let id = r.open(1).unwrap();
            r.set_remote(id, Side::A, &[remote(a_addr)]);
            r.set_remote(id, Side::B, &[remote(b_addr)]);
            r.flush();
            id
        };
        let first = open(&mut r);
        let ports = (r.ports(first, Side::A)[0], r.ports(first, Side::B)[0]);
        r.close(first);
        r.flush();
        assert!(matches!(
            events.recv().await,
            Some(MediaEvent::Closed { .. })
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // a late packet of the old call, sitting in the old socket
        let to_a_port = SocketAddr::from(([127, 0, 0, 1], ports.0));
        a.send_to(b"stale", to_a_port).await.unwrap();
        tokio::time::sleep(QUARANTINE + Duration::from_millis(50)).await;
        let second = open(&mut r);
        assert_eq!(
            (r.ports(second, Side::A)[0], r.ports(second, Side::B)[0]),
            ports,
            "the rested pairs, sockets kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.send_to(b"fresh", to_a_port).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), b.recv_from(&mut buf))
            .await
            .expect("relayed")
            .unwrap();
        assert_eq!(&buf[..n], b"fresh", "the stale packet was dropped on reuse");
        r.close(second);
        r.flush();
        assert!(matches!(
            events.recv().await,
            Some(MediaEvent::Closed { .. })
        ));
    }
}
