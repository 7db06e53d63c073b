//! Reading job JSON: types checked by serde (the error names the field's path), unknown fields
//! collected and reported, then every semantic rule checked at once.

use std::collections::BTreeSet;
use std::fmt;

use jiff::tz::TimeZone;
use serde::Serialize;

use agora_proto::{MAX_SCALAR, limits};

use super::spec::{JobId, JobSpec, parse_constraint};
use crate::cron::CronExpression;

/// Largest `completions` a run may ask for.
pub const MAX_COMPLETIONS: u32 = 100_000;
/// Largest `parallelism`.
pub const MAX_PARALLELISM: u32 = 10_000;
/// Largest `retries`.
pub const MAX_RETRIES: u32 = 10_000;

/// One offending field: its JSON pointer and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer of the field, e.g. `/run/cpus`.
    pub path: String,
    /// Why it was refused.
    pub reason: String,
}

impl FieldError {
    /// An error for `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Why job JSON was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct JobSpecError {
    /// Every offending field.
    pub errors: Vec<FieldError>,
}

/// A valid job and the fields that were ignored on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedJob {
    /// The job, defaults filled in.
    pub spec: JobSpec,
    /// JSON pointers of fields the model does not know; they were ignored.
    pub unknown_fields: Vec<String>,
}

/// Parses and validates job JSON.
pub fn parse_job(text: &[u8]) -> Result<ParsedJob, JobSpecError> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let mut spec: JobSpec =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = pointer(&error.path().to_string());
            let inner = error.into_inner();
            let reason = if inner.is_syntax() || inner.is_eof() {
                format!("malformed JSON: {inner}")
            } else {
                strip_position(&inner.to_string())
            };
            JobSpecError {
                errors: vec![FieldError::new(path, reason)],
            }
        })?;
    // One JSON document and nothing after it: `{...}garbage` is refused, not half-read.
    deserializer.end().map_err(|error| JobSpecError {
        errors: vec![FieldError::new(
            "/",
            format!(
                "malformed JSON: {} after the job object",
                strip_position(&error.to_string())
            ),
        )],
    })?;
    let unknown_fields = take_unknown_fields(&mut spec);
    let errors = validate(&spec);
    if !errors.is_empty() {
        return Err(JobSpecError { errors });
    }
    Ok(ParsedJob {
        spec,
        unknown_fields,
    })
}

/// `run.cpus` -> `/run/cpus`, `constraints[0]` -> `/constraints/0`, `.` -> `/`.
fn pointer(serde_path: &str) -> String {
    if serde_path == "." || serde_path.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::new();
    for segment in serde_path.split('.') {
        let mut rest = segment;
        if let Some(open) = rest.find('[') {
            out.push('/');
            out.push_str(&rest[..open]);
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let close = stripped.find(']').unwrap_or(stripped.len());
                out.push('/');
                out.push_str(&stripped[..close]);
                rest = stripped.get(close + 1..).unwrap_or("");
            }
        } else {
            out.push('/');
            out.push_str(rest);
        }
    }
    out
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

fn take_unknown_fields(spec: &mut JobSpec) -> Vec<String> {
    let mut unknown: Vec<String> = std::mem::take(&mut spec.unknown)
        .into_keys()
        .map(|key| format!("/{key}"))
        .collect();
    unknown.extend(
        std::mem::take(&mut spec.run.unknown)
            .into_keys()
            .map(|key| format!("/run/{key}")),
    );
    if let Some(schedule) = spec.schedule.as_mut() {
        unknown.extend(
            std::mem::take(&mut schedule.unknown)
                .into_keys()
                .map(|key| format!("/schedule/{key}")),
        );
    }
    unknown
}

fn check_quantity(errors: &mut Vec<FieldError>, path: &str, value: f64, allow_zero: bool) {
    if !value.is_finite() || value < 0.0 || (!allow_zero && value == 0.0) {
        let bound = if allow_zero {
            "zero or more"
        } else {
            "above zero"
        };
        errors.push(FieldError::new(
            path,
            format!(
                "must be a finite number {bound}, got {}",
                limits::display_number(value)
            ),
        ));
    }
}

/// A resource amount: at least `min` (the master's task minimum) and at most the
/// protocol's largest scalar.
fn check_resource(errors: &mut Vec<FieldError>, path: &str, value: f64, min: f64) {
    if !value.is_finite() || value < min || value > MAX_SCALAR {
        errors.push(FieldError::new(
            path,
            format!(
                "must be between {min} and {MAX_SCALAR:e}, got {}",
                limits::display_number(value)
            ),
        ));
    }
}

/// A duration in seconds: within the protocol's one-year bound.
fn check_seconds(errors: &mut Vec<FieldError>, path: &str, seconds: f64) {
    if seconds.is_finite()
        && seconds >= 0.0
        && let Err(error) = limits::check_duration_seconds(seconds)
    {
        errors.push(FieldError::new(path, error.to_string()));
    }
}

/// Every rule a job must follow on its own (rules involving other jobs are the core's).
pub fn validate(spec: &JobSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(problem) = JobId::problem(spec.id.as_str()) {
        errors.push(FieldError::new("/id", problem));
    }
    let run = &spec.run;
    let has_cmd = run.cmd.as_ref().is_some_and(|cmd| !cmd.trim().is_empty());
    if run.cmd.is_some() && !has_cmd {
        errors.push(FieldError::new("/run/cmd", "must not be blank"));
    }
    if has_cmd && !run.args.is_empty() {
        errors.push(FieldError::new(
            "/run/args",
            "give either cmd (a shell command) or args (exec'd directly), not both",
        ));
    }
    if run.cmd.is_none() && run.args.is_empty() && run.image.is_none() {
        errors.push(FieldError::new(
            "/run",
            "needs cmd or args (or an image with its own command)",
        ));
    }
    if run
        .image
        .as_ref()
        .is_some_and(|image| image.trim().is_empty())
    {
        errors.push(FieldError::new("/run/image", "must not be blank"));
    }
    for key in run.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            errors.push(FieldError::new(
                format!("/run/env/{key}"),
                "variable names must be non-empty and contain no '=' or NUL",
            ));
        }
    }
    // Zero cpus or mem would start a container without any limit: the master refuses such
    // tasks, so the job is refused here, where the field can be named.
    check_resource(&mut errors, "/run/cpus", run.cpus, limits::MIN_TASK_CPUS);
    check_resource(&mut errors, "/run/mem", run.mem, limits::MIN_TASK_MEM_MIB);
    check_resource(&mut errors, "/run/disk", run.disk, 0.0);
    if spec.completions == 0 || spec.completions > MAX_COMPLETIONS {
        errors.push(FieldError::new(
            "/completions",
            format!(
                "must be between 1 and {MAX_COMPLETIONS}, got {}",
                spec.completions
            ),
        ));
    }
    if spec.parallelism == 0 || spec.parallelism > MAX_PARALLELISM {
        errors.push(FieldError::new(
            "/parallelism",
            format!(
                "must be between 1 and {MAX_PARALLELISM}, got {}",
                spec.parallelism
            ),
        ));
    }
    if spec.retries > MAX_RETRIES {
        errors.push(FieldError::new(
            "/retries",
            format!("must be at most {MAX_RETRIES}, got {}", spec.retries),
        ));
    }
    check_quantity(&mut errors, "/backoffSeconds", spec.backoff_seconds, false);
    check_quantity(
        &mut errors,
        "/maxBackoffSeconds",
        spec.max_backoff_seconds,
        false,
    );
    check_seconds(&mut errors, "/backoffSeconds", spec.backoff_seconds);
    check_seconds(&mut errors, "/maxBackoffSeconds", spec.max_backoff_seconds);
    if spec.max_backoff_seconds < spec.backoff_seconds {
        errors.push(FieldError::new(
            "/maxBackoffSeconds",
            format!(
                "must not be below backoffSeconds ({})",
                spec.backoff_seconds
            ),
        ));
    }
    if spec.active_deadline_seconds == Some(0) {
        errors.push(FieldError::new(
            "/activeDeadlineSeconds",
            "must be at least 1",
        ));
    }
    if let Some(deadline) = spec.active_deadline_seconds {
        check_seconds(&mut errors, "/activeDeadlineSeconds", deadline as f64);
    }
    if let Some(schedule) = &spec.schedule {
        if let Err(error) = CronExpression::parse(&schedule.cron) {
            errors.push(FieldError::new("/schedule/cron", error.to_string()));
        }
        if let Err(error) = TimeZone::get(&schedule.timezone) {
            errors.push(FieldError::new(
                "/schedule/timezone",
                format!(
                    "{:?} is not a known IANA time zone: {error}",
                    schedule.timezone
                ),
            ));
        }
        if schedule.starting_deadline_seconds == Some(0) {
            errors.push(FieldError::new(
                "/schedule/startingDeadlineSeconds",
                "must be at least 1",
            ));
        }
        if let Some(deadline) = schedule.starting_deadline_seconds {
            check_seconds(
                &mut errors,
                "/schedule/startingDeadlineSeconds",
                deadline as f64,
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (index, dependency) in spec.dependencies.iter().enumerate() {
        let path = format!("/dependencies/{index}");
        if let Some(problem) = JobId::problem(dependency.as_str()) {
            errors.push(FieldError::new(path, problem));
        } else if dependency == &spec.id {
            errors.push(FieldError::new(path, "a job cannot depend on itself"));
        } else if !seen.insert(dependency) {
            errors.push(FieldError::new(
                path,
                format!("{dependency} is listed twice"),
            ));
        }
    }
    for (index, constraint) in spec.constraints.iter().enumerate() {
        if let Err(reason) = parse_constraint(constraint) {
            errors.push(FieldError::new(format!("/constraints/{index}"), reason));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let parsed = parse_job(
            br#"{"id":"hello","run":{"cmd":"echo hi","colour":"red"},"extra":1,
                 "schedule":{"cron":"*/5 * * * * *","foo":true}}"#,
        )
        .expect("valid");
        assert_eq!(parsed.spec.completions, 1);
        assert_eq!(parsed.spec.parallelism, 1);
        assert_eq!(parsed.spec.retries, 0);
        assert_eq!(parsed.spec.run.cpus, 0.1);
        assert_eq!(
            parsed.spec.schedule.as_ref().map(|s| s.timezone.as_str()),
            Some("UTC")
        );
        assert_eq!(
            parsed.unknown_fields,
            ["/extra", "/run/colour", "/schedule/foo"]
        );
        let round_trip = serde_json::to_value(&parsed.spec).expect("serializes");
        assert!(round_trip.get("extra").is_none(), "{round_trip}");
    }

    #[test]
    fn every_semantic_error_is_listed_with_its_path() {
        let error = parse_job(
            br#"{"id":"Bad Id","run":{"cmd":"x","args":["y"],"cpus":-1},"completions":0,
                 "parallelism":0,"backoffSeconds":10,"maxBackoffSeconds":1,
                 "schedule":{"cron":"61 * * * *","timezone":"Mars/Olympus"},
                 "dependencies":["Bad Id"],"constraints":[["hostname","SOMETIMES"], 5]}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = error.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/id",
                "/run/args",
                "/run/cpus",
                "/completions",
                "/parallelism",
                "/maxBackoffSeconds",
                "/schedule/cron",
                "/schedule/timezone",
                "/dependencies/0",
                "/constraints/0",
                "/constraints/1"
            ],
            "{error}"
        );
    }

    #[test]
    fn type_errors_name_the_path() {
        let error = parse_job(br#"{"id":"a","run":{"cmd":"x","cpus":"lots"}}"#).unwrap_err();
        assert_eq!(error.errors[0].path, "/run/cpus", "{error}");
        assert!(error.errors[0].reason.contains("invalid type"), "{error}");
        let error = parse_job(br#"{"id":"a","run":{"cmd":"x"},"constraints":[1"#).unwrap_err();
        assert!(error.errors[0].reason.contains("malformed JSON"), "{error}");
        let error = parse_job(br#"{"run":{"cmd":"x"}}"#).unwrap_err();
        assert!(
            error.errors[0].reason.contains("missing field `id`"),
            "{error}"
        );
    }

    #[test]
    fn trailing_garbage_after_the_json_is_refused() {
        let error = parse_job(br#"{"id":"a","run":{"cmd":"x"}} garbage"#).unwrap_err();
        assert_eq!(error.errors[0].path, "/", "{error}");
        assert!(error.errors[0].reason.contains("malformed JSON"), "{error}");
        let error = parse_job(br#"{"id":"a","run":{"cmd":"x"}}{"id":"b"}"#).unwrap_err();
        assert!(
            error.errors[0].reason.contains("after the job object"),
            "{error}"
        );
        assert!(parse_job(b"{\"id\":\"a\",\"run\":{\"cmd\":\"x\"}}\n  ").is_ok());
    }

    #[test]
    fn resources_and_durations_are_range_checked() {
        let error = parse_job(
            br#"{"id":"a","run":{"cmd":"x","cpus":0,"mem":0,"disk":1e300},
                 "backoffSeconds":1e308,"maxBackoffSeconds":1e308,
                 "activeDeadlineSeconds":100000000000}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = error.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/run/cpus",
                "/run/mem",
                "/run/disk",
                "/backoffSeconds",
                "/maxBackoffSeconds",
                "/activeDeadlineSeconds"
            ],
            "{error}"
        );
        assert!(error.errors[1].reason.contains("between 6"), "{error}");
        let error = parse_job(br#"{"id":"a","run":{"cmd":"x","cpus":0.1,"mem":5}}"#).unwrap_err();
        assert_eq!(error.errors[0].path, "/run/mem", "{error}");
        assert!(parse_job(br#"{"id":"a","run":{"cmd":"x","cpus":0.01,"mem":6}}"#).is_ok());
    }

    #[test]
    fn job_ids_leave_room_for_the_derived_task_ids() {
        let longest = "j".repeat(limits::MAX_DERIVING_ID_LEN);
        let body = format!(r#"{{"id":"{longest}","run":{{"cmd":"x"}}}}"#);
        assert!(parse_job(body.as_bytes()).is_ok());
        let task_id = crate::core::task_id_for(
            &JobId::new(&longest),
            crate::core::RunId(u64::MAX),
            u32::MAX,
        );
        assert_eq!(agora_proto::limits::check_id(&task_id), Ok(()));
        let body = format!(r#"{{"id":"{longest}j","run":{{"cmd":"x"}}}}"#);
        let error = parse_job(body.as_bytes()).unwrap_err();
        assert_eq!(error.errors[0].path, "/id", "{error}");
        assert!(error.errors[0].reason.contains("at most 200"), "{error}");
    }

    #[test]
    fn constraints_in_both_syntaxes() {
        let parsed = parse_job(
            br#"{"id":"a","run":{"cmd":"x"},"constraints":[["hostname","UNIQUE"],"disk==ssd"]}"#,
        )
        .expect("valid");
        assert_eq!(parsed.spec.parsed_constraints().len(), 2);
    }

    #[test]
    fn the_shipped_example_is_valid_and_complete() {
        let parsed = parse_job(include_bytes!("../../../../deploy/examples/job.json"))
            .expect("deploy/examples/job.json is valid");
        assert!(
            parsed.unknown_fields.is_empty(),
            "{:?}",
            parsed.unknown_fields
        );
        assert!(parsed.spec.retries > 0 && parsed.spec.parallelism > 1);
        assert!(parsed.spec.schedule.is_some());
        assert_eq!(parsed.spec.parsed_constraints().len(), 2);
    }
}
