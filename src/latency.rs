//! Delay DCE adds between a carrier's INVITE arriving (socket read) and the buyer's INVITE
//! leaving (socket write), kept as samples for percentiles in the shutdown report and the
//! load script. Bounded: after `CAP` samples, new ones replace old ones round-robin.

use std::time::Duration;

const CAP: usize = 1_000_000;

/// Samples in microseconds.
#[derive(Debug, Default)]
pub struct Latency {
    samples: Vec<u32>,
    next: usize,
}

impl Latency {
    /// Record one delay.
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u32::MAX as u128) as u32;
        if self.samples.len() < CAP {
            self.samples.push(us);
        } else {
            self.samples[self.next] = us;
            self.next = (self.next + 1) % CAP;
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// None recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Take `other`'s samples too (the workers' delays, for one report).
    pub fn merge(&mut self, other: &Latency) {
        for &us in &other.samples {
            self.record(Duration::from_micros(u64::from(us)));
        }
    }

    /// The `p`-th percentile (0–100) in microseconds, `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<u32> {
        if self.samples.is_empty() {
            return None;
        }
        let mut s = self.samples.clone();
        s.sort_unstable();
        let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
        Some(s[idx.min(s.len() - 1)])
    }

    /// `n=… p50=…us p99=…us max=…us`, or `n=0`.
    pub fn report(&self) -> String {
        match (
            self.percentile(50.0),
            self.percentile(99.0),
            self.percentile(100.0),
        ) {
            (Some(a), Some(b), Some(c)) => {
                format!("n={} p50={a}us p99={b}us max={c}us", self.samples.len())
            }
            _ => "n=0".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut l = Latency::default();
        assert_eq!(l.report(), "n=0");
        for us in 1..=100 {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.percentile(50.0), Some(51));
        assert_eq!(l.percentile(99.0), Some(99));
        assert_eq!(l.report(), "n=100 p50=51us p99=99us max=100us");
    }
}
