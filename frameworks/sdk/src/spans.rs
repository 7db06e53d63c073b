//! The spans a framework's log lines are written in: `framework{name, framework_id}` around
//! the driver's task and the runtime's loop, `task{task_id}` around each line about one task,
//! so that a grep of a task id follows it through the framework's log as through the master's
//! and the agent's.

use agora_proto::FrameworkId;
use tracing::Span;
use tracing::field::{Empty, display};

/// A `framework` span that learns the framework's id when the master assigns it.
#[derive(Debug, Clone)]
pub(crate) struct FrameworkSpan {
    span: Span,
    framework_id: Option<FrameworkId>,
}

impl FrameworkSpan {
    /// The span of framework `name`, with its id when it already has one (failing over).
    pub(crate) fn new(name: &str, framework_id: Option<FrameworkId>) -> Self {
        let span = tracing::info_span!("framework", name = %name, framework_id = Empty);
        if let Some(framework_id) = &framework_id {
            span.record("framework_id", display(framework_id));
        }
        FrameworkSpan { span, framework_id }
    }

    /// The span itself, to instrument a task with.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The master confirmed (or assigned) the framework's id. Recorded only when it is new:
    /// a text subscriber shows every value a field was given.
    pub(crate) fn subscribed(&mut self, framework_id: &FrameworkId) {
        if self.framework_id.as_ref() == Some(framework_id) {
            return;
        }
        self.span.record("framework_id", display(framework_id));
        self.framework_id = Some(framework_id.clone());
    }
}

/// The span of every line about task `task_id` (inside the framework's span, which names the
/// framework).
pub(crate) fn task_span(task_id: &str) -> Span {
    tracing::info_span!("task", task_id = %task_id)
}
