//! Stateless answers (RFC 3261 §8.2.7), as Kamailio's `sl` module gives them: no server
//! transaction, nothing kept. A retransmission of the request is simply answered again, with
//! the same To tag, because the tag is a keyed hash of the request's identity.
//!
//! Used for out-of-dialog requests the edge refuses or answers itself (OPTIONS `200`, `405`,
//! `501`, `416`, `420`, `415`, `406`, `483` — the [`Decision::Respond`] answers of the policy)
//! and, at the receive side, for the `503` that sheds new INVITEs while the core is behind.
//! ACKs to these non-2xx answers carry the tag back and are absorbed by [`is_ours`].

use super::policy::{decide, Decision, Local};
use crate::counters::Counter;
use bytes::Bytes;
use dce_sip::build::reason_phrase;
use dce_sip::transaction::{Peer, Transmit};
use dce_sip::{HeaderName, Message, Method};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

/// Every stateless To tag starts with this.
const TAG_PREFIX: &str = "sl";

fn keyed() -> &'static std::collections::hash_map::RandomState {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEY.get_or_init(std::collections::hash_map::RandomState::new)
}

/// The To tag of a stateless answer to `req`: the same for every retransmission of it.
pub fn tag_for(req: &Message) -> String {
    let mut h = keyed().build_hasher();
    req.call_id().hash(&mut h);
    req.from().tag().hash(&mut h);
    req.via().branch().hash(&mut h);
    req.cseq().hash(&mut h);
    format!("{TAG_PREFIX}{:016x}", h.finish())
}

/// True for an ACK to one of our stateless answers (its To tag is the one we gave).
pub fn is_ours(ack: &Message) -> bool {
    ack.to()
        .tag()
        .is_some_and(|t| t.starts_with(TAG_PREFIX) && *t == tag_for(ack))
}

/// A stateless response to `req` from `from`: top Via annotated with `received`/`rport`, sent
/// where §18.2.2 says (the source address; never `maddr`).
pub fn response(
    req: &Message,
    from: Peer,
    code: u16,
    headers: Vec<(HeaderName, String)>,
) -> Transmit {
    let via = req
        .via()
        .annotated(&from.addr.ip().to_string(), from.addr.port());
    let mut resp = req.response(code, reason_phrase(code), &tag_for(req), Some(&via));
    resp.headers.extend(headers);
    Transmit {
        to: from.response_target(req.via()),
        bytes: resp.print(),
    }
}

/// What the edge does with a parsed message before the transaction layer sees it.
#[derive(Debug)]
pub enum Edge {
    /// Answered without a transaction: send this, bump this counter.
    Answer(Transmit, Counter),
    /// An ACK to a stateless answer: nothing to do (counted).
    AbsorbedAck,
    /// For the transaction layer.
    Pass,
}

/// Out-of-dialog requests (no To tag, so no dialog state can change the answer) that the
/// policy answers itself get a stateless answer; everything else passes.
pub fn at_edge(msg: &Message, from: Peer, local: &Local) -> Edge {
    let Some(method) = msg.method() else {
        return Edge::Pass;
    };
    if *method == Method::Ack {
        return if is_ours(msg) {
            Edge::AbsorbedAck
        } else {
            Edge::Pass
        };
    }
    if msg.to().tag().is_some() {
        return Edge::Pass;
    }
    match decide(msg, local) {
        Decision::Respond {
            code,
            headers,
            counter,
        } => Edge::Answer(response(msg, from, code, headers), counter),
        Decision::Cancel | Decision::Invite => Edge::Pass,
    }
}

/// True when `bytes` look like an INVITE (a cheap test before parsing).
pub fn looks_like_invite(bytes: &[u8]) -> bool {
    bytes.starts_with(b"INVITE ")
}

/// The stateless `503` with `Retry-After` for a new INVITE (no To tag) the receive side sheds
/// because the core is behind; `None` for anything else (those are queued as usual).
pub fn overload_503(bytes: &[u8], from: Peer, retry_after_s: u32) -> Option<Transmit> {
    if !looks_like_invite(bytes) {
        return None;
    }
    let msg = dce_sip::parse(Bytes::copy_from_slice(bytes)).ok()?;
    if msg.method() != Some(&Method::Invite) || msg.to().tag().is_some() {
        return None;
    }
    Some(response(
        &msg,
        from,
        503,
        vec![(HeaderName::RetryAfter, retry_after_s.to_string())],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dce_sip::transaction::Transport;

    fn peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
            conn: Some(0),
        }
    }

    fn req(method: &str, to_tag: &str, branch: &str) -> Bytes {
        Bytes::from(format!(
            "{method} sip:+18005550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\nFrom: <sip:a@b>;tag=f1\r\nTo: <sip:c@d>{to_tag}\r\nCall-ID: cid-1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    fn parse(b: Bytes) -> Message {
        dce_sip::parse(b).unwrap()
    }

    fn answer(b: Bytes) -> (String, Counter) {
        match at_edge(&parse(b), peer(), &Local::default()) {
            Edge::Answer(t, c) => (String::from_utf8(t.bytes.to_vec()).unwrap(), c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_and_refusals_answered_with_a_stable_tag() {
        let (a, c) = answer(req("OPTIONS", "", "z9hG4bK1"));
        assert!(a.starts_with("SIP/2.0 200 OK\r\n"), "{a}");
        assert_eq!(c, Counter::Options200);
        assert!(a.contains("received=127.0.0.1;rport=5070") || a.contains("rport=5070"));
        assert!(
            a.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS"),
            "{a}"
        );
        let (again, _) = answer(req("OPTIONS", "", "z9hG4bK1"));
        assert_eq!(a, again, "a retransmission gets the same answer, same tag");
        let (other, _) = answer(req("OPTIONS", "", "z9hG4bK2"));
        assert_ne!(a, other, "another request, another tag");
        let (r, c) = answer(req("REGISTER", "", "z9hG4bK3"));
        assert!(r.starts_with("SIP/2.0 405 "), "{r}");
        assert_eq!(c, Counter::MethodNotAllowed405);
        let (r, _) = answer(req("FOO", "", "z9hG4bK4"));
        assert!(r.starts_with("SIP/2.0 501 "), "{r}");
    }

    #[test]
    fn dialog_and_call_requests_pass_and_acks_to_our_answers_are_absorbed() {
        let l = Local::default();
        let pass = |b: Bytes| matches!(at_edge(&parse(b), peer(), &l), Edge::Pass);
        assert!(pass(req("INVITE", "", "z9hG4bK5")));
        assert!(pass(req("CANCEL", "", "z9hG4bK5")));
        assert!(
            pass(req("BYE", ";tag=x", "z9hG4bK6")),
            "in dialog: stateful"
        );
        assert!(pass(req("ACK", ";tag=x", "z9hG4bK5")), "not our tag");
        let refused = parse(req("INVITE", "", "z9hG4bK7"));
        let tag = tag_for(&refused);
        let ack = parse(req("ACK", &format!(";tag={tag}"), "z9hG4bK7"));
        assert!(matches!(at_edge(&ack, peer(), &l), Edge::AbsorbedAck));
    }

    #[test]
    fn overload_503_only_for_new_invites() {
        let t = overload_503(&req("INVITE", "", "z9hG4bK8"), peer(), 7).unwrap();
        let text = String::from_utf8(t.bytes.to_vec()).unwrap();
        assert!(text.starts_with("SIP/2.0 503 "), "{text}");
        assert!(text.contains("Retry-After: 7\r\n"), "{text}");
        assert!(text.contains(";tag=sl"), "{text}");
        assert_eq!(t.to.addr, peer().addr);
        assert!(overload_503(&req("INVITE", ";tag=x", "z9hG4bK9"), peer(), 7).is_none());
        assert!(overload_503(&req("OPTIONS", "", "z9hG4bKa"), peer(), 7).is_none());
        assert!(overload_503(b"INVITE garbage", peer(), 7).is_none());
    }
}
