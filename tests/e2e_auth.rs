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

/// The trunk challenges the INVITE and, with the same nonce, DCE's BYE: the BYE's answer is the
/// second request with that nonce, so it carries `nc=00000002` (RFC 7616 §3.4) — the SIPp
/// trunk checks that and the answer itself (`uas_challenge_bye.xml`).
#[test]
fn a_nonce_challenged_again_is_answered_with_the_next_nonce_count() {
    let Some(bin) = sipp::sipp() else {
        return;
    };
    let (ap, bp) = (free_port(), free_port());
    let dce = Dce::start_with(|port, dir| config(port, dir, ap, bp, "s3cret-acme"));
    let acme = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_challenge_bye.xml"), ap, &["-m", "1"]),
    );
    let (ok, out) = sipp::carrier(
        &bin,
        &sipp::scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "200"],
    );
    let (aok, aout) = acme.finish(20);
    let (_, log, dir) = dce.stop_keep();
    assert!(ok, "carrier sipp failed:\n{out}\nDCE log:\n{log}");
    assert!(
        aok,
        "the trunk refused DCE's answer to the BYE's challenge:\n{aout}\nDCE log:\n{log}"
    );
    let cdrs = jsonl_cdrs(&dir.0);
    assert_eq!(outcomes(&cdrs[0])[0], "acme=won", "{}", cdrs[0]);
    assert_eq!(cdrs[0]["hangup_by"], "carrier", "{}", cdrs[0]);
}

/// Kamailio's `auth` module as the buyer's trunk: it challenges every INVITE with a `407`
/// (SHA-256, qop=auth) and checks DCE's answer itself (`pv_proxy_authenticate`), then relays
/// the call to SIPp, and challenges the BYE as well. A real peer grades DCE's SHA-256 digest,
/// not DCE's own code. With `code` 401 it does the same with `401` / `WWW-Authenticate`
/// (`pv_www_authenticate`, `www_challenge`).
fn kamailio_auth(
    dir: &std::path::Path,
    udp: u16,
    buyer: u16,
    password: &str,
    code: u16,
) -> std::path::PathBuf {
    let (check, challenge, answer) = match code {
        407 => (
            "pv_proxy_authenticate",
            "proxy_challenge",
            "Proxy-Authorization",
        ),
        401 => ("pv_www_authenticate", "www_challenge", "Authorization"),
        _ => unreachable!("a digest challenge is 401 or 407"),
    };
    let cfg = dir.join("kamailio.cfg");
    std::fs::write(
        &cfg,
        format!(
            r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
disable_tcp=yes
listen=udp:127.0.0.1:{udp}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "auth.so"
modparam("auth", "algorithm", "SHA-256")
request_route {{
    if (has_totag()) {{
        # The trunk challenges DCE's BYE and the INFO it relays too: DCE answers in the dialog.
        if (is_method("BYE|INFO")) {{
            if (!{check}("buyer.test", "{password}", "0")) {{
                {challenge}("buyer.test", "1");
                exit;
            }}
            xlog("L_INFO", "authenticated $rm from $au\n");
            consume_credentials();
        }}
        loose_route();
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (is_method("INVITE")) {{
        if (!{check}("buyer.test", "{password}", "0")) {{
            xlog("L_INFO", "challenged or refused INVITE (user $au) [$hdr({answer})] ruri=$ru\n");
            {challenge}("buyer.test", "1");
            exit;
        }}
        if ($au != "dce-acme") {{ sl_send_reply("403", "Wrong user"); exit; }}
        xlog("L_INFO", "authenticated INVITE from $au ($hdr({answer}))\n");
        consume_credentials();
    }}
    record_route();
    $du = "sip:127.0.0.1:{buyer}";
    t_relay();
    exit;
}}
"#
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn kamailio_checks_a_sha256_answer_to_its_407() {
    kamailio_grades(407, &[("s3cret-acme", true), ("not-the-password", false)]);
}

#[test]
fn kamailio_checks_a_sha256_answer_to_its_401() {
    kamailio_grades(401, &[("s3cret-acme", true), ("not-the-password", false)]);
}

/// One call per `(password, connects)` through DCE to Kamailio challenging with `code`.
fn kamailio_grades(code: u16, runs: &[(&str, bool)]) {
    let Some(bin) = sipp::sipp() else {
        return;
    };
    let Some(kamailio) = support::kamailio() else {
        return;
    };
    for &(password, connects) in runs {
        let (k_udp, buyer, bravo) = (free_port(), free_port(), free_port());
        let dce = Dce::start_with(|port, dir| config(port, dir, k_udp, bravo, password));
        let cfg = kamailio_auth(dce.dir(), k_udp, buyer, "s3cret-acme", code);
        let kam = support::Kamailio::start(&kamailio, &cfg, dce.dir());
        let b = connects.then(|| {
            Background::start(
                &bin,
                &sipp::args(&sipp::scenario("uas_answer_info.xml"), buyer, &["-m", "1"]),
            )
        });
        let fallback = (!connects).then(|| {
            Background::start(
                &bin,
                &sipp::args(&sipp::scenario("uas_answer.xml"), bravo, &["-m", "1"]),
            )
        });
        // The connected call carries an INFO from the carrier, relayed to the buyer.
        let uac = if connects {
            "uac_info.xml"
        } else {
            "uac_call.xml"
        };
        let (ok, out) = sipp::carrier(
            &bin,
            &sipp::scenario(uac),
            dce.sip,
            &["-m", "1", "-d", "200"],
        );
        assert!(
            ok,
            "carrier ({password}):\n{out}\nDCE:\n{}\nKamailio:\n{}",
            dce.log(),
            kam.log()
        );
        for s in [b, fallback].into_iter().flatten() {
            let (sok, sout) = s.finish(20);
            assert!(sok, "buyer ({password}):\n{sout}\nKamailio:\n{}", kam.log());
        }
        let klog = kam.log();
        let (_, log, dir) = dce.stop_keep();
        let cdrs = jsonl_cdrs(&dir.0);
        if connects {
            assert!(
                klog.contains("authenticated INVITE from dce-acme"),
                "{klog}"
            );
            assert!(
                klog.contains("algorithm=SHA-256"),
                "DCE answered with SHA-256: {klog}"
            );
            assert!(
                klog.contains("qop=auth") && klog.contains("nc=00000001"),
                "{klog}"
            );
            for m in ["BYE", "INFO"] {
                assert!(
                    klog.contains(&format!("authenticated {m} from dce-acme")),
                    "the challenge to DCE's {m} was answered: {klog}"
                );
            }
            assert_eq!(outcomes(&cdrs[0])[0], "acme=won", "{}", cdrs[0]);
        } else {
            assert!(!klog.contains("authenticated INVITE"), "{klog}");
            assert_eq!(
                outcomes(&cdrs[0]),
                [format!("acme=attempted:{code}"), "bravo=won".to_string()],
                "{}",
                cdrs[0]
            );
        }
        assert!(!log.contains(password), "the password is never logged");
    }
}
