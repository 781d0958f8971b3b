//! Admission — "life of a call" up to the first ring: overload, carrier, rate, campaign,
//! compliance, auction; then the call waits in `Checking` for its lookups (the fleet-wide
//! check) under a deadline, and on their answers goes on to ring or is refused.

use super::cdr::{BidRecord, Cdr};
use super::controller::{Controller, Output};
use super::leg::{contact_uri, route_set, Dialog};
use super::lookup::{Answer, Lookups, Query, RemoteCheck, RemoteResult};
use super::state::{ALeg, AState, Call, CallKey, CallState, LegRef, Timer, TimerTable};
use super::vocab::{BidOutcome, ComplianceVerdict, Disposition, EndReason, RefusedBy};
use super::Verdict;
use crate::counters::Counter;
use chrono::{DateTime, Utc};
use dce_routing::{auction, normalize, state_of_number, CampaignId, Entry, Outcome, Snapshot};
use dce_sip::build::reason_phrase;
use dce_sip::transaction::{Peer, TransactionLayer, TxId};
use dce_sip::{HeaderName, Message};
use std::sync::Arc;
use std::time::Instant;

/// The longest caller DCE keeps (CDR, logs, the buyer's From) when it is not a number.
pub const MAX_CALLER: usize = 64;

/// How DCE refuses an INVITE before ringing anyone.
pub(super) struct Rejection {
    pub code: u16,
    /// The reason phrase when not the code's usual one (`403 Stale Date`).
    pub phrase: Option<&'static str>,
    pub extra: Vec<(HeaderName, String)>,
    pub counter: Counter,
    pub reason: EndReason,
}

impl Rejection {
    pub fn new(code: u16, counter: Counter, reason: EndReason) -> Self {
        Rejection {
            code,
            phrase: None,
            extra: Vec::new(),
            counter,
            reason,
        }
    }

    pub fn with(mut self, name: HeaderName, value: &str) -> Self {
        self.extra.push((name, value.to_owned()));
        self
    }

    /// `603`: a campaign's duplicate rule (`action = "reject"`) refuses the repeat caller.
    pub fn duplicate() -> Self {
        Rejection::new(603, Counter::Duplicate603, EndReason::Duplicate)
            .with(HeaderName::Reason, "SIP;cause=603;text=\"duplicate\"")
    }

    /// The campaign's `stir` policy refuses the caller's identity (`verdict`): the RFC 8224
    /// code and phrase, and a `Reason` naming the verdict.
    pub fn stir(code: u16, phrase: &'static str, verdict: crate::stir::Verdict) -> Self {
        let text = verdict.to_string();
        let mut r = Rejection::new(code, Counter::StirRejected, EndReason::Stir(text.clone()))
            .with(HeaderName::Reason, &crate::stir::reason_header(code, &text));
        r.phrase = Some(phrase);
        r
    }

    /// `603` naming the rule.
    fn compliance(rule: RefusedBy) -> Self {
        let reason = format!("SIP;cause=603;text=\"{}\"", rule.as_str());
        Rejection::new(603, Counter::Compliance603, EndReason::Compliance)
            .with(HeaderName::Reason, &reason)
    }
}

/// A call's STIR/SHAKEN verdict is in (at admission, or when its certificate came): counted,
/// kept, and judged by the campaign's policy — the refusal, or `None` (a flag is kept for the
/// buyer INVITE's `Reason`).
fn stir_decided(
    counters: &crate::counters::Counters,
    cs: &mut super::state::CallStir,
    policy: dce_routing::StirPolicy,
    v: crate::stir::Verdict,
) -> Option<Rejection> {
    counters.m.stir_verdict(&v.to_string());
    cs.verdict = Some(v);
    match crate::stir::judge(policy, v) {
        crate::stir::Judgement::Pass => None,
        crate::stir::Judgement::Refuse(code, phrase) => Some(Rejection::stir(code, phrase, v)),
        crate::stir::Judgement::Flag(code, text) => {
            counters.inc(Counter::StirFlagged);
            cs.flag = Some((code, text));
            None
        }
    }
}

/// What a refused call's CDR says.
#[derive(Default)]
pub(super) struct Facts {
    pub carrier: String,
    pub campaign: String,
    pub caller: String,
    pub called: String,
    pub compliance: ComplianceVerdict,
    pub bids: Vec<BidRecord>,
    /// The duplicate rules that fired (the CDR's `duplicate`).
    pub duplicate: Option<String>,
    /// The STIR/SHAKEN verdict (the CDR's `stir`).
    pub stir: Option<String>,
}

/// What admission hands to a new call.
pub(super) struct Admitted {
    snapshot: Arc<Snapshot>,
    campaign: CampaignId,
    entries: Vec<Entry>,
    wall: DateTime<Utc>,
    dup: Option<Box<super::callers::Judgement>>,
    stir: Option<Box<super::state::CallStir>>,
}

/// The user part of a URI inside a header value (`"x" <sip:user@host>;tag=…`).
fn user_of(value: &str) -> Option<String> {
    let na = dce_sip::NameAddr::parse(value).ok()?;
    na.uri.user().map(dce_sip::uri::unescape)
}

/// The caller as DCE keeps it: E.164 digits when it is a number, else what was received, cut
/// to [`MAX_CALLER`] characters (a 40,000-character From user is not worth keeping whole).
pub fn caller_of(raw: &str) -> String {
    match normalize(raw) {
        Some(n) => n,
        None => match raw.char_indices().nth(MAX_CALLER) {
            Some((i, _)) => raw[..i].to_owned(),
            None => raw.to_owned(),
        },
    }
}

/// Every auction entry with its buyer, bid and outcome (a `recorded` outcome wins).
pub(super) fn bid_records(
    snap: &Snapshot,
    entries: &[Entry],
    recorded: &[Option<BidOutcome>],
) -> Vec<BidRecord> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| BidRecord {
            buyer_id: snap.buyer(e.buyer).id.clone(),
            amount_cents: e.bid_cents,
            outcome: recorded
                .get(i)
                .copied()
                .flatten()
                .unwrap_or(match e.outcome {
                    Outcome::Ranked(_) => BidOutcome::Lost,
                    Outcome::Excluded(x) => BidOutcome::Excluded(x),
                })
                .to_string(),
        })
        .collect()
}

/// Bids as events show them: before any buyer is tried, a ranked entry is `ranked` (its CDR
/// says `lost` only once the call is over).
pub(super) fn bids_json(bids: &[BidRecord]) -> Vec<serde_json::Value> {
    bids.iter()
        .map(|b| {
            let outcome = if b.outcome == "lost" { "ranked" } else { b.outcome.as_str() };
            serde_json::json!({ "buyer": b.buyer_id, "bid_cents": b.amount_cents, "outcome": outcome })
        })
        .collect()
}

impl Controller {
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
        let called = caller_of(&ruri_user);
        self.counters.m.call_offered();
        let caller_raw = msg
            .header(&HeaderName::PAssertedIdentity)
            .and_then(|v| {
                dce_sip::scan::split_outside(v, b',')
                    .and_then(|l| l.first().and_then(|f| user_of(f)))
            })
            .or_else(|| msg.from().uri.user().map(dce_sip::uri::unescape))
            .unwrap_or_default();
        let mut facts = Facts {
            caller: caller_of(&caller_raw),
            called,
            ..Facts::default()
        };
        match self.admit(&msg, from, now, &mut facts) {
            Ok(admitted) => self.create_call(layer, tx, msg, from, via, facts, admitted, now),
            Err(r) => self.refuse(layer, tx, &msg, &via, r, facts, None, now),
        }
    }

    /// Refuse an INVITE with a final response and a CDR (`rejected`). `id` is the call's id
    /// when a call object existed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refuse(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: &Message,
        via: &str,
        r: Rejection,
        facts: Facts,
        id: Option<String>,
        now: Instant,
    ) {
        self.counters.inc(r.counter);
        let tag = self.ids.tag();
        let phrase = r.phrase.unwrap_or_else(|| reason_phrase(r.code));
        let mut resp = msg.response(r.code, phrase, &tag, Some(via));
        resp.headers.extend(r.extra);
        let id = id.unwrap_or_else(|| self.ids.uuid());
        if let Err(e) = layer.respond(tx, &resp, now) {
            tracing::warn!(call = %id, error = %e, code = r.code, "rejection not sent");
        }
        let wall = self.clock.now_utc();
        let reason = r.reason.to_string();
        let compliance = facts.compliance.to_string();
        tracing::info!(call = %id, carrier_call_id = %msg.call_id(), code = r.code, %reason, "call rejected");
        self.counters.m.call_outcome(Disposition::Rejected.as_str());
        if let ComplianceVerdict::Reject(rule) = facts.compliance {
            self.counters.m.compliance_rejection(rule.as_str());
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
                    "reason": reason,
                    "compliance": compliance,
                    "stir": facts.stir,
                })
            });
        self.out.push_back(Output::Cdr(Box::new(Cdr {
            id,
            node_id: self.settings.node_id.clone(),
            disposition: Disposition::Rejected.as_str().into(),
            carrier: facts.carrier,
            campaign: facts.campaign,
            caller: facts.caller,
            called: facts.called,
            carrier_call_id: msg.call_id().to_owned(),
            buyer_id: None,
            bid_cents: 0,
            revenue_cents: 0,
            payout_cents: 0,
            margin_cents: 0,
            billable: false,
            compliance,
            bids: facts.bids,
            invite_at: wall.to_rfc3339(),
            answer_at: None,
            end_at: wall.to_rfc3339(),
            duration_s: 0.0,
            hangup_by: None,
            reason,
            carrier_code: r.code,
            buyer_code: None,
            quality: None,
            pings: Vec::new(),
            duplicate: facts.duplicate,
            fleet_caps: None,
            legs: Vec::new(),
            stir: facts.stir,
            dtmf: None,
            recording: None,
        })));
    }

    /// The admission steps of "Life of a call" up to the auction: overload, carrier, rate,
    /// campaign, compliance, eligible buyers. Fills `facts` as it goes.
    fn admit(
        &mut self,
        msg: &Message,
        from: Peer,
        now: Instant,
        facts: &mut Facts,
    ) -> Result<Admitted, Rejection> {
        // node-wide: every SIP worker's calls count against `max_calls`
        let active = self.counters.m.active_calls() as usize;
        if !self.accepting || active >= self.settings.max_calls {
            let reason = if self.accepting {
                EndReason::Overloaded
            } else {
                EndReason::ShuttingDown
            };
            return Err(
                Rejection::new(503, Counter::Overload503, reason).with(HeaderName::RetryAfter, "5")
            );
        }
        let ident = self
            .carriers
            .identify(from.addr.ip())
            .map(|(c, lim)| (c.id.clone(), lim.admit(now), c.trust_verstat));
        let Some((carrier, admitted, trust_verstat)) = ident else {
            return Err(Rejection::new(
                403,
                Counter::Invite403,
                EndReason::UnknownSource,
            ));
        };
        facts.carrier = carrier;
        if !admitted {
            return Err(
                Rejection::new(503, Counter::CarrierCps503, EndReason::CarrierOverCps)
                    .with(HeaderName::RetryAfter, "1"),
            );
        }
        let snapshot = self.snapshot.clone();
        let Some(campaign) = snapshot.campaign_for(&facts.called) else {
            return Err(Rejection::new(
                404,
                Counter::NoCampaign404,
                EndReason::NoCampaign,
            ));
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
                facts.compliance = ComplianceVerdict::Reject(RefusedBy::Rule(rule));
                return Err(Rejection::compliance(RefusedBy::Rule(rule)));
            }
            Verdict::Allow { ran } => {
                facts.compliance = ComplianceVerdict::Pass {
                    ran,
                    flagged: false,
                };
            }
        }
        let stir = match self.stir.clone() {
            Some(st) => Some(self.stir_begin(&st, msg, trust_verstat, c.stir, facts, wall, now)?),
            None => None,
        };
        let started = self.clock.instant();
        let ranked = auction(&snapshot, campaign, state, wall, &mut self.scratch);
        self.counters
            .m
            .auction(self.clock.instant().saturating_duration_since(started));
        let mut entries = self.scratch.clone();
        let mut ranked = ranked;
        if let Some(st) = stir.as_deref() {
            if let Some(v) = st.verdict {
                // the verdict is known: the static bids move with it now, the real-time ones
                // when they are in
                ranked = dce_routing::apply_trust(
                    &snapshot,
                    campaign,
                    v.trust(),
                    dce_routing::Prices::Static,
                    &mut entries,
                );
            }
        }
        let mut dup = None;
        // With Redis the fleet's memory is asked beside the other lookups (`checks_done`);
        // without it, this node's at once.
        if snapshot.dup_window_s() > 0 && ranked > 0 && self.shared.is_none() {
            let j = self.duplicates.judge(
                &snapshot,
                campaign,
                &facts.caller,
                &entries,
                wall.timestamp(),
            );
            if !j.is_empty() {
                facts.duplicate = j.cdr_text();
                tracing::debug!(caller = %crate::logging::num(&facts.caller), campaign = %facts.campaign, rules = ?facts.duplicate, "duplicate caller");
                if j.reject {
                    facts.bids = bid_records(&snapshot, &entries, &[]);
                    return Err(Rejection::duplicate());
                }
                ranked = j.apply(&mut entries);
                dup = Some(Box::new(j));
            }
        }
        if ranked == 0 {
            facts.bids = bid_records(&snapshot, &entries, &[]);
            return Err(Rejection::new(
                480,
                Counter::NoBuyer480,
                EndReason::NoEligibleBuyer,
            ));
        }
        Ok(Admitted {
            snapshot,
            campaign,
            entries,
            wall,
            dup,
            stir,
        })
    }

    /// STIR/SHAKEN at admission: the carrier's verdict (`trust_verstat`) or DCE's own as far
    /// as the certificate cache allows, judged by the campaign's policy. A refusal is the
    /// error; a call whose certificate must be fetched waits for it (`CallStir::waiting`).
    #[allow(clippy::too_many_arguments)]
    fn stir_begin(
        &mut self,
        st: &crate::stir::Stir,
        msg: &Message,
        trust_verstat: bool,
        policy: dce_routing::StirPolicy,
        facts: &mut Facts,
        wall: DateTime<Utc>,
        now: Instant,
    ) -> Result<Box<super::state::CallStir>, Rejection> {
        use crate::stir::Step;
        let ids: Vec<&str> = msg.headers_named(&HeaderName::Identity).collect();
        let carrier_says = trust_verstat
            .then(|| {
                crate::stir::carrier_verdict(
                    &ids,
                    msg.header(&HeaderName::PAssertedIdentity),
                    msg.header(&HeaderName::From).unwrap_or_default(),
                    msg.header(&HeaderName::Other("P-Attestation-Indicator".into())),
                )
            })
            .flatten();
        let step = match carrier_says {
            Some(v) => Step::Done(v),
            None => crate::stir::begin(
                st,
                &ids,
                &facts.caller,
                &facts.called,
                wall.timestamp(),
                now,
            ),
        };
        let mut cs = Box::new(super::state::CallStir {
            verdict: None,
            waiting: None,
            priced: false,
            flag: None,
        });
        match step {
            Step::Done(v) => {
                facts.stir = Some(v.to_string());
                cs.priced = true;
                if let crate::stir::Verdict::Failed(_) = v {
                    tracing::debug!(caller = %crate::logging::num(&facts.caller), verdict = %v, "STIR verification failed");
                }
                if let Some(r) = stir_decided(&self.counters, &mut cs, policy, v) {
                    return Err(r);
                }
            }
            Step::Fetch { passport, .. } => cs.waiting = Some(passport),
        }
        Ok(cs)
    }

    /// Admitted: the call exists from here. It waits for its lookups, if any, then rings.
    #[allow(clippy::too_many_arguments)]
    fn create_call(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: Message,
        from: Peer,
        via: String,
        facts: Facts,
        admitted: Admitted,
        now: Instant,
    ) {
        let Admitted {
            snapshot,
            campaign,
            mut entries,
            wall,
            dup,
            stir,
        } = admitted;
        let key = self.next_key;
        self.next_key += 1;
        let tag = self.ids.tag();
        let a_dialog = Dialog {
            call_id: msg.call_id().to_owned(),
            local: format!(
                "{};tag={tag}",
                msg.header(&HeaderName::To).unwrap_or_default()
            ),
            remote: msg.header(&HeaderName::From).unwrap_or_default().to_owned(),
            remote_target: contact_uri(&msg)
                .or_else(|| super::leg::usable_target(&msg.from().uri.raw))
                .unwrap_or_else(|| format!("sip:{}", from.addr)),
            route: route_set(&msg, false),
            cseq: 0,
            transport: from.transport,
        };
        let id = self.ids.uuid();
        self.router.add_server_invite(tx, key);
        self.router
            .add_dialog(&a_dialog.call_id, &tag, key, LegRef::A);
        let n = entries.len();
        let mut lookups = Lookups::default();
        let mut requests = Vec::new();
        if let Some(shared) = self.shared {
            // The fleet-wide checks (internal DNC overlay, frequency) are a Redis round trip:
            // the call waits in `Checking`, other calls go on.
            let q = Query::Shared(RemoteCheck {
                caller: facts.caller.clone(),
                campaign: facts.campaign.clone(),
                check_dnc: snapshot.campaign(campaign).dnc,
                max_calls_per_day: shared.max_calls_per_day,
            });
            self.add_lookup(key, q, now + shared.deadline, &mut lookups, &mut requests);
        }
        if let Some(shared) = self.shared {
            if let Some(q) =
                super::duplicates::fleet_check(&snapshot, campaign, &facts.caller, &entries)
            {
                let q = Query::Duplicates(q);
                self.add_lookup(key, q, now + shared.deadline, &mut lookups, &mut requests);
            }
        }
        // The signer's certificate, when the cache does not have it: fetched beside the rest.
        if let (Some(w), Some(st)) = (
            stir.as_ref().and_then(|s| s.waiting.as_ref()),
            self.stir.clone(),
        ) {
            let q = Query::Cert(w.header.x5u.clone());
            self.add_lookup(key, q, now + st.fetch_timeout, &mut lookups, &mut requests);
        }
        // Real-time bidders are asked at once, beside the fleet-wide check.
        let rtb_facts = crate::rtb::CallFacts {
            call_id: id.clone(),
            caller: facts.caller.clone(),
            called: facts.called.clone(),
            campaign: facts.campaign.clone(),
            carrier: facts.carrier.clone(),
            state: dce_routing::state_of_number(&facts.caller).map(|s| s.code()),
            zip: None,
            tags: Vec::new(),
            loop_via: None,
        };
        // A price promised to this carrier for this caller (`POST /v1/bid`) is kept: its buyer
        // goes first at that price, and nobody else is asked.
        let reserved = self.honour(&id, &facts, &snapshot, campaign, &mut entries, wall);
        let bids = reserved.map(|(r, terms)| {
            Box::new(super::state::CallBids {
                pings: Vec::new(),
                terms: vec![(r.buyer, terms)],
                reserved: Some(r),
                waited_us: 0,
            })
        });
        if snapshot.has_rtb() && bids.is_none() {
            self.ask_bidders(
                key,
                &snapshot,
                campaign,
                &mut entries,
                &rtb_facts,
                &mut lookups,
                &mut requests,
                now,
            );
            // A bidder over its ping cap is excluded now: ranked ones first again.
            dce_routing::reorder(&mut entries);
        }
        // The first buyer's fleet-wide slot is asked now, beside the other lookups, when its
        // price is known (no bid request is out): the first attempt waits for no extra round
        // trip. Settled when the call is checked (`settle_early_lease`).
        let lease = match self.shared {
            Some(shared) if requests.iter().all(|r| !matches!(r.query, Query::Bid(_))) => {
                let ask = super::fleet::early_ask(&snapshot, &entries, &id, wall);
                ask.map(|(lease, ask)| {
                    self.add_lookup(
                        key,
                        Query::Lease(ask),
                        now + shared.deadline,
                        &mut lookups,
                        &mut requests,
                    );
                    lease
                })
            }
            _ => None,
        };
        // The call waits for the latest of its lookups' deadlines (each bid request is also
        // bounded by its own, in the driver).
        let deadline = requests.iter().map(|r| r.deadline).max();
        let ranked = entries
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Ranked(_)))
            .count();
        self.calls.insert(
            key,
            Box::new(Call {
                id,
                snapshot,
                carrier: facts.carrier,
                campaign,
                caller: facts.caller,
                called: facts.called,
                a: ALeg {
                    tx,
                    invite: msg,
                    via,
                    peer: from,
                    tag,
                    dialog: a_dialog,
                    state: AState::Proceeding,
                },
                legs: Vec::new(),
                entries,
                outcomes: vec![None; n],
                next: 0,
                attempts: 0,
                state: CallState::Checking,
                t0: now,
                rx_at: self.rx_at.unwrap_or(now),
                wall0: wall,
                answered_at: None,
                carrier_code: 100,
                buyer_code: None,
                pending: [None, None],
                media: None,
                offer_b: None,
                held_b_ack: None,
                compliance: facts.compliance,
                timers: TimerTable::default(),
                indexed: None,
                lookups,
                bids,
                dup,
                lease,
                cap_note: None,
                reroutes: 0,
                legs_done: Vec::new(),
                talk_codec: None,
                stir,
                recording_skipped: None,
            }),
        );
        self.counters.m.call_added();
        match deadline {
            Some(at) => {
                for r in requests {
                    self.out.push_back(Output::Lookup(r));
                }
                self.arm(key, Timer::Lookups, at);
            }
            None => self.start_ringing(layer, key, ranked, now),
        }
    }

    /// Every lookup of call `key` is answered (or missed): apply the answers under the
    /// policy, then ring or refuse.
    pub(super) fn checks_done(&mut self, layer: &mut TransactionLayer, key: CallKey, now: Instant) {
        let allow_on_error = self.shared.is_some_and(|s| s.allow_on_error);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.state != CallState::Checking {
            return;
        }
        let max = self.shared.map(|s| s.max_calls_per_day).unwrap_or(0);
        let mut refusal = None;
        let mut bids = Vec::new();
        for a in std::mem::take(&mut call.lookups.answers) {
            match a {
                Answer::Bid(b) => bids.push(*b),
                Answer::Cert(signer) => {
                    let Some(st) = call.stir.as_deref_mut() else {
                        continue;
                    };
                    let Some(p) = st.waiting.take() else {
                        continue;
                    };
                    let v = crate::stir::finish(&p, &signer);
                    let policy = call.snapshot.campaign(call.campaign).stir;
                    if let Some(r) = stir_decided(&self.counters, st, policy, v) {
                        refusal = Some(r);
                    }
                }
                // the first buyer's slot, asked early: settled when the call rings
                Answer::Lease(l) => {
                    if let Some(lease) = call.lease.as_mut() {
                        lease.early = Some(l);
                    }
                }
                Answer::Duplicates(seen) => {
                    let wall = self.clock.now_utc().timestamp();
                    let j = super::duplicates::fleet_judgement(
                        &self.duplicates,
                        &self.counters,
                        call,
                        seen,
                        wall,
                    );
                    if j.reject {
                        refusal = Some(Rejection::duplicate());
                    }
                    if !j.is_empty() {
                        call.dup = Some(Box::new(j));
                    }
                }
                Answer::Shared(RemoteResult::Listed) => {
                    refusal = Some(Rejection::compliance(RefusedBy::Rule(
                        dce_compliance::Rule::Dnc,
                    )));
                    call.compliance =
                        ComplianceVerdict::Reject(RefusedBy::Rule(dce_compliance::Rule::Dnc));
                }
                Answer::Shared(RemoteResult::Count(n)) if max > 0 && n > i64::from(max) => {
                    let rule = RefusedBy::Rule(dce_compliance::Rule::TcpaFrequency);
                    refusal = Some(Rejection::compliance(rule));
                    call.compliance = ComplianceVerdict::Reject(rule);
                }
                Answer::Shared(RemoteResult::Count(_)) => {
                    if max > 0 {
                        call.compliance.ran("frequency");
                    }
                }
                Answer::Shared(RemoteResult::Error(e)) => {
                    self.counters.inc(Counter::LookupError);
                    tracing::warn!(call = %call.id, carrier_call_id = %call.a.dialog.call_id, error = %e, allow = allow_on_error, "shared compliance lookup failed");
                    if allow_on_error {
                        call.compliance.flag();
                    } else {
                        call.compliance = ComplianceVerdict::Reject(RefusedBy::LookupError);
                        refusal = Some(
                            Rejection::new(503, Counter::Overload503, EndReason::LookupFailed)
                                .with(HeaderName::RetryAfter, "5"),
                        );
                    }
                }
            }
            if refusal.is_some() {
                break;
            }
        }
        if refusal.is_none() && !bids.is_empty() {
            self.take_bids(key, bids, now);
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if refusal.is_none() {
            if let Some(st) = call.stir.as_deref_mut() {
                // the verdict moves the prices not moved yet: every one when it came late,
                // the real-time bids when only they are new; a reserved price stays
                let prices = if call.bids.as_ref().is_some_and(|b| b.reserved.is_some()) {
                    dce_routing::Prices::Keep
                } else if !st.priced {
                    dce_routing::Prices::All
                } else {
                    dce_routing::Prices::Rtb
                };
                st.priced = true;
                let trust = st.verdict.map(|v| v.trust()).unwrap_or_default();
                let ranked = dce_routing::apply_trust(
                    &call.snapshot,
                    call.campaign,
                    trust,
                    prices,
                    &mut call.entries,
                );
                if ranked == 0 {
                    refusal = Some(Rejection::new(
                        480,
                        Counter::NoBuyer480,
                        EndReason::NoEligibleBuyer,
                    ));
                }
            }
        }
        if refusal.is_none() {
            // (again) after the bids: they may have re-ranked the entries the rules act on
            if let Some(j) = call.dup.as_deref() {
                let mut ranked = j.apply(&mut call.entries);
                if let Some(r) = call.bids.as_ref().and_then(|b| b.reserved.as_ref()) {
                    // a price promised to this caller still goes first
                    ranked = dce_routing::pin_first(&mut call.entries, r.buyer);
                }
                if ranked == 0 {
                    // as when the auction leaves nobody: refused, not a failed call
                    refusal = Some(Rejection::new(
                        480,
                        Counter::NoBuyer480,
                        EndReason::NoEligibleBuyer,
                    ));
                }
            }
        }
        match refusal {
            Some(r) => self.refuse_call(layer, key, r, now),
            None => {
                let ranked = call
                    .entries
                    .iter()
                    .filter(|e| matches!(e.outcome, Outcome::Ranked(_)))
                    .count();
                self.start_ringing(layer, key, ranked, now)
            }
        }
    }

    /// Refuse call `key` before any buyer rang: the final response, a `rejected` CDR, and
    /// the call is gone.
    pub(super) fn refuse_call(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        r: Rejection,
        now: Instant,
    ) {
        let Some(mut call) = self.remove_call(key) else {
            return;
        };
        self.forget_call_routes(&call);
        if let Some(l) = call.lease.take() {
            // the first buyer's slot, asked early: never used
            super::fleet::drop_lease(&mut self.out, &call.snapshot, l);
        }
        // the auction is the refusal's reason only when it left nobody, or a duplicate rule
        // refused the caller (a compliance refusal is not the buyers' doing)
        let bids = match r.reason {
            EndReason::NoEligibleBuyer | EndReason::Duplicate => {
                bid_records(&call.snapshot, &call.entries, &call.outcomes)
            }
            _ => Vec::new(),
        };
        let facts = Facts {
            carrier: call.carrier,
            campaign: call.snapshot.campaign(call.campaign).id.clone(),
            caller: call.caller,
            called: call.called,
            compliance: call.compliance,
            bids,
            duplicate: call.dup.as_ref().and_then(|d| d.cdr_text()),
            stir: call.stir.as_ref().map(|s| s.text()),
        };
        let (tx, via) = (call.a.tx, call.a.via);
        self.refuse(
            layer,
            tx,
            &call.a.invite,
            &via,
            r,
            facts,
            Some(call.id),
            now,
        );
    }

    /// Checked: announce the call, anchor its media and ring the first buyer.
    fn start_ringing(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        ranked: usize,
        now: Instant,
    ) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let campaign = call.snapshot.campaign(call.campaign).id.clone();
        tracing::debug!(call = %call.id, carrier = %call.carrier, campaign = %campaign, caller = %crate::logging::num(&call.caller), called = %call.called, eligible = ranked, "call started");
        if self.events.subscribers() > 0 {
            // Built only for listeners: this is the call path.
            let bids = bid_records(&call.snapshot, &call.entries, &[]);
            let bidders = || bids.iter().map(|b| b.buyer_id.clone()).collect();
            self.events.emit("call.started", &campaign, bidders, || {
                serde_json::json!({
                    "call_id": call.id,
                    "carrier": call.carrier,
                    "caller": crate::logging::num(&call.caller),
                    "called": call.called,
                    "stir": call.stir.as_ref().map(|s| s.text()),
                })
            });
            self.events
                .emit("auction.completed", &campaign, bidders, || {
                    serde_json::json!({
                        "call_id": call.id,
                        "eligible": ranked,
                        "bids": bids_json(&bids),
                        "pings": call.bids.as_ref().map(|b| &b.pings),
                    })
                });
        }
        // Anchor the media: the buyers get the carrier's offer pointing at DCE.
        let inv = call.a.invite.clone();
        match self.body_for_other_side(key, LegRef::A, &inv) {
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
                self.end(key, None, EndReason::Media(e.to_string()), now);
                return;
            }
        }
        self.settle_early_lease(key, now);
        if !self.try_next(layer, key, now) {
            self.counters.inc(Counter::AllFailed480);
            self.respond_a(layer, key, 480, None, now);
            self.end(key, None, EndReason::NoBuyerTried, now);
        }
    }
}
