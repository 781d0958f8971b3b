//! RFC 3263 §4: from a SIP URI's host to the servers to try. Generic over the DNS
//! ([`Lookup`]), so the procedure is tested against a table of records and runs against the
//! real resolver ([`super::resolver`]) in production.

use super::{Answer, Dest, Target, Transport};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A NAPTR record (RFC 3403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    /// Processing order, lower first.
    pub order: u16,
    /// Preference within an order, lower first.
    pub preference: u16,
    /// Flags (`s`: the replacement is an SRV name).
    pub flags: String,
    /// The service, e.g. `SIP+D2U`.
    pub services: String,
    /// The next name to look up.
    pub replacement: String,
}

/// An SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Priority, lower first.
    pub priority: u16,
    /// Weight within a priority.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target host (`.` = the service is decidedly not available).
    pub target: String,
}

/// Why a lookup gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// The name has no such record (NXDOMAIN or an empty answer).
    NoRecords,
    /// The lookup failed (timeout, server failure, a bad name): the text says which.
    Error(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::NoRecords => f.write_str("no records"),
            Fail::Error(e) => f.write_str(e),
        }
    }
}

/// Records and the TTL they came with.
pub type Found<T> = Result<(Vec<T>, Duration), Fail>;

/// The three queries RFC 3263 makes.
#[allow(async_fn_in_trait)]
pub trait Lookup {
    /// NAPTR records of `name`.
    async fn naptr(&self, name: &str) -> Found<Naptr>;
    /// SRV records of `name`.
    async fn srv(&self, name: &str) -> Found<Srv>;
    /// A and AAAA records of `name` (the families DCE can send to).
    async fn ip(&self, name: &str) -> Found<IpAddr>;
}

fn service_transport(services: &str) -> Option<Transport> {
    match services.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Some(Transport::Udp),
        "SIP+D2T" => Some(Transport::Tcp),
        "SIPS+D2T" => Some(Transport::Tls),
        _ => None,
    }
}

fn srv_name(t: Transport, host: &str) -> String {
    match t {
        Transport::Udp => format!("_sip._udp.{host}"),
        Transport::Tcp => format!("_sip._tcp.{host}"),
        Transport::Tls => format!("_sips._tcp.{host}"),
    }
}

fn default_port(t: Transport) -> u16 {
    match t {
        Transport::Tls => 5061,
        _ => 5060,
    }
}

/// Resolve `dest` to targets, using only the transports in `supported` (in DCE's order of
/// preference when the URI and NAPTR leave the choice open).
pub async fn resolve(
    dns: &impl Lookup,
    dest: &Dest,
    supported: &[Transport],
) -> Result<Answer, String> {
    let wanted: Vec<Transport> = match (dest.transport, dest.sips) {
        (Some(t), _) => vec![t],
        (None, true) => vec![Transport::Tls],
        (None, false) => supported.to_vec(),
    };
    let wanted: Vec<Transport> = wanted
        .into_iter()
        .filter(|t| supported.contains(t))
        .collect();
    let Some(&first) = wanted.first() else {
        return Err(format!(
            "{}: no transport DCE can use towards it",
            dest.host
        ));
    };
    // §4.2: an explicit port means no NAPTR or SRV.
    if let Some(port) = dest.port {
        return hosts(dns, &dest.host, port, first, Duration::MAX, "a").await;
    }
    let mut ttl = Duration::MAX;
    // §4.1: NAPTR only when the URI names no transport.
    if dest.transport.is_none() {
        if let Ok((mut recs, t)) = dns.naptr(&dest.host).await {
            recs.retain(|r| r.flags.eq_ignore_ascii_case("s"));
            recs.sort_by_key(|r| (r.order, r.preference));
            for r in recs {
                let Some(tr) = service_transport(&r.services) else {
                    continue;
                };
                if !wanted.contains(&tr) {
                    continue;
                }
                let name = r.replacement.trim_end_matches('.').to_ascii_lowercase();
                if let Some(a) = srv_set(dns, &name, tr, t.min(ttl), "naptr").await? {
                    return Ok(a);
                }
            }
            ttl = ttl.min(t);
        }
    }
    for &tr in &wanted {
        if let Some(a) = srv_set(dns, &srv_name(tr, &dest.host), tr, ttl, "srv").await? {
            return Ok(a);
        }
    }
    hosts(dns, &dest.host, default_port(first), first, ttl, "a").await
}

/// The targets of SRV name `name`; `None` when it has no records (try the next step).
async fn srv_set(
    dns: &impl Lookup,
    name: &str,
    transport: Transport,
    ttl: Duration,
    via: &'static str,
) -> Result<Option<Answer>, String> {
    let (recs, t) = match dns.srv(name).await {
        Ok(r) => r,
        Err(Fail::NoRecords) => return Ok(None),
        Err(Fail::Error(e)) => return Err(format!("SRV {name}: {e}")),
    };
    if recs.iter().any(|r| r.target == "." || r.target.is_empty()) && recs.len() == 1 {
        return Err(format!(
            "SRV {name}: the service is decidedly not available (target \".\")"
        ));
    }
    let mut ttl = ttl.min(t);
    let mut targets = Vec::new();
    let mut last_err = None;
    for r in recs {
        let host = r.target.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            continue;
        }
        let addrs = match literal(&host) {
            Some(ip) => vec![ip],
            None => match dns.ip(&host).await {
                Ok((ips, t)) => {
                    ttl = ttl.min(t);
                    ips
                }
                Err(e) => {
                    last_err = Some(format!("{host}: {e}"));
                    continue;
                }
            },
        };
        targets.push(Target {
            name: host,
            priority: r.priority,
            weight: r.weight,
            addrs: addrs
                .into_iter()
                .map(|ip| SocketAddr::new(ip, r.port))
                .collect(),
            transport,
        });
    }
    targets.retain(|t| !t.addrs.is_empty());
    if targets.is_empty() {
        return Err(format!(
            "SRV {name}: no target has an address ({})",
            last_err.unwrap_or_else(|| "none listed".into())
        ));
    }
    Ok(Some(Answer {
        targets,
        ttl: bounded(ttl),
        via,
    }))
}

async fn hosts(
    dns: &impl Lookup,
    host: &str,
    port: u16,
    transport: Transport,
    ttl: Duration,
    via: &'static str,
) -> Result<Answer, String> {
    let (ips, t) = dns
        .ip(host)
        .await
        .map_err(|e| format!("A/AAAA {host}: {e}"))?;
    if ips.is_empty() {
        return Err(format!("A/AAAA {host}: no records"));
    }
    Ok(Answer {
        targets: vec![Target {
            name: host.to_owned(),
            priority: 0,
            weight: 0,
            addrs: ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            transport,
        }],
        ttl: bounded(ttl.min(t)),
        via,
    })
}

fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// TTLs are kept between 1 s and 1 h: a zero TTL must not make the resolver spin, and a week's
/// TTL must not hide a change for a week.
fn bounded(ttl: Duration) -> Duration {
    ttl.clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Records by (type, name); a name missing is NoRecords; `broken` names time out.
    #[derive(Default)]
    struct Zone {
        naptr: HashMap<String, Vec<Naptr>>,
        srv: HashMap<String, Vec<Srv>>,
        ip: HashMap<String, Vec<IpAddr>>,
        broken: Vec<String>,
        asked: Mutex<Vec<String>>,
    }

    impl Zone {
        fn get<T: Clone>(&self, kind: &str, m: &HashMap<String, Vec<T>>, name: &str) -> Found<T> {
            self.asked.lock().unwrap().push(format!("{kind} {name}"));
            if self.broken.iter().any(|b| b == name) {
                return Err(Fail::Error("timed out".into()));
            }
            match m.get(name) {
                Some(v) if !v.is_empty() => Ok((v.clone(), Duration::from_secs(300))),
                _ => Err(Fail::NoRecords),
            }
        }
    }

    impl Lookup for Zone {
        async fn naptr(&self, name: &str) -> Found<Naptr> {
            self.get("NAPTR", &self.naptr, name)
        }
        async fn srv(&self, name: &str) -> Found<Srv> {
            self.get("SRV", &self.srv, name)
        }
        async fn ip(&self, name: &str) -> Found<IpAddr> {
            self.get("A", &self.ip, name)
        }
    }

    fn naptr(order: u16, services: &str, replacement: &str) -> Naptr {
        Naptr {
            order,
            preference: 10,
            flags: "s".into(),
            services: services.into(),
            replacement: replacement.into(),
        }
    }

    fn srv(priority: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight: 10,
            port,
            target: target.into(),
        }
    }

    fn dest(host: &str) -> Dest {
        Dest {
            host: host.into(),
            port: None,
            transport: None,
            sips: false,
        }
    }

    fn run(zone: &Zone, d: &Dest) -> Result<Answer, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(resolve(zone, d, &[Transport::Udp]))
    }

    fn addrs(a: &Answer) -> Vec<String> {
        a.targets
            .iter()
            .flat_map(|t| t.addrs.iter().map(|a| a.to_string()))
            .collect()
    }

    fn zone() -> Zone {
        let mut z = Zone::default();
        z.naptr.insert(
            "buyer.test".into(),
            vec![
                naptr(20, "SIPS+D2T", "_sips._tcp.buyer.test."),
                naptr(10, "SIP+D2U", "_sip._udp.buyer.test."),
            ],
        );
        z.srv.insert(
            "_sip._udp.buyer.test".into(),
            vec![
                srv(10, 5091, "a.buyer.test."),
                srv(20, 5092, "b.buyer.test."),
            ],
        );
        z.ip.insert("a.buyer.test".into(), vec!["127.0.0.1".parse().unwrap()]);
        z.ip.insert("b.buyer.test".into(), vec!["127.0.0.2".parse().unwrap()]);
        z.ip.insert("buyer.test".into(), vec!["127.0.0.9".parse().unwrap()]);
        z
    }

    #[test]
    fn naptr_then_srv_then_addresses() {
        let z = zone();
        let a = run(&z, &dest("buyer.test")).unwrap();
        assert_eq!(a.via, "naptr");
        assert_eq!(addrs(&a), ["127.0.0.1:5091", "127.0.0.2:5092"]);
        assert_eq!(a.targets[0].priority, 10);
        // The TLS NAPTR is skipped: DCE was told it can use UDP only.
        assert!(!z.asked.lock().unwrap().iter().any(|q| q.contains("_sips")));
    }

    #[test]
    fn without_naptr_srv_is_asked_then_the_host_itself() {
        let mut z = zone();
        z.naptr.clear();
        let a = run(&z, &dest("buyer.test")).unwrap();
        assert_eq!(a.via, "srv");
        assert_eq!(addrs(&a), ["127.0.0.1:5091", "127.0.0.2:5092"]);
        z.srv.clear();
        let a = run(&z, &dest("buyer.test")).unwrap();
        assert_eq!(a.via, "a");
        assert_eq!(addrs(&a), ["127.0.0.9:5060"]);
    }

    #[test]
    fn a_port_or_transport_in_the_uri_skips_steps() {
        let z = zone();
        let d = Dest {
            port: Some(5070),
            ..dest("buyer.test")
        };
        let a = run(&z, &d).unwrap();
        assert_eq!((a.via, addrs(&a)), ("a", vec!["127.0.0.9:5070".to_owned()]));
        assert_eq!(*z.asked.lock().unwrap(), ["A buyer.test"]);
        let z = zone();
        let d = Dest {
            transport: Some(Transport::Udp),
            ..dest("buyer.test")
        };
        assert_eq!(run(&z, &d).unwrap().via, "srv");
        assert!(!z
            .asked
            .lock()
            .unwrap()
            .iter()
            .any(|q| q.starts_with("NAPTR")));
    }

    #[test]
    fn failures_say_what_failed() {
        let z = Zone::default();
        let e = run(&z, &dest("nowhere.test")).unwrap_err();
        assert_eq!(e, "A/AAAA nowhere.test: no records");
        let mut z = zone();
        z.broken.push("_sip._udp.buyer.test".into());
        let e = run(&z, &dest("buyer.test")).unwrap_err();
        assert_eq!(e, "SRV _sip._udp.buyer.test: timed out");
        // One SRV target without an address: the other still serves.
        let mut z = zone();
        z.ip.remove("a.buyer.test");
        let a = run(&z, &dest("buyer.test")).unwrap();
        assert_eq!(addrs(&a), ["127.0.0.2:5092"]);
        let mut z = zone();
        z.naptr.clear();
        z.srv
            .insert("_sip._udp.buyer.test".into(), vec![srv(0, 0, ".")]);
        assert!(run(&z, &dest("buyer.test"))
            .unwrap_err()
            .contains("decidedly not available"));
        let e = run(
            &zone(),
            &Dest {
                sips: true,
                ..dest("buyer.test")
            },
        )
        .unwrap_err();
        assert!(e.contains("no transport"), "{e}");
    }

    #[test]
    fn ttls_are_the_shortest_and_bounded() {
        assert_eq!(bounded(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(bounded(Duration::MAX), Duration::from_secs(3600));
        let a = run(&zone(), &dest("buyer.test")).unwrap();
        assert_eq!(a.ttl, Duration::from_secs(300));
    }
}
