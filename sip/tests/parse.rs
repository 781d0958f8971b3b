//! Parser behaviour a B2BUA relies on, and print → parse round trips on generated messages.

use bytes::Bytes;
use dce_sip::{parse, HeaderName, MessageBuf, Method, ParseError, Rport, Scheme, StartLineBuf};
use proptest::prelude::*;

pub const INVITE: &str = "INVITE sip:+18005550100@10.0.0.5:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Via: SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKnashds8;received=10.1.1.2\r\n\
Max-Forwards: 69\r\n\
From: \"Caller\" <sip:+13105551234@192.0.2.10>;tag=1928301774\r\n\
To: <sip:+18005550100@10.0.0.5>\r\n\
Call-ID: a84b4c76e66710@pc33.carrier.example\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+13105551234@192.0.2.10:5060;transport=udp>\r\n\
P-Asserted-Identity: <sip:+13105551234@carrier.example>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 141\r\n\
\r\n\
v=0\r\n\
o=- 1 1 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=ptime:20\r\n";

#[test]
fn a_carrier_invite_exposes_what_a_b2bua_needs() {
    let m = parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
    assert_eq!(m.method(), Some(&Method::Invite));
    let uri = m.request_uri().unwrap();
    assert_eq!(
        (uri.scheme.clone(), uri.user(), uri.host(), uri.port),
        (Scheme::Sip, Some("+18005550100"), "10.0.0.5", Some(5060))
    );
    assert_eq!(uri.param("user"), Some(Some("phone")));
    assert_eq!(m.vias().len(), 2);
    assert_eq!(m.via().branch(), Some("z9hG4bK776asdhds"));
    assert_eq!(m.via().rport, Rport::Requested);
    assert_eq!(m.vias()[1].received(), Some("10.1.1.2"));
    assert_eq!(m.call_id(), "a84b4c76e66710@pc33.carrier.example");
    assert_eq!(m.from().tag(), Some("1928301774"));
    assert_eq!(m.from().display(), Some("\"Caller\""));
    assert_eq!(m.to().tag(), None);
    assert_eq!((m.cseq(), m.cseq_method()), (314159, &Method::Invite));
    assert_eq!(m.max_forwards(), Some(69));
    assert_eq!(m.contact().unwrap().uri.port, Some(5060));
    assert_eq!(m.content_type(), Some("application/sdp"));
    assert_eq!(m.content_length(), Some(141));
    assert_eq!(m.body().len(), 141);
    assert!(m.body().starts_with(b"v=0"));
    assert_eq!(
        m.header(&HeaderName::PAssertedIdentity),
        Some("<sip:+13105551234@carrier.example>")
    );
    assert_eq!(m.list(&HeaderName::Allow).count(), 5);
}

#[test]
fn response_follows_8_2_6() {
    let m = parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
    let r = m.response(
        486,
        "Busy Here",
        "xyz",
        Some("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;received=127.0.0.1;rport=5060"),
    );
    let p = parse(r.print()).unwrap();
    assert_eq!(p.code(), Some(486));
    assert_eq!(p.vias().len(), 2, "every Via copied");
    assert_eq!(p.via().received(), Some("127.0.0.1"));
    assert_eq!(p.from(), m.from());
    assert_eq!(p.to().tag(), Some("xyz"));
    assert_eq!(p.call_id(), m.call_id());
    assert_eq!((p.cseq(), p.cseq_method()), (314159, &Method::Invite));
    let trying = parse(m.response(100, "Trying", "xyz", None).print()).unwrap();
    assert_eq!(trying.to().tag(), None, "100 carries no To tag");
}

#[test]
fn oversized_scalars_never_wrap() {
    // CSeq beyond 2^31 - 1, 2^32 and 2^65
    for v in ["2147483648", "4294967296", "36893488147419103232"] {
        let text = INVITE.replace("CSeq: 314159 INVITE", &format!("CSeq: {v} INVITE"));
        assert_eq!(
            parse(Bytes::from(text)).unwrap_err().error,
            ParseError::BadHeader("CSeq"),
            "{v}"
        );
    }
    // Content-Length near and past 2^32
    for (v, err) in [
        ("4294967295", ParseError::BodyTruncated),
        ("4294967296", ParseError::ContentLength),
        ("18446744073709551617", ParseError::ContentLength),
        ("-1", ParseError::ContentLength),
    ] {
        let text = INVITE.replace("Content-Length: 141", &format!("Content-Length: {v}"));
        assert_eq!(parse(Bytes::from(text)).unwrap_err().error, err, "{v}");
    }
    let text = INVITE.replace("Max-Forwards: 69", "Max-Forwards: 256");
    assert_eq!(
        parse(Bytes::from(text)).unwrap_err().error,
        ParseError::BadHeader("Max-Forwards")
    );
    assert!(parse(Bytes::from(
        INVITE.replace("10.0.0.5:5060", "10.0.0.5:65536")
    ))
    .is_err());
}

#[test]
fn single_valued_headers_may_not_repeat_and_mandatory_ones_must_exist() {
    let twice = INVITE.replace("Call-ID: a84", "Call-ID: other\r\nCall-ID: a84");
    assert_eq!(
        parse(Bytes::from(twice)).unwrap_err().error,
        ParseError::DuplicateHeader("Call-ID")
    );
    let none = INVITE.replace("To: <sip:+18005550100@10.0.0.5>\r\n", "");
    let f = parse(Bytes::from(none)).unwrap_err();
    assert_eq!(f.error, ParseError::MissingHeader("To"));
    assert!(f.raw.unwrap().top_via().is_some(), "still answerable");
}

#[test]
fn trailing_bytes_after_content_length_are_ignored_and_short_bodies_rejected() {
    let mut extra = INVITE.as_bytes().to_vec();
    extra.extend_from_slice(b"INVITE garbage");
    assert_eq!(parse(Bytes::from(extra)).unwrap().body().len(), 141);
    let short = &INVITE.as_bytes()[..INVITE.len() - 10];
    assert_eq!(
        parse(Bytes::copy_from_slice(short)).unwrap_err().error,
        ParseError::BodyTruncated
    );
}

// ---- round trip on generated messages -----------------------------------------------------

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,15}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
        (0u8..=255, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        "\\[2001:db8(:[0-9a-f]{1,4}){1,6}\\]",
    ]
}

fn uri() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-zA-Z0-9+_.-]{1,16}"),
        host(),
        prop::option::of(1u16..=65535),
        prop::option::of("[a-zA-Z0-9_-]{1,10}(=[a-zA-Z0-9_.-]{1,10})?"),
    )
        .prop_map(|(user, host, port, param)| {
            let mut s = String::from("sip:");
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            if let Some(p) = param {
                s.push_str(&format!(";{p}"));
            }
            s
        })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Options),
        Just(Method::Bye),
        Just(Method::Cancel),
        Just(Method::Info),
        "[A-Z]{3,10}".prop_map(|m| Method::from_token(&m)),
    ]
}

prop_compose! {
    fn message()(
        is_request in any::<bool>(),
        method in method(),
        ruri in uri(),
        code in 100u16..=699,
        reason in "[a-zA-Z ]{0,20}",
        vias in prop::collection::vec((host(), prop::option::of(1u16..=65535), token()), 1..4),
        from in uri(),
        to in uri(),
        from_tag in token(),
        to_tag in prop::option::of(token()),
        call_id in "[a-zA-Z0-9.@_-]{1,40}",
        cseq in 0u32..=0x7fff_ffff,
        mf in prop::option::of(0u8..=255),
        extra in prop::collection::vec(("X-[A-Za-z]{1,10}", "[ -~]{0,30}"), 0..5),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) -> MessageBuf {
        let start = if is_request {
            StartLineBuf::Request { method: method.clone(), uri: ruri }
        } else {
            StartLineBuf::Response { code, reason: reason.trim().to_owned() }
        };
        let mut m = MessageBuf { start, headers: Vec::new(), body: Bytes::from(body) };
        for (h, p, b) in vias {
            let port = p.map(|p| format!(":{p}")).unwrap_or_default();
            m.push(HeaderName::Via, format!("SIP/2.0/UDP {h}{port};branch=z9hG4bK{b}"));
        }
        m.push(HeaderName::From, format!("<{from}>;tag={from_tag}"));
        m.push(HeaderName::To, match to_tag { Some(t) => format!("<{to}>;tag={t}"), None => format!("<{to}>") });
        m.push(HeaderName::CallId, call_id);
        m.push(HeaderName::CSeq, format!("{cseq} {method}"));
        if let Some(mf) = mf {
            m.push(HeaderName::MaxForwards, mf.to_string());
        }
        for (n, v) in extra {
            m.push(HeaderName::from_wire(&n), v.trim().to_owned());
        }
        m
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn print_parse_round_trip(m in message()) {
        let wire = m.print();
        let parsed = match parse(wire.clone()) {
            Ok(p) => p,
            Err(e) => return Err(TestCaseError::fail(format!("{:?} on\n{}", e.error, String::from_utf8_lossy(&wire)))),
        };
        // Printing what was parsed gives the same bytes back.
        prop_assert_eq!(parsed.to_buf().print(), wire.clone());
        // And the typed view agrees with what was built.
        prop_assert_eq!(parsed.body(), &m.body);
        prop_assert_eq!(parsed.call_id(), m.header(&HeaderName::CallId).unwrap());
        prop_assert_eq!(parsed.vias().len(), m.headers.iter().filter(|(n, _)| *n == HeaderName::Via).count());
        let mut verbatim = Vec::new();
        parsed.print_into(&mut verbatim);
        prop_assert_eq!(Bytes::from(verbatim), wire);
    }
}

/// Found by `cargo fuzz`: a multi-byte character straddling byte 4 of the start line.
#[test]
fn fuzz_regression_multibyte_start_line() {
    let crash = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz-regressions/start-line-char-boundary"
    ))
    .expect("regression input");
    assert!(parse(Bytes::from(crash)).is_err());
    assert!(parse(Bytes::from("SI\u{e491f}P/2.0 200 OK\r\n\r\n")).is_err());
}
