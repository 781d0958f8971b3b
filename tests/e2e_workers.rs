//! Several SIP workers (`[sip] workers = 2`, decision 0010): the real `dce` binary with SIPp as
//! carrier and buyer. Each worker binds its own socket on the port (SO_REUSEPORT), so the
//! kernel hands the carrier's and the buyer's datagrams to whichever socket their address
//! hashes to; every message must still reach the worker that owns its call — new INVITEs by
//! Call-ID, responses by DCE's branch, in-dialog requests from either side by DCE's tag.

mod support;

use support::dce_process::{counter, free_port, jsonl_cdrs, Dce};
use support::sipp::{self, Background};

/// SHA-256 of [`KEY`].
const OPS_SHA: &str = "32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f";
const KEY: &str = "ops-secret";

fn config(port: u16, dir: &std::path::Path, http: u16, buyer: u16) -> String {
    format!(
        "[node]\nid = \"workers\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\", \"tcp://127.0.0.1:{port}\"]\n\
         advertised_host = \"127.0.0.1\"\nworkers = 2\n\
         [media]\nport_min = 41000\nport_max = 41999\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{OPS_SHA}\", role = \"admin\" }}]\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{buyer}\"\nbid_cents = 900\n",
        dir.join("cdr.jsonl").display()
    )
}

#[test]
fn two_workers_carry_calls_whichever_socket_the_kernel_picks() {
    let Some(bin) = sipp::sipp() else { return };
    let (http, bp) = (free_port(), free_port());
    let dce = Dce::start_with(|port, dir| config(port, dir, http, bp));
    assert!(dce.log().contains("workers=2"), "{}", dce.log());

    // 1. 150 calls the carrier hangs up
    let buyer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bp, &["-m", "150"]),
    );
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "150", "-r", "50", "-l", "60", "-d", "100"],
    );
    assert!(ok, "carrier sipp failed:\n{out}\nDCE log:\n{}", dce.log());
    assert!(buyer.finish(30).0);

    // 2. 30 calls the buyer hangs up: its BYE names DCE's tag on the buyer leg
    let buyer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer_bye.xml"), bp, &["-m", "30"]),
    );
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_wait_bye.xml"),
        dce.sip,
        &["-m", "30", "-r", "20", "-l", "30"],
    );
    assert!(
        ok,
        "buyer-hangup calls failed:\n{out}\nDCE log:\n{}",
        dce.log()
    );
    assert!(buyer.finish(30).0);

    // 3. calls held until the API hangs them up: the node asks both workers for their calls
    //    and each hangup reaches the worker that owns the call
    let held = 6;
    let buyer = Background::start(
        &bin,
        &sipp::args(
            &sipp::scenario("uas_answer.xml"),
            bp,
            &["-m", &held.to_string()],
        ),
    );
    let mut args = sipp::args(
        &sipp::scenario("uac_wait_bye.xml"),
        free_port(),
        &[
            "-s",
            "+18005550100",
            "-m",
            &held.to_string(),
            "-r",
            "20",
            "-l",
            "10",
        ],
    );
    args.push(dce.sip.to_string());
    let sipp_bin = bin.clone();
    let call = std::thread::spawn(move || sipp::run(&sipp_bin, &args));
    let end = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let ids: Vec<String> = loop {
        let v = support::http::get_json(http, "/v1/calls", KEY);
        let connected: Vec<String> = v["calls"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c["state"] == "connected")
                    .filter_map(|c| c["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if connected.len() == held {
            break connected;
        }
        assert!(std::time::Instant::now() < end, "calls not all up: {v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    for id in &ids {
        let (code, body) = support::http::request(
            http,
            "POST",
            &format!("/v1/calls/{id}/hangup"),
            Some(KEY),
            "",
        );
        assert!((200..300).contains(&code), "{code} {body}");
    }
    let out = call.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(buyer.finish(30).0);
    let v = support::http::get_json(http, "/v1/calls", KEY);
    assert_eq!(v["calls"].as_array().map(|a| a.len()), Some(0), "{v}");

    let (dok, log, dir) = dce.stop_keep();
    assert!(dok, "{log}");
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), 186, "one CDR per call");
    assert!(
        cdrs.iter().all(|c| c["disposition"] == "answered"),
        "{cdrs:?}"
    );
    let by = |who: &str| cdrs.iter().filter(|c| c["hangup_by"] == who).count();
    assert_eq!((by("carrier"), by("buyer"), by("dce")), (150, 30, 6));
    assert!(cdrs
        .iter()
        .filter(|c| c["hangup_by"] == "dce")
        .all(|c| c["reason"] == "api_hangup"));
    assert_eq!(counter(&log, "calls_answered"), 186, "{log}");
    // Call-IDs spread over both workers while each source lands on one socket: messages
    // were handed from the worker that read them to the one that owns them, and none lost.
    assert!(counter(&log, "handed_to_owner_worker") > 0, "{log}");
    assert_eq!(counter(&log, "dropped_queue_full"), 0, "{log}");
}
