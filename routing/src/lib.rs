//! # dce-routing — buyers, targeting, caps, the auction, ring-tree order
//!
//! This crate will own the auction: pure functions over an immutable snapshot of buyers and
//! campaigns plus live counters, filtering by campaign, geography, schedule, concurrency, caps,
//! budget and floor, and ranking the rest. No I/O, no clock (time is an argument).
//!
//! ## Layout
//!
//! Empty until the call-routing issue lands.
