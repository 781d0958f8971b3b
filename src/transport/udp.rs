//! UDP receive loop.

use super::Inbound;
use crate::counters::{Counter, Counters};
use bytes::Bytes;
use dce_sip::transaction::{Peer, Transport};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Read datagrams from `sock` (listener number `index`) until the core goes away.
/// Datagrams longer than `max` are dropped and counted, never truncated into a message.
pub async fn receive_loop(
    sock: Arc<UdpSocket>,
    index: u64,
    max: usize,
    core: mpsc::Sender<Inbound>,
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
        let item = Inbound::Message {
            bytes: Bytes::copy_from_slice(&buf[..n]),
            from: Peer {
                transport: Transport::Udp,
                addr: from,
                conn: Some(index),
            },
            at: std::time::Instant::now(),
        };
        if core.send(item).await.is_err() {
            return;
        }
    }
}
