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

/// Auto-pause end to end (issue #15, item 4): the buyer `acme` (SIPp) lets two calls ring out
/// past `ring_timeout_s`; with `pause_after_unanswered = { in_hour = 2 }` it pauses itself,
/// `/v1/buyers` says why and when, the third call goes straight to `bravo`, and an admin's
/// `PATCH {"paused": false}` puts `acme` back into the auction.
#[test]
fn a_buyer_that_lets_calls_ring_out_pauses_itself_until_an_admin_resumes_it() {
    let Some(bin) = sipp::sipp() else {
        return;
    };
    let (acme, bravo, http) = (free_port(), free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        format!(
            "[node]\nid = \"pause\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\nring_timeout_s = 1\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{}\", role = \"admin\" }}]\n\
             [media]\nport_min = 46000\nport_max = 46999\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [cdr]\njsonl_path = \"{}\"\n\
             [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{acme}\"\nbid_cents = 900\n\
             pause_after_unanswered = {{ in_hour = 2 }}\n\
             [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 100\n",
            support::http::OPS_SHA,
            dir.join("cdr.jsonl").display()
        )
    });
    let acme_view = || {
        let b = support::http::get_json(http, "/v1/buyers", support::http::OPS_KEY);
        b["buyers"][0].clone()
    };
    let ringer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_ring_cancel.xml"), acme, &["-m", "2"]),
    );
    let answerer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bravo, &["-m", "3"]),
    );
    for n in 0..3 {
        let (ok, out) = sipp::carrier(
            &bin,
            &sipp::scenario("uac_call.xml"),
            dce.sip,
            &["-m", "1", "-d", "100"],
        );
        assert!(ok, "carrier call {n}:\n{out}\n{}", dce.log());
        if n == 1 {
            let v = acme_view();
            assert_eq!(v["paused"], true, "{v}\n{}", dce.log());
            assert_eq!(v["paused_by"], "unanswered_in_hour", "{v}");
            assert!(v["paused_at"].as_str().is_some_and(|t| t.len() > 20), "{v}");
            assert_eq!(v["unanswered_this_hour"], 2, "{v}");
            assert_eq!(v["pause_after_unanswered"]["in_hour"], 2, "{v}");
        }
    }
    let (rok, rout) = ringer.finish(20);
    assert!(rok, "acme rang twice:\n{rout}");
    let (bok, bout) = answerer.finish(20);
    assert!(bok, "bravo answered three:\n{bout}");
    assert!(
        dce.log().contains("buyer PAUSED"),
        "logged at WARN: {}",
        dce.log()
    );

    let (code, body) = support::http::request(
        http,
        "PATCH",
        "/v1/buyers/acme",
        Some(support::http::OPS_KEY),
        r#"{"paused": false}"#,
    );
    assert_eq!(code, 200, "{body}");
    let v = acme_view();
    assert_eq!(
        (&v["paused"], &v["paused_by"], &v["unanswered_this_hour"]),
        (
            &serde_json::json!(false),
            &serde_json::Value::Null,
            &serde_json::json!(0)
        ),
        "{v}"
    );
    let b = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), acme, &["-m", "1"]),
    );
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "100"],
    );
    assert!(ok, "carrier call after resume:\n{out}\n{}", dce.log());
    let (aok, aout) = b.finish(20);
    assert!(aok, "acme answered once resumed:\n{aout}");

    let (_, log, dir) = dce.stop_keep();
    let cdrs = jsonl_cdrs(&dir.0);
    let got: Vec<Vec<String>> = cdrs.iter().map(outcomes).collect();
    assert_eq!(
        got,
        [
            vec!["acme=attempted:ring_timeout", "bravo=won"],
            vec!["acme=attempted:ring_timeout", "bravo=won"],
            vec!["bravo=won", "acme=excluded:paused"],
            vec!["acme=won", "bravo=lost"],
        ],
        "{log}"
    );
    assert_eq!(
        support::dce_process::counter(&log, "buyer_auto_paused"),
        1,
        "{log}"
    );
}
