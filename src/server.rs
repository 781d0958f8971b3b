//! The running process: binds the listeners, starts the socket drivers, and runs the core task
//! that owns the transaction layer and answers at the edge.
//!
//! One core task holds all SIP state; socket tasks only move bytes. The core reads the clock
//! (`Instant::now()`) and passes it to the sans-IO layer, and sleeps until the layer's next
//! timer.

use crate::config::{Config, ListenProto};
use crate::counters::{Counter, Counters};
use crate::edge::{self, Decision, Local};
use crate::ids;
use crate::transport::tcp::{accept_loop, TcpLimits};
use crate::transport::{udp, Inbound};
use anyhow::Context;
use bytes::Bytes;
use dce_sip::build::reason_phrase;
use dce_sip::transaction::{Event, Peer, State, TimerConfig, TransactionLayer, Transport, TxId};
use dce_sip::{HeaderName, Message, MessageBuf, Method, ParseFailure};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

/// Run DCE until `shutdown` resolves. Returns the counters for the final report.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Arc<Counters>> {
    let counters = Arc::new(Counters::default());
    let (core_tx, core_rx) = mpsc::channel::<Inbound>(16_384);
    let mut udp_sockets = Vec::new();
    let mut local_hosts = vec![config.sip.advertised_host.to_ascii_lowercase()];
    let limits = TcpLimits {
        max_message: config.sip.max_message_bytes,
        idle: config.sip.tcp_idle_timeout,
        per_ip: config.sip.tcp_max_connections_per_ip,
        total: config.sip.tcp_max_connections,
    };
    for l in &config.sip.listen {
        local_hosts.push(l.addr.ip().to_string());
        match l.proto {
            ListenProto::Udp => {
                let sock = Arc::new(
                    UdpSocket::bind(l.addr)
                        .await
                        .with_context(|| format!("cannot listen on {l}"))?,
                );
                let index = udp_sockets.len() as u64;
                tokio::spawn(udp::receive_loop(
                    sock.clone(),
                    index,
                    config.sip.max_message_bytes,
                    core_tx.clone(),
                    counters.clone(),
                ));
                udp_sockets.push(sock);
            }
            ListenProto::Tcp => {
                let listener = TcpListener::bind(l.addr)
                    .await
                    .with_context(|| format!("cannot listen on {l}"))?;
                tokio::spawn(accept_loop(
                    listener,
                    limits,
                    core_tx.clone(),
                    counters.clone(),
                ));
            }
        }
        tracing::info!(listen = %l, "listening");
    }
    drop(core_tx);
    let mut core = Core {
        layer: TransactionLayer::new(TimerConfig {
            t1: config.sip.t1,
            ..TimerConfig::default()
        }),
        local: Local { hosts: local_hosts },
        counters: counters.clone(),
        udp: udp_sockets,
        tcp: HashMap::new(),
        pending_invites: HashMap::new(),
        host: config.sip.advertised_host.clone(),
    };
    tracing::info!(node = %config.node.id, "DCE edge running");
    tokio::select! {
        _ = core.run(core_rx) => {}
        _ = shutdown => tracing::info!("shutting down"),
    }
    Ok(counters)
}

struct Core {
    layer: TransactionLayer,
    local: Local,
    counters: Arc<Counters>,
    udp: Vec<Arc<UdpSocket>>,
    tcp: HashMap<u64, mpsc::Sender<Bytes>>,
    /// INVITE server transactions still waiting for a final response, with what is needed to
    /// answer them (for CANCEL → 487).
    pending_invites: HashMap<TxId, (Message, String)>,
    host: String,
}

impl Core {
    async fn run(&mut self, mut rx: mpsc::Receiver<Inbound>) {
        let mut report_at = Instant::now() + Duration::from_secs(60);
        let mut last_report = String::new();
        loop {
            let wake = self
                .layer
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let wake = wake.min(report_at);
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => self.on_inbound(item),
                    None => return,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    let now = Instant::now();
                    self.layer.handle_timeout(now);
                    if now >= report_at {
                        let r = self.counters.report();
                        if r != last_report {
                            tracing::info!(counters = %r, "edge counters");
                            last_report = r;
                        }
                        report_at = now + Duration::from_secs(60);
                    }
                }
            }
            self.drain().await;
        }
    }

    fn on_inbound(&mut self, item: Inbound) {
        match item {
            Inbound::TcpOpened { conn, tx } => {
                self.tcp.insert(conn, tx);
            }
            Inbound::TcpClosed { conn } => {
                self.tcp.remove(&conn);
            }
            Inbound::Message { bytes, from } => match dce_sip::parse(bytes) {
                Ok(msg) => {
                    self.counters.inc(if msg.is_request() {
                        Counter::RxRequest
                    } else {
                        Counter::RxResponse
                    });
                    self.layer.on_message(msg, from, Instant::now());
                }
                Err(failure) => self.on_malformed(failure, from),
            },
        }
    }

    /// A message that did not parse: 400 (or 505) when it is a request with a usable top
    /// Via, otherwise dropped. Either way counted. Never a transaction: the response is
    /// stateless, as a retransmission of a malformed request is malformed again.
    fn on_malformed(&mut self, failure: ParseFailure, from: Peer) {
        let ParseFailure { error, raw } = failure;
        let Some(raw) = raw else {
            self.counters.inc(Counter::DroppedGarbage);
            tracing::debug!(%from.addr, %error, "dropped unparseable bytes");
            return;
        };
        if !raw.is_request() {
            self.counters.inc(Counter::DroppedMalformedResponse);
            tracing::debug!(%from.addr, %error, "dropped malformed response");
            return;
        }
        let via = match raw.top_via() {
            Some(v) if raw.method() != Some(&Method::Ack) => v,
            _ => {
                self.counters.inc(Counter::DroppedUnaddressable);
                tracing::info!(%from.addr, %error, "dropped malformed request: no usable Via to answer");
                return;
            }
        };
        let (code, counter) = match error {
            dce_sip::ParseError::Version => (505, Counter::Version505),
            _ => (400, Counter::Malformed400),
        };
        self.counters.inc(counter);
        tracing::info!(%from.addr, %error, code, "rejected malformed request");
        let annotated = via.annotated(&from.addr.ip().to_string(), from.addr.port());
        let mut resp = raw.response(code, reason_phrase(code), &ids::tag(), Some(&annotated));
        resp.push(
            HeaderName::Other("Warning".into()),
            format!("399 {} \"{}\"", self.host, error),
        );
        let to = from.response_target(&via);
        self.send_now(to, resp.print());
    }

    async fn drain(&mut self) {
        while let Some(ev) = self.layer.poll_event() {
            self.on_event(ev);
        }
        while let Some(t) = self.layer.poll_transmit() {
            self.send(t.to, t.bytes).await;
        }
    }

    fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Request { tx, msg, from, via } => match edge::decide(&msg, &self.local) {
                Decision::Respond {
                    code,
                    headers,
                    counter,
                } => {
                    self.counters.inc(counter);
                    tracing::debug!(%from.addr, method = %msg.method().map(|m| m.as_str()).unwrap_or(""), code, "answered at the edge");
                    let mut resp = msg.response(code, reason_phrase(code), &ids::tag(), Some(&via));
                    resp.headers.extend(headers);
                    self.respond(tx, &resp, now);
                }
                Decision::Cancel => self.on_cancel(tx, msg, via, now),
                Decision::Invite => {
                    // Call routing is not configured in this build: refuse politely.
                    self.counters.inc(Counter::Invite403);
                    tracing::info!(%from.addr, call_id = %msg.call_id(), "INVITE refused: call routing not configured");
                    let resp = msg.response(403, reason_phrase(403), &ids::tag(), Some(&via));
                    self.respond(tx, &resp, now);
                }
            },
            Event::Ack { msg, from } => {
                self.counters.inc(Counter::DroppedStrayAck);
                tracing::debug!(%from.addr, call_id = %msg.call_id(), "ACK for no dialog dropped");
            }
            Event::Response { tx, msg } => {
                tracing::debug!(?tx, code = ?msg.code(), "response for a client transaction");
            }
            Event::StrayResponse { msg, from } => {
                self.counters.inc(Counter::DroppedStrayResponse);
                tracing::debug!(%from.addr, code = ?msg.code(), "response for no transaction dropped");
            }
            Event::Timeout { tx } => {
                self.pending_invites.remove(&tx);
                tracing::info!(?tx, "transaction timed out");
            }
        }
    }

    /// CANCEL (RFC 3261 §9.2): 200 when it matches a transaction, and 487 to the INVITE if
    /// that is still waiting for its final response; 481 otherwise.
    fn on_cancel(&mut self, tx: TxId, cancel: Message, via: String, now: Instant) {
        let invite = self.layer.invite_for_cancel(&cancel);
        let code = if invite.is_some() { 200 } else { 481 };
        self.counters.inc(if code == 200 {
            Counter::Cancel200
        } else {
            Counter::NoDialog481
        });
        let resp = cancel.response(code, reason_phrase(code), &ids::tag(), Some(&via));
        self.respond(tx, &resp, now);
        if let Some(inv) = invite {
            if self.layer.state(inv) == Some(State::Proceeding) {
                if let Some((msg, via)) = self.pending_invites.remove(&inv) {
                    let resp = msg.response(487, reason_phrase(487), &ids::tag(), Some(&via));
                    self.respond(inv, &resp, now);
                }
            }
        }
    }

    fn respond(&mut self, tx: TxId, resp: &MessageBuf, now: Instant) {
        if let Err(e) = self.layer.respond(tx, resp, now) {
            tracing::warn!(?tx, error = %e, "response not sent");
        }
    }

    /// Send outside of `drain` (stateless responses): queue through the same path.
    fn send_now(&mut self, to: Peer, bytes: Bytes) {
        match to.transport {
            Transport::Udp => {
                let sock = self.udp_for(&to);
                if let Some(sock) = sock {
                    if let Err(e) = sock.try_send_to(&bytes, to.addr) {
                        self.counters.inc(Counter::UdpSendFailed);
                        tracing::debug!(to = %to.addr, error = %e, "udp send failed");
                    }
                }
            }
            Transport::Tcp => self.send_tcp(&to, bytes),
        }
    }

    fn udp_for(&self, to: &Peer) -> Option<Arc<UdpSocket>> {
        let idx = to.conn.unwrap_or(0) as usize;
        let family_ok = |s: &Arc<UdpSocket>| {
            s.local_addr()
                .map(|a| a.is_ipv4() == to.addr.is_ipv4())
                .unwrap_or(false)
        };
        self.udp
            .get(idx)
            .filter(|s| family_ok(s))
            .or_else(|| self.udp.iter().find(|s| family_ok(s)))
            .cloned()
    }

    fn send_tcp(&mut self, to: &Peer, bytes: Bytes) {
        let sent = to
            .conn
            .and_then(|c| self.tcp.get(&c))
            .map(|tx| tx.try_send(bytes).is_ok())
            .unwrap_or(false);
        if !sent {
            self.counters.inc(Counter::TcpSendFailed);
            tracing::info!(to = %to.addr, "TCP connection gone or backed up; message dropped");
        }
    }

    async fn send(&mut self, to: Peer, bytes: Bytes) {
        match to.transport {
            Transport::Udp => {
                if let Some(sock) = self.udp_for(&to) {
                    if let Err(e) = sock.send_to(&bytes, to.addr).await {
                        self.counters.inc(Counter::UdpSendFailed);
                        tracing::debug!(to = %to.addr, error = %e, "udp send failed");
                    }
                }
            }
            Transport::Tcp => self.send_tcp(&to, bytes),
        }
    }
}
