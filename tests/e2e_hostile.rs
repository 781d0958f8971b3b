//! End-to-end: the real `dce` binary against hostile callers, with raw UDP sockets as the
//! carrier and as the buyer (so the test sees exactly what reaches the buyer).

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use support::dce_process::Dce;

fn config(port: u16, dir: &std::path::Path, buyer: u16) -> String {
    format!(
        "[node]\nid = \"e2e\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\nring_timeout_s = 2\nmax_attempts = 1\n\
         [cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\ntcpa_hours = false\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{buyer}\"\nbid_cents = 100\n",
        dir.join("cdr.jsonl").display()
    )
}

/// Everything that arrives on `sock` within `wait`.
fn receive_all(sock: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    let end = Instant::now() + wait;
    let mut buf = vec![0u8; 65_535];
    let mut got = Vec::new();
    while Instant::now() < end {
        sock.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert!(from.ip().is_loopback());
                got.push(buf[..n].to_vec());
            }
            Err(_) => break,
        }
    }
    got
}

#[test]
fn a_40000_character_caller_never_reaches_the_buyer_as_is() {
    let buyer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let buyer_port = buyer.local_addr().unwrap().port();
    let dce = Dce::start_with(|port, dir| config(port, dir, buyer_port));
    let carrier = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cport = carrier.local_addr().unwrap().port();
    let huge = "a".repeat(40_000);
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sip:+18005550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{cport};branch=z9hG4bKhuge1;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:{huge}@127.0.0.1>;tag=h1\r\nTo: <sip:+18005550100@127.0.0.1>\r\nCall-ID: huge-caller-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:c@127.0.0.1:{cport}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    assert!(
        invite.len() > 40_000 && invite.len() < 65_000,
        "one datagram"
    );
    let dce_addr: SocketAddr = dce.sip;
    carrier.send_to(invite.as_bytes(), dce_addr).unwrap();
    let at_buyer = receive_all(&buyer, Duration::from_secs(2));
    let invites: Vec<String> = at_buyer
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .filter(|s| s.starts_with("INVITE "))
        .collect();
    assert!(!invites.is_empty(), "the call reached the buyer");
    for inv in &invites {
        assert!(inv.len() <= 1300, "a UDP request of {} bytes", inv.len());
        assert!(!inv.contains(&"a".repeat(65)), "the caller was not cut");
        let from = inv
            .lines()
            .find(|l| l.starts_with("From:"))
            .expect("a From");
        let user = from
            .split("sip:")
            .nth(1)
            .and_then(|r| r.split('@').next())
            .unwrap();
        assert_eq!(user.len(), 64, "{from}");
    }
    // The buyer never answers; the ring timeout ends the call (480) and the CDR is bounded.
    let at_carrier = receive_all(&carrier, Duration::from_secs(4));
    assert!(
        at_carrier.iter().any(|b| b.starts_with(b"SIP/2.0 480 ")),
        "the carrier got its final answer"
    );
    let ack = format!(
        "ACK sip:+18005550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{cport};branch=z9hG4bKhuge1;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:x@127.0.0.1>;tag=h1\r\nTo: <sip:+18005550100@127.0.0.1>\r\nCall-ID: huge-caller-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    carrier.send_to(ack.as_bytes(), dce_addr).unwrap();
    let dir = dce.dir().to_path_buf();
    let (clean, log, _keep) = dce.stop_keep();
    assert!(clean, "dce exited cleanly: {log}");
    assert!(
        !log.contains(&"a".repeat(65)),
        "the caller reached the log whole"
    );
    let cdrs = support::dce_process::jsonl_cdrs(&dir);
    assert_eq!(cdrs.len(), 1);
    assert_eq!(cdrs[0]["caller"].as_str().unwrap().len(), 64);
}

fn sdp_port(msg: &[u8]) -> u16 {
    let s = String::from_utf8_lossy(msg);
    let line = s
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .unwrap_or_else(|| panic!("no m= line in {s}"));
    line[8..].split(' ').next().unwrap().parse().unwrap()
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim())
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

fn rtp(seq: u16, ssrc: u32, mark: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(mark, 160));
    p
}

/// Payload marks of the RTP that arrives on `sock` within `wait`.
fn marks(sock: &UdpSocket, wait: Duration) -> Vec<u8> {
    receive_all(sock, wait)
        .iter()
        .filter(|p| p.len() > 12)
        .map(|p| p[12])
        .collect()
}

#[test]
fn an_rtp_sprayer_on_the_signalled_ip_never_reaches_a_party_before_or_during_a_call() {
    let buyer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let buyer_port = buyer.local_addr().unwrap().port();
    let dce = Dce::start_with(|port, dir| config(port, dir, buyer_port));
    let carrier = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cport = carrier.local_addr().unwrap().port();
    let carrier_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let buyer_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Same IP as both parties (127.0.0.1), another port: the CVE-2025-53399 class.
    let sprayer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (crtp, brtp) = (
        carrier_rtp.local_addr().unwrap().port(),
        buyer_rtp.local_addr().unwrap().port(),
    );
    let sdp = |port: u16| {
        format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n")
    };
    let offer = sdp(crtp);
    let invite = format!(
        "INVITE sip:+18005550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{cport};branch=z9hG4bKspray1;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:+13105551234@127.0.0.1>;tag=s1\r\nTo: <sip:+18005550100@127.0.0.1>\r\nCall-ID: spray-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:c@127.0.0.1:{cport}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        offer.len()
    );
    carrier.send_to(invite.as_bytes(), dce.sip).unwrap();
    // The buyer gets DCE's offer and answers with its own SDP.
    let inv = receive_all(&buyer, Duration::from_millis(1500))
        .into_iter()
        .find(|m| m.starts_with(b"INVITE "))
        .expect("buyer INVITE");
    let dce_b = sdp_port(&inv);
    let inv_s = String::from_utf8_lossy(&inv).into_owned();
    let answer = sdp(brtp);
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=bt1\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:b@127.0.0.1:{buyer_port}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
        header(&inv_s, "Via:"),
        header(&inv_s, "From:"),
        header(&inv_s, "To:"),
        header(&inv_s, "Call-ID:"),
        answer.len()
    );
    buyer.send_to(ok.as_bytes(), dce.sip).unwrap();
    let ok_a = receive_all(&carrier, Duration::from_millis(1500))
        .into_iter()
        .find(|m| m.starts_with(b"SIP/2.0 200 "))
        .expect("200 to the carrier");
    let dce_a = sdp_port(&ok_a);
    let ok_s = String::from_utf8_lossy(&ok_a).into_owned();
    let ack = format!(
        "ACK sip:dce@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{cport};branch=z9hG4bKspray2;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:+13105551234@127.0.0.1>;tag=s1\r\nTo: {}\r\nCall-ID: spray-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&ok_s, "To:")
    );
    carrier.send_to(ack.as_bytes(), dce.sip).unwrap();
    let spray = |seq0: u16| {
        for i in 0..20u16 {
            for port in [dce_a, dce_a + 1, dce_b, dce_b + 1] {
                sprayer
                    .send_to(&rtp(seq0 + i, 0xBAD, 0xEE), ("127.0.0.1", port))
                    .unwrap();
            }
        }
    };
    // Before either party has sent a packet.
    spray(1000);
    assert!(marks(&carrier_rtp, Duration::from_millis(500)).is_empty());
    assert!(marks(&buyer_rtp, Duration::from_millis(100)).is_empty());
    // The parties talk; the sprayer sprays again during the call.
    for i in 0..20u16 {
        carrier_rtp
            .send_to(&rtp(i, 0xA, 0xAA), ("127.0.0.1", dce_a))
            .unwrap();
        buyer_rtp
            .send_to(&rtp(i, 0xB, 0xBB), ("127.0.0.1", dce_b))
            .unwrap();
    }
    spray(2000);
    let (at_buyer, at_carrier) = (
        marks(&buyer_rtp, Duration::from_millis(800)),
        marks(&carrier_rtp, Duration::from_millis(300)),
    );
    assert_eq!(at_buyer.len(), 20, "the carrier's packets reach the buyer");
    assert!(at_buyer.iter().all(|m| *m == 0xAA), "{at_buyer:?}");
    assert_eq!(
        at_carrier.len(),
        20,
        "the buyer's packets reach the carrier"
    );
    assert!(at_carrier.iter().all(|m| *m == 0xBB), "{at_carrier:?}");
    assert!(
        receive_all(&sprayer, Duration::from_millis(200)).is_empty(),
        "nothing is echoed to the sprayer"
    );
    let bye = format!(
        "BYE sip:dce@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{cport};branch=z9hG4bKspray3;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:+13105551234@127.0.0.1>;tag=s1\r\nTo: {}\r\nCall-ID: spray-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        header(&ok_s, "To:")
    );
    carrier.send_to(bye.as_bytes(), dce.sip).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let dir = dce.dir().to_path_buf();
    let (clean, log, _keep) = dce.stop_keep();
    assert!(clean, "{log}");
    let cdrs = support::dce_process::jsonl_cdrs(&dir);
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!(cdrs[0]["disposition"], "answered");
}
