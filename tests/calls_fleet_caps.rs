//! Fleet-wide buyer caps in process (issue #15, item 1): with Redis, a capped buyer is rung
//! only once "Redis" grants its slot (the call waits in `Leasing`); a full cap moves on to the
//! next buyer; Redis failing or missing the deadline applies `on_cap_error`; answered calls
//! and refunds are counted, every lease is given back, whatever ends the call.

mod support;

use dce::call::lookup::{CapWrite, LeaseResult};
use dce::call::CapPolicy;
use dce_routing::Exclusion;
use std::time::Duration;
use support::sim::{buyer, config, Mode, Sim};

const S: Duration = Duration::from_secs(1);
const CALLER: &str = "+13105551234";

fn outcomes(cdr: &dce::call::cdr::Cdr) -> Vec<String> {
    cdr.bids
        .iter()
        .map(|b| format!("{}={}", b.buyer_id, b.outcome))
        .collect()
}

/// Buyers acme (1500, `acme_caps`) and bravo (1200, `bravo_caps`), both answering after 1 s;
/// Redis configured with `policy` and a 50 ms deadline.
fn sim(acme_caps: &str, bravo_caps: &str, policy: CapPolicy) -> Sim {
    let buyers = format!(
        "{}{}",
        buyer("acme", 5090, 1500, acme_caps),
        buyer("bravo", 5091, 1200, bravo_caps)
    );
    let mut sim = Sim::new(&config("", &buyers));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    sim.core.calls().set_shared(Some(dce::call::SharedChecks {
        max_calls_per_day: 0,
        allow_on_error: true,
        deadline: Duration::from_millis(50),
        on_cap_error: policy,
    }));
    // the compliance check in Redis is not what these tests are about
    sim.responder = Some(Box::new(|_| dce::call::RemoteResult::Count(1)));
    sim
}

fn invites(sim: &Sim, port: u16) -> usize {
    sim.buyer(port).calls.len()
}

fn releases(sim: &Sim) -> Vec<String> {
    sim.cap_writes
        .iter()
        .filter_map(|w| match w {
            CapWrite::Release { member, buyer } => Some(format!("{buyer}/{member}")),
            _ => None,
        })
        .collect()
}

fn counts(sim: &Sim) -> Vec<(String, i64, i64)> {
    sim.cap_writes
        .iter()
        .filter_map(|w| match w {
            CapWrite::Count {
                buyer,
                calls,
                cents,
                ..
            } => Some((buyer.clone(), *calls, *cents)),
            _ => None,
        })
        .collect()
}

fn talk_and_hang_up(sim: &mut Sim, id: &str, talk: Duration) -> dce::call::cdr::Cdr {
    sim.run_for(2 * S);
    assert_eq!(sim.finals(id), [200]);
    sim.run_for(talk);
    sim.carrier_bye(id);
    sim.run_for(40 * S);
    sim.cdrs().last().cloned().unwrap()
}

/// The buyer is rung only after its slot is granted; the lease names the call and the
/// entry, carries the caps and the buyer's local hour, day and month; the answered call is
/// counted with its bid; the BYE gives the lease back.
#[test]
fn a_capped_buyer_rings_once_its_fleet_slot_is_granted() {
    let mut sim = sim(
        "max_concurrent = 1\ndaily_cap = 40\ndaily_budget_cents = 100000",
        "",
        CapPolicy::Local,
    );
    let id = sim.place_call(CALLER);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(invites(&sim, 5090), 0, "rung before its slot was granted");
    assert_eq!(sim.lease_asks.len(), 1);
    let ask = sim.answer_lease(LeaseResult::Granted, 2);
    assert_eq!(ask.buyer, "acme");
    assert_eq!(
        (
            ask.limits.concurrent,
            ask.limits.daily,
            ask.limits.daily_budget
        ),
        (1, 40, 100_000)
    );
    assert_eq!(ask.bid_cents, 1500);
    let keys = dce_routing::local_keys(
        chrono_tz::UTC,
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 7, 15, 16, 0, 0).unwrap(),
    );
    assert_eq!(ask.keys, keys);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(invites(&sim, 5090), 1);
    let cdr = talk_and_hang_up(&mut sim, &id, 100 * S);
    assert!(
        ask.member.starts_with(&cdr.id),
        "{} vs {}",
        ask.member,
        cdr.id
    );
    assert!(cdr.billable);
    assert_eq!(cdr.fleet_caps, None);
    assert_eq!(counts(&sim), [("acme".to_owned(), 1, 1500)]);
    assert_eq!(releases(&sim), [format!("acme/{}", ask.member)]);
    sim.assert_nothing_held();
}

/// A cap reached across the fleet excludes the buyer with that cap's name; an uncapped buyer
/// asks nothing of Redis.
#[test]
fn a_full_fleet_cap_moves_on_to_the_next_buyer() {
    let mut sim = sim("max_concurrent = 1", "", CapPolicy::Local);
    let id = sim.place_call(CALLER);
    sim.run_for(Duration::from_millis(10));
    sim.answer_lease(LeaseResult::Full(Exclusion::Concurrency), 2);
    sim.run_for(Duration::from_millis(10));
    assert!(
        sim.lease_asks.is_empty(),
        "bravo has no cap: nothing to ask"
    );
    assert_eq!((invites(&sim, 5090), invites(&sim, 5091)), (0, 1));
    let cdr = talk_and_hang_up(&mut sim, &id, 5 * S);
    assert_eq!(cdr.buyer_id.as_deref(), Some("bravo"));
    assert_eq!(outcomes(&cdr), ["acme=excluded:concurrency", "bravo=won"]);
    assert!(releases(&sim).is_empty(), "nothing was taken");
    assert!(counts(&sim).is_empty(), "bravo is not counted in Redis");
    sim.assert_nothing_held();
}

/// Every cap has its own name when it is the one that is full.
#[test]
fn each_full_cap_is_named() {
    for x in [
        Exclusion::HourlyCap,
        Exclusion::DailyCap,
        Exclusion::MonthlyCap,
        Exclusion::Budget,
        Exclusion::MonthlyBudget,
    ] {
        let mut sim = sim("daily_cap = 5", "", CapPolicy::Local);
        let id = sim.place_call(CALLER);
        sim.run_for(Duration::from_millis(10));
        sim.answer_lease(LeaseResult::Full(x), 1);
        let cdr = talk_and_hang_up(&mut sim, &id, S);
        assert_eq!(outcomes(&cdr)[0], format!("acme=excluded:{}", x.as_str()));
        sim.assert_nothing_held();
    }
}

/// Redis fails with `on_cap_error = "local"`: the buyer is rung within this node's share of
/// its cap (the cap over the live nodes last seen, rounded up), the slot is held in Redis once
/// it answers again, and the CDR says so; past the share, the next buyer.
#[test]
fn redis_failing_under_the_local_policy_uses_this_nodes_share() {
    let mut sim = sim("max_concurrent = 3", "", CapPolicy::Local);
    // a grant first tells the node the fleet has two nodes: its share of 3 is 2
    let first = sim.place_call(CALLER);
    sim.run_for(Duration::from_millis(10));
    sim.answer_lease(LeaseResult::Granted, 2);
    let second = sim.place_call("+13105550002");
    sim.run_for(Duration::from_millis(10));
    let ask2 = sim.answer_lease(LeaseResult::Error("connection refused".into()), 0);
    let third = sim.place_call("+13105550003");
    sim.run_for(Duration::from_millis(10));
    sim.answer_lease(LeaseResult::Error("connection refused".into()), 0);
    sim.run_for(2 * S);
    assert_eq!(invites(&sim, 5090), 2, "two within the share of 2");
    assert_eq!(invites(&sim, 5091), 1, "the third goes to bravo");
    let held: Vec<&String> = sim
        .cap_writes
        .iter()
        .filter_map(|w| match w {
            CapWrite::HoldLocal { member, .. } => Some(member),
            _ => None,
        })
        .collect();
    assert_eq!(held, [&ask2.member]);
    for id in [&first, &second, &third] {
        sim.carrier_bye(id);
    }
    sim.run_for(40 * S);
    let cdrs = sim.cdrs();
    let by_id = |n: usize| cdrs[n].clone();
    assert_eq!(by_id(0).fleet_caps, None);
    assert_eq!(by_id(1).fleet_caps.as_deref(), Some("lookup_failed:local"));
    assert_eq!(by_id(2).fleet_caps.as_deref(), Some("lookup_failed:local"));
    assert_eq!(outcomes(&by_id(2))[0], "acme=excluded:concurrency");
    assert_eq!(sim.counters.get(dce::counters::Counter::CapLookupError), 2);
    sim.assert_nothing_held();
}

/// `on_cap_error = "skip_buyer"`: the buyer is skipped (`excluded:cap_unavailable`), and the
/// lease is given back in case Redis took it after all.
#[test]
fn redis_failing_under_skip_buyer_skips_it() {
    let mut sim = sim("hourly_cap = 10", "", CapPolicy::SkipBuyer);
    let id = sim.place_call(CALLER);
    sim.run_for(Duration::from_millis(10));
    let ask = sim.answer_lease(LeaseResult::Error("timeout".into()), 0);
    let cdr = talk_and_hang_up(&mut sim, &id, S);
    assert_eq!(
        outcomes(&cdr),
        ["acme=excluded:cap_unavailable", "bravo=won"]
    );
    assert_eq!(cdr.fleet_caps.as_deref(), Some("lookup_failed:skip_buyer"));
    assert!(ask.member.ends_with(":acme"), "{}", ask.member);
    assert!(
        releases(&sim).is_empty(),
        "no concurrency cap: no slot in Redis to give back"
    );
    sim.assert_nothing_held();
}

/// No answer within `redis_timeout_ms` counts as a failure (a core timer: simulated time sees
/// it); the answer arriving afterwards changes nothing.
#[test]
fn a_lease_that_misses_the_deadline_applies_the_policy() {
    let mut sim = sim("max_concurrent = 5", "", CapPolicy::SkipBuyer);
    let id = sim.place_call(CALLER);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.lease_asks.len(), 1);
    sim.run_for(Duration::from_millis(60));
    assert_eq!(
        invites(&sim, 5091),
        1,
        "bravo rung once the deadline passed"
    );
    // Redis answers late: ignored
    sim.answer_lease(LeaseResult::Granted, 1);
    let cdr = talk_and_hang_up(&mut sim, &id, S);
    assert_eq!(outcomes(&cdr)[0], "acme=excluded:cap_unavailable");
    assert_eq!(invites(&sim, 5090), 0);
    // what the late grant took in Redis is given back (the release was already queued)
    assert_eq!(releases(&sim).len(), 1);
    sim.assert_nothing_held();
}

/// The first buyer's slot is asked beside the admission lookups (no extra round trip before
/// the first INVITE); the carrier giving up meanwhile gives back the local slot and the lease
/// (queued behind the grant, should Redis grant it).
#[test]
fn the_first_lease_rides_with_the_admission_lookups_and_a_cancel_gives_it_back() {
    let mut sim = sim("max_concurrent = 1", "", CapPolicy::Local);
    sim.responder = None;
    let id = sim.place_call(CALLER);
    sim.run_for(Duration::from_millis(1));
    assert_eq!(
        (sim.remote.len(), sim.lease_asks.len()),
        (1, 1),
        "the compliance check and the first lease went out together"
    );
    assert_eq!(sim.core.calls().calls_view(sim.now)[0].state, "checking");
    sim.cancel(&id);
    sim.run_for(Duration::from_millis(10));
    assert!(sim.finals(&id).contains(&487), "{:?}", sim.finals(&id));
    sim.answer_lease(LeaseResult::Granted, 1);
    sim.run_for(40 * S);
    assert_eq!(releases(&sim).len(), 1);
    assert_eq!(invites(&sim, 5090), 0);
    sim.assert_nothing_held();
}

/// A call refused at admission (here by the fleet's DNC) gives its early lease back.
#[test]
fn a_refused_call_gives_its_early_lease_back() {
    let mut sim = sim("max_concurrent = 1", "", CapPolicy::Local);
    sim.responder = Some(Box::new(|_| dce::call::RemoteResult::Listed));
    let id = sim.place_call(CALLER);
    sim.run_for(Duration::from_millis(1));
    let ask = sim.answer_lease(LeaseResult::Granted, 1);
    sim.run_for(S);
    assert_eq!(sim.finals(&id), [603]);
    assert_eq!(releases(&sim), [format!("acme/{}", ask.member)]);
    sim.run_for(40 * S);
    sim.assert_nothing_held();
}

/// The carrier gives up while the call waits for a later buyer's lease (`leasing`): 487, a
/// CDR, the local slot and the lease given back.
#[test]
fn a_cancel_while_leasing_gives_everything_back() {
    let mut sim = sim("max_concurrent = 1", "max_concurrent = 1", CapPolicy::Local);
    sim.set_mode(5090, Mode::Reject(486));
    let id = sim.place_call(CALLER);
    sim.run_for(Duration::from_millis(1));
    sim.answer_lease(LeaseResult::Granted, 1);
    // acme's 486 comes at once; bravo's lease is asked (its 50 ms deadline not yet passed)
    sim.run_for(Duration::from_millis(20));
    assert_eq!(sim.lease_asks.len(), 1, "{:?}", sim.cap_writes);
    assert_eq!(sim.core.calls().calls_view(sim.now)[0].state, "leasing");
    sim.cancel(&id);
    sim.run_for(Duration::from_millis(10));
    assert!(sim.finals(&id).contains(&487), "{:?}", sim.finals(&id));
    sim.answer_lease(LeaseResult::Granted, 1);
    sim.run_for(40 * S);
    let cdr = sim.cdrs().last().cloned().unwrap();
    assert_eq!(cdr.disposition, "cancelled");
    assert_eq!(releases(&sim).len(), 2, "acme's after its 486, bravo's");
    assert_eq!(invites(&sim, 5091), 0);
    sim.assert_nothing_held();
}

/// A capped buyer that rejects gives its lease back before the next capped buyer asks for
/// its own; a call answered then ended before it is billable gives its bid back.
#[test]
fn failover_releases_then_asks_again_and_a_short_call_is_refunded() {
    let mut sim = sim(
        "max_concurrent = 1",
        "daily_budget_cents = 5000",
        CapPolicy::Local,
    );
    sim.set_mode(5090, Mode::Reject(486));
    let id = sim.place_call(CALLER);
    sim.run_for(Duration::from_millis(10));
    let acme = sim.answer_lease(LeaseResult::Granted, 1);
    sim.run_for(Duration::from_millis(20));
    assert_eq!(releases(&sim), [format!("acme/{}", acme.member)]);
    assert_eq!(invites(&sim, 5091), 0, "bravo waits for its lease");
    let bravo = sim.answer_lease(LeaseResult::Granted, 1);
    sim.run_for(Duration::from_millis(1));
    assert_eq!(invites(&sim, 5091), 1);
    assert!(!sim
        .cap_writes
        .iter()
        .any(|w| matches!(w, CapWrite::HoldLocal { .. })));
    assert_eq!((bravo.buyer.as_str(), bravo.bid_cents), ("bravo", 1200));
    assert_ne!(bravo.member, acme.member);
    let cdr = talk_and_hang_up(&mut sim, &id, 5 * S);
    assert!(!cdr.billable);
    assert_eq!(
        counts(&sim),
        [
            ("bravo".to_owned(), 1, 1200),
            ("bravo".to_owned(), 0, -1200)
        ]
    );
    assert_eq!(
        releases(&sim).len(),
        1,
        "bravo has no concurrency cap: no slot"
    );
    sim.assert_nothing_held();
}

/// Without Redis nothing is asked: the caps are this node's, as before.
#[test]
fn without_redis_caps_stay_local() {
    let buyers = buyer("acme", 5090, 1500, "max_concurrent = 1");
    let mut sim = Sim::new(&config("", &buyers));
    sim.add_buyer(5090, Mode::Answer(S));
    let id = sim.place_call(CALLER);
    sim.run_for(2 * S);
    assert!(sim.lease_asks.is_empty());
    assert_eq!(sim.finals(&id), [200]);
    sim.carrier_bye(&id);
    sim.run_for(40 * S);
    assert!(sim.cap_writes.is_empty());
    sim.assert_nothing_held();
}

/// The fleet's duplicate answer puts another buyer first after the first buyer's lease was
/// asked: that lease is given back — its own buyer's local slot and its Redis slot — and the
/// buyer now first is checked on its own.
#[test]
fn an_early_lease_for_a_buyer_the_duplicate_rules_pass_over_is_given_back() {
    use dce::call::callers::Seen;
    use dce::call::lookup::DupSeen;
    let buyers = format!(
        "duplicates = {{ window_days = 30, after = \"connected\", action = \"next_buyer\" }}\n{}{}",
        buyer("acme", 5090, 1500, "max_concurrent = 2"),
        buyer("bravo", 5091, 1200, "max_concurrent = 2")
    );
    let mut sim = Sim::new(&config("", &buyers));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    sim.core.calls().set_shared(Some(dce::call::SharedChecks {
        max_calls_per_day: 0,
        allow_on_error: true,
        deadline: Duration::from_millis(50),
        on_cap_error: CapPolicy::Local,
    }));
    sim.responder = Some(Box::new(|_| dce::call::RemoteResult::Count(1)));
    let id = sim.place_call(CALLER);
    sim.run_for(Duration::from_millis(1));
    let early = sim.answer_lease(LeaseResult::Granted, 1);
    assert_eq!(early.buyer, "acme");
    // another node connected this caller to acme: acme is passed over
    let at = chrono::Utc::now().timestamp() - 60;
    let seen = Seen::from_fields([("connected:acme", at.to_string().as_str())]);
    sim.answer_dups(Ok(DupSeen {
        campaign: Some(seen),
        buyers: Vec::new(),
    }));
    sim.run_for(Duration::from_millis(1));
    assert_eq!(releases(&sim), [format!("acme/{}", early.member)]);
    let live = sim.live.clone();
    assert_eq!(live.get("acme").active(), 0, "acme's local slot given back");
    assert_eq!(invites(&sim, 5091), 0, "bravo waits for its own lease");
    let second = sim.answer_lease(LeaseResult::Granted, 1);
    assert_eq!(second.buyer, "bravo");
    sim.run_for(Duration::from_millis(1));
    assert_eq!(invites(&sim, 5091), 1);
    assert_eq!(live.get("bravo").active(), 1);
    let cdr = talk_and_hang_up(&mut sim, &id, S);
    assert_eq!(cdr.buyer_id.as_deref(), Some("bravo"));
    assert_eq!(outcomes(&cdr), ["bravo=won", "acme=excluded:duplicate"]);
    sim.assert_nothing_held();
}
