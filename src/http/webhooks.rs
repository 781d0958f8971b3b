//! `GET /v1/webhooks`: the postbacks' delivery state, from the outbox in the CDR database.
//! Never a secret: the outbox holds none.

use super::routes::ErrorBody;
use super::{error, ApiState};
use crate::store::db::{PostbackQuery, PostbackRow};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// `GET /v1/webhooks` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookParams {
    /// pending, delivered or failed.
    #[param(pattern = "^(pending|delivered|failed)$")]
    state: Option<String>,
    /// One call's deliveries.
    call_id: Option<String>,
    /// One webhook's: `buyer:<id>` or `carrier:<id>`.
    target: Option<String>,
    /// At most this many, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// One postback delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// Its id, also its `Idempotency-Key`.
    pub id: String,
    /// The call.
    pub call_id: String,
    /// `buyer:<id>` or `carrier:<id>`.
    pub target: String,
    /// `call.routed`, `call.answered`, `call.completed`, `call.billable`, `call.converted`.
    pub event: String,
    /// Where it is sent.
    pub url: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    /// Deliveries tried.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Written to the outbox (RFC 3339).
    pub created_at: Option<String>,
    /// The next try, while pending (RFC 3339).
    pub next_attempt_at: Option<String>,
    /// Delivered (RFC 3339).
    pub delivered_at: Option<String>,
}

/// Postbacks in each state.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct DeliveryCounts {
    /// Waiting for a (first or next) try.
    pub pending: i64,
    /// Answered 2xx.
    pub delivered: i64,
    /// Given up.
    pub failed: i64,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<Delivery>,
    /// Of every postback matching `call_id` and `target` (whatever `state` and `limit`).
    pub counts: DeliveryCounts,
}

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl From<PostbackRow> for Delivery {
    fn from(r: PostbackRow) -> Delivery {
        Delivery {
            next_attempt_at: (r.state == "pending").then(|| rfc3339(r.next_ms)).flatten(),
            created_at: rfc3339(r.created_ms),
            delivered_at: r.delivered_ms.and_then(rfc3339),
            id: r.id,
            call_id: r.call_id,
            target: r.target,
            event: r.event,
            url: r.url,
            state: r.state,
            attempts: r.attempts,
            last_error: r.last_error,
        }
    }
}

/// The postbacks' delivery state, newest first, with counts per state.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(WebhookParams),
    responses((status = 200, description = "Deliveries and counts", body = DeliveryList),
              (status = 400, description = "Bad parameter", body = ErrorBody),
              (status = 503, description = "The CDR database did not answer", body = ErrorBody)))]
pub async fn list(
    State(st): State<Arc<ApiState>>,
    q: Result<axum::extract::Query<WebhookParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "bad_parameter", m);
    let Ok(axum::extract::Query(p)) = q else {
        return bad("unknown or malformed query parameter");
    };
    if p.state
        .as_deref()
        .is_some_and(|s| !["pending", "delivered", "failed"].contains(&s))
    {
        return bad("`state` must be pending, delivered or failed");
    }
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return bad("`limit` must be from 1 to 1000");
    }
    let query = PostbackQuery {
        state: p.state,
        call_id: p.call_id,
        target: p.target,
        limit: i64::from(limit),
    };
    match tokio::time::timeout(Duration::from_secs(10), st.db.postbacks(&query)).await {
        Ok(Ok((rows, by_state))) => {
            let mut counts = DeliveryCounts::default();
            for (state, n) in by_state {
                match state.as_str() {
                    "pending" => counts.pending = n,
                    "delivered" => counts.delivered = n,
                    "failed" => counts.failed = n,
                    _ => {}
                }
            }
            Json(DeliveryList {
                deliveries: rows.into_iter().map(Delivery::from).collect(),
                counts,
            })
            .into_response()
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
