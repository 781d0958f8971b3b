//! STIR/SHAKEN in simulated time (issue #16): every INVITE carrying `Identity` gets a verdict
//! (`A`, `B`, `C`, `no_identity`, `failed:<reason>`) in its CDR; the campaign's `stir` policy
//! refuses with the RFC 8224 code or flags the buyer INVITE with a `Reason`; a buyer's
//! `min_attestation` and `attestation_bid` change the auction; the certificate is fetched
//! through a lookup (never on the call path) and cached; the original `Identity` reaches the
//! buyer, with DCE's own `div` PASSporT when it signs. Every test ends with nothing held.

mod support;

use dce::counters::Counter;
use dce::stir::{cert, fetch, Failure};
use dce_sip::HeaderName;
use std::sync::Arc;
use std::time::Duration;
use support::sim::{Mode, Sim};
use support::stir_pki::Pki;

const S: Duration = Duration::from_secs(1);
const CALLER: &str = "+13105551234";
/// The sim's wall clock: 2026-07-15 16:00 UTC.
const NOW: i64 = 1_784_131_200;
const X5U: &str = "https://cr.sticr.example/sp.pem";

struct Setup {
    pki: Pki,
    dir: std::path::PathBuf,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("dce-stir-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki::new(true, (2024, 2030)).with_x5u(X5U);
        std::fs::write(dir.join("roots.pem"), &pki.root_pem).unwrap();
        Setup { pki, dir }
    }

    /// A config with `[stir]` (plus `stir_extra`), the campaign's `stir` line, the carrier's
    /// extra lines, and buyers acme (5090, 1500), bravo (5091, 1200), cobalt (5092, 900) with
    /// their extra lines.
    fn config(
        &self,
        stir_extra: &str,
        campaign: &str,
        carrier: &str,
        buyers: [&str; 3],
    ) -> dce::config::Config {
        self.config_with(stir_extra, campaign, carrier, buyers, |t| t)
    }

    /// [`Setup::config`], its text changed by `edit` before it is parsed.
    fn config_with(
        &self,
        stir_extra: &str,
        campaign: &str,
        carrier: &str,
        buyers: [&str; 3],
        edit: impl FnOnce(String) -> String,
    ) -> dce::config::Config {
        let text = format!(
            "[node]\nid = \"sim\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\nmax_udp_request_bytes = 8000\n\
             [stir]\nca_file = \"{}\"\nx5u_allow = [\"*.sticr.example\"]\n{stir_extra}\n\
             [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n{carrier}\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\n{campaign}\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:5090\"\nbid_cents = 1500\n{}\n\
             [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:5091\"\nbid_cents = 1200\n{}\n\
             [[buyer]]\nid = \"cobalt\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:5092\"\nbid_cents = 900\n{}\n",
            self.dir.join("roots.pem").display(),
            buyers[0],
            buyers[1],
            buyers[2]
        );
        let text = edit(text);
        dce::config::parse("sim.toml", &text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// The signer as the fetcher would cache it.
    fn signer(&self) -> fetch::Cached {
        let anchors = cert::Anchors::from_pem(self.pki.root_pem.as_bytes()).unwrap();
        let chain = cert::parse_chain(self.pki.chain_pem.as_bytes()).unwrap();
        cert::validate_chain(&chain, &anchors, NOW).map(Arc::new)
    }

    fn identity(&self, attest: &str) -> String {
        self.pki.identity(attest, "13105551234", "18005550100", NOW)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn id_header(v: &str) -> Vec<(HeaderName, String)> {
    vec![(HeaderName::Identity, v.to_owned())]
}

/// The final response the carrier got for `call`: (code, reason phrase).
fn final_of(sim: &Sim, call: &str) -> (u16, String) {
    let r = sim.carrier[call]
        .responses
        .iter()
        .rev()
        .find(|r| r.code().unwrap_or(0) >= 200)
        .expect("a final response");
    (r.code().unwrap(), r.reason().unwrap_or("").to_owned())
}

/// The INVITE buyer `port` got (the only one).
fn buyer_invite(sim: &Sim, port: u16) -> dce_sip::Message {
    let calls = &sim.buyer(port).calls;
    assert_eq!(calls.len(), 1, "buyer {port} got one INVITE");
    calls.values().next().unwrap().invite.clone()
}

fn settle(sim: &mut Sim) {
    sim.run_for(64 * S);
    sim.assert_nothing_held();
}

fn answering(sim: &mut Sim) {
    for p in [5090, 5091, 5092] {
        sim.add_buyer(p, Mode::Answer(S));
    }
}

#[test]
fn a_verified_call_gets_its_attestation_the_certificate_is_fetched_once_and_the_buyer_gets_the_identity(
) {
    let st = Setup::new("verified");
    let mut sim = Sim::new(&st.config("", "", "", ["", "", ""]));
    answering(&mut sim);
    let id = st.identity("A");
    let call = sim.place_call_with(CALLER, &id_header(&id));
    // the call waits for the certificate, asked as a lookup
    assert_eq!(sim.cert_asks.len(), 1);
    assert_eq!(sim.cert_asks[0].1, X5U);
    assert!(
        sim.buyer(5090).calls.is_empty(),
        "nobody rings before the verdict"
    );
    sim.answer_cert(st.signer());
    sim.run_for(3 * S);
    let inv = buyer_invite(&sim, 5090);
    let ids: Vec<&str> = inv.headers_named(&HeaderName::Identity).collect();
    assert_eq!(ids, [id.as_str()], "the original Identity, unchanged");
    assert!(inv.header(&HeaderName::Reason).is_none());
    sim.carrier_bye(&call);
    sim.run_for(2 * S);
    // a second call with the same x5u: cached, no fetch, rings at once
    let id_b = st.identity("B");
    let call2 = sim.place_call_with(CALLER, &id_header(&id_b));
    assert!(sim.cert_asks.is_empty(), "the certificate is cached");
    sim.run_for(3 * S);
    sim.carrier_bye(&call2);
    settle(&mut sim);
    let stirs: Vec<Option<String>> = sim.cdrs().iter().map(|c| c.stir.clone()).collect();
    assert_eq!(stirs, [Some("A".into()), Some("B".into())]);
    // no Identity at all
    let call3 = sim.place_call(CALLER);
    sim.run_for(3 * S);
    sim.carrier_bye(&call3);
    settle(&mut sim);
    assert_eq!(sim.cdrs()[2].stir.as_deref(), Some("no_identity"));
}

#[test]
fn each_failure_gets_its_verdict_and_its_rfc_8224_code_when_the_campaign_requires_b() {
    let st = Setup::new("reject");
    let cfg = st.config(
        "fetch_timeout_ms = 500",
        "stir = { require = \"B\", on_fail = \"reject\" }",
        "",
        ["", "", ""],
    );
    let good = st.identity("A");
    let tampered = support::stir_pki::tampered(&good);
    let stale = st.pki.identity("A", "13105551234", "18005550100", NOW - 61);
    let wrong_tn = st.pki.identity("A", "13105550000", "18005550100", NOW);
    let outside = Pki::new(true, (2024, 2030))
        .with_x5u("https://evil.example/sp.pem")
        .identity("A", "13105551234", "18005550100", NOW);
    let c_level = st.identity("C");
    // (identity, what the fetch answers (None: never answered), code, phrase, verdict)
    type Case<'a> = (
        Option<&'a str>,
        Option<fetch::Cached>,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Some(&tampered),
            Some(st.signer()),
            438,
            "Invalid Identity Header",
            "failed:bad_signature",
        ),
        (Some(&stale), None, 403, "Stale Date", "failed:stale"),
        (
            Some(&wrong_tn),
            None,
            438,
            "Invalid Identity Header",
            "failed:tn_mismatch",
        ),
        (
            Some(&good),
            Some(Err(Failure::Untrusted)),
            437,
            "Unsupported Credential",
            "failed:untrusted_certificate",
        ),
        (
            Some(&good),
            Some(Err(Failure::CertExpired)),
            437,
            "Unsupported Credential",
            "failed:certificate_expired",
        ),
        (
            Some(&outside),
            None,
            436,
            "Bad Identity Info",
            "failed:x5u_not_allowed",
        ),
        (
            Some(&good),
            Some(Err(Failure::FetchFailed)),
            436,
            "Bad Identity Info",
            "failed:fetch_failed",
        ),
        (None, None, 428, "Use Identity Header", "no_identity"),
        (Some(&c_level), Some(st.signer()), 608, "Rejected", "C"),
    ];
    for (i, (identity, fetched, code, phrase, verdict)) in cases.into_iter().enumerate() {
        // a fresh node per case: nothing cached from the one before
        let mut sim = Sim::new(&cfg);
        answering(&mut sim);
        let call = match identity {
            Some(v) => sim.place_call_with(CALLER, &id_header(v)),
            None => sim.place_call(CALLER),
        };
        if let Some(f) = fetched {
            sim.answer_cert(f);
        }
        sim.run_for(3 * S);
        assert_eq!(
            final_of(&sim, &call),
            (code, phrase.to_owned()),
            "case {i}: {verdict}"
        );
        assert!(sim.buyer(5090).calls.is_empty(), "case {i}: no buyer rang");
        let last = sim.carrier[&call].responses.last().unwrap().clone();
        let reason = last
            .header(&HeaderName::Reason)
            .unwrap_or_default()
            .to_owned();
        assert!(
            reason.starts_with(&format!("STIR;cause={code};")),
            "case {i}: {reason}"
        );
        settle(&mut sim);
        let cdr = &sim.cdrs()[0];
        assert_eq!(cdr.disposition, "rejected");
        assert_eq!(cdr.stir.as_deref(), Some(verdict), "case {i}");
        assert_eq!(cdr.carrier_code, code);
        assert_eq!(sim.counters.get(Counter::StirRejected), 1);
    }
}

#[test]
fn a_fetch_that_never_answers_fails_within_the_deadline_and_the_call_is_refused_436() {
    let st = Setup::new("timeout");
    let cfg = st.config(
        "fetch_timeout_ms = 300",
        "stir = { require = \"any\" }",
        "",
        ["", "", ""],
    );
    let mut sim = Sim::new(&cfg);
    answering(&mut sim);
    let call = sim.place_call_with(CALLER, &id_header(&st.identity("A")));
    assert_eq!(sim.cert_asks.len(), 1);
    sim.run_for(Duration::from_millis(250));
    assert!(
        sim.carrier[&call]
            .responses
            .iter()
            .all(|r| r.code() == Some(100)),
        "still waiting inside the deadline"
    );
    sim.run_for(Duration::from_millis(100));
    assert_eq!(final_of(&sim, &call).0, 436);
    // the answer arriving late changes nothing
    sim.answer_cert(st.signer());
    settle(&mut sim);
    assert_eq!(sim.cdrs()[0].stir.as_deref(), Some("failed:fetch_failed"));
}

#[test]
fn a_flagged_call_goes_on_and_its_buyer_invite_carries_a_stir_reason() {
    let st = Setup::new("flag");
    let cfg = st.config(
        "",
        "stir = { require = \"A\", on_fail = \"flag\" }",
        "",
        ["", "", ""],
    );
    let mut sim = Sim::new(&cfg);
    answering(&mut sim);
    let stale = st
        .pki
        .identity("A", "13105551234", "18005550100", NOW - 600);
    let call = sim.place_call_with(CALLER, &id_header(&stale));
    assert!(
        sim.cert_asks.is_empty(),
        "stale: no need for the certificate"
    );
    sim.run_for(3 * S);
    let inv = buyer_invite(&sim, 5090);
    assert_eq!(
        inv.header(&HeaderName::Reason),
        Some("STIR;cause=403;text=\"stale\"")
    );
    assert_eq!(inv.headers_named(&HeaderName::Identity).count(), 1);
    sim.carrier_bye(&call);
    settle(&mut sim);
    assert_eq!(sim.cdrs()[0].stir.as_deref(), Some("failed:stale"));
    assert_ne!(sim.cdrs()[0].disposition, "rejected");
    assert!(
        sim.cdrs()[0].answer_at.is_some(),
        "the flagged call was answered"
    );
    assert_eq!(sim.counters.get(Counter::StirFlagged), 1);
}

#[test]
fn min_attestation_and_attestation_bid_change_who_wins() {
    let st = Setup::new("auction");
    // acme (1500) takes only A; bravo (1200) pays half for B; cobalt (900) takes anything
    let cfg = st.config(
        "",
        "",
        "",
        [
            "min_attestation = \"A\"",
            "attestation_bid = { B = 0.5, C = 0.25, none = 0 }",
            "",
        ],
    );
    let mut sim = Sim::new(&cfg);
    answering(&mut sim);
    let cached = st.signer();
    sim.stir
        .as_ref()
        .unwrap()
        .certs
        .put(X5U, cached, std::time::Instant::now() + 3600 * S);
    let winner = |sim: &mut Sim, attest: Option<&str>| -> (String, Vec<(String, u32, String)>) {
        // signed now (the simulated wall clock moves on with each call)
        let iat = dce::clock::Clock::now_utc(&*sim.clock).timestamp();
        let call = match attest {
            Some(a) => sim.place_call_with(
                CALLER,
                &id_header(&st.pki.identity(a, "13105551234", "18005550100", iat)),
            ),
            None => sim.place_call(CALLER),
        };
        assert!(sim.cert_asks.is_empty());
        sim.run_for(3 * S);
        sim.carrier_bye(&call);
        settle(sim);
        let cdr = sim.cdrs().last().unwrap().clone();
        let bids = cdr
            .bids
            .iter()
            .map(|b| (b.buyer_id.clone(), b.amount_cents, b.outcome.clone()))
            .collect();
        (cdr.buyer_id.unwrap_or_default(), bids)
    };
    assert_eq!(winner(&mut sim, Some("A")).0, "acme");
    let (w, bids) = winner(&mut sim, Some("B"));
    assert_eq!(w, "cobalt", "{bids:?}");
    assert!(
        bids.contains(&("acme".into(), 1500, "excluded:attestation".into())),
        "{bids:?}"
    );
    assert!(
        bids.iter().any(|b| b.0 == "bravo" && b.1 == 600),
        "{bids:?}"
    );
    // unverified: bravo's bid is 0 (under no floor but last), acme is out
    let (w, bids) = winner(&mut sim, None);
    assert_eq!(w, "cobalt", "{bids:?}");
    assert_eq!(
        sim.cdrs().last().unwrap().stir.as_deref(),
        Some("no_identity")
    );
}

#[test]
fn a_late_verdict_moves_every_price_before_the_first_ring() {
    let st = Setup::new("late");
    let cfg = st.config(
        "",
        "",
        "",
        [
            "min_attestation = \"B\"",
            "attestation_bid = { C = 0.5 }",
            "",
        ],
    );
    let mut sim = Sim::new(&cfg);
    answering(&mut sim);
    let call = sim.place_call_with(CALLER, &id_header(&st.identity("C")));
    sim.answer_cert(st.signer());
    sim.run_for(3 * S);
    assert!(sim.buyer(5090).calls.is_empty());
    assert!(
        sim.buyer(5091).calls.is_empty(),
        "bravo bids 600 for C, under cobalt's 900"
    );
    assert_eq!(sim.buyer(5092).calls.len(), 1);
    sim.carrier_bye(&call);
    settle(&mut sim);
    assert_eq!(sim.cdrs()[0].stir.as_deref(), Some("C"));
}

#[test]
fn a_carrier_trusted_for_its_verstat_is_believed_and_others_are_not() {
    let st = Setup::new("verstat");
    let pai = (
        HeaderName::PAssertedIdentity,
        "<sip:+13105551234;verstat=TN-Validation-Passed@10.9.9.9;user=phone>".to_owned(),
    );
    let indicator = (
        HeaderName::Other("P-Attestation-Indicator".into()),
        "B".to_owned(),
    );
    for (trusted, want) in [(true, "B"), (false, "no_identity")] {
        let cfg = st.config("", "", &format!("trust_verstat = {trusted}"), ["", "", ""]);
        let mut sim = Sim::new(&cfg);
        answering(&mut sim);
        let call = sim.place_call_with(CALLER, &[pai.clone(), indicator.clone()]);
        assert!(sim.cert_asks.is_empty());
        sim.run_for(3 * S);
        sim.carrier_bye(&call);
        settle(&mut sim);
        assert_eq!(sim.cdrs()[0].stir.as_deref(), Some(want));
    }
    // a trusted carrier that says the validation failed
    let cfg = st.config(
        "",
        "stir = { require = \"C\" }",
        "trust_verstat = true",
        ["", "", ""],
    );
    let mut sim = Sim::new(&cfg);
    answering(&mut sim);
    let failed = (
        HeaderName::PAssertedIdentity,
        "<sip:+13105551234;verstat=TN-Validation-Failed@10.9.9.9;user=phone>".to_owned(),
    );
    let call = sim.place_call_with(CALLER, &[failed]);
    sim.run_for(3 * S);
    assert_eq!(final_of(&sim, &call).0, 438);
    settle(&mut sim);
    assert_eq!(
        sim.cdrs()[0].stir.as_deref(),
        Some("failed:carrier_verstat")
    );
}

#[test]
fn with_sign_div_a_retargeted_buyer_gets_a_verifiable_div_passport_beside_the_original() {
    let st = Setup::new("div");
    let mine = Pki::new(true, (2024, 2030)).with_x5u("https://cert.dce.example/dce.pem");
    std::fs::write(st.dir.join("dce.key"), &mine.key_pem).unwrap();
    // acme is reached at a number of its own (the call is retargeted: a `div` is signed);
    // bravo at the dialled number (the original PASSporT's `dest` still names it: no `div`).
    let cfg = st.config_with(
        &format!(
            "sign_div = {{ x5u = \"https://cert.dce.example/dce.pem\", key = \"{}\" }}",
            st.dir.join("dce.key").display()
        ),
        "",
        "",
        ["", "", ""],
        |t| {
            t.replace(
                "sip:{called}@127.0.0.1:5090",
                "sip:+12125550199@127.0.0.1:5090",
            )
        },
    );
    let mut sim = Sim::new(&cfg);
    sim.add_buyer(5090, Mode::Reject(486));
    sim.add_buyer(5091, Mode::Answer(S));
    let id = st.identity("A");
    let call = sim.place_call_with(CALLER, &id_header(&id));
    sim.answer_cert(st.signer());
    sim.run_for(3 * S);
    let to_bravo = buyer_invite(&sim, 5091);
    let ids: Vec<&str> = to_bravo.headers_named(&HeaderName::Identity).collect();
    assert_eq!(ids, [id.as_str()], "bravo gets the original only");
    let inv = buyer_invite(&sim, 5090);
    let ids: Vec<&str> = inv.headers_named(&HeaderName::Identity).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], id);
    let claims =
        support::stir_div::div_claims(ids[1], &mine, "https://cert.dce.example/dce.pem", NOW);
    assert_eq!(claims["orig"]["tn"], "13105551234");
    assert_eq!(claims["div"]["tn"], "18005550100");
    assert_eq!(claims["dest"]["tn"][0], "12125550199");
    assert_eq!(claims["iat"], NOW);
    sim.carrier_bye(&call);
    settle(&mut sim);
}
