//! Prometheus text for `/metrics`: the core's counts plus the shell's own timings.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::core::MasterMetrics;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS_SECONDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    counts: [u64; BUCKETS_SECONDS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = BUCKETS_SECONDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.counts[slot] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS_SECONDS.iter().zip(self.counts.iter()) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// What the shell measures itself; shared between the state task and the HTTP handlers.
#[derive(Debug, Default)]
pub struct ShellMetrics {
    allocation_seconds: Mutex<Histogram>,
    store_write_seconds: Mutex<Histogram>,
    connections_dropped_total: AtomicU64,
}

impl ShellMetrics {
    /// Records how long a tick that ran an allocation pass took.
    pub fn observe_allocation(&self, elapsed: Duration) {
        if let Ok(mut histogram) = self.allocation_seconds.lock() {
            histogram.observe(elapsed);
        }
    }

    /// Records how long one registry transaction took.
    pub fn observe_store_write(&self, elapsed: Duration) {
        if let Ok(mut histogram) = self.store_write_seconds.lock() {
            histogram.observe(elapsed);
        }
    }

    /// Counts a connection dropped because its consumer was too slow or gone.
    pub fn count_connection_dropped(&self) {
        self.connections_dropped_total
            .fetch_add(1, Ordering::Relaxed);
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {value}");
}

/// Renders everything in the Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus(core: &MasterMetrics, shell: &ShellMetrics) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(out, "# HELP agora_master_agents Agents by status.");
    let _ = writeln!(out, "# TYPE agora_master_agents gauge");
    for (status, count) in [
        ("active", core.agents_active),
        ("unreachable", core.agents_unreachable),
        ("draining", core.agents_draining),
    ] {
        let _ = writeln!(out, "agora_master_agents{{status=\"{status}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "# HELP agora_master_frameworks Frameworks by connection."
    );
    let _ = writeln!(out, "# TYPE agora_master_frameworks gauge");
    for (status, count) in [
        ("connected", core.frameworks_connected),
        ("disconnected", core.frameworks_disconnected),
    ] {
        let _ = writeln!(
            out,
            "agora_master_frameworks{{status=\"{status}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP agora_master_tasks Known tasks by state (active and retained terminal ones)."
    );
    let _ = writeln!(out, "# TYPE agora_master_tasks gauge");
    for (state, count) in &core.tasks_by_state {
        let _ = writeln!(out, "agora_master_tasks{{state=\"{state}\"}} {count}");
    }
    gauge(
        &mut out,
        "agora_master_offers_outstanding",
        "Offers sent and not yet accepted, declined, rescinded or expired.",
        core.offers_outstanding,
    );
    counter(
        &mut out,
        "agora_master_offers_made_total",
        "Offers made since the master started.",
        core.offers_made_total,
    );
    counter(
        &mut out,
        "agora_master_allocation_runs_total",
        "Allocation passes run since the master started.",
        core.allocation_runs_total,
    );
    counter(
        &mut out,
        "agora_master_connections_dropped_total",
        "Agent or framework streams dropped because they did not keep up.",
        shell.connections_dropped_total.load(Ordering::Relaxed),
    );
    if let Ok(histogram) = shell.allocation_seconds.lock() {
        histogram.render(
            &mut out,
            "agora_master_allocation_run_seconds",
            "Time of timer ticks that ran an allocation pass.",
        );
    }
    if let Ok(histogram) = shell.store_write_seconds.lock() {
        histogram.render(
            &mut out,
            "agora_master_store_write_seconds",
            "Time of one registry store transaction.",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_gauges_and_cumulative_histograms() {
        let core = MasterMetrics {
            agents_active: 3,
            tasks_by_state: [("TASK_RUNNING".to_owned(), 7)].into(),
            offers_made_total: 11,
            ..MasterMetrics::default()
        };
        let shell = ShellMetrics::default();
        shell.observe_allocation(Duration::from_micros(300));
        shell.observe_allocation(Duration::from_secs(5));
        let text = render_prometheus(&core, &shell);
        assert!(text.contains("agora_master_agents{status=\"active\"} 3\n"));
        assert!(text.contains("agora_master_tasks{state=\"TASK_RUNNING\"} 7\n"));
        assert!(text.contains("agora_master_offers_made_total 11\n"));
        assert!(text.contains("agora_master_allocation_run_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("agora_master_allocation_run_seconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("agora_master_allocation_run_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("agora_master_allocation_run_seconds_count 2\n"));
        assert!(text.contains("agora_master_store_write_seconds_count 0\n"));
    }
}
