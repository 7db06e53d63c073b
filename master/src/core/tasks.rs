//! Task tracking: each task's latest status, and a bounded list of completed tasks.

use std::collections::{BTreeMap, VecDeque};

use agora_proto::v1::TaskState;
use agora_proto::{AgentId, FrameworkId, Resources, TaskId, is_terminal, v1};

use super::allocator::Quantities;

/// One task.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    /// Its framework.
    pub(crate) framework_id: FrameworkId,
    /// Its id.
    pub(crate) task_id: TaskId,
    /// Where it runs.
    pub(crate) agent_id: AgentId,
    /// What was launched (agent_id filled in).
    pub(crate) info: v1::TaskInfo,
    /// DRF quantities of its resources.
    pub(crate) quantities: Quantities,
    /// Its latest status.
    pub(crate) status: v1::TaskStatus,
}

impl Task {
    /// The current state.
    pub(crate) fn state(&self) -> TaskState {
        self.status.state()
    }

    /// What it holds while not terminal: the resources of its `info`, checked when it was
    /// launched or reported. Not kept alongside, as it is needed only when the task starts or
    /// stops holding them, and a parsed copy per task is a large share of a task's memory.
    pub(crate) fn resources(&self) -> Resources {
        Resources::from_proto(&self.info.resources).unwrap_or_default()
    }

    /// Whether it reached a final state.
    pub(crate) fn is_terminal(&self) -> bool {
        is_terminal(self.state())
    }

    /// The operator view.
    pub(crate) fn entry(&self) -> v1::TaskEntry {
        v1::TaskEntry {
            framework_id: self.framework_id.to_string(),
            task: Some(self.info.clone()),
            latest_status: Some(self.status.clone()),
        }
    }
}

/// Live tasks (non-terminal, or terminal with the terminal update not yet acknowledged) and
/// completed ones.
#[derive(Debug, Default)]
pub(crate) struct TaskBook {
    /// Boxed: a task is large, and a B-tree's nodes hold room for eleven values however few
    /// they hold (about half when ids arrive in order).
    live: BTreeMap<(FrameworkId, TaskId), Box<Task>>,
    completed: VecDeque<Task>,
    max_completed: usize,
}

impl TaskBook {
    /// An empty book retaining at most `max_completed` completed tasks.
    pub(crate) fn new(max_completed: usize) -> Self {
        Self {
            live: BTreeMap::new(),
            completed: VecDeque::new(),
            max_completed,
        }
    }

    /// A live task.
    pub(crate) fn get(&self, framework_id: &FrameworkId, task_id: &TaskId) -> Option<&Task> {
        self.live
            .get(&(framework_id.clone(), task_id.clone()))
            .map(|task| &**task)
    }

    /// A live task, mutably.
    pub(crate) fn get_mut(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
    ) -> Option<&mut Task> {
        self.live
            .get_mut(&(framework_id.clone(), task_id.clone()))
            .map(|task| &mut **task)
    }

    /// Adds a live task, returning the one it replaces.
    pub(crate) fn insert(&mut self, task: Task) -> Option<Task> {
        self.live
            .insert(
                (task.framework_id.clone(), task.task_id.clone()),
                Box::new(task),
            )
            .map(|task| *task)
    }

    /// Removes a live task.
    pub(crate) fn remove(&mut self, framework_id: &FrameworkId, task_id: &TaskId) -> Option<Task> {
        self.live
            .remove(&(framework_id.clone(), task_id.clone()))
            .map(|task| *task)
    }

    /// Ids of the framework's live tasks.
    pub(crate) fn of_framework(&self, framework_id: &FrameworkId) -> Vec<TaskId> {
        self.live
            .range((framework_id.clone(), TaskId::new(""))..)
            .take_while(|((owner, _), _)| owner == framework_id)
            .map(|((_, task_id), _)| task_id.clone())
            .collect()
    }

    /// Retains a finished task, dropping the oldest beyond the bound.
    pub(crate) fn complete(&mut self, task: Task) {
        if self.max_completed == 0 {
            return;
        }
        while self.completed.len() >= self.max_completed {
            self.completed.pop_front();
        }
        self.completed.push_back(task);
    }

    /// The most recent completed task with this id, if retained.
    pub(crate) fn find_completed(
        &self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
    ) -> Option<&Task> {
        self.completed
            .iter()
            .rev()
            .find(|task| &task.framework_id == framework_id && &task.task_id == task_id)
    }

    /// Forgets a completed task (it came back to life on a re-registered agent).
    pub(crate) fn forget_completed(&mut self, framework_id: &FrameworkId, task_id: &TaskId) {
        self.completed
            .retain(|task| !(&task.framework_id == framework_id && &task.task_id == task_id));
    }

    /// Live tasks in (framework, task) order.
    pub(crate) fn live(&self) -> impl Iterator<Item = &Task> {
        self.live.values().map(|task| &**task)
    }

    /// Retained completed tasks, oldest first.
    pub(crate) fn completed(&self) -> impl Iterator<Item = &Task> {
        self.completed.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(framework: &str, id: &str) -> Task {
        Task {
            framework_id: FrameworkId::new(framework),
            task_id: TaskId::new(id),
            agent_id: AgentId::new("a"),
            info: v1::TaskInfo::default(),
            quantities: Quantities::default(),
            status: v1::TaskStatus::default(),
        }
    }

    #[test]
    fn framework_listing_and_completed_bound() {
        let mut book = TaskBook::new(2);
        book.insert(task("f1", "t1"));
        book.insert(task("f1", "t2"));
        book.insert(task("f2", "t1"));
        assert_eq!(
            book.of_framework(&FrameworkId::new("f1")),
            vec![TaskId::new("t1"), TaskId::new("t2")]
        );
        for id in ["c1", "c2", "c3"] {
            book.complete(task("f1", id));
        }
        assert_eq!(book.completed().count(), 2);
        assert!(
            book.find_completed(&FrameworkId::new("f1"), &TaskId::new("c1"))
                .is_none()
        );
        assert!(
            book.find_completed(&FrameworkId::new("f1"), &TaskId::new("c3"))
                .is_some()
        );
        book.forget_completed(&FrameworkId::new("f1"), &TaskId::new("c3"));
        assert_eq!(book.completed().count(), 1);
    }
}
