//! Duplicate-call rules end to end (issue #15, item 2) with the real `dce` binary and SIPp:
//! a caller who got through is refused when they call again within the window, and a
//! restart does not forget them (the memory is refilled from the CDR database).

mod support;

use support::dce_process::{free_port, jsonl_cdrs, Dce, TempDir};
use support::sipp::{self, Background};

/// A campaign that refuses a caller a buyer already answered in the last 30 days; SQLite and
/// the spool in `shared` (kept across restarts), the CDR file in the run's own `dir`.
fn config(port: u16, dir: &std::path::Path, shared: &std::path::Path, bravo: u16) -> String {
    format!(
        "[node]\nid = \"dup\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [storage]\ndatabase_url = \"sqlite://{}\"\nspool_dir = \"{}\"\n\
         [media]\nport_min = 47000\nport_max = 47999\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
         duplicates = {{ window_days = 30, after = \"connected\", action = \"reject\" }}\n\
         [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 1200\n",
        shared.join("dce.db").display(),
        shared.join("spool").display(),
        dir.join("cdr.jsonl").display()
    )
}

fn expect_code(bin: &std::path::PathBuf, dce: &Dce, code: u16) -> (bool, String) {
    let text = std::fs::read_to_string(sipp::scenario("uac_expect.xml"))
        .unwrap()
        .replace("EXPECTED_CODE", &code.to_string());
    let path = dce.dir().join(format!("uac_expect_{code}.xml"));
    std::fs::write(&path, text).unwrap();
    sipp::carrier(bin, &path, dce.sip, &["-m", "1"])
}

#[test]
fn a_repeat_caller_is_refused_and_a_restart_keeps_the_window() {
    let Some(bin) = sipp::sipp() else { return };
    let shared = TempDir::new("dup-db");
    let bravo = free_port();
    let dce = Dce::start_with(|port, dir| config(port, dir, &shared.0, bravo));
    let b = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bravo, &["-m", "1"]),
    );
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "200"],
    );
    assert!(ok, "first call:\n{out}\n{}", dce.log());
    assert!(b.finish(20).0, "bravo answered the first call");
    let (ok, out) = expect_code(&bin, &dce, 603);
    assert!(
        ok,
        "the repeat caller on the same run:\n{out}\n{}",
        dce.log()
    );
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "{log}");
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), 2, "{log}");
    assert_eq!(cdrs[0]["disposition"], "answered");
    assert!(cdrs[0].get("duplicate").is_none(), "{}", cdrs[0]);
    assert_eq!(
        (
            &cdrs[1]["disposition"],
            &cdrs[1]["duplicate"],
            &cdrs[1]["reason"]
        ),
        (
            &serde_json::json!("rejected"),
            &serde_json::json!("campaign:reject"),
            &serde_json::json!("duplicate caller")
        ),
        "{}",
        cdrs[1]
    );

    // A new process on the same database: the caller is still within the window.
    let dce = Dce::start_with(|port, dir| config(port, dir, &shared.0, bravo));
    dce.wait_for_log(
        "callers restored from the CDR database",
        std::time::Duration::from_secs(20),
    );
    assert!(
        dce.log().contains("calls=1"),
        "one call got through before the restart (the refused one is not history):\n{}",
        dce.log()
    );
    let (ok, out) = expect_code(&bin, &dce, 603);
    assert!(
        ok,
        "the repeat caller after a restart:\n{out}\n{}",
        dce.log()
    );
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "{log}");
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), 1, "{log}");
    assert_eq!(cdrs[0]["duplicate"], "campaign:reject", "{}", cdrs[0]);
}
