//! The B2BUA call controller: one carrier leg (A), buyer legs (B) tried in auction order, both
//! legs mirrored, every call ending in exactly one CDR. Sans-IO: the transaction layer is
//! passed in, time is passed in, sends are queued.

use super::carrier::Carriers;
use super::cdr::{BidRecord, Cdr, CdrSink, Quality};
use super::leg::{ack_for_2xx, cancel_for, contact_uri, route_set, Dialog, Me};
use super::{Compliance, Verdict};
use crate::clock::Clock;
use crate::config::routing::target_of;
use crate::config::CarrierConfig;
use crate::counters::{Counter, Counters};
use crate::ids;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use dce_media::{MediaEngine, MediaEvent, MediaId};
use dce_routing::{
    auction, local_keys, normalize, state_of_number, BuyerLive, CampaignId, Entry, Live, Outcome,
    Snapshot,
};
use dce_sip::build::reason_phrase;
use dce_sip::transaction::{Peer, State as TxState, TransactionLayer, Transmit, Transport, TxId};
use dce_sip::{HeaderName, Message, MessageBuf, Method};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings the controller runs with (from `[node]` and `[sip]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node id for CDRs.
    pub node_id: String,
    /// Advertised host and UDP port.
    pub me: Me,
    /// How long one buyer may ring.
    pub ring_timeout: Duration,
    /// Buyers tried per call.
    pub max_attempts: u32,
    /// RFC 3261 T1 (2xx retransmission).
    pub t1: Duration,
    /// Calls at once before new ones get 503.
    pub max_calls: usize,
    /// UDP socket index buyer legs leave from.
    pub udp_socket: u64,
    /// The address DCE puts in SDP `c=` lines.
    pub media_ip: IpAddr,
}

/// A message body to send: content type and bytes.
type Body = Option<(String, Bytes)>;

fn push_body(m: &mut MessageBuf, body: Body) {
    if let Some((ct, b)) = body {
        m.push(HeaderName::ContentType, ct);
        m.body = b;
    }
}

fn media_side(s: Side) -> dce_media::Side {
    match s {
        Side::A => dce_media::Side::A,
        Side::B => dce_media::Side::B,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    A,
    B,
}

#[derive(Debug)]
enum Role {
    /// An INVITE to a buyer: index into the call's legs.
    Invite(usize),
    /// A BYE or CANCEL we sent; its answer needs nothing.
    Fire,
    /// A request relayed from the other side: answer the server transaction with the response.
    Relay {
        server_tx: TxId,
        req: Box<Message>,
        via: String,
        side: Side,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Buyers are being tried.
    Ringing,
    /// A buyer answered; the carrier has our 2xx but has not ACKed it.
    Answered,
    /// Both legs up.
    Connected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Ring(usize),
    Retransmit2xx(Side),
    MaxDuration,
}

/// A 2xx we sent to an INVITE, retransmitted until its ACK (§13.3.1.4).
#[derive(Debug)]
struct Pending2xx {
    bytes: Bytes,
    peer: Peer,
    interval: Duration,
    next: Instant,
    give_up: Instant,
}

#[derive(Debug)]
struct ALeg {
    tx: TxId,
    invite: Message,
    via: String,
    peer: Peer,
    tag: String,
    dialog: Dialog,
}

#[derive(Debug)]
struct BLeg {
    entry: usize,
    tx: TxId,
    invite: MessageBuf,
    peer: Peer,
    dialog: Dialog,
    slot: Option<Arc<BuyerLive>>,
    provisional: bool,
    cancel_pending: bool,
    answered: bool,
    /// Abandoned (ring timeout, carrier cancel, another buyer won): a late 2xx is ACKed and
    /// hung up.
    abandoned: bool,
}

struct Call {
    id: String,
    snapshot: Arc<Snapshot>,
    carrier: String,
    campaign: CampaignId,
    caller: String,
    called: String,
    a: ALeg,
    legs: Vec<BLeg>,
    current: Option<usize>,
    entries: Vec<Entry>,
    outcomes: Vec<Option<String>>,
    next: usize,
    attempts: u32,
    state: CallState,
    t0: Instant,
    wall0: DateTime<Utc>,
    answered_at: Option<Instant>,
    winner: Option<usize>,
    carrier_code: u16,
    buyer_code: Option<u16>,
    ring_deadline: Option<(usize, Instant)>,
    max_deadline: Option<Instant>,
    pending: [Option<Pending2xx>; 2],
    cancelled: bool,
    /// The call's media in the relay.
    media: Option<MediaId>,
    /// The carrier's offer rewritten for buyers (every attempt gets it).
    offer_b: Body,
    /// Late offer: the ACK for the buyer's 2xx waits for the carrier's ACK with the answer.
    held_b_ack: Option<(Dialog, Peer)>,
    /// The compliance verdict (`pass:<checks>`).
    compliance: String,
}

/// The call controller. See the module docs.
pub struct Controller {
    settings: Settings,
    snapshot: Arc<Snapshot>,
    live: Arc<Live>,
    carriers: Carriers,
    compliance: Box<dyn Compliance>,
    calls: HashMap<u64, Call>,
    next_key: u64,
    by_a_tx: HashMap<TxId, u64>,
    by_client_tx: HashMap<TxId, (u64, Role)>,
    by_dialog: HashMap<(String, String), (u64, Side)>,
    /// Legs of calls that are gone, still waiting for their INVITE to finish.
    orphans: HashMap<TxId, BLeg>,
    timers: Timers,
    out: VecDeque<Transmit>,
    cdr: Box<dyn CdrSink>,
    clock: Arc<dyn Clock>,
    counters: Arc<Counters>,
    scratch: Vec<Entry>,
    accepting: bool,
    media: Box<dyn MediaEngine>,
    by_media: HashMap<MediaId, u64>,
    /// CDRs of ended calls waiting for their media report.
    awaiting_media: HashMap<MediaId, PendingCdr>,
    /// Fleet-wide checks (Redis), when configured.
    shared: Option<SharedChecks>,
    remote_out: VecDeque<RemoteCheck>,
    pending_checks: HashMap<u64, PendingInvite>,
    pending_by_tx: HashMap<TxId, u64>,
    /// Live events for the API's WebSocket.
    events: crate::events::Bus,
}

/// How the fleet-wide checks are run.
#[derive(Debug, Clone, Copy)]
pub struct SharedChecks {
    /// Calls per number per campaign per 24 h across the fleet; 0 = off.
    pub max_calls_per_day: u32,
    /// `on_lookup_error = "allow_and_flag"`.
    pub allow_on_error: bool,
}

/// A fleet-wide check for the driver to run against Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCheck {
    /// Hand this back with the result.
    pub token: u64,
    /// Caller, E.164 digits.
    pub caller: String,
    /// Campaign id.
    pub campaign: String,
    /// Look the caller up in the shared internal DNC.
    pub check_dnc: bool,
    /// Count the call against this cap (0 = do not count).
    pub max_calls_per_day: u32,
}

/// What Redis said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteResult {
    /// The caller is on the shared internal DNC.
    Listed,
    /// Calls counted for this number and campaign in the window, this one included.
    Count(i64),
    /// Redis failed or missed the deadline.
    Error(String),
}

/// An INVITE waiting for its fleet-wide verdict.
struct PendingInvite {
    tx: TxId,
    msg: Message,
    from: Peer,
    via: String,
    facts: RejectFacts,
    admitted: Admitted,
    max: u32,
}

/// A finished call's CDR, completed when its media report arrives.
struct PendingCdr {
    cdr: Cdr,
    bill_one_way_audio: bool,
    /// The winner's counters and the local day its bid was committed to, for a refund.
    refund: Option<(Arc<BuyerLive>, u32)>,
}

type Timers = BinaryHeap<Reverse<(Instant, u64, u8, usize)>>;

fn arm(timers: &mut Timers, key: u64, t: Timer, at: Instant) {
    let (c, i) = timer_code(t);
    timers.push(Reverse((at, key, c, i)));
}

fn timer_code(t: Timer) -> (u8, usize) {
    match t {
        Timer::Ring(i) => (0, i),
        Timer::Retransmit2xx(Side::A) => (1, 0),
        Timer::Retransmit2xx(Side::B) => (1, 1),
        Timer::MaxDuration => (2, 0),
    }
}

fn timer_decode(c: u8, i: usize) -> Timer {
    match (c, i) {
        (0, i) => Timer::Ring(i),
        (1, 0) => Timer::Retransmit2xx(Side::A),
        (1, _) => Timer::Retransmit2xx(Side::B),
        _ => Timer::MaxDuration,
    }
}

/// The user part of a URI inside a header value (`"x" <sip:user@host>;tag=…`).
fn user_of(value: &str) -> Option<String> {
    let na = dce_sip::NameAddr::parse(value).ok()?;
    na.uri.user().map(dce_sip::uri::unescape)
}

impl Controller {
    /// A controller over `snapshot`, counting into `counters`, writing CDRs to `cdr`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        snapshot: Arc<Snapshot>,
        live: Arc<Live>,
        carriers: &[CarrierConfig],
        compliance: Box<dyn Compliance>,
        cdr: Box<dyn CdrSink>,
        clock: Arc<dyn Clock>,
        counters: Arc<Counters>,
        media: Box<dyn MediaEngine>,
    ) -> Self {
        Controller {
            settings,
            snapshot,
            live,
            carriers: Carriers::new(carriers, None),
            compliance,
            calls: HashMap::new(),
            next_key: 1,
            by_a_tx: HashMap::new(),
            by_client_tx: HashMap::new(),
            by_dialog: HashMap::new(),
            orphans: HashMap::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            cdr,
            clock,
            counters,
            scratch: Vec::new(),
            accepting: true,
            media,
            by_media: HashMap::new(),
            awaiting_media: HashMap::new(),
            shared: None,
            remote_out: VecDeque::new(),
            pending_checks: HashMap::new(),
            pending_by_tx: HashMap::new(),
            events: crate::events::Bus::default(),
        }
    }

    /// The id of call `key` for a log line (empty once it is gone).
    fn call_id(&self, key: u64) -> String {
        self.calls
            .get(&key)
            .map(|c| c.id.clone())
            .unwrap_or_default()
    }

    /// Publish live events on `bus`.
    pub fn set_events(&mut self, bus: crate::events::Bus) {
        self.events = bus;
    }

    /// The SDP-aware body to send on the other leg for `msg`, which came from `from`: SDP is
    /// rewritten to DCE's ports facing the other side (opening the call's media on the first
    /// SDP) and what `from` announced goes to the relay; other bodies pass as they are.
    /// `Err` when the SDP is unusable or no ports are left.
    fn body_for_other_side(
        &mut self,
        key: u64,
        from: Side,
        msg: &Message,
    ) -> Result<Body, dce_media::MediaError> {
        if msg.body().is_empty() {
            return Ok(None);
        }
        let ct = msg.content_type().unwrap_or("application/sdp").to_owned();
        if !ct.to_ascii_lowercase().starts_with("application/sdp") {
            return Ok(Some((ct, msg.body().clone())));
        }
        let streams = dce_media::inspect(msg.body())
            .map_err(|e| dce_media::MediaError::Bind(e.to_string()))?;
        let Some(call) = self.calls.get_mut(&key) else {
            return Ok(None);
        };
        let id = match call.media {
            Some(id) => id,
            None => {
                let id = self.media.open(streams.len())?;
                call.media = Some(id);
                self.by_media.insert(id, key);
                id
            }
        };
        let other = if from == Side::A { Side::B } else { Side::A };
        let ports = self.media.ports(id, media_side(other));
        let (body, announced) = dce_media::rewrite(msg.body(), self.settings.media_ip, &ports)
            .map_err(|e| dce_media::MediaError::Bind(e.to_string()))?;
        self.media.set_remote(id, media_side(from), &announced);
        Ok(Some(("application/sdp".into(), body)))
    }

    /// Swap in a new snapshot and carrier list (reload). Calls in progress keep theirs.
    pub fn reload(&mut self, snapshot: Arc<Snapshot>, carriers: &[CarrierConfig]) {
        // Bid overrides last until the next reload; pauses stay (operational state).
        self.live.clear_bid_overrides();
        self.snapshot = snapshot;
        self.carriers = Carriers::new(carriers, Some(&self.carriers));
    }

    /// Run the fleet-wide checks through the driver (Redis configured).
    pub fn set_shared(&mut self, shared: Option<SharedChecks>) {
        self.shared = shared;
    }

    /// Stop taking new calls (they get 503).
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Ended calls whose CDR waits for the media report.
    pub fn pending_cdrs(&self) -> usize {
        self.awaiting_media.len()
    }

    /// Write every CDR still waiting for its media report, without it (shutdown).
    pub fn flush_cdrs(&mut self) {
        for (_, p) in self.awaiting_media.drain() {
            tracing::warn!(call = %p.cdr.id, "CDR written without its media report (shutdown)");
            self.cdr.emit(p.cdr);
        }
    }

    /// The live counters.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Next stateless send (ACK for 2xx, 2xx retransmissions).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// When [`Controller::handle_timeout`] must run.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key, c, i))) = self.timers.peek().copied() {
            if self.timer_live(key, timer_decode(c, i), at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    fn timer_live(&self, key: u64, t: Timer, at: Instant) -> bool {
        let Some(call) = self.calls.get(&key) else {
            return false;
        };
        match t {
            Timer::Ring(i) => call.ring_deadline == Some((i, at)),
            Timer::Retransmit2xx(s) => call.pending[s as usize]
                .as_ref()
                .is_some_and(|p| p.next == at || p.give_up == at),
            Timer::MaxDuration => call.max_deadline == Some(at),
        }
    }

    /// True when `msg` (a request, not ACK) belongs to one of DCE's dialogs.
    pub fn owns_dialog(&self, msg: &Message) -> bool {
        msg.to().tag().is_some_and(|t| {
            self.by_dialog
                .contains_key(&(msg.call_id().to_owned(), t.to_owned()))
        })
    }

    fn respond_a(
        &mut self,
        layer: &mut TransactionLayer,
        key: u64,
        code: u16,
        body: Body,
        now: Instant,
    ) {
        let me = self.settings.me.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let mut resp =
            call.a
                .invite
                .response(code, reason_phrase(code), &call.a.tag, Some(&call.a.via));
        if (101..300).contains(&code) {
            resp.push(HeaderName::Contact, me.contact());
        }
        push_body(&mut resp, body);
        call.carrier_code = code;
        if (200..300).contains(&code) {
            let bytes = resp.print();
            call.pending[Side::A as usize] = Some(Pending2xx {
                bytes,
                peer: call.a.peer,
                interval: self.settings.t1,
                next: now + self.settings.t1,
                give_up: now + self.settings.t1 * 64,
            });
            let (next, give_up) = (now + self.settings.t1, now + self.settings.t1 * 64);
            if let Err(e) = layer.respond(call.a.tx, &resp, now) {
                tracing::warn!(call = %call.id, error = %e, "2xx to carrier not sent");
            }
            if !call.a.peer.reliable() {
                arm(&mut self.timers, key, Timer::Retransmit2xx(Side::A), next);
            }
            arm(
                &mut self.timers,
                key,
                Timer::Retransmit2xx(Side::A),
                give_up,
            );
        } else if let Err(e) = layer.respond(call.a.tx, &resp, now) {
            tracing::warn!(call = %call.id, error = %e, code, "response to carrier not sent");
        }
    }

    /// Reject an INVITE before a call exists, with a CDR.
    fn reject(
        &mut self,
        layer: &mut TransactionLayer,
        inv: &Incoming<'_>,
        r: Rejection,
        facts: RejectFacts,
    ) {
        self.counters.inc(r.counter);
        let mut resp = inv
            .msg
            .response(r.code, reason_phrase(r.code), &ids::tag(), Some(inv.via));
        resp.headers.extend(r.extra);
        let id = ids::uuid();
        if let Err(e) = layer.respond(inv.tx, &resp, inv.now) {
            tracing::warn!(call = %id, error = %e, code = r.code, "rejection not sent");
        }
        let wall = self.clock.now_utc();
        let compliance = facts.compliance_or_pass();
        tracing::info!(call = %id, carrier_call_id = %inv.msg.call_id(), code = r.code, reason = facts.reason, "call rejected");
        self.counters.m.call_outcome("rejected");
        if let Some(rule) = compliance.strip_prefix("reject:") {
            self.counters.m.compliance_rejection(rule);
        }
        let bidders = || facts.bids.iter().map(|b| b.buyer_id.clone()).collect();
        if !facts.bids.is_empty() {
            self.events
                .emit("auction.completed", &facts.campaign, bidders, || {
                    serde_json::json!({
                        "call_id": id,
                        "bids": bids_json(&facts.bids),
                        "winner": null,
                    })
                });
        }
        self.events
            .emit("call.rejected", &facts.campaign, bidders, || {
                serde_json::json!({
                    "call_id": id,
                    "carrier": facts.carrier,
                    "caller": crate::logging::num(&facts.caller),
                    "called": facts.called,
                    "code": r.code,
                    "reason": facts.reason,
                    "compliance": compliance,
                })
            });
        self.cdr.emit(Cdr {
            id,
            node_id: self.settings.node_id.clone(),
            disposition: "rejected".into(),
            carrier: facts.carrier,
            campaign: facts.campaign,
            caller: facts.caller,
            called: facts.called,
            carrier_call_id: inv.msg.call_id().to_owned(),
            buyer_id: None,
            bid_cents: 0,
            payout_cents: 0,
            billable: false,
            compliance,
            bids: facts.bids,
            invite_at: wall.to_rfc3339(),
            answer_at: None,
            end_at: wall.to_rfc3339(),
            duration_s: 0.0,
            hangup_by: None,
            reason: facts.reason.to_owned(),
            carrier_code: r.code,
            buyer_code: None,
            quality: None,
        });
    }

    /// The admission steps of "Life of a call" up to the auction: overload, carrier, rate,
    /// campaign, compliance, eligible buyers. Fills `facts` as it goes.
    fn admit(
        &mut self,
        from: Peer,
        now: Instant,
        facts: &mut RejectFacts,
    ) -> Result<Admitted, Rejection> {
        if !self.accepting || self.calls.len() >= self.settings.max_calls {
            facts.reason = if self.accepting {
                "overloaded"
            } else {
                "shutting down"
            };
            return Err(Rejection::new(503, Counter::Overload503).with(HeaderName::RetryAfter, "5"));
        }
        let ident = self
            .carriers
            .identify(from.addr.ip())
            .map(|(c, lim)| (c.id.clone(), lim.admit(now)));
        let Some((carrier, admitted)) = ident else {
            facts.reason = "unknown source";
            return Err(Rejection::new(403, Counter::Invite403));
        };
        facts.carrier = carrier;
        if !admitted {
            facts.reason = "carrier over max_cps";
            return Err(
                Rejection::new(503, Counter::CarrierCps503).with(HeaderName::RetryAfter, "1")
            );
        }
        let snapshot = self.snapshot.clone();
        let Some(campaign) = snapshot.campaign_for(&facts.called) else {
            facts.reason = "no campaign for the dialled number";
            return Err(Rejection::new(404, Counter::NoCampaign404));
        };
        facts.campaign = snapshot.campaign(campaign).id.clone();
        let wall = self.clock.now_utc();
        let state = state_of_number(&facts.caller);
        let c = snapshot.campaign(campaign);
        let verdict = self.compliance.check(&super::CallFacts {
            caller: &facts.caller,
            called: &facts.called,
            campaign: &facts.campaign,
            state: state.map(|s| s.code()),
            rules: dce_compliance::CampaignRules {
                dnc: c.dnc,
                tcpa_hours: c.tcpa_hours,
                require_consent: c.require_consent,
            },
            now: wall,
        });
        match verdict {
            Verdict::Reject(rule) => {
                let rule = rule.as_str();
                facts.compliance = format!("reject:{rule}");
                facts.reason = "compliance";
                let reason = format!("SIP;cause=603;text=\"{rule}\"");
                return Err(
                    Rejection::new(603, Counter::Compliance603).with(HeaderName::Reason, &reason)
                );
            }
            Verdict::Allow { ran } => {
                facts.compliance = if ran.is_empty() {
                    "pass".into()
                } else {
                    format!("pass:{}", ran.join(","))
                };
            }
        }
        let started = Instant::now();
        let ranked = auction(
            &snapshot,
            campaign,
            state_of_number(&facts.caller),
            wall,
            &mut self.scratch,
        );
        self.counters.m.auction(started.elapsed());
        let entries = self.scratch.clone();
        if ranked == 0 {
            facts.bids = bid_records(&snapshot, &entries, &[]);
            facts.reason = "no eligible buyer";
            return Err(Rejection::new(480, Counter::NoBuyer480));
        }
        Ok(Admitted {
            snapshot,
            campaign,
            entries,
            ranked,
            wall,
        })
    }

    /// A new INVITE (outside any dialog) passed the edge checks.
    pub fn on_invite(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: Message,
        from: Peer,
        via: String,
        now: Instant,
    ) {
        let ruri_user = msg
            .request_uri()
            .and_then(|u| u.user())
            .map(dce_sip::uri::unescape)
            .unwrap_or_default();
        let called = normalize(&ruri_user).unwrap_or(ruri_user);
        self.counters.m.call_offered();
        let caller_raw = msg
            .header(&HeaderName::PAssertedIdentity)
            .and_then(|v| {
                dce_sip::scan::split_outside(v, b',')
                    .and_then(|l| l.first().and_then(|f| user_of(f)))
            })
            .or_else(|| msg.from().uri.user().map(dce_sip::uri::unescape))
            .unwrap_or_default();
        let caller = normalize(&caller_raw).unwrap_or(caller_raw);
        let mut facts = RejectFacts {
            caller: caller.clone(),
            called: called.clone(),
            ..RejectFacts::default()
        };
        let admitted = match self.admit(from, now, &mut facts) {
            Ok(a) => a,
            Err(r) => {
                let inv = Incoming {
                    tx,
                    msg: &msg,
                    via: &via,
                    now,
                };
                return self.reject(layer, &inv, r, facts);
            }
        };
        if let Some(shared) = &self.shared {
            // The fleet-wide checks (internal DNC overlay, frequency) are a Redis round trip:
            // the INVITE waits for the verdict off the call path, other calls go on.
            let c = admitted.snapshot.campaign(admitted.campaign);
            let check = RemoteCheck {
                token: self.next_key,
                caller: facts.caller.clone(),
                campaign: facts.campaign.clone(),
                check_dnc: c.dnc,
                max_calls_per_day: shared.max_calls_per_day,
            };
            self.next_key += 1;
            self.pending_by_tx.insert(tx, check.token);
            self.pending_checks.insert(
                check.token,
                PendingInvite {
                    tx,
                    msg,
                    from,
                    via,
                    facts,
                    admitted,
                    max: check.max_calls_per_day,
                },
            );
            self.remote_out.push_back(check);
            return;
        }
        self.start_call(layer, tx, msg, from, via, facts, admitted, now);
    }

    /// Fleet-wide checks to run (Redis), for the driver.
    pub fn poll_remote_check(&mut self) -> Option<RemoteCheck> {
        self.remote_out.pop_front()
    }

    /// The answer to a [`RemoteCheck`]: finish admitting the call, or refuse it.
    pub fn on_remote_verdict(
        &mut self,
        layer: &mut TransactionLayer,
        token: u64,
        result: RemoteResult,
        now: Instant,
    ) {
        let Some(PendingInvite {
            tx,
            msg,
            from,
            via,
            mut facts,
            admitted,
            max,
        }) = self.pending_checks.remove(&token)
        else {
            return;
        };
        self.pending_by_tx.remove(&tx);
        let inv = Incoming {
            tx,
            msg: &msg,
            via: &via,
            now,
        };
        let refuse = |facts: &mut RejectFacts, rule: &str| {
            facts.compliance = format!("reject:{rule}");
            facts.reason = "compliance";
            let reason = format!("SIP;cause=603;text=\"{rule}\"");
            Rejection::new(603, Counter::Compliance603).with(HeaderName::Reason, &reason)
        };
        match result {
            RemoteResult::Listed => {
                let r = refuse(&mut facts, "DNC");
                return self.reject(layer, &inv, r, facts);
            }
            RemoteResult::Count(n) if max > 0 && n > i64::from(max) => {
                let r = refuse(&mut facts, "TCPA_FREQUENCY");
                return self.reject(layer, &inv, r, facts);
            }
            RemoteResult::Count(_) => {
                if max > 0 {
                    let pass = facts.compliance_or_pass();
                    facts.compliance = if pass == "pass" {
                        "pass:frequency".into()
                    } else {
                        format!("{pass},frequency")
                    };
                }
            }
            RemoteResult::Error(e) => {
                self.counters.inc(Counter::LookupError);
                let allow = self.shared.as_ref().is_some_and(|s| s.allow_on_error);
                tracing::warn!(carrier_call_id = %msg.call_id(), error = %e, allow, "shared compliance lookup failed");
                if !allow {
                    facts.compliance = "reject:LOOKUP_ERROR".into();
                    facts.reason = "compliance lookup failed";
                    let r =
                        Rejection::new(503, Counter::Overload503).with(HeaderName::RetryAfter, "5");
                    return self.reject(layer, &inv, r, facts);
                }
                facts.compliance = format!("{};flagged:lookup_error", facts.compliance_or_pass());
            }
        }
        self.start_call(layer, tx, msg, from, via, facts, admitted, now);
    }

    /// Admitted and checked: create the call and ring the first buyer.
    #[allow(clippy::too_many_arguments)]
    fn start_call(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: Message,
        from: Peer,
        via: String,
        facts: RejectFacts,
        admitted: Admitted,
        now: Instant,
    ) {
        let Admitted {
            snapshot,
            campaign,
            entries,
            ranked,
            wall,
        } = admitted;
        let (caller, called) = (facts.caller.clone(), facts.called.clone());
        let compliance = facts.compliance_or_pass();
        let key = self.next_key;
        self.next_key += 1;
        let tag = ids::tag();
        let a_dialog = Dialog {
            call_id: msg.call_id().to_owned(),
            local: format!(
                "{};tag={tag}",
                msg.header(&HeaderName::To).unwrap_or_default()
            ),
            remote: msg.header(&HeaderName::From).unwrap_or_default().to_owned(),
            remote_target: contact_uri(&msg).unwrap_or_else(|| msg.from().uri.raw.clone()),
            route: route_set(&msg, false),
            cseq: 0,
        };
        let id = ids::uuid();
        tracing::info!(call = %id, carrier = %facts.carrier, campaign = %facts.campaign, caller = %crate::logging::num(&caller), called = %called, eligible = ranked, "call started");
        if self.events.subscribers() > 0 {
            // Built only for listeners: this is the call path.
            let bids = bid_records(&snapshot, &entries, &[]);
            let bidders = || bids.iter().map(|b| b.buyer_id.clone()).collect();
            self.events
                .emit("call.started", &facts.campaign, bidders, || {
                    serde_json::json!({
                        "call_id": id,
                        "carrier": facts.carrier,
                        "caller": crate::logging::num(&caller),
                        "called": called,
                    })
                });
            self.events
                .emit("auction.completed", &facts.campaign, bidders, || {
                    serde_json::json!({
                        "call_id": id,
                        "eligible": ranked,
                        "bids": bids_json(&bids),
                    })
                });
        }
        self.by_a_tx.insert(tx, key);
        self.by_dialog
            .insert((a_dialog.call_id.clone(), tag.clone()), (key, Side::A));
        let n = entries.len();
        self.calls.insert(
            key,
            Call {
                id,
                snapshot,
                carrier: facts.carrier,
                campaign,
                caller,
                called,
                a: ALeg {
                    tx,
                    invite: msg,
                    via,
                    peer: from,
                    tag,
                    dialog: a_dialog,
                },
                legs: Vec::new(),
                current: None,
                entries,
                outcomes: vec![None; n],
                next: 0,
                attempts: 0,
                state: CallState::Ringing,
                t0: now,
                wall0: wall,
                answered_at: None,
                winner: None,
                carrier_code: 100,
                buyer_code: None,
                ring_deadline: None,
                max_deadline: None,
                pending: [None, None],
                cancelled: false,
                media: None,
                offer_b: None,
                held_b_ack: None,
                compliance,
            },
        );
        self.counters.m.set_active_calls(self.calls.len());
        // Anchor the media: the buyers get the carrier's offer pointing at DCE.
        let inv = self.calls[&key].a.invite.clone();
        match self.body_for_other_side(key, Side::A, &inv) {
            Ok(body) => {
                if let Some(c) = self.calls.get_mut(&key) {
                    c.offer_b = body;
                }
            }
            Err(e) => {
                let (code, counter) = match e {
                    dce_media::MediaError::PortsExhausted => (503, Counter::MediaPorts503),
                    _ => (488, Counter::BadSdp488),
                };
                let call = self.call_id(key);
                tracing::warn!(%call, error = %e, code, "cannot anchor the media of a new call");
                self.counters.inc(counter);
                self.respond_a(layer, key, code, None, now);
                self.end(layer, key, None, &format!("media: {e}"), now);
                return;
            }
        }
        if !self.try_next(layer, key, now) {
            self.counters.inc(Counter::AllFailed480);
            self.respond_a(layer, key, 480, None, now);
            self.end(layer, key, None, "no buyer could be tried", now);
        }
    }

    /// Start an attempt on the next ranked buyer. False when none is left.
    fn try_next(&mut self, layer: &mut TransactionLayer, key: u64, now: Instant) -> bool {
        let me = self.settings.me.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        while call.attempts < self.settings.max_attempts && call.next < call.entries.len() {
            let idx = call.next;
            call.next += 1;
            let entry = call.entries[idx];
            if !matches!(entry.outcome, Outcome::Ranked(_)) {
                continue;
            }
            let snap = call.snapshot.clone();
            let buyer = snap.buyer(entry.buyer);
            let live = snap.live(entry.buyer).clone();
            // The ranking may be a few milliseconds old: the slot is the authority.
            if !live.try_reserve(buyer.max_concurrent) {
                call.outcomes[idx] = Some("excluded:concurrency".into());
                continue;
            }
            let (uri, addr) = match target_of(&buyer.uri, &call.called, &call.caller) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(call = %call.id, buyer = %buyer.id, error = %e, "buyer target unusable");
                    live.release();
                    call.outcomes[idx] = Some("attempted:bad_uri".into());
                    continue;
                }
            };
            let tag = ids::tag();
            let b_call_id = format!("{}@{}", ids::tag(), me.host);
            let local = format!("<sip:{}@{}>;tag={tag}", call.caller, me.host);
            let mf = call
                .a
                .invite
                .max_forwards()
                .unwrap_or(70)
                .saturating_sub(1)
                .min(70);
            let mut invite = me.request(Method::Invite, &uri, mf);
            invite
                .push(HeaderName::From, local.clone())
                .push(HeaderName::To, format!("<{uri}>"))
                .push(HeaderName::CallId, b_call_id.clone())
                .push(HeaderName::CSeq, "1 INVITE")
                .push(HeaderName::Contact, me.contact())
                .push(HeaderName::Allow, crate::edge::ALLOW)
                .push(HeaderName::Other("X-DCE-Call-ID".into()), call.id.clone());
            push_body(&mut invite, call.offer_b.clone());
            let peer = Peer {
                transport: Transport::Udp,
                addr,
                conn: Some(self.settings.udp_socket),
            };
            let tx = match layer.send_request(invite.clone(), peer, now) {
                Ok(tx) => tx,
                Err(e) => {
                    tracing::warn!(call = %call.id, error = %e, "buyer INVITE not sent");
                    live.release();
                    call.outcomes[idx] = Some("attempted:send_failed".into());
                    continue;
                }
            };
            tracing::info!(call = %call.id, buyer = %buyer.id, bid = entry.bid_cents, attempt = call.attempts + 1, target = %uri, "ringing buyer");
            let leg = BLeg {
                entry: idx,
                tx,
                invite,
                peer,
                dialog: Dialog {
                    call_id: b_call_id.clone(),
                    local,
                    remote: format!("<{uri}>"),
                    remote_target: uri,
                    route: Vec::new(),
                    cseq: 1,
                },
                slot: Some(live),
                provisional: false,
                cancel_pending: false,
                answered: false,
                abandoned: false,
            };
            call.legs.push(leg);
            let li = call.legs.len() - 1;
            call.current = Some(li);
            call.attempts += 1;
            let deadline = now + self.settings.ring_timeout;
            call.ring_deadline = Some((li, deadline));
            self.by_client_tx.insert(tx, (key, Role::Invite(li)));
            self.by_dialog.insert((b_call_id, tag), (key, Side::B));
            arm(&mut self.timers, key, Timer::Ring(li), deadline);
            return true;
        }
        false
    }

    /// Give up the current leg (failure or timeout) and move on; fail the call if nobody is
    /// left.
    fn leg_failed(
        &mut self,
        layer: &mut TransactionLayer,
        key: u64,
        li: usize,
        outcome: String,
        code: Option<u16>,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let leg = &mut call.legs[li];
        if let Some(slot) = leg.slot.take() {
            slot.release();
        }
        if !leg.abandoned || call.outcomes[leg.entry].is_none() {
            call.outcomes[leg.entry] = Some(outcome);
        }
        if code.is_some() {
            call.buyer_code = code;
        }
        if call.current != Some(li) {
            return;
        }
        call.current = None;
        call.ring_deadline = None;
        if call.cancelled || call.state != CallState::Ringing {
            return;
        }
        if !self.try_next(layer, key, now) {
            self.counters.inc(Counter::AllFailed480);
            self.respond_a(layer, key, 480, None, now);
            self.end(layer, key, None, "every attempt failed", now);
        }
    }

    /// A response on one of our client transactions.
    pub fn on_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: Message,
        now: Instant,
    ) {
        let code = msg.code().unwrap_or(0);
        if self.orphans.contains_key(&tx) {
            self.on_orphan_response(layer, tx, &msg, now);
            return;
        }
        let (key, kind) = match self.by_client_tx.get(&tx) {
            None => return,
            Some((k, Role::Fire)) => (*k, None),
            Some((k, Role::Relay { .. })) => (*k, Some(None)),
            Some((k, Role::Invite(li))) => (*k, Some(Some(*li))),
        };
        match kind {
            None => {
                if code >= 200 {
                    self.by_client_tx.remove(&tx);
                }
            }
            Some(None) => {
                if code >= 200 {
                    if let Some((
                        _,
                        Role::Relay {
                            server_tx,
                            req,
                            via,
                            side,
                        },
                    )) = self.by_client_tx.remove(&tx)
                    {
                        self.relay_response(layer, key, server_tx, &req, &via, side, &msg, now);
                    }
                } else if code > 100 {
                    let relay = match self.by_client_tx.get(&tx) {
                        Some((
                            _,
                            Role::Relay {
                                server_tx,
                                req,
                                via,
                                side,
                            },
                        )) => Some((
                            *server_tx,
                            req.response(code, reason_phrase(code), "", Some(via)),
                            *side,
                        )),
                        _ => None,
                    };
                    if let Some((server_tx, mut resp, side)) = relay {
                        let from = if side == Side::A { Side::B } else { Side::A };
                        push_body(
                            &mut resp,
                            self.body_for_other_side(key, from, &msg).unwrap_or(None),
                        );
                        let _ = layer.respond(server_tx, &resp, now);
                    }
                }
            }
            Some(Some(li)) => {
                if code >= 300 {
                    self.by_client_tx.remove(&tx);
                }
                self.on_invite_response(layer, key, li, msg, now);
            }
        }
    }

    /// A response for the INVITE of a call that has ended: CANCEL it once it rings, ACK and
    /// hang up a late 2xx.
    fn on_orphan_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: &Message,
        now: Instant,
    ) {
        let code = msg.code().unwrap_or(0);
        let me = self.settings.me.clone();
        if code < 200 {
            if let Some(leg) = self.orphans.get_mut(&tx) {
                if code > 100 && leg.cancel_pending {
                    leg.cancel_pending = false;
                    let _ = layer.send_request(cancel_for(&leg.invite), leg.peer, now);
                }
            }
            return;
        }
        let Some(mut leg) = self.orphans.remove(&tx) else {
            return;
        };
        if code < 300 {
            leg.dialog.remote = msg.header(&HeaderName::To).unwrap_or_default().to_owned();
            if let Some(c) = contact_uri(msg) {
                leg.dialog.remote_target = c;
            }
            leg.dialog.route = route_set(msg, true);
            self.out.push_back(Transmit {
                to: leg.peer,
                bytes: ack_for_2xx(&me, &leg.dialog, 1).print(),
            });
            let bye = leg.dialog.request(&me, Method::Bye);
            let _ = layer.send_request(bye, leg.peer, now);
        }
    }

    fn on_invite_response(
        &mut self,
        layer: &mut TransactionLayer,
        key: u64,
        li: usize,
        msg: Message,
        now: Instant,
    ) {
        let code = msg.code().unwrap_or(0);
        let me = self.settings.me.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let current = call.current == Some(li);
        let ringing = current && !call.cancelled && call.state == CallState::Ringing;
        // Late offer: the carrier's INVITE had no SDP, the buyer's 2xx carries the offer, and
        // the answer comes in the carrier's ACK — so our ACK to the buyer waits for it.
        let late_offer = call.offer_b.is_none() && !msg.body().is_empty();
        let held = call.held_b_ack.is_some();
        let leg = &mut call.legs[li];
        match code {
            100 => {}
            101..=199 => {
                leg.provisional = true;
                if leg.cancel_pending {
                    leg.cancel_pending = false;
                    if let Ok(ctx) = layer.send_request(cancel_for(&leg.invite), leg.peer, now) {
                        self.by_client_tx.insert(ctx, (key, Role::Fire));
                    }
                } else if ringing {
                    let code = if code == 183 { 183 } else { 180 };
                    let body = self.body_for_other_side(key, Side::B, &msg).unwrap_or(None);
                    self.respond_a(layer, key, code, body, now);
                }
            }
            200..=299 => {
                if leg.answered {
                    // A retransmitted 2xx: our ACK was lost (unless it is still held).
                    if !held {
                        let ack = ack_for_2xx(&me, &leg.dialog, 1);
                        self.out.push_back(Transmit {
                            to: leg.peer,
                            bytes: ack.print(),
                        });
                    }
                    return;
                }
                leg.answered = true;
                leg.dialog.remote = msg.header(&HeaderName::To).unwrap_or_default().to_owned();
                if let Some(c) = contact_uri(&msg) {
                    leg.dialog.remote_target = c;
                }
                leg.dialog.route = route_set(&msg, true);
                if late_offer && ringing {
                    call.held_b_ack = Some((leg.dialog.clone(), leg.peer));
                } else {
                    let ack = ack_for_2xx(&me, &leg.dialog, 1);
                    self.out.push_back(Transmit {
                        to: leg.peer,
                        bytes: ack.print(),
                    });
                }
                if !ringing {
                    // Too late: this buyer was abandoned. Hang it up.
                    let bye = leg.dialog.request(&me, Method::Bye);
                    if let Some(slot) = leg.slot.take() {
                        slot.release();
                    }
                    if let Ok(btx) = layer.send_request(bye, leg.peer, now) {
                        self.by_client_tx.insert(btx, (key, Role::Fire));
                    }
                    return;
                }
                // The call is answered.
                let entry = leg.entry;
                call.outcomes[entry] = Some("won".into());
                call.winner = Some(li);
                call.state = CallState::Answered;
                call.answered_at = Some(now);
                call.ring_deadline = None;
                call.buyer_code = Some(code);
                let e = call.entries[entry];
                let snap = call.snapshot.clone();
                let buyer = snap.buyer(e.buyer);
                let wall =
                    call.wall0 + chrono::Duration::from_std(now - call.t0).unwrap_or_default();
                let (hk, dk) = local_keys(buyer.tz(), wall);
                snap.live(e.buyer).answered(hk, dk, e.bid_cents);
                let max =
                    Duration::from_secs(u64::from(snap.campaign(call.campaign).max_duration_s));
                call.max_deadline = Some(now + max);
                tracing::info!(call = %call.id, buyer = %buyer.id, "call answered");
                self.counters.inc(Counter::CallAnswered);
                let campaign = &snap.campaign(call.campaign).id;
                self.events.emit(
                    "call.answered",
                    campaign,
                    || vec![buyer.id.clone()],
                    || {
                        serde_json::json!({
                            "call_id": call.id,
                            "buyer": buyer.id,
                            "bid_cents": e.bid_cents,
                            "ring_ms": now.saturating_duration_since(call.t0).as_millis() as u64,
                        })
                    },
                );
                arm(&mut self.timers, key, Timer::MaxDuration, now + max);
                let media = call.media;
                match self.body_for_other_side(key, Side::B, &msg) {
                    Ok(body) => {
                        if let Some(id) = self.calls.get(&key).and_then(|c| c.media).or(media) {
                            self.media.answered(id);
                        }
                        self.respond_a(layer, key, 200, body, now);
                    }
                    Err(e) => {
                        // The buyer's SDP cannot be anchored: hang it up and try the next one.
                        let call = self.call_id(key);
                        tracing::warn!(%call, error = %e, "buyer answered with SDP DCE cannot anchor");
                        self.unanswer(layer, key, li, now);
                    }
                }
            }
            _ => {
                tracing::info!(call = %call.id, code, "buyer declined");
                self.leg_failed(layer, key, li, format!("attempted:{code}"), Some(code), now);
            }
        }
    }

    /// Undo an answer that cannot be used (buyer SDP unusable): BYE the buyer, give back what
    /// the answer took, and move on to the next buyer.
    fn unanswer(&mut self, layer: &mut TransactionLayer, key: u64, li: usize, now: Instant) {
        let me = self.settings.me.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.state = CallState::Ringing;
        call.answered_at = None;
        call.winner = None;
        call.max_deadline = None;
        call.held_b_ack = None;
        let leg = &mut call.legs[li];
        let e = call.entries[leg.entry];
        let bye = leg.dialog.request(&me, Method::Bye);
        if let Ok(btx) = layer.send_request(bye, leg.peer, now) {
            self.by_client_tx.insert(btx, (key, Role::Fire));
        }
        let buyer = call.snapshot.buyer(e.buyer);
        let wall = call.wall0 + chrono::Duration::from_std(now - call.t0).unwrap_or_default();
        call.snapshot
            .live(e.buyer)
            .refund(local_keys(buyer.tz(), wall).1, e.bid_cents);
        self.leg_failed(layer, key, li, "attempted:bad_sdp".into(), None, now);
    }

    /// A client transaction timed out (Timer B or F).
    pub fn on_tx_timeout(&mut self, layer: &mut TransactionLayer, tx: TxId, now: Instant) {
        self.orphans.remove(&tx);
        let Some((key, role)) = self.by_client_tx.remove(&tx) else {
            return;
        };
        match role {
            Role::Invite(li) => {
                self.leg_failed(layer, key, li, "attempted:timeout".into(), Some(408), now)
            }
            Role::Relay {
                server_tx,
                req,
                via,
                ..
            } => {
                let resp = req.response(408, reason_phrase(408), "", Some(&via));
                let _ = layer.respond(server_tx, &resp, now);
            }
            Role::Fire => {}
        }
    }

    /// CANCEL matched the INVITE of server transaction `invite_tx`. Returns false when that
    /// INVITE is not a call of ours.
    pub fn on_cancel(
        &mut self,
        layer: &mut TransactionLayer,
        invite_tx: TxId,
        now: Instant,
    ) -> bool {
        if let Some(token) = self.pending_by_tx.remove(&invite_tx) {
            // Cancelled while its compliance lookup was out: 487, and the call never starts.
            if let Some(p) = self.pending_checks.remove(&token) {
                let mut facts = p.facts;
                facts.reason = "cancelled by carrier";
                let inv = Incoming {
                    tx: p.tx,
                    msg: &p.msg,
                    via: &p.via,
                    now,
                };
                self.reject(
                    layer,
                    &inv,
                    Rejection::new(487, Counter::CallCancelled),
                    facts,
                );
            }
            return true;
        }
        let Some(&key) = self.by_a_tx.get(&invite_tx) else {
            return false;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        if call.state != CallState::Ringing || call.cancelled {
            return true;
        }
        call.cancelled = true;
        tracing::info!(call = %call.id, "carrier cancelled while ringing");
        self.counters.inc(Counter::CallCancelled);
        if let Some(li) = call.current {
            let leg = &mut call.legs[li];
            call.outcomes[leg.entry] = Some("attempted:cancelled".into());
            abandon(leg, key, layer, &mut self.by_client_tx, now);
        }
        if layer.state(invite_tx) == Some(TxState::Proceeding) {
            self.respond_a(layer, key, 487, None, now);
        }
        self.end(layer, key, Some("carrier"), "cancelled by carrier", now);
        true
    }

    /// An ACK outside any transaction: for one of our 2xx?
    pub fn on_ack(&mut self, msg: &Message) -> bool {
        let Some(tag) = msg.to().tag() else {
            return false;
        };
        let Some(&(key, side)) = self
            .by_dialog
            .get(&(msg.call_id().to_owned(), tag.to_owned()))
        else {
            return false;
        };
        let mut held = None;
        if let Some(call) = self.calls.get_mut(&key) {
            call.pending[side as usize] = None;
            if side == Side::A && call.state == CallState::Answered {
                call.state = CallState::Connected;
                tracing::debug!(call = %call.id, "carrier ACKed; connected");
            }
            if side == Side::A {
                held = call.held_b_ack.take();
            }
        }
        if let Some((dialog, peer)) = held {
            // Late offer: the carrier's ACK carries the answer; it goes to the buyer in ours.
            let me = self.settings.me.clone();
            let mut ack = ack_for_2xx(&me, &dialog, 1);
            push_body(
                &mut ack,
                self.body_for_other_side(key, Side::A, msg).unwrap_or(None),
            );
            self.out.push_back(Transmit {
                to: peer,
                bytes: ack.print(),
            });
        }
        true
    }

    /// A 2xx that matched no transaction (a retransmission after Timer M): ACK it again.
    pub fn on_stray_response(&mut self, msg: &Message) -> bool {
        if !(200..300).contains(&msg.code().unwrap_or(0)) || msg.cseq_method() != &Method::Invite {
            return false;
        }
        let Some(tag) = msg.from().tag() else {
            return false;
        };
        let Some(&(key, Side::B)) = self
            .by_dialog
            .get(&(msg.call_id().to_owned(), tag.to_owned()))
        else {
            return false;
        };
        let me = self.settings.me.clone();
        if let Some(call) = self.calls.get(&key) {
            if let Some(leg) = call.winner.map(|w| &call.legs[w]) {
                self.out.push_back(Transmit {
                    to: leg.peer,
                    bytes: ack_for_2xx(&me, &leg.dialog, msg.cseq()).print(),
                });
            }
        }
        true
    }

    /// A request inside one of our dialogs (BYE, re-INVITE, UPDATE, INFO, OPTIONS …).
    pub fn on_in_dialog(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: Message,
        via: String,
        now: Instant,
    ) {
        let key_side = msg.to().tag().and_then(|t| {
            self.by_dialog
                .get(&(msg.call_id().to_owned(), t.to_owned()))
                .copied()
        });
        let Some((key, side)) = key_side else { return };
        let method = msg.method().cloned().unwrap_or(Method::Ack);
        let me = self.settings.me.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if method == Method::Bye {
            let resp = msg.response(200, "OK", "", Some(&via));
            let _ = layer.respond(tx, &resp, now);
            let by = if side == Side::A { "carrier" } else { "buyer" };
            tracing::info!(call = %call.id, by, "hangup");
            // BYE the other leg.
            let other = match side {
                Side::A => call.winner.map(|w| {
                    (
                        call.legs[w].dialog.request(&me, Method::Bye),
                        call.legs[w].peer,
                    )
                }),
                Side::B => Some((call.a.dialog.request(&me, Method::Bye), call.a.peer)),
            };
            if let Some((bye, peer)) = other {
                if let Ok(btx) = layer.send_request(bye, peer, now) {
                    self.by_client_tx.insert(btx, (key, Role::Fire));
                }
            }
            self.end(layer, key, Some(by), &format!("{by} hung up"), now);
            return;
        }
        // Everything else is mirrored to the other leg once both are up.
        let target = match side {
            Side::A => call.winner.map(|w| {
                (
                    call.legs[w].dialog.request(&me, method.clone()),
                    call.legs[w].peer,
                )
            }),
            Side::B if call.state != CallState::Ringing => {
                Some((call.a.dialog.request(&me, method.clone()), call.a.peer))
            }
            Side::B => None,
        };
        let Some((mut req, peer)) = target else {
            let resp = msg.response(481, reason_phrase(481), "", Some(&via));
            let _ = layer.respond(tx, &resp, now);
            return;
        };
        match self.body_for_other_side(key, side, &msg) {
            Ok(body) => push_body(&mut req, body),
            Err(e) => {
                let call = self.call_id(key);
                tracing::info!(%call, error = %e, "in-dialog SDP cannot be anchored; 488");
                let resp = msg.response(488, reason_phrase(488), "", Some(&via));
                let _ = layer.respond(tx, &resp, now);
                return;
            }
        }
        if method == Method::Invite || method == Method::Update {
            req.push(HeaderName::Contact, me.contact());
        }
        for name in ["Info-Package", "Content-Disposition", "Event"] {
            if let Some(v) = msg.header(&HeaderName::Other(name.into())) {
                req.push(HeaderName::Other(name.into()), v);
            }
        }
        match layer.send_request(req, peer, now) {
            Ok(ctx) => {
                self.by_client_tx.insert(
                    ctx,
                    (
                        key,
                        Role::Relay {
                            server_tx: tx,
                            req: Box::new(msg),
                            via,
                            side,
                        },
                    ),
                );
            }
            Err(_) => {
                let resp = msg.response(500, reason_phrase(500), "", Some(&via));
                let _ = layer.respond(tx, &resp, now);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn relay_response(
        &mut self,
        layer: &mut TransactionLayer,
        key: u64,
        server_tx: TxId,
        req: &Message,
        via: &str,
        side: Side,
        resp_in: &Message,
        now: Instant,
    ) {
        let code = resp_in.code().unwrap_or(500);
        let me = self.settings.me.clone();
        let mut resp = req.response(
            code,
            resp_in.reason().unwrap_or(reason_phrase(code)),
            "",
            Some(via),
        );
        if (200..300).contains(&code) && req.method() == Some(&Method::Invite) {
            resp.push(HeaderName::Contact, me.contact());
        }
        let from = if side == Side::A { Side::B } else { Side::A };
        push_body(
            &mut resp,
            self.body_for_other_side(key, from, resp_in).unwrap_or(None),
        );
        if (200..300).contains(&code) && req.method() == Some(&Method::Invite) {
            // We are the UAC of the other leg: ACK its 2xx; and the UAS of this side: keep
            // our 2xx going until its ACK.
            if let Some(call) = self.calls.get_mut(&key) {
                let other_dialog_peer = match side {
                    Side::A => call
                        .winner
                        .map(|w| (call.legs[w].dialog.clone(), call.legs[w].peer)),
                    Side::B => Some((call.a.dialog.clone(), call.a.peer)),
                };
                if let Some((d, p)) = other_dialog_peer {
                    self.out.push_back(Transmit {
                        to: p,
                        bytes: ack_for_2xx(&me, &d, resp_in.cseq()).print(),
                    });
                }
                let peer = match side {
                    Side::A => call.a.peer,
                    Side::B => call
                        .winner
                        .map(|w| call.legs[w].peer)
                        .unwrap_or(call.a.peer),
                };
                let t1 = self.settings.t1;
                call.pending[side as usize] = Some(Pending2xx {
                    bytes: resp.print(),
                    peer,
                    interval: t1,
                    next: now + t1,
                    give_up: now + t1 * 64,
                });
                if !peer.reliable() {
                    arm(&mut self.timers, key, Timer::Retransmit2xx(side), now + t1);
                }
                arm(
                    &mut self.timers,
                    key,
                    Timer::Retransmit2xx(side),
                    now + t1 * 64,
                );
            }
        }
        let _ = layer.respond(server_tx, &resp, now);
    }

    /// Fire due call timers.
    pub fn handle_timeout(&mut self, layer: &mut TransactionLayer, now: Instant) {
        while let Some(Reverse((at, key, c, i))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let t = timer_decode(c, i);
            if !self.timer_live(key, t, at) {
                continue;
            }
            match t {
                Timer::Ring(li) => self.ring_timeout(layer, key, li, now),
                Timer::Retransmit2xx(side) => self.retransmit_2xx(layer, key, side, now),
                Timer::MaxDuration => self.max_duration(layer, key, now),
            }
        }
    }

    fn ring_timeout(&mut self, layer: &mut TransactionLayer, key: u64, li: usize, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let leg = &mut call.legs[li];
        tracing::info!(call = %call.id, "buyer did not answer in time");
        abandon(leg, key, layer, &mut self.by_client_tx, now);
        self.leg_failed(layer, key, li, "attempted:ring_timeout".into(), None, now);
    }

    fn retransmit_2xx(&mut self, layer: &mut TransactionLayer, key: u64, side: Side, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(p) = call.pending[side as usize].as_mut() else {
            return;
        };
        if now >= p.give_up {
            // §13.3.1.4: no ACK within 64*T1 — the dialog is confirmed and then ended.
            call.pending[side as usize] = None;
            tracing::warn!(call = %call.id, "no ACK for our 2xx; ending the call");
            self.hang_up_both(layer, key, "no ACK for 2xx", now);
            return;
        }
        self.out.push_back(Transmit {
            to: p.peer,
            bytes: p.bytes.clone(),
        });
        p.interval = (p.interval * 2).min(Duration::from_secs(4));
        p.next = now + p.interval;
        let next = p.next;
        arm(&mut self.timers, key, Timer::Retransmit2xx(side), next);
    }

    fn max_duration(&mut self, layer: &mut TransactionLayer, key: u64, now: Instant) {
        if let Some(call) = self.calls.get(&key) {
            tracing::info!(call = %call.id, "max duration reached");
        }
        self.hang_up_both(layer, key, "max_duration", now);
    }

    fn hang_up_both(&mut self, layer: &mut TransactionLayer, key: u64, reason: &str, now: Instant) {
        let me = self.settings.me.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let mut byes = vec![(call.a.dialog.request(&me, Method::Bye), call.a.peer)];
        if let Some(w) = call.winner {
            byes.push((
                call.legs[w].dialog.request(&me, Method::Bye),
                call.legs[w].peer,
            ));
        }
        for (bye, peer) in byes {
            if let Ok(btx) = layer.send_request(bye, peer, now) {
                self.by_client_tx.insert(btx, (key, Role::Fire));
            }
        }
        self.end(layer, key, Some("dce"), reason, now);
    }

    /// End every call (shutdown): BYE answered calls, 503 the ringing ones.
    pub fn end_all(&mut self, layer: &mut TransactionLayer, now: Instant) {
        let keys: Vec<u64> = self.calls.keys().copied().collect();
        for key in keys {
            self.end_one(layer, key, 503, "shutdown", now);
        }
    }

    /// End one call: BYE both legs when answered, else `code` to the carrier and CANCEL the
    /// buyer being rung.
    fn end_one(
        &mut self,
        layer: &mut TransactionLayer,
        key: u64,
        code: u16,
        reason: &str,
        now: Instant,
    ) {
        let ringing = self
            .calls
            .get(&key)
            .is_some_and(|c| c.state == CallState::Ringing);
        if ringing {
            if let Some(call) = self.calls.get_mut(&key) {
                call.cancelled = true;
                if let Some(li) = call.current {
                    abandon(&mut call.legs[li], key, layer, &mut self.by_client_tx, now);
                }
            }
            self.respond_a(layer, key, code, None, now);
            self.end(layer, key, Some("dce"), reason, now);
        } else {
            self.hang_up_both(layer, key, reason, now);
        }
    }

    /// An operator ends call `id` (`POST /v1/calls/{id}/hangup`). False when no such call.
    pub fn hang_up(&mut self, layer: &mut TransactionLayer, id: &str, now: Instant) -> bool {
        let Some(key) = self.calls.iter().find(|(_, c)| c.id == id).map(|(k, _)| *k) else {
            return false;
        };
        tracing::info!(call = %id, "hangup requested through the API");
        self.end_one(layer, key, 480, "api_hangup", now);
        true
    }

    /// Calls in progress, oldest first.
    pub fn calls_view(&self, now: Instant) -> Vec<super::view::CallView> {
        let mut v: Vec<&Call> = self.calls.values().collect();
        v.sort_by_key(|c| c.t0);
        v.into_iter().map(|c| call_view(c, now)).collect()
    }

    /// One call in progress.
    pub fn call_view(&self, id: &str, now: Instant) -> Option<super::view::CallView> {
        self.calls
            .values()
            .find(|c| c.id == id)
            .map(|c| call_view(c, now))
    }

    /// Every buyer of the running config with its live state.
    pub fn buyers_view(&self) -> Vec<super::view::BuyerView> {
        let now = self.clock.now_utc();
        (0..self.snapshot.buyers().len())
            .map(|i| self.buyer_view(i, now))
            .collect()
    }

    /// Buyer `i` of the running config with its live state at `now`.
    fn buyer_view(&self, i: usize, now: DateTime<Utc>) -> super::view::BuyerView {
        let snap = &self.snapshot;
        let b = &snap.buyers()[i];
        let live = snap.live(i as dce_routing::BuyerId);
        let (hk, dk) = local_keys(b.tz(), now);
        let bid_override = live.bid_override();
        super::view::BuyerView {
            id: b.id.clone(),
            campaigns: b
                .campaigns
                .iter()
                .map(|c| snap.campaign(*c).id.clone())
                .collect(),
            bid_cents: bid_override.unwrap_or(b.bid_cents),
            config_bid_cents: b.bid_cents,
            bid_override: bid_override.is_some(),
            paused: live.paused(),
            active_calls: live.active(),
            max_concurrent: b.max_concurrent,
            answered_this_hour: live.answered_in_hour(hk),
            hourly_cap: b.hourly_cap,
            answered_today: live.answered_on_day(dk),
            daily_cap: b.daily_cap,
            spend_today_cents: live.spend_on_day(dk),
            daily_budget_cents: b.daily_budget_cents,
        }
    }

    /// Pause, resume or override the bid of buyer `id`; `None` when there is no such buyer.
    pub fn patch_buyer(
        &mut self,
        id: &str,
        patch: &super::view::BuyerPatch,
    ) -> Option<super::view::BuyerView> {
        let i = self.snapshot.buyers().iter().position(|b| b.id == id)?;
        let live = self.snapshot.live(i as dce_routing::BuyerId);
        if let Some(p) = patch.paused {
            live.set_paused(p);
            tracing::info!(buyer = %id, paused = p, "buyer {} through the API", if p { "paused" } else { "resumed" });
        }
        if let Some(bid) = patch.bid_cents {
            live.set_bid_override(bid);
            tracing::info!(buyer = %id, bid_cents = ?bid, "bid override set through the API (until the next reload)");
        }
        Some(self.buyer_view(i, self.clock.now_utc()))
    }

    /// The call is over: release everything it holds and write its CDR.
    fn end(
        &mut self,
        _layer: &mut TransactionLayer,
        key: u64,
        hangup_by: Option<&str>,
        reason: &str,
        now: Instant,
    ) {
        let Some(mut call) = self.calls.remove(&key) else {
            return;
        };
        self.by_a_tx.remove(&call.a.tx);
        self.by_dialog
            .remove(&(call.a.dialog.call_id.clone(), call.a.tag.clone()));
        let campaign = call.snapshot.campaign(call.campaign).clone();
        let duration = call
            .answered_at
            .map(|a| now.saturating_duration_since(a))
            .unwrap_or_default();
        let billable = call.answered_at.is_some()
            && duration.as_secs() >= u64::from(campaign.billable_after_s);
        let mut winner_bid = 0;
        let mut winner_id = None;
        let mut refund = None;
        for (li, leg) in call.legs.iter_mut().enumerate() {
            let tag = leg
                .dialog
                .local
                .rsplit("tag=")
                .next()
                .unwrap_or("")
                .to_owned();
            self.by_dialog.remove(&(leg.dialog.call_id.clone(), tag));
            let e = call.entries[leg.entry];
            if let Some(slot) = leg.slot.take() {
                if call.winner == Some(li) {
                    let buyer = call.snapshot.buyer(e.buyer);
                    let at = call.wall0
                        + chrono::Duration::from_std(call.answered_at.unwrap_or(now) - call.t0)
                            .unwrap_or_default();
                    let day = local_keys(buyer.tz(), at).1;
                    if billable {
                        // kept for a refund should the media report make it non-billable
                        refund = Some((slot.clone(), day));
                    } else {
                        slot.refund(day, e.bid_cents);
                    }
                }
                slot.release();
            }
            if call.winner == Some(li) {
                winner_bid = e.bid_cents;
                winner_id = Some(call.snapshot.buyer(e.buyer).id.clone());
            }
            let pending = matches!(
                self.by_client_tx.remove(&leg.tx),
                Some((_, Role::Invite(_)))
            );
            if pending && !leg.answered {
                // The INVITE is still pending (cancelled or abandoned): keep the leg so a
                // late 2xx is ACKed and hung up.
                let orphan = BLeg {
                    entry: leg.entry,
                    tx: leg.tx,
                    invite: leg.invite.clone(),
                    peer: leg.peer,
                    dialog: leg.dialog.clone(),
                    slot: None,
                    provisional: leg.provisional,
                    cancel_pending: leg.cancel_pending,
                    answered: false,
                    abandoned: true,
                };
                self.orphans.insert(leg.tx, orphan);
            }
        }
        let disposition = if call.answered_at.is_some() {
            "answered"
        } else if call.cancelled {
            "cancelled"
        } else {
            "failed"
        };
        if call.answered_at.is_some() {
            self.counters.inc(Counter::CallCompleted);
        }
        let wall = |t: Instant| {
            (call.wall0
                + chrono::Duration::from_std(t.saturating_duration_since(call.t0))
                    .unwrap_or_default())
            .to_rfc3339()
        };
        let bids = bid_records(&call.snapshot, &call.entries, &call.outcomes);
        tracing::info!(call = %call.id, disposition, reason, duration_s = duration.as_secs_f64(), billable, "call ended");
        self.counters.m.call_outcome(disposition);
        self.counters.m.set_active_calls(self.calls.len());
        self.events.emit(
            "call.completed",
            &campaign.id,
            || winner_id.iter().cloned().collect(),
            || {
                serde_json::json!({
                    "call_id": call.id,
                    "disposition": disposition,
                    "reason": reason,
                    "buyer": winner_id,
                    "duration_s": (duration.as_secs_f64() * 1000.0).round() / 1000.0,
                    "billable": billable,
                    "payout_cents": if billable { winner_bid } else { 0 },
                    "hangup_by": hangup_by,
                })
            },
        );
        let cdr = Cdr {
            id: call.id.clone(),
            node_id: self.settings.node_id.clone(),
            disposition: disposition.into(),
            carrier: call.carrier.clone(),
            campaign: campaign.id.clone(),
            caller: call.caller.clone(),
            called: call.called.clone(),
            carrier_call_id: call.a.dialog.call_id.clone(),
            buyer_id: winner_id,
            bid_cents: winner_bid,
            payout_cents: if billable { winner_bid } else { 0 },
            billable,
            compliance: call.compliance.clone(),
            bids,
            invite_at: call.wall0.to_rfc3339(),
            answer_at: call.answered_at.map(wall),
            end_at: wall(now),
            duration_s: duration.as_secs_f64(),
            hangup_by: hangup_by.map(str::to_owned),
            reason: reason.to_owned(),
            carrier_code: call.carrier_code,
            buyer_code: call.buyer_code,
            quality: None,
        };
        match call.media {
            Some(id) => {
                // The CDR is written when the relay reports the call's media.
                self.by_media.remove(&id);
                self.awaiting_media.insert(
                    id,
                    PendingCdr {
                        cdr,
                        bill_one_way_audio: campaign.bill_one_way_audio,
                        refund,
                    },
                );
                self.media.close(id);
            }
            None => self.cdr.emit(cdr),
        }
    }

    /// Something the media relay reports.
    pub fn on_media_event(&mut self, layer: &mut TransactionLayer, ev: MediaEvent, now: Instant) {
        match ev {
            MediaEvent::Timeout { id } => {
                if let Some(&key) = self.by_media.get(&id) {
                    self.counters.inc(Counter::RtpTimeout);
                    if let Some(call) = self.calls.get(&key) {
                        tracing::info!(call = %call.id, "no RTP either way; hanging up");
                    }
                    self.hang_up_both(layer, key, "rtp_timeout", now);
                }
            }
            MediaEvent::Closed { id, report } => {
                let Some(PendingCdr {
                    mut cdr,
                    bill_one_way_audio,
                    refund,
                }) = self.awaiting_media.remove(&id)
                else {
                    return;
                };
                let q = Quality::from_report(&report);
                self.counters.m.rtp(
                    q.carrier_to_dce.packets + q.buyer_to_dce.packets,
                    q.carrier_to_dce.lost + q.buyer_to_dce.lost,
                );
                if q.one_way_audio && cdr.billable && !bill_one_way_audio {
                    cdr.billable = false;
                    cdr.payout_cents = 0;
                    if let Some((slot, day)) = refund {
                        slot.refund(day, cdr.bid_cents);
                    }
                    tracing::info!(call = %cdr.id, "one-way audio: not billable for this campaign");
                }
                cdr.quality = Some(q);
                self.cdr.emit(cdr);
            }
        }
    }
}

/// Give up a ringing buyer leg: CANCEL it now if it has sent a provisional, else as soon as it
/// does (§9.1: no CANCEL before a provisional).
fn abandon(
    leg: &mut BLeg,
    key: u64,
    layer: &mut TransactionLayer,
    roles: &mut HashMap<TxId, (u64, Role)>,
    now: Instant,
) {
    leg.abandoned = true;
    if leg.provisional {
        if let Ok(ctx) = layer.send_request(cancel_for(&leg.invite), leg.peer, now) {
            roles.insert(ctx, (key, Role::Fire));
        }
    } else {
        leg.cancel_pending = true;
    }
}

fn call_view(c: &Call, now: Instant) -> super::view::CallView {
    let secs = |d: Duration| (d.as_secs_f64() * 10.0).round() / 10.0;
    let legs = c
        .legs
        .iter()
        .enumerate()
        .map(|(li, l)| {
            let e = c.entries[l.entry];
            let outcome = c.outcomes[l.entry].as_deref().unwrap_or("");
            let state = if l.answered {
                "answered"
            } else if c.current == Some(li) && !l.abandoned && c.state == CallState::Ringing {
                "ringing"
            } else {
                "ended"
            };
            super::view::LegView {
                buyer: c.snapshot.buyer(e.buyer).id.clone(),
                bid_cents: e.bid_cents,
                state: state.into(),
                code: outcome
                    .strip_prefix("attempted:")
                    .and_then(|x| x.parse().ok())
                    .or(if l.answered { Some(200) } else { None }),
            }
        })
        .collect::<Vec<_>>();
    let buyer = c.winner.or(c.current).map(|li| {
        c.snapshot
            .buyer(c.entries[c.legs[li].entry].buyer)
            .id
            .clone()
    });
    super::view::CallView {
        id: c.id.clone(),
        carrier_call_id: c.a.dialog.call_id.clone(),
        carrier: c.carrier.clone(),
        campaign: c.snapshot.campaign(c.campaign).id.clone(),
        caller: c.caller.clone(),
        called: c.called.clone(),
        state: match c.state {
            CallState::Ringing => "ringing",
            CallState::Answered => "answered",
            CallState::Connected => "connected",
        }
        .into(),
        age_s: secs(now.saturating_duration_since(c.t0)),
        talk_s: c
            .answered_at
            .map(|a| secs(now.saturating_duration_since(a))),
        buyer,
        attempts: c.attempts,
        compliance: c.compliance.clone(),
        legs,
    }
}

/// Every auction entry with its buyer, bid and outcome (a `recorded` outcome wins).
fn bid_records(snap: &Snapshot, entries: &[Entry], recorded: &[Option<String>]) -> Vec<BidRecord> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| BidRecord {
            buyer_id: snap.buyer(e.buyer).id.clone(),
            amount_cents: e.bid_cents,
            outcome: outcome_name(e, recorded.get(i).and_then(|o| o.as_deref())),
        })
        .collect()
}

/// Bids as events show them: before any buyer is tried, a ranked entry is `ranked` (its CDR
/// says `lost` only once the call is over).
fn bids_json(bids: &[BidRecord]) -> Vec<serde_json::Value> {
    bids.iter()
        .map(|b| {
            let outcome = if b.outcome == "lost" { "ranked" } else { b.outcome.as_str() };
            serde_json::json!({ "buyer": b.buyer_id, "bid_cents": b.amount_cents, "outcome": outcome })
        })
        .collect()
}

fn outcome_name(e: &Entry, recorded: Option<&str>) -> String {
    if let Some(r) = recorded {
        return r.to_owned();
    }
    match e.outcome {
        Outcome::Ranked(_) => "lost".into(),
        Outcome::Excluded(x) => format!("excluded:{}", x.as_str()),
    }
}

/// An INVITE being answered: its server transaction, the request, its annotated Via, now.
struct Incoming<'a> {
    tx: TxId,
    msg: &'a Message,
    via: &'a str,
    now: Instant,
}

/// How DCE refuses an INVITE before ringing anyone.
struct Rejection {
    code: u16,
    extra: Vec<(HeaderName, String)>,
    counter: Counter,
}

impl Rejection {
    fn new(code: u16, counter: Counter) -> Self {
        Rejection {
            code,
            extra: Vec::new(),
            counter,
        }
    }

    fn with(mut self, name: HeaderName, value: &str) -> Self {
        self.extra.push((name, value.to_owned()));
        self
    }
}

/// What admission hands to a new call.
struct Admitted {
    snapshot: Arc<Snapshot>,
    campaign: CampaignId,
    entries: Vec<Entry>,
    ranked: usize,
    wall: DateTime<Utc>,
}

/// What a rejection's CDR says.
#[derive(Default)]
struct RejectFacts {
    carrier: String,
    campaign: String,
    caller: String,
    called: String,
    compliance: String,
    bids: Vec<BidRecord>,
    reason: &'static str,
}

impl RejectFacts {
    fn compliance_or_pass(&self) -> String {
        if self.compliance.is_empty() {
            "pass".into()
        } else {
            self.compliance.clone()
        }
    }
}
