//! STIR/SHAKEN (issue #16): the caller identity of an INVITE's `Identity` header, verified.
//!
//! This is the pure core: [`passport`] parses the header and checks the PASSporT's claims,
//! [`cert`] checks the signer's certificate chain and the signature, [`verify_identity`] puts
//! them together into a [`Verdict`]. Fetching the `x5u` certificate (HTTPS, cached, under the
//! call's lookup deadline) and the per-campaign policy build on it.

pub mod cert;
pub mod passport;

pub use passport::Attestation;

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
            | Failure::TnMismatch => (438, "Invalid Identity Header"),
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
}
