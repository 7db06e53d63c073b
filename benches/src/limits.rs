//! Process limits that thousands of connections in one process run into.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit (each simulated agent holds one
/// socket, and the master one per agent). Returns the limit now in force.
pub fn raise_open_file_limit() -> Result<u64, nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// Peak resident set size (`VmHWM`) of process `pid` (`None`: this process) in MiB, from
/// `/proc`; `None` when it cannot be read (not Linux, process gone).
pub fn peak_rss_mib(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_peak_rss_is_readable_and_positive() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_mib(None).is_some_and(|mib| mib > 0.0));
        }
        assert!(raise_open_file_limit().is_ok_and(|limit| limit > 0));
    }
}
