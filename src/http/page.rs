//! The live page at `/`: static files compiled into the binary, fed by `/v1/events`.
//! They hold no data, so they are served without a key; the page asks for a read key
//! (or takes it from `#key=…`) and sends it with its API calls and as a WebSocket subprotocol.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("static/index.html");
const APP: &str = include_str!("static/app.js");

/// `GET /`.
pub async fn index() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        INDEX,
    )
        .into_response()
}

/// `GET /app.js`.
pub async fn script() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        APP,
    )
        .into_response()
}
