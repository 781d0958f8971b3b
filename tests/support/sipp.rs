//! Running SIPp as a real peer.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `sipp` binary, or `None` (after saying so) when it is absent outside CI. Under
/// `CI=true` its absence fails the test: `.ci/run` installs it.
pub fn sipp() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("sipp"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("sipp not installed under CI=true (Debian package sip-tester)");
        }
        eprintln!("NOT RUN: sipp not installed (apt-get install -y sip-tester)");
    }
    found
}

/// A scenario file under tests/sipp/.
/// Are these pcap files (Debian's sip-tester ships them) there? Outside CI a missing one makes
/// the test say it was not run; under `CI=true` it is a failure (`.ci/run` installs SIPp).
pub fn pcaps_present(paths: &[&str]) -> bool {
    match paths.iter().find(|p| !std::path::Path::new(p).exists()) {
        None => true,
        Some(p) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{p} missing (Debian package sip-tester ships it)")
        }
        Some(p) => {
            eprintln!("NOT RUN: {p} missing");
            false
        }
    }
}

pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// Run sipp with these arguments (bounded by `-timeout`), returning its output.
/// A SIPp that could not start (exit 254: a socket would not bind, e.g. its media port, picked
/// free a moment before, was taken by a test running beside it; 255: another fatal error before
/// any call) is started again with a fresh media port, up to three times; its output is kept.
pub fn run(bin: &PathBuf, args: &[String]) -> Output {
    let mut args = args.to_vec();
    let mut tries = 0;
    loop {
        let out = Command::new(bin)
            .args(&args)
            .arg("-nostdin")
            .output()
            .expect("run sipp");
        tries += 1;
        let fatal_at_start = matches!(out.status.code(), Some(254) | Some(255));
        if !fatal_at_start || tries == 3 {
            return out;
        }
        eprintln!(
            "sipp could not start (exit {:?}): {}; again with a fresh media port",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if let Some(i) = args.iter().position(|a| a == "-mp") {
            if let Some(p) = args.get_mut(i + 1) {
                *p = super::dce_process::free_port().to_string();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A SIPp running in the background (a buyer UAS).
pub struct Background {
    child: std::process::Child,
}

impl Background {
    /// Start `sipp` with `args` in the background.
    pub fn start(bin: &PathBuf, args: &[String]) -> Background {
        let child = Command::new(bin)
            .args(args)
            .arg("-nostdin")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sipp");
        Background { child }
    }

    /// Wait up to `secs` for it to finish by itself; kill it otherwise. Returns (exited by
    /// itself with status 0, stdout+stderr).
    pub fn finish(mut self, secs: u64) -> (bool, String) {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break Some(s);
            }
            if std::time::Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut text = String::new();
        use std::io::Read;
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut text);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        (status.is_some_and(|s| s.success()), text)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Common arguments: scenario, local port, media port, bounded time.
pub fn args(scenario_file: &std::path::Path, local_port: u16, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-sf".into(),
        scenario_file.display().to_string(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        local_port.to_string(),
        "-mp".into(),
        super::dce_process::free_port().to_string(),
        "-t".into(),
        "u1".into(),
        "-timeout".into(),
        "60s".into(),
        "-timeout_error".into(),
        "-max_retrans".into(),
        "5".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Run SIPp as the carrier: scenario `scenario` from a free port, dialling +18005550100 at
/// `to` (DCE's SIP address), with `extra` arguments; whether it succeeded, and its output.
pub fn carrier(
    bin: &PathBuf,
    scenario: &std::path::Path,
    to: std::net::SocketAddr,
    extra: &[&str],
) -> (bool, String) {
    let mut args = args(
        scenario,
        super::dce_process::free_port(),
        &["-s", "+18005550100"],
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(to.to_string());
    let out = run(bin, &args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One carrier call to `dce` (`uac_expect.xml`) that must get the final response `code`, with
/// `extra` arguments (a later `-s NUMBER` dials another number); whether it did, and SIPp's
/// output.
pub fn expect_code(
    bin: &PathBuf,
    dce: &super::dce_process::Dce,
    code: u16,
    extra: &[&str],
) -> (bool, String) {
    let text = std::fs::read_to_string(scenario("uac_expect.xml"))
        .unwrap()
        .replace("EXPECTED_CODE", &code.to_string());
    let path = dce.dir().join(format!("uac_expect_{code}.xml"));
    std::fs::write(&path, text).unwrap();
    carrier(bin, &path, dce.sip, extra)
}

/// A buyer (SIPp `uas_answer.xml` on `port`) answering `calls` calls, in the background.
pub fn answering(bin: &PathBuf, port: u16, calls: u32) -> Background {
    let calls = calls.to_string();
    Background::start(
        bin,
        &args(&scenario("uas_answer.xml"), port, &["-m", &calls]),
    )
}

/// One carrier call to `dce` held `hold_ms` after the answer, in the background.
pub fn carrier_call(bin: &PathBuf, dce: &super::dce_process::Dce, hold_ms: u32) -> Background {
    let hold = hold_ms.to_string();
    let mut a = args(
        &scenario("uac_call.xml"),
        super::dce_process::free_port(),
        &["-s", "+18005550100", "-m", "1", "-d", &hold],
    );
    a.push(dce.sip.to_string());
    Background::start(bin, &a)
}

/// One short carrier call to `dce`; whether it succeeded, and SIPp's output.
pub fn short_call(bin: &PathBuf, dce: &super::dce_process::Dce) -> (bool, String) {
    carrier(
        bin,
        &scenario("uac_call.xml"),
        dce.sip,
        &["-m", "1", "-d", "200"],
    )
}
