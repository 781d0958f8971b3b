//! [`Controller`]: the call table, the router, the timer index and the output queue, and the
//! entry points the edge core calls. What happens to a call lives in the files named in the
//! module docs; this one only holds the state and dispatches.

use super::carrier::Carriers;
use super::cdr::Cdr;
use super::leg::Me;
use super::lookup::{Answer, LookupId, LookupRequest};
use super::router::{Router, RouterSizes};
use super::state::{Call, CallKey, CallState, Timer};
use super::Compliance;
use crate::clock::Clock;
use crate::config::CarrierConfig;
use crate::counters::Counters;
use crate::ids::Ids;
use dce_media::{MediaEngine, MediaId};
use dce_routing::{Entry, Live, Snapshot};
use dce_sip::transaction::{TransactionLayer, Transmit};
use std::collections::{BTreeSet, HashMap, VecDeque};
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
    /// No response at all from a buyer's DNS target for this long: try its next target.
    pub target_timeout: Duration,
    /// The address DCE puts in SDP `c=` lines.
    pub media_ip: IpAddr,
    /// The largest request DCE sends a buyer over UDP (RFC 3261 §18.1.1: 1300 bytes when the
    /// path MTU is unknown); a larger INVITE fails that attempt (`attempted:too_large`).
    pub max_udp_request: usize,
    /// Where recordings go (`[media] recordings_dir`).
    pub recordings_dir: std::path::PathBuf,
}

/// How the fleet-wide checks are run.
#[derive(Debug, Clone, Copy)]
pub struct SharedChecks {
    /// Calls per number per campaign per 24 h across the fleet; 0 = off.
    pub max_calls_per_day: u32,
    /// `on_lookup_error = "allow_and_flag"`.
    pub allow_on_error: bool,
    /// How long a call waits for the answer (a core timer; then `on_lookup_error` applies).
    pub deadline: Duration,
    /// What a capped buyer's attempt does when Redis cannot say whether its caps allow it
    /// (`[storage] on_cap_error`).
    pub on_cap_error: CapPolicy,
}

/// `[storage] on_cap_error`: what happens to a capped buyer when the fleet's caps (Redis)
/// cannot be read in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CapPolicy {
    /// Ring it if this node's share of each cap (the cap divided by the live nodes last
    /// seen, rounded up) allows it.
    #[default]
    Local,
    /// Skip it (`excluded:cap_unavailable`).
    SkipBuyer,
}

impl CapPolicy {
    /// Its name in config and CDRs.
    pub fn as_str(self) -> &'static str {
        match self {
            CapPolicy::Local => "local",
            CapPolicy::SkipBuyer => "skip_buyer",
        }
    }
}

/// What the controller (and the edge core around it) hands the driver.
#[derive(Debug)]
pub enum Output {
    /// Bytes to send.
    Transmit(Transmit),
    /// A finished call's record, for the CDR sinks.
    Cdr(Box<Cdr>),
    /// A lookup to run; answer with `EdgeCore::handle_input(Input::Lookup …)`.
    Lookup(LookupRequest),
    /// The answer to bid request `id` (`Input::Quote`).
    Quoted(u64, super::reservation::QuoteAnswer),
    /// A call reached a stage the duplicate rules remember: write it to the fleet's memory
    /// (Redis), without waiting.
    Remember(super::lookup::DupWrite),
    /// A write to the fleet-wide caps (Redis) nobody waits for.
    Caps(super::lookup::CapWrite),
}

/// A finished call's CDR, completed when its media report arrives.
pub(super) struct PendingCdr {
    pub cdr: Cdr,
    pub bill_one_way_audio: bool,
    /// The winner's counters and the local day its bid was committed to, for a refund.
    /// And the buyer's id when its caps are the fleet's (the refund goes to Redis too).
    pub refund: Option<(
        Arc<dce_routing::BuyerLive>,
        dce_routing::Keys,
        Option<String>,
    )>,
}

/// What the controller still holds: all zero once every call is over (leak checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    /// Calls in the table.
    pub calls: usize,
    /// Calls with an entry in the timer index.
    pub timers: usize,
    /// Router entries.
    pub router: RouterSizes,
    /// Media sessions of live calls.
    pub media: usize,
    /// CDRs waiting for a media report.
    pub awaiting_media: usize,
    /// Bid requests (`POST /v1/bid`) waiting for their lookups.
    pub quotes: usize,
}

/// The call controller. See the module docs.
pub struct Controller {
    pub(super) settings: Settings,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) live: Arc<Live>,
    pub(super) carriers: Carriers,
    pub(super) compliance: Box<dyn Compliance>,
    /// Boxed: a table of large inline values stalls the worker while it grows (see the
    /// transaction layer in `dce-sip`).
    pub(super) calls: HashMap<CallKey, Box<Call>>,
    pub(super) next_key: u64,
    pub(super) router: Router,
    /// Each call's earliest timer: (deadline, call).
    timers: BTreeSet<(Instant, CallKey)>,
    pub(super) out: VecDeque<Output>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) ids: Ids,
    pub(super) counters: Arc<Counters>,
    pub(super) scratch: Vec<Entry>,
    pub(super) accepting: bool,
    pub(super) media: Box<dyn MediaEngine>,
    pub(super) by_media: HashMap<MediaId, CallKey>,
    pub(super) awaiting_media: HashMap<MediaId, Box<PendingCdr>>,
    pub(super) shared: Option<SharedChecks>,
    /// Buyer hosts resolved in the background (`None`: no buyer is given by name).
    pub(super) dns: Option<Arc<crate::dns::Table>>,
    /// On the worker that sends the buyers' OPTIONS pings.
    pub(super) pinger: Option<super::pinger::Pinger>,
    pub(super) next_lookup: u64,
    pub(super) events: crate::events::Bus,
    /// When the message being handled reached the socket (set by the edge core per message).
    pub(super) rx_at: Option<Instant>,
    /// Buyer INVITEs handed out since the driver last took them.
    pub(super) invite_marks: Vec<InviteMark>,
    /// Bid requests waiting for their lookups (keys from the calls' key space).
    pub(super) quotes: HashMap<CallKey, Box<super::reservation::Quote>>,
    /// Prices promised by `POST /v1/bid` (node-wide).
    pub(super) reservations: Arc<super::reservation::Reservations>,
    /// The node's memory of callers for the duplicate rules (shared by every worker).
    pub(super) duplicates: Arc<super::callers::Memory>,
    /// Live nodes in the fleet as the last lease answer said (0 = none came yet).
    pub(super) fleet_nodes: u32,
    /// STIR/SHAKEN verification (`[stir]`; `None`: callers' `Identity` is not verified).
    pub(super) stir: Option<Arc<crate::stir::Stir>>,
}

/// A buyer INVITE the controller handed out: when its call's INVITE arrived, and whether it is
/// a failover (not the call's first buyer). The driver takes these after sending
/// ([`Controller::take_invite_marks`]) and measures the delay up to the send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InviteMark {
    /// The carrier INVITE's arrival.
    pub received: Instant,
    /// Not the call's first buyer.
    pub failover: bool,
    /// What the call waited for its real-time bidders (the slowest exchange), microseconds.
    pub bidders_us: Option<u32>,
}

impl Controller {
    /// A controller over `snapshot`, counting into `counters`; the driver injects the wall
    /// clock and the id generator.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        snapshot: Arc<Snapshot>,
        live: Arc<Live>,
        carriers: &[CarrierConfig],
        compliance: Box<dyn Compliance>,
        clock: Arc<dyn Clock>,
        ids: Ids,
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
            router: Router::default(),
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            clock,
            ids,
            counters,
            scratch: Vec::new(),
            accepting: true,
            media,
            by_media: HashMap::new(),
            awaiting_media: HashMap::new(),
            shared: None,
            dns: None,
            pinger: None,
            next_lookup: 1,
            events: crate::events::Bus::default(),
            rx_at: None,
            invite_marks: Vec::new(),
            quotes: HashMap::new(),
            reservations: Arc::default(),
            duplicates: Arc::default(),
            fleet_nodes: 0,
            stir: None,
        }
    }

    /// Verify callers' `Identity` with `stir` (its certificate cache shared by the node's
    /// workers), or not (`None`).
    pub fn set_stir(&mut self, stir: Option<Arc<crate::stir::Stir>>) {
        self.stir = stir;
    }

    /// Share `r` with the node's other workers (a quote made on one holds for a call that
    /// arrives on another).
    pub fn set_reservations(&mut self, r: Arc<super::reservation::Reservations>) {
        self.reservations = r;
    }

    /// Share the node's memory of callers (duplicate rules) with the other workers.
    pub fn set_duplicates(&mut self, m: Arc<super::callers::Memory>) {
        self.duplicates = m;
    }

    /// Ask `query` for call or quote `key`, answered by `deadline`: a new lookup id, recorded
    /// as outstanding in `lookups`, its request queued in `requests`, its answer routed to
    /// `key`.
    pub(super) fn add_lookup(
        &mut self,
        key: CallKey,
        query: super::lookup::Query,
        deadline: Instant,
        lookups: &mut super::lookup::Lookups,
        requests: &mut Vec<LookupRequest>,
    ) {
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        lookups.outstanding.push((id, query.clone()));
        requests.push(LookupRequest {
            id,
            query,
            deadline,
        });
        self.router.add_lookup(id, key);
    }

    /// Index quote `key`'s deadline.
    pub(super) fn index_quote(&mut self, key: CallKey, at: Instant) {
        self.timers.insert((at, key));
    }

    /// Take quote `key`'s deadline out of the index.
    pub(super) fn unindex_quote(&mut self, key: CallKey, at: Instant) {
        self.timers.remove(&(at, key));
    }

    /// The message about to be handled reached the socket at `at` (`None` once it is done).
    pub fn set_received_at(&mut self, at: Option<Instant>) {
        self.rx_at = at;
    }

    /// The buyer INVITEs handed out since the last call, oldest first.
    pub fn take_invite_marks(&mut self) -> std::vec::Drain<'_, InviteMark> {
        self.invite_marks.drain(..)
    }

    /// The id generator (the edge core's stateless answers use it too).
    pub fn ids(&mut self) -> &mut Ids {
        &mut self.ids
    }

    /// The id of call `key` for a log line (empty once it is gone).
    pub(super) fn call_id(&self, key: CallKey) -> String {
        self.calls
            .get(&key)
            .map(|c| c.id.clone())
            .unwrap_or_default()
    }

    /// Publish live events on `bus`.
    pub fn set_events(&mut self, bus: crate::events::Bus) {
        self.events = bus;
    }

    /// Swap in a new snapshot and carrier list (reload). Calls in progress keep theirs.
    pub fn reload(&mut self, snapshot: Arc<Snapshot>, carriers: &[CarrierConfig]) {
        // Bid overrides last until the next reload; pauses stay (operational state).
        self.live.clear_bid_overrides();
        self.snapshot = snapshot;
        self.carriers = Carriers::new(carriers, Some(&self.carriers));
        self.sync_pings();
    }

    /// Run the fleet-wide checks through the driver (Redis configured).
    pub fn set_shared(&mut self, shared: Option<SharedChecks>) {
        self.shared = shared;
    }

    /// Read buyer host names' targets from `table`.
    pub fn set_dns(&mut self, table: Arc<crate::dns::Table>) {
        self.dns = Some(table);
    }

    /// Stop taking new calls (they get 503), and stop pinging buyers.
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
        self.pinger = None;
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Ended calls whose CDR waits for the media report.
    pub fn pending_cdrs(&self) -> usize {
        self.awaiting_media.len()
    }

    /// What the controller still holds (all zero when idle: leak checks).
    pub fn held(&self) -> Held {
        Held {
            calls: self.calls.len(),
            timers: self.timers.len(),
            router: self.router.sizes(),
            media: self.by_media.len(),
            awaiting_media: self.awaiting_media.len(),
            quotes: self.quotes.len(),
        }
    }

    /// Hand the media commands of this turn to the relay (one wake-up for the batch).
    pub fn flush_media(&mut self) {
        self.media.flush();
    }

    /// Write every CDR still waiting for its media report, without it (shutdown).
    pub fn flush_cdrs(&mut self) {
        for (_, p) in self.awaiting_media.drain() {
            tracing::warn!(call = %p.cdr.id, "CDR written without its media report (shutdown)");
            self.out.push_back(Output::Cdr(Box::new(p.cdr)));
        }
    }

    /// The live counters.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Next output (stateless sends, CDRs, lookups).
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub(super) fn transmit(&mut self, t: Transmit) {
        self.out.push_back(Output::Transmit(t));
    }

    /// When [`Controller::handle_timeout`] must run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.timers.first().map(|(at, _)| *at);
        match self.pinger.as_ref().and_then(|p| p.next()) {
            Some(p) => Some(calls.map_or(p, |c| c.min(p))),
            None => calls,
        }
    }

    /// Arm call `key`'s timer `t` at `at`.
    pub(super) fn arm(&mut self, key: CallKey, t: Timer, at: Instant) {
        if let Some(c) = self.calls.get_mut(&key) {
            c.timers.set(t, at);
        }
        self.reindex(key);
    }

    /// Disarm call `key`'s timer `t`.
    pub(super) fn disarm(&mut self, key: CallKey, t: Timer) {
        if let Some(c) = self.calls.get_mut(&key) {
            c.timers.stop(t);
        }
        self.reindex(key);
    }

    /// Keep the timer index in step with call `key`'s table (or remove it, the call gone).
    pub(super) fn reindex(&mut self, key: CallKey) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        let next = c.timers.next();
        if c.indexed != next {
            if let Some(old) = c.indexed {
                self.timers.remove(&(old, key));
            }
            if let Some(n) = next {
                self.timers.insert((n, key));
            }
            c.indexed = next;
        }
    }

    /// Take call `key` out of the table and out of the timer index.
    pub(super) fn remove_call(&mut self, key: CallKey) -> Option<Call> {
        let call = self.calls.remove(&key)?;
        self.counters.m.call_removed();
        if let Some(at) = call.indexed {
            self.timers.remove(&(at, key));
        }
        Some(*call)
    }

    /// Fire due call timers.
    pub fn handle_timeout(&mut self, layer: &mut TransactionLayer, now: Instant) {
        if self
            .pinger
            .as_ref()
            .and_then(|p| p.next())
            .is_some_and(|at| at <= now)
        {
            self.ping_tick(layer, now);
        }
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, key));
            let due = match self.calls.get_mut(&key) {
                Some(c) => {
                    c.indexed = None;
                    c.timers.take_due(now)
                }
                None => {
                    if let Some(q) = self.quotes.get_mut(&key) {
                        q.deadline = None;
                        self.quote_deadline(key, now);
                    }
                    continue;
                }
            };
            self.reindex(key);
            for t in due {
                if !self.calls.contains_key(&key) {
                    break;
                }
                match t {
                    Timer::Ring => self.ring_timeout(layer, key, now),
                    Timer::Retransmit2xxA => self.retransmit_2xx(layer, key, 0, now),
                    Timer::Retransmit2xxB => self.retransmit_2xx(layer, key, 1, now),
                    Timer::GiveUp2xxA => self.no_ack(layer, key, 0, now),
                    Timer::GiveUp2xxB => self.no_ack(layer, key, 1, now),
                    Timer::MaxDuration => self.max_duration(layer, key, now),
                    Timer::Lookups => self.lookups_expired(layer, key, now),
                    Timer::Target => self.target_timeout(layer, key, now),
                }
            }
        }
    }

    /// The answer to a lookup.
    pub fn on_lookup(
        &mut self,
        layer: &mut TransactionLayer,
        id: LookupId,
        answer: Answer,
        now: Instant,
    ) {
        let Some(key) = self.router.remove_lookup(id) else {
            tracing::debug!(
                lookup = id.0,
                "answer for a lookup no call waits for; ignored"
            );
            return;
        };
        let complete = match self.calls.get_mut(&key) {
            Some(c) => c.lookups.answer(id, answer) && c.lookups.complete(),
            None => {
                self.quote_lookup(key, id, answer, now);
                false
            }
        };
        if complete {
            self.disarm(key, Timer::Lookups);
            self.lookups_done(layer, key, now);
        }
    }

    /// Every lookup of call `key` is answered or missed: go on from where it waits.
    fn lookups_done(&mut self, layer: &mut TransactionLayer, key: CallKey, now: Instant) {
        match self.calls.get(&key).map(|c| c.state) {
            Some(CallState::Checking) => self.checks_done(layer, key, now),
            Some(CallState::Leasing) => self.lease_done(layer, key, now),
            _ => {}
        }
    }

    fn lookups_expired(&mut self, layer: &mut TransactionLayer, key: CallKey, now: Instant) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        let missed = c.lookups.expire();
        tracing::info!(call = %c.id, missed = missed.len(), "lookup deadline passed");
        for id in missed {
            self.router.remove_lookup(id);
        }
        self.lookups_done(layer, key, now);
    }
}
