//! The systemd units in `deploy/systemd/`: a built-in check that always runs (sections and keys
//! against a known list, values of the enumerated keys, the sandbox every unit must have, the
//! ExecStart binary a real crate bin, the work dir inside the state directory, the env file
//! shipped), and `systemd-analyze verify` when it is installed (Debian: `systemd`), which must
//! print nothing about the units.

mod newcomer_support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use newcomer_support::{repo_root, workspace_bins};

const UNITS: &[&str] = &[
    "agora-master.service",
    "agora-agent.service",
    "agora-svcframework.service",
    "agora-batchframework.service",
];

const UNIT_KEYS: &[&str] = &[
    "Description",
    "Documentation",
    "Wants",
    "Requires",
    "After",
    "Before",
    "BindsTo",
    "PartOf",
    "Conflicts",
    "StartLimitIntervalSec",
    "StartLimitBurst",
];

const INSTALL_KEYS: &[&str] = &["WantedBy", "RequiredBy", "Alias", "Also"];

const BOOLEAN_SERVICE_KEYS: &[&str] = &[
    "DynamicUser",
    "NoNewPrivileges",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateUsers",
    "ProtectHostname",
    "ProtectClock",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "RemoveIPC",
];

const OTHER_SERVICE_KEYS: &[&str] = &[
    "Type",
    "ExecStart",
    "ExecStartPre",
    "ExecReload",
    "Environment",
    "EnvironmentFile",
    "WorkingDirectory",
    "Restart",
    "RestartSec",
    "RestartPreventExitStatus",
    "TimeoutStartSec",
    "TimeoutStopSec",
    "KillMode",
    "KillSignal",
    "LimitNOFILE",
    "User",
    "Group",
    "SupplementaryGroups",
    "StateDirectory",
    "StateDirectoryMode",
    "UMask",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "ProtectSystem",
    "ProtectHome",
    "ProtectProc",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "ReadWritePaths",
];

/// Allowed values of the enumerated keys.
const ENUMERATED: &[(&str, &[&str])] = &[
    ("Type", &["simple", "exec", "notify", "forking", "oneshot"]),
    (
        "Restart",
        &[
            "no",
            "always",
            "on-success",
            "on-failure",
            "on-abnormal",
            "on-abort",
            "on-watchdog",
        ],
    ),
    ("KillMode", &["control-group", "mixed", "process"]),
    ("ProtectSystem", &["yes", "no", "full", "strict"]),
    ("ProtectHome", &["yes", "no", "read-only", "tmpfs"]),
    (
        "ProtectProc",
        &["noaccess", "invisible", "ptraceable", "default"],
    ),
];

const BOOLEANS: &[&str] = &["yes", "no", "true", "false", "on", "off", "1", "0"];

/// A unit file: section -> key -> values in order (keys may repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Parses a unit file; lines that are neither comments, section headers nor `Key=Value` are
/// reported as problems.
fn parse_unit(text: &str, problems: &mut Vec<String>) -> Unit {
    let mut unit = Unit::new();
    let mut section: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            section = Some(name.to_owned());
            unit.entry(name.to_owned()).or_default();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            problems.push(format!("line {line_number}: not Key=Value: {line:?}"));
            continue;
        };
        let Some(section) = &section else {
            problems.push(format!("line {line_number}: {key} before any section"));
            continue;
        };
        unit.entry(section.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    unit
}

/// Problems with one unit: syntax, unknown keys, bad values, missing sandboxing, ExecStart
/// not a workspace bin, work dir outside the state directory, env file not shipped.
fn check_unit(
    name: &str,
    text: &str,
    bins: &BTreeSet<String>,
    shipped_env_files: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let unit = parse_unit(text, &mut problems);
    let known: BTreeMap<&str, Vec<&str>> = [
        ("Unit", UNIT_KEYS.to_vec()),
        (
            "Service",
            BOOLEAN_SERVICE_KEYS
                .iter()
                .chain(OTHER_SERVICE_KEYS)
                .copied()
                .collect(),
        ),
        ("Install", INSTALL_KEYS.to_vec()),
    ]
    .into_iter()
    .collect();
    for (section, keys) in &unit {
        let Some(allowed) = known.get(section.as_str()) else {
            problems.push(format!("unknown section [{section}]"));
            continue;
        };
        for (key, values) in keys {
            if !allowed.contains(&key.as_str()) {
                problems.push(format!("[{section}] unknown key {key}"));
            }
            for value in values {
                if BOOLEAN_SERVICE_KEYS.contains(&key.as_str())
                    && !BOOLEANS.contains(&value.as_str())
                {
                    problems.push(format!("{key}={value}: not a boolean"));
                }
                if let Some((_, choices)) = ENUMERATED.iter().find(|(k, _)| k == key)
                    && !choices.contains(&value.as_str())
                {
                    problems.push(format!("{key}={value}: expected one of {choices:?}"));
                }
            }
        }
    }
    for section in ["Unit", "Service", "Install"] {
        if !unit.contains_key(section) {
            problems.push(format!("missing section [{section}]"));
        }
    }
    let get = |section: &str, key: &str| -> Vec<String> {
        unit.get(section)
            .and_then(|keys| keys.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let first = |section: &str, key: &str| get(section, key).first().cloned();
    if first("Unit", "Description").is_none() {
        problems.push("[Unit] Description is missing".into());
    }
    if first("Install", "WantedBy").is_none() {
        problems.push("[Install] WantedBy is missing".into());
    }
    for (key, wanted) in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict")] {
        if first("Service", key).as_deref() != Some(wanted) {
            problems.push(format!("sandbox: {key}={wanted} is required"));
        }
    }
    if first("Service", "DynamicUser").as_deref() != Some("yes")
        && first("Service", "User").is_none()
    {
        problems.push("sandbox: DynamicUser=yes or a dedicated User= is required".into());
    }

    let exec_start = get("Service", "ExecStart");
    let [exec_start] = exec_start.as_slice() else {
        problems.push(format!(
            "exactly one ExecStart expected, found {}",
            exec_start.len()
        ));
        return problems;
    };
    let words: Vec<&str> = exec_start.split_whitespace().collect();
    match words
        .first()
        .and_then(|path| path.strip_prefix("/usr/local/bin/"))
    {
        Some(binary) if bins.contains(binary) => {}
        _ => problems.push(format!(
            "ExecStart {exec_start:?}: expected /usr/local/bin/<one of {bins:?}>"
        )),
    }
    let work_dir = words
        .windows(2)
        .find(|pair| pair[0] == "--work-dir")
        .map(|pair| pair[1]);
    match (first("Service", "StateDirectory"), work_dir) {
        (Some(state), Some(work_dir)) => {
            let state_path = format!("/var/lib/{state}");
            if !(work_dir == state_path || work_dir.starts_with(&format!("{state_path}/"))) {
                problems.push(format!(
                    "--work-dir {work_dir} is outside StateDirectory ({state_path}), the only \
                     writable place under ProtectSystem=strict"
                ));
            }
        }
        (None, _) => problems.push("sandbox: StateDirectory is required".into()),
        (Some(_), None) => problems.push("ExecStart has no --work-dir".into()),
    }
    let env_files = get("Service", "EnvironmentFile");
    if env_files.is_empty() {
        problems.push("EnvironmentFile=-/etc/agora/<name>.env is expected".into());
    }
    for env_file in env_files {
        let path = env_file.trim_start_matches('-');
        match path.strip_prefix("/etc/agora/") {
            Some(file) if shipped_env_files.contains(file) => {}
            Some(file) => problems.push(format!("{path}: deploy/systemd/{file} is not shipped")),
            None => problems.push(format!("{path}: env files live in /etc/agora/")),
        }
    }
    if name == "agora-agent.service"
        && !get("Service", "SupplementaryGroups")
            .iter()
            .any(|groups| groups.split_whitespace().any(|group| group == "docker"))
    {
        problems.push("the agent needs SupplementaryGroups=docker for the socket".into());
    }
    problems
}

fn systemd_dir() -> PathBuf {
    repo_root().join("deploy/systemd")
}

fn shipped_env_files() -> anyhow::Result<BTreeSet<String>> {
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(systemd_dir())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".env") {
            files.insert(name);
        }
    }
    Ok(files)
}

fn read_unit(name: &str) -> anyhow::Result<String> {
    let path = systemd_dir().join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

#[test]
fn shipped_units_pass_the_built_in_check() -> anyhow::Result<()> {
    let bins = workspace_bins(&repo_root())?;
    for expected in ["master", "agent", "svcframework", "batchframework"] {
        anyhow::ensure!(bins.contains(expected), "no crate bin {expected}: {bins:?}");
    }
    let env_files = shipped_env_files()?;
    for name in UNITS {
        let problems = check_unit(name, &read_unit(name)?, &bins, &env_files);
        anyhow::ensure!(problems.is_empty(), "{name}: {problems:#?}");
    }
    Ok(())
}

#[test]
fn built_in_check_rejects_broken_units() -> anyhow::Result<()> {
    let bins = workspace_bins(&repo_root())?;
    let env_files = shipped_env_files()?;
    let master = read_unit("agora-master.service")?;
    let breakages: &[(&str, &str, &str, &str)] = &[
        (
            "a misspelt key",
            "ProtectSystem=strict",
            "ProtectSystm=strict",
            "unknown key ProtectSystm",
        ),
        (
            "a bad enumerated value",
            "ProtectSystem=strict",
            "ProtectSystem=bogus",
            "ProtectSystem=bogus",
        ),
        (
            "a bad boolean",
            "NoNewPrivileges=yes",
            "NoNewPrivileges=maybe",
            "not a boolean",
        ),
        (
            "a binary no crate builds",
            "ExecStart=/usr/local/bin/master",
            "ExecStart=/usr/local/bin/mastre",
            "ExecStart",
        ),
        (
            "a misspelt section",
            "[Service]",
            "[Servce]",
            "unknown section [Servce]",
        ),
        (
            "a work dir outside the state directory",
            "--work-dir /var/lib/agora/master",
            "--work-dir /srv/agora",
            "outside StateDirectory",
        ),
        (
            "a line that is not Key=Value",
            "Type=exec",
            "Type exec",
            "not Key=Value",
        ),
        (
            "no sandbox",
            "ProtectSystem=strict",
            "ProtectSystem=no",
            "ProtectSystem=strict is required",
        ),
    ];
    for (what, from, to, expected) in breakages {
        anyhow::ensure!(master.contains(from), "{what}: {from:?} not in the unit");
        let broken = master.replacen(from, to, 1);
        let problems = check_unit("agora-master.service", &broken, &bins, &env_files);
        anyhow::ensure!(
            problems.iter().any(|problem| problem.contains(expected)),
            "{what}: expected a problem mentioning {expected:?}, got {problems:?}"
        );
    }
    let agent = read_unit("agora-agent.service")?;
    let without_docker = agent.replace("SupplementaryGroups=docker", "");
    let problems = check_unit("agora-agent.service", &without_docker, &bins, &env_files);
    anyhow::ensure!(
        problems
            .iter()
            .any(|problem| problem.contains("SupplementaryGroups=docker")),
        "{problems:?}"
    );
    Ok(())
}

/// Runs `systemd-analyze verify` on copies of `units` (name, text) in a temp dir whose
/// /usr/local/bin binaries are replaced by stubs (verify insists that they exist); returns
/// the diagnostics that mention one of the units, and whether verify exited with success.
fn systemd_verify(units: &[(&str, String)]) -> anyhow::Result<(Vec<String>, bool)> {
    let dir = tempfile::tempdir()?;
    let stub_dir = dir.path().join("bin");
    std::fs::create_dir(&stub_dir)?;
    for name in ["master", "agent", "svcframework", "batchframework"] {
        let stub = stub_dir.join(name);
        std::fs::write(&stub, "#!/bin/sh\n")?;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut paths = Vec::new();
    for (name, text) in units {
        let path = dir.path().join(name);
        let stubbed = text.replace("/usr/local/bin/", &format!("{}/", stub_dir.display()));
        std::fs::write(&path, stubbed)?;
        paths.push(path);
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .context("running systemd-analyze verify")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // verify exits 0 on unknown keys and bad values ("…, ignoring"): every line about one of
    // our units counts. Lines about other units of the host are not ours to judge.
    let diagnostics = text
        .lines()
        .filter(|line| units.iter().any(|(name, _)| line.contains(name)))
        .map(str::to_owned)
        .collect();
    Ok((diagnostics, output.status.success()))
}

#[test]
fn systemd_analyze_verifies_the_units() -> anyhow::Result<()> {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !available {
        println!(
            "skipping systemd_analyze_verifies_the_units: systemd-analyze is not installed \
             (Debian: apt-get install systemd); the built-in check ran instead"
        );
        return Ok(());
    }
    let units: Vec<(&str, String)> = UNITS
        .iter()
        .map(|name| Ok((*name, read_unit(name)?)))
        .collect::<anyhow::Result<_>>()?;
    let (diagnostics, success) = systemd_verify(&units)?;
    anyhow::ensure!(
        success && diagnostics.is_empty(),
        "systemd-analyze verify: {diagnostics:#?}"
    );

    // The same run notices a misspelt key: the check above is not vacuous here.
    let broken = units[0].1.replacen("ProtectSystem=", "ProtectSystm=", 1);
    let (diagnostics, _) = systemd_verify(&[("agora-master.service", broken)])?;
    anyhow::ensure!(
        diagnostics.iter().any(|line| line.contains("ProtectSystm")),
        "a misspelt key went unnoticed: {diagnostics:?}"
    );
    Ok(())
}
