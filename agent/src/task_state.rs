//! The lifecycle of a task on the agent, as a pure state machine.

use agora_proto::is_terminal;
use agora_proto::v1::TaskState;

/// Where a task is in its life on this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskPhase {
    /// Received from the master, nothing launched yet.
    Staging,
    /// Image being pulled or container being created.
    Starting,
    /// The container or process runs.
    Running,
    /// A kill was asked for; SIGTERM sent, grace period running.
    Killing,
    /// Ended; never changes again.
    Terminal(TaskState),
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal task transition from {from:?} to {to:?}")]
pub struct IllegalTransition {
    /// Phase the task was in.
    pub from: TaskPhase,
    /// State that was asked for.
    pub to: TaskState,
}

impl TaskPhase {
    /// The phase a task reporting `state` is in.
    pub fn from_state(state: TaskState) -> TaskPhase {
        match state {
            TaskState::TaskStarting => TaskPhase::Starting,
            TaskState::TaskRunning => TaskPhase::Running,
            TaskState::TaskKilling => TaskPhase::Killing,
            terminal if is_terminal(terminal) => TaskPhase::Terminal(terminal),
            _ => TaskPhase::Staging,
        }
    }

    /// The proto state for this phase.
    pub fn state(self) -> TaskState {
        match self {
            TaskPhase::Staging => TaskState::TaskStaging,
            TaskPhase::Starting => TaskState::TaskStarting,
            TaskPhase::Running => TaskState::TaskRunning,
            TaskPhase::Killing => TaskState::TaskKilling,
            TaskPhase::Terminal(state) => state,
        }
    }

    /// True once the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskPhase::Terminal(_))
    }

    /// The phase after the task reports `to`. STARTING may repeat (pull progress) and RUNNING
    /// may repeat (health changes); nothing leaves a terminal phase; a killed task only ends.
    pub fn transition(self, to: TaskState) -> Result<TaskPhase, IllegalTransition> {
        let illegal = Err(IllegalTransition { from: self, to });
        if self.is_terminal() {
            return illegal;
        }
        match to {
            TaskState::TaskStarting => match self {
                TaskPhase::Staging | TaskPhase::Starting => Ok(TaskPhase::Starting),
                _ => illegal,
            },
            TaskState::TaskRunning => match self {
                TaskPhase::Staging | TaskPhase::Starting | TaskPhase::Running => {
                    Ok(TaskPhase::Running)
                }
                _ => illegal,
            },
            TaskState::TaskKilling => match self {
                TaskPhase::Killing => illegal,
                _ => Ok(TaskPhase::Killing),
            },
            terminal if is_terminal(terminal) => Ok(TaskPhase::Terminal(terminal)),
            _ => illegal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_life_goes_staging_starting_running_finished() {
        let phase = TaskPhase::Staging
            .transition(TaskState::TaskStarting)
            .and_then(|p| p.transition(TaskState::TaskStarting))
            .and_then(|p| p.transition(TaskState::TaskRunning))
            .and_then(|p| p.transition(TaskState::TaskRunning))
            .and_then(|p| p.transition(TaskState::TaskFinished))
            .unwrap();
        assert_eq!(phase, TaskPhase::Terminal(TaskState::TaskFinished));
        assert!(phase.is_terminal());
    }

    #[test]
    fn terminal_phases_never_change() {
        let finished = TaskPhase::Terminal(TaskState::TaskFailed);
        for to in [
            TaskState::TaskRunning,
            TaskState::TaskKilled,
            TaskState::TaskStarting,
        ] {
            assert_eq!(
                finished.transition(to),
                Err(IllegalTransition { from: finished, to })
            );
        }
    }

    #[test]
    fn killing_only_ends() {
        let killing = TaskPhase::Running
            .transition(TaskState::TaskKilling)
            .unwrap();
        assert!(killing.transition(TaskState::TaskRunning).is_err());
        assert!(killing.transition(TaskState::TaskStarting).is_err());
        assert!(killing.transition(TaskState::TaskKilling).is_err());
        assert_eq!(
            killing.transition(TaskState::TaskKilled),
            Ok(TaskPhase::Terminal(TaskState::TaskKilled))
        );
    }

    #[test]
    fn running_cannot_go_back_to_starting_and_unknown_states_are_refused() {
        assert!(
            TaskPhase::Running
                .transition(TaskState::TaskStarting)
                .is_err()
        );
        assert!(
            TaskPhase::Running
                .transition(TaskState::TaskUnreachable)
                .is_err()
        );
        assert!(
            TaskPhase::Staging
                .transition(TaskState::TaskStaging)
                .is_err()
        );
    }

    #[test]
    fn phases_round_trip_through_states() {
        for phase in [
            TaskPhase::Staging,
            TaskPhase::Starting,
            TaskPhase::Running,
            TaskPhase::Killing,
            TaskPhase::Terminal(TaskState::TaskLost),
        ] {
            assert_eq!(TaskPhase::from_state(phase.state()), phase);
        }
    }
}
