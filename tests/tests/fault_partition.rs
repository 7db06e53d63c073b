//! Fault suite, partitions (issue 12, item 2 and "a partition longer than the timeout with and
//! without a master restart"): node-3 is frozen with SIGSTOP longer than the master's heartbeat
//! timeout (its containers keep running), svcframework replaces its instances, then node-3
//! comes back (SIGCONT), with or without a master restart in between. The old copies must not
//! stay: exactly the wanted task ids at the master, in svcframework and in `docker ps`.
//! Skipped without Docker unless `AGORA_REQUIRE_DOCKER=1`.

use std::time::Duration;

use agora_tests::fault::{FaultCluster, FaultOptions, FaultSuite, fault_docker};
use bollard::Docker;
use tokio::time::Instant;

const INSTANCES: u32 = 6;
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(90);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Freezes node-3 and waits until the master has declared it unreachable and svcframework
/// runs `INSTANCES` instances elsewhere (node-3's are replaced).
async fn partition_node_3_until_replaced(cluster: &mut FaultCluster) -> anyhow::Result<()> {
    let node_3 = cluster
        .agent_id(3)
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("node-3 has no agent id"))?;
    cluster.agent(3)?.sigstop()?;
    cluster.mark_fault();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let tasks = cluster.svc_tasks("/partitioned").await.unwrap_or_default();
        let replaced = tasks
            .iter()
            .filter(|task| task["state"] == "TASK_RUNNING" && task["agentId"] != node_3.as_str())
            .count();
        let state = cluster.state().await?;
        let node_3_active = state.agents.iter().any(|agent| {
            agent.status == "active" && agent.info.as_ref().is_some_and(|info| info.id == node_3)
        });
        if !node_3_active && replaced >= INSTANCES as usize {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node-3's instances not replaced within 45 s of the partition (node-3 active: \
             {node_3_active}, {replaced} running elsewhere); tasks: {tasks:?}\n{}",
            cluster.log_tails(25)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How the partition ends.
#[derive(Debug, Clone, Copy)]
enum Heal {
    /// SIGCONT after `extra` more seconds, no master restart.
    Plain { extra: Duration },
    /// SIGKILL the master, start it again, SIGCONT node-3 `after` its return (item 2).
    AfterMasterRestart { after: Duration },
}

async fn partition_then_heal(docker: &Docker, image: &str, heal: Heal) -> anyhow::Result<Duration> {
    let app = "/partitioned";
    let mut cluster = FaultCluster::start(docker.clone(), image, FaultOptions::default()).await?;
    cluster.svc_create_app(app, INSTANCES).await?;
    cluster
        .assert_exact_svc(app, INSTANCES as usize, 3, DEPLOY_TIMEOUT)
        .await?;
    partition_node_3_until_replaced(&mut cluster).await?;
    match heal {
        Heal::Plain { extra } => {
            tokio::time::sleep(extra).await;
        }
        Heal::AfterMasterRestart { after } => {
            cluster.restart_master(Duration::from_millis(500)).await?;
            tokio::time::sleep(after).await;
        }
    }
    cluster.agent(3)?.sigcont()?;
    cluster
        .assert_exact_svc(app, INSTANCES as usize, 3, CONVERGE_TIMEOUT)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item2_partition_then_master_restart_then_heal_leaves_no_old_copies() -> anyhow::Result<()>
{
    let Some((docker, image)) = fault_docker("fault item 2").await? else {
        return Ok(());
    };
    let mut suite = FaultSuite::new();
    for (run, (moment, after)) in [
        ("heal as soon as the restarted master answers", 0),
        ("heal 3 s after the master restart", 3),
    ]
    .into_iter()
    .enumerate()
    {
        suite
            .run(
                "item2-partition-master-restart-heal",
                run + 1,
                moment,
                partition_then_heal(
                    &docker,
                    &image,
                    Heal::AfterMasterRestart {
                        after: Duration::from_secs(after),
                    },
                ),
            )
            .await;
    }
    suite.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_longer_than_the_timeout_then_heal_kills_the_old_copies() -> anyhow::Result<()> {
    let Some((docker, image)) = fault_docker("fault partition").await? else {
        return Ok(());
    };
    let mut suite = FaultSuite::new();
    for (run, (moment, extra)) in [
        ("heal as soon as the instances are replaced", 0),
        ("heal 5 s after the instances are replaced", 5),
    ]
    .into_iter()
    .enumerate()
    {
        suite
            .run(
                "partition-heal-no-master-restart",
                run + 1,
                moment,
                partition_then_heal(
                    &docker,
                    &image,
                    Heal::Plain {
                        extra: Duration::from_secs(extra),
                    },
                ),
            )
            .await;
    }
    suite.finish()
}
