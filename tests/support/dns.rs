//! A small authoritative DNS server on loopback for tests: answers A, NAPTR and SRV queries
//! over UDP from a zone the test can change while it runs (or silence). Not DCE's code: it is
//! built on `hickory-proto`'s message codec, as a real server would be.

#![allow(dead_code)]

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{naptr::NAPTR, srv::SRV, A, AAAA};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One record of the zone.
#[derive(Debug, Clone)]
pub enum Rec {
    /// An A record.
    A(Ipv4Addr),
    /// An AAAA record.
    Aaaa(std::net::Ipv6Addr),
    /// NAPTR: order, service (`SIP+D2U`), replacement (an SRV name); flags `s`.
    Naptr(u16, &'static str, String),
    /// SRV: priority, weight, port, target.
    Srv(u16, u16, u16, String),
}

/// (name, record, TTL seconds).
pub type Zone = Vec<(String, Rec, u32)>;

/// The running server.
pub struct DnsServer {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Queries answered.
    pub queries: Arc<AtomicU64>,
}

impl DnsServer {
    /// Serve `zone` on 127.0.0.1 (a free port).
    pub fn start(zone: Zone) -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind test DNS server");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(zone));
        let silent = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU64::new(0));
        let (z, si, st, q) = (zone.clone(), silent.clone(), stop.clone(), queries.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if si.load(Ordering::Relaxed) {
                    continue;
                }
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let resp = answer(&req, &z.lock().unwrap());
                if let Ok(bytes) = resp.to_vec() {
                    let _ = sock.send_to(&bytes, from);
                    q.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        DnsServer {
            addr,
            zone,
            silent,
            stop,
            queries,
        }
    }

    /// Replace the zone.
    pub fn set(&self, zone: Zone) {
        *self.zone.lock().unwrap() = zone;
    }

    /// Stop answering (queries time out) or start again.
    pub fn silence(&self, on: bool) {
        self.silent.store(on, Ordering::Relaxed);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn name(s: &str) -> Name {
    Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).expect("test zone name")
}

fn answer(req: &Message, zone: &Zone) -> Message {
    let mut resp = Message::response(req.metadata.id, OpCode::Query);
    resp.metadata.message_type = MessageType::Response;
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    let mut known_name = false;
    for q in &req.queries {
        resp.add_query(q.clone());
        let qname = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        for (n, rec, ttl) in zone {
            if !n.eq_ignore_ascii_case(&qname) {
                continue;
            }
            known_name = true;
            let data = match (rec, q.query_type()) {
                (Rec::A(ip), RecordType::A) => RData::A(A(*ip)),
                (Rec::Aaaa(ip), RecordType::AAAA) => RData::AAAA(AAAA(*ip)),
                (Rec::Naptr(order, services, repl), RecordType::NAPTR) => RData::NAPTR(NAPTR::new(
                    *order,
                    10,
                    b"s".to_vec().into_boxed_slice(),
                    services.as_bytes().to_vec().into_boxed_slice(),
                    Vec::new().into_boxed_slice(),
                    name(repl),
                )),
                (Rec::Srv(p, w, port, target), RecordType::SRV) => {
                    RData::SRV(SRV::new(*p, *w, *port, name(target)))
                }
                _ => continue,
            };
            resp.add_answer(Record::from_rdata(q.name().clone(), *ttl, data));
        }
    }
    if !known_name {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    resp
}

/// NAPTR `SIP+D2U` → `_sip._udp.{domain}` → SRV targets `a.{domain}` / `b.{domain}` at
/// 127.0.0.1 on `ports` (priority 10, 20, …), all with TTL `ttl`.
pub fn buyer_zone(domain: &str, ports: &[u16], ttl: u32) -> Zone {
    let srv = format!("_sip._udp.{domain}");
    let mut z: Zone = vec![(domain.into(), Rec::Naptr(10, "SIP+D2U", srv.clone()), ttl)];
    for (i, port) in ports.iter().enumerate() {
        let target = format!("{}.{domain}", (b'a' + i as u8) as char);
        z.push((
            srv.clone(),
            Rec::Srv(10 * (i as u16 + 1), 10, *port, target.clone()),
            ttl,
        ));
        z.push((target, Rec::A(Ipv4Addr::LOCALHOST), ttl));
    }
    z
}
