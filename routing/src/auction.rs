//! The auction: filter a campaign's buyers, rank the rest, explain every decision.

use crate::geo::State;
use crate::live::Keys;
use crate::model::{BuyerId, CampaignId, Snapshot};
use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

/// Why a buyer was not considered (the filter that excluded it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    /// Bid below the campaign floor.
    Floor,
    /// Caller's state not in the buyer's states (or unknown while the buyer names states).
    State,
    /// Outside the buyer's opening hours.
    Schedule,
    /// `max_concurrent` calls already ringing or connected.
    Concurrency,
    /// `hourly_cap` answered calls this hour.
    HourlyCap,
    /// `daily_cap` answered calls today.
    DailyCap,
    /// Today's spend plus this bid would exceed `daily_budget_cents`.
    Budget,
    /// `monthly_cap` answered calls this month.
    MonthlyCap,
    /// This month's spend plus this bid would exceed `monthly_budget_cents`.
    MonthlyBudget,
    /// Paused by an operator (`PATCH /v1/buyers/{id}`).
    Paused,
    /// The buyer's trunk host has never resolved (DNS, RFC 3263): no address to ring.
    Dns,
    /// None of the codecs the carrier offered is on the buyer's `codecs` list.
    Codec,
    /// The trunk is down: its OPTIONS pings fail, or its breaker is open.
    Down,
    /// A real-time bidder that gave no bid in time (and has no static fallback bid); the
    /// ping's own outcome says why (timeout, error, malformed, rejected).
    NoBid,
    /// Its real-time bid expired before its turn in the ring tree.
    Expired,
    /// A real-time bidder over its `max_in_flight` or `max_pings_per_s`: not asked.
    PingCap,
    /// A duplicate rule keeps the repeat caller from this buyer (`duplicates`).
    Duplicate,
    /// Its caps are kept fleet-wide in Redis, Redis did not answer in time and
    /// `on_cap_error = "skip_buyer"`.
    CapUnavailable,
    /// The call's caller identity is verified below the buyer's `min_attestation`.
    Attestation,
}

impl Exclusion {
    /// The name recorded in CDRs: `excluded:<name>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::Floor => "floor",
            Exclusion::State => "state",
            Exclusion::Schedule => "schedule",
            Exclusion::Concurrency => "concurrency",
            Exclusion::HourlyCap => "hourly_cap",
            Exclusion::DailyCap => "daily_cap",
            Exclusion::Budget => "budget",
            Exclusion::MonthlyCap => "monthly_cap",
            Exclusion::MonthlyBudget => "monthly_budget",
            Exclusion::Paused => "paused",
            Exclusion::Dns => "dns",
            Exclusion::Codec => "codec",
            Exclusion::Down => "down",
            Exclusion::NoBid => "no_bid",
            Exclusion::Expired => "expired",
            Exclusion::PingCap => "ping_cap",
            Exclusion::Attestation => "attestation",
            Exclusion::Duplicate => "duplicate",
            Exclusion::CapUnavailable => "cap_unavailable",
        }
    }
}

/// A buyer's place in one auction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Eligible, at this position of the ranking (0 = winner).
    Ranked(u16),
    /// Filtered out.
    Excluded(Exclusion),
}

/// One buyer considered in an auction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The buyer.
    pub buyer: BuyerId,
    /// Its bid at the time.
    pub bid_cents: u32,
    /// What happened to it.
    pub outcome: Outcome,
    active: u32,
    priority: i32,
}

/// Local clock values of one time zone at the auction's instant.
#[derive(Clone, Copy)]
struct Local {
    tz: Tz,
    hour_key: u32,
    day_key: u32,
    month_key: u32,
    weekday: u8,
    minute: u16,
}

impl Local {
    fn of(tz: Tz, now: DateTime<Utc>) -> Local {
        let l = now.with_timezone(&tz);
        let day = l.date_naive().num_days_from_ce() as u32;
        Local {
            tz,
            hour_key: day * 24 + l.hour(),
            day_key: day,
            month_key: (l.year().max(0) as u32) * 12 + l.month0(),
            weekday: l.weekday().num_days_from_monday() as u8,
            minute: (l.hour() * 60 + l.minute()) as u16,
        }
    }
}

/// Buyers share few zones: each zone's local clock is computed once per auction.
struct Zones {
    now: DateTime<Utc>,
    cache: [Option<Local>; 8],
}

impl Zones {
    fn get(&mut self, tz: Tz) -> Local {
        if let Some(z) = self.cache.iter().flatten().find(|z| z.tz == tz) {
            return *z;
        }
        let z = Local::of(tz, self.now);
        if let Some(slot) = self.cache.iter_mut().find(|z| z.is_none()) {
            *slot = Some(z);
        }
        z
    }
}

/// Keys of the local hour, day and month of `now` in `tz`, as the live counters stamp them.
pub fn local_keys(tz: Tz, now: DateTime<Utc>) -> Keys {
    let l = Local::of(tz, now);
    Keys {
        hour: l.hour_key,
        day: l.day_key,
        month: l.month_key,
    }
}

/// The budget a price of `bid_cents` would break at `local` (daily, then monthly), if any.
fn over_budget(
    buyer: &crate::model::Buyer,
    live: &crate::live::BuyerLive,
    day: u32,
    month: u32,
    bid_cents: u32,
) -> Option<Exclusion> {
    let bid = u64::from(bid_cents);
    if buyer.daily_budget_cents > 0 && live.spend_on_day(day) + bid > buyer.daily_budget_cents {
        Some(Exclusion::Budget)
    } else if buyer.monthly_budget_cents > 0
        && live.spend_in_month(month) + bid > buyer.monthly_budget_cents
    {
        Some(Exclusion::MonthlyBudget)
    } else {
        None
    }
}

/// Run the auction for a call to `campaign` from a caller in `caller_state` at `now`.
///
/// `out` is cleared and receives every buyer of the campaign: ranked ones first, in ranking
/// order (bid high to low, then priority high to low, then fewest active calls, then config
/// order), then the excluded ones in config order. Returns how many are ranked. Allocates
/// nothing once `out` has grown to the campaign's size.
pub fn auction(
    snap: &Snapshot,
    campaign: CampaignId,
    caller_state: Option<State>,
    now: DateTime<Utc>,
    out: &mut Vec<Entry>,
) -> usize {
    out.clear();
    let floor = snap.campaign(campaign).floor_cents;
    let mut zones = Zones {
        now,
        cache: [None; 8],
    };
    for &b in snap.buyers_for(campaign) {
        let buyer = snap.buyer(b);
        let live = snap.live(b);
        let active = live.active();
        let bid_cents = live.bid_override().unwrap_or(buyer.bid_cents);
        let mut entry = Entry {
            buyer: b,
            bid_cents,
            outcome: Outcome::Ranked(0),
            active,
            priority: buyer.priority,
        };
        let needs_clock = buyer.hourly_cap > 0
            || buyer.daily_cap > 0
            || buyer.daily_budget_cents > 0
            || buyer.monthly_cap > 0
            || buyer.monthly_budget_cents > 0;
        // A real-time bidder's price is not known yet: the floor and the budget apply to it
        // when its bid is in (`rank`).
        let rtb = buyer.rtb.is_some();
        let excluded = if live.paused() {
            Some(Exclusion::Paused)
        } else if buyer.health.is_some() && live.health.down(now.timestamp_millis().max(0) as u64) {
            Some(Exclusion::Down)
        } else if bid_cents < floor && !rtb {
            Some(Exclusion::Floor)
        } else if !buyer.states.is_empty()
            && !caller_state.is_some_and(|s| buyer.states.contains(s))
        {
            Some(Exclusion::State)
        } else if buyer.schedule.is_some_and(|s| {
            let l = zones.get(s.tz);
            !s.is_open_local(l.weekday, l.minute)
        }) {
            Some(Exclusion::Schedule)
        } else if buyer.max_concurrent > 0 && active >= buyer.max_concurrent {
            Some(Exclusion::Concurrency)
        } else if needs_clock {
            let local = zones.get(buyer.tz());
            if buyer.hourly_cap > 0 && live.answered_in_hour(local.hour_key) >= buyer.hourly_cap {
                Some(Exclusion::HourlyCap)
            } else if buyer.daily_cap > 0 && live.answered_on_day(local.day_key) >= buyer.daily_cap
            {
                Some(Exclusion::DailyCap)
            } else if buyer.monthly_cap > 0
                && live.answered_in_month(local.month_key) >= buyer.monthly_cap
            {
                Some(Exclusion::MonthlyCap)
            } else if rtb {
                None
            } else {
                over_budget(buyer, live, local.day_key, local.month_key, bid_cents)
            }
        } else {
            None
        };
        if let Some(x) = excluded {
            entry.outcome = Outcome::Excluded(x);
        }
        out.push(entry);
    }
    sort(out)
}

/// After the real-time bids are in (each eligible bidder's `bid_cents` set to its bid, or the
/// entry excluded): apply the floor and the daily budget to the bidders' prices, then rank
/// again. Static buyers keep their places relative to each other. Returns how many are ranked.
pub fn rank(snap: &Snapshot, campaign: CampaignId, now: DateTime<Utc>, out: &mut [Entry]) -> usize {
    let floor = snap.campaign(campaign).floor_cents;
    for e in out.iter_mut() {
        let buyer = snap.buyer(e.buyer);
        if buyer.rtb.is_none() || !matches!(e.outcome, Outcome::Ranked(_)) {
            continue;
        }
        let live = snap.live(e.buyer);
        if e.bid_cents < floor {
            e.outcome = Outcome::Excluded(Exclusion::Floor);
        } else if buyer.daily_budget_cents > 0 || buyer.monthly_budget_cents > 0 {
            let l = Local::of(buyer.tz(), now);
            if let Some(x) = over_budget(buyer, live, l.day_key, l.month_key, e.bid_cents) {
                e.outcome = Outcome::Excluded(x);
            }
        }
    }
    sort(out)
}

/// The call's caller identity is known (`trust`): exclude the ranked buyers whose
/// `min_attestation` it does not meet, move the chosen `prices` by each buyer's
/// `attestation_bid` (a price moved under the floor is `excluded:floor`), rank again. Returns
/// how many are ranked.
pub fn apply_trust(
    snap: &Snapshot,
    campaign: CampaignId,
    trust: crate::Trust,
    prices: crate::Prices,
    out: &mut [Entry],
) -> usize {
    use crate::Prices;
    let floor = snap.campaign(campaign).floor_cents;
    for e in out.iter_mut() {
        if !matches!(e.outcome, Outcome::Ranked(_)) {
            continue;
        }
        let buyer = snap.buyer(e.buyer);
        if trust < buyer.min_attestation {
            e.outcome = Outcome::Excluded(Exclusion::Attestation);
            continue;
        }
        let reprice = match prices {
            Prices::All => true,
            Prices::Static => buyer.rtb.is_none(),
            Prices::Rtb => buyer.rtb.is_some(),
            Prices::Keep => false,
        };
        if reprice && !buyer.attestation_bid.is_flat() {
            e.bid_cents = buyer.attestation_bid.price(trust, e.bid_cents);
            if e.bid_cents < floor {
                e.outcome = Outcome::Excluded(Exclusion::Floor);
            }
        }
    }
    sort(out)
}

/// Move `buyer`'s ranked entry to the front (a reservation: it goes first whatever the
/// others bid) and number the ranked ones again. Returns how many are ranked.
pub fn pin_first(out: &mut [Entry], buyer: BuyerId) -> usize {
    if let Some(i) = out
        .iter()
        .position(|e| e.buyer == buyer && matches!(e.outcome, Outcome::Ranked(_)))
    {
        out[..=i].rotate_right(1);
    }
    number(out)
}

/// Ranked first, by the ranking rule; excluded after, in config order (buyer index); the
/// ranked ones numbered. Returns how many are ranked.
pub fn reorder(out: &mut [Entry]) -> usize {
    sort(out)
}

fn sort(out: &mut [Entry]) -> usize {
    out.sort_unstable_by(|a, b| {
        let ra = matches!(a.outcome, Outcome::Ranked(_));
        let rb = matches!(b.outcome, Outcome::Ranked(_));
        rb.cmp(&ra).then_with(|| {
            if ra && rb {
                b.bid_cents
                    .cmp(&a.bid_cents)
                    .then(b.priority.cmp(&a.priority))
                    .then(a.active.cmp(&b.active))
                    .then(a.buyer.cmp(&b.buyer))
            } else {
                a.buyer.cmp(&b.buyer)
            }
        })
    });
    number(out)
}

/// Number the ranked entries in their order; returns how many are ranked.
fn number(out: &mut [Entry]) -> usize {
    let mut ranked = 0;
    for e in out.iter_mut() {
        if let Outcome::Ranked(r) = &mut e.outcome {
            *r = ranked.min(u16::MAX as usize) as u16;
            ranked += 1;
        }
    }
    ranked
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::geo::StateSet;
    use crate::live::Live;
    use crate::model::{Buyer, Campaign};
    use crate::schedule::Schedule;
    use chrono::TimeZone;

    pub(crate) fn campaign(floor: u32) -> Campaign {
        Campaign {
            id: "c".into(),
            numbers: vec!["18005550100".into()],
            billable_after_s: 90,
            floor_cents: floor,
            max_duration_s: 7200,
            bill_one_way_audio: true,
            record: false,
            dnc: true,
            tcpa_hours: true,
            require_consent: false,
            auction_deadline_ms: 250,
            publisher_margin_ppm: 0,
            reservation_s: 60,
            duplicates: None,
            reroute_within_s: 0,
            max_reroutes: 2,
            stir: Default::default(),
        }
    }

    fn buyer(id: &str, bid: u32) -> Buyer {
        Buyer {
            id: id.into(),
            campaigns: vec![0],
            uri: "sip:{called}@127.0.0.1:5090".into(),
            bid_cents: bid,
            max_concurrent: 0,
            hourly_cap: 0,
            daily_cap: 0,
            daily_budget_cents: 0,
            monthly_cap: 0,
            monthly_budget_cents: 0,
            pause_after_unanswered: Default::default(),
            duplicates: None,
            states: StateSet::default(),
            schedule: None,
            priority: 0,
            auth: None,
            headers: Vec::new(),
            codecs: Vec::new(),
            from_user: None,
            health: None,
            tls_ca: None,
            rtb: None,
            min_attestation: crate::Trust::None,
            record: false,
            attestation_bid: Default::default(),
        }
    }

    fn names(snap: &Snapshot, out: &[Entry]) -> Vec<String> {
        out.iter()
            .map(|e| match e.outcome {
                Outcome::Ranked(r) => format!("{}#{r}", snap.buyer(e.buyer).id),
                Outcome::Excluded(x) => format!("{}:{}", snap.buyer(e.buyer).id, x.as_str()),
            })
            .collect()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 7, 15, 16, 0, 0).unwrap() // Wed 12:00 EDT
    }

    #[test]
    fn real_time_bidders_pass_the_floor_until_their_bids_are_in_then_rank_with_the_rest() {
        let live = Live::default();
        let rtb = |id: &str, budget: u64| {
            let mut b = buyer(id, 0);
            b.daily_budget_cents = budget;
            b.rtb = Some(std::sync::Arc::new(crate::model::Rtb {
                url: "http://127.0.0.1:9/".into(),
                timeout_ms: 100,
                format: crate::model::RtbFormat::Dce,
                headers: Vec::new(),
                expose_caller: false,
                max_in_flight: 0,
                max_pings_per_s: 0,
            }));
            b
        };
        let snap = Snapshot::new(
            vec![campaign(200)],
            vec![
                buyer("static", 300),
                rtb("cheap", 0),
                rtb("rich", 0),
                rtb("broke", 500),
            ],
            &live,
        )
        .unwrap();
        let mut out = Vec::new();
        assert_eq!(
            auction(&snap, 0, None, now(), &mut out),
            4,
            "no price yet: no floor"
        );
        for e in out.iter_mut() {
            e.bid_cents = match snap.buyer(e.buyer).id.as_str() {
                "cheap" => 150,
                "rich" => 900,
                "broke" => 600,
                _ => e.bid_cents,
            };
        }
        assert_eq!(rank(&snap, 0, now(), &mut out), 2);
        assert_eq!(
            names(&snap, &out),
            ["rich#0", "static#1", "cheap:floor", "broke:budget"]
        );
    }

    #[test]
    fn trust_excludes_below_min_attestation_and_moves_prices() {
        use crate::{AttestationBid, Prices, Trust};
        let live = Live::default();
        let mut strict = buyer("strict", 3000);
        strict.min_attestation = Trust::B;
        let mut wary = buyer("wary", 2000);
        // B = 0.8, C = 0.5, unverified = 0.25
        wary.attestation_bid = AttestationBid([250_000, 500_000, 800_000, 1_000_000]);
        let snap = Snapshot::new(
            vec![campaign(600)],
            vec![strict, wary, buyer("plain", 1200)],
            &live,
        )
        .unwrap();
        let run = |t: Trust, p: Prices| {
            let mut out = Vec::new();
            auction(&snap, 0, None, now(), &mut out);
            let n = apply_trust(&snap, 0, t, p, &mut out);
            let bids: Vec<u32> = out.iter().map(|e| e.bid_cents).collect();
            (n, names(&snap, &out), bids)
        };
        let (n, got, _) = run(Trust::A, Prices::Static);
        assert_eq!(
            (n, got),
            (
                3,
                vec!["strict#0".into(), "wary#1".into(), "plain#2".into()]
            )
        );
        let (n, got, bids) = run(Trust::B, Prices::Static);
        assert_eq!(n, 3);
        assert_eq!(got, ["strict#0", "wary#1", "plain#2"]);
        assert_eq!(bids, [3000, 1600, 1200]);
        // C: strict is out, wary pays half and falls under plain
        let (n, got, bids) = run(Trust::C, Prices::All);
        assert_eq!(n, 2);
        assert_eq!(got, ["plain#0", "wary#1", "strict:attestation"]);
        assert_eq!(bids, [1200, 1000, 3000]);
        // unverified: wary's 500 is under the floor of 600
        let (n, got, _) = run(Trust::None, Prices::Static);
        assert_eq!(n, 1);
        assert_eq!(got, ["plain#0", "strict:attestation", "wary:floor"]);
        // a kept price (a reservation) is not moved, the minimum still holds
        let (_, got, bids) = run(Trust::C, Prices::Keep);
        assert_eq!(got, ["wary#0", "plain#1", "strict:attestation"]);
        assert_eq!(bids[0], 2000);
        // real-time prices only: the static wary is not moved
        let (_, _, bids) = run(Trust::C, Prices::Rtb);
        assert_eq!(bids[0], 2000);
    }

    #[test]
    fn ranking_bid_then_priority_then_load_then_order() {
        let live = Live::default();
        let mut b3 = buyer("prio", 1000);
        b3.priority = 5;
        let snap = Snapshot::new(
            vec![campaign(0)],
            vec![
                buyer("low", 500),
                buyer("a", 1000),
                b3,
                buyer("b", 1000),
                buyer("top", 2000),
            ],
            &live,
        )
        .unwrap();
        live.get("a").try_reserve(0);
        let mut out = Vec::new();
        assert_eq!(auction(&snap, 0, None, now(), &mut out), 5);
        assert_eq!(
            names(&snap, &out),
            ["top#0", "prio#1", "b#2", "a#3", "low#4"]
        );
    }

    #[test]
    fn paused_buyers_are_excluded_and_overrides_rank_by_the_new_bid() {
        let live = Live::default();
        let snap = Snapshot::new(
            vec![campaign(800)],
            vec![buyer("a", 1000), buyer("b", 900), buyer("c", 1200)],
            &live,
        )
        .unwrap();
        live.get("c").pause_by_operator(1);
        live.get("b").set_bid_override(Some(1500));
        let mut out = Vec::new();
        assert_eq!(auction(&snap, 0, None, now(), &mut out), 2);
        assert_eq!(names(&snap, &out), ["b#0", "a#1", "c:paused"]);
        assert_eq!(out[0].bid_cents, 1500, "the CDR records the bid in force");
        live.get("a").set_bid_override(Some(500));
        auction(&snap, 0, None, now(), &mut out);
        assert_eq!(names(&snap, &out), ["b#0", "a:floor", "c:paused"]);
        live.clear_bid_overrides();
        live.get("c").resume();
        auction(&snap, 0, None, now(), &mut out);
        assert_eq!(names(&snap, &out), ["c#0", "a#1", "b#2"]);
    }

    #[test]
    fn every_filter_names_itself() {
        let live = Live::default();
        let ca = crate::geo::State::parse("CA").unwrap();
        let mut states = StateSet::default();
        states.insert(ca);
        let mut by_state = buyer("by_state", 1000);
        by_state.states = states;
        let mut closed = buyer("closed", 1000);
        closed.schedule =
            Some(Schedule::parse("America/New_York", "sat,sun", "09:00", "18:00").unwrap());
        let mut busy = buyer("busy", 1000);
        busy.max_concurrent = 1;
        let mut hourly = buyer("hourly", 1000);
        hourly.hourly_cap = 1;
        let mut daily = buyer("daily", 1000);
        daily.daily_cap = 2;
        let mut broke = buyer("broke", 1000);
        broke.daily_budget_cents = 1500;
        let mut monthly = buyer("monthly", 1000);
        monthly.monthly_cap = 2;
        let mut spent = buyer("spent", 1000);
        spent.monthly_budget_cents = 2500;
        let mut fresh = buyer("fresh", 1000);
        fresh.monthly_budget_cents = 2500;
        let snap = Snapshot::new(
            vec![campaign(100)],
            vec![
                buyer("cheap", 50),
                by_state,
                closed,
                busy,
                hourly,
                daily,
                broke,
                monthly,
                spent,
                buyer("ok", 1000),
                fresh,
            ],
            &live,
        )
        .unwrap();
        live.get("busy").try_reserve(1);
        let k = local_keys(chrono_tz::UTC, now());
        let earlier = |hours: u32, days: u32| Keys {
            hour: k.hour - hours,
            day: k.day - days,
            month: k.month,
        };
        live.get("hourly").answered(k, 1000);
        live.get("daily").answered(earlier(1, 0), 1000);
        live.get("daily").answered(earlier(2, 0), 1000);
        live.get("broke").answered(earlier(2, 0), 1000);
        // earlier days of this month count toward the month, not toward today
        live.get("monthly").answered(earlier(30, 1), 1000);
        live.get("monthly").answered(earlier(60, 2), 1000);
        live.get("spent").answered(earlier(30, 1), 1000);
        live.get("spent").answered(earlier(60, 2), 1000);
        // last month's spend does not count
        live.get("fresh").answered(
            Keys {
                month: k.month - 1,
                ..earlier(24 * 40, 40)
            },
            100_000,
        );
        let mut out = Vec::new();
        let tx = crate::geo::State::parse("TX");
        assert_eq!(auction(&snap, 0, tx, now(), &mut out), 2);
        assert_eq!(
            names(&snap, &out),
            [
                "ok#0",
                "fresh#1",
                "cheap:floor",
                "by_state:state",
                "closed:schedule",
                "busy:concurrency",
                "hourly:hourly_cap",
                "daily:daily_cap",
                "broke:budget",
                "monthly:monthly_cap",
                "spent:monthly_budget"
            ]
        );
        // a CA caller gets the state-targeted buyer; an unknown state does not
        auction(&snap, 0, Some(ca), now(), &mut out);
        assert!(names(&snap, &out).contains(&"by_state#0".to_string()));
        auction(&snap, 0, None, now(), &mut out);
        assert!(names(&snap, &out).contains(&"by_state:state".to_string()));
    }

    #[test]
    fn duplicate_numbers_are_refused() {
        let mut c2 = campaign(0);
        c2.id = "c2".into();
        let err = Snapshot::new(vec![campaign(0), c2], vec![], &Live::default()).unwrap_err();
        assert!(err.to_string().contains("18005550100"));
    }
}
