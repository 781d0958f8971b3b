//! Socket drivers: UDP and TCP listeners that turn bytes on the wire into [`Inbound`] items
//! for the core task, and carry the core's bytes back out.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `udp.rs` | one receive task per UDP socket; oversize datagrams dropped and counted |
//! | `gate.rs` | [`gate::Gate`]: per-source limits and overload shedding before the core queue |
//! | `tcp.rs` | accept loop with per-IP and global connection limits, one task per connection: Content-Length framing with a bounded buffer, idle reaping, CRLF keep-alive pongs |

pub mod gate;
pub mod tcp;
pub mod udp;

use bytes::Bytes;
use dce_sip::transaction::Peer;
use tokio::sync::mpsc;

/// Depth of the queue from the socket tasks to the core task (messages). Bounded: what does
/// not fit is dropped and counted, never waited for by a UDP socket task.
pub const CORE_QUEUE: usize = 16_384;

/// What the socket drivers hand to the core task.
#[derive(Debug)]
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
}
