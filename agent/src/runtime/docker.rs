//! The Docker runtime: one container per task through the Docker Engine API (bollard).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use agora_proto::v1::NetworkMode;
use agora_proto::{AgentId, FrameworkId, Resources, TaskId};
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding as DockerPortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    RemoveContainerOptions,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::{
    ContainerHandle, ContainerState, DiscoveredContainer, ExitStatus, LaunchSpec, ProgressFn,
    Runtime,
};
use crate::config::RuntimeKind;
use crate::error::{AgentError, RuntimeError};
use crate::launch_policy::normalised_bind;
use crate::naming::task_name;
use crate::task_env::{network_mode, port_bindings};
use crate::task_key::TaskKey;

/// Label holding the task id on every container the agent creates.
pub const LABEL_TASK_ID: &str = "agora.task_id";
/// Label holding the framework id.
pub const LABEL_FRAMEWORK_ID: &str = "agora.framework_id";
/// Label holding the agent id; recovery lists containers by it.
pub const LABEL_AGENT_ID: &str = "agora.agent_id";

const REQUEST_TIMEOUT_SECONDS: u64 = 120;

/// Connects to the Docker Engine at `docker_host` (`unix://…`, a socket path, `tcp://…` or
/// `http://…`; `None`: `DOCKER_HOST` or the local socket), negotiates the API version and pings it.
pub async fn connect_docker(docker_host: Option<&str>) -> Result<Docker, AgentError> {
    let host_text = docker_host
        .map(str::to_owned)
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
    let unavailable = |reason: String| AgentError::DockerUnavailable {
        host: host_text.clone(),
        reason,
    };
    let version = bollard::API_DEFAULT_VERSION;
    let docker = if host_text.starts_with("unix://") || host_text.starts_with('/') {
        Docker::connect_with_unix(&host_text, REQUEST_TIMEOUT_SECONDS, version)
    } else if host_text.starts_with("tcp://") || host_text.starts_with("http://") {
        Docker::connect_with_http(&host_text, REQUEST_TIMEOUT_SECONDS, version)
    } else {
        return Err(unavailable(
            "expected unix://PATH, tcp://HOST:PORT or http://HOST:PORT".to_owned(),
        ));
    }
    .map_err(|error| unavailable(error.to_string()))?;
    let docker = tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
        .await
        .map_err(|_| unavailable("no answer within 5 s".to_owned()))?
        .map_err(|error| unavailable(error.to_string()))?;
    tokio::time::timeout(Duration::from_secs(5), docker.ping())
        .await
        .map_err(|_| unavailable("no answer within 5 s".to_owned()))?
        .map_err(|error| unavailable(error.to_string()))?;
    Ok(docker)
}

/// The container name of a task: `agora-<framework>__<task>`, escaped so that different
/// (framework, task) pairs never share a name (see [`crate::naming`]).
pub fn container_name(framework_id: &FrameworkId, task_id: &TaskId) -> String {
    task_name(&TaskKey::new(framework_id.clone(), task_id.clone()))
}

/// Whether a container's labels say it is the given task of this agent.
fn owned_by(labels: &HashMap<String, String>, spec: &LaunchSpec) -> bool {
    let label = |name: &str| labels.get(name).map(String::as_str);
    label(LABEL_TASK_ID) == Some(spec.task_id.as_str())
        && label(LABEL_FRAMEWORK_ID) == Some(spec.framework_id.as_str())
        && label(LABEL_AGENT_ID) == Some(spec.agent_id.as_str())
}

/// Runs tasks as Docker containers.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
}

fn docker_error(operation: &'static str) -> impl Fn(bollard::errors::Error) -> RuntimeError {
    move |error| RuntimeError::Operation {
        operation,
        reason: error.to_string(),
    }
}

fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerRuntime {
    /// A runtime using an engine connection from [`connect_docker`].
    pub fn new(docker: Docker) -> Self {
        Self { docker }
    }

    async fn ensure_image(
        &self,
        image: &str,
        force_pull: bool,
        progress: &ProgressFn,
    ) -> Result<(), RuntimeError> {
        if !force_pull && self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        progress(format!("pulling image {image}"));
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        let mut last_reported = String::new();
        while let Some(item) = pull.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        return Err(RuntimeError::ImagePull {
                            image: image.to_owned(),
                            reason: detail,
                        });
                    }
                    let line = match (info.id, info.status) {
                        (Some(id), Some(status)) => format!("{id}: {status}"),
                        (None, Some(status)) => status,
                        _ => continue,
                    };
                    // Only whole steps are reported, not every byte-count tick.
                    if line != last_reported
                        && !line.contains("Downloading")
                        && !line.contains("Extracting")
                    {
                        progress(format!("pulling image {image}: {line}"));
                        last_reported = line;
                    }
                }
                Err(error) => {
                    return Err(RuntimeError::ImagePull {
                        image: image.to_owned(),
                        reason: error.to_string(),
                    });
                }
            }
        }
        self.docker
            .inspect_image(image)
            .await
            .map(|_| ())
            .map_err(|error| RuntimeError::ImagePull {
                image: image.to_owned(),
                reason: format!("image still absent after pull: {error}"),
            })
    }

    fn container_body(spec: &LaunchSpec) -> Result<ContainerCreateBody, RuntimeError> {
        let task = &spec.task;
        let container = task.container.clone().unwrap_or_default();
        let resources =
            Resources::from_proto(&task.resources).map_err(|error| RuntimeError::InvalidTask {
                reason: format!("resources: {error}"),
            })?;
        if container.privileged && !spec.allow_privileged {
            return Err(RuntimeError::InvalidTask {
                reason: "container.privileged: this agent does not allow privileged containers (start it with --allow-privileged)".to_owned(),
            });
        }
        let command = task.command.clone().unwrap_or_default();
        let cmd = if command.shell {
            Some(vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                command.value.clone(),
            ])
        } else if !command.arguments.is_empty() {
            Some(command.arguments.clone())
        } else if !command.value.is_empty() {
            Some(vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                command.value.clone(),
            ])
        } else {
            None
        };
        let labels: HashMap<String, String> = task
            .labels
            .iter()
            .filter(|(key, _)| !key.starts_with("agora."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain([
                (LABEL_TASK_ID.to_owned(), spec.task_id.to_string()),
                (LABEL_FRAMEWORK_ID.to_owned(), spec.framework_id.to_string()),
                (LABEL_AGENT_ID.to_owned(), spec.agent_id.to_string()),
            ])
            .collect();
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let network = network_mode(task);
        let bindings = port_bindings(task, &spec.host_ports);
        let (port_map, exposed) = if network == NetworkMode::Bridge && !bindings.is_empty() {
            let mut port_map = HashMap::new();
            let mut exposed = Vec::new();
            for binding in &bindings {
                let key = format!("{}/{}", binding.container_port, binding.protocol);
                exposed.push(key.clone());
                port_map
                    .entry(key)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(DockerPortBinding {
                        host_ip: None,
                        host_port: Some(binding.host_port.to_string()),
                    });
            }
            (Some(port_map), Some(exposed))
        } else {
            (None, None)
        };
        let network_mode_name = match network {
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
            NetworkMode::Host | NetworkMode::Unspecified => "host",
        };
        let cpus = resources.cpus();
        let mem_mib = resources.mem();
        let host_config = HostConfig {
            nano_cpus: (cpus > 0.0).then(|| (cpus * 1e9).round() as i64),
            memory: (mem_mib > 0.0).then(|| (mem_mib * 1024.0 * 1024.0).round() as i64),
            port_bindings: port_map,
            network_mode: Some(network_mode_name.to_owned()),
            privileged: Some(container.privileged && spec.allow_privileged),
            // Mount what the launch policy checked: the host path with `..` resolved.
            binds: (!container.volumes.is_empty()).then(|| {
                container
                    .volumes
                    .iter()
                    .map(|v| normalised_bind(v))
                    .collect()
            }),
            ..Default::default()
        };
        Ok(ContainerCreateBody {
            image: Some(container.image.clone()),
            cmd,
            env: Some(env),
            labels: Some(labels),
            exposed_ports: exposed,
            user: (!command.user.is_empty()).then(|| command.user.clone()),
            host_config: Some(host_config),
            ..Default::default()
        })
    }

    /// Removes a leftover container named `name` (an earlier launch of this very task, e.g.
    /// one that failed half-way), but only when its labels say it is this task of this agent:
    /// a launch never removes a container it does not own.
    async fn remove_leftover(&self, name: &str, spec: &LaunchSpec) -> Result<(), RuntimeError> {
        let existing = match self.docker.inspect_container(name, None).await {
            Ok(existing) => existing,
            Err(error) if is_not_found(&error) => return Ok(()),
            Err(error) => return Err(docker_error("inspect container")(error)),
        };
        let labels = existing
            .config
            .and_then(|config| config.labels)
            .unwrap_or_default();
        if !owned_by(&labels, spec) {
            let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
            return Err(RuntimeError::Launch {
                reason: format!(
                    "container name {name} is taken by a container this task does not own ({LABEL_FRAMEWORK_ID}={:?}, {LABEL_TASK_ID}={:?}, {LABEL_AGENT_ID}={:?}); it is left alone",
                    label(LABEL_FRAMEWORK_ID),
                    label(LABEL_TASK_ID),
                    label(LABEL_AGENT_ID)
                ),
            });
        }
        tracing::info!(container = %name, "removing a leftover container of an earlier launch of this task");
        match self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(docker_error("remove leftover container")(error)),
        }
    }

    async fn exit_status(&self, container_id: &str) -> ExitStatus {
        match self.docker.inspect_container(container_id, None).await {
            Ok(inspect) => {
                let state = inspect.state.unwrap_or_default();
                let code = state.exit_code.and_then(|code| i32::try_from(code).ok());
                let oom = state.oom_killed.unwrap_or(false);
                let mut message = match code {
                    Some(code) => format!("container exited with code {code}"),
                    None => "container ended, exit code unknown".to_owned(),
                };
                if oom {
                    message.push_str(" (killed: out of memory)");
                }
                if let Some(error) = state.error.filter(|e| !e.is_empty()) {
                    message.push_str(&format!(": {error}"));
                }
                ExitStatus { code, message }
            }
            Err(error) => ExitStatus {
                code: None,
                message: format!("container disappeared: {error}"),
            },
        }
    }

    async fn is_running(&self, container_id: &str) -> Option<bool> {
        match self.docker.inspect_container(container_id, None).await {
            Ok(inspect) => Some(inspect.state.and_then(|s| s.running).unwrap_or(false)),
            Err(_) => None,
        }
    }
}

impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn launch<'a>(
        &'a self,
        spec: &'a LaunchSpec,
        progress: &'a ProgressFn,
    ) -> BoxFuture<'a, Result<ContainerHandle, RuntimeError>> {
        async move {
            let image = spec
                .task
                .container
                .as_ref()
                .map(|c| c.image.clone())
                .unwrap_or_default();
            if image.trim().is_empty() {
                return Err(RuntimeError::InvalidTask {
                    reason: "container.image: the docker runtime needs an image".to_owned(),
                });
            }
            let body = Self::container_body(spec)?;
            let force_pull = spec.task.container.as_ref().is_some_and(|c| c.force_pull);
            self.ensure_image(&image, force_pull, progress).await?;
            let name = container_name(&spec.framework_id, &spec.task_id);
            self.remove_leftover(&name, spec).await?;
            let created = self
                .docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                    body,
                )
                .await
                .map_err(|error| RuntimeError::Launch {
                    reason: format!("create container {name}: {error}"),
                })?;
            tracing::info!(container = %name, container_id = %created.id, %image, "docker container created");
            if let Err(error) = self.docker.start_container(&created.id, None).await {
                let _ = self
                    .docker
                    .remove_container(
                        &created.id,
                        Some(RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await;
                return Err(RuntimeError::Launch {
                    reason: format!("start container {name}: {error}"),
                });
            }
            Ok(ContainerHandle {
                container_id: created.id,
                pid: None,
            })
        }
        .boxed()
    }

    fn wait<'a>(&'a self, handle: &'a ContainerHandle) -> BoxFuture<'a, ExitStatus> {
        async move {
            loop {
                let mut waiter = self.docker.wait_container(&handle.container_id, None);
                // The stream ends (or errors, for non-zero exits) when the container stops; a
                // dropped connection or request timeout also ends it, so the state is checked.
                let _ = waiter.next().await;
                match self.is_running(&handle.container_id).await {
                    Some(true) => tokio::time::sleep(Duration::from_millis(500)).await,
                    Some(false) | None => return self.exit_status(&handle.container_id).await,
                }
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
            let id = handle.container_id.as_str();
            let term = self
                .docker
                .kill_container(
                    id,
                    Some(KillContainerOptions {
                        signal: "SIGTERM".to_owned(),
                    }),
                )
                .await;
            match term {
                Ok(()) => {}
                // 409: not running; 404: gone. Either way there is nothing left to kill.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                }) => return Ok(()),
                Err(error) => return Err(docker_error("send SIGTERM to container")(error)),
            }
            let deadline = tokio::time::Instant::now() + grace;
            loop {
                match self.is_running(id).await {
                    Some(true) => {}
                    Some(false) | None => return Ok(()),
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match self
                .docker
                .kill_container(
                    id,
                    Some(KillContainerOptions {
                        signal: "SIGKILL".to_owned(),
                    }),
                )
                .await
            {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                }) => Ok(()),
                Err(error) => Err(docker_error("send SIGKILL to container")(error)),
            }
        }
        .boxed()
    }

    fn remove<'a>(
        &'a self,
        handle: &'a ContainerHandle,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            match self
                .docker
                .remove_container(
                    &handle.container_id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => Ok(()),
                Err(error) if is_not_found(&error) => Ok(()),
                Err(error) => Err(docker_error("remove container")(error)),
            }
        }
        .boxed()
    }

    fn exec<'a>(
        &'a self,
        handle: &'a ContainerHandle,
        command: &'a str,
        env: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<i32, RuntimeError>> {
        async move {
            let created = self
                .docker
                .create_exec(
                    &handle.container_id,
                    CreateExecOptions {
                        cmd: Some(vec![
                            "/bin/sh".to_owned(),
                            "-c".to_owned(),
                            command.to_owned(),
                        ]),
                        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await
                .map_err(docker_error("create exec"))?;
            match self
                .docker
                .start_exec(&created.id, None)
                .await
                .map_err(docker_error("start exec"))?
            {
                StartExecResults::Attached { mut output, .. } => {
                    while output.next().await.is_some() {}
                }
                StartExecResults::Detached => {}
            }
            let inspect = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(docker_error("inspect exec"))?;
            Ok(inspect
                .exit_code
                .and_then(|code| i32::try_from(code).ok())
                .unwrap_or(-1))
        }
        .boxed()
    }

    fn inspect<'a>(&'a self, handle: &'a ContainerHandle) -> BoxFuture<'a, ContainerState> {
        async move {
            match self
                .docker
                .inspect_container(&handle.container_id, None)
                .await
            {
                Ok(inspect)
                    if inspect
                        .state
                        .as_ref()
                        .and_then(|s| s.running)
                        .unwrap_or(false) =>
                {
                    ContainerState::Running
                }
                Ok(_) => {
                    let mut status = self.exit_status(&handle.container_id).await;
                    status.message = format!("{} while the agent was down", status.message);
                    ContainerState::Exited(status)
                }
                Err(_) => ContainerState::Missing,
            }
        }
        .boxed()
    }

    fn discover<'a>(
        &'a self,
        agent_id: &'a AgentId,
    ) -> BoxFuture<'a, Result<Vec<DiscoveredContainer>, RuntimeError>> {
        async move {
            let filters: HashMap<String, Vec<String>> = [(
                "label".to_owned(),
                vec![format!("{LABEL_AGENT_ID}={agent_id}")],
            )]
            .into_iter()
            .collect();
            let containers = self
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters),
                    ..Default::default()
                }))
                .await
                .map_err(docker_error("list containers"))?;
            let mut found = Vec::new();
            for summary in containers {
                // Every container the agent creates carries both labels; one without a
                // framework label is not ours to adopt under a made-up framework.
                let labels = summary.labels.unwrap_or_default();
                let (Some(id), Some(task_id), Some(framework_id)) = (
                    summary.id,
                    labels.get(LABEL_TASK_ID),
                    labels.get(LABEL_FRAMEWORK_ID),
                ) else {
                    continue;
                };
                let handle = ContainerHandle {
                    container_id: id,
                    pid: None,
                };
                let state = self.inspect(&handle).await;
                found.push(DiscoveredContainer {
                    task_id: TaskId::new(task_id.clone()),
                    framework_id: FrameworkId::new(framework_id.clone()),
                    handle,
                    state,
                });
            }
            Ok(found)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::RangeSet;
    use agora_proto::v1::{CommandInfo, ContainerInfo, PortMapping, TaskInfo};

    fn spec(container: ContainerInfo) -> LaunchSpec {
        LaunchSpec {
            task_id: TaskId::new("web/1"),
            framework_id: FrameworkId::new("fw"),
            agent_id: AgentId::new("agent"),
            task: TaskInfo {
                task_id: "web/1".into(),
                resources: Resources::cpus_mem(0.5, 64.0)
                    .with_ranges("ports", RangeSet::from_values([31001]))
                    .to_proto(),
                command: Some(CommandInfo {
                    shell: true,
                    value: "httpd -f".into(),
                    ..Default::default()
                }),
                container: Some(container),
                ..Default::default()
            },
            env: BTreeMap::new(),
            host_ports: vec![31001],
            allow_privileged: false,
        }
    }

    #[test]
    fn container_body_carries_limits_labels_and_bindings() {
        let body = DockerRuntime::container_body(&spec(ContainerInfo {
            image: "img".into(),
            port_mappings: vec![PortMapping {
                container_port: 80,
                ..Default::default()
            }],
            ..Default::default()
        }))
        .unwrap();
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(67_108_864));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(host.privileged, Some(false));
        let bindings = host.port_bindings.unwrap();
        assert_eq!(
            bindings["80/tcp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("31001")
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_TASK_ID], "web/1");
        assert_eq!(labels[LABEL_AGENT_ID], "agent");
        assert_eq!(body.cmd.unwrap(), vec!["/bin/sh", "-c", "httpd -f"]);
        assert_eq!(
            container_name(&FrameworkId::new("fw"), &TaskId::new("web/1")),
            "agora-fw__web_2f1"
        );
    }

    #[test]
    fn privileged_needs_the_agent_to_allow_it() {
        let mut privileged = spec(ContainerInfo {
            image: "img".into(),
            privileged: true,
            ..Default::default()
        });
        let error = DockerRuntime::container_body(&privileged)
            .unwrap_err()
            .to_string();
        assert!(error.contains("privileged"), "{error}");
        privileged.allow_privileged = true;
        let body = DockerRuntime::container_body(&privileged).unwrap();
        assert_eq!(body.host_config.unwrap().privileged, Some(true));
    }
}
