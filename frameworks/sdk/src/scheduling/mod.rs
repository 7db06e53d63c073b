//! Pure placement for frameworks: parse Marathon and Swarm constraints, then plan which agent
//! each new instance of an app or job goes to (bin-pack, spread or seeded random), with host
//! ports chosen and one human explanation of why the rest cannot be placed.
//!
//! ```
//! use agora_proto::{AgentId, RangeSet, Resources};
//! use agora_sdk::scheduling::{
//!     AgentAttributes, AgentCandidate, Constraint, InstanceDemand, PlacementProblem, plan,
//! };
//!
//! let agent = |name: &str| AgentCandidate {
//!     attributes: AgentAttributes {
//!         agent_id: AgentId::new(name),
//!         hostname: name.to_owned(),
//!         ..Default::default()
//!     },
//!     free: Resources::cpus_mem(4.0, 4096.0).with_ranges("ports", RangeSet::from_range(31000, 31009)),
//!     total: Resources::cpus_mem(4.0, 4096.0),
//! };
//! let problem = PlacementProblem {
//!     agents: vec![agent("a"), agent("b")],
//!     demand: InstanceDemand { resources: Resources::cpus_mem(1.0, 256.0), ports: 1 },
//!     count: 3,
//!     constraints: vec![Constraint::from_marathon(&["hostname".into(), "UNIQUE".into()])?],
//!     ..Default::default()
//! };
//! let plan = plan(&problem, 42);
//! assert_eq!(plan.placements.len(), 2);
//! assert_eq!(plan.placements[0].ports, vec![31000]);
//! assert_eq!(
//!     plan.explanation.unwrap().to_string(),
//!     "constraint hostname:UNIQUE excludes all 2 agents"
//! );
//! # Ok::<(), agora_sdk::scheduling::ConstraintError>(())
//! ```

mod constraint;
mod explain;
mod pattern;
mod planner;
mod strategy;

#[cfg(test)]
mod tests;

pub use constraint::{AgentAttributes, Constraint, ConstraintError, Operator};
pub use explain::{Exclusion, PlacementExplanation};
pub use pattern::{PatternKind, ValuePattern};
pub use planner::{
    AgentCandidate, InstanceDemand, Placement, PlacementPlan, PlacementProblem, plan,
};
pub use strategy::{PlacementStrategy, UnknownStrategy};
