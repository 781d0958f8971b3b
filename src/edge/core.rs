//! [`EdgeCore`]: the sans-IO heart of the process.

use super::policy::{decide, Decision, Local};
use super::stateless::Edge;
use crate::call::Controller;
use crate::counters::{Counter, Counters};
use crate::ids;
use bytes::Bytes;
use dce_sip::build::reason_phrase;
use dce_sip::transaction::{Event, Peer, TimerConfig, TransactionLayer, Transmit, TxId};
use dce_sip::{HeaderName, Message, MessageBuf, Method, ParseError, ParseFailure};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Parses what arrives, runs the transaction layer, answers at the edge.
pub struct EdgeCore {
    layer: TransactionLayer,
    local: Local,
    counters: Arc<Counters>,
    host: String,
    calls: Controller,
    /// Stateless sends (answers to malformed requests), drained before the layer's.
    stateless: VecDeque<Transmit>,
}

impl EdgeCore {
    /// A core for a node whose own addresses are `local` and which advertises `host`; INVITEs
    /// that pass the edge go to `calls`.
    pub fn new(
        timers: TimerConfig,
        local: Local,
        host: String,
        counters: Arc<Counters>,
        calls: Controller,
    ) -> Self {
        EdgeCore {
            layer: TransactionLayer::new(timers),
            local,
            counters,
            host,
            calls,
            stateless: VecDeque::new(),
        }
    }

    /// The call controller.
    pub fn calls(&mut self) -> &mut Controller {
        &mut self.calls
    }

    /// A fleet-wide compliance check to run (Redis), for the driver.
    pub fn poll_remote_check(&mut self) -> Option<crate::call::RemoteCheck> {
        self.calls.poll_remote_check()
    }

    /// The result of a fleet-wide compliance check.
    pub fn on_remote_verdict(
        &mut self,
        token: u64,
        result: crate::call::RemoteResult,
        now: Instant,
    ) {
        self.calls
            .on_remote_verdict(&mut self.layer, token, result, now);
        self.process(now);
    }

    /// The media relay reported something.
    pub fn on_media_event(&mut self, ev: dce_media::MediaEvent, now: Instant) {
        self.calls.on_media_event(&mut self.layer, ev, now);
        self.process(now);
    }

    /// Stop taking calls and end the ones in progress (shutdown).
    pub fn shutdown(&mut self, now: Instant) {
        self.calls.stop_accepting();
        self.calls.end_all(&mut self.layer, now);
        self.process(now);
    }

    /// The counters this core bumps.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Bytes of one datagram or framed stream message arrived from `from`.
    pub fn on_bytes(&mut self, bytes: Bytes, from: Peer, now: Instant) {
        self.counters.m.sip("in", &bytes[..bytes.len().min(40)]);
        match dce_sip::parse(bytes) {
            Ok(msg) => {
                self.counters.inc(if msg.is_request() {
                    Counter::RxRequest
                } else {
                    Counter::RxResponse
                });
                // Stateless answers (edge/stateless.rs): no transaction for these.
                match super::stateless::at_edge(&msg, from, &self.local) {
                    Edge::Answer(t, counter) => {
                        self.counters.inc(counter);
                        self.stateless.push_back(t);
                    }
                    Edge::AbsorbedAck => self.counters.inc(Counter::AckToStateless),
                    Edge::Pass => self.layer.on_message(msg, from, now),
                }
            }
            Err(failure) => self.on_malformed(failure, from),
        }
        self.process(now);
    }

    /// Fire due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        self.calls.handle_timeout(&mut self.layer, now);
        self.process(now);
    }

    /// When [`EdgeCore::handle_timeout`] must run next.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.layer.poll_timeout(), self.calls.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Next bytes to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self
            .stateless
            .pop_front()
            .or_else(|| self.calls.poll_transmit())
            .or_else(|| self.layer.poll_transmit())?;
        self.counters
            .m
            .sip("out", &t.bytes[..t.bytes.len().min(40)]);
        Some(t)
    }

    /// End call `id` on an operator's request (BYE, or a final response while it rings).
    pub fn hang_up(&mut self, id: &str, now: Instant) -> bool {
        let found = self.calls.hang_up(&mut self.layer, id, now);
        self.process(now);
        found
    }

    fn process(&mut self, now: Instant) {
        while let Some(ev) = self.layer.poll_event() {
            self.on_event(ev, now);
        }
    }

    /// A message that did not parse: 400 (or 505) when it is a request with a usable top
    /// Via, otherwise dropped. Either way counted. The answer is stateless: a retransmission
    /// of a malformed request is malformed again and gets the same answer.
    fn on_malformed(&mut self, failure: ParseFailure, from: Peer) {
        let ParseFailure { error, raw } = failure;
        let Some(raw) = raw else {
            self.counters.inc(Counter::DroppedGarbage);
            tracing::debug!(from = %from.addr, %error, "dropped unparseable bytes");
            return;
        };
        if !raw.is_request() {
            self.counters.inc(Counter::DroppedMalformedResponse);
            tracing::debug!(from = %from.addr, %error, "dropped malformed response");
            return;
        }
        let (via, complete) = match raw.reply_via() {
            Some(v) if raw.method() != Some(&Method::Ack) => v,
            _ => {
                self.counters.inc(Counter::DroppedUnaddressable);
                tracing::info!(from = %from.addr, %error, "dropped malformed request: no usable Via to answer");
                return;
            }
        };
        let (code, counter) = match error {
            ParseError::Version => (505, Counter::Version505),
            _ => (400, Counter::Malformed400),
        };
        self.counters.inc(counter);
        tracing::info!(from = %from.addr, %error, code, "rejected malformed request");
        // A Via whose parameters are broken is echoed as it came; only a sound one is annotated.
        let annotated =
            complete.then(|| via.annotated(&from.addr.ip().to_string(), from.addr.port()));
        let mut resp = raw.response(code, reason_phrase(code), &ids::tag(), annotated.as_deref());
        resp.push(
            HeaderName::Other("Warning".into()),
            format!("399 {} \"{}\"", self.host, error),
        );
        self.stateless.push_back(Transmit {
            to: from.response_target(&via),
            bytes: resp.print(),
        });
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Request { tx, msg, from, via } => {
                if msg.method() != Some(&Method::Cancel) && self.calls.owns_dialog(&msg) {
                    self.calls.on_in_dialog(&mut self.layer, tx, msg, via, now);
                    return;
                }
                match decide(&msg, &self.local) {
                    Decision::Respond {
                        code,
                        headers,
                        counter,
                    } => {
                        self.counters.inc(counter);
                        tracing::debug!(from = %from.addr, method = %msg.method().map(|m| m.as_str()).unwrap_or(""), code, "answered at the edge");
                        let mut resp =
                            msg.response(code, reason_phrase(code), &ids::tag(), Some(&via));
                        resp.headers.extend(headers);
                        self.respond(tx, &resp, now);
                    }
                    Decision::Cancel => self.on_cancel(tx, msg, via, now),
                    Decision::Invite => {
                        self.calls
                            .on_invite(&mut self.layer, tx, msg, from, via, now)
                    }
                }
            }
            Event::Ack { msg, from } => {
                if !self.calls.on_ack(&msg) {
                    self.counters.inc(Counter::DroppedStrayAck);
                    tracing::debug!(from = %from.addr, call_id = %msg.call_id(), "ACK for no dialog dropped");
                }
            }
            Event::Response { tx, msg } => self.calls.on_response(&mut self.layer, tx, msg, now),
            Event::StrayResponse { msg, from } => {
                if !self.calls.on_stray_response(&msg) {
                    self.counters.inc(Counter::DroppedStrayResponse);
                    tracing::debug!(from = %from.addr, code = ?msg.code(), "response for no transaction dropped");
                }
            }
            Event::Timeout { tx } => self.calls.on_tx_timeout(&mut self.layer, tx, now),
        }
    }

    /// CANCEL (RFC 3261 §9.2): 200 when it matches a transaction, else 481; the call
    /// controller then ends a call still ringing (487 to its INVITE).
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
            self.calls.on_cancel(&mut self.layer, inv, now);
        }
    }

    fn respond(&mut self, tx: TxId, resp: &MessageBuf, now: Instant) {
        if let Err(e) = self.layer.respond(tx, resp, now) {
            tracing::warn!(?tx, error = %e, "response not sent");
        }
    }
}
