//! Buyer trunk health: OPTIONS pings (`health.interval_s`) and the failed-call breaker
//! (`health.fail_calls`, `cooldown_s`). The state lives in each buyer's shared
//! [`dce_routing::Health`], so every SIP worker's auction sees it (`excluded:down`); one worker
//! (the pinger) sends the pings. A round of pings walks a buyer's DNS targets in order until
//! one answers, as a call's attempt does, so the buyer is down only when none of them answers.
//! Every change of state is logged, counted and sent as an event.

use super::controller::Controller;
use super::pinger::{Ping, Pinger};
use super::vocab::{AttemptEnd, BidOutcome};
use crate::config::routing::target_of;
use crate::counters::Counter;
use dce_routing::BuyerId;
use dce_sip::transaction::{Peer, TransactionLayer, Transport, TxId};
use dce_sip::{HeaderName, Method};
use std::time::{Duration, Instant};

/// Does attempt outcome `o` say the trunk failed (`Some(true)`: no response, 408, 5xx), that it
/// is alive (`Some(false)`: any other answer, or it rang), or nothing (`None`)?
fn trunk_failed(o: BidOutcome) -> Option<bool> {
    match o {
        BidOutcome::Attempted(AttemptEnd::Timeout) => Some(true),
        BidOutcome::Attempted(AttemptEnd::Code(c)) => Some(c == 408 || (500..600).contains(&c)),
        BidOutcome::Attempted(AttemptEnd::RingTimeout) | BidOutcome::Won => Some(false),
        _ => None,
    }
}

impl Controller {
    /// Make this controller the one that sends the OPTIONS pings (one SIP worker does), from
    /// `now` on.
    pub fn set_pinger(&mut self, now: Instant) {
        self.pinger = Some(Pinger {
            last_now: Some(now),
            ..Pinger::default()
        });
        self.sync_pings();
    }

    /// Buyers with pings in the current snapshot are scheduled; the others are forgotten.
    pub(super) fn sync_pings(&mut self) {
        let snap = self.snapshot.clone();
        let Some(p) = self.pinger.as_mut() else {
            return;
        };
        let at = p.last_now;
        let pinged: Vec<&str> = snap
            .buyers()
            .iter()
            .filter(|b| b.health.is_some_and(|h| h.interval_s > 0))
            .map(|b| b.id.as_str())
            .collect();
        p.due.retain(|id, _| pinged.contains(&id.as_str()));
        if let Some(at) = at {
            for id in pinged {
                p.due.entry(id.to_owned()).or_insert(at);
            }
        }
    }

    /// Send the pings that are due and give up on those past their deadline.
    pub(super) fn ping_tick(&mut self, layer: &mut TransactionLayer, now: Instant) {
        let Some(p) = self.pinger.as_mut() else {
            return;
        };
        p.last_now = Some(now);
        let late: Vec<TxId> = p
            .out
            .iter()
            .filter(|(_, ping)| ping.deadline <= now)
            .map(|(tx, _)| *tx)
            .collect();
        let mut failed = Vec::new();
        for tx in late {
            if let Some(ping) = p.out.remove(&tx) {
                layer.abandon(tx);
                failed.push(ping);
            }
        }
        // A buyer whose last round is still walking its targets is not started again.
        let due: Vec<String> = p
            .due
            .iter()
            .filter(|(id, at)| **at <= now && !p.out.values().any(|o| &o.buyer == *id))
            .map(|(id, _)| id.clone())
            .collect();
        for ping in failed {
            self.ping_failed(layer, ping, "no answer", now);
        }
        for id in due {
            self.send_ping(layer, &id, now);
        }
    }

    /// Start `id`'s round of pings: its first target now, the next round one interval on.
    fn send_ping(&mut self, layer: &mut TransactionLayer, id: &str, now: Instant) {
        let Some(h) = self.health_of(id).filter(|h| h.interval_s > 0) else {
            return;
        };
        if let Some(p) = self.pinger.as_mut() {
            p.due.insert(
                id.to_owned(),
                now + Duration::from_secs(u64::from(h.interval_s)),
            );
        }
        let targets = self.ping_uri(id).map_or_else(Vec::new, |(_, host)| {
            super::targets::addresses(self.dns.as_deref(), &host, &mut self.ids)
        });
        self.ping_target(layer, id, targets, 0, now);
    }

    /// The ping to `id`'s target `k` failed (`why`): the round goes on to the next target, or,
    /// when it was the last, counts as a failed ping.
    fn ping_failed(&mut self, layer: &mut TransactionLayer, ping: Ping, why: &str, now: Instant) {
        let next = ping.target + 1;
        if next < ping.targets.len() {
            tracing::debug!(buyer = %ping.buyer, target = ping.target, why, "OPTIONS ping failed; trying the next target");
            self.ping_target(layer, &ping.buyer, ping.targets, next, now);
        } else {
            self.ping_result(&ping.buyer, false, why);
        }
    }

    /// Buyer `id`'s health settings in the current snapshot.
    fn health_of(&self, id: &str) -> Option<dce_routing::BuyerHealth> {
        self.snapshot
            .buyers()
            .iter()
            .find(|b| b.id == id)
            .and_then(|b| b.health)
    }

    /// Buyer `id`'s request URI for pings, and its host.
    fn ping_uri(&self, id: &str) -> Option<(String, crate::config::routing::TargetHost)> {
        let buyer = self.snapshot.buyers().iter().find(|b| b.id == id)?;
        let (uri, host) = target_of(&buyer.uri, "1", "1").ok()?;
        let uri = uri
            .split_once('@')
            .map_or(uri.clone(), |(_, h)| format!("sip:{h}"));
        Some((uri, host))
    }

    /// Send `id`'s ping to `targets[k]`.
    fn ping_target(
        &mut self,
        layer: &mut TransactionLayer,
        id: &str,
        targets: Vec<(std::net::SocketAddr, Transport)>,
        k: usize,
        now: Instant,
    ) {
        let Some(h) = self.health_of(id) else {
            return;
        };
        let interval = Duration::from_secs(u64::from(h.interval_s));
        let Some((uri, _)) = self.ping_uri(id) else {
            return;
        };
        let Some(&(addr, transport)) = targets.get(k) else {
            self.ping_result(id, false, "its host has not resolved");
            return;
        };
        let me = self.settings.me.clone();
        let udp = transport == Transport::Udp;
        let mut req = me.request_on(Method::Options, &uri, 70, &self.ids.branch(), transport);
        req.push(
            HeaderName::From,
            format!("<sip:dce@{}>;tag={}", me.host, self.ids.tag()),
        )
        .push(HeaderName::To, format!("<{uri}>"))
        .push(HeaderName::CallId, self.ids.call_id(&me.host))
        .push(HeaderName::CSeq, "1 OPTIONS")
        .push(HeaderName::Allow, crate::edge::ALLOW);
        let peer = Peer {
            transport,
            addr,
            conn: udp.then_some(self.settings.udp_socket),
        };
        match layer.send_request(req, peer, now) {
            Ok(tx) => {
                let deadline = now + interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
                if let Some(p) = self.pinger.as_mut() {
                    let ping = Ping {
                        buyer: id.to_owned(),
                        deadline,
                        target: k,
                        targets,
                    };
                    p.out.insert(tx, ping);
                }
            }
            Err(e) => tracing::warn!(buyer = %id, error = %e, "OPTIONS ping not sent"),
        }
    }

    /// A response on `tx`: true when it answers one of our pings (and is consumed here).
    pub(super) fn ping_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        code: u16,
        now: Instant,
    ) -> bool {
        let Some(p) = self.pinger.as_mut() else {
            return false;
        };
        if !p.out.contains_key(&tx) {
            return false;
        }
        if code >= 200 {
            if let Some(ping) = p.out.remove(&tx) {
                let why = format!("answered {code}");
                if code < 500 && code != 408 {
                    self.ping_result(&ping.buyer, true, &why);
                } else {
                    self.ping_failed(layer, ping, &why, now);
                }
            }
        }
        true
    }

    /// Timer F of a ping (its deadline normally comes first): true when `tx` was one.
    pub(super) fn ping_timed_out(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        now: Instant,
    ) -> bool {
        let Some(ping) = self.pinger.as_mut().and_then(|p| p.out.remove(&tx)) else {
            return false;
        };
        self.ping_failed(layer, ping, "no answer", now);
        true
    }

    fn ping_result(&mut self, id: &str, ok: bool, why: &str) {
        let snap = self.snapshot.clone();
        let Some(i) = snap.buyers().iter().position(|b| b.id == id) else {
            return;
        };
        let Some(h) = snap.buyers()[i].health else {
            return;
        };
        let live = snap.live(i as BuyerId);
        match live.health.ping_result(ok, h.down_after, h.up_after) {
            Some(true) => {
                tracing::warn!(buyer = %id, pings = h.down_after, last = %why, "buyer trunk DOWN: OPTIONS pings fail; excluded:down until it answers again");
                self.health_changed(id, true, "options");
            }
            Some(false) => {
                tracing::info!(buyer = %id, pings = h.up_after, "buyer trunk UP again: OPTIONS pings answered");
                self.health_changed(id, false, "options");
            }
            None => tracing::debug!(buyer = %id, ok, why, "OPTIONS ping"),
        }
    }

    /// Feed a finished attempt of buyer `b` (of the call's snapshot `snap`) to its breaker.
    pub(super) fn breaker_note(
        &mut self,
        snap: &std::sync::Arc<dce_routing::Snapshot>,
        b: BuyerId,
        outcome: BidOutcome,
    ) {
        let Some(buyer) = snap.buyers().get(b) else {
            return;
        };
        let (Some(h), Some(failed)) = (buyer.health, trunk_failed(outcome)) else {
            return;
        };
        let now_ms = self.clock.now_utc().timestamp_millis().max(0) as u64;
        let live = snap.live(b);
        if live
            .health
            .call_result(failed, h.fail_calls, u64::from(h.cooldown_s) * 1000, now_ms)
        {
            tracing::warn!(buyer = %buyer.id, failed_calls = h.fail_calls, cooldown_s = h.cooldown_s, last = %outcome, "buyer trunk DOWN: breaker open after failed calls; excluded:down for the cool-down");
            let id = buyer.id.clone();
            self.health_changed(&id, true, "calls");
        }
    }

    /// Buyer `b`'s attempt ended `outcome`: when it rang out (DCE's ring timeout, or the
    /// buyer's own 408 or 480), count it, and pause the buyer when its
    /// `pause_after_unanswered` rule says so.
    pub(super) fn unanswered_note(
        &mut self,
        snap: &std::sync::Arc<dce_routing::Snapshot>,
        b: BuyerId,
        outcome: BidOutcome,
    ) {
        let Some(buyer) = snap.buyers().get(b) else {
            return;
        };
        let rule = buyer.pause_after_unanswered;
        if !rule.is_set() || !rang_out(outcome) {
            return;
        }
        let now = self.clock.now_utc();
        let keys = dce_routing::local_keys(buyer.tz(), now);
        let live = snap.live(b);
        let now_ms = now.timestamp_millis().max(0) as u64;
        let Some(by) = live.rang_out(keys, rule.in_hour, rule.in_day, now_ms) else {
            return;
        };
        let (hour, day) = (
            live.unanswered_in_hour(keys.hour),
            live.unanswered_on_day(keys.day),
        );
        tracing::warn!(buyer = %buyer.id, reason = by.as_str(), unanswered_this_hour = hour, unanswered_today = day, last = %outcome, "buyer PAUSED: its calls ring out (pause_after_unanswered); excluded:paused until an operator resumes it (PATCH /v1/buyers/{{id}} {{\"paused\": false}})");
        self.counters.inc(Counter::BuyerAutoPaused);
        let id = buyer.id.clone();
        self.events.emit(
            "buyer.paused",
            "",
            || vec![id.clone()],
            || {
                serde_json::json!({
                    "buyer": id,
                    "reason": by.as_str(),
                    "unanswered_this_hour": hour,
                    "unanswered_today": day,
                })
            },
        );
    }

    fn health_changed(&mut self, id: &str, down: bool, reason: &'static str) {
        self.counters.inc(if down {
            Counter::BuyerDown
        } else {
            Counter::BuyerUp
        });
        let kind = if down { "buyer.down" } else { "buyer.up" };
        self.events.emit(
            kind,
            "",
            || vec![id.to_owned()],
            || serde_json::json!({ "buyer": id, "reason": reason }),
        );
    }
}

/// Did an attempt ring out: nobody answered (DCE's ring timeout, or the buyer's own
/// 408 Request Timeout or 480 Temporarily Unavailable)?
fn rang_out(outcome: BidOutcome) -> bool {
    matches!(
        outcome,
        BidOutcome::Attempted(AttemptEnd::RingTimeout | AttemptEnd::Code(408 | 480))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_ringing_out() {
        let code = |c| BidOutcome::Attempted(AttemptEnd::Code(c));
        assert!(rang_out(BidOutcome::Attempted(AttemptEnd::RingTimeout)));
        assert!(rang_out(code(480)) && rang_out(code(408)));
        assert!(!rang_out(code(486)), "busy answered");
        assert!(!rang_out(code(503)), "a failure, for the breaker");
        assert!(!rang_out(BidOutcome::Attempted(AttemptEnd::Timeout)));
        assert!(!rang_out(BidOutcome::Attempted(AttemptEnd::Cancelled)));
        assert!(!rang_out(BidOutcome::Won));
    }

    #[test]
    fn what_counts_against_a_trunk() {
        let code = |c| BidOutcome::Attempted(AttemptEnd::Code(c));
        assert_eq!(trunk_failed(code(503)), Some(true));
        assert_eq!(trunk_failed(code(408)), Some(true));
        assert_eq!(
            trunk_failed(BidOutcome::Attempted(AttemptEnd::Timeout)),
            Some(true)
        );
        assert_eq!(
            trunk_failed(code(486)),
            Some(false),
            "busy: the trunk answered"
        );
        assert_eq!(trunk_failed(BidOutcome::Won), Some(false));
        assert_eq!(
            trunk_failed(BidOutcome::Attempted(AttemptEnd::Cancelled)),
            None
        );
    }
}
