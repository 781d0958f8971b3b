//! A test HTTP bidder on loopback: answers every request (HTTP/1.1, keep-alive) with a fixed
//! status and body after a fixed delay, and keeps what it was sent. Not DCE's code: a plain
//! socket server, so the test grades DCE's client against bytes on the wire.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the bidder received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request line and headers, as sent.
    pub head: String,
    /// The body.
    pub body: String,
}

/// A running bidder.
pub struct Bidder {
    /// Its port on 127.0.0.1.
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<Mutex<usize>>,
}

impl Bidder {
    /// Answer `status` with `body` (JSON) after `delay`.
    pub fn start(delay: Duration, status: u16, body: &str) -> Bidder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        let body = body.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                *c.lock().unwrap() += 1;
                let (s, body) = (s.clone(), body.clone());
                std::thread::spawn(move || serve(stream, delay, status, &body, &s));
            }
        });
        Bidder {
            port,
            seen,
            connections,
        }
    }

    /// The URL DCE is configured with.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// What it was sent so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

fn serve(
    stream: std::net::TcpStream,
    delay: Duration,
    status: u16,
    body: &str,
    seen: &Mutex<Vec<Seen>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(stream);
    loop {
        let mut head = String::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Some(v) = line
                .to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
            {
                len = v.parse().unwrap_or(0);
            }
            let end = line == "\r\n";
            head.push_str(&line);
            if end {
                break;
            }
        }
        let mut b = vec![0; len];
        if r.read_exact(&mut b).is_err() {
            return;
        }
        seen.lock().unwrap().push(Seen {
            head,
            body: String::from_utf8_lossy(&b).into_owned(),
        });
        std::thread::sleep(delay);
        let reason = if status == 200 { "OK" } else { "Error" };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}
