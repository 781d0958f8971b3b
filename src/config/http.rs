//! `[http]`: the control API's address, its keys and the paths it serves without one.

use super::walk::{Table, Walk};
use std::net::SocketAddr;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read-only routes.
    Read,
    /// Everything but `POST /v1/bid`.
    Admin,
    /// `POST /v1/bid` only, for the key's carrier: a publisher asking for a price.
    Publisher,
    /// `/v1/calls/{id}/conversion` only, for calls the key's buyer answered: a buyer
    /// reporting a conversion or adjusting a payout.
    Buyer,
}

/// One API key, stored as the SHA-256 of the key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Who holds it (logged with every request it makes).
    pub name: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// What it may do.
    pub role: Role,
    /// The carrier a `publisher` key speaks for (its bids are reserved for that carrier's
    /// calls).
    pub carrier: Option<String>,
    /// The buyer a `buyer` key speaks for (it may only convert that buyer's calls).
    pub buyer: Option<String>,
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where the API listens; none (no `[http]` table) = no API.
    pub listen: Option<SocketAddr>,
    /// The keys.
    pub api_keys: Vec<ApiKey>,
    /// Paths served without a key (default `/health`, `/metrics`).
    pub open_paths: Vec<String>,
    /// Requests per second per key (and per source address on open paths).
    pub rate_limit_per_s: u32,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Time a client has to send its request line and headers.
    pub header_timeout: std::time::Duration,
    /// Time a client has to send its body.
    pub body_timeout: std::time::Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            api_keys: Vec::new(),
            open_paths: vec!["/health".into(), "/metrics".into()],
            rate_limit_per_s: 50,
            max_body_bytes: 64 * 1024,
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(10),
        }
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `[http]`; `carriers` and `buyers` are the configured carriers' and buyers' ids (a
/// publisher key names a carrier, a buyer key a buyer).
pub(super) fn read(
    w: &mut Walk<'_>,
    root: Table<'_, '_>,
    carriers: &[&str],
    buyers: &[&str],
) -> HttpConfig {
    let mut c = HttpConfig::default();
    let Some(t) = w.table(root, "http", "http", false) else {
        return c;
    };
    w.unknown_keys(
        t,
        &[
            "listen",
            "api_keys",
            "open_paths",
            "rate_limit_per_s",
            "max_body_bytes",
            "header_timeout_s",
            "body_timeout_s",
        ],
    );
    if let Some((l, span)) = w.string(t, "listen", true) {
        match l.parse() {
            Ok(a) => c.listen = Some(a),
            Err(_) => w.error(
                span,
                "`http.listen` must be IP:PORT, e.g. \"127.0.0.1:8080\"",
            ),
        }
    }
    for k in w.tables(t, "api_keys", "http.api_keys") {
        w.unknown_keys(k, &["name", "sha256", "role", "carrier", "buyer"]);
        let name = w.string(k, "name", true).map(|(n, _)| n);
        let sha = w.string(k, "sha256", true).and_then(|(h, span)| {
            let v = hex32(&h.to_ascii_lowercase());
            if v.is_none() {
                w.error(
                    span,
                    "`sha256` must be the 64 hex digits of the key's SHA-256 (e.g. `printf %s KEY | sha256sum`)",
                );
            }
            v
        });
        let role = w
            .string(k, "role", true)
            .and_then(|(r, span)| match r.as_str() {
                "read" => Some(Role::Read),
                "admin" => Some(Role::Admin),
                "publisher" => Some(Role::Publisher),
                "buyer" => Some(Role::Buyer),
                _ => {
                    w.error(
                        span,
                        "`role` must be \"read\", \"admin\", \"publisher\" or \"buyer\"",
                    );
                    None
                }
            });
        let carrier = w.string(k, "carrier", false);
        let carrier = match (role, carrier) {
            (Some(Role::Publisher), None) => {
                w.error(
                    w.span_of(k, "role"),
                    "a `publisher` key needs `carrier = \"<carrier id>\"`: the carrier whose calls its bids are for",
                );
                None
            }
            (Some(Role::Publisher), Some((id, span))) => {
                if !carriers.iter().any(|c| *c == id) {
                    w.error(
                        span,
                        format!("`carrier` `{id}` is not a configured carrier"),
                    );
                }
                Some(id)
            }
            (Some(_), Some((_, span))) => {
                w.error(span, "only a `publisher` key has a `carrier`");
                None
            }
            (_, _) => None,
        };
        let buyer = w.string(k, "buyer", false);
        let buyer = match (role, buyer) {
            (Some(Role::Buyer), None) => {
                w.error(
                    w.span_of(k, "role"),
                    "a `buyer` key needs `buyer = \"<buyer id>\"`: the buyer whose calls it may mark converted",
                );
                None
            }
            (Some(Role::Buyer), Some((id, span))) => {
                if !buyers.iter().any(|b| *b == id) {
                    w.error(span, format!("`buyer` `{id}` is not a configured buyer"));
                }
                Some(id)
            }
            (Some(_), Some((_, span))) => {
                w.error(span, "only a `buyer` key has a `buyer`");
                None
            }
            (_, _) => None,
        };
        if let (Some(name), Some(sha256), Some(role)) = (name, sha, role) {
            c.api_keys.push(ApiKey {
                name,
                sha256,
                role,
                carrier,
                buyer,
            });
        }
    }
    if let Some(paths) = w.strings(t, "open_paths", false) {
        c.open_paths = Vec::new();
        for (p, span) in paths {
            if !p.starts_with('/') {
                w.error(span, "each of `http.open_paths` must start with /");
            }
            c.open_paths.push(p);
        }
    }
    if let Some((n, _)) = w.int(t, "rate_limit_per_s", 1, 1_000_000) {
        c.rate_limit_per_s = n as u32;
    }
    if let Some((n, _)) = w.int(t, "max_body_bytes", 1, 64 * 1024 * 1024) {
        c.max_body_bytes = n as usize;
    }
    if let Some((n, _)) = w.int(t, "header_timeout_s", 1, 3600) {
        c.header_timeout = std::time::Duration::from_secs(n as u64);
    }
    if let Some((n, _)) = w.int(t, "body_timeout_s", 1, 3600) {
        c.body_timeout = std::time::Duration::from_secs(n as u64);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::Role;

    const BASE: &str = "[node]\nid = \"n\"\n[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nadvertised_host = \"127.0.0.1\"\n";
    const SHA: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    #[test]
    fn no_table_no_api_and_the_defaults() {
        let c = parse("dce.toml", BASE).unwrap();
        assert_eq!(c.http.listen, None);
        assert_eq!(c.http.open_paths, ["/health", "/metrics"]);
        assert_eq!(c.http.rate_limit_per_s, 50);
    }

    #[test]
    fn keys_roles_and_paths() {
        let text = format!(
            "{BASE}[http]\nlisten = \"127.0.0.1:8080\"\napi_keys = [{{ name = \"ops\", sha256 = \"{SHA}\", role = \"admin\" }}, {{ name = \"grafana\", sha256 = \"{}\", role = \"read\" }}]\nopen_paths = [\"/health\"]\nrate_limit_per_s = 5\n",
            SHA.to_uppercase()
        );
        let c = parse("dce.toml", &text).unwrap();
        assert_eq!(c.http.listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.http.api_keys.len(), 2);
        assert_eq!(c.http.api_keys[0].role, Role::Admin);
        assert_eq!(c.http.api_keys[1].name, "grafana");
        assert_eq!(c.http.api_keys[0].sha256, c.http.api_keys[1].sha256);
        assert_eq!(c.http.api_keys[0].sha256[0], 0x2b);
        assert_eq!(c.http.open_paths, ["/health"]);
        assert_eq!(c.http.rate_limit_per_s, 5);
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let text = format!(
            "{BASE}[http]\nlisten = \"localhost\"\napi_keys = [\n  {{ name = \"ops\", sha256 = \"abc\", role = \"admin\" }},\n  {{ name = \"x\", sha256 = \"{SHA}\", role = \"root\" }},\n  {{ sha256 = \"{SHA}\", role = \"read\" }},\n]\nopen_paths = [\"metrics\"]\n"
        );
        let errs: Vec<String> = parse("dce.toml", &text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        let has = |line: usize, what: &str| {
            errs.iter()
                .any(|e| e.starts_with(&format!("dce.toml:{line}: ")) && e.contains(what))
        };
        assert!(has(7, "IP:PORT"), "{errs:#?}");
        assert!(has(9, "64 hex digits"), "{errs:#?}");
        assert!(
            has(10, "\"read\", \"admin\", \"publisher\" or \"buyer\""),
            "{errs:#?}"
        );
        assert!(has(11, "name"), "{errs:#?}");
        assert!(has(13, "must start with /"), "{errs:#?}");
    }

    #[test]
    fn a_publisher_key_names_a_configured_carrier() {
        let carrier = "[[carrier]]\nid = \"carrier-a\"\nsources = [\"127.0.0.1/32\"]\n";
        let text = format!(
            "{BASE}{carrier}[http]\nlisten = \"127.0.0.1:8080\"\napi_keys = [{{ name = \"pub\", sha256 = \"{SHA}\", role = \"publisher\", carrier = \"carrier-a\" }}]\n"
        );
        let c = parse("dce.toml", &text).unwrap();
        assert_eq!(c.http.api_keys[0].role, Role::Publisher);
        assert_eq!(c.http.api_keys[0].carrier.as_deref(), Some("carrier-a"));
        for (key, want) in [
            (
                "role = \"publisher\"",
                "dce.toml:11: a `publisher` key needs `carrier",
            ),
            (
                "role = \"publisher\", carrier = \"nobody\"",
                "dce.toml:11: `carrier` `nobody` is not a configured carrier",
            ),
            (
                "role = \"admin\", carrier = \"carrier-a\"",
                "dce.toml:11: only a `publisher` key has a `carrier`",
            ),
        ] {
            let text = format!(
                "{BASE}{carrier}[http]\nlisten = \"127.0.0.1:8080\"\napi_keys = [{{ name = \"pub\", sha256 = \"{SHA}\", {key} }}]\n"
            );
            let errs: Vec<String> = parse("dce.toml", &text)
                .unwrap_err()
                .iter()
                .map(|e| e.to_string())
                .collect();
            assert!(errs.iter().any(|e| e.contains(want)), "{key}: {errs:#?}");
        }
    }

    #[test]
    fn a_buyer_key_names_a_configured_buyer() {
        let routing = "[[campaign]]\nid = \"auto\"\nnumbers = [\"8005550100\"]\n[[buyer]]\nid = \"acme\"\ncampaigns = [\"auto\"]\nuri = \"sip:{called}@127.0.0.1:5090\"\nbid_cents = 1500\n";
        let text = format!(
            "{BASE}{routing}[http]\nlisten = \"127.0.0.1:8080\"\napi_keys = [{{ name = \"acme-crm\", sha256 = \"{SHA}\", role = \"buyer\", buyer = \"acme\" }}]\n"
        );
        let c = parse("dce.toml", &text).unwrap();
        assert_eq!(c.http.api_keys[0].role, Role::Buyer);
        assert_eq!(c.http.api_keys[0].buyer.as_deref(), Some("acme"));
        assert_eq!(c.http.api_keys[0].carrier, None);
        let line = 5 + routing.lines().count() + 3;
        for (key, want) in [
            ("role = \"buyer\"", "a `buyer` key needs `buyer"),
            (
                "role = \"buyer\", buyer = \"nobody\"",
                "`buyer` `nobody` is not a configured buyer",
            ),
            (
                "role = \"read\", buyer = \"acme\"",
                "only a `buyer` key has a `buyer`",
            ),
            (
                "role = \"buyer\", buyer = \"acme\", carrier = \"x\"",
                "only a `publisher` key has a `carrier`",
            ),
        ] {
            let text = format!(
                "{BASE}{routing}[http]\nlisten = \"127.0.0.1:8080\"\napi_keys = [{{ name = \"k\", sha256 = \"{SHA}\", {key} }}]\n"
            );
            let errs: Vec<String> = parse("dce.toml", &text)
                .unwrap_err()
                .iter()
                .map(|e| e.to_string())
                .collect();
            let want = format!("dce.toml:{line}: {want}");
            assert!(
                errs.iter().any(|e| e.starts_with(&want)),
                "{key}: {want}: {errs:#?}"
            );
        }
    }
}
