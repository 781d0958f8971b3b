//! TCP accept loop and per-connection framing.

use super::gate::{Admit, Gate};
use super::{Inbound, Shards};
use crate::counters::{Counter, Counters};
use bytes::{Buf, Bytes, BytesMut};
use dce_sip::framing::{frame, Frame};
use dce_sip::transaction::{Peer, Transport};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Limits for TCP connections.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Largest message in bytes (bounds the receive buffer).
    pub max_message: usize,
    /// Close a connection that sends nothing for this long.
    pub idle: Duration,
    /// Close a connection whose message has not arrived whole this long after its first byte
    /// (a client trickling a message a byte at a time keeps no connection for long).
    pub message: Duration,
    /// Open connections per source IP.
    pub per_ip: usize,
    /// Open connections in total.
    pub total: usize,
}

/// Connection ids are unique across every TCP listener (and outbound connection) of the process.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A fresh connection id.
pub(super) fn next_conn() -> u64 {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// Open connections per source IP; the guard gives the slot back on drop.
#[derive(Clone, Default)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

pub(super) struct IpSlot {
    map: PerIp,
    ip: IpAddr,
}

impl PerIp {
    fn take(&self, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            map: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Accept connections until the core goes away; with `tls`, each one does its TLS handshake
/// (within the handshake timeout) before its first message is read.
pub async fn accept_loop(
    listener: TcpListener,
    limits: TcpLimits,
    core: Shards,
    gate: Arc<Gate>,
    counters: Arc<Counters>,
    tls: Option<super::tls::Acceptor>,
) {
    let total = Arc::new(Semaphore::new(limits.total));
    let per_ip = PerIp::default();
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if core.is_closed() {
            return;
        }
        let Ok(permit) = total.clone().try_acquire_owned() else {
            counters.inc(Counter::TcpRefusedLimit);
            tracing::warn!(%addr, "refused TCP connection: {} connections open", limits.total);
            continue;
        };
        let Some(slot) = per_ip.take(addr.ip(), limits.per_ip) else {
            counters.inc(Counter::TcpRefusedLimit);
            tracing::warn!(%addr, "refused TCP connection: {} already open from this address", limits.per_ip);
            continue;
        };
        let conn = next_conn();
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let link = Link {
            addr,
            conn,
            tx,
            rx,
            keepalive: None,
            transport: if tls.is_some() {
                Transport::Tls
            } else {
                Transport::Tcp
            },
        };
        let (core, gate, counters) = (core.clone(), gate.clone(), counters.clone());
        match &tls {
            None => {
                tokio::spawn(connection(
                    stream,
                    link,
                    limits,
                    core,
                    gate,
                    counters,
                    Some((permit, slot)),
                ));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Some(stream) = acceptor.handshake(stream, addr, &counters).await else {
                        return;
                    };
                    connection(
                        stream,
                        link,
                        limits,
                        core,
                        gate,
                        counters,
                        Some((permit, slot)),
                    )
                    .await
                });
            }
        }
    }
}

/// One connection's identity and outbound queue.
pub(super) struct Link {
    /// The far end.
    pub addr: SocketAddr,
    /// Its id (responses and in-dialog requests name it).
    pub conn: u64,
    /// The queue's sending side (registered with every worker).
    pub tx: mpsc::Sender<Bytes>,
    /// What to write.
    pub rx: mpsc::Receiver<Bytes>,
    /// Send a CRLF keep-alive this often (RFC 5626 §4.4.1; DCE's own connections to buyers).
    pub keepalive: Option<Duration>,
    /// TCP, or TLS over it.
    pub transport: Transport,
}

/// Serve one connection (accepted, or opened by DCE to a buyer): frame what it reads and hand
/// it to the owning worker, write what the workers queue for it.
pub(super) async fn connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    link: Link,
    limits: TcpLimits,
    core: Shards,
    gate: Arc<Gate>,
    counters: Arc<Counters>,
    _slots: Option<(OwnedSemaphorePermit, IpSlot)>,
) {
    let Link {
        addr,
        conn,
        tx,
        mut rx,
        keepalive,
        transport,
    } = link;
    if !core.broadcast(Inbound::TcpOpened { conn, tx }).await {
        return;
    }
    let mut ping = tokio::time::interval(keepalive.unwrap_or(Duration::from_secs(3600)));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    tracing::debug!(%addr, conn, "tcp connection open");
    let peer = Peer {
        transport,
        addr,
        conn: Some(conn),
    };
    let mut buf = BytesMut::with_capacity(8192);
    // When the first byte of the message now in `buf` arrived (none while `buf` is empty).
    let mut started: Option<Instant> = None;
    let why = 'conn: loop {
        let wait = match started {
            Some(s) => limits
                .idle
                .min((s + limits.message).saturating_duration_since(Instant::now())),
            None => limits.idle,
        };
        tokio::select! {
            read = tokio::time::timeout(wait, stream.read_buf(&mut buf)) => {
                match read {
                    Err(_) if started.is_some_and(|s| s.elapsed() >= limits.message) => {
                        counters.inc(Counter::TcpClosedMessageTimeout);
                        tracing::info!(%addr, conn, pending_bytes = buf.len(), "closing TCP connection: message not complete within {} s", limits.message.as_secs());
                        break 'conn "message timeout";
                    }
                    Err(_) => {
                        counters.inc(Counter::TcpClosedIdle);
                        break 'conn "idle";
                    }
                    Ok(Err(_)) | Ok(Ok(0)) => break 'conn "closed by peer",
                    Ok(Ok(_)) => {}
                }
                loop {
                    match frame(&buf, limits.max_message) {
                        Frame::Message(n) => {
                            started = None;
                            let bytes = buf.split_to(n).freeze();
                            let at = Instant::now();
                            let shard = crate::transport::dispatch::owner(&bytes, core.len());
                            let queue = core.queue(shard);
                            match gate.check_queued(&bytes, peer, queue, shard, at) {
                                Admit::Drop => {}
                                Admit::Answer(t) => {
                                    if stream.write_all(&t.bytes).await.is_err() {
                                        break 'conn "write failed";
                                    }
                                }
                                // TCP waits for the core (backpressure on this connection only).
                                Admit::Queue => {
                                    if queue.send(Inbound::Message { bytes, from: peer, at }).await.is_err() {
                                        break 'conn "shutdown";
                                    }
                                }
                            }
                        }
                        Frame::Ping(n) => {
                            buf.advance(n);
                            if stream.write_all(b"\r\n").await.is_err() {
                                break 'conn "write failed";
                            }
                        }
                        Frame::Skip(n) => buf.advance(n),
                        Frame::Incomplete => {
                            if buf.is_empty() {
                                started = None;
                            } else if started.is_none() {
                                started = Some(Instant::now());
                            }
                            break;
                        }
                        Frame::Invalid(e) => {
                            counters.inc(Counter::TcpClosedFraming);
                            tracing::info!(%addr, conn, error = %e, "closing TCP connection: stream cannot be framed");
                            break 'conn "framing";
                        }
                    }
                }
            }
            out = rx.recv() => {
                match out {
                    Some(bytes) => {
                        if stream.write_all(&bytes).await.is_err() {
                            break 'conn "write failed";
                        }
                    }
                    None => break 'conn "shutdown",
                }
            }
            _ = ping.tick(), if keepalive.is_some() => {
                // RFC 5626 §4.4.1: a double CRLF; the server answers with one CRLF.
                if stream.write_all(b"\r\n\r\n").await.is_err() {
                    break 'conn "write failed";
                }
            }
        }
    };
    // Answers to messages framed before the close are still on their way from the core:
    // give them a moment to go out (read side is done either way).
    if matches!(why, "framing" | "idle" | "message timeout") {
        let linger = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(linger);
        loop {
            tokio::select! {
                _ = &mut linger => break,
                out = rx.recv() => match out {
                    Some(bytes) if stream.write_all(&bytes).await.is_ok() => {}
                    _ => break,
                },
            }
        }
    }
    tracing::debug!(%addr, conn, reason = why, "tcp connection closed");
    let _ = core.broadcast(Inbound::TcpClosed { conn }).await;
}
