//! Pieces every framework's HTTP API shares: the liveness routes, the refusal of a request
//! body that is not declared JSON, and the Prometheus text of `/metrics`. The shape of error
//! bodies stays with each framework (Marathon's for svcframework, its own for batch).

use std::fmt::{Display, Write as _};

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// `GET /ping` (`pong`) and `GET /health` (`{"status": "ok"}`), to merge into a framework's
/// router.
pub fn probe_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route(
            "/health",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
}

/// Why a request's body is refused with 415 unless its `Content-Type` declares JSON (as
/// Marathon answers): a body sent as form data or text is refused before it is read rather
/// than parsed by guesswork. `None` when the body may be read.
pub fn non_json_body(headers: &HeaderMap) -> Option<String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    if agora_proto::is_json_content_type(content_type) {
        return None;
    }
    Some(format!(
        "the body must be JSON sent with Content-Type: application/json, got {}",
        content_type.map_or("no Content-Type".to_owned(), |value| format!("{value:?}"))
    ))
}

/// The Prometheus text exposition format, written one metric family at a time.
#[derive(Debug, Default)]
pub struct MetricsText {
    text: String,
}

impl MetricsText {
    /// An empty exposition.
    pub fn new() -> Self {
        MetricsText::default()
    }

    /// A metric family without labels: its `# HELP` and `# TYPE` lines and its one sample.
    /// `kind` is `gauge` or `counter`.
    pub fn single(&mut self, name: &str, help: &str, kind: &str, value: impl Display) {
        self.family(name, help, kind);
        self.sample(name, "", value);
    }

    /// The `# HELP` and `# TYPE` lines of a family whose samples follow.
    pub fn family(&mut self, name: &str, help: &str, kind: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample; `labels` is the text between the braces (`phase="active"`), empty for
    /// none.
    pub fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        let _ = if labels.is_empty() {
            writeln!(self.text, "{name} {value}")
        } else {
            writeln!(self.text, "{name}{{{labels}}} {value}")
        };
    }

    /// The text written so far.
    pub fn into_text(self) -> String {
        self.text
    }
}

impl IntoResponse for MetricsText {
    fn into_response(self) -> Response {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            self.text,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_a_json_content_type_lets_a_body_through() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            non_json_body(&headers).as_deref(),
            Some(
                "the body must be JSON sent with Content-Type: application/json, got no Content-Type"
            )
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            non_json_body(&headers).as_deref(),
            Some(
                "the body must be JSON sent with Content-Type: application/json, got \"text/plain\""
            )
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(non_json_body(&headers), None);
    }

    #[test]
    fn metrics_are_written_in_the_exposition_format() {
        let mut metrics = MetricsText::new();
        metrics.single("apps", "Apps defined.", "gauge", 3);
        metrics.family("runs", "Runs by phase.", "gauge");
        metrics.sample("runs", "phase=\"active\"", 2);
        assert_eq!(
            metrics.into_text(),
            "# HELP apps Apps defined.\n# TYPE apps gauge\napps 3\n\
             # HELP runs Runs by phase.\n# TYPE runs gauge\nruns{phase=\"active\"} 2\n"
        );
    }
}
