//! Kills and their expiry: asking for an instance to be killed once, resending kills that
//! got no answer, and killing instances that stage for too long.

use agora_proto::{AgentId, TaskId};

use super::model::{InstanceState, KillReason, KillRequest};
use super::{Command, SvcCore};

impl SvcCore {
    /// Asks the agent to kill an instance (once; resent by [`SvcCore::expire_instances`]).
    pub(super) fn kill_instance(&mut self, task_id: &str, reason: KillReason, now: f64) {
        let Some(instance) = self.instances.get_mut(task_id) else {
            return;
        };
        if instance.kill.is_some() {
            return;
        }
        instance.kill = Some(KillRequest {
            reason,
            sent_at: now,
        });
        let command = Command::Kill {
            task_id: instance.task_id.clone(),
            agent_id: instance.agent_id.clone(),
        };
        tracing::info!(task_id, app_id = %instance.app_id, reason = reason.as_str(), "killing instance");
        self.persist_instance(task_id);
        self.outbox.push(command);
        self.counters.kills += 1;
    }

    /// Resends unanswered kills and kills instances that never started.
    pub(super) fn expire_instances(&mut self, now: f64) {
        let mut resend = Vec::new();
        let mut timed_out = Vec::new();
        for instance in self.instances.iter_mut() {
            match instance.kill {
                Some(ref mut request) if now - request.sent_at >= self.config.kill_retry => {
                    request.sent_at = now;
                    resend.push((instance.task_id.clone(), instance.agent_id.clone()));
                }
                Some(_) => {}
                None => {
                    let staging = matches!(
                        instance.state(),
                        InstanceState::Staging | InstanceState::Starting
                    );
                    if staging && now - instance.staged_at >= self.config.launch_timeout {
                        timed_out.push(instance.task_id.clone());
                    }
                }
            }
        }
        for (task_id, agent_id) in resend {
            self.persist_instance(task_id.as_str());
            self.outbox.push(Command::Kill {
                task_id: TaskId::new(task_id),
                agent_id: AgentId::new(agent_id),
            });
        }
        for task_id in timed_out {
            self.kill_instance(task_id.as_str(), KillReason::LaunchTimeout, now);
        }
    }
}
