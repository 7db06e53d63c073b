//! The placement planner: which agent each new instance goes to, and why the rest cannot go.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use agora_proto::{AgentId, CPUS, DISK, MEM, PORTS, RangeSet, Resources};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::constraint::{AgentAttributes, Constraint, Operator};
use super::explain::{Exclusion, PlacementExplanation};
use super::strategy::PlacementStrategy;
use crate::OfferResources;

/// An agent that may take instances: what constraints see of it, what is free, what it has.
#[derive(Debug, Clone, Default)]
pub struct AgentCandidate {
    /// Id, hostname and labels.
    pub attributes: AgentAttributes,
    /// Free resources, including free host ports as the `ports` range.
    pub free: Resources,
    /// The agent's total resources, to compute utilisation.
    pub total: Resources,
}

impl AgentCandidate {
    /// A candidate from what is left of an offer and the agent's total resources.
    pub fn from_offer(offer: &OfferResources, total: Resources) -> Self {
        Self {
            attributes: AgentAttributes {
                agent_id: offer.agent_id().clone(),
                hostname: offer.hostname().to_owned(),
                labels: offer.labels().clone(),
            },
            free: offer.remaining().clone(),
            total,
        }
    }
}

/// What one instance needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceDemand {
    /// Scalars (cpus, mem, disk, gpus, ...); any `ports` ranges here are ignored.
    pub resources: Resources,
    /// How many host ports, chosen by the planner.
    pub ports: usize,
}

/// Everything the planner needs to place `count` instances of one app or job.
#[derive(Debug, Clone, Default)]
pub struct PlacementProblem {
    /// The agents instances may go to.
    pub agents: Vec<AgentCandidate>,
    /// Agents that run instances of this app but are not candidates now (no free offer), so
    /// UNIQUE, MAX_PER, GROUP_BY and CLUSTER can see their attributes.
    pub known_agents: Vec<AgentAttributes>,
    /// The agent of each instance of this app already running (one entry per instance).
    pub running: Vec<AgentId>,
    /// What each new instance needs.
    pub demand: InstanceDemand,
    /// How many new instances to place.
    pub count: usize,
    /// How to rank the agents that fit.
    pub strategy: PlacementStrategy,
    /// Hard constraints refuse agents; soft ones (`~`) only rank them.
    pub constraints: Vec<Constraint>,
}

/// One new instance's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The agent it goes to.
    pub agent_id: AgentId,
    /// Index of that agent in [`PlacementProblem::agents`].
    pub agent_index: usize,
    /// Host ports reserved for it, the lowest free ones of the agent, ascending.
    pub ports: Vec<u64>,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementPlan {
    /// Where each placed instance goes, in placement order.
    pub placements: Vec<Placement>,
    /// How many of the requested instances could not be placed.
    pub unplaced: usize,
    /// Present exactly when `unplaced > 0`.
    pub explanation: Option<PlacementExplanation>,
}

/// Places `problem.count` instances; deterministic for a given `rng_seed`.
///
/// Without GROUP_BY constraints the planner keeps candidates in a max-heap keyed by (soft
/// constraints satisfied, strategy score) with lazy invalidation: only the agent just used
/// changes its score, and UNIQUE, MAX_PER and CLUSTER only ever remove agents, so each
/// placement costs O(log n) amortised and the whole plan O(n·c + (n + k)·log n) for `n`
/// agents, `k` instances and `c` constraints. GROUP_BY can re-admit agents as other values
/// catch up, so with it the planner rescans all agents per placement: O(k·n·c).
pub fn plan(problem: &PlacementProblem, rng_seed: u64) -> PlacementPlan {
    let needs_rescan = problem
        .constraints
        .iter()
        .any(|constraint| matches!(constraint.operator(), Operator::GroupBy(_)));
    let mode = if needs_rescan {
        Mode::Rescan
    } else {
        Mode::Heap
    };
    plan_with_mode(problem, rng_seed, mode)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Heap,
    Rescan,
}

pub(super) fn plan_with_mode(
    problem: &PlacementProblem,
    rng_seed: u64,
    mode: Mode,
) -> PlacementPlan {
    let mut planner = Planner::new(problem, rng_seed);
    let mut placements = Vec::new();
    match mode {
        Mode::Heap => planner.run_heap(&mut placements),
        Mode::Rescan => planner.run_rescan(&mut placements),
    }
    let unplaced = problem.count.saturating_sub(placements.len());
    let explanation = (unplaced > 0).then(|| planner.explain(unplaced));
    tracing::debug!(
        requested = problem.count,
        placed = placements.len(),
        agents = problem.agents.len(),
        strategy = %problem.strategy,
        "placement planned"
    );
    PlacementPlan {
        placements,
        unplaced,
        explanation,
    }
}

/// Ranking of an agent for the next instance; the greatest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Priority {
    soft: u32,
    primary: i64,
    secondary: i64,
    /// Lower agent index wins ties, so plans are deterministic.
    index: Reverse<usize>,
}

/// Book-keeping for a constraint whose verdict depends on where instances run.
#[derive(Debug)]
struct InstanceCounts {
    constraint_index: usize,
    /// Instances (running and placed) per attribute value.
    per_value: HashMap<String, usize>,
    /// CLUSTER without value: the value every instance must share, once known.
    cluster_target: Option<String>,
    /// GROUP_BY: how many distinct values instances should spread over.
    group_size: usize,
    /// GROUP_BY: the fewest instances on any value, or 0 while fewer than `group_size`
    /// values are used.
    group_min: usize,
}

impl InstanceCounts {
    fn count(&self, value: &str) -> usize {
        self.per_value.get(value).copied().unwrap_or(0)
    }

    fn record(&mut self, value: &str) {
        *self.per_value.entry(value.to_owned()).or_insert(0) += 1;
        if self.cluster_target.is_none() {
            self.cluster_target = Some(value.to_owned());
        }
        self.group_min = if self.per_value.len() >= self.group_size {
            self.per_value.values().copied().min().unwrap_or(0)
        } else {
            0
        };
    }
}

struct Planner<'a> {
    problem: &'a PlacementProblem,
    demand: Resources,
    /// (name, thousandths) of the demand's scalars, cpus, mem and disk first.
    demand_scalars: Vec<(String, i64)>,
    free: Vec<Resources>,
    free_ports: Vec<RangeSet>,
    free_port_count: Vec<u64>,
    instances_on: Vec<usize>,
    static_hard_ok: Vec<bool>,
    static_soft: Vec<u32>,
    counts: Vec<InstanceCounts>,
    rng: StdRng,
}

fn ordered_scalars(resources: &Resources) -> Vec<(String, i64)> {
    let mut names: Vec<&str> = resources.scalar_names().collect();
    let rank = |name: &str| match name {
        CPUS => 0,
        MEM => 1,
        DISK => 2,
        _ => 3,
    };
    names.sort_by(|left, right| rank(left).cmp(&rank(right)).then(left.cmp(right)));
    names
        .into_iter()
        .map(|name| (name.to_owned(), resources.scalar_millis(name)))
        .collect()
}

impl<'a> Planner<'a> {
    fn new(problem: &'a PlacementProblem, rng_seed: u64) -> Self {
        let mut demand = problem.demand.resources.clone();
        demand.set_ranges(PORTS, RangeSet::new());
        let demand_scalars = ordered_scalars(&demand);
        let agent_count = problem.agents.len();
        let mut free = Vec::with_capacity(agent_count);
        let mut free_ports = Vec::with_capacity(agent_count);
        let mut free_port_count = Vec::with_capacity(agent_count);
        let mut static_hard_ok = Vec::with_capacity(agent_count);
        let mut static_soft = Vec::with_capacity(agent_count);
        let mut index_by_id: HashMap<&str, usize> = HashMap::with_capacity(agent_count);
        for (index, agent) in problem.agents.iter().enumerate() {
            let ports = agent.free.ports();
            let mut scalars = agent.free.clone();
            scalars.set_ranges(PORTS, RangeSet::new());
            free_port_count.push(ports.count());
            free_ports.push(ports);
            free.push(scalars);
            let mut hard_ok = true;
            let mut soft = 0;
            for constraint in &problem.constraints {
                match constraint.matches_agent(&agent.attributes) {
                    Some(true) if constraint.is_soft() => soft += 1,
                    Some(false) if !constraint.is_soft() => hard_ok = false,
                    _ => {}
                }
            }
            static_hard_ok.push(hard_ok);
            static_soft.push(soft);
            index_by_id
                .entry(agent.attributes.agent_id.as_str())
                .or_insert(index);
        }
        let mut planner = Self {
            problem,
            demand,
            demand_scalars,
            free,
            free_ports,
            free_port_count,
            instances_on: vec![0; agent_count],
            static_hard_ok,
            static_soft,
            counts: Vec::new(),
            rng: StdRng::seed_from_u64(rng_seed),
        };
        planner.init_counts(&index_by_id);
        planner
    }

    fn init_counts(&mut self, index_by_id: &HashMap<&str, usize>) {
        let problem = self.problem;
        let known: HashMap<&str, &AgentAttributes> = problem
            .known_agents
            .iter()
            .map(|attributes| (attributes.agent_id.as_str(), attributes))
            .collect();
        for agent_id in &problem.running {
            if let Some(&index) = index_by_id.get(agent_id.as_str()) {
                self.instances_on[index] += 1;
            }
        }
        for (constraint_index, constraint) in problem.constraints.iter().enumerate() {
            if constraint.is_static() {
                continue;
            }
            let attribute = constraint.attribute();
            let mut counts = InstanceCounts {
                constraint_index,
                per_value: HashMap::new(),
                cluster_target: None,
                group_size: 0,
                group_min: 0,
            };
            for agent_id in &problem.running {
                let value = match index_by_id.get(agent_id.as_str()) {
                    Some(&index) => problem.agents[index].attributes.value(attribute),
                    None => match known.get(agent_id.as_str()) {
                        Some(attributes) => attributes.value(attribute),
                        None if attribute == "agent_id" => Some(agent_id.as_str()),
                        None => None,
                    },
                };
                if let Some(value) = value {
                    *counts.per_value.entry(value.to_owned()).or_insert(0) += 1;
                    if counts.cluster_target.is_none() {
                        counts.cluster_target = Some(value.to_owned());
                    }
                }
            }
            if let Operator::GroupBy(expected) = constraint.operator() {
                counts.group_size = match expected {
                    Some(size) => *size as usize,
                    None => {
                        let mut values: std::collections::HashSet<&str> =
                            counts.per_value.keys().map(String::as_str).collect();
                        for (index, agent) in problem.agents.iter().enumerate() {
                            let usable = self.static_hard_ok[index] && self.fits(index);
                            if let Some(value) =
                                agent.attributes.value(attribute).filter(|_| usable)
                            {
                                values.insert(value);
                            }
                        }
                        values.len()
                    }
                };
                counts.group_min = if counts.per_value.len() >= counts.group_size {
                    counts.per_value.values().copied().min().unwrap_or(0)
                } else {
                    0
                };
            }
            self.counts.push(counts);
        }
    }

    fn fits(&self, index: usize) -> bool {
        self.free[index].contains(&self.demand)
            && self.free_port_count[index] >= self.problem.demand.ports as u64
    }

    fn dynamic_ok(&self, counts: &InstanceCounts, index: usize) -> bool {
        let constraint = &self.problem.constraints[counts.constraint_index];
        let attributes = &self.problem.agents[index].attributes;
        let Some(value) = attributes.value(constraint.attribute()) else {
            return false;
        };
        match constraint.operator() {
            Operator::Unique => counts.count(value) == 0,
            Operator::MaxPer(limit) => counts.count(value) < *limit as usize,
            Operator::Cluster(None) => counts
                .cluster_target
                .as_deref()
                .is_none_or(|target| target == value),
            Operator::GroupBy(_) => counts.count(value) <= counts.group_min,
            _ => true,
        }
    }

    fn dynamic_hard_ok(&self, index: usize) -> bool {
        self.counts.iter().all(|counts| {
            self.problem.constraints[counts.constraint_index].is_soft()
                || self.dynamic_ok(counts, index)
        })
    }

    fn soft_score(&self, index: usize) -> u32 {
        let dynamic = self
            .counts
            .iter()
            .filter(|counts| {
                self.problem.constraints[counts.constraint_index].is_soft()
                    && self.dynamic_ok(counts, index)
            })
            .count() as u32;
        self.static_soft[index] + dynamic
    }

    fn eligible(&self, index: usize) -> bool {
        self.static_hard_ok[index] && self.fits(index) && self.dynamic_hard_ok(index)
    }

    /// Mean over cpus and mem (those the agent has) of used/total once one more instance runs.
    fn utilisation_after(&self, index: usize) -> f64 {
        let total = &self.problem.agents[index].total;
        let mut sum = 0.0;
        let mut dimensions = 0;
        for name in [CPUS, MEM] {
            let total_millis = total.scalar_millis(name);
            if total_millis <= 0 {
                continue;
            }
            let used_after = total_millis - self.free[index].scalar_millis(name)
                + self.demand.scalar_millis(name);
            sum += used_after as f64 / total_millis as f64;
            dimensions += 1;
        }
        if dimensions == 0 {
            0.0
        } else {
            sum / f64::from(dimensions)
        }
    }

    fn priority(&mut self, index: usize) -> Priority {
        let soft = self.soft_score(index);
        let utilisation = (self.utilisation_after(index) * 1e9) as i64;
        let (primary, secondary) = match self.problem.strategy {
            PlacementStrategy::BinPack => (utilisation, 0),
            PlacementStrategy::Spread => (-(self.instances_on[index] as i64), -utilisation),
            PlacementStrategy::Random => (self.rng.random::<i64>(), 0),
        };
        Priority {
            soft,
            primary,
            secondary,
            index: Reverse(index),
        }
    }

    fn place(&mut self, index: usize, placements: &mut Vec<Placement>) {
        let needed_ports = self.problem.demand.ports;
        let ports = self.free_ports[index]
            .first_values(needed_ports)
            .unwrap_or_default();
        debug_assert_eq!(
            ports.len(),
            needed_ports,
            "placed on an agent without ports"
        );
        self.free_ports[index].remove(&RangeSet::from_values(ports.iter().copied()));
        self.free_port_count[index] =
            self.free_port_count[index].saturating_sub(ports.len() as u64);
        self.free[index].subtract_saturating(&self.demand);
        self.instances_on[index] += 1;
        let attributes = &self.problem.agents[index].attributes;
        for counts in &mut self.counts {
            let attribute = self.problem.constraints[counts.constraint_index].attribute();
            if let Some(value) = attributes.value(attribute) {
                counts.record(value);
            }
        }
        placements.push(Placement {
            agent_id: attributes.agent_id.clone(),
            agent_index: index,
            ports,
        });
    }

    fn run_heap(&mut self, placements: &mut Vec<Placement>) {
        let agent_count = self.problem.agents.len();
        let mut versions = vec![0_u64; agent_count];
        let mut entries = Vec::with_capacity(agent_count);
        for index in 0..agent_count {
            if self.eligible(index) {
                entries.push((self.priority(index), 0_u64));
            }
        }
        let mut heap = BinaryHeap::from(entries);
        while placements.len() < self.problem.count {
            let Some((priority, version)) = heap.pop() else {
                break;
            };
            let index = priority.index.0;
            if version != versions[index] {
                continue;
            }
            // UNIQUE, MAX_PER and CLUSTER only ever refuse more agents as instances land, so an
            // agent refused now stays refused: drop it.
            if !self.dynamic_hard_ok(index) {
                continue;
            }
            if self.soft_score(index) < priority.soft {
                let updated = self.priority(index);
                heap.push((updated, version));
                continue;
            }
            self.place(index, placements);
            versions[index] += 1;
            if self.eligible(index) {
                let updated = self.priority(index);
                heap.push((updated, versions[index]));
            }
        }
    }

    fn run_rescan(&mut self, placements: &mut Vec<Placement>) {
        while placements.len() < self.problem.count {
            let mut best: Option<Priority> = None;
            for index in 0..self.problem.agents.len() {
                if !self.eligible(index) {
                    continue;
                }
                let priority = self.priority(index);
                if best.is_none_or(|current| priority > current) {
                    best = Some(priority);
                }
            }
            let Some(best) = best else {
                break;
            };
            self.place(best.index.0, placements);
        }
    }

    fn explain(&self, unplaced: usize) -> PlacementExplanation {
        let agent_count = self.problem.agents.len();
        if agent_count == 0 {
            return PlacementExplanation {
                unplaced,
                exclusions: vec![Exclusion::NoAgents],
            };
        }
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        enum Bucket {
            Constraint { index: usize, lacks: bool },
            Resource { order: usize },
            Ports,
        }
        // Per bucket: agents in it and the most free of the resource it is about.
        let mut buckets: BTreeMap<Bucket, (usize, i64)> = BTreeMap::new();
        for index in 0..agent_count {
            let attributes = &self.problem.agents[index].attributes;
            let refusing = self
                .problem
                .constraints
                .iter()
                .enumerate()
                .filter(|(_, constraint)| !constraint.is_soft())
                .find(|(constraint_index, constraint)| {
                    let passes = match constraint.matches_agent(attributes) {
                        Some(verdict) => verdict,
                        None => self
                            .counts
                            .iter()
                            .find(|counts| counts.constraint_index == *constraint_index)
                            .is_none_or(|counts| self.dynamic_ok(counts, index)),
                    };
                    !passes
                });
            if let Some((constraint_index, constraint)) = refusing {
                let lacks = attributes.value(constraint.attribute()).is_none()
                    && !constraint.operator().accepts_missing_attribute();
                buckets
                    .entry(Bucket::Constraint {
                        index: constraint_index,
                        lacks,
                    })
                    .or_insert((0, 0))
                    .0 += 1;
                continue;
            }
            let short = self
                .demand_scalars
                .iter()
                .enumerate()
                .find(|(_, (name, needed))| self.free[index].scalar_millis(name) < *needed);
            if let Some((order, (name, _))) = short {
                let entry = buckets.entry(Bucket::Resource { order }).or_insert((0, 0));
                entry.0 += 1;
                entry.1 = entry.1.max(self.free[index].scalar_millis(name));
                continue;
            }
            if self.free_port_count[index] < self.problem.demand.ports as u64 {
                let entry = buckets.entry(Bucket::Ports).or_insert((0, 0));
                entry.0 += 1;
                entry.1 = entry.1.max(self.free_port_count[index] as i64);
            }
        }
        let exclusions = buckets
            .into_iter()
            .map(|(bucket, (agents, most_free))| match bucket {
                Bucket::Constraint { index, lacks } => {
                    let constraint = self.problem.constraints[index].to_string();
                    if lacks {
                        Exclusion::LacksAttribute {
                            constraint,
                            agents,
                            of: agent_count,
                        }
                    } else {
                        Exclusion::Constraint {
                            constraint,
                            agents,
                            of: agent_count,
                        }
                    }
                }
                Bucket::Resource { order } => {
                    let (name, needed) = &self.demand_scalars[order];
                    Exclusion::Resource {
                        name: name.clone(),
                        needed: *needed as f64 / 1000.0,
                        largest_free: most_free as f64 / 1000.0,
                        agents,
                        of: agent_count,
                    }
                }
                Bucket::Ports => Exclusion::Ports {
                    needed: self.problem.demand.ports,
                    most_free: most_free.max(0) as u64,
                    agents,
                    of: agent_count,
                },
            })
            .collect();
        PlacementExplanation {
            unplaced,
            exclusions,
        }
    }
}
