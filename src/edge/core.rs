//! [`EdgeCore`]: the sans-IO heart of the process, behind one input/output contract (as
//! str0m's): feed an [`Input`] (bytes from the network, a lookup's answer, a media report)
//! or a timeout, then drain [`EdgeCore::poll_output`] (bytes to send, CDRs, lookups to run)
//! and sleep until [`EdgeCore::poll_timeout`]. No clock, no RNG, no sockets inside: the
//! driver passes `now` and gave the controller its wall clock and id generator.

use super::policy::{decide, Decision, Local};
use super::stateless::Edge;
use crate::call::{Answer, Controller, LookupId, Output};
use crate::counters::{Counter, Counters};
use bytes::Bytes;
use dce_sip::build::reason_phrase;
use dce_sip::transaction::{Event, Peer, TimerConfig, TransactionLayer, Transmit, TxId};
use dce_sip::{HeaderName, Message, MessageBuf, Method, ParseError, ParseFailure};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// What the driver feeds the core.
#[derive(Debug)]
pub enum Input {
    /// One datagram, or one framed stream message, from `from`.
    Bytes {
        /// The bytes.
        bytes: Bytes,
        /// Who sent them.
        from: Peer,
        /// When they reached DCE's socket (the kernel's receive time where the driver has it).
        at: Instant,
    },
    /// The answer to a lookup the core asked for ([`Output::Lookup`]).
    Lookup {
        /// The request's id.
        id: LookupId,
        /// What was found.
        answer: Answer,
    },
    /// The media relay reported something.
    Media(dce_media::MediaEvent),
    /// Stop taking calls and end the ones in progress (shutdown).
    Shutdown,
    /// A buyer address cannot be reached (a TCP connect failed, or is in its backoff).
    Unreachable {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// A publisher's bid request (`POST /v1/bid`); answered by `Output::Quoted`.
    Quote(crate::call::QuoteRequest),
}

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

    /// Transactions the layer holds (leak checks).
    pub fn transactions(&self) -> usize {
        self.layer.len()
    }

    /// The live transactions, for a leak report.
    pub fn transactions_live(
        &self,
    ) -> Vec<(
        dce_sip::transaction::TxId,
        dce_sip::transaction::Kind,
        dce_sip::transaction::State,
    )> {
        self.layer.live()
    }

    /// Feed one input.
    pub fn handle_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Bytes { bytes, from, at } => {
                self.calls.set_received_at(Some(at));
                self.on_bytes(bytes, from, now);
            }
            Input::Lookup { id, answer } => {
                self.calls.on_lookup(&mut self.layer, id, answer, now);
            }
            Input::Media(ev) => self.calls.on_media_event(&mut self.layer, ev, now),
            Input::Shutdown => {
                self.calls.stop_accepting();
                self.calls.end_all(&mut self.layer, now);
            }
            Input::Unreachable { addr } => self.calls.on_unreachable(&mut self.layer, addr, now),
            Input::Quote(req) => self.calls.on_quote(req, now),
        }
        self.process(now);
        self.calls.set_received_at(None);
    }

    /// The counters this core bumps.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Bytes of one datagram or framed stream message arrived from `from`.
    fn on_bytes(&mut self, bytes: Bytes, from: Peer, now: Instant) {
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

    /// Next output: bytes to send, a CDR, a lookup to run.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = match self.stateless.pop_front() {
            Some(t) => Output::Transmit(t),
            None => match self.calls.poll_output() {
                Some(o) => o,
                None => Output::Transmit(self.layer.poll_transmit()?),
            },
        };
        if let Output::Transmit(t) = &out {
            self.counters
                .m
                .sip("out", &t.bytes[..t.bytes.len().min(40)]);
        }
        Some(out)
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
        let tag = self.calls.ids().tag();
        let mut resp = raw.response(code, reason_phrase(code), &tag, annotated.as_deref());
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
                    self.calls
                        .on_in_dialog(&mut self.layer, tx, msg, from, via, now);
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
                        let tag = self.calls.ids().tag();
                        let mut resp = msg.response(code, reason_phrase(code), &tag, Some(&via));
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
                if !self.calls.on_ack(&msg, &from) {
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
        let tag = self.calls.ids().tag();
        let resp = cancel.response(code, reason_phrase(code), &tag, Some(&via));
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
