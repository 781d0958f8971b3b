//! The receive-side gate every message passes before it is queued to the core task: the
//! per-source token bucket, and shedding of new INVITEs while the core is behind.
//!
//! The socket tasks ask it, so a flood is dropped (and counted) where it costs one hash
//! lookup and no allocation that outlives the datagram, and a full queue never makes a socket
//! task wait: what cannot be queued is dropped and counted, and UDP peers retransmit.

use super::Inbound;
use crate::config::{Cidr, Config};
use crate::counters::{Counter, Counters};
use crate::edge::stateless::overload_503;
use crate::edge::{LimitConfig, SourceLimits, Verdict};
use dce_sip::transaction::{Peer, Transmit};
#[cfg(test)]
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// When the core is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overload {
    /// Messages queued for the core at or above which new INVITEs are shed.
    pub queue_depth: usize,
    /// Delay of the core (age of the message it last dequeued) at or above which they are.
    pub queue_delay: Duration,
    /// `Retry-After` of the 503.
    pub retry_after_s: u32,
}

impl Overload {
    /// True when a new INVITE should be shed: `depth` messages are queued behind it, or it
    /// waited `lag` before its worker could look at it.
    pub fn shed(&self, depth: usize, lag: Duration) -> bool {
        depth >= self.queue_depth || lag >= self.queue_delay
    }
}

/// What to do with one message.
#[derive(Debug)]
pub enum Admit {
    /// Queue it for the core.
    Queue,
    /// Drop it (already counted).
    Drop,
    /// Send this stateless answer instead (already counted).
    Answer(Transmit),
}

/// Shared by every socket task and the core task.
pub struct Gate {
    limits: Mutex<SourceLimits>,
    overload: Overload,
    /// Per SIP worker: microseconds the message it last took from its queue had waited there.
    lag_us: Vec<AtomicU64>,
    counters: Arc<Counters>,
}

/// Carriers' source CIDRs and buyers' addresses: the trusted sources.
pub fn trusted_sources(config: &Config) -> Vec<Cidr> {
    let mut v: Vec<Cidr> = config
        .routing
        .carriers
        .iter()
        .flat_map(|c| c.sources.iter().copied())
        .collect();
    for b in &config.routing.buyers {
        // Buyers by name: their resolved addresses are added by `Gate::trust_resolved`.
        if let Ok((_, crate::config::routing::TargetHost::Ip(addr, _))) =
            crate::config::routing::target_of(&b.uri, "1", "1")
        {
            let len = if addr.is_ipv4() { 32 } else { 128 };
            v.push(Cidr {
                addr: addr.ip(),
                len,
            });
        }
    }
    v
}

impl Gate {
    /// A gate for `config`.
    pub fn new(config: &Config, counters: Arc<Counters>) -> Gate {
        Gate {
            limits: Mutex::new(SourceLimits::new(
                config.sip.source_limits(),
                trusted_sources(config),
            )),
            overload: Overload {
                queue_depth: config.sip.overload_queue_depth,
                queue_delay: config.sip.overload_queue_delay,
                retry_after_s: config.sip.overload_retry_after_s,
            },
            lag_us: (0..config.sip.workers.max(1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            counters,
        }
    }

    /// A reload: new limits and trusted sources (the overload thresholds stay until restart).
    pub fn reconfigure(&self, cfg: LimitConfig, trusted: Vec<Cidr>) {
        self.lock().reconfigure(cfg, trusted);
    }

    /// The addresses buyer host names resolve to now: trusted like buyers given by address.
    pub fn trust_resolved(&self, ips: &[std::net::IpAddr]) {
        self.lock().set_resolved(ips);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SourceLimits> {
        self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SIP worker `shard` took a message from its queue that was queued at `at`.
    pub fn dequeued(&self, shard: usize, at: Instant, now: Instant) {
        let lag = now.saturating_duration_since(at).as_micros() as u64;
        if let Some(l) = self.lag_us.get(shard) {
            l.store(lag, Ordering::Relaxed);
        }
    }

    /// Decide for `bytes` from `from`, about to be put on `queue` (worker `shard`'s, as it is
    /// now): the queue's depth, and while it is not empty the wait of the message the worker
    /// last took from it, are its backlog.
    pub fn check_queued(
        &self,
        bytes: &[u8],
        from: Peer,
        queue: &mpsc::Sender<Inbound>,
        shard: usize,
        now: Instant,
    ) -> Admit {
        let depth = queue.max_capacity() - queue.capacity();
        let lag = match depth {
            0 => Duration::ZERO, // caught up: the last wait is of a message long gone
            _ => Duration::from_micros(
                self.lag_us
                    .get(shard)
                    .map_or(0, |l| l.load(Ordering::Relaxed)),
            ),
        };
        self.check(bytes, from, depth, lag, now)
    }

    /// Decide for `bytes` from `from`, which waited `lag` (in the socket's queue, say) with
    /// `depth` messages behind it.
    pub fn check(
        &self,
        bytes: &[u8],
        from: Peer,
        depth: usize,
        lag: Duration,
        now: Instant,
    ) -> Admit {
        if self.lock().admit(from.addr.ip(), now) == Verdict::Refuse {
            self.counters.inc(Counter::DroppedSourceRate);
            return Admit::Drop;
        }
        if self.overload.shed(depth, lag) {
            if let Some(t) = overload_503(bytes, from, self.overload.retry_after_s) {
                self.counters.inc(Counter::Shed503);
                tracing::debug!(from = %from.addr, depth, lag_ms = lag.as_millis() as u64, "new INVITE shed: 503");
                return Admit::Answer(t);
            }
        }
        Admit::Queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dce_sip::transaction::Transport;

    fn peer(ip: &str) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: SocketAddr::new(ip.parse().unwrap(), 5070),
            conn: Some(0),
        }
    }

    fn request(method: &str) -> Vec<u8> {
        format!("{method} sip:+18005550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: g\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").into_bytes()
    }

    #[test]
    fn floods_dropped_per_source_and_new_invites_shed_when_the_queue_is_deep() {
        let cfg = crate::config::parse(
            "t.toml",
            "[node]\nid = \"t\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\noverload_queue_depth = 2\nsource_rate_per_s = 1\nsource_burst = 3\n[[carrier]]\nid = \"c\"\nsources = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let counters = Arc::new(Counters::default());
        let gate = Gate::new(&cfg, counters.clone());
        let (tx, _rx) = mpsc::channel(8);
        let now = Instant::now();
        let (inv, opt) = (request("INVITE"), request("OPTIONS"));
        let untrusted: Vec<bool> = (0..6)
            .map(|_| {
                matches!(
                    gate.check_queued(&opt, peer("192.0.2.1"), &tx, 0, now),
                    Admit::Queue
                )
            })
            .collect();
        assert_eq!(untrusted, [true, true, true, false, false, false]);
        assert_eq!(counters.get(Counter::DroppedSourceRate), 3);
        assert!(
            (0..1000).all(|_| matches!(
                gate.check_queued(&inv, peer("10.1.1.1"), &tx, 0, now),
                Admit::Queue
            )),
            "the carrier is exempt, and the queue is empty"
        );
        for _ in 0..2 {
            tx.try_send(Inbound::TcpClosed { conn: 0 }).unwrap();
        }
        match gate.check_queued(&inv, peer("10.1.1.1"), &tx, 0, now) {
            Admit::Answer(t) => {
                let text = String::from_utf8_lossy(&t.bytes).to_string();
                assert!(
                    text.starts_with("SIP/2.0 503 ") && text.contains("Retry-After: 5\r\n"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(
                gate.check_queued(&opt, peer("10.1.1.1"), &tx, 0, now),
                Admit::Queue
            ),
            "only new INVITEs are shed"
        );
        assert_eq!(counters.get(Counter::Shed503), 1);
        // The core catches up: the lag alone does not shed once the queue is empty.
        gate.dequeued(0, now, now + Duration::from_secs(1));
        let (tx2, _rx2) = mpsc::channel::<Inbound>(8);
        assert!(matches!(
            gate.check_queued(&inv, peer("10.1.1.1"), &tx2, 0, now),
            Admit::Queue
        ));
        // A datagram that itself waited too long in the socket is shed, queue or not.
        assert!(matches!(
            gate.check(&inv, peer("10.1.1.1"), 0, Duration::from_secs(1), now),
            Admit::Answer(_)
        ));
        assert!(matches!(
            gate.check(&inv, peer("10.1.1.1"), 0, Duration::from_millis(1), now),
            Admit::Queue
        ));
    }

    #[test]
    fn shedding_thresholds() {
        let o = Overload {
            queue_depth: 100,
            queue_delay: Duration::from_millis(200),
            retry_after_s: 5,
        };
        assert!(!o.shed(0, Duration::from_millis(199)));
        assert!(!o.shed(99, Duration::from_millis(199)));
        assert!(o.shed(100, Duration::ZERO));
        assert!(o.shed(1, Duration::from_millis(200)));
    }
}
