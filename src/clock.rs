//! Wall-clock time, injected. Monotonic time (`Instant`) is passed into the sans-IO cores by
//! the driver; the wall clock (schedules, caps, CDR timestamps) comes from a [`Clock`] so tests
//! can pin any instant.

use chrono::{DateTime, Utc};
use std::sync::Mutex;

/// Source of the current UTC time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now_utc(&self) -> DateTime<Utc>;

    /// A monotonic reading, for measuring how long work took (metrics only; protocol time
    /// is the `now` the driver passes in).
    fn instant(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_utc(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that says what it is told (tests).
#[derive(Debug)]
pub struct FixedClock(pub Mutex<DateTime<Utc>>);

impl FixedClock {
    /// A clock stopped at `t`.
    pub fn new(t: DateTime<Utc>) -> Self {
        FixedClock(Mutex::new(t))
    }

    /// Move it.
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
}

impl Clock for FixedClock {
    fn now_utc(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
