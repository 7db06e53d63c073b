//! One task as the agent core keeps it: what the framework asked for, its update stream, its
//! checkpoint, and where it is in its life with the data that only that phase has.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_proto::v1::TaskInfo;

use crate::checkpoint::TaskCheckpoint;
use crate::durations::{MAX_KILL_GRACE, clamped_seconds};
use crate::runtime::ContainerHandle;
use crate::snapshot::TaskSnapshot;
use crate::task_key::TaskKey;
use crate::update_stream::StatusUpdateStream;
use agora_proto::TaskPhase;

/// A kill that arrived while the launch was in flight: carried out once the launch completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingKill {
    /// The grace period the master asked for; `None`: the task's own.
    pub(crate) grace: Option<Duration>,
}

/// Where a task is in its life on this agent, each phase with its own data. The reported
/// state (what the framework was told) is [`TaskEntry::reported`]; the two differ only briefly
/// (a recovered task whose container runs but whose RUNNING update is still to be sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Accepted (checkpointed), nothing launched and no launch in flight.
    Accepted,
    /// The runtime is launching it; `kill` is set once a kill arrived meanwhile.
    Launching {
        /// The kill to carry out when the launch completes.
        kill: Option<PendingKill>,
    },
    /// Its container or process exists and was not asked to stop.
    Running {
        /// The container.
        handle: ContainerHandle,
        /// The health checks' latest verdict, if the task has checks and they gave one.
        healthy: Option<bool>,
    },
    /// The runtime was asked to stop its container (SIGTERM, SIGKILL after the grace period).
    Killing {
        /// The container.
        handle: ContainerHandle,
        /// The health verdict at the time of the kill, still reported in its updates.
        healthy: Option<bool>,
    },
    /// Its terminal update was emitted; it stays until the master acknowledges that update.
    Ended {
        /// The container it ran in, if it ever had one.
        handle: Option<ContainerHandle>,
    },
}

impl Lifecycle {
    /// The container, in the phases that have one.
    pub(crate) fn handle(&self) -> Option<&ContainerHandle> {
        match self {
            Lifecycle::Running { handle, .. } | Lifecycle::Killing { handle, .. } => Some(handle),
            Lifecycle::Ended { handle } => handle.as_ref(),
            Lifecycle::Accepted | Lifecycle::Launching { .. } => None,
        }
    }

    /// The health verdict reported with the task's updates.
    pub(crate) fn healthy(&self) -> Option<bool> {
        match self {
            Lifecycle::Running { healthy, .. } | Lifecycle::Killing { healthy, .. } => *healthy,
            _ => None,
        }
    }

    /// True once a kill was asked for (and not yet ended).
    pub(crate) fn kill_requested(&self) -> bool {
        matches!(
            self,
            Lifecycle::Killing { .. } | Lifecycle::Launching { kill: Some(_) }
        )
    }
}

/// Everything the core keeps about one task.
#[derive(Debug, Clone)]
pub(crate) struct TaskEntry {
    /// The task as the framework described it.
    pub(crate) info: TaskInfo,
    /// What the framework was last told (the checked state machine of the reported states).
    pub(crate) reported: TaskPhase,
    /// Its updates, resent until acknowledged.
    pub(crate) stream: StatusUpdateStream,
    /// What is on disk about it besides the updates.
    pub(crate) checkpoint: TaskCheckpoint,
    /// Its host ports, `PORT0` first.
    pub(crate) host_ports: Vec<u32>,
    /// Its environment, for launches and COMMAND health checks.
    pub(crate) env: BTreeMap<String, String>,
    /// Where it is in its life.
    pub(crate) lifecycle: Lifecycle,
}

impl TaskEntry {
    /// The grace period of a kill: the master's when it gave one, else the task's own, else the
    /// agent's default. The task's own was validated at launch, but one recovered from an older
    /// agent's checkpoint was not: it is clamped rather than trusted.
    pub(crate) fn kill_grace(&self, requested: Option<Duration>, default: Duration) -> Duration {
        requested.unwrap_or_else(|| {
            let seconds = self.info.kill_grace_period_seconds;
            if seconds.is_finite() && seconds > 0.0 {
                clamped_seconds(seconds, MAX_KILL_GRACE).unwrap_or(default)
            } else {
                default
            }
        })
    }

    /// The task as `/state` shows it.
    pub(crate) fn snapshot(&self, key: &TaskKey) -> TaskSnapshot {
        let handle = self.lifecycle.handle();
        TaskSnapshot {
            task_id: key.task_id.to_string(),
            framework_id: key.framework_id.to_string(),
            name: self.info.name.clone(),
            state: self.reported.state().as_str_name().to_owned(),
            healthy: self.lifecycle.healthy(),
            container_id: handle.map(|h| h.container_id.clone()),
            pid: handle.and_then(|h| h.pid),
            host_ports: self.host_ports.clone(),
            pending_updates: self.stream.pending_len(),
        }
    }
}
