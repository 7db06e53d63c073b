//! A scheduler driver for Rust frameworks on Agora: subscribe, heartbeat watchdog,
//! re-subscribe with backoff keeping the framework id, events as a stream, typed calls, and
//! helpers to pack tasks into offers; and the framework [`runtime`] that runs a sans-IO
//! framework core against the driver and a store (what svcframework, batchframework and the
//! `everywhere` example are built on). A framework daemon's shell is built from [`daemon`]
//! (driver, runtime and HTTP server wired and stopped together), [`store`] (its redb file),
//! [`http`] (what every API answers alike) and [`cli`] (a client of the API).
//!
//! ```no_run
//! use agora_proto::v1;
//! use agora_sdk::{DriverConfig, DriverEvent, SchedulerDriver, TaskBuilder};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let framework = v1::FrameworkInfo {
//!     name: "hello".into(),
//!     failover_timeout_seconds: 60.0,
//!     ..Default::default()
//! };
//! let config = DriverConfig::new("http://127.0.0.1:5050", framework);
//! let (driver, mut events) = SchedulerDriver::start(config)?;
//! let mut launched = false;
//! while let Some(event) = events.next().await {
//!     match event {
//!         DriverEvent::Offers(offers) => {
//!             for offer in offers {
//!                 let offer_id = agora_proto::OfferId::new(offer.id.clone());
//!                 if launched {
//!                     driver.decline(vec![offer_id], Some(30.0)).await?;
//!                     continue;
//!                 }
//!                 let task = TaskBuilder::new("hello").cpus(0.1).mem(32.0).shell("echo hello").build(&offer)?;
//!                 driver.launch(offer_id, vec![task]).await?;
//!                 launched = true;
//!             }
//!         }
//!         DriverEvent::Update(status) => println!("{} is {:?}", status.task_id, status.state()),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod cli;
mod config;
pub mod daemon;
mod driver;
mod error;
mod event;
pub mod http;
mod placement;
pub mod runtime;
pub mod scheduling;
mod spans;
pub mod store;

pub use agora_proto::Backoff;
pub use config::DriverConfig;
pub use driver::SchedulerDriver;
pub use error::SdkError;
pub use event::{DriverEvent, EventStream};
pub use placement::{OfferResources, PlacementError, TaskBuilder};
pub use runtime::{
    Command, CoreCalls, FrameworkCore, FrameworkStore, LaunchFailure, NoStore, Runtime,
    RuntimeConfig, RuntimeError,
};
