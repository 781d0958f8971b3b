//! The signer's certificate (RFC 8226, ATIS-1000080): its chain to the configured STI-PA trust
//! anchors (`[stir] ca_file`), its validity at the call's time, the SHAKEN profile's TNAuthList
//! extension, and the PASSporT's ES256 signature under its key. Pure: the certificate's bytes
//! come from the fetcher, off the call path.

use super::passport::Passport;
use super::Failure;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use std::time::Duration;

/// `id-pe-TNAuthList` (RFC 8226 §9): 1.3.6.1.5.5.7.1.26, DER-encoded.
const TN_AUTH_LIST: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1a];

/// The trust anchors certificates must chain to (equal when they hold the same CAs in the
/// same order: a reload that keeps them keeps the certificates checked against them).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Anchors {
    anchors: Vec<TrustAnchor<'static>>,
}

impl Anchors {
    /// The CA certificates of a PEM file's contents; `Err` says what is wrong.
    pub fn from_pem(pem: &[u8]) -> Result<Anchors, String> {
        let mut anchors = Vec::new();
        for (i, c) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let c = c.map_err(|e| format!("certificate {} is not PEM: {e:?}", i + 1))?;
            let a = webpki::anchor_from_trusted_cert(&c)
                .map_err(|e| format!("certificate {} is no usable CA: {e:?}", i + 1))?;
            anchors.push(a.to_owned());
        }
        if anchors.is_empty() {
            return Err("no certificate in it".into());
        }
        Ok(Anchors { anchors })
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// None.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// What an `x5u` served: the signer's certificate first, then the intermediates (PEM, as
/// SHAKEN serves it; a single DER certificate is accepted too).
pub fn parse_chain(body: &[u8]) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let pem: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(body).collect();
    match pem {
        Ok(v) if !v.is_empty() => Ok(v),
        _ if body.first() == Some(&0x30) => Ok(vec![CertificateDer::from(body.to_vec())]),
        _ => Err(Failure::BadCertificate),
    }
}

/// Any extended key usage (or none) will do: SHAKEN certificates need not carry one.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// Signature algorithms accepted on the certificates of a chain.
static CHAIN_ALGS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
];

/// A signer's certificate, checked: what verifying a PASSporT against it needs, kept in the
/// certificate cache so a call with a cached `x5u` costs one signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The P-256 public key, an uncompressed point (65 bytes).
    key: Vec<u8>,
    /// The earliest `notAfter` of the chain, Unix seconds: past it the chain is checked again.
    pub not_after_s: i64,
}

/// `prime256v1` (1.2.840.10045.3.1.7), DER-encoded.
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Check `chain` (signer first) against `anchors` at `now_s`, and that the signer's
/// certificate is a SHAKEN one (TNAuthList) with a P-256 key.
pub fn validate_chain(
    chain: &[CertificateDer<'_>],
    anchors: &Anchors,
    now_s: i64,
) -> Result<Signer, Failure> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(Failure::BadCertificate);
    };
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|_| Failure::BadCertificate)?;
    let now = UnixTime::since_unix_epoch(Duration::from_secs(now_s.max(0) as u64));
    ee.verify_for_usage(
        CHAIN_ALGS,
        &anchors.anchors,
        intermediates,
        now,
        AnyUsage,
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            Failure::CertExpired
        }
        _ => Failure::Untrusted,
    })?;
    if !has_extension(leaf, TN_AUTH_LIST) {
        return Err(Failure::NoTnAuthList);
    }
    let key = p256_key(&ee.subject_public_key_info()).ok_or(Failure::BadCertificate)?;
    let not_after_s = chain
        .iter()
        .filter_map(|c| not_after(c))
        .min()
        .unwrap_or(i64::MAX);
    Ok(Signer { key, not_after_s })
}

/// Did `signer` sign `p`? (ES256: the JWS signature is r ‖ s, ring's fixed form.)
pub fn verify_signature(p: &Passport, signer: &Signer) -> Result<(), Failure> {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &signer.key)
        .verify(&p.signed, &p.signature)
        .map_err(|_| Failure::BadSignature)
}

/// Check `chain` (signer first) against `anchors` at `now_s`, that the signer's certificate
/// has the TNAuthList extension, and that it signed `p`.
pub fn verify(
    p: &Passport,
    chain: &[CertificateDer<'_>],
    anchors: &Anchors,
    now_s: i64,
) -> Result<(), Failure> {
    verify_signature(p, &validate_chain(chain, anchors, now_s)?)
}

/// The uncompressed point of a P-256 SubjectPublicKeyInfo.
fn p256_key(spki: &[u8]) -> Option<Vec<u8>> {
    let (_, spki, _) = element(spki)?;
    let (_, alg, rest) = element(spki)?;
    let (_, _ec_public_key, curve) = element(alg)?;
    let (tag, curve, _) = element(curve)?;
    if tag != 0x06 || curve != P256 {
        return None;
    }
    let (tag, bits, _) = element(rest)?;
    match bits.split_first() {
        Some((0, point)) if tag == 0x03 && point.len() == 65 && point[0] == 4 => {
            Some(point.to_vec())
        }
        _ => None,
    }
}

/// A certificate's `notAfter`, Unix seconds (`None` when it cannot be read).
fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert, _) = element(der)?;
    let (_, tbs, _) = element(cert)?;
    let (tag, _, mut rest) = element(tbs)?;
    if tag == 0xa0 {
        rest = element(rest)?.2; // past the version: the serial
    }
    let rest = element(rest)?.2; // signature algorithm
    let rest = element(rest)?.2; // issuer
    let (_, validity, _) = element(rest)?;
    let (_, _, after) = element(validity)?; // notBefore
    let (tag, t, _) = element(after)?;
    let t = std::str::from_utf8(t).ok()?.strip_suffix('Z')?;
    let full = match (tag, t.len()) {
        (0x17, 12) => {
            let yy: u32 = t[..2].parse().ok()?;
            format!("{}{t}", if yy >= 50 { "19" } else { "20" })
        }
        (0x18, 14) => t.to_owned(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%S")
        .ok()
        .map(|d| d.and_utc().timestamp())
}

/// A DER element: (tag, contents, rest). Bounds-checked: hostile bytes give `None`.
fn element(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, d) = d.split_first()?;
    let (&l0, d) = d.split_first()?;
    let (len, d) = if l0 < 0x80 {
        (usize::from(l0), d)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || d.len() < n {
            return None;
        }
        let len = d[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &d[n..])
    };
    (d.len() >= len).then(|| (tag, &d[..len], &d[len..]))
}

/// Does certificate `der` carry an extension with OID `oid` (its DER contents)?
fn has_extension(der: &[u8], oid: &[u8]) -> bool {
    fn find(der: &[u8], oid: &[u8]) -> Option<bool> {
        let (_, cert, _) = element(der)?; // Certificate SEQUENCE
        let (_, mut tbs, _) = element(cert)?; // tbsCertificate SEQUENCE
        while !tbs.is_empty() {
            let (tag, body, rest) = element(tbs)?;
            tbs = rest;
            if tag != 0xa3 {
                continue; // [3] extensions
            }
            let (_, mut exts, _) = element(body)?; // SEQUENCE OF Extension
            while !exts.is_empty() {
                let (_, ext, rest) = element(exts)?;
                exts = rest;
                let (tag, id, _) = element(ext)?;
                if tag == 0x06 && id == oid {
                    return Some(true);
                }
            }
        }
        Some(false)
    }
    find(der, oid).unwrap_or(false)
}

#[cfg(test)]
#[path = "../../tests/support/stir_pki.rs"]
pub(crate) mod test_pki;

#[cfg(test)]
mod tests {
    use super::test_pki::Pki;
    use super::*;
    use crate::stir::passport::{decode, parse_identity};

    const NOW: i64 = 1_790_000_000; // 2026-09

    fn check(pki: &Pki, anchors_pem: &str, identity: &str) -> Result<(), Failure> {
        let anchors = Anchors::from_pem(anchors_pem.as_bytes()).unwrap();
        let chain = parse_chain(pki.chain_pem.as_bytes())?;
        let p = decode(&parse_identity(identity)?)?;
        verify(&p, &chain, &anchors, NOW)
    }

    #[test]
    fn a_passport_signed_by_a_shaken_certificate_that_chains_to_the_root_verifies() {
        let pki = Pki::new(true, (2024, 2030));
        let id = pki.identity("A", "13105551234", "18005550100", NOW);
        assert_eq!(check(&pki, &pki.root_pem, &id), Ok(()));
        assert_eq!(parse_chain(pki.chain_pem.as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn each_certificate_or_signature_fault_has_its_reason() {
        let pki = Pki::new(true, (2024, 2030));
        let id = pki.identity("A", "13105551234", "18005550100", NOW);
        // one changed byte of the claims: the signature no longer matches
        let tampered = super::test_pki::tampered(&id);
        assert_eq!(
            check(&pki, &pki.root_pem, &tampered),
            Err(Failure::BadSignature)
        );
        // another PKI's root: untrusted
        let other = Pki::new(true, (2024, 2030));
        assert_eq!(check(&pki, &other.root_pem, &id), Err(Failure::Untrusted));
        // expired, and not yet valid
        let old = Pki::new(true, (2020, 2025));
        let id_old = old.identity("A", "13105551234", "18005550100", NOW);
        assert_eq!(
            check(&old, &old.root_pem, &id_old),
            Err(Failure::CertExpired)
        );
        let early = Pki::new(true, (2027, 2030));
        let id_early = early.identity("A", "13105551234", "18005550100", NOW);
        assert_eq!(
            check(&early, &early.root_pem, &id_early),
            Err(Failure::CertExpired)
        );
        // no TNAuthList: not a SHAKEN certificate
        let plain = Pki::new(false, (2024, 2030));
        let id_plain = plain.identity("A", "13105551234", "18005550100", NOW);
        assert_eq!(
            check(&plain, &plain.root_pem, &id_plain),
            Err(Failure::NoTnAuthList)
        );
        // what the x5u served is no certificate
        assert_eq!(
            parse_chain(b"<html>not found</html>"),
            Err(Failure::BadCertificate)
        );
    }

    #[test]
    fn hostile_der_does_not_panic() {
        let pki = Pki::new(true, (2024, 2030));
        let der = parse_chain(pki.chain_pem.as_bytes()).unwrap()[0].to_vec();
        assert!(has_extension(&der, TN_AUTH_LIST));
        for n in 0..der.len() {
            // every truncation, and a flipped length byte at every position
            let _ = has_extension(&der[..n], TN_AUTH_LIST);
            let mut d = der.clone();
            d[n] ^= 0xff;
            let _ = has_extension(&d, TN_AUTH_LIST);
        }
        assert!(!has_extension(
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            TN_AUTH_LIST
        ));
    }

    #[test]
    fn the_trust_anchor_file_must_hold_cas() {
        assert!(Anchors::from_pem(b"").is_err());
        let pki = Pki::new(true, (2024, 2030));
        assert_eq!(Anchors::from_pem(pki.root_pem.as_bytes()).unwrap().len(), 1);
    }
}
