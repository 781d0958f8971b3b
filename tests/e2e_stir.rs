//! STIR/SHAKEN end to end (issue #16): the real `dce` binary, a SIPp carrier sending INVITEs
//! with an `Identity` signed for each call (iat = now) by a test STI PKI, three SIPp buyers, and
//! a real HTTPS certificate server on loopback (`support::cert_server`) serving the signer's
//! chain at the `x5u`. The campaign requires attestation B: an A call goes to acme (who takes
//! only A), a B call to cobalt (acme is excluded, bravo's bid is halved for B), a C call is 608,
//! a tampered one 438, a stale one 403, one without Identity 428, one whose certificate server
//! never answers 436. The buyers get the carrier's Identity byte for byte; the certificate is
//! fetched once for every call naming it. With the certificate server stopped, a call naming
//! the cached `x5u` still verifies and one naming an uncached `x5u` is 436. The verdicts are in
//! `/v1/cdrs`, the CDR file and `/metrics`.
//!
//! With `on_fail = "flag"` and `sign_div`, a call below the requirement rings on with a
//! `Reason: STIR` header, and the buyer reached at a number of its own also gets DCE's `div`
//! PASSporT, which verifies with DCE's certificate; a buyer at the dialled number gets the
//! carrier's Identity only.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::cert_server::CertServer;
use support::dce_process::{free_port, jsonl_cdrs, Dce, TempDir};
use support::http::{get_json, get_text, OPS_KEY, OPS_SHA};
use support::sipp::{self, Background};
use support::stir_pki::{tampered, Pki};

/// `[stir] fetch_timeout_ms`.
const FETCH_TIMEOUT_MS: u64 = 500;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn config(
    port: u16,
    dir: &Path,
    http: u16,
    root_pem: &str,
    https_ca: &Path,
    buyers: [u16; 3],
) -> String {
    std::fs::write(dir.join("sti-root.pem"), root_pem).unwrap();
    format!(
        "[node]\nid = \"stir\"\n\
         [sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\nmax_udp_request_bytes = 8000\n\
         [storage]\ndatabase_url = \"sqlite://{d}/dce.db\"\nspool_dir = \"{d}/spool\"\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{OPS_SHA}\", role = \"admin\" }}]\n\
         [cdr]\njsonl_path = \"{d}/cdr.jsonl\"\n\
         [stir]\nca_file = \"{d}/sti-root.pem\"\nx5u_allow = [\"127.0.0.1\"]\nx5u_ca_file = \"{ca}\"\nfetch_timeout_ms = {FETCH_TIMEOUT_MS}\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nstir = {{ require = \"B\", on_fail = \"reject\" }}\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{}\"\nbid_cents = 1500\nmin_attestation = \"A\"\n\
         [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{}\"\nbid_cents = 1200\nattestation_bid = {{ B = 0.5 }}\n\
         [[buyer]]\nid = \"cobalt\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{}\"\nbid_cents = 900\n",
        buyers[0],
        buyers[1],
        buyers[2],
        d = dir.display(),
        ca = https_ca.display(),
    )
}

/// A buyer SIPp answering `calls` calls on `port`, logging every message to `log`.
fn buyer(bin: &PathBuf, port: u16, calls: u32, log: &Path) -> Background {
    let calls = calls.to_string();
    let log = log.display().to_string();
    Background::start(
        bin,
        &sipp::args(
            &sipp::scenario("uas_answer.xml"),
            port,
            &["-m", &calls, "-trace_msg", "-message_file", &log],
        ),
    )
}

/// The `Identity` values of the INVITEs a SIPp's message log shows received, one per Call-ID
/// (a retransmitted INVITE is counted once), in order.
fn invites_identities(log: &Path) -> Vec<(String, Vec<String>)> {
    invites_header(log, "Identity")
}

/// The values of header `name` of the INVITEs a SIPp's message log shows received, one per
/// Call-ID (a retransmitted INVITE is counted once), in order.
fn invites_header(log: &Path, name: &str) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for chunk in text.split("message received").skip(1) {
        let msg = chunk.split_once(":\n").map(|(_, m)| m).unwrap_or("");
        let msg = msg.trim_start();
        if !msg.starts_with("INVITE ") {
            continue;
        }
        let header = |name: &str| -> Vec<String> {
            msg.lines()
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_owned())
                })
                .collect()
        };
        let call_id = header("Call-ID").join(",");
        if out.iter().all(|(c, _)| *c != call_id) {
            out.push((call_id, header(name)));
        }
    }
    out
}

struct Carrier<'a> {
    bin: &'a PathBuf,
    dce: &'a Dce,
    dir: &'a Path,
}

impl Carrier<'_> {
    /// Place call `name` (its Call-ID starts with it) with this `Identity` value, which must be
    /// `<token>;info=<url>;alg=ES256;ppt=shaken` as the scenario rebuilds it from its two CSV
    /// fields; the final code it got and how long the SIPp run took.
    fn call(&self, name: &str, identity: &str) -> (u16, Duration) {
        let (token, params) = identity.split_once(';').unwrap();
        let url = params
            .strip_prefix("info=<")
            .and_then(|p| p.split_once('>'))
            .map(|(u, _)| u)
            .unwrap();
        assert_eq!(
            format!("{token};info=<{url}>;alg=ES256;ppt=shaken"),
            identity,
            "the scenario sends exactly this value"
        );
        let csv = self.dir.join(format!("{name}.csv"));
        std::fs::write(&csv, format!("SEQUENTIAL\n{token};{url};\n")).unwrap();
        let log = self.dir.join(format!("{name}-carrier.log"));
        let (code, took, out) = self.run(
            &sipp::scenario("uac_identity.xml"),
            name,
            &[
                "-inf",
                &csv.display().to_string(),
                "-trace_logs",
                "-log_file",
                &log.display().to_string(),
            ],
        );
        assert!(code, "call {name}:\n{out}\n{}", self.dce.log());
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let finals: Vec<u16> = logged
            .lines()
            .filter_map(|l| l.split("final ").nth(1))
            .filter_map(|c| c.trim().get(..3)?.parse().ok())
            .collect();
        assert_eq!(finals.len(), 1, "call {name}: {logged}");
        (finals[0], took)
    }

    /// Place call `name` without `Identity`, expecting `code`.
    fn call_without_identity(&self, name: &str, code: u16) {
        let scenario = self.dir.join(format!("{name}.xml"));
        let s = std::fs::read_to_string(sipp::scenario("uac_expect.xml"))
            .unwrap()
            .replace("EXPECTED_CODE", &code.to_string());
        std::fs::write(&scenario, s).unwrap();
        let (ok, _, out) = self.run(&scenario, name, &[]);
        assert!(
            ok,
            "call {name} expected {code}:\n{out}\n{}",
            self.dce.log()
        );
    }

    fn run(&self, scenario: &Path, name: &str, extra: &[&str]) -> (bool, Duration, String) {
        let cid = format!("{name}-%u@%s");
        let mut args = sipp::args(
            scenario,
            free_port(),
            &[
                "-s",
                "+18005550100",
                "-m",
                "1",
                "-d",
                "200",
                "-cid_str",
                &cid,
            ],
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.dce.sip.to_string());
        let t0 = Instant::now();
        let out = sipp::run(self.bin, &args);
        let took = t0.elapsed();
        (
            out.status.success(),
            took,
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// `dce_stir_verdicts_total` by verdict.
fn verdicts(metrics: &str) -> BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("dce_stir_verdicts_total{verdict=\""))
        .filter_map(|l| {
            let (v, n) = l.split_once("\"} ")?;
            Some((v.to_owned(), n.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn stir_verdicts_route_and_refuse_real_calls_with_a_real_certificate_server() {
    let Some(bin) = sipp::sipp() else { return };
    let tmp = TempDir::new("e2e-stir");
    let mut srv = CertServer::start(&tmp.0);
    let mut pki = Pki::new(true, (2024, 2030));
    srv.serve("/sp.pem", pki.chain_pem.as_bytes(), Some("max-age=600"));
    srv.serve("/spare.pem", pki.chain_pem.as_bytes(), Some("max-age=600"));
    srv.hang("/hang.pem");
    let (http, pa, pb, pc) = (free_port(), free_port(), free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        config(port, dir, http, &pki.root_pem, &srv.ca_pem, [pa, pb, pc])
    });
    let logs = |b: &str| tmp.0.join(format!("{b}-messages.log"));
    let acme = buyer(&bin, pa, 2, &logs("acme"));
    let bravo = buyer(&bin, pb, 1, &logs("bravo"));
    let cobalt = buyer(&bin, pc, 1, &logs("cobalt"));
    let carrier = Carrier {
        bin: &bin,
        dce: &dce,
        dir: &tmp.0,
    };
    let (sp, hang_url, spare) = (
        srv.url("/sp.pem"),
        srv.url("/hang.pem"),
        srv.url("/spare.pem"),
    );
    let mut sign = |x5u: &str, attest: &str, iat: i64| {
        pki.x5u = x5u.to_owned();
        pki.identity(attest, "13105551234", "18005550100", iat)
    };

    // (call, final code)
    let mut got: Vec<(&str, u16)> = Vec::new();
    let id_a = sign(&sp, "A", now_s());
    got.push(("a", carrier.call("a", &id_a).0));
    let id_b = sign(&sp, "B", now_s());
    got.push(("b", carrier.call("b", &id_b).0));
    let id_c = sign(&sp, "C", now_s());
    got.push(("c", carrier.call("c", &id_c).0));
    let bad = tampered(&sign(&sp, "A", now_s()));
    got.push(("tampered", carrier.call("tampered", &bad).0));
    let stale = sign(&sp, "A", now_s() - 120);
    got.push(("stale", carrier.call("stale", &stale).0));
    carrier.call_without_identity("none", 428);
    got.push(("none", 428));
    let hang = sign(&hang_url, "A", now_s());
    let (code, took) = carrier.call("hang", &hang);
    eprintln!("certificate server hanging: {code} after {took:?} (SIPp run, fetch_timeout_ms = {FETCH_TIMEOUT_MS})");
    got.push(("hang", code));
    assert_eq!(
        srv.count("/sp.pem"),
        1,
        "one fetch for every call naming it"
    );
    assert_eq!(srv.count("/hang.pem"), 1);

    // the certificate server goes away
    srv.stop();
    let id_cached = sign(&sp, "A", now_s());
    got.push(("cached", carrier.call("cached", &id_cached).0));
    let uncached = sign(&spare, "A", now_s());
    let (code, took) = carrier.call("uncached", &uncached);
    eprintln!("certificate server stopped, uncached x5u: {code} after {took:?} (SIPp run)");
    got.push(("uncached", code));
    // generous: the refusal came, not stuck behind the INVITE's 32 s of retransmissions
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        (srv.count("/sp.pem"), srv.count("/spare.pem")),
        (1, 0),
        "nothing reached the stopped server"
    );

    assert_eq!(
        got,
        [
            ("a", 200),
            ("b", 200),
            ("c", 608),
            ("tampered", 438),
            ("stale", 403),
            ("none", 428),
            ("hang", 436),
            ("cached", 200),
            ("uncached", 436),
        ]
    );

    // the buyers: acme got the A calls, cobalt the B call, bravo nothing; each INVITE with the
    // carrier's Identity, byte for byte, and no other
    let (ok_a, out_a) = acme.finish(20);
    let (ok_c, out_c) = cobalt.finish(20);
    let _ = bravo.finish(0);
    assert!(ok_a, "acme: {out_a}");
    assert!(ok_c, "cobalt: {out_c}");
    let ids = |b: &str| -> Vec<Vec<String>> {
        invites_identities(&logs(b))
            .into_iter()
            .map(|(_, ids)| ids)
            .collect()
    };
    assert_eq!(ids("acme"), [vec![id_a.clone()], vec![id_cached.clone()]]);
    assert_eq!(ids("cobalt"), [vec![id_b.clone()]]);
    assert!(ids("bravo").is_empty(), "{:?}", ids("bravo"));

    // the CDRs: the file (by Call-ID) and the same calls in /v1/cdrs
    let want: [(&str, u16, &str, Option<&str>, &str); 9] = [
        ("a", 200, "answered", Some("acme"), "A"),
        ("b", 200, "answered", Some("cobalt"), "B"),
        ("c", 608, "rejected", None, "C"),
        ("tampered", 438, "rejected", None, "failed:bad_signature"),
        ("stale", 403, "rejected", None, "failed:stale"),
        ("none", 428, "rejected", None, "no_identity"),
        ("hang", 436, "rejected", None, "failed:fetch_failed"),
        ("cached", 200, "answered", Some("acme"), "A"),
        ("uncached", 436, "rejected", None, "failed:fetch_failed"),
    ];
    let end = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let v = get_json(http, "/v1/cdrs?limit=100", OPS_KEY);
        let rows = v["cdrs"].as_array().cloned().unwrap_or_default();
        if rows.len() >= want.len() || Instant::now() > end {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rows.len(), want.len(), "{rows:#?}\n{}", dce.log());
    let metrics = get_text(http, "/metrics");
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "{log}");
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), want.len());
    for (name, code, disposition, buyer_id, stir) in want {
        let cdr = cdrs
            .iter()
            .find(|c| {
                c["carrier_call_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(&format!("{name}-")))
            })
            .unwrap_or_else(|| panic!("no CDR for call {name}"));
        assert_eq!(cdr["carrier_code"], code, "{name}: {cdr:#}");
        assert_eq!(cdr["stir"], stir, "{name}: {cdr:#}");
        let row = rows
            .iter()
            .find(|r| r["id"] == cdr["id"])
            .unwrap_or_else(|| panic!("{name}: not in /v1/cdrs: {rows:#?}"));
        assert_eq!(row["disposition"], disposition, "{name}: {row:#}");
        assert_eq!(row["buyer_id"].as_str(), buyer_id, "{name}: {row:#}");
        assert_eq!(row["stir"], stir, "{name}: {row:#}");
        if name == "b" {
            let bids: Vec<(String, u64, String)> = cdr["bids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        b["buyer_id"].as_str().unwrap().to_owned(),
                        b["amount_cents"].as_u64().unwrap(),
                        b["outcome"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert!(
                bids.contains(&("acme".into(), 1500, "excluded:attestation".into())),
                "{bids:?}"
            );
            assert!(
                bids.iter().any(|b| b.0 == "bravo" && b.1 == 600),
                "bravo's 1200 halved for B: {bids:?}"
            );
        }
    }
    let v = verdicts(&metrics);
    let expect: BTreeMap<String, u64> = [
        ("A", 2),
        ("B", 1),
        ("C", 1),
        ("failed:bad_signature", 1),
        ("failed:stale", 1),
        ("no_identity", 1),
        ("failed:fetch_failed", 2),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(v, expect, "{metrics}");
}

#[test]
fn a_flagged_call_rings_on_with_a_reason_and_a_retargeted_buyer_gets_a_verifiable_div() {
    let Some(bin) = sipp::sipp() else { return };
    let tmp = TempDir::new("e2e-stir-div");
    let srv = CertServer::start(&tmp.0);
    let mut pki = Pki::new(true, (2024, 2030));
    srv.serve("/sp.pem", pki.chain_pem.as_bytes(), Some("max-age=600"));
    pki.x5u = srv.url("/sp.pem");
    const DCE_X5U: &str = "https://cert.dce.example/dce.pem";
    let mine = Pki::new(true, (2024, 2030)).with_x5u(DCE_X5U);
    let key = tmp.0.join("dce.key");
    std::fs::write(&key, &mine.key_pem).unwrap();
    let (http, pa, pb, pc) = (free_port(), free_port(), free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        // acme (A only) at the dialled number; cobalt reached at +12125550199
        config(port, dir, http, &pki.root_pem, &srv.ca_pem, [pa, pb, pc])
            .replace(
                "stir = { require = \"B\", on_fail = \"reject\" }",
                "stir = { require = \"A\", on_fail = \"flag\" }",
            )
            .replace(
                &format!("sip:{{called}}@127.0.0.1:{pc}"),
                &format!("sip:+12125550199@127.0.0.1:{pc}"),
            )
            .replace(
                "[[carrier]]",
                &format!(
                    "sign_div = {{ x5u = \"{DCE_X5U}\", key = \"{}\" }}\n[[carrier]]",
                    key.display()
                ),
            )
    });
    let logs = |b: &str| tmp.0.join(format!("{b}-messages.log"));
    let acme = buyer(&bin, pa, 1, &logs("acme"));
    let cobalt = buyer(&bin, pc, 1, &logs("cobalt"));
    let carrier = Carrier {
        bin: &bin,
        dce: &dce,
        dir: &tmp.0,
    };
    // A: acme, not flagged, no div (its number is the dialled one)
    let id_a = pki.identity("A", "13105551234", "18005550100", now_s());
    assert_eq!(carrier.call("a", &id_a).0, 200);
    // B under require = "A": flagged, goes on; acme takes only A, bravo's bid is halved for B
    // (1200 → 600 < cobalt's 900): cobalt, retargeted, gets the div
    let id_b = pki.identity("B", "13105551234", "18005550100", now_s());
    assert_eq!(carrier.call("b", &id_b).0, 200);
    let (ok_a, out_a) = acme.finish(20);
    let (ok_c, out_c) = cobalt.finish(20);
    assert!(ok_a, "acme: {out_a}");
    assert!(ok_c, "cobalt: {out_c}");

    let only = |b: &str, h: &str| -> Vec<String> {
        let mut v = invites_header(&logs(b), h);
        assert_eq!(v.len(), 1, "{b} got one INVITE: {v:?}");
        v.remove(0).1
    };
    assert_eq!(only("acme", "Identity"), [id_a]);
    assert!(
        only("acme", "Reason").is_empty(),
        "{:?}",
        only("acme", "Reason")
    );
    let ids = only("cobalt", "Identity");
    assert_eq!(ids.len(), 2, "the carrier's and DCE's div: {ids:?}");
    assert_eq!(ids[0], id_b, "the carrier's Identity, byte for byte");
    let claims = support::stir_div::div_claims(&ids[1], &mine, DCE_X5U, now_s());
    assert_eq!(claims["orig"]["tn"], "13105551234");
    assert_eq!(claims["div"]["tn"], "18005550100");
    assert_eq!(claims["dest"]["tn"][0], "12125550199");
    assert!(
        (claims["iat"].as_i64().unwrap() - now_s()).abs() < 60,
        "{claims}"
    );
    let reason = only("cobalt", "Reason");
    assert_eq!(reason.len(), 1, "{reason:?}");
    assert!(reason[0].starts_with("STIR;cause="), "{reason:?}");

    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "{log}");
    let cdrs = jsonl_cdrs(&dir.0);
    let stir_of = |name: &str| {
        cdrs.iter()
            .find(|c| {
                c["carrier_call_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(&format!("{name}-")))
            })
            .map(|c| (c["stir"].clone(), c["buyer_id"].clone()))
            .unwrap_or_else(|| panic!("no CDR for {name}: {cdrs:#?}"))
    };
    assert_eq!(stir_of("a"), ("A".into(), "acme".into()));
    assert_eq!(stir_of("b"), ("B".into(), "cobalt".into()));
}
