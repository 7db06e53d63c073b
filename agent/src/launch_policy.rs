//! What the agent refuses to launch, whatever the master let through: tasks without resource
//! limits, durations that cannot be represented, privileged containers and host paths the
//! operator did not allow, and fields the runtime cannot honour. Pure: a task and the agent's
//! policy in, a verdict out; a refusal names the field and the reason.

use std::path::{Component, Path, PathBuf};

use agora_proto::Resources;
use agora_proto::v1::TaskInfo;

use crate::config::RuntimeKind;
use crate::durations::{MAX_HEALTH_CHECK_SECONDS, MAX_KILL_GRACE, checked_seconds};

/// The operator's launch policy and what the runtime can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPolicy {
    /// The runtime that would launch the task.
    pub runtime: RuntimeKind,
    /// Whether privileged containers may run (`--allow-privileged`).
    pub allow_privileged: bool,
    /// Host directories volumes may mount (`--allow-host-path`); empty: no host path at all.
    pub allowed_host_paths: Vec<PathBuf>,
}

/// Why a task is not launched; shown to the framework as the TASK_ERROR message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct LaunchRefusal {
    /// The offending field, e.g. `container.volumes[0]`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl LaunchRefusal {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks `task` against `policy`; the first problem found is returned.
pub fn validate_launch(task: &TaskInfo, policy: &LaunchPolicy) -> Result<(), LaunchRefusal> {
    validate_resources(task)?;
    validate_durations(task)?;
    validate_container(task, policy)?;
    if policy.runtime == RuntimeKind::Process
        && task.command.as_ref().is_some_and(|c| !c.user.is_empty())
    {
        return Err(LaunchRefusal::new(
            "command.user",
            "the process runtime runs tasks as the agent's own user and cannot switch users",
        ));
    }
    Ok(())
}

fn validate_resources(task: &TaskInfo) -> Result<(), LaunchRefusal> {
    let resources = Resources::from_proto(&task.resources)
        .map_err(|error| LaunchRefusal::new("resources", error.to_string()))?;
    let mem = resources.mem();
    if !(mem.is_finite() && mem > 0.0) {
        return Err(LaunchRefusal::new(
            "resources.mem",
            "must be positive; a container without a memory limit is not run",
        ));
    }
    let cpus = resources.cpus();
    if !(cpus.is_finite() && cpus > 0.0) {
        return Err(LaunchRefusal::new(
            "resources.cpus",
            "must be positive; a container without a CPU limit is not run",
        ));
    }
    Ok(())
}

fn validate_durations(task: &TaskInfo) -> Result<(), LaunchRefusal> {
    let max_grace = MAX_KILL_GRACE.as_secs_f64();
    checked_seconds(task.kill_grace_period_seconds, max_grace)
        .map_err(|error| LaunchRefusal::new("kill_grace_period_seconds", error.to_string()))?;
    if let Some(check) = &task.health_check {
        for (field, value) in [
            ("health_check.delay_seconds", check.delay_seconds),
            (
                "health_check.grace_period_seconds",
                check.grace_period_seconds,
            ),
            ("health_check.interval_seconds", check.interval_seconds),
            ("health_check.timeout_seconds", check.timeout_seconds),
        ] {
            checked_seconds(value, MAX_HEALTH_CHECK_SECONDS)
                .map_err(|error| LaunchRefusal::new(field, error.to_string()))?;
        }
        if u16::try_from(check.port).is_err() {
            return Err(LaunchRefusal::new(
                "health_check.port",
                format!("{} is not a TCP port (1 to 65535)", check.port),
            ));
        }
    }
    Ok(())
}

fn validate_container(task: &TaskInfo, policy: &LaunchPolicy) -> Result<(), LaunchRefusal> {
    let Some(container) = &task.container else {
        return Ok(());
    };
    if container.privileged {
        if !policy.allow_privileged {
            return Err(LaunchRefusal::new(
                "container.privileged",
                "this agent does not allow privileged containers (start it with --allow-privileged)",
            ));
        }
        if policy.runtime == RuntimeKind::Process {
            return Err(LaunchRefusal::new(
                "container.privileged",
                "the process runtime cannot run a privileged container",
            ));
        }
    }
    for (index, volume) in container.volumes.iter().enumerate() {
        let field = format!("container.volumes[{index}]");
        if policy.runtime == RuntimeKind::Process {
            return Err(LaunchRefusal::new(
                field,
                format!("{volume:?}: the process runtime cannot mount volumes"),
            ));
        }
        validate_volume(volume, &policy.allowed_host_paths)
            .map_err(|reason| LaunchRefusal::new(field, format!("{volume:?}: {reason}")))?;
    }
    Ok(())
}

/// Checks one `host:container[:ro|rw]` volume; the reason when it is refused.
fn validate_volume(volume: &str, allowed: &[PathBuf]) -> Result<(), String> {
    let parts: Vec<&str> = volume.split(':').collect();
    let (host, container) = match parts.as_slice() {
        [host, container] => (*host, *container),
        [host, container, "ro" | "rw"] => (*host, *container),
        [_, _, mode] => {
            return Err(format!("mode {mode:?} is not supported (use ro or rw)"));
        }
        _ => return Err("expected HOST_PATH:CONTAINER_PATH[:ro|rw]".to_owned()),
    };
    if !host.starts_with('/') {
        // Docker would take a relative name as a named volume, whose driver may mount
        // anything; only explicit host paths are supported, and only under policy.
        return Err(format!(
            "host path {host:?} must be absolute (named volumes are not supported)"
        ));
    }
    if !container.starts_with('/') {
        return Err(format!("container path {container:?} must be absolute"));
    }
    let normalised = normalise(Path::new(host));
    if allowed.is_empty() {
        return Err(format!(
            "host path {} is not allowed: this agent allows no host paths (start it with --allow-host-path)",
            normalised.display()
        ));
    }
    if !allowed
        .iter()
        .any(|root| normalised.starts_with(normalise(root)))
    {
        let roots: Vec<String> = allowed.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "host path {} is not under an allowed path ({})",
            normalised.display(),
            roots.join(", ")
        ));
    }
    Ok(())
}

/// `host:container[:mode]` with the host path normalised (see [`normalise`]), so that the
/// runtime mounts exactly the path the policy checked.
pub fn normalised_bind(volume: &str) -> String {
    match volume.split_once(':') {
        Some((host, rest)) if host.starts_with('/') => {
            format!("{}:{rest}", normalise(Path::new(host)).display())
        }
        _ => volume.to_owned(),
    }
}

/// Resolves `.` and `..` lexically (as the kernel would without symlinks): `/a/../etc` is
/// `/etc`, and nothing climbs above `/`.
pub fn normalise(path: &Path) -> PathBuf {
    let mut normalised = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => normalised.push(part),
            Component::ParentDir => {
                normalised.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    normalised
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1::{CommandInfo, ContainerInfo, HealthCheck};

    fn docker_policy(allowed: &[&str]) -> LaunchPolicy {
        LaunchPolicy {
            runtime: RuntimeKind::Docker,
            allow_privileged: false,
            allowed_host_paths: allowed.iter().map(PathBuf::from).collect(),
        }
    }

    fn task(cpus: f64, mem: f64) -> TaskInfo {
        TaskInfo {
            task_id: "t".into(),
            resources: Resources::cpus_mem(cpus, mem).to_proto(),
            ..Default::default()
        }
    }

    fn with_volumes(volumes: &[&str]) -> TaskInfo {
        TaskInfo {
            container: Some(ContainerInfo {
                image: "img".into(),
                volumes: volumes.iter().map(|v| (*v).to_owned()).collect(),
                ..Default::default()
            }),
            ..task(0.1, 32.0)
        }
    }

    fn refusal(task: &TaskInfo, policy: &LaunchPolicy) -> LaunchRefusal {
        validate_launch(task, policy).expect_err("refused")
    }

    #[test]
    fn a_task_with_limits_is_accepted() {
        assert_eq!(
            validate_launch(&task(0.1, 32.0), &docker_policy(&[])),
            Ok(())
        );
    }

    #[test]
    fn tasks_without_memory_or_cpu_limits_are_refused() {
        let policy = docker_policy(&[]);
        let no_mem = refusal(&task(1.0, 0.0), &policy);
        assert_eq!(no_mem.field, "resources.mem");
        assert_eq!(
            no_mem.to_string(),
            "resources.mem: must be positive; a container without a memory limit is not run"
        );
        assert_eq!(refusal(&task(0.0, 64.0), &policy).field, "resources.cpus");
        assert_eq!(
            refusal(&TaskInfo::default(), &policy).field,
            "resources.mem"
        );
    }

    #[test]
    fn unrepresentable_durations_are_refused_with_their_field() {
        let policy = docker_policy(&[]);
        let grace = TaskInfo {
            kill_grace_period_seconds: 1e308,
            ..task(0.1, 32.0)
        };
        let error = refusal(&grace, &policy);
        assert_eq!(error.field, "kill_grace_period_seconds");
        assert!(error.reason.contains("1e308"), "{error}");
        for (value, field) in [
            (f64::NAN, "health_check.interval_seconds"),
            (-1.0, "health_check.interval_seconds"),
            (1e308, "health_check.interval_seconds"),
        ] {
            let checked = TaskInfo {
                health_check: Some(HealthCheck {
                    interval_seconds: value,
                    ..Default::default()
                }),
                ..task(0.1, 32.0)
            };
            assert_eq!(refusal(&checked, &policy).field, field, "{value}");
        }
        let bad_port = TaskInfo {
            health_check: Some(HealthCheck {
                port: 65_536 + 80,
                ..Default::default()
            }),
            ..task(0.1, 32.0)
        };
        assert_eq!(refusal(&bad_port, &policy).field, "health_check.port");
        let timeout = TaskInfo {
            health_check: Some(HealthCheck {
                timeout_seconds: f64::INFINITY,
                ..Default::default()
            }),
            ..task(0.1, 32.0)
        };
        assert_eq!(
            refusal(&timeout, &policy).field,
            "health_check.timeout_seconds"
        );
    }

    #[test]
    fn host_paths_need_an_allowed_root_after_normalising() {
        let none_allowed = docker_policy(&[]);
        let error = refusal(&with_volumes(&["/etc:/host-etc"]), &none_allowed);
        assert_eq!(error.field, "container.volumes[0]");
        assert!(error.reason.contains("/etc"), "{error}");

        let policy = docker_policy(&["/srv/data"]);
        assert_eq!(
            validate_launch(
                &with_volumes(&["/srv/data/app:/data", "/srv/data:/all:ro"]),
                &policy
            ),
            Ok(())
        );
        let escape = refusal(
            &with_volumes(&["/srv/data/app:/data", "/srv/data/../../etc:/etc:rw"]),
            &policy,
        );
        assert_eq!(escape.field, "container.volumes[1]");
        assert!(escape.reason.contains("host path /etc"), "{escape}");
        let sibling = refusal(&with_volumes(&["/srv/database:/d"]), &policy);
        assert!(
            sibling.reason.contains("not under an allowed path"),
            "{sibling}"
        );
        let named = refusal(&with_volumes(&["cache:/cache"]), &policy);
        assert!(named.reason.contains("must be absolute"), "{named}");
        let mode = refusal(&with_volumes(&["/srv/data:/d:z"]), &policy);
        assert!(mode.reason.contains("\"z\""), "{mode}");
        let relative_target = refusal(&with_volumes(&["/srv/data:d"]), &policy);
        assert!(
            relative_target.reason.contains("container path"),
            "{relative_target}"
        );
    }

    #[test]
    fn privileged_needs_the_flag_and_a_container_runtime() {
        let privileged = TaskInfo {
            container: Some(ContainerInfo {
                image: "img".into(),
                privileged: true,
                ..Default::default()
            }),
            ..task(0.1, 32.0)
        };
        let mut policy = docker_policy(&[]);
        assert_eq!(refusal(&privileged, &policy).field, "container.privileged");
        policy.allow_privileged = true;
        assert_eq!(validate_launch(&privileged, &policy), Ok(()));
        policy.runtime = RuntimeKind::Process;
        assert_eq!(refusal(&privileged, &policy).field, "container.privileged");
    }

    #[test]
    fn the_process_runtime_refuses_what_it_cannot_honour() {
        let policy = LaunchPolicy {
            runtime: RuntimeKind::Process,
            allow_privileged: false,
            allowed_host_paths: vec![PathBuf::from("/srv")],
        };
        assert_eq!(
            refusal(&with_volumes(&["/srv:/srv"]), &policy).field,
            "container.volumes[0]"
        );
        let as_user = TaskInfo {
            command: Some(CommandInfo {
                user: "nobody".into(),
                ..Default::default()
            }),
            ..task(0.1, 32.0)
        };
        assert_eq!(refusal(&as_user, &policy).field, "command.user");
    }

    #[test]
    fn normalising_resolves_dots_and_never_climbs_above_root() {
        assert_eq!(normalise(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalise(Path::new("/../../etc")), PathBuf::from("/etc"));
        assert_eq!(normalise(Path::new("/srv/")), PathBuf::from("/srv"));
        assert_eq!(normalised_bind("/srv/a/../b:/d:ro"), "/srv/b:/d:ro");
    }
}
