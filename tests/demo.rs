//! `dce demo` — the README's run command — places its calls and shows every path.

mod support;

use support::dce_process::{free_port, TempDir};

#[test]
fn demo_shows_win_failovers_cancel_and_no_buyer() {
    let dir = TempDir::new("demo");
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/dce.toml"))
        .unwrap()
        .replace("127.0.0.1:5060", &format!("127.0.0.1:{}", ports[0]))
        .replace("127.0.0.1:5090", &format!("127.0.0.1:{}", ports[1]))
        .replace("127.0.0.1:5091", &format!("127.0.0.1:{}", ports[2]))
        .replace("127.0.0.1:5092", &format!("127.0.0.1:{}", ports[3]))
        .replace(
            "jsonl_path = \"cdr.jsonl\"",
            &format!("jsonl_path = \"{}\"", dir.0.join("cdr.jsonl").display()),
        );
    let cfg = dir.0.join("dce.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dce"))
        .current_dir(&dir.0)
        .args(["demo", "--config"])
        .arg(&cfg)
        .output()
        .expect("run dce demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "acme $15.00 won",
        "acme $15.00 attempted:486 | bravo $12.00 won",
        "acme $15.00 attempted:ring_timeout | bravo $12.00 won",
        "attempted:cancelled",
        "cancelled",
        "rejected",
        "cobalt $9.00 excluded:state",
        "totals: 32 calls — answered 24, cancelled 4, rejected 4",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let cdrs = std::fs::read_to_string(dir.0.join("cdr.jsonl")).unwrap();
    assert_eq!(cdrs.lines().count(), 32, "one CDR line per demo call");
}
