//! Fault suite, crashes: SIGKILL of an agent, the master or svcframework in the middle of a
//! deployment and of a scale-down, a rolling restart with a master SIGKILL in the middle, and
//! containers removed behind the agent's back. Every daemon is a real process, every task a
//! real container; after each fault the task ids at the master, in svcframework's API and in
//! `docker ps` must converge to the same wanted set. Each scenario runs with the fault at two
//! moments. Skipped without Docker unless `AGORA_REQUIRE_DOCKER=1`.

use std::collections::BTreeSet;
use std::time::Duration;

use agora_tests::fault::{FaultCluster, FaultOptions, FaultSuite, fault_docker};
use bollard::Docker;
use tokio::time::Instant;

const INSTANCES: u32 = 6;
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(90);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The daemon that crashes.
#[derive(Debug, Clone, Copy)]
enum Victim {
    /// Agent node-1.
    Agent,
    /// The master.
    Master,
    /// svcframework.
    Svc,
}

/// What is in progress when it crashes.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The first deployment of `INSTANCES` instances.
    Deploy,
    /// A scale-down from `INSTANCES` to 2.
    ScaleDown,
}

/// When in the change the daemon is SIGKILLed.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// As soon as the API accepted the change.
    RightAfterSubmit,
    /// Once half the change is visible in Docker: 3 of 6 containers run (deploy), 2 of the 4
    /// surplus containers are gone (scale-down).
    Halfway,
}

/// SIGKILL `victim` at `moment` of the change (deploy or scale-down), start it
/// again after `downtime`, and wait for exact counts.
async fn crash_mid_change(
    docker: &Docker,
    image: &str,
    victim: Victim,
    phase: Phase,
    moment: Moment,
    downtime: Duration,
) -> anyhow::Result<Duration> {
    let app = "/crash";
    let mut cluster = FaultCluster::start(docker.clone(), image, FaultOptions::default()).await?;
    let wanted = match phase {
        Phase::Deploy => {
            cluster.svc_create_app(app, INSTANCES).await?;
            INSTANCES as usize
        }
        Phase::ScaleDown => {
            cluster.svc_create_app(app, INSTANCES).await?;
            cluster
                .assert_exact_svc(app, INSTANCES as usize, 3, DEPLOY_TIMEOUT)
                .await?;
            cluster.svc_scale(app, 2).await?;
            2
        }
    };
    if let Moment::Halfway = moment {
        let deadline = Instant::now() + DEPLOY_TIMEOUT;
        loop {
            let running = cluster
                .framework_containers(&cluster.svc_name, false)
                .await?
                .len();
            let halfway = match phase {
                Phase::Deploy => running >= INSTANCES as usize / 2,
                Phase::ScaleDown => running <= INSTANCES as usize - 2,
            };
            if halfway {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the change never got halfway ({running} containers run)\n{}",
                cluster.log_tails(25)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let daemon = match victim {
        Victim::Agent => cluster.agent(1)?,
        Victim::Master => &mut cluster.master,
        Victim::Svc => cluster
            .svc
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no svcframework"))?,
    };
    daemon.sigkill()?;
    cluster.mark_fault();
    tokio::time::sleep(downtime).await;
    match victim {
        Victim::Agent => cluster.agent(1)?.start()?,
        Victim::Master => {
            cluster.master.start()?;
            cluster.wait_master_up().await?;
        }
        Victim::Svc => {
            if let Some(svc) = cluster.svc.as_mut() {
                svc.start()?;
            }
        }
    }
    cluster
        .assert_exact_svc(app, wanted, 3, CONVERGE_TIMEOUT)
        .await
}

/// Two runs of one crash scenario: the fault right after the change is submitted and when it
/// is halfway done; the daemon is down 1 s in the first and `long_downtime` in the second.
async fn crash_scenario(
    scenario: &str,
    victim: Victim,
    phase: Phase,
    long_downtime: Duration,
) -> anyhow::Result<()> {
    let Some((docker, image)) = fault_docker(scenario).await? else {
        return Ok(());
    };
    let mut suite = FaultSuite::new();
    let runs = [
        (
            "SIGKILL right after the change was submitted, down 1 s".to_owned(),
            Moment::RightAfterSubmit,
            Duration::from_secs(1),
        ),
        (
            format!(
                "SIGKILL when the change is halfway in docker, down {} s",
                long_downtime.as_secs()
            ),
            Moment::Halfway,
            long_downtime,
        ),
    ];
    for (run, (described, moment, downtime)) in runs.into_iter().enumerate() {
        suite
            .run(
                scenario,
                run + 1,
                &described,
                crash_mid_change(&docker, &image, victim, phase, moment, downtime),
            )
            .await;
    }
    suite.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigkill_mid_deploy() -> anyhow::Result<()> {
    // The long downtime outlasts the heartbeat timeout: node-1's instances are replaced and
    // its old containers come back with the agent.
    crash_scenario(
        "agent-sigkill-mid-deploy",
        Victim::Agent,
        Phase::Deploy,
        Duration::from_secs(5),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigkill_mid_scale_down() -> anyhow::Result<()> {
    crash_scenario(
        "agent-sigkill-mid-scale-down",
        Victim::Agent,
        Phase::ScaleDown,
        Duration::from_secs(5),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_sigkill_mid_deploy() -> anyhow::Result<()> {
    crash_scenario(
        "master-sigkill-mid-deploy",
        Victim::Master,
        Phase::Deploy,
        Duration::from_secs(3),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_sigkill_mid_scale_down() -> anyhow::Result<()> {
    crash_scenario(
        "master-sigkill-mid-scale-down",
        Victim::Master,
        Phase::ScaleDown,
        Duration::from_secs(3),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svcframework_sigkill_mid_deploy() -> anyhow::Result<()> {
    crash_scenario(
        "svc-sigkill-mid-deploy",
        Victim::Svc,
        Phase::Deploy,
        Duration::from_secs(3),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svcframework_sigkill_mid_scale_down() -> anyhow::Result<()> {
    crash_scenario(
        "svc-sigkill-mid-scale-down",
        Victim::Svc,
        Phase::ScaleDown,
        Duration::from_secs(3),
    )
    .await
}

/// Rolling restart (`svcframework restart APP`) with a master SIGKILL in the middle: once
/// `replaced_before_fault` new instances run (0: right after the restart was asked for), the
/// master is SIGKILLed and started again. The restart must complete: `INSTANCES` instances,
/// none of them an instance from before the restart.
async fn rolling_restart_with_master_sigkill(
    docker: &Docker,
    image: &str,
    replaced_before_fault: usize,
) -> anyhow::Result<Duration> {
    let app = "/rolling";
    let mut cluster = FaultCluster::start(docker.clone(), image, FaultOptions::default()).await?;
    cluster.svc_create_app(app, INSTANCES).await?;
    cluster
        .assert_exact_svc(app, INSTANCES as usize, 3, DEPLOY_TIMEOUT)
        .await?;
    let before: BTreeSet<String> = cluster
        .svc_tasks(app)
        .await?
        .iter()
        .filter_map(|task| task["id"].as_str().map(str::to_owned))
        .collect();
    cluster.svc_restart_app(app).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let new_running = cluster
            .svc_tasks(app)
            .await?
            .iter()
            .filter(|task| task["state"] == "TASK_RUNNING")
            .filter_map(|task| task["id"].as_str())
            .filter(|id| !before.contains(*id))
            .count();
        if new_running >= replaced_before_fault {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the rolling restart did not start {replaced_before_fault} new instances in 60 s\n{}",
            cluster.log_tails(25)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.master.sigkill()?;
    cluster.mark_fault();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.master.start()?;
    cluster.wait_master_up().await?;
    let elapsed = cluster
        .assert_exact_svc(app, INSTANCES as usize, 3, CONVERGE_TIMEOUT)
        .await?;
    // Exact, but is the restart done? Every instance must be new.
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let old_left: Vec<String> = cluster
            .svc_tasks(app)
            .await?
            .iter()
            .filter_map(|task| task["id"].as_str())
            .filter(|id| before.contains(*id))
            .map(str::to_owned)
            .collect();
        if old_left.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the rolling restart never completed: instances from before it still run: \
             {old_left:?}; deployments: {:?}\n{}",
            cluster.svc_deployments().await.unwrap_or_default(),
            cluster.log_tails(25)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total = cluster
        .fault_at()
        .map_or(elapsed, |fault| fault.elapsed().max(elapsed));
    cluster
        .assert_exact_svc(app, INSTANCES as usize, 3, CONVERGE_TIMEOUT)
        .await?;
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_with_a_master_sigkill_completes_exactly() -> anyhow::Result<()> {
    let Some((docker, image)) = fault_docker("fault rolling restart").await? else {
        return Ok(());
    };
    let mut suite = FaultSuite::new();
    for (run, (moment, replaced)) in [
        ("master SIGKILL right after the restart was asked for", 0),
        ("master SIGKILL once 2 new instances run", 2),
    ]
    .into_iter()
    .enumerate()
    {
        suite
            .run(
                "rolling-restart-master-sigkill",
                run + 1,
                moment,
                rolling_restart_with_master_sigkill(&docker, &image, replaced),
            )
            .await;
    }
    suite.finish()
}

/// `docker rm -f` of `victims` running containers (on different agents), behind the agents'
/// backs: svcframework must replace them, and the removed task ids must be gone everywhere.
async fn containers_removed_behind_the_agents_back(
    docker: &Docker,
    image: &str,
    victims: usize,
) -> anyhow::Result<Duration> {
    let app = "/removed";
    let mut cluster = FaultCluster::start(docker.clone(), image, FaultOptions::default()).await?;
    cluster.svc_create_app(app, INSTANCES).await?;
    cluster
        .assert_exact_svc(app, INSTANCES as usize, 3, DEPLOY_TIMEOUT)
        .await?;
    let tasks = cluster.svc_tasks(app).await?;
    let mut hosts = BTreeSet::new();
    let mut removed = Vec::new();
    for task in &tasks {
        let (Some(id), Some(host)) = (task["id"].as_str(), task["host"].as_str()) else {
            continue;
        };
        if removed.len() < victims && hosts.insert(host.to_owned()) {
            removed.push(id.to_owned());
        }
    }
    anyhow::ensure!(
        removed.len() == victims,
        "{victims} instances on different agents expected: {tasks:?}"
    );
    cluster.mark_fault();
    for id in &removed {
        cluster.docker_remove_task(id).await?;
    }
    let elapsed = cluster
        .assert_exact_svc(app, INSTANCES as usize, 3, CONVERGE_TIMEOUT)
        .await?;
    let state = cluster.state().await?;
    let still_live: Vec<&String> = removed
        .iter()
        .filter(|id| {
            state.tasks.iter().any(|task| {
                task.task.as_ref().is_some_and(|info| &info.task_id == *id)
                    && !agora_proto::is_terminal(
                        task.latest_status
                            .as_ref()
                            .map_or(agora_proto::v1::TaskState::Unspecified, |status| {
                                status.state()
                            }),
                    )
            })
        })
        .collect();
    anyhow::ensure!(
        still_live.is_empty(),
        "removed containers' tasks still live at the master: {still_live:?}"
    );
    Ok(elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_removed_behind_the_agents_back_are_replaced() -> anyhow::Result<()> {
    let Some((docker, image)) = fault_docker("fault docker rm").await? else {
        return Ok(());
    };
    let mut suite = FaultSuite::new();
    for (run, (moment, victims)) in [
        ("docker rm -f of one container", 1),
        ("docker rm -f of two containers on two agents", 2),
    ]
    .into_iter()
    .enumerate()
    {
        suite
            .run(
                "docker-rm-behind-the-agent",
                run + 1,
                moment,
                containers_removed_behind_the_agents_back(&docker, &image, victims),
            )
            .await;
    }
    suite.finish()
}
