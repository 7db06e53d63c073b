//! Marathon's documented defaults for fields an app definition leaves out.

/// Default `cpus`.
pub const CPUS: f64 = 1.0;
/// Default `mem` (MiB).
pub const MEM: f64 = 128.0;
/// Default `disk` (MiB).
pub const DISK: f64 = 0.0;
/// Default `gpus`.
pub const GPUS: u32 = 0;
/// Default `instances`.
pub const INSTANCES: u32 = 1;
/// Default `backoffSeconds`.
pub const BACKOFF_SECONDS: u64 = 1;
/// Default `backoffFactor`.
pub const BACKOFF_FACTOR: f64 = 1.15;
/// Default `maxLaunchDelaySeconds` (Marathon 1.x documents 3600, one hour).
pub const MAX_LAUNCH_DELAY_SECONDS: u64 = 3600;
/// Default `upgradeStrategy.minimumHealthCapacity`.
pub const MINIMUM_HEALTH_CAPACITY: f64 = 1.0;
/// Default `upgradeStrategy.maximumOverCapacity`.
pub const MAXIMUM_OVER_CAPACITY: f64 = 1.0;
/// Default `healthChecks[].gracePeriodSeconds`.
pub const HEALTH_GRACE_PERIOD_SECONDS: u32 = 300;
/// Default `healthChecks[].intervalSeconds`.
pub const HEALTH_INTERVAL_SECONDS: u32 = 60;
/// Default `healthChecks[].timeoutSeconds`.
pub const HEALTH_TIMEOUT_SECONDS: u32 = 20;
/// Default `healthChecks[].maxConsecutiveFailures`.
pub const HEALTH_MAX_CONSECUTIVE_FAILURES: u32 = 3;
/// Default `healthChecks[].delaySeconds`.
pub const HEALTH_DELAY_SECONDS: u32 = 15;
/// Default `healthChecks[].path` for HTTP-style checks.
pub const HEALTH_PATH: &str = "/";
