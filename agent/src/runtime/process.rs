//! The process runtime: each task is a child process (`/bin/sh -c` for shell commands) in its
//! own process group, with the same environment, ports and kill semantics as containers.
//! Container images are ignored: the command runs on the host.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use agora_proto::AgentId;
use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::{
    ContainerHandle, ContainerState, DiscoveredContainer, ExitStatus, LaunchSpec, ProgressFn,
    Runtime,
};
use crate::config::RuntimeKind;
use crate::error::RuntimeError;
use crate::naming::task_name;
use crate::task_key::TaskKey;

const LIVENESS_POLL: Duration = Duration::from_millis(250);

/// Runs tasks as child processes; see the module documentation.
#[derive(Debug)]
pub struct ProcessRuntime {
    sandbox_root: Option<PathBuf>,
    exits: Mutex<HashMap<u32, watch::Receiver<Option<ExitStatus>>>>,
}

/// The sandbox directory name of a task: the same injective name as its container would have,
/// so tasks of different frameworks with the same id never share a sandbox.
fn sandbox_name(spec: &LaunchSpec) -> String {
    task_name(&TaskKey::new(
        spec.framework_id.clone(),
        spec.task_id.clone(),
    ))
}

impl ProcessRuntime {
    /// A process runtime writing each task's stdout and stderr under
    /// `sandbox_root/<task name>/` (see [`crate::naming`]) (discarded when `None`).
    pub fn new(sandbox_root: Option<PathBuf>) -> Self {
        Self {
            sandbox_root,
            exits: Mutex::new(HashMap::new()),
        }
    }

    fn exit_receiver(&self, pid: u32) -> Option<watch::Receiver<Option<ExitStatus>>> {
        self.exits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&pid)
            .cloned()
    }

    fn command_line(spec: &LaunchSpec) -> Result<(String, Vec<String>), RuntimeError> {
        let command = spec.task.command.clone().unwrap_or_default();
        if command.shell {
            if command.value.trim().is_empty() {
                return Err(RuntimeError::InvalidTask {
                    reason: "command.value: a shell command must not be empty".to_owned(),
                });
            }
            return Ok(("/bin/sh".to_owned(), vec!["-c".to_owned(), command.value]));
        }
        let mut arguments = command.arguments.into_iter();
        match arguments.next() {
            Some(program) => Ok((program, arguments.collect())),
            None if !command.value.trim().is_empty() => {
                Ok(("/bin/sh".to_owned(), vec!["-c".to_owned(), command.value]))
            }
            None => Err(RuntimeError::InvalidTask {
                reason: "command: the process runtime needs command.value or command.arguments"
                    .to_owned(),
            }),
        }
    }

    fn output(&self, spec: &LaunchSpec, name: &str) -> Result<Stdio, RuntimeError> {
        let Some(root) = &self.sandbox_root else {
            return Ok(Stdio::null());
        };
        let dir = root.join(sandbox_name(spec));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::File::create(dir.join(name)))
            .map(Stdio::from)
            .map_err(|error| RuntimeError::Launch {
                reason: format!("sandbox {}: {error}", dir.display()),
            })
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus {
            code: Some(code),
            message: format!("process exited with code {code}"),
        },
        (None, Some(signal)) => ExitStatus {
            code: Some(128 + signal),
            message: format!("process killed by signal {signal}"),
        },
        (None, None) => ExitStatus {
            code: None,
            message: "process ended, exit status unknown".to_owned(),
        },
    }
}

fn is_alive(pid: u32) -> bool {
    i32::try_from(pid)
        .map(|raw| kill(Pid::from_raw(raw), None).is_ok())
        .unwrap_or(false)
}

fn pid_of(handle: &ContainerHandle) -> Result<Pid, RuntimeError> {
    handle
        .pid
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|pid| *pid > 1)
        .map(Pid::from_raw)
        .ok_or_else(|| RuntimeError::NotFound {
            container_id: handle.container_id.clone(),
        })
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn launch<'a>(
        &'a self,
        spec: &'a LaunchSpec,
        _progress: &'a ProgressFn,
    ) -> BoxFuture<'a, Result<ContainerHandle, RuntimeError>> {
        async move {
            let (program, arguments) = Self::command_line(spec)?;
            let mut command = tokio::process::Command::new(&program);
            command
                .args(&arguments)
                .envs(&spec.env)
                .stdin(Stdio::null())
                .stdout(self.output(spec, "stdout")?)
                .stderr(self.output(spec, "stderr")?)
                .process_group(0)
                .kill_on_drop(false);
            if let Some(root) = &self.sandbox_root {
                command.current_dir(root.join(sandbox_name(spec)));
            }
            let mut child = command.spawn().map_err(|error| RuntimeError::Launch {
                reason: format!("cannot start {program:?}: {error}"),
            })?;
            let pid = child.id().ok_or_else(|| RuntimeError::Launch {
                reason: "process exited before its pid could be read".to_owned(),
            })?;
            let (sender, receiver) = watch::channel(None);
            self.exits
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(pid, receiver);
            tokio::spawn(async move {
                let status = match child.wait().await {
                    Ok(status) => exit_status(status),
                    Err(error) => ExitStatus {
                        code: None,
                        message: format!("cannot wait for the process: {error}"),
                    },
                };
                sender.send_replace(Some(status));
            });
            Ok(ContainerHandle {
                container_id: format!("pid-{pid}"),
                pid: Some(pid),
            })
        }
        .boxed()
    }

    fn wait<'a>(&'a self, handle: &'a ContainerHandle) -> BoxFuture<'a, ExitStatus> {
        async move {
            let Some(pid) = handle.pid else {
                return ExitStatus {
                    code: None,
                    message: "no process id".to_owned(),
                };
            };
            if let Some(mut receiver) = self.exit_receiver(pid) {
                let status = receiver
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|status| status.clone());
                self.exits
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&pid);
                return status.unwrap_or(ExitStatus {
                    code: None,
                    message: "process ended, exit status unknown".to_owned(),
                });
            }
            // Not our child (adopted after an agent restart): its exit status is not ours to read.
            while is_alive(pid) {
                tokio::time::sleep(LIVENESS_POLL).await;
            }
            ExitStatus {
                code: None,
                message:
                    "process ended, exit status unknown (it was adopted after an agent restart)"
                        .to_owned(),
            }
        }
        .boxed()
    }

    fn kill<'a>(
        &'a self,
        handle: &'a ContainerHandle,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            let pid = pid_of(handle)?;
            // The pid may come from a checkpoint written before an agent restart. Signal the group
            // only while that pid still leads its own group and that group is not ours: a recycled
            // pid must never turn into a signal to an unrelated process group.
            let leads_own_group = nix::unistd::getpgid(Some(pid)).is_ok_and(|group| group == pid);
            if !leads_own_group || pid == nix::unistd::getpgrp() {
                return Ok(());
            }
            let signal_error = |error: nix::Error| RuntimeError::Operation {
                operation: "signal process group",
                reason: error.to_string(),
            };
            match killpg(pid, Signal::SIGTERM) {
                Ok(()) => {}
                Err(nix::Error::ESRCH) => return Ok(()),
                Err(error) => return Err(signal_error(error)),
            }
            let exited = tokio::time::timeout(grace, self.wait_exit(handle)).await;
            if exited.is_err() {
                match killpg(pid, Signal::SIGKILL) {
                    Ok(()) | Err(nix::Error::ESRCH) => {}
                    Err(error) => return Err(signal_error(error)),
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn remove<'a>(
        &'a self,
        _handle: &'a ContainerHandle,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async { Ok(()) }.boxed()
    }

    fn exec<'a>(
        &'a self,
        _handle: &'a ContainerHandle,
        command: &'a str,
        env: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<i32, RuntimeError>> {
        async move {
            let status = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(command)
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|error| RuntimeError::Operation {
                    operation: "run health check command",
                    reason: error.to_string(),
                })?;
            Ok(exit_status(status).code.unwrap_or(-1))
        }
        .boxed()
    }

    fn inspect<'a>(&'a self, handle: &'a ContainerHandle) -> BoxFuture<'a, ContainerState> {
        async move {
            match handle.pid {
                Some(pid) if is_alive(pid) => ContainerState::Running,
                Some(_) => ContainerState::Exited(ExitStatus {
                    code: None,
                    message: "exited while the agent was down, exit status unknown".to_owned(),
                }),
                None => ContainerState::Missing,
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

impl ProcessRuntime {
    async fn wait_exit(&self, handle: &ContainerHandle) {
        let Some(pid) = handle.pid else {
            return;
        };
        if let Some(mut receiver) = self.exit_receiver(pid) {
            let _ = receiver.wait_for(Option::is_some).await;
            return;
        }
        while is_alive(pid) {
            tokio::time::sleep(LIVENESS_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1::{CommandInfo, TaskInfo};
    use agora_proto::{FrameworkId, TaskId};
    use std::time::Instant;

    fn spec(script: &str) -> LaunchSpec {
        LaunchSpec {
            task_id: TaskId::new("t1"),
            framework_id: FrameworkId::new("fw"),
            agent_id: AgentId::new("a"),
            task: TaskInfo {
                task_id: "t1".into(),
                command: Some(CommandInfo {
                    shell: true,
                    value: script.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            env: [("GREETING".to_owned(), "hi".to_owned())]
                .into_iter()
                .collect(),
            host_ports: Vec::new(),
            allow_privileged: false,
        }
    }

    /// Waits (at most 10 s) until the script under test says its trap is installed: a kill
    /// before that would test the shell's default SIGTERM handling instead.
    async fn wait_for_file(path: &std::path::Path) {
        for _ in 0..500 {
            if path.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} never appeared", path.display());
    }

    fn no_progress() -> Box<ProgressFn> {
        Box::new(|_| {})
    }

    #[tokio::test]
    async fn exit_codes_are_reported() {
        let runtime = ProcessRuntime::new(None);
        let progress = no_progress();
        let handle = runtime.launch(&spec("exit 3"), &*progress).await.unwrap();
        assert_eq!(runtime.wait(&handle).await.code, Some(3));
        let ok = runtime
            .launch(&spec("test \"$GREETING\" = hi"), &*progress)
            .await
            .unwrap();
        assert_eq!(
            runtime.wait(&ok).await.code,
            Some(0),
            "env reaches the process"
        );
    }

    #[tokio::test]
    async fn sigterm_is_trapped_within_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("trapped");
        let runtime = ProcessRuntime::new(None);
        let progress = no_progress();
        let ready = dir.path().join("ready");
        let script = format!(
            "trap 'sleep 0.5; echo done > {}; exit 0' TERM; touch {}; while true; do sleep 0.1; done",
            marker.display(),
            ready.display()
        );
        let handle = runtime.launch(&spec(&script), &*progress).await.unwrap();
        wait_for_file(&ready).await;
        runtime.kill(&handle, Duration::from_secs(5)).await.unwrap();
        let status = runtime.wait(&handle).await;
        assert_eq!(status.code, Some(0), "{status:?}");
        assert!(marker.exists(), "the trap ran to completion");
    }

    #[tokio::test]
    async fn a_process_ignoring_sigterm_is_killed_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let runtime = ProcessRuntime::new(None);
        let progress = no_progress();
        let script = format!(
            "trap '' TERM; touch {}; while true; do sleep 0.1; done",
            ready.display()
        );
        let handle = runtime.launch(&spec(&script), &*progress).await.unwrap();
        wait_for_file(&ready).await;
        let started = Instant::now();
        runtime
            .kill(&handle, Duration::from_millis(700))
            .await
            .unwrap();
        let status = runtime.wait(&handle).await;
        assert!(started.elapsed() >= Duration::from_millis(700));
        assert_eq!(status.code, Some(128 + 9), "{status:?}");
        assert!(matches!(
            runtime.inspect(&handle).await,
            ContainerState::Exited(_)
        ));
    }

    #[tokio::test]
    async fn a_missing_command_is_an_invalid_task() {
        let runtime = ProcessRuntime::new(None);
        let progress = no_progress();
        let mut bad = spec("");
        bad.task.command = None;
        let error = runtime.launch(&bad, &*progress).await.unwrap_err();
        assert!(matches!(error, RuntimeError::InvalidTask { .. }), "{error}");
    }

    #[tokio::test]
    async fn stdout_goes_to_the_sandbox_and_exec_runs_commands() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = ProcessRuntime::new(Some(dir.path().to_path_buf()));
        let progress = no_progress();
        let handle = runtime
            .launch(&spec("echo hello"), &*progress)
            .await
            .unwrap();
        runtime.wait(&handle).await;
        // The sandbox is named after the (framework, task) pair, like a container.
        let out = std::fs::read_to_string(dir.path().join("agora-fw__t1/stdout")).unwrap();
        assert_eq!(out, "hello\n");
        let env = BTreeMap::new();
        assert_eq!(runtime.exec(&handle, "exit 4", &env).await.unwrap(), 4);
    }
}
