//! Postbacks end to end (issue #15, item 5, first part): the real `dce` binary, a SIPp call,
//! and a webhook receiver on loopback. The receiver is down when the call ends: the delivery
//! fails and waits in the outbox; DCE is killed with `kill -9`; the receiver comes up; the next
//! DCE process on the same database delivers every postback exactly once, each signed with
//! HMAC-SHA256 over its timestamp and body, with the row's idempotency key.

mod support;

use std::time::{Duration, Instant};
use support::dce_process::{free_port, Dce, TempDir};
use support::sipp::{self, Background};
use support::webhook::receiver;

const ACME_SECRET: &str = "acme-secret-0123456789";
const PUB_SECRET: &str = "publisher-secret-0123";

fn config(port: u16, dir: &std::path::Path, db: &std::path::Path, buyer: u16, hook: u16) -> String {
    format!(
        "[node]\nid = \"pb\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [storage]\ndatabase_url = \"sqlite://{}\"\nspool_dir = \"{}\"\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         webhook = {{ url = \"http://127.0.0.1:{hook}/pub\", secret = \"{PUB_SECRET}\", events = [\"call.billable\"] }}\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{buyer}\"\nbid_cents = 1500\n\
         webhook = {{ url = \"http://127.0.0.1:{hook}/acme\", secret = \"{ACME_SECRET}\", events = [\"call.answered\", \"call.billable\"] }}\n",
        db.join("dce.db").display(),
        db.join("spool").display(),
        dir.join("cdr.jsonl").display()
    )
}

#[test]
fn postbacks_survive_a_dead_receiver_and_a_kill_and_arrive_once_signed() {
    let Some(bin) = sipp::sipp() else { return };
    let db = TempDir::new("postbacks-db");
    let (buyer, hook) = (free_port(), free_port());
    let first = Dce::start_with(|p, d| config(p, d, &db.0, buyer, hook));
    let uas = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), buyer, &["-m", "1"]),
    );
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        first.sip,
        &["-m", "1", "-d", "200"],
    );
    assert!(ok, "{out}\n{}", first.log());
    assert!(uas.finish(20).0);
    // the receiver is down: the first delivery fails and waits in the outbox
    first.wait_for_log("postback failed; will retry", Duration::from_secs(15));
    first.signal("KILL");
    drop(first);

    let got = receiver(hook);
    let second = Dce::start_with(|p, d| config(p, d, &db.0, buyer, hook));
    let end = Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < 3 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    // nothing more comes once delivered
    std::thread::sleep(Duration::from_secs(3));
    let (_, log) = second.stop();
    let got = got.lock().unwrap().clone();
    let mut ids: Vec<String> = Vec::new();
    for (path, headers, body) in &got {
        let h = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {n} header: {headers:?}"))
        };
        let secret = if path == "/acme" {
            ACME_SECRET
        } else {
            PUB_SECRET
        };
        let sig = h("x-dce-signature");
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{sig}"));
        assert_eq!(
            sig,
            dce::webhooks::signature(secret, t, body),
            "{path} {body}"
        );
        assert_ne!(
            sig,
            dce::webhooks::signature("wrong-secret-000000", t, body)
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(h("idempotency-key"), v["id"].as_str().unwrap());
        assert_eq!(h("content-type"), "application/json");
        ids.push(format!("{path} {}", v["event"].as_str().unwrap()));
        if path == "/acme" {
            assert_eq!(v["buyer"], "acme");
            if v["event"] == "call.billable" {
                assert_eq!(v["price_cents"], 1500);
            }
        } else {
            assert_eq!(v["carrier"], "carrier-a");
            assert!(v.get("payout_cents").is_some(), "{v}");
        }
    }
    ids.sort();
    assert_eq!(
        ids,
        [
            "/acme call.answered",
            "/acme call.billable",
            "/pub call.billable"
        ],
        "each exactly once:\n{log}"
    );
    assert!(
        !log.contains(ACME_SECRET) && !log.contains(PUB_SECRET),
        "a secret in the log"
    );
}
