//! The agent's HTTP endpoint: `/health`, `/metrics` (Prometheus text) and `/state` (JSON).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{mpsc, oneshot};

use crate::shell::AgentEvent;
use crate::snapshot::AgentSnapshot;

/// The routes, answering from the control loop behind `events`.
pub(crate) fn router(events: mpsc::Sender<AgentEvent>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/state", get(state))
        .with_state(events)
}

pub(crate) async fn request_snapshot(events: &mpsc::Sender<AgentEvent>) -> Option<AgentSnapshot> {
    let (reply, answer) = oneshot::channel();
    events.send(AgentEvent::Snapshot(reply)).await.ok()?;
    answer.await.ok()
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "agent is shutting down\n").into_response()
}

async fn health(State(events): State<mpsc::Sender<AgentEvent>>) -> Response {
    match request_snapshot(&events).await {
        Some(snapshot) => axum::Json(serde_json::json!({
            "status": "ok",
            "connected": snapshot.connected,
            "agent_id": snapshot.agent_id,
        }))
        .into_response(),
        None => unavailable(),
    }
}

async fn metrics(State(events): State<mpsc::Sender<AgentEvent>>) -> Response {
    match request_snapshot(&events).await {
        Some(snapshot) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            snapshot.prometheus(),
        )
            .into_response(),
        None => unavailable(),
    }
}

async fn state(State(events): State<mpsc::Sender<AgentEvent>>) -> Response {
    match request_snapshot(&events).await {
        Some(snapshot) => axum::Json(snapshot).into_response(),
        None => unavailable(),
    }
}
