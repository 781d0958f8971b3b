//! DCE's own TCP and TLS connections to buyer trunks (`;transport=tcp|tls`, `sips:`): one per target,
//! opened on the first message for it and reused by every call after (RFC 3261 §18.1.1 lets a
//! client reuse a connection to the same address); a connect timeout; after a failure, new
//! messages for that address are refused for a backoff (1 s doubling to 30 s) rather than each
//! trying again; CRLF keep-alives (RFC 5626 §4.4.1) while it is open. The workers are told when
//! a target cannot be reached, so the attempt moves on at once.

use super::gate::Gate;
use super::tcp::{connection, next_conn, Link, TcpLimits};
use super::{Inbound, Shards};
use crate::counters::{Counter, Counters};
use bytes::Bytes;
use dce_sip::transaction::{Peer, Transport};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Backoff after a failed connect: first step and cap.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How often an idle outbound connection sends its keep-alive.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// A target: its address, and TCP or TLS.
type Key = (SocketAddr, Transport);

#[derive(Default)]
struct State {
    /// Open (or opening) connections by target: their queue.
    conns: HashMap<Key, mpsc::Sender<Bytes>>,
    /// Targets that failed to connect: no new try before `until`; the next backoff.
    backoff: HashMap<Key, (Instant, Duration)>,
}

/// The outbound connections of the node, shared by every SIP worker.
pub struct Outbound {
    state: Mutex<State>,
    shards: Shards,
    gate: Arc<Gate>,
    counters: Arc<Counters>,
    limits: TcpLimits,
    connect_timeout: Duration,
    runtime: tokio::runtime::Handle,
    tls: Arc<super::tls::TlsTargets>,
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The target failed to connect lately; DCE waits before trying again.
    Backoff,
    /// The connection's queue is full (the peer is not reading).
    Full,
}

impl Outbound {
    /// Connections that run on `runtime` and hand what they read to `shards`.
    pub fn new(
        shards: Shards,
        gate: Arc<Gate>,
        counters: Arc<Counters>,
        limits: TcpLimits,
        connect_timeout: Duration,
        runtime: tokio::runtime::Handle,
        tls: Arc<super::tls::TlsTargets>,
    ) -> Arc<Outbound> {
        Arc::new(Outbound {
            state: Mutex::new(State::default()),
            shards,
            gate,
            counters,
            limits,
            connect_timeout,
            runtime,
            tls,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `bytes` for `to` (TCP or TLS), connecting first if no connection is open.
    pub fn send(self: &Arc<Self>, to: Peer, bytes: Bytes) -> Result<(), SendError> {
        let key = (to.addr, to.transport);
        let mut st = self.lock();
        if let Some(tx) = st.conns.get(&key) {
            if !tx.is_closed() {
                return tx.try_send(bytes).map_err(|_| SendError::Full);
            }
            st.conns.remove(&key);
        }
        if let Some((until, _)) = st.backoff.get(&key) {
            if Instant::now() < *until {
                return Err(SendError::Backoff);
            }
        }
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let _ = tx.try_send(bytes);
        st.conns.insert(key, tx.clone());
        drop(st);
        let me = self.clone();
        self.runtime
            .spawn(async move { me.open(key, tx, rx).await });
        Ok(())
    }

    /// A connect (or handshake) to `key` failed with `why`: back off, tell the workers.
    async fn failed(&self, key: Key, tx: &mpsc::Sender<Bytes>, why: String, counter: Counter) {
        self.counters.inc(counter);
        let wait = {
            let mut st = self.lock();
            if st.conns.get(&key).is_some_and(|c| c.same_channel(tx)) {
                st.conns.remove(&key);
            }
            let next = st.backoff.get(&key).map_or(BACKOFF_MIN, |(_, d)| *d);
            st.backoff
                .insert(key, (Instant::now() + next, (next * 2).min(BACKOFF_MAX)));
            next
        };
        let (to, proto) = (key.0, key.1.via_name());
        tracing::warn!(%to, transport = proto, error = %why, retry_after_s = wait.as_secs(), "cannot connect to buyer trunk");
        let _ = self
            .shards
            .broadcast(Inbound::Unreachable { addr: to })
            .await;
    }

    async fn open(self: Arc<Self>, key: Key, tx: mpsc::Sender<Bytes>, rx: mpsc::Receiver<Bytes>) {
        let (to, transport) = key;
        let started = Instant::now();
        let stream =
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(to))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return self
                        .failed(key, &tx, e.to_string(), Counter::TcpConnectFailed)
                        .await
                }
                Err(_) => {
                    let why = format!("no answer in {} ms", self.connect_timeout.as_millis());
                    return self.failed(key, &tx, why, Counter::TcpConnectFailed).await;
                }
            };
        let _ = stream.set_nodelay(true);
        let conn = next_conn();
        let link = Link {
            addr: to,
            conn,
            tx: tx.clone(),
            rx,
            keepalive: Some(KEEPALIVE),
            transport,
        };
        let limits = TcpLimits {
            // DCE's own connection stays while it is useful: the keep-alive and its answer
            // keep it from idling out.
            idle: self.limits.idle.max(KEEPALIVE * 3),
            ..self.limits
        };
        if transport == Transport::Tls {
            let Some((name, cfg)) = self.tls.lookup(to) else {
                let why = "no TLS buyer is configured for this address".to_owned();
                return self
                    .failed(key, &tx, why, Counter::TlsHandshakeFailed)
                    .await;
            };
            let shown = format!("{name:?}");
            let connector = tokio_rustls::TlsConnector::from(cfg);
            let tls =
                match tokio::time::timeout(self.connect_timeout, connector.connect(name, stream))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        let why = format!("TLS handshake failed (server name {shown}): {e}");
                        return self
                            .failed(key, &tx, why, Counter::TlsHandshakeFailed)
                            .await;
                    }
                    Err(_) => {
                        let why = format!(
                            "TLS handshake not done in {} ms",
                            self.connect_timeout.as_millis()
                        );
                        return self
                            .failed(key, &tx, why, Counter::TlsHandshakeFailed)
                            .await;
                    }
                };
            self.opened(key, conn, started);
            connection(
                tls,
                link,
                limits,
                self.shards.clone(),
                self.gate.clone(),
                self.counters.clone(),
                None,
            )
            .await;
        } else {
            self.opened(key, conn, started);
            connection(
                stream,
                link,
                limits,
                self.shards.clone(),
                self.gate.clone(),
                self.counters.clone(),
                None,
            )
            .await;
        }
        let mut st = self.lock();
        if st.conns.get(&key).is_some_and(|c| c.same_channel(&tx)) {
            st.conns.remove(&key);
        }
        tracing::info!(%to, conn, transport = transport.via_name(), "connection to buyer trunk closed");
    }

    fn opened(&self, key: Key, conn: u64, started: Instant) {
        self.lock().backoff.remove(&key);
        self.counters.inc(Counter::TcpConnected);
        tracing::info!(to = %key.0, conn, transport = key.1.via_name(), connect_ms = started.elapsed().as_millis() as u64, "connection to buyer trunk open");
    }

    /// Open connections (metrics, tests).
    pub fn open_connections(&self) -> usize {
        self.lock().conns.len()
    }
}
