//! What goes into the agent core and what comes out: [`Input`]s, [`Command`]s in the order
//! the shell must carry them out, and the [`Step`] context (clock, ids) of each input.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_proto::AgentId;
use agora_proto::v1::{AgentMessage, HealthCheck, master_message};

use crate::checkpoint::{RecoveredTask, TaskCheckpoint};
use crate::error::RuntimeError;
use crate::runtime::{
    ContainerHandle, ContainerState, DiscoveredContainer, ExitStatus, LaunchSpec,
};
use crate::task_key::TaskKey;
use crate::update_stream::UpdateRecord;

/// What the core needs from the outside world for one step: the time and fresh ids.
pub(crate) struct Step<'a> {
    /// Seconds since the Unix epoch, stamped on the updates of this step.
    pub(crate) now: f64,
    /// A fresh, unique uuid for each status update.
    pub(crate) new_uuid: &'a mut (dyn FnMut() -> String + Send),
}

/// Everything the core reacts to.
#[derive(Debug)]
pub(crate) enum Input {
    /// What the checkpoint and the runtime hold after a (re)start, before anything else.
    Recovered {
        /// Tasks read back from the checkpoint.
        tasks: Vec<RecoveredTask>,
        /// This agent's containers, found by their labels.
        discovered: Vec<DiscoveredContainer>,
        /// The state of checkpointed containers the label search did not find.
        inspected: BTreeMap<TaskKey, ContainerState>,
    },
    /// A message from the master.
    Master(master_message::Message),
    /// The master accepted our (re-)registration under `agent_id`.
    Connected { agent_id: AgentId },
    /// The connection to the master ended.
    Disconnected,
    /// A launch finished.
    Launched {
        key: TaskKey,
        result: Result<ContainerHandle, RuntimeError>,
    },
    /// Launch progress (image pull).
    Progress { key: TaskKey, message: String },
    /// A container or process ended.
    Exited {
        key: TaskKey,
        container_id: String,
        exit: ExitStatus,
    },
    /// A health check changed its verdict.
    Health {
        key: TaskKey,
        container_id: String,
        healthy: bool,
    },
    /// Time to resend every unacknowledged update.
    ResendTick,
    /// A checkpoint write failed: nothing that depended on it may happen.
    CheckpointFailed {
        /// What was being written.
        operation: String,
        /// Why it failed.
        error: String,
    },
}

/// What the shell must do, in order. A checkpoint write that fails stops the agent before any
/// later command of the same step is carried out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Checkpoint the agent id.
    SaveAgentId(AgentId),
    /// Checkpoint a task's description and container.
    SaveTask {
        key: TaskKey,
        checkpoint: TaskCheckpoint,
    },
    /// Append an update or an acknowledgement to a task's update log.
    AppendUpdate { key: TaskKey, record: UpdateRecord },
    /// Forget a task on disk (its terminal update was acknowledged).
    RemoveTaskCheckpoint { key: TaskKey },
    /// Send a message to the master (dropped when not connected: updates are resent).
    Send(AgentMessage),
    /// Launch a task; the result comes back as [`Input::Launched`].
    Launch { key: TaskKey, spec: Box<LaunchSpec> },
    /// Wait for a container to end; the end comes back as [`Input::Exited`].
    WatchExit {
        key: TaskKey,
        handle: ContainerHandle,
    },
    /// Stop a container: SIGTERM, then SIGKILL once `grace` has passed.
    Kill {
        key: TaskKey,
        handle: ContainerHandle,
        grace: Duration,
    },
    /// Remove an exited container (after the configured delay).
    RemoveContainer { handle: ContainerHandle },
    /// Start probing a task's health; verdicts come back as [`Input::Health`].
    StartHealthCheck {
        key: TaskKey,
        handle: ContainerHandle,
        check: HealthCheck,
        host_ports: Vec<u32>,
        env: BTreeMap<String, String>,
    },
    /// Stop probing a task's health.
    StopHealthCheck { key: TaskKey },
    /// Stop the agent: its state can no longer be saved.
    Stop { reason: String },
}

impl Command {
    /// True for the commands that write the checkpoint.
    pub(crate) fn is_checkpoint_write(&self) -> bool {
        matches!(
            self,
            Command::SaveAgentId(_)
                | Command::SaveTask { .. }
                | Command::AppendUpdate { .. }
                | Command::RemoveTaskCheckpoint { .. }
        )
    }
}
