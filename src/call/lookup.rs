//! Lookups: what a call asks of the outside world (the fleet-wide Redis check, real-time bid
//! requests, STIR certificate fetches) without waiting inside the core.
//!
//! A call in `Checking` emits one [`LookupRequest`] per question, all at once, and arms one
//! core timer (`Timer::Lookups`) at the deadline. The driver performs the I/O and feeds each
//! [`Answer`] back with the request's [`LookupId`]. When every answer is in, or the
//! deadline fires first (unanswered questions count as failed), the call goes on under the
//! configured policy. A result for a lookup that is no longer outstanding (the call ended, the
//! deadline passed) is ignored. Because the deadline is a core timer, simulated time sees it.

use std::sync::Arc;
use std::time::Instant;

/// A lookup's id, unique per controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// The fleet-wide compliance check (Redis): one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCheck {
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

/// The fleet-wide duplicate check (Redis): what is remembered of a caller in a campaign and
/// with each buyer that has its own rule. One round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DupCheck {
    /// Caller, E.164 digits.
    pub caller: String,
    /// The campaign, when it has a rule.
    pub campaign: Option<String>,
    /// Ranked buyers with their own rule: (index in the call's snapshot, id).
    pub buyers: Vec<(dce_routing::BuyerId, String)>,
}

/// What Redis remembers of the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DupSeen {
    /// In the campaign.
    pub campaign: Option<super::callers::Seen>,
    /// With each buyer asked about (absent: nothing).
    pub buyers: Vec<(dce_routing::BuyerId, super::callers::Seen)>,
}

/// That a call reached a stage, for the fleet's memory (`Output::Remember`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DupWrite {
    /// How far it got.
    pub stage: dce_routing::DupStage,
    /// In the campaign's record (`None`: the campaign has no rule).
    pub campaign: Option<String>,
    /// The buyer.
    pub buyer: String,
    /// In the buyer's own record too (it has a rule of its own).
    pub buyer_record: bool,
    /// Caller, E.164 digits.
    pub caller: String,
    /// When, Unix seconds.
    pub at_s: i64,
    /// How long the record is kept (the longest window), seconds.
    pub keep_s: i64,
}

/// A buyer attempt's fleet-wide cap check (Redis, `redis_url` set and the buyer capped): one
/// round trip at ring time that takes a concurrency slot (a lease) and reads the fleet's
/// answered counts and spend, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAsk {
    /// The lease's name: `<call id>:<entry>` (unique in the fleet).
    pub member: String,
    /// The buyer's id.
    pub buyer: String,
    /// Its caps, as configured (0 = none).
    pub limits: CapLimits,
    /// The buyer's local hour, day and month now (the counters' keys).
    pub keys: dce_routing::Keys,
    /// The price this attempt would commit against the budgets.
    pub bid_cents: u32,
}

/// A buyer's caps and budgets (0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapLimits {
    /// `max_concurrent`.
    pub concurrent: u32,
    /// `hourly_cap`.
    pub hourly: u32,
    /// `daily_cap`.
    pub daily: u32,
    /// `monthly_cap`.
    pub monthly: u32,
    /// `daily_budget_cents`.
    pub daily_budget: u64,
    /// `monthly_budget_cents`.
    pub monthly_budget: u64,
}

impl CapLimits {
    /// The limits of `b`.
    pub fn of(b: &dce_routing::Buyer) -> CapLimits {
        CapLimits {
            concurrent: b.max_concurrent,
            hourly: b.hourly_cap,
            daily: b.daily_cap,
            monthly: b.monthly_cap,
            daily_budget: b.daily_budget_cents,
            monthly_budget: b.monthly_budget_cents,
        }
    }
}

/// What the fleet said about a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseResult {
    /// Taken: the slot is this call's until it is released or its lease runs out.
    Granted,
    /// A cap is reached fleet-wide (which one).
    Full(dce_routing::Exclusion),
    /// Redis failed or missed the deadline: `on_cap_error` decides.
    Error(String),
}

/// A lease's answer, with the fleet's size as last seen (live nodes; 0 = not known yet),
/// which the `local` policy divides the caps by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAnswer {
    /// Taken or not.
    pub result: LeaseResult,
    /// Nodes alive in the fleet at the last heartbeat.
    pub nodes: u32,
}

/// A write to the fleet's caps the call does not wait for (`Output::Caps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapWrite {
    /// Give a lease back (the attempt is over, or the call stopped waiting for it).
    Release {
        /// The lease.
        member: String,
        /// The buyer's id.
        buyer: String,
    },
    /// Redis could not answer and `on_cap_error = "local"` let this node ring the buyer: hold
    /// the slot in Redis as soon as Redis answers again (the counts converge).
    HoldLocal {
        /// The lease.
        member: String,
        /// The buyer's id.
        buyer: String,
    },
    /// Count an answered call (`calls = 1`, `cents` = its bid), or give a bid back
    /// (`calls = 0`, `cents` negative), in the buyer's hour, day and month.
    Count {
        /// The buyer's id.
        buyer: String,
        /// The buyer's local hour, day and month of the answer.
        keys: dce_routing::Keys,
        /// Answered calls to add.
        calls: i64,
        /// Cents to add to the day's and the month's spend.
        cents: i64,
    },
}

/// A bid request to one real-time bidder (`rtb = { … }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidQuery {
    /// The buyer, in the call's snapshot.
    pub buyer: dce_routing::BuyerId,
    /// Where and how to ask.
    pub rtb: std::sync::Arc<dce_routing::Rtb>,
    /// What the request says about the call.
    pub facts: crate::rtb::CallFacts,
    /// How long the call waits for this one, milliseconds.
    pub wait_ms: u32,
    /// The buyer's bid-request slot: given back when the call has stopped waiting for this
    /// request and the driver has finished it (the last copy dropped).
    pub slot: Arc<PingSlot>,
}

/// A bid request out against its buyer's `max_in_flight` (see [`BidQuery::slot`]).
#[derive(Debug)]
pub struct PingSlot(pub Arc<dce_routing::BuyerLive>);

impl Drop for PingSlot {
    fn drop(&mut self) {
        self.0.ping_done();
    }
}

impl PartialEq for PingSlot {
    fn eq(&self, other: &PingSlot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PingSlot {}

/// A bidder's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidAnswer {
    /// The buyer, in the call's snapshot.
    pub buyer: dce_routing::BuyerId,
    /// What came of it, how long it took, the HTTP status.
    pub pinged: crate::rtb::client::Pinged,
}

/// A question for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The fleet-wide compliance check.
    Shared(RemoteCheck),
    /// A real-time bid request.
    Bid(Box<BidQuery>),
    /// The fleet-wide duplicate check.
    Duplicates(DupCheck),
    /// A buyer attempt's fleet-wide cap check and slot.
    Lease(LeaseAsk),
    /// The signer's certificate of a call's `Identity` (STIR/SHAKEN): fetched over HTTPS,
    /// checked, cached (`x5u`).
    Cert(String),
}

/// Its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The fleet-wide compliance check's result.
    Shared(RemoteResult),
    /// A bidder's answer.
    Bid(Box<BidAnswer>),
    /// The fleet-wide duplicate check's result (an error: Redis failed).
    Duplicates(Result<DupSeen, String>),
    /// The fleet-wide cap check's result.
    Lease(LeaseAnswer),
    /// The checked signer certificate, or why there is none.
    Cert(crate::stir::fetch::Cached),
}

impl Answer {
    /// The answer a question gets when its deadline passes unanswered.
    pub fn missed(q: &Query) -> Answer {
        match q {
            Query::Shared(_) => Answer::Shared(RemoteResult::Error("deadline passed".into())),
            Query::Duplicates(_) => Answer::Duplicates(Err("deadline passed".into())),
            Query::Cert(_) => Answer::Cert(Err(crate::stir::Failure::FetchFailed)),
            Query::Lease(_) => Answer::Lease(LeaseAnswer {
                result: LeaseResult::Error("deadline passed".into()),
                nodes: 0,
            }),
            Query::Bid(b) => Answer::Bid(Box::new(BidAnswer {
                buyer: b.buyer,
                pinged: crate::rtb::client::Pinged {
                    result: crate::rtb::PingResult::Timeout,
                    latency_ms: b.wait_ms,
                    latency_us: b.wait_ms.saturating_mul(1000),
                    status: None,
                },
            })),
        }
    }
}

/// A lookup for the driver to run: hand the answer back with `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    /// Hand this back with the answer.
    pub id: LookupId,
    /// What to find out.
    pub query: Query,
    /// The core stops waiting at this instant; answering later is harmless but useless.
    pub deadline: Instant,
}

/// A call's outstanding lookups and the answers so far.
#[derive(Debug, Default)]
pub struct Lookups {
    /// Asked and not answered.
    pub outstanding: Vec<(LookupId, Query)>,
    /// Answered (or missed), in arrival order.
    pub answers: Vec<Answer>,
}

impl Lookups {
    /// Record the answer to `id`; false when `id` is not outstanding.
    pub fn answer(&mut self, id: LookupId, a: Answer) -> bool {
        match self.outstanding.iter().position(|(i, _)| *i == id) {
            Some(i) => {
                self.outstanding.swap_remove(i);
                self.answers.push(a);
                true
            }
            None => false,
        }
    }

    /// The deadline passed: every outstanding question counts as failed. Returns their ids.
    pub fn expire(&mut self) -> Vec<LookupId> {
        let ids = self.outstanding.iter().map(|(i, _)| *i).collect();
        for (_, q) in std::mem::take(&mut self.outstanding) {
            self.answers.push(Answer::missed(&q));
        }
        ids
    }

    /// Every question answered.
    pub fn complete(&self) -> bool {
        self.outstanding.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> Query {
        Query::Shared(RemoteCheck {
            caller: "1".into(),
            campaign: "c".into(),
            check_dnc: true,
            max_calls_per_day: 0,
        })
    }

    #[test]
    fn answers_and_expiry() {
        let mut l = Lookups::default();
        l.outstanding.push((LookupId(1), q()));
        l.outstanding.push((LookupId(2), q()));
        assert!(!l.answer(LookupId(9), Answer::Shared(RemoteResult::Listed)));
        assert!(l.answer(LookupId(1), Answer::Shared(RemoteResult::Count(1))));
        assert!(!l.complete());
        assert_eq!(l.expire(), vec![LookupId(2)]);
        assert!(l.complete());
        assert_eq!(
            l.answers,
            vec![
                Answer::Shared(RemoteResult::Count(1)),
                Answer::Shared(RemoteResult::Error("deadline passed".into()))
            ]
        );
        assert!(!l.answer(LookupId(2), Answer::Shared(RemoteResult::Listed)));
    }
}
