//! Digest authentication towards buyers (RFC 3261 §22, issue #13): the real `dce` binary with
//! SIPp as carrier and as buyer trunks. The trunk `acme` challenges every INVITE with `407`
//! and checks DCE's answer with SIPp's own digest check (`verifyauth`), so the test does not
//! grade DCE's digest with DCE's code.

mod support;

use serde_json::Value;
use support::dce_process::{free_port, jsonl_cdrs, outcomes, Dce};
use support::sipp::{self, Background};

/// The buyer `acme` (challenging, bid 900) with `password` in a file, and `bravo` (answers at
/// once, bid 100).
fn config(port: u16, dir: &std::path::Path, acme: u16, bravo: u16, password: &str) -> String {
    let secret = dir.join("acme.pass");
    std::fs::write(&secret, format!("{password}\n")).unwrap();
    format!(
        "[node]\nid = \"auth\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [media]\nport_min = 42000\nport_max = 42999\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{acme}\"\nbid_cents = 900\n\
         auth = {{ user = \"dce-acme\", password_file = \"{}\" }}\n\
         [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bravo}\"\nbid_cents = 100\n",
        dir.join("cdr.jsonl").display(),
        secret.display()
    )
}

/// One call through DCE to the challenging `acme` (and `bravo` behind it); the CDR.
/// `uas_challenge.xml` as it is (407), or in its 401 / WWW-Authenticate form, in DCE's
/// directory.
fn challenge_scenario(dce: &Dce, code: u16) -> std::path::PathBuf {
    let text = std::fs::read_to_string(sipp::scenario("uas_challenge.xml")).unwrap();
    let text = match code {
        407 => text,
        401 => text
            .replace("407 Proxy Authentication Required", "401 Unauthorized")
            .replace("Proxy-Authenticate:", "WWW-Authenticate:"),
        _ => unreachable!("a digest challenge is 401 or 407"),
    };
    let path = dce.dir().join(format!("uas_challenge_{code}.xml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn one_call(code: u16, password: &str, bravo_answers: bool) -> (Value, String) {
    let bin = sipp::sipp().expect("checked by the caller");
    let (ap, bp) = (free_port(), free_port());
    let dce = Dce::start_with(|port, dir| config(port, dir, ap, bp, password));
    let acme = Background::start(
        &bin,
        &sipp::args(&challenge_scenario(&dce, code), ap, &["-m", "1"]),
    );
    let bravo = bravo_answers.then(|| {
        Background::start(
            &bin,
            &sipp::args(&sipp::scenario("uas_answer.xml"), bp, &["-m", "1"]),
        )
    });
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "200"],
    );
    let (aok, aout) = acme.finish(20);
    if let Some(b) = bravo {
        let (bok, bout) = b.finish(20);
        assert!(bok, "bravo sipp failed:\n{bout}");
    }
    let (_, log, dir) = dce.stop_keep();
    assert!(ok, "carrier sipp failed:\n{out}\nDCE log:\n{log}");
    assert!(
        aok,
        "acme sipp (the challenging trunk) failed:\n{aout}\nDCE log:\n{log}"
    );
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    (cdrs[0].clone(), log)
}

#[test]
fn a_challenged_invite_is_answered_and_the_call_connects() {
    if sipp::sipp().is_none() {
        return;
    }
    let (cdr, log) = one_call(401, "s3cret-acme", false);
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["buyer_id"], "acme", "{cdr}");
    assert_eq!(outcomes(&cdr)[0], "acme=won", "{cdr}");
    assert!(!log.contains("s3cret-acme"), "the password is never logged");
    assert!(!cdr.to_string().contains("s3cret-acme"), "nor in the CDR");
}

#[test]
fn a_wrong_password_gives_the_call_to_the_next_bidder() {
    if sipp::sipp().is_none() {
        return;
    }
    let (cdr, log) = one_call(407, "not-the-password", true);
    assert_eq!(cdr["disposition"], "answered", "{cdr}");
    assert_eq!(cdr["buyer_id"], "bravo", "{cdr}");
    assert_eq!(
        outcomes(&cdr),
        vec!["acme=attempted:407".to_string(), "bravo=won".to_string()],
        "{cdr}"
    );
    assert!(
        !log.contains("not-the-password"),
        "the password is never logged"
    );
}
