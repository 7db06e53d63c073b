//! Explicit reconciliation paced in chunks.

use std::collections::VecDeque;

use agora_proto::{AgentId, TaskId};

/// Tasks waiting to be reconciled, sent a chunk at a time. The master queues an answer for
/// every listed task on the framework's stream at once: 100,000 of them overflowed its
/// buffer, the master dropped the stream, the driver re-subscribed, reconciled everything
/// again and never caught up.
#[derive(Debug)]
pub(crate) struct ReconcileQueue {
    pending: VecDeque<(TaskId, AgentId)>,
    chunk: usize,
}

impl ReconcileQueue {
    pub(crate) fn new(chunk: usize) -> Self {
        ReconcileQueue {
            pending: VecDeque::new(),
            chunk: chunk.max(1),
        }
    }

    /// Queues `tasks`; returns the chunk to send now when nothing was waiting (the rest
    /// follows one chunk per [`ReconcileQueue::next_chunk`]).
    pub(crate) fn push(&mut self, tasks: Vec<(TaskId, AgentId)>) -> Option<Vec<(TaskId, AgentId)>> {
        let was_idle = self.pending.is_empty();
        self.pending.extend(tasks);
        if was_idle { self.next_chunk() } else { None }
    }

    /// The next chunk, if any task waits.
    pub(crate) fn next_chunk(&mut self) -> Option<Vec<(TaskId, AgentId)>> {
        if self.pending.is_empty() {
            return None;
        }
        let count = self.pending.len().min(self.chunk);
        Some(self.pending.drain(..count).collect())
    }

    /// Forgets what waits: the subscription it was for ended.
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}
