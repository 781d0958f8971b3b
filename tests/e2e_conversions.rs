//! Conversions end to end (issue #15, item 5): the real `dce` binary, a SIPp call answered by
//! buyer `acme`, a webhook receiver on loopback. After the call is stored, acme's `buyer` key
//! marks it converted, then lowers the publisher's payout: each event is recorded with the
//! key's name and time, and sends a signed `call.converted` postback to acme and to the
//! carrier with its own idempotency key; `/v1/webhooks` shows them delivered, `/v1/cdrs` the
//! conversion; another buyer's key gets 403.

mod support;

use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use support::dce_process::{free_port, Dce};
use support::http::{get_json, request, OPS_KEY, OPS_SHA};
use support::sipp::{self, Background};
use support::webhook::{header, receiver};

const ACME_SECRET: &str = "acme-secret-0123456789";
const PUB_SECRET: &str = "publisher-secret-0123";
const ACME_KEY: &str = "acme-conversion-key";
const BRAVO_KEY: &str = "bravo-conversion-key";

fn sha(k: &str) -> String {
    Sha256::digest(k.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config(port: u16, dir: &std::path::Path, http: u16, buyer: u16, hook: u16) -> String {
    format!(
        "[node]\nid = \"conv\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [storage]\ndatabase_url = \"sqlite://{d}/dce.db\"\nspool_dir = \"{d}/spool\"\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [\
         {{ name = \"ops\", sha256 = \"{OPS_SHA}\", role = \"admin\" }}, \
         {{ name = \"acme-crm\", sha256 = \"{}\", role = \"buyer\", buyer = \"acme\" }}, \
         {{ name = \"bravo-crm\", sha256 = \"{}\", role = \"buyer\", buyer = \"bravo\" }}]\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         webhook = {{ url = \"http://127.0.0.1:{hook}/pub\", secret = \"{PUB_SECRET}\", events = [\"call.converted\"] }}\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\npublisher_margin = 0.2\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{buyer}\"\nbid_cents = 1500\n\
         webhook = {{ url = \"http://127.0.0.1:{hook}/acme\", secret = \"{ACME_SECRET}\", events = [\"call.converted\"] }}\n\
         [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{}\"\nbid_cents = 100\n",
        sha(ACME_KEY),
        sha(BRAVO_KEY),
        free_port(),
        d = dir.display(),
    )
}

/// Poll `f` for up to `secs` until it gives something.
fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_buyer_converts_its_call_and_each_event_is_recorded_and_posted_back_signed() {
    let Some(bin) = sipp::sipp() else { return };
    let (http, buyer, hook) = (free_port(), free_port(), free_port());
    let got = receiver(hook);
    let dce = Dce::start_with(|p, d| config(p, d, http, buyer, hook));
    let uas = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), buyer, &["-m", "1"]),
    );
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "200"],
    );
    assert!(ok, "{out}\n{}", dce.log());
    assert!(uas.finish(20).0);

    // the stored call
    let row = wait_for(15, || {
        let v = get_json(http, "/v1/cdrs", OPS_KEY);
        v["cdrs"].as_array().and_then(|r| r.first().cloned())
    })
    .unwrap_or_else(|| panic!("no CDR stored:\n{}", dce.log()));
    let id = row["id"].as_str().unwrap().to_owned();
    assert_eq!(row["buyer_id"], "acme", "{row}");
    assert_eq!(row["converted"], false, "{row}");
    let (revenue, payout) = (
        row["revenue_cents"].as_i64().unwrap(),
        row["payout_cents"].as_i64().unwrap(),
    );
    assert_eq!((revenue, payout), (1500, 1200), "{row}");
    let path = format!("/v1/calls/{id}/conversion");

    // another buyer's key
    let (code, body) = request(http, "POST", &path, Some(BRAVO_KEY), "{}");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("not answered by buyer `bravo`"), "{body}");
    // a buyer key reads no CDRs
    let (code, _) = request(http, "GET", "/v1/cdrs", Some(ACME_KEY), "");
    assert_eq!(code, 403);

    // acme converts, then lowers the payout
    let (code, body) = request(
        http,
        "POST",
        &path,
        Some(ACME_KEY),
        r#"{"note": "policy sold"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = request(
        http,
        "POST",
        &path,
        Some(ACME_KEY),
        r#"{"payout_cents": 1000}"#,
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["payout_cents"].as_i64(), v["margin_cents"].as_i64()),
        (Some(1000), Some(500)),
        "{v}"
    );
    let history = v["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{v}");
    assert_eq!(
        history
            .iter()
            .map(|e| (
                e["seq"].as_i64(),
                e["by"].as_str(),
                e["old_payout_cents"].as_i64(),
                e["new_payout_cents"].as_i64()
            ))
            .collect::<Vec<_>>(),
        [
            (Some(1), Some("acme-crm"), Some(1200), Some(1200)),
            (Some(2), Some("acme-crm"), Some(1200), Some(1000))
        ]
    );
    assert_eq!(history[0]["note"], "policy sold");

    // two events, two targets: four signed deliveries, each with its own key
    let received = wait_for(30, || {
        let g = got.lock().unwrap().clone();
        (g.len() >= 4).then_some(g)
    })
    .unwrap_or_else(|| panic!("postbacks not received:\n{}", dce.log()));
    std::thread::sleep(Duration::from_secs(2)); // nothing more comes
    let received_now = got.lock().unwrap().clone();
    assert_eq!(received_now.len(), 4, "{received_now:#?}");
    let mut keys = Vec::new();
    for (p, headers, body) in &received {
        let secret = if p == "/acme" {
            ACME_SECRET
        } else {
            PUB_SECRET
        };
        let sig = header(headers, "x-dce-signature").unwrap_or_else(|| panic!("{headers:?}"));
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{sig}"));
        assert_eq!(sig, dce::webhooks::signature(secret, t, body), "{p} {body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let key = header(headers, "idempotency-key").unwrap().to_owned();
        assert_eq!(key, v["id"].as_str().unwrap());
        assert_eq!(v["event"], "call.converted");
        assert_eq!(v["call_id"], id.as_str());
        assert_eq!(
            (v["converted"].as_bool(), v["by"].as_str()),
            (Some(true), Some("acme-crm")),
            "{v}"
        );
        assert!(
            v.get("note").is_none(),
            "the note stays in the database: {v}"
        );
        if p == "/acme" {
            assert_eq!(v["price_cents"], 1500, "{v}");
        } else {
            assert_eq!(v["carrier"], "carrier-a");
            let want = if v["seq"] == 1 { 1200 } else { 1000 };
            assert_eq!(v["payout_cents"], want, "{v}");
            assert!(v.get("price_cents").is_none(), "{v}");
        }
        keys.push(key);
    }
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{id}:call.converted:1:buyer:acme"),
            format!("{id}:call.converted:1:carrier:carrier-a"),
            format!("{id}:call.converted:2:buyer:acme"),
            format!("{id}:call.converted:2:carrier:carrier-a"),
        ]
    );

    // /v1/webhooks: delivered, no secret
    let w = wait_for(10, || {
        let w = get_json(http, &format!("/v1/webhooks?call_id={id}"), OPS_KEY);
        (w["counts"]["delivered"] == 4).then_some(w)
    })
    .unwrap_or_else(|| panic!("not shown delivered:\n{}", dce.log()));
    let deliveries = w["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 4, "{w}");
    for d in deliveries {
        assert_eq!(
            (d["state"].as_str(), d["attempts"].as_i64()),
            (Some("delivered"), Some(1)),
            "{d}"
        );
        assert!(
            d["delivered_at"].is_string() && d["next_attempt_at"].is_null(),
            "{d}"
        );
        assert!(d["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://127.0.0.1:{hook}/")));
    }
    let text = w.to_string();
    assert!(
        !text.contains(ACME_SECRET) && !text.contains(PUB_SECRET),
        "{text}"
    );

    // /v1/cdrs: converted, by whom, when, the adjusted money
    let v = get_json(http, "/v1/cdrs", OPS_KEY);
    let row = &v["cdrs"][0];
    assert_eq!(
        (row["converted"].as_bool(), row["converted_by"].as_str()),
        (Some(true), Some("acme-crm")),
        "{row}"
    );
    assert_eq!(
        (row["payout_cents"].as_i64(), row["margin_cents"].as_i64()),
        (Some(1000), Some(500)),
        "{row}"
    );
    assert!(
        row["converted_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{row}"
    );
    // the history, read back
    let v = get_json(http, &path, ACME_KEY);
    assert_eq!(v["history"].as_array().map(Vec::len), Some(2), "{v}");
    let (code, _) = request(http, "GET", &path, Some(BRAVO_KEY), "");
    assert_eq!(code, 403);

    let (ok, log) = dce.stop();
    assert!(ok, "{log}");
    for secret in [ACME_SECRET, PUB_SECRET, ACME_KEY, BRAVO_KEY] {
        assert!(!log.contains(secret), "a secret in the log");
    }
}
