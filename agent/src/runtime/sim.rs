//! The sim runtime: launches nothing, reports RUNNING, and ends a task after the duration in
//! its `agora.sim/duration_seconds` label, or when killed. Cheap enough for thousands of agents
//! in one process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use agora_proto::AgentId;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{
    ContainerHandle, ContainerState, DiscoveredContainer, ExitStatus, LaunchSpec, ProgressFn,
    Runtime,
};
use crate::config::RuntimeKind;
use crate::durations::checked_seconds;
use crate::error::RuntimeError;
use crate::naming::task_name;
use crate::task_key::TaskKey;

/// Label giving a simulated task's run time in seconds.
pub const SIM_DURATION_LABEL: &str = "agora.sim/duration_seconds";

/// Longest simulated run time (about 30 years): enough for "forever" without overflowing timers.
const MAX_SIM_DURATION_SECONDS: f64 = 1e9;

#[derive(Debug)]
struct SimTask {
    duration: Option<Duration>,
    killed: watch::Sender<bool>,
}

/// Runs nothing; see the module documentation.
#[derive(Debug, Default)]
pub struct SimRuntime {
    tasks: Mutex<HashMap<String, SimTask>>,
}

impl SimRuntime {
    /// A sim runtime with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SimTask>> {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Runtime for SimRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Sim
    }

    fn launch<'a>(
        &'a self,
        spec: &'a LaunchSpec,
        _progress: &'a ProgressFn,
    ) -> BoxFuture<'a, Result<ContainerHandle, RuntimeError>> {
        async move {
            let duration = match spec.task.labels.get(SIM_DURATION_LABEL) {
                None => None,
                Some(text) => {
                    let invalid = |why: String| RuntimeError::InvalidTask {
                        reason: format!("labels[{SIM_DURATION_LABEL}]: {text:?} {why}"),
                    };
                    let seconds: f64 = text
                        .trim()
                        .parse()
                        .map_err(|_| invalid("is not a number of seconds".to_owned()))?;
                    let duration = checked_seconds(seconds, MAX_SIM_DURATION_SECONDS)
                        .map_err(|error| invalid(error.to_string()))?;
                    Some(duration)
                }
            };
            // Keyed by the injective task name: two frameworks may use the same task id.
            let container_id = format!(
                "sim-{}",
                task_name(&TaskKey::new(
                    spec.framework_id.clone(),
                    spec.task_id.clone()
                ))
            );
            let (killed, _) = watch::channel(false);
            self.lock()
                .insert(container_id.clone(), SimTask { duration, killed });
            Ok(ContainerHandle {
                container_id,
                pid: None,
            })
        }
        .boxed()
    }

    fn wait<'a>(&'a self, handle: &'a ContainerHandle) -> BoxFuture<'a, ExitStatus> {
        async move {
            let found = self
                .lock()
                .get(&handle.container_id)
                .map(|task| (task.duration, task.killed.subscribe()));
            let Some((duration, mut killed)) = found else {
                return ExitStatus {
                    code: None,
                    message: "simulated task is unknown".to_owned(),
                };
            };
            let finished = async {
                match duration {
                    Some(duration) => tokio::time::sleep(duration).await,
                    None => futures::future::pending().await,
                }
            };
            let status = tokio::select! {
                () = finished => ExitStatus { code: Some(0), message: "simulated task finished".to_owned() },
                _ = killed.wait_for(|killed| *killed) => ExitStatus { code: Some(137), message: "simulated task killed".to_owned() },
            };
            self.lock().remove(&handle.container_id);
            status
        }
        .boxed()
    }

    fn kill<'a>(
        &'a self,
        handle: &'a ContainerHandle,
        _grace: Duration,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            if let Some(task) = self.lock().get(&handle.container_id) {
                task.killed.send_replace(true);
            }
            Ok(())
        }
        .boxed()
    }

    fn remove<'a>(
        &'a self,
        handle: &'a ContainerHandle,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            self.lock().remove(&handle.container_id);
            Ok(())
        }
        .boxed()
    }

    fn exec<'a>(
        &'a self,
        _handle: &'a ContainerHandle,
        _command: &'a str,
        _env: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<i32, RuntimeError>> {
        async { Ok(0) }.boxed()
    }

    fn inspect<'a>(&'a self, handle: &'a ContainerHandle) -> BoxFuture<'a, ContainerState> {
        async move {
            if self.lock().contains_key(&handle.container_id) {
                ContainerState::Running
            } else {
                ContainerState::Missing
            }
        }
        .boxed()
    }

    fn discover<'a>(
        &'a self,
        _agent_id: &'a AgentId,
    ) -> BoxFuture<'a, Result<Vec<DiscoveredContainer>, RuntimeError>> {
        async { Ok(Vec::new()) }.boxed()
    }
}
