//! One daemon of a fault cluster as a real child process that the test can SIGKILL, SIGSTOP,
//! SIGCONT and start again with the same command line (same work dir, same port).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Errors of daemon process control.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The log file could not be opened.
    #[error("{daemon}: opening its log {path}: {source}")]
    Log {
        /// Daemon name.
        daemon: String,
        /// Log path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The process could not be started.
    #[error("{daemon}: starting {program}: {source}")]
    Spawn {
        /// Daemon name.
        daemon: String,
        /// The binary.
        program: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A signal could not be delivered.
    #[error("{daemon}: sending {signal}: {source}")]
    Signal {
        /// Daemon name.
        daemon: String,
        /// The signal.
        signal: Signal,
        /// The errno.
        source: nix::Error,
    },
    /// The operation needs a running process.
    #[error("{daemon} is not running")]
    NotRunning {
        /// Daemon name.
        daemon: String,
    },
    /// The process is already running; starting it twice would fight over its port.
    #[error("{daemon} is already running (pid {pid})")]
    AlreadyRunning {
        /// Daemon name.
        daemon: String,
        /// Its pid.
        pid: u32,
    },
    /// Waiting for the process failed.
    #[error("{daemon}: waiting for the process: {source}")]
    Wait {
        /// Daemon name.
        daemon: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A daemon the test started: its command line, its log file (appended across restarts, so
/// one file tells the whole story) and the running child, if any.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
    starts: u32,
}

impl Daemon {
    /// A daemon that is not started yet.
    pub fn new(name: &str, program: PathBuf, args: Vec<String>, log: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            program,
            args,
            log,
            child: None,
            stopped: false,
            starts: 0,
        }
    }

    /// The daemon's name in messages (`master`, `agent node-2`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The daemon's log file (stdout and stderr of every incarnation).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// Starts the process (again) with the same command line.
    pub fn start(&mut self) -> Result<(), DaemonError> {
        self.reap();
        if let Some(child) = &self.child {
            return Err(DaemonError::AlreadyRunning {
                daemon: self.name.clone(),
                pid: child.id(),
            });
        }
        let log_error = |source| DaemonError::Log {
            daemon: self.name.clone(),
            path: self.log.clone(),
            source,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(log_error)?;
        let stderr = log.try_clone().map_err(log_error)?;
        self.starts += 1;
        // A marker between incarnations, so a log tail shows which start a line belongs to.
        let _ = std::io::Write::write_all(
            &mut &log,
            format!("===== fault harness: start #{} =====\n", self.starts).as_bytes(),
        );
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|source| DaemonError::Spawn {
                daemon: self.name.clone(),
                program: self.program.clone(),
                source,
            })?;
        self.child = Some(child);
        self.stopped = false;
        Ok(())
    }

    /// The pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs (stopped counts as running).
    pub fn is_running(&mut self) -> bool {
        self.reap();
        self.child.is_some()
    }

    /// True while the process is SIGSTOPped by the test.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// SIGKILL and reap: the crash the daemon must survive. Its containers keep running.
    pub fn sigkill(&mut self) -> Result<(), DaemonError> {
        let Some(mut child) = self.child.take() else {
            return Err(DaemonError::NotRunning {
                daemon: self.name.clone(),
            });
        };
        let _ = child.kill();
        child.wait().map_err(|source| DaemonError::Wait {
            daemon: self.name.clone(),
            source,
        })?;
        self.stopped = false;
        Ok(())
    }

    /// SIGSTOP: the process is frozen, misses its heartbeats, its containers keep running.
    pub fn sigstop(&mut self) -> Result<(), DaemonError> {
        self.signal(Signal::SIGSTOP)?;
        self.stopped = true;
        Ok(())
    }

    /// SIGCONT: the frozen process resumes as if its network came back.
    pub fn sigcont(&mut self) -> Result<(), DaemonError> {
        self.signal(Signal::SIGCONT)?;
        self.stopped = false;
        Ok(())
    }

    fn signal(&mut self, signal: Signal) -> Result<(), DaemonError> {
        let pid = self.pid().ok_or_else(|| DaemonError::NotRunning {
            daemon: self.name.clone(),
        })?;
        let raw = i32::try_from(pid).map_err(|_| DaemonError::NotRunning {
            daemon: self.name.clone(),
        })?;
        kill(Pid::from_raw(raw), signal).map_err(|source| DaemonError::Signal {
            daemon: self.name.clone(),
            signal,
            source,
        })
    }

    /// The last `lines` lines of the daemon's log (all its incarnations).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        all[start..].join("\n")
    }

    /// Forgets a child that exited by itself (a crash the test did not cause).
    fn reap(&mut self) {
        if let Some(child) = &mut self.child
            && let Ok(Some(_)) = child.try_wait()
        {
            self.child = None;
            self.stopped = false;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a stopped process too; continuing it first means that, should the
            // kill fail, no frozen daemon outlives the test holding its port and containers.
            if self.stopped
                && let Ok(raw) = i32::try_from(child.id())
            {
                let _ = kill(Pid::from_raw(raw), Signal::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
