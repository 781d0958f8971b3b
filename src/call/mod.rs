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

pub use controller::{Controller, Settings};

/// A compliance verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Route the call.
    Allow,
    /// Refuse it with 603, naming the rule.
    Reject {
        /// Rule name (e.g. `dnc`).
        rule: String,
    },
}

/// The compliance hook, run before the auction. The compliance issue fills it.
pub trait Compliance: Send {
    /// Check a call from `caller` to `called` for `campaign`.
    fn check(&mut self, caller: &str, called: &str, campaign: &str) -> Verdict;
}

/// Allows everything (until the compliance checks land).
#[derive(Debug, Default)]
pub struct AllowAll;

impl Compliance for AllowAll {
    fn check(&mut self, _caller: &str, _called: &str, _campaign: &str) -> Verdict {
        Verdict::Allow
    }
}
