//! The identity of a task on the agent: a task id is unique only within its framework (as in
//! Mesos), so everything the agent keeps per task is keyed by the (framework id, task id) pair.

use std::fmt;

use agora_proto::{FrameworkId, TaskId};

/// A task as the agent knows it: its framework and its id within that framework.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    /// The framework owning the task.
    pub framework_id: FrameworkId,
    /// The task's id, unique within `framework_id` only.
    pub task_id: TaskId,
}

impl TaskKey {
    /// The key of `task_id` in `framework_id`.
    pub fn new(framework_id: FrameworkId, task_id: TaskId) -> Self {
        Self {
            framework_id,
            task_id,
        }
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.framework_id, self.task_id)
    }
}
