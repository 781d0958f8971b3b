//! End-to-end media: SIPp plays a G.711 pcap as the carrier, a SIPp buyer echoes it
//! (`-rtp_echo`); both SDPs point at DCE, the RTP crosses DCE's ports both ways, and the CDR's
//! quality numbers match what was sent.

mod support;

use serde_json::Value;
use support::dce_process::{free_port, Dce};
use support::sipp::{self, Background};

const PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

/// RTP packets in a pcap file (classic format, Ethernet or Linux cooked, UDP).
fn pcap_packets(path: &str) -> usize {
    let d = std::fs::read(path).expect("pcap");
    let mut off = 24;
    let mut n = 0;
    while off + 16 <= d.len() {
        let incl = u32::from_le_bytes([d[off + 8], d[off + 9], d[off + 10], d[off + 11]]) as usize;
        off += 16 + incl;
        n += 1;
    }
    n
}

#[test]
fn rtp_from_a_pcap_crosses_dce_both_ways_and_the_cdr_counts_it() {
    let Some(bin) = sipp::sipp() else { return };
    if !std::path::Path::new(PCAP).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{PCAP} missing (Debian package sip-tester ships it)");
        }
        eprintln!("NOT RUN: {PCAP} missing");
        return;
    }
    let sent = pcap_packets(PCAP);
    let bp = free_port();
    let mp = free_port();
    let http = free_port();
    let dce = Dce::start_with(|port, dir| {
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[node]\nid = \"media\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [media]\nbind_ip = \"127.0.0.1\"\nadvertised_ip = \"127.0.0.1\"\nport_min = {mp0}\nport_max = {mp1}\n\
                          [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [cdr]\njsonl_path = \"{}\"\n[[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 5\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bp}\"\nbid_cents = 1500\n",
            dir.join("cdr.jsonl").display(),
            mp0 = 40000 + (mp % 1000) * 20,
            mp1 = 40000 + (mp % 1000) * 20 + 19,
        )
    });
    let buyer_media = free_port();
    let buyer = Background::start(
        &bin,
        &[
            "-sf".into(),
            sipp::scenario("uas_answer_rtp.xml").display().to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            bp.to_string(),
            "-mp".into(),
            buyer_media.to_string(),
            "-rtp_echo".into(),
            "-m".into(),
            "1".into(),
            "-timeout".into(),
            "40s".into(),
        ],
    );
    let mut args = sipp::args(
        &sipp::scenario("uac_call_rtp.xml"),
        free_port(),
        &["-s", "+18005550100", "-m", "1"],
    );
    args.push(dce.sip.to_string());
    let out = sipp::run(&bin, &args);
    let (bok, bout) = buyer.finish(20);
    // The relay's report reaches /metrics once the call's media is closed.
    let metric = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        let (_, m) = support::http::request(http, "GET", "/metrics", None, "");
        if metric(&m, "dce_rtp_packets_total") > 0 || std::time::Instant::now() > end {
            break m;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Every port pair is back in the pool once the call is over.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let health: Value = loop {
        let h: Value =
            serde_json::from_str(&support::http::request(http, "GET", "/health", None, "").1)
                .unwrap();
        if h["port_pool"]["in_use"] == 0 || std::time::Instant::now() > end {
            break h;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(health["port_pool"]["total"], 10, "{health}");
    assert_eq!(health["port_pool"]["in_use"], 0, "{health}");
    let (ok, log, dir) = dce.stop_keep();
    assert!(
        out.status.success(),
        "carrier: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        log
    );
    assert!(bok, "buyer: {bout}");
    assert!(ok);
    let cdr: Value = support::dce_process::jsonl_cdrs(&dir.0).remove(0);
    let q = &cdr["quality"];
    assert_eq!(q["codec"], "PCMA", "{cdr:#}");
    assert_eq!(
        q["carrier_to_dce"]["packets"].as_u64().unwrap() as usize,
        sent,
        "every pcap packet reached DCE: {q:#}"
    );
    assert_eq!(
        q["dce_to_buyer_packets"].as_u64().unwrap() as usize,
        sent,
        "and was relayed to the buyer: {q:#}"
    );
    assert_eq!(q["carrier_to_dce"]["lost"], 0);
    let echoed = q["buyer_to_dce"]["packets"].as_u64().unwrap() as usize;
    assert!(
        echoed + 2 >= sent,
        "the buyer's echo came back through DCE: {q:#}"
    );
    assert_eq!(
        q["dce_to_carrier_packets"].as_u64().unwrap() as usize,
        echoed
    );
    assert!(q["carrier_to_dce"]["mos"].as_f64().unwrap() > 4.0, "{q:#}");
    assert_eq!(q["one_way_audio"], false);
    let received = q["carrier_to_dce"]["packets"].as_u64().unwrap()
        + q["buyer_to_dce"]["packets"].as_u64().unwrap();
    assert_eq!(
        metric(&metrics, "dce_rtp_packets_total"),
        received,
        "/metrics counts the RTP of the call: {metrics}"
    );
    assert_eq!(
        metric(&metrics, "dce_rtp_lost_total"),
        q["carrier_to_dce"]["lost"].as_u64().unwrap() + q["buyer_to_dce"]["lost"].as_u64().unwrap()
    );
    assert_eq!(q["foreign_dropped"], 0);
    assert_eq!(cdr["billable"], true);
}
