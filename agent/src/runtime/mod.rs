//! Runtimes launch and watch tasks: Docker containers, plain processes, or nothing at all (sim).

pub(crate) mod docker;
mod process;
pub(crate) mod sim;

use std::collections::BTreeMap;
use std::time::Duration;

use agora_proto::v1::TaskInfo;
use agora_proto::{AgentId, FrameworkId, TaskId};
use futures::future::BoxFuture;

pub use docker::DockerRuntime;
pub use process::ProcessRuntime;
pub use sim::SimRuntime;

use crate::config::RuntimeKind;
use crate::error::RuntimeError;

/// Everything a runtime needs to launch one task.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    /// The task.
    pub task_id: TaskId,
    /// Its framework.
    pub framework_id: FrameworkId,
    /// This agent.
    pub agent_id: AgentId,
    /// The task as the framework described it.
    pub task: TaskInfo,
    /// Environment assembled by [`crate::task_env::task_environment`].
    pub env: BTreeMap<String, String>,
    /// Host ports, `PORT0` first.
    pub host_ports: Vec<u32>,
    /// Whether the agent allows privileged containers.
    pub allow_privileged: bool,
}

/// A launched container or process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerHandle {
    /// Docker container id, `pid-<n>` for processes, `sim-<task>` for the sim runtime.
    pub container_id: String,
    /// Process id (process runtime).
    pub pid: Option<u32>,
}

/// How a task's container or process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, when known (128 + n for a signal n, as shells report it).
    pub code: Option<i32>,
    /// A human-readable account.
    pub message: String,
}

/// What the runtime finds of a task after an agent restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Still running.
    Running,
    /// Ended while the agent was away.
    Exited(ExitStatus),
    /// Gone without a trace.
    Missing,
}

/// A container found by label that belongs to this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredContainer {
    /// From the `agora.task_id` label.
    pub task_id: TaskId,
    /// From the `agora.framework_id` label.
    pub framework_id: FrameworkId,
    /// Its handle.
    pub handle: ContainerHandle,
    /// Whether it runs.
    pub state: ContainerState,
}

/// Reports launch progress (e.g. image pull) while [`Runtime::launch`] runs.
pub type ProgressFn = dyn Fn(String) + Send + Sync;

/// A way of running tasks. Implementations are shared (`Arc<dyn Runtime>`) and cheap to call
/// concurrently for different tasks.
pub trait Runtime: Send + Sync + 'static {
    /// Which runtime this is.
    fn kind(&self) -> RuntimeKind;

    /// Starts the task; returns once it runs.
    fn launch<'a>(
        &'a self,
        spec: &'a LaunchSpec,
        progress: &'a ProgressFn,
    ) -> BoxFuture<'a, Result<ContainerHandle, RuntimeError>>;

    /// Resolves when the container or process ends.
    fn wait<'a>(&'a self, handle: &'a ContainerHandle) -> BoxFuture<'a, ExitStatus>;

    /// SIGTERM, then SIGKILL after `grace` if it still runs. Returns once the signal(s) were sent.
    fn kill<'a>(
        &'a self,
        handle: &'a ContainerHandle,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Removes what is left of an ended container.
    fn remove<'a>(&'a self, handle: &'a ContainerHandle)
    -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Runs `/bin/sh -c command` inside the container (health checks); returns its exit code.
    fn exec<'a>(
        &'a self,
        handle: &'a ContainerHandle,
        command: &'a str,
        env: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<i32, RuntimeError>>;

    /// The state of a checkpointed container after an agent restart.
    fn inspect<'a>(&'a self, handle: &'a ContainerHandle) -> BoxFuture<'a, ContainerState>;

    /// Containers labelled with this agent's id (Docker); other runtimes find none.
    fn discover<'a>(
        &'a self,
        agent_id: &'a AgentId,
    ) -> BoxFuture<'a, Result<Vec<DiscoveredContainer>, RuntimeError>>;
}
