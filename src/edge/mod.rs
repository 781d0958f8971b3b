//! The SIP edge: everything DCE does with a message before call logic, sans-IO.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `policy.rs` | [`decide`]: which answer a well-formed request gets (RFC 3261 §8.2 order) |
//! | `limits.rs` | [`SourceLimits`]: per-source token buckets the receive side asks before queueing |
//! | `stateless.rs` | stateless answers (no transaction): edge refusals, OPTIONS, the overload `503` |
//! | `core.rs` | [`EdgeCore`]: bytes in → parse → transaction layer → answers out, with counters |
//!
//! `EdgeCore` has no sockets and no clock: the server feeds it bytes with `now` and sends what
//! it returns. Tests drive it the same way with simulated time.

mod core;
pub mod limits;
mod policy;
pub mod stateless;

pub use self::core::{EdgeCore, Input};
pub use crate::call::Output;
pub use limits::{LimitConfig, Rate, SourceLimits, Verdict};
pub use policy::{decide, Decision, Local, ACCEPT, ALLOW, SUPPORTED};
