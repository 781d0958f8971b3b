//! A buyer attempt over the targets its DNS gives (RFC 3263 §4.3): the INVITE goes to the
//! first; a target that sends no response at all within `target_timeout` (or whose INVITE
//! times out) or that answers `503` is left for the next, with the same request on a new
//! branch. The ring timer covers the whole attempt.

use super::controller::Controller;
use super::leg::with_branch;
use super::router::TxRole;
use super::state::{BState, CallKey, CallState, Timer};
use super::vocab::{AttemptEnd, BidOutcome};
use crate::config::routing::TargetHost;
use crate::counters::Counter;
use crate::dns::Table;
use crate::ids::Ids;
use dce_sip::transaction::{Peer, TransactionLayer, Transport};
use std::net::SocketAddr;
use std::time::Instant;

/// The addresses one attempt may use, in order, with their transport; empty when a host name
/// has no answer yet.
pub(super) fn addresses(
    dns: Option<&Table>,
    host: &TargetHost,
    ids: &mut Ids,
) -> Vec<(SocketAddr, Transport)> {
    let t = |t: crate::dns::Transport| match t {
        crate::dns::Transport::Tcp => Transport::Tcp,
        crate::dns::Transport::Tls => Transport::Tls,
        crate::dns::Transport::Udp => Transport::Udp,
    };
    match host {
        TargetHost::Ip(a, tr) => vec![(*a, t(*tr))],
        TargetHost::Name(d) => dns
            .and_then(|table| table.get(&d.key()))
            .and_then(|s| {
                s.answer
                    .as_ref()
                    .map(|a| crate::dns::order(&a.targets, || ids.u32()))
            })
            .map(|v| v.into_iter().map(|(a, tr)| (a, t(tr))).collect())
            .unwrap_or_default(),
    }
}

/// The table key of a host (log lines).
pub(super) fn host_key(host: &TargetHost) -> String {
    match host {
        TargetHost::Ip(a, _) => a.to_string(),
        TargetHost::Name(d) => d.key(),
    }
}

impl Controller {
    /// Move the ringing leg `li` to its next target, if it has one: the INVITE again on a new
    /// branch, CSeq unchanged. False when none is left (or the leg is no longer ringing).
    pub(super) fn next_target(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        li: usize,
        why: &'static str,
        now: Instant,
    ) -> bool {
        let branch = self.ids.branch();
        let target_timeout = self.settings.target_timeout;
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        if call.state != (CallState::Ringing { current: li }) {
            return false;
        }
        let leg = &mut call.legs[li];
        if !matches!(leg.state, BState::Calling | BState::Early)
            || leg.target + 1 >= leg.targets.len()
        {
            return false;
        }
        let from = leg.peer.addr;
        leg.target += 1;
        let peer = Peer {
            addr: leg.targets[leg.target],
            ..leg.peer
        };
        let invite = with_branch(&leg.invite, &branch);
        let tx = match layer.send_request(invite.clone(), peer, now) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!(call = %call.id, error = %e, "INVITE to the next buyer target not sent");
                return false;
            }
        };
        let buyer = call
            .snapshot
            .buyer(call.entries[leg.entry].buyer)
            .id
            .clone();
        tracing::info!(call = %call.id, buyer = %buyer, from = %from, to = %peer.addr, reason = why, "buyer target failed; trying its next target");
        leg.invite = invite;
        leg.tx = tx;
        leg.peer = peer;
        leg.state = BState::Calling;
        let more = leg.target + 1 < leg.targets.len();
        self.counters.inc(Counter::TargetFailover);
        self.router.add_client(tx, key, TxRole::Invite(li));
        if more {
            self.arm(key, Timer::Target, now + target_timeout);
        }
        true
    }

    /// [`Controller::next_target`], or, with no target left, the attempt ends as
    /// `attempted:timeout` with `code` as the buyer's code (no response, or unreachable).
    pub(super) fn next_target_or_fail(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        li: usize,
        why: &'static str,
        code: u16,
        now: Instant,
    ) {
        if !self.next_target(layer, key, li, why, now) {
            self.leg_failed(
                layer,
                key,
                li,
                BidOutcome::Attempted(AttemptEnd::Timeout),
                Some(code),
                true,
                now,
            );
        }
    }

    /// The current target of the ringing buyer has sent nothing in `target_timeout`: forget
    /// that INVITE (no response means no transaction at the far end to cancel) and try the
    /// next target.
    pub(super) fn target_timeout(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        now: Instant,
    ) {
        let Some((li, tx, calling)) = self.calls.get(&key).and_then(|c| {
            let li = c.current()?;
            let leg = &c.legs[li];
            Some((li, leg.tx, leg.state == BState::Calling))
        }) else {
            return;
        };
        if !calling {
            return;
        }
        layer.abandon(tx);
        self.router.remove_client(tx);
        self.next_target_or_fail(layer, key, li, "no response", 408, now);
    }
}

impl Controller {
    /// DCE cannot connect to `addr` (TCP or TLS): every ringing attempt whose current target it is
    /// and that has had no response moves to its next target, or fails (`attempted:timeout`,
    /// as a transport error counts for RFC 3261 §8.1.3.1).
    pub fn on_unreachable(&mut self, layer: &mut TransactionLayer, addr: SocketAddr, now: Instant) {
        let hit: Vec<(super::state::CallKey, usize, dce_sip::transaction::TxId)> = self
            .calls
            .iter()
            .filter_map(|(k, c)| {
                let li = c.current()?;
                let leg = &c.legs[li];
                (leg.peer.addr == addr && leg.peer.reliable() && leg.state == BState::Calling)
                    .then_some((*k, li, leg.tx))
            })
            .collect();
        for (key, li, tx) in hit {
            tracing::info!(call = %self.call_id(key), to = %addr, "buyer target unreachable over TCP");
            layer.abandon(tx);
            self.router.remove_client(tx);
            self.next_target_or_fail(layer, key, li, "unreachable", 503, now);
        }
    }
}
