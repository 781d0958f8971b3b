//! Real-time bids in a call (issue #14): which buyers are asked, what their answers do to the
//! ranking, and the terms a winning bid carries into the ring tree (its destination, expiry
//! and minimum billable duration). The HTTP itself is the driver's (`crate::rtb::client`);
//! here a bid request is a lookup like any other, waited for under the campaign's
//! `auction_deadline_ms`.

use super::cdr::PingRecord;
use super::controller::Controller;
use super::lookup::{BidAnswer, BidQuery, LookupRequest, Lookups, Query};
use super::state::{CallBids, CallKey, Terms};
use crate::rtb::{CallFacts, PingResult};
use dce_routing::{CampaignId, Entry, Exclusion, Outcome, Snapshot};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Controller {
    /// The bid requests for a new call: one per ranked real-time bidder, each waited for at
    /// most `min(its timeout_ms, the campaign's auction_deadline_ms)`. Pushed to `requests`
    /// and `lookups`; none when no bidder is eligible, so static-only calls never wait.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ask_bidders(
        &mut self,
        key: CallKey,
        snap: &Snapshot,
        campaign: CampaignId,
        entries: &mut [Entry],
        facts: &CallFacts,
        lookups: &mut Lookups,
        requests: &mut Vec<LookupRequest>,
        now: Instant,
    ) {
        let deadline_ms = snap.campaign(campaign).auction_deadline_ms;
        let second = self.clock.now_utc().timestamp().max(0) as u64;
        for e in entries.iter_mut() {
            let Some(rtb) = snap.buyer(e.buyer).rtb.as_ref() else {
                continue;
            };
            if !matches!(e.outcome, Outcome::Ranked(_)) {
                continue;
            }
            let live = snap.live(e.buyer);
            if !live.try_ping(rtb.max_in_flight, rtb.max_pings_per_s, second) {
                tracing::debug!(buyer = %snap.buyer(e.buyer).id, in_flight = live.pings_in_flight(), "real-time bidder over its ping cap (excluded:ping_cap)");
                e.outcome = Outcome::Excluded(Exclusion::PingCap);
                continue;
            }
            let slot = Arc::new(super::lookup::PingSlot(live.clone()));
            let wait_ms = rtb.timeout_ms.min(deadline_ms);
            let q = Query::Bid(Box::new(BidQuery {
                buyer: e.buyer,
                rtb: Arc::clone(rtb),
                facts: facts.clone(),
                wait_ms,
                slot,
            }));
            let deadline = now + Duration::from_millis(u64::from(wait_ms));
            self.add_lookup(key, q, deadline, lookups, requests);
        }
    }

    /// The bidders' answers to call `key`: see [`apply_bids`]; then the floor and budgets apply
    /// to the new prices and the entries are ranked again.
    pub(super) fn take_bids(&mut self, key: CallKey, answers: Vec<BidAnswer>, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let snap = call.snapshot.clone();
        let bids = call.bids.get_or_insert_with(Box::default);
        apply_bids(
            &self.counters,
            &snap,
            &call.id,
            &mut call.entries,
            bids,
            answers,
            now,
        );
        let wall = call.wall(now);
        dce_routing::rank(&snap, call.campaign, wall, &mut call.entries);
    }
}

/// The bidders' answers (for the call or quote `id`): each ping recorded in `bids`; a bid sets
/// its buyer's price in `entries` (and its terms); a bidder with no bid keeps its static bid as
/// a fallback, or is `excluded:no_bid`. The caller ranks the entries again.
pub(super) fn apply_bids(
    counters: &crate::counters::Counters,
    snap: &Snapshot,
    id: &str,
    entries: &mut [Entry],
    bids: &mut CallBids,
    answers: Vec<BidAnswer>,
    now: Instant,
) {
    for a in answers {
        let buyer = snap.buyer(a.buyer);
        let p = &a.pinged;
        let entry = entries.iter_mut().find(|e| e.buyer == a.buyer);
        let mut amount = None;
        match (&p.result, entry) {
            (PingResult::Bid(b), Some(e)) => {
                e.bid_cents = b.cents;
                amount = Some(b.cents);
                bids.terms.push((
                    a.buyer,
                    Terms {
                        destination: b.destination.clone(),
                        expires_at: b
                            .expires_in_s
                            .map(|s| now + Duration::from_secs(u64::from(s))),
                        min_duration_s: b.min_duration_s,
                    },
                ));
            }
            (_, Some(e)) if buyer.bid_cents > 0 => e.bid_cents = buyer.bid_cents,
            (_, Some(e)) => e.outcome = Outcome::Excluded(Exclusion::NoBid),
            (_, None) => {}
        }
        let outcome = p.result.outcome();
        match &p.result {
            PingResult::Malformed(why) => {
                tracing::info!(call = %id, buyer = %buyer.id, latency_ms = p.latency_ms, status = ?p.status, why = %why, "bid answer malformed; ignored")
            }
            PingResult::Error(_) | PingResult::Timeout => {
                tracing::info!(call = %id, buyer = %buyer.id, latency_ms = p.latency_ms, outcome = %outcome, "no bid from real-time bidder")
            }
            _ => {
                tracing::debug!(call = %id, buyer = %buyer.id, latency_ms = p.latency_ms, outcome = %outcome, amount = ?amount, "bid answer")
            }
        }
        counters
            .m
            .rtb_ping(&buyer.id, p.result.kind(), p.latency_ms);
        bids.waited_us = bids.waited_us.max(p.latency_us);
        bids.pings.push(PingRecord {
            buyer_id: buyer.id.clone(),
            latency_ms: p.latency_ms,
            status: p.status,
            outcome,
            amount_cents: amount,
        });
    }
}
