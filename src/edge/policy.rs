//! Behaviour at the edge: what DCE answers to a request before any call logic runs.
//!
//! Pure: a parsed request in, a decision out. The order follows RFC 3261 §8.2: method
//! inspection (§8.2.1), header inspection — Request-URI scheme (§8.2.2.1), Max-Forwards,
//! Require (§8.2.2.3) — then content processing (§8.2.3) and Accept. Syntax errors never get
//! here: the parser turned them into 400 (or 505) already.

use crate::counters::Counter;
use dce_sip::{HeaderName, Message, Method, Scheme};

/// Methods DCE serves; sent in `Allow`.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";
/// Body types DCE reads; sent in `Accept`.
pub const ACCEPT: &str = "application/sdp";
/// Option tags DCE supports (none yet: reliable provisionals and session timers come with
/// call routing).
pub const SUPPORTED: &[&str] = &[];

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer with this final response and count it.
    Respond {
        /// Status code.
        code: u16,
        /// Extra headers for the response.
        headers: Vec<(HeaderName, String)>,
        /// The counter it bumps.
        counter: Counter,
    },
    /// A CANCEL: match it to its INVITE.
    Cancel,
    /// An INVITE that passed every edge check: the call controller's.
    Invite,
}

fn respond(code: u16, counter: Counter) -> Decision {
    Decision::Respond {
        code,
        headers: Vec::new(),
        counter,
    }
}

/// Hosts that are DCE itself (advertised host and listen IPs), for OPTIONS keep-alives.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Lower-cased host names and IPs.
    pub hosts: Vec<String>,
}

impl Local {
    fn is_local(&self, host: &str) -> bool {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        self.hosts.iter().any(|l| l.eq_ignore_ascii_case(h))
    }
}

/// Decide what to answer. ACK never reaches here (the transaction layer absorbs or routes it).
pub fn decide(req: &Message, local: &Local) -> Decision {
    let Some(method) = req.method() else {
        return respond(400, Counter::Malformed400);
    };
    // §8.2.1 method inspection.
    match method {
        Method::Invite | Method::Options | Method::Cancel => {}
        // No dialogs exist yet, so every in-dialog request is for a dialog we do not have.
        Method::Bye | Method::Info | Method::Update | Method::Prack | Method::Ack => {
            return respond(481, Counter::NoDialog481)
        }
        Method::Other(_) => return respond(501, Counter::UnknownMethod501),
        _ => {
            return Decision::Respond {
                code: 405,
                headers: vec![(HeaderName::Allow, ALLOW.to_owned())],
                counter: Counter::MethodNotAllowed405,
            }
        }
    }
    // §8.2.2.1 Request-URI scheme.
    let uri = match req.request_uri() {
        Some(u) => u,
        None => return respond(400, Counter::Malformed400),
    };
    if !matches!(uri.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel) {
        return respond(416, Counter::UnsupportedScheme416);
    }
    // §12.2.2: a To tag means the request belongs to a dialog; DCE has none yet for it.
    if *method != Method::Cancel && req.to().tag().is_some() {
        return respond(481, Counter::NoDialog481);
    }
    // Max-Forwards: an OPTIONS addressed to DCE itself with Max-Forwards 0 is a keep-alive
    // probe DCE is the final recipient of (RFC 3261 §16.3 item 3); anything else would be
    // forwarded and so has run out of hops.
    if req.max_forwards() == Some(0) && !(*method == Method::Options && local.is_local(uri.host()))
    {
        return respond(483, Counter::TooManyHops483);
    }
    // §8.2.2.3 Require (and Proxy-Require: DCE forwards, so it must support those too).
    if *method != Method::Cancel {
        let unsupported: Vec<&str> = req
            .list(&HeaderName::Require)
            .chain(req.list(&HeaderName::ProxyRequire))
            .filter(|tag| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(tag)))
            .collect();
        if !unsupported.is_empty() {
            return Decision::Respond {
                code: 420,
                headers: vec![(HeaderName::Unsupported, unsupported.join(", "))],
                counter: Counter::BadExtension420,
            };
        }
    }
    if *method == Method::Cancel {
        return Decision::Cancel;
    }
    // §8.2.3 content processing.
    if !req.body().is_empty() {
        let ct = req.content_type().unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        let readable = media.eq_ignore_ascii_case("application/sdp")
            || media.eq_ignore_ascii_case("multipart/mixed");
        if !readable {
            return Decision::Respond {
                code: 415,
                headers: vec![(HeaderName::Accept, ACCEPT.to_owned())],
                counter: Counter::UnsupportedMedia415,
            };
        }
    }
    // Accept: an INVITE whose sender cannot take SDP cannot get an answer from us.
    if *method == Method::Invite && req.header(&HeaderName::Accept).is_some() {
        let takes_sdp = req.list(&HeaderName::Accept).any(|a| {
            let media = a.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("application/sdp")
                || media.eq_ignore_ascii_case("application/*")
                || media == "*/*"
        });
        if !takes_sdp {
            return Decision::Respond {
                code: 406,
                headers: vec![(HeaderName::Accept, ACCEPT.to_owned())],
                counter: Counter::NotAcceptable406,
            };
        }
    }
    match method {
        Method::Options => Decision::Respond {
            code: 200,
            headers: vec![
                (HeaderName::Allow, ALLOW.to_owned()),
                (HeaderName::Accept, ACCEPT.to_owned()),
            ],
            counter: Counter::Options200,
        },
        _ => Decision::Invite,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(start: &str, extra: &str) -> Message {
        let text = format!(
            "{start}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKt\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 {}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n",
            start.split(' ').next().unwrap()
        );
        dce_sip::parse(Bytes::from(text)).unwrap()
    }

    fn code(d: Decision) -> u16 {
        match d {
            Decision::Respond { code, .. } => code,
            Decision::Cancel => 1,
            Decision::Invite => 2,
        }
    }

    #[test]
    fn method_inspection() {
        let l = Local::default();
        assert_eq!(
            code(decide(&msg("OPTIONS sip:dce@127.0.0.1 SIP/2.0", ""), &l)),
            200
        );
        assert_eq!(code(decide(&msg("REGISTER sip:x SIP/2.0", ""), &l)), 405);
        assert_eq!(code(decide(&msg("FOO sip:x SIP/2.0", ""), &l)), 501);
        assert_eq!(code(decide(&msg("BYE sip:x SIP/2.0", ""), &l)), 481);
        assert_eq!(code(decide(&msg("INVITE sip:x SIP/2.0", ""), &l)), 2);
        assert_eq!(code(decide(&msg("CANCEL sip:x SIP/2.0", ""), &l)), 1);
        let in_dialog = "INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKq\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 2 INVITE\r\nl: 0\r\n\r\n";
        assert_eq!(
            code(decide(&dce_sip::parse(Bytes::from(in_dialog)).unwrap(), &l)),
            481
        );
        match decide(&msg("REGISTER sip:x SIP/2.0", ""), &l) {
            Decision::Respond { headers, .. } => {
                assert_eq!(headers[0], (HeaderName::Allow, ALLOW.to_owned()))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_inspection() {
        let l = Local {
            hosts: vec!["127.0.0.1".into()],
        };
        assert_eq!(
            code(decide(
                &msg("OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0", ""),
                &l
            )),
            416
        );
        assert_eq!(
            code(decide(&msg("INVITE tel:+18005550100 SIP/2.0", ""), &l)),
            2
        );
        let mf0 = |uri: &str, m: &str| {
            let text = format!("{m} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKq\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 {m}\r\nMax-Forwards: 0\r\nl: 0\r\n\r\n");
            code(decide(&dce_sip::parse(Bytes::from(text)).unwrap(), &l))
        };
        assert_eq!(mf0("sip:user@example.com", "OPTIONS"), 483);
        assert_eq!(mf0("sip:ping@127.0.0.1:5060", "OPTIONS"), 200);
        assert_eq!(mf0("sip:+1800@127.0.0.1", "INVITE"), 483);
        match decide(
            &msg(
                "OPTIONS sip:x@y SIP/2.0",
                "Require: foo, bar\r\nProxy-Require: baz\r\n",
            ),
            &l,
        ) {
            Decision::Respond {
                code: 420, headers, ..
            } => {
                assert_eq!(
                    headers[0],
                    (HeaderName::Unsupported, "foo, bar, baz".to_owned())
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_and_accept() {
        let l = Local::default();
        let with_body = |ct: &str, accept: &str| {
            let text = format!("INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKq\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Type: {ct}\r\n{accept}Content-Length: 3\r\n\r\nv=0");
            code(decide(&dce_sip::parse(Bytes::from(text)).unwrap(), &l))
        };
        assert_eq!(with_body("application/sdp", ""), 2);
        assert_eq!(with_body("application/unknownformat", ""), 415);
        assert_eq!(
            with_body("application/sdp", "Accept: text/nobodyKnowsThis\r\n"),
            406
        );
        assert_eq!(
            with_body("application/sdp", "Accept: application/sdp;q=1, text/x\r\n"),
            2
        );
    }
}
