//! Resource arithmetic: scalars (cpus, mem, disk, gpus), ranges (ports) and sets.
//!
//! Scalars are held in fixed point (thousandths), as Mesos does, so that adding and
//! subtracting fractional cpus many times never drifts: 0.1 + 0.2 - 0.3 is exactly zero.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, LazyLock};

use crate::v1;

/// Well-known resource names.
pub const CPUS: &str = "cpus";
/// Memory in MiB.
pub const MEM: &str = "mem";
/// Disk in MiB.
pub const DISK: &str = "disk";
/// Host ports, as ranges.
pub const PORTS: &str = "ports";
/// GPUs, as a scalar count.
pub const GPUS: &str = "gpus";

const MILLIS_PER_UNIT: f64 = 1000.0;

/// Largest value of any one scalar resource (cpus, mem, disk, gpus, custom), in units, on one
/// agent, task or offer: 10^12 (a trillion cores, or an exbibyte of memory in MiB). In
/// thousandths that is 10^15, so even the sum over nine thousand agents of the largest
/// allowed size stays below `i64::MAX`; aggregates beyond that saturate instead of wrapping.
pub const MAX_SCALAR: f64 = 1e12;

/// A resource name, shared: copying resources (which the master does for every offer and
/// task) never copies their names, and the well-known names exist once per process.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Name(Arc<str>);

impl Name {
    fn new(name: &str) -> Name {
        static WELL_KNOWN: LazyLock<[Arc<str>; 5]> =
            LazyLock::new(|| [CPUS, MEM, DISK, PORTS, GPUS].map(Arc::from));
        match WELL_KNOWN.iter().find(|known| known.as_ref() == name) {
            Some(known) => Name(Arc::clone(known)),
            None => Name(Arc::from(name)),
        }
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Name::new(&name))
    }
}

/// Why a resource description was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// A resource string such as `cpus:4;mem:1024` could not be parsed.
    #[error("invalid resource string {input:?}: {reason}")]
    Parse {
        /// The offending fragment.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A resource has no name.
    #[error("resource name must not be empty")]
    EmptyName,
    /// A scalar is negative, NaN or infinite.
    #[error("resource {name:?}: scalar must be a finite, non-negative number, got {}", crate::limits::display_number(*.value))]
    InvalidScalar {
        /// Resource name.
        name: String,
        /// The rejected value.
        value: f64,
    },
    /// A scalar is larger than [`MAX_SCALAR`].
    #[error("resource {name:?}: scalar {} exceeds the maximum {max:e}", crate::limits::display_number(*.value), max = MAX_SCALAR)]
    ScalarTooLarge {
        /// Resource name.
        name: String,
        /// The rejected value.
        value: f64,
    },
    /// Several entries of the same scalar add up to more than [`MAX_SCALAR`].
    #[error("resources: {name} total {total:e} exceeds the maximum {max:e}", max = MAX_SCALAR)]
    TotalTooLarge {
        /// Resource name.
        name: String,
        /// The sum that was refused, in units.
        total: f64,
    },
    /// A range has its end before its begin.
    #[error("resource {name:?}: range [{begin}-{end}] ends before it begins")]
    InvalidRange {
        /// Resource name.
        name: String,
        /// Range start.
        begin: u64,
        /// Range end.
        end: u64,
    },
    /// A proto resource carries no value.
    #[error("resource {name:?} has no value (scalar, ranges or set)")]
    MissingValue {
        /// Resource name.
        name: String,
    },
    /// The same name is used with two different kinds of value.
    #[error("resource {name:?} is given both as {first} and as {second}")]
    MixedKinds {
        /// Resource name.
        name: String,
        /// The kind seen first.
        first: &'static str,
        /// The conflicting kind.
        second: &'static str,
    },
}

/// A set of integers kept as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding the one inclusive range `[begin, end]`; empty if `end < begin`.
    pub fn from_range(begin: u64, end: u64) -> Self {
        let mut set = Self::new();
        set.insert_range(begin, end);
        set
    }

    /// A set built from any inclusive ranges, overlapping or not.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut set = Self::new();
        for (begin, end) in ranges {
            set.insert_range(begin, end);
        }
        set
    }

    /// A set holding exactly the given values.
    pub fn from_values(values: impl IntoIterator<Item = u64>) -> Self {
        Self::from_ranges(values.into_iter().map(|value| (value, value)))
    }

    /// The normalised ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// True when the set holds no value.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of values held.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|(begin, end)| end - begin + 1).sum()
    }

    /// True when `value` is in the set.
    pub fn contains_value(&self, value: u64) -> bool {
        // The ranges are sorted, so a binary search finds the only candidate.
        let index = self.ranges.partition_point(|&(_, end)| end < value);
        self.ranges
            .get(index)
            .is_some_and(|&(begin, _)| begin <= value)
    }

    /// True when every value of `other` is in `self`.
    pub fn contains(&self, other: &RangeSet) -> bool {
        other.ranges.iter().all(|&(begin, end)| {
            let index = self.ranges.partition_point(|&(_, own_end)| own_end < begin);
            self.ranges
                .get(index)
                .is_some_and(|&(own_begin, own_end)| own_begin <= begin && end <= own_end)
        })
    }

    /// Adds the inclusive range `[begin, end]`, merging with neighbours.
    pub fn insert_range(&mut self, begin: u64, end: u64) {
        if end < begin {
            return;
        }
        let mut merged_begin = begin;
        let mut merged_end = end;
        // First range that could touch [begin, end]: its end + 1 >= begin.
        let first = self
            .ranges
            .partition_point(|&(_, own_end)| own_end.saturating_add(1) < begin);
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].0 <= merged_end.saturating_add(1) {
            merged_begin = merged_begin.min(self.ranges[last].0);
            merged_end = merged_end.max(self.ranges[last].1);
            last += 1;
        }
        self.ranges
            .splice(first..last, [(merged_begin, merged_end)]);
    }

    /// Adds every value of `other`.
    pub fn add(&mut self, other: &RangeSet) {
        for &(begin, end) in &other.ranges {
            self.insert_range(begin, end);
        }
    }

    /// Removes every value of `other` that is present (set difference).
    pub fn remove(&mut self, other: &RangeSet) {
        if other.is_empty() || self.is_empty() {
            return;
        }
        let removals = &other.ranges;
        let mut result = Vec::with_capacity(self.ranges.len() + removals.len());
        let mut first_relevant = 0;
        for &(begin, end) in &self.ranges {
            while first_relevant < removals.len() && removals[first_relevant].1 < begin {
                first_relevant += 1;
            }
            let mut cursor = begin;
            let mut fully_removed = false;
            for &(remove_begin, remove_end) in &removals[first_relevant..] {
                if remove_begin > end {
                    break;
                }
                if remove_begin > cursor {
                    result.push((cursor, remove_begin - 1));
                }
                if remove_end >= end {
                    fully_removed = true;
                    break;
                }
                cursor = cursor.max(remove_end + 1);
            }
            if !fully_removed {
                result.push((cursor, end));
            }
        }
        self.ranges = result;
    }

    /// Iterates every value in ascending order.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(begin, end)| begin..=end)
    }

    /// The lowest `count` values, or `None` when the set holds fewer.
    pub fn first_values(&self, count: usize) -> Option<Vec<u64>> {
        let values: Vec<u64> = self.values().take(count).collect();
        (values.len() == count).then_some(values)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (index, (begin, end)) in self.ranges.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{begin}-{end}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A bundle of named resources: what an agent has, what an offer holds, what a task needs.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Scalars in thousandths of a unit. Zero entries are never stored.
    scalars: BTreeMap<Name, i64>,
    /// Range resources. Empty sets are never stored.
    ranges: BTreeMap<Name, RangeSet>,
    /// Set resources. Empty sets are never stored.
    sets: BTreeMap<Name, BTreeSet<String>>,
}

fn to_millis(value: f64) -> i64 {
    (value * MILLIS_PER_UNIT).round() as i64
}

fn from_millis(millis: i64) -> f64 {
    millis as f64 / MILLIS_PER_UNIT
}

fn validate_scalar(name: &str, value: f64) -> Result<(), ResourceError> {
    if name.is_empty() {
        return Err(ResourceError::EmptyName);
    }
    if !value.is_finite() || value < 0.0 {
        return Err(ResourceError::InvalidScalar {
            name: name.to_owned(),
            value,
        });
    }
    if value > MAX_SCALAR {
        return Err(ResourceError::ScalarTooLarge {
            name: name.to_owned(),
            value,
        });
    }
    Ok(())
}

impl Resources {
    /// No resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// Convenience constructor for the common cpus + mem shape.
    pub fn cpus_mem(cpus: f64, mem: f64) -> Self {
        let mut resources = Self::new();
        resources.scalars_set(CPUS, cpus);
        resources.scalars_set(MEM, mem);
        resources
    }

    fn scalars_set(&mut self, name: &str, value: f64) {
        let millis = to_millis(value.max(0.0));
        if millis == 0 {
            self.scalars.remove(name);
        } else {
            self.scalars.insert(Name::new(name), millis);
        }
    }

    /// Sets a scalar, replacing any earlier value.
    pub fn set_scalar(&mut self, name: &str, value: f64) -> Result<(), ResourceError> {
        validate_scalar(name, value)?;
        self.scalars_set(name, value);
        Ok(())
    }

    /// Builder form of [`Resources::set_scalar`] for values known to be valid.
    pub fn with_scalar(mut self, name: &str, value: f64) -> Self {
        debug_assert!(
            validate_scalar(name, value).is_ok(),
            "invalid scalar {name}={value}"
        );
        self.scalars_set(name, value);
        self
    }

    /// Sets a range resource, replacing any earlier value.
    pub fn set_ranges(&mut self, name: &str, ranges: RangeSet) {
        if ranges.is_empty() {
            self.ranges.remove(name);
        } else {
            self.ranges.insert(Name::new(name), ranges);
        }
    }

    /// Builder form of [`Resources::set_ranges`].
    pub fn with_ranges(mut self, name: &str, ranges: RangeSet) -> Self {
        self.set_ranges(name, ranges);
        self
    }

    /// Sets a set resource, replacing any earlier value.
    pub fn set_items(&mut self, name: &str, items: BTreeSet<String>) {
        if items.is_empty() {
            self.sets.remove(name);
        } else {
            self.sets.insert(Name::new(name), items);
        }
    }

    /// The value of scalar `name`, zero when absent.
    pub fn scalar(&self, name: &str) -> f64 {
        self.scalars
            .get(name)
            .copied()
            .map(from_millis)
            .unwrap_or(0.0)
    }

    /// The value of scalar `name` in thousandths, zero when absent.
    pub fn scalar_millis(&self, name: &str) -> i64 {
        self.scalars.get(name).copied().unwrap_or(0)
    }

    /// Cores.
    pub fn cpus(&self) -> f64 {
        self.scalar(CPUS)
    }

    /// Memory in MiB.
    pub fn mem(&self) -> f64 {
        self.scalar(MEM)
    }

    /// Disk in MiB.
    pub fn disk(&self) -> f64 {
        self.scalar(DISK)
    }

    /// The range resource `name`, empty when absent.
    pub fn ranges(&self, name: &str) -> RangeSet {
        self.ranges.get(name).cloned().unwrap_or_default()
    }

    /// The range resource `name` by reference, if present.
    pub fn ranges_ref(&self, name: &str) -> Option<&RangeSet> {
        self.ranges.get(name)
    }

    /// Host ports.
    pub fn ports(&self) -> RangeSet {
        self.ranges(PORTS)
    }

    /// The set resource `name`, if present.
    pub fn items(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.sets.get(name)
    }

    /// Names and values (in units) of all scalars.
    pub fn scalars(&self) -> impl Iterator<Item = (&str, f64)> {
        self.scalars
            .iter()
            .map(|(name, &millis)| (name.as_str(), from_millis(millis)))
    }

    /// Names of all scalar resources.
    pub fn scalar_names(&self) -> impl Iterator<Item = &str> {
        self.scalars.keys().map(Name::as_str)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.scalars.is_empty() && self.ranges.is_empty() && self.sets.is_empty()
    }

    /// Adds `other` into `self`.
    ///
    /// Scalars add with saturation: validated resources are at most [`MAX_SCALAR`] each, so
    /// only an aggregate over thousands of maximal agents could reach `i64::MAX`, and there
    /// it stops rather than wrapping to a negative amount. Inputs from peers go through
    /// [`Resources::checked_add`] (via [`Resources::from_proto`]), which refuses such sums.
    pub fn add(&mut self, other: &Resources) {
        // Look up before inserting: `entry` would clone every name, even those present.
        for (name, &millis) in &other.scalars {
            match self.scalars.get_mut(name) {
                Some(held) => *held = held.saturating_add(millis),
                None => {
                    self.scalars.insert(name.clone(), millis);
                }
            }
        }
        for (name, ranges) in &other.ranges {
            match self.ranges.get_mut(name) {
                Some(held) => held.add(ranges),
                None => {
                    self.ranges.insert(name.clone(), ranges.clone());
                }
            }
        }
        for (name, items) in &other.sets {
            match self.sets.get_mut(name) {
                Some(held) => held.extend(items.iter().cloned()),
                None => {
                    self.sets.insert(name.clone(), items.clone());
                }
            }
        }
    }

    /// Adds `other` into `self` unless a scalar would exceed [`MAX_SCALAR`], in which case
    /// nothing changes and the error names the scalar and the refused total.
    pub fn checked_add(&mut self, other: &Resources) -> Result<(), ResourceError> {
        let max_millis = to_millis(MAX_SCALAR);
        for (name, &millis) in &other.scalars {
            let held = self.scalars.get(name).copied().unwrap_or(0);
            let total = held
                .checked_add(millis)
                .filter(|&total| total <= max_millis);
            if total.is_none() {
                return Err(ResourceError::TotalTooLarge {
                    name: name.as_str().to_owned(),
                    total: from_millis(held) + from_millis(millis),
                });
            }
        }
        self.add(other);
        Ok(())
    }

    /// `self + other` as a new value.
    pub fn plus(&self, other: &Resources) -> Resources {
        let mut sum = self.clone();
        sum.add(other);
        sum
    }

    /// True when `self` holds at least everything in `other`.
    pub fn contains(&self, other: &Resources) -> bool {
        let scalars_fit = other
            .scalars
            .iter()
            .all(|(name, &needed)| self.scalars.get(name).copied().unwrap_or(0) >= needed);
        let ranges_fit = other.ranges.iter().all(|(name, needed)| {
            self.ranges
                .get(name)
                .is_some_and(|held| held.contains(needed))
        });
        let sets_fit = other.sets.iter().all(|(name, needed)| {
            self.sets
                .get(name)
                .is_some_and(|held| needed.is_subset(held))
        });
        scalars_fit && ranges_fit && sets_fit
    }

    /// `self - other` when `self` contains `other`, otherwise `None`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        let mut difference = self.clone();
        difference.subtract_saturating(other);
        Some(difference)
    }

    /// Removes `other` from `self`, clamping scalars at zero and ignoring what is absent.
    pub fn subtract_saturating(&mut self, other: &Resources) {
        for (name, &millis) in &other.scalars {
            if let Some(held) = self.scalars.get_mut(name) {
                *held = (*held - millis).max(0);
                if *held == 0 {
                    self.scalars.remove(name);
                }
            }
        }
        for (name, ranges) in &other.ranges {
            if let Some(held) = self.ranges.get_mut(name) {
                held.remove(ranges);
                if held.is_empty() {
                    self.ranges.remove(name);
                }
            }
        }
        for (name, items) in &other.sets {
            if let Some(held) = self.sets.get_mut(name) {
                held.retain(|item| !items.contains(item));
                if held.is_empty() {
                    self.sets.remove(name);
                }
            }
        }
    }

    /// Reads resources from their proto form, validating each and merging duplicates.
    pub fn from_proto(resources: &[v1::Resource]) -> Result<Resources, ResourceError> {
        let mut result = Resources::new();
        let mut kinds: BTreeMap<&str, &'static str> = BTreeMap::new();
        for resource in resources {
            let name = resource.name.as_str();
            if name.is_empty() {
                return Err(ResourceError::EmptyName);
            }
            let kind = match &resource.value {
                Some(v1::resource::Value::Scalar(_)) => "scalar",
                Some(v1::resource::Value::Ranges(_)) => "ranges",
                Some(v1::resource::Value::Set(_)) => "set",
                None => {
                    return Err(ResourceError::MissingValue {
                        name: name.to_owned(),
                    });
                }
            };
            if let Some(&first) = kinds.get(name)
                && first != kind
            {
                return Err(ResourceError::MixedKinds {
                    name: name.to_owned(),
                    first,
                    second: kind,
                });
            }
            kinds.insert(name, kind);
            let mut single = Resources::new();
            match &resource.value {
                Some(v1::resource::Value::Scalar(value)) => single.set_scalar(name, *value)?,
                Some(v1::resource::Value::Ranges(ranges)) => {
                    let mut set = RangeSet::new();
                    for range in &ranges.range {
                        if range.end < range.begin {
                            return Err(ResourceError::InvalidRange {
                                name: name.to_owned(),
                                begin: range.begin,
                                end: range.end,
                            });
                        }
                        set.insert_range(range.begin, range.end);
                    }
                    single.set_ranges(name, set);
                }
                Some(v1::resource::Value::Set(items)) => {
                    single.set_items(name, items.item.iter().cloned().collect());
                }
                None => {}
            }
            result.checked_add(&single)?;
        }
        Ok(result)
    }

    /// The proto form, one entry per name, in name order.
    pub fn to_proto(&self) -> Vec<v1::Resource> {
        let scalars = self.scalars.iter().map(|(name, &millis)| v1::Resource {
            name: name.as_str().to_owned(),
            value: Some(v1::resource::Value::Scalar(from_millis(millis))),
        });
        let ranges = self.ranges.iter().map(|(name, set)| v1::Resource {
            name: name.as_str().to_owned(),
            value: Some(v1::resource::Value::Ranges(v1::Ranges {
                range: set
                    .ranges()
                    .iter()
                    .map(|&(begin, end)| v1::Range { begin, end })
                    .collect(),
            })),
        });
        let sets = self.sets.iter().map(|(name, items)| v1::Resource {
            name: name.as_str().to_owned(),
            value: Some(v1::resource::Value::Set(v1::ValueSet {
                item: items.iter().cloned().collect(),
            })),
        });
        scalars.chain(ranges).chain(sets).collect()
    }

    /// Parses the Mesos-style text form: `cpus:4;mem:8192;ports:[31000-32000,32500-32600];zones:{a,b}`.
    pub fn parse(text: &str) -> Result<Resources, ResourceError> {
        let mut result = Resources::new();
        for fragment in text.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            let parse_error = |reason: &str| ResourceError::Parse {
                input: fragment.to_owned(),
                reason: reason.to_owned(),
            };
            let (name, value) = fragment
                .split_once(':')
                .ok_or_else(|| parse_error("expected NAME:VALUE"))?;
            let name = name.trim();
            let value = value.trim();
            if name.is_empty() {
                return Err(parse_error("resource name is empty"));
            }
            let mut single = Resources::new();
            if let Some(inner) = value.strip_prefix('[') {
                let inner = inner
                    .strip_suffix(']')
                    .ok_or_else(|| parse_error("range list must end with ']'"))?;
                let mut set = RangeSet::new();
                for range in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                    let (begin, end) = match range.split_once('-') {
                        Some((begin, end)) => (begin.trim(), end.trim()),
                        None => (range, range),
                    };
                    let begin: u64 = begin
                        .parse()
                        .map_err(|_| parse_error(&format!("{begin:?} is not a whole number")))?;
                    let end: u64 = end
                        .parse()
                        .map_err(|_| parse_error(&format!("{end:?} is not a whole number")))?;
                    if end < begin {
                        return Err(ResourceError::InvalidRange {
                            name: name.to_owned(),
                            begin,
                            end,
                        });
                    }
                    set.insert_range(begin, end);
                }
                single.set_ranges(name, set);
            } else if let Some(inner) = value.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| parse_error("set must end with '}'"))?;
                let items = inner
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect();
                single.set_items(name, items);
            } else {
                let scalar: f64 = value
                    .parse()
                    .map_err(|_| parse_error(&format!("{value:?} is not a number")))?;
                single.set_scalar(name, scalar)?;
            }
            result.checked_add(&single)?;
        }
        Ok(result)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for (name, &millis) in &self.scalars {
            parts.push(format!("{name}:{}", from_millis(millis)));
        }
        for (name, set) in &self.ranges {
            parts.push(format!("{name}:{set}"));
        }
        for (name, items) in &self.sets {
            let joined: Vec<&str> = items.iter().map(String::as_str).collect();
            parts.push(format!("{name}:{{{}}}", joined.join(",")));
        }
        f.write_str(&parts.join(";"))
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resources({self})")
    }
}

impl std::str::FromStr for Resources {
    type Err = ResourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Resources::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_agent_flag_format() {
        let resources = Resources::parse("cpus:4;mem:8192;ports:[31000-32000]").unwrap();
        assert_eq!(resources.cpus(), 4.0);
        assert_eq!(resources.mem(), 8192.0);
        assert_eq!(resources.ports().count(), 1001);
        assert_eq!(resources.to_string(), "cpus:4;mem:8192;ports:[31000-32000]");
    }

    #[test]
    fn malformed_strings_name_the_fragment() {
        let error = Resources::parse("cpus:four").unwrap_err();
        assert!(error.to_string().contains("cpus:four"), "{error}");
        let error = Resources::parse("cpus:-1").unwrap_err();
        assert!(
            matches!(error, ResourceError::InvalidScalar { .. }),
            "{error}"
        );
        let error = Resources::parse("ports:[32000-31000]").unwrap_err();
        assert!(
            matches!(error, ResourceError::InvalidRange { .. }),
            "{error}"
        );
        let error = Resources::parse("mem").unwrap_err();
        assert!(error.to_string().contains("NAME:VALUE"), "{error}");
        assert!(Resources::parse("ports:[1-2").is_err());
    }

    #[test]
    fn fixed_point_scalars_do_not_drift() {
        let mut total = Resources::cpus_mem(0.3, 0.0);
        total.subtract_saturating(&Resources::cpus_mem(0.1, 0.0));
        total.subtract_saturating(&Resources::cpus_mem(0.2, 0.0));
        assert!(total.is_empty(), "{total:?}");
    }

    #[test]
    fn port_subtraction_splits_ranges() {
        let mut ports = RangeSet::from_range(31000, 31010);
        ports.remove(&RangeSet::from_values([31000, 31005, 31010]));
        assert_eq!(ports.ranges(), &[(31001, 31004), (31006, 31009)]);
        assert!(!ports.contains_value(31005));
        assert!(ports.contains_value(31006));
    }

    #[test]
    fn proto_round_trip_and_validation() {
        let resources =
            Resources::parse("cpus:1.5;mem:256;ports:[80-80,443-443];zone:{a,b}").unwrap();
        let back = Resources::from_proto(&resources.to_proto()).unwrap();
        assert_eq!(resources, back);
        let missing = v1::Resource {
            name: "cpus".into(),
            value: None,
        };
        assert!(matches!(
            Resources::from_proto(&[missing]),
            Err(ResourceError::MissingValue { .. })
        ));
        let nan = v1::Resource {
            name: "mem".into(),
            value: Some(v1::resource::Value::Scalar(f64::NAN)),
        };
        assert!(Resources::from_proto(&[nan]).is_err());
    }

    fn range_set_strategy() -> impl Strategy<Value = RangeSet> {
        proptest::collection::vec((0u64..200, 0u64..20), 0..8).prop_map(|pairs| {
            RangeSet::from_ranges(pairs.into_iter().map(|(begin, len)| (begin, begin + len)))
        })
    }

    fn resources_strategy() -> impl Strategy<Value = Resources> {
        (0u32..16_000, 0u32..65_536, range_set_strategy()).prop_map(|(cpu_millis, mem, ports)| {
            Resources::cpus_mem(f64::from(cpu_millis) / 1000.0, f64::from(mem))
                .with_ranges(PORTS, ports)
        })
    }

    #[test]
    fn oversized_scalars_and_totals_are_refused_with_the_name() {
        let huge = v1::Resource {
            name: "cpus".into(),
            value: Some(v1::resource::Value::Scalar(1e18)),
        };
        let error = Resources::from_proto(std::slice::from_ref(&huge)).unwrap_err();
        assert!(
            matches!(error, ResourceError::ScalarTooLarge { ref name, .. } if name == "cpus"),
            "{error}"
        );
        let large = v1::Resource {
            name: "cpus".into(),
            value: Some(v1::resource::Value::Scalar(MAX_SCALAR * 0.75)),
        };
        let error = Resources::from_proto(&[large.clone(), large]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "resources: cpus total 1.5e12 exceeds the maximum 1e12"
        );
        let error = Resources::parse("mem:1e12;mem:1").unwrap_err();
        assert!(
            matches!(error, ResourceError::TotalTooLarge { .. }),
            "{error}"
        );
        assert!(Resources::parse("mem:1e12").is_ok());
    }

    #[test]
    fn checked_add_changes_nothing_when_it_refuses() {
        let mut held = Resources::new().with_scalar(CPUS, MAX_SCALAR);
        let before = held.clone();
        let error = held
            .checked_add(&Resources::new().with_scalar(CPUS, 0.001))
            .unwrap_err();
        assert!(
            matches!(error, ResourceError::TotalTooLarge { .. }),
            "{error}"
        );
        assert_eq!(held, before);
    }

    /// Scalars from the whole allowed range, with the extremes (zero, one thousandth, the
    /// maximum) drawn often.
    fn extreme_scalar_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(0.001),
            Just(MAX_SCALAR),
            Just(MAX_SCALAR - 0.001),
            (0u64..=1_000_000_000_000_000).prop_map(|millis| millis as f64 / 1000.0),
        ]
    }

    fn extreme_resources_strategy() -> impl Strategy<Value = Resources> {
        (
            extreme_scalar_strategy(),
            extreme_scalar_strategy(),
            extreme_scalar_strategy(),
        )
            .prop_map(|(cpus, mem, custom)| {
                Resources::new()
                    .with_scalar(CPUS, cpus)
                    .with_scalar(MEM, mem)
                    .with_scalar("bandwidth", custom)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn scalar_arithmetic_never_wraps(
            parts in proptest::collection::vec(extreme_resources_strategy(), 1..12),
            repeat in 1usize..20_000,
        ) {
            // Aggregates (what the master sums over agents and tasks) saturate, never wrap.
            let mut aggregate = Resources::new();
            // 10^15 thousandths per maximal scalar: ~9,200 maximal adds reach i64::MAX.
            for _ in 0..repeat {
                for part in &parts {
                    let before = [CPUS, MEM, "bandwidth"].map(|name| aggregate.scalar_millis(name));
                    aggregate.add(part);
                    for (index, name) in [CPUS, MEM, "bandwidth"].into_iter().enumerate() {
                        prop_assert!(aggregate.scalar_millis(name) >= before[index]);
                    }
                }
            }
            for part in &parts {
                prop_assert!(aggregate.contains(part));
            }
            // Checked sums stay within the documented maximum, or refuse and change nothing.
            let mut checked = Resources::new();
            for part in &parts {
                let before = checked.clone();
                match checked.checked_add(part) {
                    Ok(()) => {
                        for name in [CPUS, MEM, "bandwidth"] {
                            prop_assert!(checked.scalar(name) <= MAX_SCALAR);
                            prop_assert_eq!(
                                checked.scalar_millis(name),
                                before.scalar_millis(name) + part.scalar_millis(name)
                            );
                        }
                    }
                    Err(error) => {
                        prop_assert!(matches!(error, ResourceError::TotalTooLarge { .. }), "{}", error);
                        prop_assert_eq!(&checked, &before);
                    }
                }
            }
            // Subtracting never goes below zero and gives back the difference when contained.
            for part in &parts {
                let mut rest = checked.clone();
                rest.subtract_saturating(part);
                for name in [CPUS, MEM, "bandwidth"] {
                    let expected = (checked.scalar_millis(name) - part.scalar_millis(name)).max(0);
                    prop_assert_eq!(rest.scalar_millis(name), expected);
                }
                match checked.checked_sub(part) {
                    Some(difference) => prop_assert_eq!(difference, rest),
                    None => prop_assert!(!checked.contains(part)),
                }
            }
            // The proto form of a checked sum reads back identically.
            prop_assert_eq!(Resources::from_proto(&checked.to_proto()), Ok(checked.clone()));
        }
    }

    proptest! {
        #[test]
        fn range_sets_stay_normalised(set in range_set_strategy(), other in range_set_strategy()) {
            let mut union = set.clone();
            union.add(&other);
            for window in union.ranges().windows(2) {
                // Sorted, disjoint and not adjacent (adjacent ranges must have merged).
                prop_assert!(window[0].1 + 1 < window[1].0);
            }
            let mut difference = union.clone();
            difference.remove(&other);
            for value in 0..240u64 {
                let expected_in_union = set.contains_value(value) || other.contains_value(value);
                prop_assert_eq!(union.contains_value(value), expected_in_union);
                let expected_in_difference = expected_in_union && !other.contains_value(value);
                prop_assert_eq!(difference.contains_value(value), expected_in_difference);
            }
            prop_assert_eq!(union.count(), union.values().count() as u64);
        }

        #[test]
        fn add_then_subtract_is_identity(base in resources_strategy(), extra in resources_strategy()) {
            let sum = base.plus(&extra);
            prop_assert!(sum.contains(&base));
            prop_assert!(sum.contains(&extra));
            // Subtracting extra gives back base except where base and extra shared port values.
            let difference = sum.checked_sub(&extra).expect("sum contains extra");
            prop_assert_eq!(difference.cpus(), base.cpus());
            prop_assert_eq!(difference.mem(), base.mem());
            let mut expected_ports = base.ports();
            expected_ports.remove(&extra.ports());
            prop_assert_eq!(difference.ports(), expected_ports);
        }

        #[test]
        fn checked_sub_refuses_what_is_not_held(held in resources_strategy(), wanted in resources_strategy()) {
            match held.checked_sub(&wanted) {
                Some(rest) => {
                    prop_assert!(held.contains(&wanted));
                    prop_assert!(rest.plus(&wanted).contains(&held));
                }
                None => prop_assert!(!held.contains(&wanted)),
            }
        }

        #[test]
        fn text_form_round_trips(resources in resources_strategy()) {
            let text = resources.to_string();
            let parsed = Resources::parse(&text).unwrap();
            prop_assert_eq!(parsed, resources);
        }
    }
}
