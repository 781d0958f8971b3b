//! End-to-end compliance with the real binary and SIPp: a caller on the national DNC (a file
//! built by `dce dnc build`) gets 603 with the DNC reason and no buyer rings; a caller outside
//! the calling window gets 603 TCPA_HOURS; the fourth call in a day from one number gets
//! TCPA_FREQUENCY.

mod support;

use chrono::Timelike;
use std::path::Path;
use support::dce_process::{free_port, Dce};
use support::sipp::{self, Background};

fn config(port: u16, dir: &Path, compliance: &str, buyer_port: u16) -> String {
    format!(
        "[node]\nid = \"c\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [compliance]\n{compliance}\n[cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{buyer_port}\"\nbid_cents = 1500\n",
        dir.join("cdr.jsonl").display()
    )
}

/// A carrier scenario expecting `code`, checking `Reason` carries `text` when given.
fn expecting(dce: &Dce, code: u16, text: Option<&str>) -> std::path::PathBuf {
    let mut s = std::fs::read_to_string(sipp::scenario("uac_expect.xml"))
        .unwrap()
        .replace("EXPECTED_CODE", &code.to_string());
    if let Some(t) = text {
        s = s.replace(
            &format!("<recv response=\"{code}\"/>"),
            &format!(
                "<recv response=\"{code}\"><action><ereg regexp=\"text=.{t}.\" search_in=\"hdr\" header=\"Reason:\" check_it=\"true\" assign_to=\"reason\"/></action></recv>\n  <Reference variables=\"reason\"/>"
            ),
        );
    }
    let p = dce
        .dir()
        .join(format!("expect_{code}_{}.xml", text.unwrap_or("")));
    std::fs::write(&p, s).unwrap();
    p
}

fn carrier(bin: &std::path::PathBuf, scenario: &Path, dce: &Dce, m: u32) -> (bool, String) {
    let mut args = sipp::args(
        scenario,
        free_port(),
        &["-s", "+18005550100", "-m", &m.to_string(), "-d", "100"],
    );
    args.push(dce.sip.to_string());
    let out = sipp::run(bin, &args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn cdr_compliance(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cdr.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["compliance"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn national_dnc_caller_gets_603_and_no_buyer_rings() {
    let Some(bin) = sipp::sipp() else { return };
    let tmp = support::dce_process::TempDir::new("dnc");
    let list = tmp.0.join("registry.txt");
    std::fs::write(&list, "2125550000\n3105551234\n+17135550000\n").unwrap();
    let dnc = tmp.0.join("national.dnc");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dce"))
        .args(["dnc", "build"])
        .arg(&list)
        .arg(&dnc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 numbers"));
    let bp = free_port();
    let compliance = format!(
        "national_dnc = \"{}\"\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}",
        dnc.display()
    );
    let dce = Dce::start_with(|port, dir| config(port, dir, &compliance, bp));
    let buyer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bp, &["-m", "1"]),
    );
    let (ok, out) = carrier(&bin, &expecting(&dce, 603, Some("DNC")), &dce, 1);
    assert!(ok, "expected 603 DNC:\n{out}");
    let (buyer_done, _) = buyer.finish(2);
    assert!(!buyer_done, "no buyer saw an INVITE");
    let (_, log, dir) = dce.stop_keep();
    assert_eq!(cdr_compliance(&dir.0), vec!["reject:DNC"], "{log}");
}

#[test]
fn calling_hours_and_frequency() {
    let Some(bin) = sipp::sipp() else { return };
    // A window two hours away from now in Los Angeles (the SIPp caller is +1 310).
    let h = chrono::Utc::now()
        .with_timezone(&chrono_tz::America::Los_Angeles)
        .hour();
    let (a, b) = if h + 3 <= 23 {
        (h + 2, h + 3)
    } else {
        (h - 3, h - 2)
    };
    let bp = free_port();
    let closed = format!("calling_hours = {{ start = \"{a:02}:00\", end = \"{b:02}:00\" }}");
    let dce = Dce::start_with(|port, dir| config(port, dir, &closed, bp));
    let (ok, out) = carrier(&bin, &expecting(&dce, 603, Some("TCPA_HOURS")), &dce, 1);
    assert!(ok, "expected 603 TCPA_HOURS:\n{out}");
    let (_, _, dir) = dce.stop_keep();
    assert_eq!(cdr_compliance(&dir.0), vec!["reject:TCPA_HOURS"]);

    let freq = "calling_hours = { start = \"00:00\", end = \"24:00\" }\nmax_calls_per_day = 3";
    let dce = Dce::start_with(|port, dir| config(port, dir, freq, bp));
    let buyer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bp, &["-m", "3"]),
    );
    let (ok, out) = carrier(&bin, &sipp::scenario("uac_call.xml"), &dce, 3);
    assert!(ok, "three calls connect:\n{out}");
    assert!(buyer.finish(10).0);
    let (ok, out) = carrier(&bin, &expecting(&dce, 603, Some("TCPA_FREQUENCY")), &dce, 1);
    assert!(ok, "the fourth gets TCPA_FREQUENCY:\n{out}");
    let (_, _, dir) = dce.stop_keep();
    let verdicts = cdr_compliance(&dir.0);
    assert_eq!(verdicts.len(), 4);
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| *v == "pass:dnc,tcpa_hours,frequency")
            .count(),
        3,
        "{verdicts:?}"
    );
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| *v == "reject:TCPA_FREQUENCY")
            .count(),
        1
    );
}
