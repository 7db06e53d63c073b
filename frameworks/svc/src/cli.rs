//! The `svcframework` command line: `serve` runs the daemon; the other subcommands talk to
//! a daemon's REST API (`--url`, `AGORA_SVC_URL`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_sdk::cli::{ApiClient, ClientError, items, pretty, table};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// Exit code when the request was refused as invalid (422) or the input file is unusable.
pub const EXIT_INVALID: u8 = 2;
/// Exit code for any other failure (daemon unreachable, deployment failed, not found).
pub const EXIT_FAILED: u8 = 1;

/// svcframework: long-running services on Agora, Marathon style.
#[derive(Debug, Parser)]
#[command(name = "svcframework", version, about)]
pub struct Cli {
    /// The daemon's URL.
    #[arg(
        long,
        env = "AGORA_SVC_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Output: human tables or the API's JSON.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// Output format of client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON for scripts.
    Json,
}

/// Log line format of `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Create or update the app in FILE (Marathon app JSON).
    Deploy {
        /// The app definition.
        file: PathBuf,
        /// Show progress until the deployment ends; exit non-zero if it fails.
        #[arg(long)]
        wait: bool,
        /// Override a running deployment of the app.
        #[arg(long)]
        force: bool,
        /// With --wait: give up waiting after this many seconds (the deployment goes on).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// List apps.
    List,
    /// Show one app: instances, deployment, why instances wait.
    Status {
        /// App id.
        id: String,
    },
    /// Change the number of instances.
    Scale {
        /// App id.
        id: String,
        /// New number of instances.
        instances: u32,
        /// Wait for the deployment to end.
        #[arg(long)]
        wait: bool,
        /// Override a running deployment of the app.
        #[arg(long)]
        force: bool,
    },
    /// Replace every instance without a config change.
    Restart {
        /// App id.
        id: String,
        /// Wait for the deployment to end.
        #[arg(long)]
        wait: bool,
        /// Override a running deployment of the app.
        #[arg(long)]
        force: bool,
    },
    /// Roll an app back: undo its running deployment, or go to an earlier version.
    Rollback {
        /// App id.
        id: String,
        /// The version to return to (default: the one before the current).
        #[arg(long)]
        to: Option<String>,
        /// Wait for the deployment to end.
        #[arg(long)]
        wait: bool,
    },
    /// Destroy an app and every instance of it.
    Destroy {
        /// App id.
        id: String,
        /// Wait until every instance is gone.
        #[arg(long)]
        wait: bool,
    },
    /// List an app's instances.
    Tasks {
        /// App id.
        id: String,
    },
}

/// Flags of `svcframework serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The master's URL.
    #[arg(long, env = "AGORA_MASTER", default_value = "http://127.0.0.1:5050")]
    pub master: String,
    /// Address of the REST API.
    #[arg(long, env = "AGORA_SVC_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "AGORA_SVC_WORK_DIR")]
    pub work_dir: PathBuf,
    /// Framework name shown by the master.
    #[arg(long, env = "AGORA_SVC_NAME", default_value = "svcframework")]
    pub name: String,
    /// Seconds the master keeps the framework's tasks while the daemon is away.
    #[arg(long, env = "AGORA_SVC_FAILOVER_TIMEOUT", default_value_t = 604_800.0)]
    pub failover_timeout: f64,
    /// Seconds without progress after which a deployment fails.
    #[arg(long, env = "AGORA_SVC_DEPLOYMENT_TIMEOUT", default_value_t = 600.0)]
    pub deployment_timeout: f64,
    /// Seconds an instance may stay staging before it is replaced.
    #[arg(long, env = "AGORA_SVC_LAUNCH_TIMEOUT", default_value_t = 300.0)]
    pub launch_timeout: f64,
    /// Log format.
    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "AGORA_LOG", default_value = "info")]
    pub log: String,
}

/// A failed client command: what to print and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// Printed to stderr.
    pub message: String,
    /// Process exit code.
    pub code: u8,
}

impl CliError {
    fn failed(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: EXIT_FAILED,
        }
    }
}

struct Client {
    api: ApiClient,
}

impl Client {
    fn new(url: &str) -> Result<Self, CliError> {
        let api = ApiClient::new("svcframework", url).map_err(|error| unreachable(&error))?;
        Ok(Client { api })
    }

    /// The body of a 2xx answer, or the API's error turned into a [`CliError`].
    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let mut request = self.api.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let answer = self
            .api
            .send(request)
            .await
            .map_err(|error| unreachable(&error))?;
        if answer.is_success() {
            return Ok(answer.body);
        }
        Err(api_failure(answer.status, &answer.body))
    }
}

/// A request that got no answer: the error and its cause on one line.
fn unreachable(error: &ClientError) -> CliError {
    match std::error::Error::source(error) {
        Some(cause) => CliError::failed(format!("{error}: {cause}")),
        None => CliError::failed(error.to_string()),
    }
}

fn api_failure(status: u16, body: &Value) -> CliError {
    let mut message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("request failed with HTTP {status}: {body}"));
    if let Some(details) = body.get("details").and_then(Value::as_array) {
        for detail in details {
            let path = detail.get("path").and_then(Value::as_str).unwrap_or("/");
            for error in items(detail, "errors") {
                message.push_str(&format!(
                    "\n  {path}: {}",
                    error.as_str().unwrap_or_default()
                ));
            }
        }
    }
    CliError {
        message,
        code: if status == 422 || status == 400 {
            EXIT_INVALID
        } else {
            EXIT_FAILED
        },
    }
}

fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

fn print_warnings(body: &Value) {
    for warning in items(body, "warnings") {
        let path = warning.get("path").and_then(Value::as_str).unwrap_or("?");
        eprintln!("warning: unknown field {path} was ignored");
    }
}

/// Runs a client subcommand (everything but `serve`).
pub async fn run_client(cli: Cli) -> Result<(), CliError> {
    let client = Client::new(&cli.url)?;
    let output = cli.output;
    match cli.command {
        CliCommand::Serve(_) => Err(CliError::failed("serve is not a client command")),
        CliCommand::Deploy {
            file,
            wait,
            force,
            timeout,
        } => deploy(&client, output, &file, wait, force, timeout).await,
        CliCommand::List => list(&client, output).await,
        CliCommand::Status { id } => status(&client, output, &id).await,
        CliCommand::Scale {
            id,
            instances,
            wait,
            force,
        } => {
            let path = format!("{}?force={force}", app_path(&id));
            let body = client
                .ok(
                    reqwest::Method::PUT,
                    &path,
                    Some(&json!({ "instances": instances })),
                )
                .await?;
            finish_change(&client, output, &body, wait, None).await
        }
        CliCommand::Restart { id, wait, force } => {
            let path = format!("{}/restart?force={force}", app_path(&id));
            let body = client.ok(reqwest::Method::POST, &path, None).await?;
            finish_change(&client, output, &body, wait, None).await
        }
        CliCommand::Rollback { id, to, wait } => rollback(&client, output, &id, to, wait).await,
        CliCommand::Destroy { id, wait } => {
            let path = format!("{}?force=true", app_path(&id));
            let body = client.ok(reqwest::Method::DELETE, &path, None).await?;
            finish_change(&client, output, &body, wait, None).await
        }
        CliCommand::Tasks { id } => {
            let body = client
                .ok(
                    reqwest::Method::GET,
                    &format!("{}/tasks", app_path(&id)),
                    None,
                )
                .await?;
            if output == Output::Json {
                println!("{}", pretty(&body));
                return Ok(());
            }
            print_tasks(body.get("tasks"));
            Ok(())
        }
    }
}

async fn deploy(
    client: &Client,
    output: Output,
    file: &PathBuf,
    wait: bool,
    force: bool,
    timeout: Option<u64>,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(file).map_err(|error| CliError {
        message: format!("cannot read {}: {error}", file.display()),
        code: EXIT_INVALID,
    })?;
    let definition: Value = serde_json::from_str(&text).map_err(|error| CliError {
        message: format!("{} is not valid JSON: {error}", file.display()),
        code: EXIT_INVALID,
    })?;
    let body = match definition.get("id").and_then(Value::as_str) {
        // Create or replace: the file is the whole definition.
        Some(id) => {
            let path = format!("{}?partialUpdate=false&force={force}", app_path(id));
            client
                .ok(reqwest::Method::PUT, &path, Some(&definition))
                .await?
        }
        // Let the daemon name the missing field.
        None => {
            client
                .ok(reqwest::Method::POST, "/v2/apps", Some(&definition))
                .await?
        }
    };
    print_warnings(&body);
    finish_change(client, output, &body, wait, timeout).await
}

async fn rollback(
    client: &Client,
    output: Output,
    id: &str,
    to: Option<String>,
    wait: bool,
) -> Result<(), CliError> {
    if to.is_none() {
        let app = client.ok(reqwest::Method::GET, &app_path(id), None).await?;
        let running = app
            .pointer("/app/deployments/0/id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(deployment_id) = running {
            let body = client
                .ok(
                    reqwest::Method::DELETE,
                    &format!("/v2/deployments/{deployment_id}"),
                    None,
                )
                .await?;
            if output == Output::Table {
                println!("rolling back deployment {deployment_id}");
            }
            return finish_change(client, output, &body, wait, None).await;
        }
    }
    let version = match to {
        Some(version) => version,
        None => {
            let versions = client
                .ok(
                    reqwest::Method::GET,
                    &format!("{}/versions", app_path(id)),
                    None,
                )
                .await?;
            versions
                .pointer("/versions/1")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| CliError::failed(format!("app {id} has no earlier version")))?
        }
    };
    let body = client
        .ok(
            reqwest::Method::PUT,
            &format!("{}?force=true", app_path(id)),
            Some(&json!({ "version": version })),
        )
        .await?;
    if output == Output::Table {
        println!("rolling back {id} to version {version}");
    }
    finish_change(client, output, &body, wait, None).await
}

async fn finish_change(
    client: &Client,
    output: Output,
    body: &Value,
    wait: bool,
    timeout: Option<u64>,
) -> Result<(), CliError> {
    let deployment_id = body
        .get("deploymentId")
        .or_else(|| body.pointer("/deployments/0/id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if output == Output::Json && !wait {
        println!("{}", pretty(body));
        return Ok(());
    }
    let Some(deployment_id) = deployment_id else {
        if output == Output::Table {
            println!("done");
        }
        return Ok(());
    };
    if output == Output::Table {
        println!("deployment {deployment_id} started");
    }
    if !wait {
        return Ok(());
    }
    wait_for(client, output, &deployment_id, timeout).await
}

async fn wait_for(
    client: &Client,
    output: Output,
    deployment_id: &str,
    timeout: Option<u64>,
) -> Result<(), CliError> {
    let started = Instant::now();
    let mut last_line = String::new();
    loop {
        let deployment = client
            .ok(
                reqwest::Method::GET,
                &format!("/v2/deployments/{deployment_id}"),
                None,
            )
            .await?;
        let state = deployment
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let reason = deployment.get("reason").and_then(Value::as_str);
        let step = deployment
            .get("currentStep")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let steps = deployment
            .get("totalSteps")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let line = match reason {
            Some(reason) => format!("{state} (step {step}/{steps}): {reason}"),
            None => format!("{state} (step {step}/{steps})"),
        };
        if line != last_line && output == Output::Table {
            println!("  {line}");
            last_line = line;
        }
        match state {
            "running" => {}
            "succeeded" => {
                if output == Output::Json {
                    println!("{}", pretty(&deployment));
                } else {
                    println!("deployment {deployment_id} succeeded");
                }
                return Ok(());
            }
            _ => {
                if output == Output::Json {
                    println!("{}", pretty(&deployment));
                }
                return Err(CliError::failed(format!(
                    "deployment {deployment_id} {state}: {}",
                    reason.unwrap_or("no reason given")
                )));
            }
        }
        if timeout.is_some_and(|limit| started.elapsed() >= Duration::from_secs(limit)) {
            return Err(CliError::failed(format!(
                "deployment {deployment_id} still running after {} s: {}",
                started.elapsed().as_secs(),
                reason.unwrap_or("in progress")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn list(client: &Client, output: Output) -> Result<(), CliError> {
    let body = client.ok(reqwest::Method::GET, "/v2/apps", None).await?;
    if output == Output::Json {
        println!("{}", pretty(&body));
        return Ok(());
    }
    let mut rows = vec![vec![
        "ID".to_owned(),
        "INSTANCES".to_owned(),
        "HEALTHY".to_owned(),
        "CPUS".to_owned(),
        "MEM".to_owned(),
        "DEPLOYING".to_owned(),
        "WAITING".to_owned(),
    ]];
    for app in items(&body, "apps") {
        let number = |name: &str| app.get(name).and_then(Value::as_u64).unwrap_or(0);
        rows.push(vec![
            text(app, "id"),
            format!("{}/{}", number("tasksRunning"), number("instances")),
            number("tasksHealthy").to_string(),
            app.get("cpus").map(Value::to_string).unwrap_or_default(),
            app.get("mem").map(Value::to_string).unwrap_or_default(),
            if app
                .get("deployments")
                .and_then(Value::as_array)
                .is_some_and(|d| !d.is_empty())
            {
                "yes".to_owned()
            } else {
                "no".to_owned()
            },
            app.pointer("/waiting/reason")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned(),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

async fn status(client: &Client, output: Output, id: &str) -> Result<(), CliError> {
    let body = client.ok(reqwest::Method::GET, &app_path(id), None).await?;
    let deployments = client
        .ok(reqwest::Method::GET, "/v2/deployments", None)
        .await?;
    let app = body.get("app").cloned().unwrap_or(Value::Null);
    let app_id = text(&app, "id");
    let mine: Vec<Value> = deployments
        .as_array()
        .into_iter()
        .flatten()
        .filter(|deployment| {
            deployment
                .get("affectedApps")
                .and_then(Value::as_array)
                .is_some_and(|apps| {
                    apps.iter()
                        .any(|affected| affected.as_str() == Some(app_id.as_str()))
                })
        })
        .cloned()
        .collect();
    if output == Output::Json {
        println!("{}", pretty(&json!({ "app": app, "deployments": mine })));
        return Ok(());
    }
    let number = |name: &str| app.get(name).and_then(Value::as_u64).unwrap_or(0);
    println!("app:        {app_id}");
    println!("version:    {}", text(&app, "version"));
    println!(
        "instances:  {} running, {} staged, {} healthy, {} unhealthy of {} wanted",
        number("tasksRunning"),
        number("tasksStaged"),
        number("tasksHealthy"),
        number("tasksUnhealthy"),
        number("instances")
    );
    if let Some(reason) = app.pointer("/waiting/reason").and_then(Value::as_str) {
        println!(
            "waiting:    {} instance(s): {reason}",
            app.pointer("/waiting/count")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        );
    }
    if let Some(failure) = app.get("lastTaskFailure").and_then(Value::as_str) {
        println!("last failure: {failure}");
    }
    for deployment in &mine {
        println!(
            "deployment: {} {} (step {}/{}){}",
            text(deployment, "id"),
            text(deployment, "state"),
            deployment
                .get("currentStep")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            deployment
                .get("totalSteps")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            deployment
                .get("reason")
                .and_then(Value::as_str)
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default()
        );
    }
    println!();
    print_tasks(app.get("tasks"));
    Ok(())
}

fn print_tasks(tasks: Option<&Value>) {
    let mut rows = vec![vec![
        "TASK".to_owned(),
        "HOST".to_owned(),
        "PORTS".to_owned(),
        "STATE".to_owned(),
        "HEALTHY".to_owned(),
        "VERSION".to_owned(),
    ]];
    for task in tasks.and_then(Value::as_array).into_iter().flatten() {
        let ports: Vec<String> = items(task, "ports").map(Value::to_string).collect();
        rows.push(vec![
            text(task, "id"),
            text(task, "host"),
            ports.join(","),
            text(task, "state"),
            match task.get("healthy").and_then(Value::as_bool) {
                Some(true) => "yes".to_owned(),
                Some(false) => "no".to_owned(),
                None => "-".to_owned(),
            },
            text(task, "version"),
        ]);
    }
    print!("{}", table(&rows));
}

fn text(value: &Value, name: &str) -> String {
    value
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_owned()
}
