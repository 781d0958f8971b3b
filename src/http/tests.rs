use super::*;
use axum::body::Body;
use tower::ServiceExt;

const READ_KEY: &str = "read-secret";
const ADMIN_KEY: &str = "admin-secret";
const PUBLISHER_KEY: &str = "publisher-secret";
const ACME_KEY: &str = "acme-buyer-secret";
const BRAVO_KEY: &str = "bravo-buyer-secret";

fn key(name: &str, secret: &str, role: Role) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: Sha256::digest(secret.as_bytes()).into(),
        role,
        carrier: None,
        buyer: None,
    }
}

fn a_call(id: &str) -> crate::call::view::CallView {
    crate::call::view::CallView {
        id: id.into(),
        carrier_call_id: "abc@carrier".into(),
        carrier: "carrier1".into(),
        campaign: "c1".into(),
        caller: "13105551234".into(),
        called: "18005550100".into(),
        state: "connected".into(),
        age_s: 12.5,
        talk_s: Some(10.0),
        buyer: Some("b1".into()),
        attempts: 1,
        compliance: "pass".into(),
        stir: None,
        legs: vec![crate::call::view::LegView {
            buyer: "b1".into(),
            bid_cents: 1500,
            state: "answered".into(),
            code: Some(200),
        }],
    }
}

fn a_buyer(paused: bool, bid: Option<u32>) -> crate::call::view::BuyerView {
    crate::call::view::BuyerView {
        id: "b1".into(),
        campaigns: vec!["c1".into()],
        bid_cents: bid.unwrap_or(1500),
        config_bid_cents: 1500,
        bid_override: bid.is_some(),
        paused,
        active_calls: 1,
        max_concurrent: 5,
        answered_this_hour: 1,
        hourly_cap: 0,
        answered_today: 1,
        daily_cap: 0,
        spend_today_cents: 1500,
        daily_budget_cents: 0,
        answered_this_month: 1,
        monthly_cap: 0,
        spend_this_month_cents: 1500,
        monthly_budget_cents: 0,
        paused_by: paused.then(|| "operator".into()),
        paused_at: paused.then(|| "2026-07-15T16:00:00.000Z".into()),
        unanswered_this_hour: 0,
        unanswered_today: 0,
        pause_after_unanswered: None,
        dns: None,
        health: None,
    }
}

/// A stand-in for the core task: reloads succeed; one call `c1` and one buyer `b1` exist.
/// (The real core answers these in tests/e2e_http.rs, against the binary and SIPp.)
fn core_sink() -> tokio::sync::mpsc::UnboundedSender<crate::http::ApiRequest> {
    use crate::http::ApiRequest;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ApiRequest>();
    tokio::spawn(async move {
        let (mut paused, mut bid) = (false, None);
        while let Some(req) = rx.recv().await {
            match req {
                ApiRequest::Reload(reply) => {
                    let _ = reply.send(Ok("dce.toml: 1 campaigns, 2 buyers".into()));
                }
                ApiRequest::Calls(reply) => {
                    let _ = reply.send(vec![a_call("c1")]);
                }
                ApiRequest::Call(id, reply) => {
                    let _ = reply.send((id == "c1").then(|| a_call("c1")));
                }
                ApiRequest::Hangup(id, reply) => {
                    let _ = reply.send(id == "c1");
                }
                ApiRequest::Buyers(reply) => {
                    let _ = reply.send(vec![a_buyer(paused, bid)]);
                }
                ApiRequest::PatchBuyer(id, patch, reply) => {
                    if id != "b1" {
                        let _ = reply.send(None);
                        continue;
                    }
                    if let Some(p) = patch.paused {
                        paused = p;
                    }
                    if let Some(b) = patch.bid_cents {
                        bid = b;
                    }
                    let _ = reply.send(Some(a_buyer(paused, bid)));
                }
                ApiRequest::Quote(q, reply) => {
                    // the key's carrier and the request as read come through
                    let answer = if q.carrier == "carrier-a" && q.caller == "13105551234" {
                        crate::call::QuoteAnswer::Bid {
                            bid_cents: 720,
                            expires_at: chrono::DateTime::parse_from_rfc3339(
                                "2026-07-15T16:00:30Z",
                            )
                            .unwrap()
                            .with_timezone(&chrono::Utc),
                            destination: "sip:+18005550100@127.0.0.1:5060".into(),
                            quote: "q-1".into(),
                        }
                    } else {
                        crate::call::QuoteAnswer::Refused(format!("no_eligible_buyer:{}", q.caller))
                    };
                    let _ = reply.send(answer);
                }
            }
        }
    });
    tx
}

struct Fixture {
    router: Router,
    st: Arc<ApiState>,
    _dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

async fn fixture(rate: u32) -> Fixture {
    let dir = std::env::temp_dir().join(format!(
        "dce-http-{}-{}",
        std::process::id(),
        crate::ids::uuid()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let db = Db::connect(&format!("sqlite://{}/t.db", dir.display())).unwrap();
    let cfg = HttpConfig {
        api_keys: vec![
            key("grafana", READ_KEY, Role::Read),
            key("ops", ADMIN_KEY, Role::Admin),
            ApiKey {
                carrier: Some("carrier-a".into()),
                ..key("pub", PUBLISHER_KEY, Role::Publisher)
            },
            ApiKey {
                buyer: Some("acme".into()),
                ..key("acme-crm", ACME_KEY, Role::Buyer)
            },
            ApiKey {
                buyer: Some("bravo".into()),
                ..key("bravo-crm", BRAVO_KEY, Role::Buyer)
            },
        ],
        rate_limit_per_s: rate,
        max_body_bytes: 100,
        ..HttpConfig::default()
    };
    let counters = Arc::new(Counters::default());
    counters.inc(Counter::RxRequest);
    counters.inc(Counter::RxRequest);
    let st = Arc::new(ApiState::new(
        &cfg,
        counters,
        db,
        dir.join("spool"),
        None,
        Arc::new(WriterStats::default()),
        core_sink(),
    ));
    Fixture {
        router: router(st.clone()),
        st,
        _dir: dir,
    }
}

async fn call(
    r: &Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut b = axum::http::Request::builder().method(method).uri(path);
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    if !body.is_empty() {
        b = b.header("content-length", body.len().to_string());
    }
    let resp = r
        .clone()
        .oneshot(b.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    assert!(v["error"]["message"].is_string(), "{body}");
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn open_paths_need_no_key_and_report_health_and_metrics() {
    let f = fixture(100).await;
    let (s, _, body) = call(&f.router, "GET", "/health", None, "").await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok", "{body}");
    assert_eq!(v["database"]["status"], "ok");
    assert_eq!(v["redis"]["status"], "not_configured");
    assert_eq!(v["spool"]["bytes"], 0);

    let (s, h, body) = call(&f.router, "GET", "/metrics", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        body.contains("dce_events_total{event=\"rx_request\"} 2\n"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE dce_spool_bytes gauge\ndce_spool_bytes 0\n"),
        "{body}"
    );
    assert!(body.contains("dce_cdrs_written_total 0\n"), "{body}");
    for name in [
        "dce_cdr_queue_depth 0\n",
        "# TYPE dce_auction_duration_seconds histogram",
        "dce_active_calls 0\n",
        "# TYPE dce_calls_per_second gauge",
        "# TYPE dce_rtp_lost_total counter",
        "# TYPE dce_sip_messages_total counter",
        "# TYPE dce_compliance_rejections_total counter",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    // the port pool is reported once the server wires it in
    assert_eq!(v["port_pool"]["status"], "not_configured");
}

#[tokio::test]
async fn a_spool_backlog_and_a_dead_database_make_health_degraded_but_200() {
    let f = fixture(100).await;
    crate::store::Spool::new(&f.st.spool_dir)
        .append(&[crate::call::cdr::Cdr::synthetic(1)])
        .unwrap();
    let (s, _, body) = call(&f.router, "GET", "/health", None, "").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "calls still flow: a load balancer keeps the node"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["spool"]["status"], "backlog");
    assert!(v["spool"]["bytes"].as_u64().unwrap() > 0);

    let mut cfg = HttpConfig::default();
    cfg.api_keys.clear();
    let dead = Arc::new(ApiState::new(
        &cfg,
        Arc::new(Counters::default()),
        Db::connect("postgres://postgres@127.0.0.1:9/none").unwrap(),
        f.st.spool_dir.join("nothing-here"),
        None,
        Arc::new(WriterStats::default()),
        core_sink(),
    ));
    let (s, _, body) = call(&router(dead), "GET", "/health", None, "").await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["database"]["status"], "down", "{body}");
    assert!(v["database"]["error"].is_string());
}

#[tokio::test]
async fn keys_and_roles() {
    let f = fixture(100).await;
    // no key, a wrong key, a malformed header: 401 with the JSON shape
    for k in [None, Some("wrong"), Some("")] {
        let (s, h, body) = call(&f.router, "GET", "/v1/calls", k, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{k:?}");
        assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(error_code(&body), "unauthorized");
    }
    // a read key reads
    let (s, _, body) = call(&f.router, "GET", "/v1/calls", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // ... but may not change anything
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        let (s, _, body) = call(&f.router, m, "/v1/reload", Some(READ_KEY), "").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m}");
        assert_eq!(error_code(&body), "forbidden");
    }
    let (s, _, body) = call(&f.router, "POST", "/v1/reload", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::OK, "an admin key reloads: {body}");
    assert!(body.contains("\"reloaded\":true"), "{body}");
    let (s, _, _) = call(&f.router, "POST", "/v1/nothing", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // open paths stay open only where configured: /metrics with a key works too
    let (s, _, _) = call(&f.router, "GET", "/metrics", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::OK);
}

/// `POST /v1/bid` takes only a publisher key, for its own carrier; a publisher key does
/// nothing else. The answer is a price or a refusal, as the contract shapes them.
#[tokio::test]
async fn a_publisher_key_asks_for_bids_and_nothing_else() {
    let f = fixture(100).await;
    let body = r#"{"caller":"+13105551234","called":"+18005550100"}"#;
    let (s, _, got) = call(&f.router, "POST", "/v1/bid", Some(PUBLISHER_KEY), body).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["bid_cents"], 720);
    assert_eq!(v["expires_at"], "2026-07-15T16:00:30.000Z");
    assert_eq!(v["destination"], "sip:+18005550100@127.0.0.1:5060");
    let (s, _, got) = call(
        &f.router,
        "POST",
        "/v1/bid",
        Some(PUBLISHER_KEY),
        r#"{"caller":"3105550000","campaign":"auto"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, r#"{"refused":"no_eligible_buyer:13105550000"}"#);
    let (s, _, got) = call(
        &f.router,
        "POST",
        "/v1/bid",
        Some(PUBLISHER_KEY),
        r#"{"caller":"x","campaign":"auto"}"#,
    )
    .await;
    assert_eq!(
        (s, error_code(&got)),
        (StatusCode::BAD_REQUEST, "bad_number".into())
    );
    for k in [ADMIN_KEY, READ_KEY] {
        let (s, _, got) = call(&f.router, "POST", "/v1/bid", Some(k), body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{got}");
        assert!(got.contains("needs a publisher key"), "{got}");
    }
    for (m, p) in [
        ("GET", "/v1/calls"),
        ("GET", "/v1/stats"),
        ("POST", "/v1/reload"),
    ] {
        let (s, _, got) = call(&f.router, m, p, Some(PUBLISHER_KEY), "").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m} {p}: {got}");
        assert!(got.contains("may only POST /v1/bid"), "{got}");
    }
}

#[tokio::test]
async fn closed_health_needs_a_key() {
    let dir = std::env::temp_dir().join(format!("dce-http-closed-{}", std::process::id()));
    let cfg = HttpConfig {
        api_keys: vec![key("grafana", READ_KEY, Role::Read)],
        open_paths: vec![],
        ..HttpConfig::default()
    };
    let st = Arc::new(ApiState::new(
        &cfg,
        Arc::new(Counters::default()),
        Db::connect("sqlite::memory:").unwrap(),
        dir,
        None,
        Arc::new(WriterStats::default()),
        core_sink(),
    ));
    let r = router(st);
    let (s, _, _) = call(&r, "GET", "/health", None, "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = call(&r, "GET", "/health", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn body_limit_and_rate_limit() {
    let f = fixture(3).await;
    let big = "x".repeat(101);
    let (s, _, body) = call(&f.router, "POST", "/v1/reload", Some(ADMIN_KEY), &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "body_too_large");
    // 3 per second per key: the fourth at once is refused, another key is not affected
    for _ in 0..3 {
        let (s, _, _) = call(&f.router, "GET", "/v1/calls", Some(READ_KEY), "").await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, h, body) = call(&f.router, "GET", "/v1/calls", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h[header::RETRY_AFTER], "1");
    assert_eq!(error_code(&body), "rate_limited");
    let (s, _, _) = call(&f.router, "GET", "/v1/calls", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::OK);
    // guessing keys is limited per source address too
    for _ in 0..3 {
        let (s, _, _) = call(&f.router, "GET", "/v1/calls", Some("guess"), "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _, body) = call(&f.router, "GET", "/v1/calls", Some("guess"), "").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&body), "rate_limited");
}

#[tokio::test]
async fn key_lookup_compares_hashes() {
    let cfg = HttpConfig {
        api_keys: vec![
            key("a", "alpha", Role::Read),
            key("b", "bravo", Role::Admin),
        ],
        ..HttpConfig::default()
    };
    let st = ApiState::new(
        &cfg,
        Arc::new(Counters::default()),
        Db::connect("sqlite::memory:").unwrap(),
        PathBuf::from("/nonexistent"),
        None,
        Arc::new(WriterStats::default()),
        core_sink(),
    );
    assert_eq!(st.key("alpha").map(|k| k.name.as_str()), Some("a"));
    assert_eq!(st.key("bravo").map(|k| k.role), Some(Role::Admin));
    assert!(st.key("alph").is_none());
    assert!(st.key("").is_none());
}

#[tokio::test]
async fn cdrs_filtered_and_paged_by_keyset() {
    let f = fixture(1000).await;
    f.st.db.migrate().await.unwrap();
    let cdrs: Vec<_> = (0..25)
        .map(|i| {
            let mut c = crate::call::cdr::Cdr::synthetic(i);
            // five distinct times, five calls each: pages must break ties by id
            c.invite_at = format!("2026-07-15T16:00:0{}.000Z", i % 5);
            if i % 10 == 0 {
                c.disposition = "rejected".into();
            }
            c
        })
        .collect();
    f.st.db.insert(&cdrs).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/cdrs?limit=10".to_owned(),
            Some(c) => format!("/v1/cdrs?limit=10&cursor={c}"),
        };
        let (s, _, body) = call(&f.router, "GET", &path, Some(READ_KEY), "").await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rows = v["cdrs"].as_array().unwrap();
        pages += 1;
        for r in rows {
            seen.push((
                r["created_at"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            ));
        }
        match v["next"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen.len(), 25, "every call exactly once across pages");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first, ties by id");

    let (_, _, body) = call(
        &f.router,
        "GET",
        "/v1/cdrs?disposition=rejected",
        Some(READ_KEY),
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cdrs"].as_array().unwrap().len(), 3, "{body}");
    assert!(v["next"].is_null());
    let (_, _, body) = call(
        &f.router,
        "GET",
        "/v1/cdrs?caller=%2B13105550007&buyer=bravo",
        Some(READ_KEY),
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cdrs"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(v["cdrs"][0]["caller"], "13105550007");
    let (_, _, body) = call(
        &f.router,
        "GET",
        "/v1/cdrs?from=2026-07-15T16:00:03Z&to=2026-07-15T16:00:04Z",
        Some(READ_KEY),
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cdrs"].as_array().unwrap().len(), 5, "{body}");

    for bad in [
        "/v1/cdrs?from=yesterday",
        "/v1/cdrs?cursor=nonsense",
        "/v1/cdrs?buyer_id=acme",
        "/v1/cdrs?limit=-1",
        "/v1/cdrs?limit=0",
        "/v1/cdrs?limit=1001",
        "/v1/cdrs?disposition=lost",
        "/v1/cdrs?cursor=1.0123",
    ] {
        let (s, _, body) = call(&f.router, "GET", bad, Some(READ_KEY), "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(error_code(&body), "bad_parameter");
    }
    let (s, _, _) = call(&f.router, "GET", "/v1/cdrs", None, "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn calls_hangup_and_buyers_go_through_the_core() {
    let f = fixture(1000).await;
    let (s, _, body) = call(&f.router, "GET", "/v1/calls", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["calls"][0]["id"], "c1");
    assert_eq!(v["calls"][0]["legs"][0]["buyer"], "b1");
    let (s, _, body) = call(&f.router, "GET", "/v1/calls/c1", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("\"state\":\"connected\""), "{body}");
    let (s, _, body) = call(&f.router, "GET", "/v1/calls/nope", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    // hangup is an admin action
    let (s, _, _) = call(&f.router, "POST", "/v1/calls/c1/hangup", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, body) = call(
        &f.router,
        "POST",
        "/v1/calls/c1/hangup",
        Some(ADMIN_KEY),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("\"hung_up\":true"));
    let (s, _, _) = call(&f.router, "POST", "/v1/calls/x/hangup", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // a GET on an admin-only route: 405 in the JSON shape
    let (s, _, body) = call(&f.router, "GET", "/v1/calls/c1/hangup", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "method_not_allowed");

    let (s, _, body) = call(&f.router, "GET", "/v1/buyers", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("\"paused\":false"), "{body}");
    let patch = |b: &'static str| {
        let r = f.router.clone();
        async move { call(&r, "PATCH", "/v1/buyers/b1", Some(ADMIN_KEY), b).await }
    };
    let (s, _, body) = patch(r#"{"paused":true,"bid_cents":2100}"#).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["paused"].clone(), v["bid_cents"].clone()),
        (true.into(), 2100.into())
    );
    let (_, _, body) = patch(r#"{"bid_cents":null}"#).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["bid_override"], false, "null clears the override");
    assert_eq!(v["paused"], true, "absent fields are left alone");
    for bad in [
        r#"{"bid":1}"#,
        "not json",
        r#"{"bid_cents":-5}"#,
        r#"{"bid_cents":99999999}"#,
    ] {
        let (s, _, body) = patch(bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&body), "bad_body");
    }
    let (s, _, _) = call(&f.router, "PATCH", "/v1/buyers/zz", Some(ADMIN_KEY), "{}").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dnc_get_put_delete_persist_to_the_internal_file() {
    let f = fixture(1000).await;
    // without compliance lists loaded: 503, not a panic
    let (s, _, body) = call(&f.router, "GET", "/v1/dnc/3105551234", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let file = f.st.spool_dir.with_file_name("internal.txt");
    let c = dce_compliance::Compliance::default();
    *c.internal.write().unwrap() = dce_compliance::InternalDnc::load(&file).unwrap();
    let mut st = ApiState::new(
        &HttpConfig {
            api_keys: vec![key("ops", ADMIN_KEY, Role::Admin)],
            ..HttpConfig::default()
        },
        Arc::new(Counters::default()),
        f.st.db.clone(),
        f.st.spool_dir.clone(),
        None,
        Arc::new(WriterStats::default()),
        core_sink(),
    );
    let lists = Arc::new(Mutex::new(c));
    st.compliance = Some(lists.clone());
    let r = router(Arc::new(st));
    let get = |n: &'static str| {
        let r = r.clone();
        async move { call(&r, "GET", &format!("/v1/dnc/{n}"), Some(ADMIN_KEY), "").await }
    };
    let (s, _, body) = get("%2B13105551234").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["number"], "3105551234");
    assert_eq!(
        (v["internal"].clone(), v["national"].clone()),
        (false.into(), false.into())
    );
    assert!(v["shared"].is_null(), "no Redis configured");
    let (s, _, body) = call(&r, "PUT", "/v1/dnc/13105551234", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("\"internal\":true"));
    // the call path sees it at once, and the file has it for the next start
    assert!(lists
        .lock()
        .unwrap()
        .internal
        .read()
        .unwrap()
        .contains_str("3105551234"));
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("3105551234"), "{saved}");
    let (s, _, _) = call(&r, "DELETE", "/v1/dnc/3105551234", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = call(&r, "DELETE", "/v1/dnc/3105551234", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_listed");
    assert!(!std::fs::read_to_string(&file)
        .unwrap()
        .contains("3105551234"));
    for bad in ["12345", "(310)%20555-1234", "-3105551234", "23105551234"] {
        let (s, _, body) = get(bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&body), "bad_number");
    }
    let (s, _, body) = get("12345").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_number");
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn stats_over_a_window() {
    let f = fixture(1000).await;
    f.st.db.migrate().await.unwrap();
    let cdrs: Vec<_> = (0..10)
        .map(|i| {
            let mut c = crate::call::cdr::Cdr::synthetic(i);
            c.invite_at = format!("2026-07-15T16:00:0{i}.000Z");
            if i >= 6 {
                c.disposition = "rejected".into();
                c.buyer_id = None;
                c.billable = false;
                c.revenue_cents = 0;
                c.payout_cents = 0;
                c.margin_cents = 0;
                c.duration_s = 0.0;
            }
            c
        })
        .collect();
    f.st.db.insert(&cdrs).await.unwrap();
    let (s, _, body) = call(
        &f.router,
        "GET",
        "/v1/stats?from=2026-07-15T00:00:00Z&to=2026-07-16T00:00:00Z",
        Some(READ_KEY),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"]["calls"], 10);
    assert_eq!(v["total"]["rejected"], 4);
    assert_eq!(v["total"]["connected"], 6);
    assert_eq!(v["total"]["asr"], 1.0);
    assert_eq!(v["total"]["acd_s"], 118.0);
    assert_eq!(v["total"]["revenue_cents"], 7200);
    assert_eq!(v["total"]["payout_cents"], 5760);
    assert_eq!(v["total"]["margin_cents"], 1440);
    assert_eq!(v["buyers"][0]["payout_cents"], 5760);
    assert_eq!(v["campaigns"][0]["margin_cents"], 1440);
    assert_eq!(v["buyers"][0]["id"], "bravo");
    assert_eq!(v["campaigns"][0]["id"], "auto");
    // the default window (the last 24 h) holds none of these
    let (_, _, body) = call(&f.router, "GET", "/v1/stats", Some(READ_KEY), "").await;
    assert!(body.contains("\"calls\":0"), "{body}");
    // a window that ends before it starts is empty, not an error
    let (s, _, body) = call(
        &f.router,
        "GET",
        "/v1/stats?from=2026-07-16T00:00:00Z&to=2026-07-15T00:00:00Z",
        Some(READ_KEY),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("\"calls\":0"), "{body}");
    for bad in [
        "/v1/stats?from=nope",
        "/v1/stats?window=1h",
        "/v1/stats?to=",
    ] {
        let (s, _, body) = call(&f.router, "GET", bad, Some(READ_KEY), "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&body), "bad_parameter");
    }
}

#[tokio::test]
async fn slow_and_chunked_bodies_and_the_static_page() {
    let mut cfg = HttpConfig {
        api_keys: vec![key("ops", ADMIN_KEY, Role::Admin)],
        max_body_bytes: 100,
        ..HttpConfig::default()
    };
    cfg.body_timeout = Duration::from_millis(200);
    let st = Arc::new(ApiState::new(
        &cfg,
        Arc::new(Counters::default()),
        Db::connect("sqlite::memory:").unwrap(),
        std::env::temp_dir().join("dce-none"),
        None,
        Arc::new(WriterStats::default()),
        core_sink(),
    ));
    let r = router(st.clone());
    // a body that never arrives: 408 after the body timeout
    let patch_with = |chunk: Option<Vec<u8>>| {
        let r = r.clone();
        async move {
            let req = axum::http::Request::builder()
                .method("PATCH")
                .uri("/v1/buyers/b1")
                .header("authorization", format!("Bearer {ADMIN_KEY}"))
                .body(Body::from_stream(futures_stream(chunk)))
                .unwrap();
            r.oneshot(req).await.unwrap().status()
        }
    };
    assert_eq!(patch_with(None).await, StatusCode::REQUEST_TIMEOUT);
    // a chunked body (no Content-Length) over the limit: 413
    assert_eq!(
        patch_with(Some(vec![b'x'; 500])).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // the page and its script need no key; the document is generated and served
    let (s, h, body) = call(&r, "GET", "/", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(body.contains("/app.js"));
    let (s, _, body) = call(&r, "GET", "/app.js", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("/v1/events"));
    let (s, _, _) = call(&r, "GET", "/openapi.json", None, "").await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the document is behind a key unless opened"
    );
    let (s, _, body) = call(&r, "GET", "/openapi.json", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("\"openapi\":\"3."),
        "{}",
        &body[..100.min(body.len())]
    );
    // /v1/events without an upgrade: 426 in the JSON shape
    let (s, _, body) = call(&r, "GET", "/v1/events", Some(ADMIN_KEY), "").await;
    assert_eq!(s, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(error_code(&body), "websocket_required");
    // draining: /health says so with 503 so load balancers take the node out
    st.draining.store(true, Ordering::Relaxed);
    let (s, _, body) = call(&r, "GET", "/health", None, "").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"status\":\"draining\""), "{body}");
}

/// A body stream: one chunk then the end, or (None) nothing ever.
fn futures_stream(
    chunk: Option<Vec<u8>>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(chunk, |c| async move {
        match c {
            Some(v) => Some((Ok(bytes::Bytes::from(v)), None)),
            None => {
                std::future::pending::<()>().await;
                None
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_event_client_is_dropped_and_never_holds_up_events() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut st = ApiState::new(
        &HttpConfig {
            api_keys: vec![key("ops", ADMIN_KEY, Role::Admin)],
            ..HttpConfig::default()
        },
        Arc::new(Counters::default()),
        Db::connect("sqlite::memory:").unwrap(),
        std::env::temp_dir().join("dce-none"),
        None,
        Arc::new(WriterStats::default()),
        core_sink(),
    );
    let bus = crate::events::Bus::default();
    st.events = bus.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, Arc::new(st), Duration::from_secs(5)));
    let mut req = format!("ws://{addr}/v1/events")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_KEY}").parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // wait until the server side has subscribed
    let end = Instant::now() + Duration::from_secs(5);
    while bus.subscribers() == 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bus.subscribers(), 1, "the server subscribed for the client");
    // The client reads nothing while 20,000 events of 1 kB go out: emitting never waits.
    let pad = "x".repeat(1000);
    let sent = 20_000;
    for i in 0..sent {
        bus.emit(
            "call.completed",
            "c",
            Vec::new,
            || serde_json::json!({ "n": i, "pad": pad }),
        );
    }
    // Emitting returned although nobody read. Now read: what was buffered arrives, then the
    // server ends the connection (a 1008 close when it could still send one).
    let mut got = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
            Err(_) => break false,
            Ok(None) | Ok(Some(Err(_))) => break true,
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                if let Some(f) = f {
                    assert_eq!(u16::from(f.code), 1008, "{f:?}");
                }
                break true;
            }
            Ok(Some(Ok(_))) => got += 1,
        }
    };
    assert!(
        ended,
        "the server dropped the slow client (after {got} events)"
    );
    assert!(
        got < sent,
        "the slow client was dropped before it had everything ({got})"
    );
    // The bus still serves others.
    let mut fresh = bus.subscribe();
    bus.emit("call.started", "c", Vec::new, || serde_json::json!({}));
    assert_eq!(fresh.try_recv().unwrap().kind, "call.started");
    server.abort();
}

#[tokio::test]
async fn gdpr_erase_needs_admin_a_strict_body_and_a_writer() {
    let f = fixture(100).await;
    let body = r#"{"number":"+13105551234"}"#;
    let (s, _, b) = call(&f.router, "POST", "/v1/gdpr/erase", Some(READ_KEY), body).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    // without a CDR writer (this fixture has none) the node cannot reach every copy
    let (s, _, b) = call(&f.router, "POST", "/v1/gdpr/erase", Some(ADMIN_KEY), body).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not_available")
    );

    // with one: the database row is anonymised and the answer names the pseudonym
    let dir = f._dir.clone();
    f.st.db.migrate().await.unwrap();
    f.st.db
        .insert(&[crate::call::cdr::Cdr::synthetic(1234)])
        .await
        .unwrap();
    let mut st = ApiState::new(
        &HttpConfig {
            api_keys: vec![key("ops", ADMIN_KEY, Role::Admin)],
            ..HttpConfig::default()
        },
        Arc::new(Counters::default()),
        f.st.db.clone(),
        dir.join("spool"),
        None,
        Arc::new(WriterStats::default()),
        core_sink(),
    );
    st.gdpr = Some(crate::store::Gdpr::open(&dir.join("spool")).unwrap());
    let r = router(Arc::new(st));
    for bad in [
        r#"{"number":"123"}"#,
        r#"{"number":13105551234}"#,
        r#"{"number":"+13105551234","x":1}"#,
        r#"{}"#,
        "[]",
        "not json",
    ] {
        let (s, _, b) = call(&r, "POST", "/v1/gdpr/erase", Some(ADMIN_KEY), bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(["bad_body", "bad_number"].contains(&error_code(&b).as_str()));
    }
    let (s, _, b) = call(&r, "POST", "/v1/gdpr/erase", Some(ADMIN_KEY), body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["database_calls"], 1, "{b}");
    let p = v["pseudonym"].as_str().unwrap();
    let rows =
        f.st.db
            .export("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
            .await
            .unwrap();
    assert_eq!(rows[0].caller, p);
}

/// An answered call of `buyer`, `age` before now (revenue 1200, payout 960).
fn stored_call(i: usize, buyer: &str, age: chrono::Duration) -> crate::call::cdr::Cdr {
    let mut c = crate::call::cdr::Cdr::synthetic(i);
    c.buyer_id = Some(buyer.into());
    c.invite_at = (chrono::Utc::now() - age).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    c.answer_at = Some(c.invite_at.clone());
    c
}

#[tokio::test]
async fn conversions_by_buyer_and_admin_keys_and_every_refusal() {
    use crate::webhooks::{Event, Webhook};
    let f = fixture(1000).await;
    f.st.db.migrate().await.unwrap();
    {
        let mut h = f.st.webhooks.write().unwrap();
        h.insert(
            "buyer:acme".into(),
            Webhook::new(
                "http://127.0.0.1:1/acme",
                "acme-secret-0123456789",
                &[Event::Converted],
            ),
        );
        h.insert(
            "carrier:carrier-a".into(),
            Webhook::new(
                "http://127.0.0.1:1/pub",
                "pub-secret-0123456789",
                &Event::ALL,
            ),
        );
    }
    let hour = chrono::Duration::hours(1);
    let acme = stored_call(1, "acme", hour);
    let bravo = stored_call(2, "bravo", hour);
    let old = stored_call(3, "acme", chrono::Duration::days(31));
    let mut failed = stored_call(4, "acme", hour);
    failed.disposition = "failed".into();
    failed.answer_at = None;
    f.st.db
        .insert(&[acme.clone(), bravo.clone(), old.clone(), failed.clone()])
        .await
        .unwrap();
    let path = |id: &str| format!("/v1/calls/{id}/conversion");

    // the buyer converts its call and lowers the payout
    let (s, _, body) = call(
        &f.router,
        "POST",
        &path(&acme.id),
        Some(ACME_KEY),
        r#"{"payout_cents": 900, "note": "sale"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["converted"], true, "converted defaults to true: {v}");
    assert_eq!(v["converted_by"], "acme-crm");
    assert_eq!(
        (v["payout_cents"].as_i64(), v["margin_cents"].as_i64()),
        (Some(900), Some(300))
    );
    assert_eq!(
        v["postbacks"],
        serde_json::json!([
            format!("{}:call.converted:1:buyer:acme", acme.id),
            format!("{}:call.converted:1:carrier:carrier-a", acme.id)
        ])
    );
    // a second event is a new delivery; the history keeps both
    let (s, _, body) = call(
        &f.router,
        "POST",
        &path(&acme.id),
        Some(ACME_KEY),
        r#"{"converted": false}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["converted"], false);
    assert_eq!(v["payout_cents"], 900, "no payout_cents: the payout stays");
    let history = v["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{v}");
    assert_eq!(
        (
            history[0]["old_payout_cents"].as_i64(),
            history[0]["new_payout_cents"].as_i64(),
            history[0]["note"].as_str()
        ),
        (Some(960), Some(900), Some("sale"))
    );
    assert_eq!(history[1]["seq"], 2);
    assert!(v["postbacks"][0]
        .as_str()
        .unwrap()
        .contains(":call.converted:2:"));
    let (s, _, body) = call(&f.router, "GET", &path(&acme.id), Some(ACME_KEY), "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["history"].as_array().unwrap().len(), 2);

    // the CDR search shows the state
    let (s, _, body) = call(&f.router, "GET", "/v1/cdrs?buyer=acme", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let row = v["cdrs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == acme.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (row["converted"].as_bool(), row["converted_by"].as_str()),
        (Some(false), Some("acme-crm"))
    );
    assert_eq!(
        (row["payout_cents"].as_i64(), row["margin_cents"].as_i64()),
        (Some(900), Some(300))
    );
    assert!(row["converted_at"].is_string(), "{row}");

    // the outbox, as /v1/webhooks shows it
    let (s, _, body) = call(&f.router, "GET", "/v1/webhooks", Some(READ_KEY), "").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(
        v["counts"],
        serde_json::json!({"pending": 4, "delivered": 0, "failed": 0})
    );
    let d = &v["deliveries"][0];
    assert_eq!(
        (d["state"].as_str(), d["attempts"].as_i64()),
        (Some("pending"), Some(0))
    );
    assert!(
        d["next_attempt_at"].is_string() && d["delivered_at"].is_null(),
        "{d}"
    );
    assert!(
        !body.contains("secret-0123456789"),
        "a secret in /v1/webhooks: {body}"
    );
    for (q, n) in [
        ("?target=buyer:acme", 2),
        ("?state=delivered", 0),
        ("?state=pending&limit=1", 1),
        (&format!("?call_id={}", bravo.id), 0),
    ] {
        let (s, _, body) = call(
            &f.router,
            "GET",
            &format!("/v1/webhooks{q}"),
            Some(READ_KEY),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["deliveries"].as_array().unwrap().len(), n, "{q}: {v}");
    }
    for bad in [
        "?state=lost",
        "?limit=0",
        "?limit=1001",
        "?limit=-3",
        "?secret=1",
    ] {
        let (s, _, body) = call(
            &f.router,
            "GET",
            &format!("/v1/webhooks{bad}"),
            Some(READ_KEY),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(error_code(&body), "bad_parameter");
    }

    // another buyer's call, another buyer's key
    for (key, id) in [(ACME_KEY, &bravo.id), (BRAVO_KEY, &acme.id)] {
        let (s, _, body) = call(&f.router, "POST", &path(id), Some(key), "{}").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("was not answered by buyer"), "{body}");
        let (s, _, _) = call(&f.router, "GET", &path(id), Some(key), "").await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    // a buyer key does nothing else; read and publisher keys do not convert
    for (method, p) in [
        ("GET", "/v1/cdrs".to_owned()),
        ("GET", "/v1/webhooks".to_owned()),
        ("GET", "/v1/calls".to_owned()),
        ("POST", format!("/v1/calls/{}/hangup", acme.id)),
        ("POST", "/v1/bid".to_owned()),
        ("POST", format!("/v1/calls/{}/conversion/x", acme.id)),
    ] {
        let (s, _, body) = call(&f.router, method, &p, Some(ACME_KEY), "").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {p}: {body}");
        assert_eq!(error_code(&body), "forbidden");
    }
    for key in [READ_KEY, PUBLISHER_KEY] {
        let (s, _, body) = call(&f.router, "POST", &path(&acme.id), Some(key), "{}").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    }
    let (s, _, _) = call(&f.router, "POST", &path(&acme.id), None, "{}").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // an admin key converts any call
    let (s, _, body) = call(&f.router, "POST", &path(&bravo.id), Some(ADMIN_KEY), "{}").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("\"converted_by\":\"ops\""), "{body}");

    // unknown calls, calls that cannot be converted, bad bodies
    for id in [crate::ids::uuid(), "nonsense".to_owned()] {
        let (s, _, body) = call(&f.router, "POST", &path(&id), Some(ADMIN_KEY), "{}").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(error_code(&body), "not_found");
    }
    for (id, body, code) in [
        (&failed.id, "{}", "not_answered"),
        (&old.id, "{}", "conversion_window_closed"),
        (
            &acme.id,
            r#"{"payout_cents": 1201}"#,
            "payout_above_revenue",
        ),
    ] {
        let (s, _, got) = call(&f.router, "POST", &path(id), Some(ACME_KEY), body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{got}");
        assert_eq!(error_code(&got), code);
    }
    for bad in [
        "",
        "not json",
        r#"{"converted": "yes"}"#,
        r#"{"payout_cents": -1}"#,
        r#"{"payout_cents": 1.5}"#,
        r#"{"payout": 100}"#,
    ] {
        let (s, _, body) = call(&f.router, "POST", &path(&acme.id), Some(ACME_KEY), bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(error_code(&body), "bad_body");
    }
    // (the fixture's body limit is 100 bytes: the note's limit is checked directly)
    let long = format!(r#"{{"note": "{}"}}"#, "é".repeat(501));
    assert!(super::conversion::checked(long.as_bytes()).is_err());
    let ok = format!(r#"{{"note": "{}"}}"#, "é".repeat(500));
    assert!(super::conversion::checked(ok.as_bytes()).is_ok());
    // nothing was written for a refusal: still two events on acme's call, one on bravo's
    let (_, _, body) = call(&f.router, "GET", "/v1/webhooks", Some(ADMIN_KEY), "").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["counts"]["pending"], 5, "{v}");

    // no database: 503, said clearly
    let dead = Arc::new(ApiState::new(
        &HttpConfig {
            api_keys: vec![key("ops", ADMIN_KEY, Role::Admin)],
            ..HttpConfig::default()
        },
        Arc::new(Counters::default()),
        Db::connect("postgres://postgres@127.0.0.1:9/none").unwrap(),
        f.st.spool_dir.join("nothing-here"),
        None,
        Arc::new(WriterStats::default()),
        core_sink(),
    ));
    for (method, p) in [("POST", path(&acme.id)), ("GET", "/v1/webhooks".to_owned())] {
        let (s, _, body) = call(&router(dead.clone()), method, &p, Some(ADMIN_KEY), "{}").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{p}: {body}");
        assert_eq!(error_code(&body), "database_unavailable");
    }
}
