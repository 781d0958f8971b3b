//! End-to-end with SIPp as the carrier: OPTIONS probes over UDP and TCP get 200 with Allow.

mod support;

use support::dce_process::{free_port, Dce};
use support::sipp;

fn probe(transport: &str) {
    let Some(bin) = sipp::sipp() else { return };
    let dce = Dce::start("");
    let local_port = free_port();
    let args: Vec<String> = vec![
        "-sf".into(),
        sipp::scenario("options_uac.xml").display().to_string(),
        "-m".into(),
        "20".into(),
        "-r".into(),
        "50".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        local_port.to_string(),
        "-t".into(),
        transport.into(),
        "-timeout".into(),
        "20s".into(),
        "-timeout_error".into(),
        "-max_retrans".into(),
        "3".into(),
        dce.sip.to_string(),
    ];
    let out = sipp::run(&bin, &args);
    let (ok, log) = dce.stop();
    assert!(
        out.status.success(),
        "sipp {transport} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ok);
    let counters = log
        .lines()
        .rev()
        .find(|l| l.contains("stopped"))
        .expect("counter report");
    assert!(counters.contains("answered_200_options=20"), "{counters}");
}

#[test]
fn sipp_options_over_udp() {
    probe("u1");
}

#[test]
fn sipp_options_over_tcp() {
    probe("t1");
}
