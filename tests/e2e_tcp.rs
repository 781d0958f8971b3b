//! TCP towards buyers and from carriers (issue #13, item 2): the real `dce` binary with SIPp
//! over TCP (`-t t1`) as the buyer trunk and as the carrier. Calls connect and hang up from
//! either end; DCE opens one connection to the buyer and reuses it for every call; a buyer
//! that refuses the connection is given up at once (no ring timeout) for the next bidder.

mod support;

use support::dce_process::{counter, free_port, jsonl_cdrs, outcomes, Dce};
use support::sipp::{self, Background};

fn tcp(mut args: Vec<String>) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == "u1") {
        args[i] = "t1".into();
    }
    args
}

fn config(port: u16, dir: &std::path::Path, acme: u16, bravo: u16) -> String {
    format!(
        "[node]\nid = \"tcp\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\", \"tcp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\nring_timeout_s = 15\n\
         [media]\nport_min = 46000\nport_max = 46999\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{acme};transport=tcp\"\nbid_cents = 900\n\
         [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 100\n",
        dir.join("cdr.jsonl").display(),
    )
}

#[test]
fn calls_to_a_tcp_buyer_share_one_connection_and_hang_up_from_both_ends() {
    let Some(bin) = sipp::sipp() else {
        return;
    };
    let (acme, bravo) = (free_port(), free_port());
    let dce = Dce::start_with(|port, dir| config(port, dir, acme, bravo));
    // 1. Three calls from a UDP carrier; the carrier hangs up. One TCP connection.
    let buyer = Background::start(
        &bin,
        &tcp(sipp::args(
            &sipp::scenario("uas_answer.xml"),
            acme,
            &["-m", "3"],
        )),
    );
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "3", "-l", "1", "-d", "100"],
    );
    assert!(ok, "carrier:\n{out}\nDCE log:\n{}", dce.log());
    let (bok, bout) = buyer.finish(20);
    assert!(bok, "TCP buyer:\n{bout}\nDCE log:\n{}", dce.log());

    // 2. A TCP carrier; this time the buyer hangs up (its BYE comes over TCP).
    let buyer = Background::start(
        &bin,
        &tcp(sipp::args(
            &sipp::scenario("uas_answer_bye.xml"),
            acme,
            &["-m", "1"],
        )),
    );
    let mut args = tcp(sipp::args(
        &sipp::scenario("uac_wait_bye.xml"),
        free_port(),
        &["-s", "+18005550100", "-m", "1"],
    ));
    args.push(dce.sip.to_string());
    let out = sipp::run(&bin, &args);
    assert!(
        out.status.success(),
        "TCP carrier:\n{}{}\nDCE log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        dce.log()
    );
    let (bok, bout) = buyer.finish(20);
    assert!(
        bok,
        "TCP buyer (hangs up):\n{bout}\nDCE log:\n{}",
        dce.log()
    );

    // 3. Nobody listens on acme's port: the connect fails and bravo gets the call at once.
    let b = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bravo, &["-m", "1"]),
    );
    let t0 = std::time::Instant::now();
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "100"],
    );
    assert!(ok, "carrier (acme down):\n{out}\nDCE log:\n{}", dce.log());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "no ring timeout (15 s) waited out"
    );
    let (bok, bout) = b.finish(20);
    assert!(bok, "bravo:\n{bout}");

    let (_, log, dir) = dce.stop_keep();
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), 5, "{log}");
    for c in &cdrs[..4] {
        assert_eq!(c["disposition"], "answered", "{c}");
        assert_eq!(c["buyer_id"], "acme", "{c}");
    }
    assert_eq!(cdrs[3]["hangup_by"], "buyer", "{}", cdrs[3]);
    assert_eq!(
        outcomes(&cdrs[4]),
        ["acme=attempted:timeout", "bravo=won"],
        "{}",
        cdrs[4]
    );
    // The first four calls: one connection for the first three, one for the fourth (the
    // buyer SIPp was restarted); then a failed connect.
    assert_eq!(counter(&log, "tcp_buyer_connected"), 2, "{log}");
    assert_eq!(counter(&log, "tcp_buyer_connect_failed"), 1, "{log}");
}
