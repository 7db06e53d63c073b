//! Helpers over task states shared by every component.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_and_running_are_not_terminal() {
        assert!(!is_terminal(TaskState::TaskRunning));
        assert!(!is_terminal(TaskState::TaskUnreachable));
        assert!(!is_terminal(TaskState::TaskKilling));
        assert!(is_terminal(TaskState::TaskFinished));
        assert!(is_terminal(TaskState::TaskDropped));
    }
}
