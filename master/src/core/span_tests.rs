//! The master's log lines about a task carry its id (in the `task` span or the event), and
//! those written while handling a framework's call sit in its `framework` span, so that a grep
//! of one task id follows the task through the master's log.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use agora_proto::v1;
use agora_proto::v1::TaskState;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{Layer as _, filter};

use super::test_support::*;

thread_local! {
    /// Where this thread's log lines go while a test captures them.
    static CAPTURE: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// The text captured on one thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn push(&self, bytes: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
    }

    fn lines(&self) -> Vec<String> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Writes into the capture of the thread the line is logged on.
struct ThreadCapture;

impl Write for ThreadCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(captured) = capture.borrow().as_ref() {
                captured.push(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capturing() -> bool {
    CAPTURE.with(|capture| capture.borrow().is_some())
}

/// One process-wide subscriber that writes INFO and above only on threads that capture. A
/// scoped subscriber per test would race with the other tests of the binary over tracing's
/// global callsite cache (a callsite they register first can stay disabled for it); this one's
/// filter is asked at every line, so nothing is cached.
fn install_capturing_subscriber() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let only_capturing_threads = filter::dynamic_filter_fn(|metadata, _| {
            *metadata.level() <= tracing::Level::INFO && capturing()
        });
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| ThreadCapture)
            .with_filter(only_capturing_threads);
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
    });
    // Callsites registered before the subscriber was installed learn that it exists.
    tracing::callsite::rebuild_interest_cache();
}

/// Runs `scenario` on this thread and returns the lines it logged at INFO and above.
fn logged(scenario: impl FnOnce()) -> Vec<String> {
    install_capturing_subscriber();
    let captured = Captured::default();
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(captured.clone()));
    scenario();
    CAPTURE.with(|capture| *capture.borrow_mut() = None);
    captured.lines()
}

/// The one line with `message`; fails listing every line otherwise.
fn line_with<'a>(lines: &'a [String], message: &str) -> &'a str {
    let found: Vec<&String> = lines.iter().filter(|line| line.contains(message)).collect();
    assert_eq!(
        found.len(),
        1,
        "one {message:?} line in:\n{}",
        lines.join("\n")
    );
    found[0]
}

#[test]
fn a_task_walk_through_the_master_is_one_grep_of_its_id() {
    let lines = logged(|| {
        let mut harness = Harness::new();
        let (agent_id, agent_conn) = harness.register_agent("cpus:4;mem:4096");
        let framework = harness.subscribe(framework_info("web-fw", ""));
        let offers = offers_for(&harness.allocate(), framework.conn);
        harness
            .accept(
                &framework,
                &offer_ids(&offers),
                vec![task("walk-1", "cpus:1;mem:64")],
                Some(0.0),
            )
            .expect("accept");
        harness
            .status_update(
                agent_conn,
                &framework.id,
                "walk-1",
                TaskState::TaskRunning,
                "u1",
            )
            .expect("running");
        // The same state again (a health change, a resend) is no news.
        harness
            .status_update(
                agent_conn,
                &framework.id,
                "walk-1",
                TaskState::TaskRunning,
                "u2",
            )
            .expect("running again");
        let now = harness.now();
        harness
            .master
            .kill(
                now,
                v1::KillRequest {
                    header: framework.header(),
                    task_id: "walk-1".to_owned(),
                    agent_id: agent_id.to_string(),
                    grace_period_seconds: None,
                },
            )
            .expect("kill");
        harness
            .status_update(
                agent_conn,
                &framework.id,
                "walk-1",
                TaskState::TaskKilled,
                "u3",
            )
            .expect("killed");
    });

    let launch = line_with(&lines, "launch sent to agent");
    assert!(launch.contains(" INFO "), "{launch}");
    assert!(launch.contains("task_id=walk-1"), "{launch}");
    assert!(launch.contains("agent_id="), "{launch}");
    assert!(
        launch.contains("name=web-fw"),
        "in the framework's span: {launch}"
    );

    let running: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("status update relayed"))
        .collect();
    assert_eq!(
        running.len(),
        2,
        "RUNNING once at INFO (the repeat is not a change), then KILLED:\n{}",
        lines.join("\n")
    );
    assert!(running[0].contains("TASK_RUNNING"), "{}", running[0]);
    assert!(
        running[0].contains("TASK_STAGING"),
        "the state it left: {}",
        running[0]
    );
    assert!(running[1].contains("TASK_KILLED"), "{}", running[1]);

    for message in ["kill asked", "kill sent to agent"] {
        let line = line_with(&lines, message);
        assert!(line.contains("task_id=walk-1"), "{line}");
        assert!(line.contains("name=web-fw"), "{line}");
    }
    for line in lines.iter().filter(|line| line.contains("walk-1")) {
        assert!(
            line.contains("task{"),
            "every line about the task is in its span: {line}"
        );
    }
}

#[test]
fn tasks_the_master_reports_itself_carry_their_ids() {
    let lines = logged(|| {
        let mut harness = Harness::new();
        let (_, agent_conn) = harness.register_agent("cpus:4;mem:4096");
        let framework = harness.subscribe(framework_info("cut-fw", ""));
        let offers = offers_for(&harness.allocate(), framework.conn);
        harness
            .accept(
                &framework,
                &offer_ids(&offers),
                vec![task("cut-1", "cpus:1;mem:64")],
                Some(0.0),
            )
            .expect("accept");
        // An offer that is gone: the task is dropped by the master.
        let refused = harness.accept(
            &framework,
            &offer_ids(&offers),
            vec![task("dropped-1", "cpus:1;mem:64")],
            None,
        );
        assert!(refused.is_err());
        harness.silence(agent_conn);
        harness.run_for(Duration::from_secs(60));
    });

    let cut = line_with(&lines, "task cut off with its unreachable agent");
    assert!(cut.contains("task_id=cut-1"), "{cut}");
    assert!(cut.contains("TASK_LOST"), "{cut}");
    let dropped = line_with(&lines, "launch refused");
    assert!(dropped.contains("task_id=dropped-1"), "{dropped}");
    assert!(dropped.contains("TASK_DROPPED"), "{dropped}");
}
