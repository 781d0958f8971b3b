//! DCE's own TCP connections to buyer trunks (`;transport=tcp`): one per target address,
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

#[derive(Default)]
struct State {
    /// Open (or opening) connections by target: their queue.
    conns: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    /// Targets that failed to connect: no new try before `until`; the next backoff.
    backoff: HashMap<SocketAddr, (Instant, Duration)>,
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
    ) -> Arc<Outbound> {
        Arc::new(Outbound {
            state: Mutex::new(State::default()),
            shards,
            gate,
            counters,
            limits,
            connect_timeout,
            runtime,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `bytes` for `to`, connecting first if no connection is open.
    pub fn send(self: &Arc<Self>, to: SocketAddr, bytes: Bytes) -> Result<(), SendError> {
        let mut st = self.lock();
        if let Some(tx) = st.conns.get(&to) {
            if !tx.is_closed() {
                return tx.try_send(bytes).map_err(|_| SendError::Full);
            }
            st.conns.remove(&to);
        }
        if let Some((until, _)) = st.backoff.get(&to) {
            if Instant::now() < *until {
                return Err(SendError::Backoff);
            }
        }
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let _ = tx.try_send(bytes);
        st.conns.insert(to, tx.clone());
        drop(st);
        let me = self.clone();
        self.runtime.spawn(async move { me.open(to, tx, rx).await });
        Ok(())
    }

    async fn open(
        self: Arc<Self>,
        to: SocketAddr,
        tx: mpsc::Sender<Bytes>,
        rx: mpsc::Receiver<Bytes>,
    ) {
        let started = Instant::now();
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(to),
        )
        .await
        {
            Ok(Ok(s)) => s,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer in {} ms", self.connect_timeout.as_millis()),
                };
                self.counters.inc(Counter::TcpConnectFailed);
                let wait = {
                    let mut st = self.lock();
                    if st.conns.get(&to).is_some_and(|c| c.same_channel(&tx)) {
                        st.conns.remove(&to);
                    }
                    let next = st.backoff.get(&to).map_or(BACKOFF_MIN, |(_, d)| *d);
                    st.backoff
                        .insert(to, (Instant::now() + next, (next * 2).min(BACKOFF_MAX)));
                    next
                };
                tracing::warn!(%to, error = %why, retry_after_s = wait.as_secs(), "cannot connect to buyer trunk over TCP");
                let _ = self
                    .shards
                    .broadcast(Inbound::Unreachable { addr: to })
                    .await;
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        self.lock().backoff.remove(&to);
        self.counters.inc(Counter::TcpConnected);
        let conn = next_conn();
        tracing::info!(%to, conn, connect_ms = started.elapsed().as_millis() as u64, "TCP connection to buyer trunk open");
        connection(
            stream,
            Link {
                addr: to,
                conn,
                tx: tx.clone(),
                rx,
                keepalive: Some(KEEPALIVE),
            },
            TcpLimits {
                // DCE's own connection stays while it is useful: the keep-alive and its
                // answer keep it from idling out.
                idle: self.limits.idle.max(KEEPALIVE * 3),
                ..self.limits
            },
            self.shards.clone(),
            self.gate.clone(),
            self.counters.clone(),
            None,
        )
        .await;
        let mut st = self.lock();
        if st.conns.get(&to).is_some_and(|c| c.same_channel(&tx)) {
            st.conns.remove(&to);
        }
        tracing::info!(%to, conn, "TCP connection to buyer trunk closed");
    }

    /// Open connections (metrics, tests).
    pub fn open_connections(&self) -> usize {
        self.lock().conns.len()
    }
}
