//! Which SIP worker (shard) owns a message, read from the few headers that say so without a
//! full parse (docs/decisions/0010-sip-workers.md).
//!
//! Every tag, branch and Call-ID a shard generates starts with its number in two hex digits
//! ([`crate::ids::Ids::sharded`]), so:
//! - a response goes where its top Via's branch (DCE's own) says;
//! - a request with a To tag (in-dialog, or an ACK for a non-2xx) goes where the tag (DCE's,
//!   given in DCE's response) says;
//! - anything else (a new INVITE, its CANCEL and retransmissions, OPTIONS) goes by a hash of
//!   its Call-ID, the same for every message of the transaction.
//!
//! A value that does not name a shard falls back to the Call-ID hash: the owner of a forged or
//! stray message answers it as any shard would (481, or nothing).

/// The RFC 3261 branch magic cookie.
const COOKIE: &[u8] = b"z9hG4bK";

/// The shard (of `n`) that owns `bytes`. Always 0 with one shard.
pub fn owner(bytes: &[u8], n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let response = bytes.starts_with(b"SIP/2.0 ");
    let mut call_id: Option<&[u8]> = None;
    let mut named: Option<&[u8]> = None;
    let mut seen_via = false;
    let mut lines = bytes.split(|&b| b == b'\n');
    lines.next(); // the start line
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break; // end of the headers
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue; // a folded continuation: never where these values start
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            call_id = Some(value);
        } else if response && !seen_via && (name.eq_ignore_ascii_case(b"via") || name == b"v") {
            seen_via = true;
            let first = value.split(|&b| b == b',').next().unwrap_or(value);
            named = param(first, b"branch").and_then(|b| b.strip_prefix(COOKIE));
        } else if !response && (name.eq_ignore_ascii_case(b"to") || name == b"t") {
            // the tag is a parameter of the header, after any <...> that holds the URI
            let params = match value.iter().rposition(|&b| b == b'>') {
                Some(gt) => &value[gt + 1..],
                None => value,
            };
            named = param(params, b"tag");
        }
    }
    if let Some(s) = named.and_then(shard_digits).filter(|&s| s < n) {
        return s;
    }
    match call_id {
        Some(id) => (fnv1a(id) % n as u64) as usize,
        None => 0,
    }
}

/// The shard number at the start of an id DCE generated (two hex digits).
fn shard_digits(v: &[u8]) -> Option<usize> {
    let h = |c: u8| (c as char).to_digit(16);
    match v {
        [a, b, ..] => Some((h(*a)? * 16 + h(*b)?) as usize),
        _ => None,
    }
}

/// The value of `;name=value` in `s` (case-insensitive name).
fn param<'a>(s: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    for p in s.split(|&b| b == b';').skip(1) {
        let p = trim(p);
        let (k, v) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (trim(&p[..i]), trim(&p[i + 1..])),
            None => (p, &p[p.len()..]),
        };
        if k.eq_ignore_ascii_case(name) {
            return Some(v);
        }
    }
    None
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Ids;

    fn request(method: &str, to: &str, call_id: &str) -> Vec<u8> {
        format!("{method} sip:+18005550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bK03ffff\r\nFrom: <sip:a@b>;tag=05aa\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").into_bytes()
    }

    #[test]
    fn ids_a_shard_generates_come_back_to_it() {
        for shard in 0..4u8 {
            let mut ids = Ids::deterministic(u64::from(shard)).sharded(shard);
            let (tag, branch, call_id) = (ids.tag(), ids.branch(), ids.call_id("dce.example"));
            assert_eq!(ids.shard(), Some(shard));
            let bye = request("BYE", &format!("<sip:x@y>;tag={tag}"), "not-ours-anyway");
            assert_eq!(owner(&bye, 4), shard as usize, "{tag}");
            let compact = format!("BYE sip:x SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK77\r\ni: q\r\nt: \"A;B\" <sip:x@y;tag=zz>;TAG={tag}\r\n\r\n");
            assert_eq!(
                owner(compact.as_bytes(), 4),
                shard as usize,
                "compact To, a ;tag inside the URI ignored"
            );
            let resp = format!("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport=5060, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK01\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK02\r\nTo: <sip:b>;tag=99\r\nCall-ID: {call_id}\r\n\r\n");
            assert_eq!(
                owner(resp.as_bytes(), 4),
                shard as usize,
                "the top Via's branch decides"
            );
        }
    }

    #[test]
    fn new_requests_go_by_call_id_and_stay_together() {
        let invite = request("INVITE", "<sip:+18005550100@dce>", "abc@carrier");
        let cancel = request("CANCEL", "<sip:+18005550100@dce>", "abc@carrier");
        let o = owner(&invite, 8);
        assert_eq!(owner(&cancel, 8), o);
        let spread: std::collections::HashSet<usize> = (0..200)
            .map(|i| owner(&request("INVITE", "<sip:x@y>", &format!("{i}@c")), 8))
            .collect();
        assert_eq!(spread.len(), 8, "Call-IDs spread over every shard");
    }

    #[test]
    fn what_names_no_shard_falls_back_to_the_call_id() {
        let by_id = owner(&request("INVITE", "<sip:x@y>", "k"), 3);
        for to in [
            "<sip:x@y>;tag=zz9",
            "<sip:x@y>;tag=ff00",
            "<sip:x@y>;tag=",
            "<sip:x@y>;tag",
        ] {
            assert_eq!(owner(&request("BYE", to, "k"), 3), by_id, "{to}");
        }
        let foreign_branch =
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=1234\r\nCall-ID: k\r\n\r\n";
        assert_eq!(owner(foreign_branch, 3), by_id);
        assert_eq!(owner(b"garbage", 3), 0);
        assert_eq!(owner(b"", 3), 0);
        assert_eq!(owner(&request("BYE", "<sip:x@y>;tag=01", "k"), 1), 0);
    }
}
