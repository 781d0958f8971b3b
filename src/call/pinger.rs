//! The schedule of the SIP worker that sends the buyers' OPTIONS pings (see `health.rs`).

use dce_sip::transaction::TxId;
use std::collections::HashMap;
use std::time::Instant;

/// The pinging worker's schedule.
#[derive(Debug, Default)]
pub(super) struct Pinger {
    /// When each buyer (by id) is due for its next ping.
    pub(super) due: HashMap<String, Instant>,
    /// Pings waiting for their answer: transaction → (buyer id, deadline).
    pub(super) out: HashMap<TxId, (String, Instant)>,
    /// The latest `now` seen (buyers added by a reload are due then).
    pub(super) last_now: Option<Instant>,
}

impl Pinger {
    /// The earliest thing to do.
    pub(super) fn next(&self) -> Option<Instant> {
        self.due
            .values()
            .chain(self.out.values().map(|(_, d)| d))
            .min()
            .copied()
    }
}
