//! The live page in a real browser: headless Chromium (Debian's `chromium`) driven over the
//! DevTools protocol opens `/`, which seeds from `/v1/calls` and then follows `/v1/events`.
//! A SIPp call must appear on the page while it is up and leave it when it ends; a screenshot
//! of the page with the live call is written to `target/screenshots/live-page.png`. Each
//! call's STIR/SHAKEN verdict shows beside it, and a call refused for it among the rejections.
//!
//! Without `chromium` the test says it was not run; under `CI=true` that is a failure
//! (`.ci/run` installs it).

mod support;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::BufRead;
use std::time::{Duration, Instant};
use support::dce_process::{free_port, Dce};
use support::sipp::{self, Background};
use tokio_tungstenite::tungstenite::Message;

/// SHA-256 of "ops-secret".
const OPS_SHA: &str = "32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f";

fn chromium() -> Option<std::path::PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium not installed under CI=true (Debian package chromium)");
        }
        eprintln!("NOT RUN: chromium not installed (apt-get install -y chromium)");
    }
    found
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One DevTools command on `session`; its result (events in between are skipped).
async fn cdp(ws: &mut Ws, id: u64, method: &str, params: Value, session: Option<&str>) -> Value {
    let mut msg = json!({ "id": id, "method": method, "params": params });
    if let Some(s) = session {
        msg["sessionId"] = s.into();
    }
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no answer to {method}"))
            .expect("DevTools connection open")
            .expect("DevTools message");
        let Ok(text) = m.to_text() else { continue };
        let v: Value = serde_json::from_str(text).unwrap();
        if v["id"] == id {
            assert!(v["error"].is_null(), "{method}: {v}");
            return v["result"].clone();
        }
    }
}

/// A page target, attached.
struct Page {
    ws: Ws,
    session: String,
    next: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        cdp(&mut self.ws, self.next, method, params, Some(&self.session)).await
    }

    /// Evaluate a JavaScript expression in the page; its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true }),
            )
            .await;
        r["result"]["value"].clone()
    }
}

struct Browser {
    child: std::process::Child,
    _profile: support::dce_process::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start headless Chromium; its browser-level DevTools WebSocket URL.
fn launch(bin: &std::path::Path) -> (Browser, String) {
    let profile = support::dce_process::TempDir::new("chromium");
    let mut child = std::process::Command::new(bin)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1280,800",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("chromium printed its DevTools address");
    (
        Browser {
            child,
            _profile: profile,
        },
        url,
    )
}

#[test]
fn a_live_call_appears_on_the_page_and_leaves_it() {
    let Some(chrome) = chromium() else { return };
    let Some(bin) = sipp::sipp() else { return };
    let (http, acme) = (free_port(), free_port());
    let pki = support::stir_pki::Pki::new(true, (2024, 2030));
    let dce = Dce::start_with(|port, dir| {
        // STIR/SHAKEN on: the SIPp calls carry no Identity, so each has the verdict
        // `no_identity`, and the campaign `strict` (which requires one) refuses with 428.
        std::fs::write(dir.join("roots.pem"), &pki.root_pem).unwrap();
        format!(
            "[node]\nid = \"page\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [compliance]\ncalling_hours = {{ start = \"00:00\", end = \"24:00\" }}\n\
             [stir]\nca_file = \"{d}/roots.pem\"\n\
             [storage]\ndatabase_url = \"sqlite://{d}/dce.db\"\nspool_dir = \"{d}/spool\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"noc\", sha256 = \"{OPS_SHA}\", role = \"read\" }}]\n\
             [[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n\
             [[campaign]]\nid = \"auto\"\nnumbers = [\"+18005550100\"]\nbillable_after_s = 0\n\
             [[campaign]]\nid = \"strict\"\nnumbers = [\"+18005550101\"]\nstir = {{ require = \"any\" }}\n\
             [[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\", \"strict\"]\nuri = \"sip:{{called}}@127.0.0.1:{acme}\"\nbid_cents = 1500\n",
            d = dir.display()
        )
    });
    let _ = support::http::request(http, "GET", "/health", None, "");
    let (_browser, devtools) = launch(&chrome);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shot = rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(devtools.as_str())
            .await
            .expect("DevTools WebSocket");
        let page = format!("http://127.0.0.1:{http}/#key=ops-secret");
        let t = cdp(&mut ws, 1, "Target.createTarget", json!({ "url": page }), None).await;
        let s = cdp(
            &mut ws,
            2,
            "Target.attachToTarget",
            json!({ "targetId": t["targetId"], "flatten": true }),
            None,
        )
        .await;
        let session = s["sessionId"].as_str().unwrap().to_owned();
        let mut page = Page {
            ws,
            session,
            next: 10,
        };
        let until = |secs: u64| Instant::now() + Duration::from_secs(secs);

        let end = until(20);
        loop {
            let status = page.eval("document.getElementById('status') && document.getElementById('status').textContent").await;
            if status == "live" {
                break;
            }
            assert!(Instant::now() < end, "the page never went live: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A 6 s call while the page watches.
        let buyer = Background::start(
            &bin,
            &sipp::args(&sipp::scenario("uas_answer.xml"), acme, &["-m", "1"]),
        );
        let mut args = sipp::args(
            &sipp::scenario("uac_call.xml"),
            free_port(),
            &["-s", "+18005550100", "-m", "1", "-d", "6000"],
        );
        args.push(dce.sip.to_string());
        let sipp_bin = bin.clone();
        let carrier = std::thread::spawn(move || sipp::run(&sipp_bin, &args));

        let rows = "[...document.querySelectorAll('#calls tr')].map(r => r.innerText).join('\\n')";
        let end = until(15);
        let row = loop {
            let text = page.eval(rows).await;
            let t = text.as_str().unwrap_or("").to_owned();
            if t.contains("auto") && t.contains("acme") && t.contains("connected") {
                break t;
            }
            assert!(Instant::now() < end, "the call never appeared on the page: {t:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(row.contains("1310*****34"), "the caller is masked: {row}");
        assert!(row.contains("no_identity"), "the call's STIR verdict is shown: {row}");
        let active = page.eval("document.getElementById('active').textContent").await;
        assert_eq!(active, "1");
        let png = page.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png["data"].as_str().unwrap())
            .unwrap();

        let out = carrier.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        assert!(buyer.finish(10).0);
        let end = until(10);
        loop {
            let t = page.eval(rows).await;
            let asr = page.eval("document.getElementById('asr').textContent").await;
            if t.as_str() == Some("") && asr == "100 %" {
                break;
            }
            assert!(Instant::now() < end, "the call did not leave the page: {t:?} {asr:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let auctions = page
            .eval("document.getElementById('auctions').innerText")
            .await;
        assert!(
            auctions.as_str().unwrap_or("").contains("acme 15.00"),
            "the auction is listed: {auctions}"
        );
        // A call to a number no campaign has: 404, listed under rejections.
        let (ok, out) = sipp::expect_code(&bin, &dce, 404, &["-s", "+18005550199", "-m", "1"]);
        assert!(ok, "{out}");
        let end = until(10);
        loop {
            let r = page
                .eval("document.getElementById('rejections').innerText")
                .await;
            if r.as_str().is_some_and(|t| t.contains("404")) {
                break;
            }
            assert!(Instant::now() < end, "the rejection never appeared: {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A call without Identity to the campaign that requires one: 428, with its verdict.
        let (ok, out) = sipp::expect_code(&bin, &dce, 428, &["-s", "+18005550101", "-m", "1"]);
        assert!(ok, "{out}");
        let end = until(10);
        loop {
            let r = page
                .eval("[...document.querySelectorAll('#rejections tr')].map(r => r.innerText).join('\\n')")
                .await;
            let t = r.as_str().unwrap_or("");
            if t.lines().any(|l| l.contains("428") && l.contains("no_identity") && l.contains("strict")) {
                break;
            }
            assert!(Instant::now() < end, "the STIR rejection never appeared: {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let share = page.eval("document.getElementById('stir').textContent").await;
        assert_eq!(share, "0 %", "no call was verified");
        png
    });
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("live-page.png");
    std::fs::write(&path, &shot).unwrap();
    println!(
        "screenshot of the live page: {} ({} bytes)",
        path.display(),
        shot.len()
    );
    let (ok, log) = dce.stop();
    assert!(ok, "{log}");
}
