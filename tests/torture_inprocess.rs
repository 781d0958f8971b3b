//! Every SIP torture message through the real edge (parser, transaction layer, policy) in
//! process, with simulated time: the answer must be the one pinned for its manifest line.

mod support;

use bytes::Bytes;
use dce::counters::Counters;
use dce::edge::EdgeCore;
use dce_sip::transaction::{Peer, Transport};
use std::sync::Arc;
use std::time::Instant;
use support::{expectations, load_corpus, status_code, Expect};

fn core() -> EdgeCore {
    support::bare_edge(Arc::new(Counters::default()))
}

/// Final answer (skipping 1xx) the core sends for `wire`, or Silence.
fn answer(
    core: &mut EdgeCore,
    wire: &[u8],
    transport: Transport,
    now: Instant,
) -> (Expect, Vec<Peer>) {
    let from = Peer {
        transport,
        addr: "127.0.0.7:40000".parse().unwrap(),
        conn: Some(0),
    };
    support::feed(core, Bytes::copy_from_slice(wire), from, now);
    let mut result = Expect::Silence;
    let mut dests = Vec::new();
    while let Some(t) = support::next_transmit(core) {
        dests.push(t.to);
        if let Some(code) = status_code(&t.bytes) {
            if code >= 200 {
                result = Expect::Code(code);
            }
        }
    }
    (result, dests)
}

#[test]
fn every_torture_message_gets_its_pinned_answer() {
    let Some(cases) = load_corpus() else { return };
    let expected = expectations();
    let mut core = core();
    let now = Instant::now();
    let mut wrong = Vec::new();
    for case in &cases {
        let (got, dests) = answer(&mut core, &case.wire, Transport::Udp, now);
        let want = expected[case.file.as_str()];
        if got != want {
            wrong.push(format!(
                "{}: got {got:?}, want {want:?} (manifest: {})",
                case.file, case.expected_text
            ));
        }
        for d in dests {
            assert!(
                d.addr.ip().is_loopback(),
                "{}: a response left for {}",
                case.file,
                d.addr
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // and the core still answers OPTIONS
    let opt = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.7:40000;branch=z9hG4bKafter;rport\r\nFrom: <sip:p@127.0.0.7>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: after\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        answer(&mut core, opt, Transport::Udp, now).0,
        Expect::Code(200)
    );
}

#[test]
fn responses_go_where_the_via_says() {
    let mut core = core();
    let now = Instant::now();
    let msg = |via: &str| {
        format!("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:p@x>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: {via}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    };
    let (_, d) = answer(
        &mut core,
        msg("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1").as_bytes(),
        Transport::Udp,
        now,
    );
    assert_eq!(
        d[0].addr,
        "127.0.0.7:5070".parse().unwrap(),
        "received IP, sent-by port"
    );
    let (_, d) = answer(
        &mut core,
        msg("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK2;rport").as_bytes(),
        Transport::Udp,
        now,
    );
    assert_eq!(
        d[0].addr,
        "127.0.0.7:40000".parse().unwrap(),
        "rport: source port"
    );
    let (_, d) = answer(
        &mut core,
        msg("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK3").as_bytes(),
        Transport::Udp,
        now,
    );
    assert_eq!(
        d[0].addr,
        "127.0.0.7:5060".parse().unwrap(),
        "default port 5060"
    );
    let (_, d) = answer(
        &mut core,
        msg("SIP/2.0/TCP 192.0.2.1:5070;branch=z9hG4bK4").as_bytes(),
        Transport::Tcp,
        now,
    );
    assert_eq!(
        (d[0].transport, d[0].conn),
        (Transport::Tcp, Some(0)),
        "TCP: same connection"
    );
}

#[test]
fn answers_carry_received_rport_and_a_to_tag() {
    let mut core = core();
    let from = Peer {
        transport: Transport::Udp,
        addr: "127.0.0.7:40000".parse().unwrap(),
        conn: Some(0),
    };
    let req = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKz;rport\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKy\r\nFrom: <sip:p@x>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: abc\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    support::feed(&mut core, Bytes::from(req), from, Instant::now());
    let t = support::next_transmit(&mut core).expect("an answer");
    let resp = dce_sip::parse(t.bytes).expect("our answer parses");
    assert_eq!(resp.code(), Some(200));
    assert_eq!(resp.vias().len(), 2);
    assert_eq!(resp.via().received(), Some("127.0.0.7"));
    assert_eq!(resp.via().rport, dce_sip::Rport::Port(40000));
    assert!(resp.to().tag().is_some());
    assert_eq!((resp.call_id(), resp.cseq()), ("abc", 7));
    assert!(resp.header(&dce_sip::HeaderName::Allow).is_some());
}
