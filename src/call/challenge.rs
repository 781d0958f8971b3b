//! Digest challenges to requests DCE sends a buyer inside a dialog (RFC 3261 §22.2): a BYE, or
//! a request relayed from the carrier (re-INVITE, INFO, UPDATE …), that the buyer's trunk
//! answers with `401`/`407` is sent once more with credentials (a new branch, the next CSeq,
//! the nonce count 1 for a fresh nonce, the next count for one the leg answered before). The INVITE's own challenge is answered in `ring.rs`.

use super::controller::Controller;
use super::leg::with_branch;
use super::router::{Authed, Relay, TxRole};
use super::state::CallKey;
use super::state::LegRef;
use dce_sip::digest::NonceCount;
use dce_sip::transaction::{Peer, TransactionLayer};
use dce_sip::{HeaderName, Message, MessageBuf};
use std::time::Instant;

impl Controller {
    /// Send `bye` to a buyer at `peer`; with `auth`, a challenge to it gets one answer.
    pub(super) fn send_buyer_bye(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        bye: MessageBuf,
        peer: Peer,
        auth: Option<(dce_routing::BuyerAuth, NonceCount)>,
        now: Instant,
    ) {
        let keep = auth.map(|a| (bye.clone(), a));
        if let Ok(tx) = layer.send_request(bye, peer, now) {
            let role = match keep {
                Some((req, (auth, nonce_count))) => TxRole::Authed(Box::new(Authed {
                    req,
                    peer,
                    auth,
                    nonce_count,
                })),
                None => TxRole::Fire,
            };
            self.router.add_client(tx, key, role);
        }
    }

    /// A `401`/`407` to a request in `a`: the same request with the answer, once.
    pub(super) fn answer_in_dialog_challenge(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        mut a: Authed,
        msg: &Message,
        now: Instant,
    ) {
        if let Some((req, _)) = self.with_answer(&mut a, msg) {
            if let Ok(tx) = layer.send_request(req, a.peer, now) {
                self.router.add_client(tx, key, TxRole::Fire);
            }
        }
    }

    /// A `401`/`407` to a request relayed to the winning buyer (re-INVITE, INFO, UPDATE …):
    /// sent once more with the answer; the carrier's transaction waits for that one's answer.
    /// False when there is nothing to answer with (the challenge is relayed as it is).
    pub(super) fn answer_relay_challenge(
        &mut self,
        layer: &mut TransactionLayer,
        key: CallKey,
        mut r: Box<Relay>,
        msg: &Message,
        now: Instant,
    ) -> Result<(), Box<Relay>> {
        let Some(mut a) = r.retry.take() else {
            return Err(r);
        };
        let Some((req, cseq)) = self.with_answer(&mut a, msg) else {
            return Err(r);
        };
        // The dialog's CSeq moves past the one the answer used; its nonce count past this use.
        if let (Some(call), LegRef::A) = (self.calls.get_mut(&key), r.from) {
            if let Some(w) = call.state.winner() {
                let l = &mut call.legs[w];
                l.dialog.cseq = l.dialog.cseq.max(cseq);
                l.nonce_count = a.nonce_count;
            }
        }
        match layer.send_request(req, a.peer, now) {
            Ok(tx) => {
                self.router.add_client(tx, key, TxRole::Relay(r));
                Ok(())
            }
            Err(_) => Err(r),
        }
    }

    /// `a`'s request with the answer to `msg`'s challenge (new branch, next CSeq), and that
    /// CSeq number; `None` when DCE cannot answer the challenge.
    fn with_answer(&mut self, a: &mut Authed, msg: &Message) -> Option<(MessageBuf, u32)> {
        let code = msg.code().unwrap_or(0);
        let (challenge, answer_name) = match challenge_in(msg) {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(code, error = %e, "buyer challenged an in-dialog request DCE cannot answer");
                return None;
            }
        };
        let (method, uri) = match &a.req.start {
            dce_sip::StartLineBuf::Request { method, uri } => (method.to_string(), uri.clone()),
            dce_sip::StartLineBuf::Response { .. } => return None,
        };
        let creds = dce_sip::digest::Credentials {
            user: a.auth.user.clone(),
        };
        let cnonce = self.ids.tag();
        let nc = a.nonce_count.next(&challenge.nonce);
        let value = challenge.answer(&creds, a.auth.password(), &method, &uri, &cnonce, nc);
        let mut req = with_branch(&a.req, &self.ids.branch());
        let mut next = 1;
        for (n, v) in req.headers.iter_mut() {
            if *n == HeaderName::CSeq {
                next = v
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse::<u32>().ok())
                    .unwrap_or(1)
                    + 1;
                *v = format!("{next} {method}");
            }
        }
        put_answer(&mut req, answer_name, value);
        tracing::debug!(code, %method, algorithm = challenge.algorithm.name(), "buyer challenged an in-dialog request; sent again with credentials");
        Some((req, next))
    }
}

/// The strongest challenge of a `401`/`407` that DCE can answer, and the header the answer
/// goes in (`Authorization` for `WWW-Authenticate`, `Proxy-Authorization` for
/// `Proxy-Authenticate`).
pub(super) fn challenge_in(
    msg: &Message,
) -> Result<(dce_sip::digest::Challenge, &'static str), dce_sip::digest::ChallengeError> {
    let (want, answer_name) = if msg.code() == Some(407) {
        ("Proxy-Authenticate", "Proxy-Authorization")
    } else {
        ("WWW-Authenticate", "Authorization")
    };
    let offered = msg
        .headers()
        .filter(|(n, _)| n.as_str().eq_ignore_ascii_case(want))
        .map(|(_, v)| v);
    dce_sip::digest::Challenge::pick(offered).map(|c| (c, answer_name))
}

/// `req` with `value` as its only `name` header (the answer to a challenge).
pub(super) fn put_answer(req: &mut MessageBuf, name: &str, value: String) {
    req.headers
        .retain(|(n, _)| !n.as_str().eq_ignore_ascii_case(name));
    req.push(HeaderName::Other(name.into()), value);
}
