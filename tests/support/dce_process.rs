//! Start the real `dce` binary on free loopback ports and stop it with SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `dce run`.
pub struct Dce {
    child: Option<Child>,
    /// SIP address (UDP and TCP on the same port).
    pub sip: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("dce-test-{tag}-{}-{}", std::process::id(), nanos()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A port free on 127.0.0.1 for both UDP and TCP right now, never the same twice in one test
/// process (four apart). Taken from 10000–19999: below the kernel's ephemeral range (32768–60999), where
/// SIPp's, DCE's and the HTTP clients' own sockets land, and outside every RTP range the tests
/// configure (20000–29999 by default, 41000–48999). Asking the kernel for port 0 instead let
/// two tests running at once be handed the same port (seen: "cannot listen on …: Address
/// already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Four ports apart: a SIPp given N as its media port also takes N+1 (RTCP) and N+2.
    let base = std::process::id().wrapping_mul(7919) % 2_500;
    for _ in 0..2_500 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + ((base + n) % 2_500 * 4) as u16;
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if udp.is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 10000-19999");
}

impl Dce {
    /// Start DCE with `[sip]` extras appended to a minimal config.
    pub fn start(sip_extra: &str) -> Dce {
        Dce::start_with(|port, dir| {
            format!(
                "[node]\nid = \"test\"\n\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\", \"tcp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n{sip_extra}\n[cdr]\njsonl_path = \"{}\"\n",
                dir.join("cdr.jsonl").display()
            )
        })
    }

    /// Start DCE with the config `make(port, dir)` returns (`dir` is a fresh temp directory
    /// for the CDR file and such).
    pub fn start_with(make: impl FnOnce(u16, &std::path::Path) -> String) -> Dce {
        Dce::start_logging(make, "info")
    }

    /// [`Dce::start_with`] at the log filter `rust_log` (`info` is the default level, where a
    /// call logs one line; `info,dce::call=debug` shows its steps).
    pub fn start_logging(
        make: impl FnOnce(u16, &std::path::Path) -> String,
        rust_log: &str,
    ) -> Dce {
        let dir = TempDir::new("dce");
        let port = free_port();
        let config = make(port, &dir.0);
        let path = dir.0.join("dce.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_dce"))
            .current_dir(&dir.0)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dce");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let dce = Dce {
            child: Some(child),
            sip: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        dce.wait_for_log("DCE edge running", Duration::from_secs(20));
        dce
    }

    /// The temp directory (config, CDRs).
    pub fn dir(&self) -> &std::path::Path {
        &self._dir.0
    }

    /// Send a signal (`HUP`, `TERM` …) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status();
        }
    }

    /// Everything DCE logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("dce never logged {needle:?}; log:\n{}", self.log());
    }

    /// SIGTERM, wait for exit, return (exit success, full log). The temp directory lives on
    /// in the returned guard until it is dropped.
    pub fn stop(self) -> (bool, String) {
        let (ok, log, _dir) = self.stop_keep();
        (ok, log)
    }

    /// Like [`Dce::stop`], also handing back the temp directory.
    pub fn stop_keep(mut self) -> (bool, String, TempDir) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > end {
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // let the reader thread flush the last lines
        std::thread::sleep(Duration::from_millis(100));
        let dir = std::mem::replace(&mut self._dir, TempDir(PathBuf::new()));
        (status.success(), self.log(), dir)
    }
}

impl Drop for Dce {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The CDRs of the JSON-lines file `dir/cdr.jsonl`, in order (none when it is missing).
pub fn jsonl_cdrs(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("cdr.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("CDR line is JSON"))
        .collect()
}

/// Counter `name` from the report DCE logs as it stops (`dce: stopped; counters a=1 b=2`), 0
/// when the report does not name it; panics when there is no report at all.
pub fn counter(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("stopped"))
        .unwrap_or_else(|| panic!("no counter report in:\n{log}"));
    line.split(|c: char| c.is_whitespace() || c == '"')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim_end_matches(',').parse().unwrap_or(0))
        .unwrap_or(0)
}

/// A JSON CDR's bids as `buyer=outcome`, in auction order.
pub fn outcomes(cdr: &serde_json::Value) -> Vec<String> {
    cdr["bids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            format!(
                "{}={}",
                b["buyer_id"].as_str().unwrap(),
                b["outcome"].as_str().unwrap()
            )
        })
        .collect()
}
