//! The one task state machine, shared by the master, the agents and the frameworks.
//!
//! A task's life as anyone in the cluster sees it: staging, starting, running, killing, then one
//! terminal state, with `TASK_UNREACHABLE` (made by the master when the task's agent stops
//! answering) from which it may come back in any live state. The agent checks each update it
//! emits against [`TaskPhase::transition`]; the master and the frameworks check each update they
//! receive, accepting a repeat of the state they hold (updates are retried until acknowledged,
//! so a duplicate is normal) and keeping their state on anything else.

use crate::v1::TaskState;

/// True for states after which a task never changes again and its resources are free.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskError
            | TaskState::TaskLost
            | TaskState::TaskDropped
            | TaskState::TaskGone
    )
}

/// Wall-clock seconds since the Unix epoch, as carried in `TaskStatus.timestamp`.
pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or(0.0)
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskPhase {
    /// Accepted, nothing launched yet.
    Staging,
    /// Image being pulled or container being created.
    Starting,
    /// The container or process runs.
    Running,
    /// Being stopped: SIGTERM sent, grace period running.
    Killing,
    /// Its agent stopped answering; it may still run. Only the master makes this state.
    Unreachable,
    /// Ended; never changes again.
    Terminal(TaskState),
}

/// A transition the task lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal task transition from {} to {}", from.state().as_str_name(), to.as_str_name())]
pub struct IllegalTransition {
    /// The phase the task was in.
    pub from: TaskPhase,
    /// The state that was reported.
    pub to: TaskState,
}

impl IllegalTransition {
    /// True when the report repeats the state the task is already in (a retried update): a
    /// receiver accepts it and changes nothing; the agent never emits one.
    pub fn is_repeat(&self) -> bool {
        self.from.state() == self.to
    }
}

impl TaskPhase {
    /// The phase of a task whose latest state is `state`; `None` for `TASK_UNKNOWN` and
    /// `UNSPECIFIED`, which are answers, not states a task is in.
    pub fn of(state: TaskState) -> Option<TaskPhase> {
        match state {
            TaskState::TaskStaging => Some(TaskPhase::Staging),
            TaskState::TaskStarting => Some(TaskPhase::Starting),
            TaskState::TaskRunning => Some(TaskPhase::Running),
            TaskState::TaskKilling => Some(TaskPhase::Killing),
            TaskState::TaskUnreachable => Some(TaskPhase::Unreachable),
            terminal if is_terminal(terminal) => Some(TaskPhase::Terminal(terminal)),
            _ => None,
        }
    }

    /// The state a task in this phase reports.
    pub fn state(self) -> TaskState {
        match self {
            TaskPhase::Staging => TaskState::TaskStaging,
            TaskPhase::Starting => TaskState::TaskStarting,
            TaskPhase::Running => TaskState::TaskRunning,
            TaskPhase::Killing => TaskState::TaskKilling,
            TaskPhase::Unreachable => TaskState::TaskUnreachable,
            TaskPhase::Terminal(state) => state,
        }
    }

    /// True once the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskPhase::Terminal(_))
    }

    /// The phase after the task reports `to`.
    ///
    /// A task moves forward only: once starting it is never staging again, once running never
    /// starting again, once being killed never running again, and nothing leaves a terminal
    /// phase. STARTING may repeat (pull progress) and RUNNING may repeat (health changes); any
    /// other repeat is refused here and recognised by [`IllegalTransition::is_repeat`]. Any live
    /// phase may turn unreachable, and an unreachable task may come back in any live phase.
    /// Terminal states end the task from anywhere; `TASK_UNKNOWN` and `UNSPECIFIED` are never
    /// states a task moves to.
    pub fn transition(self, to: TaskState) -> Result<TaskPhase, IllegalTransition> {
        let illegal = Err(IllegalTransition { from: self, to });
        if self.is_terminal() {
            return illegal;
        }
        let Some(next) = TaskPhase::of(to) else {
            return illegal;
        };
        let allowed = match (self, next) {
            (_, TaskPhase::Terminal(_)) => true,
            (TaskPhase::Unreachable, TaskPhase::Unreachable) => false,
            (TaskPhase::Unreachable, _) | (_, TaskPhase::Unreachable) => true,
            (TaskPhase::Staging, TaskPhase::Starting | TaskPhase::Running) => true,
            (TaskPhase::Starting, TaskPhase::Starting | TaskPhase::Running) => true,
            (TaskPhase::Running, TaskPhase::Running) => true,
            (TaskPhase::Staging | TaskPhase::Starting | TaskPhase::Running, TaskPhase::Killing) => {
                true
            }
            _ => false,
        };
        if allowed { Ok(next) } else { illegal }
    }

    /// What a receiver (the master, a framework) does with a reported `to`: the phase after
    /// it, a repeat of the current phase accepted unchanged, or the transition refused.
    pub fn receive(self, to: TaskState) -> Result<TaskPhase, IllegalTransition> {
        match self.transition(to) {
            Err(error) if error.is_repeat() => Ok(self),
            other => other,
        }
    }
}

/// Checks a reported state against the state a receiver holds for the task: see
/// [`TaskPhase::receive`]. A task held in `UNSPECIFIED` or `TASK_UNKNOWN` (never stored by a
/// well-behaved component) accepts any real state.
pub fn check_transition(from: TaskState, to: TaskState) -> Result<(), IllegalTransition> {
    match TaskPhase::of(from) {
        Some(phase) => phase.receive(to).map(|_| ()),
        None => TaskPhase::Staging.receive(to).map(|_| ()).or_else(|error| {
            if TaskPhase::of(to).is_some() {
                Ok(())
            } else {
                Err(error)
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [TaskState; 14] = [
        TaskState::Unspecified,
        TaskState::TaskStaging,
        TaskState::TaskStarting,
        TaskState::TaskRunning,
        TaskState::TaskKilling,
        TaskState::TaskFinished,
        TaskState::TaskFailed,
        TaskState::TaskKilled,
        TaskState::TaskError,
        TaskState::TaskLost,
        TaskState::TaskUnreachable,
        TaskState::TaskGone,
        TaskState::TaskDropped,
        TaskState::TaskUnknown,
    ];

    #[test]
    fn unreachable_and_running_are_not_terminal() {
        assert!(!is_terminal(TaskState::TaskRunning));
        assert!(!is_terminal(TaskState::TaskUnreachable));
        assert!(!is_terminal(TaskState::TaskKilling));
        assert!(is_terminal(TaskState::TaskFinished));
        assert!(is_terminal(TaskState::TaskDropped));
    }

    #[test]
    fn normal_life_goes_staging_starting_running_finished() {
        let phase = TaskPhase::Staging
            .transition(TaskState::TaskStarting)
            .and_then(|p| p.transition(TaskState::TaskStarting))
            .and_then(|p| p.transition(TaskState::TaskRunning))
            .and_then(|p| p.transition(TaskState::TaskRunning))
            .and_then(|p| p.transition(TaskState::TaskFinished));
        assert_eq!(phase, Ok(TaskPhase::Terminal(TaskState::TaskFinished)));
    }

    #[test]
    fn terminal_phases_never_change_but_a_repeat_is_received() {
        let failed = TaskPhase::Terminal(TaskState::TaskFailed);
        for to in ALL {
            assert_eq!(
                failed.transition(to),
                Err(IllegalTransition { from: failed, to })
            );
        }
        assert_eq!(failed.receive(TaskState::TaskFailed), Ok(failed));
        assert!(failed.receive(TaskState::TaskKilled).is_err());
        assert!(failed.receive(TaskState::TaskRunning).is_err());
    }

    #[test]
    fn killing_only_ends_or_turns_unreachable() {
        let killing = TaskPhase::Running
            .transition(TaskState::TaskKilling)
            .unwrap_or(TaskPhase::Staging);
        assert_eq!(killing, TaskPhase::Killing);
        assert!(killing.transition(TaskState::TaskRunning).is_err());
        assert!(killing.transition(TaskState::TaskStarting).is_err());
        assert!(killing.transition(TaskState::TaskKilling).is_err());
        assert_eq!(killing.receive(TaskState::TaskKilling), Ok(killing));
        assert_eq!(
            killing.transition(TaskState::TaskKilled),
            Ok(TaskPhase::Terminal(TaskState::TaskKilled))
        );
        assert_eq!(
            killing.transition(TaskState::TaskUnreachable),
            Ok(TaskPhase::Unreachable)
        );
    }

    #[test]
    fn a_task_never_goes_back_and_unknown_is_never_a_state() {
        assert!(TaskPhase::Running.receive(TaskState::TaskStarting).is_err());
        assert!(TaskPhase::Running.receive(TaskState::TaskStaging).is_err());
        assert!(TaskPhase::Starting.receive(TaskState::TaskStaging).is_err());
        for phase in [
            TaskPhase::Staging,
            TaskPhase::Running,
            TaskPhase::Unreachable,
        ] {
            assert!(phase.receive(TaskState::TaskUnknown).is_err());
            assert!(phase.receive(TaskState::Unspecified).is_err());
        }
    }

    #[test]
    fn an_unreachable_task_comes_back_in_any_live_phase() {
        for to in [
            TaskState::TaskStaging,
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskKilling,
            TaskState::TaskLost,
        ] {
            assert_eq!(
                TaskPhase::Unreachable.transition(to).map(TaskPhase::state),
                Ok(to)
            );
        }
        assert_eq!(
            TaskPhase::Unreachable.receive(TaskState::TaskUnreachable),
            Ok(TaskPhase::Unreachable)
        );
    }

    #[test]
    fn phases_round_trip_through_states() {
        for state in ALL {
            if let Some(phase) = TaskPhase::of(state) {
                assert_eq!(phase.state(), state);
            }
        }
        assert_eq!(TaskPhase::of(TaskState::TaskUnknown), None);
    }

    #[test]
    fn check_transition_is_receive_over_states() {
        assert!(check_transition(TaskState::TaskStaging, TaskState::TaskRunning).is_ok());
        assert!(check_transition(TaskState::TaskUnreachable, TaskState::TaskRunning).is_ok());
        assert!(check_transition(TaskState::TaskFinished, TaskState::TaskFinished).is_ok());
        assert!(check_transition(TaskState::TaskFinished, TaskState::TaskRunning).is_err());
        assert!(check_transition(TaskState::TaskRunning, TaskState::Unspecified).is_err());
        assert!(check_transition(TaskState::TaskRunning, TaskState::TaskStarting).is_err());
        assert!(check_transition(TaskState::Unspecified, TaskState::TaskRunning).is_ok());
    }

    /// Whatever the order of reports, a receiver's phase only ever moves forward in the
    /// order staging < starting < running < killing < terminal (unreachable aside), and a
    /// terminal phase is final.
    #[test]
    fn receivers_only_move_forward() {
        fn rank(phase: TaskPhase) -> Option<u8> {
            match phase {
                TaskPhase::Staging => Some(0),
                TaskPhase::Starting => Some(1),
                TaskPhase::Running => Some(2),
                TaskPhase::Killing => Some(3),
                TaskPhase::Terminal(_) => Some(4),
                TaskPhase::Unreachable => None,
            }
        }
        for from in ALL.iter().filter_map(|s| TaskPhase::of(*s)) {
            for to in ALL {
                if let Ok(next) = from.receive(to) {
                    if let (Some(a), Some(b)) = (rank(from), rank(next)) {
                        assert!(a <= b, "{from:?} -> {next:?}");
                    }
                    if from.is_terminal() {
                        assert_eq!(next, from);
                    }
                }
            }
        }
    }
}
