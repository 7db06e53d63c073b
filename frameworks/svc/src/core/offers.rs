//! Turning offers into launches: the shared planner picks agents, the SDK's task builder
//! takes resources and host ports out of each offer.

use std::collections::{BTreeSet, HashMap};

use agora_proto::v1;
use agora_proto::{AgentId, CPUS, DISK, MEM, OfferId, PORTS, Resources, TaskId};
use agora_sdk::scheduling::{
    AgentAttributes, AgentCandidate, Constraint, InstanceDemand, PlacementProblem,
    PlacementStrategy, plan,
};
use agora_sdk::{OfferResources, TaskBuilder};
use serde_json::{Map, json};

use super::model::{AppId, Instance};
use super::{Command, KnownAgent, SvcCore};
use crate::app::{AppDefinition, ConstraintSpec, HealthCheckProtocol, Placement};

/// Parses an app's constraints with the SDK; the error names the index.
pub fn app_constraints(app: &AppDefinition) -> Result<Vec<Constraint>, (usize, String)> {
    app.constraints
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let parsed = match spec {
                ConstraintSpec::Marathon(parts) => Constraint::from_marathon(parts),
                ConstraintSpec::Expression(expression) => Constraint::from_expression(expression),
            };
            parsed.map_err(|error| (index, error.to_string()))
        })
        .collect()
}

/// The scalar resources one instance needs.
pub fn instance_resources(app: &AppDefinition) -> Resources {
    let mut resources = Resources::cpus_mem(app.cpus, app.mem);
    if app.disk > 0.0 {
        resources = resources.with_scalar(DISK, app.disk);
    }
    resources
}

fn strategy(app: &AppDefinition) -> PlacementStrategy {
    match app.placement {
        Placement::Binpack => PlacementStrategy::BinPack,
        Placement::Spread => PlacementStrategy::Spread,
        Placement::Random => PlacementStrategy::Random,
    }
}

impl SvcCore {
    /// New offers: place waiting instances, launch them, decline the rest.
    pub fn on_offers(&mut self, offers: Vec<v1::Offer>, now: f64) {
        self.last_offers_at = Some(now);
        self.counters.offers_received += offers.len() as u64;
        let mut usable: Vec<OfferResources> = Vec::new();
        let mut declined: Vec<OfferId> = Vec::new();
        let mut seen_agents: HashMap<String, usize> = HashMap::new();
        for offer in &offers {
            match OfferResources::new(offer) {
                Ok(resources) if !seen_agents.contains_key(&offer.agent_id) => {
                    seen_agents.insert(offer.agent_id.clone(), usable.len());
                    usable.push(resources);
                }
                Ok(_) => declined.push(OfferId::new(offer.id.clone())),
                Err(error) => {
                    tracing::warn!(offer_id = %offer.id, %error, "unusable offer declined");
                    declined.push(OfferId::new(offer.id.clone()));
                }
            }
        }
        for offer in &usable {
            self.learn_agent(offer);
        }

        // The candidates every app is planned against, kept in step with what is left of
        // each offer as instances go into it.
        let mut candidates: Vec<AgentCandidate> = usable
            .iter()
            .map(|offer| {
                let total = self
                    .agents
                    .get(offer.agent_id().as_str())
                    .map(|known| known.total.clone())
                    .unwrap_or_else(|| offer.remaining().clone());
                AgentCandidate::from_offer(offer, total)
            })
            .collect();
        let mut launches: Vec<Vec<v1::TaskInfo>> = vec![Vec::new(); usable.len()];
        let mut still_waiting = false;
        let mut placed_apps = BTreeSet::new();
        for app_id in self.launch_order(now) {
            let wanted = self.launchable(&app_id, now);
            if wanted == 0 {
                self.wanting.remove(app_id.as_str());
                continue;
            }
            let placed = self.place_app(
                &app_id,
                wanted,
                &mut usable,
                &mut candidates,
                &mut launches,
                now,
            );
            still_waiting |= placed < wanted;
            placed_apps.insert(app_id);
        }

        for (offer, tasks) in usable.iter().zip(launches) {
            if tasks.is_empty() {
                declined.push(offer.offer_id().clone());
            } else {
                self.counters.launched += tasks.len() as u64;
                self.outbox.push(Command::Launch {
                    offer_id: offer.offer_id().clone(),
                    tasks,
                });
            }
        }
        if !declined.is_empty() {
            let refuse_seconds = if still_waiting {
                self.config.waiting_refuse_seconds
            } else {
                self.config.idle_refuse_seconds
            };
            self.outbox.push(Command::Decline {
                offer_ids: declined,
                refuse_seconds,
            });
        }
        // Only the apps planned here changed; time-driven work waits for the next tick.
        self.drive_apps(&placed_apps, now);
        self.update_offer_interest();
    }

    /// An offer was withdrawn; nothing to undo (launches from it were sent already).
    pub fn on_rescind(&mut self, _offer_id: &str) {}

    /// Apps that may launch, oldest waiting first, then by id.
    fn launch_order(&self, now: f64) -> Vec<AppId> {
        let mut order: Vec<(f64, AppId)> = self
            .apps
            .iter()
            .filter(|(_, app)| !app.deleting)
            .map(|(app_id, app)| (app.waiting_since.unwrap_or(now), app_id.clone()))
            .collect();
        order.sort_by(|left, right| left.0.total_cmp(&right.0).then(left.1.cmp(&right.1)));
        order.into_iter().map(|(_, app_id)| app_id).collect()
    }

    fn learn_agent(&mut self, offer: &OfferResources) {
        let agent_id = offer.agent_id().as_str().to_owned();
        // Our instances on the agent, counted per app (they all need the app's resources).
        let mut per_app: HashMap<&str, usize> = HashMap::new();
        for task_id in self.instances.task_ids_on(&agent_id) {
            if let Some(app_id) = self.instances.app_of(task_id) {
                *per_app.entry(app_id).or_insert(0) += 1;
            }
        }
        let mut ours = Resources::new();
        for (app_id, count) in per_app {
            if let Some(app) = self.apps.get(app_id) {
                let one = instance_resources(&app.definition);
                for _ in 0..count {
                    ours.add(&one);
                }
            }
        }
        let mut estimate = Resources::new();
        for name in [CPUS, MEM, DISK] {
            let value = offer.remaining().scalar(name) + ours.scalar(name);
            if value > 0.0 {
                estimate = estimate.with_scalar(name, value);
            }
        }
        let known = self
            .agents
            .entry(AgentId::new(agent_id.clone()))
            .or_insert_with(|| KnownAgent {
                attributes: AgentAttributes::default(),
                total: Resources::new(),
            });
        known.attributes = AgentAttributes {
            agent_id: offer.agent_id().clone(),
            hostname: offer.hostname().to_owned(),
            labels: offer.labels().clone(),
        };
        for name in [CPUS, MEM, DISK] {
            let value = estimate.scalar(name).max(known.total.scalar(name));
            if value > 0.0 {
                known.total = std::mem::take(&mut known.total).with_scalar(name, value);
            }
        }
    }

    /// Places up to `wanted` instances of one app into the offers (`candidates` mirrors
    /// them); returns how many.
    fn place_app(
        &mut self,
        app_id: &str,
        wanted: usize,
        usable: &mut [OfferResources],
        candidates: &mut [AgentCandidate],
        launches: &mut [Vec<v1::TaskInfo>],
        now: f64,
    ) -> usize {
        let Some(app) = self.apps.get(app_id) else {
            return 0;
        };
        let definition = app.definition.clone();
        let config_version = app.config_version.clone();
        let constraints = match app_constraints(&definition) {
            Ok(constraints) => constraints,
            Err((index, reason)) => {
                let message = format!("constraints[{index}] is invalid: {reason}");
                self.set_waiting_reason(app_id, Some(message));
                return 0;
            }
        };
        // Constraints see the instances of the version being placed: during an upgrade the
        // old ones are on their way out, and counting them would deadlock e.g. a UNIQUE app
        // that already covers every agent (a classic stuck Marathon deployment).
        let instances = self.instances.of_app(app_id);
        let running: Vec<_> = instances
            .iter()
            .filter(|instance| instance.is_live() && instance.config_version == config_version)
            .map(|instance| instance.agent_id.clone())
            .collect();
        let known_agents: Vec<AgentAttributes> = running
            .iter()
            .filter_map(|agent_id| self.agents.get(agent_id.as_str()))
            .map(|known| known.attributes.clone())
            .collect();
        let demand = InstanceDemand {
            resources: instance_resources(&definition),
            ports: definition.port_count(),
        };
        // Offers that cannot hold one instance are never chosen (the planner only places on
        // agents the demand fits), so the plan over the others is the same plan, at a fraction
        // of the cost once most offers are used up.
        let fitting: Vec<usize> = candidates
            .iter()
            .enumerate()
            .filter(|(_, candidate)| can_hold(&candidate.free, &demand))
            .map(|(index, _)| index)
            .collect();
        let mut problem = PlacementProblem {
            agents: fitting
                .iter()
                .map(|&index| candidates[index].clone())
                .collect(),
            known_agents,
            running,
            demand,
            count: wanted,
            strategy: strategy(&definition),
            constraints,
        };
        let seed = self.rng_seed();
        let mut placement_plan = plan(&problem, seed);
        let mut offer_index = fitting;
        if placement_plan.unplaced > 0 && offer_index.len() < candidates.len() {
            // The explanation counts every offer: plan over all of them.
            problem.agents = candidates.to_vec();
            placement_plan = plan(&problem, seed);
            offer_index = (0..candidates.len()).collect();
        }
        let mut placed = 0;
        for placement in &placement_plan.placements {
            let Some(&index) = offer_index.get(placement.agent_index) else {
                continue;
            };
            let task_id = self.new_task_id(app_id);
            let builder = task_builder(&definition, &task_id, &config_version);
            let Some(offer) = usable.get_mut(index) else {
                continue;
            };
            match builder.build_in(offer) {
                Ok(task) => {
                    let ports = host_ports(&task);
                    let instance = Instance::staging(
                        TaskId::new(task_id.clone()),
                        AppId::new(app_id),
                        config_version.clone(),
                        offer.agent_id().clone(),
                        offer.hostname().to_owned(),
                        ports,
                        now,
                    );
                    if let Some(candidate) = candidates.get_mut(index) {
                        candidate.free = offer.remaining().clone();
                    }
                    self.instances.insert(instance);
                    self.persist_instance(&task_id);
                    tracing::info!(
                        app_id = %app_id,
                        task_id = %task_id,
                        agent_id = %offer.agent_id(),
                        host = offer.hostname(),
                        "instance placed"
                    );
                    if let Some(tasks) = launches.get_mut(index) {
                        tasks.push(task);
                    }
                    placed += 1;
                    let mut payload = Map::new();
                    payload.insert("appId".into(), json!(app_id));
                    payload.insert("taskId".into(), json!(task_id));
                    payload.insert("agentId".into(), json!(offer.agent_id().as_str()));
                    payload.insert("host".into(), json!(offer.hostname()));
                    payload.insert("taskStatus".into(), json!("TASK_STAGING"));
                    self.emit("status_update_event", now, payload);
                }
                Err(error) => {
                    tracing::warn!(app_id, %error, "planned placement did not fit its offer");
                }
            }
        }
        let reason = placement_plan
            .explanation
            .map(|explanation| explanation.to_string());
        if placed < wanted {
            self.set_waiting_reason(
                app_id,
                Some(reason.unwrap_or_else(|| "offers did not fit".to_owned())),
            );
        } else {
            self.set_waiting_reason(app_id, None);
        }
        placed
    }

    fn set_waiting_reason(&mut self, app_id: &str, reason: Option<String>) {
        if let Some(app) = self.apps.get_mut(app_id) {
            app.waiting_reason = reason;
        }
    }
}

/// True when `free` has room for one instance of `demand` (the planner's own test).
fn can_hold(free: &Resources, demand: &InstanceDemand) -> bool {
    let ports = free.ranges_ref(PORTS).map_or(0, |ports| ports.count());
    ports >= demand.ports as u64 && free.contains(&demand.resources)
}

fn host_ports(task: &v1::TaskInfo) -> Vec<u64> {
    let Ok(resources) = Resources::from_proto(&task.resources) else {
        return Vec::new();
    };
    let from_mappings: Vec<u64> = task
        .container
        .iter()
        .flat_map(|container| container.port_mappings.iter())
        .map(|mapping| u64::from(mapping.host_port))
        .collect();
    if !from_mappings.is_empty() {
        return from_mappings;
    }
    resources.ports().values().collect()
}

/// The task for one instance of `app`.
pub fn task_builder(app: &AppDefinition, task_id: &str, config_version: &str) -> TaskBuilder {
    let mut builder = TaskBuilder::new(super::task_name(app.id.as_str()))
        .task_id(TaskId::new(task_id.to_owned()))
        .cpus(app.cpus)
        .mem(app.mem)
        .disk(app.disk)
        .label("svcframework.app-id", app.id.as_str())
        .label("svcframework.version", config_version);
    if let Some(command) = &app.cmd {
        builder = builder.shell(command.clone());
    }
    if let Some(arguments) = &app.args {
        builder = builder.args(arguments.clone());
    }
    if let Some(user) = &app.user {
        builder = builder.user(user.clone());
    }
    if let Some(image) = app.docker_image() {
        builder = builder.image(image);
    }
    // Passed through, never dropped: the agent's policy (--allow-privileged, its host-path
    // policy) decides whether the container may have them, and fails the task if not.
    if let Some(container) = &app.container {
        if container
            .docker
            .as_ref()
            .is_some_and(|docker| docker.privileged)
        {
            builder = builder.privileged(true);
        }
        for volume in &container.volumes {
            if let Some(host_path) = &volume.host_path {
                let read_only = match volume.mode {
                    crate::app::VolumeMode::ReadOnly => ":ro",
                    crate::app::VolumeMode::ReadWrite => "",
                };
                builder =
                    builder.volume(format!("{host_path}:{}{read_only}", volume.container_path));
            }
        }
    }
    if app.uses_container_networking() {
        builder = builder.network(v1::NetworkMode::Bridge);
        for mapping in app.port_mappings() {
            builder = builder.container_port(u32::from(mapping.container_port));
        }
    } else {
        if app.docker_image().is_some() {
            builder = builder.network(v1::NetworkMode::Host);
        }
        builder = builder.ports(app.port_count());
    }
    for (name, value) in &app.env {
        builder = builder.env(name.clone(), value.clone());
    }
    for (name, value) in &app.labels {
        builder = builder.label(name.clone(), value.clone());
    }
    if let Some(check) = app.health_checks.first() {
        let protocol = match check.protocol {
            HealthCheckProtocol::Http
            | HealthCheckProtocol::Https
            | HealthCheckProtocol::MesosHttp => v1::HealthCheckProtocol::Http,
            HealthCheckProtocol::Tcp | HealthCheckProtocol::MesosTcp => {
                v1::HealthCheckProtocol::Tcp
            }
            HealthCheckProtocol::Command => v1::HealthCheckProtocol::Command,
        };
        builder = builder.health_check(v1::HealthCheck {
            protocol: protocol as i32,
            path: check.path.clone().unwrap_or_default(),
            port_index: check.port_index.unwrap_or(0),
            port: check.port.map(u32::from).unwrap_or(0),
            command: check.command.clone().unwrap_or_default(),
            grace_period_seconds: f64::from(check.grace_period_seconds),
            interval_seconds: f64::from(check.interval_seconds),
            timeout_seconds: f64::from(check.timeout_seconds),
            max_consecutive_failures: check.max_consecutive_failures,
            delay_seconds: f64::from(check.delay_seconds),
        });
    }
    if let Some(grace) = app.task_kill_grace_period_seconds {
        builder = builder.kill_grace(std::time::Duration::from_secs(grace));
    }
    builder
}

/// Offer interest: revive while an app can launch, suppress once none can.
impl SvcCore {
    /// Records whether an app can launch now, for [`SvcCore::update_offer_interest`].
    pub(super) fn note_wanting(&mut self, app_id: &str, now: f64) {
        if self.launchable(app_id, now) > 0 {
            self.wanting.insert(AppId::new(app_id));
        } else {
            self.wanting.remove(app_id);
        }
    }

    /// Revives when an app can launch and offers are suppressed; suppresses when nothing can
    /// (per the apps' launchability as last driven).
    pub(super) fn update_offer_interest(&mut self) {
        if !self.subscribed {
            return;
        }
        let wants = !self.wanting.is_empty();
        if wants && self.suppressed {
            self.suppressed = false;
            self.outbox.push(Command::Revive);
        } else if !wants && !self.suppressed {
            self.suppressed = true;
            self.outbox.push(Command::Suppress);
        }
    }
}
