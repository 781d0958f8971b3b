//! End-to-end media: SIPp plays a G.711 pcap as the carrier, a SIPp buyer echoes it
//! (`-rtp_echo`); both SDPs point at DCE, the RTP crosses DCE's ports both ways, and the CDR's
//! quality numbers match what was sent.

mod support;

use serde_json::Value;
use support::dce_process::{free_port, Dce};
use support::sipp::{self, Background};

const PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

/// A DCE anchoring media on 127.0.0.1 (ports of its own, from `mp`), its API on `http` with
/// the read key `support::http::OPS_KEY`, CDRs to SQLite and `cdr.jsonl` in its directory,
/// campaign `auto` (+18005550100) with the `campaign` lines and buyer acme at `bp`; `media`
/// lines go into `[media]` (`{dir}`: DCE's directory).
fn media_dce(http: u16, bp: u16, mp: u16, media: &str, campaign: &str) -> Dce {
    Dce::start_with(|port, dir| {
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{sha}\", role = \"read\" }}]\n\
             [node]\nid = \"media\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [media]\nbind_ip = \"127.0.0.1\"\nadvertised_ip = \"127.0.0.1\"\nport_min = {mp0}\nport_max = {mp1}\n{media}\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [storage]\ndatabase_url = \"sqlite://{d}/dce.db\"\nspool_dir = \"{d}/spool\"\n\
             [cdr]\njsonl_path = \"{d}/cdr.jsonl\"\n[[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\n{campaign}\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{bp}\"\nbid_cents = 1500\n",
            sha = support::http::OPS_SHA,
            d = dir.display(),
            media = media.replace("{dir}", &dir.display().to_string()),
            mp0 = 40000 + (mp % 1000) * 20,
            mp1 = 40000 + (mp % 1000) * 20 + 19,
        )
    })
}

#[test]
fn rtp_from_a_pcap_crosses_dce_both_ways_and_the_cdr_counts_it() {
    let Some(bin) = sipp::sipp() else { return };
    if !sipp::pcaps_present(&[PCAP]) {
        return;
    }
    let sent = support::pcap::read(PCAP).len();
    let bp = free_port();
    let mp = free_port();
    let http = free_port();
    let dce = media_dce(http, bp, mp, "", "billable_after_s = 5");
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
    let pcaps: Vec<String> = ["1", "5", "pound", "9"].map(dtmf_pcap).into();
    if !sipp::pcaps_present(&pcaps.iter().map(String::as_str).collect::<Vec<_>>()) {
        return;
    }
    let (bp, mp, http) = (free_port(), free_port(), free_port());
    let dce = media_dce(http, bp, mp, "", "");
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

#[test]
fn a_recorded_call_is_a_stereo_wav_whose_channels_are_what_each_side_sent_in_place() {
    let Some(bin) = sipp::sipp() else { return };
    if !sipp::pcaps_present(&[PCAP]) {
        return;
    }
    let (bp, mp, http) = (free_port(), free_port(), free_port());
    let dce = media_dce(
        http,
        bp,
        mp,
        "recordings_dir = \"{dir}/rec\"",
        "record = true",
    );
    // The buyer talks 4 s of its own A-law (a pattern per packet), every 10th packet lost.
    let sample = |k: u32, i: u32| ((k * 37 + i * 11) % 251) as u8;
    let buyer_pkts: Vec<(u64, Vec<u8>)> = (0..200u32)
        .filter(|k| k % 10 != 9)
        .map(|k| {
            let mut p = vec![0x80, 8];
            p.extend_from_slice(&(k as u16).to_be_bytes());
            p.extend_from_slice(&(160 * k).to_be_bytes());
            p.extend_from_slice(&0xb0b0_b0b0u32.to_be_bytes());
            p.extend((0..160).map(|i| sample(k, i)));
            (20_000 * u64::from(k), p)
        })
        .collect();
    let buyer_pcap = dce.dir().join("buyer.pcap");
    support::pcap::write(&buyer_pcap, &buyer_pkts);
    let play =
        |pcap: &str| format!("<nop><action><exec play_pcap_audio=\"{pcap}\"/></action></nop>");
    let ack = "<recv request=\"ACK\" crlf=\"true\"/>";
    let uas = std::fs::read_to_string(sipp::scenario("uas_answer_rtp.xml")).unwrap();
    assert!(uas.contains(ack), "the scenario's shape changed");
    let uas = uas.replace(
        ack,
        &format!("{ack}{}", play(&buyer_pcap.display().to_string())),
    );
    // The carrier: a New York caller (California needs every party's consent to record)
    let uac = std::fs::read_to_string(sipp::scenario("uac_call_rtp.xml")).unwrap();
    assert!(uac.contains("+13105551234"), "the scenario's shape changed");
    let uac = uac.replace("+13105551234", "+12125551234");
    let (uac_path, uas_path) = (dce.dir().join("uac_rec.xml"), dce.dir().join("uas_rec.xml"));
    std::fs::write(&uac_path, uac).unwrap();
    std::fs::write(&uas_path, uas).unwrap();
    let buyer = Background::start(&bin, &sipp::args(&uas_path, bp, &["-m", "1"]));
    let mut args = sipp::args(&uac_path, free_port(), &["-s", "+18005550100", "-m", "1"]);
    args.push(dce.sip.to_string());
    let out = sipp::run(&bin, &args);
    let (bok, bout) = buyer.finish(20);
    assert!(
        out.status.success(),
        "carrier: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        dce.log()
    );
    assert!(bok, "buyer: {bout}");
    // the CDR names the file; the API serves it
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let id = loop {
        let v = support::http::get_json(http, "/v1/cdrs?limit=1", support::http::OPS_KEY);
        if let Some(id) = v["cdrs"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(std::time::Instant::now() < end, "no CDR: {v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (code, served) = support::http::get_bytes(
        http,
        &format!("/v1/calls/{id}/recording"),
        support::http::OPS_KEY,
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&served));
    let (code, _) = support::http::get_bytes(
        http,
        "/v1/calls/00000000-0000-0000-0000-000000000000/recording",
        support::http::OPS_KEY,
    );
    assert_eq!(code, 404);
    let (ok, log, dir) = dce.stop_keep();
    assert!(ok, "{log}");
    let cdr: Value = support::dce_process::jsonl_cdrs(&dir.0).remove(0);
    let rec = &cdr["recording"];
    let path = rec["path"].as_str().unwrap_or_else(|| panic!("{cdr:#}"));
    assert!(path.ends_with(&format!("{id}.wav")), "{path}");
    let wav = std::fs::read(path).unwrap();
    assert_eq!(wav, served, "the API serves the file as written");
    let secs = rec["duration_s"].as_f64().unwrap();
    let talk = cdr["duration_s"].as_f64().unwrap();
    assert!(
        (secs - talk).abs() < 0.1,
        "recording {secs} s, call {talk} s"
    );
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 2, "stereo");
    let frames: Vec<[i16; 2]> = wav[44..]
        .chunks(4)
        .map(|c| {
            [
                i16::from_le_bytes([c[0], c[1]]),
                i16::from_le_bytes([c[2], c[3]]),
            ]
        })
        .collect();
    // each side's packets are found in their channel, sample for sample, each at its first
    // packet's place plus its RTP timestamp's distance
    let placed = |ch: usize, pkts: &[Vec<u8>]| -> (usize, usize) {
        let rtp_ts = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        let decoded = |p: &[u8]| -> Vec<i16> {
            p[12..]
                .iter()
                .map(|&b| dce_media::record::alaw(b))
                .collect()
        };
        let first = decoded(&pkts[0]);
        let at = (0..frames.len().saturating_sub(first.len()))
            .find(|&o| (0..first.len()).all(|i| frames[o + i][ch] == first[i]))
            .expect("the first packet is in its channel");
        let ts0 = rtp_ts(&pkts[0]);
        let found = pkts
            .iter()
            .filter(|p| {
                let o = at + rtp_ts(p).wrapping_sub(ts0) as usize;
                let d = decoded(p);
                o + d.len() <= frames.len() && (0..d.len()).all(|i| frames[o + i][ch] == d[i])
            })
            .count();
        (at, found)
    };
    let carrier_pkts: Vec<Vec<u8>> = support::pcap::read(PCAP)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let buyer_only: Vec<Vec<u8>> = buyer_pkts.iter().map(|(_, p)| p.clone()).collect();
    let (c_at, c_found) = placed(0, &carrier_pkts);
    let (b_at, b_found) = placed(1, &buyer_only);
    eprintln!(
        "recording {secs} s: carrier from frame {c_at} ({c_found}/{} packets in place), buyer from frame {b_at} ({b_found}/{})",
        carrier_pkts.len(),
        buyer_only.len()
    );
    assert!(
        c_found * 100 >= carrier_pkts.len() * 99,
        "{c_found}/{}",
        carrier_pkts.len()
    );
    assert_eq!(
        b_found,
        buyer_only.len(),
        "every buyer packet in place despite the losses"
    );
    // where the buyer's lost packets were, its channel is silent
    for k in (9..200usize).step_by(10) {
        let o = b_at + 160 * k;
        assert!(
            frames[o..o + 160].iter().all(|f| f[1] == 0),
            "lost packet {k}"
        );
    }
}
