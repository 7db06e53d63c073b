//! The one backoff: delays that grow by a factor from a minimum up to a cap, used for agent
//! reconnection, framework re-subscription, batch retries and Marathon's launch delay.

use std::time::Duration;

/// Exponential backoff: the `n`-th delay (from 0) is `min × factor^n`, capped by `max`.
/// [`Backoff::next_delay`] draws each delay from the upper half of its step ("equal
/// jitter"), so many clients retrying at once spread out; [`Backoff::delay`] is the bare step.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    factor: f64,
    attempt: u32,
}

impl Backoff {
    /// Doubling from `min`; `max` caps every delay (even when smaller than `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            factor: 2.0,
            attempt: 0,
        }
    }

    /// Grows by `factor` instead of 2 (Marathon's `backoffFactor`); a factor below 1 or not a
    /// number is taken as 1: delays never shrink.
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = if factor >= 1.0 { factor } else { 1.0 };
        self
    }

    /// The `attempt`-th step without jitter: `min × factor^attempt`, at most `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.min(1024)).unwrap_or(1024);
        let seconds = self.min.as_secs_f64() * self.factor.powi(exponent);
        let capped = seconds.min(self.max.as_secs_f64());
        Duration::try_from_secs_f64(capped).unwrap_or(self.max)
    }

    /// The `attempt`-th step with equal jitter: drawn from [step/2, step] by `jitter` in
    /// [0, 1].
    pub fn jittered(&self, attempt: u32, jitter: f64) -> Duration {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.delay(attempt).mul_f64(0.5 + 0.5 * jitter)
    }

    /// The next delay (see [`Backoff::jittered`]); each call moves one step up until `max`.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let delay = self.jittered(self.attempt, jitter);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Steps taken since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A jitter in [0, 1] derived from `seed` and `attempt` alone (splitmix64), for delays that
/// must come out the same when recomputed, as a batch run's retry delays do after a restart.
pub fn seeded_jitter(seed: u64, attempt: u32) -> f64 {
    let mut z = seed
        .wrapping_add(u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_double_within_bounds_and_reset() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut backoff = Backoff::new(min, max);
        let mut upper = min;
        for jitter in [0.0, 1.0, 0.5, 0.25, 0.0, 1.0, 0.9, 0.1] {
            let delay = backoff.next_delay(jitter);
            assert!(
                delay >= upper / 2 && delay <= upper,
                "{delay:?} vs {upper:?}"
            );
            upper = (upper * 2).min(max);
        }
        assert_eq!(backoff.attempts(), 8);
        backoff.reset();
        assert_eq!(backoff.next_delay(1.0), min);
    }

    #[test]
    fn marathon_launch_delay_grows_by_its_factor_and_caps() {
        let backoff =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(300)).with_factor(1.15);
        assert_eq!(backoff.delay(0), Duration::from_secs(1));
        let third = backoff.delay(2).as_secs_f64();
        assert!((third - 1.3225).abs() < 1e-9, "{third}");
        assert_eq!(backoff.delay(1000), Duration::from_secs(300));
        let small_cap = Backoff::new(Duration::from_secs(10), Duration::from_secs(3));
        assert_eq!(small_cap.delay(0), Duration::from_secs(3));
    }

    #[test]
    fn seeded_jitter_is_stable_and_spread() {
        assert_eq!(seeded_jitter(7, 3), seeded_jitter(7, 3));
        assert_ne!(seeded_jitter(7, 3), seeded_jitter(7, 4));
        let mean = (0..1000).map(|n| seeded_jitter(42, n)).sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }

    proptest! {
        #[test]
        fn every_delay_is_within_its_cap(
            min_ms in 0u64..100_000,
            max_ms in 0u64..1_000_000,
            factor in -10.0f64..1e6,
            jitters in proptest::collection::vec(-1.0f64..2.0, 0..50),
        ) {
            let max = Duration::from_millis(max_ms);
            let mut backoff = Backoff::new(Duration::from_millis(min_ms), max).with_factor(factor);
            let mut last_step = Duration::ZERO;
            for (n, jitter) in jitters.into_iter().enumerate() {
                let step = backoff.delay(n as u32);
                prop_assert!(step >= last_step && step <= max);
                let delay = backoff.next_delay(jitter);
                prop_assert!(delay <= step && delay >= step / 2 - Duration::from_nanos(1));
                last_step = step;
            }
        }
    }
}
