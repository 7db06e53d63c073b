//! Reads the master's `/metrics` over plain HTTP/1.1: how many agents are active and how many
//! tasks are in each state, without pulling the (large) cluster state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The counts the benches wait on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterCounts {
    /// Agents by status (`active`, `unreachable`, ...).
    pub agents: BTreeMap<String, u64>,
    /// Tasks by state (`TASK_RUNNING`, ...).
    pub tasks: BTreeMap<String, u64>,
}

impl MasterCounts {
    /// Active agents.
    pub fn active_agents(&self) -> u64 {
        self.agents.get("active").copied().unwrap_or(0)
    }

    /// RUNNING tasks.
    pub fn running_tasks(&self) -> u64 {
        self.tasks.get("TASK_RUNNING").copied().unwrap_or(0)
    }

    /// Reads the counts out of Prometheus text.
    pub fn parse(text: &str) -> MasterCounts {
        let mut counts = MasterCounts::default();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let label = |prefix: &str| {
                series
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix("\"}"))
                    .map(str::to_owned)
            };
            if let Some(status) = label("agora_master_agents{status=\"") {
                counts.agents.insert(status, value as u64);
            } else if let Some(state) = label("agora_master_tasks{state=\"") {
                counts.tasks.insert(state, value as u64);
            }
        }
        counts
    }
}

/// Why the master's metrics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Connecting, writing or reading failed.
    #[error("GET /metrics from {address}: {source}")]
    Io {
        /// The master.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("GET /metrics from {address}: no answer within 10 s")]
    Timeout {
        /// The master.
        address: SocketAddr,
    },
    /// Not a 200.
    #[error("GET /metrics from {address}: unexpected answer {status_line:?}")]
    Status {
        /// The master.
        address: SocketAddr,
        /// The status line received.
        status_line: String,
    },
}

/// `GET /metrics` from the master at `address`.
pub async fn master_counts(address: SocketAddr) -> Result<MasterCounts, ProbeError> {
    let io = |source| ProbeError::Io { address, source };
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.map_err(io)?;
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(io)?;
        Ok::<_, ProbeError>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| ProbeError::Timeout { address })??;
    let text = String::from_utf8_lossy(&raw);
    let status_line = text.lines().next().unwrap_or_default();
    if !status_line.contains(" 200") {
        return Err(ProbeError::Status {
            address,
            status_line: status_line.to_owned(),
        });
    }
    Ok(MasterCounts::parse(&text))
}

/// Whether the master at `address` answers `/health`.
pub async fn master_healthy(address: SocketAddr) -> bool {
    master_counts(address).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agent_and_task_series() {
        let text = "# HELP x\nagora_master_agents{status=\"active\"} 5000\n\
                    agora_master_agents{status=\"unreachable\"} 2\n\
                    agora_master_tasks{state=\"TASK_RUNNING\"} 100000\n\
                    agora_master_offers_outstanding 3\n";
        let counts = MasterCounts::parse(text);
        assert_eq!(counts.active_agents(), 5000);
        assert_eq!(counts.running_tasks(), 100_000);
        assert_eq!(counts.agents.get("unreachable"), Some(&2));
    }
}
