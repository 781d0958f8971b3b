//! Fuzz the call logic: an `EdgeCore` with a real carrier (127.0.0.1), a campaign
//! (+18005550100) and a buyer (127.0.0.1:5090) that the harness plays: it answers every INVITE
//! DCE sends it with 180 and 200 (SDP), so fuzzed carrier traffic meets calls that ring and
//! connect. The input is a sequence of messages separated by `\0\0\0`; each starts with a
//! source byte (0 carrier, 1 buyer, else a stranger on 127.0.0.1:5999) and a time byte (the
//! simulated milliseconds ×10 to advance before it). Invariants: no panic, everything DCE
//! sends parses (or is a 400/505 to a malformed request), nothing leaves loopback, and once
//! every timer has run out after a shutdown DCE holds nothing — no transaction, call, router
//! entry, timer, media session or concurrency slot.
#![no_main]

use bytes::Bytes;
use chrono::TimeZone;
use dce::call::leg::Me;
use dce::call::{AllowAll, Controller, Settings};
use dce::counters::Counters;
use dce::edge::{EdgeCore, Input, Local, Output};
use dce_sip::transaction::{Peer, TimerConfig, Transport};
use dce_sip::{HeaderName, Method};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONFIG: &str = "[node]\nid = \"fuzz\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\nring_timeout_s = 5\n\
[[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1/32\"]\n\
[[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\ndnc = false\ntcpa_hours = false\n\
[[buyer]]\nid = \"b\"\ncampaigns = [\"auto\"]\nuri = \"sip:{called}@127.0.0.1:5090\"\nbid_cents = 100\nmax_concurrent = 50\n";

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

#[derive(Clone, Default)]
struct Media {
    open: Arc<Mutex<HashSet<u64>>>,
    next: Arc<Mutex<u64>>,
    closed: Arc<Mutex<Vec<u64>>>,
}

impl dce_media::MediaEngine for Media {
    fn open(&mut self, _streams: usize) -> Result<dce_media::MediaId, dce_media::MediaError> {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        assert!(self.open.lock().unwrap().insert(*n));
        Ok(*n)
    }
    fn ports(&self, id: dce_media::MediaId, side: dce_media::Side) -> Vec<u16> {
        vec![20_000 + (id % 1000) as u16 * 4 + if side == dce_media::Side::A { 0 } else { 2 }]
    }
    fn set_remote(&mut self, _: dce_media::MediaId, _: dce_media::Side, _: &[dce_media::Stream]) {}
    fn answered(&mut self, _: dce_media::MediaId) {}
    fn close(&mut self, id: dce_media::MediaId) {
        assert!(self.open.lock().unwrap().remove(&id), "media {id} closed twice");
        self.closed.lock().unwrap().push(id);
    }
}

fn peer(addr: SocketAddr) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr,
        conn: Some(0),
    }
}

struct World {
    core: EdgeCore,
    media: Media,
    live: Arc<dce_routing::Live>,
    now: Instant,
    buyer: SocketAddr,
    /// The To header (with DCE's tag) of the last response DCE sent the carrier: `$TO` in a
    /// carrier message is replaced by it, so seeds can carry in-dialog requests.
    last_to: String,
}

impl World {
    fn new() -> World {
        let cfg = dce::config::parse("fuzz.toml", CONFIG).expect("the fuzz config is valid");
        let live = Arc::new(dce_routing::Live::default());
        let snapshot = Arc::new(dce::server::snapshot_of(&cfg, &live).expect("snapshot"));
        let clock = Arc::new(dce::clock::FixedClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 7, 15, 16, 0, 0).unwrap(),
        ));
        let media = Media::default();
        let settings = Settings {
            node_id: "fuzz".into(),
            me: Me {
                host: "127.0.0.1".into(),
                port: 5060,
            },
            ring_timeout: cfg.sip.ring_timeout,
            max_attempts: cfg.sip.max_attempts,
            t1: cfg.sip.t1,
            max_calls: 100,
            udp_socket: 0,
            media_ip: "127.0.0.1".parse().unwrap(),
            max_udp_request: cfg.sip.max_udp_request_bytes,
        };
        let counters = Arc::new(Counters::default());
        let controller = Controller::new(
            settings,
            snapshot,
            live.clone(),
            &cfg.routing.carriers,
            Box::new(AllowAll),
            clock,
            dce::ids::Ids::deterministic(7),
            counters.clone(),
            Box::new(media.clone()),
        );
        let core = EdgeCore::new(
            TimerConfig::default(),
            Local {
                hosts: vec!["127.0.0.1".into()],
            },
            "127.0.0.1".into(),
            counters,
            controller,
        );
        World {
            core,
            media,
            live,
            now: Instant::now(),
            buyer: "127.0.0.1:5090".parse().unwrap(),
            last_to: String::new(),
        }
    }

    fn feed(&mut self, from: SocketAddr, bytes: Bytes) {
        self.core
            .handle_input(Input::Bytes { bytes, from: peer(from), at: self.now }, self.now);
        self.pump();
    }

    /// Carry out the core's outputs; play the buyer; report closed media.
    fn pump(&mut self) {
        let mut to_buyer = Vec::new();
        let mut acks = Vec::new();
        for _ in 0..10_000 {
            let closed: Vec<u64> = std::mem::take(&mut *self.media.closed.lock().unwrap());
            for id in closed {
                self.core.handle_input(
                    Input::Media(dce_media::MediaEvent::Closed {
                        id,
                        report: Box::default(),
                    }),
                    self.now,
                );
            }
            let Some(out) = self.core.poll_output() else {
                break;
            };
            let Output::Transmit(t) = out else { continue };
            assert!(t.to.addr.ip().is_loopback(), "DCE sent to {}", t.to.addr);
            match dce_sip::parse(t.bytes.clone()) {
                Ok(m) => {
                    if t.to.addr.port() == 5070 && !m.is_request() {
                        if let Some(to) = m.header(&HeaderName::To).filter(|_| m.to().tag().is_some()) {
                            self.last_to = to.to_owned();
                        }
                        if (200..300).contains(&m.code().unwrap_or(0)) && m.cseq_method() == &Method::Invite {
                            // The carrier ACKs DCE's 2xx.
                            let mut ack = dce_sip::MessageBuf::request(Method::Ack, "sip:dce@127.0.0.1:5060");
                            ack.push(HeaderName::Via, "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKfa;rport")
                                .push(HeaderName::MaxForwards, "70")
                                .push(HeaderName::From, m.header(&HeaderName::From).unwrap_or_default())
                                .push(HeaderName::To, m.header(&HeaderName::To).unwrap_or_default())
                                .push(HeaderName::CallId, m.call_id())
                                .push(HeaderName::CSeq, format!("{} ACK", m.cseq()));
                            acks.push(ack.print());
                        }
                    }
                    if t.to.addr == self.buyer && m.method() == Some(&Method::Invite) && m.to().tag().is_none() {
                        to_buyer.push(m);
                    }
                }
                Err(_) => assert!(
                    t.bytes.starts_with(b"SIP/2.0 400 ") || t.bytes.starts_with(b"SIP/2.0 505 "),
                    "DCE sent something unparseable: {:?}",
                    String::from_utf8_lossy(&t.bytes)
                ),
            }
        }
        for ack in acks {
            self.feed("127.0.0.1:5070".parse().unwrap(), ack);
        }
        for inv in to_buyer {
            let mut ringing = inv.response(180, "Ringing", "bt", None);
            ringing.push(HeaderName::Contact, "<sip:b@127.0.0.1:5090>");
            let mut ok = inv.response(200, "OK", "bt", None);
            ok.push(HeaderName::Contact, "<sip:b@127.0.0.1:5090>")
                .push(HeaderName::ContentType, "application/sdp");
            ok.body = Bytes::from_static(SDP.as_bytes());
            let b = self.buyer;
            self.feed(b, ringing.print());
            self.feed(b, ok.print());
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.core.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now);
            self.pump();
        }
        self.now = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut w = World::new();
    let stranger: SocketAddr = "127.0.0.1:5999".parse().unwrap();
    let mut rest = data;
    let mut n = 0;
    while !rest.is_empty() && n < 64 {
        n += 1;
        let end = rest
            .windows(3)
            .position(|w| w == b"\0\0\0")
            .unwrap_or(rest.len());
        let (msg, tail) = rest.split_at(end);
        rest = tail.get(3..).unwrap_or(&[]);
        if msg.len() < 2 {
            continue;
        }
        let from = match msg[0] {
            b'0' | 0 => "127.0.0.1:5070".parse().unwrap(),
            b'1' | 1 => w.buyer,
            _ => stranger,
        };
        w.advance(Duration::from_millis(u64::from(msg[1]) * 10));
        let mut body = msg[2..].to_vec();
        if let Some(i) = body.windows(3).position(|x| x == b"$TO") {
            let to = w.last_to.clone().into_bytes();
            body.splice(i..i + 3, to);
        }
        w.feed(from, Bytes::from(body));
    }
    w.core.handle_input(Input::Shutdown, w.now);
    w.pump();
    for _ in 0..3 {
        w.advance(Duration::from_secs(70));
    }
    assert_eq!(w.core.transactions(), 0, "{:?}", w.core.transactions_live());
    assert_eq!(w.core.calls().held(), dce::call::Held::default());
    assert_eq!(w.live.total_active(), 0, "concurrency slots left");
    assert!(w.media.open.lock().unwrap().is_empty(), "media left open");
});
