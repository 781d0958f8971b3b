//! The background resolver: `hickory-resolver` under the RFC 3263 procedure, one task that
//! keeps every buyer host's answer fresh in the [`Table`].

use super::rfc3263::{self, Fail, Found, Lookup, Naptr, Srv};
use super::{Dest, Table, Transport};
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// The transports DCE can reach buyers over, in its order of preference when the DNS leaves
/// the choice open.
pub const SUPPORTED: &[Transport] = &[Transport::Udp, Transport::Tcp, Transport::Tls];

/// The real DNS.
#[derive(Clone)]
pub struct Hickory(TokioResolver);

impl Hickory {
    /// A resolver asking `servers` (or the system's when empty), each query within `timeout`,
    /// for the address families in `v4`/`v6`.
    pub fn new(
        servers: &[std::net::SocketAddr],
        timeout: Duration,
        v4: bool,
        v6: bool,
    ) -> Result<Hickory, String> {
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system's DNS settings: {e}"))?
        } else {
            let servers = servers
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let o: &mut ResolverOpts = builder.options_mut();
        o.timeout = timeout;
        o.attempts = 2;
        // DCE keeps its own cache (the table) and refreshes it before the TTL runs out; a
        // second cache underneath would hand back the old answer at refresh time.
        o.cache_size = 0;
        o.ndots = 0;
        o.ip_strategy = match (v4, v6) {
            (true, false) => LookupIpStrategy::Ipv4Only,
            (false, true) => LookupIpStrategy::Ipv6Only,
            _ => LookupIpStrategy::Ipv4AndIpv6,
        };
        builder
            .build()
            .map(Hickory)
            .map_err(|e| format!("cannot start the DNS resolver: {e}"))
    }

    async fn records(&self, name: &str, rt: RecordType) -> Result<(Vec<RData>, Duration), Fail> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.0.lookup(fqdn.as_str(), rt).await {
            Ok(l) => {
                let ttl = l
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rt)
                    .map(|r| r.ttl)
                    .min()
                    .unwrap_or(0);
                let data: Vec<RData> = l
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rt)
                    .map(|r| r.data.clone())
                    .collect();
                if data.is_empty() {
                    return Err(Fail::NoRecords);
                }
                Ok((data, Duration::from_secs(u64::from(ttl))))
            }
            Err(e) if e.is_no_records_found() => Err(Fail::NoRecords),
            Err(e) => Err(Fail::Error(e.to_string())),
        }
    }
}

impl Lookup for Hickory {
    async fn naptr(&self, name: &str) -> Found<Naptr> {
        let (data, ttl) = self.records(name, RecordType::NAPTR).await?;
        let recs = data
            .into_iter()
            .filter_map(|d| match d {
                RData::NAPTR(n) => Some(Naptr {
                    order: n.order,
                    preference: n.preference,
                    flags: String::from_utf8_lossy(&n.flags).into_owned(),
                    services: String::from_utf8_lossy(&n.services).into_owned(),
                    replacement: n.replacement.to_ascii(),
                }),
                _ => None,
            })
            .collect();
        Ok((recs, ttl))
    }

    async fn srv(&self, name: &str) -> Found<Srv> {
        let (data, ttl) = self.records(name, RecordType::SRV).await?;
        let recs = data
            .into_iter()
            .filter_map(|d| match d {
                RData::SRV(s) => Some(Srv {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: s.target.to_ascii(),
                }),
                _ => None,
            })
            .collect();
        Ok((recs, ttl))
    }

    async fn ip(&self, name: &str) -> Found<IpAddr> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.0.lookup_ip(fqdn.as_str()).await {
            Ok(l) => {
                let ttl = l
                    .as_lookup()
                    .answers()
                    .iter()
                    .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                    .map(|r| r.ttl)
                    .min()
                    .unwrap_or(0);
                let ips: Vec<IpAddr> = l.iter().collect();
                if ips.is_empty() {
                    return Err(Fail::NoRecords);
                }
                Ok((ips, Duration::from_secs(u64::from(ttl))))
            }
            Err(e) if e.is_no_records_found() => Err(Fail::NoRecords),
            Err(e) => Err(Fail::Error(e.to_string())),
        }
    }
}

/// When to look a host up again: before its TTL runs out (at 90 %, at least 1 s later); after
/// a failure, 1 s, 2 s, 4 s … up to 60 s.
fn next_check(result: &Result<super::Answer, String>, failures: u32) -> Duration {
    match result {
        Ok(a) => a.ttl.mul_f64(0.9).max(Duration::from_secs(1)),
        Err(_) => Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60)),
    }
}

/// Every address any answer in `table` gives (the gate trusts them like configured buyers).
pub fn addresses(table: &Table) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = table
        .all()
        .iter()
        .filter_map(|(_, s)| s.answer.as_ref())
        .flat_map(|a| {
            a.targets
                .iter()
                .flat_map(|t| t.addrs.iter().map(|a| a.ip()))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Keep `table` fresh for the destinations `dests` holds (a reload sends a new set). Calls
/// `changed` with every address in the table whenever that set changes. Ends when the sender
/// of `dests` is dropped.
pub async fn run(
    dns: Hickory,
    table: Arc<Table>,
    mut dests: watch::Receiver<Vec<Dest>>,
    changed: Box<dyn Fn(Vec<IpAddr>) + Send + Sync>,
) {
    // Per destination: when to look again, and failures in a row.
    let mut due: HashMap<Dest, (Instant, u32)> = HashMap::new();
    let mut known: Vec<IpAddr> = Vec::new();
    let mut want = dests.borrow_and_update().clone();
    loop {
        // Merge the wanted set: new ones now, gone ones out of the table.
        due.retain(|d, _| want.contains(d));
        for d in &want {
            due.entry(d.clone()).or_insert((Instant::now(), 0));
        }
        table.retain(&want.iter().map(Dest::key).collect::<HashSet<_>>());
        let now = Instant::now();
        let ready: Vec<Dest> = due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(d, _)| d.clone())
            .collect();
        if !ready.is_empty() {
            let mut set = tokio::task::JoinSet::new();
            for d in ready {
                let dns = dns.clone();
                set.spawn(async move {
                    let r = rfc3263::resolve(&dns, &d, SUPPORTED).await;
                    (d, r)
                });
            }
            while let Some(done) = set.join_next().await {
                let Ok((d, r)) = done else { continue };
                let key = d.key();
                let before = table.get(&key);
                let failures = match &r {
                    Ok(_) => 0,
                    Err(_) => due.get(&d).map_or(0, |x| x.1) + 1,
                };
                match (&r, before.as_ref().and_then(|b| b.answer.as_ref())) {
                    (Ok(a), Some(old)) if old.targets == a.targets => {}
                    (Ok(a), _) => {
                        let list: Vec<String> = a
                            .targets
                            .iter()
                            .flat_map(|t| {
                                t.addrs.iter().map(move |x| {
                                    format!(
                                        "{x} ({} prio {} weight {})",
                                        t.name, t.priority, t.weight
                                    )
                                })
                            })
                            .collect();
                        tracing::info!(host = %key, via = a.via, ttl_s = a.ttl.as_secs(), targets = %list.join(", "), "buyer host resolved");
                    }
                    (Err(e), old) if failures == 1 => {
                        tracing::warn!(host = %key, error = %e, keeps_last_answer = old.is_some(), "buyer host lookup failed");
                    }
                    (Err(e), _) => {
                        tracing::debug!(host = %key, error = %e, failures, "buyer host lookup failed again");
                    }
                }
                let next = next_check(&r, failures);
                if let Some(x) = due.get_mut(&d) {
                    *x = (Instant::now() + next, failures);
                }
                table.record(&key, r, SystemTime::now());
            }
            let addrs = addresses(&table);
            if addrs != known {
                known = addrs.clone();
                changed(addrs);
            }
            continue;
        }
        let next = due
            .values()
            .map(|(at, _)| *at)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = dests.changed() => {
                if r.is_err() {
                    return;
                }
                want = dests.borrow_and_update().clone();
            }
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

/// Wait until every key of `dests` has had its first lookup, at most `limit`.
pub async fn first_round(table: &Table, dests: &[Dest], limit: Duration) {
    let end = Instant::now() + limit;
    while Instant::now() < end && dests.iter().any(|d| table.get(&d.key()).is_none()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
