//! The RTP port pool: even ports for RTP, the next odd port for RTCP, from a configured range.

use std::collections::VecDeque;

/// Free RTP ports (even); a taken port `p` also holds `p + 1` for RTCP.
#[derive(Debug)]
pub struct PortPool {
    free: VecDeque<u16>,
    total: usize,
}

impl PortPool {
    /// Pairs from `min..=max` (both rounded inwards to whole even/odd pairs).
    pub fn new(min: u16, max: u16) -> PortPool {
        let start = if min.is_multiple_of(2) { min } else { min + 1 };
        let free: VecDeque<u16> = (start..max)
            .step_by(2)
            .filter(|p| p.checked_add(1).is_some_and(|q| q <= max))
            .collect();
        let total = free.len();
        PortPool { free, total }
    }

    /// Take a pair; `None` when exhausted.
    pub fn take(&mut self) -> Option<u16> {
        self.free.pop_front()
    }

    /// Give a pair back (least recently used ports are reused last).
    pub fn give(&mut self, port: u16) {
        debug_assert!(port.is_multiple_of(2));
        self.free.push_back(port);
    }

    /// Pairs free now.
    pub fn available(&self) -> usize {
        self.free.len()
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
        let mut p = PortPool::new(20001, 20008);
        assert_eq!(p.total(), 3, "20002/3, 20004/5, 20006/7");
        let (a, b, c) = (p.take().unwrap(), p.take().unwrap(), p.take().unwrap());
        assert_eq!((a, b, c), (20002, 20004, 20006));
        assert_eq!(p.take(), None);
        p.give(b);
        assert_eq!(p.take(), Some(20004));
    }
}
