//! The control API over live SIPp calls: the real `dce` binary, SIPp as carrier and buyers.
//! Calls appear in `/v1/calls`, an operator hangs one up, a paused buyer is skipped, the
//! WebSocket receives each call's events in order, and `/metrics` counts what happened.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use support::dce_process::{free_port, Dce};
use support::http::{collect_events, get_json, request};
use support::sipp::{self, Background};

/// SHA-256 of "ops-secret".
const OPS_SHA: &str = "32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f";
const KEY: &str = "ops-secret";

/// The events of an answered call, in order.
const LIFE: [&str; 4] = [
    "call.started",
    "auction.completed",
    "call.answered",
    "call.completed",
];

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn config(port: u16, dir: &Path, http: u16, acme: u16, bravo: u16) -> String {
    format!(
        "[node]\nid = \"api\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [storage]\ndatabase_url = \"sqlite://{d}/dce.db\"\nspool_dir = \"{d}/spool\"\n\
         [cdr]\njsonl_path = \"{d}/cdr.jsonl\"\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{OPS_SHA}\", role = \"admin\" }}]\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{acme}\"\nbid_cents = 1500\n\
         [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 1000\n",
        d = dir.display()
    )
}

fn carrier(
    bin: &std::path::Path,
    scenario: &str,
    dce: &Dce,
) -> std::thread::JoinHandle<(bool, String)> {
    let mut args = sipp::args(
        &sipp::scenario(scenario),
        free_port(),
        &["-s", "+18005550100", "-m", "1", "-d", "500"],
    );
    args.push(dce.sip.to_string());
    let bin = bin.to_path_buf();
    std::thread::spawn(move || {
        let out = sipp::run(&bin, &args);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> Option<Value>) -> Value {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn calls_hangup_buyers_events_and_metrics_over_sipp_calls() {
    let Some(bin) = sipp::sipp() else { return };
    let (http, acme, bravo) = (free_port(), free_port(), free_port());
    let dce = Dce::start_with(|port, dir| config(port, dir, http, acme, bravo));
    let a = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), acme, &["-m", "1"]),
    );
    let b = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bravo, &["-m", "1"]),
    );

    // Every event until the first call completes.
    let events = collect_events(http, "", KEY, 30, |e| e["type"] == "call.completed");
    // A call that waits for DCE's BYE: only the operator ends it.
    let first = carrier(&bin, "uac_wait_bye.xml", &dce);
    let calls = wait_for("a connected call in /v1/calls", 15, || {
        let v = get_json(http, "/v1/calls", KEY);
        (v["calls"][0]["state"] == "connected").then_some(v)
    });
    let c = &calls["calls"][0];
    assert_eq!(c["buyer"], "acme", "{calls}");
    assert_eq!(c["campaign"], "auto");
    assert_eq!(c["caller"], "13105551234", "the API shows whole numbers");
    assert_eq!(c["legs"][0]["state"], "answered");
    assert!(c["age_s"].as_f64().unwrap() >= 0.0);
    let id = c["id"].as_str().unwrap().to_owned();
    let one = get_json(http, &format!("/v1/calls/{id}"), KEY);
    assert_eq!(one["id"], id.as_str());
    let buyers = get_json(http, "/v1/buyers", KEY);
    let acme_live = buyers["buyers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "acme")
        .unwrap()
        .clone();
    assert_eq!(acme_live["active_calls"], 1, "{buyers}");
    assert_eq!(acme_live["answered_today"], 1, "{buyers}");

    // The operator hangs it up: both legs get BYE.
    let (code, body) = request(
        http,
        "POST",
        &format!("/v1/calls/{id}/hangup"),
        Some(KEY),
        "",
    );
    assert_eq!(code, 200, "{body}");
    let (ok, out) = first.join().unwrap();
    assert!(ok, "the carrier got DCE's BYE:\n{out}");
    assert!(a.finish(10).0, "acme got DCE's BYE too");
    let (code, _) = request(http, "GET", &format!("/v1/calls/{id}"), Some(KEY), "");
    assert_eq!(code, 404, "gone once hung up");

    // The events of that call, in order, all with its id.
    let events = events.join().unwrap();
    assert_eq!(kinds(&events), LIFE, "{events:?}");
    assert!(
        events.iter().all(|e| e["call_id"] == id.as_str()),
        "{events:?}"
    );
    let bids = events[1]["bids"].as_array().unwrap();
    assert_eq!(bids.len(), 2);
    assert_eq!(bids[0]["buyer"], "acme");
    assert_eq!(events[2]["buyer"], "acme");
    assert_eq!(events[3]["reason"], "api_hangup");
    assert_eq!(events[3]["hangup_by"], "dce");
    assert_eq!(
        events[0]["caller"], "1310*****34",
        "events mask numbers by default"
    );

    // Pause acme: the next call goes to bravo; a subscriber filtered on acme sees nothing of it.
    let (code, body) = request(
        http,
        "PATCH",
        "/v1/buyers/acme",
        Some(KEY),
        r#"{"paused":true}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"paused\":true"), "{body}");
    let (code, body) = request(
        http,
        "PATCH",
        "/v1/buyers/bravo",
        Some(KEY),
        r#"{"bid_cents":1100}"#,
    );
    assert_eq!(code, 200, "{body}");
    let for_bravo = collect_events(http, "?buyer=bravo", KEY, 30, |e| {
        e["type"] == "call.completed"
    });
    let for_other = collect_events(http, "?campaign=other", KEY, 3, |_| true);
    let second = carrier(&bin, "uac_call.xml", &dce);
    let (ok, out) = second.join().unwrap();
    assert!(ok, "second call:\n{out}");
    assert!(b.finish(10).0);
    let ev = for_bravo.join().unwrap();
    assert_eq!(kinds(&ev), LIFE, "{ev:?}");
    let bids: Vec<String> = ev[1]["bids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            format!(
                "{}:{}:{}",
                b["buyer"].as_str().unwrap(),
                b["bid_cents"],
                b["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        bids,
        ["bravo:1100:ranked", "acme:1500:excluded:paused"],
        "{ev:?}"
    );
    assert!(
        for_other.join().unwrap().is_empty(),
        "no event of campaign `other`"
    );
    // A reload puts the config's bids back; a pause stays until resumed.
    let (code, body) = request(http, "POST", "/v1/reload", Some(KEY), "");
    assert_eq!(code, 200, "{body}");
    let buyers = get_json(http, "/v1/buyers", KEY);
    let find = |id: &str| {
        buyers["buyers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(find("bravo")["bid_cents"], 1000, "{buyers}");
    assert_eq!(find("bravo")["bid_override"], false, "{buyers}");
    assert_eq!(find("acme")["paused"], true, "{buyers}");
    let (code, body) = request(
        http,
        "PATCH",
        "/v1/buyers/acme",
        Some(KEY),
        r#"{"paused":false}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"paused\":false"), "{body}");

    // Metrics saw both calls.
    let (_, m) = request(http, "GET", "/metrics", None, "");
    for want in [
        "dce_calls_total{outcome=\"answered\"} 2",
        "dce_auction_duration_seconds_count 2",
        "dce_sip_messages_total{direction=\"in\",kind=\"request\",method=\"INVITE\"} 2",
        "dce_sip_messages_total{direction=\"out\",kind=\"request\",method=\"BYE\"}",
        "dce_active_calls 0",
        "dce_calls_offered_total 2",
    ] {
        assert!(m.contains(want), "{want} missing:\n{m}");
    }
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "{log}");
    assert!(log.contains("hangup requested through the API"), "{log}");
    assert!(!log.contains("13105551234"), "numbers are masked in logs");
    let cdrs = support::dce_process::jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), 2);
    assert_eq!(cdrs[0]["reason"], "api_hangup");
    assert_eq!(cdrs[1]["buyer_id"], "bravo");
    assert_eq!(
        cdrs[1]["bid_cents"], 1100,
        "the override is what the CDR bills"
    );
}

#[test]
fn json_logs_carry_the_call_id_and_mask_numbers() {
    let Some(bin) = sipp::sipp() else { return };
    let (http, acme, bravo) = (free_port(), free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        config(port, dir, http, acme, bravo) + "[log]\nformat = \"json\"\n"
    });
    let a = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), acme, &["-m", "1"]),
    );
    let (ok, out) = carrier(&bin, "uac_call.xml", &dce).join().unwrap();
    assert!(ok, "{out}");
    assert!(a.finish(10).0);
    let (ok, log) = dce.stop();
    assert!(ok, "{log}");
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    let about_call: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            let m = l["message"].as_str().unwrap_or("");
            // every line about a call carries its id
            l["call"].is_string() || m.starts_with("call ")
        })
        .collect();
    // At the default level a call logs one line: its outcome.
    assert_eq!(about_call.len(), 1, "{log}");
    assert_eq!(about_call[0]["message"], "call ended", "{log}");
    assert_eq!(about_call[0]["disposition"], "answered", "{log}");
    assert_eq!(about_call[0]["buyer"], "acme", "{log}");
    let id = about_call[0]["call"].as_str().unwrap();
    assert!(about_call.iter().all(|l| l["call"] == id), "{log}");
    assert!(!log.contains("13105551234"), "{log}");
    assert!(log.contains("1310*****34"), "{log}");
}

#[test]
fn a_second_sigterm_ends_a_drain_and_health_says_draining() {
    let Some(bin) = sipp::sipp() else { return };
    let (http, acme, bravo) = (free_port(), free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        config(port, dir, http, acme, bravo)
            .replace("id = \"api\"\n", "id = \"api\"\ndrain_timeout_s = 60\n")
    });
    let a = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), acme, &["-m", "1"]),
    );
    // A call only DCE's BYE ends.
    let call = carrier(&bin, "uac_wait_bye.xml", &dce);
    wait_for("a connected call", 15, || {
        let v = get_json(http, "/v1/calls", KEY);
        (v["calls"][0]["state"] == "connected").then_some(v)
    });
    let (code, body) = request(http, "GET", "/health", None, "");
    assert_eq!(code, 200, "{body}");
    dce.signal("TERM");
    dce.wait_for_log("waiting for active calls to finish", Duration::from_secs(5));
    let (code, body) = request(http, "GET", "/health", None, "");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"status\":\"draining\""), "{body}");
    assert!(body.contains("\"active_calls\":1"), "{body}");
    // The call is not cut by the drain itself...
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!call.is_finished(), "the drain must not end the call");
    // ... but a second SIGTERM ends it with BYE at once.
    let t = Instant::now();
    dce.signal("TERM");
    let (ok, out) = call.join().unwrap();
    assert!(ok, "the carrier got DCE's BYE:\n{out}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "long before the 60 s drain timeout"
    );
    assert!(a.finish(10).0, "the buyer got BYE too");
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "exit 0: {log}");
    assert!(
        log.contains("second SIGTERM: ending active calls now"),
        "{log}"
    );
    let cdr: Value = support::dce_process::jsonl_cdrs(&dir.0).remove(0);
    assert_eq!(cdr["disposition"], "answered");
    assert_eq!(cdr["hangup_by"], "dce");
    assert_eq!(cdr["reason"], "shutdown");
}
