//! Publishers' bid requests (`POST /v1/bid`, issue #14) in simulated time: DCE runs the call's
//! checks and auction (real-time bidders included, under the campaign's deadline) without a
//! call, answers with the publisher's price after the margin, and the next call from that
//! carrier and caller before the expiry goes to the reserved buyer at the reserved price; after
//! the expiry it is auctioned afresh. The simulation's drop asserts that no quote, lookup,
//! timer or ping slot is left behind.

mod support;

use dce::call::QuoteAnswer;
use dce::rtb::{Bid, PingResult};
use std::time::Duration;
use support::sim::{config, Mode, Sim};

const S: Duration = Duration::from_secs(1);

/// Buyers, in snapshot order: 0 `hi` (rtb, port 5091), 1 `lo` (rtb, 5092, static fallback
/// 50), 2 `static` (bid 300, 5094). The campaign keeps 20 % and holds a price 30 s.
fn sim(extra_campaign: impl FnOnce(&mut dce_routing::Campaign)) -> Sim {
    let rtb = |id: &str, port: u16, extra: &str| {
        format!(
            "[[buyer]]\nid = \"{id}\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{port}\"\n\
             rtb = {{ url = \"http://127.0.0.1:9/{id}\", timeout_ms = 2000 }}\n{extra}\n"
        )
    };
    let buyers = format!(
        "{}{}{}",
        rtb("hi", 5091, ""),
        rtb("lo", 5092, "bid_cents = 50"),
        support::sim::buyer("static", 5094, 300, "")
    );
    let mut cfg = config("ring_timeout_s = 10", &buyers);
    let c = &mut cfg.routing.campaigns[0];
    c.publisher_margin_ppm = 200_000;
    c.reservation_s = 30;
    c.billable_after_s = 0;
    extra_campaign(c);
    let mut sim = Sim::new(&cfg);
    for port in [5091, 5092, 5094] {
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

fn invites(sim: &Sim, port: u16) -> usize {
    sim.buyer(port).calls.len()
}

fn outcomes(cdr: &dce::call::cdr::Cdr) -> Vec<String> {
    cdr.bids
        .iter()
        .map(|b| format!("{}={}:{}", b.buyer_id, b.outcome, b.amount_cents))
        .collect()
}

/// Quote with `hi` bidding 900 and `lo` 500; returns the answer.
fn quote_900(sim: &mut Sim, caller: &str) -> QuoteAnswer {
    let q = sim.quote("carrier-a", caller);
    assert_eq!(sim.quote_answer(q), None, "waits for its bidders");
    assert_eq!(sim.bid_requests.len(), 2, "both bidders asked");
    sim.answer_bid(0, bid(900), 5);
    sim.answer_bid(1, bid(500), 5);
    sim.quote_answer(q)
        .cloned()
        .expect("answered when every bid is in")
}

#[test]
fn a_quoted_price_is_honoured_for_that_carriers_next_call_from_that_caller() {
    let mut sim = sim(|_| {});
    let a = quote_900(&mut sim, "+13105551234");
    let QuoteAnswer::Bid {
        bid_cents,
        expires_at,
        destination,
        ..
    } = a
    else {
        panic!("{a:?}")
    };
    assert_eq!(bid_cents, 720, "900 less the campaign's 20 %");
    assert_eq!(destination, "sip:+18005550100@127.0.0.1:5060");
    assert_eq!(
        expires_at.to_rfc3339(),
        "2026-07-15T16:00:30+00:00",
        "the campaign holds a price 30 s"
    );
    assert!(sim.quoted.len() == 1);

    // The call: nobody is pinged, `hi` rings at once at its reserved 900.
    sim.run_for(10 * S);
    let call = sim.place_call("+13105551234");
    assert!(sim.bid_requests.is_empty(), "a reserved call asks nobody");
    sim.run_for(2 * S);
    assert_eq!(invites(&sim, 5091), 1);
    assert_eq!(sim.finals(&call), vec![200]);
    sim.run_for(5 * S);
    sim.carrier_bye(&call);
    sim.run_for(S);
    let cdr = &sim.cdrs()[0];
    assert_eq!(
        outcomes(cdr),
        ["hi=won:900", "static=lost:300", "lo=lost:50"],
        "the RTB fallback keeps its static bid, behind static's"
    );
    assert_eq!(
        (cdr.revenue_cents, cdr.payout_cents, cdr.margin_cents),
        (900, 720, 180)
    );
    assert!(cdr.pings.is_empty());

    // Used once: the next call from that caller is auctioned afresh.
    let again = sim.place_call("+13105551234");
    assert_eq!(sim.bid_requests.len(), 2, "pinged again");
    sim.answer_bid(0, PingResult::Rejected("full".into()), 5);
    sim.answer_bid(1, PingResult::Timeout, 5);
    sim.run_for(2 * S);
    assert_eq!(
        invites(&sim, 5094),
        1,
        "static (300) beats lo's fallback (50)"
    );
    sim.carrier_bye(&again);
    sim.run_for(S);
    sim.shutdown();
}

#[test]
fn after_the_expiry_the_call_is_auctioned_afresh() {
    let mut sim = sim(|_| {});
    let a = quote_900(&mut sim, "+13105551234");
    assert!(matches!(a, QuoteAnswer::Bid { .. }), "{a:?}");
    sim.run_for(31 * S);
    let call = sim.place_call("+13105551234");
    assert_eq!(sim.bid_requests.len(), 2, "the reservation expired: pinged");
    sim.answer_bid(0, bid(400), 5);
    sim.answer_bid(1, bid(600), 5);
    sim.run_for(2 * S);
    assert_eq!(invites(&sim, 5092), 1, "lo's fresh 600 wins");
    assert_eq!(invites(&sim, 5091), 0);
    sim.carrier_bye(&call);
    sim.run_for(S);
    let cdr = &sim.cdrs()[0];
    assert_eq!(
        (cdr.revenue_cents, cdr.payout_cents, cdr.margin_cents),
        (600, 480, 120),
        "the margin applies to the fresh price"
    );
    sim.shutdown();
}

#[test]
fn a_bids_own_expiry_shortens_the_reservation_and_another_caller_is_not_reserved() {
    let mut sim = sim(|_| {});
    let q = sim.quote("carrier-a", "+13105551234");
    sim.answer_bid(
        0,
        PingResult::Bid(Bid {
            cents: 900,
            destination: None,
            expires_in_s: Some(10),
            min_duration_s: None,
        }),
        5,
    );
    sim.answer_bid(1, PingResult::Timeout, 5);
    let Some(QuoteAnswer::Bid { expires_at, .. }) = sim.quote_answer(q).cloned() else {
        panic!("{:?}", sim.quoted)
    };
    assert_eq!(expires_at.to_rfc3339(), "2026-07-15T16:00:10+00:00");
    // Another caller of the same carrier has no reservation.
    let other = sim.place_call("+13105559999");
    assert_eq!(sim.bid_requests.len(), 2);
    sim.answer_bid(0, bid(100), 1);
    sim.answer_bid(1, PingResult::Timeout, 1);
    sim.run_for(2 * S);
    assert_eq!(invites(&sim, 5094), 1, "static's 300 beats hi's fresh 100");
    sim.carrier_bye(&other);
    sim.run_for(11 * S);
    // 11 s later the reserved caller's price (its bid said 10 s) is gone.
    let late = sim.place_call("+13105551234");
    assert_eq!(sim.bid_requests.len(), 2, "expired with its bid");
    sim.answer_bid(0, PingResult::Timeout, 1);
    sim.answer_bid(1, PingResult::Timeout, 1);
    sim.run_for(2 * S);
    sim.carrier_bye(&late);
    sim.run_for(S);
    sim.shutdown();
}

#[test]
fn when_the_reserved_buyer_fails_the_next_one_is_paid_by_the_margin() {
    let mut sim = sim(|_| {});
    sim.set_mode(5091, Mode::Reject(486));
    let a = quote_900(&mut sim, "+13105551234");
    assert!(
        matches!(a, QuoteAnswer::Bid { bid_cents: 720, .. }),
        "{a:?}"
    );
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    assert_eq!(invites(&sim, 5094), 1, "static is next after hi's 486");
    sim.carrier_bye(&call);
    sim.run_for(S);
    let cdr = &sim.cdrs()[0];
    assert_eq!(
        outcomes(cdr),
        ["hi=attempted:486:900", "static=won:300", "lo=lost:50"]
    );
    assert_eq!(
        (cdr.revenue_cents, cdr.payout_cents, cdr.margin_cents),
        (300, 240, 60),
        "the promise was hi's; static's price is split by the margin"
    );
    sim.shutdown();
}

#[test]
fn a_reserved_buyer_that_is_no_longer_eligible_leaves_the_call_to_a_fresh_auction() {
    let mut sim = sim(|_| {});
    let a = quote_900(&mut sim, "+13105551234");
    assert!(matches!(a, QuoteAnswer::Bid { .. }));
    sim.live.get("hi").pause_by_operator(0);
    let call = sim.place_call("+13105551234");
    assert_eq!(sim.bid_requests.len(), 1, "only lo is asked: hi is paused");
    sim.answer_bid(1, bid(500), 1);
    sim.run_for(2 * S);
    assert_eq!(invites(&sim, 5092), 1);
    sim.carrier_bye(&call);
    sim.run_for(S);
    sim.shutdown();
}

#[test]
fn the_deadline_bounds_a_quote_and_refusals_say_why() {
    let mut sim = sim(|c| c.auction_deadline_ms = 250);
    // Nobody answers: at 250 ms the quote is priced from what it has (static's 300).
    let q = sim.quote("carrier-a", "+13105551234");
    sim.run_for(Duration::from_millis(249));
    assert_eq!(sim.quote_answer(q), None);
    sim.run_for(Duration::from_millis(2));
    let Some(QuoteAnswer::Bid { bid_cents, .. }) = sim.quote_answer(q).cloned() else {
        panic!("{:?}", sim.quoted)
    };
    assert_eq!(bid_cents, 240, "static's 300 less 20 %");
    sim.bid_requests.clear();

    let refused = |sim: &mut Sim, carrier: &str, caller: &str| {
        let q = sim.quote(carrier, caller);
        match sim.quote_answer(q) {
            Some(QuoteAnswer::Refused(why)) => why.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        refused(&mut sim, "carrier-zz", "+13105551234"),
        "unknown_carrier"
    );
    let q = sim.next_quote_with(|r| r.called = Some("18005550199".into()));
    assert_eq!(
        sim.quote_answer(q),
        Some(&QuoteAnswer::Refused("no_campaign".into()))
    );
    let q = sim.next_quote_with(|r| r.loop_via = Some("exch-a, sim".into()));
    assert_eq!(
        sim.quote_answer(q),
        Some(&QuoteAnswer::Refused("loop".into())),
        "a request that went round back to this node"
    );
    assert!(sim.bid_requests.is_empty(), "a refused quote asks nobody");
    sim.shutdown();
    assert_eq!(
        refused(&mut sim, "carrier-a", "+13105551234"),
        "shutting_down"
    );
}

#[test]
fn compliance_refuses_a_quote_as_it_would_the_call() {
    let mut sim = sim(|c| c.require_consent = true);
    let q = sim.quote("carrier-a", "+13105551234");
    assert_eq!(
        sim.quote_answer(q),
        Some(&QuoteAnswer::Refused("compliance:CONSENT".into()))
    );
    assert!(sim.bid_requests.is_empty());
}
