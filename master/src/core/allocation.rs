//! One allocation pass: every offerable agent's free resources go, whole, to the eligible
//! framework with the lowest weighted dominant share.

use agora_proto::v1;
use rand::seq::SliceRandom;
use tracing::debug;

use super::agents::Agent;
use super::allocator::{DrfSorter, Quantities};
use super::offers::Offer;
use super::{Master, Now};

impl Master {
    /// The configured weight of `role` (1 when not configured).
    pub(super) fn role_weight(&self, role: &str) -> f64 {
        self.config
            .role_weights
            .get(role)
            .copied()
            .filter(|weight| weight.is_finite() && *weight > 0.0)
            .unwrap_or(1.0)
    }

    /// Builds the DRF order of the frameworks that may receive offers now.
    fn build_sorter(&self) -> DrfSorter {
        let mut sorter = DrfSorter::new(self.cluster_total);
        for framework in self.frameworks.frameworks.values() {
            let role = framework.role();
            let weight = self.role_weight(role);
            sorter.add_role_allocation(role, weight, framework.allocated);
        }
        for framework in self.frameworks.frameworks.values() {
            if framework.conn().is_none() || framework.suppressed {
                continue;
            }
            let role = framework.role();
            sorter.add_candidate(
                role,
                self.role_weight(role),
                framework.id.clone(),
                framework.allocated,
            );
        }
        sorter
    }

    /// Runs one allocation pass. Returns the number of offers made.
    ///
    /// Hot at scale (every agent, every pass): agents are visited in place rather than copied
    /// out, each offer's proto is built straight from the agent, and frameworks' allocations
    /// are charged once per framework at the end of the pass (the sorter tracks the shares
    /// during it).
    pub(super) fn allocate(&mut self, now: Now) -> usize {
        self.allocation_runs_total += 1;
        let mut sorter = self.build_sorter();
        if sorter.candidate_count() == 0 {
            return 0;
        }
        let expires = self
            .config
            .offer_timeout
            .map(|timeout| now.instant + timeout);

        let Master {
            agents,
            filters,
            offers,
            offer_ids,
            rng,
            ..
        } = self;
        let mut candidates: Vec<&mut Agent> = agents
            .agents
            .values_mut()
            .filter(|agent| agent.offerable() && agent.has_offerable_free())
            .collect();
        candidates.shuffle(rng);
        offers.reserve(candidates.len());

        let mut made: Vec<Vec<v1::Offer>> = vec![Vec::new(); sorter.candidate_count()];
        let mut granted: Vec<Quantities> = vec![Quantities::default(); sorter.candidate_count()];
        let mut offers_made = 0;
        for agent in candidates {
            let free = agent.free();
            let Some(index) = sorter.first_matching(|framework_id| {
                !filters.blocks(framework_id, &agent.id, &free, now.instant)
            }) else {
                continue;
            };
            let Some(framework_id) = sorter.framework_id(index).cloned() else {
                continue;
            };
            let (Some(batch), Some(charged)) = (made.get_mut(index), granted.get_mut(index)) else {
                continue;
            };
            let quantities = Quantities::of(&free);
            sorter.allocate(index, &quantities);
            charged.add(&quantities);
            let offer_id = offer_ids.next_id();
            batch.push(v1::Offer {
                id: offer_id.to_string(),
                framework_id: framework_id.to_string(),
                agent_id: agent.id.to_string(),
                hostname: agent.info.hostname.clone(),
                resources: free.to_proto(),
                labels: agent.info.labels.clone(),
            });
            agent.add_offered(&free, &quantities);
            offers.insert(Offer {
                id: offer_id,
                framework_id,
                agent_id: agent.id.clone(),
                resources: free,
                expires,
            });
            offers_made += 1;
        }
        for (index, (offers, charged)) in made.into_iter().zip(granted).enumerate() {
            if offers.is_empty() {
                continue;
            }
            let Some(framework_id) = sorter.framework_id(index).cloned() else {
                continue;
            };
            if let Some(framework) = self.frameworks.frameworks.get_mut(&framework_id) {
                framework.allocated.add(&charged);
            }
            debug!(framework_id = %framework_id, offers = offers.len(), "offers made");
            self.send_to_framework(
                &framework_id,
                v1::event::Event::Offers(v1::Offers { offers }),
            );
        }
        offers_made
    }

    /// The form of an offer sent to frameworks and shown to operators.
    pub(super) fn offer_proto(&self, offer: &Offer) -> v1::Offer {
        let agent_info = self.agents.get(&offer.agent_id).map(|agent| &agent.info);
        v1::Offer {
            id: offer.id.to_string(),
            framework_id: offer.framework_id.to_string(),
            agent_id: offer.agent_id.to_string(),
            hostname: agent_info
                .map(|info| info.hostname.clone())
                .unwrap_or_default(),
            resources: offer.resources.to_proto(),
            labels: agent_info
                .map(|info| info.labels.clone())
                .unwrap_or_default(),
        }
    }
}
