//! An in-process cluster: a real master on 127.0.0.1 with its own work dir, restartable.

use std::net::SocketAddr;
use std::time::Duration;

use agora_master::core::MasterConfig;
use agora_master::{MasterHandle, MasterSettings};
use agora_proto::v1;
use agora_proto::v1::operator_service_client::OperatorServiceClient;
use anyhow::Context;
use tempfile::TempDir;

use crate::agent::{AgentSpec, TestAgent};
use crate::framework::TestFramework;
use crate::http::{HttpResponse, http_get};

/// How a [`TestCluster`] runs its master.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The master's core settings (the defaults here are short intervals for fast tests).
    pub core: MasterConfig,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            core: fast_master_config(),
        }
    }
}

/// Master settings with intervals short enough for tests that wait on them.
pub fn fast_master_config() -> MasterConfig {
    MasterConfig {
        offer_timeout: None,
        agent_heartbeat_interval: Duration::from_millis(200),
        max_missed_heartbeats: 3,
        framework_heartbeat_interval: Duration::from_millis(500),
        allocation_batch_window: Duration::from_millis(10),
        allocation_interval: Duration::from_millis(100),
        default_refuse: Duration::from_secs(5),
        agent_reregister_timeout: Duration::from_secs(30),
        ..MasterConfig::default()
    }
}

/// A master with its own temporary work dir. Dropping the cluster stops the master.
pub struct TestCluster {
    options: ClusterOptions,
    work_dir: TempDir,
    address: SocketAddr,
    master: Option<MasterHandle>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("address", &self.address)
            .field("work_dir", &self.work_dir.path())
            .finish()
    }
}

impl TestCluster {
    /// Starts a master on an ephemeral port of 127.0.0.1.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<TestCluster> {
        crate::init_tracing();
        let work_dir = tempfile::tempdir().context("creating the master work dir")?;
        let listen: SocketAddr = "127.0.0.1:0".parse()?;
        let master = spawn_master(&options, &work_dir, listen).await?;
        let address = master.local_addr();
        Ok(TestCluster {
            options,
            work_dir,
            address,
            master: Some(master),
        })
    }

    /// Starts a master with [`ClusterOptions::default`].
    pub async fn start_default() -> anyhow::Result<TestCluster> {
        Self::start(ClusterOptions::default()).await
    }

    /// `http://127.0.0.1:PORT`, for gRPC clients and the SDK.
    pub fn master_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The master's socket address (gRPC and HTTP).
    pub fn master_address(&self) -> SocketAddr {
        self.address
    }

    /// The master's work dir.
    pub fn work_dir(&self) -> &std::path::Path {
        self.work_dir.path()
    }

    /// Stops the master (as a crash would, for its peers: their streams end) and starts a new
    /// one on the same work dir and the same port.
    pub async fn restart_master(&mut self) -> anyhow::Result<()> {
        self.stop_master().await?;
        // The port was just released; retry briefly in case the OS has not let go of it yet.
        let mut attempts = 0;
        let master = loop {
            match spawn_master(&self.options, &self.work_dir, self.address).await {
                Ok(master) => break master,
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    tracing::debug!(%error, "master restart: port not free yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error),
            }
        };
        self.master = Some(master);
        Ok(())
    }

    /// Stops the master; [`TestCluster::restart_master`] starts it again.
    pub async fn stop_master(&mut self) -> anyhow::Result<()> {
        if let Some(master) = self.master.take() {
            master
                .shutdown()
                .await
                .context("master stopped with an error")?;
        }
        Ok(())
    }

    /// The cluster state through `OperatorService.GetState`.
    pub async fn state(&self) -> anyhow::Result<v1::ClusterState> {
        let channel = tonic::transport::Endpoint::from_shared(self.master_url())?
            .connect()
            .await
            .context("connecting to the master")?;
        let state = OperatorServiceClient::new(channel)
            .get_state(v1::GetStateRequest {})
            .await
            .context("GetState")?
            .into_inner();
        Ok(state)
    }

    /// `GET path` over HTTP on the master's port.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<HttpResponse> {
        http_get(self.address, path).await
    }

    /// Registers a scripted agent.
    pub async fn add_agent(&self, spec: AgentSpec) -> anyhow::Result<TestAgent> {
        TestAgent::register(&self.master_url(), spec).await
    }

    /// Subscribes a framework through the SDK (auto-acknowledging) and waits for `Subscribed`.
    pub async fn start_framework(
        &self,
        name: &str,
        capabilities: &[v1::FrameworkCapability],
    ) -> anyhow::Result<TestFramework> {
        let config =
            TestFramework::config(&self.master_url(), TestFramework::info(name, capabilities));
        TestFramework::start(config).await
    }
}

async fn spawn_master(
    options: &ClusterOptions,
    work_dir: &TempDir,
    listen: SocketAddr,
) -> anyhow::Result<MasterHandle> {
    let mut settings = MasterSettings::new(listen, work_dir.path().to_path_buf());
    settings.core = options.core.clone();
    agora_master::spawn(settings)
        .await
        .with_context(|| format!("starting a master on {listen}"))
}
