//! Shared by the integration tests: the SIP torture corpus, its wire form, and what DCE must
//! answer to each message.
#![allow(dead_code)]

pub mod bidder;
pub mod cert_server;
pub mod dce_process;
pub mod dns;
pub mod http;
pub mod pcap;
pub mod pki;
pub mod redis_cluster;
pub mod redis_server;
pub mod sim;
pub mod sipp;
pub mod stir_div;
pub mod stir_pki;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One corpus entry.
pub struct Case {
    /// File name.
    pub file: String,
    /// Manifest class (valid, invalid, semantic).
    pub class: String,
    /// Manifest expected behaviour, for failure messages.
    pub expected_text: String,
    /// Bytes as they go on the wire.
    pub wire: Vec<u8>,
}

/// What DCE must do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Answer with this final status code.
    Code(u16),
    /// Send nothing back.
    Silence,
}

/// Where the corpus is: `$DCE_SIP_TORTURE`, else `../shared/sip-torture` beside the checkout.
pub fn corpus_dir() -> PathBuf {
    match std::env::var_os("DCE_SIP_TORTURE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/sip-torture"),
    }
}

/// Load the corpus, or `None` (after saying so) when it is absent outside CI. Under `CI=true`
/// its absence fails the test.
pub fn load_corpus() -> Option<Vec<Case>> {
    let dir = corpus_dir();
    let manifest = dir.join("MANIFEST.tsv");
    let text = match std::fs::read_to_string(&manifest) {
        Ok(t) => t,
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "SIP torture corpus missing at {} under CI=true: {e}",
                    dir.display()
                );
            }
            eprintln!(
                "NOT RUN: SIP torture corpus not found at {} ({e}); set DCE_SIP_TORTURE",
                dir.display()
            );
            return None;
        }
    };
    let mut cases = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 7, "manifest line has 7 columns: {line}");
        let (file, rfc, class, expected, sha) = (cols[0], cols[1], cols[4], cols[5], cols[6]);
        let raw = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            sha256_hex(&raw),
            sha,
            "{file}: checksum differs from the manifest"
        );
        let wire = if rfc == "RFC5118" {
            rfc5118_wire(&raw)
        } else {
            raw
        };
        cases.push(Case {
            file: file.to_owned(),
            class: class.to_owned(),
            expected_text: expected.to_owned(),
            wire,
        });
    }
    assert_eq!(
        cases.len(),
        expectations().len(),
        "every manifest line has an expectation"
    );
    Some(cases)
}

/// RFC 5118's archive is bare-LF and two files lack the final blank line; PROVENANCE.txt says
/// to convert LF to CRLF, add the blank line and fix Content-Length (what sipx `Case::wire()`
/// does).
pub fn rfc5118_wire(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    let (head, body) = match text.find("\r\n\r\n") {
        Some(i) => (text[..i].to_owned(), text[i + 4..].to_owned()),
        None => (text.trim_end_matches("\r\n").to_owned(), String::new()),
    };
    let mut lines: Vec<String> = head.split("\r\n").map(str::to_owned).collect();
    for l in lines.iter_mut() {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("content-length:") || lower.starts_with("l:") {
            *l = format!("Content-Length: {}", body.len());
        }
    }
    let mut out = lines.join("\r\n");
    out.push_str("\r\n\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// What DCE answers to each corpus message over UDP, pinned. TCP differs only where framing
/// does (see [`expect_tcp`]). Responses in the corpus are never answered.
pub fn expectations() -> BTreeMap<&'static str, Expect> {
    use Expect::*;
    [
        // RFC 4475 §3.1.1 valid messages
        ("wsinv.dat", Code(481)), // parses; To has a tag → in-dialog, no such dialog
        ("intmeth.dat", Code(501)), // unknown method
        ("esc01.dat", Code(403)), // INVITE parses; no routing in this build
        ("escnull.dat", Code(405)), // REGISTER
        ("esc02.dat", Code(501)), // RE%47IST%45R is not REGISTER
        ("lwsdisp.dat", Code(200)), // OPTIONS
        ("longreq.dat", Code(403)), // INVITE with long values
        ("dblreq.dat", Code(405)), // the REGISTER only; trailing INVITE octets ignored
        ("semiuri.dat", Code(200)), // OPTIONS
        ("transports.dat", Code(200)), // OPTIONS with odd Via transports
        ("mpart01.dat", Code(405)), // MESSAGE with multipart body
        ("unreason.dat", Silence), // a response: no transaction, dropped
        ("noreason.dat", Silence), // a response
        // RFC 4475 §3.1.2 invalid messages
        ("badinv01.dat", Code(400)), // Via params broken; its sent-by still addresses the 400
        ("clerr.dat", Code(400)),    // Content-Length larger than the datagram
        ("ncl.dat", Code(400)),      // negative Content-Length
        ("scalar02.dat", Code(400)), // CSeq 2^65
        ("scalarlg.dat", Silence),   // malformed response
        ("quotbal.dat", Code(400)),  // unterminated quote
        ("ltgtruri.dat", Code(400)), // <> around the Request-URI
        ("lwsruri.dat", Code(400)),  // LWS inside the Request-URI
        ("lwsstart.dat", Code(400)), // two SPs in the request line
        ("trws.dat", Code(400)),     // trailing SP in the request line
        ("escruri.dat", Code(400)),  // headers in the Request-URI
        ("baddate.dat", Code(403)),  // Date is not read; INVITE refused
        ("regbadct.dat", Code(400)), // Contact URI with ? not in <>
        ("badaspec.dat", Code(400)), // spaces inside <>
        ("baddn.dat", Silence),      // no blank line: truncated datagram
        ("badvers.dat", Code(505)),  // SIP/7.0
        ("mismatch01.dat", Code(400)), // CSeq method mismatch
        ("mismatch02.dat", Code(400)), // unknown method with mismatch: 400, not 501
        ("bigcode.dat", Silence),    // response code 4294967301
        // RFC 4475 §3.2, §3.3 semantic
        ("badbranch.dat", Code(200)), // bare cookie: RFC 2543 matching; OPTIONS answered
        ("insuf.dat", Code(400)),     // no Call-ID/From/To
        ("unkscm.dat", Code(416)),
        ("novelsc.dat", Code(416)),
        ("unksm2.dat", Code(405)), // REGISTER; odd schemes outside the R-URI parse
        ("bext01.dat", Code(420)),
        ("invut.dat", Code(415)),
        ("regaut01.dat", Code(405)),
        ("multi01.dat", Code(400)),
        ("mcl01.dat", Code(400)),
        ("bcast.dat", Silence), // a 200 for no transaction: nothing goes anywhere
        ("zeromf.dat", Code(483)),
        ("cparam01.dat", Code(405)),
        ("cparam02.dat", Code(405)),
        ("regescrt.dat", Code(405)),
        ("sdp01.dat", Code(406)),
        ("inv2543.dat", Code(403)), // RFC 2543 INVITE parses
        ("test.dat", Silence),      // no SIP version, header without colon
        // RFC 5118
        ("ipv6-good.dat", Code(405)),
        ("ipv6-bad.dat", Code(400)),
        ("port-ambiguous.dat", Code(405)),
        ("port-unambiguous.dat", Code(405)),
        ("via-received-param-with-delim.dat", Code(481)), // BYE, no dialog
        ("via-received-param-no-delim.dat", Code(200)),   // OPTIONS
        ("ipv6-in-sdp.dat", Code(403)),
        ("mult-ip-in-header.dat", Code(481)), // BYE
        ("mult-ip-in-sdp.dat", Code(403)),
        ("ipv4-mapped-ipv6.dat", Code(403)),
        ("ipv6-bug-abnf-3-colons.dat", Code(200)),
        ("ipv6-correct-abnf-2-colons.dat", Code(200)),
    ]
    .into_iter()
    .collect()
}

/// Over TCP: a Content-Length larger than what was sent waits for more (then the idle reaper
/// closes); one that cannot frame the stream closes the connection; a message without its
/// blank line waits for more. Everything else as over UDP.
pub fn expect_tcp(file: &str) -> Expect {
    match file {
        // wait for more bytes, then the idle reaper closes
        "clerr.dat" | "baddn.dat" => Expect::Silence,
        // the stream cannot be framed (negative, doubled or missing Content-Length): closed
        "ncl.dat" | "mcl01.dat" | "inv2543.dat" => Expect::Silence,
        f => expectations()[f],
    }
}

/// The port responses to this message go to when it arrives over UDP without `rport`: the
/// top Via sent-by port, default 5060 (RFC 3261 §18.2.2).
pub fn via_port(wire: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(wire);
    let unfolded = text.replace("\r\n ", " ").replace("\r\n\t", " ");
    for line in unfolded.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name != "via" && name != "v" {
            continue;
        }
        if let Ok(v) = dce_sip::Via::parse(value.split(',').next().unwrap_or("")) {
            return v.port.unwrap_or(5060);
        }
        return 5060;
    }
    5060
}

/// The server transaction key a request would get (§17.2.3: branch and sent-by), when it has
/// a top Via; the corpus reuses some, and a reused key is rightly a retransmission.
pub fn tx_key(wire: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(wire);
    let unfolded = text.replace("\r\n ", " ").replace("\r\n\t", " ");
    let line = unfolded.split("\r\n").skip(1).find(|l| {
        let n = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        n == "via" || n == "v"
    })?;
    let v = dce_sip::Via::parse(line.split_once(':')?.1.split(',').next()?).ok()?;
    Some(format!(
        "{:?}|{}",
        v.branch(),
        v.sent_by().to_ascii_lowercase()
    ))
}

/// Parse a status code from the start of a response.
pub fn status_code(resp: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(resp.get(..12)?).ok()?;
    s.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

fn sha256_hex(data: &[u8]) -> String {
    sha256(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (FIPS 180-4), enough to check the corpus against its manifest without a crate.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                chunk[4 * i],
                chunk[4 * i + 1],
                chunk[4 * i + 2],
                chunk[4 * i + 3],
            ]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for i in 0..8 {
            h[i] = h[i].wrapping_add(v[i]);
        }
    }
    let mut out = [0u8; 32];
    for i in 0..8 {
        out[4 * i..4 * i + 4].copy_from_slice(&h[i].to_be_bytes());
    }
    out
}

/// An edge core with no carriers, campaigns or buyers (every INVITE is from an unknown
/// source), CDRs dropped.
pub fn bare_edge(counters: std::sync::Arc<dce::counters::Counters>) -> dce::edge::EdgeCore {
    use dce::call::leg::Me;
    use dce::call::{AllowAll, Controller, Settings};
    use std::sync::Arc;
    use std::time::Duration;
    let live = Arc::new(dce_routing::Live::default());
    let snapshot = Arc::new(dce_routing::Snapshot::new(vec![], vec![], &live).unwrap());
    let settings = Settings {
        node_id: "test".into(),
        me: Me {
            host: "127.0.0.1".into(),
            port: 5060,
            tcp_port: None,
            tls_port: None,
        },
        ring_timeout: Duration::from_secs(20),
        max_attempts: 3,
        t1: Duration::from_millis(500),
        max_calls: 10_000,
        udp_socket: 0,
        media_ip: "127.0.0.1".parse().unwrap(),
        max_udp_request: 1300,
        recordings_dir: "recordings".into(),
        target_timeout: Duration::from_secs(2),
    };
    let controller = Controller::new(
        settings,
        snapshot,
        live,
        &[],
        Box::new(AllowAll),
        Arc::new(dce::clock::SystemClock),
        dce::ids::Ids::deterministic(1),
        counters.clone(),
        Box::new(FakeMedia::default()),
    );
    dce::edge::EdgeCore::new(
        dce_sip::transaction::TimerConfig::default(),
        dce::edge::Local {
            hosts: vec!["127.0.0.1".into()],
        },
        "127.0.0.1".into(),
        counters,
        controller,
    )
}

/// Feed `bytes` from `from` to `core` at `now`.
#[allow(dead_code)]
pub fn feed(
    core: &mut dce::edge::EdgeCore,
    bytes: bytes::Bytes,
    from: dce_sip::transaction::Peer,
    now: std::time::Instant,
) {
    core.handle_input(
        dce::edge::Input::Bytes {
            bytes,
            from,
            at: now,
        },
        now,
    );
}

/// The next transmit `core` has (other outputs — CDRs, lookups — are dropped: tests of the
/// edge only).
#[allow(dead_code)]
pub fn next_transmit(core: &mut dce::edge::EdgeCore) -> Option<dce_sip::transaction::Transmit> {
    loop {
        match core.poll_output()? {
            dce::edge::Output::Transmit(t) => return Some(t),
            _ => continue,
        }
    }
}

/// What one side announced for a call's media.
pub type Announced = (dce_media::MediaId, dce_media::Side, Vec<dce_media::Stream>);

/// An in-memory media engine: hands out ports, remembers what each side announced, and on
/// close queues a `Closed` event with `report` (so tests can pump it into the core).
#[derive(Clone, Default)]
pub struct FakeMedia {
    /// Events to deliver to the core.
    pub events: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<dce_media::MediaEvent>>>,
    /// What each side announced, by media id.
    pub remotes: std::sync::Arc<std::sync::Mutex<Vec<Announced>>>,
    /// The report every closed call gets.
    pub report: std::sync::Arc<std::sync::Mutex<dce_media::MediaReport>>,
    /// Calls answered, by media id.
    pub answered: std::sync::Arc<std::sync::Mutex<Vec<dce_media::MediaId>>>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Fail `open` (port exhaustion).
    pub exhausted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Media sessions opened and not closed (leak checks).
    pub open: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<dce_media::MediaId>>>,
    /// Play INFO digits as RFC 4733 (as the relay does toward a side that announced
    /// telephone-event); off: `send_dtmf` refuses, as toward a side that did not.
    pub plays_dtmf: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The digits played: (media, toward, digit, ms).
    pub dtmf: std::sync::Arc<std::sync::Mutex<Vec<DtmfPlayed>>>,
    /// Recordings asked for: (media, file).
    pub recorded: std::sync::Arc<std::sync::Mutex<Vec<(dce_media::MediaId, std::path::PathBuf)>>>,
}

/// A digit [`FakeMedia`] was asked to play: (media, toward, digit, ms).
pub type DtmfPlayed = (dce_media::MediaId, dce_media::Side, char, u32);

impl dce_media::MediaEngine for FakeMedia {
    fn open(&mut self, _streams: usize) -> Result<dce_media::MediaId, dce_media::MediaError> {
        if self.exhausted.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(dce_media::MediaError::PortsExhausted);
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.open.lock().unwrap().insert(id);
        Ok(id)
    }
    fn ports(&self, id: dce_media::MediaId, side: dce_media::Side) -> Vec<u16> {
        let base = 20000 + (id as u16 % 1000) * 8;
        vec![if side == dce_media::Side::A {
            base
        } else {
            base + 4
        }]
    }
    fn set_remote(
        &mut self,
        id: dce_media::MediaId,
        side: dce_media::Side,
        streams: &[dce_media::Stream],
    ) {
        self.remotes
            .lock()
            .unwrap()
            .push((id, side, streams.to_vec()));
    }
    fn answered(&mut self, id: dce_media::MediaId) {
        self.answered.lock().unwrap().push(id);
    }
    fn record(&mut self, id: dce_media::MediaId, path: std::path::PathBuf) {
        self.recorded.lock().unwrap().push((id, path));
    }
    fn send_dtmf(
        &mut self,
        id: dce_media::MediaId,
        toward: dce_media::Side,
        digit: char,
        duration_ms: u32,
    ) -> bool {
        let plays = self.plays_dtmf.load(std::sync::atomic::Ordering::Relaxed);
        if plays {
            self.dtmf
                .lock()
                .unwrap()
                .push((id, toward, digit, duration_ms));
        }
        plays
    }
    fn close(&mut self, id: dce_media::MediaId) {
        assert!(
            self.open.lock().unwrap().remove(&id),
            "media {id} closed twice or never opened"
        );
        let report = self.report.lock().unwrap().clone();
        self.events
            .lock()
            .unwrap()
            .push_back(dce_media::MediaEvent::Closed {
                id,
                report: Box::new(report),
            });
    }
}

/// The `kamailio` binary (with its `tls` module), or `None` (after saying so) outside CI.
/// Under `CI=true` its absence fails the test: `.ci/run` installs it.
pub fn kamailio() -> Option<PathBuf> {
    let bin = PathBuf::from("/usr/sbin/kamailio");
    let tls = std::path::Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so");
    if bin.is_file() && tls.is_file() {
        return Some(bin);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("kamailio with its tls module not installed under CI=true (Debian kamailio, kamailio-tls-modules)");
    }
    eprintln!("NOT RUN: kamailio not installed (apt-get install -y kamailio kamailio-tls-modules)");
    None
}

/// A Kamailio running in the foreground for one test, its log kept.
pub struct Kamailio {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Kamailio {
    /// Start `bin` with config `cfg`, runtime files in `dir`; waits until it listens.
    pub fn start(bin: &PathBuf, cfg: &std::path::Path, dir: &std::path::Path) -> Kamailio {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(bin)
            // its own process group, so its worker processes go with it
            .process_group(0)
            .args(["-DD", "-E", "-f"])
            .arg(cfg)
            .arg("-Y")
            .arg(dir)
            .arg("-w")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn kamailio");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut k = Kamailio { child, log };
        // Up when its listeners answer; a config error ends the process at once.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        std::thread::sleep(std::time::Duration::from_millis(500));
        loop {
            if let Ok(Some(st)) = k.child.try_wait() {
                panic!("kamailio exited ({st}):\n{}", k.log());
            }
            if std::time::Instant::now() > end || k.log().contains("tls_h_mod_post_fork") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        if let Ok(Some(st)) = k.child.try_wait() {
            panic!("kamailio exited ({st}):\n{}", k.log());
        }
        k
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test started; no memory is touched.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
