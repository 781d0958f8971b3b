//! Fleet-wide buyer caps in the call path (`[storage] redis_url` set): before a capped buyer
//! is rung, the call asks Redis for a slot (a lease) and the fleet's answered counts and spend
//! in one round trip, waiting in `Leasing` under `redis_timeout_ms`; an answered call is
//! counted, a refund given back, a lease released, all without waiting (`Output::Caps`).
//! When Redis cannot answer, `on_cap_error` decides: `local` rings the buyer within this
//! node's share of each cap, `skip_buyer` moves on (`excluded:cap_unavailable`).
//!
//! The I/O (one ordered queue of writes and lease renewals) lives in `crate::fleet`.

use super::controller::{CapPolicy, Controller, Output};
use super::lookup::{Answer, CapLimits, CapWrite, LeaseAnswer, LeaseAsk, LeaseResult};
use super::state::{CallKey, CallState, Lease};
use super::vocab::{BidOutcome, EndReason};
use crate::counters::Counter;
use dce_routing::{local_keys, Buyer, BuyerLive, Exclusion, Keys, Outcome};
use dce_sip::transaction::TransactionLayer;
use std::collections::VecDeque;
use std::time::Instant;

/// Count an answered call or give a bid back in the fleet's counters, when the buyer's caps
/// are the fleet's (`fleet`: Redis is configured).
pub(super) fn count(
    out: &mut VecDeque<Output>,
    fleet: bool,
    buyer: &Buyer,
    keys: Keys,
    calls: i64,
    cents: i64,
) {
    if fleet && buyer.capped() {
        out.push_back(Output::Caps(CapWrite::Count {
            buyer: buyer.id.clone(),
            keys,
            calls,
            cents,
        }));
    }
}

/// Does this node's share of each of `buyer`'s caps allow one more attempt (its local slot
/// already taken)? The share is the cap divided by the live nodes, rounded up.
pub(super) fn within_share(
    buyer: &Buyer,
    live: &BuyerLive,
    nodes: u32,
    at: Keys,
    bid_cents: u32,
) -> Result<(), Exclusion> {
    let n = nodes.max(1);
    let share = |cap: u32| cap.div_ceil(n);
    let share_cents = |cap: u64| cap.div_ceil(u64::from(n));
    let bid = u64::from(bid_cents);
    if buyer.max_concurrent > 0 && live.active() > share(buyer.max_concurrent) {
        Err(Exclusion::Concurrency)
    } else if buyer.hourly_cap > 0 && live.answered_in_hour(at.hour) >= share(buyer.hourly_cap) {
        Err(Exclusion::HourlyCap)
    } else if buyer.daily_cap > 0 && live.answered_on_day(at.day) >= share(buyer.daily_cap) {
        Err(Exclusion::DailyCap)
    } else if buyer.monthly_cap > 0 && live.answered_in_month(at.month) >= share(buyer.monthly_cap)
    {
        Err(Exclusion::MonthlyCap)
    } else if buyer.daily_budget_cents > 0
        && live.spend_on_day(at.day) + bid > share_cents(buyer.daily_budget_cents)
    {
        Err(Exclusion::Budget)
    } else if buyer.monthly_budget_cents > 0
        && live.spend_in_month(at.month) + bid > share_cents(buyer.monthly_budget_cents)
    {
        Err(Exclusion::MonthlyBudget)
    } else {
        Ok(())
    }
}

/// Give back a lease the call will not use: its buyer's local slot, and its slot in Redis.
pub(super) fn drop_lease(out: &mut VecDeque<Output>, snap: &dce_routing::Snapshot, l: Lease) {
    snap.live(l.buyer).release();
    release_in_redis(out, l);
}

/// Give a lease's slot in Redis back (when it took one).
pub(super) fn release_in_redis(out: &mut VecDeque<Output>, l: Lease) {
    if l.slots {
        out.push_back(Output::Caps(CapWrite::Release {
            member: l.member,
            buyer: l.buyer_id,
        }));
    }
}

/// The lease for `buyer` of call `call_id` (not asked yet).
pub(super) fn lease_for(
    call_id: &str,
    idx: usize,
    b: dce_routing::BuyerId,
    buyer: &Buyer,
) -> Lease {
    Lease {
        entry: idx,
        buyer: b,
        buyer_id: buyer.id.clone(),
        slots: buyer.max_concurrent > 0,
        member: format!("{call_id}:{}", buyer.id),
        decided: false,
        early: None,
    }
}

impl Controller {
    /// The lease call `key` waited for came (or its deadline passed): ring that buyer, or
    /// move on to the next.
    pub(super) fn lease_done(&mut self, layer: &mut TransactionLayer, key: CallKey, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.state != CallState::Leasing {
            return;
        }
        let answer = std::mem::take(&mut call.lookups.answers)
            .into_iter()
            .find_map(|a| match a {
                Answer::Lease(l) => Some(l),
                _ => None,
            })
            .unwrap_or(LeaseAnswer {
                result: LeaseResult::Error("no answer".into()),
                nodes: 0,
            });
        self.apply_lease(key, answer, now);
        if !self.try_next(layer, key, now) {
            let tried = self.calls.get(&key).is_some_and(|c| !c.legs.is_empty());
            let reason = if tried {
                EndReason::EveryAttemptFailed
            } else {
                EndReason::NoBuyerTried
            };
            self.nobody_left(layer, key, reason, now);
        }
    }

    /// The call is checked and about to ring: its early lease (asked for the first ranked
    /// buyer at admission) is used when that buyer still goes first, else given back.
    pub(super) fn settle_early_lease(&mut self, key: CallKey, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(lease) = call.lease.as_mut().filter(|l| !l.decided) else {
            return;
        };
        // the entries may have been reordered (the fleet's duplicate answer): by buyer
        let first = call
            .entries
            .iter()
            .position(|e| matches!(e.outcome, Outcome::Ranked(_)));
        if first.is_some_and(|i| call.entries[i].buyer == lease.buyer) {
            lease.entry = first.unwrap_or_default();
            let answer = lease.early.take().unwrap_or(LeaseAnswer {
                result: LeaseResult::Error("no answer".into()),
                nodes: 0,
            });
            self.apply_lease(key, answer, now);
        } else if let Some(l) = call.lease.take() {
            // another buyer goes first now (the fleet's duplicate answer): not used
            drop_lease(&mut self.out, &call.snapshot, l);
        }
    }

    /// What a lease's answer does to call `key`'s lease: decided (the buyer may ring), or the
    /// buyer is excluded and what it held given back.
    fn apply_lease(&mut self, key: CallKey, answer: LeaseAnswer, now: Instant) {
        let policy = self.shared.map(|s| s.on_cap_error).unwrap_or_default();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if answer.nodes > 0 {
            self.fleet_nodes = answer.nodes;
        }
        let Some((idx, b)) = call.lease.as_ref().map(|l| (l.entry, l.buyer)) else {
            return;
        };
        let at = local_keys(call.snapshot.buyer(b).tz(), call.wall(now));
        let snap = call.snapshot.clone();
        let buyer = snap.buyer(b);
        let live = snap.live(b);
        let failed = matches!(answer.result, LeaseResult::Error(_));
        let verdict = match answer.result {
            LeaseResult::Granted => Ok(()),
            LeaseResult::Full(x) => {
                tracing::info!(call = %call.id, buyer = %buyer.id, cap = x.as_str(), "buyer skipped: its cap is reached across the fleet (excluded:{})", x.as_str());
                Err(x)
            }
            LeaseResult::Error(e) => {
                self.counters.inc(Counter::CapLookupError);
                call.cap_note = Some(match policy {
                    CapPolicy::Local => "lookup_failed:local",
                    CapPolicy::SkipBuyer => "lookup_failed:skip_buyer",
                });
                tracing::warn!(call = %call.id, buyer = %buyer.id, error = %e, policy = policy.as_str(), nodes = self.fleet_nodes, "fleet-wide caps could not be read (Redis)");
                match policy {
                    CapPolicy::SkipBuyer => Err(Exclusion::CapUnavailable),
                    CapPolicy::Local => within_share(
                        buyer,
                        live,
                        self.fleet_nodes,
                        at,
                        call.entries[idx].bid_cents,
                    ),
                }
            }
        };
        match verdict {
            Ok(()) => {
                if let Some(lease) = call.lease.as_mut() {
                    lease.decided = true;
                    if failed && lease.slots {
                        // rung on this node's share: Redis holds the slot once it answers again
                        self.out.push_back(Output::Caps(CapWrite::HoldLocal {
                            member: lease.member.clone(),
                            buyer: buyer.id.clone(),
                        }));
                    }
                }
            }
            Err(x) => {
                call.outcomes[idx] = Some(BidOutcome::Excluded(x));
                call.next = idx + 1;
                if let Some(l) = call.lease.take() {
                    if failed {
                        // Redis may yet take it: give it back there too
                        drop_lease(&mut self.out, &snap, l);
                    } else {
                        live.release();
                    }
                }
            }
        }
    }
}

/// The lease for the first ranked buyer of a new call, when that buyer is capped and its
/// local slot is free (taken here; held until the lease is settled).
pub(super) fn early_ask(
    snap: &dce_routing::Snapshot,
    entries: &[dce_routing::Entry],
    call_id: &str,
    wall: chrono::DateTime<chrono::Utc>,
) -> Option<(Lease, LeaseAsk)> {
    let idx = entries
        .iter()
        .position(|e| matches!(e.outcome, Outcome::Ranked(_)))?;
    let e = entries[idx];
    let buyer = snap.buyer(e.buyer);
    if !buyer.capped() || !snap.live(e.buyer).try_reserve(buyer.max_concurrent) {
        return None;
    }
    let lease = lease_for(call_id, idx, e.buyer, buyer);
    let ask = LeaseAsk {
        member: lease.member.clone(),
        buyer: buyer.id.clone(),
        limits: CapLimits::of(buyer),
        keys: local_keys(buyer.tz(), wall),
        bid_cents: e.bid_cents,
    };
    Some((lease, ask))
}
