//! In-dialog traffic: ACKs, BYE, and the requests mirrored between the legs of an answered
//! call (re-INVITE, UPDATE, INFO, OPTIONS …) with their responses relayed back; SDP on either
//! leg rewritten to DCE's relay; our 2xx retransmitted until ACKed.
//!
//! A request changes a call only when it comes from the leg's peer in the leg's dialog: the
//! router names the leg; a leg that is not part of the established dialog (a buyer that lost,
//! a leg of a call still ringing) gets `481`; a request with a leg's dialog ids from another
//! address gets `403`.

use super::controller::Controller;
use super::leg::{ack_for_2xx, push_body};
use super::router::{Relay, TxRole};
use super::state::{AState, Body, CallKey, CallState, LegRef, Pending2xx, Timer};
use super::vocab::{EndReason, HangupBy};
use crate::counters::Counter;
use dce_sip::build::reason_phrase;
use dce_sip::transaction::{Peer, TransactionLayer, Transmit, Transport, TxId};
use dce_sip::{HeaderName, Message, Method};
use std::time::{Duration, Instant};

/// Did `got` come from the leg whose peer is `expected`? UDP: the same address and port. TCP:
/// the same address (a peer may open a new connection).
pub(super) fn from_peer(expected: &Peer, got: &Peer) -> bool {
    match got.transport {
        Transport::Udp => got.addr == expected.addr,
        Transport::Tcp | Transport::Tls => got.addr.ip() == expected.addr.ip(),
    }
}

/// The retransmission and give-up timers of our 2xx on `slot` (0 carrier, 1 buyer).
pub(super) fn timers_2xx(slot: usize) -> (Timer, Timer) {
    if slot == 0 {
        (Timer::Retransmit2xxA, Timer::GiveUp2xxA)
    } else {
        (Timer::Retransmit2xxB, Timer::GiveUp2xxB)
    }
}

fn media_side(l: LegRef) -> dce_media::Side {
    match l {
        LegRef::A => dce_media::Side::A,
        LegRef::B(_) => dce_media::Side::B,
    }
}

/// The digit and duration (ms) of an INFO carrying one: `application/dtmf-relay`
/// (`Signal=5` and `Duration=160` lines; 250 ms without a duration) or `application/dtmf`
/// (the digit alone). `None` for anything else, or a signal that is no DTMF digit.
pub(super) fn dtmf_in_info(msg: &Message) -> Option<(char, u32)> {
    let ct = msg.content_type()?.trim().to_ascii_lowercase();
    let body = std::str::from_utf8(msg.body()).ok()?;
    let one = |s: &str| {
        let mut c = s.trim().chars();
        let d = c.next()?;
        (c.next().is_none() && dce_media::dtmf::event_of(d).is_some())
            .then(|| d.to_ascii_uppercase())
    };
    if ct.starts_with("application/dtmf-relay") {
        let mut signal = None;
        let mut duration = 250;
        for line in body.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "signal" => signal = one(v),
                "duration" => duration = v.trim().parse().ok().filter(|&d| d > 0)?,
                _ => {}
            }
        }
        return signal.map(|s| (s, duration));
    }
    if ct.starts_with("application/dtmf") {
        return one(body).map(|s| (s, 250));
    }
    None
}

impl Controller {
    /// The SDP-aware body to send on the other leg for `msg`, which came from leg `from`: SDP
    /// is rewritten to DCE's ports facing the other side (opening the call's media on the
    /// first SDP) and what `from` announced goes to the relay; other bodies pass as they are.
    /// `Err` when the SDP is unusable or no ports are left.
    pub(super) fn body_for_other_side(
        &mut self,
        key: CallKey,
        from: LegRef,
        msg: &Message,
    ) -> Result<Body, dce_media::MediaError> {
        if msg.body().is_empty() {
            return Ok(None);
        }
        let ct = msg.content_type().unwrap_or("application/sdp").to_owned();
        if !ct.to_ascii_lowercase().starts_with("application/sdp") {
            return Ok(Some((ct, msg.body().clone())));
        }
        let sdp = dce_media::Parsed::parse(msg.body())
            .map_err(|e| dce_media::MediaError::Bind(e.to_string()))?;
        let Some(call) = self.calls.get_mut(&key) else {
            return Ok(None);
        };
        let id = match call.media {
            Some(id) => id,
            None => {
                let id = self.media.open(sdp.streams().len())?;
                call.media = Some(id);
                self.by_media.insert(id, key);
                id
            }
        };
        let other = match from {
            LegRef::A => dce_media::Side::B,
            LegRef::B(_) => dce_media::Side::A,
        };
        let ports = self.media.ports(id, other);
        let (body, announced) = sdp
            .rewrite(self.settings.media_ip, &ports)
            .map_err(|e| dce_media::MediaError::Bind(e.to_string()))?;
        self.media.set_remote(id, media_side(from), &announced);
        Ok(Some(("application/sdp".into(), body)))
    }

    /// True when `msg` (a request, not ACK) names one of DCE's dialogs.
    pub fn owns_dialog(&self, msg: &Message) -> bool {
        msg.to()
            .tag()
            .is_some_and(|t| self.router.dialog(msg.call_id(), t).is_some())
    }

    /// The leg of an established dialog a request names, checked against its source:
    /// `Err(code)` to refuse it.
    fn established_leg(&self, msg: &Message, from: &Peer) -> Result<(CallKey, LegRef), u16> {
        let (key, leg) = msg
            .to()
            .tag()
            .and_then(|t| self.router.dialog(msg.call_id(), t))
            .ok_or(481u16)?;
        let call = self.calls.get(&key).ok_or(481u16)?;
        let peer = match leg {
            LegRef::A => &call.a.peer,
            LegRef::B(i) => {
                // Only the winner's dialog is established; a buyer that rang and lost has none.
                if call.state.winner() != Some(i) {
                    return Err(481);
                }
                &call.legs[i].peer
            }
        };
        if !from_peer(peer, from) {
            return Err(403);
        }
        Ok((key, leg))
    }

    /// A request inside one of our dialogs (BYE, re-INVITE, UPDATE, INFO, OPTIONS …).
    pub fn on_in_dialog(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        msg: Message,
        from: Peer,
        via: String,
        now: Instant,
    ) {
        let method = msg.method().cloned().unwrap_or(Method::Ack);
        let (key, leg) = match self.established_leg(&msg, &from) {
            Ok(kl) => kl,
            Err(code) => {
                let counter = if code == 403 {
                    Counter::ForeignInDialog403
                } else {
                    Counter::NotEstablished481
                };
                self.counters.inc(counter);
                tracing::info!(from = %from.addr, method = %method.as_str(), code, "in-dialog request refused: not from this dialog's peer or not an established leg");
                let resp = msg.response(code, reason_phrase(code), "", Some(&via));
                let _ = layer.respond(tx, &resp, now);
                return;
            }
        };
        let me = self.settings.me.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let state = call.state;
        let rerouting = call.rerouting();
        if method == Method::Bye {
            let resp = msg.response(200, "OK", "", Some(&via));
            let _ = layer.respond(tx, &resp, now);
            if rerouting {
                // The carrier of a rerouted call hangs up while the next buyer rings.
                tracing::debug!(call = %call.id, "carrier hung up while its call was rerouted");
                if let Some(li) = call.current() {
                    self.abandon(layer, key, li, now);
                }
                self.end(key, Some(HangupBy::Carrier), EndReason::CarrierHungUp, now);
                return;
            }
            if let (LegRef::B(w), Some(_)) = (leg, state.winner()) {
                if self.try_reroute(layer, key, w, now) {
                    return;
                }
            }
            let Some(call) = self.calls.get_mut(&key) else {
                return;
            };
            if leg == LegRef::A
                && matches!(
                    state,
                    CallState::Ringing { .. } | CallState::Checking | CallState::Leasing
                )
            {
                // RFC 3261 §15: the caller may BYE its early dialog; that ends the INVITE
                // (487) and the buyer ringing gets CANCEL.
                tracing::debug!(call = %call.id, "carrier BYE on the early dialog");
                self.carrier_gave_up(layer, key, state, now);
                return;
            }
            let (by, reason) = match leg {
                LegRef::A => (HangupBy::Carrier, EndReason::CarrierHungUp),
                LegRef::B(_) => (HangupBy::Buyer, EndReason::BuyerHungUp),
            };
            tracing::debug!(call = %call.id, by = by.as_str(), "hangup");
            // BYE the other leg.
            let branch = self.ids.branch();
            let other = match leg {
                LegRef::A => state.winner().map(|w| {
                    let auth = call
                        .snapshot
                        .buyer(call.entries[call.legs[w].entry].buyer)
                        .auth
                        .clone();
                    let l = &mut call.legs[w];
                    let auth = auth.map(|a| (a, l.nonce_count.clone()));
                    (l.dialog.request(&me, Method::Bye, &branch), l.peer, auth)
                }),
                LegRef::B(_) => Some((
                    call.a.dialog.request(&me, Method::Bye, &branch),
                    call.a.peer,
                    None,
                )),
            };
            if let Some((bye, peer, auth)) = other {
                // A buyer's trunk may challenge the BYE too (it gets one answer).
                self.send_buyer_bye(layer, key, bye, peer, auth, now);
            }
            self.end(key, Some(by), reason, now);
            return;
        }
        if rerouting && leg == LegRef::A {
            self.carrier_request_while_rerouting(layer, tx, &msg, &via, now);
            return;
        }
        // A DTMF digit in an INFO, towards a leg that negotiated telephone-event: DCE plays it
        // there as RFC 4733 (what that leg asked for) and answers the INFO itself.
        if let (Method::Info, Some(id), Some(_)) = (&method, call.media, state.winner()) {
            if let Some((digit, ms)) = dtmf_in_info(&msg) {
                let toward = match leg {
                    LegRef::A => dce_media::Side::B,
                    LegRef::B(_) => dce_media::Side::A,
                };
                if self.media.send_dtmf(id, toward, digit, ms) {
                    self.counters.inc(Counter::DtmfInfoConverted);
                    tracing::debug!(call = %self.call_id(key), "INFO digit played as RFC 4733");
                    let resp = msg.response(200, "OK", "", Some(&via));
                    let _ = layer.respond(tx, &resp, now);
                    return;
                }
            }
        }
        // Everything else is mirrored to the other leg once both are up.
        let branch = self.ids.branch();
        let mut auth = None;
        let mut nonce_count = Default::default();
        let target = match (leg, state.winner()) {
            (LegRef::A, Some(w)) => {
                auth = call
                    .snapshot
                    .buyer(call.entries[call.legs[w].entry].buyer)
                    .auth
                    .clone();
                let l = &mut call.legs[w];
                nonce_count = l.nonce_count.clone();
                Some((l.dialog.request(&me, method.clone(), &branch), l.peer))
            }
            (LegRef::B(_), Some(_)) => Some((
                call.a.dialog.request(&me, method.clone(), &branch),
                call.a.peer,
            )),
            _ => None,
        };
        let Some((mut req, peer)) = target else {
            self.counters.inc(Counter::NotEstablished481);
            let resp = msg.response(481, reason_phrase(481), "", Some(&via));
            let _ = layer.respond(tx, &resp, now);
            return;
        };
        match self.body_for_other_side(key, leg, &msg) {
            Ok(body) => push_body(&mut req, body),
            Err(e) => {
                tracing::info!(call = %self.call_id(key), error = %e, "in-dialog SDP cannot be anchored; 488");
                let resp = msg.response(488, reason_phrase(488), "", Some(&via));
                let _ = layer.respond(tx, &resp, now);
                return;
            }
        }
        if method == Method::Invite || method == Method::Update {
            req.push(HeaderName::Contact, me.contact_on(peer.transport));
        }
        for name in ["Info-Package", "Content-Disposition", "Event"] {
            if let Some(v) = msg.header(&HeaderName::Other(name.into())) {
                req.push(HeaderName::Other(name.into()), v);
            }
        }
        // Towards a buyer with credentials: a challenge to it can be answered.
        let retry = auth.map(|auth| {
            Box::new(super::router::Authed {
                req: req.clone(),
                peer,
                auth,
                nonce_count,
            })
        });
        match layer.send_request(req, peer, now) {
            Ok(ctx) => self.router.add_client(
                ctx,
                key,
                TxRole::Relay(Box::new(Relay {
                    server_tx: tx,
                    req: msg,
                    via,
                    from: leg,
                    retry,
                })),
            ),
            Err(_) => {
                let resp = msg.response(500, reason_phrase(500), "", Some(&via));
                let _ = layer.respond(tx, &resp, now);
            }
        }
    }

    /// A provisional on a mirrored request: relay it (with SDP rewritten) to the requester.
    pub(super) fn relay_provisional(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        tx: TxId,
        msg: &Message,
        now: Instant,
    ) {
        let code = msg.code().unwrap_or(0);
        let relay = match self.router.client(tx) {
            Some((_, TxRole::Relay(r))) => Some((
                r.server_tx,
                r.req.response(code, reason_phrase(code), "", Some(&r.via)),
                r.from,
            )),
            _ => None,
        };
        if let Some((server_tx, mut resp, from)) = relay {
            let other = match from {
                LegRef::A => self
                    .calls
                    .get(&key)
                    .and_then(|c| c.state.winner())
                    .map(LegRef::B)
                    .unwrap_or(LegRef::B(0)),
                LegRef::B(_) => LegRef::A,
            };
            push_body(
                &mut resp,
                self.body_for_other_side(key, other, msg).unwrap_or(None),
            );
            let _ = layer.respond(server_tx, &resp, now);
        }
    }

    /// The final response to a mirrored request: relay it to the requester. For a re-INVITE
    /// 2xx we ACK the other leg ourselves and keep our 2xx going until its ACK.
    pub(super) fn relay_response(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        r: &Relay,
        resp_in: &Message,
        now: Instant,
    ) {
        let code = resp_in.code().unwrap_or(500);
        let me = self.settings.me.clone();
        let mut resp = r.req.response(
            code,
            resp_in.reason().unwrap_or(reason_phrase(code)),
            "",
            Some(&r.via),
        );
        let reinvite_ok = (200..300).contains(&code) && r.req.method() == Some(&Method::Invite);
        if reinvite_ok {
            // The Contact on the transport of the leg the request came from.
            let t = self
                .calls
                .get(&key)
                .map_or(Transport::Udp, |c| match r.from {
                    LegRef::A => c.a.peer.transport,
                    LegRef::B(i) => c.legs.get(i).map_or(Transport::Udp, |l| l.peer.transport),
                });
            resp.push(HeaderName::Contact, me.contact_on(t));
        }
        let winner = self.calls.get(&key).and_then(|c| c.state.winner());
        let other = match r.from {
            LegRef::A => LegRef::B(winner.unwrap_or(0)),
            LegRef::B(_) => LegRef::A,
        };
        push_body(
            &mut resp,
            self.body_for_other_side(key, other, resp_in)
                .unwrap_or(None),
        );
        if reinvite_ok {
            let branch = self.ids.branch();
            if let Some(call) = self.calls.get_mut(&key) {
                // We are the UAC of the other leg: ACK its 2xx; and the UAS of this side: keep
                // our 2xx going until its ACK.
                let (other_dialog, other_peer) = match (r.from, winner) {
                    (LegRef::A, Some(w)) => (Some(call.legs[w].dialog.clone()), call.legs[w].peer),
                    (LegRef::A, None) => (None, call.a.peer),
                    (LegRef::B(_), _) => (Some(call.a.dialog.clone()), call.a.peer),
                };
                if let Some(d) = other_dialog {
                    self.out
                        .push_back(super::controller::Output::Transmit(Transmit {
                            to: other_peer,
                            bytes: ack_for_2xx(&me, &d, resp_in.cseq(), &branch).print(),
                        }));
                }
                let (slot, peer) = match r.from {
                    LegRef::A => (0, call.a.peer),
                    LegRef::B(_) => (1, winner.map(|w| call.legs[w].peer).unwrap_or(call.a.peer)),
                };
                self.keep_2xx(key, slot, resp.print(), peer, now);
            }
        }
        let _ = layer.respond(r.server_tx, &resp, now);
    }

    /// Keep our 2xx `bytes` on `slot` (0 carrier, 1 buyer) until its ACK: retransmitted from
    /// T1 over UDP, given up after 64·T1 (§13.3.1.4).
    pub(super) fn keep_2xx(
        &mut self,
        key: CallKey,
        slot: usize,
        bytes: bytes::Bytes,
        peer: Peer,
        now: Instant,
    ) {
        let t1 = self.settings.t1;
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.pending[slot] = Some(Pending2xx {
            bytes,
            peer,
            interval: t1,
        });
        let (rt, gu) = timers_2xx(slot);
        if !peer.reliable() {
            self.arm(key, rt, now + t1);
        }
        self.arm(key, gu, now + t1 * 64);
    }

    /// Retransmit our 2xx on `slot` (0 carrier, 1 buyer), T1 doubling up to T2 (4 s).
    pub(super) fn retransmit_2xx(
        &mut self,
        _layer: &mut TransactionLayer,
        key: CallKey,
        slot: usize,
        now: Instant,
    ) {
        let Some(p) = self
            .calls
            .get_mut(&key)
            .and_then(|c| c.pending[slot].as_mut())
        else {
            return;
        };
        let t = Transmit {
            to: p.peer,
            bytes: p.bytes.clone(),
        };
        p.interval = (p.interval * 2).min(Duration::from_secs(4));
        let next = now + p.interval;
        self.transmit(t);
        self.arm(key, timers_2xx(slot).0, next);
    }

    /// §13.3.1.4: no ACK for our 2xx within 64·T1 — the dialog is confirmed and then ended.
    pub(super) fn no_ack(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        slot: usize,
        now: Instant,
    ) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.pending[slot].take().is_none() {
            return;
        }
        tracing::warn!(call = %call.id, "no ACK for our 2xx; ending the call");
        self.disarm(key, timers_2xx(slot).0);
        self.hang_up_both(layer, key, EndReason::NoAck, now);
    }

    /// An ACK outside any transaction: for one of our 2xx? Only from the leg's peer.
    pub fn on_ack(&mut self, msg: &Message, from: &Peer) -> bool {
        let Some((key, leg)) = msg
            .to()
            .tag()
            .and_then(|t| self.router.dialog(msg.call_id(), t))
        else {
            return false;
        };
        let me = self.settings.me.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        let (peer, slot) = match leg {
            LegRef::A => (call.a.peer, 0),
            LegRef::B(i) if call.state.winner() == Some(i) => (call.legs[i].peer, 1),
            LegRef::B(_) => return false,
        };
        if !from_peer(&peer, from) {
            self.counters.inc(Counter::ForeignInDialog403);
            tracing::info!(call = %call.id, from = %from.addr, "ACK from outside the dialog's peer dropped");
            return true;
        }
        call.pending[slot] = None;
        let mut held = None;
        if let LegRef::A = leg {
            if let CallState::Answered { winner } = call.state {
                call.state = CallState::Connected { winner };
                call.a.state = AState::Confirmed;
                tracing::debug!(call = %call.id, "carrier ACKed; connected");
            }
            held = call.held_b_ack.take();
        }
        let (rt, gu) = timers_2xx(slot);
        self.disarm(key, rt);
        self.disarm(key, gu);
        if let Some((dialog, peer)) = held {
            // Late offer: the carrier's ACK carries the answer; it goes to the buyer in ours.
            let mut ack = ack_for_2xx(&me, &dialog, dialog.cseq, &self.ids.branch());
            push_body(
                &mut ack,
                self.body_for_other_side(key, LegRef::A, msg)
                    .unwrap_or(None),
            );
            self.transmit(Transmit {
                to: peer,
                bytes: ack.print(),
            });
        }
        true
    }

    /// A 2xx that matched no transaction (a retransmission after Timer M): ACK it again when
    /// it is the winner's.
    pub fn on_stray_response(&mut self, msg: &Message) -> bool {
        if !(200..300).contains(&msg.code().unwrap_or(0)) || msg.cseq_method() != &Method::Invite {
            return false;
        }
        let Some((key, LegRef::B(i))) = msg
            .from()
            .tag()
            .and_then(|t| self.router.dialog(msg.call_id(), t))
        else {
            return false;
        };
        let me = self.settings.me.clone();
        let branch = self.ids.branch();
        let ack = self.calls.get(&key).and_then(|call| {
            (call.state.winner() == Some(i)).then(|| {
                let leg = &call.legs[i];
                Transmit {
                    to: leg.peer,
                    bytes: ack_for_2xx(&me, &leg.dialog, msg.cseq(), &branch).print(),
                }
            })
        });
        if let Some(t) = ack {
            self.transmit(t);
        }
        true
    }
}
