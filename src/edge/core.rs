//! [`EdgeCore`]: the sans-IO heart of the process.

use super::policy::{decide, Decision, Local};
use crate::counters::{Counter, Counters};
use crate::ids;
use bytes::Bytes;
use dce_sip::build::reason_phrase;
use dce_sip::transaction::{Event, Peer, State, TimerConfig, TransactionLayer, Transmit, TxId};
use dce_sip::{HeaderName, Message, MessageBuf, Method, ParseError, ParseFailure};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Parses what arrives, runs the transaction layer, answers at the edge.
pub struct EdgeCore {
    layer: TransactionLayer,
    local: Local,
    counters: Arc<Counters>,
    host: String,
    /// INVITE server transactions still waiting for a final response, with what is needed to
    /// answer them (CANCEL → 487). Filled by the call controller.
    pending_invites: HashMap<TxId, (Message, String)>,
    /// Stateless sends (answers to malformed requests), drained before the layer's.
    stateless: VecDeque<Transmit>,
}

impl EdgeCore {
    /// A core for a node whose own addresses are `local` and which advertises `host`.
    pub fn new(timers: TimerConfig, local: Local, host: String, counters: Arc<Counters>) -> Self {
        EdgeCore {
            layer: TransactionLayer::new(timers),
            local,
            counters,
            host,
            pending_invites: HashMap::new(),
            stateless: VecDeque::new(),
        }
    }

    /// The counters this core bumps.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Bytes of one datagram or framed stream message arrived from `from`.
    pub fn on_bytes(&mut self, bytes: Bytes, from: Peer, now: Instant) {
        match dce_sip::parse(bytes) {
            Ok(msg) => {
                self.counters.inc(if msg.is_request() {
                    Counter::RxRequest
                } else {
                    Counter::RxResponse
                });
                self.layer.on_message(msg, from, now);
            }
            Err(failure) => self.on_malformed(failure, from),
        }
        self.process(now);
    }

    /// Fire due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        self.process(now);
    }

    /// When [`EdgeCore::handle_timeout`] must run next.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.layer.poll_timeout()
    }

    /// Next bytes to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.stateless
            .pop_front()
            .or_else(|| self.layer.poll_transmit())
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
            Event::Request { tx, msg, from, via } => match decide(&msg, &self.local) {
                Decision::Respond {
                    code,
                    headers,
                    counter,
                } => {
                    self.counters.inc(counter);
                    tracing::debug!(from = %from.addr, method = %msg.method().map(|m| m.as_str()).unwrap_or(""), code, "answered at the edge");
                    let mut resp = msg.response(code, reason_phrase(code), &ids::tag(), Some(&via));
                    resp.headers.extend(headers);
                    self.respond(tx, &resp, now);
                }
                Decision::Cancel => self.on_cancel(tx, msg, via, now),
                Decision::Invite => {
                    // Call routing is not part of this build: refuse politely.
                    self.counters.inc(Counter::Invite403);
                    tracing::info!(from = %from.addr, call_id = %msg.call_id(), "INVITE refused: call routing not configured");
                    let resp = msg.response(403, reason_phrase(403), &ids::tag(), Some(&via));
                    self.respond(tx, &resp, now);
                }
            },
            Event::Ack { msg, from } => {
                self.counters.inc(Counter::DroppedStrayAck);
                tracing::debug!(from = %from.addr, call_id = %msg.call_id(), "ACK for no dialog dropped");
            }
            Event::Response { tx, msg } => {
                tracing::debug!(?tx, code = ?msg.code(), "response for a client transaction");
            }
            Event::StrayResponse { msg, from } => {
                self.counters.inc(Counter::DroppedStrayResponse);
                tracing::debug!(from = %from.addr, code = ?msg.code(), "response for no transaction dropped");
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
}
