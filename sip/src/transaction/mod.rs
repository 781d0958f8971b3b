//! RFC 3261 §17 transactions with the RFC 6026 Accepted state, sans-IO.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `timer.rs` | T1/T2/T4 and the timers `A`…`M` as data |
//! | `key.rs` | transaction keys and the matching rules of §17.1.3 and §17.2.3 |
//! | `machine.rs` | the four state machines (INVITE/non-INVITE × client/server) |
//! | `layer.rs` | [`TransactionLayer`]: the table of live transactions, the timer heap, the queues |
//!
//! The contract follows quinn-proto and str0m: feed input with the current time
//! ([`TransactionLayer::on_message`], [`TransactionLayer::send_request`],
//! [`TransactionLayer::respond`], [`TransactionLayer::handle_timeout`]), then drain
//! [`TransactionLayer::poll_transmit`] and [`TransactionLayer::poll_event`], and sleep until
//! [`TransactionLayer::poll_timeout`].

mod key;
mod layer;
mod machine;
mod timer;

pub use key::TxKey;
pub use layer::{Event, Peer, TransactionLayer, Transmit, Transport, TxError, TxId};
pub use machine::{Kind, State};
pub use timer::{Timer, TimerConfig};

#[cfg(test)]
mod tests;
