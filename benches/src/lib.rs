//! Benches of Agora's cores and a scale harness that runs thousands of simulated agents.
//!
//! - [`core_fixture`]: a master core loaded with agents and frameworks, for the allocator bench;
//! - [`sim`]: fleets of simulated agents (real agents with the `sim` runtime) over real gRPC;
//! - [`packer`]: a plain SDK framework that packs many tasks per offer and measures the deploy;
//! - [`daemons`]: driving svcframework and batchframework through their REST APIs;
//! - [`probe`], [`limits`], [`stats`]: reading the master's counts, process limits, percentiles.
//!
//! `benches/README.md` lists the figures and the commands that produce them.

pub mod core_fixture;
pub mod daemons;
pub mod limits;
pub mod packer;
pub mod probe;
pub mod sim;
pub mod stats;
