//! The B2BUA call controller: routes each carrier INVITE to buyers in auction order.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `controller.rs` | [`Controller`]: calls, their two legs, ring tree, mirroring, bookkeeping, CDRs |
//! | `leg.rs` | building each leg's messages (topology hiding lives here) |
//! | `carrier.rs` | carriers by source address, calls-per-second limiters |
//! | `cdr.rs` | the CDR record, the sink trait, the JSON-lines sink |
//!
//! Life of a call (DESIGN.md): identify the carrier by source (`403`), rate-limit it (`503`),
//! find the campaign by the dialled number (`404`), ask [`Compliance`] (`603`), run the auction
//! (`480` when nobody is eligible), ring the best buyer with a fresh INVITE, fall back to the
//! next on a failure, timeout or ring timeout (`480` when all fail), mirror the dialog once
//! answered, and write one CDR when it ends.

pub mod carrier;
pub mod cdr;
mod controller;
pub mod leg;
pub mod view;

pub use controller::{Controller, RemoteCheck, RemoteResult, Settings, SharedChecks};

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
