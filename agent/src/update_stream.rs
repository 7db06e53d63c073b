//! Reliable, ordered status updates for one task: a pure queue of unacknowledged updates.
//!
//! The agent appends every update to the task's checkpoint before recording it here, sends
//! the oldest unacknowledged one, and only moves to the next once the master acknowledged it.
//! Replaying the checkpointed records rebuilds the same stream after a restart.

use std::collections::VecDeque;

use agora_proto::is_terminal;
use agora_proto::v1::{TaskState, TaskStatus};

/// One line of a task's update checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateRecord {
    /// A status update was generated.
    Update(TaskStatus),
    /// The master acknowledged the update with this uuid.
    Ack(String),
}

/// Why an update or an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateStreamError {
    /// An update after the terminal one.
    #[error("task {task_id}: update {state:?} after the terminal update")]
    AfterTerminal {
        /// The task.
        task_id: String,
        /// State of the refused update.
        state: TaskState,
    },
    /// An update without the uuid that acknowledgements refer to.
    #[error("task {task_id}: status update has no uuid")]
    MissingUuid {
        /// The task.
        task_id: String,
    },
    /// The update belongs to another task.
    #[error("task {task_id}: update for task {other:?} recorded in the wrong stream")]
    WrongTask {
        /// The stream's task.
        task_id: String,
        /// The update's task.
        other: String,
    },
    /// An acknowledgement for something other than the oldest pending update.
    #[error(
        "task {task_id}: acknowledgement {uuid} does not match the pending update {expected:?}"
    )]
    UnexpectedAck {
        /// The task.
        task_id: String,
        /// The uuid acknowledged.
        uuid: String,
        /// The uuid of the oldest pending update, if any.
        expected: Option<String>,
    },
}

/// The ordered queue of one task's status updates.
#[derive(Debug, Clone)]
pub struct StatusUpdateStream {
    task_id: String,
    pending: VecDeque<TaskStatus>,
    latest: Option<TaskStatus>,
    terminal_recorded: bool,
    terminal_acknowledged: bool,
}

impl StatusUpdateStream {
    /// An empty stream for `task_id`.
    pub fn new(task_id: impl Into<String>) -> Self {
        Self {
            task_id: task_id.into(),
            pending: VecDeque::new(),
            latest: None,
            terminal_recorded: false,
            terminal_acknowledged: false,
        }
    }

    /// Rebuilds a stream from its checkpointed records. Records that the stream refuses
    /// (they cannot come from a healthy agent) are skipped and returned as errors.
    pub fn replay(
        task_id: impl Into<String>,
        records: impl IntoIterator<Item = UpdateRecord>,
    ) -> (Self, Vec<UpdateStreamError>) {
        let mut stream = Self::new(task_id);
        let mut errors = Vec::new();
        for record in records {
            let outcome = match record {
                UpdateRecord::Update(status) => stream.record(status).map(|_| ()),
                UpdateRecord::Ack(uuid) => stream.acknowledge(&uuid).map(|_| ()),
            };
            if let Err(error) = outcome {
                errors.push(error);
            }
        }
        (stream, errors)
    }

    /// Checks that `status` may be recorded, without recording it.
    pub fn check(&self, status: &TaskStatus) -> Result<(), UpdateStreamError> {
        if status.task_id != self.task_id {
            return Err(UpdateStreamError::WrongTask {
                task_id: self.task_id.clone(),
                other: status.task_id.clone(),
            });
        }
        if status.uuid.is_empty() {
            return Err(UpdateStreamError::MissingUuid {
                task_id: self.task_id.clone(),
            });
        }
        if self.terminal_recorded {
            return Err(UpdateStreamError::AfterTerminal {
                task_id: self.task_id.clone(),
                state: status.state(),
            });
        }
        Ok(())
    }

    /// Queues an update. Returns true when it is now the oldest pending one: send it at once.
    pub fn record(&mut self, status: TaskStatus) -> Result<bool, UpdateStreamError> {
        self.check(&status)?;
        if is_terminal(status.state()) {
            self.terminal_recorded = true;
        }
        self.latest = Some(status.clone());
        self.pending.push_back(status);
        Ok(self.pending.len() == 1)
    }

    /// Removes the oldest pending update if `uuid` names it; returns the next one to send.
    pub fn acknowledge(&mut self, uuid: &str) -> Result<Option<&TaskStatus>, UpdateStreamError> {
        match self.pending.front() {
            Some(head) if head.uuid == uuid => {
                if is_terminal(head.state()) {
                    self.terminal_acknowledged = true;
                }
                self.pending.pop_front();
                Ok(self.pending.front())
            }
            other => Err(UpdateStreamError::UnexpectedAck {
                task_id: self.task_id.clone(),
                uuid: uuid.to_owned(),
                expected: other.map(|head| head.uuid.clone()),
            }),
        }
    }

    /// The oldest unacknowledged update: the one to (re)send.
    pub fn head(&self) -> Option<&TaskStatus> {
        self.pending.front()
    }

    /// The newest update recorded, acknowledged or not.
    pub fn latest(&self) -> Option<&TaskStatus> {
        self.latest.as_ref()
    }

    /// How many updates wait for an acknowledgement.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// True once a terminal update was recorded.
    pub fn is_terminated(&self) -> bool {
        self.terminal_recorded
    }

    /// True once the terminal update was acknowledged: the task can be forgotten.
    pub fn is_complete(&self) -> bool {
        self.terminal_acknowledged
    }

    /// The task this stream belongs to.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(task: &str, state: TaskState, uuid: &str) -> TaskStatus {
        TaskStatus {
            task_id: task.to_owned(),
            state: state as i32,
            uuid: uuid.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn updates_are_sent_one_at_a_time_in_order() {
        let mut stream = StatusUpdateStream::new("t");
        assert!(
            stream
                .record(status("t", TaskState::TaskStarting, "u1"))
                .unwrap()
        );
        assert!(
            !stream
                .record(status("t", TaskState::TaskRunning, "u2"))
                .unwrap()
        );
        assert!(
            !stream
                .record(status("t", TaskState::TaskFinished, "u3"))
                .unwrap()
        );
        assert_eq!(stream.head().unwrap().uuid, "u1");
        assert_eq!(stream.latest().unwrap().uuid, "u3");
        assert_eq!(stream.pending_len(), 3);

        // The head is resent until acknowledged: it stays the head.
        assert_eq!(stream.head().unwrap().uuid, "u1");
        assert_eq!(stream.acknowledge("u1").unwrap().unwrap().uuid, "u2");
        assert_eq!(stream.acknowledge("u2").unwrap().unwrap().uuid, "u3");
        assert!(!stream.is_complete());
        assert!(stream.acknowledge("u3").unwrap().is_none());
        assert!(stream.is_complete());
    }

    #[test]
    fn out_of_order_and_duplicate_acks_are_refused_and_change_nothing() {
        let mut stream = StatusUpdateStream::new("t");
        stream
            .record(status("t", TaskState::TaskStarting, "u1"))
            .unwrap();
        stream
            .record(status("t", TaskState::TaskRunning, "u2"))
            .unwrap();
        let error = stream.acknowledge("u2").unwrap_err();
        assert_eq!(
            error,
            UpdateStreamError::UnexpectedAck {
                task_id: "t".into(),
                uuid: "u2".into(),
                expected: Some("u1".into())
            }
        );
        stream.acknowledge("u1").unwrap();
        assert!(stream.acknowledge("u1").is_err());
        assert_eq!(stream.head().unwrap().uuid, "u2");
    }

    #[test]
    fn nothing_after_terminal_and_uuid_required() {
        let mut stream = StatusUpdateStream::new("t");
        assert!(matches!(
            stream.record(status("t", TaskState::TaskRunning, "")),
            Err(UpdateStreamError::MissingUuid { .. })
        ));
        assert!(matches!(
            stream.record(status("other", TaskState::TaskRunning, "x")),
            Err(UpdateStreamError::WrongTask { .. })
        ));
        stream
            .record(status("t", TaskState::TaskFailed, "u1"))
            .unwrap();
        assert!(stream.is_terminated());
        assert!(matches!(
            stream.record(status("t", TaskState::TaskRunning, "u2")),
            Err(UpdateStreamError::AfterTerminal { .. })
        ));
    }

    #[test]
    fn replay_rebuilds_the_pending_queue() {
        let records = vec![
            UpdateRecord::Update(status("t", TaskState::TaskStarting, "u1")),
            UpdateRecord::Ack("u1".into()),
            UpdateRecord::Update(status("t", TaskState::TaskRunning, "u2")),
            UpdateRecord::Update(status("t", TaskState::TaskKilled, "u3")),
            UpdateRecord::Ack("bogus".into()),
        ];
        let (stream, errors) = StatusUpdateStream::replay("t", records);
        assert_eq!(errors.len(), 1);
        assert_eq!(stream.head().unwrap().uuid, "u2");
        assert_eq!(stream.pending_len(), 2);
        assert_eq!(stream.latest().unwrap().state(), TaskState::TaskKilled);
        assert!(stream.is_terminated());
        assert!(!stream.is_complete());
    }
}
