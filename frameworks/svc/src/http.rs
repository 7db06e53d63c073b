//! The REST API in Marathon's shape. Handlers only parse requests into core calls and map
//! answers and [`ApiError`]s to HTTP; the core decides.

use std::collections::HashMap;
use std::convert::Infallible;

use agora_sdk::http::MetricsText;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde_json::{Map, Value, json};

use crate::app::{AppDefinition, AppJsonError, ParsedApp, UnknownField};
use crate::core::{ApiError, DeploymentRef, parse_app_id};
use crate::server::CoreHandle;

/// The routes.
pub(crate) fn routes(core: CoreHandle) -> Router {
    agora_sdk::http::probe_routes()
        .route("/metrics", get(metrics))
        .route("/v2/info", get(info))
        .route("/v2/apps", get(list_apps).post(create_app))
        .route(
            "/v2/apps/{*path}",
            get(app_resource)
                .put(app_resource)
                .delete(app_resource)
                .post(app_resource),
        )
        .route("/v2/groups", post(create_group))
        .route("/v2/deployments", get(list_deployments))
        .route(
            "/v2/deployments/{id}",
            get(get_deployment).delete(delete_deployment),
        )
        .route("/v2/queue", get(queue))
        .route("/v2/events", get(events))
        .fallback(|| async { message(StatusCode::NOT_FOUND, "no such path") })
        .with_state(core)
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "message": text.into() }))).into_response()
}

/// The 415 answer unless the request declares a JSON body.
fn json_refusal(headers: &HeaderMap) -> Option<Response> {
    let reason = agora_sdk::http::non_json_body(headers)?;
    Some(message(StatusCode::UNSUPPORTED_MEDIA_TYPE, reason))
}

fn unavailable() -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "svcframework is shutting down",
    )
}

fn api_error(error: ApiError) -> Response {
    match &error {
        ApiError::InvalidId { reason, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({
                "message": "Object is not valid",
                "details": [{ "path": "/id", "errors": [reason] }],
            })),
        )
            .into_response(),
        ApiError::Invalid(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(errors.to_json()),
        )
            .into_response(),
        ApiError::AppNotFound(_)
        | ApiError::DeploymentNotFound(_)
        | ApiError::VersionNotFound { .. } => message(StatusCode::NOT_FOUND, error.to_string()),
        ApiError::Locked { deployments, .. } => (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "message": error.to_string(),
                "deployments": deployments.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
        ApiError::AppExists(_) | ApiError::NoEarlierVersion(_) | ApiError::BeingDestroyed(_) => {
            message(StatusCode::CONFLICT, error.to_string())
        }
    }
}

fn json_error(error: &AppJsonError) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(error.to_json()),
    )
        .into_response()
}

fn warnings_json(warnings: &[UnknownField]) -> Value {
    Value::Array(
        warnings
            .iter()
            .map(|warning| json!({ "path": warning.path, "message": "unknown field, ignored" }))
            .collect(),
    )
}

fn deployment_answer(
    status: StatusCode,
    answer: &DeploymentRef,
    warnings: &[UnknownField],
) -> Response {
    let mut body = json!({ "deploymentId": answer.deployment_id, "version": answer.version });
    if !warnings.is_empty() {
        body["warnings"] = warnings_json(warnings);
    }
    (status, axum::Json(body)).into_response()
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|value| value.is_empty() || value == "true" || value == "1")
}

async fn metrics(State(core): State<CoreHandle>) -> Response {
    let Some(figures) = core.call(|core, _| core.metrics()).await else {
        return unavailable();
    };
    let mut text = MetricsText::new();
    // Samples print as f64 always did: `3`, not `3.0`.
    for (name, help, kind, value) in [
        (
            "agora_svc_apps",
            "Apps defined.",
            "gauge",
            figures.apps as f64,
        ),
        (
            "agora_svc_instances",
            "Instances known, any state.",
            "gauge",
            figures.instances as f64,
        ),
        (
            "agora_svc_instances_running",
            "Instances running.",
            "gauge",
            figures.instances_running as f64,
        ),
        (
            "agora_svc_instances_ready",
            "Instances running and healthy.",
            "gauge",
            figures.instances_ready as f64,
        ),
        (
            "agora_svc_deployments_running",
            "Deployments in progress.",
            "gauge",
            figures.deployments_running as f64,
        ),
        (
            "agora_svc_queued_instances",
            "Instances waiting to be placed.",
            "gauge",
            figures.queued as f64,
        ),
        (
            "agora_svc_offers_received_total",
            "Offers received.",
            "counter",
            figures.offers_received as f64,
        ),
        (
            "agora_svc_instances_launched_total",
            "Instances launched.",
            "counter",
            figures.launched as f64,
        ),
        (
            "agora_svc_kills_total",
            "Kills sent.",
            "counter",
            figures.kills as f64,
        ),
        (
            "agora_svc_instance_failures_total",
            "Instances that ended unexpectedly.",
            "counter",
            figures.failures as f64,
        ),
    ] {
        text.single(name, help, kind, value);
    }
    text.into_response()
}

async fn info(State(core): State<CoreHandle>) -> Response {
    match core.call(|core, _| core.info_json()).await {
        Some(body) => axum::Json(body).into_response(),
        None => unavailable(),
    }
}

async fn list_apps(
    State(core): State<CoreHandle>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let prefix = query
        .get("id")
        .map(|id| format!("/{}", id.trim_start_matches('/')));
    let embed_tasks = query
        .get("embed")
        .is_some_and(|embed| embed.contains("tasks"));
    match core
        .call(move |core, _| core.apps_json(prefix.as_deref(), embed_tasks))
        .await
    {
        Some(body) => axum::Json(body).into_response(),
        None => unavailable(),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, AppJsonError> {
    let text = String::from_utf8_lossy(body);
    serde_json::from_str(&text).map_err(|error| AppJsonError::Syntax {
        line: error.line(),
        column: error.column(),
        message: error.to_string(),
    })
}

fn parse_app(value: &Value) -> Result<ParsedApp, AppJsonError> {
    AppDefinition::from_json_value(value).map_err(AppJsonError::Invalid)
}

async fn create_app(State(core): State<CoreHandle>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = json_refusal(&headers) {
        return refused;
    }
    let parsed = match parse_body(&body).and_then(|value| parse_app(&value)) {
        Ok(parsed) => parsed,
        Err(error) => return json_error(&error),
    };
    let ParsedApp { app, warnings } = parsed;
    let app_id = app.id.as_str().to_owned();
    let created_id = app_id.clone();
    let answer = core
        .call(move |core, now| {
            core.create_app(app, now).map(|answer| {
                let detail = core.app_detail_json(&app_id);
                (answer, detail)
            })
        })
        .await;
    match answer {
        None => unavailable(),
        Some(Err(error)) => api_error(error),
        Some(Ok((answer, detail))) => {
            tracing::info!(app_id = %created_id, deployment_id = %answer.deployment_id, "app created");
            let mut body = detail
                .and_then(|mut detail| detail.get_mut("app").map(Value::take))
                .unwrap_or_else(|| json!({}));
            body["deployments"] = json!([{ "id": answer.deployment_id }]);
            if !warnings.is_empty() {
                body["warnings"] = warnings_json(&warnings);
            }
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
    }
}

async fn create_group(
    State(core): State<CoreHandle>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = json_refusal(&headers) {
        return refused;
    }
    let value = match parse_body(&body) {
        Ok(value) => value,
        Err(error) => return json_error(&error),
    };
    let group_id = value
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_owned();
    let Some(apps) = value.get("apps").and_then(Value::as_array) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({ "message": "Object is not valid", "details": [{ "path": "/apps", "errors": ["must be an array of app definitions"] }] })),
        )
            .into_response();
    };
    let mut definitions = Vec::new();
    let mut warnings = Vec::new();
    let mut errors = crate::app::ValidationErrors::default();
    for (index, app) in apps.iter().enumerate() {
        let mut app = app.clone();
        // Relative ids resolve against the group, as in Marathon.
        if let Some(id) = app.get("id").and_then(Value::as_str)
            && !id.starts_with('/')
        {
            app["id"] = json!(format!("{}/{id}", group_id.trim_end_matches('/')));
        }
        match AppDefinition::from_json_value(&app) {
            Ok(parsed) => {
                warnings.extend(parsed.warnings);
                definitions.push(parsed.app);
            }
            Err(app_errors) => {
                for field in app_errors.details {
                    for error in field.errors {
                        errors.push(
                            format!("/apps/{index}{}", field.path.trim_end_matches('/')),
                            error,
                        );
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return api_error(ApiError::Invalid(errors));
    }
    let force = flag(&query, "force");
    match core
        .call(move |core, now| core.put_apps(definitions, force, now))
        .await
    {
        None => unavailable(),
        Some(Err(error)) => api_error(error),
        Some(Ok(answer)) => deployment_answer(StatusCode::CREATED, &answer, &warnings),
    }
}

/// `/v2/apps/{id}`, `/v2/apps/{id}/restart`, `/v2/apps/{id}/tasks`,
/// `/v2/apps/{id}/versions` and `/v2/apps/{id}/versions/{version}`.
async fn app_resource(
    State(core): State<CoreHandle>,
    method: Method,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (id_segments, resource): (&[&str], Vec<&str>) = match segments.as_slice() {
        [id @ .., "restart"] if !id.is_empty() => (id, vec!["restart"]),
        [id @ .., "tasks"] if !id.is_empty() => (id, vec!["tasks"]),
        [id @ .., "versions"] if !id.is_empty() => (id, vec!["versions"]),
        [id @ .., "versions", version] if !id.is_empty() => (id, vec!["versions", version]),
        all => (all, Vec::new()),
    };
    let app_id = match parse_app_id(&id_segments.join("/")) {
        Ok(app_id) => app_id,
        Err(error) => return api_error(error),
    };
    let force = flag(&query, "force");
    let id = app_id.as_str().to_owned();
    let not_found = || message(StatusCode::NOT_FOUND, format!("app {id} does not exist"));
    match (method.clone(), resource.as_slice()) {
        (Method::GET, []) => {
            let key = id.clone();
            match core.call(move |core, _| core.app_detail_json(&key)).await {
                None => unavailable(),
                Some(None) => not_found(),
                Some(Some(body)) => axum::Json(body).into_response(),
            }
        }
        (Method::GET, ["tasks"]) => {
            let key = id.clone();
            match core.call(move |core, _| core.tasks_json(&key)).await {
                None => unavailable(),
                Some(None) => not_found(),
                Some(Some(body)) => axum::Json(body).into_response(),
            }
        }
        (Method::GET, ["versions"]) => {
            let key = id.clone();
            match core.call(move |core, _| core.versions_json(&key)).await {
                None => unavailable(),
                Some(None) => not_found(),
                Some(Some(body)) => axum::Json(body).into_response(),
            }
        }
        (Method::GET, ["versions", version]) => {
            let key = id.clone();
            let version = (*version).to_owned();
            match core
                .call(move |core, _| core.version_json(&key, &version))
                .await
            {
                None => unavailable(),
                Some(None) => message(StatusCode::NOT_FOUND, "no such version"),
                Some(Some(body)) => axum::Json(body).into_response(),
            }
        }
        (Method::POST, ["restart"]) => {
            match core
                .call(move |core, now| core.restart_app(&app_id, force, now))
                .await
            {
                None => unavailable(),
                Some(Err(error)) => api_error(error),
                Some(Ok(answer)) => deployment_answer(StatusCode::OK, &answer, &[]),
            }
        }
        (Method::DELETE, []) => {
            match core
                .call(move |core, now| core.destroy_app(&app_id, force, now))
                .await
            {
                None => unavailable(),
                Some(Err(error)) => api_error(error),
                Some(Ok(answer)) => deployment_answer(StatusCode::OK, &answer, &[]),
            }
        }
        (Method::PUT, []) => {
            if let Some(refused) = json_refusal(&headers) {
                return refused;
            }
            let partial = query
                .get("partialUpdate")
                .is_none_or(|value| value != "false");
            put_app(core, app_id, body, partial, force).await
        }
        _ => message(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported on /v2/apps/{path}"),
        ),
    }
}

async fn put_app(
    core: CoreHandle,
    app_id: crate::PathId,
    body: Bytes,
    partial: bool,
    force: bool,
) -> Response {
    let mut value = match parse_body(&body) {
        Ok(value) => value,
        Err(error) => return json_error(&error),
    };
    let Value::Object(fields) = &mut value else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({ "message": "Object is not valid", "details": [{ "path": "/", "errors": ["must be a JSON object"] }] })),
        )
            .into_response();
    };
    // `{"version": "..."}` alone rolls the app back to that stored version (Marathon).
    if fields.len() == 1
        && let Some(version) = fields.get("version").and_then(Value::as_str)
    {
        let version = version.to_owned();
        return match core
            .call(move |core, now| core.rollback_app(&app_id, Some(&version), force, now))
            .await
        {
            None => unavailable(),
            Some(Err(error)) => api_error(error),
            Some(Ok(answer)) => deployment_answer(StatusCode::OK, &answer, &[]),
        };
    }
    match fields.get("id").and_then(Value::as_str) {
        Some(given) => match parse_app_id(given) {
            Ok(given_id) if given_id == app_id => {}
            _ => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(json!({ "message": "Object is not valid", "details": [{ "path": "/id", "errors": [format!("{given:?} does not match the path's app id {app_id}")] }] })),
                )
                    .into_response();
            }
        },
        None => {
            fields.insert("id".into(), json!(app_id.as_str()));
        }
    }
    let update: Map<String, Value> = fields.clone();
    let key = app_id.as_str().to_owned();
    let Some(current) = core
        .call(move |core, _| core.app_definition_json(&key))
        .await
    else {
        return unavailable();
    };
    let merged = match (partial, current) {
        (true, Some(Value::Object(mut current))) => {
            current.remove("version");
            for (name, field) in update {
                current.insert(name, field);
            }
            Value::Object(current)
        }
        _ => Value::Object(update),
    };
    let parsed = match parse_app(&merged) {
        Ok(parsed) => parsed,
        Err(error) => return json_error(&error),
    };
    let ParsedApp { app, warnings } = parsed;
    match core
        .call(move |core, now| core.put_app(app, force, now))
        .await
    {
        None => unavailable(),
        Some(Err(error)) => api_error(error),
        Some(Ok(answer)) => {
            tracing::info!(%app_id, deployment_id = %answer.deployment_id, "app created or updated");
            deployment_answer(StatusCode::OK, &answer, &warnings)
        }
    }
}

async fn list_deployments(
    State(core): State<CoreHandle>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let all = flag(&query, "all");
    match core.call(move |core, _| core.deployments_json(all)).await {
        Some(body) => axum::Json(body).into_response(),
        None => unavailable(),
    }
}

async fn get_deployment(State(core): State<CoreHandle>, Path(id): Path<String>) -> Response {
    let key = id.clone();
    match core.call(move |core, _| core.deployment_json(&key)).await {
        None => unavailable(),
        Some(None) => message(
            StatusCode::NOT_FOUND,
            format!("deployment {id} does not exist"),
        ),
        Some(Some(body)) => axum::Json(body).into_response(),
    }
}

async fn delete_deployment(
    State(core): State<CoreHandle>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let force = flag(&query, "force");
    match core
        .call(move |core, now| core.cancel_deployment(&id, force, now))
        .await
    {
        None => unavailable(),
        Some(Err(error)) => api_error(error),
        Some(Ok(None)) => StatusCode::ACCEPTED.into_response(),
        Some(Ok(Some(answer))) => deployment_answer(StatusCode::OK, &answer, &[]),
    }
}

async fn queue(State(core): State<CoreHandle>) -> Response {
    match core.call(|core, now| core.queue_json(now)).await {
        Some(body) => axum::Json(body).into_response(),
        None => unavailable(),
    }
}

async fn events(
    State(core): State<CoreHandle>,
    Query(query): Query<HashMap<String, String>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let wanted: Option<Vec<String>> = query
        .get("event_type")
        .map(|types| types.split(',').map(str::to_owned).collect());
    let mut receiver = core.subscribe();
    let shutdown = core.shutdown_token();
    let stream = async_stream::stream! {
        yield Ok(Event::default().event("event_stream_attached").data(json!({ "eventType": "event_stream_attached" }).to_string()));
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                received = receiver.recv() => received,
            };
            match received {
                Ok(event) => {
                    if wanted.as_ref().is_some_and(|wanted| !wanted.iter().any(|name| name == event.event_type)) {
                        continue;
                    }
                    yield Ok(Event::default().event(event.event_type).data(event.payload.to_string()));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    yield Ok(Event::default().event("events_dropped").data(json!({ "eventType": "events_dropped", "missed": missed }).to_string()));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default())
}
