//! Kills and reconciliation questions that only an agent can settle, held until it can.
//!
//! After a master restart the master knows its agents (from the registry) but not their tasks:
//! those come back when each agent re-registers. A framework that kills or reconciles a task
//! on an agent that has not re-registered yet must get neither silence nor a premature
//! "unknown to the master" (`TASK_LOST`): the framework would forget a task that is still
//! running, and the agent would bring it back as an orphan. The same holds for a kill of a
//! task whose agent is connected to nobody at the moment (a partition, a reconnect): the
//! message would be dropped on the floor.
//!
//! So such requests are held here, per agent, and settled by [`Master`](super::Master) when
//! the agent re-registers (the kill is forwarded, the question answered with what the agent
//! reported) or is declared unreachable (answered `TASK_UNREACHABLE` or `TASK_LOST`). A
//! request that names no agent while some agent is still recovering waits under
//! [`HeldFor::AnyRecovering`] until no agent is recovering any more.

use std::collections::BTreeMap;

use agora_proto::v1::TaskReason;
use agora_proto::{AgentId, FrameworkId, TaskId, v1};
use tracing::{debug, info};

use super::agents::AgentStatus;
use super::{Master, Now};

/// Which agent a held request waits for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HeldFor {
    /// That agent's re-registration (or its being declared unreachable).
    Agent(AgentId),
    /// The caller named no agent: settled once no agent is recovering.
    AnyRecovering,
}

/// What a framework asked about one task.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct HeldRequest {
    /// A kill, with the grace period the caller asked for (if it named one).
    pub(crate) kill: Option<KillAsked>,
    /// The framework wants to know the task's state (every kill also gets an answer, as its
    /// outcome is an update).
    pub(crate) reconcile: bool,
}

/// A held kill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct KillAsked {
    /// The grace period named in the kill call.
    pub(crate) grace_period_seconds: Option<f64>,
}

/// Held requests, by the agent they wait for, then by task.
#[derive(Debug, Default)]
pub(crate) struct AwaitingBook {
    held: BTreeMap<HeldFor, BTreeMap<(FrameworkId, TaskId), HeldRequest>>,
}

impl AwaitingBook {
    /// Holds a kill until `held_for` settles. A later kill replaces the grace period of an
    /// earlier one.
    pub(crate) fn hold_kill(
        &mut self,
        held_for: HeldFor,
        framework_id: FrameworkId,
        task_id: TaskId,
        kill: KillAsked,
    ) {
        let request = self
            .held
            .entry(held_for)
            .or_default()
            .entry((framework_id, task_id))
            .or_default();
        request.kill = Some(kill);
    }

    /// Holds a reconciliation question until `held_for` settles.
    pub(crate) fn hold_question(
        &mut self,
        held_for: HeldFor,
        framework_id: FrameworkId,
        task_id: TaskId,
    ) {
        self.held
            .entry(held_for)
            .or_default()
            .entry((framework_id, task_id))
            .or_default()
            .reconcile = true;
    }

    /// Takes everything held for `held_for`.
    pub(crate) fn take(
        &mut self,
        held_for: &HeldFor,
    ) -> BTreeMap<(FrameworkId, TaskId), HeldRequest> {
        self.held.remove(held_for).unwrap_or_default()
    }

    /// Takes what is held for `held_for` about one task only.
    pub(crate) fn take_task(
        &mut self,
        held_for: &HeldFor,
        framework_id: &FrameworkId,
        task_id: &TaskId,
    ) -> Option<HeldRequest> {
        let requests = self.held.get_mut(held_for)?;
        let request = requests.remove(&(framework_id.clone(), task_id.clone()));
        if requests.is_empty() {
            self.held.remove(held_for);
        }
        request
    }

    /// Whether anything waits for `held_for`.
    pub(crate) fn is_waiting(&self, held_for: &HeldFor) -> bool {
        self.held.contains_key(held_for)
    }

    /// Forgets a removed framework's requests.
    pub(crate) fn forget_framework(&mut self, framework_id: &FrameworkId) {
        for requests in self.held.values_mut() {
            requests.retain(|(owner, _), _| owner != framework_id);
        }
        self.held.retain(|_, requests| !requests.is_empty());
    }

    /// How many requests are held (for `/metrics`).
    pub(crate) fn len(&self) -> usize {
        self.held.values().map(BTreeMap::len).sum()
    }
}

impl Master {
    /// Where a request about a task the master does not know must wait: for the agent the
    /// caller named if that agent is recovering, or for every recovering agent if the caller
    /// named none. `None`: nothing can bring the task back, answer now.
    pub(super) fn held_for_unknown(&self, named_agent: Option<&AgentId>) -> Option<HeldFor> {
        match named_agent {
            Some(agent_id) => self
                .agents
                .get(agent_id)
                .filter(|agent| agent.status == AgentStatus::Recovering)
                .map(|_| HeldFor::Agent(agent_id.clone())),
            None => self
                .any_agent_recovering()
                .then_some(HeldFor::AnyRecovering),
        }
    }

    fn any_agent_recovering(&self) -> bool {
        self.agents
            .agents
            .values()
            .any(|agent| agent.status == AgentStatus::Recovering)
    }

    /// Holds a kill of a live task whose agent is connected to nobody right now; it is
    /// forwarded when the agent re-registers.
    pub(super) fn hold_kill_for_agent(
        &mut self,
        agent_id: &AgentId,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        grace_period_seconds: Option<f64>,
    ) {
        info!(framework_id = %framework_id, task_id = %task_id, agent_id = %agent_id, "kill held until the agent reconnects");
        self.awaiting.hold_kill(
            HeldFor::Agent(agent_id.clone()),
            framework_id.clone(),
            task_id.clone(),
            KillAsked {
                grace_period_seconds,
            },
        );
    }

    /// Settles what waits for `agent_id`, which just re-registered or was declared
    /// unreachable; then what named no agent, once no agent is recovering any more (or right
    /// away for the tasks this agent brought back).
    pub(super) fn settle_held(&mut self, now: Now, agent_id: &AgentId) {
        let requests = self.awaiting.take(&HeldFor::Agent(agent_id.clone()));
        for ((framework_id, task_id), request) in requests {
            self.settle_request(now, &framework_id, &task_id, Some(agent_id), request);
        }
        if !self.awaiting.is_waiting(&HeldFor::AnyRecovering) {
            return;
        }
        if !self.any_agent_recovering() {
            let requests = self.awaiting.take(&HeldFor::AnyRecovering);
            for ((framework_id, task_id), request) in requests {
                self.settle_request(now, &framework_id, &task_id, None, request);
            }
            return;
        }
        let brought_back: Vec<(FrameworkId, TaskId)> = self
            .agents
            .get(agent_id)
            .map(|agent| agent.tasks.iter().cloned().collect())
            .unwrap_or_default();
        for (framework_id, task_id) in brought_back {
            if let Some(request) =
                self.awaiting
                    .take_task(&HeldFor::AnyRecovering, &framework_id, &task_id)
            {
                self.settle_request(now, &framework_id, &task_id, Some(agent_id), request);
            }
        }
    }

    /// Answers one held request with what the master knows now.
    fn settle_request(
        &mut self,
        now: Now,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        agent_id: Option<&AgentId>,
        request: HeldRequest,
    ) {
        if self.frameworks.get(framework_id).is_none() {
            return;
        }
        let _task = super::task_span(framework_id, task_id).entered();
        if let Some(task) = self.tasks.get(framework_id, task_id) {
            let task_agent = task.agent_id.clone();
            let live = !task.is_terminal();
            let answer = Self::reconciliation_status(now, task);
            let kill = request.kill.filter(|_| live);
            if let Some(kill) = kill {
                let grace = kill.grace_period_seconds.or_else(|| {
                    (task.info.kill_grace_period_seconds > 0.0)
                        .then_some(task.info.kill_grace_period_seconds)
                });
                if self.agents.conn_of(&task_agent).is_some() {
                    info!(agent_id = %task_agent, "held kill sent to agent");
                    self.send_to_agent(
                        &task_agent,
                        v1::master_message::Message::KillTask(v1::KillTask {
                            framework_id: framework_id.to_string(),
                            task_id: task_id.to_string(),
                            grace_period_seconds: grace,
                        }),
                    );
                } else {
                    // Known but cut off (an unreachable agent of a partition-aware
                    // framework): the kill waits for that agent to come back.
                    self.hold_kill_for_agent(&task_agent, framework_id, task_id, grace);
                }
            }
            if request.reconcile || kill.is_none() {
                self.send_update(framework_id, answer);
            }
            return;
        }
        if let Some(task) = self.tasks.find_completed(framework_id, task_id) {
            let status = task.status.clone();
            self.send_update(framework_id, status);
            return;
        }
        debug!("held request answered: task unknown");
        let reason = if request.kill.is_some() {
            TaskReason::ReasonTaskUnknown
        } else {
            TaskReason::ReasonReconciliation
        };
        let status = self.unknown_task_status(now, framework_id, task_id, agent_id, reason);
        self.send_update(framework_id, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_merge_per_task_and_are_taken_per_agent() {
        let mut book = AwaitingBook::default();
        let agent = HeldFor::Agent(AgentId::new("a1"));
        let framework = FrameworkId::new("f");
        book.hold_question(agent.clone(), framework.clone(), TaskId::new("t1"));
        book.hold_kill(
            agent.clone(),
            framework.clone(),
            TaskId::new("t1"),
            KillAsked {
                grace_period_seconds: Some(3.0),
            },
        );
        book.hold_question(HeldFor::AnyRecovering, framework.clone(), TaskId::new("t2"));
        assert_eq!(book.len(), 2);
        let taken = book.take(&agent);
        let request = taken[&(framework.clone(), TaskId::new("t1"))];
        assert!(request.reconcile);
        assert_eq!(
            request.kill.and_then(|kill| kill.grace_period_seconds),
            Some(3.0)
        );
        assert!(!book.is_waiting(&agent));
        assert!(book.is_waiting(&HeldFor::AnyRecovering));
        book.forget_framework(&framework);
        assert_eq!(book.len(), 0);
        assert!(!book.is_waiting(&HeldFor::AnyRecovering));
    }
}
