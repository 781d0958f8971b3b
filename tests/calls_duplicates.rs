//! Duplicate-call rules in process (issue #15, item 2): the same caller twice within the
//! window, on one node; each action does what it says, the CDR names the rule, and a
//! buyer's own rule replaces the campaign's for that buyer.

mod support;

use std::time::Duration;
use support::sim::{buyer, config, Mode, Sim};

const S: Duration = Duration::from_secs(1);

fn outcomes(cdr: &dce::call::cdr::Cdr) -> Vec<String> {
    cdr.bids
        .iter()
        .map(|b| format!("{}={}", b.buyer_id, b.outcome))
        .collect()
}

/// A campaign with `rule` (its `duplicates` line) and buyers acme (1500) and bravo (1200),
/// with `acme_extra` on acme.
fn sim(rule: &str, acme_extra: &str) -> Sim {
    let buyers = format!(
        "{rule}\n{}{}",
        buyer("acme", 5090, 1500, acme_extra),
        buyer("bravo", 5091, 1200, "")
    );
    let mut sim = Sim::new(&config("", &buyers));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    sim
}

/// One call from `caller`, talked for `talk`, then hung up by the carrier; its CDR.
fn call(sim: &mut Sim, caller: &str, talk: Duration) -> (Vec<u16>, dce::call::cdr::Cdr) {
    let id = sim.place_call(caller);
    sim.run_for(talk);
    if sim.finals(&id) == [200] {
        sim.carrier_bye(&id);
        sim.run_for(S);
    }
    (sim.finals(&id), sim.cdrs().last().cloned().unwrap())
}

const CALLER: &str = "+13105551234";

#[test]
fn reject_refuses_the_repeat_caller_with_603() {
    let mut sim = sim(
        "duplicates = { window_days = 30, after = \"billable\", action = \"reject\" }",
        "",
    );
    let (_, first) = call(&mut sim, CALLER, 100 * S);
    assert!(first.billable && first.duplicate.is_none(), "{first:?}");
    let (finals, second) = call(&mut sim, CALLER, S);
    assert_eq!(finals, [603]);
    assert_eq!(second.disposition, "rejected");
    assert_eq!(second.reason, "duplicate caller");
    assert_eq!(second.duplicate.as_deref(), Some("campaign:reject"));
    assert_eq!(sim.counters.get(dce::counters::Counter::Duplicate603), 1);
    let (finals, other) = call(&mut sim, "+13105559999", S);
    assert_eq!(finals, [200], "another caller is no duplicate");
    assert!(other.duplicate.is_none());
    sim.run_for(64 * S);
    sim.assert_nothing_held();
}

#[test]
fn after_decides_which_earlier_calls_count() {
    let mut sim = sim(
        "duplicates = { window_days = 30, after = \"billable\", action = \"reject\" }",
        "",
    );
    let (_, first) = call(&mut sim, CALLER, 10 * S);
    assert!(!first.billable, "10 s is under billable_after_s");
    let (finals, second) = call(&mut sim, CALLER, S);
    assert_eq!(finals, [200], "the earlier call never became billable");
    assert!(second.duplicate.is_none());
}

#[test]
fn the_window_ends() {
    let mut sim = sim(
        "duplicates = { window_days = 1, after = \"connected\", action = \"reject\" }",
        "",
    );
    call(&mut sim, CALLER, S);
    sim.advance_wall(Duration::from_secs(86_400 - 60));
    assert_eq!(call(&mut sim, CALLER, S).0, [603], "within the day");
    sim.advance_wall(Duration::from_secs(120));
    let (finals, cdr) = call(&mut sim, CALLER, S);
    assert_eq!(finals, [200], "a day after the connected call: {cdr:?}");
}

#[test]
fn next_buyer_sends_the_repeat_caller_past_the_earlier_buyer() {
    let mut sim = sim(
        "duplicates = { window_days = 30, after = \"connected\", action = \"next_buyer\" }",
        "",
    );
    let (_, first) = call(&mut sim, CALLER, S);
    assert_eq!(first.buyer_id.as_deref(), Some("acme"));
    let (_, second) = call(&mut sim, CALLER, S);
    assert_eq!(outcomes(&second), ["bravo=won", "acme=excluded:duplicate"]);
    assert_eq!(second.duplicate.as_deref(), Some("campaign:next_buyer"));
}

#[test]
fn same_buyer_sends_the_repeat_caller_to_the_earlier_buyer_first() {
    let mut sim = sim(
        "duplicates = { window_days = 30, after = \"connected\", action = \"same_buyer\" }",
        "",
    );
    sim.set_mode(5090, Mode::Reject(486));
    let (_, first) = call(&mut sim, CALLER, S);
    assert_eq!(outcomes(&first), ["acme=attempted:486", "bravo=won"]);
    sim.set_mode(5090, Mode::Answer(S));
    let (_, second) = call(&mut sim, CALLER, S);
    assert_eq!(
        outcomes(&second),
        ["bravo=won", "acme=lost"],
        "bravo had the caller: it goes first despite the lower bid"
    );
    assert_eq!(second.duplicate.as_deref(), Some("campaign:same_buyer"));
}

#[test]
fn not_billable_routes_the_repeat_caller_for_nothing() {
    let mut sim = sim(
        "duplicates = { window_days = 30, after = \"routed\", action = \"not_billable\" }",
        "",
    );
    let (_, first) = call(&mut sim, CALLER, 100 * S);
    assert_eq!((first.billable, first.revenue_cents), (true, 1500));
    let (finals, second) = call(&mut sim, CALLER, 100 * S);
    assert_eq!(finals, [200]);
    assert_eq!(second.buyer_id.as_deref(), Some("acme"));
    assert_eq!(
        (
            second.billable,
            second.revenue_cents,
            second.payout_cents,
            second.duplicate.as_deref()
        ),
        (false, 0, 0, Some("campaign:not_billable"))
    );
    let acme = sim
        .core
        .calls()
        .buyers_view()
        .into_iter()
        .find(|b| b.id == "acme")
        .unwrap();
    assert_eq!(
        acme.spend_today_cents, 1500,
        "the unbillable repeat call's bid is given back to acme's budget"
    );
}

#[test]
fn a_buyers_own_rule_replaces_the_campaigns() {
    // No campaign rule: acme's own rule keeps the repeat caller from acme alone.
    let mut sim = sim(
        "",
        "duplicates = { window_days = 30, after = \"connected\", action = \"next_buyer\" }",
    );
    let (_, first) = call(&mut sim, CALLER, S);
    assert_eq!(first.buyer_id.as_deref(), Some("acme"));
    let (_, second) = call(&mut sim, CALLER, S);
    assert_eq!(outcomes(&second), ["bravo=won", "acme=excluded:duplicate"]);
    assert_eq!(second.duplicate.as_deref(), Some("buyer:acme:next_buyer"));
    let (_, third) = call(&mut sim, CALLER, S);
    assert_eq!(
        outcomes(&third),
        ["bravo=won", "acme=excluded:duplicate"],
        "bravo has no rule: it takes the caller again"
    );
}

/// With Redis (`[storage] redis_url`) the fleet's memory decides: every call asks it beside
/// the other lookups and writes what it reached; when Redis fails (or misses the deadline),
/// this node's memory decides and the CDR says so.
#[test]
fn with_redis_the_fleets_memory_decides_and_this_nodes_stands_in() {
    use dce::call::callers::Seen;
    use dce::call::lookup::DupSeen;
    let mut sim = sim(
        "duplicates = { window_days = 30, after = \"connected\", action = \"reject\" }",
        "",
    );
    sim.core.calls().set_shared(Some(dce::call::SharedChecks {
        max_calls_per_day: 0,
        allow_on_error: true,
        deadline: Duration::from_millis(200),
        on_cap_error: dce::call::CapPolicy::Local,
    }));
    sim.responder = Some(Box::new(|_| dce::call::RemoteResult::Count(1)));
    let start = |sim: &mut Sim, caller: &str| {
        let id = sim.place_call(caller);
        sim.run_for(Duration::from_millis(10));
        id
    };
    let finish = |sim: &mut Sim, id: &str| {
        sim.run_for(2 * S);
        if sim.finals(id) == [200] {
            sim.carrier_bye(id);
            sim.run_for(S);
        }
        (sim.finals(id), sim.cdrs().last().cloned().unwrap())
    };

    // Nothing remembered anywhere: routed, and the fleet is told.
    let id = start(&mut sim, CALLER);
    let asked = sim.answer_dups(Ok(DupSeen::default()));
    assert_eq!(
        (asked.caller.as_str(), asked.campaign.as_deref()),
        ("13105551234", Some("auto"))
    );
    let (finals, first) = finish(&mut sim, &id);
    assert_eq!(finals, [200]);
    assert!(first.duplicate.is_none());
    let wrote: Vec<String> = sim
        .remembered
        .iter()
        .map(|w| {
            format!(
                "{}:{}:{}",
                w.stage.as_str(),
                w.campaign.as_deref().unwrap_or("-"),
                w.buyer
            )
        })
        .collect();
    assert_eq!(wrote, ["routed:auto:acme", "connected:auto:acme"]);
    assert!(sim.remembered.iter().all(|w| w.keep_s == 30 * 86_400));

    // Another node had this caller connected: refused here.
    let id = start(&mut sim, "+13105557777");
    let at = sim.remembered[0].at_s;
    let other_node = Seen::from_fields([("connected:bravo", at.to_string().as_str())]);
    sim.answer_dups(Ok(DupSeen {
        campaign: Some(other_node),
        buyers: Vec::new(),
    }));
    let (finals, second) = finish(&mut sim, &id);
    assert_eq!(finals, [603]);
    assert_eq!(second.duplicate.as_deref(), Some("campaign:reject"));

    // Redis fails: this node's memory knows the first caller, not a new one.
    let id = start(&mut sim, CALLER);
    sim.answer_dups(Err("connection refused".into()));
    let (finals, third) = finish(&mut sim, &id);
    assert_eq!(finals, [603]);
    assert_eq!(
        third.duplicate.as_deref(),
        Some("fleet_lookup_failed,campaign:reject")
    );
    let id = start(&mut sim, "+13105558888");
    // no answer at all: the deadline passes
    sim.run_for(S);
    assert_eq!(sim.dup_checks.len(), 1, "asked, never answered");
    sim.dup_checks.clear();
    let (finals, fourth) = finish(&mut sim, &id);
    assert_eq!(finals, [200]);
    assert_eq!(fourth.duplicate.as_deref(), Some("fleet_lookup_failed"));
    assert_eq!(
        sim.counters
            .get(dce::counters::Counter::DuplicateLookupError),
        2
    );
    sim.run_for(64 * S);
    sim.assert_nothing_held();
}

/// `after = "routed"` counts every buyer rung, not only the first: the caller acme refused and
/// bravo took is sent past both next time (and so refused for want of a buyer).
#[test]
fn every_buyer_rung_counts_as_having_had_the_caller() {
    let mut sim = sim(
        "duplicates = { window_days = 30, after = \"routed\", action = \"next_buyer\" }",
        "",
    );
    sim.set_mode(5090, Mode::Reject(486));
    let (_, first) = call(&mut sim, CALLER, S);
    assert_eq!(outcomes(&first), ["acme=attempted:486", "bravo=won"]);
    let (finals, second) = call(&mut sim, CALLER, S);
    assert_eq!(finals, [480]);
    assert_eq!(second.disposition, "rejected");
    assert_eq!(
        outcomes(&second),
        ["acme=excluded:duplicate", "bravo=excluded:duplicate"]
    );
}

/// A withheld caller is not one person: never a duplicate.
#[test]
fn a_caller_that_is_no_number_is_never_a_duplicate() {
    let mut sim = sim(
        "tcpa_hours = false\nduplicates = { window_days = 30, after = \"routed\", action = \"reject\" }",
        "",
    );
    for _ in 0..2 {
        let (finals, cdr) = call(&mut sim, "anonymous", S);
        assert_eq!(finals, [200], "{cdr:?}");
        assert!(cdr.duplicate.is_none());
    }
}
