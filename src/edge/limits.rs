//! Per-source token buckets: how many SIP messages one source may hand DCE per second.
//!
//! Sans-IO: the receive side asks [`SourceLimits::admit`] with the source address and `now`
//! before a message is queued to the core task, so a flood from one address is dropped where
//! it costs least (one hash lookup) and never fills the core's queue ahead of other sources.
//!
//! A source is one IPv4 address or one IPv6 /64 (a single host owns a whole /64, so keying on
//! the full address would give an attacker 2^64 buckets). Sources inside a configured
//! carrier's CIDRs, and buyers' addresses, are *trusted*: exempt by default (they have their
//! own limits: `max_cps`, `max_calls`), or held to `trusted_rate_per_s` when set. This is the
//! Kamailio practice of running `pike` only on what `allow_trusted()` does not match.
//!
//! Memory is bounded: at most `max_sources` buckets; sources beyond that share one overflow
//! bucket, and idle buckets (full again) are swept every [`SWEEP_EVERY`].

use crate::config::Cidr;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often idle buckets are removed.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Limits for one class of source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Messages per second, sustained; 0 = no limit.
    pub per_s: u32,
    /// Messages allowed at once after a quiet period.
    pub burst: u32,
}

/// What [`SourceLimits`] enforces.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitConfig {
    /// Sources that are no carrier or buyer.
    pub untrusted: Rate,
    /// Carriers' and buyers' addresses.
    pub trusted: Rate,
    /// Buckets kept at most (memory bound).
    pub max_sources: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            untrusted: Rate {
                per_s: 100,
                burst: 200,
            },
            trusted: Rate { per_s: 0, burst: 0 },
            max_sources: 65_536,
        }
    }
}

/// The answer for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within its limit (or exempt): queue it.
    Admit,
    /// Over its limit: drop it (counted by the caller).
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst.max(1)),
            at: now,
        }
    }

    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        let cap = f64::from(rate.burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(rate.per_s)).min(cap);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Refilled to its burst by `now`: nothing to remember.
    fn idle(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * f64::from(rate.per_s) >= f64::from(rate.burst.max(1))
    }
}

/// The buckets of every source seen lately.
#[derive(Debug)]
pub struct SourceLimits {
    cfg: LimitConfig,
    trusted: Vec<Cidr>,
    /// Addresses buyer host names resolve to (kept across reloads; the resolver replaces it).
    resolved: Vec<IpAddr>,
    buckets: HashMap<IpAddr, (bool, Bucket)>,
    overflow: Option<Bucket>,
    swept: Option<Instant>,
}

/// The bucket key of an address: itself (IPv4, IPv4-mapped IPv6) or its /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

impl SourceLimits {
    /// Limits `cfg`; `trusted` are the carriers' source CIDRs and buyers' addresses.
    pub fn new(cfg: LimitConfig, trusted: Vec<Cidr>) -> SourceLimits {
        SourceLimits {
            cfg,
            trusted,
            resolved: Vec::new(),
            buckets: HashMap::new(),
            overflow: None,
            swept: None,
        }
    }

    /// A reload: new trusted set and limits; buckets start afresh.
    pub fn reconfigure(&mut self, cfg: LimitConfig, trusted: Vec<Cidr>) {
        let resolved = std::mem::take(&mut self.resolved);
        *self = SourceLimits::new(cfg, trusted);
        self.resolved = resolved;
    }

    /// Buyer addresses from the DNS: trusted as well. A source whose trust changes starts a
    /// fresh bucket.
    pub fn set_resolved(&mut self, ips: &[IpAddr]) {
        let changed: Vec<IpAddr> = ips
            .iter()
            .filter(|ip| !self.resolved.contains(ip))
            .chain(self.resolved.iter().filter(|ip| !ips.contains(ip)))
            .map(|ip| source_key(*ip))
            .collect();
        for k in changed {
            self.buckets.remove(&k);
        }
        self.resolved = ips.to_vec();
    }

    /// Buckets held now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// True when `ip` is a carrier's or buyer's.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip)) || self.resolved.contains(&ip)
    }

    /// May one more message from `ip` go to the core now?
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if self
            .swept
            .is_none_or(|s| now.saturating_duration_since(s) >= SWEEP_EVERY)
        {
            self.sweep(now);
        }
        let key = source_key(ip);
        let cfg = &self.cfg;
        if let Some((trusted, b)) = self.buckets.get_mut(&key) {
            let rate = if *trusted { cfg.trusted } else { cfg.untrusted };
            return verdict(rate.per_s == 0 || b.take(rate, now));
        }
        let trusted = self.is_trusted(ip);
        let rate = if trusted {
            self.cfg.trusted
        } else {
            self.cfg.untrusted
        };
        if rate.per_s == 0 {
            return Verdict::Admit;
        }
        if self.buckets.len() >= self.cfg.max_sources {
            // Too many sources at once (a spoofed flood): the newcomers share one bucket.
            let b = self.overflow.get_or_insert_with(|| Bucket::full(rate, now));
            return verdict(b.take(rate, now));
        }
        let mut b = Bucket::full(rate, now);
        let ok = b.take(rate, now);
        self.buckets.insert(key, (trusted, b));
        verdict(ok)
    }

    fn sweep(&mut self, now: Instant) {
        self.swept = Some(now);
        let cfg = self.cfg.clone();
        self.buckets.retain(|_, (trusted, b)| {
            let rate = if *trusted { cfg.trusted } else { cfg.untrusted };
            !b.idle(rate, now)
        });
        if self.buckets.capacity() > 4 * self.buckets.len().max(1024) {
            self.buckets.shrink_to_fit();
        }
        if self.overflow.is_some_and(|b| b.idle(cfg.untrusted, now)) {
            self.overflow = None;
        }
    }
}

fn verdict(ok: bool) -> Verdict {
    if ok {
        Verdict::Admit
    } else {
        Verdict::Refuse
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(per_s: u32, burst: u32) -> SourceLimits {
        SourceLimits::new(
            LimitConfig {
                untrusted: Rate { per_s, burst },
                trusted: Rate { per_s: 0, burst: 0 },
                max_sources: 4,
            },
            vec![Cidr::parse("10.0.0.0/8").unwrap()],
        )
    }

    #[test]
    fn burst_then_rate() {
        let mut l = limits(10, 5);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let admitted = (0..20).filter(|_| l.admit(a, t0) == Verdict::Admit).count();
        assert_eq!(admitted, 5, "the burst, then nothing at the same instant");
        // 10/s: 0.5 s later, five more.
        let t1 = t0 + Duration::from_millis(500);
        let admitted = (0..20).filter(|_| l.admit(a, t1) == Verdict::Admit).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn one_flooding_source_does_not_starve_another() {
        let mut l = limits(10, 10);
        let t0 = Instant::now();
        let (flood, quiet) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let mut quiet_ok = 0;
        for ms in 0..1000u64 {
            let now = t0 + Duration::from_millis(ms);
            for _ in 0..20 {
                let _ = l.admit(flood, now); // 20,000/s
            }
            if ms % 100 == 0 && l.admit(quiet, now) == Verdict::Admit {
                quiet_ok += 1;
            }
        }
        assert_eq!(quiet_ok, 10, "every one of the quiet source's messages");
    }

    #[test]
    fn trusted_sources_are_exempt_by_default_or_limited_when_set() {
        let mut l = limits(1, 1);
        let t0 = Instant::now();
        let carrier = ip("10.1.2.3");
        assert!((0..10_000).all(|_| l.admit(carrier, t0) == Verdict::Admit));
        assert_eq!(l.tracked(), 0, "exempt sources cost no bucket");
        l.reconfigure(
            LimitConfig {
                untrusted: Rate { per_s: 1, burst: 1 },
                trusted: Rate {
                    per_s: 100,
                    burst: 3,
                },
                max_sources: 4,
            },
            vec![Cidr::parse("10.0.0.0/8").unwrap()],
        );
        let n = (0..10)
            .filter(|_| l.admit(carrier, t0) == Verdict::Admit)
            .count();
        assert_eq!(n, 3);
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_slash_64() {
        let mut l = limits(1, 2);
        let t0 = Instant::now();
        assert_eq!(l.admit(ip("2001:db8::1"), t0), Verdict::Admit);
        assert_eq!(l.admit(ip("2001:db8::2"), t0), Verdict::Admit);
        assert_eq!(
            l.admit(ip("2001:db8::3"), t0),
            Verdict::Refuse,
            "same /64, same bucket"
        );
        assert_eq!(l.admit(ip("2001:db8:0:1::1"), t0), Verdict::Admit);
        assert_eq!(
            source_key(ip("::ffff:192.0.2.1")),
            ip("192.0.2.1"),
            "IPv4-mapped is the IPv4 source"
        );
    }

    #[test]
    fn memory_is_bounded_and_idle_buckets_go() {
        let mut l = limits(10, 1);
        let t0 = Instant::now();
        for i in 0..100u8 {
            let _ = l.admit(IpAddr::from([192, 0, 2, i]), t0);
        }
        assert_eq!(l.tracked(), 4, "max_sources");
        // Newcomers beyond the bound share one bucket of burst 1.
        assert_eq!(
            l.admit(ip("198.51.100.1"), t0),
            Verdict::Refuse,
            "the overflow bucket is spent"
        );
        let later = t0 + SWEEP_EVERY;
        assert_eq!(l.admit(ip("198.51.100.1"), later), Verdict::Admit);
        assert_eq!(l.tracked(), 1, "idle buckets swept");
    }
}
