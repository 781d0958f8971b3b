//! Character classes and small lexers from RFC 3261 §25.1 shared by the header parsers.
//!
//! Folded header lines reach these functions already unfolded: the message parser replaces the
//! CR LF of a fold with spaces, so linear white space (LWS) is only ever SP or HTAB here.

const fn token_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    t
}

static TOKEN: [bool; 256] = token_table();

/// A byte range into a string a parsed value owns; lets a value keep one `String` and hand out
/// its parts without further allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The span of `sub` inside `base`; `sub` must be a sub-slice of `base`.
    pub(crate) fn of(base: &str, sub: &str) -> Span {
        let start = (sub.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
        Span {
            start: start as u32,
            end: (start + sub.len()) as u32,
        }
    }

    /// The text of this span in `base` (empty if out of range).
    pub(crate) fn get(self, base: &str) -> &str {
        base.get(self.start as usize..self.end as usize)
            .unwrap_or("")
    }
}

/// `token` characters of RFC 3261 §25.1.
#[inline]
pub fn is_token_char(c: u8) -> bool {
    TOKEN[c as usize]
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
#[inline]
pub fn trim_lws(s: &str) -> &str {
    let b = s.as_bytes();
    let mut start = 0;
    let mut end = b.len();
    while start < end && is_wsp(b[start]) {
        start += 1;
    }
    while end > start && is_wsp(b[end - 1]) {
        end -= 1;
    }
    // SP and HTAB are ASCII, so both ends are char boundaries.
    s.get(start..end).unwrap_or("")
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

/// Walk a generic parameter list `*( SEMI generic-param )` as it follows a Via, a name-addr or
/// a media type: `;name[=value]` with LWS allowed around `;` and `=`. `f` sees each
/// `(name, value)`. Returns false when a parameter is empty (`;;`), its name is not a token, its
/// value is malformed, or a quote is unterminated. Allocates nothing.
pub fn for_each_param<'a>(s: &'a str, mut f: impl FnMut(&'a str, Option<&'a str>)) -> bool {
    let s = trim_lws(s);
    if s.is_empty() {
        return true;
    }
    let Some(s) = s.strip_prefix(';') else {
        return false;
    };
    let mut parts = SplitOutside::new(s, b';');
    for part in parts.by_ref() {
        let (name, value) = match part.find('=') {
            Some(eq) => (trim_lws(&part[..eq]), Some(trim_lws(&part[eq + 1..]))),
            None => (trim_lws(part), None),
        };
        if !is_token(name) {
            return false;
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
                return false;
            }
        }
        f(name, value);
    }
    !parts.unterminated
}

/// Iterator over the pieces of a string split on a separator outside quotes and `<…>`.
/// After the last piece, `unterminated` says whether a quoted string never closed.
pub struct SplitOutside<'a> {
    s: &'a str,
    pos: usize,
    sep: u8,
    done: bool,
    /// A quoted string was still open at the end.
    pub unterminated: bool,
}

impl<'a> SplitOutside<'a> {
    /// Split `s` on `sep`.
    pub fn new(s: &'a str, sep: u8) -> Self {
        SplitOutside {
            s,
            pos: 0,
            sep,
            done: false,
            unterminated: false,
        }
    }
}

impl<'a> Iterator for SplitOutside<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let b = self.s.as_bytes();
        let start = self.pos;
        let (mut i, mut in_q, mut angle) = (start, false, 0u32);
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
            } else if c == self.sep && angle == 0 {
                self.pos = i + 1;
                return Some(&self.s[start..i]);
            }
            i += 1;
        }
        self.done = true;
        self.unterminated = in_q;
        Some(&self.s[start..])
    }
}

/// Split `s` on `sep` where `sep` is outside a quoted string and outside `<…>`.
/// Returns `None` on an unterminated quote.
pub fn split_outside(s: &str, sep: u8) -> Option<Vec<&str>> {
    let mut it = SplitOutside::new(s, sep);
    let out: Vec<&str> = it.by_ref().collect();
    (!it.unterminated).then_some(out)
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
        assert!(!for_each_param(";;", |_, _| {}));
        assert!(for_each_param("; branch = z9 ; rport", |_, _| {}));
        let mut p = Vec::new();
        assert!(for_each_param(";tag=\"a;b\";x", |n, v| p.push((n, v))));
        assert_eq!(p, vec![("tag", Some("\"a;b\"")), ("x", None)]);
        assert!(!for_each_param(";tag=\"open", |_, _| {}));
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
