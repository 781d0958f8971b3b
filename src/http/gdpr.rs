//! `POST /v1/gdpr/erase`: erase one number from every copy this node keeps (database, spool,
//! JSON-lines file, and the CDRs it still has queued, which are anonymised on write).

use super::routes::ErrorBody;
use super::{error, ApiState};
use crate::store::gdpr::{Erased, GdprError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// `POST /v1/gdpr/erase` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// The number to erase: 8 to 15 digits, optionally after `+` (E.164; a 10-digit NANP
    /// number is taken as `+1` and those ten digits).
    #[schema(pattern = r"^\+?[0-9]{8,15}$")]
    pub number: String,
}

/// Is `n` what the document's pattern allows?
fn well_formed(n: &str) -> bool {
    let digits = n.strip_prefix('+').unwrap_or(n);
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Replace the number by its pseudonym in every call record, the spool and the JSON-lines
/// file, and anonymise it in every CDR written from now on (also after a restart). The number
/// is kept only as its keyed hash; logs name the pseudonym only. Idempotent: a retry after a
/// `503` finishes what the first call could not.
#[utoipa::path(post, path = "/v1/gdpr/erase", tag = "gdpr",
    request_body = EraseRequest,
    responses((status = 200, description = "Erased from every copy", body = Erased),
              (status = 400, description = "Malformed body or number", body = ErrorBody),
              (status = 503, description = "Recorded (new CDRs are anonymised), but a copy could not be changed yet (e.g. the database is down): retry", body = ErrorBody)))]
pub async fn erase(State(st): State<Arc<ApiState>>, body: axum::body::Bytes) -> Response {
    let req = match serde_json::from_slice::<EraseRequest>(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("expected {{\"number\": \"<E.164 digits>\"}}: {e}"),
            )
        }
    };
    if !well_formed(&req.number) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_number",
            "`number` must be 8 to 15 digits, optionally after +",
        );
    }
    let Some(gdpr) = &st.gdpr else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_available",
            "this node has no CDR writer",
        );
    };
    let spool = crate::store::Spool::new(&st.spool_dir);
    match gdpr.erase(&req.number, &st.db, &spool, None).await {
        Ok(done) => Json(done).into_response(),
        Err(e @ GdprError::Incomplete { .. }) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "erasure_incomplete",
            e.to_string(),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "erasure_failed",
            e.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_is_the_documented_pattern() {
        for ok in [
            "13105551234",
            "+13105551234",
            "12345678",
            "+123456789012345",
        ] {
            assert!(well_formed(ok), "{ok}");
        }
        for bad in [
            "",
            "+",
            "1234567",
            "1234567890123456",
            "+1 310 555 1234",
            "1310555123a",
            "++13105551234",
            "１２３４５６７８",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
