//! The control API of the real binary over a real socket: open `/health` and `/metrics`, keys
//! on everything else, metrics that move with SIP traffic.

mod support;

use std::net::UdpSocket;
use std::time::Duration;
use support::dce_process::{free_port, Dce};

/// SHA-256 of "ops-secret".
const OPS_SHA: &str = "32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f";

fn get(port: u16, path: &str, key: Option<&str>) -> (u16, String) {
    request(port, "GET", path, key)
}

fn request(port: u16, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    support::http::request(port, method, path, key, "")
}

#[test]
fn health_metrics_and_keys_on_the_real_binary() {
    let http = free_port();
    let dce = Dce::start_with(|port, dir| {
        format!(
            "[node]\nid = \"http\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [storage]\ndatabase_url = \"sqlite://{d}/dce.db\"\nspool_dir = \"{d}/spool\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\napi_keys = [{{ name = \"ops\", sha256 = \"{OPS_SHA}\", role = \"admin\" }}]\n",
            d = dir.display()
        )
    });
    let (code, body) = get(http, "/health", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["database"]["status"], "ok", "{body}");

    let (code, body) = get(http, "/v1/calls", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
    let (code, body) = get(http, "/v1/calls", Some("ops-secret"));
    assert_eq!(code, 200, "the key is accepted: {body}");
    assert_eq!(body, "{\"calls\":[]}");

    // one OPTIONS over UDP moves the counters
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = u.local_addr().unwrap();
    let msg = format!(
        "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-http-1\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:{sip}>\r\nCall-ID: http-1@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        sip = dce.sip
    );
    u.send_to(msg.as_bytes(), dce.sip).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 200"));
    let (code, body) = get(http, "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        body.contains("dce_events_total{event=\"answered_200_options\"} 1\n"),
        "{body}"
    );

    // POST /v1/reload takes the SIGHUP path: a broken file is refused with its problems...
    let cfg = dce.dir().join("dce.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, "[node\n").unwrap();
    let (code, body) = request(http, "POST", "/v1/reload", Some("ops-secret"));
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("config_refused") && body.contains("dce.toml:1: TOML syntax"),
        "{body}"
    );
    // ... and a good one is in force when the answer comes
    std::fs::write(&cfg, &good).unwrap();
    let (code, body) = request(http, "POST", "/v1/reload", Some("ops-secret"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"reloaded\":true"), "{body}");
    let (ok, log) = dce.stop();
    assert!(ok, "{log}");
    assert!(log.contains("HTTP API listening"), "{log}");
    assert!(log.contains("config reloaded"), "{log}");
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use std::io::{Read, Write};
    let http = free_port();
    let dce = Dce::start_with(|port, dir| {
        format!(
            "[node]\nid = \"http\"\n[sip]\nlisten = [\"udp://127.0.0.1:{port}\"]\nadvertised_host = \"127.0.0.1\"\n\
             [storage]\ndatabase_url = \"sqlite://{d}/dce.db\"\nspool_dir = \"{d}/spool\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\nheader_timeout_s = 1\n",
            d = dir.display()
        )
    });
    let _ = get(http, "/health", None);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let r = s.read_to_end(&mut buf);
    assert!(
        r.is_ok(),
        "the server closed the connection rather than letting the read time out: {r:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "nothing or a 408: {text}"
    );
    // a well-behaved client right after is served
    let (code, _) = get(http, "/health", None);
    assert_eq!(code, 200);
    let (ok, log) = dce.stop();
    assert!(ok, "{log}");
}
