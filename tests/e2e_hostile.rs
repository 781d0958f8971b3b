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
