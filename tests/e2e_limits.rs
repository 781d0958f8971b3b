//! End-to-end limits at the edge, the real `dce` binary on loopback: a flood from one source
//! does not starve another (per-source buckets before the core queue), 50,000 OPTIONS cost no
//! lasting memory (stateless answers), a TCP message trickled byte by byte is cut off at
//! `tcp_message_timeout_s`, and an overload of calls gets 503s while memory stays bounded and
//! comes back. Bounds are generous (CI shares two cores); nothing asserts a duration.
//!
//! Source addresses used here (unique among the test files): 127.0.0.71–127.0.0.79.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::dce_process::{counter, free_port, Dce};
use support::sipp::{self, Background};

const FLOOD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 71);
const QUIET_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 72);
const OPTIONS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 73);

fn options(src: SocketAddr, n: u64, tag: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bK{tag}{n};rport\r\nFrom: <sip:probe@{}>;tag={tag}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: {tag}-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        src.ip()
    )
    .into_bytes()
}

/// A config with a carrier on 127.0.0.1 (SIPp) and a buyer on 127.0.0.1:`buyer`.
fn call_config(port: u16, dir: &Path, buyer: u16, sip_extra: &str) -> String {
    format!(
        "[node]\nid = \"limits\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\", \"tcp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n{sip_extra}\n\
         [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
         [cdr]\njsonl_path = \"{}\"\n\
         [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
         [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
         [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{{called}}@127.0.0.1:{buyer}\"\nbid_cents = 1500\n",
        dir.join("cdr.jsonl").display()
    )
}

/// The pid of the `dce` process whose config lives in `dce.dir()`.
fn pid_of(dce: &Dce) -> u32 {
    let needle = dce.dir().display().to_string();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains(&needle) && cmd.contains("run") {
            return pid;
        }
    }
    panic!("no dce process with {needle}");
}

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Samples VmRSS every 200 ms until stopped; returns the highest.
struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    fn start(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: 10 minutes at most.
            for _ in 0..3000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        PeakRss {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// `name=value` from the counter report DCE logs when it stops (0 when absent).
/// Send one OPTIONS from `sock` and wait for its 200, retransmitting as RFC 3261 Timer E
/// does (500 ms, 1 s, 2 s; four sends). Returns the number of sends it took, or `None`.
fn options_with_retransmissions(sock: &UdpSocket, to: SocketAddr, n: u64) -> Option<u32> {
    let src = sock.local_addr().unwrap();
    let msg = options(src, n, "quiet");
    let want = format!("Call-ID: quiet-{n}\r\n");
    let mut buf = vec![0u8; 65535];
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=4 {
        sock.send_to(&msg, to).unwrap();
        let end = Instant::now() + wait;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match sock.recv_from(&mut buf) {
                Ok((len, _)) => {
                    let text = String::from_utf8_lossy(&buf[..len]);
                    if text.starts_with("SIP/2.0 200 ") && text.contains(&want) {
                        return Some(attempt);
                    }
                }
                Err(_) => break,
            }
        }
        wait *= 2;
    }
    None
}

/// Issue 6: 200,000 OPTIONS from 127.0.0.71 paced at 20,000/s while 127.0.0.72 sends 30
/// OPTIONS spaced over the flood and SIPp (127.0.0.1, a configured carrier) places 5 calls.
/// Every OPTIONS of the quiet source and every call succeed; the flood is dropped and counted.
#[test]
fn flood_from_one_source_does_not_starve_another() {
    let Some(bin) = sipp::sipp() else { return };
    let bp = free_port();
    let dce = Dce::start_with(|port, dir| call_config(port, dir, bp, ""));
    let target = dce.sip;
    let buyer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bp, &["-m", "5"]),
    );

    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let sock = UdpSocket::bind((FLOOD_IP, 0)).unwrap();
            let src = sock.local_addr().unwrap();
            let (total, rate) = (200_000u64, 20_000u64);
            let start = Instant::now();
            let give_up = start + Duration::from_secs(60);
            let mut sent = 0u64;
            for i in 0..total {
                if i % 100 == 0 {
                    let due = start + Duration::from_micros(i * 1_000_000 / rate);
                    if let Some(d) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    if Instant::now() > give_up {
                        break;
                    }
                }
                if sock.send_to(&options(src, i, "flood"), target).is_ok() {
                    sent += 1;
                }
            }
            flooding.store(false, Ordering::Relaxed);
            (sent, start.elapsed())
        })
    };

    let calls = {
        let bin = bin.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            let mut args = sipp::args(
                &sipp::scenario("uac_call.xml"),
                free_port(),
                &["-s", "+18005550100", "-m", "5", "-r", "1", "-d", "500"],
            );
            args.push(target.to_string());
            let out = sipp::run(&bin, &args);
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
    };

    let quiet = UdpSocket::bind((QUIET_IP, 0)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut answered = Vec::new();
    for n in 0..30u64 {
        answered.push(options_with_retransmissions(&quiet, target, n));
        std::thread::sleep(Duration::from_millis(300));
    }
    let still_flooding = flooding.load(Ordering::Relaxed);
    let (sent, took) = flood.join().unwrap();
    let (calls_ok, calls_out) = calls.join().unwrap();
    let _ = buyer.finish(20);
    let (ok, log) = dce.stop();
    assert!(ok, "dce exit:\n{log}");

    let first_try = answered.iter().filter(|a| **a == Some(1)).count();
    let rate = sent as f64 / took.as_secs_f64();
    eprintln!(
        "flood: {sent} OPTIONS in {:.1} s ({rate:.0}/s); quiet source: {}/30 answered, {first_try} at the first send; flood still running after the 30th: {still_flooding}",
        took.as_secs_f64(),
        answered.iter().filter(|a| a.is_some()).count()
    );
    assert!(
        answered.iter().all(|a| a.is_some()),
        "every OPTIONS of the quiet source answered: {answered:?}"
    );
    assert!(
        calls_ok,
        "every call of the carrier succeeded:\n{calls_out}"
    );
    assert_eq!(counter(&log, "calls_answered"), 5, "{log}");
    let dropped = counter(&log, "dropped_source_rate");
    eprintln!("flood: {dropped} dropped at the receive side (dropped_source_rate)");
    assert!(
        dropped > sent / 2,
        "most of the flood dropped at the receive side ({dropped} of {sent})"
    );
}

/// Issue 13: 50,000 OPTIONS from one source (not rate-limited here: `source_rate_per_s = 0`,
/// so every one reaches the core) are answered statelessly and leave RSS within 25 MiB of
/// where it started (it grew by ~90 MB and stayed when each OPTIONS was a transaction).
#[test]
fn fifty_thousand_options_cost_no_lasting_memory() {
    let dce = Dce::start("source_rate_per_s = 0\n");
    let pid = pid_of(&dce);
    let target = dce.sip;
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    let peak = PeakRss::start(pid);
    let sock = UdpSocket::bind((OPTIONS_IP, 0)).unwrap();
    let src = sock.local_addr().unwrap();
    let reader = {
        let sock = sock.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65535];
            let mut got = 0u64;
            sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 200 ") {
                    got += 1;
                }
            }
            got
        })
    };
    let (total, rate) = (50_000u64, 5_000u64);
    let start = Instant::now();
    for i in 0..total {
        if i % 50 == 0 {
            let due = start + Duration::from_micros(i * 1_000_000 / rate);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        let _ = sock.send_to(&options(src, i, "mem"), target);
    }
    let answered = reader.join().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid);
    let peak = peak.finish();
    let (ok, log) = dce.stop();
    assert!(ok);
    eprintln!(
        "50,000 OPTIONS: {answered} answered; VmRSS before {before} KiB, peak {peak} KiB, after {after} KiB"
    );
    assert!(
        answered >= 45_000,
        "at least 90% answered ({answered}; UDP on a busy machine may lose some)"
    );
    assert!(counter(&log, "answered_200_options") >= answered, "{log}");
    assert!(
        after <= before + 25 * 1024,
        "VmRSS after {after} KiB, before {before} KiB: more than 25 MiB kept"
    );
}

/// Issue 14: four TCP connections each trickling an INVITE one byte every 250 ms are closed
/// (and counted) once the message has taken `tcp_message_timeout_s = 2`; a message sent in
/// two parts well within the limit is answered.
#[test]
fn tcp_message_trickled_is_closed_at_the_message_timeout() {
    let dce = Dce::start("tcp_message_timeout_s = 2\ntcp_idle_timeout_s = 120\n");
    let invite = "INVITE sip:+18005550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKtrickle\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: trickle\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let mut conns: Vec<TcpStream> = (0..4)
        .map(|_| {
            let s = TcpStream::connect(dce.sip).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            s
        })
        .collect();
    let mut closed = [false; 4];
    // One byte per connection every 250 ms; the INVITE is 200+ bytes, so it would take a
    // minute. Bounded: 120 bytes (30 s) at most.
    for byte in invite.as_bytes().iter().take(120) {
        for (i, c) in conns.iter_mut().enumerate() {
            if closed[i] {
                continue;
            }
            let mut b = [0u8; 256];
            let gone = c.write_all(&[*byte]).is_err() || matches!(c.read(&mut b), Ok(0));
            closed[i] = gone;
        }
        if closed.iter().all(|c| *c) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // A whole OPTIONS in two parts, 500 ms apart, on a fresh connection: answered.
    let mut ok = TcpStream::connect(dce.sip).unwrap();
    let opt = options("127.0.0.1:9".parse().unwrap(), 1, "tcp-in-parts");
    let opt = String::from_utf8(opt)
        .unwrap()
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let (a, b) = opt.split_at(40);
    ok.write_all(a.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ok.write_all(b.as_bytes()).unwrap();
    ok.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 2048];
    let n = ok.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    let (dok, log) = dce.stop();
    assert!(dok);
    assert_eq!(closed, [true; 4], "every trickling connection closed");
    assert!(
        answer.starts_with("SIP/2.0 200 "),
        "a message sent in parts within the limit is answered: {answer:?}"
    );
    assert_eq!(counter(&log, "tcp_closed_message_timeout"), 4, "{log}");
    assert_eq!(counter(&log, "tcp_closed_idle"), 0, "{log}");
}

/// Issue 10: SIPp offers calls well above what DCE (a test build, on two shared cores) can
/// take. Thresholds are set low (`overload_queue_depth = 64`, `overload_queue_delay_ms = 20`)
/// so that shedding starts early. Every call either completes or gets 503 (SIPp fails any
/// other outcome, and any call that hangs past its timeout); VmRSS peaks under 300 MiB and
/// returns to within 56 MiB of where it started once the calls' transactions have ended.
/// (40 MiB until issue 12. Since the SIP worker is a thread of its own, 20 s after the load
/// VmRSS is 54–59 MB, of it 44 MB anonymous, while the allocator reports only 19 MiB in use
/// and `malloc_trim` has run: ~25 MB of freed glibc-arena pages it cannot give back. That is
/// fragmentation, not live state, and it is left for the memory work the closing note of #12
/// names. The peak, 230 MB, is what the bound is about: it comes back.)
#[test]
fn overload_sheds_new_invites_with_503_and_memory_comes_back() {
    let Some(bin) = sipp::sipp() else { return };
    let bp = free_port();
    let dce = Dce::start_with(|port, dir| {
        call_config(
            port,
            dir,
            bp,
            "t1_ms = 100\noverload_queue_depth = 64\noverload_queue_delay_ms = 20\noverload_retry_after_s = 3\n",
        )
    });
    let pid = pid_of(&dce);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    let peak = PeakRss::start(pid);
    let buyer = Background::start(
        &bin,
        &sipp::args(&sipp::scenario("uas_answer.xml"), bp, &[]),
    );
    let calls: u64 = 30_000;
    let mut args = sipp::args(
        &sipp::scenario("uac_call_or_503.xml"),
        free_port(),
        &[
            "-s",
            "+18005550100",
            "-m",
            &calls.to_string(),
            "-r",
            "3000",
            "-l",
            "20000",
            "-d",
            "200",
        ],
    );
    args.push(dce.sip.to_string());
    let out = sipp::run(&bin, &args);
    let sipp_out = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let during = peak.finish();
    drop(buyer);
    // Timer J of the last BYEs (64 × T1 = 6.4 s) and the CDR writer: then back to idle.
    std::thread::sleep(Duration::from_secs(20));
    let after = rss_kib(pid);
    let (ok, log) = dce.stop();
    assert!(ok);
    let completed = counter(&log, "calls_completed");
    let shed = counter(&log, "rejected_503_shed");
    let refused =
        counter(&log, "rejected_503_overload") + counter(&log, "rejected_503_carrier_cps");
    eprintln!(
        "overload: {calls} calls offered at 3,000/s: {completed} completed, {shed} shed with 503 at the receive side, {refused} 503 by the controller; VmRSS before {before} KiB, peak {during} KiB, after {after} KiB"
    );
    assert!(
        out.status.success(),
        "every call completed or got 503:\n{sipp_out}\nDCE log tail:\n{}",
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    // A shed INVITE whose 503 was lost is retransmitted and may be shed again: the 503
    // counters can exceed the calls refused. SIPp's success above says each call ended one way.
    assert!(completed <= calls && completed + shed + refused >= calls);
    assert!(completed > 0, "some calls completed under overload");
    assert!(during <= 300 * 1024, "VmRSS peaked at {during} KiB");
    assert!(
        after <= before + 56 * 1024,
        "VmRSS after {after} KiB, before {before} KiB"
    );
}
