//! # dce-compliance — Do-Not-Call, TCPA calling hours, frequency caps, consent
//!
//! The checks run on the consumer's number before every auction, from memory. They do no I/O
//! and take the time as an argument; loaders may read files.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `dnc.rs` | the national registry in < 2 bytes per number (exact), the internal list |
//! | `hours.rs` | TCPA calling hours from the number's zones (`data/nanp_tz.tsv`), state overrides |
//! | `checks.rs` | the verdict: DNC, hours, consent, frequency cap (in process) |

pub mod checks;
pub mod dnc;
pub mod hours;

pub use checks::{CampaignRules, Compliance, Consent, FrequencyCap, Rule, Verdict};
pub use dnc::{nanp10, save as save_internal_dnc, DncError, InternalDnc, NationalDnc};
pub use hours::{CallingHours, Window};
