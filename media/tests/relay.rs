//! The relay on real loopback sockets: packets cross it both ways, the report counts what was
//! sent (loss from dropped packets, the jitter a sender adds, a lower MOS), strangers' packets
//! never reach either party, ports come back, and silence after answer is reported.

use dce_media::stats::rtp_packet;
use dce_media::{MediaEngine, MediaEvent, MediaReport, Relay, RelayConfig, Side, Stream};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

fn config(port_min: u16, timeout_s: u64) -> RelayConfig {
    RelayConfig {
        bind_ip: "127.0.0.1".parse().unwrap(),
        port_min,
        port_max: port_min + 99,
        rtp_timeout: Duration::from_secs(timeout_s),
        strict_source: true,
        latch_any_source: false,
    }
}

fn stream(addr: SocketAddr) -> Stream {
    Stream {
        kind: "audio".into(),
        rtp: Some(addr),
        rtcp: Some(SocketAddr::new(addr.ip(), addr.port() + 1)),
        rtcp_mux: false,
        codec: Some("PCMU".into()),
        clock_rate: 8000,
        telephone_event: None,
    }
}

async fn closed(events: &mut mpsc::UnboundedReceiver<MediaEvent>) -> MediaReport {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(MediaEvent::Closed { report, .. })) => return *report,
            Ok(Some(_)) => continue,
            _ => panic!("no Closed event"),
        }
    }
}

/// Send `n` packets carrier → DCE, every `drop_every`-th skipped, odd ones `jitter_ms` late;
/// the buyer counts what arrives. Returns (report, packets the buyer received).
async fn call(
    port_min: u16,
    n: u16,
    drop_every: Option<u16>,
    jitter_ms: u64,
) -> (MediaReport, usize) {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut relay = Relay::new(config(port_min, 30), tx).expect("relay thread starts");
    let carrier = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let buyer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let id = relay.open(1).unwrap();
    let a_port = relay.ports(id, Side::A)[0];
    let b_port = relay.ports(id, Side::B)[0];
    relay.set_remote(id, Side::A, &[stream(carrier.local_addr().unwrap())]);
    relay.flush();
    relay.set_remote(id, Side::B, &[stream(buyer.local_addr().unwrap())]);
    relay.flush();
    relay.answered(id);
    relay.flush();
    let dce_a: SocketAddr = format!("127.0.0.1:{a_port}").parse().unwrap();
    let dce_b: SocketAddr = format!("127.0.0.1:{b_port}").parse().unwrap();
    let receiver = tokio::spawn(async move {
        let mut got = 0usize;
        let mut buf = [0u8; 2048];
        while let Ok(Ok((len, from))) =
            tokio::time::timeout(Duration::from_millis(800), buyer.recv_from(&mut buf)).await
        {
            assert_eq!(from, dce_b, "the buyer only ever hears DCE");
            assert!(len >= 12);
            got += 1;
            // the buyer talks back, so both directions flow
            let _ = buyer.send_to(&buf[..len], dce_b).await;
        }
        got
    });
    let start = tokio::time::Instant::now();
    for i in 0..n {
        let late = if i % 2 == 1 { jitter_ms } else { 0 };
        tokio::time::sleep_until(start + Duration::from_millis(20 * i as u64 + late)).await;
        if drop_every.is_some_and(|d| i % d == d - 1) {
            continue;
        }
        carrier
            .send_to(&rtp_packet(0, i, 160 * i as u32, 7, 160), dce_a)
            .await
            .unwrap();
    }
    let got = receiver.await.unwrap();
    relay.close(id);
    relay.flush();
    (closed(&mut events).await, got)
}

#[tokio::test]
async fn loss_and_added_jitter_are_measured_and_lower_the_mos() {
    let (clean, clean_got) = call(31000, 201, None, 0).await;
    assert_eq!(clean.carrier_in.packets, 201);
    assert_eq!(clean_got, 201, "every packet crossed DCE");
    assert_eq!(clean.to_buyer, 201);
    assert_eq!(clean.carrier_in.lost, 0);
    assert!(
        clean.buyer_in.packets > 190,
        "the buyer's echo came back through DCE"
    );
    let (lossy, got) = call(31200, 201, Some(10), 10).await;
    assert_eq!(lossy.carrier_in.packets, 181);
    assert_eq!(got, 181);
    assert_eq!(lossy.carrier_in.lost, 20);
    assert!(
        (lossy.carrier_in.loss_pct - 10.0).abs() < 0.5,
        "{}",
        lossy.carrier_in.loss_pct
    );
    // 10 ms added on every other packet: RFC 3550 jitter settles near 9 ms; the scheduler adds
    // its own, so the bounds are wide, but clearly above the clean call's
    assert!(
        (5.0..30.0).contains(&lossy.carrier_in.jitter_ms)
            && lossy.carrier_in.jitter_ms > clean.carrier_in.jitter_ms,
        "lossy {} clean {}",
        lossy.carrier_in.jitter_ms,
        clean.carrier_in.jitter_ms
    );
    assert!(
        lossy.carrier_in.mos < clean.carrier_in.mos - 1.0,
        "{} vs {}",
        lossy.carrier_in.mos,
        clean.carrier_in.mos
    );
    assert_eq!(lossy.codec.as_deref(), Some("PCMU"));
}

#[tokio::test]
async fn strangers_spraying_rtp_never_reach_either_party() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut relay = Relay::new(config(31400, 30), tx).expect("relay thread starts");
    let carrier = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let buyer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.9:0").await.unwrap();
    let id = relay.open(1).unwrap();
    let dce_a: SocketAddr = format!("127.0.0.1:{}", relay.ports(id, Side::A)[0])
        .parse()
        .unwrap();
    let dce_b: SocketAddr = format!("127.0.0.1:{}", relay.ports(id, Side::B)[0])
        .parse()
        .unwrap();
    relay.set_remote(id, Side::A, &[stream(carrier.local_addr().unwrap())]);
    relay.flush();
    relay.set_remote(id, Side::B, &[stream(buyer.local_addr().unwrap())]);
    relay.flush();
    // both parties latch
    carrier
        .send_to(&rtp_packet(0, 1, 160, 1, 160), dce_a)
        .await
        .unwrap();
    buyer
        .send_to(&rtp_packet(0, 1, 160, 2, 160), dce_b)
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let (_, from) = buyer.recv_from(&mut buf).await.unwrap();
    assert_eq!(from, dce_b);
    let (_, from) = carrier.recv_from(&mut buf).await.unwrap();
    assert_eq!(from, dce_a);
    // a third party sprays both ports, with a marker payload
    for i in 0..50u16 {
        let mut p = rtp_packet(0, 1000 + i, 0, 0xBAD, 20);
        p[12..16].copy_from_slice(b"EVIL");
        stranger.send_to(&p, dce_a).await.unwrap();
        stranger.send_to(&p, dce_b).await.unwrap();
        stranger
            .send_to(&p, SocketAddr::new(dce_a.ip(), dce_a.port() + 1))
            .await
            .unwrap();
    }
    for sock in [&buyer, &carrier] {
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await
        {
            assert!(
                !buf[..n].windows(4).any(|w| w == b"EVIL"),
                "spray leaked through"
            );
        }
    }
    relay.close(id);
    relay.flush();
    let report = closed(&mut events).await;
    assert_eq!(report.foreign_dropped, 150);
    assert_eq!((report.carrier_in.packets, report.buyer_in.packets), (1, 1));
}

#[tokio::test]
async fn ports_come_back_and_exhaustion_is_an_error() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut relay = Relay::new(
        RelayConfig {
            port_max: 31607,
            ..config(31600, 30)
        },
        tx,
    )
    .expect("relay thread starts");
    assert_eq!(relay.available(), 4);
    let a = relay.open(1).unwrap();
    let b = relay.open(1).unwrap();
    assert_eq!(relay.open(1), Err(dce_media::MediaError::PortsExhausted));
    relay.close(a);
    relay.flush();
    let _ = closed(&mut events).await;
    relay.close(b);
    relay.flush();
    let _ = closed(&mut events).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(relay.available(), 4, "every pair returned");
    assert!(relay.open(1).is_ok());
}

#[tokio::test]
async fn silence_after_answer_is_reported() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut relay = Relay::new(config(31700, 1), tx).expect("relay thread starts");
    let id = relay.open(1).unwrap();
    relay.answered(id);
    relay.flush();
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Some(MediaEvent::Timeout { id: got })) => assert_eq!(got, id),
        other => panic!("expected a timeout, got {other:?}"),
    }
    relay.close(id);
    relay.flush();
}

#[tokio::test]
async fn a_second_stream_failing_gives_the_first_streams_ports_back() {
    // exactly four pairs for a two-stream call; another process holds the last pair's RTCP port
    let (tx, _events) = mpsc::unbounded_channel();
    let mut relay = Relay::new(
        RelayConfig {
            port_max: 32107,
            ..config(32100, 30)
        },
        tx,
    )
    .expect("relay thread starts");
    let gauge = relay.port_gauge();
    assert_eq!(relay.available(), 4);
    let squatter = std::net::UdpSocket::bind("127.0.0.1:32107").unwrap();
    assert_eq!(relay.open(2), Err(dce_media::MediaError::PortsExhausted));
    assert_eq!(
        relay.available(),
        4,
        "the first stream's pairs and the busy one are back"
    );
    assert_eq!(gauge.in_use(), 0);
    // the pairs really were released (their sockets closed) and the busy pair is retried
    drop(squatter);
    let id = relay
        .open(2)
        .expect("all four pairs bind once the port is free");
    assert_eq!((relay.available(), gauge.in_use()), (0, 4));
    relay.close(id);
    relay.flush();
}

/// An RTP socket and, when `rtcp_next` is set, an RTCP socket on the next port (found by trying
/// ephemeral ports until the next one is free); otherwise RTCP on any port.
async fn party_sockets(rtcp_next: bool) -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rtp.local_addr().unwrap().port();
        let rtcp = if rtcp_next {
            match port.checked_add(1) {
                Some(p) => UdpSocket::bind(("127.0.0.1", p)).await,
                None => continue,
            }
        } else {
            UdpSocket::bind("127.0.0.1:0").await
        };
        if let Ok(rtcp) = rtcp {
            return (rtp, rtcp);
        }
    }
    panic!("no free port pair on 127.0.0.1");
}

/// What a party signals, through the SDP parser: `a=rtcp:` when given, else RTCP is RTP + 1.
fn signalled(rtp: &UdpSocket, rtcp_attr: Option<&UdpSocket>) -> Stream {
    let port = rtp.local_addr().unwrap().port();
    let mut sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    if let Some(r) = rtcp_attr {
        sdp.push_str(&format!("a=rtcp:{}\r\n", r.local_addr().unwrap().port()));
    }
    dce_media::inspect(sdp.as_bytes()).unwrap().remove(0)
}

fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

/// Send `pkt` from `from` to `dce` and expect exactly it at `to`, from `dce_out`.
async fn crosses(
    from: &UdpSocket,
    dce: SocketAddr,
    pkt: &[u8],
    to: &UdpSocket,
    dce_out: SocketAddr,
) {
    from.send_to(pkt, dce).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, src) = tokio::time::timeout(Duration::from_secs(2), to.recv_from(&mut buf))
        .await
        .expect("the party's packet crossed DCE")
        .unwrap();
    assert_eq!(
        (&buf[..n], src),
        (pkt, dce_out),
        "the other party got exactly it, from DCE"
    );
}

/// The sprayer, on the parties' IP but its own port, sends `n` marked packets to each port.
async fn spray(sprayer: &UdpSocket, ports: &[SocketAddr; 4], n: u16) {
    for i in 0..n {
        let mut p = rtp_packet(0, 40_000 + i, 0, 0xBAD, 20);
        p[12..16].copy_from_slice(b"EVIL");
        for &port in ports {
            sprayer.send_to(&p, port).await.unwrap();
        }
    }
}

/// A sprayer on the signalled IP (127.0.0.1) but another port, before either party sent RTP
/// and again after both latched: it never reaches a party, never gets anything back, and is
/// counted; the parties' RTP and RTCP still cross both ways.
async fn sprayer_on_the_signalled_ip(port_min: u16, strict_source: bool) {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut relay = Relay::new(
        RelayConfig {
            strict_source,
            ..config(port_min, 30)
        },
        tx,
    )
    .expect("relay thread starts");
    // the carrier signals RTCP with a=rtcp (any port), the buyer relies on RTP + 1
    let (c_rtp, c_rtcp) = party_sockets(false).await;
    let (b_rtp, b_rtcp) = party_sockets(true).await;
    let sprayer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let id = relay.open(1).unwrap();
    let (a, b) = (relay.ports(id, Side::A)[0], relay.ports(id, Side::B)[0]);
    let dce = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (a_rtp, a_rtcp, b_rtp_dce, b_rtcp_dce) = (dce(a), dce(a + 1), dce(b), dce(b + 1));
    let carrier = signalled(&c_rtp, Some(&c_rtcp));
    let buyer = signalled(&b_rtp, None);
    assert_eq!(buyer.rtcp, Some(dce(b_rtcp.local_addr().unwrap().port())));
    relay.set_remote(id, Side::A, &[carrier]);
    relay.flush();
    relay.set_remote(id, Side::B, &[buyer]);
    relay.flush();
    relay.answered(id);
    relay.flush();
    let ports = [a_rtp, a_rtcp, b_rtp_dce, b_rtcp_dce];
    for (phase, seq) in [("before any party sent", 1u16), ("after both latched", 2)] {
        spray(&sprayer, &ports, 20).await;
        // each party's packet queues behind the spray on the same DCE socket, so once it has
        // crossed, DCE has seen (and dropped) all of the spray on that socket
        crosses(
            &c_rtp,
            a_rtp,
            &rtp_packet(0, seq, 160, 1, 160),
            &b_rtp,
            b_rtp_dce,
        )
        .await;
        crosses(&c_rtcp, a_rtcp, &rtcp_rr(1), &b_rtcp, b_rtcp_dce).await;
        crosses(
            &b_rtp,
            b_rtp_dce,
            &rtp_packet(0, seq, 160, 2, 160),
            &c_rtp,
            a_rtp,
        )
        .await;
        crosses(&b_rtcp, b_rtcp_dce, &rtcp_rr(2), &c_rtcp, a_rtcp).await;
        let mut buf = [0u8; 2048];
        for (who, sock) in [
            ("carrier", &c_rtp),
            ("carrier RTCP", &c_rtcp),
            ("buyer", &b_rtp),
            ("buyer RTCP", &b_rtcp),
        ] {
            if let Ok((n, _)) = sock.try_recv_from(&mut buf) {
                panic!("{phase}: the {who} got an extra packet: {:?}", &buf[..n]);
            }
        }
        let back =
            tokio::time::timeout(Duration::from_millis(200), sprayer.recv_from(&mut buf)).await;
        assert!(
            back.is_err(),
            "{phase}: the sprayer got a packet back: {back:?}"
        );
    }
    relay.close(id);
    relay.flush();
    let report = closed(&mut events).await;
    assert_eq!(
        report.foreign_dropped,
        2 * 4 * 20,
        "every sprayed packet counted"
    );
    assert_eq!((report.carrier_in.packets, report.buyer_in.packets), (2, 2));
    assert_eq!((report.to_buyer, report.to_carrier), (2, 2));
}

#[tokio::test]
async fn a_sprayer_on_the_signalled_ip_never_latches_strict() {
    sprayer_on_the_signalled_ip(30600, true).await;
}

#[tokio::test]
async fn a_sprayer_on_the_signalled_ip_never_latches_without_strict_source() {
    sprayer_on_the_signalled_ip(30700, false).await;
}

#[tokio::test]
async fn dropping_the_relay_reports_open_calls_and_closes_every_socket() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut relay = Relay::new(config(31900, 30), tx).expect("relay thread starts");
    let a = relay.open(1).unwrap();
    let b = relay.open(2).unwrap();
    relay.flush();
    let mut ports: Vec<u16> = Vec::new();
    for id in [a, b] {
        for side in [Side::A, Side::B] {
            ports.extend(relay.ports(id, side));
        }
    }
    assert_eq!(ports.len(), 6);
    drop(relay); // joins the relay thread
    let mut closed = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let MediaEvent::Closed { id, .. } = ev {
            closed.push(id);
        }
    }
    closed.sort_unstable();
    assert_eq!(closed, vec![a, b], "each open call reported once");
    for p in ports {
        for port in [p, p + 1] {
            std::net::UdpSocket::bind(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("port {port} still held after the relay stopped: {e}"));
        }
    }
}

/// One call open on a relay from `port_min`, between a carrier and a buyer socket on
/// loopback, nothing announced yet.
struct OneCall {
    relay: Relay,
    events: mpsc::UnboundedReceiver<MediaEvent>,
    carrier: UdpSocket,
    buyer: UdpSocket,
    id: dce_media::MediaId,
    /// DCE's RTP address facing the carrier, and facing the buyer.
    dce_a: SocketAddr,
    dce_b: SocketAddr,
}

async fn one_call(port_min: u16) -> OneCall {
    let (tx, events) = mpsc::unbounded_channel();
    let mut relay = Relay::new(config(port_min, 30), tx).expect("relay thread starts");
    let carrier = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let buyer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let id = relay.open(1).unwrap();
    let at = |side| SocketAddr::from(([127, 0, 0, 1], relay.ports(id, side)[0]));
    let (dce_a, dce_b) = (at(Side::A), at(Side::B));
    OneCall {
        relay,
        events,
        carrier,
        buyer,
        id,
        dce_a,
        dce_b,
    }
}

/// What a party at `addr` announces, with telephone-event as payload type `pt` when given.
fn with_te(addr: SocketAddr, pt: Option<u8>) -> Stream {
    Stream {
        telephone_event: pt.map(|pt| (pt, 8000)),
        ..stream(addr)
    }
}

/// An RFC 4733 packet: payload type `pt`, `seq`, the press's timestamp `ts`, event `ev`, end
/// bit, duration (8 kHz units).
fn telephone_event(pt: u8, seq: u16, ts: u32, ev: u8, end: bool, duration: u16) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0xfeed_beefu32.to_be_bytes());
    p.extend_from_slice(&[ev, if end { 0x80 | 10 } else { 10 }]);
    p.extend_from_slice(&duration.to_be_bytes());
    p
}

#[tokio::test]
async fn dtmf_crosses_with_the_far_sides_payload_type_and_is_in_the_report() {
    let OneCall {
        mut relay,
        mut events,
        carrier,
        buyer,
        id,
        dce_a,
        dce_b,
    } = one_call(32200).await;
    // the carrier offers telephone-event as 101, the buyer answers it as 96
    relay.set_remote(
        id,
        Side::A,
        &[with_te(carrier.local_addr().unwrap(), Some(101))],
    );
    relay.set_remote(
        id,
        Side::B,
        &[with_te(buyer.local_addr().unwrap(), Some(96))],
    );
    relay.answered(id);
    relay.flush();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // "1" held 100 ms then "#" held 60 ms, each end sent three times; a voice packet between
    let mut sent = Vec::new();
    let mut seq = 1;
    for (ts, ev, steps) in [(8000u32, 1u8, 5u16), (16000, 11, 3)] {
        for k in 1..=steps {
            let end = k == steps;
            for _ in 0..if end { 3 } else { 1 } {
                sent.push(telephone_event(101, seq, ts, ev, end, 160 * k));
                seq += 1;
            }
        }
        sent.push(rtp_packet(0, seq, ts + 2000, 0xfeed_beef, 160));
        seq += 1;
    }
    for p in &sent {
        carrier.send_to(p, dce_a).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < sent.len() {
        let (len, _) = tokio::time::timeout(Duration::from_secs(2), buyer.recv_from(&mut buf))
            .await
            .expect("every packet crosses DCE")
            .unwrap();
        got.push(buf[..len].to_vec());
    }
    for (s, g) in sent.iter().zip(&got) {
        if s[1] & 0x7f == 101 {
            assert_eq!(
                g[1] & 0x7f,
                96,
                "an event leaves as the buyer's payload type"
            );
            assert_eq!(s[2..], g[2..], "and nothing else of it changes");
        } else {
            assert_eq!(s, g, "voice is untouched");
        }
    }
    // the buyer presses "5": it reaches the carrier as 101
    buyer
        .send_to(&telephone_event(96, 900, 40000, 5, true, 400), dce_b)
        .await
        .unwrap();
    let (len, _) = tokio::time::timeout(Duration::from_secs(2), carrier.recv_from(&mut buf))
        .await
        .expect("the buyer's digit crosses DCE")
        .unwrap();
    assert_eq!((len, buf[1] & 0x7f, buf[12]), (16, 101, 5));
    relay.close(id);
    relay.flush();
    let report = closed(&mut events).await;
    let digits = |d: &[dce_media::dtmf::Digit]| -> Vec<(char, u32)> {
        d.iter().map(|d| (d.digit, d.duration_ms)).collect()
    };
    assert_eq!(digits(&report.dtmf_from_carrier), [('1', 100), ('#', 60)]);
    assert_eq!(digits(&report.dtmf_from_buyer), [('5', 50)]);
}

#[tokio::test]
async fn dce_plays_a_digit_as_rfc_4733_in_the_relayed_stream_without_breaking_its_sequence() {
    let OneCall {
        mut relay,
        mut events,
        carrier,
        buyer,
        id,
        dce_b,
        ..
    } = one_call(32300).await;
    // the buyer announced no telephone-event: nothing can be played to it
    relay.set_remote(
        id,
        Side::A,
        &[with_te(carrier.local_addr().unwrap(), Some(101))],
    );
    relay.set_remote(id, Side::B, &[with_te(buyer.local_addr().unwrap(), None)]);
    assert!(!relay.send_dtmf(id, Side::B, '1', 100));
    assert!(!relay.send_dtmf(id, Side::A, 'x', 100), "not a DTMF digit");
    relay.answered(id);
    relay.flush();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut buf = [0u8; 2048];
    let recv = |n: usize| {
        let carrier = &carrier;
        async move {
            let mut got = Vec::new();
            while got.len() < n {
                let (len, _) =
                    tokio::time::timeout(Duration::from_secs(2), carrier.recv_from(&mut buf))
                        .await
                        .expect("the carrier hears DCE")
                        .unwrap();
                got.push(buf[..len].to_vec());
            }
            got
        }
    };
    let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
    let ts = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    let ssrc = |p: &[u8]| u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
    // the buyer talks: seq 100–104, 20 ms apart
    for i in 0..5u16 {
        buyer
            .send_to(
                &rtp_packet(8, 100 + i, 160 * u32::from(i), 0xabcd, 160),
                dce_b,
            )
            .await
            .unwrap();
    }
    let audio = recv(5).await;
    assert_eq!(seq(&audio[4]), 104);
    // an INFO from the buyer: "7" for 120 ms, played to the carrier
    assert!(relay.send_dtmf(id, Side::A, '7', 120));
    relay.flush();
    let events_in = recv(5).await;
    let durations: Vec<u16> = events_in
        .iter()
        .map(|p| u16::from_be_bytes([p[14], p[15]]))
        .collect();
    assert_eq!(
        durations,
        [400, 800, 960, 960, 960],
        "50 ms updates, the end three times"
    );
    for (k, p) in events_in.iter().enumerate() {
        assert_eq!(
            p[1] & 0x7f,
            101,
            "the carrier's telephone-event payload type"
        );
        assert_eq!(p[1] & 0x80 != 0, k == 0, "the marker on the first only");
        assert_eq!(p[12], 7);
        assert_eq!(p[13] & 0x80 != 0, k >= 2, "the end bit on the last three");
        assert_eq!(ssrc(p), 0xabcd, "in the relayed stream");
        assert_eq!(seq(p), 105 + k as u16, "its sequence continues");
        assert_eq!(ts(p), ts(&events_in[0]), "one timestamp per event");
    }
    assert!(
        ts(&events_in[0]) >= ts(&audio[4]),
        "the event starts after the audio"
    );
    // the buyer's next packet leaves with its sequence moved past DCE's five
    buyer
        .send_to(&rtp_packet(8, 105, 800, 0xabcd, 160), dce_b)
        .await
        .unwrap();
    let next = recv(1).await;
    assert_eq!((seq(&next[0]), ssrc(&next[0])), (110, 0xabcd));
    relay.close(id);
    relay.flush();
    let report = closed(&mut events).await;
    let d: Vec<(char, u32)> = report
        .dtmf_from_buyer
        .iter()
        .map(|d| (d.digit, d.duration_ms))
        .collect();
    assert_eq!(d, [('7', 120)], "the buyer's INFO digit is the buyer's");
    assert_eq!(report.to_carrier, 11, "5 audio + 5 events + 1 audio");
}

#[tokio::test]
async fn a_recorded_call_is_one_stereo_wav_caller_left_buyer_right_reported_when_complete() {
    let dir = std::env::temp_dir().join(format!("dce-relay-rec-{}", std::process::id()));
    let path = dir.join("2026-12-04").join("call.wav");
    let OneCall {
        mut relay,
        mut events,
        carrier,
        buyer,
        id,
        dce_a,
        dce_b,
    } = one_call(32400).await;
    relay.set_remote(id, Side::A, &[stream(carrier.local_addr().unwrap())]);
    relay.set_remote(id, Side::B, &[stream(buyer.local_addr().unwrap())]);
    relay.answered(id);
    relay.record(id, path.clone());
    relay.flush();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // 1 s each way, 20 ms packets: the carrier's μ-law 0x00 (-32124), the buyer's 0xff (0)
    // alternating with 0x80 (32124) packets, so each channel's content is known
    for i in 0..50u16 {
        let mut c = rtp_packet(0, i, 160 * u32::from(i), 1, 160);
        c[12..].fill(0x00);
        carrier.send_to(&c, dce_a).await.unwrap();
        let mut b = rtp_packet(0, i, 500_000 + 160 * u32::from(i), 2, 160);
        b[12..].fill(if i % 2 == 0 { 0xff } else { 0x80 });
        buyer.send_to(&b, dce_b).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.close(id);
    relay.flush();
    let report = closed(&mut events).await;
    let (got_path, secs) = report.recording.clone().expect("the recording is reported");
    assert_eq!(got_path, path);
    assert!((0.95..1.2).contains(&secs), "{secs} s");
    let b = std::fs::read(&path).unwrap();
    assert_eq!(&b[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([b[22], b[23]]), 2, "stereo");
    let frames: Vec<[i16; 2]> = b[44..]
        .chunks(4)
        .map(|c| {
            [
                i16::from_le_bytes([c[0], c[1]]),
                i16::from_le_bytes([c[2], c[3]]),
            ]
        })
        .collect();
    let left = frames.iter().filter(|f| f[0] == -32124).count();
    let right_loud = frames.iter().filter(|f| f[1] == 32124).count();
    assert!(left >= 49 * 160, "the carrier's audio on the left: {left}");
    assert!(
        (24 * 160..=25 * 160).contains(&right_loud),
        "the buyer's loud packets on the right: {right_loud}"
    );
    assert!(
        frames.iter().all(|f| f[0] == -32124 || f[0] == 0),
        "nothing else on the left"
    );
    assert_eq!(report.recording_dropped, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
