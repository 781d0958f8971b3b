//! `[stir]` (STIR/SHAKEN verification, issue #16), a campaign's `stir = { require, on_fail }`
//! and a buyer's `min_attestation` / `attestation_bid`.

use super::walk::{Table, Walk};
use crate::stir::cert::Anchors;
use crate::stir::DivSigner;
use dce_routing::{AttestationBid, Require, StirPolicy, Trust};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `[stir]`: with it, every INVITE carrying `Identity` is verified.
#[derive(Debug, Clone)]
pub struct StirConfig {
    /// `ca_file`: the STI-PA trust anchors (PEM), read at load.
    pub ca_file: PathBuf,
    /// Its certificates.
    pub anchors: Arc<Anchors>,
    /// `max_age_s` (default 60): how far `iat` may be from now.
    pub max_age_s: u32,
    /// `fetch_timeout_ms` (default 1000): a certificate fetch's deadline, and how long a call
    /// waits for it.
    pub fetch_timeout: Duration,
    /// `x5u_allow`: the hosts certificates may be fetched from (`name` or `*.domain`); empty:
    /// any name, never an IP literal or `localhost`.
    pub x5u_allow: Vec<String>,
    /// `x5u_ca_file`: CAs trusted for the certificate servers' HTTPS, beside the system's.
    pub x5u_ca_file: Option<PathBuf>,
    /// `cache_size` (default 10,000): certificates kept.
    pub cache_size: usize,
    /// `sign_div = { x5u, key }`: sign a `div` PASSporT for the buyer leg.
    pub sign_div: Option<Arc<DivSigner>>,
}

/// Read `[stir]` (absent: no verification).
pub fn read(w: &mut Walk<'_>, root: Table<'_, '_>) -> Option<StirConfig> {
    let t = w.table(root, "stir", "stir", false)?;
    w.unknown_keys(
        t,
        &[
            "ca_file",
            "max_age_s",
            "fetch_timeout_ms",
            "x5u_allow",
            "x5u_ca_file",
            "cache_size",
            "sign_div",
        ],
    );
    let (ca_file, span) = w.string(t, "ca_file", true)?;
    let anchors = match std::fs::read(&ca_file) {
        Ok(pem) => match Anchors::from_pem(&pem) {
            Ok(a) => a,
            Err(e) => {
                w.error(span, format!("`stir.ca_file` `{ca_file}`: {e}"));
                return None;
            }
        },
        Err(e) => {
            w.error(
                span,
                format!("`stir.ca_file`: cannot read `{ca_file}`: {e}"),
            );
            return None;
        }
    };
    let max_age_s = w
        .int(t, "max_age_s", 1, 3600)
        .map(|(v, _)| v as u32)
        .unwrap_or(60);
    let fetch_timeout = w
        .int(t, "fetch_timeout_ms", 10, 10_000)
        .map(|(v, _)| Duration::from_millis(v as u64))
        .unwrap_or(Duration::from_millis(1000));
    let mut x5u_allow = Vec::new();
    for (p, span) in w.strings(t, "x5u_allow", false).unwrap_or_default() {
        let name = p.strip_prefix("*.").unwrap_or(&p);
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':');
        if ok {
            x5u_allow.push(p.to_ascii_lowercase());
        } else {
            w.error(
                span,
                format!("`stir.x5u_allow`: `{p}` is not a host name, `*.domain` or an IP address"),
            );
        }
    }
    let x5u_ca_file = w.string(t, "x5u_ca_file", false).map(|(p, _)| p.into());
    let cache_size = w
        .int(t, "cache_size", 1, 1_000_000)
        .map(|(v, _)| v as usize)
        .unwrap_or(10_000);
    let sign_div = w
        .table(t, "sign_div", "stir.sign_div", false)
        .and_then(|d| sign_div(w, d));
    Some(StirConfig {
        ca_file: ca_file.into(),
        anchors: Arc::new(anchors),
        max_age_s,
        fetch_timeout,
        x5u_allow,
        x5u_ca_file,
        cache_size,
        sign_div,
    })
}

fn sign_div(w: &mut Walk<'_>, t: Table<'_, '_>) -> Option<Arc<DivSigner>> {
    w.unknown_keys(t, &["x5u", "key"]);
    let x5u = w.string(t, "x5u", true);
    let key = w.string(t, "key", true);
    let ((x5u, xspan), (key, kspan)) = (x5u?, key?);
    if crate::stir::fetch::https_host(&x5u).is_none() {
        w.error(
            xspan,
            format!("`stir.sign_div.x5u` `{x5u}` must be an https:// URL"),
        );
        return None;
    }
    let pem = match std::fs::read(&key) {
        Ok(p) => p,
        Err(e) => {
            w.error(
                kspan,
                format!("`stir.sign_div.key`: cannot read `{key}`: {e}"),
            );
            return None;
        }
    };
    match DivSigner::from_pem(&x5u, &pem) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            w.error(kspan, format!("`stir.sign_div.key` `{key}`: {e}"));
            None
        }
    }
}

/// A campaign's `stir = { require = "A"|"B"|"C"|"any"|"none", on_fail = "reject"|"flag" }`.
pub fn campaign_policy(w: &mut Walk<'_>, t: Table<'_, '_>) -> StirPolicy {
    w.unknown_keys(t, &["require", "on_fail"]);
    let mut p = StirPolicy::default();
    if let Some((r, span)) = w.string(t, "require", false) {
        p.require = match r.as_str() {
            "none" => Require::Nothing,
            "any" => Require::Any,
            other => match Trust::parse_level(other) {
                Some(t) => Require::AtLeast(t),
                None => {
                    w.error(
                        span,
                        "`campaign.stir.require` must be \"A\", \"B\", \"C\", \"any\" or \"none\"",
                    );
                    Require::Nothing
                }
            },
        };
    }
    if let Some((f, span)) = w.string(t, "on_fail", false) {
        p.flag = match f.as_str() {
            "reject" => false,
            "flag" => true,
            _ => {
                w.error(
                    span,
                    "`campaign.stir.on_fail` must be \"reject\" or \"flag\"",
                );
                false
            }
        };
    }
    p
}

/// A buyer's `min_attestation = "A"|"B"|"C"` (absent: none).
pub fn min_attestation(w: &mut Walk<'_>, t: Table<'_, '_>) -> Trust {
    match w.string(t, "min_attestation", false) {
        None => Trust::None,
        Some((v, span)) => Trust::parse_level(&v).unwrap_or_else(|| {
            w.error(
                span,
                "`buyer.min_attestation` must be \"A\", \"B\" or \"C\"",
            );
            Trust::None
        }),
    }
}

/// A buyer's `attestation_bid = { A = 1, B = 0.8, C = 0.5, none = 0.2 }` (each 0 to 1,
/// absent = 1).
pub fn attestation_bid(w: &mut Walk<'_>, t: Table<'_, '_>) -> AttestationBid {
    w.unknown_keys(t, &["A", "B", "C", "none"]);
    let mut bid = AttestationBid::default();
    for (key, level) in [
        ("A", Trust::A),
        ("B", Trust::B),
        ("C", Trust::C),
        ("none", Trust::None),
    ] {
        if let Some((m, _)) = w.multiplier(t, key) {
            bid.0[level.index()] = (m * 1_000_000.0).round() as u32;
        }
    }
    bid
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    const BASE: &str = "[node]\nid = \"n\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n\
        [[carrier]]\nid = \"c\"\nsources = [\"127.0.0.1/32\"]\n";

    /// Files of a fresh PKI in a directory of this test's own (tests run side by side).
    fn roots(test: &str) -> (std::path::PathBuf, super::super::super::stir::cert::Anchors) {
        let dir = std::env::temp_dir().join(format!("dce-stir-cfg-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = crate::stir::cert::test_pki::Pki::new(true, (2024, 2030));
        let f = dir.join("roots.pem");
        std::fs::write(&f, &pki.root_pem).unwrap();
        std::fs::write(dir.join("div.key"), &pki.key_pem).unwrap();
        (
            f,
            crate::stir::cert::Anchors::from_pem(pki.root_pem.as_bytes()).unwrap(),
        )
    }

    fn errors(text: &str) -> Vec<String> {
        parse("s.toml", text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn stir_keys_defaults_and_policies() {
        let (f, _) = roots("good");
        let key = f.with_file_name("div.key");
        let text = format!(
            "{BASE}[stir]\nca_file = \"{}\"\nx5u_allow = [\"*.sticr.example\", \"127.0.0.1\"]\nsign_div = {{ x5u = \"https://c.example/d.pem\", key = \"{}\" }}\n\
             [[campaign]]\nid = \"k\"\nnumbers = [\"+18005550100\"]\nstir = {{ require = \"B\", on_fail = \"flag\" }}\n\
             [[buyer]]\nid = \"b\"\ncampaigns = [\"k\"]\nuri = \"sip:{{called}}@127.0.0.1:5090\"\nbid_cents = 100\nmin_attestation = \"A\"\nattestation_bid = {{ B = 0.8, C = 0.5, none = 0 }}\n",
            f.display(),
            key.display()
        );
        let c = parse("s.toml", &text).unwrap();
        let st = c.stir.unwrap();
        assert_eq!((st.max_age_s, st.fetch_timeout.as_millis()), (60, 1000));
        assert_eq!(st.x5u_allow, ["*.sticr.example", "127.0.0.1"]);
        assert_eq!(st.anchors.len(), 1);
        assert_eq!(st.sign_div.unwrap().x5u, "https://c.example/d.pem");
        let camp = &c.routing.campaigns[0].stir;
        assert_eq!(
            camp.require,
            dce_routing::Require::AtLeast(dce_routing::Trust::B)
        );
        assert!(camp.flag);
        let b = &c.routing.buyers[0];
        assert_eq!(b.min_attestation, dce_routing::Trust::A);
        assert_eq!(b.attestation_bid.0, [0, 500_000, 800_000, 1_000_000]);
        assert!(parse("s.toml", BASE).unwrap().stir.is_none());
        let _ = std::fs::remove_dir_all(f.parent().unwrap());
    }

    #[test]
    fn bad_stir_config_is_refused_with_its_line() {
        let (f, _) = roots("bad");
        let text = format!(
            "{BASE}[stir]\nca_file = \"/nonexistent/roots.pem\"\n\
             [[campaign]]\nid = \"k\"\nnumbers = [\"+18005550100\"]\nstir = {{ require = \"D\", on_fail = \"shrug\" }}\n\
             [[buyer]]\nid = \"b\"\ncampaigns = [\"k\"]\nuri = \"sip:{{called}}@127.0.0.1:5090\"\nbid_cents = 100\nmin_attestation = \"Z\"\nattestation_bid = {{ B = 1.5, X = 1 }}\n"
        );
        let e = errors(&text);
        let first = BASE.lines().count() + 2;
        assert!(
            e[0].starts_with(&format!("s.toml:{first}: `stir.ca_file`: cannot read")),
            "{e:#?}"
        );
        let all = e.join("\n");
        for want in [
            "`campaign.stir.require` must be",
            "`campaign.stir.on_fail` must be",
            "`buyer.min_attestation` must be",
            "attestation_bid.B` must be from 0 to 1",
            "unknown key `X`",
        ] {
            assert!(all.contains(want), "{want} in {all}");
        }
        // a file that holds no certificate, a bad allow pattern, a sign_div without https
        std::fs::write(f.with_file_name("empty.pem"), "nothing").unwrap();
        let text = format!(
            "{BASE}[stir]\nca_file = \"{}\"\nx5u_allow = [\"a b\"]\nsign_div = {{ x5u = \"http://c.example/d.pem\", key = \"x\" }}\n",
            f.with_file_name("empty.pem").display()
        );
        let all = errors(&text).join("\n");
        assert!(all.contains("no certificate in it"), "{all}");
        let text = format!(
            "{BASE}[stir]\nca_file = \"{}\"\nx5u_allow = [\"a b\"]\nsign_div = {{ x5u = \"http://c.example/d.pem\", key = \"x\" }}\n",
            f.display()
        );
        let all = errors(&text).join("\n");
        assert!(all.contains("`a b` is not a host name"), "{all}");
        assert!(all.contains("must be an https:// URL"), "{all}");
        let _ = std::fs::remove_dir_all(f.parent().unwrap());
    }
}
