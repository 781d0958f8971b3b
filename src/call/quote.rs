//! Inbound bid requests (issue #14, `POST /v1/bid`): a publisher asks what a call from one of
//! its callers would be paid before it sends the call. DCE runs the call's checks and auction
//! — campaign, compliance, the static filters, the fleet-wide DNC, the real-time bidders under
//! the campaign's deadline — without placing a call, and answers with the publisher's price
//! (the winner's price less the campaign's `publisher_margin`), an expiry and where to send the
//! call; or a refusal with its reason.
//!
//! The price is a promise: a [`Reservation`](super::reservation::Reservation) for (carrier, caller) in the node-wide
//! [`Reservations`](super::reservation::Reservations). The first call from that carrier with that caller, to that campaign,
//! before the expiry, goes to the reserved buyer first, at the reserved price, and its CDR pays
//! the publisher the promised payout ([`Controller::honour`]). After the expiry — or when the
//! reserved buyer is no longer eligible — the call is auctioned afresh. A reservation is used
//! once.
//!
//! A quote is not a call: it has no SIP, no media, no CDR. It lives in the controller's
//! `quotes` table only while its lookups are out (the same lookups and timer index as calls),
//! and [`super::Held`] counts it, so the simulator proves each one is released.

use super::bids::apply_bids;
use super::controller::{Controller, Output};
use super::lookup::{Answer, LookupId, Lookups, Query, RemoteCheck, RemoteResult};
use super::reservation::{Quote, QuoteAnswer, QuoteRequest, Reservation, Reserved};
use super::state::{CallBids, CallKey, Terms};
use super::Verdict;
use chrono::{DateTime, Utc};
use dce_routing::{auction, CampaignId, Entry, Outcome, Snapshot};
use std::time::{Duration, Instant};

impl Controller {
    /// A publisher's bid request: answered now (a refusal, or a price when no lookup is
    /// needed) or when its lookups are in ([`Output::Quoted`]).
    pub fn on_quote(&mut self, req: QuoteRequest, now: Instant) {
        let id = req.id;
        if let Err(reason) = self.start_quote(req, now) {
            tracing::info!(quote = id, reason = %reason, "bid request refused");
            self.out
                .push_back(Output::Quoted(id, QuoteAnswer::Refused(reason)));
        }
    }

    fn start_quote(&mut self, req: QuoteRequest, now: Instant) -> Result<(), String> {
        if !self.accepting {
            return Err("shutting_down".into());
        }
        if req
            .loop_via
            .as_deref()
            .is_some_and(|v| crate::rtb::loops_back(v, &self.settings.node_id))
        {
            return Err("loop".into());
        }
        if !self.carriers.has(&req.carrier) {
            return Err("unknown_carrier".into());
        }
        let snapshot = self.snapshot.clone();
        let campaign = match (&req.called, &req.campaign) {
            (Some(n), _) => snapshot.campaign_for(n),
            (None, Some(c)) => snapshot.campaign_named(c),
            (None, None) => None,
        }
        .ok_or_else(|| "no_campaign".to_owned())?;
        let c = snapshot.campaign(campaign);
        let called = match &req.called {
            Some(n) => n.clone(),
            None => c.numbers.first().cloned().unwrap_or_default(),
        };
        let wall = self.clock.now_utc();
        let state = req
            .state
            .and_then(dce_routing::State::parse)
            .or_else(|| dce_routing::state_of_number(&req.caller));
        let verdict = self.compliance.check(&super::CallFacts {
            caller: &req.caller,
            called: &called,
            campaign: &c.id,
            state: state.map(|s| s.code()),
            rules: dce_compliance::CampaignRules {
                dnc: c.dnc,
                tcpa_hours: c.tcpa_hours,
                require_consent: c.require_consent,
            },
            now: wall,
        });
        if let Verdict::Reject(rule) = verdict {
            return Err(format!("compliance:{}", rule.as_str()));
        }
        let mut entries = Vec::new();
        if auction(&snapshot, campaign, state, wall, &mut entries) == 0 {
            return Err("no_eligible_buyer".into());
        }
        let key = self.next_key;
        self.next_key += 1;
        let ref_id = self.ids.uuid();
        let mut lookups = Lookups::default();
        let mut requests = Vec::new();
        if let Some(shared) = self.shared.filter(|_| c.dnc) {
            // The fleet-wide DNC only: a quote is not a call, so it is not counted against
            // the frequency cap (the call it brings is).
            let q = Query::Shared(RemoteCheck {
                caller: req.caller.clone(),
                campaign: c.id.clone(),
                check_dnc: true,
                max_calls_per_day: 0,
            });
            self.add_lookup(key, q, now + shared.deadline, &mut lookups, &mut requests);
        }
        if snapshot.has_rtb() {
            let facts = crate::rtb::CallFacts {
                call_id: ref_id.clone(),
                caller: req.caller.clone(),
                called: called.clone(),
                campaign: c.id.clone(),
                carrier: req.carrier.clone(),
                state: state.map(|s| s.code()),
                zip: req.zip.clone(),
                tags: req.tags.clone(),
                loop_via: req.loop_via.clone(),
            };
            self.ask_bidders(
                key,
                &snapshot,
                campaign,
                &mut entries,
                &facts,
                &mut lookups,
                &mut requests,
                now,
            );
            dce_routing::reorder(&mut entries);
        }
        let deadline = requests.iter().map(|r| r.deadline).max();
        self.quotes.insert(
            key,
            Box::new(Quote {
                req,
                ref_id,
                snapshot,
                campaign,
                called,
                entries,
                lookups,
                deadline,
            }),
        );
        match deadline {
            Some(at) => {
                for r in requests {
                    self.out.push_back(Output::Lookup(r));
                }
                self.index_quote(key, at);
            }
            None => self.finish_quote(key, now),
        }
        Ok(())
    }

    /// The answer to one of quote `key`'s lookups; true when it was the quote's.
    pub(super) fn quote_lookup(&mut self, key: CallKey, id: LookupId, a: Answer, now: Instant) {
        let complete = match self.quotes.get_mut(&key) {
            Some(q) => q.lookups.answer(id, a) && q.lookups.complete(),
            None => false,
        };
        if complete {
            self.finish_quote(key, now);
        }
    }

    /// Quote `key`'s deadline passed: what is still out counts as missed.
    pub(super) fn quote_deadline(&mut self, key: CallKey, now: Instant) {
        if let Some(q) = self.quotes.get_mut(&key) {
            q.deadline = None;
            for id in q.lookups.expire() {
                self.router.remove_lookup(id);
            }
        }
        self.finish_quote(key, now);
    }

    /// Every lookup of quote `key` is in (or missed): price it, reserve it, answer.
    fn finish_quote(&mut self, key: CallKey, now: Instant) {
        let Some(mut q) = self.quotes.remove(&key) else {
            return;
        };
        if let Some(at) = q.deadline.take() {
            self.unindex_quote(key, at);
        }
        let id = q.req.id;
        let answer = self.price(&mut q, now);
        match &answer {
            QuoteAnswer::Bid {
                bid_cents,
                expires_at,
                ..
            } => {
                tracing::info!(quote = %q.ref_id, carrier = %q.req.carrier, campaign = %q.snapshot.campaign(q.campaign).id, caller = %crate::logging::num(&q.req.caller), payout_cents = bid_cents, expires_at = %expires_at.to_rfc3339(), "bid request answered; price reserved")
            }
            QuoteAnswer::Refused(reason) => {
                tracing::info!(quote = %q.ref_id, carrier = %q.req.carrier, caller = %crate::logging::num(&q.req.caller), reason = %reason, "bid request refused")
            }
        }
        self.out.push_back(Output::Quoted(id, answer));
    }

    fn price(&mut self, q: &mut Quote, now: Instant) -> QuoteAnswer {
        let allow_on_error = self.shared.is_some_and(|s| s.allow_on_error);
        let mut answers = Vec::new();
        for a in std::mem::take(&mut q.lookups.answers) {
            match a {
                Answer::Bid(b) => answers.push(*b),
                Answer::Shared(RemoteResult::Listed) => {
                    return QuoteAnswer::Refused("compliance:DNC".into())
                }
                Answer::Shared(RemoteResult::Error(e)) if !allow_on_error => {
                    tracing::warn!(quote = %q.ref_id, error = %e, "shared compliance lookup failed; bid request refused");
                    return QuoteAnswer::Refused("lookup_failed".into());
                }
                Answer::Shared(_) => {}
                // a quote asks no duplicate question (the call it prices will)
                Answer::Duplicates(_) => {}
                // nor takes a fleet-wide slot (the call does, when it rings)
                Answer::Lease(_) => {}
                // nor verifies an identity (a quote has none)
                Answer::Cert(_) => {}
            }
        }
        let snap = q.snapshot.clone();
        let mut bids = CallBids::default();
        if !answers.is_empty() {
            apply_bids(
                &self.counters,
                &snap,
                &q.ref_id,
                &mut q.entries,
                &mut bids,
                answers,
                now,
            );
        }
        let wall = self.clock.now_utc();
        dce_routing::rank(&snap, q.campaign, wall, &mut q.entries);
        let c = snap.campaign(q.campaign);
        let bidders = || {
            q.entries
                .iter()
                .map(|e| snap.buyer(e.buyer).id.clone())
                .collect()
        };
        let winner = q
            .entries
            .iter()
            .find(|e| matches!(e.outcome, Outcome::Ranked(_)))
            .copied();
        self.events.emit("bid.quoted", &c.id, bidders, || {
            serde_json::json!({
                "quote": q.ref_id,
                "carrier": q.req.carrier,
                "caller": crate::logging::num(&q.req.caller),
                "bids": super::admit::bids_json(&super::admit::bid_records(&snap, &q.entries, &[])),
                "pings": bids.pings,
                "winner": winner.map(|w| snap.buyer(w.buyer).id.clone()),
            })
        });
        let Some(w) = winner else {
            return QuoteAnswer::Refused("no_eligible_buyer".into());
        };
        let terms = bids.terms(w.buyer).cloned().unwrap_or(Terms {
            destination: None,
            expires_at: None,
            min_duration_s: None,
        });
        let mut hold = Duration::from_secs(u64::from(c.reservation_s));
        if let Some(t) = terms.expires_at {
            hold = hold.min(t.saturating_duration_since(now));
        }
        let expires_at = wall + chrono::Duration::from_std(hold).unwrap_or_default();
        let payout = c.payout_of(w.bid_cents);
        let r = Reservation {
            quote: q.ref_id.clone(),
            campaign: c.id.clone(),
            buyer: snap.buyer(w.buyer).id.clone(),
            price_cents: w.bid_cents,
            payout_cents: payout,
            expires_at,
            destination: terms.destination,
            min_duration_s: terms.min_duration_s,
        };
        if !self
            .reservations
            .put(&q.req.carrier, &q.req.caller, r, wall)
        {
            return QuoteAnswer::Refused("busy".into());
        }
        let me = &self.settings.me;
        QuoteAnswer::Bid {
            bid_cents: payout,
            expires_at,
            destination: format!("sip:+{}@{}:{}", q.called, me.host, me.port),
            quote: q.ref_id.clone(),
        }
    }

    /// A new call from `facts.carrier` with `facts.caller` to `campaign`: if a reservation holds for it
    /// and its buyer is still eligible, that buyer goes first at the reserved price, and the
    /// real-time bidders are not asked (those with a static bid stay behind it at that bid as
    /// fallbacks; the others are `excluded:no_bid`). Returns what the call then owes the
    /// publisher, with the terms of the reserved bid; `None`: auctioned as usual.
    pub(super) fn honour(
        &self,
        call: &str,
        facts: &super::admit::Facts,
        snap: &Snapshot,
        campaign: CampaignId,
        entries: &mut Vec<Entry>,
        wall: DateTime<Utc>,
    ) -> Option<(Reserved, Terms)> {
        let r = self.reservations.take(&facts.carrier, &facts.caller)?;
        let c = snap.campaign(campaign);
        let afresh = |why: &str| {
            tracing::info!(call = %call, quote = %r.quote, buyer = %r.buyer, "reservation not used ({why}): the call is auctioned afresh");
        };
        if r.expires_at <= wall {
            afresh("expired");
            return None;
        }
        if r.campaign != c.id {
            afresh("another campaign");
            return None;
        }
        let Some(buyer) = snap.buyer_named(&r.buyer) else {
            afresh("the buyer is no longer configured");
            return None;
        };
        let mut trial = entries.clone();
        for e in trial.iter_mut() {
            if !matches!(e.outcome, Outcome::Ranked(_)) {
                continue;
            }
            let b = snap.buyer(e.buyer);
            if e.buyer == buyer {
                e.bid_cents = r.price_cents;
            } else if b.rtb.is_some() {
                if b.bid_cents > 0 {
                    e.bid_cents = b.bid_cents;
                } else {
                    e.outcome = Outcome::Excluded(dce_routing::Exclusion::NoBid);
                }
            }
        }
        dce_routing::rank(snap, campaign, wall, &mut trial);
        match trial.iter().find(|e| e.buyer == buyer).map(|e| e.outcome) {
            Some(Outcome::Ranked(_)) => {}
            Some(Outcome::Excluded(x)) => {
                afresh(&format!("the buyer is excluded:{}", x.as_str()));
                return None;
            }
            None => {
                afresh("the buyer no longer buys this campaign");
                return None;
            }
        }
        dce_routing::pin_first(&mut trial, buyer);
        *entries = trial;
        tracing::info!(call = %call, quote = %r.quote, buyer = %r.buyer, price_cents = r.price_cents, payout_cents = r.payout_cents, "call routed on its reservation");
        Some((
            Reserved {
                buyer,
                payout_cents: r.payout_cents,
                quote: r.quote,
            },
            Terms {
                destination: r.destination,
                expires_at: None,
                min_duration_s: r.min_duration_s,
            },
        ))
    }
}
