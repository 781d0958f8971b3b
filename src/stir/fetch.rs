//! Signer certificates, never fetched on the call path (issue #16 item 2).
//!
//! [`Certs`] is the node's cache of checked `x5u` certificates, shared by every SIP worker:
//! a call whose `x5u` is cached (positively or negatively) gets its verdict at once, in the
//! worker; one whose `x5u` is not asks the driver with a lookup under the call's deadline
//! (`fetch_timeout_ms`), and the [`Fetcher`] fetches it over HTTPS in a task, checks the
//! chain against the trust anchors and caches the outcome: a good chain for its
//! `Cache-Control: max-age` (bounded, and never past the chain's `notAfter`), a failure for
//! [`NEGATIVE_TTL`]. Concurrent calls naming the same uncached `x5u` share one fetch.
//! [`x5u_allowed`] decides which URLs may be fetched at all.

use super::cert::{self, Anchors, Signer};
use super::Failure;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a failed fetch or a bad chain is remembered (calls naming it fail at once).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Without `Cache-Control: max-age`, a good chain is kept this long.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The longest a good chain is kept, whatever `max-age` says.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The largest certificate body read (a SHAKEN chain is 2–4 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// The longest `x5u` DCE fetches.
pub const MAX_URL: usize = 512;

/// What the cache holds for an `x5u`.
pub type Cached = Result<Arc<Signer>, Failure>;

#[derive(Debug)]
struct Entry {
    value: Cached,
    until: Instant,
}

/// The node's certificate cache (bounded: when full, the entry that expires first goes).
#[derive(Debug)]
pub struct Certs {
    map: Mutex<HashMap<String, Entry>>,
    capacity: usize,
}

impl Certs {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Certs {
        Certs {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// What is cached for `x5u` at `now` (expired entries are not).
    pub fn get(&self, x5u: &str, now: Instant) -> Option<Cached> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(x5u)
            .filter(|e| e.until > now)
            .map(|e| e.value.clone())
    }

    /// Keep `value` for `x5u` until `until`.
    pub fn put(&self, x5u: &str, value: Cached, until: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity && !map.contains_key(x5u) {
            let now = Instant::now();
            map.retain(|_, e| e.until > now);
            if map.len() >= self.capacity {
                if let Some(k) = map
                    .iter()
                    .min_by_key(|(_, e)| e.until)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&k);
                }
            }
        }
        map.insert(x5u.to_owned(), Entry { value, until });
    }

    /// Copy `old`'s good chains that are still fresh at `now` (never its failures: a reload
    /// retries every certificate that failed), as far as this cache's capacity allows, those
    /// that expire last first. How many were kept.
    pub fn keep_good(&self, old: &Certs, now: Instant) -> usize {
        let mut good: Vec<(String, Arc<Signer>, Instant)> = {
            let map = old.map.lock().unwrap_or_else(|e| e.into_inner());
            map.iter()
                .filter(|(_, e)| e.until > now)
                .filter_map(|(k, e)| Some((k.clone(), e.value.clone().ok()?, e.until)))
                .collect()
        };
        good.sort_by_key(|(_, _, until)| std::cmp::Reverse(*until));
        good.truncate(self.capacity);
        let n = good.len();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (k, signer, until) in good {
            map.insert(
                k,
                Entry {
                    value: Ok(signer),
                    until,
                },
            );
        }
        n
    }

    /// Entries held (expired ones included until they are pushed out).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The host of an `https://` URL, lower-cased (`None`: not HTTPS, or no host).
pub fn https_host(url: &str) -> Option<String> {
    let rest = url
        .get(..8)?
        .eq_ignore_ascii_case("https://")
        .then(|| &url[8..])?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None; // no credentials in a URL a caller chose
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// May DCE fetch `x5u`? It must be an `https://` URL of reasonable length; with `allow` set,
/// its host must be one of them (`name`, or `*.domain` for any name under it); with `allow`
/// empty any name will do but not an IP literal or `localhost` (a caller must not make DCE
/// fetch from the operator's own network).
pub fn x5u_allowed(x5u: &str, allow: &[String]) -> bool {
    if x5u.len() > MAX_URL || x5u.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return false;
    }
    let Some(host) = https_host(x5u) else {
        return false;
    };
    if allow.is_empty() {
        return host.parse::<std::net::IpAddr>().is_err()
            && host != "localhost"
            && !host.ends_with(".localhost");
    }
    allow.iter().any(|p| match p.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|h| h.ends_with('.') && h.len() > 1),
        None => host.eq_ignore_ascii_case(p),
    })
}

/// `max-age` of a `Cache-Control` value (`no-store`/`no-cache`: 0).
pub fn max_age(cache_control: &str) -> Option<Duration> {
    let mut age = None;
    for d in cache_control.split(',') {
        let d = d.trim();
        let (k, v) = d.split_once('=').unwrap_or((d, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "no-store" | "no-cache" => return Some(Duration::ZERO),
            "max-age" => {
                age = v
                    .trim()
                    .trim_matches('"')
                    .parse()
                    .ok()
                    .map(Duration::from_secs)
            }
            _ => {}
        }
    }
    age
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Fetches `x5u` certificates into [`Certs`], one fetch per URL at a time.
pub struct Fetcher {
    http: hyper_util::client::legacy::Client<Https, Empty<Bytes>>,
    certs: Arc<Certs>,
    anchors: Arc<Anchors>,
    timeout: Duration,
    inflight: Mutex<HashMap<String, tokio::sync::watch::Receiver<Option<Cached>>>>,
}

impl Fetcher {
    /// A fetcher filling `certs`, checking chains against `anchors`; `ca` adds trust for the
    /// certificate servers' HTTPS (beside the system's roots); a fetch gives up after
    /// `timeout`.
    pub fn new(
        certs: Arc<Certs>,
        anchors: Arc<Anchors>,
        ca: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Fetcher, String> {
        let tls = crate::transport::pki::client_config(ca)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(Fetcher {
            http,
            certs,
            anchors,
            timeout,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// The cache it fills.
    pub fn certs(&self) -> &Arc<Certs> {
        &self.certs
    }

    /// The checked signer of `x5u` (`now_s`: the wall clock, for the chain's validity): from
    /// the cache, from a fetch already under way, or fetched now. Never longer than the
    /// fetcher's timeout.
    pub async fn signer(self: &Arc<Self>, x5u: &str, now_s: i64) -> Cached {
        if let Some(c) = self.certs.get(x5u, Instant::now()) {
            return c;
        }
        let (mut rx, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            // (again, under the lock: a fetch that just ended has cached its answer)
            if let Some(c) = self.certs.get(x5u, Instant::now()) {
                return c;
            }
            match inflight.get(x5u) {
                Some(rx) => (rx.clone(), None),
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    inflight.insert(x5u.to_owned(), rx.clone());
                    (rx, Some(tx))
                }
            }
        };
        if let Some(tx) = leader {
            let me = self.clone();
            let url = x5u.to_owned();
            // The fetch runs to its own timeout in its own task, whoever stops waiting.
            tokio::spawn(async move {
                let (value, ttl) = me.fetch(&url, now_s).await;
                me.certs.put(&url, value.clone(), Instant::now() + ttl);
                me.inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&url);
                let _ = tx.send(Some(value));
            });
        }
        let wait = async {
            match rx.wait_for(|v| v.is_some()).await {
                Ok(v) => v.clone().unwrap_or(Err(Failure::FetchFailed)),
                Err(_) => Err(Failure::FetchFailed),
            }
        };
        tokio::time::timeout(self.timeout + Duration::from_millis(50), wait)
            .await
            .unwrap_or(Err(Failure::FetchFailed))
    }

    /// Fetch and check `x5u`: the outcome and how long to keep it.
    async fn fetch(&self, x5u: &str, now_s: i64) -> (Cached, Duration) {
        let got = tokio::time::timeout(self.timeout, self.get(x5u)).await;
        let (body, age) = match got {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(x5u, error = %e, "STIR: the signer's certificate could not be fetched");
                return (Err(Failure::FetchFailed), NEGATIVE_TTL);
            }
            Err(_) => {
                tracing::warn!(
                    x5u,
                    timeout_ms = self.timeout.as_millis() as u64,
                    "STIR: the signer's certificate did not arrive in time"
                );
                return (Err(Failure::FetchFailed), NEGATIVE_TTL);
            }
        };
        let checked = cert::parse_chain(&body)
            .and_then(|chain| cert::validate_chain(&chain, &self.anchors, now_s));
        match checked {
            Ok(signer) => {
                let left = u64::try_from(signer.not_after_s.saturating_sub(now_s)).unwrap_or(0);
                let ttl = age
                    .unwrap_or(DEFAULT_TTL)
                    .min(MAX_TTL)
                    .min(Duration::from_secs(left));
                tracing::debug!(
                    x5u,
                    ttl_s = ttl.as_secs(),
                    "STIR: signer certificate cached"
                );
                (Ok(Arc::new(signer)), ttl)
            }
            Err(f) => {
                tracing::warn!(
                    x5u,
                    reason = f.as_str(),
                    "STIR: the signer's certificate was refused"
                );
                (Err(f), NEGATIVE_TTL)
            }
        }
    }

    async fn get(&self, x5u: &str) -> Result<(Vec<u8>, Option<Duration>), String> {
        let uri: hyper::Uri = x5u.parse().map_err(|e| format!("bad URL: {e}"))?;
        let req = hyper::Request::get(uri)
            .header(hyper::header::ACCEPT, "application/pem-certificate-chain")
            .header(hyper::header::USER_AGENT, "dce-stir")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let age = resp
            .headers()
            .get(hyper::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((body.to_vec(), age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_https_urls_are_fetched() {
        let none: Vec<String> = Vec::new();
        assert!(x5u_allowed("https://cr.sti-ca.example/sp.pem", &none));
        assert!(!x5u_allowed("http://cr.sti-ca.example/sp.pem", &none));
        assert!(!x5u_allowed("https://127.0.0.1/sp.pem", &none));
        assert!(!x5u_allowed("https://[::1]:8443/sp.pem", &none));
        assert!(!x5u_allowed("https://localhost/sp.pem", &none));
        assert!(!x5u_allowed("https://user@cr.example/sp.pem", &none));
        assert!(!x5u_allowed("https://cr.example/a b", &none));
        assert!(!x5u_allowed(
            &format!("https://cr.example/{}", "a".repeat(600)),
            &none
        ));
        let allow = vec!["*.sticr.example".to_owned(), "127.0.0.1".to_owned()];
        assert!(x5u_allowed("https://a.sticr.example/x.pem", &allow));
        assert!(x5u_allowed("https://A.b.STICR.example:443/x.pem", &allow));
        assert!(!x5u_allowed("https://sticr.example/x.pem", &allow));
        assert!(!x5u_allowed("https://evilsticr.example/x.pem", &allow));
        assert!(x5u_allowed("https://127.0.0.1:8443/x.pem", &allow));
        assert!(!x5u_allowed("https://cr.sti-ca.example/sp.pem", &allow));
        assert_eq!(
            https_host("HTTPS://Cr.Example:8443/x"),
            Some("cr.example".into())
        );
        assert_eq!(https_host("https://[::1]:1/x"), Some("::1".into()));
        assert_eq!(https_host("https:///x"), None);
    }

    #[test]
    fn cache_control_sets_how_long() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn the_cache_is_bounded_and_expires() {
        let c = Certs::new(2);
        let now = Instant::now();
        c.put(
            "a",
            Err(Failure::FetchFailed),
            now + Duration::from_secs(10),
        );
        c.put("b", Err(Failure::Untrusted), now + Duration::from_secs(20));
        assert_eq!(c.get("a", now), Some(Err(Failure::FetchFailed)));
        assert_eq!(c.get("a", now + Duration::from_secs(11)), None);
        c.put(
            "c",
            Err(Failure::BadCertificate),
            now + Duration::from_secs(30),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a", now), None, "the one expiring first went");
        assert!(c.get("b", now).is_some() && c.get("c", now).is_some());
    }
}
