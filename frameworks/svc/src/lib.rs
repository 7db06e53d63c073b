//! svcframework: Marathon-compatible app definitions for long-running services on Agora.

mod app;

pub use app::{
    AppDefinition, AppJsonError, ConstraintSpec, Container, ContainerType, DockerSpec, FieldErrors,
    HealthCheck, HealthCheckProtocol, KillSelection, Network, NetworkMode, ParsedApp, PathId,
    PathIdError, Placement, PortDefinition, PortMapping, PortProtocol, UnknownField,
    UpgradeStrategy, ValidationErrors, Volume, VolumeMode, defaults,
};
