//! How a driver connects and behaves.

use std::time::Duration;

use agora_proto::v1;

use crate::SdkError;

/// Settings of a [`crate::SchedulerDriver`].
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The master's gRPC URL, e.g. `http://127.0.0.1:5050`.
    pub master_url: String,
    /// Who the framework is. Leave `id` empty on first start; set it to the stored id to fail
    /// over after a restart. `failover_timeout_seconds` is sent as is on every subscription.
    pub framework: v1::FrameworkInfo,
    /// Acknowledge every update carrying a uuid right after handing it to the event stream.
    pub auto_acknowledge: bool,
    /// First delay before re-subscribing after the stream ended or failed.
    pub reconnect_backoff_min: Duration,
    /// Longest delay between re-subscription attempts.
    pub reconnect_backoff_max: Duration,
    /// Re-subscribe when nothing arrived for this many heartbeat intervals.
    pub missed_heartbeats_before_reconnect: u32,
    /// Capacity of the event channel; the driver waits for the framework when it is full.
    pub event_buffer: usize,
}

impl DriverConfig {
    /// A configuration with the usual defaults for `framework` talking to `master_url`.
    pub fn new(master_url: impl Into<String>, framework: v1::FrameworkInfo) -> Self {
        Self {
            master_url: master_url.into(),
            framework,
            auto_acknowledge: true,
            reconnect_backoff_min: Duration::from_millis(200),
            reconnect_backoff_max: Duration::from_secs(10),
            missed_heartbeats_before_reconnect: 3,
            event_buffer: 256,
        }
    }

    /// Checks the ranges the driver relies on.
    pub fn validate(&self) -> Result<(), SdkError> {
        if self.event_buffer == 0 {
            return Err(SdkError::InvalidConfig {
                field: "event_buffer",
                reason: "must be at least 1".into(),
            });
        }
        if self.missed_heartbeats_before_reconnect == 0 {
            return Err(SdkError::InvalidConfig {
                field: "missed_heartbeats_before_reconnect",
                reason: "must be at least 1".into(),
            });
        }
        if self.reconnect_backoff_min.is_zero() {
            return Err(SdkError::InvalidConfig {
                field: "reconnect_backoff_min",
                reason: "must be positive".into(),
            });
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return Err(SdkError::InvalidConfig {
                field: "reconnect_backoff_max",
                reason: "must not be below reconnect_backoff_min".into(),
            });
        }
        let failover = self.framework.failover_timeout_seconds;
        if !failover.is_finite() || failover < 0.0 {
            return Err(SdkError::InvalidConfig {
                field: "framework.failover_timeout_seconds",
                reason: format!("must be a finite, non-negative number, got {failover}"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_field() {
        let config = DriverConfig::new("http://127.0.0.1:5050", v1::FrameworkInfo::default());
        assert!(config.validate().is_ok());
        let mut bad = config.clone();
        bad.event_buffer = 0;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("event_buffer")
        );
        let mut bad = config.clone();
        bad.reconnect_backoff_max = std::time::Duration::from_millis(1);
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("reconnect_backoff_max")
        );
        let mut bad = config;
        bad.framework.failover_timeout_seconds = -1.0;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("failover_timeout_seconds")
        );
    }
}
