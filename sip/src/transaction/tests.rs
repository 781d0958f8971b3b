//! Exact timer schedules and matching rules, in simulated time (no sleeps).

use super::*;
use crate::build::{MessageBuf, StartLineBuf};
use crate::header::HeaderName;
use crate::message::parse;
use crate::method::Method;
use bytes::Bytes;
use std::time::{Duration, Instant};

fn peer(transport: Transport) -> Peer {
    Peer {
        transport,
        addr: "127.0.0.1:5090".parse().unwrap(),
        conn: None,
    }
}

fn request(method: Method, branch: &str) -> MessageBuf {
    let mut m = MessageBuf::request(method.clone(), "sip:+18005550100@127.0.0.1:5090");
    m.push(
        HeaderName::Via,
        format!("SIP/2.0/UDP 127.0.0.1:5060;branch={branch}"),
    )
    .push(HeaderName::MaxForwards, "70")
    .push(HeaderName::From, "<sip:dce@127.0.0.1>;tag=abc")
    .push(HeaderName::To, "<sip:+18005550100@127.0.0.1>")
    .push(HeaderName::CallId, "call-1")
    .push(HeaderName::CSeq, format!("1 {method}"));
    m
}

fn parsed(m: &MessageBuf) -> crate::Message {
    parse(m.print()).expect("test message parses")
}

fn response_to(req: &MessageBuf, code: u16) -> crate::Message {
    let r = parsed(req).response(code, "X", "totag", None);
    parsed(&r)
}

/// Run the layer until it is idle, recording the simulated second offsets of every transmit.
fn run(layer: &mut TransactionLayer, t0: Instant, until: Duration) -> Vec<f64> {
    let mut sent = Vec::new();
    while let Some(t) = layer.poll_transmit() {
        let _ = t;
        sent.push(0.0);
    }
    while let Some(at) = layer.poll_timeout() {
        if at > t0 + until {
            break;
        }
        layer.handle_timeout(at);
        while layer.poll_transmit().is_some() {
            sent.push((at - t0).as_secs_f64());
        }
    }
    sent
}

fn timeouts(layer: &mut TransactionLayer) -> usize {
    std::iter::from_fn(|| layer.poll_event())
        .filter(|e| matches!(e, Event::Timeout { .. }))
        .count()
}

#[test]
fn timer_a_doubles_without_cap_and_b_ends_the_invite_at_64_t1() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let tx = l
        .send_request(
            request(Method::Invite, "z9hG4bKa"),
            peer(Transport::Udp),
            t0,
        )
        .unwrap();
    let sent = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(sent, vec![0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
    assert_eq!(l.state(tx), None, "Timer B terminated the transaction");
    assert_eq!(timeouts(&mut l), 1);
}

#[test]
fn timer_e_caps_at_t2_and_f_ends_non_invite_at_64_t1() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    l.send_request(
        request(Method::Options, "z9hG4bKe"),
        peer(Transport::Udp),
        t0,
    )
    .unwrap();
    let sent = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(
        sent,
        vec![0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert_eq!(timeouts(&mut l), 1);
    assert!(l.is_empty());
}

#[test]
fn timer_e_in_proceeding_uses_t2() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let req = request(Method::Options, "z9hG4bKp");
    l.send_request(req.clone(), peer(Transport::Udp), t0)
        .unwrap();
    l.handle_timeout(t0 + Duration::from_millis(500));
    l.on_message(
        response_to(&req, 180),
        peer(Transport::Udp),
        t0 + Duration::from_millis(600),
    );
    let sent = run(&mut l, t0, Duration::from_secs(100));
    // 0 and 0.5 were sent before; after the 1xx the next fires at 1.5 (armed before), then T2.
    assert_eq!(
        sent,
        vec![0.0, 0.0, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    );
}

#[test]
fn reliable_transport_never_retransmits() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    l.send_request(
        request(Method::Invite, "z9hG4bKr1"),
        peer(Transport::Tcp),
        t0,
    )
    .unwrap();
    l.send_request(request(Method::Bye, "z9hG4bKr2"), peer(Transport::Tcp), t0)
        .unwrap();
    let sent = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(sent, vec![0.0, 0.0], "only the initial sends");
    assert_eq!(timeouts(&mut l), 2, "B and F still fire");
}

#[test]
fn invite_client_non_2xx_sends_ack_and_waits_timer_d() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let req = request(Method::Invite, "z9hG4bKd");
    let tx = l
        .send_request(req.clone(), peer(Transport::Udp), t0)
        .unwrap();
    let _ = l.poll_transmit();
    let resp = response_to(&req, 486);
    l.on_message(
        resp.clone(),
        peer(Transport::Udp),
        t0 + Duration::from_millis(100),
    );
    let ack = l.poll_transmit().expect("ACK sent");
    let ack = parse(ack.bytes).unwrap();
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq(), 1);
    assert_eq!(ack.via().branch(), Some("z9hG4bKd"));
    assert_eq!(ack.to().tag(), Some("totag"));
    assert!(matches!(l.poll_event(), Some(Event::Response { .. })));
    // retransmitted 486 → ACK again, not delivered
    l.on_message(resp, peer(Transport::Udp), t0 + Duration::from_secs(1));
    assert!(l.poll_transmit().is_some());
    assert!(l.poll_event().is_none());
    assert_eq!(l.state(tx), Some(State::Completed));
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + Duration::from_millis(100) + Duration::from_secs(32))
    );
    l.handle_timeout(t0 + Duration::from_secs(33));
    assert_eq!(l.state(tx), None);
}

#[test]
fn invite_client_2xx_enters_accepted_passes_retransmissions_and_ends_on_m() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let req = request(Method::Invite, "z9hG4bKm");
    let tx = l
        .send_request(req.clone(), peer(Transport::Udp), t0)
        .unwrap();
    let ok = response_to(&req, 200);
    l.on_message(
        ok.clone(),
        peer(Transport::Udp),
        t0 + Duration::from_secs(1),
    );
    assert_eq!(l.state(tx), Some(State::Accepted));
    l.on_message(
        ok.clone(),
        peer(Transport::Udp),
        t0 + Duration::from_secs(2),
    );
    let delivered = std::iter::from_fn(|| l.poll_event())
        .filter(|e| matches!(e, Event::Response { .. }))
        .count();
    assert_eq!(delivered, 2, "both 2xx reach the TU");
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + Duration::from_secs(33)),
        "Timer M = 64*T1 after the 2xx"
    );
    l.handle_timeout(t0 + Duration::from_secs(33));
    assert_eq!(l.state(tx), None);
    l.on_message(ok, peer(Transport::Udp), t0 + Duration::from_secs(34));
    assert!(matches!(l.poll_event(), Some(Event::StrayResponse { .. })));
}

#[test]
fn non_invite_client_timer_k() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let req = request(Method::Bye, "z9hG4bKk");
    let tx = l
        .send_request(req.clone(), peer(Transport::Udp), t0)
        .unwrap();
    l.on_message(response_to(&req, 200), peer(Transport::Udp), t0);
    assert_eq!(l.state(tx), Some(State::Completed));
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + Duration::from_secs(5)),
        "K = T4"
    );
    l.on_message(response_to(&req, 200), peer(Transport::Udp), t0);
    assert_eq!(
        std::iter::from_fn(|| l.poll_event()).count(),
        1,
        "the retransmitted 200 is absorbed"
    );
    l.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(l.state(tx), None);
    // reliable: K = 0
    let tx = l
        .send_request(request(Method::Bye, "z9hG4bKk2"), peer(Transport::Tcp), t0)
        .unwrap();
    l.on_message(
        response_to(&request(Method::Bye, "z9hG4bKk2"), 200),
        peer(Transport::Tcp),
        t0,
    );
    assert_eq!(l.state(tx), None);
}

fn incoming(
    l: &mut TransactionLayer,
    m: &MessageBuf,
    transport: Transport,
    now: Instant,
) -> Option<(TxId, String)> {
    l.on_message(parsed(m), peer(transport), now);
    let mut out = None;
    while let Some(e) = l.poll_event() {
        if let Event::Request { tx, via, .. } = e {
            out = Some((tx, via));
        }
    }
    out
}

#[test]
fn invite_server_sends_100_then_g_doubles_to_t2_until_h() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = request(Method::Invite, "z9hG4bKg");
    let (tx, via) = incoming(&mut l, &inv, Transport::Udp, t0).unwrap();
    let trying = parse(l.poll_transmit().unwrap().bytes).unwrap();
    assert_eq!(trying.code(), Some(100));
    assert_eq!(trying.to().tag(), None, "no To tag on 100");
    // retransmitted INVITE → 100 again, no new event
    assert!(incoming(&mut l, &inv, Transport::Udp, t0).is_none());
    assert_eq!(
        parse(l.poll_transmit().unwrap().bytes).unwrap().code(),
        Some(100)
    );
    let busy = parsed(&inv).response(486, "Busy Here", "t1", Some(&via));
    l.respond(tx, &busy, t0).unwrap();
    let sent = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(
        sent,
        vec![0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    );
    assert_eq!(timeouts(&mut l), 1, "Timer H reports the missing ACK");
    assert_eq!(l.state(tx), None);
}

#[test]
fn invite_server_ack_absorbed_then_timer_i() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = request(Method::Invite, "z9hG4bKi");
    let (tx, via) = incoming(&mut l, &inv, Transport::Udp, t0).unwrap();
    let _ = l.poll_transmit();
    l.respond(
        tx,
        &parsed(&inv).response(480, "Temporarily Unavailable", "t1", Some(&via)),
        t0,
    )
    .unwrap();
    let _ = l.poll_transmit();
    let mut ack = request(Method::Ack, "z9hG4bKi");
    ack.headers.retain(|(n, _)| *n != HeaderName::CSeq);
    ack.push(HeaderName::CSeq, "1 ACK");
    assert!(incoming(&mut l, &ack, Transport::Udp, t0 + Duration::from_secs(1)).is_none());
    assert!(l.poll_event().is_none(), "ACK for non-2xx is absorbed");
    assert_eq!(l.state(tx), Some(State::Confirmed));
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + Duration::from_secs(6)),
        "I = T4"
    );
    l.handle_timeout(t0 + Duration::from_secs(6));
    assert!(
        l.poll_transmit().is_none(),
        "no retransmission after the ACK"
    );
    assert_eq!(l.state(tx), None);
}

#[test]
fn invite_server_accepted_absorbs_invite_retransmits_and_ends_on_l() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = request(Method::Invite, "z9hG4bKl");
    let (tx, via) = incoming(&mut l, &inv, Transport::Udp, t0).unwrap();
    let _ = l.poll_transmit();
    let ok = parsed(&inv).response(200, "OK", "t1", Some(&via));
    l.respond(tx, &ok, t0).unwrap();
    assert_eq!(l.state(tx), Some(State::Accepted));
    let _ = l.poll_transmit();
    assert!(incoming(&mut l, &inv, Transport::Udp, t0).is_none());
    assert!(
        l.poll_transmit().is_none(),
        "INVITE retransmission absorbed in Accepted"
    );
    l.respond(tx, &ok, t0 + Duration::from_millis(500)).unwrap();
    assert!(
        l.poll_transmit().is_some(),
        "TU's 2xx retransmission passes"
    );
    assert_eq!(
        l.respond(tx, &parsed(&inv).response(486, "X", "t1", None), t0),
        Err(TxError::WrongState)
    );
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + Duration::from_secs(32)),
        "L = 64*T1"
    );
    l.handle_timeout(t0 + Duration::from_secs(32));
    assert_eq!(l.state(tx), None);
}

#[test]
fn non_invite_server_timer_j_and_retransmissions() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let opt = request(Method::Options, "z9hG4bKj");
    let (tx, via) = incoming(&mut l, &opt, Transport::Udp, t0).unwrap();
    assert!(
        l.poll_transmit().is_none(),
        "no automatic 100 for non-INVITE"
    );
    assert!(incoming(&mut l, &opt, Transport::Udp, t0).is_none());
    assert!(
        l.poll_transmit().is_none(),
        "Trying absorbs retransmissions"
    );
    l.respond(tx, &parsed(&opt).response(200, "OK", "t", Some(&via)), t0)
        .unwrap();
    assert!(l.poll_transmit().is_some());
    assert!(incoming(&mut l, &opt, Transport::Udp, t0 + Duration::from_secs(1)).is_none());
    assert!(l.poll_transmit().is_some(), "Completed resends the final");
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + Duration::from_secs(32)),
        "J = 64*T1"
    );
    // reliable: J = 0
    let opt2 = request(Method::Options, "z9hG4bKj2");
    let (tx2, via2) = incoming(&mut l, &opt2, Transport::Tcp, t0).unwrap();
    l.respond(
        tx2,
        &parsed(&opt2).response(200, "OK", "t", Some(&via2)),
        t0,
    )
    .unwrap();
    assert_eq!(l.state(tx2), None);
}

#[test]
fn cancel_matches_its_invite_and_has_its_own_transaction() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let inv = request(Method::Invite, "z9hG4bKc");
    let (inv_tx, _) = incoming(&mut l, &inv, Transport::Udp, t0).unwrap();
    let mut cancel = request(Method::Cancel, "z9hG4bKc");
    cancel.headers.retain(|(n, _)| *n != HeaderName::CSeq);
    cancel.push(HeaderName::CSeq, "1 CANCEL");
    let (cancel_tx, _) = incoming(&mut l, &cancel, Transport::Udp, t0).unwrap();
    assert_ne!(inv_tx, cancel_tx);
    assert_eq!(l.invite_for_cancel(&parsed(&cancel)), Some(inv_tx));
    let other = request(Method::Cancel, "z9hG4bKother");
    let mut other = other;
    other.headers.retain(|(n, _)| *n != HeaderName::CSeq);
    other.push(HeaderName::CSeq, "1 CANCEL");
    assert_eq!(l.invite_for_cancel(&parsed(&other)), None);
}

#[test]
fn server_matching_uses_sent_by_and_rfc2543_fallback() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let a = request(Method::Options, "z9hG4bKsame");
    let mut b = a.clone();
    b.headers[0].1 = "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKsame".into();
    assert!(incoming(&mut l, &a, Transport::Udp, t0).is_some());
    assert!(
        incoming(&mut l, &b, Transport::Udp, t0).is_some(),
        "different sent-by: new tx"
    );
    // RFC 2543 (no cookie): same request twice is a retransmission
    let old = request(Method::Options, "1234");
    assert!(incoming(&mut l, &old, Transport::Udp, t0).is_some());
    assert!(incoming(&mut l, &old, Transport::Udp, t0).is_none());
    assert_eq!(l.len(), 3);
}

#[test]
fn client_matching_needs_branch_and_method() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let req = request(Method::Invite, "z9hG4bKx");
    l.send_request(req.clone(), peer(Transport::Udp), t0)
        .unwrap();
    let mut wrong = parsed(&req).response(200, "OK", "t", None);
    wrong.headers.retain(|(n, _)| *n != HeaderName::CSeq);
    wrong.push(HeaderName::CSeq, "1 CANCEL");
    l.on_message(parsed(&wrong), peer(Transport::Udp), t0);
    assert!(matches!(l.poll_event(), Some(Event::StrayResponse { .. })));
    assert_eq!(
        l.send_request(req, peer(Transport::Udp), t0),
        Err(TxError::Duplicate)
    );
}

#[test]
fn response_target_follows_rfc3581_and_18_2_2() {
    let via = |s: &str| crate::Via::parse(s).unwrap();
    let from = Peer {
        transport: Transport::Udp,
        addr: "127.0.0.9:40000".parse().unwrap(),
        conn: None,
    };
    assert_eq!(
        from.response_target(&via("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa;rport"))
            .addr,
        "127.0.0.9:40000".parse().unwrap()
    );
    assert_eq!(
        from.response_target(&via("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa"))
            .addr,
        "127.0.0.9:5070".parse().unwrap()
    );
    assert_eq!(
        from.response_target(&via(
            "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa;maddr=192.0.2.99"
        ))
        .addr,
        "127.0.0.9:5060".parse().unwrap()
    );
    let tcp = Peer {
        transport: Transport::Tcp,
        conn: Some(7),
        ..from
    };
    assert_eq!(
        tcp.response_target(&via("SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKa")),
        tcp
    );
}

#[test]
fn request_start_line_is_needed_to_send() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let resp = MessageBuf {
        start: StartLineBuf::Response {
            code: 200,
            reason: "OK".into(),
        },
        headers: vec![],
        body: Bytes::new(),
    };
    assert_eq!(
        l.send_request(resp, peer(Transport::Udp), Instant::now()),
        Err(TxError::NoBranch)
    );
}

#[test]
fn tables_give_back_their_room_after_a_burst() {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let t0 = Instant::now();
    for i in 0..20_000 {
        let req = request(Method::Options, &format!("z9hG4bKburst{i}"));
        layer.on_message(parsed(&req), peer(Transport::Udp), t0);
        let Some(Event::Request { tx, msg, .. }) = layer.poll_event() else {
            panic!("a request event");
        };
        let resp = msg.response(200, "OK", "t", None);
        layer.respond(tx, &resp, t0).unwrap();
    }
    while layer.poll_transmit().is_some() {}
    let grown = layer.capacity();
    assert!(grown >= 20_000);
    // Timer J (64·T1) ends them all.
    let _ = run(&mut layer, t0, Duration::from_secs(60));
    assert!(layer.is_empty());
    assert!(
        layer.capacity() < grown / 4,
        "room given back: {} of {grown}",
        layer.capacity()
    );
}

#[test]
fn keys_whose_digests_collide_still_find_their_own_transactions() {
    // A 2-bit digest: of 40 live keys at most 4 sit in the digest index, the rest spill; every
    // lookup must still reach its own transaction (never a colliding one), and every table
    // must be empty once the transactions end.
    let mut layer = TransactionLayer::with_digest_mask(TimerConfig::default(), 0b11);
    let t0 = Instant::now();
    let mut server = Vec::new();
    for i in 0..20 {
        let req = request(Method::Options, &format!("z9hG4bKcoll{i}"));
        layer.on_message(parsed(&req), peer(Transport::Udp), t0);
        let Some(Event::Request { tx, msg, .. }) = layer.poll_event() else {
            panic!("request {i} opens its own transaction");
        };
        server.push((tx, msg));
    }
    let mut client = Vec::new();
    for i in 0..20 {
        let req = request(Method::Options, &format!("z9hG4bKout{i}"));
        let tx = layer
            .send_request(req.clone(), peer(Transport::Udp), t0)
            .unwrap();
        client.push((tx, req));
    }
    assert!(layer.spilled() >= 36, "spilled {}", layer.spilled());
    while layer.poll_transmit().is_some() {}
    // a retransmitted request is absorbed by its own transaction: no new event
    for i in [0, 7, 19] {
        let req = request(Method::Options, &format!("z9hG4bKcoll{i}"));
        layer.on_message(parsed(&req), peer(Transport::Udp), t0);
        assert!(layer.poll_event().is_none(), "retransmission {i} matched");
    }
    // each response reaches the client transaction that sent its request
    for (tx, req) in client.iter().rev() {
        layer.on_message(response_to(req, 200), peer(Transport::Udp), t0);
        match layer.poll_event() {
            Some(Event::Response { tx: got, .. }) => assert_eq!(got, *tx),
            other => panic!("expected the response on {tx:?}, got {other:?}"),
        }
    }
    for (tx, msg) in &server {
        let resp = msg.response(200, "OK", "t", None);
        layer.respond(*tx, &resp, t0).unwrap();
    }
    let _ = run(&mut layer, t0, Duration::from_secs(60));
    assert!(layer.is_empty());
    assert_eq!(layer.spilled(), 0);
}

#[test]
fn an_abandoned_client_transaction_sends_nothing_more_and_its_response_is_a_stray() {
    let t0 = Instant::now();
    let mut l = TransactionLayer::new(TimerConfig::default());
    let req = request(Method::Invite, "z9hG4bKgone");
    let tx = l
        .send_request(req.clone(), peer(Transport::Udp), t0)
        .unwrap();
    assert!(l.poll_transmit().is_some(), "the INVITE left");
    assert!(l.abandon(tx));
    assert!(!l.abandon(tx), "only once");
    assert_eq!(l.state(tx), None);
    assert!(l.is_empty());
    assert_eq!(run(&mut l, t0, Duration::from_secs(100)), Vec::<f64>::new());
    l.on_message(response_to(&req, 180), peer(Transport::Udp), t0);
    assert!(
        matches!(l.poll_event(), Some(Event::StrayResponse { .. })),
        "a response to an abandoned request is a stray"
    );
    assert_eq!(timeouts(&mut l), 0);
}
