//! URIs: SIP and SIPS (RFC 3261 §19.1, §25.1), IPv6 references (RFC 5118), `tel` (RFC 3966)
//! and opaque URIs of any other scheme (kept verbatim; DCE only routes on sip/sips/tel).

use crate::scan::{is_token_char, parse_bounded, Span};
use std::fmt;

/// A URI scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:`
    Tel,
    /// Any other syntactically valid scheme, lower-cased.
    Other(String),
}

/// A parsed URI. `raw` is exactly what was on the wire; the parts are views into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// The scheme.
    pub scheme: Scheme,
    /// The explicit port, if any.
    pub port: Option<u16>,
    /// The URI exactly as received.
    pub raw: String,
    user: Option<Span>,
    host: Span,
    params: Span,
    headers: Option<Span>,
}

/// Why a URI did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriError {
    /// No `scheme:` prefix or a scheme with characters outside RFC 3986.
    Scheme,
    /// White space, angle brackets or a control character inside the URI.
    Character,
    /// The user part has a character that must be escaped, or a broken `%` escape.
    User,
    /// The host is empty or not a hostname, IPv4 address or bracketed IPv6 reference.
    Host,
    /// The port is not a number from 0 to 65535.
    Port,
    /// A `;` parameter is empty or has a bad name.
    Param,
}

impl Uri {
    /// Parse a URI. SIP/SIPS URIs are checked fully; other schemes only for a valid scheme
    /// and the absence of white space and angle brackets.
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        if s.bytes()
            .any(|c| c <= b' ' || c == b'<' || c == b'>' || c == 0x7f)
        {
            return Err(UriError::Character);
        }
        let colon = s.find(':').ok_or(UriError::Scheme)?;
        let scheme_s = &s[..colon];
        let first = scheme_s.bytes().next().ok_or(UriError::Scheme)?;
        if !first.is_ascii_alphabetic()
            || !scheme_s
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        {
            return Err(UriError::Scheme);
        }
        let rest = &s[colon + 1..];
        let scheme = if scheme_s.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_s.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme_s.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            if rest.is_empty() {
                return Err(UriError::Scheme);
            }
            return Ok(Uri {
                scheme: Scheme::Other(scheme_s.to_ascii_lowercase()),
                port: None,
                raw: s.to_owned(),
                user: None,
                host: Span::of(s, &s[s.len()..]),
                params: Span::of(s, &s[s.len()..]),
                headers: None,
            });
        };
        if scheme == Scheme::Tel {
            let (number, params) = match rest.find(';') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            if number.is_empty() {
                return Err(UriError::User);
            }
            check_params(params)?;
            return Ok(Uri {
                scheme,
                port: None,
                raw: s.to_owned(),
                user: Some(Span::of(s, number)),
                host: Span::of(s, &s[s.len()..]),
                params: Span::of(s, params),
                headers: None,
            });
        }
        let (user, hostpart) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if let Some(u) = user {
            check_userinfo(u)?;
        }
        let (hostpart, headers) = match hostpart.find('?') {
            Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
            None => (hostpart, None),
        };
        let (hostport, params) = match hostpart.find(';') {
            Some(i) => (&hostpart[..i], &hostpart[i + 1..]),
            None => (hostpart, &hostpart[hostpart.len()..]),
        };
        let (host, port) = parse_hostport(hostport)?;
        check_params(params)?;
        Ok(Uri {
            scheme,
            port,
            raw: s.to_owned(),
            user: user.map(|u| Span::of(s, u)),
            host: Span::of(s, host),
            params: Span::of(s, params),
            headers: headers.map(|h| Span::of(s, h)),
        })
    }

    /// The user part (sip/sips), or the number (tel), still %-escaped.
    pub fn user(&self) -> Option<&str> {
        self.user.map(|u| u.get(&self.raw))
    }

    /// The host (sip/sips); IPv6 references keep their brackets. Empty for other schemes.
    pub fn host(&self) -> &str {
        self.host.get(&self.raw)
    }

    /// `;`-parameters as written, without the leading `;` (empty when none).
    pub fn params(&self) -> &str {
        self.params.get(&self.raw)
    }

    /// `?`-headers as written, without the `?`.
    pub fn headers(&self) -> Option<&str> {
        self.headers.map(|h| h.get(&self.raw))
    }

    /// True for `sip:` and `sips:`.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }

    /// A URI parameter by case-insensitive name: `Some(None)` when present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params()
            .split(';')
            .filter(|p| !p.is_empty())
            .map(|p| match p.find('=') {
                Some(i) => (&p[..i], Some(&p[i + 1..])),
                None => (p, None),
            })
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The user part with %-escapes decoded (RFC 3261 §19.1.4 compares unescaped); bytes
    /// that are not UTF-8 after decoding are replaced. `%00` stays a NUL character.
    pub fn user_unescaped(&self) -> Option<String> {
        self.user().map(unescape)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Decode `%HH` escapes (already validated by the parser; a broken one is kept literally).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn check_escapes(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if hex(b[i + 1]).is_none() || hex(b[i + 2]).is_none() {
                return false;
            }
            i += 3;
            continue;
        }
        if !allowed(c) {
            return false;
        }
        i += 1;
    }
    true
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// `userinfo = ( user / telephone-subscriber ) [ ":" password ]`
fn check_userinfo(u: &str) -> Result<(), UriError> {
    let (user, password) = match u.find(':') {
        Some(i) => (&u[..i], Some(&u[i + 1..])),
        None => (u, None),
    };
    if user.is_empty()
        || !check_escapes(user, |c| {
            is_unreserved(c) || matches!(c, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
        })
    {
        return Err(UriError::User);
    }
    if let Some(p) = password {
        if !check_escapes(p, |c| {
            is_unreserved(c) || matches!(c, b'&' | b'=' | b'+' | b'$' | b',')
        }) {
            return Err(UriError::User);
        }
    }
    Ok(())
}

fn check_params(params: &str) -> Result<(), UriError> {
    if params.is_empty() {
        return Ok(());
    }
    for p in params.split(';') {
        let (name, value) = match p.find('=') {
            Some(i) => (&p[..i], Some(&p[i + 1..])),
            None => (p, None),
        };
        let paramchar =
            |c: u8| is_unreserved(c) || matches!(c, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$');
        if name.is_empty() || !check_escapes(name, paramchar) {
            return Err(UriError::Param);
        }
        if let Some(v) = value {
            if !check_escapes(v, paramchar) {
                return Err(UriError::Param);
            }
        }
    }
    Ok(())
}

/// `hostport = host [ ":" port ]`, host being a hostname, IPv4 address or `[IPv6]`.
/// Returns the host as written (brackets kept) and the port.
pub fn parse_hostport(s: &str) -> Result<(&str, Option<u16>), UriError> {
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']').ok_or(UriError::Host)?;
        let inner = &s[1..close];
        if !is_ipv6_reference_body(inner) {
            return Err(UriError::Host);
        }
        let after = &s[close + 1..];
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':').ok_or(UriError::Port)?)
        };
        (&s[..close + 1], port)
    } else {
        match s.find(':') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        }
    };
    if !s.starts_with('[') && !is_hostname_or_ipv4(host) {
        return Err(UriError::Host);
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_bounded(p, 65535).ok_or(UriError::Port)? as u16),
    };
    Ok((host, port))
}

/// Hex digits, colons and dots: liberal on purpose (RFC 5118 §4.10 asks to tolerate the
/// RFC 3261 ABNF bug `[2001:db8:::192.0.2.1]`).
fn is_ipv6_reference_body(s: &str) -> bool {
    s.contains(':')
        && s.bytes()
            .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
}

fn is_hostname_or_ipv4(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        && !s.starts_with('.')
        && !s.starts_with('-')
}

/// Host part of a Via `sent-by` or a `received` value: the same host grammar; a `received`
/// IPv6 address may come with or without brackets (RFC 5118 §4.5).
pub fn is_host(s: &str) -> bool {
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return is_ipv6_reference_body(inner);
    }
    is_hostname_or_ipv4(s) || is_ipv6_reference_body(s)
}

/// True for a token character (re-exported helper for callers validating URI-adjacent tokens).
pub fn token_char(c: u8) -> bool {
    is_token_char(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u = Uri::parse("sip:+18005550100@127.0.0.1:5090;transport=udp").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user(), Some("+18005550100"));
        assert_eq!(u.host(), "127.0.0.1");
        assert_eq!(u.port, Some(5090));
        assert_eq!(u.param("transport"), Some(Some("udp")));
    }

    #[test]
    fn ipv6_references() {
        assert!(Uri::parse("sip:user@2001:db8::10").is_err());
        let u = Uri::parse("sip:user@[2001:db8::10]:5070").unwrap();
        assert_eq!((u.host(), u.port), ("[2001:db8::10]", Some(5070)));
        let u = Uri::parse("sip:user@[2001:db8::10:5070]").unwrap();
        assert_eq!((u.host(), u.port), ("[2001:db8::10:5070]", None));
        assert!(Uri::parse("sip:[2001:db8:::192.0.2.1]").is_ok());
    }

    #[test]
    fn escapes_and_odd_users() {
        let u = Uri::parse("sip:null-%00-null@example.com").unwrap();
        assert_eq!(u.user_unescaped().unwrap(), "null-\0-null");
        assert!(Uri::parse("sip:bad%zzuser@example.com").is_err());
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user(), Some("user;par=u%40example.net"));
        assert_eq!(u.params(), "");
    }

    #[test]
    fn other_schemes_are_opaque() {
        let u = Uri::parse("nobodyKnowsThisScheme:totallyopaque-content").unwrap();
        assert_eq!(u.scheme, Scheme::Other("nobodyknowsthisscheme".into()));
        assert!(Uri::parse("<sip:a@b>").is_err());
        assert!(Uri::parse("sip:a@b c").is_err());
        assert_eq!(
            Uri::parse("tel:+1-201-555-0123;phone-context=x")
                .unwrap()
                .user(),
            Some("+1-201-555-0123")
        );
    }

    #[test]
    fn out_of_range_port() {
        assert_eq!(Uri::parse("sip:a@b:65536"), Err(UriError::Port));
    }
}
