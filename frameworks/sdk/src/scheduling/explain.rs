//! Why instances could not be placed, counted per reason, for operators and `/v2/queue`.

use std::fmt;

/// One reason agents were turned down, with how many agents it covers.
#[derive(Debug, Clone, PartialEq)]
pub enum Exclusion {
    /// There was no candidate agent at all.
    NoAgents,
    /// Agents lack the attribute a hard constraint needs (`disk==ssd` on an agent without `disk`).
    LacksAttribute {
        /// The constraint, as displayed (`disk==ssd`).
        constraint: String,
        /// How many agents lack it.
        agents: usize,
        /// How many candidate agents there were.
        of: usize,
    },
    /// Agents have the attribute but a hard constraint refuses them.
    Constraint {
        /// The constraint, as displayed (`hostname:UNIQUE`).
        constraint: String,
        /// How many agents it refuses.
        agents: usize,
        /// How many candidate agents there were.
        of: usize,
    },
    /// Agents that pass every constraint have too little of a scalar resource.
    Resource {
        /// The resource (`cpus`, `mem`, ...).
        name: String,
        /// How much one instance needs.
        needed: f64,
        /// The most any of these agents has free.
        largest_free: f64,
        /// How many agents are short of it.
        agents: usize,
        /// How many candidate agents there were.
        of: usize,
    },
    /// Agents that pass every constraint and have the scalars have too few free host ports.
    Ports {
        /// Host ports one instance needs.
        needed: usize,
        /// The most free ports any of these agents has.
        most_free: u64,
        /// How many agents are short of ports.
        agents: usize,
        /// How many candidate agents there were.
        of: usize,
    },
}

fn agents_noun(count: usize) -> &'static str {
    if count == 1 { "agent" } else { "agents" }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::NoAgents => f.write_str("no agents are offered"),
            Exclusion::LacksAttribute {
                constraint,
                agents,
                of,
            } => {
                if agents == of && *of > 1 {
                    write!(f, "all {of} agents lack label {constraint}")
                } else if *agents == 1 {
                    write!(f, "1 agent lacks label {constraint}")
                } else {
                    write!(f, "{agents} agents lack label {constraint}")
                }
            }
            Exclusion::Constraint {
                constraint,
                agents,
                of,
            } => {
                if agents == of && *of > 1 {
                    write!(f, "constraint {constraint} excludes all {of} agents")
                } else if agents == of {
                    write!(f, "constraint {constraint} excludes the only agent")
                } else {
                    let noun = agents_noun(*agents);
                    write!(f, "constraint {constraint} excludes {agents} {noun}")
                }
            }
            Exclusion::Resource {
                name,
                needed,
                largest_free,
                agents,
                of,
            } => {
                if agents == of {
                    write!(
                        f,
                        "no agent has {needed} {name}; largest free is {largest_free}"
                    )
                } else {
                    let noun = agents_noun(*agents);
                    let verb = if *agents == 1 { "has" } else { "have" };
                    write!(
                        f,
                        "{agents} {noun} {verb} too little {name} (needs {needed}, largest free {largest_free})"
                    )
                }
            }
            Exclusion::Ports {
                needed,
                most_free,
                agents,
                of,
            } => {
                if agents == of {
                    write!(
                        f,
                        "no agent has {needed} free ports; most free is {most_free}"
                    )
                } else {
                    let noun = agents_noun(*agents);
                    let verb = if *agents == 1 { "has" } else { "have" };
                    write!(
                        f,
                        "{agents} {noun} {verb} too few free ports (needs {needed}, most free {most_free})"
                    )
                }
            }
        }
    }
}

/// Why the rest of a plan's instances cannot be placed: each candidate agent is counted once,
/// under the first reason that turns it down (hard constraints in order, then scalars, then
/// ports), in the state after the placements the plan did make.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementExplanation {
    /// Instances that could not be placed.
    pub unplaced: usize,
    /// The reasons, most specific first; never empty.
    pub exclusions: Vec<Exclusion>,
}

impl fmt::Display for PlacementExplanation {
    /// The reasons joined by `; `, e.g. `2 agents lack label disk==ssd; 1 agent has too
    /// little mem (needs 512, largest free 256)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, exclusion) in self.exclusions.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{exclusion}")?;
        }
        Ok(())
    }
}
