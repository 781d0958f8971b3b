//! Building the messages of the two legs: the buyer INVITE, ACK for a 2xx, BYE, CANCEL,
//! relayed requests, and responses to the carrier. Topology hiding lives here: the buyer leg
//! gets its own Call-ID, tags, Via and Contact; nothing of the carrier's headers is copied but
//! the body and its Content-Type.

use dce_sip::transaction::Transport;
use dce_sip::{HeaderName, Message, MessageBuf, Method};

/// What DCE puts in Via and Contact.
#[derive(Debug, Clone)]
pub struct Me {
    /// Advertised host.
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// TCP port, when DCE listens on TCP (legs over TCP name it in Via and Contact).
    pub tcp_port: Option<u16>,
    /// TLS port, when DCE listens on TLS.
    pub tls_port: Option<u16>,
}

impl Me {
    /// `<sip:dce@host:port>`
    pub fn contact(&self) -> String {
        format!("<sip:dce@{}:{}>", self.host, self.port)
    }

    fn port_on(&self, t: Transport) -> u16 {
        match t {
            Transport::Udp => self.port,
            Transport::Tcp => self.tcp_port.unwrap_or(self.port),
            Transport::Tls => self.tls_port.unwrap_or(self.port),
        }
    }

    /// The Contact for a leg over `t` (`;transport=tcp|tls`, so in-dialog requests come the
    /// same way).
    pub fn contact_on(&self, t: Transport) -> String {
        match t {
            Transport::Udp => self.contact(),
            Transport::Tcp => format!("<sip:dce@{}:{};transport=tcp>", self.host, self.port_on(t)),
            Transport::Tls => format!("<sip:dce@{}:{};transport=tls>", self.host, self.port_on(t)),
        }
    }

    fn via(&self, branch: &str, t: Transport) -> String {
        match t {
            Transport::Udp => format!(
                "SIP/2.0/UDP {}:{};branch={branch};rport",
                self.host, self.port
            ),
            _ => format!(
                "SIP/2.0/{} {}:{};branch={branch}",
                t.via_name(),
                self.host,
                self.port_on(t)
            ),
        }
    }

    /// A request with DCE's Via (with `branch`, fresh from the core's [`crate::ids::Ids`]) and
    /// Max-Forwards, to go over UDP.
    pub fn request(&self, method: Method, uri: &str, max_forwards: u8, branch: &str) -> MessageBuf {
        self.request_on(method, uri, max_forwards, branch, Transport::Udp)
    }

    /// [`Me::request`] to go over `t`: the Via names the transport.
    pub fn request_on(
        &self,
        method: Method,
        uri: &str,
        max_forwards: u8,
        branch: &str,
        t: Transport,
    ) -> MessageBuf {
        let mut m = MessageBuf::request(method, uri);
        m.push(HeaderName::Via, self.via(branch, t));
        m.push(HeaderName::MaxForwards, max_forwards.to_string());
        m
    }
}

/// The dialog state of one leg as DCE sees it.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our From (UAC) or To (UAS) value, with our tag.
    pub local: String,
    /// Their value, with their tag once known.
    pub remote: String,
    /// Where in-dialog requests are addressed (their Contact).
    pub remote_target: String,
    /// Route set, in the order Route headers are written.
    pub route: Vec<String>,
    /// Our next CSeq number.
    pub cseq: u32,
    /// The transport the leg runs over (its requests' Via names it).
    pub transport: Transport,
}

impl Dialog {
    /// A new in-dialog request (BYE, relayed INFO/UPDATE/re-INVITE…).
    pub fn request(&mut self, me: &Me, method: Method, branch: &str) -> MessageBuf {
        self.cseq += 1;
        let mut m = me.request_on(
            method.clone(),
            &self.remote_target,
            70,
            branch,
            self.transport,
        );
        m.push(HeaderName::From, self.local.clone())
            .push(HeaderName::To, self.remote.clone())
            .push(HeaderName::CallId, self.call_id.clone())
            .push(HeaderName::CSeq, format!("{} {method}", self.cseq));
        for r in &self.route {
            m.push(HeaderName::Route, r.clone());
        }
        m
    }
}

/// The ACK for a 2xx to our INVITE (RFC 3261 §13.2.2.4): a new transaction, to the remote
/// target, with the INVITE's CSeq number.
pub fn ack_for_2xx(me: &Me, dialog: &Dialog, invite_cseq: u32, branch: &str) -> MessageBuf {
    let mut m = me.request_on(
        Method::Ack,
        &dialog.remote_target,
        70,
        branch,
        dialog.transport,
    );
    m.push(HeaderName::From, dialog.local.clone())
        .push(HeaderName::To, dialog.remote.clone())
        .push(HeaderName::CallId, dialog.call_id.clone())
        .push(HeaderName::CSeq, format!("{invite_cseq} ACK"));
    for r in &dialog.route {
        m.push(HeaderName::Route, r.clone());
    }
    m
}

/// `invite` with `branch` in its top Via instead of the one it had: the same request as a
/// new transaction (a resend with credentials, or to the next DNS target).
pub fn with_branch(invite: &MessageBuf, branch: &str) -> MessageBuf {
    let mut m = invite.clone();
    let old = invite
        .header(&HeaderName::Via)
        .and_then(|v| dce_sip::Via::parse(v).ok())
        .and_then(|v| v.branch().map(str::to_owned));
    if let Some(old) = old {
        if let Some((_, v)) = m.headers.iter_mut().find(|(n, _)| *n == HeaderName::Via) {
            *v = v.replace(&format!("branch={old}"), &format!("branch={branch}"));
        }
    }
    m
}

/// CANCEL for an INVITE we sent (§9.1): same Request-URI, Call-ID, From, To, CSeq number and
/// top Via (so the same branch), method CANCEL.
pub fn cancel_for(invite: &MessageBuf) -> MessageBuf {
    let uri = match &invite.start {
        dce_sip::StartLineBuf::Request { uri, .. } => uri.clone(),
        dce_sip::StartLineBuf::Response { .. } => String::new(),
    };
    let mut m = MessageBuf::request(Method::Cancel, uri);
    for name in [
        HeaderName::Via,
        HeaderName::MaxForwards,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
    ] {
        if let Some(v) = invite.header(&name) {
            m.push(name, v);
        }
    }
    let n = invite
        .header(&HeaderName::CSeq)
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or("1");
    m.push(HeaderName::CSeq, format!("{n} CANCEL"));
    for (n, v) in &invite.headers {
        if *n == HeaderName::Route {
            m.push(HeaderName::Route, v.clone());
        }
    }
    m
}

/// Copy the body and its Content-Type from `from` into `to` (the only content that crosses
/// between legs).
pub fn copy_body(from: &Message, to: &mut MessageBuf) {
    if !from.body().is_empty() {
        if let Some(ct) = from.content_type() {
            to.push(HeaderName::ContentType, ct);
        }
        to.body = from.body().clone();
    }
}

/// Route set of a dialog from the Record-Route headers of a message: in order for the UAS
/// side (§12.1.1), reversed for the UAC side (§12.1.2).
pub fn route_set(msg: &Message, reverse: bool) -> Vec<String> {
    let mut r: Vec<String> = msg
        .headers_named(&HeaderName::RecordRoute)
        .flat_map(|v| dce_sip::scan::split_outside(v, b',').unwrap_or_default())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if reverse {
        r.reverse();
    }
    r
}

/// The Contact URI of a message (without brackets) as a remote target, if it is usable as a
/// Request-URI: its `?headers` part is dropped (RFC 3261 §19.1.5: headers of a URI are not
/// part of the Request-URI), and what is left must make a request DCE's own parser accepts —
/// a peer's odd Contact must not make DCE send unparseable requests (found by fuzzing).
pub fn contact_uri(msg: &Message) -> Option<String> {
    usable_target(&msg.contact()?.uri.raw)
}

/// `uri` without its headers, when a request to it parses: what the request line needs (no
/// whitespace or control characters in it, a non-empty URI) and the Request-URI check of the
/// parser ([`dce_sip::Uri::parse`]). Called for every INVITE and 2xx; it used to build and parse
/// a whole probe request (~2 µs) — the test below checks both say the same.
pub fn usable_target(uri: &str) -> Option<String> {
    let t = uri.split('?').next()?.trim();
    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    dce_sip::Uri::parse(t).ok().map(|_| t.to_owned())
}

/// The former [`usable_target`]: a probe request through the whole parser (the reference the
/// test compares with).
#[cfg(test)]
fn usable_target_by_probe(uri: &str) -> Option<String> {
    let t = uri.split('?').next()?.trim();
    let probe = format!(
        "OPTIONS {t} SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKprobe\r\nFrom: <sip:a@b>;tag=1\r\n\
         To: <sip:a@b>\r\nCall-ID: p\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    dce_sip::parse(bytes::Bytes::from(probe))
        .ok()
        .filter(|m| m.request_uri().is_some())
        .map(|_| t.to_owned())
}

/// A message body to send: content type and bytes.
pub type Body = Option<(String, bytes::Bytes)>;

/// Put `body` (content type and bytes) into `m`.
pub fn push_body(m: &mut MessageBuf, body: Body) {
    if let Some((ct, b)) = body {
        m.push(HeaderName::ContentType, ct);
        m.body = b;
    }
}

/// `s` as a SIP URI user part (RFC 3261 §25.1 `user`): unreserved and user-unreserved
/// characters as they are, everything else percent-escaped, so nothing a carrier sent can
/// break out of the URI or the header it is written into.
pub fn sip_user(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'!'
                    | b'~'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
                    | b'&'
                    | b'='
                    | b'+'
                    | b'$'
                    | b','
            );
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_target_loses_its_headers_and_must_parse() {
        assert_eq!(
            super::usable_target("sip:c@127.0.0.1?5070").as_deref(),
            Some("sip:c@127.0.0.1")
        );
        assert_eq!(
            super::usable_target("sip:c@127.0.0.1:5070;transport=udp").as_deref(),
            Some("sip:c@127.0.0.1:5070;transport=udp")
        );
        assert_eq!(super::usable_target("sip:@127.0.0.1"), None);
        assert_eq!(super::usable_target("sip:a b@h"), None);
    }

    #[test]
    fn the_direct_check_agrees_with_a_probe_request_through_the_parser() {
        let mut cases: Vec<String> = [
            "sip:c@127.0.0.1?5070",
            "sip:c@127.0.0.1:5070;transport=udp",
            "sip:@127.0.0.1",
            "sip:a b@h",
            "sips:b@[::1]:5061",
            "tel:+13105551234",
            "sip:+1310%20555@h;user=phone",
            "sip:h",
            "sip:a@h:99999",
            "sip:a@h:",
            "sip:a@",
            "mailto:x@y",
            "x",
            "",
            " ",
            "sip:a@h\r\nX: y",
            "sip:a@h\tb",
            "sip:a@h;lr;maddr=10.0.0.1",
            "<sip:a@h>",
            "sip:a@h>",
            "sip:a@h;p=\u{e9}",
            "sip:a@1.2.3.4.5",
            "SIP:A@H",
            "sip:a@h\u{0}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // and every prefix of a few, which walks through the URI grammar's edges
        for s in [
            "sip:user;x=y:pw@host.example:5060;transport=tcp?h=v",
            "tel:+1-310;ext=5",
        ] {
            cases.extend((0..=s.len()).map(|i| s[..i].to_string()));
        }
        for c in &cases {
            assert_eq!(
                super::usable_target(c),
                super::usable_target_by_probe(c),
                "{c:?}"
            );
        }
    }

    #[test]
    fn sip_user_escapes_what_could_break_out() {
        assert_eq!(super::sip_user("13105551234"), "13105551234");
        assert_eq!(super::sip_user("+1 (310)"), "+1%20(310)");
        assert_eq!(super::sip_user("a>b\r\nX: y@z"), "a%3Eb%0D%0AX%3A%20y%40z");
    }
}
