//! The postback sender (issue #15 item 5): works off the outbox the CDR writer fills
//! (`postbacks` table, written in each call's CDR transaction), off the call path. Every
//! second it takes the due rows, POSTs each signed with its webhook's current secret
//! (`crate::webhooks`), and records the result: delivered on a 2xx, else tried again after
//! `webhooks::backoff` (10 s doubling to an hour), given up 24 h after the call was stored.
//! A `kill -9` loses nothing: an undelivered row stays `pending` and the next process sends it
//! (a delivery cut between the receiver's 2xx and the update is sent again with the same
//! `Idempotency-Key`).

use super::db::{Db, DuePostback, PostbackResult};
use crate::webhooks::{backoff, Webhooks, GIVE_UP_AFTER};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long one delivery may take.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);
/// How often the outbox is looked at.
const EVERY: Duration = Duration::from_secs(1);

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Run the sender until the process ends (`hooks`: the running config's webhooks).
pub async fn run(db: Db, hooks: Arc<RwLock<Webhooks>>) {
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "postback sender cannot start: no HTTP client");
            return;
        }
    };
    loop {
        tokio::time::sleep(EVERY).await;
        let now = chrono::Utc::now().timestamp_millis();
        let due = match db.due_postbacks(now, 100).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "postbacks: outbox not readable (database away?)");
                continue;
            }
        };
        for p in due {
            let result = deliver(&client, &hooks, &p).await;
            match &result {
                PostbackResult::Delivered { .. } => {
                    tracing::info!(postback = %p.id, url = %p.url, attempts = p.attempts + 1, "postback delivered")
                }
                PostbackResult::Retry { error, next_ms } => {
                    tracing::info!(postback = %p.id, url = %p.url, error = %error, retry_in_s = (next_ms - now) / 1000, "postback failed; will retry")
                }
                PostbackResult::Failed { error, .. } => {
                    tracing::warn!(postback = %p.id, url = %p.url, error = %error, "postback given up")
                }
            }
            if let Err(e) = db.postback_result(&p.id, &result).await {
                tracing::warn!(postback = %p.id, error = %e, "postback result not recorded; it will be sent again");
            }
        }
    }
}

fn client() -> Result<hyper_util::client::legacy::Client<Https, Full<Bytes>>, String> {
    let tls = crate::transport::pki::client_config(None)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .build();
    Ok(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https))
}

/// One delivery of `p` and what came of it.
async fn deliver(
    client: &hyper_util::client::legacy::Client<Https, Full<Bytes>>,
    hooks: &RwLock<Webhooks>,
    p: &DuePostback,
) -> PostbackResult {
    let now = chrono::Utc::now();
    let now_ms = now.timestamp_millis();
    let outcome = match exchange(client, hooks, p, now.timestamp()).await {
        Ok(()) => return PostbackResult::Delivered { at_ms: now_ms },
        Err(e) => e,
    };
    let attempts = u32::try_from(p.attempts).unwrap_or(u32::MAX);
    let next_ms = now_ms + backoff(attempts).as_millis() as i64;
    if outcome.permanent || next_ms - p.created_ms > GIVE_UP_AFTER.as_millis() as i64 {
        PostbackResult::Failed {
            at_ms: now_ms,
            error: outcome.error,
        }
    } else {
        PostbackResult::Retry {
            next_ms,
            error: outcome.error,
        }
    }
}

struct Failure {
    error: String,
    /// Not worth trying again (the webhook is gone from the config).
    permanent: bool,
}

async fn exchange(
    client: &hyper_util::client::legacy::Client<Https, Full<Bytes>>,
    hooks: &RwLock<Webhooks>,
    p: &DuePostback,
    t: i64,
) -> Result<(), Failure> {
    let signature = {
        let hooks = hooks.read().unwrap_or_else(|e| e.into_inner());
        match hooks.get(&p.target) {
            Some(h) => h.signature(t, &p.body),
            None => {
                return Err(Failure {
                    error: format!("{} has no webhook in the running config", p.target),
                    permanent: true,
                })
            }
        }
    };
    let req = hyper::Request::post(&p.url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "dce-postback")
        .header("X-DCE-Signature", signature)
        .header("Idempotency-Key", &p.id)
        .body(Full::new(Bytes::from(p.body.clone())))
        .map_err(|e| Failure {
            error: format!("bad request: {e}"),
            permanent: true,
        })?;
    match tokio::time::timeout(DELIVERY_DEADLINE, client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(Failure {
            error: format!("HTTP {}", resp.status().as_u16()),
            permanent: false,
        }),
        Ok(Err(e)) => Err(Failure {
            error: format!("{e}"),
            permanent: false,
        }),
        Err(_) => Err(Failure {
            error: format!("no answer within {DELIVERY_DEADLINE:?}"),
            permanent: false,
        }),
    }
}
