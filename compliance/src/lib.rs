//! # dce-compliance — Do-Not-Call, TCPA calling hours, frequency caps, consent
//!
//! The checks run on the consumer's number before every auction, from memory. They do no I/O
//! and take the time as an argument; loaders may read files.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `dnc.rs` | number parsing, DNC errors, the internal list |
//! | `national.rs` | the national registry in < 2 bytes per number (exact): file format, builder, a loader that validates every byte, the lookup |
//! | `hours.rs` | TCPA calling hours from the number's zones (`data/nanp_tz.tsv`), state overrides |
//! | `checks.rs` | the verdict: DNC, hours, consent, frequency cap (in process) |

pub mod checks;
pub mod dnc;
pub mod hours;
pub mod national;

pub use checks::{CampaignRules, Compliance, Consent, FrequencyCap, Rule, Verdict};
pub use dnc::{nanp10, save as save_internal_dnc, DncError, InternalDnc};
pub use hours::{CallingHours, Window};
pub use national::{FileProblem, NationalDnc};
