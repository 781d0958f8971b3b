//! `GET /v1/calls/{id}/recording`: a stored call's recording, streamed as `audio/wav`.

use super::{error, ApiState};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// A stored call's recording: one stereo 8 kHz 16-bit WAV, the caller left and the buyer
/// right.
#[utoipa::path(get, path = "/v1/calls/{id}/recording", tag = "calls",
    params(("id" = String, Path, description = "DCE's call id (of a stored call)")),
    responses((status = 200, description = "The WAV file", content_type = "audio/wav", body = Vec<u8>),
              (status = 404, description = "No stored call with that id, or it was not recorded (or the recording was erased)", body = super::routes::ErrorBody),
              (status = 503, description = "The CDR database did not answer", body = super::routes::ErrorBody)))]
pub async fn get(State(st): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let stored = match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        st.db.recording_of(&id),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "recording lookup failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database",
                "the CDR database did not answer",
            );
        }
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database",
                "the CDR database did not answer in time",
            )
        }
    };
    let Some(stored) = stored else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stored call `{id}`"),
        );
    };
    let Some(path) = stored.as_ref().and_then(|s| s.path.clone()) else {
        let why = stored.and_then(|s| s.skipped).map_or_else(
            || "it was not recorded".to_owned(),
            |s| format!("it was not recorded ({s})"),
        );
        return error(
            StatusCode::NOT_FOUND,
            "not_recorded",
            format!("call `{id}`: {why}"),
        );
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(call = %id, path = %path, error = %e, "recording not readable");
            return error(
                StatusCode::NOT_FOUND,
                "not_recorded",
                format!("call `{id}`: its recording is gone"),
            );
        }
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    // 64 KiB at a time: an hour's recording is 115 MB
    let body = futures_util::stream::unfold(Some(file), |f| async move {
        let mut f = f?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut r = axum::body::Body::from_stream(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("audio/wav"),
    );
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    r
}
