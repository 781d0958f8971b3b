//! Revenue recovery end to end (issue #15): a SIPp carrier plays a G.711 pcap (4.7 s); the first SIPp
//! buyer answers and hangs up 2 s later, within the campaign's
//! `reroute_if_buyer_hangs_up_within_s`; the carrier stays connected (its scenario fails on
//! any BYE or re-INVITE it does not expect), the second buyer answers and echoes the carrier's
//! RTP back through DCE, and the CDR has both buyer legs, each billed on its own.

mod support;

use serde_json::Value;
use support::dce_process::{free_port, Dce};
use support::sipp::{self, Background};

const PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

fn buyer(bin: &std::path::PathBuf, scenario: &str, port: u16) -> Background {
    Background::start(
        bin,
        &[
            "-sf".into(),
            sipp::scenario(scenario).display().to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-mp".into(),
            free_port().to_string(),
            "-rtp_echo".into(),
            "-m".into(),
            "1".into(),
            "-timeout".into(),
            "40s".into(),
        ],
    )
}

#[test]
fn the_first_buyer_hangs_up_the_carrier_stays_and_the_second_buyer_takes_the_call() {
    let Some(bin) = sipp::sipp() else { return };
    if !sipp::pcaps_present(&[PCAP]) {
        return;
    }
    let (bp1, bp2, mp) = (free_port(), free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        format!(
            "[node]\nid = \"reroute\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [media]\nbind_ip = \"127.0.0.1\"\nadvertised_ip = \"127.0.0.1\"\nport_min = {mp0}\nport_max = {mp1}\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [cdr]\njsonl_path = \"{}\"\n[[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 4\n\
             reroute_if_buyer_hangs_up_within_s = 5\nmax_reroutes = 1\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bp1}\"\nbid_cents = 1500\n\
             [[buyer]]\nid = \"bravo\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bp2}\"\nbid_cents = 1200\n",
            dir.join("cdr.jsonl").display(),
            mp0 = 40000 + (mp % 1000) * 20,
            mp1 = 40000 + (mp % 1000) * 20 + 19,
        )
    });
    let first = buyer(&bin, "uas_answer_rtp_bye.xml", bp1);
    let second = buyer(&bin, "uas_answer_rtp.xml", bp2);
    // The carrier: INVITE, ACK, 7 s of RTP, BYE at 8 s. An unexpected BYE or re-INVITE from
    // DCE would fail it.
    let mut args = sipp::args(
        &sipp::scenario("uac_call_rtp.xml"),
        free_port(),
        &["-s", "+18005550100", "-m", "1"],
    );
    args.push(dce.sip.to_string());
    let out = sipp::run(&bin, &args);
    let (ok1, out1) = first.finish(20);
    let (ok2, out2) = second.finish(20);
    let (ok, log, dir) = dce.stop_keep();
    assert!(
        out.status.success(),
        "carrier: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        log
    );
    assert!(ok1, "first buyer: {out1}\n{log}");
    assert!(ok2, "second buyer: {out2}\n{log}");
    assert!(ok);
    assert!(
        log.contains("the carrier stays up and the call goes to the next buyer"),
        "{log}"
    );
    let cdr: Value = support::dce_process::jsonl_cdrs(&dir.0).remove(0);
    assert_eq!(cdr["disposition"], "answered", "{cdr:#}");
    assert_eq!(cdr["hangup_by"], "carrier");
    assert_eq!(cdr["buyer_id"], "bravo");
    let legs = cdr["legs"].as_array().expect("legs");
    assert_eq!(legs.len(), 2, "{cdr:#}");
    assert_eq!(
        (
            &legs[0]["buyer_id"],
            &legs[0]["rerouted"],
            &legs[0]["billable"]
        ),
        (
            &Value::from("acme"),
            &Value::from(true),
            &Value::from(false)
        )
    );
    let d0 = legs[0]["duration_s"].as_f64().unwrap();
    assert!((1.5..4.0).contains(&d0), "acme hung up about 2 s in: {d0}");
    assert_eq!(legs[0]["hangup_by"], "buyer");
    assert_eq!(
        (
            &legs[1]["buyer_id"],
            &legs[1]["rerouted"],
            &legs[1]["billable"]
        ),
        (
            &Value::from("bravo"),
            &Value::from(false),
            &Value::from(true)
        )
    );
    assert_eq!(legs[1]["revenue_cents"], 1200);
    assert_eq!(cdr["revenue_cents"], 1200);
    // RTP flowed carrier <-> second buyer: more came back from the buyer side than the first
    // buyer's 2 s could echo (the pcap is 236 packets at 50 a second: ~100 in 2 s), none was
    // refused as foreign (the second buyer's address came from its answer), and everything
    // that came back went on to the carrier.
    let q = &cdr["quality"];
    let echoed = q["buyer_to_dce"]["packets"].as_u64().unwrap();
    assert!(
        echoed > 150,
        "the second buyer's echo came through DCE: {q:#}"
    );
    assert_eq!(
        q["dce_to_carrier_packets"].as_u64().unwrap(),
        echoed,
        "{q:#}"
    );
    assert_eq!(q["foreign_dropped"], 0, "{q:#}");
    assert_eq!(q["one_way_audio"], false);
}
