//! svcframework: Marathon-compatible long-running services on Agora — app definitions, the
//! sans-IO deployment core, its store, the REST API, the daemon and the CLI client.

mod app;
pub mod cli;
pub mod core;
mod http;
mod server;
pub mod store;

pub use app::{
    AppDefinition, AppJsonError, ConstraintSpec, Container, ContainerType, DockerSpec, FieldErrors,
    HealthCheck, HealthCheckProtocol, KillSelection, Network, NetworkMode, ParsedApp, PathId,
    PathIdError, Placement, PortDefinition, PortMapping, PortProtocol, UnknownField,
    UpgradeStrategy, ValidationErrors, Volume, VolumeMode, defaults,
};
pub use server::{SvcHandle, SvcRunError, SvcSettings, SvcStartError, spawn};
