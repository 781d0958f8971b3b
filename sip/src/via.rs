//! The Via header (RFC 3261 §20.42, §18.2.1) with RFC 3581 `rport` and RFC 5118 IPv6 forms.

use crate::scan::{for_each_param, is_token, parse_bounded, trim_lws, Span};
use crate::uri::{is_host, parse_hostport};

/// The RFC 3261 magic cookie that marks a branch as globally unique (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// The `rport` parameter of RFC 3581.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rport {
    /// Absent: the client did not ask for symmetric response routing.
    Absent,
    /// Present without a value: the client asks the server to fill it in.
    Requested,
    /// Present with the port the server saw.
    Port(u16),
}

/// One `via-parm`. `raw` is the via-parm as written (trimmed); the parts are views into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// `rport` parameter.
    pub rport: Rport,
    /// The via-parm as written (trimmed).
    pub raw: String,
    transport: Span,
    host: Span,
    branch: Option<Span>,
    received: Option<Span>,
}

/// Why a Via value did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaError;

impl Via {
    /// Parse a whole Via header value (one or more comma-separated via-parms).
    pub fn parse_list(value: &str) -> Result<Vec<Via>, ViaError> {
        value.split(',').map(Via::parse).collect()
    }

    /// Parse one via-parm: `sent-protocol LWS sent-by *( SEMI via-params )`.
    pub fn parse(s: &str) -> Result<Via, ViaError> {
        let s = trim_lws(s);
        // sent-protocol: name SLASH version SLASH transport, LWS allowed around the slashes.
        let mut rest = s;
        let mut parts = [""; 3];
        for (i, part) in parts.iter_mut().enumerate() {
            let r = trim_lws(rest);
            let end = r.find(['/', ' ', '\t']).unwrap_or(r.len());
            *part = &r[..end];
            rest = trim_lws(&r[end..]);
            if i < 2 {
                rest = rest.strip_prefix('/').ok_or(ViaError)?;
            }
        }
        if !parts.iter().all(|p| is_token(p)) {
            return Err(ViaError);
        }
        let transport = Span::of(s, parts[2]);
        // sent-by up to the first ';' (after optional LWS)
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (trim_lws(&rest[..i]), &rest[i..]),
            None => (trim_lws(rest), ""),
        };
        if sent_by.is_empty() || sent_by.contains([' ', '\t']) {
            return Err(ViaError);
        }
        let (host, port) = parse_hostport(sent_by).map_err(|_| ViaError)?;
        let (mut branch, mut received, mut rport, mut bad) = (None, None, Rport::Absent, false);
        let ok = for_each_param(params, |name, value| {
            if name.eq_ignore_ascii_case("branch") {
                match value {
                    Some(b) if is_token(b) => branch = Some(Span::of(s, b)),
                    _ => bad = true,
                }
            } else if name.eq_ignore_ascii_case("received") {
                match value {
                    Some(r) if is_host(r) => received = Some(Span::of(s, r)),
                    _ => bad = true,
                }
            } else if name.eq_ignore_ascii_case("rport") {
                rport = match value {
                    None => Rport::Requested,
                    Some(p) => match parse_bounded(p, 65535) {
                        Some(p) => Rport::Port(p as u16),
                        None => {
                            bad = true;
                            Rport::Absent
                        }
                    },
                };
            }
        });
        if !ok || bad {
            return Err(ViaError);
        }
        Ok(Via {
            port,
            rport,
            raw: s.to_owned(),
            transport,
            host: Span::of(s, host),
            branch,
            received,
        })
    }

    /// Transport token as written (`UDP`, `TCP`, `TLS`, `SCTP`, or anything else).
    pub fn transport(&self) -> &str {
        self.transport.get(&self.raw)
    }

    /// sent-by host as written (IPv6 references keep brackets).
    pub fn host(&self) -> &str {
        self.host.get(&self.raw)
    }

    /// `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.branch.map(|b| b.get(&self.raw))
    }

    /// `received` parameter.
    pub fn received(&self) -> Option<&str> {
        self.received.map(|r| r.get(&self.raw))
    }

    /// Read only what addressing a reply needs — sent-protocol and sent-by — from a via-parm
    /// whose parameters are broken (RFC 4475 §3.1.2.1 `;;,;,,`), so a malformed request can
    /// still be told `400`. Parameters are not read: no branch, received or rport.
    pub fn parse_sent_by_only(s: &str) -> Result<Via, ViaError> {
        let s = trim_lws(s);
        let head = s.split(';').next().unwrap_or("");
        let mut v = Via::parse(head)?;
        v.raw = s.to_owned();
        Ok(v)
    }

    /// True when the branch carries the RFC 3261 magic cookie and something after it.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    /// The sent-by as `host[:port]`, used in transaction matching (§17.2.3).
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host(), p),
            None => self.host().to_owned(),
        }
    }

    /// The value to put back in a response after the server transport saw the request come
    /// from `ip:port` (§18.2.1, RFC 3581 §4): `received` is added when the sent-by host differs
    /// from the source address or when `rport` was requested; a bare `rport` gets the port.
    /// Existing `received`/`rport` parameters are replaced.
    pub fn annotated(&self, ip: &str, port: u16) -> String {
        let host_matches = self.host().trim_start_matches('[').trim_end_matches(']') == ip;
        let add_received = !host_matches || self.rport != Rport::Absent;
        let mut out = String::with_capacity(self.raw.len() + 32);
        // Rebuild: keep every parameter except received/rport, which we append fresh.
        let (head, params) = match self.raw.find(';') {
            Some(i) => (&self.raw[..i], &self.raw[i + 1..]),
            None => (self.raw.as_str(), ""),
        };
        out.push_str(trim_lws(head));
        for p in params.split(';') {
            let name = trim_lws(p.split('=').next().unwrap_or(""));
            if name.is_empty()
                || name.eq_ignore_ascii_case("received")
                || name.eq_ignore_ascii_case("rport")
            {
                continue;
            }
            out.push(';');
            out.push_str(trim_lws(p));
        }
        if add_received {
            out.push_str(";received=");
            if ip.contains(':') {
                out.push('[');
                out.push_str(ip);
                out.push(']');
            } else {
                out.push_str(ip);
            }
        }
        if self.rport != Rport::Absent {
            out.push_str(";rport=");
            out.push_str(&port.to_string());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_and_spaced() {
        let v = Via::parse_list("SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239")
            .unwrap();
        assert_eq!(v[0].transport(), "UDP");
        assert_eq!(v[0].host(), "192.168.255.111");
        assert_eq!(v[0].branch(), Some("z9hG4bK30239"));
    }

    #[test]
    fn empty_params_are_errors() {
        assert!(Via::parse_list("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(Via::parse_list("SIP/2.0/UDP").is_err());
    }

    #[test]
    fn rport_and_received() {
        let v = Via::parse("SIP/2.0/UDP host.example.com:5070;branch=z9hG4bKx;rport").unwrap();
        assert_eq!(v.rport, Rport::Requested);
        assert_eq!(
            v.annotated("127.0.0.1", 40000),
            "SIP/2.0/UDP host.example.com:5070;branch=z9hG4bKx;received=127.0.0.1;rport=40000"
        );
        let v = Via::parse("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx").unwrap();
        assert_eq!(
            v.annotated("127.0.0.1", 5070),
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx"
        );
        let v =
            Via::parse("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3")
                .unwrap();
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        assert!(Via::parse(
            "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3"
        )
        .is_ok());
    }

    #[test]
    fn magic_cookie() {
        assert!(!Via::parse("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK")
            .unwrap()
            .has_rfc3261_branch());
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa")
            .unwrap()
            .has_rfc3261_branch());
    }
}
