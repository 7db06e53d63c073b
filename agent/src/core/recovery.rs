//! Recovery after a restart (even a kill -9): which checkpointed tasks to adopt, report ended
//! or forget, and what to do with this agent's containers that no checkpoint names.

use std::collections::BTreeMap;

use agora_proto::v1::{TaskInfo, TaskReason, TaskState};

use super::{AgentCore, Command, Lifecycle, Step, TaskEntry, task_span};
use crate::checkpoint::{RecoveredTask, TaskCheckpoint};
use crate::runtime::{ContainerHandle, ContainerState, DiscoveredContainer};
use crate::task_env::{task_environment, task_host_ports};
use crate::task_key::TaskKey;
use crate::update_stream::StatusUpdateStream;
use agora_proto::TaskPhase;

impl AgentCore {
    /// Rebuilds the tasks from the checkpoint and what the runtime found: a task whose last
    /// update was acknowledged is forgotten; one that ended is reported; one whose container
    /// runs is adopted (and killed if a kill was under way); a running container that no
    /// checkpoint names is adopted too, so that the master decides its fate on re-registration;
    /// an exited one is removed.
    pub(super) fn recover(
        &mut self,
        recovered: Vec<RecoveredTask>,
        discovered: Vec<DiscoveredContainer>,
        mut inspected: BTreeMap<TaskKey, ContainerState>,
        step: &mut Step<'_>,
    ) {
        if recovered.is_empty() && discovered.is_empty() {
            return;
        }
        tracing::info!(
            checkpointed = recovered.len(),
            containers = discovered.len(),
            "recovering tasks"
        );
        let mut discovered: BTreeMap<TaskKey, DiscoveredContainer> = discovered
            .into_iter()
            .map(|container| {
                let key = TaskKey::new(container.framework_id.clone(), container.task_id.clone());
                (key, container)
            })
            .collect();
        for task in recovered {
            let key = task.key();
            let _span = task_span(&key).entered();
            let found = discovered.remove(&key);
            let state = found
                .as_ref()
                .map(|found| found.state.clone())
                .or_else(|| inspected.remove(&key));
            self.recover_task(key.clone(), task, found, state, step);
        }
        for (key, found) in discovered {
            let _span = task_span(&key).entered();
            self.recover_orphan(key, found);
        }
    }

    fn recover_task(
        &mut self,
        key: TaskKey,
        task: RecoveredTask,
        found: Option<DiscoveredContainer>,
        state: Option<ContainerState>,
        step: &mut Step<'_>,
    ) {
        let (stream, errors) = StatusUpdateStream::replay(task.task_id.as_str(), task.records);
        for error in errors {
            tracing::warn!(%error, "checkpoint record skipped");
        }
        let mut checkpoint = task.checkpoint;
        let mut handle = checkpoint
            .container_id
            .clone()
            .map(|container_id| ContainerHandle {
                container_id,
                pid: checkpoint.pid,
            });
        // The labels are the truth about which container runs the task: the checkpoint may
        // predate a launch that completed just before the crash.
        if let Some(found) = &found
            && handle.as_ref().map(|h| &h.container_id) != Some(&found.handle.container_id)
        {
            handle = Some(found.handle.clone());
            checkpoint.container_id = Some(found.handle.container_id.clone());
        }
        if stream.is_complete() {
            if let Some(handle) = handle {
                self.commands.push(Command::RemoveContainer { handle });
            }
            self.commands.push(Command::RemoveTaskCheckpoint { key });
            return;
        }
        let reported = stream
            .latest()
            .and_then(|status| TaskPhase::of(status.state()))
            .unwrap_or(TaskPhase::Staging);
        let healthy = stream.latest().and_then(|status| status.healthy);
        let host_ports = task_host_ports(&task.task).unwrap_or_default();
        let env = task_environment(&task.task, &host_ports, &self.config.hostname);
        let lifecycle = match (&handle, reported) {
            (_, TaskPhase::Terminal(_)) => Lifecycle::Ended {
                handle: handle.clone(),
            },
            (None, _) => Lifecycle::Accepted,
            (Some(handle), TaskPhase::Killing) => Lifecycle::Killing {
                handle: handle.clone(),
                healthy,
            },
            (Some(handle), _) => Lifecycle::Running {
                handle: handle.clone(),
                healthy,
            },
        };
        self.tasks.insert(
            key.clone(),
            TaskEntry {
                info: task.task,
                reported,
                stream,
                checkpoint: checkpoint.clone(),
                host_ports,
                env,
                lifecycle,
            },
        );
        if reported.is_terminal() {
            // Its terminal update is resent until acknowledged; the container is done.
            if let Some(handle) = handle {
                self.commands.push(Command::RemoveContainer { handle });
            }
            return;
        }
        self.commands.push(Command::SaveTask {
            key: key.clone(),
            checkpoint,
        });
        let Some(handle) = handle else {
            self.emit(
                &key,
                TaskState::TaskFailed,
                TaskReason::ReasonAgentRestarted,
                "the agent restarted while launching the task".to_owned(),
                None,
                step,
            );
            self.set_lifecycle(&key, Lifecycle::Ended { handle: None });
            return;
        };
        self.adopt(&key, handle, state.unwrap_or(ContainerState::Missing), step);
    }

    /// Takes over a checkpointed task's container after a restart.
    fn adopt(
        &mut self,
        key: &TaskKey,
        handle: ContainerHandle,
        state: ContainerState,
        step: &mut Step<'_>,
    ) {
        let default_grace = self.config.default_kill_grace;
        let Some(entry) = self.tasks.get(key) else {
            return;
        };
        let killing = entry.lifecycle.kill_requested();
        match state {
            ContainerState::Running => {
                tracing::info!(container_id = %handle.container_id, "re-attached to running task");
                self.commands.push(Command::WatchExit {
                    key: key.clone(),
                    handle: handle.clone(),
                });
                if killing {
                    // The kill was under way: finish it (SIGTERM again is harmless).
                    let grace = entry.kill_grace(None, default_grace);
                    self.commands.push(Command::Kill {
                        key: key.clone(),
                        handle,
                        grace,
                    });
                    return;
                }
                if entry.reported != TaskPhase::Running {
                    self.emit(
                        key,
                        TaskState::TaskRunning,
                        TaskReason::ReasonUnspecified,
                        "running (recovered after an agent restart)".to_owned(),
                        None,
                        step,
                    );
                }
                self.start_health_check(key);
            }
            ContainerState::Exited(exit) => {
                let (state, reason) = if killing {
                    (TaskState::TaskKilled, TaskReason::ReasonTaskKilled)
                } else if exit.code == Some(0) {
                    (
                        TaskState::TaskFinished,
                        TaskReason::ReasonContainerExitedWhileAgentDown,
                    )
                } else {
                    (
                        TaskState::TaskFailed,
                        TaskReason::ReasonContainerExitedWhileAgentDown,
                    )
                };
                self.emit(key, state, reason, exit.message, exit.code, step);
                self.set_lifecycle(
                    key,
                    Lifecycle::Ended {
                        handle: Some(handle.clone()),
                    },
                );
                self.commands.push(Command::RemoveContainer { handle });
            }
            ContainerState::Missing => {
                self.emit(
                    key,
                    TaskState::TaskFailed,
                    TaskReason::ReasonContainerExitedWhileAgentDown,
                    "the container disappeared while the agent was down".to_owned(),
                    None,
                    step,
                );
                self.set_lifecycle(
                    key,
                    Lifecycle::Ended {
                        handle: Some(handle),
                    },
                );
            }
        }
    }

    /// A container of this agent that no checkpoint names: a running one is adopted and
    /// re-registered so that the master decides (it kills what no framework owns); an exited
    /// one is removed.
    fn recover_orphan(&mut self, key: TaskKey, found: DiscoveredContainer) {
        match found.state {
            ContainerState::Running => {
                tracing::warn!(container_id = %found.handle.container_id, "adopting a running container without checkpoint");
                let info = TaskInfo {
                    task_id: key.task_id.to_string(),
                    name: key.task_id.to_string(),
                    ..Default::default()
                };
                let checkpoint = TaskCheckpoint {
                    container_id: Some(found.handle.container_id.clone()),
                    ..TaskCheckpoint::new(
                        found.framework_id.clone(),
                        &info,
                        self.config.launch_policy.runtime.as_str(),
                    )
                };
                self.commands.push(Command::SaveTask {
                    key: key.clone(),
                    checkpoint: checkpoint.clone(),
                });
                self.tasks.insert(
                    key.clone(),
                    TaskEntry {
                        info,
                        reported: TaskPhase::Running,
                        stream: StatusUpdateStream::new(key.task_id.as_str()),
                        checkpoint,
                        host_ports: Vec::new(),
                        env: BTreeMap::new(),
                        lifecycle: Lifecycle::Running {
                            handle: found.handle.clone(),
                            healthy: None,
                        },
                    },
                );
                self.commands.push(Command::WatchExit {
                    key,
                    handle: found.handle,
                });
            }
            ContainerState::Exited(_) | ContainerState::Missing => {
                self.commands.push(Command::RemoveContainer {
                    handle: found.handle,
                });
            }
        }
    }
}
