//! The client subcommands: talk to a running daemon's REST API, print tables or JSON.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use agora_sdk::cli::{ApiClient, items, pretty, table};
use anyhow::{Context, bail};
use serde_json::Value;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human tables.
    Table,
    /// The API's JSON.
    Json,
}

/// A client of one daemon.
pub struct Client {
    api: ApiClient,
    output: Output,
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("-")
}

fn number(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .filter(|found| !found.is_null())
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

impl Client {
    /// A client of the daemon at `base` (e.g. `http://127.0.0.1:8090`).
    pub fn new(base: &str, output: Output) -> anyhow::Result<Self> {
        let api = ApiClient::new("batchframework", base)?;
        Ok(Self { api, output })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let answer = self.api.send(request).await?;
        Ok((answer.status, answer.body))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, value) = self
            .send(self.api.request(reqwest::Method::GET, path))
            .await?;
        ensure_ok(status, &value)?;
        Ok(value)
    }

    /// `submit FILE [--wait]`: creates the job, or updates it and runs it now when it
    /// exists; with `wait`, follows the run until it ends.
    pub async fn submit(&self, file: &Path, wait: bool) -> anyhow::Result<ExitCode> {
        let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let (status, value) = self
            .send(
                self.api
                    .request(reqwest::Method::POST, "/v1/jobs")
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await?;
        let (job_id, run_id, unknown) = if status == 409 {
            let job_id: Value = serde_json::from_slice(&body)
                .ok()
                .and_then(|spec: Value| spec.get("id").cloned())
                .unwrap_or(Value::Null);
            let job_id = job_id.as_str().unwrap_or_default().to_owned();
            let (status, updated) = self
                .send(
                    self.api
                        .request(reqwest::Method::PUT, &format!("/v1/jobs/{job_id}"))
                        .header("content-type", "application/json")
                        .body(body),
                )
                .await?;
            ensure_ok(status, &updated)?;
            let has_schedule = updated.pointer("/job/spec/schedule").is_some();
            let run = if has_schedule {
                None
            } else {
                let (status, run) = self
                    .send(
                        self.api
                            .request(reqwest::Method::POST, &format!("/v1/jobs/{job_id}/runs")),
                    )
                    .await?;
                ensure_ok(status, &run)?;
                run.get("id").and_then(Value::as_u64)
            };
            (job_id, run, updated.get("unknownFields").cloned())
        } else {
            ensure_ok(status, &value)?;
            let job_id = text(&value, "/job/spec/id").to_owned();
            (
                job_id,
                value.get("run").and_then(Value::as_u64),
                value.get("unknownFields").cloned(),
            )
        };
        if let Some(Value::Array(fields)) = &unknown {
            for field in fields {
                eprintln!("warning: unknown field {field} ignored");
            }
        }
        match (self.output, run_id) {
            (Output::Json, _) => {
                println!("{}", serde_json::json!({"job": job_id, "run": run_id}));
            }
            (Output::Table, Some(run)) => println!("job {job_id} submitted, run {run}"),
            (Output::Table, None) => println!("job {job_id} submitted (runs on its schedule)"),
        }
        match (wait, run_id) {
            (true, Some(run)) => self.wait(&job_id, run).await,
            _ => Ok(ExitCode::SUCCESS),
        }
    }

    async fn wait(&self, job_id: &str, run: u64) -> anyhow::Result<ExitCode> {
        let mut last_line = String::new();
        loop {
            let value = self.get(&format!("/v1/jobs/{job_id}/runs/{run}")).await?;
            let phase = text(&value, "/phase").to_owned();
            let line = format!(
                "run {run}: {phase}  {}/{} succeeded, {} active, {} failures{}",
                number(&value, "/succeeded"),
                number(&value, "/spec/completions"),
                number(&value, "/active"),
                number(&value, "/failures"),
                value
                    .get("waitingReason")
                    .and_then(Value::as_str)
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default(),
            );
            if line != last_line {
                eprintln!("{line}");
                last_line = line;
            }
            match phase.as_str() {
                "SUCCEEDED" => return Ok(ExitCode::SUCCESS),
                "FAILED" | "CANCELLED" => {
                    eprintln!("run {run} {phase}: {}", text(&value, "/message"));
                    return Ok(ExitCode::FAILURE);
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// `list`: every job.
    pub async fn list(&self) -> anyhow::Result<ExitCode> {
        let jobs = self.get("/v1/jobs").await?;
        if self.output == Output::Json {
            println!("{}", pretty(&jobs));
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows = vec![vec![
            "ID".to_owned(),
            "SCHEDULE".to_owned(),
            "ACTIVE".to_owned(),
            "LATEST RUN".to_owned(),
            "NEXT".to_owned(),
        ]];
        for job in jobs.as_array().into_iter().flatten() {
            rows.push(vec![
                text(job, "/spec/id").to_owned(),
                text(job, "/spec/schedule/cron").to_owned(),
                job.get("activeRuns")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
                    .to_string(),
                match job.get("latestRun") {
                    Some(run) => format!("{} {}", number(run, "/id"), text(run, "/phase")),
                    None => "-".to_owned(),
                },
                text(job, "/nextScheduleTime").to_owned(),
            ]);
        }
        print!("{}", table(&rows));
        Ok(ExitCode::SUCCESS)
    }

    /// `status ID`: one job.
    pub async fn status(&self, job_id: &str) -> anyhow::Result<ExitCode> {
        let job = self.get(&format!("/v1/jobs/{job_id}")).await?;
        if self.output == Output::Json {
            println!("{}", pretty(&job));
            return Ok(ExitCode::SUCCESS);
        }
        let rows = vec![
            vec!["id".to_owned(), text(&job, "/spec/id").to_owned()],
            vec![
                "command".to_owned(),
                job.pointer("/spec/run/cmd")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| number(&job, "/spec/run/args")),
            ],
            vec!["image".to_owned(), text(&job, "/spec/run/image").to_owned()],
            vec![
                "completions / parallelism / retries".to_owned(),
                format!(
                    "{} / {} / {}",
                    number(&job, "/spec/completions"),
                    number(&job, "/spec/parallelism"),
                    number(&job, "/spec/retries")
                ),
            ],
            vec![
                "schedule".to_owned(),
                text(&job, "/spec/schedule/cron").to_owned(),
            ],
            vec![
                "next fire".to_owned(),
                text(&job, "/nextScheduleTime").to_owned(),
            ],
            vec!["active runs".to_owned(), number(&job, "/activeRuns")],
            vec![
                "latest run".to_owned(),
                format!(
                    "{} {}",
                    number(&job, "/latestRun/id"),
                    text(&job, "/latestRun/phase")
                ),
            ],
        ];
        print!("{}", table(&rows));
        Ok(ExitCode::SUCCESS)
    }

    /// `runs ID`: a job's runs.
    pub async fn runs(&self, job_id: &str) -> anyhow::Result<ExitCode> {
        let runs = self.get(&format!("/v1/jobs/{job_id}/runs")).await?;
        if self.output == Output::Json {
            println!("{}", pretty(&runs));
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows = vec![vec![
            "RUN".to_owned(),
            "PHASE".to_owned(),
            "TRIGGER".to_owned(),
            "SUCCEEDED".to_owned(),
            "FAILURES".to_owned(),
            "ACTIVE".to_owned(),
            "CREATED".to_owned(),
            "MESSAGE".to_owned(),
        ]];
        for run in runs.as_array().into_iter().flatten() {
            let message = run
                .get("waitingReason")
                .and_then(Value::as_str)
                .unwrap_or_else(|| text(run, "/message"));
            rows.push(vec![
                number(run, "/id"),
                text(run, "/phase").to_owned(),
                text(run, "/trigger").to_owned(),
                format!(
                    "{}/{}",
                    number(run, "/succeeded"),
                    number(run, "/spec/completions")
                ),
                number(run, "/failures"),
                number(run, "/active"),
                text(run, "/createdAt").to_owned(),
                message.to_owned(),
            ]);
        }
        print!("{}", table(&rows));
        Ok(ExitCode::SUCCESS)
    }

    /// `cancel ID [RUN]`: cancels one run, or every unfinished run of the job.
    pub async fn cancel(&self, job_id: &str, run: Option<u64>) -> anyhow::Result<ExitCode> {
        let runs: Vec<u64> = match run {
            Some(run) => vec![run],
            None => {
                let job = self.get(&format!("/v1/jobs/{job_id}")).await?;
                items(&job, "activeRuns")
                    .filter_map(Value::as_u64)
                    .collect()
            }
        };
        if runs.is_empty() {
            println!("job {job_id} has no unfinished run");
        }
        for run in runs {
            let (status, value) = self
                .send(self.api.request(
                    reqwest::Method::DELETE,
                    &format!("/v1/jobs/{job_id}/runs/{run}"),
                ))
                .await?;
            ensure_ok(status, &value)?;
            match self.output {
                Output::Json => println!("{value}"),
                Output::Table => println!("run {run} of {job_id} cancelled"),
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn ensure_ok(status: u16, value: &Value) -> anyhow::Result<()> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let mut message = format!("HTTP {status}: {}", text(value, "/message"));
    for error in items(value, "errors") {
        message.push_str(&format!(
            "\n  {}: {}",
            text(error, "/path"),
            text(error, "/reason")
        ));
    }
    bail!(message)
}
