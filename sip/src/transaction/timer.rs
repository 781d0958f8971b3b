//! Timer values of RFC 3261 §17 (Table 4) and the RFC 6026 timers L and M.

use std::time::Duration;

/// Base timer values. Defaults are the RFC's: T1 = 500 ms, T2 = 4 s, T4 = 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Maximum duration a message remains in the network.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: timers B, F, H, J, L, M.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer D: at least 32 s on unreliable transports (§17.1.1.2).
    pub fn timer_d(&self) -> Duration {
        Duration::from_secs(32).max(self.t1x64() / 2)
    }
}

/// The transaction timers, named as in RFC 3261 §17 and RFC 6026 §8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// INVITE client: request retransmit interval (unreliable only).
    A,
    /// INVITE client: transaction timeout.
    B,
    /// INVITE client: wait time for response retransmits (Completed).
    D,
    /// Non-INVITE client: request retransmit interval (unreliable only).
    E,
    /// Non-INVITE client: transaction timeout.
    F,
    /// INVITE server: final response retransmit interval (unreliable only).
    G,
    /// INVITE server: wait time for ACK receipt.
    H,
    /// INVITE server: wait time for ACK retransmits (Confirmed).
    I,
    /// Non-INVITE server: wait time for request retransmits (Completed).
    J,
    /// Non-INVITE client: wait time for response retransmits (Completed).
    K,
    /// INVITE server: wait time for accepted INVITE request retransmits (RFC 6026 Accepted).
    L,
    /// INVITE client: wait time for retransmitted 2xx responses (RFC 6026 Accepted).
    M,
}

impl Timer {
    /// All timers, for per-transaction deadline tables.
    pub const ALL: [Timer; 12] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::K,
        Timer::L,
        Timer::M,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}
