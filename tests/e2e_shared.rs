//! Two DCE nodes sharing one Redis: the frequency cap counts calls across the fleet, and a
//! number added to the shared internal DNC is refused by every node on its next call.

mod support;

use std::path::Path;
use support::dce_process::{free_port, Dce};
use support::sipp::{self, Background};

use support::redis_server::{redis, REDIS};

/// SHA-256 of "ops-secret".
const OPS_SHA: &str = "32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f";

fn config(port: u16, dir: &Path, prefix: &str, buyer_port: u16, http: u16) -> String {
    format!(
        "[node]\nid = \"n{port}\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [storage]\nredis_url = \"{REDIS}\"\nredis_key_prefix = \"{prefix}\"\nredis_timeout_ms = 200\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\nmax_calls_per_day = 2\n\
         [cdr]\njsonl_path = \"{}\"\n[[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{buyer_port}\"\nbid_cents = 1500\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{OPS_SHA}\", role = \"admin\" }}]\n",
        dir.join("cdr.jsonl").display()
    )
}

fn expect_603(dce: &Dce, text: &str) -> std::path::PathBuf {
    let s = std::fs::read_to_string(sipp::scenario("uac_expect.xml")).unwrap().replace(
        "<recv response=\"EXPECTED_CODE\"/>",
        &format!("<recv response=\"603\"><action><ereg regexp=\"text=.{text}.\" search_in=\"hdr\" header=\"Reason:\" check_it=\"true\" assign_to=\"r\"/></action></recv>\n  <Reference variables=\"r\"/>"),
    );
    let p = dce.dir().join(format!("expect_{text}.xml"));
    std::fs::write(&p, s).unwrap();
    p
}

fn call(bin: &std::path::PathBuf, scenario: &Path, dce: &Dce) -> (bool, String) {
    let mut args = sipp::args(
        scenario,
        free_port(),
        &["-s", "+18005550100", "-m", "1", "-d", "100"],
    );
    args.push(dce.sip.to_string());
    let out = sipp::run(bin, &args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn two_nodes_share_the_frequency_cap_and_the_internal_dnc() {
    let Some(bin) = sipp::sipp() else { return };
    let Some(mut con) = redis() else { return };
    let prefix = format!("dce-test-{}-{}", std::process::id(), free_port());
    let bp = free_port();
    let (http_a, http_b) = (free_port(), free_port());
    let a = Dce::start_with(|port, dir| config(port, dir, &prefix, bp, http_a));
    let b = Dce::start_with(|port, dir| config(port, dir, &prefix, bp, http_b));
    let buyer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bp, &["-m", "2"]),
    );
    // the SIPp caller is +1 310 555 1234: two calls, one through each node, are the day's cap
    let (ok, out) = call(&bin, &sipp::scenario("uac_call.xml"), &a);
    assert!(ok, "call 1 via node A:\n{out}");
    let (ok, out) = call(&bin, &sipp::scenario("uac_call.xml"), &b);
    assert!(ok, "call 2 via node B:\n{out}");
    assert!(buyer.finish(10).0);
    let (ok, out) = call(&bin, &expect_603(&a, "TCPA_FREQUENCY"), &a);
    assert!(ok, "call 3 via node A is over the fleet's cap:\n{out}");
    let count: i64 = redis::cmd("GET")
        .arg(format!("{prefix}:freq:auto:3105551234"))
        .query(&mut con)
        .unwrap();
    assert_eq!(count, 3, "one counter for the fleet");

    // the number put on the DNC through node A's API: the fleet-wide list in Redis has it
    let shared_dnc = format!("{prefix}:dnc:internal");
    let (code, body) = support::http::request(
        http_a,
        "PUT",
        "/v1/dnc/+13105551234",
        Some("ops-secret"),
        "",
    );
    assert_eq!(code, 200, "{body}");
    let on_b = support::http::get_json(http_b, "/v1/dnc/3105551234", "ops-secret");
    assert_eq!(on_b["shared"], true, "node B sees it in Redis: {on_b}");
    assert_eq!(
        on_b["internal"], false,
        "node B's own file does not have it: {on_b}"
    );
    let member: i64 = redis::cmd("SISMEMBER")
        .arg(&shared_dnc)
        .arg("3105551234")
        .query(&mut con)
        .unwrap();
    assert_eq!(member, 1);
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:freq:auto:3105551234"))
        .query(&mut con)
        .unwrap();
    let (ok, out) = call(&bin, &expect_603(&b, "DNC"), &b);
    assert!(ok, "node B refuses the number on the shared DNC:\n{out}");

    // each node counts its refusals by rule
    for (http, rule) in [(http_a, "TCPA_FREQUENCY"), (http_b, "DNC")] {
        let (_, m) = support::http::request(http, "GET", "/metrics", None, "");
        assert!(
            m.contains(&format!(
                "dce_compliance_rejections_total{{rule=\"{rule}\"}} 1\n"
            )),
            "{m}"
        );
        assert!(
            m.contains("dce_calls_total{outcome=\"rejected\"} 1\n"),
            "{m}"
        );
    }
    let (_, log_a, dir_a) = a.stop_keep();
    let (_, _, dir_b) = b.stop_keep();
    let _: () = redis::cmd("DEL")
        .arg(&shared_dnc)
        .arg(format!("{prefix}:freq:auto:3105551234"))
        .query(&mut con)
        .unwrap();
    let verdicts = |d: &Path| -> Vec<String> {
        std::fs::read_to_string(d.join("cdr.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["compliance"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        verdicts(&dir_a.0),
        vec!["pass:dnc,tcpa_hours,frequency", "reject:TCPA_FREQUENCY"],
        "{log_a}"
    );
    assert_eq!(
        verdicts(&dir_b.0),
        vec!["pass:dnc,tcpa_hours,frequency", "reject:DNC"]
    );
}
