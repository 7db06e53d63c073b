//! Weighted Dominant Resource Fairness: the order in which frameworks get offers.
//!
//! Two levels, as in Mesos: roles are ordered by their dominant share divided by their
//! weight, and frameworks within a role by their own dominant share. Ties break by name and
//! id so that a pass is deterministic. The sorter is rebuilt at the start of every allocation
//! pass (cheap: one entry per framework) and updated incrementally while the pass hands out
//! offers, so that each pick costs `O(log frameworks)`.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use agora_proto::{CPUS, DISK, FrameworkId, GPUS, MEM, Resources};

/// The scalar quantities DRF compares, in thousandths of a unit (exact, never drifting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Quantities {
    millis: [i64; 4],
}

const DRF_RESOURCES: [&str; 4] = [CPUS, MEM, DISK, GPUS];

impl Quantities {
    /// The DRF-relevant scalars of `resources`.
    pub(crate) fn of(resources: &Resources) -> Self {
        let mut millis = [0; 4];
        for (slot, name) in millis.iter_mut().zip(DRF_RESOURCES) {
            *slot = resources.scalar_millis(name);
        }
        Self { millis }
    }

    /// Adds `other` into `self`.
    pub(crate) fn add(&mut self, other: &Quantities) {
        for (mine, theirs) in self.millis.iter_mut().zip(other.millis) {
            *mine += theirs;
        }
    }

    /// Removes `other` from `self`, clamping at zero.
    pub(crate) fn sub(&mut self, other: &Quantities) {
        for (mine, theirs) in self.millis.iter_mut().zip(other.millis) {
            *mine = (*mine - theirs).max(0);
        }
    }

    /// `self - other`, clamped at zero.
    pub(crate) fn minus(&self, other: &Quantities) -> Quantities {
        let mut difference = *self;
        difference.sub(other);
        difference
    }

    /// Cores, in thousandths.
    pub(crate) fn cpus_millis(&self) -> i64 {
        self.millis[0]
    }

    /// MiB of memory, in thousandths.
    pub(crate) fn mem_millis(&self) -> i64 {
        self.millis[1]
    }

    /// The largest fraction of `total` this allocation holds, over the resources the cluster
    /// has at all (disk and gpus count only when some agent offers them).
    pub(crate) fn dominant_share(&self, total: &Quantities) -> f64 {
        self.millis
            .iter()
            .zip(total.millis)
            .filter(|&(_, total)| total > 0)
            .map(|(&allocated, total)| allocated as f64 / total as f64)
            .fold(0.0, f64::max)
    }
}

/// A share with a total order, so it can key a sorted set.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Share(f64);

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug)]
struct RoleEntry {
    weight: f64,
    allocation: Quantities,
    key: Share,
    /// Candidates of this role by (share, candidate index).
    candidates: BTreeSet<(Share, usize)>,
}

#[derive(Debug)]
struct CandidateEntry {
    framework_id: FrameworkId,
    role: usize,
    allocation: Quantities,
    key: Share,
}

/// Orders the frameworks that may receive offers by weighted dominant share.
///
/// Roles and candidates are numbered in the order they are added, and ties between equal
/// shares break by that number; add them in id order for a deterministic pass.
#[derive(Debug)]
pub(crate) struct DrfSorter {
    total: Quantities,
    /// Roles with at least one candidate, by (weighted share, role index).
    roles: BTreeSet<(Share, usize)>,
    role_entries: Vec<RoleEntry>,
    role_index: HashMap<String, usize>,
    candidates: Vec<CandidateEntry>,
    candidate_index: HashMap<FrameworkId, usize>,
}

fn effective_weight(weight: f64) -> f64 {
    if weight.is_finite() && weight > 0.0 {
        weight
    } else {
        1.0
    }
}

impl DrfSorter {
    /// An empty sorter for a cluster holding `total`.
    pub(crate) fn new(total: Quantities) -> Self {
        Self {
            total,
            roles: BTreeSet::new(),
            role_entries: Vec::new(),
            role_index: HashMap::new(),
            candidates: Vec::new(),
            candidate_index: HashMap::new(),
        }
    }

    fn role_entry(&mut self, role: &str, weight: f64) -> usize {
        if let Some(&index) = self.role_index.get(role) {
            return index;
        }
        let index = self.role_entries.len();
        self.role_entries.push(RoleEntry {
            weight: effective_weight(weight),
            allocation: Quantities::default(),
            key: Share(0.0),
            candidates: BTreeSet::new(),
        });
        self.role_index.insert(role.to_owned(), index);
        index
    }

    /// Counts `allocation` towards `role`'s share (for every framework of the role, eligible
    /// or not). Call before [`DrfSorter::add_candidate`].
    pub(crate) fn add_role_allocation(&mut self, role: &str, weight: f64, allocation: Quantities) {
        let total = self.total;
        let index = self.role_entry(role, weight);
        let entry = &mut self.role_entries[index];
        debug_assert!(
            entry.candidates.is_empty(),
            "role allocations come before candidates"
        );
        entry.allocation.add(&allocation);
        entry.key = Share(entry.allocation.dominant_share(&total) / entry.weight);
    }

    /// Makes `framework_id` (of `role`, holding `allocation`) a candidate for offers.
    /// Returns its candidate number.
    pub(crate) fn add_candidate(
        &mut self,
        role: &str,
        weight: f64,
        framework_id: FrameworkId,
        allocation: Quantities,
    ) -> usize {
        let role_index = self.role_entry(role, weight);
        let index = self.candidates.len();
        let key = Share(allocation.dominant_share(&self.total));
        let role_entry = &mut self.role_entries[role_index];
        if role_entry.candidates.is_empty() {
            self.roles.insert((role_entry.key, role_index));
        }
        role_entry.candidates.insert((key, index));
        self.candidate_index.insert(framework_id.clone(), index);
        self.candidates.push(CandidateEntry {
            framework_id,
            role: role_index,
            allocation,
            key,
        });
        index
    }

    /// The framework of candidate `index`.
    pub(crate) fn framework_id(&self, index: usize) -> Option<&FrameworkId> {
        self.candidates
            .get(index)
            .map(|candidate| &candidate.framework_id)
    }

    /// Number of candidates.
    pub(crate) fn candidate_count(&self) -> usize {
        self.candidates.len()
    }

    /// Records that candidate `index` was just given `extra`, re-ordering it and its role.
    pub(crate) fn allocate(&mut self, index: usize, extra: &Quantities) {
        let total = self.total;
        let Some(candidate) = self.candidates.get_mut(index) else {
            return;
        };
        let role_entry = &mut self.role_entries[candidate.role];
        role_entry.candidates.remove(&(candidate.key, index));
        candidate.allocation.add(extra);
        candidate.key = Share(candidate.allocation.dominant_share(&total));
        role_entry.candidates.insert((candidate.key, index));

        self.roles.remove(&(role_entry.key, candidate.role));
        role_entry.allocation.add(extra);
        role_entry.key = Share(role_entry.allocation.dominant_share(&total) / role_entry.weight);
        self.roles.insert((role_entry.key, candidate.role));
    }

    /// The candidate with the lowest weighted dominant share for which `accepts` holds.
    pub(crate) fn first_matching(
        &self,
        mut accepts: impl FnMut(&FrameworkId) -> bool,
    ) -> Option<usize> {
        for &(_, role_index) in &self.roles {
            for &(_, index) in &self.role_entries[role_index].candidates {
                if accepts(&self.candidates[index].framework_id) {
                    return Some(index);
                }
            }
        }
        None
    }

    /// The weighted share of `role`, for tests and diagnostics.
    #[cfg(test)]
    pub(crate) fn role_share(&self, role: &str) -> Option<f64> {
        let entry = &self.role_entries[*self.role_index.get(role)?];
        Some(entry.allocation.dominant_share(&self.total) / entry.weight)
    }

    /// The candidate number of `framework_id`, for tests.
    #[cfg(test)]
    pub(crate) fn index_of(&self, framework_id: &FrameworkId) -> Option<usize> {
        self.candidate_index.get(framework_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantities(cpus: f64, mem: f64) -> Quantities {
        Quantities::of(&Resources::cpus_mem(cpus, mem))
    }

    #[test]
    fn dominant_share_takes_the_largest_fraction_and_ignores_absent_resources() {
        let total = quantities(10.0, 1000.0);
        assert_eq!(quantities(1.0, 500.0).dominant_share(&total), 0.5);
        assert_eq!(quantities(5.0, 100.0).dominant_share(&total), 0.5);
        let with_disk = Quantities::of(&Resources::cpus_mem(1.0, 1.0).with_scalar(DISK, 10.0));
        assert_eq!(with_disk.dominant_share(&total), 0.1);
    }

    #[test]
    fn quantities_subtract_exactly_and_clamp() {
        let mut held = quantities(0.3, 10.0);
        held.sub(&quantities(0.1, 0.0));
        held.sub(&quantities(0.2, 20.0));
        assert_eq!(held, Quantities::default());
    }

    #[test]
    fn lowest_share_first_and_reordered_after_allocation() {
        let total = quantities(10.0, 1000.0);
        let mut sorter = DrfSorter::new(total);
        let alpha = FrameworkId::new("alpha");
        let beta = FrameworkId::new("beta");
        sorter.add_role_allocation("*", 1.0, quantities(2.0, 0.0));
        sorter.add_candidate("*", 1.0, alpha.clone(), quantities(2.0, 0.0));
        sorter.add_candidate("*", 1.0, beta.clone(), Quantities::default());
        let alpha_index = sorter.index_of(&alpha);
        let beta_index = sorter.index_of(&beta);
        assert_eq!(sorter.first_matching(|_| true), beta_index);
        sorter.allocate(beta_index.unwrap_or_default(), &quantities(3.0, 0.0));
        assert_eq!(sorter.first_matching(|_| true), alpha_index);
        assert_eq!(sorter.first_matching(|id| id != &alpha), beta_index);
        assert_eq!(
            sorter.framework_id(beta_index.unwrap_or_default()),
            Some(&beta)
        );
    }

    #[test]
    fn role_weight_divides_the_role_share() {
        let total = quantities(10.0, 1000.0);
        let mut sorter = DrfSorter::new(total);
        let heavy = FrameworkId::new("heavy");
        let light = FrameworkId::new("light");
        sorter.add_role_allocation("gold", 3.0, quantities(3.0, 0.0));
        sorter.add_candidate("gold", 3.0, heavy.clone(), quantities(3.0, 0.0));
        sorter.add_role_allocation("bronze", 1.0, quantities(2.0, 0.0));
        sorter.add_candidate("bronze", 1.0, light, quantities(2.0, 0.0));
        // gold: 0.3 / 3 = 0.1 < bronze: 0.2 / 1.
        assert_eq!(sorter.first_matching(|_| true), sorter.index_of(&heavy));
        assert!((sorter.role_share("gold").unwrap_or(0.0) - 0.1).abs() < 1e-9);
    }
}
