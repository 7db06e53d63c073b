//! Jittered exponential backoff between re-subscription attempts.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Delays that double from `min` up to `max`, each drawn uniformly from the upper half of
/// the current step ("equal jitter"), so many frameworks reconnecting at once spread out.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// A backoff between `min` and `max` with a seeded RNG (deterministic in tests).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next delay to wait; each call moves one step up until `max`.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        let step = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter_nanos = self
            .rng
            .random_range(0..=half.as_nanos().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_nanos(jitter_nanos)
    }

    /// Back to the first step, after a successful subscription.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds_and_reset() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut backoff = Backoff::new(min, max, 7);
        let mut upper = min;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= upper / 2 && delay <= upper,
                "{delay:?} outside [{:?}, {upper:?}]",
                upper / 2
            );
            upper = (upper * 2).min(max);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn same_seed_same_delays() {
        let mut first = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), 3);
        let mut second = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), 3);
        for _ in 0..5 {
            assert_eq!(first.next_delay(), second.next_delay());
        }
    }
}
