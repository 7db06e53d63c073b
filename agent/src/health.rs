//! Health checks run by the agent: HTTP, TCP and COMMAND probes, and the pure policy that
//! turns probe results into a `healthy` flag (grace period, consecutive failures).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1::{HealthCheck, HealthCheckProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::durations::{MAX_HEALTH_CHECK_SECONDS, clamped_seconds};
use crate::runtime::{ContainerHandle, Runtime};

/// The timing of a health check, with defaults for unset fields.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// Before the first probe.
    pub delay: Duration,
    /// Failures within this time after the start are ignored until the first success.
    pub grace_period: Duration,
    /// Between probes.
    pub interval: Duration,
    /// A probe taking longer fails.
    pub timeout: Duration,
    /// Consecutive failures after which the task is unhealthy (at least 1).
    pub max_consecutive_failures: u32,
}

impl HealthPolicy {
    /// Reads the proto; zero means the default (grace 15 s, interval 10 s, timeout 5 s, 3 failures);
    /// values beyond [`MAX_HEALTH_CHECK_SECONDS`] are clamped to it.
    pub fn from_proto(check: &HealthCheck) -> Self {
        // The agent refuses launches with unusable durations, but a checkpoint written by an
        // older agent may still hold one: out-of-range values are clamped, never a panic.
        let seconds = |value: f64, default: f64| {
            let chosen = if value.is_finite() && value > 0.0 {
                value
            } else {
                default
            };
            clamped_seconds(chosen, Duration::from_secs_f64(MAX_HEALTH_CHECK_SECONDS))
                .unwrap_or(Duration::from_secs_f64(default))
        };
        Self {
            delay: seconds(check.delay_seconds, 0.0),
            grace_period: seconds(check.grace_period_seconds, 15.0),
            interval: seconds(check.interval_seconds, 10.0),
            timeout: seconds(check.timeout_seconds, 5.0),
            max_consecutive_failures: if check.max_consecutive_failures == 0 {
                3
            } else {
                check.max_consecutive_failures
            },
        }
    }
}

/// Pure tracker of a task's health from probe outcomes.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    policy: HealthPolicy,
    consecutive_failures: u32,
    healthy: Option<bool>,
}

impl HealthTracker {
    /// No result yet.
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            consecutive_failures: 0,
            healthy: None,
        }
    }

    /// Records a probe made `since_start` after the task started; returns the new health when
    /// it changed.
    pub fn observe(&mut self, since_start: Duration, passed: bool) -> Option<bool> {
        let next = if passed {
            self.consecutive_failures = 0;
            Some(true)
        } else {
            let in_grace = since_start < self.policy.grace_period && self.healthy.is_none();
            if in_grace {
                return None;
            }
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.consecutive_failures >= self.policy.max_consecutive_failures.max(1) {
                Some(false)
            } else {
                None
            }
        };
        match next {
            Some(value) if self.healthy != Some(value) => {
                self.healthy = Some(value);
                Some(value)
            }
            _ => None,
        }
    }

    /// The current health, once known.
    pub fn healthy(&self) -> Option<bool> {
        self.healthy
    }
}

/// What a probe needs to reach the task.
#[derive(Clone)]
pub struct ProbeTarget {
    /// The task's host ports.
    pub host_ports: Vec<u32>,
    /// The runtime, for COMMAND checks.
    pub runtime: Arc<dyn Runtime>,
    /// The container, for COMMAND checks.
    pub handle: ContainerHandle,
    /// The task's environment, for COMMAND checks.
    pub env: BTreeMap<String, String>,
}

/// Runs one probe; true when healthy.
pub async fn probe(check: &HealthCheck, target: &ProbeTarget, timeout: Duration) -> bool {
    let port = if check.port != 0 {
        Some(check.port)
    } else {
        target.host_ports.get(check.port_index as usize).copied()
    };
    let attempt = async {
        match check.protocol() {
            HealthCheckProtocol::Http => match port {
                Some(port) => http_probe(port, &check.path).await,
                None => false,
            },
            HealthCheckProtocol::Tcp => match port {
                Some(port) => match u16::try_from(port) {
                    Ok(port) => TcpStream::connect(("127.0.0.1", port)).await.is_ok(),
                    Err(_) => false,
                },
                None => false,
            },
            HealthCheckProtocol::Command => matches!(
                target
                    .runtime
                    .exec(&target.handle, &check.command, &target.env)
                    .await,
                Ok(0)
            ),
            HealthCheckProtocol::Unspecified => false,
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

async fn http_probe(port: u32, path: &str) -> bool {
    let Ok(port) = u16::try_from(port) else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let path = if path.is_empty() { "/" } else { path };
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: agora-agent\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    parse_status_code(&head[..read]).is_some_and(|code| (200..400).contains(&code))
}

fn parse_status_code(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut parts = text.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            delay: Duration::ZERO,
            grace_period: Duration::from_secs(10),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_consecutive_failures: 2,
        }
    }

    #[test]
    fn failures_in_grace_are_ignored_until_first_success() {
        let mut tracker = HealthTracker::new(policy());
        assert_eq!(tracker.observe(Duration::from_secs(1), false), None);
        assert_eq!(tracker.observe(Duration::from_secs(2), false), None);
        assert_eq!(tracker.healthy(), None);
        assert_eq!(tracker.observe(Duration::from_secs(3), true), Some(true));
        assert_eq!(
            tracker.observe(Duration::from_secs(4), true),
            None,
            "no change, no report"
        );
        // After a success, grace no longer protects.
        assert_eq!(tracker.observe(Duration::from_secs(5), false), None);
        assert_eq!(tracker.observe(Duration::from_secs(6), false), Some(false));
        assert_eq!(tracker.observe(Duration::from_secs(7), false), None);
        assert_eq!(tracker.observe(Duration::from_secs(8), true), Some(true));
    }

    #[test]
    fn failures_after_grace_count() {
        let mut tracker = HealthTracker::new(policy());
        assert_eq!(tracker.observe(Duration::from_secs(11), false), None);
        assert_eq!(tracker.observe(Duration::from_secs(12), false), Some(false));
    }

    #[test]
    fn defaults_apply_to_zero_fields() {
        let policy = HealthPolicy::from_proto(&HealthCheck::default());
        assert_eq!(policy.interval, Duration::from_secs(10));
        assert_eq!(policy.max_consecutive_failures, 3);
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_code(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_code(b"HTTP/1.1 302 Found"), Some(302));
        assert_eq!(parse_status_code(b"garbage"), None);
    }

    #[tokio::test]
    async fn http_and_tcp_probes_reach_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = u32::from(listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 256];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(b"HTTP/1.0 204 No Content\r\n\r\n").await;
            }
        });
        assert!(http_probe(port, "/").await);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = u32::from(closed.local_addr().unwrap().port());
        drop(closed);
        assert!(!http_probe(closed_port, "/").await);
    }
}
