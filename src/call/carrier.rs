//! Carriers: who may send calls (by source address) and how fast.

use crate::config::CarrierConfig;
use std::net::IpAddr;
use std::time::Instant;

/// A token bucket of `rate` calls per second (burst `rate`), time passed in.
#[derive(Debug, Clone)]
pub struct CpsLimiter {
    rate: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl CpsLimiter {
    /// `rate` calls per second; 0 = unlimited.
    pub fn new(rate: u32) -> Self {
        CpsLimiter {
            rate: rate as f64,
            tokens: rate as f64,
            at: None,
        }
    }

    /// Take one call's token; false when over the rate.
    pub fn admit(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if let Some(at) = self.at {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The carriers of the current config with their limiters.
#[derive(Debug, Default)]
pub struct Carriers {
    list: Vec<(CarrierConfig, CpsLimiter)>,
}

impl Carriers {
    /// From config. Limiters of carriers that keep their id and rate carry over from `old`.
    pub fn new(cfg: &[CarrierConfig], old: Option<&Carriers>) -> Self {
        let list = cfg
            .iter()
            .map(|c| {
                let lim = old
                    .and_then(|o| {
                        o.list
                            .iter()
                            .find(|(oc, _)| oc.id == c.id && oc.max_cps == c.max_cps)
                    })
                    .map(|(_, l)| l.clone())
                    .unwrap_or_else(|| CpsLimiter::new(c.max_cps));
                (c.clone(), lim)
            })
            .collect();
        Carriers { list }
    }

    /// A carrier of this id is configured.
    pub fn has(&self, id: &str) -> bool {
        self.list.iter().any(|(c, _)| c.id == id)
    }

    /// The carrier a source address belongs to (first match in config order).
    pub fn identify(&mut self, ip: IpAddr) -> Option<(&CarrierConfig, &mut CpsLimiter)> {
        self.list
            .iter_mut()
            .find(|(c, _)| c.sources.iter().any(|s| s.contains(ip)))
            .map(|(c, l)| (&*c, l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cps_bucket() {
        let t0 = Instant::now();
        let mut l = CpsLimiter::new(2);
        assert!(l.admit(t0));
        assert!(l.admit(t0));
        assert!(!l.admit(t0), "third in the same instant is over 2 cps");
        assert!(
            l.admit(t0 + Duration::from_millis(500)),
            "half a second refills one"
        );
        assert!(!l.admit(t0 + Duration::from_millis(500)));
        let mut u = CpsLimiter::new(0);
        assert!((0..1000).all(|_| u.admit(t0)));
    }
}
