//! The Marathon app definition: model, defaults, JSON parsing and validation.

mod constraint;
pub mod defaults;
mod definition;
mod parse;
mod path_id;
mod validate;

pub use constraint::ConstraintSpec;
pub use definition::{
    AppDefinition, Container, ContainerType, DockerSpec, HealthCheck, HealthCheckProtocol,
    KillSelection, Network, NetworkMode, Placement, PortDefinition, PortMapping, PortProtocol,
    UpgradeStrategy, Volume, VolumeMode,
};
pub use parse::{AppJsonError, ParsedApp, UnknownField};
pub use path_id::{PathId, PathIdError};
pub use validate::{FieldErrors, ValidationErrors};
