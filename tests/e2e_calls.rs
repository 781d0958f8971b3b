//! End-to-end call routing: the real `dce` binary, SIPp as the carrier (UAC) on 127.0.0.1 and
//! SIPp buyers (UAS) on their own ports; CDRs read back from the JSON-lines file.

mod support;

use serde_json::Value;
use std::path::Path;
use support::dce_process::{free_port, outcomes, Dce};
use support::sipp::{self, Background};

struct BuyerSpec<'a> {
    id: &'a str,
    bid: u32,
    extra: &'a str,
    port: u16,
}

fn config(port: u16, dir: &Path, sip_extra: &str, buyers: &[BuyerSpec<'_>]) -> String {
    let mut s = format!(
        "[node]\nid = \"e2e\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n{sip_extra}\n\
                  [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n",
        dir.join("cdr.jsonl").display()
    );
    for b in buyers {
        s.push_str(&format!(
            "[[buyer]]\nid = \"{}\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{}\"\nbid_cents = {}\n{}\n",
            b.id, b.port, b.bid, b.extra
        ));
    }
    s
}

fn cdrs(dir: &Path) -> Vec<Value> {
    support::dce_process::jsonl_cdrs(dir)
}

fn buyer_bg(bin: &std::path::PathBuf, scenario: &str, port: u16, calls: u32) -> Background {
    let m = calls.to_string();
    Background::start(
        bin,
        &sipp::args(&sipp::scenario(scenario), port, &["-m", &m]),
    )
}

#[test]
fn two_hundred_calls_connected_and_hung_up() {
    let Some(bin) = sipp::sipp() else { return };
    let bp = free_port();
    let dce = Dce::start_with(|port, dir| {
        config(
            port,
            dir,
            "",
            &[BuyerSpec {
                id: "acme",
                bid: 1500,
                extra: "",
                port: bp,
            }],
        )
    });
    let buyer = buyer_bg(&bin, "uas_answer.xml", bp, 200);
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "200", "-r", "40", "-l", "60", "-d", "200"],
    );
    let (bok, bout) = buyer.finish(30);
    let (dok, log, dir) = dce.stop_keep();
    assert!(ok, "carrier sipp failed:\n{out}\nDCE log:\n{log}");
    assert!(bok, "buyer sipp failed:\n{bout}");
    assert!(dok);
    let cdrs = cdrs(&dir.0);
    assert_eq!(cdrs.len(), 200, "one CDR per call");
    assert!(cdrs
        .iter()
        .all(|c| c["disposition"] == "answered" && c["buyer_id"] == "acme"));
    assert!(cdrs.iter().all(|c| c["hangup_by"] == "carrier"));
    assert!(cdrs
        .iter()
        .all(|c| c["billable"] == true && c["payout_cents"] == 1500));
    let counters = log.lines().rev().find(|l| l.contains("stopped")).unwrap();
    assert!(counters.contains("calls_answered=200"), "{counters}");
}

#[test]
fn busy_buyer_fails_over_and_cancel_and_buyer_hangup() {
    let Some(bin) = sipp::sipp() else { return };
    let (pa, pb) = (free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        config(
            port,
            dir,
            "",
            &[
                BuyerSpec {
                    id: "acme",
                    bid: 1500,
                    extra: "",
                    port: pa,
                },
                BuyerSpec {
                    id: "bravo",
                    bid: 1000,
                    extra: "",
                    port: pb,
                },
            ],
        )
    });
    // 1. acme busy → bravo answers
    let a = buyer_bg(&bin, "uas_busy.xml", pa, 1);
    let b = buyer_bg(&bin, "uas_answer.xml", pb, 1);
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "100"],
    );
    assert!(ok, "failover call failed:\n{out}");
    assert!(
        a.finish(10).0 && b.finish(10).0,
        "both buyers saw their part"
    );

    // 2. carrier cancels while acme rings: acme gets CANCEL, carrier 487, bravo nothing
    let a = buyer_bg(&bin, "uas_ring_cancel.xml", pa, 1);
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_cancel.xml"),
        dce.sip,
        &["-m", "1"],
    );
    assert!(ok, "cancel scenario failed:\n{out}");
    let (aok, aout) = a.finish(10);
    assert!(aok, "acme did not see the CANCEL:\n{aout}");

    // 3. buyer hangs up first
    let a = buyer_bg(&bin, "uas_answer_bye.xml", pa, 1);
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_wait_bye.xml"),
        dce.sip,
        &["-m", "1"],
    );
    assert!(ok, "buyer-hangup scenario failed:\n{out}");
    assert!(a.finish(10).0);

    let (dok, log, dir) = dce.stop_keep();
    assert!(dok, "{log}");
    let cdrs = cdrs(&dir.0);
    assert_eq!(cdrs.len(), 3, "{cdrs:#?}");
    assert_eq!(outcomes(&cdrs[0]), ["acme=attempted:486", "bravo=won"]);
    assert_eq!(cdrs[1]["disposition"], "cancelled");
    assert_eq!(cdrs[1]["carrier_code"], 487);
    assert_eq!(cdrs[2]["hangup_by"], "buyer");
    assert_eq!(cdrs[2]["buyer_id"], "acme");
}

/// One carrier call held `hold_ms`, in the background; join for SIPp's output.
fn long_call(
    bin: &std::path::Path,
    dce: &Dce,
    hold_ms: u32,
) -> std::thread::JoinHandle<std::process::Output> {
    let hold = hold_ms.to_string();
    let mut args = sipp::args(
        &sipp::scenario("uac_call.xml"),
        free_port(),
        &["-s", "+18005550100", "-m", "1", "-d", &hold],
    );
    args.push(dce.sip.to_string());
    let bin = bin.to_path_buf();
    std::thread::spawn(move || sipp::run(&bin, &args))
}

#[test]
fn no_eligible_buyer_480_and_unknown_source_403() {
    let Some(bin) = sipp::sipp() else { return };
    let pa = free_port();
    let dce = Dce::start_with(|port, dir| {
        // acme only takes Texas callers; the SIPp caller is +1 310 (California)
        config(
            port,
            dir,
            "",
            &[BuyerSpec {
                id: "acme",
                bid: 1500,
                extra: "states = [\"TX\"]",
                port: pa,
            }],
        )
    });
    let a = buyer_bg(&bin, "uas_answer.xml", pa, 1);
    let (ok, out) = sipp::expect_code(&bin, &dce, 480, &["-m", "1"]);
    assert!(ok, "expected 480:\n{out}");
    // unknown source: the carrier SIPp sends from 127.0.0.2, outside carrier-a's sources
    let mut args = sipp::args(
        &dce.dir().join("uac_expect_480.xml"),
        free_port(),
        &["-s", "+18005550100", "-m", "1"],
    );
    let text = std::fs::read_to_string(sipp::scenario("uac_expect.xml"))
        .unwrap()
        .replace("EXPECTED_CODE", "403");
    let p403 = dce.dir().join("uac_expect_403.xml");
    std::fs::write(&p403, text).unwrap();
    args[1] = p403.display().to_string();
    let i = args.iter().position(|a| a == "-i").unwrap();
    args[i + 1] = "127.0.0.2".into();
    args.push(dce.sip.to_string());
    let out = sipp::run(&bin, &args);
    assert!(
        out.status.success(),
        "expected 403:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (aok, _) = a.finish(2);
    assert!(
        !aok,
        "the buyer never saw an INVITE (its sipp timed out waiting)"
    );
    let (dok, log, dir) = dce.stop_keep();
    assert!(dok);
    let cdrs = cdrs(&dir.0);
    assert_eq!(cdrs.len(), 2);
    assert_eq!(outcomes(&cdrs[0]), ["acme=excluded:state"]);
    assert_eq!(cdrs[1]["reason"], "unknown source");
    assert!(log.contains("rejected_403_unknown_source=1"), "{log}");
}

#[test]
fn max_concurrent_one_sends_the_second_overlapping_call_to_the_next_buyer() {
    let Some(bin) = sipp::sipp() else { return };
    let (pa, pb) = (free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        config(
            port,
            dir,
            "",
            &[
                BuyerSpec {
                    id: "acme",
                    bid: 1500,
                    extra: "max_concurrent = 1",
                    port: pa,
                },
                BuyerSpec {
                    id: "bravo",
                    bid: 1000,
                    extra: "",
                    port: pb,
                },
            ],
        )
    });
    let a = buyer_bg(&bin, "uas_answer.xml", pa, 1);
    let b = buyer_bg(&bin, "uas_answer.xml", pb, 1);
    // two calls 200 ms apart, each held 2 s: they overlap
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "2", "-r", "5", "-d", "2000"],
    );
    assert!(ok, "{out}");
    assert!(a.finish(10).0 && b.finish(10).0);
    let (_, _, dir) = dce.stop_keep();
    let cdrs = cdrs(&dir.0);
    let winners: Vec<_> = cdrs
        .iter()
        .map(|c| c["buyer_id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(winners, ["acme", "bravo"]);
    assert_eq!(
        outcomes(&cdrs[1]),
        ["bravo=won", "acme=excluded:concurrency"]
    );
}

#[test]
fn reload_changes_a_bid_and_an_active_call_survives() {
    let Some(bin) = sipp::sipp() else { return };
    let (pa, pb) = (free_port(), free_port());
    let make = |bravo_bid: u32| {
        move |port: u16, dir: &Path| {
            config(
                port,
                dir,
                "",
                &[
                    BuyerSpec {
                        id: "acme",
                        bid: 1500,
                        extra: "",
                        port: pa,
                    },
                    BuyerSpec {
                        id: "bravo",
                        bid: bravo_bid,
                        extra: "",
                        port: pb,
                    },
                ],
            )
        }
    };
    let dce = Dce::start_with(make(1000));
    let a = buyer_bg(&bin, "uas_answer.xml", pa, 1);
    let b = buyer_bg(&bin, "uas_answer.xml", pb, 1);
    // call 1: long (4 s), goes to acme
    let long = long_call(&bin, &dce, 4000);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    // a broken file first: refused with the line, the running config stays
    std::fs::write(dce.dir().join("dce.toml"), "[node\nid = 1\n").unwrap();
    dce.signal("HUP");
    dce.wait_for_log("reload refused", std::time::Duration::from_secs(5));
    assert!(
        dce.log().contains("dce.toml:1: TOML syntax"),
        "{}",
        dce.log()
    );
    // reload: bravo now outbids acme
    let text = make(2500)(dce.sip.port(), dce.dir());
    std::fs::write(dce.dir().join("dce.toml"), text).unwrap();
    dce.signal("HUP");
    dce.wait_for_log("config reloaded", std::time::Duration::from_secs(5));
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "100"],
    );
    assert!(ok, "{out}");
    let long = long.join().unwrap();
    assert!(
        long.status.success(),
        "the active call survived the reload: {}",
        String::from_utf8_lossy(&long.stdout)
    );
    assert!(a.finish(10).0 && b.finish(10).0);
    let (_, _, dir) = dce.stop_keep();
    let cdrs = cdrs(&dir.0);
    let mut winners: Vec<(String, u64)> = cdrs
        .iter()
        .map(|c| {
            (
                c["buyer_id"].as_str().unwrap_or("").to_owned(),
                c["bid_cents"].as_u64().unwrap(),
            )
        })
        .collect();
    winners.sort();
    assert_eq!(
        winners,
        [("acme".to_owned(), 1500), ("bravo".to_owned(), 2500)]
    );
}

#[test]
fn sigterm_drains_active_calls_refuses_new_ones_and_exits_0() {
    let Some(bin) = sipp::sipp() else { return };
    let pa = free_port();
    let dce = draining_dce(pa, 10);
    let a = buyer_bg(&bin, "uas_answer.xml", pa, 1);
    // a 3 s call; SIGTERM 1 s into it
    let long = long_call(&bin, &dce, 3000);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    dce.signal("TERM");
    dce.wait_for_log(
        "waiting for active calls to finish",
        std::time::Duration::from_secs(5),
    );
    // a new call while draining: 503
    let (ok, out) = sipp::expect_code(&bin, &dce, 503, &["-m", "1"]);
    assert!(ok, "a new call during the drain gets 503: {out}");
    let long = long.join().unwrap();
    assert!(
        long.status.success(),
        "the active call was not cut: {}",
        String::from_utf8_lossy(&long.stdout)
    );
    assert!(a.finish(10).0);
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "exit 0 after the drain: {log}");
    let cdrs = cdrs(&dir.0);
    let answered: Vec<_> = cdrs
        .iter()
        .filter(|c| c["disposition"] == "answered")
        .collect();
    assert_eq!(answered.len(), 1, "{cdrs:?}");
    assert_eq!(
        answered[0]["hangup_by"], "carrier",
        "the carrier ended it, not DCE"
    );
    assert!(answered[0]["duration_s"].as_f64().unwrap() >= 2.5);
}

#[test]
fn sigterm_during_a_sipp_run_cuts_no_call_refuses_new_ones_and_writes_every_cdr() {
    let Some(bin) = sipp::sipp() else { return };
    let pa = free_port();
    let dce = draining_dce(pa, 30);
    let buyer = buyer_bg(&bin, "uas_answer.xml", pa, 20);
    // 20 calls of 2.5 s at 10 per second; SIGTERM one second in.
    let mut args = sipp::args(
        &sipp::scenario("uac_call.xml"),
        free_port(),
        &["-s", "+18005550100", "-m", "20", "-r", "10", "-d", "2500"],
    );
    args.push(dce.sip.to_string());
    let sipp_bin = bin.clone();
    let run = std::thread::spawn(move || sipp::run(&sipp_bin, &args));
    std::thread::sleep(std::time::Duration::from_millis(1000));
    dce.signal("TERM");
    let out = run.join().unwrap();
    let _ = buyer.finish(10);
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "exit 0 after the drain: {log}");
    let cdrs = cdrs(&dir.0);
    let answered: Vec<_> = cdrs
        .iter()
        .filter(|c| c["disposition"] == "answered")
        .collect();
    let refused: Vec<_> = cdrs
        .iter()
        .filter(|c| c["disposition"] == "rejected")
        .collect();
    assert_eq!(
        answered.len() + refused.len(),
        20,
        "a CDR for every INVITE: {cdrs:?}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!answered.is_empty() && !refused.is_empty(), "{cdrs:?}");
    for c in &answered {
        assert_eq!(c["hangup_by"], "carrier", "no call was cut: {c}");
        assert!(c["duration_s"].as_f64().unwrap() >= 2.4, "{c}");
    }
    for c in &refused {
        assert_eq!(c["carrier_code"], 503, "{c}");
        assert_eq!(c["reason"], "shutting down", "{c}");
    }
}

#[test]
fn the_drain_timeout_ends_the_calls_still_up_with_bye() {
    let Some(bin) = sipp::sipp() else { return };
    let pa = free_port();
    let dce = draining_dce(pa, 2);
    let a = buyer_bg(&bin, "uas_answer.xml", pa, 1);
    // A call that only DCE's BYE ends.
    let mut args = sipp::args(
        &sipp::scenario("uac_wait_bye.xml"),
        free_port(),
        &["-s", "+18005550100", "-m", "1"],
    );
    args.push(dce.sip.to_string());
    let sipp_bin = bin.clone();
    let call = std::thread::spawn(move || sipp::run(&sipp_bin, &args));
    dce.wait_for_log("call answered", std::time::Duration::from_secs(10));
    dce.signal("TERM");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert!(!call.is_finished(), "not cut before the drain timeout");
    let out = call.join().unwrap();
    assert!(
        out.status.success(),
        "the carrier got BYE when the drain timed out: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(a.finish(10).0, "the buyer got BYE too");
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "{log}");
    let cdrs = cdrs(&dir.0);
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!(cdrs[0]["hangup_by"], "dce");
    assert_eq!(cdrs[0]["reason"], "shutdown");
    assert!(
        cdrs[0]["duration_s"].as_f64().unwrap() >= 1.9,
        "{}",
        cdrs[0]
    );
}

/// DCE with one buyer `acme` on `pa` and `[node] drain_timeout_s = drain`.
fn draining_dce(pa: u16, drain: u32) -> Dce {
    // the call's steps are logged at debug; the drain tests wait for "call answered"
    Dce::start_logging(
        |port, dir| {
            config(
                port,
                dir,
                "",
                &[BuyerSpec {
                    id: "acme",
                    bid: 1000,
                    extra: "",
                    port: pa,
                }],
            )
            .replace(
                "id = \"e2e\"\n",
                &format!("id = \"e2e\"\ndrain_timeout_s = {drain}\n"),
            )
        },
        "info,dce::call=debug",
    )
}
