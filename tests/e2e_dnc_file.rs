//! A damaged national DNC file against the real binary: `dce run` refuses to start and prints
//! `path: what is wrong`; a running DCE given a damaged file on SIGHUP or `POST /v1/reload`
//! refuses the reload (log line, 422) and keeps the old list, so a listed caller still gets
//! 603 DNC.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::dce_process::{free_port, Dce, TempDir};
use support::http::request;
use support::sipp;

/// SHA-256 of "ops-secret".
const OPS_SHA: &str = "32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f";
const KEY: &str = "ops-secret";

/// The file layout (compliance/src/national.rs): the CRC-32 field, and where the per-prefix
/// counts start.
const CRC_AT: usize = 24;
const COUNTS: usize = 28 + 1_000_001 * 4;

/// `dce dnc build` of these numbers into `dir/national.dnc`.
fn build(dir: &Path, numbers: &str) -> PathBuf {
    let list = dir.join("registry.txt");
    std::fs::write(&list, numbers).unwrap();
    let dnc = dir.join("national.dnc");
    let out = Command::new(env!("CARGO_BIN_EXE_dce"))
        .args(["dnc", "build"])
        .arg(&list)
        .arg(&dnc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dnc
}

fn config(port: u16, dir: &Path, dnc: &Path, http: u16) -> String {
    format!(
        "[node]\nid = \"d\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
         [compliance]\nnational_dnc = \"{}\"\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [storage]\ndatabase_url = \"sqlite://{d}/dce.db\"\nspool_dir = \"{d}/spool\"\n\
         [cdr]\njsonl_path = \"{d}/cdr.jsonl\"\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{OPS_SHA}\", role = \"admin\" }}]\n\
         [[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{}\"\nbid_cents = 1500\n",
        dnc.display(),
        free_port(),
        d = dir.display()
    )
}

/// `dce run --config` that must fail: (exit success, stderr). Killed after 20 s.
fn run_expecting_failure(dir: &Path, dnc: &Path) -> (bool, String) {
    let path = dir.join("dce.toml");
    std::fs::write(&path, config(free_port(), dir, dnc, free_port())).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dce"))
        .current_dir(dir)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.is_some(), "dce kept running with a bad file:\n{err}");
    (status.is_some_and(|s| s.success()), err)
}

#[test]
fn dce_run_refuses_to_start_on_a_damaged_national_dnc() {
    let tmp = TempDir::new("dncfile");
    let dnc = build(&tmp.0, "3105551234\n2125550000\n");
    let image = std::fs::read(&dnc).unwrap();

    std::fs::write(&dnc, &image[..image.len() - 1]).unwrap();
    let (ok, err) = run_expecting_failure(&tmp.0, &dnc);
    assert!(!ok, "a truncated file: exit non-zero\n{err}");
    let want = format!(
        "{}: {} bytes, but its header says",
        dnc.display(),
        image.len() - 1
    );
    assert!(err.contains(&want), "prints `{want}`:\n{err}");

    std::fs::write(&dnc, &image[..1000]).unwrap();
    let (ok, err) = run_expecting_failure(&tmp.0, &dnc);
    assert!(!ok);
    let want = format!("{}: truncated: 1000 bytes", dnc.display());
    assert!(err.contains(&want), "prints `{want}`:\n{err}");

    let mut old = image.clone();
    old[..8].copy_from_slice(b"DCEDNC01");
    std::fs::write(&dnc, &old).unwrap();
    let (ok, err) = run_expecting_failure(&tmp.0, &dnc);
    assert!(!ok);
    let want = format!(
        "{}: DNC file format version 01 is not read by this DCE",
        dnc.display()
    );
    assert!(err.contains(&want), "prints `{want}`:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_damaged_file_on_reload_is_refused_and_the_old_list_stays() {
    let Some(bin) = sipp::sipp() else { return };
    let tmp = TempDir::new("dncreload");
    // the SIPp carrier calls from +1 310 555 1234
    let dnc = build(&tmp.0, "3105551234\n2125550000\n");
    let image = std::fs::read(&dnc).unwrap();
    let http = free_port();
    let dce = Dce::start_with(|port, dir| config(port, dir, &dnc, http));

    // Zero the count of prefix 310555: the old loader took that file and unlisted the caller.
    let mut unlisted = image.clone();
    let at = COUNTS + 310_555 * 2;
    assert_eq!(unlisted[at], 1, "prefix 310555 holds one number");
    unlisted[at] = 0;
    std::fs::write(&dnc, &unlisted).unwrap();
    dce.signal("HUP");
    dce.wait_for_log("reload refused", Duration::from_secs(10));
    let log = dce.log();
    let line = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("{}: checksum mismatch", dnc.display())),
        "the log names the file and what is wrong: {line}"
    );

    // The same damage with its checksum made right: the structure check refuses it.
    let crc = {
        let mut h = crc32fast::Hasher::new();
        h.update(&unlisted[..CRC_AT]);
        h.update(&unlisted[CRC_AT + 4..]);
        h.finalize()
    };
    unlisted[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&dnc, &unlisted).unwrap();
    let (code, body) = request(http, "POST", "/v1/reload", Some(KEY), "");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains(&format!(
            "{}: prefix 310555: 0 numbers need a 0-byte block, found 2 bytes",
            dnc.display()
        )),
        "{body}"
    );

    // The old list is still in force.
    let scenario = std::fs::read_to_string(sipp::scenario("uac_expect.xml"))
        .unwrap()
        .replace("EXPECTED_CODE", "603")
        .replace(
            "<recv response=\"603\"/>",
            "<recv response=\"603\"><action><ereg regexp=\"text=.DNC.\" search_in=\"hdr\" header=\"Reason:\" check_it=\"true\" assign_to=\"reason\"/></action></recv>\n  <Reference variables=\"reason\"/>",
        );
    let sf = dce.dir().join("expect_603_dnc.xml");
    std::fs::write(&sf, scenario).unwrap();
    let mut args = sipp::args(&sf, free_port(), &["-s", "+18005550100", "-m", "1"]);
    args.push(dce.sip.to_string());
    let out = sipp::run(&bin, &args);
    assert!(
        out.status.success(),
        "a caller on the old list is still refused 603 DNC:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (_, log, dir) = dce.stop_keep();
    assert!(!log.contains("panicked"), "{log}");
    let verdicts: Vec<String> = support::dce_process::jsonl_cdrs(&dir.0)
        .iter()
        .map(|c| c["compliance"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(verdicts, vec!["reject:DNC"], "{log}");
}
