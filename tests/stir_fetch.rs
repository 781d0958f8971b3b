//! The `x5u` fetcher (issue #16 item 2) against a real HTTPS server on loopback
//! (`support::cert_server`): a good chain is fetched once, checked and cached for its
//! `Cache-Control: max-age` (never past the chain's `notAfter`); each bad answer (HTTP error,
//! no certificate, an untrusted, expired or non-SHAKEN chain, a body too large, a server whose
//! HTTPS is not trusted) gives its failure and is cached too; a server that never answers
//! fails the fetch within its timeout; concurrent calls for one URL make one request; a
//! stopped server leaves cached URLs answering and fails the others. Counts are the server's
//! requests: no test asserts how fast anything was, beyond generous bounds.

mod support;

use dce::stir::cert::Anchors;
use dce::stir::fetch::{Cached, Certs, Fetcher};
use dce::stir::Failure;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cert_server::CertServer;
use support::dce_process::TempDir;
use support::stir_pki::Pki;

/// 2030-01-01T00:00:00Z: the notAfter of `Pki::new(_, (_, 2030))`'s signer.
const Y2030: i64 = 1_893_456_000;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Setup {
    pki: Pki,
    srv: CertServer,
    _dir: TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = TempDir::new("stir-fetch");
        let srv = CertServer::start(&dir.0);
        Setup {
            pki: Pki::new(true, (2024, 2030)),
            srv,
            _dir: dir,
        }
    }

    /// A fetcher trusting the PKI's root, the server's HTTPS CA, with this timeout.
    fn fetcher(&self, timeout_ms: u64) -> Arc<Fetcher> {
        self.fetcher_with(Some(&self.srv.ca_pem), timeout_ms)
    }

    fn fetcher_with(&self, https_ca: Option<&std::path::Path>, timeout_ms: u64) -> Arc<Fetcher> {
        let anchors = Arc::new(Anchors::from_pem(self.pki.root_pem.as_bytes()).unwrap());
        Arc::new(
            Fetcher::new(
                Arc::new(Certs::new(100)),
                anchors,
                https_ca,
                Duration::from_millis(timeout_ms),
            )
            .unwrap(),
        )
    }
}

fn cached(f: &Fetcher, url: &str) -> Option<Cached> {
    f.certs().get(url, Instant::now())
}

#[tokio::test]
async fn a_good_chain_is_fetched_checked_and_cached_and_the_second_call_makes_no_request() {
    let st = Setup::new();
    st.srv.serve(
        "/sp.pem",
        st.pki.chain_pem.as_bytes(),
        Some("public, max-age=600"),
    );
    let f = st.fetcher(1000);
    let url = st.srv.url("/sp.pem");
    assert!(cached(&f, &url).is_none());
    let s = f.signer(&url, now_s()).await.expect("the chain verifies");
    assert_eq!(s.not_after_s, Y2030, "the signer's notAfter");
    assert_eq!(st.srv.count("/sp.pem"), 1);
    assert!(matches!(cached(&f, &url), Some(Ok(_))), "kept in the cache");
    for _ in 0..3 {
        let again = f.signer(&url, now_s()).await.expect("from the cache");
        assert!(Arc::ptr_eq(&s, &again), "the same cached signer");
    }
    assert_eq!(st.srv.count("/sp.pem"), 1, "no request after the first");
    assert_eq!(st.srv.total(), 1);
}

/// Poll until `url` is no longer cached (at most `secs`).
async fn until_expired(f: &Fetcher, url: &str, secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    while cached(f, url).is_some() {
        assert!(Instant::now() < end, "{url} still cached after {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn max_age_expires_the_entry_and_the_next_call_fetches_again() {
    let st = Setup::new();
    st.srv
        .serve("/short.pem", st.pki.chain_pem.as_bytes(), Some("max-age=1"));
    let f = st.fetcher(1000);
    let url = st.srv.url("/short.pem");
    f.signer(&url, now_s()).await.unwrap();
    f.signer(&url, now_s()).await.unwrap();
    assert_eq!(st.srv.count("/short.pem"), 1, "cached within max-age");
    until_expired(&f, &url, 10).await;
    f.signer(&url, now_s()).await.unwrap();
    assert_eq!(st.srv.count("/short.pem"), 2, "fetched again once expired");
    // no-store: never kept
    st.srv.serve(
        "/nostore.pem",
        st.pki.chain_pem.as_bytes(),
        Some("no-store"),
    );
    let url = st.srv.url("/nostore.pem");
    f.signer(&url, now_s()).await.unwrap();
    f.signer(&url, now_s()).await.unwrap();
    assert_eq!(st.srv.count("/nostore.pem"), 2);
}

#[tokio::test]
async fn a_chain_is_never_kept_past_its_not_after_whatever_max_age_says() {
    let st = Setup::new();
    st.srv.serve(
        "/sp.pem",
        st.pki.chain_pem.as_bytes(),
        Some("max-age=86400"),
    );
    let f = st.fetcher(1000);
    let url = st.srv.url("/sp.pem");
    // checked as if it were one second before the signer expires
    f.signer(&url, Y2030 - 1).await.expect("valid for 1 s more");
    until_expired(&f, &url, 10).await;
    f.signer(&url, Y2030 - 1).await.unwrap();
    assert_eq!(st.srv.count("/sp.pem"), 2);
}

#[tokio::test]
async fn each_bad_answer_gives_its_failure_and_is_negatively_cached() {
    let st = Setup::new();
    let other = Pki::new(true, (2024, 2030)); // another STI-PA: untrusted here
    let expired = Pki::new(true, (2020, 2021));
    let no_tn = Pki::new(false, (2024, 2030));
    st.srv.serve(
        "/junk.pem",
        b"<html>certificates moved</html>",
        Some("max-age=600"),
    );
    st.srv.status("/error.pem", 500);
    st.srv.serve(
        "/other.pem",
        other.chain_pem.as_bytes(),
        Some("max-age=600"),
    );
    st.srv
        .serve("/expired.pem", expired.chain_pem.as_bytes(), None);
    st.srv.serve("/no-tn.pem", no_tn.chain_pem.as_bytes(), None);
    let mut big = st.pki.chain_pem.clone().into_bytes();
    big.resize(100 * 1024, b'\n'); // past the fetcher's 64 KiB
    st.srv.serve("/big.pem", &big, None);
    // (the chains of `expired` and `no_tn` are signed by their own roots: trust them too, so
    // the failure is the one named, not Untrusted)
    let anchors = format!("{}{}{}", st.pki.root_pem, expired.root_pem, no_tn.root_pem);
    let f = Arc::new(
        Fetcher::new(
            Arc::new(Certs::new(100)),
            Arc::new(Anchors::from_pem(anchors.as_bytes()).unwrap()),
            Some(&st.srv.ca_pem),
            Duration::from_millis(1000),
        )
        .unwrap(),
    );
    let cases = [
        ("/missing.pem", Failure::FetchFailed), // 404
        ("/error.pem", Failure::FetchFailed),
        ("/junk.pem", Failure::BadCertificate),
        ("/other.pem", Failure::Untrusted),
        ("/expired.pem", Failure::CertExpired),
        ("/no-tn.pem", Failure::NoTnAuthList),
        ("/big.pem", Failure::FetchFailed),
    ];
    for (path, want) in cases {
        let url = st.srv.url(path);
        assert_eq!(f.signer(&url, now_s()).await.err(), Some(want), "{path}");
        assert_eq!(st.srv.count(path), 1, "{path}");
        assert_eq!(
            cached(&f, &url),
            Some(Err(want)),
            "{path} negatively cached"
        );
        assert_eq!(f.signer(&url, now_s()).await.err(), Some(want), "{path}");
        assert_eq!(st.srv.count(path), 1, "{path}: no second request");
    }
    // the same good chain is fine once served
    st.srv.serve("/good.pem", st.pki.chain_pem.as_bytes(), None);
    assert!(f.signer(&st.srv.url("/good.pem"), now_s()).await.is_ok());
}

#[tokio::test]
async fn a_certificate_server_whose_https_is_not_trusted_is_a_failed_fetch() {
    let st = Setup::new();
    st.srv.serve("/sp.pem", st.pki.chain_pem.as_bytes(), None);
    // no x5u_ca_file: the system's roots do not know the test CA
    let f = st.fetcher_with(None, 1000);
    let url = st.srv.url("/sp.pem");
    assert_eq!(
        f.signer(&url, now_s()).await.err(),
        Some(Failure::FetchFailed)
    );
    assert_eq!(
        st.srv.count("/sp.pem"),
        0,
        "the handshake failed: no request"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_fails_the_fetch_within_its_timeout() {
    let st = Setup::new();
    st.srv.hang("/hang.pem");
    let timeout = Duration::from_millis(300);
    let f = st.fetcher(timeout.as_millis() as u64);
    let url = st.srv.url("/hang.pem");
    let t0 = Instant::now();
    let got = tokio::time::timeout(10 * timeout, f.signer(&url, now_s())).await;
    let took = t0.elapsed();
    eprintln!("hanging server: FetchFailed after {took:?} (timeout {timeout:?})");
    assert_eq!(
        got.expect("signer() returned within 10x its timeout").err(),
        Some(Failure::FetchFailed)
    );
    assert_eq!(st.srv.count("/hang.pem"), 1, "the request was sent");
    // remembered: the next call fails at once, no new request
    assert_eq!(
        f.signer(&url, now_s()).await.err(),
        Some(Failure::FetchFailed)
    );
    assert_eq!(st.srv.count("/hang.pem"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_for_one_uncached_url_make_one_request() {
    let st = Setup::new();
    // answered 500 ms late, so every caller below asks while the fetch is under way
    st.srv.serve_after(
        "/slow.pem",
        st.pki.chain_pem.as_bytes(),
        Duration::from_millis(500),
    );
    let f = st.fetcher(3000);
    let url = st.srv.url("/slow.pem");
    let now = now_s();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (f, url) = (f.clone(), url.clone());
            tokio::spawn(async move { f.signer(&url, now).await })
        })
        .collect();
    let mut signers = Vec::new();
    for c in calls {
        signers.push(c.await.unwrap().expect("every caller gets the signer"));
    }
    assert_eq!(st.srv.count("/slow.pem"), 1, "one request for 16 callers");
    assert!(signers.iter().all(|s| Arc::ptr_eq(s, &signers[0])));
}

#[tokio::test]
async fn with_the_server_stopped_a_cached_url_still_answers_and_an_uncached_one_fails() {
    let mut st = Setup::new();
    st.srv.serve("/sp.pem", st.pki.chain_pem.as_bytes(), None);
    st.srv
        .serve("/later.pem", st.pki.chain_pem.as_bytes(), None);
    st.srv
        .serve("/after.pem", st.pki.chain_pem.as_bytes(), None);
    let f = st.fetcher(500);
    let (cached_url, uncached) = (st.srv.url("/sp.pem"), st.srv.url("/later.pem"));
    f.signer(&cached_url, now_s()).await.unwrap();
    st.srv.stop();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", st.srv.port())).is_err(),
        "the port is closed"
    );
    assert!(
        f.signer(&cached_url, now_s()).await.is_ok(),
        "from the cache"
    );
    let t0 = Instant::now();
    assert_eq!(
        f.signer(&uncached, now_s()).await.err(),
        Some(Failure::FetchFailed)
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // back up: the failure is remembered (negative cache), a URL never asked is fetched
    st.srv.restart();
    assert_eq!(
        f.signer(&uncached, now_s()).await.err(),
        Some(Failure::FetchFailed)
    );
    assert!(f.signer(&st.srv.url("/after.pem"), now_s()).await.is_ok());
    assert_eq!(
        (
            st.srv.count("/sp.pem"),
            st.srv.count("/later.pem"),
            st.srv.count("/after.pem")
        ),
        (1, 0, 1)
    );
}
