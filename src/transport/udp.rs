//! UDP receive loop.

use super::gate::{Admit, Gate};
use super::Inbound;
use crate::counters::{Counter, Counters};
use bytes::Bytes;
use dce_sip::transaction::{Peer, Transport};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Receive buffer asked for on each UDP socket (the kernel caps it at `net.core.rmem_max`):
/// room for a few hundred milliseconds of traffic while the receive task is not scheduled.
pub const RECV_BUFFER: usize = 8 << 20;

/// Bind a UDP listener with a large receive buffer.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = s.set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!(error = %e, "SO_RCVBUF not raised");
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Read datagrams from `sock` (listener number `index`) until the core goes away.
/// Datagrams longer than `max` are dropped and counted, never truncated into a message.
/// Every datagram passes the [`Gate`] first; one that may be queued but finds the core's queue
/// full is dropped and counted: this task never waits for the core, so the socket keeps
/// being drained and a flood from one source cannot make the kernel drop everyone's packets.
pub async fn receive_loop(
    sock: Arc<UdpSocket>,
    index: u64,
    max: usize,
    core: mpsc::Sender<Inbound>,
    gate: Arc<Gate>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; max + 1];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; they are not fatal.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        if n > max {
            counters.inc(Counter::DroppedOversize);
            tracing::info!(%from, "dropped a UDP datagram over the {max}-byte limit");
            continue;
        }
        let at = std::time::Instant::now();
        let peer = Peer {
            transport: Transport::Udp,
            addr: from,
            conn: Some(index),
        };
        match gate.check(&buf[..n], peer, &core, at) {
            Admit::Drop => continue,
            Admit::Answer(t) => {
                if sock.send_to(&t.bytes, t.to.addr).await.is_err() {
                    counters.inc(Counter::UdpSendFailed);
                }
                continue;
            }
            Admit::Queue => {}
        }
        let item = Inbound::Message {
            bytes: Bytes::copy_from_slice(&buf[..n]),
            from: peer,
            at,
        };
        match core.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => counters.inc(Counter::DroppedQueueFull),
            Err(TrySendError::Closed(_)) => return,
        }
    }
}
