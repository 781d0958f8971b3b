//! A test STI PKI (root → intermediate → SHAKEN signer with TNAuthList), generated with rcgen,
//! and `Identity` headers signed by its signer. Shared by `src/stir`'s unit tests (included by
//! path) and the integration tests.
#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, CustomExtension, IsCa, KeyPair};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// The PKI and its signer.
pub struct Pki {
    /// The STI-PA root (what `[stir] ca_file` holds).
    pub root_pem: String,
    /// The signer's certificate, then the intermediate (what the `x5u` serves).
    pub chain_pem: String,
    /// The signer's key, PKCS#8 PEM (for `sign_div`).
    pub key_pem: String,
    signer: EcdsaKeyPair,
    /// The `x5u` the PASSporTs name.
    pub x5u: String,
}

fn ca(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_owned());
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p
}

impl Pki {
    /// A PKI whose signer is valid from 1 January of `years.0` to 1 January of `years.1`, with
    /// the TNAuthList extension unless told not.
    pub fn new(tn_auth_list: bool, years: (i32, i32)) -> Pki {
        let root_key = KeyPair::generate().unwrap();
        let root = ca("Test STI-PA Root").self_signed(&root_key).unwrap();
        let int_key = KeyPair::generate().unwrap();
        let int = ca("Test STI-CA")
            .signed_by(&int_key, &root, &root_key)
            .unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "SHAKEN 1234".to_owned());
        p.not_before = date_time_ymd(years.0, 1, 1);
        p.not_after = date_time_ymd(years.1, 1, 1);
        if tn_auth_list {
            // TNAuthorizationList ::= SEQUENCE OF TNEntry; TNEntry spc [0] "1234"
            let content = vec![0x30, 0x08, 0xa0, 0x06, 0x16, 0x04, b'1', b'2', b'3', b'4'];
            p.custom_extensions.push(CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 5, 5, 7, 1, 26],
                content,
            ));
        }
        let leaf = p.signed_by(&leaf_key, &int, &int_key).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &leaf_key.serialize_der(),
            &rng,
        )
        .unwrap();
        Pki {
            root_pem: root.pem(),
            chain_pem: format!("{}{}", leaf.pem(), int.pem()),
            key_pem: leaf_key.serialize_pem(),
            signer,
            x5u: "https://cert.example.org/sp.pem".into(),
        }
    }

    /// The same PKI, its PASSporTs naming `x5u`.
    pub fn with_x5u(mut self, x5u: &str) -> Pki {
        self.x5u = x5u.to_owned();
        self
    }

    /// A signed `Identity` header value: attestation `attest`, from `orig` to `dest`, signed
    /// at `iat` (Unix seconds).
    pub fn identity(&self, attest: &str, orig: &str, dest: &str, iat: i64) -> String {
        let header = format!(
            r#"{{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"{}"}}"#,
            self.x5u
        );
        let claims = format!(
            r#"{{"attest":"{attest}","dest":{{"tn":["{dest}"]}},"iat":{iat},"orig":{{"tn":"{orig}"}},"origid":"de305d54-75b4-431b-adb2-eb6b9e546014"}}"#
        );
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let rng = ring::rand::SystemRandom::new();
        let sig = self.signer.sign(&rng, signed.as_bytes()).unwrap();
        format!(
            "{signed}.{};info=<{}>;alg=ES256;ppt=shaken",
            URL_SAFE_NO_PAD.encode(sig.as_ref()),
            self.x5u
        )
    }
}

/// `identity` with one byte of its claims changed (attest `A` → `B`): the signature no longer
/// matches.
pub fn tampered(identity: &str) -> String {
    let (token, params) = identity.split_once(';').unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
    let at = claims.iter().position(|&b| b == b'A').unwrap();
    claims[at] = b'B';
    parts[1] = URL_SAFE_NO_PAD.encode(&claims);
    format!("{};{params}", parts.join("."))
}
