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

/// SIPp's RFC 2833/4733 recordings (Debian's sip-tester): one key press each, 280 ms.
fn dtmf_pcap(key: &str) -> String {
    format!("/usr/share/sip-tester/dtmf_2833_{key}.pcap")
}

#[test]
fn rfc_4733_digits_cross_dce_and_each_sides_digits_are_in_the_cdr() {
    let Some(bin) = sipp::sipp() else { return };
    for key in ["1", "5", "pound", "9"] {
        let p = dtmf_pcap(key);
        if !std::path::Path::new(&p).exists() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{p} missing (Debian package sip-tester ships it)");
            }
            eprintln!("NOT RUN: {p} missing");
            return;
        }
    }
    let (bp, mp, http) = (free_port(), free_port(), free_port());
    let dce = Dce::start_with(|port, dir| {
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[node]\nid = \"dtmf\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [media]\nbind_ip = \"127.0.0.1\"\nadvertised_ip = \"127.0.0.1\"\nport_min = {mp0}\nport_max = {mp1}\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [storage]\ndatabase_url = \"sqlite://{d}/dce.db\"\nspool_dir = \"{d}/spool\"\n\
             [cdr]\njsonl_path = \"{d}/cdr.jsonl\"\n[[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bp}\"\nbid_cents = 1500\n",
            d = dir.display(),
            mp0 = 40000 + (mp % 1000) * 20,
            mp1 = 40000 + (mp % 1000) * 20 + 19,
        )
    });
    // Both sides offer telephone-event; the carrier presses 1, 5, #; the buyer presses 9.
    let te = "m=audio [media_port] RTP/AVP 8 101\n      a=rtpmap:8 PCMA/8000\n      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-15";
    let play = |key: &str| {
        format!(
            "<nop><action><exec play_pcap_audio=\"{}\"/></action></nop>",
            dtmf_pcap(key)
        )
    };
    let with_te = |s: String| {
        s.replace(
            "m=audio [media_port] RTP/AVP 8\n      a=rtpmap:8 PCMA/8000",
            te,
        )
    };
    let uac = with_te(std::fs::read_to_string(sipp::scenario("uac_call_rtp.xml")).unwrap());
    let g711 = "<nop>\n    <action>\n      <exec play_pcap_audio=\"/usr/share/sip-tester/g711a.pcap\"/>\n    </action>\n  </nop>";
    assert!(
        uac.contains(te) && uac.contains(g711),
        "the scenario's shape changed"
    );
    let uac = uac.replace(
        g711,
        &format!(
            "{}<pause milliseconds=\"600\"/>{}<pause milliseconds=\"600\"/>{}",
            play("1"),
            play("5"),
            play("pound")
        ),
    );
    let uas = with_te(std::fs::read_to_string(sipp::scenario("uas_answer_rtp.xml")).unwrap());
    let ack = "<recv request=\"ACK\" crlf=\"true\"/>";
    assert!(
        uas.contains(te) && uas.contains(ack),
        "the scenario's shape changed"
    );
    // ... and then sends "4" as a SIP INFO: the carrier announced telephone-event, so DCE
    // plays it there as RFC 4733 and answers the INFO itself (the carrier's SIPp would fail
    // on an INFO it does not expect)
    let invite = "<recv request=\"INVITE\" crlf=\"true\"/>";
    assert!(uas.contains(invite), "the scenario's shape changed");
    let info = "<send retrans=\"500\"><![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$my_side]
      To: [$dce_side]
      [last_Call-ID:]
      CSeq: 1 INFO
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal=4
      Duration=200
    ]]></send>
  <recv response=\"200\"/>";
    let uas = uas
        .replace(invite, "<recv request=\"INVITE\" crlf=\"true\" rrs=\"true\"/>")
        .replace(
            ack,
            &format!(
                "<recv request=\"ACK\" crlf=\"true\"><action>\
                 <ereg regexp=\".*\" search_in=\"hdr\" header=\"From:\" assign_to=\"dce_side\"/>\
                 <ereg regexp=\".*\" search_in=\"hdr\" header=\"To:\" assign_to=\"my_side\"/>\
                 </action></recv><pause milliseconds=\"300\"/>{}<pause milliseconds=\"600\"/>{info}",
                play("9")
            ),
        );
    let (uac_path, uas_path) = (
        dce.dir().join("uac_dtmf.xml"),
        dce.dir().join("uas_dtmf.xml"),
    );
    std::fs::write(&uac_path, uac).unwrap();
    std::fs::write(&uas_path, uas).unwrap();
    let buyer = Background::start(&bin, &sipp::args(&uas_path, bp, &["-m", "1"]));
    let mut args = sipp::args(&uac_path, free_port(), &["-s", "+18005550100", "-m", "1"]);
    args.push(dce.sip.to_string());
    let out = sipp::run(&bin, &args);
    let (bok, bout) = buyer.finish(20);
    let (ok, log, dir) = dce.stop_keep();
    assert!(
        out.status.success(),
        "carrier: {}\n{log}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(bok, "buyer: {bout}");
    assert!(ok, "{log}");
    let cdr: Value = support::dce_process::jsonl_cdrs(&dir.0).remove(0);
    let digits = |side: &str| -> Vec<(String, u64)> {
        cdr["dtmf"][side]
            .as_array()
            .unwrap_or_else(|| panic!("no dtmf.{side}: {cdr:#}"))
            .iter()
            .map(|d| {
                (
                    d["digit"].as_str().unwrap().to_owned(),
                    d["duration_ms"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let held = |k: &str| (k.to_owned(), 280);
    assert_eq!(digits("from_carrier"), [held("1"), held("5"), held("#")]);
    assert_eq!(digits("from_buyer"), [held("9"), ("4".to_owned(), 200)]);
    // every event packet crossed DCE (10 per press), and DCE played the INFO's "4" to the
    // carrier: 50 ms updates to 200 ms (4 packets), the end three times
    let q = &cdr["quality"];
    assert_eq!(q["dce_to_buyer_packets"], 30, "{q:#}");
    assert_eq!(q["dce_to_carrier_packets"], 10 + 4 + 2, "{q:#}");
    // the database holds the same digits
    let db = format!("sqlite://{}/dce.db", dir.0.display());
    let stored: Option<String> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
            sqlx::query_scalar("SELECT dtmf FROM calls")
                .fetch_one(&pool)
                .await
                .unwrap()
        });
    let stored: Value = serde_json::from_str(&stored.expect("a dtmf column value")).unwrap();
    assert_eq!(stored, cdr["dtmf"], "the calls table holds the same digits");
}
