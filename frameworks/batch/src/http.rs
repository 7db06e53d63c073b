//! The REST API: parses requests into core calls and maps results to HTTP status + JSON.

use agora_sdk::http::MetricsText;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::core::{ApiError, BatchCore, RunId, RunPhase};
use crate::job::{FieldError, JobId, parse_job};
use crate::server::call_core;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) calls: agora_sdk::CoreCalls<crate::core::BatchCore>,
}

pub(crate) fn router(state: ApiState) -> Router {
    agora_sdk::http::probe_routes()
        .route("/metrics", get(metrics))
        .route("/v1/jobs", get(list_jobs).post(create_job))
        .route(
            "/v1/jobs/{id}",
            get(get_job).put(update_job).delete(delete_job),
        )
        .route("/v1/jobs/{id}/runs", get(list_runs).post(run_now))
        .route("/v1/jobs/{id}/runs/{run}", get(get_run).delete(cancel_run))
        .with_state(state)
}

fn error_body(status: StatusCode, message: &str, errors: &[FieldError]) -> Response {
    (
        status,
        axum::Json(json!({"message": message, "errors": errors})),
    )
        .into_response()
}

/// The 415 answer unless the request declares a JSON body.
fn json_refusal(headers: &HeaderMap) -> Option<Response> {
    let reason = agora_sdk::http::non_json_body(headers)?;
    Some(error_body(StatusCode::UNSUPPORTED_MEDIA_TYPE, &reason, &[]))
}

fn unavailable() -> Response {
    error_body(
        StatusCode::SERVICE_UNAVAILABLE,
        "batchframework is stopping",
        &[],
    )
}

fn api_error(error: ApiError) -> Response {
    match error {
        ApiError::NotFound(what) => {
            error_body(StatusCode::NOT_FOUND, &format!("{what} not found"), &[])
        }
        ApiError::Conflict(message) => error_body(StatusCode::CONFLICT, &message, &[]),
        ApiError::Invalid(invalid) => error_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid job",
            &invalid.errors,
        ),
    }
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    match JobId::problem(text) {
        None => Ok(JobId::new(text)),
        Some(problem) => Err(ApiError::NotFound(format!("job {text:?} ({problem})"))),
    }
}

fn run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse::<u64>()
        .map(RunId)
        .map_err(|_| ApiError::NotFound(format!("run {text:?} (run ids are numbers)")))
}

async fn list_jobs(State(state): State<ApiState>) -> Response {
    match call_core(&state.calls, |core, now| core.jobs(now)).await {
        Some(jobs) => axum::Json(jobs).into_response(),
        None => unavailable(),
    }
}

async fn create_job(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = json_refusal(&headers) {
        return refused;
    }
    let parsed = match parse_job(&body) {
        Ok(parsed) => parsed,
        Err(invalid) => return api_error(ApiError::Invalid(invalid)),
    };
    let unknown_fields = parsed.unknown_fields;
    let job_id = parsed.spec.id.clone();
    let answer = call_core(&state.calls, move |core, now| {
        core.create_job(parsed.spec, now)
            .map(|run| (core.job(&job_id, now), run))
    })
    .await;
    match answer {
        Some(Ok((job, run))) => (
            StatusCode::CREATED,
            axum::Json(json!({"job": job, "run": run, "unknownFields": unknown_fields})),
        )
            .into_response(),
        Some(Err(error)) => api_error(error),
        None => unavailable(),
    }
}

async fn get_job(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let job_id = match job_id(&id) {
        Ok(job_id) => job_id,
        Err(error) => return api_error(error),
    };
    let wanted = job_id.clone();
    match call_core(&state.calls, move |core, now| core.job(&wanted, now)).await {
        Some(Some(job)) => axum::Json(job).into_response(),
        Some(None) => api_error(ApiError::NotFound(format!("job {job_id}"))),
        None => unavailable(),
    }
}

async fn update_job(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let job_id = match job_id(&id) {
        Ok(job_id) => job_id,
        Err(error) => return api_error(error),
    };
    if let Some(refused) = json_refusal(&headers) {
        return refused;
    }
    let parsed = match parse_job(&body) {
        Ok(parsed) => parsed,
        Err(invalid) => return api_error(ApiError::Invalid(invalid)),
    };
    if parsed.spec.id != job_id {
        return api_error(ApiError::Invalid(crate::job::JobSpecError {
            errors: vec![FieldError::new(
                "/id",
                format!(
                    "{} does not match the path's job id {job_id}",
                    parsed.spec.id
                ),
            )],
        }));
    }
    let unknown_fields = parsed.unknown_fields;
    let answer = call_core(&state.calls, move |core, now| {
        core.update_job(parsed.spec, now)
            .map(|()| core.job(&job_id, now))
    })
    .await;
    match answer {
        Some(Ok(job)) => {
            axum::Json(json!({"job": job, "unknownFields": unknown_fields})).into_response()
        }
        Some(Err(error)) => api_error(error),
        None => unavailable(),
    }
}

async fn delete_job(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let job_id = match job_id(&id) {
        Ok(job_id) => job_id,
        Err(error) => return api_error(error),
    };
    match call_core(&state.calls, move |core, now| core.delete_job(&job_id, now)).await {
        Some(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Some(Err(error)) => api_error(error),
        None => unavailable(),
    }
}

async fn list_runs(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let job_id = match job_id(&id) {
        Ok(job_id) => job_id,
        Err(error) => return api_error(error),
    };
    let wanted = job_id.clone();
    match call_core(&state.calls, move |core, _| core.runs(&wanted)).await {
        Some(Some(runs)) => axum::Json(runs).into_response(),
        Some(None) => api_error(ApiError::NotFound(format!("job {job_id}"))),
        None => unavailable(),
    }
}

async fn run_now(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let job_id = match job_id(&id) {
        Ok(job_id) => job_id,
        Err(error) => return api_error(error),
    };
    let answer = call_core(&state.calls, move |core, now| {
        core.run_now(&job_id, now)
            .map(|run_id| core.run(&job_id, run_id))
    })
    .await;
    match answer {
        Some(Ok(run)) => (StatusCode::CREATED, axum::Json(run)).into_response(),
        Some(Err(error)) => api_error(error),
        None => unavailable(),
    }
}

async fn get_run(
    State(state): State<ApiState>,
    Path((id, run)): Path<(String, String)>,
) -> Response {
    let (job_id, run_id) = match (job_id(&id), run_id(&run)) {
        (Ok(job_id), Ok(run_id)) => (job_id, run_id),
        (Err(error), _) | (_, Err(error)) => return api_error(error),
    };
    let wanted = job_id.clone();
    match call_core(&state.calls, move |core, _| core.run(&wanted, run_id)).await {
        Some(Some(run)) => axum::Json(run).into_response(),
        Some(None) => api_error(ApiError::NotFound(format!("run {run_id} of job {job_id}"))),
        None => unavailable(),
    }
}

async fn cancel_run(
    State(state): State<ApiState>,
    Path((id, run)): Path<(String, String)>,
) -> Response {
    let (job_id, run_id) = match (job_id(&id), run_id(&run)) {
        (Ok(job_id), Ok(run_id)) => (job_id, run_id),
        (Err(error), _) | (_, Err(error)) => return api_error(error),
    };
    let answer = call_core(&state.calls, move |core, now| {
        core.cancel_run(&job_id, run_id, now)
            .map(|()| core.run(&job_id, run_id))
    })
    .await;
    match answer {
        Some(Ok(run)) => axum::Json(run).into_response(),
        Some(Err(error)) => api_error(error),
        None => unavailable(),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    match call_core(&state.calls, |core, _| metrics_text(core)).await {
        Some(metrics) => metrics.into_response(),
        None => unavailable(),
    }
}

/// Prometheus text exposition of the core's counters and gauges.
pub fn render_metrics(core: &BatchCore) -> String {
    metrics_text(core).into_text()
}

fn metrics_text(core: &BatchCore) -> MetricsText {
    let counters = core.metrics();
    let (jobs, phases, active_attempts) = core.gauges();
    let mut out = MetricsText::new();
    out.single("agora_batch_jobs", "Jobs defined.", "gauge", jobs);
    out.single(
        "agora_batch_attempts_active",
        "Attempts launched and not finished.",
        "gauge",
        active_attempts,
    );
    out.single(
        "agora_batch_subscribed",
        "1 while subscribed to the master.",
        "gauge",
        u8::from(core.is_subscribed()),
    );
    out.family("agora_batch_runs", "Runs kept, by phase.", "gauge");
    for phase in [
        RunPhase::Waiting,
        RunPhase::Active,
        RunPhase::Succeeded,
        RunPhase::Failed,
        RunPhase::Cancelled,
    ] {
        let count = phases.get(&phase).copied().unwrap_or(0);
        out.sample("agora_batch_runs", &format!("phase=\"{phase}\""), count);
    }
    for (name, help, value) in [
        (
            "agora_batch_offers_received_total",
            "Offers received.",
            counters.offers_received,
        ),
        (
            "agora_batch_offers_declined_total",
            "Offers declined.",
            counters.offers_declined,
        ),
        (
            "agora_batch_tasks_launched_total",
            "Attempts launched.",
            counters.tasks_launched,
        ),
        (
            "agora_batch_attempts_succeeded_total",
            "Attempts that succeeded.",
            counters.attempts_succeeded,
        ),
        (
            "agora_batch_attempts_failed_total",
            "Attempts that failed.",
            counters.attempts_failed,
        ),
        (
            "agora_batch_attempts_not_started_total",
            "Attempts the master never ran.",
            counters.attempts_not_started,
        ),
        (
            "agora_batch_attempts_lost_total",
            "Attempts lost with their agent and replaced.",
            counters.attempts_lost,
        ),
        (
            "agora_batch_schedule_fires_total",
            "Runs created by schedules.",
            counters.schedule_fires,
        ),
        (
            "agora_batch_schedule_skips_total",
            "Schedule fires skipped (FORBID or startingDeadlineSeconds).",
            counters.schedule_skips,
        ),
        (
            "agora_batch_schedule_missed_total",
            "Schedule times superseded while the daemon was away.",
            counters.schedule_missed,
        ),
        (
            "agora_batch_runs_succeeded_total",
            "Runs that succeeded.",
            counters.runs_succeeded,
        ),
        (
            "agora_batch_runs_failed_total",
            "Runs that failed.",
            counters.runs_failed,
        ),
        (
            "agora_batch_runs_cancelled_total",
            "Runs cancelled.",
            counters.runs_cancelled,
        ),
    ] {
        out.single(name, help, "counter", value);
    }
    out
}
