//! STIR/SHAKEN (issue #16): the caller identity of an INVITE's `Identity` header, verified.
//!
//! This is the pure core: [`passport`] parses the header and checks the PASSporT's claims,
//! [`cert`] checks the signer's certificate chain and the signature, [`verify_identity`] puts
//! them together into a [`Verdict`]. Fetching the `x5u` certificate (HTTPS, cached, under the
//! call's lookup deadline) and the per-campaign policy build on it.

pub mod cert;
pub mod fetch;
pub mod passport;

pub use passport::Attestation;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dce_routing::{Require, StirPolicy, Trust};
use std::sync::Arc;

/// Why a PASSporT did not verify (`failed:<reason>` in the CDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The header or its PASSporT does not parse.
    Malformed,
    /// The compact form (no claims): SHAKEN's cannot be rebuilt from SIP.
    CompactForm,
    /// Not ES256.
    BadAlgorithm,
    /// Not a SHAKEN PASSporT (`ppt` is not `shaken`).
    NotShaken,
    /// The signature does not match the claims and the certificate's key.
    BadSignature,
    /// `iat` is further from now than `max_age_s`.
    Stale,
    /// `orig.tn` is not the caller, or no `dest.tn` is the dialled number.
    TnMismatch,
    /// The certificate does not chain to a configured trust anchor.
    Untrusted,
    /// The certificate is expired or not yet valid.
    CertExpired,
    /// The certificate has no TNAuthList (RFC 8226): not a SHAKEN certificate.
    NoTnAuthList,
    /// What the `x5u` served is no certificate.
    BadCertificate,
    /// The certificate could not be fetched in time.
    FetchFailed,
    /// The `x5u` is not on `x5u_allow` (or not HTTPS).
    X5uNotAllowed,
    /// A carrier trusted for its verdict (`trust_verstat`) said `TN-Validation-Failed`.
    CarrierVerstat,
}

impl Failure {
    /// The reason's name in `failed:<reason>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Malformed => "malformed",
            Failure::CompactForm => "compact_form",
            Failure::BadAlgorithm => "bad_alg",
            Failure::NotShaken => "not_shaken",
            Failure::BadSignature => "bad_signature",
            Failure::Stale => "stale",
            Failure::TnMismatch => "tn_mismatch",
            Failure::Untrusted => "untrusted_certificate",
            Failure::CertExpired => "certificate_expired",
            Failure::NoTnAuthList => "no_tn_auth_list",
            Failure::BadCertificate => "bad_certificate",
            Failure::FetchFailed => "fetch_failed",
            Failure::X5uNotAllowed => "x5u_not_allowed",
            Failure::CarrierVerstat => "carrier_verstat",
        }
    }

    /// The answer to an INVITE refused for it (RFC 8224 §6.2.2, §13.3): `438` Invalid Identity
    /// Header for the signature and the claims, `437` Unsupported Credential for the
    /// certificate, `436` Bad Identity Info when it cannot be had, `403` Stale Date.
    pub fn sip_code(self) -> (u16, &'static str) {
        match self {
            Failure::Stale => (403, "Stale Date"),
            Failure::Untrusted
            | Failure::CertExpired
            | Failure::NoTnAuthList
            | Failure::BadCertificate => (437, "Unsupported Credential"),
            Failure::FetchFailed | Failure::X5uNotAllowed => (436, "Bad Identity Info"),
            Failure::Malformed
            | Failure::CompactForm
            | Failure::BadAlgorithm
            | Failure::NotShaken
            | Failure::BadSignature
            | Failure::TnMismatch
            | Failure::CarrierVerstat => (438, "Invalid Identity Header"),
        }
    }
}

/// A call's caller-identity verdict (the CDR's `stir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Verified, with the signer's attestation.
    Verified(Attestation),
    /// The INVITE had no `Identity`.
    NoIdentity,
    /// It had one, and it did not verify.
    Failed(Failure),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Verified(a) => f.write_str(a.as_str()),
            Verdict::NoIdentity => f.write_str("no_identity"),
            Verdict::Failed(r) => write!(f, "failed:{}", r.as_str()),
        }
    }
}

impl Verdict {
    /// The trust it gives the call in the auction.
    pub fn trust(self) -> Trust {
        match self {
            Verdict::Verified(Attestation::A) => Trust::A,
            Verdict::Verified(Attestation::B) => Trust::B,
            Verdict::Verified(Attestation::C) => Trust::C,
            Verdict::NoIdentity | Verdict::Failed(_) => Trust::None,
        }
    }

    /// The metric label: `A`, `B`, `C`, `no_identity`, `failed`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Verified(a) => a.as_str(),
            Verdict::NoIdentity => "no_identity",
            Verdict::Failed(_) => "failed",
        }
    }
}

/// What the node verifies with (`[stir]`), shared by every SIP worker.
#[derive(Debug)]
pub struct Stir {
    /// The trust anchors.
    pub anchors: Arc<cert::Anchors>,
    /// How far `iat` may be from now, seconds.
    pub max_age_s: i64,
    /// How long a call waits for a certificate fetch.
    pub fetch_timeout: std::time::Duration,
    /// Hosts `x5u` may name.
    pub x5u_allow: Vec<String>,
    /// The certificate cache (filled by the driver's [`fetch::Fetcher`]).
    pub certs: Arc<fetch::Certs>,
    /// `sign_div`.
    pub div: Option<Arc<DivSigner>>,
}

impl Stir {
    /// From `[stir]`.
    pub fn new(c: &crate::config::StirConfig) -> Stir {
        Stir {
            anchors: c.anchors.clone(),
            max_age_s: i64::from(c.max_age_s),
            fetch_timeout: c.fetch_timeout,
            x5u_allow: c.x5u_allow.clone(),
            certs: Arc::new(fetch::Certs::new(c.cache_size)),
            div: c.sign_div.clone(),
        }
    }
}

/// A node's STIR/SHAKEN: what the workers verify with, and the fetcher that fills their
/// certificate cache. Made at start and on each reload: a reload that keeps the trust anchors
/// keeps the good certificates already checked against them (not the failures, which are
/// fetched again); one that changes them starts with an empty cache.
pub struct StirNode {
    /// Shared by the workers' controllers.
    pub stir: Arc<Stir>,
    /// Run by the workers' drivers for `Query::Cert`.
    pub fetcher: Arc<fetch::Fetcher>,
}

impl StirNode {
    /// From `[stir]`, keeping what `previous` (the node's STIR before a reload) checked when
    /// the trust anchors are the same.
    pub fn new(
        c: &crate::config::StirConfig,
        previous: Option<&StirNode>,
    ) -> Result<Arc<StirNode>, String> {
        let stir = Arc::new(Stir::new(c));
        if let Some(old) = previous.filter(|old| *old.stir.anchors == *stir.anchors) {
            let kept = stir
                .certs
                .keep_good(&old.stir.certs, std::time::Instant::now());
            tracing::info!(
                kept,
                "STIR: the trust anchors are unchanged; checked certificates kept"
            );
        }
        let fetcher = fetch::Fetcher::new(
            stir.certs.clone(),
            stir.anchors.clone(),
            c.x5u_ca_file.as_deref(),
            c.fetch_timeout,
        )
        .map_err(|e| format!("[stir] x5u_ca_file: {e}"))?;
        Ok(Arc::new(StirNode {
            stir,
            fetcher: Arc::new(fetcher),
        }))
    }
}

/// Where a call's verification stands after what can be done at once.
#[derive(Debug)]
pub enum Step {
    /// Decided.
    Done(Verdict),
    /// The signer's certificate is not cached: fetch `x5u`, then [`finish`].
    Fetch {
        /// The certificate's URL.
        x5u: String,
        /// The PASSporT whose signature waits for it (claims checked already).
        passport: Box<passport::Passport>,
    },
}

/// Verify what the INVITE's `Identity` headers say, as far as the cache allows: the first
/// SHAKEN one (`ppt=shaken`, or no `ppt`) is checked (claims, `x5u` allowed, then the cached
/// certificate), for a call from `caller` to `called` at `now_s` (wall clock) / `now`.
pub fn begin(
    stir: &Stir,
    identities: &[&str],
    caller: &str,
    called: &str,
    now_s: i64,
    now: std::time::Instant,
) -> Step {
    let shaken = |r: &Result<passport::Identity, Failure>| matches!(r, Ok(i) if i.ppt.as_deref().is_none_or(|p| p == "shaken"));
    let Some(parsed) = identities
        .iter()
        .map(|v| passport::parse_identity(v))
        .find(shaken)
        .or_else(|| identities.first().map(|v| passport::parse_identity(v)))
    else {
        return Step::Done(Verdict::NoIdentity);
    };
    let p = match parsed.and_then(|i| passport::decode(&i)) {
        Ok(p) => p,
        Err(f) => return Step::Done(Verdict::Failed(f)),
    };
    if let Err(f) = passport::check_claims(&p, caller, called, now_s, stir.max_age_s) {
        return Step::Done(Verdict::Failed(f));
    }
    if !fetch::x5u_allowed(&p.header.x5u, &stir.x5u_allow) {
        return Step::Done(Verdict::Failed(Failure::X5uNotAllowed));
    }
    match stir.certs.get(&p.header.x5u, now) {
        Some(c) => Step::Done(finish(&p, &c)),
        None => Step::Fetch {
            x5u: p.header.x5u.clone(),
            passport: Box::new(p),
        },
    }
}

/// The verdict once the signer's certificate is known (or known bad).
pub fn finish(p: &passport::Passport, signer: &fetch::Cached) -> Verdict {
    match signer {
        Ok(s) => match cert::verify_signature(p, s) {
            Ok(()) => Verdict::Verified(p.attest),
            Err(f) => Verdict::Failed(f),
        },
        Err(f) => Verdict::Failed(*f),
    }
}

/// What a carrier that verified the call itself said (`trust_verstat`): the `verstat`
/// parameter of `P-Asserted-Identity` (or `From`), with the attestation from
/// `P-Attestation-Indicator`, a `TN-Validation-Passed-<A|B|C>` suffix, or the PASSporT's
/// `attest` claim (read, not verified: the carrier vouched for it), else `C`. `None`: the
/// carrier said nothing and DCE verifies itself.
pub fn carrier_verdict(
    identity_headers: &[&str],
    pai: Option<&str>,
    from: &str,
    indicator: Option<&str>,
) -> Option<Verdict> {
    let verstat = |h: &str| -> Option<String> {
        let lower = h.to_ascii_lowercase();
        let at = lower.find("verstat=")? + "verstat=".len();
        let v: String = h[at..]
            .chars()
            .take_while(|c| !matches!(c, ';' | '>' | '@' | ',' | '&' | ' ' | '"'))
            .collect();
        Some(v)
    };
    let v = pai.and_then(verstat).or_else(|| verstat(from))?;
    let lower = v.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("tn-validation-passed") {
        let level = indicator
            .and_then(|i| Attestation::parse(i.trim()))
            .or_else(|| Attestation::parse(&rest.trim_start_matches('-').to_ascii_uppercase()))
            .or_else(|| {
                identity_headers.iter().find_map(|h| {
                    passport::parse_identity(h)
                        .and_then(|i| passport::decode(&i))
                        .ok()
                        .map(|p| p.attest)
                })
            })
            .unwrap_or(Attestation::C);
        Some(Verdict::Verified(level))
    } else if lower.starts_with("tn-validation-failed") {
        Some(Verdict::Failed(Failure::CarrierVerstat))
    } else if lower.starts_with("no-tn-validation") {
        Some(Verdict::NoIdentity)
    } else {
        None
    }
}

/// What a campaign's `stir` policy makes of a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Nothing to say.
    Pass,
    /// Refuse the INVITE with this code and reason phrase.
    Refuse(u16, &'static str),
    /// Go on; the buyer INVITE carries `Reason: STIR;cause=<code>;text="<text>"`.
    Flag(u16, String),
}

/// Judge `v` under `policy`. A call without a verified identity where one is required is
/// `428 Use Identity Header` (none carried) or its failure's code; one verified below the
/// required attestation is `608 Rejected` (RFC 8688: an intermediary's refusal on analytics).
pub fn judge(policy: StirPolicy, v: Verdict) -> Judgement {
    let (code, phrase, text) = match (policy.require, v) {
        (Require::Nothing, _) => return Judgement::Pass,
        (Require::Any, Verdict::Verified(_)) => return Judgement::Pass,
        (Require::AtLeast(min), Verdict::Verified(_)) if v.trust() >= min => {
            return Judgement::Pass
        }
        (Require::AtLeast(min), Verdict::Verified(a)) => (
            608,
            "Rejected",
            format!("attestation {} below {}", a.as_str(), min.as_str()),
        ),
        (_, Verdict::NoIdentity) => (428, "Use Identity Header", "no Identity".to_owned()),
        (_, Verdict::Failed(f)) => {
            let (c, p) = f.sip_code();
            (c, p, f.as_str().to_owned())
        }
    };
    if policy.flag {
        Judgement::Flag(code, text)
    } else {
        Judgement::Refuse(code, phrase)
    }
}

/// The `Reason` header value of a flagged call (RFC 9410).
pub fn reason_header(code: u16, text: &str) -> String {
    let text: String = text
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .take(100)
        .collect();
    format!("STIR;cause={code};text=\"{text}\"")
}

/// DCE's own signer of `div` PASSporTs (RFC 8946), `[stir] sign_div`.
pub struct DivSigner {
    key: ring::signature::EcdsaKeyPair,
    /// Where DCE's certificate is served.
    pub x5u: String,
}

impl std::fmt::Debug for DivSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DivSigner")
            .field("x5u", &self.x5u)
            .finish_non_exhaustive()
    }
}

impl DivSigner {
    /// From a PKCS#8 PEM P-256 key; `Err` says what is wrong (never the key).
    pub fn from_pem(x5u: &str, pem: &[u8]) -> Result<DivSigner, String> {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|_| {
            "no PKCS#8 private key in it (convert one with `openssl pkcs8 -topk8 -nocrypt`)"
                .to_owned()
        })?;
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|_| "the key is not a P-256 (ES256) key".to_owned())?;
        Ok(DivSigner {
            key,
            x5u: x5u.to_owned(),
        })
    }

    /// An `Identity` header value: a `div` PASSporT saying the call from `orig` to `div`
    /// (the number the carrier dialled) now goes to `dest`, signed at `iat`.
    pub fn sign(&self, orig: &str, div: &str, dest: &str, iat: i64) -> Option<String> {
        let esc = |s: &str| -> String { s.chars().filter(char::is_ascii_digit).collect() };
        let header = format!(
            r#"{{"alg":"ES256","ppt":"div","typ":"passport","x5u":{}}}"#,
            serde_json::to_string(&self.x5u).ok()?
        );
        let claims = format!(
            r#"{{"dest":{{"tn":["{}"]}},"div":{{"tn":"{}"}},"iat":{iat},"orig":{{"tn":"{}"}}}}"#,
            esc(dest),
            esc(div),
            esc(orig)
        );
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
            .ok()?;
        Some(format!(
            "{signed}.{};info=<{}>;alg=ES256;ppt=div",
            URL_SAFE_NO_PAD.encode(sig.as_ref()),
            self.x5u
        ))
    }
}

/// Verify an `Identity` header value for a call from `caller` to `called` (E.164 digits) at
/// `now_s`, with the signer's certificate `chain` (as its `x5u` served it): the claims first
/// (cheap, and they say whether the certificate is worth checking), then the chain, the
/// TNAuthList and the signature.
pub fn verify_identity(
    value: &str,
    caller: &str,
    called: &str,
    chain: &[rustls::pki_types::CertificateDer<'_>],
    anchors: &cert::Anchors,
    now_s: i64,
    max_age_s: i64,
) -> Verdict {
    let run = || -> Result<Attestation, Failure> {
        let p = passport::decode(&passport::parse_identity(value)?)?;
        passport::check_claims(&p, caller, called, now_s, max_age_s)?;
        cert::verify(&p, chain, anchors, now_s)?;
        Ok(p.attest)
    };
    match run() {
        Ok(a) => Verdict::Verified(a),
        Err(f) => Verdict::Failed(f),
    }
}

#[cfg(test)]
mod tests {
    use super::cert::test_pki::Pki;
    use super::*;

    #[test]
    fn a_call_gets_its_verdict() {
        let pki = Pki::new(true, (2024, 2030));
        let anchors = cert::Anchors::from_pem(pki.root_pem.as_bytes()).unwrap();
        let chain = cert::parse_chain(pki.chain_pem.as_bytes()).unwrap();
        let now = 1_790_000_000;
        let v = |id: &str, caller: &str| {
            verify_identity(id, caller, "18005550100", &chain, &anchors, now, 60).to_string()
        };
        for a in ["A", "B", "C"] {
            assert_eq!(
                v(
                    &pki.identity(a, "13105551234", "18005550100", now),
                    "13105551234"
                ),
                a
            );
        }
        let id = pki.identity("A", "13105551234", "18005550100", now);
        assert_eq!(v(&id, "13105550000"), "failed:tn_mismatch");
        let stale = pki.identity("A", "13105551234", "18005550100", now - 61);
        assert_eq!(v(&stale, "13105551234"), "failed:stale");
        assert_eq!(v("junk", "13105551234"), "failed:malformed");
        assert_eq!(Verdict::NoIdentity.to_string(), "no_identity");
        assert_eq!(Failure::Stale.sip_code(), (403, "Stale Date"));
        assert_eq!(Failure::X5uNotAllowed.sip_code().0, 436);
        assert_eq!(Failure::NoTnAuthList.sip_code().0, 437);
        assert_eq!(Failure::BadSignature.sip_code().0, 438);
    }

    #[test]
    fn policies_judge_verdicts() {
        use dce_routing::{Require, StirPolicy, Trust};
        let reject = |require| StirPolicy {
            require,
            flag: false,
        };
        let a = Verdict::Verified(Attestation::A);
        let c = Verdict::Verified(Attestation::C);
        let bad = Verdict::Failed(Failure::BadSignature);
        assert_eq!(judge(StirPolicy::default(), bad), Judgement::Pass);
        assert_eq!(judge(reject(Require::Any), c), Judgement::Pass);
        assert_eq!(
            judge(reject(Require::AtLeast(Trust::B)), a),
            Judgement::Pass
        );
        assert_eq!(
            judge(reject(Require::AtLeast(Trust::B)), c),
            Judgement::Refuse(608, "Rejected")
        );
        assert_eq!(
            judge(reject(Require::Any), Verdict::NoIdentity),
            Judgement::Refuse(428, "Use Identity Header")
        );
        assert_eq!(
            judge(reject(Require::Any), Verdict::Failed(Failure::Stale)),
            Judgement::Refuse(403, "Stale Date")
        );
        let flag = StirPolicy {
            require: Require::AtLeast(Trust::A),
            flag: true,
        };
        assert_eq!(
            judge(flag, Verdict::Verified(Attestation::B)),
            Judgement::Flag(608, "attestation B below A".into())
        );
        assert_eq!(
            reason_header(438, "bad\"sig\r\n"),
            "STIR;cause=438;text=\"badsig\""
        );
        assert_eq!(a.trust(), Trust::A);
        assert_eq!(bad.trust(), Trust::None);
        assert_eq!(bad.label(), "failed");
    }

    #[test]
    fn carrier_verstat_is_read_from_pai_or_from() {
        let pai = "<sip:+13105551234;verstat=TN-Validation-Passed@gw.example;user=phone>";
        assert_eq!(
            carrier_verdict(&[], Some(pai), "", Some("B")),
            Some(Verdict::Verified(Attestation::B))
        );
        assert_eq!(
            carrier_verdict(&[], Some(pai), "", None),
            Some(Verdict::Verified(Attestation::C)),
            "no level said: the lowest"
        );
        assert_eq!(
            carrier_verdict(
                &[],
                None,
                "<tel:+13105551234;verstat=TN-Validation-Passed-A>;tag=1",
                None
            ),
            Some(Verdict::Verified(Attestation::A))
        );
        assert_eq!(
            carrier_verdict(&[], None, "<sip:x;VERSTAT=TN-Validation-Failed@h>", None),
            Some(Verdict::Failed(Failure::CarrierVerstat))
        );
        assert_eq!(
            carrier_verdict(&[], None, "<sip:x;verstat=No-TN-Validation@h>", None),
            Some(Verdict::NoIdentity)
        );
        assert_eq!(carrier_verdict(&[], None, "<sip:x@h>;tag=1", None), None);
        // the level from the PASSporT the carrier vouched for
        let pki = Pki::new(true, (2024, 2030));
        let id = pki.identity("B", "13105551234", "18005550100", 1);
        assert_eq!(
            carrier_verdict(&[&id], Some(pai), "", None),
            Some(Verdict::Verified(Attestation::B))
        );
    }

    #[test]
    fn a_div_signer_needs_a_pkcs8_p256_key_and_never_shows_it() {
        assert!(DivSigner::from_pem("https://x.example/c.pem", b"junk").is_err());
        let pki = Pki::new(true, (2024, 2030));
        let s = DivSigner::from_pem("https://x.example/c.pem", pki.key_pem.as_bytes()).unwrap();
        let dbg = format!("{s:?}");
        assert!(
            dbg.contains("x.example") && !dbg.contains("PRIVATE"),
            "{dbg}"
        );
        let v = s
            .sign("+1 310 555 1234", "18005550100", "18005550199", 7)
            .unwrap();
        let id = passport::parse_identity(&v).unwrap();
        assert_eq!(id.ppt.as_deref(), Some("div"));
        let claims = URL_SAFE_NO_PAD.decode(id.payload_b64.unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(claims).unwrap(),
            r#"{"dest":{"tn":["18005550199"]},"div":{"tn":"18005550100"},"iat":7,"orig":{"tn":"13105551234"}}"#
        );
    }

    #[test]
    fn a_reload_keeps_checked_certificates_only_while_the_trust_anchors_stay() {
        use std::time::{Duration, Instant};
        let pki = Pki::new(true, (2024, 2030));
        let config = |root: &str, cache_size| crate::config::StirConfig {
            ca_file: "roots.pem".into(),
            anchors: Arc::new(cert::Anchors::from_pem(root.as_bytes()).unwrap()),
            max_age_s: 60,
            fetch_timeout: Duration::from_secs(1),
            x5u_allow: Vec::new(),
            x5u_ca_file: None,
            cache_size,
            sign_div: None,
        };
        let c = config(&pki.root_pem, 100);
        let anchors = cert::Anchors::from_pem(pki.root_pem.as_bytes()).unwrap();
        let chain = cert::parse_chain(pki.chain_pem.as_bytes()).unwrap();
        let signer = Arc::new(cert::validate_chain(&chain, &anchors, 1_790_000_000).unwrap());
        let now = Instant::now();
        let hour = now + Duration::from_secs(3600);
        let first = StirNode::new(&c, None).unwrap();
        let certs = &first.stir.certs;
        certs.put("https://a.example/sp.pem", Ok(signer.clone()), hour);
        certs.put(
            "https://b.example/sp.pem",
            Ok(signer.clone()),
            now + Duration::from_secs(60),
        );
        certs.put("https://c.example/sp.pem", Err(Failure::FetchFailed), hour);
        certs.put("https://d.example/sp.pem", Ok(signer.clone()), now); // expired

        // Same anchors: the good, fresh chains stay; the failure is fetched again.
        let second = StirNode::new(&c, Some(&first)).unwrap();
        let got = |n: &StirNode, u: &str| n.stir.certs.get(u, now).map(|r| r.is_ok());
        assert_eq!(got(&second, "https://a.example/sp.pem"), Some(true));
        assert_eq!(got(&second, "https://b.example/sp.pem"), Some(true));
        assert_eq!(got(&second, "https://c.example/sp.pem"), None);
        assert_eq!(second.stir.certs.len(), 2);

        // A smaller cache keeps those that expire last.
        let small = StirNode::new(&config(&pki.root_pem, 1), Some(&second)).unwrap();
        assert_eq!(got(&small, "https://a.example/sp.pem"), Some(true));
        assert_eq!(small.stir.certs.len(), 1);

        // Other anchors: nothing checked against the old ones is believed.
        let other = Pki::new(true, (2024, 2030));
        let third = StirNode::new(&config(&other.root_pem, 100), Some(&second)).unwrap();
        assert!(third.stir.certs.is_empty());
    }
}
