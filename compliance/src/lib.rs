//! # dce-compliance — Do-Not-Call, TCPA calling hours, frequency caps, consent
//!
//! This crate will own the checks run on the consumer's number before every auction: national
//! and internal DNC sets, calling hours in the number's time zones, per-number frequency caps
//! and consent. The checks do no I/O and take the time as an argument; loaders may read files.
//!
//! ## Layout
//!
//! Empty until the compliance issue lands; the call controller's compliance hook passes.
