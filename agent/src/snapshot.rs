//! A read-only picture of the agent, served as `/state` and `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Counters since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AgentMetrics {
    /// Tasks the master asked to launch.
    pub launches: u64,
    /// Launches that failed before the task ran.
    pub launch_failures: u64,
    /// Tasks that ended FINISHED.
    pub tasks_finished: u64,
    /// Tasks that ended FAILED.
    pub tasks_failed: u64,
    /// Tasks that ended KILLED.
    pub tasks_killed: u64,
    /// Status updates handed to the connection (including resends).
    pub status_updates_sent: u64,
    /// Successful (re-)registrations with the master.
    pub registrations: u64,
}

/// One task as the agent sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskSnapshot {
    /// Task id.
    pub task_id: String,
    /// Owning framework.
    pub framework_id: String,
    /// Task name.
    pub name: String,
    /// Latest state, e.g. `TASK_RUNNING`.
    pub state: String,
    /// Health check verdict, once known.
    pub healthy: Option<bool>,
    /// Container id (Docker), `pid-N` (process) or `sim-…`.
    pub container_id: Option<String>,
    /// Process id (process runtime).
    pub pid: Option<u32>,
    /// Host ports, `PORT0` first.
    pub host_ports: Vec<u32>,
    /// Status updates waiting for an acknowledgement.
    pub pending_updates: usize,
}

/// The agent's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgentSnapshot {
    /// Id assigned by the master, once registered.
    pub agent_id: Option<String>,
    /// Reported hostname.
    pub hostname: String,
    /// Address of the HTTP endpoint.
    pub address: String,
    /// `docker`, `process` or `sim`.
    pub runtime: String,
    /// Whether a registered connection to the master is up.
    pub connected: bool,
    /// Total resources, text form.
    pub resources: String,
    /// Resources of tasks not ended yet, text form.
    pub used_resources: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Known tasks.
    pub tasks: Vec<TaskSnapshot>,
    /// Counters.
    pub metrics: AgentMetrics,
}

impl AgentSnapshot {
    /// The Prometheus text exposition of the snapshot.
    pub fn prometheus(&self) -> String {
        let mut text = String::new();
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        for task in &self.tasks {
            *by_state.entry(task.state.as_str()).or_default() += 1;
        }
        let pending: usize = self.tasks.iter().map(|t| t.pending_updates).sum();
        let _ = writeln!(
            text,
            "# HELP agora_agent_tasks Tasks known to the agent, by state."
        );
        let _ = writeln!(text, "# TYPE agora_agent_tasks gauge");
        for (state, count) in by_state {
            let _ = writeln!(text, "agora_agent_tasks{{state=\"{state}\"}} {count}");
        }
        let counters = [
            (
                "agora_agent_launches_total",
                "Tasks the master asked to launch.",
                self.metrics.launches,
            ),
            (
                "agora_agent_launch_failures_total",
                "Launches that failed before the task ran.",
                self.metrics.launch_failures,
            ),
            (
                "agora_agent_tasks_finished_total",
                "Tasks that ended FINISHED.",
                self.metrics.tasks_finished,
            ),
            (
                "agora_agent_tasks_failed_total",
                "Tasks that ended FAILED.",
                self.metrics.tasks_failed,
            ),
            (
                "agora_agent_tasks_killed_total",
                "Tasks that ended KILLED.",
                self.metrics.tasks_killed,
            ),
            (
                "agora_agent_status_updates_sent_total",
                "Status updates sent, resends included.",
                self.metrics.status_updates_sent,
            ),
            (
                "agora_agent_registrations_total",
                "Registrations with the master.",
                self.metrics.registrations,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            text,
            "# HELP agora_agent_pending_status_updates Status updates waiting for an acknowledgement.\n# TYPE agora_agent_pending_status_updates gauge\nagora_agent_pending_status_updates {pending}"
        );
        let _ = writeln!(
            text,
            "# HELP agora_agent_connected 1 when registered with the master.\n# TYPE agora_agent_connected gauge\nagora_agent_connected {}",
            u8::from(self.connected)
        );
        text
    }
}
