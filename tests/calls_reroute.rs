//! Revenue recovery in simulated time: a buyer that hangs up within the campaign's
//! `reroute_if_buyer_hangs_up_within_s` of its answer does not end the call; the carrier stays
//! connected (no re-INVITE, no second final response) and the next buyer takes the call over;
//! each buyer leg is billed on its own in the CDR. Every test ends with nothing held.

mod support;

use dce::counters::Counter;
use dce_sip::Method;
use std::time::Duration;
use support::sim::{buyer, config, Mode, Sim};

const S: Duration = Duration::from_secs(1);

/// Campaign `auto` rerouting within `within` s (at most `max` times), buyers acme (5090, 1500),
/// bravo (5091, 1200), cobalt (5092, 900), each with `extra`.
fn rerouting(within: u32, max: u32, extra: [&str; 3]) -> dce::config::Config {
    let campaign = format!("reroute_if_buyer_hangs_up_within_s = {within}\nmax_reroutes = {max}\n");
    let buyers = format!(
        "{campaign}{}{}{}",
        buyer("acme", 5090, 1500, extra[0]),
        buyer("bravo", 5091, 1200, extra[1]),
        buyer("cobalt", 5092, 900, extra[2])
    );
    config("", &buyers)
}

/// The one Call-ID buyer `port` got.
fn b_call(sim: &Sim, port: u16) -> String {
    let calls = &sim.buyer(port).calls;
    assert_eq!(calls.len(), 1, "buyer {port} got one INVITE");
    calls.keys().next().unwrap().clone()
}

/// The `m=audio` port in an SDP body.
fn audio_port(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .expect("an m=audio line")
        .to_owned()
}

fn dce_requests(sim: &Sim, call: &str, m: Method) -> usize {
    sim.carrier[call]
        .requests
        .iter()
        .filter(|r| r.method() == Some(&m))
        .count()
}

/// Buyer `id`'s spend today, cents.
fn spent(sim: &mut Sim, id: &str) -> u64 {
    sim.core
        .calls()
        .buyers_view()
        .into_iter()
        .find(|b| b.id == id)
        .map(|b| b.spend_today_cents)
        .unwrap()
}

/// Run past every transaction timer and check that the call left nothing behind.
fn settle(sim: &mut Sim) {
    sim.run_for(64 * S);
    sim.assert_nothing_held();
}

#[test]
fn a_buyer_that_hangs_up_at_once_is_replaced_and_the_carrier_stays_connected() {
    let mut sim = Sim::new(&rerouting(10, 2, ["", "", ""]));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    sim.add_buyer(5092, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let first = b_call(&sim, 5090);
    sim.buyer_bye_after(5090, &first, 2 * S);
    sim.run_for(5 * S);
    // bravo took it over; cobalt was not rung
    let second = b_call(&sim, 5091);
    assert!(sim.buyer(5092).calls.is_empty(), "cobalt not rung");
    // the carrier got one answer, one ringing, and nothing in its dialog
    assert_eq!(sim.finals(&call), vec![200]);
    assert_eq!(
        sim.codes(&call).iter().filter(|&&c| c == 180).count(),
        1,
        "the next buyer's ringing is not relayed: {:?}",
        sim.codes(&call)
    );
    assert_eq!(dce_requests(&sim, &call, Method::Invite), 0, "no re-INVITE");
    assert_eq!(
        dce_requests(&sim, &call, Method::Bye),
        0,
        "carrier still up"
    );
    // bravo was offered the same relay ports as acme: the carrier's media path is unchanged
    let offer = |port: u16, id: &str| audio_port(sim.buyer(port).calls[id].invite.body());
    assert_eq!(offer(5090, &first), offer(5091, &second));
    // the relay's buyer side was set twice (acme, then bravo), the carrier's once
    let remotes = sim.media.remotes.lock().unwrap().clone();
    let b_side = remotes.iter().filter(|r| r.1 == dce_media::Side::B).count();
    assert_eq!(
        b_side, 2,
        "buyer side announced by acme then bravo: {remotes:?}"
    );
    let view = sim.core.calls().calls_view(sim.now);
    assert_eq!(view[0].state, "connected");
    assert_eq!(view[0].buyer.as_deref(), Some("bravo"));
    // the carrier talks to bravo for two minutes, then hangs up
    sim.carrier_bye_after(&call, 120 * S);
    sim.run_for(121 * S);
    assert!(sim.buyer(5091).calls[&second]
        .requests
        .iter()
        .any(|r| r.method() == Some(&Method::Bye)));
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.disposition, "answered");
    assert_eq!(cdr.hangup_by.as_deref(), Some("carrier"));
    assert_eq!(cdr.buyer_id.as_deref(), Some("bravo"));
    assert_eq!(cdr.legs.len(), 2, "{:?}", cdr.legs);
    let (a, b) = (&cdr.legs[0], &cdr.legs[1]);
    assert_eq!(
        (a.buyer_id.as_str(), a.rerouted, a.billable),
        ("acme", true, false)
    );
    assert_eq!(a.hangup_by.as_deref(), Some("buyer"));
    assert_eq!((a.revenue_cents, a.payout_cents), (0, 0));
    // answered 1 s after its INVITE (t = 1 s), hung up at t = 4 s
    assert!((a.duration_s - 3.0).abs() < 0.01, "{}", a.duration_s);
    assert_eq!(
        (b.buyer_id.as_str(), b.rerouted, b.billable),
        ("bravo", false, true)
    );
    assert_eq!(b.revenue_cents, 1200);
    assert_eq!(b.hangup_by.as_deref(), Some("carrier"));
    assert!(b.duration_s >= 120.0);
    // the call is the sum of its legs; its talk time is the carrier's
    assert!(cdr.billable);
    assert_eq!((cdr.revenue_cents, cdr.bid_cents), (1200, 1200));
    assert!(cdr.duration_s >= 122.0, "{}", cdr.duration_s);
    let outcomes: Vec<&str> = cdr.bids.iter().map(|b| b.outcome.as_str()).collect();
    assert_eq!(outcomes[..2], ["won", "won"]);
    assert_eq!(sim.counters.get(Counter::CallRerouted), 1);
    assert_eq!(sim.counters.get(Counter::CallAnswered), 1);
    // acme's unbillable leg gave its spend back
    let spend = (spent(&mut sim, "acme"), spent(&mut sim, "bravo"));
    assert_eq!(spend, (0, 1200));
    settle(&mut sim);
}

#[test]
fn a_hangup_after_the_reroute_time_ends_the_call() {
    let mut sim = Sim::new(&rerouting(10, 2, ["", "", ""]));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let first = b_call(&sim, 5090);
    sim.buyer_bye_after(5090, &first, 11 * S);
    sim.run_for(15 * S);
    assert!(sim.buyer(5091).calls.is_empty(), "bravo not rung");
    assert_eq!(dce_requests(&sim, &call, Method::Bye), 1);
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.reason, "buyer hung up");
    assert_eq!(cdr.legs.len(), 1);
    assert!(!cdr.legs[0].rerouted);
    assert_eq!(sim.counters.get(Counter::CallRerouted), 0);
    settle(&mut sim);
}

#[test]
fn a_campaign_without_the_setting_does_not_reroute() {
    let cfg = config(
        "",
        &format!(
            "{}{}",
            buyer("acme", 5090, 1500, ""),
            buyer("bravo", 5091, 1200, "")
        ),
    );
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let first = b_call(&sim, 5090);
    sim.buyer_bye_after(5090, &first, S);
    sim.run_for(5 * S);
    assert!(sim.buyer(5091).calls.is_empty());
    assert_eq!(dce_requests(&sim, &call, Method::Bye), 1);
    assert_eq!(sim.cdrs()[0].legs.len(), 1);
    settle(&mut sim);
}

#[test]
fn at_most_max_reroutes() {
    let mut sim = Sim::new(&rerouting(10, 1, ["", "", ""]));
    for port in [5090, 5091, 5092] {
        sim.add_buyer(port, Mode::Answer(S));
    }
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let first = b_call(&sim, 5090);
    sim.buyer_bye_after(5090, &first, S);
    sim.run_for(3 * S);
    let second = b_call(&sim, 5091);
    sim.buyer_bye_after(5091, &second, S);
    sim.run_for(5 * S);
    assert!(sim.buyer(5092).calls.is_empty(), "one reroute only");
    assert_eq!(dce_requests(&sim, &call, Method::Bye), 1);
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.reason, "buyer hung up");
    let who: Vec<(&str, bool)> = cdr
        .legs
        .iter()
        .map(|l| (l.buyer_id.as_str(), l.rerouted))
        .collect();
    assert_eq!(who, [("acme", true), ("bravo", false)]);
    assert!(!cdr.billable);
    settle(&mut sim);
}

#[test]
fn when_nobody_takes_the_rerouted_call_the_carrier_gets_bye() {
    let mut sim = Sim::new(&rerouting(10, 2, ["", "", ""]));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Reject(486));
    sim.add_buyer(5092, Mode::Ring);
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let first = b_call(&sim, 5090);
    sim.buyer_bye_after(5090, &first, 3 * S);
    // bravo refuses; cobalt rings out (ring timeout)
    sim.run_for(60 * S);
    assert_eq!(sim.finals(&call), vec![200], "no second final response");
    assert_eq!(dce_requests(&sim, &call, Method::Bye), 1);
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.disposition, "answered");
    assert_eq!(
        cdr.reason,
        "buyer hung up; no other buyer took the rerouted call"
    );
    assert_eq!(cdr.buyer_id.as_deref(), Some("acme"));
    assert_eq!(cdr.legs.len(), 1);
    assert!(cdr.legs[0].rerouted);
    let outcomes: Vec<&str> = cdr.bids.iter().map(|b| b.outcome.as_str()).collect();
    assert_eq!(outcomes, ["won", "attempted:486", "attempted:ring_timeout"]);
    assert_eq!(sim.counters.get(Counter::RerouteFailed), 1);
    assert_eq!(sim.counters.get(Counter::AllFailed480), 0);
    settle(&mut sim);
}

#[test]
fn the_carrier_hanging_up_while_the_next_buyer_rings_cancels_it() {
    let mut sim = Sim::new(&rerouting(10, 2, ["", "", ""]));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Ring);
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let first = b_call(&sim, 5090);
    sim.buyer_bye_after(5090, &first, S);
    sim.run_for(3 * S);
    let second = b_call(&sim, 5091);
    // a CANCEL after the answer changes nothing
    sim.cancel(&call);
    sim.run_for(S);
    assert_eq!(sim.core.calls().active_calls(), 1);
    sim.carrier_bye(&call);
    sim.run_for(2 * S);
    assert!(sim.buyer(5091).calls[&second]
        .requests
        .iter()
        .any(|r| r.method() == Some(&Method::Cancel)));
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.hangup_by.as_deref(), Some("carrier"));
    assert_eq!(cdr.reason, "carrier hung up");
    assert_eq!(cdr.legs.len(), 1);
    settle(&mut sim);
}

#[test]
fn the_carriers_requests_while_rerouting_keep_its_dialog() {
    let mut sim = Sim::new(&rerouting(10, 2, ["", "", ""]));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Ring);
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let first = b_call(&sim, 5090);
    sim.buyer_bye_after(5090, &first, S);
    sim.run_for(3 * S);
    sim.carrier_in_dialog(
        &call,
        Method::Invite,
        2,
        Some(("application/sdp", support::sim::SDP)),
    );
    sim.carrier_in_dialog(&call, Method::Options, 3, None);
    sim.carrier_in_dialog(&call, Method::Info, 4, None);
    sim.run_for(S);
    let reinvite: Vec<u16> = sim.carrier[&call]
        .responses
        .iter()
        .filter(|r| r.cseq() == 2 && r.code().is_some_and(|c| c >= 200))
        .filter_map(|r| r.code())
        .collect();
    assert_eq!(reinvite, [491], "re-INVITE: try again later");
    let codes: Vec<u16> = sim.carrier[&call]
        .other_responses
        .iter()
        .filter_map(|r| r.code())
        .collect();
    assert_eq!(codes, [200, 480], "OPTIONS answered, INFO refused");
    assert_eq!(sim.core.calls().active_calls(), 1, "the call goes on");
    sim.carrier_bye(&call);
    sim.run_for(2 * S);
    settle(&mut sim);
}

#[test]
fn a_buyer_that_cannot_speak_the_carriers_codec_is_skipped() {
    let mut sim = Sim::new(&rerouting(10, 2, ["", "codecs = [\"PCMA\"]", ""]));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    sim.add_buyer(5092, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let first = b_call(&sim, 5090);
    sim.buyer_bye_after(5090, &first, S);
    sim.run_for(5 * S);
    assert!(sim.buyer(5091).calls.is_empty(), "bravo speaks PCMA only");
    let third = b_call(&sim, 5092);
    let offer = String::from_utf8_lossy(sim.buyer(5092).calls[&third].invite.body()).to_string();
    assert!(offer.contains("m=audio") && offer.contains(" 0"), "{offer}");
    sim.carrier_bye(&call);
    sim.run_for(2 * S);
    let cdr = &sim.cdrs()[0];
    let outcomes: Vec<&str> = cdr.bids.iter().map(|b| b.outcome.as_str()).collect();
    assert_eq!(outcomes, ["won", "excluded:codec", "won"]);
    assert_eq!(cdr.buyer_id.as_deref(), Some("cobalt"));
    settle(&mut sim);
}

#[test]
fn shutdown_while_rerouting_hangs_up_the_carrier() {
    let mut sim = Sim::new(&rerouting(10, 2, ["", "", ""]));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Ring);
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let first = b_call(&sim, 5090);
    sim.buyer_bye_after(5090, &first, S);
    sim.run_for(3 * S);
    sim.shutdown();
    sim.run_for(2 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    assert_eq!(dce_requests(&sim, &call, Method::Bye), 1);
    let second = b_call(&sim, 5091);
    assert!(sim.buyer(5091).calls[&second]
        .requests
        .iter()
        .any(|r| r.method() == Some(&Method::Cancel)));
    assert_eq!(sim.cdrs()[0].reason, "shutdown");
    settle(&mut sim);
}

#[test]
fn a_billable_first_leg_is_billed_to_its_buyer() {
    // reroute within 120 s, billable after 90 s: acme's 100 s is billable, then bravo's too
    let mut sim = Sim::new(&rerouting(120, 2, ["", "", ""]));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(2 * S);
    let first = b_call(&sim, 5090);
    sim.buyer_bye_after(5090, &first, 100 * S);
    sim.run_for(105 * S);
    sim.carrier_bye_after(&call, 95 * S);
    sim.run_for(100 * S);
    let cdr = &sim.cdrs()[0];
    let billed: Vec<(&str, bool, u32)> = cdr
        .legs
        .iter()
        .map(|l| (l.buyer_id.as_str(), l.billable, l.revenue_cents))
        .collect();
    assert_eq!(billed, [("acme", true, 1500), ("bravo", true, 1200)]);
    assert_eq!(cdr.revenue_cents, 2700);
    // each buyer's daily spend has its own leg
    let spend = (spent(&mut sim, "acme"), spent(&mut sim, "bravo"));
    assert_eq!(spend, (1500, 1200));
    settle(&mut sim);
}
