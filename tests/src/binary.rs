//! The workspace's daemon binaries for tests that run them as real processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::Context;

/// The binary `bin` of workspace package `package`, next to the test executable. It is built
/// (or brought up to date; a no-op when it is) once per test process, so a test never runs a
/// stale daemon left over from an earlier build.
pub fn workspace_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    static BUILT: Mutex<Option<HashMap<String, Result<PathBuf, String>>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    built
        .entry(format!("{package}/{bin}"))
        .or_insert_with(|| build(package, bin).map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let debug_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target dir")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "-p", package, "--bin", bin])
        .status()
        .with_context(|| format!("building {bin}"))?;
    anyhow::ensure!(status.success(), "cargo build of {bin} failed");
    let binary = debug_dir.join(bin);
    anyhow::ensure!(binary.exists(), "{} not found", binary.display());
    Ok(binary)
}
