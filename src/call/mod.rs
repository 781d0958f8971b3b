//! The B2BUA call controller: routes each carrier INVITE to buyers in auction order.
//!
//! ## Layout (the call path, in order; see `docs/architecture.md`)
//!
//! | file | what it owns |
//! |---|---|
//! | `controller.rs` | [`Controller`]: the call table, the router, the timer index, outputs; dispatch |
//! | `state.rs` | one call: its state, leg states, timer table, pending lookups |
//! | `router.rs` | (Call-ID, our tag) → (call, leg); transactions → what they are for; orphans |
//! | `admit.rs` | overload, carrier, rate, campaign, compliance, auction; lookups; refusals |
//! | `lookup.rs` | lookup requests and answers under a deadline (the fleet-wide check) |
//! | `callers.rs` | the memory of callers behind the duplicate-call rules, and the rules (data) |
//! | `duplicates.rs` | duplicate-call rules in the call path: what calls remember, the fleet's question and its answer |
//! | `fleet.rs` | fleet-wide buyer caps in the call path: the lease a capped buyer's attempt waits for, `on_cap_error` |
//! | `bids.rs` | real-time bid requests of a call, and what their answers do to the ranking |
//! | `quote.rs` | publishers' bid requests (`POST /v1/bid`): checks, auction, price, reservation |
//! | `reservation.rs` | quotes, their answers, the node-wide reservations (data) |
//! | `ring.rs` | the ring tree: buyer INVITEs, failover, ring timeout, CANCEL, the answer |
//! | `mirror.rs` | in-dialog requests (peer and leg checked), ACKs, 2xx retransmission, SDP |
//! | `end.rs` | every end path, bookkeeping, the CDR, the media report; API views |
//! | `vocab.rs` | outcomes, dispositions, end reasons, verdicts as enums |
//! | `leg.rs` | building each leg's messages (topology hiding lives here) |
//! | `carrier.rs` | carriers by source address, calls-per-second limiters |
//! | `cdr.rs` | the CDR record, the sink trait, the JSON-lines sink |
//! | `view.rs` | what the API shows of calls and buyers |
//!
//! Life of a call: identify the carrier by source (`403`), rate-limit it (`503`), find the
//! campaign by the dialled number (`404`), ask [`Compliance`] (`603`), run the auction (`480`
//! when nobody is eligible); the call exists from here, in `Checking` while its lookups (the
//! fleet-wide check) are out under a deadline; then it rings the best buyer with a fresh
//! INVITE, falls back to the next on a failure, timeout or ring timeout (`480` when all fail),
//! mirrors the dialog once answered, and writes one CDR when it ends.

mod admit;
pub mod bids;
pub mod callers;
pub mod carrier;
pub mod cdr;
mod challenge;
mod controller;
mod duplicates;
mod end;
mod fleet;
mod health;
pub mod leg;
pub mod lookup;
mod mirror;
mod pinger;
mod quote;
mod record;
mod reroute;
pub mod reservation;
mod ring;
pub mod router;
pub mod state;
mod targets;
pub mod view;
pub mod vocab;

pub use admit::{caller_of, MAX_CALLER};
pub use controller::{CapPolicy, Controller, Held, InviteMark, Output, Settings, SharedChecks};
pub use lookup::{
    Answer, BidAnswer, BidQuery, LookupId, LookupRequest, Query, RemoteCheck, RemoteResult,
};
pub use reservation::{QuoteAnswer, QuoteRequest, Reservations};

/// What the compliance check is told about a call.
#[derive(Debug, Clone)]
pub struct CallFacts<'a> {
    /// Caller, E.164 digits (as received when not a number).
    pub caller: &'a str,
    /// Called, E.164 digits.
    pub called: &'a str,
    /// Campaign id.
    pub campaign: &'a str,
    /// The caller's US state from its area code, if known.
    pub state: Option<&'a str>,
    /// What the campaign asks to be checked.
    pub rules: dce_compliance::CampaignRules,
    /// Now.
    pub now: chrono::DateTime<chrono::Utc>,
}

pub use dce_compliance::Verdict;

/// The compliance hook, run before the auction.
pub trait Compliance: Send {
    /// The verdict for a call.
    fn check(&mut self, call: &CallFacts<'_>) -> Verdict;
}

/// Allows everything (tests that are not about compliance).
#[derive(Debug, Default)]
pub struct AllowAll;

impl Compliance for AllowAll {
    fn check(&mut self, _call: &CallFacts<'_>) -> Verdict {
        Verdict::Allow { ran: Vec::new() }
    }
}

/// The real checks (`dce-compliance`), shared with whoever edits the internal DNC or reloads.
impl Compliance for std::sync::Arc<std::sync::Mutex<dce_compliance::Compliance>> {
    fn check(&mut self, call: &CallFacts<'_>) -> Verdict {
        match self.lock() {
            Ok(mut c) => c.check(call.caller, call.state, call.campaign, call.rules, call.now),
            // a poisoned lock means a checker panicked: refuse rather than route unchecked
            Err(_) => Verdict::Reject(dce_compliance::Rule::Dnc),
        }
    }
}
