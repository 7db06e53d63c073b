use agora_proto::{AgentId, TaskId};

use super::reconcile::ReconcileQueue;

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
