//! A simulated network around an in-process `EdgeCore`: a carrier and scripted buyers built
//! on `dce-sip`, simulated time, no sockets. Whichever side is due next runs next, so a call
//! with a 20-second ring timeout takes microseconds.

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use dce::call::cdr::{Cdr, MemorySink};
use dce::call::leg::Me;
use dce::call::{Controller, Settings};
use dce::clock::FixedClock;
use dce::counters::Counters;
use dce::edge::{EdgeCore, Local};
use dce_routing::Live;
use dce_sip::transaction::{Peer, TimerConfig, Transport};
use dce_sip::{parse, HeaderName, Message, MessageBuf, Method};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers a fleet-wide check in tests.
pub type Responder = Box<dyn FnMut(&dce::call::RemoteCheck) -> dce::call::RemoteResult>;

/// DCE's address in the simulation.
pub const DCE: &str = "127.0.0.1:5060";
/// The carrier's address (inside carrier-a's sources).
pub const CARRIER: &str = "127.0.0.1:5070";

/// How a simulated buyer treats an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 180, then 200 after `Duration`.
    Answer(Duration),
    /// 180, then this final code.
    Reject(u16),
    /// 180 and nothing more.
    Ring,
    /// Nothing at all.
    Silent,
}

/// One call as a buyer saw it.
#[derive(Debug, Clone)]
pub struct BuyerCall {
    /// The INVITE it received.
    pub invite: Message,
    /// Its To tag.
    pub tag: String,
    /// Requests received in the dialog (ACK, BYE, CANCEL, INFO …).
    pub requests: Vec<Message>,
}

/// A scripted buyer.
#[derive(Debug)]
pub struct Buyer {
    /// Behaviour for new INVITEs.
    pub mode: Mode,
    /// Calls by Call-ID.
    pub calls: BTreeMap<String, BuyerCall>,
    /// OPTIONS received (answered 200 unless the buyer is `Silent`).
    pub options: usize,
}

/// One call as the carrier placed it.
#[derive(Debug, Clone, Default)]
pub struct CarrierCall {
    /// Responses to the INVITE, in order.
    pub responses: Vec<Message>,
    /// Requests DCE sent in the dialog (BYE …).
    pub requests: Vec<Message>,
    /// Responses to the carrier's BYE/CANCEL/INFO.
    pub other_responses: Vec<Message>,
}

#[derive(Debug)]
enum Action {
    BuyerAnswer { buyer: SocketAddr, call_id: String },
    BuyerBye { buyer: SocketAddr, call_id: String },
    CarrierBye { call_id: String },
}

/// The simulation.
pub struct Sim {
    /// DCE's core.
    pub core: EdgeCore,
    /// CDRs written.
    pub cdrs: MemorySink,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Live buyer counters.
    pub live: Arc<Live>,
    /// Simulated monotonic time.
    pub now: Instant,
    /// Wall clock.
    pub clock: Arc<FixedClock>,
    /// Buyers by address.
    pub buyers: HashMap<SocketAddr, Buyer>,
    /// Carrier calls by Call-ID.
    pub carrier: BTreeMap<String, CarrierCall>,
    /// Carrier sends from here (set to an unknown address to test 403).
    pub carrier_addr: SocketAddr,
    /// The media engine.
    pub media: super::FakeMedia,
    /// The compliance checks.
    pub compliance: Arc<std::sync::Mutex<dce_compliance::Compliance>>,
    /// Answers fleet-wide (Redis) checks as they come; `None` leaves them queued in `remote`.
    pub responder: Option<Responder>,
    /// Fleet-wide checks not answered yet.
    pub remote: Vec<(dce::call::LookupId, dce::call::RemoteCheck)>,
    /// Real-time bid requests not answered yet, with their deadlines.
    pub bid_requests: Vec<(dce::call::LookupId, Box<dce::call::BidQuery>, Instant)>,
    /// Answers to publishers' bid requests (`Sim::quote`), by id.
    pub quoted: Vec<(u64, dce::call::QuoteAnswer)>,
    /// What DCE sent to addresses that are neither the carrier nor a buyer.
    pub strangers: Vec<(SocketAddr, Message)>,
    /// With `Some`, every message the carrier and buyers send DCE is recorded here (seeds
    /// for mutation tests).
    pub sent_log: Option<Vec<(SocketAddr, Bytes)>>,
    /// 400/505 answers to malformed requests that could not be whole (no Call-ID to copy).
    pub malformed_answers: usize,
    inbox: VecDeque<(SocketAddr, Bytes)>,
    scheduled: Vec<(Instant, Action)>,
    /// Carrier's INVITEs by Call-ID (to build CANCEL/ACK/BYE).
    invites: HashMap<String, MessageBuf>,
    seq: u64,
    late_offer: bool,
    nobody: Buyer,
    buyer_responses: Vec<(u16, Message)>,
    /// Fleet-wide duplicate checks asked and not answered yet.
    pub dup_checks: Vec<(dce::call::LookupId, dce::call::lookup::DupCheck)>,
    /// What DCE wrote to the fleet's memory of callers.
    pub remembered: Vec<dce::call::lookup::DupWrite>,
    /// Fleet-wide cap leases asked and not answered yet.
    pub lease_asks: Vec<(dce::call::LookupId, dce::call::lookup::LeaseAsk)>,
    /// Every write to the fleet's caps, in order.
    pub cap_writes: Vec<dce::call::lookup::CapWrite>,
    /// Leases "Redis" holds: granted by `answer_lease` or held locally, not yet released.
    pub leases: std::collections::BTreeSet<String>,
    /// STIR/SHAKEN (`[stir]` in the config): the certificate cache the test may fill.
    pub stir: Option<Arc<dce::stir::Stir>>,
    /// Certificate fetches asked and not answered yet (`x5u`).
    pub cert_asks: Vec<(dce::call::LookupId, String)>,
    extra_headers: Vec<(HeaderName, String)>,
}

/// Config with carrier-a on 127.0.0.1, campaign `auto` on +18005550100, and `buyers` appended.
pub fn config(extra_sip: &str, buyers: &str) -> dce::config::Config {
    let text = format!(
        "[node]\nid = \"sim\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n{extra_sip}\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 90\nmax_duration_s = 7200\n{buyers}"
    );
    dce::config::parse("sim.toml", &text).unwrap_or_else(|e| panic!("{e:?}"))
}

/// A `[[buyer]]` section.
pub fn buyer(id: &str, port: u16, bid: u32, extra: &str) -> String {
    format!("[[buyer]]\nid = \"{id}\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{port}\"\nbid_cents = {bid}\n{extra}\n")
}

pub const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

impl Sim {
    /// A simulation of `cfg` at Wednesday 2026-07-15 12:00 New York time.
    pub fn new(cfg: &dce::config::Config) -> Sim {
        Sim::with_dns(cfg, None)
    }

    /// [`Sim::new`], with buyer host names resolved from `dns` (filled by the test).
    pub fn with_dns(cfg: &dce::config::Config, dns: Option<Arc<dce::dns::Table>>) -> Sim {
        let counters = Arc::new(Counters::default());
        let live = Arc::new(Live::default());
        let snapshot = Arc::new(dce::server::snapshot_of(cfg, &live).unwrap());
        let cdrs = MemorySink::default();
        let clock = Arc::new(FixedClock::new(
            Utc.with_ymd_and_hms(2026, 7, 15, 16, 0, 0).unwrap(),
        ));
        let settings = Settings {
            node_id: "sim".into(),
            me: Me {
                host: "127.0.0.1".into(),
                port: 5060,
                tcp_port: None,
                tls_port: None,
            },
            ring_timeout: cfg.sip.ring_timeout,
            max_attempts: cfg.sip.max_attempts,
            t1: cfg.sip.t1,
            max_calls: cfg.sip.max_calls,
            udp_socket: 0,
            media_ip: "127.0.0.1".parse().unwrap(),
            max_udp_request: cfg.sip.max_udp_request_bytes,
            recordings_dir: std::env::temp_dir().join("dce-sim-recordings"),
            target_timeout: cfg.sip.target_timeout,
        };
        let media = super::FakeMedia::default();
        let compliance = Arc::new(std::sync::Mutex::new(dce_compliance::Compliance::default()));
        dce::server::ComplianceSetup::load(&cfg.compliance)
            .unwrap()
            .apply(&mut compliance.lock().unwrap(), false);
        let mut controller = Controller::new(
            settings,
            snapshot,
            live.clone(),
            &cfg.routing.carriers,
            Box::new(compliance.clone()),
            clock.clone(),
            dce::ids::Ids::deterministic(42),
            counters.clone(),
            Box::new(media.clone()),
        );
        if let Some(t) = dns {
            controller.set_dns(t);
        }
        let stir = cfg.stir.as_ref().map(|c| Arc::new(dce::stir::Stir::new(c)));
        controller.set_stir(stir.clone());
        let core = EdgeCore::new(
            TimerConfig::default(),
            Local {
                hosts: vec!["127.0.0.1".into()],
            },
            "127.0.0.1".into(),
            counters.clone(),
            controller,
        );
        Sim {
            core,
            cdrs,
            counters,
            live,
            now: Instant::now(),
            clock,
            buyers: HashMap::new(),
            carrier: BTreeMap::new(),
            carrier_addr: CARRIER.parse().unwrap(),
            media,
            compliance,
            responder: None,
            remote: Vec::new(),
            bid_requests: Vec::new(),
            quoted: Vec::new(),
            strangers: Vec::new(),
            sent_log: None,
            malformed_answers: 0,
            inbox: VecDeque::new(),
            scheduled: Vec::new(),
            invites: HashMap::new(),
            seq: 0,
            late_offer: false,
            stir,
            cert_asks: Vec::new(),
            extra_headers: Vec::new(),
            nobody: Buyer {
                mode: Mode::Silent,
                calls: BTreeMap::new(),
                options: 0,
            },
            buyer_responses: Vec::new(),
            dup_checks: Vec::new(),
            remembered: Vec::new(),
            lease_asks: Vec::new(),
            cap_writes: Vec::new(),
            leases: Default::default(),
        }
    }

    /// Add a buyer at `127.0.0.1:port`.
    /// Change how the buyer at `port` behaves from now on.
    pub fn set_mode(&mut self, port: u16, mode: Mode) {
        if let Some(b) = self
            .buyers
            .get_mut(&SocketAddr::from(([127, 0, 0, 1], port)))
        {
            b.mode = mode;
        }
    }

    /// Move the wall clock (which the simulation keeps fixed) on by `d`.
    pub fn advance_wall(&mut self, d: Duration) {
        let t = self.clock.now_utc_plus(d);
        self.clock.set(t);
    }

    /// Make DCE's core the one that sends buyers' OPTIONS pings, from now.
    pub fn start_pinging(&mut self) {
        let now = self.now;
        self.core.calls().set_pinger(now);
    }

    pub fn add_buyer(&mut self, port: u16, mode: Mode) {
        self.buyers.insert(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Buyer {
                mode,
                calls: BTreeMap::new(),
                options: 0,
            },
        );
    }

    /// The buyer at `port` (an empty one if none was added there).
    pub fn buyer(&self, port: u16) -> &Buyer {
        self.buyers
            .get(&SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap_or(&self.nobody)
    }

    fn send_to_dce(&mut self, from: SocketAddr, bytes: Bytes) {
        if let Some(log) = self.sent_log.as_mut() {
            log.push((from, bytes.clone()));
        }
        let peer = Peer {
            transport: Transport::Udp,
            addr: from,
            conn: Some(0),
        };
        self.core.handle_input(
            dce::edge::Input::Bytes {
                bytes,
                from: peer,
                at: self.now,
            },
            self.now,
        );
        self.collect();
    }

    fn collect(&mut self) {
        loop {
            let ev = self.media.events.lock().unwrap().pop_front();
            if let Some(ev) = ev {
                self.core
                    .handle_input(dce::edge::Input::Media(ev), self.now);
                continue;
            }
            let Some(out) = self.core.poll_output() else {
                break;
            };
            match out {
                dce::edge::Output::Transmit(t) => self.inbox.push_back((t.to.addr, t.bytes)),
                dce::edge::Output::Cdr(cdr) => self.cdrs.0.lock().unwrap().push(*cdr),
                dce::edge::Output::Quoted(id, a) => self.quoted.push((id, a)),
                dce::edge::Output::Remember(w) => self.remembered.push(w),
                dce::edge::Output::Caps(w) => {
                    use dce::call::lookup::CapWrite;
                    match &w {
                        CapWrite::Release { member, .. } => {
                            self.leases.remove(member);
                        }
                        CapWrite::HoldLocal { member, .. } => {
                            self.leases.insert(member.clone());
                        }
                        CapWrite::Count { .. } => {}
                    }
                    self.cap_writes.push(w);
                }
                dce::edge::Output::Lookup(req) => {
                    let check = match req.query {
                        dce::call::Query::Shared(check) => check,
                        dce::call::Query::Bid(q) => {
                            self.bid_requests.push((req.id, q, req.deadline));
                            continue;
                        }
                        dce::call::Query::Duplicates(q) => {
                            self.dup_checks.push((req.id, q));
                            continue;
                        }
                        dce::call::Query::Lease(q) => {
                            self.lease_asks.push((req.id, q));
                            continue;
                        }
                        dce::call::Query::Cert(x5u) => {
                            self.cert_asks.push((req.id, x5u));
                            continue;
                        }
                    };
                    match self.responder.as_mut() {
                        Some(answer) => {
                            let r = answer(&check);
                            self.core.handle_input(
                                dce::edge::Input::Lookup {
                                    id: req.id,
                                    answer: dce::call::Answer::Shared(r),
                                },
                                self.now,
                            );
                        }
                        None => self.remote.push((req.id, check)),
                    }
                }
            }
        }
    }

    /// Answer the oldest queued bid request to `buyer` (by snapshot index) with `result`,
    /// `latency_ms` after it was asked.
    pub fn answer_bid(&mut self, buyer: usize, result: dce::rtb::PingResult, latency_ms: u32) {
        let i = self
            .bid_requests
            .iter()
            .position(|(_, q, _)| q.buyer == buyer)
            .expect("a bid request to that buyer");
        let (id, q, _) = self.bid_requests.remove(i);
        let status = matches!(
            result,
            dce::rtb::PingResult::Bid(_)
                | dce::rtb::PingResult::Rejected(_)
                | dce::rtb::PingResult::Malformed(_)
        )
        .then_some(200);
        self.core.handle_input(
            dce::edge::Input::Lookup {
                id,
                answer: dce::call::Answer::Bid(Box::new(dce::call::BidAnswer {
                    buyer: q.buyer,
                    pinged: dce::rtb::client::Pinged {
                        result,
                        latency_ms,
                        latency_us: latency_ms * 1000,
                        status,
                    },
                })),
            },
            self.now,
        );
        self.collect();
    }

    /// A publisher of `carrier` asks for a price for a call from `caller` to the campaign's
    /// number (`POST /v1/bid`); returns the request's id (its answer lands in `quoted`).
    pub fn quote(&mut self, carrier: &str, caller: &str) -> u64 {
        self.quote_with(carrier, caller, |_| {})
    }

    /// [`Sim::quote`] from `carrier-a` for caller +13105551234, changed by `f`.
    pub fn next_quote_with(&mut self, f: impl FnOnce(&mut dce::call::QuoteRequest)) -> u64 {
        self.quote_with("carrier-a", "+13105551234", f)
    }

    fn quote_with(
        &mut self,
        carrier: &str,
        caller: &str,
        f: impl FnOnce(&mut dce::call::QuoteRequest),
    ) -> u64 {
        let id = self.next_id();
        let mut req = dce::call::QuoteRequest {
            id,
            carrier: carrier.into(),
            caller: dce_routing::normalize(caller).unwrap(),
            called: Some("18005550100".into()),
            campaign: None,
            state: None,
            zip: None,
            tags: Vec::new(),
            loop_via: None,
        };
        f(&mut req);
        self.core
            .handle_input(dce::edge::Input::Quote(req), self.now);
        self.collect();
        id
    }

    /// The answer to quote `id`, once given.
    pub fn quote_answer(&self, id: u64) -> Option<&dce::call::QuoteAnswer> {
        self.quoted.iter().find(|(i, _)| *i == id).map(|(_, a)| a)
    }

    /// Answer the oldest queued fleet-wide check.
    /// Answer the oldest fleet-wide duplicate check (what "Redis" remembers, or an error).
    pub fn answer_dups(
        &mut self,
        result: Result<dce::call::lookup::DupSeen, String>,
    ) -> dce::call::lookup::DupCheck {
        let (id, q) = self.dup_checks.remove(0);
        self.core.handle_input(
            dce::edge::Input::Lookup {
                id,
                answer: dce::call::Answer::Duplicates(result),
            },
            self.now,
        );
        self.collect();
        q
    }

    /// Answer the oldest lease asked ("Redis" with `nodes` live nodes); returns what it asked.
    pub fn answer_lease(
        &mut self,
        result: dce::call::lookup::LeaseResult,
        nodes: u32,
    ) -> dce::call::lookup::LeaseAsk {
        let (id, q) = self.lease_asks.remove(0);
        // as the real queue orders it: a release DCE already sent follows the grant
        let released = self.cap_writes.iter().any(|w| {
            matches!(w, dce::call::lookup::CapWrite::Release { member, .. } if *member == q.member)
        });
        // (as Redis: a slot only for a buyer with a concurrency cap)
        if result == dce::call::lookup::LeaseResult::Granted && !released && q.limits.concurrent > 0
        {
            self.leases.insert(q.member.clone());
        }
        let answer = dce::call::lookup::LeaseAnswer { result, nodes };
        self.core.handle_input(
            dce::edge::Input::Lookup {
                id,
                answer: dce::call::Answer::Lease(answer),
            },
            self.now,
        );
        self.collect();
        q
    }

    pub fn answer_remote(&mut self, result: dce::call::RemoteResult) {
        let (id, _) = self.remote.remove(0);
        self.core.handle_input(
            dce::edge::Input::Lookup {
                id,
                answer: dce::call::Answer::Shared(result),
            },
            self.now,
        );
        self.collect();
    }

    /// Assert that DCE holds nothing of any call: no transaction, call, router entry, timer,
    /// media session or concurrency slot (run time past Timer B/F/K first).
    pub fn assert_nothing_held(&mut self) {
        assert_eq!(
            self.core.transactions(),
            0,
            "transactions left: {:?}",
            self.core.transactions_live()
        );
        let held = self.core.calls().held();
        assert_eq!(held, dce::call::Held::default(), "controller state left");
        assert_eq!(self.live.total_active(), 0, "concurrency slots left");
        assert!(
            self.leases.is_empty(),
            "fleet leases left: {:?}",
            self.leases
        );
        assert!(
            self.media.open.lock().unwrap().is_empty(),
            "media sessions left open"
        );
    }

    /// Send raw bytes to DCE from `from` (a probe, an attacker).
    pub fn send_raw(&mut self, from: SocketAddr, bytes: Bytes) {
        // Not recorded in `sent_log`: only the parties' own traffic is.
        let log = self.sent_log.take();
        self.send_to_dce(from, bytes);
        if self.sent_log.is_none() {
            self.sent_log = log;
        }
    }

    /// The carrier's INVITE of `call_id`.
    pub fn carrier_invite(&self, call_id: &str) -> MessageBuf {
        self.invites[call_id].clone()
    }

    fn next_id(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The carrier places a call without SDP (late offer); its ACK will carry the answer.
    pub fn place_call_late_offer(&mut self, caller: &str) -> String {
        self.late_offer = true;
        let id = self.place_call(caller);
        self.late_offer = false;
        id
    }

    /// The carrier places a call with these extra headers (`Identity` …); returns its Call-ID.
    pub fn place_call_with(&mut self, caller: &str, headers: &[(HeaderName, String)]) -> String {
        self.extra_headers = headers.to_vec();
        let id = self.place_call(caller);
        self.extra_headers.clear();
        id
    }

    /// Answer the oldest certificate fetch asked (the driver's fetcher would have cached it:
    /// so does this).
    pub fn answer_cert(&mut self, signer: dce::stir::fetch::Cached) {
        let (id, x5u) = self.cert_asks.remove(0);
        if let Some(st) = &self.stir {
            st.certs.put(
                &x5u,
                signer.clone(),
                self.now + std::time::Duration::from_secs(3600),
            );
        }
        self.core.handle_input(
            dce::edge::Input::Lookup {
                id,
                answer: dce::call::Answer::Cert(signer),
            },
            self.now,
        );
        self.collect();
    }

    /// The carrier places a call; returns its Call-ID.
    pub fn place_call(&mut self, caller: &str) -> String {
        let n = self.next_id();
        let call_id = format!("carrier-call-{n}@10.9.9.9");
        let mut m = MessageBuf::request(Method::Invite, "sip:+18005550100@127.0.0.1:5060");
        m.push(
            HeaderName::Via,
            format!("SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKc{n};rport"),
        )
        .push(HeaderName::MaxForwards, "70")
        .push(
            HeaderName::From,
            format!("<sip:{caller}@10.9.9.9>;tag=cf{n}"),
        )
        .push(HeaderName::To, "<sip:+18005550100@127.0.0.1>")
        .push(HeaderName::CallId, call_id.clone())
        .push(HeaderName::CSeq, "1 INVITE")
        .push(HeaderName::Contact, "<sip:carrier@127.0.0.1:5070>")
        .push(
            HeaderName::Other("X-Carrier-Secret".into()),
            "internal-route-7",
        );
        for (n, v) in &self.extra_headers {
            m.push(n.clone(), v.clone());
        }
        if !self.late_offer {
            m.push(HeaderName::ContentType, "application/sdp");
            m.body = Bytes::from_static(SDP.as_bytes());
        }
        self.invites.insert(call_id.clone(), m.clone());
        self.carrier.insert(call_id.clone(), CarrierCall::default());
        let from = self.carrier_addr;
        self.send_to_dce(from, m.print());
        call_id
    }

    /// The carrier places a call with an INVITE of its own making (`text`, with Call-ID
    /// `call_id`); the carrier side then treats it like any other call.
    pub fn place_raw_call(&mut self, call_id: &str, text: &str) {
        let m = parse(Bytes::from(text.to_owned()))
            .expect("a parseable INVITE")
            .to_buf();
        self.invites.insert(call_id.to_owned(), m.clone());
        self.carrier
            .insert(call_id.to_owned(), CarrierCall::default());
        let from = self.carrier_addr;
        self.send_to_dce(from, m.print());
    }

    /// The carrier cancels a call it placed.
    pub fn cancel(&mut self, call_id: &str) {
        let inv = self.invites[call_id].clone();
        let mut c = MessageBuf::request(Method::Cancel, "sip:+18005550100@127.0.0.1:5060");
        for name in [
            HeaderName::Via,
            HeaderName::MaxForwards,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
        ] {
            c.push(name.clone(), inv.header(&name).unwrap());
        }
        c.push(HeaderName::CSeq, "1 CANCEL");
        let from = self.carrier_addr;
        self.send_to_dce(from, c.print());
    }

    /// The carrier sends its INVITE for `call_id` again (a retransmission).
    pub fn retransmit_invite(&mut self, call_id: &str) {
        let inv = self.invites[call_id].clone();
        let from = self.carrier_addr;
        self.send_to_dce(from, inv.print());
    }

    /// The carrier sends an in-dialog request (INFO, UPDATE, re-INVITE, OPTIONS) on an
    /// answered call, with an optional body.
    pub fn carrier_in_dialog(
        &mut self,
        call_id: &str,
        method: Method,
        cseq: u32,
        body: Option<(&str, &str)>,
    ) {
        let ok = self.carrier[call_id]
            .responses
            .iter()
            .find(|r| r.code() == Some(200))
            .cloned()
            .expect("answered");
        let inv = self.invites[call_id].clone();
        let target = ok.contact().map(|c| c.uri.raw.clone()).unwrap_or_default();
        let n = self.next_id();
        let mut b = MessageBuf::request(method.clone(), target);
        b.push(
            HeaderName::Via,
            format!("SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKcd{n};rport"),
        )
        .push(HeaderName::MaxForwards, "70")
        .push(HeaderName::From, inv.header(&HeaderName::From).unwrap())
        .push(HeaderName::To, ok.header(&HeaderName::To).unwrap())
        .push(HeaderName::CallId, call_id)
        .push(HeaderName::CSeq, format!("{cseq} {method}"));
        if let Some((ct, text)) = body {
            b.push(HeaderName::ContentType, ct);
            b.body = Bytes::from(text.to_owned());
        }
        let from = self.carrier_addr;
        self.send_to_dce(from, b.print());
    }

    /// A buyer sends an in-dialog request (INFO, UPDATE …) on its leg of a call.
    pub fn buyer_in_dialog(&mut self, port: u16, b_call_id: &str, method: Method) {
        self.buyer_request(port, b_call_id, method, None, None);
    }

    /// A request in buyer `port`'s dialog of `b_call_id`, sent from `from` (the buyer itself
    /// when `None`), with an optional SDP body.
    pub fn buyer_request(
        &mut self,
        port: u16,
        b_call_id: &str,
        method: Method,
        from: Option<SocketAddr>,
        sdp: Option<&str>,
    ) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let c = self.buyers[&addr].calls[b_call_id].clone();
        let n = self.next_id();
        let target = c
            .invite
            .contact()
            .map(|x| x.uri.raw.clone())
            .unwrap_or_default();
        let src = from.unwrap_or(addr);
        let mut b = MessageBuf::request(method.clone(), target);
        b.push(
            HeaderName::Via,
            format!("SIP/2.0/UDP {src};branch=z9hG4bKbr{n};rport"),
        )
        .push(HeaderName::MaxForwards, "70")
        .push(
            HeaderName::From,
            format!(
                "{};tag={}",
                c.invite.header(&HeaderName::To).unwrap(),
                c.tag
            ),
        )
        .push(HeaderName::To, c.invite.header(&HeaderName::From).unwrap())
        .push(HeaderName::CallId, b_call_id)
        .push(HeaderName::CSeq, format!("{} {method}", 100 + n))
        .push(HeaderName::Contact, format!("<sip:buyer@{src}>"));
        if let Some(sdp) = sdp {
            b.push(HeaderName::ContentType, "application/sdp");
            b.body = Bytes::from(sdp.to_owned());
        }
        self.send_to_dce(src, b.print());
    }

    /// A request from the carrier in the dialog DCE's response `code` to `call_id` set up
    /// (180: the early dialog; 200: the confirmed one), sent from `from` (the carrier when
    /// `None`).
    pub fn carrier_request(
        &mut self,
        call_id: &str,
        code: u16,
        method: Method,
        from: Option<SocketAddr>,
    ) {
        let resp = self.carrier[call_id]
            .responses
            .iter()
            .find(|r| r.code() == Some(code))
            .cloned()
            .expect("that response");
        let inv = self.invites[call_id].clone();
        let target = resp
            .contact()
            .map(|c| c.uri.raw.clone())
            .unwrap_or_default();
        let n = self.next_id();
        let src = from.unwrap_or(self.carrier_addr);
        let mut b = MessageBuf::request(method.clone(), target);
        b.push(
            HeaderName::Via,
            format!("SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKcr{n};rport"),
        )
        .push(HeaderName::MaxForwards, "70")
        .push(HeaderName::From, inv.header(&HeaderName::From).unwrap())
        .push(HeaderName::To, resp.header(&HeaderName::To).unwrap())
        .push(HeaderName::CallId, call_id)
        .push(HeaderName::CSeq, format!("{} {method}", 2 + n));
        self.send_to_dce(src, b.print());
    }

    /// Responses buyers received (to their own in-dialog requests), by buyer port.
    pub fn buyer_responses(&self) -> &Vec<(u16, Message)> {
        &self.buyer_responses
    }

    /// Shut DCE down now (end every call).
    pub fn shutdown(&mut self) {
        self.core.handle_input(dce::edge::Input::Shutdown, self.now);
        self.collect();
    }

    /// The relay reports no RTP on the call with media `id`.
    pub fn rtp_timeout(&mut self, id: dce_media::MediaId) {
        self.core.handle_input(
            dce::edge::Input::Media(dce_media::MediaEvent::Timeout { id }),
            self.now,
        );
        self.collect();
    }

    /// The carrier hangs up an answered call.
    pub fn carrier_bye(&mut self, call_id: &str) {
        let ok = self.carrier[call_id]
            .responses
            .iter()
            .find(|r| r.code() == Some(200))
            .cloned()
            .expect("answered");
        let inv = self.invites[call_id].clone();
        let target = ok.contact().map(|c| c.uri.raw.clone()).unwrap_or_default();
        let n = self.next_id();
        let mut b = MessageBuf::request(Method::Bye, target);
        b.push(
            HeaderName::Via,
            format!("SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKcb{n};rport"),
        )
        .push(HeaderName::MaxForwards, "70")
        .push(HeaderName::From, inv.header(&HeaderName::From).unwrap())
        .push(HeaderName::To, ok.header(&HeaderName::To).unwrap())
        .push(HeaderName::CallId, call_id)
        .push(HeaderName::CSeq, "2 BYE");
        let from = self.carrier_addr;
        self.send_to_dce(from, b.print());
    }

    /// Schedule the carrier's BYE `after` from now.
    pub fn carrier_bye_after(&mut self, call_id: &str, after: Duration) {
        self.scheduled.push((
            self.now + after,
            Action::CarrierBye {
                call_id: call_id.into(),
            },
        ));
    }

    /// Schedule a buyer's BYE for the call it has with `dce_call_id`'s leg `after` from now.
    pub fn buyer_bye_after(&mut self, port: u16, b_call_id: &str, after: Duration) {
        let buyer = SocketAddr::from(([127, 0, 0, 1], port));
        self.scheduled.push((
            self.now + after,
            Action::BuyerBye {
                buyer,
                call_id: b_call_id.into(),
            },
        ));
    }

    fn carrier_receives(&mut self, bytes: Bytes) {
        let msg = match parse(bytes.clone()) {
            Ok(m) => m,
            // The answer to a request that was itself malformed (no Call-ID, say) cannot be
            // whole; it must still be a 400/505 answer. Anything else DCE sends must parse.
            Err(_) if bytes.starts_with(b"SIP/2.0 400 ") || bytes.starts_with(b"SIP/2.0 505 ") => {
                self.malformed_answers += 1;
                return;
            }
            Err(e) => panic!("DCE sends parseable messages to the carrier: {e:?}"),
        };
        let call_id = msg.call_id().to_owned();
        if msg.is_request() {
            // BYE from DCE: answer 200.
            let resp = msg.response(200, "OK", "", None);
            let is_ack = msg.method() == Some(&Method::Ack);
            if let Some(c) = self.carrier.get_mut(&call_id) {
                c.requests.push(msg.clone());
            }
            if !is_ack {
                let from = self.carrier_addr;
                self.send_to_dce(from, resp.print());
            }
            return;
        }
        let Some(call) = self.carrier.get_mut(&call_id) else {
            return;
        };
        if msg.cseq_method() != &Method::Invite {
            call.other_responses.push(msg);
            return;
        }
        let code = msg.code().unwrap_or(0);
        let first_2xx =
            (200..300).contains(&code) && !call.responses.iter().any(|r| r.code() == Some(code));
        let retransmitted = code >= 300 && call.responses.iter().any(|r| r.code() == Some(code));
        if !retransmitted {
            call.responses.push(msg.clone());
        }
        if code >= 300 {
            // ACK a non-2xx final inside the INVITE transaction (same branch, §17.1.1.3).
            let inv = self.invites[&call_id].clone();
            let mut ack = MessageBuf::request(Method::Ack, "sip:+18005550100@127.0.0.1:5060");
            ack.push(HeaderName::Via, inv.header(&HeaderName::Via).unwrap())
                .push(HeaderName::MaxForwards, "70")
                .push(HeaderName::From, inv.header(&HeaderName::From).unwrap())
                .push(HeaderName::To, msg.header(&HeaderName::To).unwrap())
                .push(HeaderName::CallId, call_id.clone())
                .push(HeaderName::CSeq, "1 ACK");
            let from = self.carrier_addr;
            self.send_to_dce(from, ack.print());
            return;
        }
        if first_2xx {
            // ACK the 2xx (a new transaction to the Contact).
            let inv = self.invites[&call_id].clone();
            let target = msg.contact().map(|c| c.uri.raw.clone()).unwrap_or_default();
            let n = self.next_id();
            let mut ack = MessageBuf::request(Method::Ack, target);
            ack.push(
                HeaderName::Via,
                format!("SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKca{n};rport"),
            )
            .push(HeaderName::MaxForwards, "70")
            .push(HeaderName::From, inv.header(&HeaderName::From).unwrap())
            .push(HeaderName::To, msg.header(&HeaderName::To).unwrap())
            .push(HeaderName::CallId, call_id.clone())
            .push(HeaderName::CSeq, "1 ACK");
            if inv.body.is_empty() {
                ack.push(HeaderName::ContentType, "application/sdp");
                ack.body = Bytes::from(SDP.replace("40000", "41000"));
            }
            let from = self.carrier_addr;
            self.send_to_dce(from, ack.print());
        }
    }

    fn buyer_receives(&mut self, addr: SocketAddr, bytes: Bytes) {
        let msg = match parse(bytes.clone()) {
            Ok(m) => m,
            // The answer to a request that was itself malformed (no Call-ID, say) cannot be
            // whole; it must still be a 400/505 answer. Anything else DCE sends must parse.
            Err(_) if bytes.starts_with(b"SIP/2.0 400 ") || bytes.starts_with(b"SIP/2.0 505 ") => {
                self.malformed_answers += 1;
                return;
            }
            Err(e) => panic!("DCE sends parseable messages to buyers: {e:?}"),
        };
        let Some(buyer) = self.buyers.get_mut(&addr) else {
            self.strangers.push((addr, msg));
            return;
        };
        let call_id = msg.call_id().to_owned();
        if !msg.is_request() {
            if msg.cseq_method() == &Method::Invite && (200..300).contains(&msg.code().unwrap_or(0))
            {
                // 2xx to the buyer's re-INVITE: ACK it
                let n = self.seq + 1000;
                let target = msg.contact().map(|c| c.uri.raw.clone()).unwrap_or_default();
                let mut ack = MessageBuf::request(Method::Ack, target);
                ack.push(
                    HeaderName::Via,
                    format!("SIP/2.0/UDP {addr};branch=z9hG4bKba{n};rport"),
                )
                .push(HeaderName::MaxForwards, "70")
                .push(HeaderName::From, msg.header(&HeaderName::From).unwrap())
                .push(HeaderName::To, msg.header(&HeaderName::To).unwrap())
                .push(HeaderName::CallId, msg.call_id())
                .push(HeaderName::CSeq, format!("{} ACK", msg.cseq()));
                self.buyer_responses.push((addr.port(), msg));
                self.send_to_dce(addr, ack.print());
                return;
            }
            self.buyer_responses.push((addr.port(), msg));
            return;
        }
        let method = msg.method().cloned().unwrap();
        let mut replies = Vec::new();
        match method {
            Method::Invite if !buyer.calls.contains_key(&call_id) => {
                let tag = format!("bt{}", addr.port());
                buyer.calls.insert(
                    call_id.clone(),
                    BuyerCall {
                        invite: msg.clone(),
                        tag: tag.clone(),
                        requests: Vec::new(),
                    },
                );
                let mode = buyer.mode;
                if mode != Mode::Silent {
                    let mut ringing = msg.response(180, "Ringing", &tag, None);
                    ringing.push(HeaderName::Contact, format!("<sip:buyer@{addr}>"));
                    replies.push(ringing.print());
                }
                match mode {
                    Mode::Answer(d) => self.scheduled.push((
                        self.now + d,
                        Action::BuyerAnswer {
                            buyer: addr,
                            call_id,
                        },
                    )),
                    Mode::Reject(code) => {
                        replies.push(msg.response(code, "Nope", &tag, None).print())
                    }
                    Mode::Ring | Mode::Silent => {}
                }
            }
            Method::Invite if msg.to().tag().is_none() => {} // a retransmission
            Method::Invite => {
                // re-INVITE: accept with our SDP
                if let Some(c) = buyer.calls.get_mut(&call_id) {
                    c.requests.push(msg.clone());
                    let mut ok = msg.response(200, "OK", "", None);
                    ok.push(HeaderName::Contact, format!("<sip:buyer@{addr}>"))
                        .push(HeaderName::ContentType, "application/sdp");
                    ok.body = Bytes::from_static(SDP.as_bytes());
                    replies.push(ok.print());
                }
            }
            Method::Cancel => {
                if let Some(c) = buyer.calls.get_mut(&call_id) {
                    c.requests.push(msg.clone());
                    let answered = c.requests.iter().any(|r| r.method() == Some(&Method::Ack));
                    replies.push(msg.response(200, "OK", &c.tag, None).print());
                    if !answered {
                        replies.push(
                            c.invite
                                .response(487, "Request Terminated", &c.tag, None)
                                .print(),
                        );
                    }
                }
            }
            Method::Ack => {
                if let Some(c) = buyer.calls.get_mut(&call_id) {
                    c.requests.push(msg.clone());
                }
            }
            Method::Options if !buyer.calls.contains_key(&call_id) => {
                buyer.options += 1;
                if buyer.mode != Mode::Silent {
                    replies.push(msg.response(200, "OK", "", None).print());
                }
            }
            _ => {
                if let Some(c) = buyer.calls.get_mut(&call_id) {
                    c.requests.push(msg.clone());
                }
                replies.push(msg.response(200, "OK", "", None).print());
            }
        }
        for r in replies {
            self.send_to_dce(addr, r);
        }
    }

    fn run_action(&mut self, a: Action) {
        match a {
            Action::BuyerAnswer { buyer, call_id } => {
                let Some(c) = self
                    .buyers
                    .get(&buyer)
                    .and_then(|b| b.calls.get(&call_id))
                    .cloned()
                else {
                    return;
                };
                if c.requests
                    .iter()
                    .any(|r| r.method() == Some(&Method::Cancel))
                {
                    return;
                }
                let mut ok = c.invite.response(200, "OK", &c.tag, None);
                ok.push(HeaderName::Contact, format!("<sip:buyer@{buyer}>"))
                    .push(HeaderName::ContentType, "application/sdp");
                ok.body = Bytes::from_static(SDP.as_bytes());
                self.send_to_dce(buyer, ok.print());
            }
            Action::BuyerBye { buyer, call_id } => {
                let Some(c) = self
                    .buyers
                    .get(&buyer)
                    .and_then(|b| b.calls.get(&call_id))
                    .cloned()
                else {
                    return;
                };
                let n = self.next_id();
                let target = c
                    .invite
                    .contact()
                    .map(|x| x.uri.raw.clone())
                    .unwrap_or_default();
                let mut b = MessageBuf::request(Method::Bye, target);
                b.push(
                    HeaderName::Via,
                    format!("SIP/2.0/UDP {buyer};branch=z9hG4bKbb{n};rport"),
                )
                .push(HeaderName::MaxForwards, "70")
                .push(
                    HeaderName::From,
                    format!(
                        "{};tag={}",
                        c.invite.header(&HeaderName::To).unwrap(),
                        c.tag
                    ),
                )
                .push(HeaderName::To, c.invite.header(&HeaderName::From).unwrap())
                .push(HeaderName::CallId, call_id)
                .push(HeaderName::CSeq, "1 BYE");
                self.send_to_dce(buyer, b.print());
            }
            Action::CarrierBye { call_id } => {
                let answered = self.carrier[&call_id]
                    .responses
                    .iter()
                    .any(|r| r.code() == Some(200));
                if answered {
                    self.carrier_bye(&call_id);
                }
            }
        }
    }

    /// Deliver everything and advance time until nothing is due before `until` from now.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            while let Some((to, bytes)) = self.inbox.pop_front() {
                if std::env::var("SIM_TRACE").is_ok() {
                    eprintln!(
                        "-> {to}: {}",
                        String::from_utf8_lossy(&bytes).lines().next().unwrap_or("")
                    );
                }
                assert!(to.ip().is_loopback(), "DCE sent to {to}");
                if to == self.carrier_addr || to.port() == 5070 {
                    self.carrier_receives(bytes);
                } else {
                    self.buyer_receives(to, bytes);
                }
            }
            let next_action = self.scheduled.iter().map(|(t, _)| *t).min();
            let next = [self.core.poll_timeout(), next_action]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.advance_to(t);
                    if let Some(i) = self.scheduled.iter().position(|(at, _)| *at <= self.now) {
                        let (_, a) = self.scheduled.remove(i);
                        self.run_action(a);
                    }
                    self.core.handle_timeout(self.now);
                    self.collect();
                }
                _ => {
                    self.advance_to(end);
                    return;
                }
            }
        }
    }

    fn advance_to(&mut self, t: Instant) {
        if t > self.now {
            let dt = t - self.now;
            self.now = t;
            let wall = self.clock.now_utc_plus(dt);
            self.clock.set(wall);
        }
    }

    /// CDRs so far.
    pub fn cdrs(&self) -> Vec<Cdr> {
        self.cdrs.0.lock().unwrap().clone()
    }

    /// Final status codes the carrier got for a call.
    pub fn finals(&self, call_id: &str) -> Vec<u16> {
        self.carrier[call_id]
            .responses
            .iter()
            .filter_map(|r| r.code())
            .filter(|c| *c >= 200)
            .collect()
    }

    /// Every code the carrier got for a call's INVITE.
    pub fn codes(&self, call_id: &str) -> Vec<u16> {
        self.carrier[call_id]
            .responses
            .iter()
            .filter_map(|r| r.code())
            .collect()
    }
}

/// Extension: move a fixed clock forward.
pub trait ClockExt {
    /// Now plus `d`.
    fn now_utc_plus(&self, d: Duration) -> chrono::DateTime<Utc>;
}

impl ClockExt for FixedClock {
    fn now_utc_plus(&self, d: Duration) -> chrono::DateTime<Utc> {
        use dce::clock::Clock;
        self.now_utc() + chrono::Duration::from_std(d).unwrap_or_default()
    }
}

/// Every scenario ends with the leak check: time runs past every SIP timer (Timer B/F/H/J/K/L/M
/// are at most 64·T1), calls still up are ended (shutdown), and then DCE must hold nothing —
/// no transaction, call, router entry, timer, media session or concurrency slot.
impl Drop for Sim {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        self.run_for(Duration::from_secs(70));
        if self.core.calls().active_calls() > 0 {
            self.shutdown();
        }
        // Legs abandoned late in the first stretch still wait for their Timer B.
        self.run_for(Duration::from_secs(70));
        self.assert_nothing_held();
    }
}
