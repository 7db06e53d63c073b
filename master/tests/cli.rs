//! The `master` binary reads every setting from flags or `AGORA_*` environment variables.

use std::process::Command;

fn master() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_master"));
    // Keep the runner's own AGORA_* settings out of these tests.
    for (name, _) in std::env::vars() {
        if name.starts_with("AGORA_") {
            command.env_remove(name);
        }
    }
    command
}

#[test]
fn environment_variables_set_the_configuration() {
    let output = master()
        .arg("--check-config")
        .env("AGORA_MASTER_WORK_DIR", "/tmp/agora-env-test")
        .env("AGORA_MASTER_LISTEN", "127.0.0.1:6060")
        .env("AGORA_OFFER_TIMEOUT", "45s")
        .env("AGORA_MAX_MISSED_HEARTBEATS", "9")
        .env("AGORA_AGENT_HEARTBEAT_INTERVAL", "750ms")
        .env("AGORA_ROLE_WEIGHT", "prod=2,batch=0.5")
        .env("AGORA_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "/tmp/agora-env-test",
        "127.0.0.1:6060",
        "offer_timeout: Some(\n            45s",
        "max_missed_heartbeats: 9",
        "agent_heartbeat_interval: 750ms",
        "\"prod\": 2.0",
        "\"batch\": 0.5",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}

#[test]
fn flags_win_over_environment_variables() {
    let output = master()
        .args(["--check-config", "--work-dir", "/tmp/from-flag"])
        .env("AGORA_MASTER_WORK_DIR", "/tmp/from-env")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(stdout.contains("/tmp/from-flag"), "{stdout}");
    assert!(!stdout.contains("/tmp/from-env"), "{stdout}");
}

#[test]
fn bad_environment_value_is_a_usage_error() {
    let output = master()
        .arg("--check-config")
        .env("AGORA_MASTER_WORK_DIR", "/tmp/x")
        .env("AGORA_ALLOCATION_INTERVAL", "often")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allocation-interval"), "{stderr}");
}

#[test]
fn etcd_store_fails_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = master()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--store",
            "etcd://127.0.0.1:2379",
        ])
        .arg("--work-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let logs = String::from_utf8_lossy(&output.stdout);
    assert!(logs.contains("etcd store is not built yet"), "{logs}");
}
