//! Decline filters: resources a framework refused on an agent, not re-offered to it for a
//! while.

use std::collections::{BTreeMap, HashMap, HashSet};

use agora_proto::{AgentId, FrameworkId, Resources};
use tokio::time::Instant;

/// What one framework refused on one agent, and until when.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RefuseFilter {
    /// The refused resources.
    pub(crate) refused: Resources,
    /// The filter stops applying at this instant.
    pub(crate) expires: Instant,
}

impl RefuseFilter {
    /// True when the agent's `free` resources must not be offered: the filter has not expired
    /// and everything free was refused already (as Mesos: more resources lift the filter).
    pub(crate) fn blocks(&self, free: &Resources, now: Instant) -> bool {
        now < self.expires && self.refused.contains(free)
    }
}

/// All active filters, by framework then agent, with their expiry times.
#[derive(Debug, Default)]
pub(crate) struct FilterBook {
    by_framework: HashMap<FrameworkId, HashMap<AgentId, RefuseFilter>>,
    /// Filters installed together (one decline, one accept) share an expiry: bucket them.
    expiries: BTreeMap<Instant, HashSet<(FrameworkId, AgentId)>>,
}

impl FilterBook {
    /// Installs (or replaces) the filter of `framework_id` for `agent_id`.
    pub(crate) fn install(
        &mut self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        refused: Resources,
        expires: Instant,
    ) {
        let agents = self.by_framework.entry(framework_id.clone()).or_default();
        let filter = RefuseFilter { refused, expires };
        let key = (framework_id.clone(), agent_id.clone());
        if let Some(previous) = agents.insert(agent_id.clone(), filter) {
            Self::unschedule(&mut self.expiries, previous.expires, &key);
        }
        self.expiries.entry(expires).or_default().insert(key);
    }

    fn unschedule(
        expiries: &mut BTreeMap<Instant, HashSet<(FrameworkId, AgentId)>>,
        expires: Instant,
        key: &(FrameworkId, AgentId),
    ) {
        if let Some(bucket) = expiries.get_mut(&expires) {
            bucket.remove(key);
            if bucket.is_empty() {
                expiries.remove(&expires);
            }
        }
    }

    /// True when `framework_id` must not be offered `free` on `agent_id` now.
    pub(crate) fn blocks(
        &self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        free: &Resources,
        now: Instant,
    ) -> bool {
        self.by_framework
            .get(framework_id)
            .and_then(|agents| agents.get(agent_id))
            .is_some_and(|filter| filter.blocks(free, now))
    }

    /// The filter of `framework_id` on `agent_id`, if any.
    #[cfg(test)]
    pub(crate) fn get(
        &self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
    ) -> Option<&RefuseFilter> {
        self.by_framework.get(framework_id)?.get(agent_id)
    }

    /// Drops every filter of `framework_id` (revive, removal). Returns how many there were.
    pub(crate) fn clear_framework(&mut self, framework_id: &FrameworkId) -> usize {
        let Some(agents) = self.by_framework.remove(framework_id) else {
            return 0;
        };
        for (agent_id, filter) in &agents {
            let key = (framework_id.clone(), agent_id.clone());
            Self::unschedule(&mut self.expiries, filter.expires, &key);
        }
        agents.len()
    }

    /// Drops the filters that expired by `now`. Returns true when any did.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let mut expired_any = false;
        while let Some(entry) = self.expiries.first_entry() {
            if *entry.key() > now {
                break;
            }
            for (framework_id, agent_id) in entry.remove() {
                if let Some(agents) = self.by_framework.get_mut(&framework_id) {
                    agents.remove(&agent_id);
                    if agents.is_empty() {
                        self.by_framework.remove(&framework_id);
                    }
                }
                expired_any = true;
            }
        }
        expired_any
    }

    /// When the next filter expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiries.keys().next().copied()
    }

    /// Number of active filters.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_framework.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn filter_blocks_until_expiry_and_only_while_free_is_contained() {
        let start = Instant::now();
        let mut book = FilterBook::default();
        let framework = FrameworkId::new("fw");
        let agent = AgentId::new("agent");
        let refused = Resources::cpus_mem(2.0, 512.0);
        book.install(
            &framework,
            &agent,
            refused.clone(),
            start + Duration::from_secs(5),
        );

        assert!(book.blocks(&framework, &agent, &refused, start));
        assert!(book.blocks(&framework, &agent, &Resources::cpus_mem(1.0, 512.0), start));
        // More than was refused: the framework may want it.
        assert!(!book.blocks(&framework, &agent, &Resources::cpus_mem(3.0, 512.0), start));
        assert!(!book.blocks(&FrameworkId::new("other"), &agent, &refused, start));

        assert!(!book.expire(start + Duration::from_secs(4)));
        assert_eq!(book.next_expiry(), Some(start + Duration::from_secs(5)));
        assert!(book.expire(start + Duration::from_secs(5)));
        assert!(!book.blocks(&framework, &agent, &refused, start));
        assert_eq!(book.len(), 0);
    }

    #[test]
    fn reinstall_replaces_and_clear_drops_everything() {
        let start = Instant::now();
        let mut book = FilterBook::default();
        let framework = FrameworkId::new("fw");
        let agent = AgentId::new("agent");
        book.install(
            &framework,
            &agent,
            Resources::cpus_mem(1.0, 1.0),
            start + Duration::from_secs(5),
        );
        book.install(
            &framework,
            &agent,
            Resources::cpus_mem(1.0, 1.0),
            start + Duration::from_secs(9),
        );
        assert_eq!(book.len(), 1);
        assert_eq!(book.next_expiry(), Some(start + Duration::from_secs(9)));
        assert_eq!(book.clear_framework(&framework), 1);
        assert_eq!(book.len(), 0);
        assert!(book.get(&framework, &agent).is_none());
    }
}
