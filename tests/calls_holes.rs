//! The holes a review and network fuzzers found in the call path, each pinned in the
//! simulated network (carrier, DCE, buyers; simulated time). Every scenario ends with the
//! simulation's leak check (`Sim`'s drop): no transaction, call, router entry, timer, media
//! session or concurrency slot left.

mod support;

use dce_sip::{HeaderName, Method};
use std::net::SocketAddr;
use std::time::Duration;
use support::sim::{buyer, config, Mode, Sim, SDP};

const S: Duration = Duration::from_secs(1);

fn two_buyers(extra_sip: &str) -> dce::config::Config {
    let buyers = format!(
        "{}{}",
        buyer("acme", 5090, 1500, ""),
        buyer("bravo", 5091, 1200, "")
    );
    config(extra_sip, &buyers)
}

fn b_call_id(sim: &Sim, port: u16) -> String {
    sim.buyer(port)
        .calls
        .keys()
        .next()
        .cloned()
        .expect("the buyer was rung")
}

/// The requests (by CSeq method, once each: a final response to an INVITE is retransmitted
/// until ACKed) that buyer `port` got `code` for.
fn answered_by(sim: &Sim, port: u16, code: u16) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = Vec::new();
    for (p, r) in sim.buyer_responses() {
        let e = (*p, r.cseq_method().as_str().to_owned());
        if *p == port && r.code() == Some(code) && !v.contains(&e) {
            v.push(e);
        }
    }
    v
}

fn requests_to_carrier(sim: &Sim, call: &str, m: Method) -> usize {
    sim.carrier[call]
        .requests
        .iter()
        .filter(|r| r.method() == Some(&m))
        .count()
}

const STRANGER: &str = "127.0.0.1:5999";

#[test]
fn a_losing_buyer_cannot_end_or_hijack_the_winners_call() {
    let mut sim = Sim::new(&two_buyers(""));
    sim.add_buyer(5090, Mode::Reject(486)); // rang (180 with a tag), then 486
    sim.add_buyer(5091, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    let loser = b_call_id(&sim, 5090);
    let remotes_before = sim.media.remotes.lock().unwrap().len();

    // The loser's BYE in its (never established) dialog: 481, and nothing else happens.
    sim.buyer_request(5090, &loser, Method::Bye, None, None);
    sim.run_for(S);
    assert_eq!(answered_by(&sim, 5090, 481), vec![(5090, "BYE".into())]);
    assert_eq!(
        requests_to_carrier(&sim, &call, Method::Bye),
        0,
        "carrier not hung up"
    );
    let winner = b_call_id(&sim, 5091);
    assert!(
        !sim.buyer(5091).calls[&winner]
            .requests
            .iter()
            .any(|r| r.method() == Some(&Method::Bye)),
        "the winner is not hung up"
    );
    assert_eq!(sim.core.calls().active_calls(), 1, "the call goes on");

    // The loser's re-INVITE pointing the media elsewhere: 481, not mirrored, not latched.
    let evil = SDP.replace("40000", "46666");
    sim.buyer_request(5090, &loser, Method::Invite, None, Some(&evil));
    sim.run_for(S);
    assert_eq!(
        answered_by(&sim, 5090, 481),
        vec![(5090, "BYE".into()), (5090, "INVITE".into())]
    );
    assert_eq!(requests_to_carrier(&sim, &call, Method::Invite), 0);
    assert_eq!(
        sim.media.remotes.lock().unwrap().len(),
        remotes_before,
        "the relay was not re-pointed"
    );
    assert_eq!(
        sim.counters.get(dce::counters::Counter::NotEstablished481),
        2
    );

    // The winner's own BYE still ends the call normally.
    sim.buyer_request(5091, &winner, Method::Bye, None, None);
    sim.run_for(S);
    assert_eq!(requests_to_carrier(&sim, &call, Method::Bye), 1);
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.buyer_id.as_deref(), Some("bravo"));
    assert_eq!(cdr.hangup_by.as_deref(), Some("buyer"));
}

#[test]
fn in_dialog_requests_with_valid_ids_from_a_third_address_are_refused() {
    let mut sim = Sim::new(&two_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    let b = b_call_id(&sim, 5090);
    let stranger: SocketAddr = STRANGER.parse().unwrap();

    // The buyer's dialog ids, from elsewhere.
    sim.buyer_request(5090, &b, Method::Bye, Some(stranger), None);
    // The carrier's dialog ids, from elsewhere.
    sim.carrier_request(&call, 200, Method::Bye, Some(stranger));
    sim.carrier_request(&call, 200, Method::Invite, Some(stranger));
    sim.run_for(S);
    let mut refused: Vec<(String, u16)> = Vec::new();
    for (to, r) in &sim.strangers {
        let e = (
            format!("{} {}", r.cseq(), r.cseq_method().as_str()),
            r.code().unwrap_or(0),
        );
        if *to == stranger && e.1 >= 200 && !refused.contains(&e) {
            refused.push(e);
        }
    }
    assert_eq!(
        refused.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![403, 403, 403],
        "{refused:?}"
    );
    assert_eq!(
        sim.counters.get(dce::counters::Counter::ForeignInDialog403),
        3
    );
    assert_eq!(requests_to_carrier(&sim, &call, Method::Bye), 0);
    assert_eq!(sim.core.calls().active_calls(), 1, "the call goes on");
    assert!(sim.cdrs().is_empty());

    // From the real peer it works.
    sim.carrier_request(&call, 200, Method::Bye, None);
    sim.run_for(S);
    assert_eq!(sim.cdrs()[0].hangup_by.as_deref(), Some("carrier"));
}

#[test]
fn a_carrier_bye_on_the_early_dialog_ends_the_invite_and_cancels_the_buyer() {
    let mut sim = Sim::new(&two_buyers(""));
    sim.add_buyer(5090, Mode::Ring);
    let call = sim.place_call("+13105551234");
    sim.run_for(S);
    assert_eq!(sim.codes(&call), vec![100, 180]);
    // RFC 3261 §15: the caller may BYE the early dialog.
    sim.carrier_request(&call, 180, Method::Bye, None);
    sim.run_for(S);
    let bye_answers: Vec<u16> = sim.carrier[&call]
        .other_responses
        .iter()
        .filter(|r| r.cseq_method() == &Method::Bye)
        .filter_map(|r| r.code())
        .collect();
    assert_eq!(bye_answers, vec![200]);
    assert_eq!(sim.finals(&call), vec![487], "the INVITE gets its 487");
    let b = b_call_id(&sim, 5090);
    assert!(
        sim.buyer(5090).calls[&b]
            .requests
            .iter()
            .any(|r| r.method() == Some(&Method::Cancel)),
        "the ringing buyer gets CANCEL"
    );
    let cdr = &sim.cdrs()[0];
    assert_eq!(cdr.disposition, "cancelled");
    assert_eq!(cdr.carrier_code, 487);
    assert_eq!(cdr.hangup_by.as_deref(), Some("carrier"));
    assert_eq!(sim.core.calls().active_calls(), 0);
}

#[test]
fn answered_calls_leave_no_timer_behind() {
    let mut sim = Sim::new(&two_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    for _ in 0..200 {
        let call = sim.place_call("+13105551234");
        sim.carrier_bye_after(&call, 5 * S);
    }
    sim.run_for(10 * S);
    assert_eq!(sim.cdrs().len(), 200);
    assert!(sim.cdrs().iter().all(|c| c.disposition == "answered"));
    let held = sim.core.calls().held();
    assert_eq!(
        (held.calls, held.timers),
        (0, 0),
        "MaxDuration (2 h) and 2xx timers are gone with their calls"
    );
}

fn shared(deadline: Duration, allow_on_error: bool) -> Sim {
    let mut sim = Sim::new(&two_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.core.calls().set_shared(Some(dce::call::SharedChecks {
        max_calls_per_day: 2,
        allow_on_error,
        deadline,
        on_cap_error: dce::call::CapPolicy::Local,
    }));
    sim
}

#[test]
fn a_lookup_past_its_deadline_follows_on_lookup_error_in_simulated_time() {
    // reject: nobody answers the Redis check; at 5 ms of simulated time the call is refused.
    let mut sim = shared(Duration::from_millis(5), false);
    let call = sim.place_call("+13105551234");
    sim.run_for(Duration::from_millis(4));
    assert_eq!(sim.codes(&call), vec![100], "still waiting");
    sim.run_for(Duration::from_millis(2));
    assert_eq!(sim.finals(&call), vec![503]);
    assert_eq!(sim.cdrs()[0].compliance, "reject:LOOKUP_ERROR");
    assert_eq!(sim.counters.get(dce::counters::Counter::LookupError), 1);
    assert!(sim.buyer(5090).calls.is_empty());
    // The answer arriving afterwards changes nothing.
    sim.answer_remote(dce::call::RemoteResult::Count(1));
    sim.run_for(S);
    assert_eq!(sim.cdrs().len(), 1);
    assert!(sim.buyer(5090).calls.is_empty());

    // allow_and_flag: the deadline passes and the call is routed, flagged.
    let mut sim = shared(Duration::from_millis(5), true);
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert_eq!(
        sim.cdrs()[0].compliance,
        "pass:dnc,tcpa_hours;flagged:lookup_error"
    );
}

#[test]
fn a_huge_or_hostile_caller_never_reaches_a_buyer_as_is() {
    let mut sim = Sim::new(&two_buyers(""));
    // A caller that is no number has no time zone: calling hours would refuse it first.
    sim.compliance.lock().unwrap().hours = None;
    sim.add_buyer(5090, Mode::Answer(S));
    let huge = "a".repeat(40_000);
    let call = sim.place_call(&huge);
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    let b = b_call_id(&sim, 5090);
    let inv = &sim.buyer(5090).calls[&b].invite;
    let user = inv.from().uri.user().unwrap_or_default().to_owned();
    assert_eq!(user.len(), dce::call::MAX_CALLER, "cut to 64 characters");
    let mut wire = Vec::new();
    inv.raw().print_into(&mut wire);
    assert!(wire.len() <= 1300, "fits a UDP request: {}", wire.len());
    sim.carrier_bye(&call);
    sim.run_for(S);
    assert_eq!(sim.cdrs()[0].caller.len(), dce::call::MAX_CALLER);

    // A caller that unescapes to CRLF and a header cannot inject it into the buyer's INVITE.
    let call = sim.place_call("evil%0D%0AX-Injected:%20yes");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    let inv = sim
        .buyer(5090)
        .calls
        .values()
        .find(|c| {
            c.invite
                .from()
                .uri
                .user()
                .is_some_and(|u| u.starts_with("evil"))
        })
        .map(|c| c.invite.clone())
        .expect("rung");
    assert!(inv
        .header(&HeaderName::Other("X-Injected".into()))
        .is_none());
    assert_eq!(inv.from().uri.user(), Some("evil%0D%0AX-Injected%3A%20yes"));
    sim.carrier_bye(&call);
    sim.run_for(S);
}

#[test]
fn an_invite_too_large_for_udp_is_not_sent_and_the_call_fails_cleanly() {
    // 512 bytes: smaller than any buyer INVITE with SDP, so every attempt is too large.
    let mut sim = Sim::new(&two_buyers("max_udp_request_bytes = 512"));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![480]);
    assert!(sim.buyer(5090).calls.is_empty() && sim.buyer(5091).calls.is_empty());
    let outcomes: Vec<String> = sim.cdrs()[0]
        .bids
        .iter()
        .map(|b| b.outcome.clone())
        .collect();
    assert_eq!(outcomes, ["attempted:too_large", "attempted:too_large"]);
    assert_eq!(sim.counters.get(dce::counters::Counter::TooLargeForUdp), 2);
}

#[test]
fn ids_on_the_wire_come_from_the_injected_generator() {
    // Two simulations with the same seed put the same ids on the wire; the production
    // generator is the OS's (tested in src/ids.rs).
    let run = || {
        let mut sim = Sim::new(&two_buyers(""));
        sim.add_buyer(5090, Mode::Answer(S));
        let call = sim.place_call("+13105551234");
        sim.run_for(3 * S);
        let b = b_call_id(&sim, 5090);
        let tag = sim.buyer(5090).calls[&b]
            .invite
            .from()
            .tag()
            .unwrap()
            .to_owned();
        sim.carrier_bye(&call);
        sim.run_for(S);
        (b, tag, sim.cdrs()[0].id.clone())
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert_eq!(a.1.len(), 16);
    assert!(a.0.len() >= 32);
}

#[test]
fn a_caller_dce_cannot_read_reaches_the_buyer_as_anonymous_in_a_valid_invite() {
    // Found by the `edge` fuzz target: a From whose URI DCE reads no user from (here the scheme `s1+pi:`) made DCE
    // send the buyer `From: <sip:@127.0.0.1>`, which no parser accepts.
    let mut sim = Sim::new(&two_buyers(""));
    sim.compliance.lock().unwrap().hours = None;
    sim.add_buyer(5090, Mode::Answer(S));
    let invite = format!(
        "INVITE sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtel1;rport\r\nMax-Forwards: 70\r\n\
         From: <s1+pi:3105551234@127.0.0.1>;tag=t1\r\nTo: <sip:+18005550100@127.0.0.1>\r\nCall-ID: tel-caller\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:c@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    sim.send_raw(
        "127.0.0.1:5070".parse().unwrap(),
        bytes::Bytes::from(invite),
    );
    sim.run_for(3 * S);
    // The simulated buyer parses what it gets (it panics otherwise) and answered it.
    let b = b_call_id(&sim, 5090);
    let inv = &sim.buyer(5090).calls[&b].invite;
    assert_eq!(inv.from().uri.user(), Some("anonymous"));
    assert_eq!(sim.counters.get(dce::counters::Counter::CallAnswered), 1);
    sim.core.handle_input(dce::edge::Input::Shutdown, sim.now);
}

#[test]
fn a_carrier_contact_with_uri_headers_does_not_make_dce_send_unparseable_requests() {
    // Found by the `edge` fuzz target: Contact `<sip:c@127.0.0.1?5070>` became the Request-URI
    // of DCE's BYE to the carrier, which no parser accepts. The simulated carrier parses every
    // message DCE sends it (and panics otherwise).
    let mut sim = Sim::new(&two_buyers(""));
    sim.add_buyer(5090, Mode::Answer(S));
    let invite = format!(
        "INVITE sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKhdr1;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:+13105551234@127.0.0.1>;tag=h1\r\nTo: <sip:+18005550100@127.0.0.1>\r\nCall-ID: hdr-contact\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:c@127.0.0.1?5070>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    sim.place_raw_call("hdr-contact", &invite);
    sim.run_for(3 * S);
    let b = b_call_id(&sim, 5090);
    sim.buyer_request(5090, &b, Method::Bye, None, None);
    sim.run_for(S);
    let bye = sim.carrier["hdr-contact"]
        .requests
        .iter()
        .find(|r| r.method() == Some(&Method::Bye))
        .cloned()
        .expect("the carrier got a BYE it could parse");
    assert_eq!(bye.request_uri().unwrap().raw, "sip:c@127.0.0.1");
}
