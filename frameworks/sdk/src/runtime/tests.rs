use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use agora_proto::v1::{self, TaskReason, TaskState};
use agora_proto::{AgentId, FrameworkId, TaskId};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{Layer as _, filter};

use super::reconcile::ReconcileQueue;
use super::run::log_update;
use crate::spans::FrameworkSpan;

fn tasks(count: usize) -> Vec<(TaskId, AgentId)> {
    (0..count)
        .map(|index| {
            (
                TaskId::new(format!("task-{index}")),
                AgentId::new("agent-1"),
            )
        })
        .collect()
}

#[test]
fn a_long_reconciliation_goes_out_a_chunk_at_a_time_in_order() {
    let mut queue = ReconcileQueue::new(5_000);
    let first = queue
        .push(tasks(12_001))
        .expect("the first chunk goes out at once");
    assert_eq!(first.len(), 5_000);
    assert_eq!(first[0].0.as_str(), "task-0");
    let second = queue.next_chunk().expect("second chunk");
    assert_eq!(second.len(), 5_000);
    assert_eq!(second[0].0.as_str(), "task-5000");
    let third = queue.next_chunk().expect("third chunk");
    assert_eq!(third.len(), 2_001);
    assert_eq!(queue.next_chunk(), None);
}

#[test]
fn a_list_queued_behind_a_pending_one_waits_for_its_turn() {
    let mut queue = ReconcileQueue::new(10);
    assert_eq!(queue.push(tasks(15)).map(|chunk| chunk.len()), Some(10));
    assert_eq!(queue.push(tasks(3)), None, "sent at the next tick, not now");
    assert_eq!(queue.len(), 8);
    assert_eq!(queue.next_chunk().map(|chunk| chunk.len()), Some(8));
}

#[test]
fn a_short_list_goes_out_whole_and_clear_drops_the_rest() {
    let mut queue = ReconcileQueue::new(10);
    assert_eq!(queue.push(tasks(4)).map(|chunk| chunk.len()), Some(4));
    assert_eq!(queue.next_chunk(), None);
    queue.push(tasks(25));
    queue.clear();
    assert_eq!(queue.next_chunk(), None);
}

thread_local! {
    /// Where this thread's log lines go while a test captures them.
    static CAPTURE: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// Writes into the capture of the thread the line is logged on.
struct ThreadCapture;

impl Write for ThreadCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(captured) = capture.borrow().as_ref() {
                captured
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One process-wide subscriber writing INFO and above only on threads that capture: a scoped
/// subscriber per test races with the binary's other tests over tracing's callsite cache.
fn install_capturing_subscriber() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let only_capturing_threads = filter::dynamic_filter_fn(|metadata, _| {
            *metadata.level() <= tracing::Level::INFO
                && CAPTURE.with(|capture| capture.borrow().is_some())
        });
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| ThreadCapture)
            .with_filter(only_capturing_threads);
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
    });
    tracing::callsite::rebuild_interest_cache();
}

/// The lines `scenario` logs on this thread at INFO and above.
fn logged(scenario: impl FnOnce()) -> Vec<String> {
    install_capturing_subscriber();
    let captured = Arc::new(Mutex::new(Vec::new()));
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(Arc::clone(&captured)));
    scenario();
    CAPTURE.with(|capture| *capture.borrow_mut() = None);
    let bytes = captured
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn status(task_id: &str, state: TaskState, reason: TaskReason) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task_id.to_owned(),
        agent_id: "agent-1".to_owned(),
        state: state as i32,
        reason: reason as i32,
        ..Default::default()
    }
}

#[test]
fn updates_are_logged_in_their_task_span_and_confirmations_stay_quiet() {
    let lines = logged(|| {
        let mut span = FrameworkSpan::new("svc", None);
        // The id is recorded once, however often the framework subscribes again.
        span.subscribed(&FrameworkId::new("fw-1"));
        span.subscribed(&FrameworkId::new("fw-1"));
        span.span().in_scope(|| {
            log_update(&status(
                "running-1",
                TaskState::TaskRunning,
                TaskReason::ReasonUnspecified,
            ));
            log_update(&status(
                "alive-1",
                TaskState::TaskRunning,
                TaskReason::ReasonReconciliation,
            ));
            log_update(&status(
                "gone-1",
                TaskState::TaskLost,
                TaskReason::ReasonReconciliation,
            ));
        });
    });
    assert_eq!(lines.len(), 2, "the confirmation is DEBUG: {lines:#?}");
    for (line, task_id, state) in [
        (&lines[0], "running-1", "TASK_RUNNING"),
        (&lines[1], "gone-1", "TASK_LOST"),
    ] {
        assert!(line.contains(" INFO "), "{line}");
        assert!(
            line.contains(&format!(
                "framework{{name=svc framework_id=fw-1}}:task{{task_id={task_id}}}"
            )),
            "{line}"
        );
        assert!(line.contains("status update received"), "{line}");
        assert!(line.contains(state), "{line}");
        assert!(line.contains("agent_id=agent-1"), "{line}");
    }
}
