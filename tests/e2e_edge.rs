//! End-to-end: the real `dce` binary on loopback, driven with raw UDP and TCP sockets.
//! Every torture message gets its pinned answer over both transports, DCE keeps answering
//! OPTIONS afterwards, and the TCP limits (framing, size, idle, per-IP) hold.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use support::dce_process::Dce;
use support::{expect_tcp, expectations, load_corpus, status_code, tx_key, via_port, Expect};

/// The loopback address this test file sends from when it needs a fixed one (unique among the
/// test files, so parallel test processes never share a port).
const SRC_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 50);

fn options(via: &str, call_id: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:probe@127.0.0.50>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Final status code of what arrives on `sock` within `wait`, 1xx skipped.
fn udp_final(sock: &UdpSocket, wait: Duration) -> Expect {
    let end = Instant::now() + wait;
    let mut buf = vec![0u8; 65535];
    while Instant::now() < end {
        sock.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert!(from.ip().is_loopback());
                if let Some(code) = status_code(&buf[..n]) {
                    if code >= 200 {
                        return Expect::Code(code);
                    }
                }
            }
            Err(_) => break,
        }
    }
    Expect::Silence
}

/// Final status code read from a TCP stream within `wait`, and whether the peer closed it.
fn tcp_final(stream: &mut TcpStream, wait: Duration) -> (Expect, bool) {
    let end = Instant::now() + wait;
    let mut acc = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        stream
            .set_read_timeout(Some(
                end.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (Expect::Silence, true),
            Ok(n) => {
                acc.extend_from_slice(&buf[..n]);
                // walk the responses in the buffer
                let text = String::from_utf8_lossy(&acc).to_string();
                for part in text.split("SIP/2.0 ").skip(1) {
                    if let Some(code) = part.get(..3).and_then(|c| c.parse::<u16>().ok()) {
                        if code >= 200 {
                            return (Expect::Code(code), false);
                        }
                    }
                }
            }
            Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (Expect::Silence, true)
            }
            Err(_) => break,
        }
    }
    (Expect::Silence, false)
}

#[test]
fn torture_corpus_over_udp_and_tcp_then_options_still_answered() {
    let Some(cases) = load_corpus() else { return };
    const CONFIG: &str = "tcp_idle_timeout_s = 2\ntcp_max_connections_per_ip = 500";
    let mut dce = Dce::start(CONFIG);
    let expected = expectations();
    let mut wrong = Vec::new();
    let mut udp_log = String::new();
    let mut keys = std::collections::HashSet::new();

    // UDP: send from the Via's port, which is where §18.2.2 sends the answer, each case from
    // its own loopback address so one case's retransmitted answers never reach the next.
    for (i, case) in cases.iter().enumerate() {
        if let Some(key) = tx_key(&case.wire) {
            if !keys.insert(key) {
                // The corpus reuses this branch and sent-by: on a live process it would match
                // the earlier transaction. Start afresh for it.
                let (ok, log) = dce.stop();
                assert!(ok, "dce exits 0 on SIGTERM; log:\n{log}");
                udp_log.push_str(&log);
                dce = Dce::start(CONFIG);
                keys.clear();
                keys.insert(tx_key(&case.wire).unwrap_or_default());
            }
        }
        let port = via_port(&case.wire);
        let ip = Ipv4Addr::new(127, 0, 51, i as u8 + 1);
        let sock = UdpSocket::bind(SocketAddr::from((ip, port)))
            .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
        sock.send_to(&case.wire, dce.sip).unwrap();
        let want = expected[case.file.as_str()];
        let wait = if want == Expect::Silence {
            Duration::from_millis(400)
        } else {
            Duration::from_secs(3)
        };
        let got = udp_final(&sock, wait);
        if got != want {
            wrong.push(format!("UDP {}: got {got:?}, want {want:?}", case.file));
        }
    }

    // TCP against a fresh process: the corpus reuses branches and sent-bys, so on the same
    // process the UDP run's transactions would (rightly) absorb these as retransmissions.
    let (ok, log) = dce.stop();
    assert!(ok, "dce exits 0 on SIGTERM; log:\n{log}");
    udp_log.push_str(&log);
    let dce = Dce::start(CONFIG);
    // TCP: every case on its own connection, in parallel (some wait for the idle reaper).
    let handles: Vec<_> = cases
        .iter()
        .map(|case| {
            let wire = case.wire.clone();
            let file = case.file.clone();
            let addr = dce.sip;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(&wire).expect("write");
                let want = expect_tcp(&file);
                let wait = if want == Expect::Silence {
                    Duration::from_secs(5)
                } else {
                    Duration::from_secs(3)
                };
                let (got, closed) = tcp_final(&mut s, wait);
                (file, want, got, closed)
            })
        })
        .collect();
    for h in handles {
        let (file, want, got, closed) = h.join().expect("tcp thread");
        if got != want {
            wrong.push(format!("TCP {file}: got {got:?}, want {want:?}"));
        }
        // Unframeable or never-completed streams must be closed by DCE, not left open.
        if matches!(
            file.as_str(),
            "ncl.dat" | "clerr.dat" | "baddn.dat" | "mcl01.dat" | "inv2543.dat"
        ) && !closed
        {
            wrong.push(format!("TCP {file}: connection not closed"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Still alive: OPTIONS over UDP (rport) and TCP.
    let sock = UdpSocket::bind((SRC_IP, 0)).unwrap();
    sock.send_to(
        &options(
            "SIP/2.0/UDP 127.0.0.50:9;branch=z9hG4bKafter;rport",
            "after-udp",
        ),
        dce.sip,
    )
    .unwrap();
    assert_eq!(udp_final(&sock, Duration::from_secs(3)), Expect::Code(200));
    let mut s = TcpStream::connect(dce.sip).unwrap();
    s.write_all(&options(
        "SIP/2.0/TCP 127.0.0.50:9;branch=z9hG4bKafter2",
        "after-tcp",
    ))
    .unwrap();
    assert_eq!(
        tcp_final(&mut s, Duration::from_secs(3)).0,
        Expect::Code(200)
    );

    let (ok, tcp_log) = dce.stop();
    assert!(ok, "dce exits 0 on SIGTERM; log:\n{tcp_log}");
    let log = format!("{udp_log}{tcp_log}");
    // Sum the final counter reports of every UDP-phase process.
    let counters: String = udp_log
        .lines()
        .filter(|l| l.contains("stopped"))
        .collect::<Vec<_>>()
        .join(" ");
    let tcp_counters = tcp_log
        .lines()
        .rev()
        .find(|l| l.contains("stopped"))
        .expect("final counter report");
    for name in [
        "rejected_400_malformed=",
        "rejected_505_version=1",
        "rejected_416_scheme=",
        "rejected_420_require=",
        "rejected_483_max_forwards=",
        "rejected_501_unknown_method=",
        "rejected_405_method=",
        "dropped_malformed_response=",
    ] {
        assert!(counters.contains(name), "{name} missing from {counters}");
    }
    for name in ["tcp_closed_framing=", "tcp_closed_idle="] {
        assert!(
            tcp_counters.contains(name),
            "{name} missing from {tcp_counters}"
        );
    }
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn tcp_limits_framing_keepalive_and_size() {
    let dce = Dce::start(
        "tcp_idle_timeout_s = 1\ntcp_max_connections_per_ip = 3\nmax_message_bytes = 2048",
    );

    // CRLF CRLF keep-alive gets a CRLF pong (RFC 5626 §3.5.1) and the connection stays usable.
    let mut a = TcpStream::connect(dce.sip).unwrap();
    a.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    a.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    a.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    a.write_all(&options("SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKka", "ka"))
        .unwrap();
    assert_eq!(
        tcp_final(&mut a, Duration::from_secs(3)).0,
        Expect::Code(200)
    );

    // Per-IP limit: 3 allowed, the 4th is closed at once.
    let b = TcpStream::connect(dce.sip).unwrap();
    let c = TcpStream::connect(dce.sip).unwrap();
    let mut d = TcpStream::connect(dce.sip).unwrap();
    let (_, closed) = tcp_final(&mut d, Duration::from_millis(800));
    assert!(closed, "fourth connection from one IP must be refused");
    drop((b, c));

    // Idle: a silent connection is reaped.
    let mut e = loop {
        // slots free up once DCE notices the drops
        let mut s = TcpStream::connect(dce.sip).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut probe = [0u8; 1];
        match s.read(&mut probe) {
            Ok(0) => std::thread::sleep(Duration::from_millis(100)),
            _ => break s,
        }
    };
    let started = Instant::now();
    let (_, closed) = tcp_final(&mut e, Duration::from_secs(4));
    assert!(
        closed && started.elapsed() >= Duration::from_millis(500),
        "idle connection reaped"
    );

    // No Content-Length on a stream: connection closed, nothing answered.
    let mut f = TcpStream::connect(dce.sip).unwrap();
    let mut no_cl = options("SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKncl", "ncl");
    let text = String::from_utf8(no_cl.clone())
        .unwrap()
        .replace("Content-Length: 0\r\n", "");
    no_cl = text.into_bytes();
    f.write_all(&no_cl).unwrap();
    assert_eq!(
        tcp_final(&mut f, Duration::from_secs(3)),
        (Expect::Silence, true)
    );

    // Over the size limit: closed over TCP, dropped over UDP.
    let mut g = TcpStream::connect(dce.sip).unwrap();
    let mut big = options("SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKbig", "big");
    let pad = format!("X-Pad: {}\r\n", "a".repeat(3000));
    let pos = big.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    big.splice(pos..pos, pad.bytes());
    g.write_all(&big).unwrap();
    assert_eq!(
        tcp_final(&mut g, Duration::from_secs(3)),
        (Expect::Silence, true)
    );
    let u = UdpSocket::bind((SRC_IP, 0)).unwrap();
    let mut big_udp = options("SIP/2.0/UDP 127.0.0.50:9;branch=z9hG4bKbigu;rport", "bigu");
    big_udp.splice(pos..pos, pad.bytes());
    u.send_to(&big_udp, dce.sip).unwrap();
    assert_eq!(udp_final(&u, Duration::from_millis(500)), Expect::Silence);

    let (ok, log) = dce.stop();
    assert!(ok);
    let counters = log.lines().rev().find(|l| l.contains("stopped")).unwrap();
    assert!(counters.contains("tcp_refused_limit="), "{counters}");
    assert!(counters.contains("dropped_oversize=1"), "{counters}");
    assert!(counters.contains("tcp_closed_idle="), "{counters}");
}
