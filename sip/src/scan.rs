//! Character classes and small lexers from RFC 3261 §25.1 shared by the header parsers.
//!
//! Folded header lines reach these functions already unfolded: the message parser replaces the
//! CR LF of a fold with spaces, so linear white space (LWS) is only ever SP or HTAB here.

/// `token` characters of RFC 3261 §25.1.
pub fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// True when `s` is a non-empty `token`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// SP or HTAB.
pub fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Trim SP/HTAB on both sides.
pub fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Parse a run of ASCII digits into a value no larger than `max`; `None` when empty, not all
/// digits, or over `max` (checked arithmetic: a 2^65 CSeq never wraps).
pub fn parse_bounded(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 40 {
        // A long run of leading zeros is still a number, but 40 digits is beyond any SIP field.
        if s.is_empty() {
            return None;
        }
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if v > max {
            return None;
        }
    }
    Some(v)
}

/// Split `s` on `sep` where `sep` is outside a quoted string and outside `<…>`.
/// Backslash escapes inside quotes are honoured. Returns `None` on an unterminated quote.
pub fn split_outside(s: &str, sep: u8) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let (mut start, mut i, mut in_q, mut angle) = (0usize, 0usize, false, 0u32);
    while i < b.len() {
        let c = b[i];
        if in_q {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_q = false;
            }
        } else if c == b'"' {
            in_q = true;
        } else if c == b'<' {
            angle += 1;
        } else if c == b'>' {
            angle = angle.saturating_sub(1);
        } else if c == sep && angle == 0 {
            out.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    if in_q {
        return None;
    }
    out.push(&s[start..]);
    Some(out)
}

/// Length of a quoted string at the start of `s` (which must begin with `"`), including both
/// quotes; `None` when it is not terminated.
pub fn quoted_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A generic parameter list `*( SEMI generic-param )` as it follows a Via, a name-addr or a
/// media type: `;name[=value]` with LWS allowed around `;` and `=`. Returns `(name, value)`
/// pairs; `None` when a parameter is empty (`;;`) or its name is not a token.
pub fn parse_params(s: &str) -> Option<Vec<(&str, Option<&str>)>> {
    let s = trim_lws(s);
    if s.is_empty() {
        return Some(Vec::new());
    }
    let s = s.strip_prefix(';')?;
    let mut out = Vec::new();
    for part in split_outside(s, b';')? {
        let (name, value) = match part.find('=') {
            Some(eq) => (trim_lws(&part[..eq]), Some(trim_lws(&part[eq + 1..]))),
            None => (trim_lws(part), None),
        };
        if !is_token(name) {
            return None;
        }
        if let Some(v) = value {
            let ok = if v.starts_with('"') {
                quoted_len(v) == Some(v.len())
            } else {
                // token / host (IPv6 references included)
                !v.is_empty()
                    && v.bytes()
                        .all(|c| is_token_char(c) || matches!(c, b':' | b'[' | b']'))
            };
            if !ok {
                return None;
            }
        }
        out.push((name, value));
    }
    Some(out)
}

/// Find a parameter by case-insensitive name.
pub fn param<'a>(params: &[(&'a str, Option<&'a str>)], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_numbers_never_wrap() {
        assert_eq!(parse_bounded("0009", 100), Some(9));
        assert_eq!(
            parse_bounded("36893488147419103232", u64::from(u32::MAX)),
            None
        );
        assert_eq!(parse_bounded("4294967296", u64::from(u32::MAX)), None);
        assert_eq!(
            parse_bounded("4294967295", u64::from(u32::MAX)),
            Some(4294967295)
        );
        assert_eq!(parse_bounded("-1", 10), None);
        assert_eq!(parse_bounded("", 10), None);
    }

    #[test]
    fn params_reject_empty_and_accept_lws() {
        assert!(parse_params(";;").is_none());
        assert!(parse_params("; branch = z9 ; rport").is_some());
        let p = parse_params(";tag=\"a;b\";x").unwrap();
        assert_eq!(p, vec![("tag", Some("\"a;b\"")), ("x", None)]);
    }

    #[test]
    fn split_respects_quotes_and_angles() {
        assert_eq!(
            split_outside("\"a,b\" <sip:x;y,z>, c", b',').unwrap(),
            vec!["\"a,b\" <sip:x;y,z>", " c"]
        );
        assert!(split_outside("\"open", b',').is_none());
    }
}
