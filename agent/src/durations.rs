//! Checked conversion of seconds sent by a peer (master, framework) into a `Duration`.
//!
//! `Duration::from_secs_f64` panics on NaN, negative and out-of-range values, and a peer
//! decides those values: a `Kill` with a grace period of 1e308 must never take the agent's
//! control loop down. Every duration that comes from outside goes through here.

use std::time::Duration;

/// Longest kill grace period honoured: longer ones are clamped (with a warning).
pub const MAX_KILL_GRACE: Duration = Duration::from_secs(3600);
/// Longest health-check delay, grace period, interval or timeout accepted at launch.
pub const MAX_HEALTH_CHECK_SECONDS: f64 = 86_400.0;

/// Why a number of seconds is not a usable duration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// NaN or infinite.
    #[error("{} is not a finite number of seconds", Seconds(*value))]
    NotFinite {
        /// The value given.
        value: f64,
    },
    /// Below zero.
    #[error("{} s is negative", Seconds(*value))]
    Negative {
        /// The value given.
        value: f64,
    },
    /// Above the allowed maximum.
    #[error("{} s exceeds the maximum of {} s", Seconds(*value), Seconds(*max))]
    TooLarge {
        /// The value given.
        value: f64,
        /// The largest value allowed, in seconds.
        max: f64,
    },
}

/// A number of seconds as people read it: `2.5`, `3600`, but `1e308` rather than 309 digits.
struct Seconds(f64);

impl std::fmt::Display for Seconds {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let magnitude = self.0.abs();
        if magnitude.is_finite() && magnitude != 0.0 && !(1e-3..1e9).contains(&magnitude) {
            write!(formatter, "{:e}", self.0)
        } else {
            write!(formatter, "{}", self.0)
        }
    }
}

/// `value` seconds as a duration, when it is finite, not negative and at most `max_seconds`.
pub fn checked_seconds(value: f64, max_seconds: f64) -> Result<Duration, DurationError> {
    if !value.is_finite() {
        return Err(DurationError::NotFinite { value });
    }
    if value < 0.0 {
        return Err(DurationError::Negative { value });
    }
    if value > max_seconds {
        return Err(DurationError::TooLarge {
            value,
            max: max_seconds,
        });
    }
    // The range check above keeps this from failing for any sane maximum; the fallback keeps
    // a silly maximum from panicking.
    Duration::try_from_secs_f64(value).map_err(|_| DurationError::TooLarge {
        value,
        max: max_seconds,
    })
}

/// `value` seconds clamped into `[0, max]`; `None` for NaN, which has no sensible clamp.
pub fn clamped_seconds(value: f64, max: Duration) -> Option<Duration> {
    if value.is_nan() {
        return None;
    }
    if value <= 0.0 {
        return Some(Duration::ZERO);
    }
    if value >= max.as_secs_f64() {
        return Some(max);
    }
    Some(Duration::try_from_secs_f64(value).unwrap_or(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finite_non_negative_values_in_range_convert() {
        assert_eq!(checked_seconds(1.5, 10.0), Ok(Duration::from_millis(1500)));
        assert_eq!(checked_seconds(0.0, 10.0), Ok(Duration::ZERO));
        assert!(matches!(
            checked_seconds(f64::NAN, 10.0),
            Err(DurationError::NotFinite { .. })
        ));
        assert!(matches!(
            checked_seconds(f64::INFINITY, 10.0),
            Err(DurationError::NotFinite { .. })
        ));
        assert!(matches!(
            checked_seconds(-1.0, 10.0),
            Err(DurationError::Negative { .. })
        ));
        assert!(matches!(
            checked_seconds(1e308, 10.0),
            Err(DurationError::TooLarge { .. })
        ));
        assert!(checked_seconds(1e308, f64::MAX).is_err(), "never panics");
        assert_eq!(
            checked_seconds(1e308, 3600.0).unwrap_err().to_string(),
            "1e308 s exceeds the maximum of 3600 s"
        );
        assert_eq!(
            checked_seconds(-1.5, 10.0).unwrap_err().to_string(),
            "-1.5 s is negative"
        );
        assert_eq!(
            checked_seconds(f64::NAN, 10.0).unwrap_err().to_string(),
            "NaN is not a finite number of seconds"
        );
    }

    #[test]
    fn clamping_keeps_values_in_range() {
        let max = Duration::from_secs(60);
        assert_eq!(clamped_seconds(1e308, max), Some(max));
        assert_eq!(clamped_seconds(f64::INFINITY, max), Some(max));
        assert_eq!(clamped_seconds(-5.0, max), Some(Duration::ZERO));
        assert_eq!(
            clamped_seconds(f64::NEG_INFINITY, max),
            Some(Duration::ZERO)
        );
        assert_eq!(clamped_seconds(f64::NAN, max), None);
        assert_eq!(clamped_seconds(2.0, max), Some(Duration::from_secs(2)));
    }
}
