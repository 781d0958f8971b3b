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
//!
//! Calling hours, frequency caps and consent, and the verdict wiring, are still to come.

pub mod dnc;

pub use dnc::{nanp10, DncError, InternalDnc, NationalDnc};
