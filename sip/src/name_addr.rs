//! `name-addr` / `addr-spec` values with header parameters (RFC 3261 §20.10, §20.20, §20.39):
//! From, To, Contact, Route, P-Asserted-Identity.

use crate::scan::{for_each_param, is_token, quoted_len, trim_lws, Span};
use crate::uri::Uri;

/// A From/To/Contact-style value. `raw` is the value as written (trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The URI.
    pub uri: Uri,
    /// The whole value as written (trimmed).
    pub raw: String,
    display: Option<Span>,
    tag: Option<Span>,
}

/// Why a name-addr value did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameAddrError {
    /// Unterminated quoted display name.
    UnterminatedQuote,
    /// Display name with characters that are not tokens and not quoted.
    DisplayName,
    /// `<` without `>`, or junk between `>` and the parameters.
    Brackets,
    /// The URI did not parse, or an addr-spec carries `?`/`,` that require `<>` (§20).
    Uri,
    /// A header parameter is empty or malformed.
    Param,
}

impl NameAddr {
    /// Parse one value.
    pub fn parse(s: &str) -> Result<NameAddr, NameAddrError> {
        let s = trim_lws(s);
        let (display, uri_str, params) = if let Some(lt) = find_angle(s)? {
            let display = trim_lws(&s[..lt]);
            let display = if display.is_empty() {
                None
            } else if display.starts_with('"') {
                if quoted_len(display) != Some(display.len()) {
                    return Err(NameAddrError::UnterminatedQuote);
                }
                Some(display)
            } else {
                if !display
                    .split([' ', '\t'])
                    .filter(|w| !w.is_empty())
                    .all(is_token)
                {
                    return Err(NameAddrError::DisplayName);
                }
                Some(display)
            };
            let after = &s[lt + 1..];
            let gt = after.find('>').ok_or(NameAddrError::Brackets)?;
            let uri_str = &after[..gt];
            let rest = trim_lws(&after[gt + 1..]);
            if !rest.is_empty() && !rest.starts_with(';') {
                return Err(NameAddrError::Brackets);
            }
            (display, uri_str, rest)
        } else {
            // addr-spec: the URI ends at the first LWS or ';' and may not hold '?' or ','
            // (RFC 3261 §20: such URIs must be enclosed in <>).
            if s.starts_with('"') {
                return Err(if quoted_len(s).is_none() {
                    NameAddrError::UnterminatedQuote
                } else {
                    NameAddrError::Brackets
                });
            }
            let end = s.find([';', ' ', '\t']).unwrap_or(s.len());
            let uri_str = &s[..end];
            if uri_str.contains(['?', ',']) {
                return Err(NameAddrError::Uri);
            }
            let rest = trim_lws(&s[end..]);
            if !rest.is_empty() && !rest.starts_with(';') {
                return Err(NameAddrError::DisplayName);
            }
            (None, uri_str, rest)
        };
        let uri = Uri::parse(uri_str).map_err(|_| NameAddrError::Uri)?;
        let (mut tag, mut bad) = (None, false);
        let ok = for_each_param(params, |name, value| {
            if name.eq_ignore_ascii_case("tag") {
                match value {
                    Some(t) if is_token(t) => tag = Some(Span::of(s, t)),
                    _ => bad = true,
                }
            }
        });
        if !ok || bad {
            return Err(NameAddrError::Param);
        }
        Ok(NameAddr {
            uri,
            raw: s.to_owned(),
            display: display.map(|d| Span::of(s, d)),
            tag,
        })
    }

    /// Display name as written (quoted strings keep their quotes), if any.
    pub fn display(&self) -> Option<&str> {
        self.display.map(|d| d.get(&self.raw))
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.tag.map(|t| t.get(&self.raw))
    }
}

/// Position of the `<` that opens a name-addr, skipping a quoted display name.
fn find_angle(s: &str) -> Result<Option<usize>, NameAddrError> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let len = quoted_len(&s[i..]).ok_or(NameAddrError::UnterminatedQuote)?;
                i += len;
                continue;
            }
            b'<' => return Ok(Some(i)),
            b';' => return Ok(None),
            _ => {}
        }
        i += 1;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let n = NameAddr::parse(
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>  ;  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(n.tag(), Some("98asjd8"));
        assert_eq!(n.uri.host(), "example.com");
        let n =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.tag(), Some("1918181833n"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display(), Some("caller"));
        let n = NameAddr::parse("isbn:2983792873").unwrap();
        assert!(!n.uri.is_sip());
    }

    #[test]
    fn rejects() {
        assert_eq!(
            NameAddr::parse("\"Mr. J. User <sip:j.user@example.com>").unwrap_err(),
            NameAddrError::UnterminatedQuote
        );
        assert_eq!(
            NameAddr::parse("Bell, Alexander <sip:a.g.bell@example.com>;tag=43").unwrap_err(),
            NameAddrError::DisplayName
        );
        assert!(NameAddr::parse("\"Watson, Thomas\" < sip:t.watson@example.org >").is_err());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
    }
}
