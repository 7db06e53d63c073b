//! The one injected clock: every daemon reads the time through a [`Clock`], so the cores take
//! time as input and tests drive it.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The current time: a monotonic instant for timers and wall-clock seconds for the timestamps
/// carried in status updates and shown to users.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time (tokio's, so that paused-time tests drive it).
    pub instant: Instant,
    /// Seconds since the Unix epoch.
    pub unix_seconds: f64,
}

impl Now {
    /// The real current time.
    pub fn real() -> Self {
        Self {
            instant: Instant::now(),
            unix_seconds: crate::now_seconds(),
        }
    }

    /// The wall-clock time as a `SystemTime`.
    pub fn system_time(&self) -> SystemTime {
        Duration::try_from_secs_f64(self.unix_seconds)
            .ok()
            .and_then(|since| UNIX_EPOCH.checked_add(since))
            .unwrap_or(UNIX_EPOCH)
    }
}

/// Where a daemon reads the time.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Now;
}

/// The real clock: tokio's monotonic time and the system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now::real()
    }
}

/// A clock a test moves by hand: a fixed origin plus what the test advanced. Wall time starts
/// at `unix_origin` and moves with the monotonic time.
#[derive(Debug)]
pub struct ManualClock {
    origin: Instant,
    unix_origin: f64,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    /// Starts now (tokio's now), at `unix_origin` seconds since the epoch.
    pub fn new(unix_origin: f64) -> Self {
        Self {
            origin: Instant::now(),
            unix_origin,
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward by `by`; returns the new time.
    pub fn advance(&self, by: Duration) -> Now {
        let mut elapsed = self.elapsed.lock().unwrap_or_else(|e| e.into_inner());
        *elapsed += by;
        self.at(*elapsed)
    }

    /// Sets the clock to `instant` (never backwards); returns the new time.
    pub fn set(&self, instant: Instant) -> Now {
        let mut elapsed = self.elapsed.lock().unwrap_or_else(|e| e.into_inner());
        *elapsed = (*elapsed).max(instant.saturating_duration_since(self.origin));
        self.at(*elapsed)
    }

    fn at(&self, elapsed: Duration) -> Now {
        Now {
            instant: self.origin + elapsed,
            unix_seconds: self.unix_origin + elapsed.as_secs_f64(),
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        let elapsed = *self.elapsed.lock().unwrap_or_else(|e| e.into_inner());
        self.at(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_both_times_together_and_never_back() {
        let clock = ManualClock::new(1_700_000_000.0);
        let start = clock.now();
        let later = clock.advance(Duration::from_secs(5));
        assert_eq!(later.instant - start.instant, Duration::from_secs(5));
        assert_eq!(later.unix_seconds, 1_700_000_005.0);
        let back = clock.set(start.instant);
        assert_eq!(back.instant, later.instant);
        assert_eq!(
            later.system_time(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_005)
        );
    }
}
