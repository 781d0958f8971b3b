//! SIP hot paths: parse a ~900-byte carrier INVITE, print it, and transaction-layer events/s.
//! Figures go into the README's performance table.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dce_sip::transaction::{Event, Peer, TimerConfig, TransactionLayer, Transport};
use dce_sip::{parse, HeaderName, MessageBuf, Method};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A typical carrier INVITE with SDP (G.711, G.729, telephone-event), about 900 bytes.
pub fn carrier_invite(branch: &str) -> Bytes {
    let sdp = "v=0\r\n\
o=CarrierSBC 1732017463 1732017463 IN IP4 192.0.2.10\r\n\
s=SIP Call\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 31604 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";
    let head = format!(
        "INVITE sip:+18005550100@203.0.113.5:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport\r\n\
Max-Forwards: 69\r\n\
From: \"WIRELESS CALLER\" <sip:+13105551234@192.0.2.10;user=phone>;tag=gK0a1b2c3d\r\n\
To: <sip:+18005550100@203.0.113.5;user=phone>\r\n\
Call-ID: 1785632148_90214338@192.0.2.10\r\n\
CSeq: 718364 INVITE\r\n\
Contact: <sip:+13105551234@192.0.2.10:5060;transport=udp>\r\n\
P-Asserted-Identity: <sip:+13105551234@192.0.2.10;user=phone>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO\r\n\
Supported: timer, 100rel, replaces\r\n\
Session-Expires: 1800\r\n\
User-Agent: CarrierSBC/4.2\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n",
        sdp.len()
    );
    Bytes::from(format!("{head}{sdp}"))
}

fn parse_print(c: &mut Criterion) {
    let wire = carrier_invite("z9hG4bK-524287-1---a3f5c2d1e0b9");
    eprintln!("carrier INVITE: {} bytes", wire.len());
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("parse_invite", |b| {
        b.iter(|| parse(black_box(wire.clone())).unwrap())
    });
    let msg = parse(wire.clone()).unwrap();
    let buf = msg.to_buf();
    let mut out = Vec::with_capacity(2048);
    g.bench_function("print_invite", |b| {
        b.iter(|| {
            out.clear();
            black_box(&buf).print_into(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

fn request(i: u64) -> MessageBuf {
    let mut m = MessageBuf::request(Method::Options, "sip:+18005550100@127.0.0.1");
    m.push(
        HeaderName::Via,
        format!("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{i:x}"),
    )
    .push(HeaderName::From, "<sip:a@127.0.0.1>;tag=1")
    .push(HeaderName::To, "<sip:b@127.0.0.1>")
    .push(HeaderName::CallId, format!("c{i}"))
    .push(HeaderName::CSeq, "1 OPTIONS")
    .push(HeaderName::MaxForwards, "70");
    m
}

/// Each transaction: request in, TU's 200 out, Timer J fires = 3 layer events.
fn transactions(c: &mut Criterion) {
    let peer = Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5070".parse().unwrap(),
        conn: Some(0),
    };
    let mut g = c.benchmark_group("transactions");
    g.throughput(Throughput::Elements(3));
    g.bench_function("server_non_invite_event", |b| {
        b.iter_custom(|iters| {
            let msgs: Vec<_> = (0..iters)
                .map(|i| parse(request(i).print()).unwrap())
                .collect();
            let t0 = Instant::now();
            let mut layer = TransactionLayer::new(TimerConfig::default());
            let start = Instant::now();
            for msg in msgs {
                layer.on_message(msg, peer, t0);
                while let Some(ev) = layer.poll_event() {
                    if let Event::Request { tx, msg, via, .. } = ev {
                        let resp = msg.response(200, "OK", "t", Some(&via));
                        layer.respond(tx, &resp, t0).unwrap();
                    }
                }
                while layer.poll_transmit().is_some() {}
            }
            layer.handle_timeout(t0 + Duration::from_secs(64));
            black_box(layer.len());
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, parse_print, transactions);
criterion_main!(benches);
