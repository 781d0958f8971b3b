//! Configuration: TOML files admins write, checked with every problem reported as
//! `file:line: what is wrong`.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `walk.rs` | a span-aware walk over the TOML tree that collects every error with its line |
//! | `model.rs` | the typed configuration DCE runs on, its defaults, `[node]`, `[sip]`, `[cdr]` |
//! | `compliance.rs` | `[compliance]`: DNC files, calling hours, state overrides, frequency cap |
//! | `http.rs` | `[http]`: the control API's address, keys (SHA-256, role), open paths, limits |
//! | `stir.rs` | `[stir]`: trust anchors, freshness, fetch deadline, `x5u` allow-list, `div` signing; a campaign's `stir` policy, a buyer's attestation keys |
//! | `routing.rs` | `[[carrier]]`, `[[campaign]]`, `[[buyer]]`: CIDRs, numbers, targeting, schedules |

pub mod compliance;
pub mod http;

mod model;
pub mod routing;
pub mod stir;
pub mod template;
mod walk;

pub use compliance::{ComplianceConfig, OnLookupError};
pub use http::{ApiKey, HttpConfig, Role};
pub use model::{
    CdrConfig, Config, DnsConfig, ListenAddr, ListenProto, MediaConfig, NodeConfig, SipConfig,
    StorageConfig, TlsConfig,
};
pub use routing::{CarrierConfig, Cidr, RoutingConfig};
pub use stir::StirConfig;
pub use walk::ConfigError;

use std::path::Path;

/// Read and check a config file. On failure, every problem found is returned.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![ConfigError {
                file: name,
                line: 0,
                message: format!("cannot read the file: {e}"),
            }])
        }
    };
    parse(&name, &text)
}

/// Check config text; `file` names it in error messages.
pub fn parse(file: &str, text: &str) -> Result<Config, Vec<ConfigError>> {
    model::from_toml(file, text)
}
