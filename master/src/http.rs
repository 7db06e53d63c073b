//! HTTP/JSON routes served next to gRPC on the master's port: `/health`, `/metrics`,
//! `/state` and its `/state/agents`, `/state/frameworks`, `/state/tasks` subsets.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::actor::{self, ActorHandle};
use crate::metrics::{ShellMetrics, render_prometheus};
use crate::state_json;

/// What the HTTP handlers share.
#[derive(Clone)]
pub(crate) struct HttpState {
    actor: ActorHandle,
    metrics: Arc<ShellMetrics>,
}

/// The HTTP routes.
pub(crate) fn routes(actor: ActorHandle, metrics: Arc<ShellMetrics>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/state", get(state_all))
        .route("/state/agents", get(state_agents))
        .route("/state/frameworks", get(state_frameworks))
        .route("/state/tasks", get(state_tasks))
        .with_state(HttpState { actor, metrics })
}

/// Answer for paths nobody serves (neither HTTP nor gRPC).
pub(crate) async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such path")
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn unavailable() -> Response {
    error_response(StatusCode::SERVICE_UNAVAILABLE, "master is shutting down")
}

async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn metrics_text(State(state): State<HttpState>) -> Response {
    let Ok(core_metrics) = state
        .actor
        .call(|reply| actor::Request::Metrics { reply })
        .await
    else {
        return unavailable();
    };
    let text = render_prometheus(&core_metrics, &state.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn with_cluster_state(
    state: &HttpState,
    render: impl FnOnce(&agora_proto::v1::ClusterState) -> Value,
) -> Response {
    match state
        .actor
        .call(|reply| actor::Request::GetState { reply })
        .await
    {
        Ok(cluster) => axum::Json(render(&cluster)).into_response(),
        Err(_) => unavailable(),
    }
}

async fn state_all(State(state): State<HttpState>) -> Response {
    with_cluster_state(&state, state_json::cluster_state_json).await
}

async fn state_agents(State(state): State<HttpState>) -> Response {
    with_cluster_state(&state, state_json::agents_json).await
}

async fn state_frameworks(State(state): State<HttpState>) -> Response {
    with_cluster_state(&state, state_json::frameworks_json).await
}

async fn state_tasks(State(state): State<HttpState>) -> Response {
    with_cluster_state(&state, state_json::tasks_json).await
}
