//! The `/v1` routes over live state: calls, buyers, DNC, stats. Each carries its OpenAPI
//! description (`utoipa::path`); [`super::doc`] gathers them.

// An axum `Response` is the natural error of a handler helper.
#![allow(clippy::result_large_err)]

use super::{error, ApiState};
use crate::call::view::{BuyerPatch, BuyerView, CallView};
use crate::http::ApiRequest;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// The error body every non-2xx answer carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code (`unauthorized`, `not_found`, `bad_parameter`, …).
    pub code: String,
    /// What a person should read.
    pub message: String,
    /// Every problem found (config reload refusals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

/// `GET /v1/calls`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallList {
    /// Calls in progress, oldest first.
    pub calls: Vec<CallView>,
}

/// Calls in progress with their legs, buyer and age.
#[utoipa::path(get, path = "/v1/calls", tag = "calls",
    responses((status = 200, description = "Calls in progress", body = CallList)))]
pub async fn calls(State(st): State<Arc<ApiState>>) -> Response {
    match st.ask(ApiRequest::Calls).await {
        Ok(calls) => Json(CallList { calls }).into_response(),
        Err(r) => r,
    }
}

/// One call in progress.
#[utoipa::path(get, path = "/v1/calls/{id}", tag = "calls",
    params(("id" = String, Path, description = "DCE's call id")),
    responses((status = 200, description = "The call", body = CallView),
              (status = 404, description = "No such call in progress", body = ErrorBody)))]
pub async fn call(State(st): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    match st.ask(|tx| ApiRequest::Call(id.clone(), tx)).await {
        Ok(Some(c)) => Json(c).into_response(),
        Ok(None) => no_call(&id),
        Err(r) => r,
    }
}

fn no_call(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no call `{id}` in progress"),
    )
}

/// `POST /v1/calls/{id}/hangup`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HangupDone {
    /// The call id.
    pub id: String,
    /// Always true: BYE sent to both legs (or, while ringing, 480 to the carrier and CANCEL
    /// to the buyer).
    pub hung_up: bool,
}

/// End a call: BYE to both legs of an answered call; 480 to the carrier and CANCEL to the
/// buyer of a ringing one. The CDR records `hangup_by = dce`, reason `api_hangup`.
#[utoipa::path(post, path = "/v1/calls/{id}/hangup", tag = "calls",
    params(("id" = String, Path, description = "DCE's call id")),
    responses((status = 200, description = "Hung up", body = HangupDone),
              (status = 404, description = "No such call in progress", body = ErrorBody)))]
pub async fn hangup(State(st): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    match st.ask(|tx| ApiRequest::Hangup(id.clone(), tx)).await {
        Ok(true) => Json(HangupDone { id, hung_up: true }).into_response(),
        Ok(false) => no_call(&id),
        Err(r) => r,
    }
}

/// `GET /v1/buyers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuyerList {
    /// Every buyer of the running config.
    pub buyers: Vec<BuyerView>,
}

/// Buyers with their live state: active calls, caps used, bid in force, paused.
#[utoipa::path(get, path = "/v1/buyers", tag = "buyers",
    responses((status = 200, description = "Buyers", body = BuyerList)))]
pub async fn buyers(State(st): State<Arc<ApiState>>) -> Response {
    match st.ask(ApiRequest::Buyers).await {
        Ok(buyers) => Json(BuyerList { buyers }).into_response(),
        Err(r) => r,
    }
}

/// Pause, resume, or override the bid of a buyer. A bid override lasts until the next
/// reload; a pause lasts until resumed (or DCE restarts).
#[utoipa::path(patch, path = "/v1/buyers/{id}", tag = "buyers",
    params(("id" = String, Path, description = "Buyer id")),
    request_body = BuyerPatch,
    responses((status = 200, description = "The buyer after the change", body = BuyerView),
              (status = 400, description = "Malformed body", body = ErrorBody),
              (status = 404, description = "No such buyer", body = ErrorBody)))]
pub async fn patch_buyer(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let patch = match serde_json::from_slice::<serde_json::Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| BuyerPatch::from_json(&v))
    {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("expected {{\"paused\": bool, \"bid_cents\": integer|null}}: {e}"),
            )
        }
    };
    match st
        .ask(|tx| ApiRequest::PatchBuyer(id.clone(), patch, tx))
        .await
    {
        Ok(Some(b)) => Json(b).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no buyer `{id}` in the running config"),
        ),
        Err(r) => r,
    }
}

/// A number on the do-not-call lists.
#[derive(Debug, Serialize, ToSchema)]
pub struct DncEntry {
    /// The number, 10-digit NANP.
    pub number: String,
    /// On the operator's internal list (this node's file).
    pub internal: bool,
    /// On the national registry.
    pub national: bool,
    /// On the fleet-wide list in Redis; null when Redis is not configured or did not answer.
    pub shared: Option<bool>,
}

/// The 10-digit NANP form of a path number (`[+][1]` and ten digits), or the 400.
fn nanp(number: &str) -> Result<String, Response> {
    let digits = number.strip_prefix('+').unwrap_or(number);
    let strict = (digits.len() == 10 || (digits.len() == 11 && digits.starts_with('1')))
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (number.len() == digits.len() || digits.len() == 11);
    strict
        .then(|| dce_compliance::nanp10(digits))
        .flatten()
        .map(|n| format!("{n:010}"))
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_number",
                format!("`{number}` is not a NANP number (10 digits, or 11 starting with 1)"),
            )
        })
}

async fn dnc_state(st: &ApiState, n: &str) -> Result<DncEntry, Response> {
    let Some(c) = &st.compliance else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_available",
            "compliance lists are not loaded",
        ));
    };
    let (internal, national) = {
        let c = c.lock().unwrap_or_else(|p| p.into_inner());
        let internal = c
            .internal
            .read()
            .map(|i| i.contains_str(n))
            .unwrap_or(false);
        (
            internal,
            c.national.as_ref().is_some_and(|d| d.contains_str(n)),
        )
    };
    let shared = match &st.redis {
        Some(r) => r.dnc_contains(n).await.ok(),
        None => None,
    };
    Ok(DncEntry {
        number: n.to_owned(),
        internal,
        national,
        shared,
    })
}

/// Whether a number is on the internal, national and fleet-wide lists.
#[utoipa::path(get, path = "/v1/dnc/{number}", tag = "dnc",
    params(("number" = String, Path, description = "Phone number, NANP: ten digits, optionally after 1 or +1", pattern = r"^(\+1|1)?[0-9]{10}$")),
    responses((status = 200, description = "Where the number is listed", body = DncEntry),
              (status = 400, description = "Not a NANP number", body = ErrorBody)))]
pub async fn dnc_get(State(st): State<Arc<ApiState>>, Path(number): Path<String>) -> Response {
    let n = match nanp(&number) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match dnc_state(&st, &n).await {
        Ok(e) => Json(e).into_response(),
        Err(r) => r,
    }
}

/// Add or remove on the internal list (persisted to its file) and, with Redis, the
/// fleet-wide list; effective on the next call.
async fn dnc_edit(st: &ApiState, n: &str, add: bool) -> Result<bool, Response> {
    let Some(c) = &st.compliance else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_available",
            "compliance lists are not loaded",
        ));
    };
    let internal = c.lock().unwrap_or_else(|p| p.into_inner()).internal.clone();
    let number = n.to_owned();
    let saving = st.dnc_save.clone();
    // The call path reads the list through `internal`: hold its write lock only for the
    // in-memory change; the file is written after, under a lock of its own that keeps saves
    // in the order of the changes.
    let changed = tokio::task::spawn_blocking(move || {
        let _order = saving.lock().unwrap_or_else(|p| p.into_inner());
        let (changed, pending) = {
            let mut i = internal.write().unwrap_or_else(|p| p.into_inner());
            (i.edit(&number, add).unwrap_or(false), i.pending_save())
        };
        match pending {
            Some((path, numbers)) => {
                dce_compliance::save_internal_dnc(&path, numbers).map(|()| changed)
            }
            None => {
                tracing::warn!(
                    "no [compliance] internal_dnc file: this DNC change lasts until DCE restarts"
                );
                Ok(changed)
            }
        }
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "dnc_not_saved",
            format!("changed in memory, but the internal DNC file could not be written: {e}"),
        )
    })?;
    let mut shared_changed = false;
    if let Some(r) = &st.redis {
        let edit = async {
            if add {
                r.dnc_add(n).await
            } else {
                r.dnc_remove(n).await
            }
        };
        let res = tokio::time::timeout(Duration::from_secs(2), edit)
            .await
            .unwrap_or_else(|_| Err("Redis did not answer within 2 s".into()));
        match res {
            Ok(c) => shared_changed = c,
            Err(e) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "redis_unavailable",
                    format!(
                        "saved on this node, but the fleet-wide list in Redis was not changed: {e}"
                    ),
                ))
            }
        }
    }
    tracing::info!(number = %crate::logging::num(n), add, "internal DNC changed through the API");
    Ok(changed || shared_changed)
}

/// Put a number on the do-not-call list.
#[utoipa::path(put, path = "/v1/dnc/{number}", tag = "dnc",
    params(("number" = String, Path, description = "Phone number, NANP: ten digits, optionally after 1 or +1", pattern = r"^(\+1|1)?[0-9]{10}$")),
    responses((status = 200, description = "Listed (now or already)", body = DncEntry),
              (status = 400, description = "Not a NANP number", body = ErrorBody)))]
pub async fn dnc_put(State(st): State<Arc<ApiState>>, Path(number): Path<String>) -> Response {
    let n = match nanp(&number) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Err(r) = dnc_edit(&st, &n, true).await {
        return r;
    }
    match dnc_state(&st, &n).await {
        Ok(e) => Json(e).into_response(),
        Err(r) => r,
    }
}

/// Take a number off the internal (and fleet-wide) do-not-call list. The national registry
/// is not editable here.
#[utoipa::path(delete, path = "/v1/dnc/{number}", tag = "dnc",
    params(("number" = String, Path, description = "Phone number, NANP: ten digits, optionally after 1 or +1", pattern = r"^(\+1|1)?[0-9]{10}$")),
    responses((status = 200, description = "Removed", body = DncEntry),
              (status = 400, description = "Not a NANP number", body = ErrorBody),
              (status = 404, description = "Not on the internal list", body = ErrorBody)))]
pub async fn dnc_delete(State(st): State<Arc<ApiState>>, Path(number): Path<String>) -> Response {
    let n = match nanp(&number) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match dnc_edit(&st, &n, false).await {
        Ok(true) => match dnc_state(&st, &n).await {
            Ok(e) => Json(e).into_response(),
            Err(r) => r,
        },
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_listed",
            format!("{n} is not on the internal list"),
        ),
        Err(r) => r,
    }
}

/// `GET /v1/stats` window.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Start (RFC 3339, inclusive); default `to` minus 24 h. A window that ends before it
    /// starts is empty.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End (RFC 3339, exclusive); default now.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// Figures of a group of calls.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Figures {
    /// Calls offered.
    pub calls: i64,
    /// Calls refused before a buyer was rung.
    pub rejected: i64,
    /// Calls a buyer answered (connected).
    pub connected: i64,
    /// Connected calls that became billable.
    pub billable: i64,
    /// Answer-seizure ratio: connected / (calls − rejected), 0–1.
    pub asr: f64,
    /// Average call duration of connected calls, seconds.
    pub acd_s: f64,
    /// What the buyers paid for billable calls, cents.
    pub revenue_cents: i64,
    /// What the publishers (carriers) are paid, cents.
    pub payout_cents: i64,
    /// What the exchange kept (revenue − payout), cents.
    pub margin_cents: i64,
}

impl Figures {
    fn add(&mut self, r: &crate::store::StatRow, talk_ms: &mut i64) {
        self.calls += r.calls;
        self.rejected += r.rejected;
        self.connected += r.answered;
        self.billable += r.billable;
        self.revenue_cents += r.revenue_cents;
        self.payout_cents += r.payout_cents;
        self.margin_cents += r.margin_cents;
        *talk_ms += r.talk_ms;
    }

    fn finish(mut self, talk_ms: i64) -> Figures {
        let routed = self.calls - self.rejected;
        self.asr = if routed > 0 {
            ((self.connected as f64 / routed as f64) * 1000.0).round() / 1000.0
        } else {
            0.0
        };
        self.acd_s = if self.connected > 0 {
            ((talk_ms as f64 / self.connected as f64) / 100.0).round() / 10.0
        } else {
            0.0
        };
        self
    }
}

/// Figures of one campaign or buyer.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupFigures {
    /// Campaign or buyer id.
    pub id: String,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// `GET /v1/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Window start (RFC 3339).
    pub from: String,
    /// Window end (RFC 3339).
    pub to: String,
    /// Every call in the window.
    pub total: Figures,
    /// By campaign.
    pub campaigns: Vec<GroupFigures>,
    /// By winning buyer (calls some buyer answered).
    pub buyers: Vec<GroupFigures>,
}

/// ASR, ACD, connected and billable calls and revenue, per buyer and campaign, over a window
/// (from the CDR database).
#[utoipa::path(get, path = "/v1/stats", tag = "stats", params(StatsParams),
    responses((status = 200, description = "Figures over the window", body = Stats),
              (status = 400, description = "Bad window", body = ErrorBody),
              (status = 503, description = "The CDR database did not answer", body = ErrorBody)))]
pub async fn stats(
    State(st): State<Arc<ApiState>>,
    q: Result<Query<StatsParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(p)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_parameter",
            "unknown or malformed query parameter (from, to)",
        );
    };
    let parse = |name: &str,
                 v: &Option<String>|
     -> Result<Option<chrono::DateTime<chrono::Utc>>, Response> {
        match v {
            None => Ok(None),
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| Some(d.with_timezone(&chrono::Utc)))
                .map_err(|_| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "bad_parameter",
                        format!("`{name}` must be an RFC 3339 time, e.g. 2026-11-26T00:00:00Z"),
                    )
                }),
        }
    };
    let (from, to) = match (parse("from", &p.from), parse("to", &p.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let to = to.unwrap_or_else(chrono::Utc::now);
    let from = from.unwrap_or_else(|| {
        to.checked_sub_signed(chrono::Duration::hours(24))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
    });
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let rows = match tokio::time::timeout(
        Duration::from_secs(10),
        st.db.stats(&fmt(from), &fmt(to)),
    )
    .await
    {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                e.to_string(),
            )
        }
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database did not answer within 10 s",
            )
        }
    };
    Json(summarize(fmt(from), fmt(to), &rows)).into_response()
}

/// Totals, per campaign and per buyer, of grouped rows.
pub fn summarize(from: String, to: String, rows: &[crate::store::StatRow]) -> Stats {
    use std::collections::BTreeMap;
    let mut total = (Figures::default(), 0i64);
    let mut campaigns: BTreeMap<&str, (Figures, i64)> = BTreeMap::new();
    let mut buyers: BTreeMap<&str, (Figures, i64)> = BTreeMap::new();
    for r in rows {
        total.0.add(r, &mut total.1);
        let c = campaigns.entry(&r.campaign).or_default();
        c.0.add(r, &mut c.1);
        if let Some(b) = &r.buyer_id {
            let e = buyers.entry(b).or_default();
            e.0.add(r, &mut e.1);
        }
    }
    let group = |m: BTreeMap<&str, (Figures, i64)>| {
        m.into_iter()
            .map(|(id, (f, t))| GroupFigures {
                id: id.to_owned(),
                figures: f.finish(t),
            })
            .collect()
    };
    Stats {
        from,
        to,
        total: total.0.finish(total.1),
        campaigns: group(campaigns),
        buyers: group(buyers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StatRow;

    #[test]
    fn asr_acd_and_revenue_by_campaign_and_buyer() {
        let rows = vec![
            StatRow {
                campaign: "c1".into(),
                buyer_id: None,
                calls: 6,
                rejected: 2,
                answered: 0,
                ..StatRow::default()
            },
            StatRow {
                campaign: "c1".into(),
                buyer_id: Some("b1".into()),
                calls: 2,
                answered: 2,
                billable: 1,
                revenue_cents: 1500,
                talk_ms: 130_000,
                ..StatRow::default()
            },
            StatRow {
                campaign: "c2".into(),
                buyer_id: Some("b1".into()),
                calls: 2,
                answered: 2,
                billable: 2,
                revenue_cents: 4000,
                talk_ms: 250_000,
                ..StatRow::default()
            },
        ];
        let s = summarize("a".into(), "b".into(), &rows);
        assert_eq!(s.total.calls, 10);
        assert_eq!(s.total.connected, 4);
        assert_eq!(s.total.billable, 3);
        assert_eq!(s.total.revenue_cents, 5500);
        assert_eq!(s.total.asr, 0.5, "4 connected of 8 routed");
        assert_eq!(s.total.acd_s, 95.0);
        assert_eq!(s.campaigns[0].id, "c1");
        assert_eq!(s.campaigns[0].figures.asr, 0.333);
        assert_eq!(s.campaigns[0].figures.acd_s, 65.0);
        assert_eq!(s.buyers.len(), 1);
        assert_eq!(s.buyers[0].figures.revenue_cents, 5500);
        assert_eq!(s.buyers[0].figures.asr, 1.0);
    }
}
