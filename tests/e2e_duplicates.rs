//! Duplicate-call rules end to end (issue #15, item 2) with the real `dce` binary and SIPp:
//! a caller who got through is refused when they call again within the window, a restart
//! does not forget them (the memory is refilled from the CDR database), and two nodes sharing
//! Redis judge one caller the same way.

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
    let (ok, out) = sipp::expect_code(&bin, &dce, 603, &["-m", "1"]);
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
    let (ok, out) = sipp::expect_code(&bin, &dce, 603, &["-m", "1"]);
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

/// Two nodes sharing Redis, campaign rule `next_buyer`: the caller node A gave to acme is sent
/// past acme on node B; a buyer's own `reject` (bravo) keeps the third call, on A again, from
/// bravo too, so it is refused for want of a buyer.
#[test]
fn two_nodes_sharing_redis_judge_a_caller_the_same_way() {
    let Some(bin) = sipp::sipp() else { return };
    let Some(mut con) = support::redis_server::redis() else {
        return;
    };
    let prefix = format!("dce-dup-{}-{}", std::process::id(), free_port());
    let (acme, bravo) = (free_port(), free_port());
    let node = |port: u16, dir: &std::path::Path| {
        format!(
            "[node]\nid = \"n{port}\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [storage]\nredis_url = \"{}\"\nredis_key_prefix = \"{prefix}\"\nredis_timeout_ms = 500\n\
             database_url = \"sqlite://{}\"\nspool_dir = \"{}\"\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [cdr]\njsonl_path = \"{}\"\n\
             [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
             duplicates = {{ window_days = 30, after = \"connected\", action = \"next_buyer\" }}\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{acme}\"\nbid_cents = 1500\n\
             [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 1200\n\
             duplicates = {{ window_days = 1, after = \"connected\", action = \"reject\" }}\n",
            support::redis_server::REDIS,
            dir.join("dce.db").display(),
            dir.join("spool").display(),
            dir.join("cdr.jsonl").display()
        )
    };
    let a = Dce::start_with(node);
    let b = Dce::start_with(node);
    let answer = |port: u16| {
        Background::start(
            &bin,
            &sipp::args(&sipp::scenario("uas_answer.xml"), port, &["-m", "1"]),
        )
    };
    let call = |dce: &Dce| {
        sipp::carrier(
            &bin,
            &sipp::scenario("uac_call.xml"),
            dce.sip,
            &["-m", "1", "-d", "200"],
        )
    };
    let on_acme = answer(acme);
    let (ok, out) = call(&a);
    assert!(ok, "first call, node A:\n{out}\n{}", a.log());
    assert!(on_acme.finish(20).0, "acme answered on node A");
    let on_bravo = answer(bravo);
    let (ok, out) = call(&b);
    assert!(ok, "repeat call, node B:\n{out}\n{}", b.log());
    assert!(on_bravo.finish(20).0, "bravo answered on node B");
    let (ok, out) = sipp::expect_code(&bin, &a, 480, &["-m", "1"]);
    assert!(ok, "third call, node A: nobody left:\n{out}\n{}", a.log());

    let (_, log_a, dir_a) = a.stop_keep();
    let (_, log_b, dir_b) = b.stop_keep();
    let (ca, cb) = (jsonl_cdrs(&dir_a.0), jsonl_cdrs(&dir_b.0));
    support::redis_server::clean(&mut con, &prefix);
    assert_eq!((ca.len(), cb.len()), (2, 1), "{log_a}\n{log_b}");
    let outcomes = support::dce_process::outcomes;
    assert_eq!(outcomes(&ca[0]), ["acme=won", "bravo=lost"]);
    assert!(ca[0].get("duplicate").is_none(), "{}", ca[0]);
    assert_eq!(
        outcomes(&cb[0]),
        ["bravo=won", "acme=excluded:duplicate"],
        "{log_b}"
    );
    assert_eq!(cb[0]["duplicate"], "campaign:next_buyer");
    assert_eq!(
        outcomes(&ca[1]),
        ["acme=excluded:duplicate", "bravo=excluded:duplicate"],
        "{log_a}"
    );
    assert_eq!(
        ca[1]["duplicate"], "campaign:next_buyer,buyer:bravo:reject",
        "{}",
        ca[1]
    );
    assert_eq!(ca[1]["disposition"], "rejected");
    assert_eq!(
        support::dce_process::counter(&log_a, "duplicate_lookup_errors"),
        0,
        "{log_a}"
    );
}
