//! The bid-request client: one pooled HTTP/1.1 and HTTP/2 client (rustls, the system's roots)
//! per SIP worker, so keep-alive connections to each bidder are reused call after call. A ping
//! is bounded by its deadline, end to end (connect, TLS, request, answer body).

use super::{format, CallFacts, PingResult};
use bytes::Bytes;
use dce_routing::Rtb;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Instant;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The pooled client.
#[derive(Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<Https, Full<Bytes>>,
    /// Sent as `X-DCE-Loop` so an exchange that pings DCE back can tell.
    node_id: String,
}

/// One ping's result, with how long it took and the HTTP status when one came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinged {
    /// What it said.
    pub result: PingResult,
    /// Milliseconds from sending to the answer (or to giving up).
    pub latency_ms: u32,
    /// The same in microseconds (for the delay DCE adds on top of its bidders').
    pub latency_us: u32,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
}

impl Client {
    /// A client for node `node_id`.
    pub fn new(node_id: &str) -> Result<Client, String> {
        let tls = crate::transport::pki::client_config(None)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(https);
        Ok(Client {
            http,
            node_id: node_id.to_owned(),
        })
    }

    /// Ask `rtb`'s buyer for a bid on the call `facts` describes; give up at `deadline`.
    pub async fn ping(&self, rtb: &Rtb, facts: &CallFacts, deadline: Instant) -> Pinged {
        let t0 = Instant::now();
        let (r, latency_ms) = self.exchange(rtb, facts, deadline).await;
        let latency_us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let (result, status) = match r {
            Err(failed) => (failed, None),
            Ok((status, body)) => (format::answer(rtb.format, status, &body), Some(status)),
        };
        Pinged {
            result,
            latency_ms,
            latency_us,
            status,
        }
    }

    /// The HTTP exchange of a ping: the status and body of the answer, or why there is none
    /// (`Timeout`, `Error`, or `Malformed` for a body over the limit); and the milliseconds
    /// it took.
    pub async fn exchange(
        &self,
        rtb: &Rtb,
        facts: &CallFacts,
        deadline: Instant,
    ) -> (Result<(u16, Bytes), PingResult>, u32) {
        let t0 = Instant::now();
        let (body, content_type) = format::request(rtb.format, facts, rtb.expose_caller);
        let mut req = hyper::Request::post(rtb.url.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("DCE/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-DCE-Loop", facts.loop_header(&self.node_id));
        for (n, v) in &rtb.headers {
            req = req.header(n.as_str(), v.as_str());
        }
        let req = match req.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return (Err(PingResult::Error(format!("request: {e}"))), 0),
        };
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                if e.is_connect() {
                    "connect".to_owned()
                } else {
                    "transport".to_owned()
                }
            })?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), format::MAX_ANSWER_BYTES + 1)
                .collect()
                .await
                .map(|b| b.to_bytes());
            Ok::<_, String>((status, body))
        };
        let r = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), exchange).await;
        let latency_ms = t0.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
        let r = match r {
            Err(_) => Err(PingResult::Timeout),
            Ok(Err(e)) => Err(PingResult::Error(e)),
            Ok(Ok((status, Err(_)))) if (200..300).contains(&status) => Err(PingResult::Malformed(
                "answer body unreadable or too large".into(),
            )),
            Ok(Ok((status, body))) => Ok((status, body.unwrap_or_default())),
        };
        (r, latency_ms)
    }
}
