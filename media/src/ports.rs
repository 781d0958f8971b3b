//! The RTP port pool: even ports for RTP, the next odd port for RTCP, from a configured range.
//!
//! A pair whose sockets are still open after its call ("warm": bound and registered, ready for
//! the next call without a system call) rests for [`QUARANTINE`] first, so that a late packet
//! of the old call cannot reach the new one, and is then reused before any other (most recently
//! rested first), which keeps the set of open sockets as small as the load. Pairs without
//! sockets ("cold") are taken in turn, least recently used first.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a warm pair rests between calls.
pub const QUARANTINE: Duration = Duration::from_millis(500);

/// Free RTP ports (even); a taken port `p` also holds `p + 1` for RTCP.
#[derive(Debug)]
pub struct PortPool {
    cold: VecDeque<u16>,
    cooling: VecDeque<(Instant, u16)>,
    warm: Vec<u16>,
    total: usize,
}

impl PortPool {
    /// Pairs from `min..=max` (both rounded inwards to whole even/odd pairs).
    pub fn new(min: u16, max: u16) -> PortPool {
        let start = if min.is_multiple_of(2) { min } else { min + 1 };
        let cold: VecDeque<u16> = (start..max)
            .step_by(2)
            .filter(|p| p.checked_add(1).is_some_and(|q| q <= max))
            .collect();
        let total = cold.len();
        PortPool {
            cold,
            cooling: VecDeque::new(),
            warm: Vec::new(),
            total,
        }
    }

    /// Take a pair at `now`, and whether it is warm (its sockets kept); `None` when exhausted.
    /// A pair still resting is only handed out when nothing else is left.
    pub fn take(&mut self, now: Instant) -> Option<(u16, bool)> {
        while let Some(&(at, p)) = self.cooling.front() {
            if now.saturating_duration_since(at) < QUARANTINE {
                break;
            }
            self.cooling.pop_front();
            self.warm.push(p);
        }
        if let Some(p) = self.warm.pop() {
            return Some((p, true));
        }
        if let Some(p) = self.cold.pop_front() {
            return Some((p, false));
        }
        self.cooling.pop_front().map(|(_, p)| (p, true))
    }

    /// Give a pair back without sockets (least recently used ports are reused last).
    pub fn give(&mut self, port: u16) {
        debug_assert!(port.is_multiple_of(2));
        self.cold.push_back(port);
    }

    /// Give back a pair whose sockets are kept, at `now`.
    pub fn give_warm(&mut self, port: u16, now: Instant) {
        debug_assert!(port.is_multiple_of(2));
        self.cooling.push_back((now, port));
    }

    /// Pairs free now.
    pub fn available(&self) -> usize {
        self.cold.len() + self.cooling.len() + self.warm.len()
    }

    /// Free pairs whose sockets are kept.
    pub fn warm(&self) -> usize {
        self.cooling.len() + self.warm.len()
    }

    /// Pairs in the pool.
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_pairs_and_exhaustion() {
        let now = Instant::now();
        let mut p = PortPool::new(20001, 20008);
        assert_eq!(p.total(), 3, "20002/3, 20004/5, 20006/7");
        let t = |p: &mut PortPool| p.take(now).map(|(port, _)| port);
        let (a, b, c) = (t(&mut p).unwrap(), t(&mut p).unwrap(), t(&mut p).unwrap());
        assert_eq!((a, b, c), (20002, 20004, 20006));
        assert_eq!(p.take(now), None);
        p.give(b);
        assert_eq!(p.take(now), Some((20004, false)));
    }

    #[test]
    fn warm_pairs_rest_then_go_first_newest_first() {
        let t0 = Instant::now();
        let mut p = PortPool::new(30000, 30009); // 5 pairs
        let taken: Vec<u16> = (0..4).map(|_| p.take(t0).unwrap().0).collect();
        assert_eq!(taken, [30000, 30002, 30004, 30006]);
        p.give_warm(30002, t0);
        p.give_warm(30004, t0 + Duration::from_millis(10));
        assert_eq!(p.warm(), 2);
        // resting: a cold pair first
        assert_eq!(
            p.take(t0 + Duration::from_millis(100)),
            Some((30008, false))
        );
        // nothing cold left: a resting pair rather than no pair (the oldest)
        assert_eq!(p.take(t0 + Duration::from_millis(100)), Some((30002, true)));
        p.give_warm(30002, t0 + Duration::from_millis(100));
        p.give(30000);
        let later = t0 + QUARANTINE + Duration::from_millis(200);
        // rested: warm before cold, the most recently rested first
        assert_eq!(p.take(later), Some((30002, true)));
        assert_eq!(p.take(later), Some((30004, true)));
        assert_eq!(p.take(later), Some((30000, false)));
        assert_eq!(p.take(later), None);
        assert_eq!(p.available(), 0);
    }
}
