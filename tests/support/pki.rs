//! A test PKI (rcgen): a CA, and certificates it (or nobody) signed, written as PEM files.

#![allow(dead_code)]

use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// A CA that signs test certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// Its certificate as a PEM file.
    pub pem: PathBuf,
}

/// A certificate and key as PEM files.
pub struct Leaf {
    /// The certificate (chain: just the leaf).
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/{name}-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let cert = p.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Ca { cert, key, pem }
    }

    /// A certificate for `names` (host names or IP addresses), valid now unless `expired`,
    /// written to `dir/{file}.pem` and `dir/{file}.key`.
    pub fn issue(&self, dir: &Path, file: &str, names: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, names[0].to_string());
        if expired {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        } else {
            p.not_before = date_time_ymd(2025, 1, 1);
            p.not_after = date_time_ymd(2035, 1, 1);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        Leaf { cert: c, key: k }
    }
}
