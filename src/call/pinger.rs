//! The schedule of the SIP worker that sends the buyers' OPTIONS pings (see `health.rs`).

use dce_sip::transaction::TxId;
use std::collections::HashMap;
use std::time::Instant;

/// The pinging worker's schedule.
#[derive(Debug, Default)]
pub(super) struct Pinger {
    /// When each buyer (by id) is due for its next ping.
    pub(super) due: HashMap<String, Instant>,
    /// Pings waiting for their answer.
    pub(super) out: HashMap<TxId, Ping>,
    /// The latest `now` seen (buyers added by a reload are due then).
    pub(super) last_now: Option<Instant>,
}

impl Pinger {
    /// The earliest thing to do.
    pub(super) fn next(&self) -> Option<Instant> {
        self.due
            .values()
            .chain(self.out.values().map(|p| &p.deadline))
            .min()
            .copied()
    }
}

/// One OPTIONS ping out.
#[derive(Debug)]
pub(super) struct Ping {
    /// The buyer's id.
    pub(super) buyer: String,
    /// When it is given up.
    pub(super) deadline: Instant,
    /// Which of the buyer's targets (in DNS order) it went to: a round walks them until one
    /// answers, like a call's attempt.
    pub(super) target: usize,
    /// The round's targets, as the DNS table ordered them when it started.
    pub(super) targets: Vec<(std::net::SocketAddr, dce_sip::transaction::Transport)>,
}
