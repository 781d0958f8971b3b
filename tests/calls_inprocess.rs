//! Call routing in process: carrier, DCE and buyers in a simulated network with simulated
//! time. Every scenario of the call-routing issue, plus exact bookkeeping under overlap.

mod support;

use dce_sip::{HeaderName, Method};
use std::time::Duration;
use support::sim::{buyer, config, Mode, Sim};

const S: Duration = Duration::from_secs(1);

fn outcomes(cdr: &dce::call::cdr::Cdr) -> Vec<String> {
    cdr.bids
        .iter()
        .map(|b| format!("{}={}", b.buyer_id, b.outcome))
        .collect()
}

fn three_buyers(extra_sip: &str) -> dce::config::Config {
    let buyers = format!(
        "{}{}{}",
        buyer("acme", 5090, 1500, ""),
        buyer("bravo", 5091, 1200, ""),
        buyer("cobalt", 5092, 900, "")
    );
    config(extra_sip, &buyers)
}

#[test]
fn a_call_is_connected_to_the_best_buyer_and_hung_up_by_the_carrier() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(2 * S));
    let call = sim.place_call("+13105551234");
    sim.run_for(5 * S);
    assert_eq!(sim.codes(&call), vec![100, 180, 200]);
    let ok = &sim.carrier[&call].responses[2];
    assert_eq!(
        ok.content_type(),
        Some("application/sdp"),
        "buyer's SDP relayed"
    );
    // Topology hiding: the buyer's INVITE shares nothing with the carrier's.
    let b = sim.buyer(5090);
    let (b_call_id, bc) = b
        .calls
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    assert_ne!(b_call_id, call);
    let inv = &bc.invite;
    assert_eq!(inv.vias().len(), 1);
    assert_eq!(inv.via().host(), "127.0.0.1");
    assert!(inv
        .header(&HeaderName::Other("X-Carrier-Secret".into()))
        .is_none());
    assert_ne!(inv.from().tag(), Some("cf1"));
    assert!(inv.contact().unwrap().uri.raw.contains("127.0.0.1:5060"));
    assert_eq!(
        inv.request_uri().unwrap().raw,
        "sip:18005550100@127.0.0.1:5090"
    );
    assert_eq!(inv.from().uri.user(), Some("13105551234"));
    let x_id = inv
        .header(&HeaderName::Other("X-DCE-Call-ID".into()))
        .unwrap()
        .to_owned();
    assert!(
        bc.requests.iter().any(|r| r.method() == Some(&Method::Ack)),
        "DCE ACKed the buyer's 200: {:?}",
        bc.requests
            .iter()
            .map(|r| r.method().cloned())
            .collect::<Vec<_>>()
    );
    assert_eq!(sim.live.total_active(), 1);

    sim.run_for(100 * S);
    sim.carrier_bye(&call);
    sim.run_for(S);
    let b = sim.buyer(5090);
    assert!(
        b.calls[&b_call_id]
            .requests
            .iter()
            .any(|r| r.method() == Some(&Method::Bye)),
        "BYE mirrored"
    );
    let cdrs = sim.cdrs();
    assert_eq!(cdrs.len(), 1);
    let cdr = &cdrs[0];
    assert_eq!(cdr.id, x_id);
    assert_eq!(cdr.disposition, "answered");
    assert_eq!(cdr.buyer_id.as_deref(), Some("acme"));
    assert_eq!(
        (cdr.bid_cents, cdr.payout_cents, cdr.billable),
        (1500, 1500, true)
    );
    assert_eq!(cdr.hangup_by.as_deref(), Some("carrier"));
    assert_eq!(cdr.caller, "13105551234");
    assert_eq!(cdr.called, "18005550100");
    assert_eq!(outcomes(cdr), ["acme=won", "bravo=lost", "cobalt=lost"]);
    assert!((cdr.duration_s - 103.0).abs() < 0.01, "{}", cdr.duration_s);
    assert_eq!(sim.live.total_active(), 0);
}

/// A billable call's money: the buyer pays its bid (revenue), the publisher is paid the
/// revenue less the campaign's `publisher_margin` rounded down to the cent, and the exchange
/// keeps the rest; an unbillable call moves no money.
#[test]
fn the_publisher_margin_splits_the_revenue() {
    let mut cfg = three_buyers("");
    cfg.routing.campaigns[0].publisher_margin_ppm = 150_000;
    cfg.routing.buyers[0].bid_cents = 1999;
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Answer(S));
    let billable = sim.place_call("+13105551234");
    sim.run_for(100 * S);
    sim.carrier_bye(&billable);
    sim.run_for(S);
    let short = sim.place_call("+13105551235");
    sim.run_for(3 * S);
    sim.carrier_bye(&short);
    sim.run_for(S);
    let cdrs = sim.cdrs();
    let of = |caller: &str| cdrs.iter().find(|c| c.caller == caller).unwrap();
    let c = of("13105551234");
    assert_eq!(
        (
            c.billable,
            c.bid_cents,
            c.revenue_cents,
            c.payout_cents,
            c.margin_cents
        ),
        (true, 1999, 1999, 1699, 300),
        "1999 less 15 % is 1699.15: the publisher gets 1699, the exchange 300"
    );
    let c = of("13105551235");
    assert_eq!(
        (
            c.billable,
            c.bid_cents,
            c.revenue_cents,
            c.payout_cents,
            c.margin_cents
        ),
        (false, 1999, 0, 0, 0)
    );
}

/// `monthly_cap` and `monthly_budget_cents` (issue #15 item 6): answered calls and spend of
/// the calendar month in the buyer's zone; a buyer over either is excluded, and the next takes
/// the call.
#[test]
fn monthly_caps_and_budgets_exclude_a_buyer_for_the_rest_of_the_month() {
    let buyers = format!(
        "{}{}{}",
        buyer("acme", 5090, 1500, "monthly_cap = 1"),
        buyer("bravo", 5091, 1200, "monthly_budget_cents = 2000"),
        buyer("cobalt", 5092, 900, "")
    );
    let mut sim = Sim::new(&config("", &buyers));
    for port in [5090, 5091, 5092] {
        sim.add_buyer(port, Mode::Answer(S));
    }
    let mut winners = Vec::new();
    for n in 0..3 {
        let call = sim.place_call(&format!("+1310555120{n}"));
        sim.run_for(100 * S);
        sim.carrier_bye(&call);
        sim.run_for(S);
        let cdr = sim.cdrs().last().cloned().unwrap();
        winners.push(cdr.buyer_id.clone().unwrap_or_default());
        if n == 2 {
            assert_eq!(
                outcomes(&cdr),
                [
                    "cobalt=won",
                    "acme=excluded:monthly_cap",
                    "bravo=excluded:monthly_budget"
                ]
            );
        }
    }
    assert_eq!(
        winners,
        ["acme", "bravo", "cobalt"],
        "acme's one call this month, then bravo's 1200 of 2000"
    );
}

/// `pause_after_unanswered` (issue #15 item 4): a buyer whose calls ring out pauses itself at
/// the rule's count, is `excluded:paused` from then on with why and when in `/v1/buyers`,
/// and takes calls again once an operator resumes it (its counts starting again).
#[test]
fn a_buyer_whose_calls_ring_out_pauses_itself_until_resumed() {
    let buyers = format!(
        "{}{}",
        buyer(
            "acme",
            5090,
            1500,
            "pause_after_unanswered = { in_hour = 2, in_day = 10 }"
        ),
        buyer("bravo", 5091, 1200, "")
    );
    let mut sim = Sim::new(&config("ring_timeout_s = 5", &buyers));
    sim.add_buyer(5090, Mode::Ring);
    sim.add_buyer(5091, Mode::Answer(S));
    let call_once = |sim: &mut Sim, n: u32| {
        let call = sim.place_call(&format!("+1310555130{n}"));
        sim.run_for(10 * S);
        sim.carrier_bye(&call);
        sim.run_for(S);
        outcomes(sim.cdrs().last().unwrap())
    };
    let acme = |sim: &mut Sim| {
        sim.core
            .calls()
            .buyers_view()
            .into_iter()
            .find(|b| b.id == "acme")
            .unwrap()
    };
    assert_eq!(
        call_once(&mut sim, 0),
        ["acme=attempted:ring_timeout", "bravo=won"]
    );
    let v = acme(&mut sim);
    assert_eq!(
        (v.paused, v.unanswered_this_hour, v.unanswered_today),
        (false, 1, 1)
    );
    assert_eq!(
        call_once(&mut sim, 1),
        ["acme=attempted:ring_timeout", "bravo=won"]
    );
    let v = acme(&mut sim);
    assert!(v.paused);
    assert_eq!(v.paused_by.as_deref(), Some("unanswered_in_hour"));
    assert!(
        v.paused_at
            .as_deref()
            .is_some_and(|t| t.starts_with("2026-07-15T16:00")),
        "{:?}",
        v.paused_at
    );
    assert_eq!(sim.counters.get(dce::counters::Counter::BuyerAutoPaused), 1);
    let rang = sim.buyer(5090).calls.len();
    assert_eq!(
        call_once(&mut sim, 2),
        ["bravo=won", "acme=excluded:paused"]
    );
    assert_eq!(
        sim.buyer(5090).calls.len(),
        rang,
        "a paused buyer is not rung"
    );
    let patch = dce::call::view::BuyerPatch {
        paused: Some(false),
        bid_cents: None,
    };
    let v = sim.core.calls().patch_buyer("acme", &patch).unwrap();
    assert_eq!(
        (v.paused, v.paused_by, v.unanswered_this_hour),
        (false, None, 0),
        "resumed, counts started again"
    );
    sim.set_mode(5090, Mode::Answer(S));
    assert_eq!(call_once(&mut sim, 3), ["acme=won", "bravo=lost"]);
    sim.run_for(64 * S);
    sim.assert_nothing_held();
    assert_eq!(sim.live.total_active(), 0);
}

#[test]
fn busy_buyer_fails_over_to_the_next() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Reject(486));
    sim.add_buyer(5091, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    assert_eq!(sim.buyer(5091).calls.len(), 1);
    sim.carrier_bye(&call);
    sim.run_for(S);
    let cdr = &sim.cdrs()[0];
    assert_eq!(
        outcomes(cdr),
        ["acme=attempted:486", "bravo=won", "cobalt=lost"]
    );
    assert_eq!(
        (cdr.billable, cdr.payout_cents),
        (false, 0),
        "3 s is not billable"
    );
    assert_eq!(sim.live.total_active(), 0);
}

#[test]
fn ring_timeout_cancels_and_fails_over() {
    let mut sim = Sim::new(&three_buyers("ring_timeout_s = 5"));
    sim.add_buyer(5090, Mode::Ring);
    sim.add_buyer(5091, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(10 * S);
    let a = sim.buyer(5090);
    let ac = a.calls.values().next().unwrap();
    assert!(
        ac.requests
            .iter()
            .any(|r| r.method() == Some(&Method::Cancel)),
        "ringing buyer CANCELled"
    );
    assert_eq!(sim.finals(&call), vec![200]);
    sim.carrier_bye(&call);
    sim.run_for(S);
    let cdr = &sim.cdrs()[0];
    assert_eq!(
        outcomes(cdr)[..2],
        ["acme=attempted:ring_timeout", "bravo=won"]
    );
    assert_eq!(sim.live.total_active(), 0);
}

#[test]
fn silent_buyer_times_out_and_every_attempt_failing_gives_480() {
    let mut sim = Sim::new(&three_buyers("max_attempts = 2\nring_timeout_s = 60"));
    sim.add_buyer(5090, Mode::Silent);
    sim.add_buyer(5091, Mode::Reject(503));
    let call = sim.place_call("+13105551234");
    sim.run_for(40 * S);
    assert_eq!(sim.finals(&call), vec![480]);
    assert!(
        sim.buyer(5092).calls.is_empty(),
        "max_attempts = 2 stops before cobalt"
    );
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.disposition, "failed");
    assert_eq!(
        outcomes(cdr),
        [
            "acme=attempted:timeout",
            "bravo=attempted:503",
            "cobalt=lost"
        ]
    );
    assert_eq!(sim.live.total_active(), 0);
}

#[test]
fn carrier_cancel_while_ringing() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Ring);
    let call = sim.place_call("+13105551234");
    sim.run_for(S);
    sim.cancel(&call);
    sim.run_for(S);
    assert_eq!(sim.finals(&call), vec![487]);
    let a = sim.buyer(5090).calls.values().next().unwrap().clone();
    assert!(a
        .requests
        .iter()
        .any(|r| r.method() == Some(&Method::Cancel)));
    assert!(
        sim.buyer(5091).calls.is_empty(),
        "no failover after a cancel"
    );
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.disposition, "cancelled");
    assert_eq!(cdr.carrier_code, 487);
    assert_eq!(sim.live.total_active(), 0);
    assert_eq!(sim.counters.get(dce::counters::Counter::Cancel200), 1);
}

#[test]
fn buyer_hangs_up_first() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let b_call = sim.buyer(5090).calls.keys().next().unwrap().clone();
    sim.buyer_bye_after(5090, &b_call, 95 * S);
    sim.run_for(100 * S);
    let reqs = &sim.carrier[&call].requests;
    assert!(
        reqs.iter().any(|r| r.method() == Some(&Method::Bye)),
        "carrier got BYE"
    );
    let bye = reqs
        .iter()
        .find(|r| r.method() == Some(&Method::Bye))
        .unwrap();
    assert_eq!(bye.call_id(), call);
    assert_eq!(
        bye.from().tag(),
        sim.carrier[&call].responses.last().unwrap().to().tag()
    );
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.hangup_by.as_deref(), Some("buyer"));
    assert!(cdr.billable);
    assert_eq!(sim.live.total_active(), 0);
}

#[test]
fn rejections_403_404_480_with_cdrs() {
    // no eligible buyer: everyone excluded
    let cfg = config("", &buyer("acme", 5090, 50, "states = [\"TX\"]"));
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Answer(S));
    let call = sim.place_call("+13105551234"); // CA caller
    sim.run_for(S);
    assert_eq!(sim.finals(&call), vec![480]);
    assert!(sim.buyer(5090).calls.is_empty());
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.disposition, "rejected");
    assert_eq!(outcomes(cdr), ["acme=excluded:state"]);

    // unknown source: 403 and no buyer sees an INVITE
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.carrier_addr = "127.0.0.9:5070".parse().unwrap();
    let call = sim.place_call("+13105551234");
    sim.run_for(S);
    assert_eq!(sim.finals(&call), vec![403]);
    assert!(sim.buyer(5090).calls.is_empty());
    assert_eq!(sim.cdrs()[0].reason, "unknown source");
}

#[test]
fn unknown_number_gets_404() {
    let mut sim = Sim::new(&three_buyers(""));
    let call = sim.place_call("+13105551234");
    // rewrite: a second call to an unknown number
    let _ = call;
    let mut m = dce_sip::MessageBuf::request(Method::Invite, "sip:+18005559999@127.0.0.1");
    m.push(
        HeaderName::Via,
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx404",
    )
    .push(HeaderName::From, "<sip:+13105551234@127.0.0.1>;tag=1")
    .push(HeaderName::To, "<sip:+18005559999@127.0.0.1>")
    .push(HeaderName::CallId, "nocampaign")
    .push(HeaderName::CSeq, "1 INVITE");
    support::feed(
        &mut sim.core,
        m.print(),
        dce_sip::transaction::Peer {
            transport: dce_sip::transaction::Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
            conn: Some(0),
        },
        sim.now,
    );
    let mut codes = Vec::new();
    while let Some(t) = support::next_transmit(&mut sim.core) {
        if let Ok(r) = dce_sip::parse(t.bytes) {
            if r.call_id() == "nocampaign" {
                codes.extend(r.code());
            }
        }
    }
    assert_eq!(codes, vec![100, 404]);
}

#[test]
fn max_concurrent_sends_the_overlapping_call_to_the_next_buyer() {
    let cfg = config(
        "",
        &format!(
            "{}{}",
            buyer("acme", 5090, 1500, "max_concurrent = 1"),
            buyer("bravo", 5091, 1000, "")
        ),
    );
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    let c1 = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let c2 = sim.place_call("+13105551235");
    sim.run_for(2 * S);
    assert_eq!((sim.finals(&c1), sim.finals(&c2)), (vec![200], vec![200]));
    assert_eq!(sim.buyer(5090).calls.len(), 1);
    assert_eq!(sim.buyer(5091).calls.len(), 1);
    sim.carrier_bye(&c1);
    sim.carrier_bye(&c2);
    sim.run_for(S);
    let cdrs = sim.cdrs();
    assert_eq!(
        outcomes(&cdrs[1]),
        ["bravo=won", "acme=excluded:concurrency"]
    );
    assert_eq!(sim.live.total_active(), 0);
}

#[test]
fn max_duration_ends_both_legs() {
    let cfg = config("", &buyer("acme", 5090, 1500, "")).clone();
    let mut cfg = cfg;
    cfg.routing.campaigns[0].max_duration_s = 30;
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(40 * S);
    assert!(sim.carrier[&call]
        .requests
        .iter()
        .any(|r| r.method() == Some(&Method::Bye)));
    let b = sim.buyer(5090).calls.values().next().unwrap();
    assert!(b.requests.iter().any(|r| r.method() == Some(&Method::Bye)));
    let cdr = &sim.cdrs()[0];
    assert_eq!(
        (cdr.hangup_by.as_deref(), cdr.reason.as_str()),
        (Some("dce"), "max_duration")
    );
    assert!((cdr.duration_s - 30.0).abs() < 0.01);
}

#[test]
fn reload_changes_the_next_auction_and_active_calls_survive() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    let c1 = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    // bravo now outbids acme
    let cfg2 = config(
        "",
        &format!(
            "{}{}",
            buyer("acme", 5090, 1500, ""),
            buyer("bravo", 5091, 2500, "")
        ),
    );
    let live = sim.live.clone();
    let snap = std::sync::Arc::new(dce::server::snapshot_of(&cfg2, &live).unwrap());
    sim.core.calls().reload(snap, &cfg2.routing.carriers);
    let c2 = sim.place_call("+13105551235");
    sim.run_for(2 * S);
    assert_eq!(
        sim.buyer(5091).calls.len(),
        1,
        "the next call follows the new bid"
    );
    assert_eq!(sim.live.total_active(), 2);
    sim.carrier_bye(&c1);
    sim.carrier_bye(&c2);
    sim.run_for(S);
    let cdrs = sim.cdrs();
    assert_eq!(
        cdrs[0].buyer_id.as_deref(),
        Some("acme"),
        "the active call kept its snapshot"
    );
    assert_eq!(cdrs[0].disposition, "answered");
    assert_eq!(
        (cdrs[1].buyer_id.as_deref(), cdrs[1].bid_cents),
        (Some("bravo"), 2500)
    );
    assert_eq!(sim.live.total_active(), 0);
}

#[test]
fn carrier_over_max_cps_gets_503_with_retry_after() {
    let text = three_buyers("");
    let mut cfg = text;
    cfg.routing.carriers[0].max_cps = 2;
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Reject(486));
    sim.add_buyer(5091, Mode::Reject(486));
    sim.add_buyer(5092, Mode::Reject(486));
    let calls: Vec<String> = (0..3)
        .map(|i| sim.place_call(&format!("+1310555000{i}")))
        .collect();
    sim.run_for(S);
    assert_eq!(sim.finals(&calls[2]), vec![503]);
    let r = sim.carrier[&calls[2]].responses.last().unwrap();
    assert_eq!(r.header(&HeaderName::RetryAfter), Some("1"));
}

#[test]
fn overlapping_calls_hammered_counters_return_to_zero() {
    let cfg = config(
        "ring_timeout_s = 3",
        &format!(
            "{}{}{}",
            buyer("acme", 5090, 1500, "max_concurrent = 3\nhourly_cap = 40"),
            buyer("bravo", 5091, 1200, "max_concurrent = 5"),
            buyer("cobalt", 5092, 900, "")
        ),
    );
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Answer(2 * S));
    sim.add_buyer(5091, Mode::Reject(486));
    sim.add_buyer(5092, Mode::Ring);
    let mut calls = Vec::new();
    for i in 0..120 {
        let c = sim.place_call(&format!("+1310555{i:04}"));
        match i % 4 {
            0 => sim.carrier_bye_after(&c, Duration::from_millis(2500 + 37 * i as u64)),
            1 => {
                sim.run_for(Duration::from_millis(300));
                sim.cancel(&c);
            }
            _ => sim.carrier_bye_after(&c, 20 * S),
        }
        calls.push(c);
        sim.run_for(Duration::from_millis(200));
    }
    sim.run_for(120 * S);
    // carrier BYEs for answered calls still up
    for c in &calls {
        if sim.finals(c).contains(&200) && sim.cdrs().iter().all(|r| r.carrier_call_id != *c) {
            sim.carrier_bye(c);
        }
    }
    sim.run_for(60 * S);
    let cdrs = sim.cdrs();
    assert_eq!(cdrs.len(), 120, "one CDR per call");
    assert_eq!(sim.live.total_active(), 0, "every slot released");
    assert_eq!(sim.core.calls().active_calls(), 0);
    let answered = cdrs.iter().filter(|c| c.disposition == "answered").count();
    let cancelled = cdrs.iter().filter(|c| c.disposition == "cancelled").count();
    let failed = cdrs.iter().filter(|c| c.disposition == "failed").count();
    // acme (3 at once) answers; bravo is busy; cobalt rings out: every end path is exercised.
    assert!(
        answered >= 5 && cancelled >= 10 && failed >= 10,
        "answered {answered}, cancelled {cancelled}, failed {failed}"
    );
    let cap_hits = cdrs
        .iter()
        .flat_map(|c| c.bids.iter())
        .filter(|b| b.outcome == "excluded:concurrency")
        .count();
    assert!(cap_hits > 0, "acme's max_concurrent was hit");
    assert!(cdrs
        .iter()
        .all(|c| c.disposition != "answered" || c.buyer_id.as_deref() == Some("acme")));
}

#[test]
fn invite_retransmissions_never_spawn_a_second_outbound_call() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Ring);
    let call = sim.place_call("+13105551234");
    sim.run_for(Duration::from_millis(200));
    sim.retransmit_invite(&call);
    sim.retransmit_invite(&call);
    sim.run_for(S);
    assert_eq!(
        sim.buyer(5090).calls.len(),
        1,
        "one buyer INVITE for three carrier INVITEs"
    );
    assert_eq!(sim.live.total_active(), 1);
}

#[test]
fn a_recording_buyer_records_its_calls_except_where_every_party_must_consent() {
    let buyers = format!(
        "{}{}",
        buyer("acme", 5090, 1500, "record = true"),
        buyer("bravo", 5091, 1200, "")
    );
    let mut sim = Sim::new(&config("", &buyers));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    // a New York caller: recorded; a Los Angeles caller: California needs every party's
    // consent, so not recorded, and the CDR says why
    let ny = sim.place_call("+12125551234");
    sim.run_for(2 * S);
    let ca = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    sim.carrier_bye(&ny);
    sim.carrier_bye(&ca);
    sim.run_for(64 * S);
    let recorded = sim.media.recorded.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let cdrs = sim.cdrs();
    let cdr_of = |caller: &str| cdrs.iter().find(|c| c.caller == caller).unwrap().clone();
    let (ny_cdr, ca_cdr) = (cdr_of("12125551234"), cdr_of("13105551234"));
    let day = ny_cdr.invite_at[..10].to_owned();
    assert!(
        recorded[0].1.ends_with(format!("{day}/{}.wav", ny_cdr.id)),
        "{recorded:?}"
    );
    let skipped = ca_cdr
        .recording
        .expect("the CDR says why it was not recorded");
    assert_eq!(skipped.skipped.as_deref(), Some("all_party_consent:CA"));
    assert_eq!(skipped.path, None);
    // the fake relay reports no file: the recorded call's CDR has none either
    assert_eq!(ny_cdr.recording, None);
    sim.assert_nothing_held();
}

#[test]
fn an_info_digit_towards_a_leg_with_telephone_event_is_played_as_rfc_4733_not_relayed() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.media
        .plays_dtmf
        .store(true, std::sync::atomic::Ordering::Relaxed);
    sim.add_buyer(5090, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    for (cseq, ct, body) in [
        (2, "application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
        (3, "application/dtmf-relay", "signal= #\r\n"),
        (4, "application/dtmf", "9"),
        // not a DTMF digit, and not a DTMF body: relayed as they came
        (5, "application/dtmf-relay", "Signal=16\r\nDuration=160\r\n"),
        (6, "application/x-other", "Signal=5"),
    ] {
        sim.carrier_in_dialog(&call, Method::Info, cseq, Some((ct, body)));
    }
    sim.run_for(S);
    let played = sim.media.dtmf.lock().unwrap().clone();
    let played: Vec<(dce_media::Side, char, u32)> =
        played.into_iter().map(|(_, s, d, ms)| (s, d, ms)).collect();
    assert_eq!(
        played,
        [
            (dce_media::Side::B, '5', 160),
            (dce_media::Side::B, '#', 250),
            (dce_media::Side::B, '9', 250)
        ],
        "towards the buyer"
    );
    let b = sim.buyer(5090).calls.values().next().unwrap().clone();
    let infos: Vec<String> = b
        .requests
        .iter()
        .filter(|r| r.method() == Some(&Method::Info))
        .map(|r| String::from_utf8_lossy(r.body()).into_owned())
        .collect();
    assert_eq!(
        infos,
        ["Signal=16\r\nDuration=160\r\n", "Signal=5"],
        "only what is no digit reached the buyer as INFO"
    );
    let oks = sim.carrier[&call]
        .other_responses
        .iter()
        .filter(|r| r.code() == Some(200) && *r.cseq_method() == Method::Info)
        .count();
    assert_eq!(
        oks, 5,
        "every INFO answered 200 (DCE's own, or the buyer's relayed)"
    );
    sim.carrier_bye(&call);
    sim.run_for(64 * S);
    sim.assert_nothing_held();
}

#[test]
fn info_update_and_reinvite_are_mirrored_with_responses_relayed() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let dtmf = "Signal=5\r\nDuration=160\r\n";
    sim.carrier_in_dialog(
        &call,
        Method::Info,
        2,
        Some(("application/dtmf-relay", dtmf)),
    );
    sim.carrier_in_dialog(&call, Method::Options, 3, None);
    sim.carrier_in_dialog(
        &call,
        Method::Update,
        4,
        Some(("application/sdp", support::sim::SDP)),
    );
    let reoffer = support::sim::SDP
        .replace("o=- 1 1", "o=- 1 2")
        .replace("m=audio 40000", "m=audio 40002");
    sim.carrier_in_dialog(
        &call,
        Method::Invite,
        5,
        Some(("application/sdp", &reoffer)),
    );
    // unparseable SDP in a re-INVITE is refused, not forwarded
    sim.carrier_in_dialog(
        &call,
        Method::Invite,
        6,
        Some(("application/sdp", "v=0\r\nnonsense")),
    );
    sim.run_for(S);
    let b = sim.buyer(5090).calls.values().next().unwrap().clone();
    let methods: Vec<Method> = b
        .requests
        .iter()
        .filter_map(|r| r.method().cloned())
        .collect();
    for m in [
        Method::Info,
        Method::Options,
        Method::Update,
        Method::Invite,
    ] {
        assert!(
            methods.contains(&m),
            "{m} mirrored to the buyer: {methods:?}"
        );
    }
    assert_eq!(
        methods.iter().filter(|m| **m == Method::Invite).count(),
        1,
        "only the good re-INVITE reached the buyer"
    );
    let info = b
        .requests
        .iter()
        .find(|r| r.method() == Some(&Method::Info))
        .unwrap();
    assert_eq!(info.content_type(), Some("application/dtmf-relay"));
    assert!(info.body().starts_with(b"Signal=5"));
    assert_eq!(
        info.call_id(),
        b.invite.call_id(),
        "in the buyer's dialog, not the carrier's"
    );
    let update = b
        .requests
        .iter()
        .find(|r| r.method() == Some(&Method::Update))
        .unwrap();
    let body = String::from_utf8_lossy(update.body());
    assert!(
        body.contains("m=audio 20") && !body.contains("40000"),
        "UPDATE SDP points at DCE: {body}"
    );
    let reinvite = b
        .requests
        .iter()
        .find(|r| r.method() == Some(&Method::Invite))
        .unwrap();
    assert!(String::from_utf8_lossy(reinvite.body()).contains("o=- 1 2 IN IP4 127.0.0.1"));
    // the buyer's 200s came back to the carrier for each, and the re-INVITE's 200 was ACKed
    let got: Vec<(String, u16)> = sim.carrier[&call]
        .other_responses
        .iter()
        .map(|r| (r.cseq_method().to_string(), r.code().unwrap()))
        .collect();
    for m in ["INFO", "OPTIONS", "UPDATE"] {
        assert!(got.contains(&(m.to_string(), 200)), "{m} answered: {got:?}");
    }
    let codes: Vec<u16> = sim.carrier[&call]
        .responses
        .iter()
        .filter_map(|r| r.code())
        .collect();
    assert!(
        codes.iter().filter(|c| **c == 200).count() >= 2,
        "re-INVITE 200 relayed: {codes:?}"
    );
    assert!(
        codes.contains(&488),
        "unparseable SDP answered 488: {codes:?}"
    );
    let acks = b
        .requests
        .iter()
        .filter(|r| r.method() == Some(&Method::Ack))
        .count();
    assert_eq!(
        acks, 2,
        "DCE ACKed the buyer's 200 to the INVITE and to the re-INVITE"
    );
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert_eq!(sim.live.total_active(), 0);
}

#[test]
fn buyer_side_info_and_update_reach_the_carrier() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let b_call = sim.buyer(5090).calls.keys().next().unwrap().clone();
    sim.buyer_in_dialog(5090, &b_call, Method::Info);
    sim.buyer_in_dialog(5090, &b_call, Method::Update);
    sim.run_for(S);
    let got: Vec<Method> = sim.carrier[&call]
        .requests
        .iter()
        .filter_map(|r| r.method().cloned())
        .collect();
    assert_eq!(
        got,
        vec![Method::Info, Method::Update],
        "mirrored to the carrier's dialog"
    );
    let req = &sim.carrier[&call].requests[0];
    assert_eq!(req.call_id(), call);
    let answers: Vec<(u16, String, u16)> = sim
        .buyer_responses()
        .iter()
        .map(|(p, r)| (*p, r.cseq_method().to_string(), r.code().unwrap()))
        .collect();
    assert!(
        answers.contains(&(5090, "INFO".into(), 200))
            && answers.contains(&(5090, "UPDATE".into(), 200)),
        "{answers:?}"
    );
}

#[test]
fn shutdown_ends_every_call_and_releases_every_slot() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Ring);
    let answered = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    // acme now has one call; a second one rings at acme too (it is ranked first again)
    let ringing = sim.place_call("+13105551235");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.live.total_active(), 2);
    sim.shutdown();
    sim.run_for(S);
    assert!(sim.carrier[&answered]
        .requests
        .iter()
        .any(|r| r.method() == Some(&Method::Bye)));
    assert_eq!(sim.finals(&ringing).last(), Some(&503));
    assert_eq!(sim.live.total_active(), 0);
    let cdrs = sim.cdrs();
    assert_eq!(cdrs.len(), 2);
    assert!(cdrs
        .iter()
        .all(|c| c.reason == "shutdown" && c.hangup_by.as_deref() == Some("dce")));
    // and new calls are refused
    let late = sim.place_call("+13105551236");
    sim.run_for(S);
    assert_eq!(sim.finals(&late), vec![503]);
}

fn sdp_of(m: &dce_sip::Message) -> String {
    String::from_utf8_lossy(m.body()).into_owned()
}

#[test]
fn media_is_anchored_both_ways_and_the_relay_learns_both_parties() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let b = sim.buyer(5090).calls.values().next().unwrap().clone();
    let offer = sdp_of(&b.invite);
    assert!(
        offer.contains("c=IN IP4 127.0.0.1") && offer.contains("m=audio 20012 RTP/AVP 0"),
        "{offer}"
    );
    let ok = sim.carrier[&call]
        .responses
        .iter()
        .find(|r| r.code() == Some(200))
        .unwrap();
    assert!(
        sdp_of(ok).contains("m=audio 20008 RTP/AVP 0"),
        "{}",
        sdp_of(ok)
    );
    let remotes = sim.media.remotes.lock().unwrap().clone();
    let sides: Vec<(dce_media::Side, Option<std::net::SocketAddr>)> =
        remotes.iter().map(|(_, s, st)| (*s, st[0].rtp)).collect();
    assert!(sides.contains(&(dce_media::Side::A, Some("127.0.0.1:40000".parse().unwrap()))));
    assert!(sides.contains(&(dce_media::Side::B, Some("127.0.0.1:40000".parse().unwrap()))));
    assert_eq!(sim.media.answered.lock().unwrap().len(), 1);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert!(
        sim.cdrs()[0].quality.is_some(),
        "the CDR carries the media report"
    );
}

#[test]
fn late_offer_goes_through_the_acks() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    let call = sim.place_call_late_offer("+13105551234");
    sim.run_for(2 * S);
    let b = sim.buyer(5090).calls.values().next().unwrap().clone();
    assert!(b.invite.body().is_empty(), "no offer to the buyer either");
    let ok = sim.carrier[&call]
        .responses
        .iter()
        .find(|r| r.code() == Some(200))
        .unwrap();
    assert!(
        sdp_of(ok).contains("m=audio 200"),
        "buyer's offer rewritten for the carrier: {}",
        sdp_of(ok)
    );
    let ack = b
        .requests
        .iter()
        .find(|r| r.method() == Some(&Method::Ack))
        .expect("buyer ACKed");
    let answer = sdp_of(ack);
    assert!(
        answer.contains("m=audio 200") && !answer.contains("41000"),
        "carrier's answer rewritten: {answer}"
    );
    let remotes = sim.media.remotes.lock().unwrap().clone();
    assert!(remotes.iter().any(|(_, s, st)| *s == dce_media::Side::A
        && st[0].rtp == Some("127.0.0.1:41000".parse().unwrap())));
}

#[test]
fn port_exhaustion_rejects_with_503_and_counts() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.media
        .exhausted
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let call = sim.place_call("+13105551234");
    sim.run_for(S);
    assert_eq!(sim.finals(&call), vec![503]);
    assert!(sim.buyer(5090).calls.is_empty());
    assert_eq!(sim.counters.get(dce::counters::Counter::MediaPorts503), 1);
    assert_eq!(sim.live.total_active(), 0);
}

#[test]
fn rtp_timeout_hangs_up_both_legs() {
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let id = sim.media.answered.lock().unwrap()[0];
    sim.rtp_timeout(id);
    sim.run_for(S);
    assert!(sim.carrier[&call]
        .requests
        .iter()
        .any(|r| r.method() == Some(&Method::Bye)));
    let b = sim.buyer(5090).calls.values().next().unwrap().clone();
    assert!(b.requests.iter().any(|r| r.method() == Some(&Method::Bye)));
    let cdr = &sim.cdrs()[0];
    assert_eq!(
        (cdr.reason.as_str(), cdr.hangup_by.as_deref()),
        ("rtp_timeout", Some("dce"))
    );
}

#[test]
fn one_way_audio_is_not_billable_when_the_campaign_says_so() {
    let mut cfg = three_buyers("");
    cfg.routing.campaigns[0].bill_one_way_audio = false;
    cfg.routing.campaigns[0].billable_after_s = 5;
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Answer(S));
    *sim.media.report.lock().unwrap() = dce_media::MediaReport {
        carrier_in: dce_media::StreamReport {
            packets: 500,
            ..Default::default()
        },
        buyer_in: dce_media::StreamReport {
            packets: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let call = sim.place_call("+13105551234");
    sim.run_for(10 * S);
    sim.carrier_bye(&call);
    sim.run_for(S);
    let cdr = &sim.cdrs()[0];
    let q = cdr.quality.as_ref().unwrap();
    assert!(q.one_way_audio);
    assert_eq!((cdr.billable, cdr.payout_cents), (false, 0));
    // and with the default (bill it), the same call pays
    let mut sim = Sim::new(&three_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    *sim.media.report.lock().unwrap() = dce_media::MediaReport {
        carrier_in: dce_media::StreamReport {
            packets: 500,
            ..Default::default()
        },
        ..Default::default()
    };
    let call = sim.place_call("+13105551234");
    sim.run_for(100 * S);
    sim.carrier_bye(&call);
    sim.run_for(S);
    let cdr = &sim.cdrs()[0];
    assert!(cdr.quality.as_ref().unwrap().one_way_audio && cdr.billable);
}

fn compliance_sim(extra: &str) -> Sim {
    let mut cfg = three_buyers("");
    let text = format!("[node]\nid = \"x\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n[compliance]\n{extra}\n");
    cfg.compliance = dce::config::parse("c.toml", &text).unwrap().compliance;
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Answer(S));
    sim
}

fn reason(sim: &Sim, call: &str) -> Option<String> {
    sim.carrier[call]
        .responses
        .iter()
        .find(|r| r.code() == Some(603))
        .and_then(|r| r.header(&dce_sip::HeaderName::Reason).map(str::to_owned))
}

#[test]
fn dnc_listed_caller_gets_603_and_no_buyer_rings() {
    let mut sim = compliance_sim("");
    sim.compliance
        .lock()
        .unwrap()
        .internal
        .write()
        .unwrap()
        .add("+13105551234")
        .unwrap();
    let call = sim.place_call("+13105551234");
    sim.run_for(S);
    assert_eq!(sim.finals(&call), vec![603]);
    assert_eq!(
        reason(&sim, &call).as_deref(),
        Some("SIP;cause=603;text=\"DNC\"")
    );
    assert!(sim.buyer(5090).calls.is_empty());
    let cdr = &sim.cdrs()[0];
    assert_eq!(
        (cdr.compliance.as_str(), cdr.disposition.as_str()),
        ("reject:DNC", "rejected")
    );
    // removed from the list: effective on the next call
    sim.compliance
        .lock()
        .unwrap()
        .internal
        .write()
        .unwrap()
        .remove("3105551234")
        .unwrap();
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    assert_eq!(sim.finals(&call), vec![200]);
}

#[test]
fn outside_calling_hours_in_the_callers_zone_gets_tcpa_hours() {
    use chrono::TimeZone;
    let mut sim = compliance_sim("state_hours = { CA = { start = \"09:00\", end = \"20:00\" } }");
    // 15:30 UTC = 08:30 in Los Angeles (caller +1 310): inside 08:00–21:00, outside CA's 09:00
    sim.clock.set(
        chrono::Utc
            .with_ymd_and_hms(2026, 7, 15, 15, 30, 0)
            .unwrap(),
    );
    let call = sim.place_call("+13105551234");
    sim.run_for(S);
    assert_eq!(
        reason(&sim, &call).as_deref(),
        Some("SIP;cause=603;text=\"TCPA_HOURS\"")
    );
    // a New York caller at the same instant (11:30) is fine
    let ny = sim.place_call("+12125551234");
    sim.run_for(2 * S);
    assert_eq!(sim.finals(&ny), vec![200]);
}

#[test]
fn fourth_call_in_a_day_gets_tcpa_frequency_and_allowed_calls_record_the_checks() {
    let mut sim = compliance_sim("max_calls_per_day = 3");
    let mut calls = Vec::new();
    for _ in 0..4 {
        let c = sim.place_call("+13105551234");
        sim.run_for(2 * S);
        calls.push(c);
    }
    for c in &calls[..3] {
        assert_eq!(sim.finals(c), vec![200]);
    }
    assert_eq!(
        reason(&sim, &calls[3]).as_deref(),
        Some("SIP;cause=603;text=\"TCPA_FREQUENCY\"")
    );
    for c in &calls[..3] {
        sim.carrier_bye(c);
    }
    sim.run_for(S);
    let cdrs = sim.cdrs();
    let answered: Vec<&str> = cdrs
        .iter()
        .filter(|c| c.disposition == "answered")
        .map(|c| c.compliance.as_str())
        .collect();
    assert_eq!(answered, vec!["pass:dnc,tcpa_hours,frequency"; 3]);
    assert_eq!(sim.counters.get(dce::counters::Counter::Compliance603), 1);
}

fn shared_sim(allow_on_error: bool) -> Sim {
    let mut sim = compliance_sim("max_calls_per_day = 2");
    // as `dce run` does with Redis configured: the cap is counted in Redis, not in process
    sim.compliance.lock().unwrap().max_calls_per_day = 0;
    sim.core.calls().set_shared(Some(dce::call::SharedChecks {
        max_calls_per_day: 2,
        allow_on_error,
        deadline: Duration::from_secs(1),
        on_cap_error: dce::call::CapPolicy::Local,
    }));
    sim
}

#[test]
fn shared_checks_decide_dnc_and_frequency_for_the_fleet() {
    use dce::call::RemoteResult;
    let mut sim = shared_sim(false);
    let counts = std::rc::Rc::new(std::cell::Cell::new(0i64));
    let c2 = counts.clone();
    sim.responder = Some(Box::new(move |check: &dce::call::RemoteCheck| {
        assert_eq!(
            (check.campaign.as_str(), check.max_calls_per_day),
            ("auto", 2)
        );
        if check.caller == "13105550000" {
            return RemoteResult::Listed;
        }
        c2.set(c2.get() + 1);
        RemoteResult::Count(c2.get())
    }));
    let listed = sim.place_call("+13105550000");
    sim.run_for(S);
    assert_eq!(
        reason(&sim, &listed).as_deref(),
        Some("SIP;cause=603;text=\"DNC\"")
    );
    let calls: Vec<String> = (0..3).map(|_| sim.place_call("+13105551234")).collect();
    sim.run_for(2 * S);
    assert_eq!(
        (sim.finals(&calls[0]), sim.finals(&calls[1])),
        (vec![200], vec![200])
    );
    assert_eq!(
        reason(&sim, &calls[2]).as_deref(),
        Some("SIP;cause=603;text=\"TCPA_FREQUENCY\"")
    );
    for c in &calls[..2] {
        sim.carrier_bye(c);
    }
    sim.run_for(S);
    let verdicts: Vec<String> = sim.cdrs().iter().map(|c| c.compliance.clone()).collect();
    assert!(
        verdicts.contains(&"pass:dnc,tcpa_hours,frequency".to_string()),
        "{verdicts:?}"
    );
    let local = sim.compliance.lock().unwrap().frequency.clone_counts();
    assert_eq!(
        local, 0,
        "the frequency cap was counted in Redis, not in process"
    );
}

#[test]
fn lookup_errors_follow_the_policy_and_cancel_while_waiting_ends_cleanly() {
    use dce::call::RemoteResult;
    let mut sim = shared_sim(false);
    let call = sim.place_call("+13105551234");
    sim.run_for(Duration::from_millis(10));
    assert_eq!(
        sim.codes(&call),
        vec![100],
        "the INVITE waits for the lookup"
    );
    sim.answer_remote(RemoteResult::Error("timeout".into()));
    sim.run_for(S);
    assert_eq!(sim.finals(&call), vec![503]);
    assert_eq!(sim.cdrs()[0].compliance, "reject:LOOKUP_ERROR");
    assert_eq!(sim.counters.get(dce::counters::Counter::LookupError), 1);

    let mut sim = shared_sim(true);
    let call = sim.place_call("+13105551234");
    sim.run_for(Duration::from_millis(10));
    sim.answer_remote(RemoteResult::Error("timeout".into()));
    sim.run_for(2 * S);
    assert_eq!(
        sim.finals(&call),
        vec![200],
        "allow_and_flag routes the call"
    );
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert!(
        sim.cdrs()[0].compliance.ends_with(";flagged:lookup_error"),
        "{}",
        sim.cdrs()[0].compliance
    );

    // cancelled while the lookup is out: 487, no buyer, and the late verdict is ignored
    let call = sim.place_call("+13105551235");
    sim.run_for(Duration::from_millis(10));
    sim.cancel(&call);
    sim.run_for(S);
    assert_eq!(sim.finals(&call), vec![487]);
    sim.answer_remote(RemoteResult::Count(1));
    sim.run_for(S);
    assert_eq!(
        sim.buyer(5090).calls.len(),
        1,
        "only the first call reached the buyer"
    );
    assert_eq!(sim.live.total_active(), 0);
}
