//! Real-time bidding (issue #14) in simulated time: the call waits for its bidders at most the
//! campaign's `auction_deadline_ms`, never a bidder's longer timeout; bids re-rank the auction
//! beside the static bids; a bid's expiry, destination and minimum billable duration bind the
//! attempt; a call with no eligible bidder does not wait at all. The simulation's drop asserts
//! nothing (transactions, timers, lookups, slots) is left behind.

mod support;

use dce::rtb::{Bid, Destination, PingResult};
use std::time::Duration;
use support::sim::{config, Mode, Sim};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// Buyers, in snapshot order: 0 `hi` (rtb, port 5091), 1 `lo` (rtb, 5092, static fallback 50),
/// 2 `slow` (rtb, 5093, timeout 2,000 ms), 3 `static` (bid 300, 5094).
fn sim(deadline_ms: u32) -> Sim {
    let rtb = |id: &str, port: u16, extra: &str| {
        format!(
            "[[buyer]]\nid = \"{id}\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{port}\"\n\
             rtb = {{ url = \"http://127.0.0.1:9/{id}\", timeout_ms = 2000 }}\n{extra}\n"
        )
    };
    let buyers = format!(
        "{}{}{}{}",
        rtb("hi", 5091, ""),
        rtb("lo", 5092, "bid_cents = 50"),
        rtb("slow", 5093, ""),
        support::sim::buyer("static", 5094, 300, "")
    );
    let mut cfg = config("ring_timeout_s = 10", &buyers);
    cfg.routing.campaigns[0].auction_deadline_ms = deadline_ms;
    let mut sim = Sim::new(&cfg);
    for port in 5091..=5094 {
        sim.add_buyer(port, Mode::Answer(S));
    }
    sim
}

fn bid(cents: u32) -> PingResult {
    PingResult::Bid(Bid {
        cents,
        destination: None,
        expires_in_s: None,
        min_duration_s: None,
    })
}

fn outcomes(sim: &Sim) -> Vec<String> {
    sim.cdrs()[0]
        .bids
        .iter()
        .map(|b| format!("{}={}:{}", b.buyer_id, b.outcome, b.amount_cents))
        .collect()
}

fn pings(sim: &Sim) -> Vec<String> {
    let mut p: Vec<String> = sim.cdrs()[0]
        .pings
        .iter()
        .map(|p| format!("{}={}@{}", p.buyer_id, p.outcome, p.latency_ms))
        .collect();
    p.sort();
    p
}

fn invites(sim: &Sim, port: u16) -> usize {
    sim.buyer(port).calls.len()
}

#[test]
fn bids_in_time_are_ranked_with_the_static_ones_and_the_deadline_bounds_the_wait() {
    let mut sim = sim(250);
    let call = sim.place_call("+13105551234");
    assert_eq!(
        sim.bid_requests.len(),
        3,
        "every eligible bidder is asked at once"
    );
    for (_, q, deadline) in &sim.bid_requests {
        assert_eq!(
            q.wait_ms, 250,
            "the campaign's deadline caps the bidder's 2,000 ms"
        );
        assert_eq!(*deadline, sim.now + 250 * MS);
        assert_eq!(q.facts.caller, "13105551234");
        assert_eq!(q.facts.state, Some("CA"));
    }
    sim.run_for(20 * MS);
    sim.answer_bid(0, bid(900), 20);
    sim.answer_bid(
        1,
        PingResult::Malformed("not JSON: expected value".into()),
        20,
    );
    sim.run_for(100 * MS);
    assert_eq!(
        (0..4).map(|p| invites(&sim, 5091 + p)).sum::<usize>(),
        0,
        "nobody rings while a bidder may still answer in time"
    );
    // `slow` never answers: at 250 ms the call goes on without it.
    sim.run_for(140 * MS);
    assert_eq!(
        invites(&sim, 5091),
        1,
        "the high bidder rings at the deadline"
    );
    let late = sim.bid_requests.remove(0);
    assert_eq!(late.1.buyer, 2);
    sim.run_for(2 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert_eq!(
        outcomes(&sim),
        [
            "hi=won:900",
            "static=lost:300",
            "lo=lost:50",
            "slow=excluded:no_bid:0"
        ]
    );
    assert_eq!(
        pings(&sim),
        ["hi=bid@20", "lo=malformed@20", "slow=timeout@250"]
    );
    assert_eq!(sim.cdrs()[0].bid_cents, 900);
    sim.shutdown();
}

#[test]
fn a_call_with_no_bidder_waits_for_nothing() {
    // Only the static buyer buys campaign `auto` here: no bid request, no wait.
    let buyers = support::sim::buyer("static", 5094, 300, "");
    let mut sim = Sim::new(&config("", &buyers));
    sim.add_buyer(5094, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    assert!(sim.bid_requests.is_empty());
    sim.run_for(MS);
    assert_eq!(invites(&sim, 5094), 1, "rung at once");
    sim.run_for(2 * S);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert!(sim.cdrs()[0].pings.is_empty());
    sim.shutdown();
}

#[test]
fn every_bid_in_early_rings_at_once() {
    let mut sim = sim(250);
    let call = sim.place_call("+13105551234");
    sim.run_for(5 * MS);
    sim.answer_bid(0, PingResult::Rejected("over capacity".into()), 5);
    sim.answer_bid(1, PingResult::Error("500".into()), 5);
    sim.answer_bid(2, bid(400), 5);
    sim.run_for(MS);
    assert_eq!(
        invites(&sim, 5093),
        1,
        "no wait for the deadline once all answered"
    );
    sim.run_for(2 * S);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert_eq!(
        outcomes(&sim),
        [
            "slow=won:400",
            "static=lost:300",
            "lo=lost:50",
            "hi=excluded:no_bid:0"
        ]
    );
    assert_eq!(
        pings(&sim),
        [
            "hi=rejected:over capacity@5",
            "lo=error:500@5",
            "slow=bid@5"
        ]
    );
    sim.shutdown();
}

#[test]
fn an_expired_bid_is_skipped_and_the_next_live_bid_rings() {
    let mut sim = sim(250);
    sim.set_mode(5091, Mode::Ring);
    let call = sim.place_call("+13105551234");
    sim.answer_bid(0, bid(900), 1);
    sim.answer_bid(
        1,
        PingResult::Bid(Bid {
            cents: 800,
            destination: None,
            expires_in_s: Some(5),
            min_duration_s: None,
        }),
        1,
    );
    sim.answer_bid(2, PingResult::Timeout, 1);
    // `hi` rings out (10 s); `lo`'s bid expired at 5 s: `static` gets the call.
    sim.run_for(12 * S);
    assert_eq!(invites(&sim, 5092), 0, "the expired bid is not rung");
    assert_eq!(sim.finals(&call), vec![200]);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert_eq!(
        outcomes(&sim),
        [
            "hi=attempted:ring_timeout:900",
            "lo=excluded:expired:800",
            "static=won:300",
            "slow=excluded:no_bid:0"
        ]
    );
    assert!(pings(&sim).contains(&"lo=expired@1".to_string()));
    sim.shutdown();
}

#[test]
fn a_bid_destination_is_where_the_invite_goes() {
    let mut sim = sim(250);
    sim.add_buyer(5095, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.answer_bid(
        0,
        PingResult::Bid(Bid {
            cents: 900,
            destination: Some(Destination::Sip("sip:resv-42@127.0.0.1:5095".into())),
            expires_in_s: Some(60),
            min_duration_s: Some(5),
        }),
        1,
    );
    sim.answer_bid(1, PingResult::Timeout, 1);
    sim.answer_bid(2, PingResult::Timeout, 1);
    sim.run_for(S);
    assert_eq!(invites(&sim, 5091), 0, "not the buyer's configured trunk");
    let inv = &sim.buyer(5095).calls.values().next().unwrap().invite;
    assert_eq!(inv.request_uri().unwrap().raw, "sip:resv-42@127.0.0.1:5095");
    // The bid's minimum duration (5 s) replaces the campaign's 90 s.
    sim.run_for(6 * S);
    sim.carrier_bye(&call);
    sim.run_for(S);
    let cdr = &sim.cdrs()[0];
    assert!(cdr.billable, "{cdr:?}");
    assert_eq!(cdr.payout_cents, 900);
    sim.shutdown();
}

#[test]
fn a_number_destination_goes_through_the_buyers_trunk() {
    let mut sim = sim(250);
    let call = sim.place_call("+13105551234");
    sim.answer_bid(
        0,
        PingResult::Bid(Bid {
            cents: 900,
            destination: Some(Destination::Number("12125550199".into())),
            expires_in_s: None,
            min_duration_s: None,
        }),
        1,
    );
    sim.answer_bid(1, PingResult::Timeout, 1);
    sim.answer_bid(2, PingResult::Timeout, 1);
    sim.run_for(S);
    let inv = &sim.buyer(5091).calls.values().next().unwrap().invite;
    assert_eq!(
        inv.request_uri().unwrap().raw,
        "sip:12125550199@127.0.0.1:5091"
    );
    sim.run_for(S);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert!(!sim.cdrs()[0].billable, "the campaign's 90 s still applies");
    sim.shutdown();
}

#[test]
fn a_bidder_over_its_ping_caps_is_not_asked() {
    let buyers = format!(
        "[[buyer]]\nid = \"capped\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:5091\"\n\
         rtb = {{ url = \"http://127.0.0.1:9/\", max_in_flight = 1, max_pings_per_s = 2 }}\n{}",
        support::sim::buyer("static", 5094, 300, "")
    );
    let mut sim = Sim::new(&config("", &buyers));
    sim.add_buyer(5091, Mode::Answer(S));
    sim.add_buyer(5094, Mode::Answer(S));
    // One request out: the second call does not ask, and rings the static buyer at once.
    let first = sim.place_call("+13105551234");
    assert_eq!(sim.bid_requests.len(), 1);
    let second = sim.place_call("+13105551235");
    assert_eq!(sim.bid_requests.len(), 1, "max_in_flight = 1");
    sim.run_for(MS);
    assert_eq!(invites(&sim, 5094), 1, "the capped call did not wait");
    // The answer gives the slot back: the third call asks (the second request this second).
    sim.answer_bid(0, bid(900), 3);
    let third = sim.place_call("+13105551236");
    assert_eq!(
        sim.bid_requests.len(),
        1,
        "asked again once the first came back"
    );
    sim.answer_bid(0, bid(900), 3);
    // A fourth in the same second: over max_pings_per_s = 2.
    let fourth = sim.place_call("+13105551237");
    assert!(
        sim.bid_requests.is_empty(),
        "two requests this second already"
    );
    sim.run_for(2 * S);
    for c in [&first, &second, &third, &fourth] {
        assert_eq!(sim.finals(c), vec![200]);
        sim.carrier_bye(c);
    }
    sim.run_for(S);
    let by_caller = |n: &str| {
        let c = sim.cdrs().into_iter().find(|c| c.caller == n).unwrap();
        c.bids
            .iter()
            .map(|b| format!("{}={}", b.buyer_id, b.outcome))
            .collect::<Vec<_>>()
    };
    assert_eq!(by_caller("13105551234"), ["capped=won", "static=lost"]);
    assert_eq!(
        by_caller("13105551235"),
        ["static=won", "capped=excluded:ping_cap"]
    );
    assert_eq!(by_caller("13105551236"), ["capped=won", "static=lost"]);
    assert_eq!(
        by_caller("13105551237"),
        ["static=won", "capped=excluded:ping_cap"]
    );
    sim.shutdown();
}
