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
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// Run sipp with these arguments (bounded by `-timeout`), returning its output.
pub fn run(bin: &PathBuf, args: &[String]) -> Output {
    Command::new(bin)
        .args(args)
        .arg("-nostdin")
        .output()
        .expect("run sipp")
}
