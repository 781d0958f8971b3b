//! `GET /v1/events`: live call events over a WebSocket, optionally filtered by campaign or
//! buyer. A client that falls [`crate::events::CAPACITY`] events behind, or does not take a
//! message within 5 s, is dropped (close code 1008 with the reason) — DCE never waits for it.

use super::{error, ApiState};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

/// Filters of the event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// Only events of this campaign.
    pub campaign: Option<String>,
    /// Only events concerning this buyer (as a bidder or the winner).
    pub buyer: Option<String>,
}

/// Upgrade to a WebSocket of JSON events, each with a `type`: `call.started`,
/// `auction.completed` (with the bids), `call.answered`, `call.completed`, `call.rejected`,
/// `bid.quoted` (a publisher's bid request answered), `buyer.down` / `buyer.up` (a trunk's
/// health changed), `buyer.paused` (a buyer paused itself: its calls rang out).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventFilter),
    responses((status = 101, description = "Switching to the WebSocket event stream"),
              (status = 400, description = "Bad filter", body = super::routes::ErrorBody),
              (status = 426, description = "Not a WebSocket upgrade request", body = super::routes::ErrorBody)))]
pub async fn events(
    State(st): State<Arc<ApiState>>,
    q: Result<Query<EventFilter>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(Query(filter)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_parameter",
            "unknown or malformed query parameter (campaign, buyer)",
        );
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return error(
                StatusCode::UPGRADE_REQUIRED,
                "websocket_required",
                format!("GET /v1/events is a WebSocket: {e}"),
            )
        }
    };
    let rx = st.events.subscribe();
    // The live page authenticates with a subprotocol; answer with the neutral one.
    ws.protocols(["dce.events"])
        .on_upgrade(move |socket| stream(socket, rx, filter))
}

async fn stream(
    mut socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<Arc<crate::events::Event>>,
    filter: EventFilter,
) {
    let (campaign, buyer) = (filter.campaign.as_deref(), filter.buyer.as_deref());
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if !ev.matches(campaign, buyer) {
                        continue;
                    }
                    let send = socket.send(Message::Text(ev.json.clone().into()));
                    match tokio::time::timeout(Duration::from_secs(5), send).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => {
                            tracing::info!("event client dropped: it did not read for 5 s");
                            return;
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "event client dropped: too slow");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        socket.send(Message::Close(Some(CloseFrame {
                            code: 1008,
                            reason: format!("too slow: {n} events missed").into(),
                        }))),
                    )
                    .await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                // Clients only listen; pings are answered by the library.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
