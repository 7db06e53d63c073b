//! Small-scale versions of the end-to-end scale benches, for CI: correctness only, never
//! timing. 200 simulated agents and 2,000 tasks over real gRPC to a real master: every task
//! RUNNING, no agent over-committed, counts exact; then a master restart on the same work dir
//! after which every agent re-registers and every task is reconciled as RUNNING.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agora_benches::packer::{Packer, PackerConfig};
use agora_benches::probe::{MasterCounts, master_counts};
use agora_benches::sim::{FleetSpec, SimFleet, sim_machine};
use agora_master::{MasterHandle, MasterSettings};

const AGENTS: usize = 200;
/// 1 cpu and 320 MiB per agent hold exactly 10 tasks of 0.1 cpus and 32 MiB.
const TASKS_PER_AGENT: usize = 10;
const TASKS: usize = AGENTS * TASKS_PER_AGENT;

async fn start_master(listen: SocketAddr, work_dir: &std::path::Path) -> MasterHandle {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match agora_master::spawn(MasterSettings::new(listen, work_dir.to_path_buf())).await {
            Ok(master) => return master,
            // After a restart the port may take a moment to be free again.
            Err(error) if Instant::now() < deadline => {
                eprintln!("master start: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("master did not start: {error}"),
        }
    }
}

async fn wait_for_counts(
    address: SocketAddr,
    what: &str,
    done: impl Fn(&MasterCounts) -> bool,
) -> MasterCounts {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = MasterCounts::default();
    while Instant::now() < deadline {
        if let Ok(counts) = master_counts(address).await {
            if done(&counts) {
                return counts;
            }
            last = counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not reached; last counts {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_master_failover_at_small_scale() {
    let work_dir = tempfile::tempdir().expect("temp dir");
    let master = start_master("127.0.0.1:0".parse().expect("address"), work_dir.path()).await;
    let address = master.local_addr();
    let url = master.url();

    let spec = FleetSpec::uniform(AGENTS, sim_machine(1.0, 320.0));
    let fleet = SimFleet::start(&url, &spec).await.expect("fleet starts");
    assert_eq!(fleet.len(), AGENTS);
    wait_for_counts(address, "agents registered", |counts| {
        counts.active_agents() == AGENTS as u64
    })
    .await;

    let mut config = PackerConfig::new(url.clone(), TASKS);
    config.timeout = Duration::from_secs(40);
    let mut packer = Packer::start(config).expect("framework starts");
    let report = packer.deploy().await.expect("deploy completes");

    // Every task RUNNING, exactly once, as the framework, the master and the agents see it.
    assert_eq!(report.running, TASKS);
    assert_eq!(report.relaunched, 0, "no task was dropped or failed");
    assert_eq!(report.running_per_agent.values().sum::<usize>(), TASKS);
    let counts = wait_for_counts(address, "tasks RUNNING at the master", |counts| {
        counts.running_tasks() == TASKS as u64
    })
    .await;
    assert_eq!(
        counts.tasks.values().sum::<u64>(),
        TASKS as u64,
        "{counts:?}"
    );
    let agent_states = fleet.task_states().await;
    assert_eq!(
        agent_states.get("TASK_RUNNING"),
        Some(&TASKS),
        "{agent_states:?}"
    );
    assert_eq!(
        agent_states.values().sum::<usize>(),
        TASKS,
        "{agent_states:?}"
    );
    // No over-commit: the agents are exactly full, none holds more than fits.
    let per_agent = fleet.tasks_per_agent().await;
    assert!(
        per_agent.iter().all(|&count| count == TASKS_PER_AGENT),
        "tasks per agent: {per_agent:?}"
    );

    // Master restart on the same work dir and port.
    master.shutdown().await.expect("master stops cleanly");
    let master = start_master(address, work_dir.path()).await;
    let reconciled = packer
        .reconcile_after_failover()
        .await
        .expect("reconciliation completes");
    assert_eq!(reconciled.running, TASKS, "{reconciled:?}");
    assert_eq!(reconciled.other, 0, "{reconciled:?}");
    wait_for_counts(address, "agents back with their tasks", |counts| {
        counts.active_agents() == AGENTS as u64 && counts.running_tasks() == TASKS as u64
    })
    .await;
    let agent_states = fleet.task_states().await;
    assert_eq!(
        agent_states.get("TASK_RUNNING"),
        Some(&TASKS),
        "no task was killed: {agent_states:?}"
    );

    packer.stop();
    fleet.shutdown().await;
    master.shutdown().await.expect("master stops cleanly");
}
