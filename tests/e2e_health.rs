//! Buyer trunk health end to end (issue #13, item 5): the real `dce` binary pings the buyer
//! `acme` with OPTIONS every second; SIPp answers them. When SIPp stops, `acme` is marked down
//! within the configured pings and the next call goes straight to `bravo` (`excluded:down`,
//! no ring timeout to wait out); when SIPp answers again, `acme` comes back up by itself.

mod support;

use std::time::{Duration, Instant};
use support::dce_process::{free_port, jsonl_cdrs, outcomes, Dce};
use support::sipp::{self, Background};

#[test]
fn a_trunk_that_stops_answering_options_is_skipped_until_it_answers_again() {
    let Some(bin) = sipp::sipp() else {
        return;
    };
    let (acme, bravo, http) = (free_port(), free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        format!(
            "[node]\nid = \"health\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\nring_timeout_s = 15\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{}\", role = \"read\" }}]\n\
             [media]\nport_min = 45000\nport_max = 45999\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [cdr]\njsonl_path = \"{}\"\n\
             [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{acme}\"\nbid_cents = 900\n\
             health = {{ interval_s = 1, down_after = 2, up_after = 1 }}\n\
             [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 100\n",
            support::http::OPS_SHA,
            dir.join("cdr.jsonl").display()
        )
    });
    let health = || {
        let b = support::http::get_json(http, "/v1/buyers", support::http::OPS_KEY);
        b["buyers"][0]["health"]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let responder = || {
        Background::start(
            &bin,
            &sipp::args(&sipp::scenario("uas_options.xml"), acme, &["-m", "1000"]),
        )
    };
    let pings = responder();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(health(), "up", "{}", dce.log());

    // The trunk goes quiet: down after two failed pings (each given up after 1 s).
    drop(pings);
    dce.wait_for_log("buyer trunk DOWN", Duration::from_secs(6));
    assert_eq!(health(), "down");
    let b = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bravo, &["-m", "1"]),
    );
    let t0 = Instant::now();
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "100"],
    );
    let took = t0.elapsed();
    assert!(ok, "carrier sipp failed:\n{out}\n{}", dce.log());
    let (bok, bout) = b.finish(20);
    assert!(bok, "bravo:\n{bout}");
    assert!(
        took < Duration::from_secs(10),
        "the down trunk was not rung (ring_timeout_s is 15): {took:?}"
    );

    // It answers again: up by itself.
    let _pings = responder();
    dce.wait_for_log("buyer trunk UP again", Duration::from_secs(6));
    assert_eq!(health(), "up");
    let (_, log, dir) = dce.stop_keep();
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), 1, "{log}");
    assert_eq!(
        outcomes(&cdrs[0]),
        ["bravo=won", "acme=excluded:down"],
        "{}",
        cdrs[0]
    );
    assert_eq!(
        support::dce_process::counter(&log, "buyer_trunk_down"),
        1,
        "{log}"
    );
    assert_eq!(
        support::dce_process::counter(&log, "buyer_trunk_up"),
        1,
        "{log}"
    );
}
