//! The JSON view of the cluster served at `/state`, hand-written from [`v1::ClusterState`] so
//! that enums read as names and resources as small objects.
//!
//! Shape (see `master/STATE.md` for a full sample):
//!
//! ```text
//! {
//!   "version": "0.1.0",
//!   "leader": "10.0.0.1:5050",
//!   "agents": [{
//!     "id": "agent-…", "hostname": "node-1", "address": "10.0.0.5:5051",
//!     "status": "active" | "unreachable" | "draining",
//!     "labels": {"disk": "ssd"}, "runtimes": ["docker"], "version": "0.1.0",
//!     "registered_at": 1718000000.5,
//!     "resources": {
//!       "total":   {"cpus": 4, "mem": 8192, "ports": "[31000-32000]"},
//!       "used":    {"cpus": 1, "mem": 512, "ports": "[31000-31000]"},
//!       "offered": {}
//!     }
//!   }],
//!   "frameworks": [{
//!     "id": "fw-…", "name": "svcframework", "user": "", "role": "*", "principal": "",
//!     "hostname": "", "webui_url": "", "failover_timeout_seconds": 604800,
//!     "capabilities": ["PARTITION_AWARE"], "connected": true, "active": true,
//!     "suppressed": false, "dominant_share": 0.25
//!   }],
//!   "tasks": [{
//!     "id": "web.1", "name": "web", "framework_id": "fw-…", "agent_id": "agent-…",
//!     "state": "TASK_RUNNING", "reason": "REASON_UNSPECIFIED", "message": "",
//!     "healthy": true, "exit_code": null, "timestamp": 1718000001.2,
//!     "resources": {"cpus": 0.5, "mem": 128}, "image": "busybox", "labels": {}
//!   }],
//!   "offers": [{
//!     "id": "offer-…", "framework_id": "fw-…", "agent_id": "agent-…",
//!     "hostname": "node-1", "resources": {"cpus": 3, "mem": 7680}
//!   }]
//! }
//! ```
//!
//! Resource objects map scalars to numbers, ranges to `"[begin-end,…]"` strings and sets to
//! arrays of strings. Enum values the master does not know render as `"UNKNOWN(<number>)"`.

use agora_proto::{Resources, v1};
use serde_json::{Map, Value, json};

/// The whole `/state` document.
pub fn cluster_state_json(state: &v1::ClusterState) -> Value {
    json!({
        "version": state.version,
        "leader": state.leader,
        "agents": agents_json(state),
        "frameworks": frameworks_json(state),
        "tasks": tasks_json(state),
        "offers": state.offers.iter().map(offer_json).collect::<Vec<_>>(),
    })
}

/// The `agents` array of `/state`.
pub fn agents_json(state: &v1::ClusterState) -> Value {
    Value::Array(state.agents.iter().map(agent_json).collect())
}

/// The `frameworks` array of `/state`.
pub fn frameworks_json(state: &v1::ClusterState) -> Value {
    Value::Array(state.frameworks.iter().map(framework_json).collect())
}

/// The `tasks` array of `/state`.
pub fn tasks_json(state: &v1::ClusterState) -> Value {
    Value::Array(state.tasks.iter().map(task_json).collect())
}

fn agent_json(agent: &v1::AgentState) -> Value {
    let info = agent.info.clone().unwrap_or_default();
    json!({
        "id": info.id,
        "hostname": info.hostname,
        "address": info.address,
        "status": agent.status,
        "labels": info.labels,
        "runtimes": info.runtimes,
        "version": info.version,
        "registered_at": agent.registered_at,
        "resources": {
            "total": resources_json(&info.resources),
            "used": resources_json(&agent.used),
            "offered": resources_json(&agent.offered),
        },
    })
}

fn framework_json(framework: &v1::FrameworkState) -> Value {
    let info = framework.info.clone().unwrap_or_default();
    let capabilities: Vec<String> = info
        .capabilities
        .iter()
        .map(|&value| {
            v1::FrameworkCapability::try_from(value)
                .map(|capability| capability.as_str_name().to_owned())
                .unwrap_or_else(|_| unknown_enum(value))
        })
        .collect();
    json!({
        "id": info.id,
        "name": info.name,
        "user": info.user,
        "role": info.role,
        "principal": info.principal,
        "hostname": info.hostname,
        "webui_url": info.webui_url,
        "failover_timeout_seconds": info.failover_timeout_seconds,
        "capabilities": capabilities,
        "connected": framework.connected,
        "active": framework.active,
        "suppressed": framework.suppressed,
        "dominant_share": framework.dominant_share,
    })
}

fn task_json(entry: &v1::TaskEntry) -> Value {
    let task = entry.task.clone().unwrap_or_default();
    let status = entry.latest_status.clone().unwrap_or_default();
    let state = v1::TaskState::try_from(status.state)
        .map(|state| state.as_str_name().to_owned())
        .unwrap_or_else(|_| unknown_enum(status.state));
    let reason = v1::TaskReason::try_from(status.reason)
        .map(|reason| reason.as_str_name().to_owned())
        .unwrap_or_else(|_| unknown_enum(status.reason));
    let agent_id = if task.agent_id.is_empty() {
        status.agent_id.clone()
    } else {
        task.agent_id.clone()
    };
    json!({
        "id": task.task_id,
        "name": task.name,
        "framework_id": entry.framework_id,
        "agent_id": agent_id,
        "state": state,
        "reason": reason,
        "message": status.message,
        "healthy": status.healthy,
        "exit_code": status.exit_code,
        "timestamp": status.timestamp,
        "resources": resources_json(&task.resources),
        "image": task.container.map(|container| container.image).unwrap_or_default(),
        "labels": task.labels,
    })
}

fn offer_json(offer: &v1::Offer) -> Value {
    json!({
        "id": offer.id,
        "framework_id": offer.framework_id,
        "agent_id": offer.agent_id,
        "hostname": offer.hostname,
        "resources": resources_json(&offer.resources),
    })
}

fn unknown_enum(value: i32) -> String {
    format!("UNKNOWN({value})")
}

/// Renders resources as `{"cpus": 4, "mem": 8192, "ports": "[31000-32000]"}`, merging
/// duplicate names; whole numbers render without a fraction.
pub fn resources_json(resources: &[v1::Resource]) -> Value {
    // Normalise (merge duplicates, drop zeros) when the list is valid; show it raw otherwise.
    let normalised = Resources::from_proto(resources)
        .map(|parsed| parsed.to_proto())
        .unwrap_or_else(|_| resources.to_vec());
    let mut object = Map::new();
    for resource in &normalised {
        let value = match &resource.value {
            Some(v1::resource::Value::Scalar(scalar)) => scalar_json(*scalar),
            Some(v1::resource::Value::Ranges(ranges)) => {
                let parts: Vec<String> = ranges
                    .range
                    .iter()
                    .map(|range| format!("{}-{}", range.begin, range.end))
                    .collect();
                Value::String(format!("[{}]", parts.join(",")))
            }
            Some(v1::resource::Value::Set(set)) => json!(set.item),
            None => Value::Null,
        };
        object.insert(resource.name.clone(), value);
    }
    Value::Object(object)
}

fn scalar_json(scalar: f64) -> Value {
    let whole = scalar.round();
    if (scalar - whole).abs() < f64::EPSILON && whole.abs() < 9.0e15 {
        json!(whole as i64)
    } else {
        json!(scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::RangeSet;

    fn sample_state() -> v1::ClusterState {
        let total = Resources::cpus_mem(4.0, 8192.0)
            .with_ranges("ports", RangeSet::from_range(31000, 32000))
            .to_proto();
        v1::ClusterState {
            agents: vec![v1::AgentState {
                info: Some(v1::AgentInfo {
                    id: "agent-1".to_owned(),
                    hostname: "node-1".to_owned(),
                    address: "10.0.0.5:5051".to_owned(),
                    resources: total,
                    labels: [("disk".to_owned(), "ssd".to_owned())].into(),
                    ..Default::default()
                }),
                status: "active".to_owned(),
                used: Resources::cpus_mem(0.5, 128.0).to_proto(),
                offered: vec![],
                registered_at: 1.5,
            }],
            frameworks: vec![v1::FrameworkState {
                info: Some(v1::FrameworkInfo {
                    id: "fw-1".to_owned(),
                    capabilities: vec![v1::FrameworkCapability::PartitionAware as i32, 99],
                    ..Default::default()
                }),
                connected: true,
                ..Default::default()
            }],
            tasks: vec![v1::TaskEntry {
                framework_id: "fw-1".to_owned(),
                task: Some(v1::TaskInfo {
                    task_id: "web.1".to_owned(),
                    agent_id: "agent-1".to_owned(),
                    ..Default::default()
                }),
                latest_status: Some(v1::TaskStatus {
                    state: v1::TaskState::TaskRunning as i32,
                    healthy: Some(true),
                    ..Default::default()
                }),
            }],
            offers: vec![],
            leader: "127.0.0.1:5050".to_owned(),
            version: "0.1.0".to_owned(),
        }
    }

    #[test]
    fn renders_readable_resources_and_enum_names() {
        let value = cluster_state_json(&sample_state());
        let agent = &value["agents"][0];
        assert_eq!(agent["status"], "active");
        assert_eq!(agent["labels"]["disk"], "ssd");
        assert_eq!(
            agent["resources"]["total"],
            json!({"cpus": 4, "mem": 8192, "ports": "[31000-32000]"})
        );
        assert_eq!(agent["resources"]["used"], json!({"cpus": 0.5, "mem": 128}));
        assert_eq!(agent["resources"]["offered"], json!({}));
        assert_eq!(
            value["frameworks"][0]["capabilities"],
            json!(["PARTITION_AWARE", "UNKNOWN(99)"])
        );
        let task = &value["tasks"][0];
        assert_eq!(task["state"], "TASK_RUNNING");
        assert_eq!(task["healthy"], true);
        assert_eq!(task["exit_code"], Value::Null);
        assert_eq!(value["version"], "0.1.0");
    }

    #[test]
    fn invalid_resources_render_raw_instead_of_failing() {
        let raw = vec![v1::Resource {
            name: "cpus".to_owned(),
            value: Some(v1::resource::Value::Scalar(-1.0)),
        }];
        assert_eq!(resources_json(&raw), json!({"cpus": -1}));
    }
}
