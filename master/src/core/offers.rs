//! The offer book: every outstanding offer, indexed by agent, framework and expiry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use agora_proto::{AgentId, FrameworkId, OfferId, Resources};
use tokio::time::Instant;

/// A fast hash for offer ids. Offer ids are made by the master (never chosen by a client), so
/// the flooding resistance of SipHash buys nothing here, while hashing every id three times
/// per offer is a large share of an allocation pass over thousands of agents.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct OfferIdHasher(u64);

impl Hasher for OfferIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // FxHash: rotate, xor, multiply by a large odd constant, eight bytes at a time.
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(SEED);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(SEED);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastOfferIds = BuildHasherDefault<OfferIdHasher>;

/// One outstanding offer. Its resources are held for its framework alone until it is
/// accepted, declined, rescinded or times out.
#[derive(Debug, Clone)]
pub(crate) struct Offer {
    /// The offer's id.
    pub(crate) id: OfferId,
    /// Who it was made to.
    pub(crate) framework_id: FrameworkId,
    /// Where its resources are.
    pub(crate) agent_id: AgentId,
    /// What it holds.
    pub(crate) resources: Resources,
    /// When it is rescinded if still outstanding.
    pub(crate) expires: Option<Instant>,
}

/// Issues offer ids: a random per-master prefix (so ids never repeat across master restarts,
/// where a framework may still hold an old offer id) and a counter, which costs neither a
/// syscall nor a random draw per offer as a fresh uuid each would.
#[derive(Debug, Clone)]
pub(crate) struct OfferIdSource {
    prefix: String,
    next: u64,
}

impl OfferIdSource {
    /// A source with a fresh random prefix.
    pub(crate) fn new() -> Self {
        Self {
            // 64 random bits tell this master's ids from any earlier master's.
            prefix: OfferId::generate()
                .as_str()
                .chars()
                .filter(char::is_ascii_hexdigit)
                .take(16)
                .fold(String::from("offer-"), |mut prefix, digit| {
                    prefix.push(digit);
                    prefix
                }),
            next: 1,
        }
    }

    /// The next id: `offer-<uuid>-<n>`.
    pub(crate) fn next_id(&mut self) -> OfferId {
        use std::fmt::Write;
        let mut id = String::with_capacity(self.prefix.len() + 8);
        id.push_str(&self.prefix);
        // Writing to a String cannot fail.
        let _ = write!(id, "-{}", self.next);
        self.next += 1;
        OfferId::new(id)
    }
}

/// Outstanding offers.
#[derive(Debug, Default)]
pub(crate) struct OfferBook {
    offers: HashMap<OfferId, Offer, FastOfferIds>,
    /// Usually one offer per agent: a small vector in offer order.
    by_agent: HashMap<AgentId, Vec<OfferId>>,
    by_framework: HashMap<FrameworkId, HashSet<OfferId, FastOfferIds>>,
    /// Offers made in one pass share their expiry: bucket them.
    expiries: BTreeMap<Instant, HashSet<OfferId, FastOfferIds>>,
    /// Capacity of the next new expiry bucket (the size of the pass being made).
    bucket_capacity: usize,
    made_total: u64,
}

impl OfferBook {
    /// Records a new offer.
    pub(crate) fn insert(&mut self, offer: Offer) {
        // Look up before inserting: `entry` would clone the key on every call.
        match self.by_agent.get_mut(&offer.agent_id) {
            Some(ids) => ids.push(offer.id.clone()),
            None => {
                self.by_agent
                    .insert(offer.agent_id.clone(), vec![offer.id.clone()]);
            }
        }
        match self.by_framework.get_mut(&offer.framework_id) {
            Some(ids) => {
                ids.insert(offer.id.clone());
            }
            None => {
                let mut ids = HashSet::with_capacity_and_hasher(8, FastOfferIds::default());
                ids.insert(offer.id.clone());
                self.by_framework.insert(offer.framework_id.clone(), ids);
            }
        }
        if let Some(expires) = offer.expires {
            match self.expiries.get_mut(&expires) {
                Some(bucket) => {
                    bucket.insert(offer.id.clone());
                }
                None => {
                    let mut bucket = HashSet::with_capacity_and_hasher(
                        self.bucket_capacity,
                        FastOfferIds::default(),
                    );
                    bucket.insert(offer.id.clone());
                    self.expiries.insert(expires, bucket);
                }
            }
        }
        self.made_total += 1;
        self.offers.insert(offer.id.clone(), offer);
    }

    /// Makes room for `additional` more offers (one allocation pass makes many at once).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.offers.reserve(additional);
        self.bucket_capacity = additional;
    }

    /// Removes an offer (accepted, declined, rescinded, expired).
    pub(crate) fn remove(&mut self, offer_id: &OfferId) -> Option<Offer> {
        let offer = self.offers.remove(offer_id)?;
        if let Some(ids) = self.by_agent.get_mut(&offer.agent_id) {
            ids.retain(|id| id != offer_id);
            if ids.is_empty() {
                self.by_agent.remove(&offer.agent_id);
            }
        }
        if let Some(ids) = self.by_framework.get_mut(&offer.framework_id) {
            ids.remove(offer_id);
            if ids.is_empty() {
                self.by_framework.remove(&offer.framework_id);
            }
        }
        if let Some(expires) = offer.expires
            && let Some(bucket) = self.expiries.get_mut(&expires)
        {
            bucket.remove(offer_id);
            if bucket.is_empty() {
                self.expiries.remove(&expires);
            }
        }
        Some(offer)
    }

    /// The offer, if outstanding.
    pub(crate) fn get(&self, offer_id: &OfferId) -> Option<&Offer> {
        self.offers.get(offer_id)
    }

    /// Ids of the offers on `agent_id`.
    pub(crate) fn of_agent(&self, agent_id: &AgentId) -> Vec<OfferId> {
        self.by_agent
            .get(agent_id)
            .map(|ids| ids.to_vec())
            .unwrap_or_default()
    }

    /// Ids of the offers made to `framework_id`, sorted.
    pub(crate) fn of_framework(&self, framework_id: &FrameworkId) -> Vec<OfferId> {
        let mut ids: Vec<OfferId> = self
            .by_framework
            .get(framework_id)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Ids of the offers whose timeout passed by `now`, oldest first (sorted within a pass).
    pub(crate) fn expired(&self, now: Instant) -> Vec<OfferId> {
        let mut expired = Vec::new();
        for (_, bucket) in self.expiries.range(..=now) {
            let mut ids: Vec<OfferId> = bucket.iter().cloned().collect();
            ids.sort();
            expired.extend(ids);
        }
        expired
    }

    /// When the next offer times out.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiries.keys().next().copied()
    }

    /// All outstanding offers, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Offer> {
        self.offers.values()
    }

    /// Number of outstanding offers.
    pub(crate) fn len(&self) -> usize {
        self.offers.len()
    }

    /// Offers made since start.
    pub(crate) fn made_total(&self) -> u64 {
        self.made_total
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn offer(id: &str, framework: &str, agent: &str, expires: Option<Instant>) -> Offer {
        Offer {
            id: OfferId::new(id),
            framework_id: FrameworkId::new(framework),
            agent_id: AgentId::new(agent),
            resources: Resources::cpus_mem(1.0, 128.0),
            expires,
        }
    }

    #[test]
    fn offer_ids_are_unique_within_and_across_sources() {
        let mut first = OfferIdSource::new();
        let mut second = OfferIdSource::new();
        let a = first.next_id();
        let b = first.next_id();
        let c = second.next_id();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(a.as_str().starts_with("offer-"), "{a}");
    }

    #[test]
    fn indexes_follow_insert_and_remove() {
        let start = Instant::now();
        let mut book = OfferBook::default();
        book.insert(offer(
            "o1",
            "f1",
            "a1",
            Some(start + Duration::from_secs(3)),
        ));
        book.insert(offer(
            "o2",
            "f1",
            "a2",
            Some(start + Duration::from_secs(1)),
        ));
        book.insert(offer("o3", "f2", "a1", None));
        assert_eq!(book.len(), 3);
        assert_eq!(book.of_agent(&AgentId::new("a1")).len(), 2);
        assert_eq!(book.of_framework(&FrameworkId::new("f1")).len(), 2);
        assert_eq!(book.next_expiry(), Some(start + Duration::from_secs(1)));
        assert_eq!(
            book.expired(start + Duration::from_secs(2)),
            vec![OfferId::new("o2")]
        );

        assert!(book.remove(&OfferId::new("o2")).is_some());
        assert!(book.remove(&OfferId::new("o2")).is_none());
        assert!(book.of_agent(&AgentId::new("a2")).is_empty());
        assert_eq!(book.next_expiry(), Some(start + Duration::from_secs(3)));
        assert_eq!(book.made_total(), 3);
        assert_eq!(book.len(), 2);
    }
}
