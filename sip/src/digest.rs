//! Digest authentication for requests DCE sends (RFC 3261 §22.4, RFC 2617 §3.2.2, RFC 7616
//! for SHA-256, RFC 8760 for using it in SIP): reading a `WWW-Authenticate` /
//! `Proxy-Authenticate` challenge and computing the `Authorization` / `Proxy-Authorization`
//! answer.
//!
//! Pure code: the caller passes the client nonce and the nonce count, so answers are
//! reproducible in tests. The password is borrowed for the computation and never stored or
//! printed here; [`Credentials`] prints without it.

use crate::scan::SplitOutside;
use md5::Md5;
use sha2::{Digest as _, Sha256};

/// The digest algorithms DCE answers, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `MD5` (RFC 2617; the default when a challenge names none).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
}

impl Algorithm {
    fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_uppercase().as_str() {
            "SHA-256" => Some(Algorithm::Sha256),
            "SHA-256-SESS" => Some(Algorithm::Sha256Sess),
            "MD5" => Some(Algorithm::Md5),
            "MD5-SESS" => Some(Algorithm::Md5Sess),
            _ => None,
        }
    }

    /// The name as written in headers.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Algorithm::Sha256 | Algorithm::Sha256Sess => 0,
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
        }
    }

    fn sess(self) -> bool {
        matches!(self, Algorithm::Sha256Sess | Algorithm::Md5Sess)
    }

    fn hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Sha256 | Algorithm::Sha256Sess => hex(&Sha256::digest(data)),
            Algorithm::Md5 | Algorithm::Md5Sess => hex(&Md5::digest(data)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[usize::from(b >> 4)] as char);
        s.push(H[usize::from(b & 15)] as char);
    }
    s
}

/// One `Digest` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back when present.
    pub opaque: Option<String>,
    /// `algorithm` (MD5 when absent).
    pub algorithm: Algorithm,
    /// The server offered `qop=auth` (DCE does not do `auth-int`).
    pub qop_auth: bool,
    /// `stale=true`: the nonce expired, the credentials were right.
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Not a `Digest` challenge (e.g. `Basic`, which SIP forbids).
    #[error("not a Digest challenge")]
    NotDigest,
    /// `realm` or `nonce` missing.
    #[error("challenge without {0}")]
    Missing(&'static str),
    /// An algorithm DCE does not implement.
    #[error("unsupported digest algorithm {0}")]
    Algorithm(String),
    /// Only `qop=auth-int` offered.
    #[error("only qop=auth-int offered")]
    QopAuthInt,
}

impl Challenge {
    /// Parse one header value (`Digest realm="…", nonce="…", …`).
    pub fn parse(value: &str) -> Result<Challenge, ChallengeError> {
        let v = value.trim_start();
        let (scheme, rest) = v.split_once(char::is_whitespace).unwrap_or((v, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(ChallengeError::NotDigest);
        }
        let (mut realm, mut nonce, mut opaque, mut algorithm, mut qop, mut stale) =
            (None, None, None, None, None, false);
        for part in SplitOutside::new(rest, b',') {
            let Some((k, val)) = part.split_once('=') else {
                continue;
            };
            let val = unquote(val.trim());
            match k.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(val),
                "nonce" => nonce = Some(val),
                "opaque" => opaque = Some(val),
                "algorithm" => algorithm = Some(val),
                "qop" => qop = Some(val),
                "stale" => stale = val.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(&a).ok_or(ChallengeError::Algorithm(a))?,
        };
        let qop_auth = match &qop {
            None => false,
            Some(q) => {
                let auth = q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth"));
                if !auth {
                    return Err(ChallengeError::QopAuthInt);
                }
                true
            }
        };
        Ok(Challenge {
            realm: realm.ok_or(ChallengeError::Missing("realm"))?,
            nonce: nonce.ok_or(ChallengeError::Missing("nonce"))?,
            opaque,
            algorithm,
            qop_auth,
            stale,
        })
    }

    /// Of several challenges (RFC 8760 §2.4: a server may offer one per algorithm), the one
    /// to answer: the strongest algorithm DCE implements.
    pub fn pick<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Challenge, ChallengeError> {
        let mut best: Option<Challenge> = None;
        let mut first_err = None;
        for v in values {
            match Challenge::parse(v) {
                Ok(c) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| c.algorithm.rank() < b.algorithm.rank())
                    {
                        best = Some(c);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        best.ok_or(first_err.unwrap_or(ChallengeError::NotDigest))
    }

    /// The answer's header value for `method` `uri`, with client nonce `cnonce` and nonce count
    /// `nc` (1 for the first request answering this nonce).
    pub fn answer(
        &self,
        creds: &Credentials,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let a = self.algorithm;
        let mut ha1 = a.hex(format!("{}:{}:{}", creds.user, self.realm, password).as_bytes());
        if a.sess() {
            ha1 = a.hex(format!("{ha1}:{}:{cnonce}", self.nonce).as_bytes());
        }
        let ha2 = a.hex(format!("{method}:{uri}").as_bytes());
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            a.hex(format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce).as_bytes())
        } else {
            a.hex(format!("{ha1}:{}:{ha2}", self.nonce).as_bytes())
        };
        let mut h = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            quote(&creds.user),
            quote(&self.realm),
            quote(&self.nonce),
            a.name()
        );
        if self.qop_auth || a.sess() {
            h.push_str(&format!(", cnonce=\"{}\"", quote(cnonce)));
        }
        if let Some(o) = &self.opaque {
            h.push_str(&format!(", opaque=\"{}\"", quote(o)));
        }
        if self.qop_auth {
            h.push_str(&format!(", qop=auth, nc={nc}"));
        }
        h
    }
}

/// Who DCE authenticates as. The password is not kept here: it is looked up (environment or
/// file) when an answer is computed, so it cannot end up in a debug print of this value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
}

/// How many requests one dialog has sent with the nonce it last answered (RFC 7616 §3.4:
/// `nc` counts the requests sent with a nonce, this one included). A server that challenges
/// again with the nonce it gave before gets the next count; a new nonce starts at 1. Only the
/// latest nonce is remembered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NonceCount {
    nonce: String,
    count: u32,
}

impl NonceCount {
    /// The `nc` for the next request answering `nonce`.
    pub fn next(&mut self, nonce: &str) -> u32 {
        if self.nonce != nonce {
            self.nonce = nonce.to_string();
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count
    }
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut esc = false;
            for c in inner.chars() {
                if esc {
                    out.push(c);
                    esc = false;
                } else if c == '\\' {
                    esc = true;
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

fn quote(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nonce_count_counts_up_for_a_nonce_and_starts_again_for_a_new_one() {
        let mut nc = NonceCount::default();
        assert_eq!(nc.next("abc"), 1);
        assert_eq!(nc.next("abc"), 2);
        assert_eq!(nc.next("abc"), 3);
        assert_eq!(nc.next("def"), 1, "a new nonce");
        assert_eq!(nc.next("abc"), 1, "only the latest nonce is remembered");
    }

    fn creds() -> Credentials {
        Credentials {
            user: "Mufasa".into(),
        }
    }

    fn response_of(h: &str) -> &str {
        let i = h.find("response=\"").unwrap() + 10;
        &h[i..i + h[i..].find('"').unwrap()]
    }

    #[test]
    fn rfc_2617_md5_qop_auth() {
        // RFC 2617 §3.5
        let c = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert!(c.qop_auth);
        let h = c.answer(
            &creds(),
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        );
        assert_eq!(response_of(&h), "6629fae49393a05397450978507c4ef1");
        assert!(h.contains("nc=00000001"), "{h}");
        assert!(
            h.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#),
            "{h}"
        );
        assert!(!h.contains("Circle"), "the password never appears: {h}");
    }

    #[test]
    fn rfc_7616_sha256_and_md5() {
        // RFC 7616 §3.9.1
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let base = format!(
            r#"realm="http-auth@example.org", qop="auth, auth-int", nonce="{nonce}", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
        );
        let sha = format!("Digest {base}, algorithm=SHA-256");
        let md5 = format!("Digest {base}, algorithm=MD5");
        // both offered: SHA-256 is picked, whatever the order
        let c = Challenge::pick([md5.as_str(), sha.as_str()]).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        let h = c.answer(
            &creds(),
            "Circle of Life",
            "GET",
            "/dir/index.html",
            cnonce,
            1,
        );
        assert_eq!(
            response_of(&h),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert!(h.contains("algorithm=SHA-256"), "{h}");
        let c = Challenge::parse(&md5).unwrap();
        let h = c.answer(
            &creds(),
            "Circle of Life",
            "GET",
            "/dir/index.html",
            cnonce,
            1,
        );
        assert_eq!(response_of(&h), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn without_qop_the_rfc_2069_form() {
        let c = Challenge::parse(r#"Digest realm="r", nonce="n""#).unwrap();
        assert!(!c.qop_auth);
        let h = c.answer(
            &Credentials { user: "u".into() },
            "p",
            "INVITE",
            "sip:a@b",
            "c",
            1,
        );
        let ha1 = Algorithm::Md5.hex(b"u:r:p");
        let ha2 = Algorithm::Md5.hex(b"INVITE:sip:a@b");
        assert_eq!(
            response_of(&h),
            Algorithm::Md5.hex(format!("{ha1}:n:{ha2}").as_bytes())
        );
        assert!(!h.contains("nc="), "{h}");
        assert!(!h.contains("cnonce"), "{h}");
    }

    #[test]
    fn challenges_dce_cannot_answer_are_refused() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Err(ChallengeError::NotDigest)
        );
        assert_eq!(
            Challenge::parse(r#"Digest nonce="n""#),
            Err(ChallengeError::Missing("realm"))
        );
        assert_eq!(
            Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA-512-256"#),
            Err(ChallengeError::Algorithm("SHA-512-256".into()))
        );
        assert_eq!(
            Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int""#),
            Err(ChallengeError::QopAuthInt)
        );
        let c = Challenge::parse(r#"digest REALM="r", Nonce="n", stale=TRUE, algorithm=md5-sess"#)
            .unwrap();
        assert!(c.stale);
        assert_eq!(c.algorithm, Algorithm::Md5Sess);
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let c = Challenge::parse(r#"Digest realm="a, \"b\"", nonce="x,y""#).unwrap();
        assert_eq!(c.realm, r#"a, "b""#);
        assert_eq!(c.nonce, "x,y");
        let h = c.answer(
            &Credentials { user: "u".into() },
            "p",
            "INVITE",
            "sip:a@b",
            "c",
            2,
        );
        assert!(h.contains(r#"realm="a, \"b\"""#), "{h}");
    }
}
