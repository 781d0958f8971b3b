//! IPv6 end to end (issue #13, item 8): the real `dce` binary on `[::1]` with
//! `advertised_host = "::1"` written bare, SIPp as carrier and buyers on `::1`. One buyer is
//! found through SRV and an AAAA record from a DNS server on loopback, the other is an IPv6
//! literal; calls connect through both.

mod support;

use support::dce_process::{free_port, jsonl_cdrs, outcomes, Dce};
use support::dns::{DnsServer, Rec};
use support::sipp;

fn v6_args(scenario: &std::path::Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a = sipp::args(scenario, port, extra);
    if let Some(i) = a.iter().position(|x| x == "127.0.0.1") {
        a[i] = "::1".into();
    }
    a
}

#[test]
fn calls_cross_dce_over_ipv6_to_an_aaaa_target_and_a_literal() {
    let Some(bin) = sipp::sipp() else {
        return;
    };
    let (pa, pb) = (free_port(), free_port());
    let dns = DnsServer::start(vec![
        (
            "_sip._udp.v6.test".into(),
            Rec::Srv(10, 10, pa, "host.v6.test".into()),
            60,
        ),
        (
            "host.v6.test".into(),
            Rec::Aaaa(std::net::Ipv6Addr::LOCALHOST),
            60,
        ),
    ]);
    let dce = Dce::start_with(|port, dir| {
        format!(
            "[node]\nid = \"v6\"\n[sip]\nlisten = [\"udp://[::1]:{port}\"]\nadvertised_host = \"::1\"\nring_timeout_s = 2\n\
             [dns]\nservers = [\"{}\"]\n\
             [media]\nbind_ip = \"::1\"\nport_min = 44000\nport_max = 44999\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [cdr]\njsonl_path = \"{}\"\n\
             [[carrier]]\nid = \"carrier-6\"\nsources = [\"::1/128\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
             [[buyer]]\nid = \"named\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@v6.test\"\nbid_cents = 900\n\
             [[buyer]]\nid = \"literal\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@[::1]:{pb}\"\nbid_cents = 100\n",
            dns.addr,
            dir.join("cdr.jsonl").display()
        )
    });
    let dce_addr = format!("[::1]:{}", dce.sip.port());
    let carrier = |what: &str| {
        let mut a = v6_args(
            &sipp::scenario("uac_call.xml"),
            free_port(),
            &["-s", "+18005550100", "-m", "1", "-d", "100"],
        );
        a.push(dce_addr.clone());
        let out = sipp::run(&bin, &a);
        assert!(
            out.status.success(),
            "{what}: carrier sipp failed:\n{}{}\nDCE log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            dce.log()
        );
    };
    // 1. The AAAA target answers.
    let named = sipp::Background::start(
        &bin,
        &v6_args(&sipp::scenario("uas_answer.xml"), pa, &["-m", "1"]),
    );
    carrier("AAAA target");
    let (ok, out) = named.finish(20);
    assert!(ok, "named buyer sipp:\n{out}\nDCE log:\n{}", dce.log());
    // 2. It is gone: its attempt rings out, the literal takes the call.
    let literal = sipp::Background::start(
        &bin,
        &v6_args(&sipp::scenario("uas_answer.xml"), pb, &["-m", "1"]),
    );
    carrier("IPv6 literal");
    let (ok, out) = literal.finish(20);
    assert!(ok, "literal buyer sipp:\n{out}\nDCE log:\n{}", dce.log());
    let (_, log, dir) = dce.stop_keep();
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), 2, "{cdrs:?}\n{log}");
    assert_eq!(
        outcomes(&cdrs[0]),
        ["named=won", "literal=lost"],
        "{}",
        cdrs[0]
    );
    assert_eq!(
        outcomes(&cdrs[1]),
        ["named=attempted:ring_timeout", "literal=won"],
        "{}",
        cdrs[1]
    );
    assert!(!log.contains("no Via with a branch"), "{log}");
}
