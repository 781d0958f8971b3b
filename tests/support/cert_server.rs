//! A small HTTPS server on 127.0.0.1 for STIR `x5u` certificates (issue #16's tests against a
//! real peer): a certificate for the IP 127.0.0.1 from a test [`Ca`] (whose PEM is what
//! `[stir] x5u_ca_file` names), configured paths (status, body, `Cache-Control`, an optional
//! delay, or a hang: the request is read and never answered), a count of requests per path.
//! It can be stopped (the port is closed: connections are refused) and started again on the
//! same port. Bounded: loopback only, at most [`MAX_CONNS`] connections at once, request
//! heads up to 16 KiB, socket timeouts of 5 s, a hang lasts until the server stops or 60 s.
//! One request per connection (`Connection: close`), so the counts are the fetches.
//!
//! Plain threads and blocking rustls: the tests' clients are async, the server need not be.

#![allow(dead_code)]

use super::pki::Ca;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most connections served at once (more are closed at once).
pub const MAX_CONNS: usize = 64;
/// The longest a hanging request is held.
pub const MAX_HANG: Duration = Duration::from_secs(60);
const MAX_HEAD: usize = 16 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a path answers.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// `Cache-Control` value, if any.
    pub cache_control: Option<String>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Read the request, never answer.
    pub hang: bool,
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    counts: Mutex<HashMap<String, u64>>,
    stop: AtomicBool,
    conns: AtomicUsize,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// A running (or stopped) certificate server.
pub struct CertServer {
    shared: Arc<Shared>,
    tls: Arc<rustls::ServerConfig>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
    /// The CA that signed the server's certificate (PEM file): `[stir] x5u_ca_file`.
    pub ca_pem: PathBuf,
}

impl CertServer {
    /// Start on an ephemeral port of 127.0.0.1, the server's CA and certificate written to
    /// `dir` (`certsrv-ca.pem`, `certsrv.pem`, `certsrv.key`).
    pub fn start(dir: &Path) -> CertServer {
        let ca = Ca::new(dir, "certsrv");
        let leaf = ca.issue(dir, "certsrv", &["127.0.0.1"], false);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the certificate server");
        let addr = listener.local_addr().unwrap();
        let mut s = CertServer {
            shared: Arc::new(Shared::default()),
            tls: Arc::new(tls),
            addr,
            accept: None,
            ca_pem: ca.pem.clone(),
        };
        s.run(listener);
        s
    }

    fn run(&mut self, listener: TcpListener) {
        self.shared.stop.store(false, Ordering::SeqCst);
        let (shared, tls) = (self.shared.clone(), self.tls.clone());
        self.accept = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                if shared.conns.fetch_add(1, Ordering::SeqCst) >= MAX_CONNS {
                    shared.conns.fetch_sub(1, Ordering::SeqCst);
                    continue; // dropped: closed
                }
                let (sh, tls) = (shared.clone(), tls.clone());
                let h = std::thread::spawn(move || {
                    serve(&sh, tls, tcp);
                    sh.conns.fetch_sub(1, Ordering::SeqCst);
                });
                let mut w = shared.workers.lock().unwrap();
                w.retain(|h| !h.is_finished());
                w.push(h);
            }
            // the listener is dropped here: the port is closed
        }));
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answer `path` with `route`.
    pub fn route(&self, path: &str, route: Route) {
        self.shared
            .routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), route);
    }

    /// Answer `path` 200 with `body` and this `Cache-Control`.
    pub fn serve(&self, path: &str, body: &[u8], cache_control: Option<&str>) {
        self.route(
            path,
            Route {
                status: 200,
                body: body.to_vec(),
                cache_control: cache_control.map(str::to_owned),
                delay: Duration::ZERO,
                hang: false,
            },
        );
    }

    /// Answer `path` with `status` and a short text body.
    pub fn status(&self, path: &str, status: u16) {
        self.route(
            path,
            Route {
                status,
                body: format!("status {status}\n").into_bytes(),
                cache_control: None,
                delay: Duration::ZERO,
                hang: false,
            },
        );
    }

    /// Answer `path` 200 with `body`, `delay` after the request came.
    pub fn serve_after(&self, path: &str, body: &[u8], delay: Duration) {
        self.route(
            path,
            Route {
                status: 200,
                body: body.to_vec(),
                cache_control: None,
                delay,
                hang: false,
            },
        );
    }

    /// Read requests for `path` and never answer them (until the server stops).
    pub fn hang(&self, path: &str) {
        self.route(
            path,
            Route {
                status: 200,
                body: Vec::new(),
                cache_control: None,
                delay: Duration::ZERO,
                hang: true,
            },
        );
    }

    /// Requests received for `path` (a query string is part of it).
    pub fn count(&self, path: &str) -> u64 {
        self.shared
            .counts
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received in all.
    pub fn total(&self) -> u64 {
        self.shared.counts.lock().unwrap().values().sum()
    }

    /// Stop: close the port, end every connection (hanging ones too), wait for the threads.
    pub fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // wake the accept loop
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = accept.join();
        let workers: Vec<_> = std::mem::take(&mut *self.shared.workers.lock().unwrap());
        for w in workers {
            let _ = w.join();
        }
    }

    /// Start again on the same port (after [`CertServer::stop`]); routes and counts are kept.
    pub fn restart(&mut self) {
        assert!(self.accept.is_none(), "running already");
        let end = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() > end => panic!("rebind {}: {e}", self.addr),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        self.run(listener);
    }
}

impl Drop for CertServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleep `d`, or less when the server stops.
fn pause(sh: &Shared, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !sh.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve(sh: &Shared, tls: Arc<rustls::ServerConfig>, tcp: TcpStream) {
    if sh.stop.load(Ordering::SeqCst) {
        return;
    }
    let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(conn) = rustls::ServerConnection::new(tls) else {
        return;
    };
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > MAX_HEAD {
            return;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or("").split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    *sh.counts
        .lock()
        .unwrap()
        .entry(path.to_owned())
        .or_insert(0) += 1;
    let route = sh.routes.lock().unwrap().get(path).cloned();
    let route = match route {
        Some(r) if method == "GET" => r,
        Some(_) => Route {
            status: 405,
            body: b"GET only\n".to_vec(),
            cache_control: None,
            delay: Duration::ZERO,
            hang: false,
        },
        None => Route {
            status: 404,
            body: b"no such certificate\n".to_vec(),
            cache_control: None,
            delay: Duration::ZERO,
            hang: false,
        },
    };
    if route.hang {
        pause(sh, MAX_HANG);
        return; // closed without an answer
    }
    pause(sh, route.delay);
    let cc = route
        .cache_control
        .map(|v| format!("Cache-Control: {v}\r\n"))
        .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/pem-certificate-chain\r\nContent-Length: {}\r\n{cc}Connection: close\r\n\r\n",
        route.status,
        reason(route.status),
        route.body.len()
    )
    .into_bytes();
    out.extend_from_slice(&route.body);
    if s.write_all(&out).and_then(|_| s.flush()).is_ok() {
        s.conn.send_close_notify();
        let _ = s.flush();
    }
}
