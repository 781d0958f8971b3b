//! The `Identity` header (RFC 8224 §4.1) and the SHAKEN PASSporT it carries (RFC 8225,
//! RFC 8588): parsing, the signed bytes, the ES256 signature, the claims' checks. Pure: the
//! certificate that verifies a signature comes from [`super::cert`].
//!
//! ```text
//! Identity: <b64url header>.<b64url payload>.<b64url signature>
//!           ;info=<https://cert.example.org/sp.pem>;alg=ES256;ppt=shaken
//! ```
//!
//! The compact form leaves the payload out (`header..signature`); SHAKEN's `attest` and
//! `origid` cannot be rebuilt from SIP, so a compact SHAKEN PASSporT is refused as
//! `failed:compact_form` (RFC 8588 §6 uses the full form).

use super::Failure;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// Longest `Identity` header value DCE reads (a SHAKEN one is ~700 bytes; a `div` chain a few
/// of those).
pub const MAX_IDENTITY: usize = 4096;

/// One `Identity` header, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// base64url of the JOSE header, as sent (the signature covers these bytes).
    pub header_b64: String,
    /// base64url of the claims, as sent; `None` for the compact form.
    pub payload_b64: Option<String>,
    /// The signature (ES256: r ‖ s, 64 bytes).
    pub signature: Vec<u8>,
    /// `info=<…>`: where the certificate is (SHAKEN: the same as `x5u`).
    pub info: Option<String>,
    /// `alg=`.
    pub alg: Option<String>,
    /// `ppt=`.
    pub ppt: Option<String>,
}

/// The JOSE header of a PASSporT.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Header {
    /// `ES256`.
    pub alg: String,
    /// `passport`.
    #[serde(default)]
    pub typ: Option<String>,
    /// `shaken`, `div` …
    #[serde(default)]
    pub ppt: Option<String>,
    /// The signer's certificate.
    pub x5u: String,
}

/// A telephone-number claim (`{"tn": "…"}` or `{"tn": ["…"]}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum Tns {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct OrigClaim {
    tn: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DestClaim {
    tn: Option<Tns>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    attest: Option<String>,
    dest: Option<DestClaim>,
    iat: Option<i64>,
    orig: Option<OrigClaim>,
    origid: Option<String>,
}

/// SHAKEN's attestation levels (RFC 8588 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attestation {
    /// Gateway: the signer knows only where the call entered its network.
    C,
    /// Partial: the signer knows the customer, not that it may use the number.
    B,
    /// Full: the signer's customer is authorised to use the calling number.
    A,
}

impl Attestation {
    /// `A`, `B`, `C`.
    pub fn as_str(self) -> &'static str {
        match self {
            Attestation::A => "A",
            Attestation::B => "B",
            Attestation::C => "C",
        }
    }

    /// From the claim's letter.
    pub fn parse(s: &str) -> Option<Attestation> {
        match s {
            "A" => Some(Attestation::A),
            "B" => Some(Attestation::B),
            "C" => Some(Attestation::C),
            _ => None,
        }
    }
}

/// A decoded SHAKEN PASSporT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passport {
    /// Its header.
    pub header: Header,
    /// `attest`.
    pub attest: Attestation,
    /// `orig.tn`: the calling number, digits.
    pub orig_tn: String,
    /// `dest.tn`: the called numbers, digits.
    pub dest_tn: Vec<String>,
    /// `iat`: when it was signed, Unix seconds.
    pub iat: i64,
    /// `origid`: the signer's opaque id of the call's origin.
    pub origid: Option<String>,
    /// What the signature covers: `header_b64 "." payload_b64`.
    pub signed: Vec<u8>,
    /// The signature, r ‖ s.
    pub signature: Vec<u8>,
}

/// Parse an `Identity` header value.
pub fn parse_identity(value: &str) -> Result<Identity, Failure> {
    if value.len() > MAX_IDENTITY {
        return Err(Failure::Malformed);
    }
    let mut parts = value.split(';');
    let token = parts.next().unwrap_or("").trim();
    let (mut info, mut alg, mut ppt) = (None, None, None);
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "info" => {
                let uri = v
                    .strip_prefix('<')
                    .and_then(|v| v.strip_suffix('>'))
                    .ok_or(Failure::Malformed)?;
                info = Some(uri.to_owned());
            }
            "alg" => alg = Some(v.to_owned()),
            "ppt" => ppt = Some(v.trim_matches('"').to_owned()),
            _ => {}
        }
    }
    let mut pieces = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(Failure::Malformed);
    };
    let b64 = |x: &str| {
        x.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if h.is_empty() || s.is_empty() || !b64(h) || !b64(p) || !b64(s) {
        return Err(Failure::Malformed);
    }
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| Failure::Malformed)?;
    Ok(Identity {
        header_b64: h.to_owned(),
        payload_b64: (!p.is_empty()).then(|| p.to_owned()),
        signature,
        info,
        alg,
        ppt,
    })
}

/// Decode the full form's header and claims (no signature check yet).
pub fn decode(id: &Identity) -> Result<Passport, Failure> {
    let Some(payload_b64) = &id.payload_b64 else {
        return Err(Failure::CompactForm);
    };
    let json = |b: &str| URL_SAFE_NO_PAD.decode(b).map_err(|_| Failure::Malformed);
    let header: Header =
        serde_json::from_slice(&json(&id.header_b64)?).map_err(|_| Failure::Malformed)?;
    if header.alg != "ES256" || id.alg.as_deref().is_some_and(|a| a != "ES256") {
        return Err(Failure::BadAlgorithm);
    }
    if header.ppt.as_deref() != Some("shaken") || id.ppt.as_deref().is_some_and(|p| p != "shaken") {
        return Err(Failure::NotShaken);
    }
    let claims: Claims =
        serde_json::from_slice(&json(payload_b64)?).map_err(|_| Failure::Malformed)?;
    let attest = claims
        .attest
        .as_deref()
        .and_then(Attestation::parse)
        .ok_or(Failure::Malformed)?;
    let orig_tn = claims.orig.and_then(|o| o.tn).ok_or(Failure::Malformed)?;
    let dest_tn = match claims.dest.and_then(|d| d.tn) {
        Some(Tns::One(t)) => vec![t],
        Some(Tns::Many(v)) if !v.is_empty() => v,
        _ => return Err(Failure::Malformed),
    };
    let iat = claims.iat.ok_or(Failure::Malformed)?;
    let mut signed = Vec::with_capacity(id.header_b64.len() + 1 + payload_b64.len());
    signed.extend_from_slice(id.header_b64.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(payload_b64.as_bytes());
    Ok(Passport {
        header,
        attest,
        orig_tn,
        dest_tn,
        iat,
        origid: claims.origid,
        signed,
        signature: id.signature.clone(),
    })
}

/// The digits of a telephone number claim or a SIP number, NANP numbers with their country
/// code (`2155551212` and `+1 215-555-1212` are `12155551212`).
pub fn tn_digits(s: &str) -> String {
    let d: String = s.chars().filter(char::is_ascii_digit).collect();
    if d.len() == 10 {
        format!("1{d}")
    } else {
        d
    }
}

/// Check `p`'s claims against the call: signed no more than `max_age_s` ago (nor that far in
/// the future), from `caller` to `called` (E.164 digits).
pub fn check_claims(
    p: &Passport,
    caller: &str,
    called: &str,
    now_s: i64,
    max_age_s: i64,
) -> Result<(), Failure> {
    if (now_s - p.iat).abs() > max_age_s {
        return Err(Failure::Stale);
    }
    if tn_digits(&p.orig_tn) != tn_digits(caller) {
        return Err(Failure::TnMismatch);
    }
    let called = tn_digits(called);
    if !p.dest_tn.iter().any(|t| tn_digits(t) == called) {
        return Err(Failure::TnMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn identity(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.{};info=<https://cert.example.org/sp.pem>;alg=ES256;ppt=shaken",
            b64(header),
            b64(claims),
            URL_SAFE_NO_PAD.encode([7u8; 64])
        )
    }

    const HEADER: &str = r#"{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"https://cert.example.org/sp.pem"}"#;
    const CLAIMS: &str = r#"{"attest":"B","dest":{"tn":["18005550100"]},"iat":1700000000,"orig":{"tn":"13105551234"},"origid":"123e4567-e89b-12d3-a456-426655440000"}"#;

    #[test]
    fn a_full_form_shaken_identity_decodes() {
        let id = parse_identity(&identity(HEADER, CLAIMS)).unwrap();
        assert_eq!(id.info.as_deref(), Some("https://cert.example.org/sp.pem"));
        assert_eq!(
            (id.alg.as_deref(), id.ppt.as_deref()),
            (Some("ES256"), Some("shaken"))
        );
        let p = decode(&id).unwrap();
        assert_eq!(p.attest, Attestation::B);
        assert_eq!(p.orig_tn, "13105551234");
        assert_eq!(p.dest_tn, ["18005550100"]);
        assert_eq!(p.iat, 1_700_000_000);
        assert_eq!(p.header.x5u, "https://cert.example.org/sp.pem");
        assert_eq!(
            p.signed,
            format!("{}.{}", b64(HEADER), b64(CLAIMS)).into_bytes(),
            "the signature covers the header and claims exactly as sent"
        );
        // a single dest tn as a string, a quoted ppt, parameters in any case
        let one = CLAIMS.replace(r#"["18005550100"]"#, r#""18005550100""#);
        let v = identity(HEADER, &one).replace("ppt=shaken", "PPT=\"shaken\"");
        assert_eq!(
            decode(&parse_identity(&v).unwrap()).unwrap().dest_tn,
            ["18005550100"]
        );
    }

    #[test]
    fn what_is_not_a_shaken_passport_is_refused_with_its_reason() {
        let compact = format!("{}..{};info=<https://x/y>", b64(HEADER), b64("sig"));
        assert_eq!(
            decode(&parse_identity(&compact).unwrap()),
            Err(Failure::CompactForm)
        );
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "a$.b.c",
            ".b.c",
            "a.b.",
            "a.b.c;info=https://no-brackets",
        ] {
            assert_eq!(parse_identity(bad), Err(Failure::Malformed), "{bad:?}");
        }
        assert_eq!(
            parse_identity(&"a".repeat(MAX_IDENTITY + 1)),
            Err(Failure::Malformed)
        );
        let rs = HEADER.replace("ES256", "RS256");
        assert_eq!(
            decode(&parse_identity(&identity(&rs, CLAIMS)).unwrap()),
            Err(Failure::BadAlgorithm)
        );
        let div = HEADER.replace("shaken", "div");
        assert_eq!(
            decode(&parse_identity(&identity(&div, CLAIMS)).unwrap()),
            Err(Failure::NotShaken)
        );
        for claims in [
            CLAIMS.replace(r#""attest":"B""#, r#""attest":"D""#),
            CLAIMS.replace(r#","iat":1700000000"#, ""),
            CLAIMS.replace(r#""dest":{"tn":["18005550100"]}"#, r#""dest":{"tn":[]}"#),
            CLAIMS.replace(r#""orig":{"tn":"13105551234"}"#, r#""orig":{}"#),
            "not json".into(),
        ] {
            assert_eq!(
                decode(&parse_identity(&identity(HEADER, &claims)).unwrap()),
                Err(Failure::Malformed),
                "{claims}"
            );
        }
    }

    #[test]
    fn claims_are_checked_against_the_call() {
        let p = decode(&parse_identity(&identity(HEADER, CLAIMS)).unwrap()).unwrap();
        let t = 1_700_000_000;
        assert_eq!(
            check_claims(&p, "+1 310 555 1234", "8005550100", t + 59, 60),
            Ok(())
        );
        assert_eq!(
            check_claims(&p, "13105551234", "18005550100", t + 61, 60),
            Err(Failure::Stale)
        );
        assert_eq!(
            check_claims(&p, "13105551234", "18005550100", t - 61, 60),
            Err(Failure::Stale)
        );
        assert_eq!(
            check_claims(&p, "13105559999", "18005550100", t, 60),
            Err(Failure::TnMismatch)
        );
        assert_eq!(
            check_claims(&p, "13105551234", "18005550199", t, 60),
            Err(Failure::TnMismatch)
        );
    }
}
