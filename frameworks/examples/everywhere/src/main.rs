//! `everywhere`: a tutorial framework on `agora-sdk`.
//!
//! It keeps one copy of a command running on every agent whose labels match (a "daemon set" in
//! Kubernetes words, a "global service" in Swarm's). Read it top to bottom: it shows everything
//! a framework decides — look at offers, launch or decline, follow status updates, reconcile
//! after a reconnect — as a sans-IO core ([`FrameworkCore`]: events in, commands out) that the
//! SDK's [`Runtime`] runs against the master (batching, acknowledgements, launches, retries).
//!
//! ```text
//! everywhere --master http://127.0.0.1:5050 --cmd 'httpd -f -p $PORT0' --ports 1 --label role=web
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use agora_proto::v1::{self, TaskState};
use agora_proto::{AgentId, FrameworkId, OfferId, TaskId, is_terminal};
use agora_sdk::runtime::core_calls;
use agora_sdk::{
    DriverConfig, FrameworkCore, LaunchFailure, NoStore, Runtime, RuntimeConfig, SchedulerDriver,
    TaskBuilder,
};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// What the core asks the runtime to do (it stores nothing and publishes nothing).
type Command = agora_sdk::Command<Infallible, Infallible>;

/// Command-line flags. Like every Agora binary, each flag can also come from an `AGORA_*`
/// environment variable.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Keep one copy of a command running on every matching agent"
)]
struct Flags {
    /// The master's URL.
    #[arg(long, env = "AGORA_MASTER", default_value = "http://127.0.0.1:5050")]
    master: String,
    /// Framework name, shown in the master's /state.
    #[arg(long, env = "AGORA_EVERYWHERE_NAME", default_value = "everywhere")]
    name: String,
    /// Shell command to run (through /bin/sh -c). `$PORT0` is the first host port.
    #[arg(long, env = "AGORA_EVERYWHERE_CMD")]
    cmd: String,
    /// Docker image; empty runs the command as a plain process (process runtime).
    #[arg(long, env = "AGORA_EVERYWHERE_IMAGE", default_value = "")]
    image: String,
    /// Only agents with this label (KEY=VALUE). Repeatable; all must match.
    #[arg(long = "label", env = "AGORA_EVERYWHERE_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Cores per copy.
    #[arg(long, env = "AGORA_EVERYWHERE_CPUS", default_value_t = 0.1)]
    cpus: f64,
    /// Memory per copy, MiB.
    #[arg(long, env = "AGORA_EVERYWHERE_MEM", default_value_t = 32.0)]
    mem: f64,
    /// Host ports per copy, taken from the offer and passed as $PORT0, $PORT1, ...
    #[arg(long, env = "AGORA_EVERYWHERE_PORTS", default_value_t = 0)]
    ports: usize,
    /// On Ctrl-C or SIGTERM, tear the framework down (the master kills its copies) instead of
    /// leaving them running for a restarted framework to fail over to.
    #[arg(long, env = "AGORA_EVERYWHERE_TEARDOWN_ON_EXIT")]
    teardown_on_exit: bool,
}

/// What we know about the copy on one agent.
#[derive(Debug, Clone)]
struct Instance {
    task_id: TaskId,
    state: TaskState,
}

/// The framework's whole state: at most one copy per agent.
struct Everywhere {
    flags: Flags,
    required_labels: Vec<(String, String)>,
    copies: HashMap<AgentId, Instance>,
    subscribed_before: bool,
    outbox: Vec<Command>,
}

impl Everywhere {
    /// An agent is wanted when it has every required label and no live copy yet.
    fn wants(&self, offer: &v1::Offer) -> bool {
        let labels_match = self
            .required_labels
            .iter()
            .all(|(key, value)| offer.labels.get(key) == Some(value));
        let agent_id = AgentId::new(offer.agent_id.clone());
        labels_match && !self.copies.contains_key(&agent_id)
    }

    fn task_for(&self, offer: &v1::Offer) -> Result<v1::TaskInfo, agora_sdk::PlacementError> {
        let mut builder = TaskBuilder::new(format!("{}-{}", self.flags.name, offer.hostname))
            .cpus(self.flags.cpus)
            .mem(self.flags.mem)
            .ports(self.flags.ports)
            .shell(self.flags.cmd.clone());
        if !self.flags.image.is_empty() {
            builder = builder.image(self.flags.image.clone());
        }
        builder.build(offer)
    }
}

fn parse_labels(labels: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    labels
        .iter()
        .map(|label| {
            label
                .split_once('=')
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--label {label:?}: expected KEY=VALUE"))
        })
        .collect()
}

/// The decisions; the runtime carries out the commands in order.
impl FrameworkCore for Everywhere {
    type Write = Infallible;
    type Notice = Infallible;

    fn on_subscribed(&mut self, framework_id: &FrameworkId, _now: SystemTime) {
        tracing::info!(%framework_id, "subscribed");
        // After a reconnect the master may know more than we do: ask for the latest state of
        // all our tasks (implicit reconciliation).
        if self.subscribed_before {
            self.outbox.push(Command::Reconcile(Vec::new()));
        }
        self.subscribed_before = true;
    }

    fn on_disconnected(&mut self) {}

    fn on_offers(&mut self, offers: Vec<v1::Offer>, _now: SystemTime) {
        for offer in offers {
            let offer_id = OfferId::new(offer.id.clone());
            if !self.wants(&offer) {
                // Not interested: decline, and do not offer this agent again for a minute.
                // We revive when a copy ends, which clears the filter.
                self.decline(offer_id);
                continue;
            }
            let task = match self.task_for(&offer) {
                Ok(task) => task,
                Err(error) => {
                    // The offer is too small (or malformed): say why, and move on.
                    tracing::warn!(agent = %offer.hostname, %error, "offer does not fit");
                    self.decline(offer_id);
                    continue;
                }
            };
            let task_id = TaskId::new(task.task_id.clone());
            tracing::info!(%task_id, agent = %offer.hostname, "launching copy");
            let state = TaskState::TaskStaging;
            let agent_id = AgentId::new(offer.agent_id.clone());
            self.copies.insert(agent_id, Instance { task_id, state });
            let tasks = vec![task];
            self.outbox.push(Command::Launch { offer_id, tasks });
        }
    }

    fn on_rescind(&mut self, offer_id: &OfferId, _now: SystemTime) {
        tracing::info!(%offer_id, "offer rescinded");
    }

    fn on_updates(&mut self, statuses: &[v1::TaskStatus], _now: SystemTime) {
        for status in statuses {
            let state = status.state();
            let agent_id = AgentId::new(status.agent_id.clone());
            tracing::info!(task_id = %status.task_id, ?state, status_message = %status.message, "task update");
            let Some(copy) = self.copies.get_mut(&agent_id) else {
                continue;
            };
            if copy.task_id.as_str() != status.task_id {
                continue;
            }
            if is_terminal(state) || state == TaskState::TaskUnreachable {
                // The copy is gone: forget it and ask for offers again so that it is
                // relaunched on that agent (or not, if the agent is gone too).
                self.copies.remove(&agent_id);
                self.outbox.push(Command::Revive);
            } else {
                copy.state = state;
            }
        }
    }

    fn on_agent_failure(&mut self, agent_id: &AgentId, _now: SystemTime) {
        self.copies.remove(agent_id);
    }

    fn on_launch_failed(&mut self, task_ids: &[TaskId], _failure: LaunchFailure, _now: SystemTime) {
        // Try again with the next offer; a copy that did start after all shows up in the
        // next reconciliation and is followed from there.
        self.copies
            .retain(|_, copy| !task_ids.contains(&copy.task_id));
        self.outbox.push(Command::Revive);
    }

    fn tick(&mut self, _now: SystemTime) {}

    fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.outbox)
    }
}

impl Everywhere {
    fn decline(&mut self, offer_id: OfferId) {
        let offer_ids = vec![offer_id];
        let refuse_seconds = 60.0;
        self.outbox.push(Command::Decline {
            offer_ids,
            refuse_seconds,
        });
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let required_labels = parse_labels(&flags.labels)?;
    // Step 1: describe the framework. A failover timeout lets us restart this program without
    // the master killing our copies in between.
    let framework = v1::FrameworkInfo {
        name: flags.name.clone(),
        failover_timeout_seconds: 300.0,
        capabilities: vec![v1::FrameworkCapability::PartitionAware as i32],
        ..Default::default()
    };
    // Step 2: start the driver. It subscribes and re-subscribes when the master goes away;
    // the runtime acknowledges status updates once the core has seen them.
    let mut driver_config = DriverConfig::new(&flags.master, framework);
    driver_config.auto_acknowledge = false;
    let (driver, events) = SchedulerDriver::start(driver_config)?;
    let teardown_on_exit = flags.teardown_on_exit;
    let core = Everywhere {
        flags,
        required_labels,
        copies: HashMap::new(),
        subscribed_before: false,
        outbox: Vec::new(),
    };

    // Step 3: let the runtime feed events to the core and carry out its commands until Ctrl-C
    // or SIGTERM (nothing calls in from outside: the call handle is dropped).
    let (_calls, call_receiver) = core_calls(1);
    let cancel = CancellationToken::new();
    let runtime = Runtime::new(
        core,
        Arc::new(NoStore),
        driver.clone(),
        RuntimeConfig::default(),
    );
    let running = tokio::spawn(runtime.run(events, call_receiver, cancel.clone()));
    tokio::select! {
        result = running => return Ok(result??),
        () = shutdown_signal() => {}
    }
    if teardown_on_exit {
        // Teardown makes the master kill every copy; without it the copies keep running and a
        // restarted framework with the same id takes them over.
        match driver.teardown().await {
            Ok(()) => tracing::info!("framework torn down"),
            Err(error) => tracing::warn!(%error, "teardown failed"),
        }
    }
    cancel.cancel();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Flags::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("everywhere: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framework(arguments: &[&str]) -> Everywhere {
        let flags = Flags::parse_from(["everywhere", "--cmd", "sleep 60"].iter().chain(arguments));
        let required_labels = parse_labels(&flags.labels).expect("valid labels");
        Everywhere {
            flags,
            required_labels,
            copies: HashMap::new(),
            subscribed_before: false,
            outbox: Vec::new(),
        }
    }

    fn offer(agent_id: &str, labels: &[(&str, &str)]) -> v1::Offer {
        let resources = agora_proto::Resources::parse("cpus:2;mem:1024;ports:[31000-31009]")
            .expect("valid resources");
        v1::Offer {
            id: format!("offer-{agent_id}"),
            agent_id: agent_id.to_owned(),
            hostname: "node-1".to_owned(),
            resources: resources.to_proto(),
            labels: labels
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn labels_parse_and_a_malformed_one_is_named() {
        let labels = parse_labels(&["zone=a".to_owned(), "disk=ssd=x".to_owned()]);
        assert_eq!(
            labels.expect("valid"),
            vec![
                ("zone".to_owned(), "a".to_owned()),
                ("disk".to_owned(), "ssd=x".to_owned())
            ]
        );
        let error = parse_labels(&["zone".to_owned()]).expect_err("no '='");
        assert!(error.to_string().contains("--label \"zone\""), "{error}");
    }

    #[test]
    fn wants_agents_with_every_label_and_no_copy_yet() {
        let mut framework = framework(&["--label", "zone=a"]);
        assert!(framework.wants(&offer("agent-1", &[("zone", "a"), ("disk", "ssd")])));
        assert!(!framework.wants(&offer("agent-2", &[("zone", "b")])));
        assert!(!framework.wants(&offer("agent-3", &[])));
        framework.copies.insert(
            AgentId::new("agent-1"),
            Instance {
                task_id: TaskId::new("t"),
                state: TaskState::TaskRunning,
            },
        );
        assert!(!framework.wants(&offer("agent-1", &[("zone", "a")])));
    }

    #[test]
    fn tasks_take_their_ports_and_image_from_the_flags() {
        let framework = framework(&["--ports", "2", "--image", "img:1", "--mem", "64"]);
        let task = framework
            .task_for(&offer("agent-1", &[]))
            .expect("the offer fits");
        assert!(task.task_id.starts_with("everywhere-node-1."), "{task:?}");
        assert_eq!(task.agent_id, "agent-1");
        let resources = agora_proto::Resources::from_proto(&task.resources).expect("valid");
        assert_eq!(resources.ports().values().count(), 2);
        assert_eq!(resources.mem(), 64.0);
        assert_eq!(task.container.map(|c| c.image).as_deref(), Some("img:1"));

        let too_big = framework_with_mem(4096.0).task_for(&offer("agent-1", &[]));
        assert!(too_big.is_err(), "{too_big:?}");
    }

    fn framework_with_mem(mem: f64) -> Everywhere {
        framework(&["--mem", &mem.to_string()])
    }
}
