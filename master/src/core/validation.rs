//! Range and shape checks on everything a peer sends, applied before any state changes:
//! ids, names and labels against the limits of [`agora_proto::limits`], every `*_seconds`
//! field against [`agora_proto::limits::MAX_DURATION_SECONDS`], ports against 65535, and a
//! task's cpus and mem against the documented minimums.

use agora_proto::limits::{
    self, MAX_ID_LEN, MAX_NAME_LEN, MIN_TASK_CPUS, MIN_TASK_MEM_MIB, truncate_for_message,
};
use agora_proto::{CPUS, MEM, PORTS, Resources, v1};

use super::MasterError;

/// Longest string any other free-form field may hold (URLs, addresses, commands, paths,
/// status messages), in bytes: generous, but a 70,000-byte value is refused.
pub(crate) const MAX_TEXT_LEN: usize = 4096;

/// Longest status update uuid: agents send 36-character UUIDs; anything far longer is not
/// one of theirs.
pub(crate) const MAX_UUID_LEN: usize = 128;

/// Largest port number (container ports, host ports, health check ports, "ports" ranges).
const MAX_PORT: u64 = 65535;

/// Largest bound of a range resource other than "ports": keeps every range's size, and the
/// sum of many sizes, far from `u64` overflow.
const MAX_RANGE_VALUE: u64 = u32::MAX as u64;

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> MasterError {
    MasterError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks an id field (see [`limits::check_id`]).
pub(crate) fn id(field: &str, value: &str) -> Result<(), MasterError> {
    limits::check_id(value).map_err(|error| {
        if value.len() > MAX_ID_LEN {
            invalid(
                field,
                format!("{error} (starts {:?})", truncate_for_message(value)),
            )
        } else {
            invalid(field, error.to_string())
        }
    })
}

/// Checks an id field that may be left empty (e.g. "assign one for me").
pub(crate) fn optional_id(field: &str, value: &str) -> Result<(), MasterError> {
    if value.is_empty() {
        return Ok(());
    }
    id(field, value)
}

/// Checks a free-form name or text field against `max` bytes and control characters.
pub(crate) fn text(field: &str, value: &str, max: usize) -> Result<(), MasterError> {
    limits::check_name(value, max).map_err(|error| invalid(field, error.to_string()))
}

/// Checks a `*_seconds` field.
pub(crate) fn duration(field: &str, seconds: f64) -> Result<(), MasterError> {
    limits::check_duration_seconds(seconds).map_err(|error| invalid(field, error.to_string()))
}

fn port(field: &str, value: u32) -> Result<(), MasterError> {
    if u64::from(value) > MAX_PORT {
        return Err(invalid(
            field,
            format!("must be a port number (at most {MAX_PORT}), got {value}"),
        ));
    }
    Ok(())
}

fn labels<'a>(
    field: &str,
    entries: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), MasterError> {
    limits::check_labels(field, entries).map_err(|problem| invalid(problem.field, problem.reason))
}

/// Checks the bounds of range resources: "ports" within 0..=65535, other ranges within
/// 0..=2^32-1. (Scalars are bounded by [`Resources::from_proto`] itself.)
pub(crate) fn resource_ranges(field: &str, resources: &[v1::Resource]) -> Result<(), MasterError> {
    for resource in resources {
        let Some(v1::resource::Value::Ranges(ranges)) = &resource.value else {
            continue;
        };
        let max = if resource.name == PORTS {
            MAX_PORT
        } else {
            MAX_RANGE_VALUE
        };
        if let Some(range) = ranges.range.iter().find(|range| range.end > max) {
            return Err(invalid(
                field,
                format!(
                    "{} range [{}-{}] goes beyond {max}",
                    resource.name, range.begin, range.end
                ),
            ));
        }
    }
    Ok(())
}

/// Checks what a framework sends when it subscribes.
pub(crate) fn framework_info(info: &v1::FrameworkInfo) -> Result<(), MasterError> {
    optional_id("framework.id", &info.id)?;
    text("framework.name", &info.name, MAX_NAME_LEN)?;
    text("framework.user", &info.user, MAX_NAME_LEN)?;
    text("framework.principal", &info.principal, MAX_NAME_LEN)?;
    text("framework.hostname", &info.hostname, MAX_NAME_LEN)?;
    text("framework.webui_url", &info.webui_url, MAX_TEXT_LEN)?;
    text("framework.role", &info.role, MAX_NAME_LEN)?;
    duration(
        "framework.failover_timeout_seconds",
        info.failover_timeout_seconds,
    )?;
    Ok(())
}

/// Checks what an agent sends when it registers or re-registers (ids, names, labels,
/// resources' ranges). The agent id is checked by the caller, which knows whether it must
/// be set.
pub(crate) fn agent_info(info: &v1::AgentInfo) -> Result<Resources, MasterError> {
    optional_id("agent.id", &info.id)?;
    text("agent.hostname", &info.hostname, MAX_NAME_LEN)?;
    text("agent.address", &info.address, MAX_TEXT_LEN)?;
    text("agent.version", &info.version, MAX_NAME_LEN)?;
    labels("agent.labels", &info.labels)?;
    for (index, runtime) in info.runtimes.iter().enumerate() {
        text(&format!("agent.runtimes[{index}]"), runtime, MAX_NAME_LEN)?;
    }
    resource_ranges("agent.resources", &info.resources)?;
    Resources::from_proto(&info.resources)
        .map_err(|error| invalid("agent.resources", error.to_string()))
}

/// Checks a task's fields other than its resources' fit: ids, name, labels, every duration
/// and port number. `prefix` is the task's path in the request.
pub(crate) fn task_info(prefix: &str, info: &v1::TaskInfo) -> Result<(), MasterError> {
    id(&format!("{prefix}.task_id"), &info.task_id)?;
    optional_id(&format!("{prefix}.agent_id"), &info.agent_id)?;
    text(&format!("{prefix}.name"), &info.name, MAX_NAME_LEN)?;
    labels(&format!("{prefix}.labels"), &info.labels)?;
    duration(
        &format!("{prefix}.kill_grace_period_seconds"),
        info.kill_grace_period_seconds,
    )?;
    resource_ranges(&format!("{prefix}.resources"), &info.resources)?;
    if let Some(container) = &info.container {
        text(
            &format!("{prefix}.container.image"),
            &container.image,
            MAX_TEXT_LEN,
        )?;
        for (index, mapping) in container.port_mappings.iter().enumerate() {
            let mapping_prefix = format!("{prefix}.container.port_mappings[{index}]");
            port(
                &format!("{mapping_prefix}.container_port"),
                mapping.container_port,
            )?;
            port(&format!("{mapping_prefix}.host_port"), mapping.host_port)?;
        }
        for (index, volume) in container.volumes.iter().enumerate() {
            text(
                &format!("{prefix}.container.volumes[{index}]"),
                volume,
                MAX_TEXT_LEN,
            )?;
        }
    }
    if let Some(health) = &info.health_check {
        let health_prefix = format!("{prefix}.health_check");
        for (name, seconds) in [
            ("grace_period_seconds", health.grace_period_seconds),
            ("interval_seconds", health.interval_seconds),
            ("timeout_seconds", health.timeout_seconds),
            ("delay_seconds", health.delay_seconds),
        ] {
            duration(&format!("{health_prefix}.{name}"), seconds)?;
        }
        port(&format!("{health_prefix}.port"), health.port)?;
        text(&format!("{health_prefix}.path"), &health.path, MAX_TEXT_LEN)?;
    }
    Ok(())
}

/// Checks that a task asks for at least [`MIN_TASK_CPUS`] cpus and [`MIN_TASK_MEM_MIB`] MiB:
/// with zero the agent would start a container without any limit.
pub(crate) fn task_minimums(prefix: &str, resources: &Resources) -> Result<(), MasterError> {
    if resources.scalar(CPUS) < MIN_TASK_CPUS {
        return Err(invalid(
            format!("{prefix}.resources"),
            format!(
                "cpus must be at least {MIN_TASK_CPUS}, got {}",
                resources.scalar(CPUS)
            ),
        ));
    }
    if resources.scalar(MEM) < MIN_TASK_MEM_MIB {
        return Err(invalid(
            format!("{prefix}.resources"),
            format!(
                "mem must be at least {MIN_TASK_MEM_MIB} MiB, got {}",
                resources.scalar(MEM)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ids_are_refused_with_a_short_message() {
        let error = id("task_id", &"a".repeat(70_000)).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("task_id: must be at most 255 bytes, got 70000"));
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn ports_and_ranges_are_bounded() {
        let resources = vec![v1::Resource {
            name: PORTS.to_owned(),
            value: Some(v1::resource::Value::Ranges(v1::Ranges {
                range: vec![v1::Range {
                    begin: 1,
                    end: 70_000,
                }],
            })),
        }];
        let error = resource_ranges("agent.resources", &resources).unwrap_err();
        assert!(error.to_string().contains("beyond 65535"), "{error}");
    }
}
