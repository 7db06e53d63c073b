//! Frameworks as the master sees them: subscription state, role, suppression and the
//! resources they hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use agora_proto::{FrameworkId, StreamId, TaskId, v1};
use tokio::time::Instant;

use super::ConnId;
use super::allocator::Quantities;

/// Whether a framework has a live subscription.
///
/// `Connected` on subscribe (first time or failover); `Disconnected` when the stream ends (or
/// after a master restart), until it re-subscribes or the failover deadline passes, at which
/// point the framework is removed (it leaves this machine for the removed set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameworkConnection {
    /// Subscribed on `conn` with stream id `stream_id`.
    Connected {
        /// The subscription stream.
        conn: ConnId,
        /// The id handed out in `Subscribed`, carried by every call.
        stream_id: StreamId,
    },
    /// No subscription; its tasks are kept until `failover_deadline`.
    Disconnected {
        /// When the framework is removed unless it re-subscribes.
        failover_deadline: Instant,
    },
}

/// One framework.
#[derive(Debug, Clone)]
pub(crate) struct Framework {
    /// Its info, with id and role set.
    pub(crate) info: v1::FrameworkInfo,
    /// Its id.
    pub(crate) id: FrameworkId,
    /// Subscription state.
    pub(crate) connection: FrameworkConnection,
    /// Suppressed frameworks get no new offers.
    pub(crate) suppressed: bool,
    /// Resources of its non-terminal tasks on pooled agents plus its outstanding offers.
    pub(crate) allocated: Quantities,
    /// Updates the master made (no uuid, so nobody resends them) while the framework had no
    /// subscription, latest per task: delivered when it subscribes again.
    pub(crate) unannounced: BTreeMap<TaskId, v1::TaskStatus>,
}

impl Framework {
    /// The fair-share role ("*" when unset).
    pub(crate) fn role(&self) -> &str {
        if self.info.role.is_empty() {
            "*"
        } else {
            &self.info.role
        }
    }

    /// Whether it gets TASK_UNREACHABLE rather than TASK_LOST.
    pub(crate) fn partition_aware(&self) -> bool {
        self.info
            .capabilities
            .contains(&(v1::FrameworkCapability::PartitionAware as i32))
    }

    /// The live subscription stream, if any.
    pub(crate) fn conn(&self) -> Option<ConnId> {
        match self.connection {
            FrameworkConnection::Connected { conn, .. } => Some(conn),
            FrameworkConnection::Disconnected { .. } => None,
        }
    }

    /// The failover timeout it asked for, capped by `max` (the master's
    /// --max-failover-timeout). Unset (0) means `max`, not "removed the moment it
    /// disconnects" as in Mesos: a framework that never heard of failover timeouts would
    /// otherwise lose every task on its first restart. (Values that are not positive and
    /// finite are refused at subscription; a registry entry holding one gets `max` too.)
    pub(crate) fn failover_timeout(&self, max: Duration) -> Duration {
        let seconds = self.info.failover_timeout_seconds;
        if !seconds.is_finite() || seconds <= 0.0 {
            return max;
        }
        Duration::try_from_secs_f64(seconds).unwrap_or(max).min(max)
    }
}

/// All frameworks, in id order, plus the removed ones.
#[derive(Debug, Default)]
pub(crate) struct FrameworkBook {
    /// Known frameworks (connected or within their failover timeout), by id.
    pub(crate) frameworks: BTreeMap<FrameworkId, Framework>,
    /// Which framework each live subscription stream belongs to.
    pub(crate) by_conn: HashMap<ConnId, FrameworkId>,
    /// Frameworks torn down or failed over past their timeout: never again.
    pub(crate) removed: BTreeSet<FrameworkId>,
}

impl FrameworkBook {
    /// The framework, if known.
    pub(crate) fn get(&self, framework_id: &FrameworkId) -> Option<&Framework> {
        self.frameworks.get(framework_id)
    }

    /// The framework, mutably, if known.
    pub(crate) fn get_mut(&mut self, framework_id: &FrameworkId) -> Option<&mut Framework> {
        self.frameworks.get_mut(framework_id)
    }

    /// The current subscription stream of the framework.
    pub(crate) fn conn_of(&self, framework_id: &FrameworkId) -> Option<ConnId> {
        self.frameworks.get(framework_id).and_then(Framework::conn)
    }

    /// The earliest failover deadline among disconnected frameworks.
    pub(crate) fn next_failover_deadline(&self) -> Option<Instant> {
        self.frameworks
            .values()
            .filter_map(|framework| match framework.connection {
                FrameworkConnection::Disconnected { failover_deadline } => Some(failover_deadline),
                FrameworkConnection::Connected { .. } => None,
            })
            .min()
    }

    /// Frameworks whose failover deadline passed by `now`.
    pub(crate) fn failed_over(&self, now: Instant) -> Vec<FrameworkId> {
        self.frameworks
            .values()
            .filter(|framework| {
                matches!(framework.connection,
                    FrameworkConnection::Disconnected { failover_deadline } if failover_deadline <= now)
            })
            .map(|framework| framework.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framework(info: v1::FrameworkInfo) -> Framework {
        Framework {
            id: FrameworkId::new(info.id.clone()),
            info,
            connection: FrameworkConnection::Disconnected {
                failover_deadline: Instant::now(),
            },
            suppressed: false,
            allocated: Quantities::default(),
            unannounced: BTreeMap::new(),
        }
    }

    #[test]
    fn role_defaults_to_star_and_capabilities_are_read() {
        let plain = framework(v1::FrameworkInfo::default());
        assert_eq!(plain.role(), "*");
        assert!(!plain.partition_aware());
        let aware = framework(v1::FrameworkInfo {
            role: "prod".into(),
            capabilities: vec![v1::FrameworkCapability::PartitionAware as i32],
            ..Default::default()
        });
        assert_eq!(aware.role(), "prod");
        assert!(aware.partition_aware());
    }

    #[test]
    fn failover_timeout_is_capped_and_sanitised() {
        let max = Duration::from_secs(100);
        let with = |seconds: f64| {
            framework(v1::FrameworkInfo {
                failover_timeout_seconds: seconds,
                ..Default::default()
            })
            .failover_timeout(max)
        };
        assert_eq!(with(10.0), Duration::from_secs(10));
        assert_eq!(with(1e30), max);
        // Unset means the master's maximum, so a restart never loses the tasks.
        assert_eq!(with(0.0), max);
        assert_eq!(with(-1.0), max);
        assert_eq!(with(f64::NAN), max);
    }
}
