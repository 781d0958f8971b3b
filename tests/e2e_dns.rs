//! Buyers by host name, end to end (issue #13, item 1): the real `dce` binary pointed by
//! `[dns] servers` at a DNS server on loopback (`support::dns`) that serves NAPTR → SRV → A for
//! `buyer.test` with two SRV targets, SIPp as carrier and as those targets. Calls reach the
//! first target; when it stops answering they fail over to the second within one attempt;
//! when the record's TTL passes and the record changes, new calls follow it. A buyer whose
//! host never resolves is `excluded:dns`, and the call goes on.

mod support;

use support::dce_process::{free_port, jsonl_cdrs, outcomes, Dce};
use support::dns::{buyer_zone, DnsServer};
use support::sipp::{self, Background};

fn config(port: u16, dir: &std::path::Path, dns: std::net::SocketAddr, http: u16) -> String {
    format!(
        "[node]\nid = \"dns\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\ntarget_timeout_ms = 600\n\
         [dns]\nservers = [\"{dns}\"]\ntimeout_ms = 300\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{}\", role = \"read\" }}]\n\
         [media]\nport_min = 43000\nport_max = 43999\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
         [[buyer]]\nid = \"ghost\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@nowhere.test\"\nbid_cents = 1000\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@buyer.test\"\nbid_cents = 900\n",
        support::http::OPS_SHA,
        dir.join("cdr.jsonl").display(),
    )
}

/// One call from the SIPp carrier; asserts it connected.
fn call(bin: &std::path::PathBuf, dce: &Dce, what: &str) {
    let (ok, out) = sipp::carrier(
        bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "100"],
    );
    assert!(
        ok,
        "{what}: carrier sipp failed:\n{out}\nDCE log:\n{}",
        dce.log()
    );
}

fn uas(bin: &std::path::PathBuf, port: u16) -> Background {
    Background::start(
        bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), port, &["-m", "1"]),
    )
}

#[test]
fn srv_targets_fail_over_within_the_attempt_and_follow_a_changed_record() {
    let Some(bin) = sipp::sipp() else {
        return;
    };
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let dns = DnsServer::start(buyer_zone("buyer.test", &[pa, pb], 2));
    let http = free_port();
    let dce = Dce::start_with(|port, dir| config(port, dir, dns.addr, http));

    // The API shows what the resolver found: both targets for acme, nothing for ghost.
    let buyers = support::http::get_json(http, "/v1/buyers", support::http::OPS_KEY);
    let view = |id: &str| {
        buyers["buyers"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no buyer {id} in {buyers}"))
    };
    let acme = view("acme");
    assert_eq!(acme["dns"]["status"], "ok", "{acme}");
    assert_eq!(acme["dns"]["via"], "naptr", "{acme}");
    let targets = acme["dns"]["targets"].to_string();
    assert!(
        targets.contains(&format!("127.0.0.1:{pa}"))
            && targets.contains(&format!("127.0.0.1:{pb}")),
        "{acme}"
    );
    assert_eq!(view("ghost")["dns"]["status"], "failed", "{buyers}");

    // 1. The priority-10 target answers.
    let a = uas(&bin, pa);
    call(&bin, &dce, "first target");
    let (aok, aout) = a.finish(20);
    assert!(aok, "first target sipp:\n{aout}");

    // 2. It is gone: the attempt moves to the priority-20 target after target_timeout_ms.
    let b = uas(&bin, pb);
    call(&bin, &dce, "failover");
    let (bok, bout) = b.finish(20);
    assert!(bok, "second target sipp:\n{bout}\nDCE log:\n{}", dce.log());
    assert!(
        dce.log().contains("trying its next target"),
        "{}",
        dce.log()
    );

    // 3. The record changes (TTL 2 s): once refreshed, calls go to the new target only.
    dns.set(buyer_zone("buyer.test", &[pc], 2));
    dce.wait_for_log(
        &format!("127.0.0.1:{pc}"),
        std::time::Duration::from_secs(10),
    );
    let c = uas(&bin, pc);
    call(&bin, &dce, "changed record");
    let (cok, cout) = c.finish(20);
    assert!(cok, "new target sipp:\n{cout}\nDCE log:\n{}", dce.log());

    let metrics = support::http::get_text(http, "/metrics");
    assert!(
        metrics.contains("dce_dns_targets{host=\"buyer.test\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dce_dns_targets{host=\"nowhere.test\"} 0"),
        "{metrics}"
    );

    let (_, log, dir) = dce.stop_keep();
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), 3, "{cdrs:?}\n{log}");
    for cdr in &cdrs {
        assert_eq!(cdr["disposition"], "answered", "{cdr}");
        assert_eq!(
            outcomes(cdr),
            ["ghost=excluded:dns".to_string(), "acme=won".to_string()],
            "one attempt per call, the unresolved buyer excluded: {cdr}"
        );
    }
    assert_eq!(
        support::dce_process::counter(&log, "buyer_target_failover"),
        1,
        "{log}"
    );
}
