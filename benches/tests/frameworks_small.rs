//! Small-scale versions of the svcframework and batchframework scale benches, for CI:
//! correctness only, never timing. 50 simulated agents over real gRPC to a real master, with
//! the framework daemon in-process: 10 apps x 100 instances all RUNNING exactly once with no
//! agent over-committed; then a batch job of 2,000 short tasks (two waves of the fleet's
//! 1,000 slots), each completed exactly once. batchframework stores each attempt as its own
//! record and commits a batch of updates at a time, so a run's cost grows linearly with its
//! attempts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agora_benches::daemons::{
    DaemonClient, SvcDeploySpec, batch_job, batch_outcome, post_apps, svc_instances,
};
use agora_benches::probe::{MasterCounts, master_counts};
use agora_benches::sim::{FleetSpec, SimFleet, sim_machine};
use agora_master::{MasterHandle, MasterSettings};

const AGENTS: usize = 50;
/// 2 cpus and 640 MiB per agent hold exactly 20 tasks of 0.1 cpus and 32 MiB.
const PER_AGENT: usize = 20;
const LONG: Duration = Duration::from_secs(240);

async fn wait_for_counts(
    address: SocketAddr,
    what: &str,
    done: impl Fn(&MasterCounts) -> bool,
) -> MasterCounts {
    let deadline = Instant::now() + LONG;
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

async fn start_cluster() -> (tempfile::TempDir, MasterHandle, SimFleet) {
    let work_dir = tempfile::tempdir().expect("temp dir");
    let master = agora_master::spawn(MasterSettings::new(
        "127.0.0.1:0".parse().expect("address"),
        work_dir.path().to_path_buf(),
    ))
    .await
    .expect("master starts");
    let spec = FleetSpec::uniform(AGENTS, sim_machine(2.0, 640.0));
    let fleet = SimFleet::start(&master.url(), &spec)
        .await
        .expect("fleet starts");
    wait_for_counts(master.local_addr(), "agents registered", |counts| {
        counts.active_agents() == AGENTS as u64
    })
    .await;
    (work_dir, master, fleet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svcframework_deploys_every_instance_exactly_once() {
    let (_work_dir, master, fleet) = start_cluster().await;
    let svc_dir = tempfile::tempdir().expect("temp dir");
    let svc = agora_svc::spawn(agora_svc::SvcSettings::new(
        master.url(),
        "127.0.0.1:0".parse().expect("address"),
        svc_dir.path().to_path_buf(),
    ))
    .await
    .expect("svcframework starts");
    let client = DaemonClient::new(svc.url()).expect("client");
    let spec = SvcDeploySpec {
        apps: 10,
        instances_per_app: 100,
        cpus: 0.1,
        mem: 32.0,
    };
    let total = spec.total();
    let posted_at = post_apps(&client, &spec).await.expect("apps posted");
    client
        .wait_metric("agora_svc_instances_running", LONG, |running| {
            running >= total as f64
        })
        .await
        .expect("every instance RUNNING");

    let instances = svc_instances(&client, &spec, posted_at)
        .await
        .expect("instances listed");
    assert_eq!(instances.total, total, "{instances:?}");
    assert_eq!(instances.running, total, "{instances:?}");
    assert_eq!(instances.distinct_ids, total, "{instances:?}");
    assert!(
        instances.per_app.values().all(|&count| count == 100),
        "{:?}",
        instances.per_app
    );
    assert!(
        instances
            .per_agent
            .values()
            .all(|&count| count <= PER_AGENT),
        "over-commit: {:?}",
        instances.per_agent
    );
    // The master and the agents agree: exactly `total` tasks, all RUNNING, none over-committed.
    let counts = wait_for_counts(
        master.local_addr(),
        "tasks RUNNING at the master",
        |counts| counts.running_tasks() == total as u64,
    )
    .await;
    assert_eq!(
        counts.tasks.values().sum::<u64>(),
        total as u64,
        "{counts:?}"
    );
    let states = fleet.task_states().await;
    assert_eq!(states.get("TASK_RUNNING"), Some(&total), "{states:?}");
    assert_eq!(states.values().sum::<usize>(), total, "{states:?}");
    let per_agent = fleet.tasks_per_agent().await;
    assert!(
        per_agent.iter().all(|&count| count <= PER_AGENT),
        "{per_agent:?}"
    );
    let launched = client
        .metric("agora_svc_instances_launched_total")
        .await
        .expect("metrics");
    assert_eq!(launched, total as f64, "no instance was launched twice");

    svc.shutdown().await.expect("svcframework stops");
    fleet.shutdown().await;
    master.shutdown().await.expect("master stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batchframework_completes_every_task_exactly_once() {
    let (_work_dir, master, fleet) = start_cluster().await;
    let batch_dir = tempfile::tempdir().expect("temp dir");
    let batch = agora_batch::spawn(agora_batch::BatchSettings::new(
        master.url(),
        "127.0.0.1:0".parse().expect("address"),
        batch_dir.path().to_path_buf(),
    ))
    .await
    .expect("batchframework starts");
    let client = DaemonClient::new(batch.url()).expect("client");
    client
        .wait_metric("agora_batch_subscribed", LONG, |value| value >= 1.0)
        .await
        .expect("batchframework subscribed");
    let tasks = 2_000;
    let parallelism = AGENTS * PER_AGENT;
    let created = client
        .post(
            "/v1/jobs",
            &batch_job("small", tasks, parallelism, 0.2, 0.1, 32.0),
        )
        .await
        .expect("job submitted");
    let run_id = created["run"].as_u64().expect("a run was created");
    client
        .wait_metric("agora_batch_runs{phase=\"SUCCEEDED\"}", LONG, |value| {
            value >= 1.0
        })
        .await
        .expect("the run succeeded");

    let outcome = batch_outcome(&client, "small", run_id)
        .await
        .expect("run read back");
    assert_eq!(outcome.phase, "SUCCEEDED", "{outcome:?}");
    assert_eq!(outcome.succeeded, tasks as u64, "{outcome:?}");
    assert_eq!(outcome.failures, 0, "{outcome:?}");
    assert_eq!(outcome.attempts, tasks, "each task ran once: {outcome:?}");
    assert_eq!(outcome.attempts_succeeded, tasks, "{outcome:?}");
    assert_eq!(outcome.distinct_tasks, tasks, "{outcome:?}");
    assert!(
        outcome.most_at_once_on_one_agent <= PER_AGENT,
        "over-commit: {outcome:?}"
    );
    // Nothing is left running anywhere.
    let states = fleet.task_states().await;
    assert_eq!(states.get("TASK_RUNNING"), None, "{states:?}");

    batch.shutdown().await.expect("batchframework stops");
    fleet.shutdown().await;
    master.shutdown().await.expect("master stops");
}
