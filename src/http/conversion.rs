//! `/v1/calls/{id}/conversion`: a buyer marks a stored call it answered converted, or adjusts
//! the publisher's payout, within 30 days of the INVITE; an admin may for any call. The
//! event is recorded in the CDR database with the key's name and the time, and the
//! `call.converted` postbacks are enqueued in the same transaction
//! ([`crate::store::conversions`]).

// An axum `Response` is the natural error of a handler helper.
#![allow(clippy::result_large_err)]

use super::routes::ErrorBody;
use super::{error, ApiState, Caller};
use crate::config::Role;
use crate::store::conversions::{
    Actor, ConversionError, ConversionRequest, ConversionState, MAX_NOTE,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// Is `path` `/v1/calls/<id>/conversion`?
pub(super) fn is_route(path: &str) -> bool {
    path.strip_prefix("/v1/calls/")
        .and_then(|rest| rest.strip_suffix("/conversion"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// `POST /v1/calls/{id}/conversion` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionBody {
    /// Converted (default true); false withdraws an earlier conversion.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub converted: bool,
    /// The publisher's payout for the call, cents: at most the call's revenue (what the
    /// buyer pays); the margin becomes revenue − payout. Absent: the payout stays.
    #[schema(minimum = 0)]
    pub payout_cents: Option<i64>,
    /// Kept with the event in the CDR database (not sent in postbacks).
    #[schema(max_length = 500)]
    pub note: Option<String>,
}

fn yes() -> bool {
    true
}

/// The request as checked, or the 400.
pub(super) fn checked(body: &[u8]) -> Result<ConversionRequest, Response> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "bad_body", m);
    let b: ConversionBody = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "expected {{\"converted\": bool, \"payout_cents\": integer >= 0, \"note\": string}} (each optional): {e}"
        ))
    })?;
    if b.payout_cents.is_some_and(|p| p < 0) {
        return Err(bad("`payout_cents` must be 0 or more".into()));
    }
    if b.note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE)
    {
        return Err(bad(format!("`note` is limited to {MAX_NOTE} characters")));
    }
    Ok(ConversionRequest {
        converted: b.converted,
        payout_cents: b.payout_cents,
        note: b.note,
    })
}

/// Who the key is: its name, and the buyer a `buyer` key is limited to.
fn actor(caller: &Option<Extension<Caller>>) -> Result<Actor<'_>, Response> {
    let Some(Extension(Caller(key))) = caller else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "conversions need a key (this path must not be open)",
        ));
    };
    Ok(Actor {
        key: &key.name,
        buyer: (key.role == Role::Buyer).then(|| key.buyer.as_deref().unwrap_or("")),
    })
}

fn refused(e: ConversionError) -> Response {
    let (status, code) = match &e {
        ConversionError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        ConversionError::NotYours { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        ConversionError::NotAnswered(_) => (StatusCode::CONFLICT, "not_answered"),
        ConversionError::WindowClosed { .. } => (StatusCode::CONFLICT, "conversion_window_closed"),
        ConversionError::PayoutAboveRevenue { .. } => {
            (StatusCode::CONFLICT, "payout_above_revenue")
        }
        ConversionError::Db(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
    };
    error(status, code, e.to_string())
}

async fn within<T>(
    f: impl std::future::Future<Output = Result<T, ConversionError>>,
) -> Result<T, Response> {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(r) => r.map_err(refused),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the CDR database did not answer within 10 s",
        )),
    }
}

/// Mark a stored, answered call converted (or withdraw it), or adjust its publisher payout,
/// within 30 days of its INVITE. A `buyer` key may only for calls its buyer answered; an
/// admin key for any. Each request is a new event (`seq`), kept with the key's name, the
/// time, the payout before and after and the note; its `call.converted` postbacks (to the
/// buyer's and the carrier's webhooks, when they subscribe) have the idempotency key
/// `<call id>:call.converted:<seq>:<target>`.
#[utoipa::path(post, path = "/v1/calls/{id}/conversion", tag = "conversions",
    params(("id" = String, Path, description = "DCE's call id (of a stored call)")),
    request_body = ConversionBody,
    responses((status = 200, description = "Recorded; the call's conversion state after it", body = ConversionState),
              (status = 400, description = "Malformed body", body = ErrorBody),
              (status = 403, description = "Not a buyer or admin key, or another buyer's call", body = ErrorBody),
              (status = 404, description = "No stored call with that id", body = ErrorBody),
              (status = 409, description = "The stored call's state refuses it: not answered, older than 30 days, or a payout above its revenue", body = ErrorBody),
              (status = 503, description = "The CDR database did not answer", body = ErrorBody)))]
pub async fn post(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    caller: Option<Extension<Caller>>,
    body: axum::body::Bytes,
) -> Response {
    let who = match actor(&caller) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let req = match checked(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let hooks = st
        .webhooks
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let now = chrono::Utc::now();
    match within(st.db.convert(&id, who, &req, &hooks, now)).await {
        Ok(state) => {
            tracing::info!(call = %id, key = %who.key, converted = req.converted, payout_cents = ?req.payout_cents,
                seq = state.history.last().map(|e| e.seq), "conversion recorded");
            Json(state).into_response()
        }
        Err(r) => r,
    }
}

/// A stored call's conversion state and every conversion event (a `buyer` key: only for
/// calls its buyer answered).
#[utoipa::path(get, path = "/v1/calls/{id}/conversion", tag = "conversions",
    params(("id" = String, Path, description = "DCE's call id (of a stored call)")),
    responses((status = 200, description = "The call's conversion state", body = ConversionState),
              (status = 403, description = "Another buyer's call", body = ErrorBody),
              (status = 404, description = "No stored call with that id", body = ErrorBody),
              (status = 503, description = "The CDR database did not answer", body = ErrorBody)))]
pub async fn get(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    caller: Option<Extension<Caller>>,
) -> Response {
    let who = match actor(&caller) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match within(st.db.conversion_state(&id, who)).await {
        Ok(state) => Json(state).into_response(),
        Err(r) => r,
    }
}
