//! TLS with rustls (TLS 1.2 and 1.3 only, no OpenSSL): the server side of `tls://` listeners
//! (`[sip.tls] cert, key, client_ca`, reloaded on SIGHUP), and the client side of DCE's own
//! connections to `sips:` / `;transport=tls` buyers (the buyer's certificate checked against its
//! host name, with the system's roots plus the buyer's `tls_ca`).

use super::pki::{client_config, server_config};
use crate::config::routing::{target_of, TargetHost};
use crate::config::TlsConfig;
use crate::counters::{Counter, Counters};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpStream;

/// The server side of the `tls://` listeners; its configuration can be swapped (SIGHUP).
#[derive(Clone)]
pub struct Acceptor {
    config: Arc<RwLock<Arc<ServerConfig>>>,
    timeout: Duration,
}

impl Acceptor {
    /// An acceptor for `c`.
    pub fn new(c: &TlsConfig) -> Result<Acceptor, String> {
        Ok(Acceptor {
            config: Arc::new(RwLock::new(server_config(
                &c.cert,
                &c.key,
                c.client_ca.as_deref(),
            )?)),
            timeout: c.handshake_timeout,
        })
    }

    /// Read `c`'s files again (SIGHUP); on an error the old certificate stays.
    pub fn reload(&self, c: &TlsConfig) -> Result<(), String> {
        let fresh = server_config(&c.cert, &c.key, c.client_ca.as_deref())?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// The handshake with the client at `addr`, within the handshake timeout; `None` (logged,
    /// counted) when it fails.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        counters: &Counters,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let cfg = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        match tokio::time::timeout(self.timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                counters.inc(Counter::TlsHandshakeFailed);
                tracing::warn!(%addr, error = %e, "TLS handshake from a client failed; connection closed");
                None
            }
            Err(_) => {
                counters.inc(Counter::TlsHandshakeFailed);
                tracing::warn!(%addr, timeout_s = self.timeout.as_secs(), "TLS handshake from a client not finished in time; connection closed");
                None
            }
        }
    }
}

/// One TLS buyer: its host (an address, or a name the DNS table resolves), the name its
/// certificate must carry, and its client configuration.
struct Target {
    host: TargetHost,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

/// Which name and configuration a TLS connection to an address uses, from the config's TLS
/// buyers (replaced on reload) and the DNS table.
pub struct TlsTargets {
    targets: RwLock<Vec<Target>>,
    dns: Arc<crate::dns::Table>,
}

/// The TLS client settings of `buyers`, checked (CA files read): `(host, name, config)`.
fn targets_of(buyers: &[dce_routing::Buyer]) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for b in buyers {
        let Ok((_, host)) = target_of(&b.uri, "1", "1") else {
            continue;
        };
        let name = match &host {
            TargetHost::Ip(a, crate::dns::Transport::Tls) => ServerName::IpAddress(a.ip().into()),
            TargetHost::Name(d) if d.sips || d.transport == Some(crate::dns::Transport::Tls) => {
                ServerName::try_from(d.host.clone()).map_err(|e| {
                    format!("buyer `{}`: `{}` is no TLS server name: {e}", b.id, d.host)
                })?
            }
            _ => continue,
        };
        let config = client_config(b.tls_ca.as_deref().map(Path::new))
            .map_err(|e| format!("buyer `{}` tls_ca: {e}", b.id))?;
        out.push(Target { host, name, config });
    }
    Ok(out)
}

/// Check the TLS settings of `buyers` (check-config).
pub fn check_buyers(buyers: &[dce_routing::Buyer]) -> Result<(), String> {
    targets_of(buyers).map(|_| ())
}

impl TlsTargets {
    /// The targets of `buyers`, resolving names through `dns`.
    pub fn new(
        buyers: &[dce_routing::Buyer],
        dns: Arc<crate::dns::Table>,
    ) -> Result<TlsTargets, String> {
        Ok(TlsTargets {
            targets: RwLock::new(targets_of(buyers)?),
            dns,
        })
    }

    /// A reload's buyers.
    pub fn set(&self, buyers: &[dce_routing::Buyer]) -> Result<(), String> {
        let t = targets_of(buyers)?;
        *self.targets.write().unwrap_or_else(|p| p.into_inner()) = t;
        Ok(())
    }

    /// The name to verify and the configuration for a connection to `addr`.
    pub fn lookup(&self, addr: SocketAddr) -> Option<(ServerName<'static>, Arc<ClientConfig>)> {
        let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
        targets.iter().find_map(|t| {
            let hit = match &t.host {
                TargetHost::Ip(a, _) => *a == addr,
                TargetHost::Name(d) => self.dns.get(&d.key()).is_some_and(|s| {
                    s.answer
                        .as_ref()
                        .is_some_and(|a| a.targets.iter().any(|t| t.addrs.contains(&addr)))
                }),
            };
            hit.then(|| (t.name.clone(), t.config.clone()))
        })
    }
}
