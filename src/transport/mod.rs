//! Socket drivers: UDP and TCP listeners that turn bytes on the wire into [`Inbound`] items
//! for the core task, and carry the core's bytes back out.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `udp.rs` | binding the SIP UDP sockets (one per worker, `SO_REUSEPORT` with several) |
//! | `mmsg.rs` | `recvmmsg`/`sendmmsg` batches, kernel receive timestamps |
//! | `dispatch.rs` | which SIP worker owns a message (shard number in DCE's tags, branches, Call-IDs) |
//! | `gate.rs` | [`gate::Gate`]: per-source limits and overload shedding before the core queue |
//! | `tcp.rs` | accept loop with per-IP and global connection limits, one task per connection: Content-Length framing with a bounded buffer, idle reaping, CRLF keep-alive pongs |

pub mod dispatch;
pub mod gate;
pub mod mmsg;
pub mod outbound;
pub mod pki;
pub mod tcp;
pub mod tls;
pub mod udp;

use bytes::Bytes;
use dce_sip::transaction::Peer;
use tokio::sync::mpsc;

/// Depth of each SIP worker's queue for messages it did not read itself (TCP, and datagrams
/// another worker read). Bounded: what does not fit is dropped and counted (UDP) or waited
/// for (TCP, backpressure on that connection).
pub const CORE_QUEUE: usize = 16_384;

/// What the socket drivers hand to the core task.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// One datagram, or one framed stream message.
    Message {
        /// Its bytes.
        bytes: Bytes,
        /// Where it came from (and through which socket or connection).
        from: Peer,
        /// When the socket read returned.
        at: std::time::Instant,
    },
    /// A TCP connection opened; bytes for it go into `tx`.
    TcpOpened {
        /// Connection id.
        conn: u64,
        /// Its outbound queue.
        tx: mpsc::Sender<Bytes>,
    },
    /// A TCP connection closed.
    TcpClosed {
        /// Connection id.
        conn: u64,
    },
    /// DCE could not connect to this buyer address (what was queued for it is lost).
    Unreachable {
        /// The address.
        addr: std::net::SocketAddr,
    },
}

/// The SIP workers' queues: where a TCP connection or another worker hands a message to the
/// worker that owns it ([`dispatch::owner`]).
#[derive(Debug, Clone)]
pub struct Shards(std::sync::Arc<[mpsc::Sender<Inbound>]>);

impl Shards {
    /// One queue per worker, in worker order.
    pub fn new(queues: Vec<mpsc::Sender<Inbound>>) -> Shards {
        Shards(queues.into())
    }

    /// How many workers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True without workers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The queue of the worker that owns `bytes`.
    pub fn queue_for(&self, bytes: &[u8]) -> &mpsc::Sender<Inbound> {
        &self.0[dispatch::owner(bytes, self.0.len())]
    }

    /// The queue of worker `i`.
    pub fn queue(&self, i: usize) -> &mpsc::Sender<Inbound> {
        &self.0[i]
    }

    /// Give `item` to every worker (connection opened or closed); false when they are gone.
    pub async fn broadcast(&self, item: Inbound) -> bool {
        let mut ok = true;
        for q in self.0.iter() {
            ok &= q.send(item.clone()).await.is_ok();
        }
        ok
    }

    /// True when every worker has stopped.
    pub fn is_closed(&self) -> bool {
        self.0.iter().all(|q| q.is_closed())
    }
}
