//! Errors of the agent and of its runtimes.

use std::path::PathBuf;

use agora_proto::ResourceError;

/// Why the agent could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// `--resources` could not be parsed.
    #[error("invalid --resources {input:?}: {source}")]
    Resources {
        /// The text given.
        input: String,
        /// What is wrong with it.
        source: ResourceError,
    },
    /// A `--label` is not `KEY=VALUE`.
    #[error("invalid --label {input:?}: expected KEY=VALUE with a non-empty KEY")]
    Label {
        /// The text given.
        input: String,
    },
    /// The work dir or a checkpoint under it could not be read or written.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// File or directory concerned.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// `--runtime docker` was asked for but no engine answers.
    #[error("docker engine unreachable ({host}): {reason}")]
    DockerUnavailable {
        /// Where the engine was looked for.
        host: String,
        /// The connection error.
        reason: String,
    },
    /// The HTTP endpoint could not listen.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The `--listen` address.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The agent's internal loop stopped unexpectedly.
    #[error("agent stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
}

/// Why a runtime operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not present and could not be pulled.
    #[error("image {image:?} is not available locally and could not be pulled: {reason}")]
    ImagePull {
        /// The image reference.
        image: String,
        /// The engine's error.
        reason: String,
    },
    /// The task cannot run on this runtime as described.
    #[error("invalid task: {reason}")]
    InvalidTask {
        /// Which field is wrong and why.
        reason: String,
    },
    /// Creating or starting the container or process failed.
    #[error("launch failed: {reason}")]
    Launch {
        /// The underlying error.
        reason: String,
    },
    /// The container or process is gone.
    #[error("container {container_id} not found")]
    NotFound {
        /// The container id or pid.
        container_id: String,
    },
    /// Any other engine or OS error.
    #[error("{operation} failed: {reason}")]
    Operation {
        /// What was attempted.
        operation: &'static str,
        /// The underlying error.
        reason: String,
    },
}
