//! Buyer trunk hosts by name (RFC 3263), never on the call path.
//!
//! A buyer URI whose host is a name becomes a [`Dest`]. The resolver task ([`resolver`]) looks
//! every configured `Dest` up in the background — NAPTR → SRV → AAAA/A — and publishes the
//! answer in the [`Table`], keyed by [`Dest::key`]; it refreshes each answer before its TTL runs
//! out and keeps the last good answer (marked stale) while the DNS fails. A call reads the
//! table and orders the targets ([`order`]: SRV priority, then a weighted random choice per
//! RFC 2782); a buyer whose host never resolved is `excluded:dns`.

pub mod resolver;
pub mod rfc3263;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The most addresses one buyer attempt walks through (a long SRV set must not hold a call for
/// many target timeouts).
pub const MAX_TARGETS: usize = 8;

/// The transport a SIP URI asks for (`;transport=`, or TLS for `sips:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// The name in URIs, keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// A host name to resolve, with what its URI fixes (RFC 3263 §4.1, §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dest {
    /// The host name, lower case, without a trailing dot.
    pub host: String,
    /// The URI's port: with one, no NAPTR or SRV lookup is made (§4.2).
    pub port: Option<u16>,
    /// The URI's transport, if it names one.
    pub transport: Option<Transport>,
    /// `sips:` (TLS only).
    pub sips: bool,
}

impl Dest {
    /// The table key: `host[:port][;transport]`, and `sips:` in front for a sips URI.
    pub fn key(&self) -> String {
        let mut k = String::new();
        if self.sips {
            k.push_str("sips:");
        }
        k.push_str(&self.host);
        if let Some(p) = self.port {
            k.push_str(&format!(":{p}"));
        }
        if let Some(t) = self.transport {
            k.push_str(&format!(";{}", t.as_str()));
        }
        k
    }
}

/// One SRV target (or the host itself when there is no SRV record) and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name the addresses came from.
    pub name: String,
    /// SRV priority (lower first); 0 without SRV.
    pub priority: u16,
    /// SRV weight within a priority.
    pub weight: u16,
    /// Its addresses, with the port.
    pub addrs: Vec<SocketAddr>,
    /// The transport to use.
    pub transport: Transport,
}

/// A successful resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The targets, in the order the records came (see [`order`]).
    pub targets: Vec<Target>,
    /// The shortest TTL along the way (NAPTR, SRV, A/AAAA).
    pub ttl: Duration,
    /// How it was found: `naptr`, `srv` or `a` (RFC 3263 §4.1 steps).
    pub via: &'static str,
}

/// What the table knows of one [`Dest`].
#[derive(Debug, Clone)]
pub struct Status {
    /// The last good answer, if there ever was one.
    pub answer: Option<Answer>,
    /// When that answer was resolved.
    pub resolved_at: Option<SystemTime>,
    /// The last lookup failed with this (the answer above, if any, is stale).
    pub error: Option<String>,
    /// When the last lookup finished.
    pub checked_at: SystemTime,
}

impl Status {
    /// True when the answer is older than its TTL (the DNS has failed since).
    pub fn stale(&self, now: SystemTime) -> bool {
        match (&self.answer, self.resolved_at) {
            (Some(a), Some(at)) => now.duration_since(at).unwrap_or_default() > a.ttl,
            _ => false,
        }
    }
}

/// The resolved buyer hosts the workers read. Cheap to read: a read lock and an `Arc` clone.
#[derive(Debug, Default)]
pub struct Table {
    entries: RwLock<HashMap<String, Arc<Status>>>,
    /// Lookups that found targets.
    pub lookups_ok: AtomicU64,
    /// Lookups that failed (no record, timeout, server failure).
    pub lookups_failed: AtomicU64,
}

impl Table {
    /// What is known of `key` ([`Dest::key`]); `None` before the first lookup finished.
    pub fn get(&self, key: &str) -> Option<Arc<Status>> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Record the outcome of a lookup of `key` at `now`. A failure keeps the last good answer.
    pub fn record(&self, key: &str, result: Result<Answer, String>, now: SystemTime) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let old = map.get(key).cloned();
        let status = match result {
            Ok(answer) => {
                self.lookups_ok.fetch_add(1, Ordering::Relaxed);
                Status {
                    answer: Some(answer),
                    resolved_at: Some(now),
                    error: None,
                    checked_at: now,
                }
            }
            Err(e) => {
                self.lookups_failed.fetch_add(1, Ordering::Relaxed);
                Status {
                    answer: old.as_ref().and_then(|o| o.answer.clone()),
                    resolved_at: old.as_ref().and_then(|o| o.resolved_at),
                    error: Some(e),
                    checked_at: now,
                }
            }
        };
        map.insert(key.to_owned(), Arc::new(status));
    }

    /// Forget every key not in `keep` (after a reload).
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep.contains(k));
    }

    /// Every entry, sorted by key (API and metrics).
    pub fn all(&self) -> Vec<(String, Arc<Status>)> {
        let mut v: Vec<_> = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Prometheus lines for the table.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let now = SystemTime::now();
        out.push_str("# HELP dce_dns_lookups_total Buyer host lookups (RFC 3263) by result.\n# TYPE dce_dns_lookups_total counter\n");
        let _ = writeln!(
            out,
            "dce_dns_lookups_total{{result=\"ok\"}} {}",
            self.lookups_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "dce_dns_lookups_total{{result=\"error\"}} {}",
            self.lookups_failed.load(Ordering::Relaxed)
        );
        let all = self.all();
        out.push_str("# HELP dce_dns_targets Addresses a buyer host resolves to now (0: never resolved).\n# TYPE dce_dns_targets gauge\n");
        for (k, s) in &all {
            let n: usize = s
                .answer
                .as_ref()
                .map(|a| a.targets.iter().map(|t| t.addrs.len()).sum())
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "dce_dns_targets{{host=\"{}\"}} {n}",
                crate::metrics::label(k)
            );
        }
        out.push_str("# HELP dce_dns_ttl_seconds TTL of a buyer host's current answer.\n# TYPE dce_dns_ttl_seconds gauge\n");
        for (k, s) in &all {
            if let Some(a) = &s.answer {
                let _ = writeln!(
                    out,
                    "dce_dns_ttl_seconds{{host=\"{}\"}} {}",
                    crate::metrics::label(k),
                    a.ttl.as_secs()
                );
            }
        }
        out.push_str("# HELP dce_dns_failing 1 while a buyer host's last lookup failed (an older answer may still be used).\n# TYPE dce_dns_failing gauge\n");
        for (k, s) in &all {
            let _ = writeln!(
                out,
                "dce_dns_failing{{host=\"{}\",stale=\"{}\"}} {}",
                crate::metrics::label(k),
                s.stale(now),
                u8::from(s.error.is_some())
            );
        }
    }
}

/// The addresses to try for one call, in order (RFC 2782 "Usage rules"): lower priority
/// first; within a priority, targets drawn one by one with probability proportional to their
/// weight (`rnd` gives the random numbers; weight-0 targets have a small chance when others
/// weigh more). A target's addresses follow it in the order the DNS gave them. At most
/// [`MAX_TARGETS`] addresses.
pub fn order(targets: &[Target], mut rnd: impl FnMut() -> u32) -> Vec<(SocketAddr, Transport)> {
    let mut out = Vec::new();
    let mut prios: Vec<u16> = targets.iter().map(|t| t.priority).collect();
    prios.sort_unstable();
    prios.dedup();
    for p in prios {
        let mut left: Vec<&Target> = targets.iter().filter(|t| t.priority == p).collect();
        // RFC 2782: weight-0 entries first, so a running sum can still land on them.
        left.sort_by_key(|t| t.weight != 0);
        while !left.is_empty() {
            let sum: u32 = left.iter().map(|t| u32::from(t.weight)).sum();
            let pick = if sum == 0 {
                0
            } else {
                let r = rnd() % (sum + 1);
                let mut run = 0;
                left.iter()
                    .position(|t| {
                        run += u32::from(t.weight);
                        run >= r
                    })
                    .unwrap_or(0)
            };
            let t = left.remove(pick);
            for a in &t.addrs {
                if out.len() == MAX_TARGETS {
                    return out;
                }
                out.push((*a, t.transport));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, priority: u16, weight: u16, port: u16) -> Target {
        Target {
            name: name.into(),
            priority,
            weight,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            transport: Transport::Udp,
        }
    }

    fn ports(v: &[(SocketAddr, Transport)]) -> Vec<u16> {
        v.iter().map(|(a, _)| a.port()).collect()
    }

    #[test]
    fn priority_orders_and_weight_shares() {
        let set = [t("c", 20, 0, 3), t("a", 10, 60, 1), t("b", 10, 40, 2)];
        // Whatever the draw, priority 10 comes before 20.
        for r in [0, 1, 59, 60, 61, 100, u32::MAX] {
            let o = order(&set, || r);
            assert_eq!(o.len(), 3);
            assert_eq!(ports(&o)[2], 3, "draw {r}");
        }
        // Weighted: over many draws a (60) leads about 60 % of the time.
        let mut seq = crate::ids::Ids::deterministic(7);
        let mut first_a = 0;
        for _ in 0..10_000 {
            if ports(&order(&set, || seq.u32()))[0] == 1 {
                first_a += 1;
            }
        }
        assert!((5_500..6_500).contains(&first_a), "a first {first_a} times");
    }

    #[test]
    fn zero_weights_still_all_appear_and_the_cap_holds() {
        let set: Vec<Target> = (0..20).map(|i| t("x", 1, 0, 100 + i)).collect();
        let o = order(&set, || 0);
        assert_eq!(o.len(), MAX_TARGETS);
        let mut p = ports(&o);
        p.dedup();
        assert_eq!(p.len(), MAX_TARGETS, "no address twice");
    }

    #[test]
    fn failure_keeps_the_last_good_answer_as_stale() {
        let table = Table::default();
        let key = "buyer.example";
        assert!(table.get(key).is_none());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let answer = Answer {
            targets: vec![t("a", 0, 0, 5060)],
            ttl: Duration::from_secs(30),
            via: "a",
        };
        table.record(key, Err("no record".into()), t0);
        assert!(table.get(key).unwrap().answer.is_none());
        table.record(key, Ok(answer.clone()), t0);
        table.record(key, Err("timed out".into()), t0 + Duration::from_secs(40));
        let s = table.get(key).unwrap();
        assert_eq!(s.answer.as_ref(), Some(&answer));
        assert_eq!(s.error.as_deref(), Some("timed out"));
        assert!(s.stale(t0 + Duration::from_secs(40)));
        assert!(!s.stale(t0 + Duration::from_secs(10)));
        let mut m = String::new();
        table.render(&mut m);
        assert!(
            m.contains("dce_dns_lookups_total{result=\"error\"} 2"),
            "{m}"
        );
        assert!(
            m.contains("dce_dns_targets{host=\"buyer.example\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("dce_dns_failing{host=\"buyer.example\",stale=\"true\"} 1"),
            "{m}"
        );
    }

    #[test]
    fn keys_name_what_the_uri_fixes() {
        let d = Dest {
            host: "sip.buyer.example".into(),
            port: None,
            transport: None,
            sips: false,
        };
        assert_eq!(d.key(), "sip.buyer.example");
        let d = Dest {
            port: Some(5080),
            transport: Some(Transport::Udp),
            ..d
        };
        assert_eq!(d.key(), "sip.buyer.example:5080;udp");
    }
}
