//! Offers in, launches and declines out: as many attempts per offer as fit, runs served in
//! creation order, placement by the SDK's shared planner.

use agora_proto::v1;
use agora_proto::{AgentId, OfferId, Resources};
use agora_sdk::scheduling::{
    AgentAttributes, AgentCandidate, InstanceDemand, PlacementProblem, plan,
};
use agora_sdk::{OfferResources, TaskBuilder};
use jiff::Timestamp;

use super::run::{Attempt, Run, RunId, task_id_for};
use super::{BatchCore, Command, StoreOp};

/// One offer while attempts are packed into it.
struct OfferSlot {
    offer: OfferResources,
    total: Resources,
    tasks: Vec<v1::TaskInfo>,
}

impl BatchCore {
    /// New offers: place launchable attempts of active runs, launch them, decline the rest.
    pub fn offers(&mut self, offers: Vec<v1::Offer>, now: Timestamp) {
        self.metrics.offers_received += offers.len() as u64;
        let mut slots = Vec::with_capacity(offers.len());
        let mut unusable = Vec::new();
        for offer in &offers {
            match OfferResources::new(offer) {
                Ok(resources) => slots.push(OfferSlot {
                    total: resources.remaining().clone(),
                    offer: resources,
                    tasks: Vec::new(),
                }),
                Err(error) => {
                    tracing::warn!(%error, "declining a malformed offer");
                    unusable.push(OfferId::new(offer.id.clone()));
                }
            }
        }
        let waiting: Vec<RunId> = self
            .runs
            .values()
            .filter(|run| run.launchable(now) > 0)
            .map(|run| run.id)
            .collect();
        let mut changed_runs = Vec::new();
        for run_id in waiting {
            if slots.is_empty() {
                break;
            }
            let Some(run) = self.runs.get_mut(&run_id) else {
                continue;
            };
            let (launched, note) = place_run(run, &mut slots, now);
            match note {
                Some(note) => {
                    self.placement_notes.insert(run_id, note);
                }
                None => {
                    self.placement_notes.remove(&run_id);
                }
            }
            if launched > 0 {
                self.metrics.tasks_launched += launched as u64;
                changed_runs.push((run_id, launched));
            }
        }
        // Store every launch before sending any: the new attempts are the last of their run.
        for (run_id, launched) in changed_runs {
            if let Some(run) = self.runs.get(&run_id) {
                let first_new = run.attempts.len() - launched;
                for attempt in &run.attempts[first_new..] {
                    self.outbox.push(Command::Persist(vec![StoreOp::PutAttempt(
                        run_id,
                        Box::new(attempt.clone()),
                    )]));
                }
            }
        }
        for slot in slots {
            if slot.tasks.is_empty() {
                unusable.push(slot.offer.offer_id().clone());
            } else {
                self.outbox.push(Command::Launch {
                    offer_id: slot.offer.offer_id().clone(),
                    tasks: slot.tasks,
                });
            }
        }
        if !unusable.is_empty() {
            let still_wanted = self.wants_offers(now);
            self.metrics.offers_declined += unusable.len() as u64;
            self.outbox.push(Command::Decline {
                offer_ids: unusable,
                refuse_seconds: if still_wanted {
                    self.config.busy_refuse_seconds
                } else {
                    self.config.idle_refuse_seconds
                },
            });
        }
        self.update_offer_interest(now);
    }
}

/// Places as many of the run's launchable attempts as the offers hold; returns how many were
/// launched and, when some could not be, the planner's explanation.
fn place_run(run: &mut Run, slots: &mut [OfferSlot], now: Timestamp) -> (usize, Option<String>) {
    let wanted = run.launchable(now);
    let spec = &run.spec;
    let demand = match task_builder(run, 0).scalar_resources() {
        Ok(resources) => resources,
        Err(error) => return (0, Some(format!("cannot build a task: {error}"))),
    };
    let running: Vec<AgentId> = run
        .attempts
        .iter()
        .filter(|attempt| !attempt.state.is_finished())
        .map(|attempt| AgentId::new(attempt.agent_id.clone()))
        .collect();
    let known_agents: Vec<AgentAttributes> = run
        .attempts
        .iter()
        .filter(|attempt| !attempt.state.is_finished())
        .map(|attempt| AgentAttributes {
            agent_id: AgentId::new(attempt.agent_id.clone()),
            hostname: attempt.hostname.clone(),
            ..Default::default()
        })
        .collect();
    let problem = PlacementProblem {
        agents: slots
            .iter()
            .map(|slot| AgentCandidate::from_offer(&slot.offer, slot.total.clone()))
            .collect(),
        known_agents,
        running,
        demand: InstanceDemand {
            resources: demand,
            ports: 0,
        },
        count: wanted,
        constraints: spec.parsed_constraints(),
        ..Default::default()
    };
    let placement_plan = plan(&problem, run.id.0);
    let mut launched = 0;
    for placement in &placement_plan.placements {
        let Some(slot) = slots.get_mut(placement.agent_index) else {
            continue;
        };
        let number = run.attempts.len() as u32;
        let builder = task_builder(run, number);
        match builder.build_in(&mut slot.offer) {
            Ok(task) => {
                run.push_attempt(Attempt::launching(
                    number,
                    task.task_id.clone(),
                    slot.offer.agent_id().as_str().to_owned(),
                    slot.offer.hostname().to_owned(),
                    now,
                ));
                tracing::info!(job_id = %run.job_id, run_id = %run.id, task_id = %task.task_id, agent_id = %slot.offer.agent_id(), host = slot.offer.hostname(), "attempt placed");
                slot.tasks.push(task);
                launched += 1;
            }
            Err(error) => {
                tracing::warn!(%error, job_id = %run.job_id, "planned attempt does not fit its offer");
            }
        }
    }
    let note = placement_plan.explanation.map(|explanation| {
        format!(
            "{} of {wanted} attempts not placed: {explanation}",
            wanted - launched.min(wanted)
        )
    });
    (launched, note)
}

/// The task for attempt `number` of `run`.
fn task_builder(run: &Run, number: u32) -> TaskBuilder {
    let spec = &run.spec;
    let mut builder = TaskBuilder::new(spec.id.as_str())
        .task_id(agora_proto::TaskId::new(task_id_for(
            &spec.id, run.id, number,
        )))
        .cpus(spec.run.cpus)
        .mem(spec.run.mem)
        .disk(spec.run.disk)
        .label("agora.batch.job", spec.id.as_str())
        .label("agora.batch.run", run.id.to_string())
        .env("AGORA_JOB_ID", spec.id.as_str())
        .env("AGORA_RUN_ID", run.id.to_string())
        .env("AGORA_ATTEMPT", number.to_string());
    if let Some(cmd) = &spec.run.cmd {
        builder = builder.shell(cmd.clone());
    }
    if !spec.run.args.is_empty() {
        builder = builder.args(spec.run.args.clone());
    }
    if let Some(image) = &spec.run.image {
        builder = builder.image(image.clone());
    }
    for (name, value) in &spec.run.env {
        builder = builder.env(name.clone(), value.clone());
    }
    for (name, value) in &spec.labels {
        builder = builder.label(name.clone(), value.clone());
    }
    builder
}
