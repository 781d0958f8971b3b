//! A tiny blocking HTTP/1.1 client for the control API of the real binary, and a WebSocket
//! client for its events.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `method path` with an optional bearer key and body; (status, body). Retries the connect
/// for 5 s while the API comes up.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String) {
    request_with(port, method, path, key, "", body)
}

/// [`request`] with `extra` header lines (each ending in CRLF).
pub fn request_with(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    extra: &str,
    body: &str,
) -> (u16, String) {
    let (code, body) = exchange(port, method, path, key, extra, body);
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// `GET path` with a bearer key; (status, body bytes as sent, for binary answers).
pub fn get_bytes(port: u16, path: &str, key: &str) -> (u16, Vec<u8>) {
    exchange(port, "GET", path, Some(key), "", "")
}

fn exchange(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    extra: &str,
    body: &str,
) -> (u16, Vec<u8>) {
    let end = Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > end => panic!("HTTP API not reachable: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{ct}{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..head_end]);
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.get(head_end + 4..).unwrap_or_default().to_vec();
    (code, body)
}

/// An admin key for test configs: `ops-secret`, and its SHA-256 for `api_keys`.
pub const OPS_KEY: &str = "ops-secret";
/// SHA-256 of [`OPS_KEY`].
pub const OPS_SHA: &str = "32323cfa9ec9d62750daad0836a4cf3d7b60d23723b7852a529667deed01669f";

/// GET of an open path (no key), as text.
pub fn get_text(port: u16, path: &str) -> String {
    let (code, body) = request(port, "GET", path, None, "");
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// GET, parsed as JSON.
pub fn get_json(port: u16, path: &str, key: &str) -> serde_json::Value {
    let (code, body) = request(port, "GET", path, Some(key), "");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Open `/v1/events` (with `query`, e.g. `?buyer=x`) and collect events in a background
/// thread until `stop` returns true for one of them or `secs` pass.
pub fn collect_events(
    port: u16,
    query: &str,
    key: &str,
    secs: u64,
    stop: impl Fn(&serde_json::Value) -> bool + Send + 'static,
) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}/v1/events{query}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(req)
                .await
                .expect("WebSocket upgrade");
            let _ = ready_tx.send(());
            let mut got = Vec::new();
            let end = tokio::time::Instant::now() + Duration::from_secs(secs);
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, ws.next()).await {
                if let Ok(t) = m.to_text() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(t) {
                        let done = stop(&v);
                        got.push(v);
                        if done {
                            break;
                        }
                    }
                }
            }
            got
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("WebSocket connected");
    h
}
