//! Runs of fault scenarios and their one-line outcomes: each run is a scenario with the fault
//! at one moment; the suite goes on after a failed run so that one test reports every run.

use std::future::Future;
use std::time::Duration;

/// The outcome of one run.
#[derive(Debug)]
pub struct RunOutcome {
    /// Scenario name.
    pub scenario: String,
    /// Run number (1-based).
    pub run: usize,
    /// When the fault happened.
    pub moment: String,
    /// Time from the fault to exact convergence, or why it did not converge.
    pub result: Result<Duration, String>,
}

impl RunOutcome {
    /// The one-line summary quoted by the closing note.
    pub fn summary(&self) -> String {
        match &self.result {
            Ok(elapsed) => format!(
                "FAULT-SUITE scenario={} run={} moment=\"{}\" outcome=exact seconds={:.1}",
                self.scenario,
                self.run,
                self.moment,
                elapsed.as_secs_f64()
            ),
            Err(error) => {
                let first_line = error.lines().next().unwrap_or("");
                let late = error
                    .lines()
                    .find(|line| line.starts_with("LATE:") || line.starts_with("STILL NOT EXACT"))
                    .map(|line| format!(" {line}"))
                    .unwrap_or_default();
                format!(
                    "FAULT-SUITE scenario={} run={} moment=\"{}\" outcome=FAILED reason=\"{first_line}\"{late}",
                    self.scenario, self.run, self.moment
                )
            }
        }
    }
}

/// The runs of one test.
#[derive(Debug, Default)]
pub struct FaultSuite {
    outcomes: Vec<RunOutcome>,
}

impl FaultSuite {
    /// An empty suite.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs one scenario run, prints its summary line (and the full failure), and keeps its
    /// outcome. The run's cluster is dropped (daemons killed, containers removed) inside `run`.
    pub async fn run<F>(&mut self, scenario: &str, run: usize, moment: &str, body: F)
    where
        F: Future<Output = anyhow::Result<Duration>>,
    {
        eprintln!("FAULT-SUITE start scenario={scenario} run={run} moment=\"{moment}\"");
        let result = body.await.map_err(|error| format!("{error:#}"));
        let outcome = RunOutcome {
            scenario: scenario.to_owned(),
            run,
            moment: moment.to_owned(),
            result,
        };
        if let Err(error) = &outcome.result {
            eprintln!("FAULT-SUITE failure of {scenario} run {run}:\n{error}");
        }
        eprintln!("{}", outcome.summary());
        self.outcomes.push(outcome);
    }

    /// Prints every summary line again and fails when any run did not converge exactly.
    pub fn finish(self) -> anyhow::Result<()> {
        eprintln!("FAULT-SUITE summary:");
        for outcome in &self.outcomes {
            eprintln!("{}", outcome.summary());
        }
        let failed: Vec<String> = self
            .outcomes
            .iter()
            .filter(|outcome| outcome.result.is_err())
            .map(RunOutcome::summary)
            .collect();
        anyhow::ensure!(
            failed.is_empty(),
            "{} of {} runs did not converge exactly:\n{}",
            failed.len(),
            self.outcomes.len(),
            failed.join("\n")
        );
        Ok(())
    }
}
