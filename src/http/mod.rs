//! The control API (axum): API keys checked against stored SHA-256 hashes in constant time,
//! roles (`GET`/`HEAD` need `read`, anything else `admin`; `POST /v1/bid` only, and only it, a
//! `publisher` key tied to a carrier; a `buyer` key tied to a buyer only
//! `/v1/calls/{id}/conversion`, for that buyer's calls), per-key rate limits, a body limit,
//! header and body read timeouts, and JSON errors `{ "error": { "code", "message" } }`.
//! Routes that read or change calls and buyers ask the core task (which owns them) over a
//! channel and wait for its answer; `/v1/events` streams live events over a WebSocket; the
//! OpenAPI document at `/openapi.json` is generated from the handlers ([`doc`]); `/` is the
//! live page ([`page`]).
//!
//! `/health` answers 200 whether the dependencies are `ok` or `degraded`: a node whose database
//! is down still routes calls (CDRs go to the spool), so a load balancer must keep sending it
//! traffic; the body says what is wrong.

use crate::config::{ApiKey, HttpConfig, Role};
use crate::counters::{Counter, Counters};
use crate::store::{Db, WriterStats};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
pub use request::{ApiRequest, ReloadReply};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the API reads.
pub struct ApiState {
    keys: Vec<ApiKey>,
    open: Vec<String>,
    rate: f64,
    max_body: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Edge and call counters.
    pub counters: Arc<Counters>,
    /// The CDR database.
    pub db: Db,
    /// The spool directory (its size is the backlog).
    pub spool_dir: PathBuf,
    /// Redis, when configured.
    pub redis: Option<crate::shared::Shared>,
    /// The CDR writer's counters.
    pub writer: Arc<WriterStats>,
    /// Asks the core task: reloads (the path SIGHUP takes), calls, buyers.
    core: tokio::sync::mpsc::UnboundedSender<ApiRequest>,
    /// Live events.
    pub events: crate::events::Bus,
    /// The compliance lists (for `/v1/dnc`).
    pub compliance: Option<Arc<Mutex<dce_compliance::Compliance>>>,
    /// The media port pool.
    pub ports: Option<Vec<dce_media::PortGauge>>,
    /// Set when SIGTERM is draining calls.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// GDPR erasure (the writer's and the JSON-lines sink's list of erased numbers).
    pub gdpr: Option<Arc<crate::store::Gdpr>>,
    /// Buyer host names resolved in the background.
    pub dns: Option<Arc<crate::dns::Table>>,
    /// How long a client may take to send its body.
    body_timeout: Duration,
    /// Orders writes of the internal DNC file.
    dnc_save: Arc<Mutex<()>>,
    /// The running config's webhooks (a conversion's `call.converted` postbacks).
    pub webhooks: Arc<std::sync::RwLock<crate::webhooks::Webhooks>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl ApiState {
    /// The state for `cfg`.
    pub fn new(
        cfg: &HttpConfig,
        counters: Arc<Counters>,
        db: Db,
        spool_dir: PathBuf,
        redis: Option<crate::shared::Shared>,
        writer: Arc<WriterStats>,
        core: tokio::sync::mpsc::UnboundedSender<ApiRequest>,
    ) -> ApiState {
        ApiState {
            keys: cfg.api_keys.clone(),
            open: cfg.open_paths.clone(),
            rate: f64::from(cfg.rate_limit_per_s),
            max_body: cfg.max_body_bytes,
            buckets: Mutex::new(HashMap::new()),
            counters,
            db,
            spool_dir,
            redis,
            writer,
            core,
            events: crate::events::Bus::default(),
            compliance: None,
            ports: None,
            draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            gdpr: None,
            dns: None,
            body_timeout: cfg.body_timeout,
            dnc_save: Arc::new(Mutex::new(())),
            webhooks: Arc::default(),
        }
    }

    /// Ask the core task and wait (10 s) for its answer; `Err` is the response to send.
    pub(crate) async fn ask<T>(
        &self,
        req: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> ApiRequest,
    ) -> Result<T, Response> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "DCE is shutting down",
            )
        };
        self.core.send(req(tx)).map_err(|_| gone())?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "core_busy",
                "the call core did not answer within 10 s",
            )),
        }
    }

    /// The key whose hash matches, comparing against every key without stopping early.
    fn key(&self, presented: &str) -> Option<&ApiKey> {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for k in &self.keys {
            let diff = k
                .sha256
                .iter()
                .zip(h.iter())
                .fold(0u8, |d, (a, b)| d | (a ^ b));
            if diff == 0 {
                found = Some(k);
            }
        }
        found
    }

    /// A token from `who`'s bucket (capacity one second of the rate); false when empty.
    fn allow(&self, who: &str) -> bool {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if b.len() > 10_000 {
            // open paths hit from many addresses: forget the idle ones
            b.retain(|_, v| now.duration_since(v.at) < Duration::from_secs(10));
        }
        let e = b.entry(who.to_owned()).or_insert(Bucket {
            tokens: self.rate,
            at: now,
        });
        e.tokens = (e.tokens + now.duration_since(e.at).as_secs_f64() * self.rate).min(self.rate);
        e.at = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A JSON error response.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message.into() } });
    (status, Json(body)).into_response()
}

/// The key a request came with (set by the guard for the handlers that need it).
#[derive(Clone)]
pub struct Caller(pub ApiKey);

/// What each role may do: `read` reads (`GET`, `HEAD`), `admin` does everything but ask for
/// bids, `publisher` only asks for bids (`POST /v1/bid`), for its own carrier, `buyer` only
/// reads and posts conversions (`/v1/calls/{id}/conversion`; the handler checks the call is
/// its buyer's).
fn permitted(key: &ApiKey, method: &Method, path: &str) -> Result<(), String> {
    let bid = path == "/v1/bid";
    let read = matches!(*method, Method::GET | Method::HEAD);
    let conversion = conversion::is_route(path) && (read || *method == Method::POST);
    match key.role {
        Role::Buyer if conversion => Ok(()),
        Role::Buyer => Err(format!(
            "key `{}` is a buyer key: it may only POST (or GET) /v1/calls/{{id}}/conversion, for calls its buyer answered",
            key.name
        )),
        Role::Publisher if bid => Ok(()),
        Role::Publisher => Err(format!("key `{}` is a publisher key: it may only POST /v1/bid", key.name)),
        _ if bid => Err(format!(
            "POST /v1/bid needs a publisher key (role = \"publisher\", tied to a carrier); `{}` is not one",
            key.name
        )),
        Role::Admin => Ok(()),
        Role::Read if read => Ok(()),
        Role::Read => Err(format!("key `{}` is read-only", key.name)),
    }
}

async fn guard(State(st): State<Arc<ApiState>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "local".into());
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > st.max_body as u64);
    if too_big {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {} bytes", st.max_body),
        );
    }
    // The live page's files hold no data: always served (rate limited per address).
    let static_file = matches!(path.as_str(), "/" | "/app.js");
    let who = if st.open.contains(&path) || static_file {
        format!("ip:{peer}")
    } else {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .or_else(|| subprotocol_key(&req));
        let Some(key) = presented.and_then(|p| st.key(p)) else {
            // Guessing keys is limited per source address like any open path.
            if !st.allow(&format!("ip:{peer}")) {
                return too_many(&st);
            }
            tracing::warn!(%peer, %path, "API request without a valid key");
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send `Authorization: Bearer <key>` with a valid key",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        };
        if let Err(why) = permitted(key, req.method(), &path) {
            tracing::warn!(key = %key.name, %path, method = %req.method(), "API request refused: {why}");
            return error(StatusCode::FORBIDDEN, "forbidden", why);
        }
        let name = format!("key:{}", key.name);
        req.extensions_mut().insert(Caller(key.clone()));
        name
    };
    if !st.allow(&who) {
        return too_many(&st);
    }
    // Read the whole body now, within the body timeout and the size limit (a chunked body has
    // no Content-Length to refuse early).
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(st.body_timeout, axum::body::to_bytes(body, st.max_body))
        .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {} bytes", st.max_body),
            )
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    st.body_timeout.as_secs()
                ),
            )
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(body)))
        .await
}

/// A browser cannot set headers on a WebSocket: the live page offers its key as the
/// subprotocol `bearer.<key>` next to `dce.events` (only on `/v1/events`).
fn subprotocol_key(req: &Request) -> Option<&str> {
    if req.uri().path() != "/v1/events" {
        return None;
    }
    req.headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("bearer."))
}

fn too_many(st: &ApiState) -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("more than {} requests per second", st.rate),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// The router (also used by tests without a socket).
pub fn router(st: Arc<ApiState>) -> Router {
    let limit = st.max_body;
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/openapi.json", get(doc::openapi_json))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/cdrs", get(cdrs))
        .route("/v1/reload", axum::routing::post(reload))
        .route("/v1/calls", get(routes::calls))
        .route("/v1/calls/{id}", get(routes::call))
        .route("/v1/calls/{id}/hangup", axum::routing::post(routes::hangup))
        .route(
            "/v1/calls/{id}/conversion",
            get(conversion::get).post(conversion::post),
        )
        .route("/v1/calls/{id}/recording", get(recording::get))
        .route("/v1/webhooks", get(webhooks::list))
        .route("/v1/buyers", get(routes::buyers))
        .route("/v1/buyers/{id}", axum::routing::patch(routes::patch_buyer))
        .route(
            "/v1/dnc/{number}",
            get(routes::dnc_get)
                .put(routes::dnc_put)
                .delete(routes::dnc_delete),
        )
        .route("/v1/stats", get(routes::stats))
        .route("/v1/bid", axum::routing::post(bid::bid))
        .route("/v1/gdpr/erase", axum::routing::post(gdpr::erase))
        .route("/v1/events", get(ws::events))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(st.clone(), guard))
        .with_state(st)
}

/// Serve on a bound listener until the task is dropped or aborted. A client gets
/// `header_timeout` to send its request line and headers (then the connection is closed),
/// and the body timeout (in the guard) for its body.
pub async fn serve(listener: tokio::net::TcpListener, st: Arc<ApiState>, header_timeout: Duration) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::Service as _;
    let addr = listener.local_addr().ok();
    let app = router(st);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(listen = ?addr, error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().call(req.map(axum::body::Body::new))
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// Bytes waiting in the spool.
fn spool_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("cdr.spool"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Dependencies: database, Redis, spool backlog, port pool. 200 when `ok` or `degraded`
/// (calls still flow), 503 while draining.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Serving", body = doc::Health),
              (status = 503, description = "Draining (SIGTERM): take the node out of the pool", body = doc::Health)))]
pub async fn health(State(st): State<Arc<ApiState>>) -> Response {
    use doc::DependencyHealth as Dep;
    let db = match tokio::time::timeout(Duration::from_secs(1), st.db.ping()).await {
        Ok(Ok(())) => Dep::status("ok"),
        Ok(Err(e)) => Dep::down(e.to_string()),
        Err(_) => Dep::down("no answer within 1 s".into()),
    };
    let redis = match &st.redis {
        None => Dep::status("not_configured"),
        Some(r) => match r.ping().await {
            Ok(()) => Dep::status("ok"),
            Err(e) => Dep::down(e),
        },
    };
    let spooled = spool_bytes(&st.spool_dir);
    let spool = Dep {
        bytes: Some(spooled),
        ..Dep::status(if spooled == 0 { "ok" } else { "backlog" })
    };
    let port_pool = match &st.ports {
        None => Dep::status("not_configured"),
        Some(gauges) => {
            // one pool per SIP worker
            let used: usize = gauges.iter().map(|g| g.in_use()).sum();
            let total: usize = gauges.iter().map(|g| g.total()).sum();
            // Below 10 % free, new calls may soon get 503.
            let low = total > 0 && (total - used.min(total)) * 10 < total;
            Dep {
                in_use: Some(used as u64),
                total: Some(total as u64),
                ..Dep::status(if low { "low" } else { "ok" })
            }
        }
    };
    let draining = st.draining.load(Ordering::Relaxed);
    let ok = db.status == "ok"
        && redis.status != "down"
        && spooled == 0
        && port_pool.status != "low"
        && !draining;
    let status = if draining {
        "draining"
    } else if ok {
        "ok"
    } else {
        "degraded"
    };
    let body = Json(doc::Health {
        status: status.into(),
        database: db,
        redis,
        spool,
        port_pool,
        active_calls: st.counters.m.active_calls(),
    });
    // A draining node must leave the load balancer's pool: 503.
    if draining {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    } else {
        body.into_response()
    }
}

/// `POST /v1/reload`: the SIGHUP path; answers once the new config is in force (or refused).
#[utoipa::path(post, path = "/v1/reload", tag = "operations",
    responses((status = 200, description = "The new config is in force", body = doc::Reloaded),
              (status = 422, description = "Refused, with every problem; the running config stays", body = routes::ErrorBody),
              (status = 504, description = "The reload did not finish in 60 s", body = routes::ErrorBody)))]
pub async fn reload(State(st): State<Arc<ApiState>>) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if st.core.send(ApiRequest::Reload(tx)).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "DCE is shutting down",
        );
    }
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(Ok(loaded))) => Json(doc::Reloaded {
            reloaded: true,
            config: loaded,
        })
        .into_response(),
        Ok(Ok(Err(problems))) => {
            let body = serde_json::json!({ "error": {
                "code": "config_refused",
                "message": "the config was refused; the running config stays",
                "problems": problems,
            } });
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "DCE is shutting down",
        ),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "reload_timeout",
            "the reload did not finish within 60 s",
        ),
    }
}

/// `GET /v1/cdrs` parameters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CdrParams {
    /// Created at or after (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Created before (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Winning buyer.
    buyer: Option<String>,
    /// Campaign.
    campaign: Option<String>,
    /// answered, rejected, cancelled or failed.
    #[param(pattern = "^(answered|rejected|cancelled|failed)$")]
    disposition: Option<String>,
    /// Caller, E.164 digits.
    caller: Option<String>,
    /// The `next` of the previous page: `<ms since 1970>.<call id as 32 hex digits>`.
    #[param(pattern = "^[0-9]{1,13}\\.[0-9a-f]{32}$")]
    cursor: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The 400 for a parameter that is not an RFC 3339 time, if it is not.
fn bad_time(name: &str, v: &Option<String>) -> Option<Response> {
    match v {
        Some(t) if chrono::DateTime::parse_from_rfc3339(t).is_err() => Some(error(
            StatusCode::BAD_REQUEST,
            "bad_parameter",
            format!("`{name}` must be an RFC 3339 time, e.g. 2026-11-26T00:00:00Z"),
        )),
        _ => None,
    }
}

/// Calls newest first, filtered, in pages: `next` is the `cursor` of the following page.
#[utoipa::path(get, path = "/v1/cdrs", tag = "cdrs", params(CdrParams),
    responses((status = 200, description = "One page of CDRs", body = doc::CdrPage),
              (status = 400, description = "Bad parameter", body = routes::ErrorBody)))]
pub async fn cdrs(
    State(st): State<Arc<ApiState>>,
    q: Result<axum::extract::Query<CdrParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(p)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_parameter",
            "unknown or malformed query parameter",
        );
    };
    if let Some(r) = bad_time("from", &p.from).or_else(|| bad_time("to", &p.to)) {
        return r;
    }
    let after = match &p.cursor {
        None => None,
        Some(c) => match decode_cursor(c) {
            Some(k) => Some(k),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_parameter",
                    "`cursor` must be the `next` of a previous page",
                )
            }
        },
    };
    if let Some(d) = &p.disposition {
        if !["answered", "rejected", "cancelled", "failed"].contains(&d.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_parameter",
                "`disposition` must be answered, rejected, cancelled or failed",
            );
        }
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_parameter",
            "`limit` must be from 1 to 1000",
        );
    }
    let query = crate::store::CdrQuery {
        from: p.from,
        to: p.to,
        buyer: p.buyer,
        campaign: p.campaign,
        disposition: p.disposition,
        caller: p.caller.map(|c| c.trim_start_matches('+').to_owned()),
        after,
        limit,
    };
    match tokio::time::timeout(Duration::from_secs(10), st.db.search(&query)).await {
        Ok(Ok(rows)) => {
            let next = (rows.len() == limit as usize)
                .then(|| {
                    rows.last()
                        .and_then(|r| encode_cursor(&r.created_at, &r.id))
                })
                .flatten();
            Json(doc::CdrPage { cdrs: rows, next }).into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            e.to_string(),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database did not answer within 10 s",
        ),
    }
}

/// The keyset cursor of a row: `<ms since 1970>.<id as 32 hex digits>`. Every string of that
/// shape is a valid cursor (the API document says so with a pattern).
fn encode_cursor(created_at: &str, id: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(created_at).ok()?;
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32).then(|| format!("{}.{}", t.timestamp_millis(), hex.to_ascii_lowercase()))
}

/// `(created_at RFC 3339, id with dashes)` of a cursor.
fn decode_cursor(c: &str) -> Option<(String, String)> {
    let (ms, hex) = c.split_once('.')?;
    if ms.is_empty()
        || ms.len() > 13
        || !ms.bytes().all(|b| b.is_ascii_digit())
        || hex.len() != 32
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let t = chrono::DateTime::from_timestamp_millis(ms.parse().ok()?)?;
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    Some((t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), id))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String)))]
pub async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP dce_events_total What the SIP edge and the call controller did, by event.\n# TYPE dce_events_total counter\n");
    for c in Counter::ALL {
        let _ = writeln!(
            out,
            "dce_events_total{{event=\"{}\"}} {}",
            c.name(),
            st.counters.get(*c)
        );
    }
    let _ = writeln!(
        out,
        "# HELP dce_cdrs_written_total CDRs stored in the database (directly or by replay).\n# TYPE dce_cdrs_written_total counter\ndce_cdrs_written_total {}",
        st.writer.written.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP dce_cdrs_spooled_total CDRs appended to the spool.\n# TYPE dce_cdrs_spooled_total counter\ndce_cdrs_spooled_total {}",
        st.writer.spooled.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP dce_cdr_queue_depth CDRs handed to the writer and not yet stored or spooled.\n# TYPE dce_cdr_queue_depth gauge\ndce_cdr_queue_depth {}",
        st.writer.queue_depth()
    );
    st.counters.m.render(&mut out);
    if let Some(dns) = &st.dns {
        dns.render(&mut out);
    }
    let _ = writeln!(
        out,
        "# HELP dce_spool_bytes Bytes of CDRs waiting in the spool.\n# TYPE dce_spool_bytes gauge\ndce_spool_bytes {}",
        spool_bytes(&st.spool_dir)
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        out,
    )
        .into_response()
}
mod bid;

mod conversion;
pub mod doc;
mod gdpr;
pub mod page;
mod recording;
mod request;
mod routes;
mod webhooks;
mod ws;

#[cfg(test)]
mod tests;
