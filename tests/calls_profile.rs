//! A buyer's SIP profile (issue #13, item 6) in simulated time: extra headers filled from the
//! call, the caller presentation (`from_user`), and a codec allow-list applied to the offer —
//! a buyer none of whose codecs the carrier offered is `excluded:codec`.

mod support;

use dce_sip::HeaderName;
use std::time::Duration;
use support::sim::{buyer, config, Mode, Sim};

const S: Duration = Duration::from_secs(1);

/// The sim's carrier offers PCMU only (`m=audio 40000 RTP/AVP 0`).
fn sim(profile: &str, fallback: bool) -> Sim {
    let mut buyers = buyer("acme", 5090, 900, profile);
    if fallback {
        buyers.push_str(&buyer("bravo", 5091, 100, ""));
    }
    let mut sim = Sim::new(&config("", &buyers));
    sim.add_buyer(5090, Mode::Answer(S));
    sim.add_buyer(5091, Mode::Answer(S));
    sim
}

#[test]
fn headers_and_from_user_are_filled_from_the_call() {
    let mut sim = sim(
        "headers = { \"X-Publisher\" = \"{carrier}\", \"X-Campaign\" = \"camp-{campaign}\", \"X-Static\" = \"v1\" }\nfrom_user = \"pub-{carrier}\"\ncodecs = [\"PCMU\", \"G729\"]",
        false,
    );
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    let inv = sim
        .buyer(5090)
        .calls
        .values()
        .next()
        .unwrap()
        .invite
        .clone();
    let h = |n: &str| {
        inv.header(&HeaderName::Other(n.into()))
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(h("X-Publisher"), "carrier-a");
    assert_eq!(h("X-Campaign"), "camp-auto");
    assert_eq!(h("X-Static"), "v1");
    let from = inv.header(&HeaderName::From).unwrap();
    assert!(from.starts_with("<sip:pub-carrier-a@"), "{from}");
    let sdp = String::from_utf8_lossy(inv.body()).into_owned();
    assert!(
        sdp.contains("m=audio ") && sdp.contains(" RTP/AVP 0"),
        "{sdp}"
    );
    sim.carrier_bye(&call);
    sim.run_for(S);
}

#[test]
fn without_a_profile_the_caller_is_presented_and_the_offer_is_whole() {
    let mut sim = sim("", false);
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    let inv = sim
        .buyer(5090)
        .calls
        .values()
        .next()
        .unwrap()
        .invite
        .clone();
    assert!(inv
        .header(&HeaderName::From)
        .unwrap()
        .starts_with("<sip:13105551234@"));
    assert!(inv
        .header(&HeaderName::Other("X-Publisher".into()))
        .is_none());
    sim.carrier_bye(&call);
    sim.run_for(S);
}

#[test]
fn a_buyer_without_an_offered_codec_is_excluded_and_the_next_bidder_rings() {
    let mut sim = sim("codecs = [\"G729\", \"opus\"]", true);
    let call = sim.place_call("+13105551234");
    sim.run_for(3 * S);
    assert_eq!(sim.finals(&call), vec![200]);
    assert!(
        sim.buyer(5090).calls.is_empty(),
        "acme was never sent an offer it cannot take"
    );
    sim.carrier_bye(&call);
    sim.run_for(S);
    let outcomes: Vec<String> = sim.cdrs()[0]
        .bids
        .iter()
        .map(|b| format!("{}={}", b.buyer_id, b.outcome))
        .collect();
    assert_eq!(outcomes, ["acme=excluded:codec", "bravo=won"]);
}

#[test]
fn check_config_names_profile_mistakes() {
    let bad = [
        ("headers = { \"Via\" = \"x\" }", "`Via` is set by DCE"),
        (
            "headers = { \"X-A\" = \"{publisher}\" }",
            "`{publisher}`, which is no field",
        ),
        ("headers = { \"X A\" = \"1\" }", "is not a header name"),
        ("from_user = \"{caller\"", "without its `}`"),
        ("from_user = \"a b\"", "must be a SIP user part"),
        ("codecs = [\"PCMU/8000\"]", "is not an encoding name"),
        ("codecs = [\"telephone-event\"]", "always kept"),
    ];
    for (profile, says) in bad {
        let text = format!(
            "[node]\nid = \"p\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\n{}",
            buyer("acme", 5090, 900, profile)
        );
        let errs = dce::config::parse("p.toml", &text).unwrap_err();
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            all.iter()
                .any(|e| e.starts_with("p.toml:14: ") && e.contains(says)),
            "{profile}: {all:?}"
        );
    }
}
