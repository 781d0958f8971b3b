//! Live per-buyer counters: concurrency, answered calls per hour, day and month, spend per day
//! and month.
//!
//! Lock-free. Hour, day and month counters are stamped with the local hour/day/month they
//! count; a stamp that is not the current one reads as zero, so counters roll over without a
//! timer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of one buyer.
#[derive(Debug, Default)]
pub struct BuyerLive {
    active: AtomicU32,
    /// (hour key << 32) | count
    hour: AtomicU64,
    /// (day key << 32) | count
    day: AtomicU64,
    /// (day key << 40) | cents
    spend: AtomicU64,
    /// (month key << 32) | count
    month: AtomicU64,
    /// (month key << 40) | cents
    month_spend: AtomicU64,
    /// Paused (excluded from auctions): 0 = not; else (Unix ms << 2) | why
    /// ([`PauseBy`]).
    pause: AtomicU64,
    /// (hour key << 32) | calls that rang out (`pause_after_unanswered`).
    unanswered_hour: AtomicU64,
    /// (day key << 32) | calls that rang out.
    unanswered_day: AtomicU64,
    /// Operator's bid override plus one; 0 = none (the config's bid applies).
    bid_override: AtomicU64,
    /// The trunk's health (OPTIONS pings, the failed-call breaker).
    pub health: Health,
    /// Real-time bid requests out now (shared by every SIP worker).
    pings_in_flight: AtomicU32,
    /// (unix second << 32) | bid requests sent in that second.
    ping_second: AtomicU64,
}

/// A buyer trunk's health: down while its OPTIONS pings fail (`down_after` in a row, until
/// `up_after` succeed in a row), or while its breaker is open (`fail_calls` failed calls in a
/// row open it for `cooldown`). Shared by every SIP worker; survives reloads.
#[derive(Debug, Default)]
pub struct Health {
    ping_down: AtomicBool,
    /// Consecutive ping results against the current state (failures while up, successes
    /// while down).
    ping_run: AtomicU32,
    call_fails: AtomicU32,
    /// Unix ms until which the breaker is open; 0 = closed.
    open_until_ms: AtomicU64,
}

impl Health {
    /// Is the trunk down at `now_ms` (Unix ms)?
    pub fn down(&self, now_ms: u64) -> bool {
        self.ping_down() || self.breaker_open(now_ms)
    }

    /// Down because its OPTIONS pings fail.
    pub fn ping_down(&self) -> bool {
        self.ping_down.load(Ordering::Acquire)
    }

    /// The breaker is open at `now_ms`.
    pub fn breaker_open(&self, now_ms: u64) -> bool {
        self.open_until_ms.load(Ordering::Acquire) > now_ms
    }

    /// Unix ms the breaker stays open until (0: it never opened).
    pub fn open_until_ms(&self) -> u64 {
        self.open_until_ms.load(Ordering::Acquire)
    }

    /// Failed calls in a row so far.
    pub fn call_fails(&self) -> u32 {
        self.call_fails.load(Ordering::Acquire)
    }

    /// Ping results in a row against the current state.
    pub fn ping_run(&self) -> u32 {
        self.ping_run.load(Ordering::Acquire)
    }

    /// One ping's result; `Some(down)` when it changed the ping state.
    pub fn ping_result(&self, ok: bool, down_after: u32, up_after: u32) -> Option<bool> {
        let down = self.ping_down();
        if ok != down {
            // The result agrees with the state: the run against it is broken.
            self.ping_run.store(0, Ordering::Release);
            return None;
        }
        let run = self.ping_run.fetch_add(1, Ordering::AcqRel) + 1;
        let need = if down { up_after } else { down_after };
        if run >= need.max(1) {
            self.ping_down.store(!down, Ordering::Release);
            self.ping_run.store(0, Ordering::Release);
            return Some(!down);
        }
        None
    }

    /// One call attempt's result for the breaker: `failed` (no response, 408, 5xx) or not. True
    /// when this failure opened the breaker (until `now_ms + cooldown_ms`).
    pub fn call_result(
        &self,
        failed: bool,
        fail_calls: u32,
        cooldown_ms: u64,
        now_ms: u64,
    ) -> bool {
        if !failed {
            self.call_fails.store(0, Ordering::Release);
            return false;
        }
        let n = self.call_fails.fetch_add(1, Ordering::AcqRel) + 1;
        if fail_calls > 0 && n >= fail_calls {
            self.call_fails.store(0, Ordering::Release);
            self.open_until_ms
                .store(now_ms + cooldown_ms, Ordering::Release);
            return true;
        }
        false
    }
}

/// Why a buyer is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseBy {
    /// An operator, through the API.
    Operator,
    /// `pause_after_unanswered.in_hour` calls rang out in one local hour.
    UnansweredInHour,
    /// `pause_after_unanswered.in_day` calls rang out in one local day.
    UnansweredInDay,
}

impl PauseBy {
    /// Its name in the API and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseBy::Operator => "operator",
            PauseBy::UnansweredInHour => "unanswered_in_hour",
            PauseBy::UnansweredInDay => "unanswered_in_day",
        }
    }

    fn code(self) -> u64 {
        match self {
            PauseBy::Operator => 1,
            PauseBy::UnansweredInHour => 2,
            PauseBy::UnansweredInDay => 3,
        }
    }
}

/// A buyer's pause: why and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// Who or what paused it.
    pub by: PauseBy,
    /// When, Unix ms.
    pub at_ms: u64,
}

impl Pause {
    fn pack(self) -> u64 {
        (self.at_ms << 2) | self.by.code()
    }

    fn unpack(v: u64) -> Option<Pause> {
        let by = match v & 3 {
            1 => PauseBy::Operator,
            2 => PauseBy::UnansweredInHour,
            3 => PauseBy::UnansweredInDay,
            _ => return None,
        };
        Some(Pause { by, at_ms: v >> 2 })
    }
}

/// The local hour, day and month of an instant in a buyer's zone, as its counters are stamped
/// (`crate::local_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    /// Hours since the common era's first day.
    pub hour: u32,
    /// Days since the common era's first day.
    pub day: u32,
    /// Months since year 0 (year × 12 + month − 1).
    pub month: u32,
}

const SPEND_BITS: u32 = 40;
const SPEND_MASK: u64 = (1 << SPEND_BITS) - 1;

fn stamped(v: u64, key: u32, shift: u32, mask: u64) -> u64 {
    if (v >> shift) as u32 == key {
        v & mask
    } else {
        0
    }
}

fn bump(cell: &AtomicU64, key: u32, shift: u32, mask: u64, delta: i64) {
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        let cur = stamped(v, key, shift, mask) as i64;
        let next = (cur + delta).clamp(0, mask as i64) as u64;
        Some(((key as u64) << shift) | next)
    });
}

impl BuyerLive {
    /// Paused (by an operator or by its unanswered calls)?
    pub fn paused(&self) -> bool {
        self.pause.load(Ordering::Acquire) != 0
    }

    /// Why and since when it is paused, if it is.
    pub fn pause(&self) -> Option<Pause> {
        Pause::unpack(self.pause.load(Ordering::Acquire))
    }

    /// An operator pauses it at `now_ms` (Unix ms): excluded from auctions until resumed.
    pub fn pause_by_operator(&self, now_ms: u64) {
        let p = Pause {
            by: PauseBy::Operator,
            at_ms: now_ms,
        };
        self.pause.store(p.pack(), Ordering::Release);
    }

    /// Resume it, whoever paused it. The counts of calls that rang out start again from
    /// zero, so an auto-paused buyer an operator resumed is not paused again by its next one.
    pub fn resume(&self) {
        self.pause.store(0, Ordering::Release);
        self.unanswered_hour.store(0, Ordering::Release);
        self.unanswered_day.store(0, Ordering::Release);
    }

    /// A call to this buyer rang out (`at`: its local hour and day; `now_ms`: Unix ms). With
    /// `in_hour` / `in_day` such calls in the hour / day (0 = no such rule) the buyer pauses
    /// itself; `Some` when this call paused it (never when it was paused already).
    pub fn rang_out(&self, at: Keys, in_hour: u32, in_day: u32, now_ms: u64) -> Option<PauseBy> {
        bump(&self.unanswered_hour, at.hour, 32, u32::MAX as u64, 1);
        bump(&self.unanswered_day, at.day, 32, u32::MAX as u64, 1);
        let by = if in_hour > 0 && self.unanswered_in_hour(at.hour) >= in_hour {
            PauseBy::UnansweredInHour
        } else if in_day > 0 && self.unanswered_on_day(at.day) >= in_day {
            PauseBy::UnansweredInDay
        } else {
            return None;
        };
        let p = Pause { by, at_ms: now_ms }.pack();
        self.pause
            .compare_exchange(0, p, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| by)
    }

    /// Calls that rang out in local hour `key`.
    pub fn unanswered_in_hour(&self, key: u32) -> u32 {
        stamped(
            self.unanswered_hour.load(Ordering::Acquire),
            key,
            32,
            u32::MAX as u64,
        ) as u32
    }

    /// Calls that rang out on local day `key`.
    pub fn unanswered_on_day(&self, key: u32) -> u32 {
        stamped(
            self.unanswered_day.load(Ordering::Acquire),
            key,
            32,
            u32::MAX as u64,
        ) as u32
    }

    /// The operator's bid override, if any.
    pub fn bid_override(&self) -> Option<u32> {
        match self.bid_override.load(Ordering::Acquire) {
            0 => None,
            v => Some((v - 1) as u32),
        }
    }

    /// Set or clear the bid override.
    pub fn set_bid_override(&self, bid_cents: Option<u32>) {
        self.bid_override
            .store(bid_cents.map_or(0, |b| u64::from(b) + 1), Ordering::Release);
    }

    /// Take a bid-request slot: false when `max_in_flight` requests are out or `max_per_s`
    /// were sent in unix second `second` (0 = unlimited). A slot taken is given back with
    /// [`BuyerLive::ping_done`]; the per-second count is not.
    pub fn try_ping(&self, max_in_flight: u32, max_per_s: u32, second: u64) -> bool {
        if self
            .pings_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max_in_flight == 0 || n < max_in_flight).then_some(n + 1)
            })
            .is_err()
        {
            return false;
        }
        let rated = self
            .ping_second
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let n = if v >> 32 == second & 0xffff_ffff {
                    v & 0xffff_ffff
                } else {
                    0
                };
                (max_per_s == 0 || n < u64::from(max_per_s))
                    .then_some(((second & 0xffff_ffff) << 32) | (n + 1))
            })
            .is_ok();
        if !rated {
            self.ping_done();
        }
        rated
    }

    /// A bid request is over (answered, given up, or its call gone).
    pub fn ping_done(&self) {
        let _ = self
            .pings_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Bid requests out now.
    pub fn pings_in_flight(&self) -> u32 {
        self.pings_in_flight.load(Ordering::Acquire)
    }

    /// Calls ringing or connected now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }

    /// Take a concurrency slot unless `max` (0 = unlimited) are taken.
    pub fn try_reserve(&self, max: u32) -> bool {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (max == 0 || a < max).then_some(a + 1)
            })
            .is_ok()
    }

    /// Give a slot back.
    pub fn release(&self) {
        let _ = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                Some(a.saturating_sub(1))
            });
    }

    /// Answered calls in local hour `key`.
    pub fn answered_in_hour(&self, key: u32) -> u32 {
        stamped(self.hour.load(Ordering::Acquire), key, 32, u32::MAX as u64) as u32
    }

    /// Answered calls on local day `key`.
    pub fn answered_on_day(&self, key: u32) -> u32 {
        stamped(self.day.load(Ordering::Acquire), key, 32, u32::MAX as u64) as u32
    }

    /// Cents committed on local day `key`.
    pub fn spend_on_day(&self, key: u32) -> u64 {
        stamped(
            self.spend.load(Ordering::Acquire),
            key,
            SPEND_BITS,
            SPEND_MASK,
        )
    }

    /// Answered calls in local month `key`.
    pub fn answered_in_month(&self, key: u32) -> u32 {
        stamped(self.month.load(Ordering::Acquire), key, 32, u32::MAX as u64) as u32
    }

    /// Cents committed in local month `key`.
    pub fn spend_in_month(&self, key: u32) -> u64 {
        stamped(
            self.month_spend.load(Ordering::Acquire),
            key,
            SPEND_BITS,
            SPEND_MASK,
        )
    }

    /// Count an answered call and commit its bid against the day's and the month's budgets.
    pub fn answered(&self, at: Keys, bid_cents: u32) {
        bump(&self.hour, at.hour, 32, u32::MAX as u64, 1);
        bump(&self.day, at.day, 32, u32::MAX as u64, 1);
        bump(&self.month, at.month, 32, u32::MAX as u64, 1);
        self.spend_by(at, bid_cents as i64);
    }

    /// A call that was answered ended before it became billable: give its bid back to the
    /// day's and the month's budgets (the answered counts stand: caps count answered calls).
    pub fn refund(&self, at: Keys, bid_cents: u32) {
        self.spend_by(at, -(bid_cents as i64));
    }

    fn spend_by(&self, at: Keys, cents: i64) {
        bump(&self.spend, at.day, SPEND_BITS, SPEND_MASK, cents);
        bump(&self.month_spend, at.month, SPEND_BITS, SPEND_MASK, cents);
    }
}

/// Counters of every buyer by id; shared by every snapshot so they survive reloads.
#[derive(Debug, Default)]
pub struct Live {
    by_id: Mutex<HashMap<String, Arc<BuyerLive>>>,
}

impl Live {
    /// The counters of buyer `id` (created on first use).
    pub fn get(&self, id: &str) -> Arc<BuyerLive> {
        let mut m = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id.to_owned()).or_default().clone()
    }

    /// Clear every bid override (a reload puts the config's bids back).
    pub fn clear_bid_overrides(&self) {
        let m = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        for b in m.values() {
            b.set_bid_override(None);
        }
    }

    /// Sum of active calls over every buyer (for tests and health).
    pub fn total_active(&self) -> u32 {
        let m = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        m.values().map(|b| b.active()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_that_ring_out_pause_a_buyer_until_it_is_resumed() {
        let b = BuyerLive::default();
        let at = |hour, day| Keys {
            hour,
            day,
            month: 1,
        };
        assert_eq!(b.rang_out(at(10, 1), 2, 3, 1_000), None);
        assert_eq!(
            b.rang_out(at(11, 1), 2, 3, 2_000),
            None,
            "a new hour: one in it, two today"
        );
        assert_eq!(
            b.rang_out(at(11, 1), 2, 3, 3_000),
            Some(PauseBy::UnansweredInHour)
        );
        assert!(b.paused());
        assert_eq!(
            b.pause(),
            Some(Pause {
                by: PauseBy::UnansweredInHour,
                at_ms: 3_000
            })
        );
        assert_eq!(
            b.rang_out(at(11, 1), 2, 3, 4_000),
            None,
            "paused already: the first reason and time stand"
        );
        assert_eq!(b.pause().map(|p| p.at_ms), Some(3_000));
        b.resume();
        assert!(!b.paused() && b.pause().is_none());
        assert_eq!(
            (b.unanswered_in_hour(11), b.unanswered_on_day(1)),
            (0, 0),
            "resuming starts the counts again"
        );
        assert_eq!(b.rang_out(at(12, 2), 0, 2, 5_000), None);
        assert_eq!(
            b.rang_out(at(13, 2), 0, 2, 6_000),
            Some(PauseBy::UnansweredInDay),
            "in_hour 0: only the day's rule"
        );
        b.pause_by_operator(7_000);
        assert_eq!(
            b.pause(),
            Some(Pause {
                by: PauseBy::Operator,
                at_ms: 7_000
            })
        );
        b.resume();
        for _ in 0..10 {
            assert_eq!(b.rang_out(at(14, 3), 0, 0, 8_000), None, "no rule");
        }
        assert!(!b.paused());
    }

    #[test]
    fn bid_requests_are_capped_in_flight_and_per_second() {
        let b = BuyerLive::default();
        assert!(b.try_ping(2, 3, 100));
        assert!(b.try_ping(2, 3, 100));
        assert!(!b.try_ping(2, 3, 100), "two in flight");
        b.ping_done();
        assert!(b.try_ping(2, 3, 100), "a slot came back");
        b.ping_done();
        assert!(!b.try_ping(2, 3, 100), "three sent in second 100");
        assert_eq!(b.pings_in_flight(), 1, "the refused one took no slot");
        assert!(b.try_ping(2, 3, 101), "a new second");
        assert!(
            b.try_ping(0, 0, 101) && b.try_ping(0, 0, 101),
            "0 = unlimited"
        );
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let b = BuyerLive::default();
        assert!(b.try_reserve(2));
        assert!(b.try_reserve(2));
        assert!(!b.try_reserve(2));
        b.release();
        assert!(b.try_reserve(2));
        assert!(b.try_reserve(0), "0 = unlimited");
        b.release();
        b.release();
        b.release();
        b.release();
        assert_eq!(b.active(), 0, "never below zero");
    }

    #[test]
    fn counters_roll_over_by_key() {
        let b = BuyerLive::default();
        let at = |hour, day, month| Keys { hour, day, month };
        b.answered(at(100, 7, 3), 1500);
        b.answered(at(100, 7, 3), 1500);
        assert_eq!(
            (
                b.answered_in_hour(100),
                b.answered_on_day(7),
                b.spend_on_day(7),
                b.answered_in_month(3),
                b.spend_in_month(3)
            ),
            (2, 2, 3000, 2, 3000)
        );
        assert_eq!(b.answered_in_hour(101), 0, "next hour starts at zero");
        b.answered(at(101, 7, 3), 1500);
        assert_eq!((b.answered_in_hour(101), b.answered_on_day(7)), (1, 3));
        b.refund(at(101, 7, 3), 1500);
        assert_eq!((b.spend_on_day(7), b.spend_in_month(3)), (3000, 3000));
        assert_eq!(b.spend_on_day(8), 0);
        // the next day of the same month keeps the month's counts
        b.answered(at(130, 8, 3), 500);
        assert_eq!(
            (
                b.answered_on_day(8),
                b.answered_in_month(3),
                b.spend_in_month(3)
            ),
            (1, 4, 3500)
        );
        assert_eq!(
            (b.answered_in_month(4), b.spend_in_month(4)),
            (0, 0),
            "next month starts at zero"
        );
    }
}

#[cfg(test)]
mod health_tests {
    use super::Health;

    #[test]
    fn pings_take_it_down_and_up_with_hysteresis() {
        let h = Health::default();
        assert_eq!(h.ping_result(false, 3, 2), None);
        assert_eq!(h.ping_result(false, 3, 2), None);
        assert_eq!(h.ping_result(true, 3, 2), None, "a success breaks the run");
        assert_eq!(h.ping_result(false, 3, 2), None);
        assert_eq!(h.ping_result(false, 3, 2), None);
        assert_eq!(
            h.ping_result(false, 3, 2),
            Some(true),
            "three in a row: down"
        );
        assert!(h.down(0));
        assert_eq!(h.ping_result(true, 3, 2), None);
        assert_eq!(h.ping_result(false, 3, 2), None);
        assert_eq!(h.ping_result(true, 3, 2), None);
        assert_eq!(h.ping_result(true, 3, 2), Some(false), "two in a row: up");
        assert!(!h.down(0));
    }

    #[test]
    fn failed_calls_open_the_breaker_for_the_cooldown() {
        let h = Health::default();
        assert!(!h.call_result(true, 2, 30_000, 1_000));
        assert!(
            !h.call_result(false, 2, 30_000, 1_000),
            "an answer resets the count"
        );
        assert!(!h.call_result(true, 2, 30_000, 2_000));
        assert!(h.call_result(true, 2, 30_000, 3_000));
        assert!(h.down(3_000) && h.down(32_999));
        assert!(!h.down(33_000), "closed again by itself");
        assert!(
            !h.call_result(true, 0, 30_000, 40_000),
            "fail_calls 0: no breaker"
        );
        assert!(!h.breaker_open(40_000));
    }
}
