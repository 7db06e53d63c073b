//! The master serves gRPC and HTTP/1.1 on one port, and stops cleanly.

mod common;

use std::time::Duration;

use agora_master::{MasterStartError, StoreSpec};
use common::{http_get, start_master, test_settings};

#[tokio::test]
async fn health_answers_ok_json_over_http1() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path()).await;
    let response = http_get(&master, "/health").await;
    assert_eq!(response.status, 200);
    assert!(response.content_type.starts_with("application/json"));
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["status"], "ok");

    let missing = http_get(&master, "/no/such/page").await;
    assert_eq!(missing.status, 404);
    master.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path()).await;
    let response = http_get(&master, "/metrics").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.content_type.starts_with("text/plain"));
    for name in [
        "agora_master_agents{status=\"active\"} 0",
        "agora_master_frameworks{status=\"connected\"} 0",
        "agora_master_offers_outstanding 0",
        "# TYPE agora_master_offers_made_total counter",
        "# TYPE agora_master_allocation_runs_total counter",
        "# TYPE agora_master_allocation_run_seconds histogram",
        "# TYPE agora_master_store_write_seconds histogram",
    ] {
        assert!(
            response.body.contains(name),
            "missing {name} in\n{}",
            response.body
        );
    }
    master.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_of_an_empty_cluster_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path()).await;
    let response = http_get(&master, "/state").await;
    assert_eq!(response.status, 200, "{}", response.body);
    let state: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(state["agents"], serde_json::json!([]));
    assert_eq!(state["frameworks"], serde_json::json!([]));
    assert_eq!(state["tasks"], serde_json::json!([]));
    assert_eq!(state["offers"], serde_json::json!([]));
    assert_eq!(state["version"], agora_proto::VERSION);
    assert_eq!(state["leader"], master.local_addr().to_string());

    for subset in ["/state/agents", "/state/frameworks", "/state/tasks"] {
        let response = http_get(&master, subset).await;
        assert_eq!(response.status, 200, "{subset}: {}", response.body);
        assert_eq!(response.body, "[]", "{subset}");
    }
    master.shutdown().await.unwrap();
}

#[tokio::test]
async fn etcd_store_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.store = "etcd://127.0.0.1:2379".parse::<StoreSpec>().unwrap();
    let error = agora_master::spawn(settings).await.unwrap_err();
    assert!(
        matches!(error, MasterStartError::UnsupportedStore { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("etcd"), "{error}");
}

#[tokio::test]
async fn second_master_on_the_same_work_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_master(dir.path()).await;
    let error = agora_master::spawn(test_settings(dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(error, MasterStartError::Store(_)), "{error}");
    drop(first);
}

#[tokio::test]
async fn busy_port_is_a_bind_error() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let first = start_master(dir.path()).await;
    let mut settings = test_settings(other_dir.path());
    settings.listen = first.local_addr();
    let error = agora_master::spawn(settings).await.unwrap_err();
    assert!(matches!(error, MasterStartError::Bind { .. }), "{error}");
    first.shutdown().await.unwrap();
}

#[tokio::test]
async fn many_masters_run_side_by_side_and_restart_on_their_work_dir() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut masters = Vec::new();
    for dir in &dirs {
        masters.push(start_master(dir.path()).await);
    }
    let ports: std::collections::BTreeSet<u16> = masters
        .iter()
        .map(|master| master.local_addr().port())
        .collect();
    assert_eq!(ports.len(), 3);
    assert!(masters[0].url().starts_with("http://127.0.0.1:"));
    for master in masters {
        tokio::time::timeout(Duration::from_secs(10), master.shutdown())
            .await
            .expect("shutdown in time")
            .unwrap();
    }
    // The store was closed by shutdown, so the same work dir opens again.
    let again = start_master(dirs[0].path()).await;
    assert_eq!(http_get(&again, "/health").await.status, 200);
    again.shutdown().await.unwrap();
}

/// 300 connections that never send a byte, and 300 that send half a request head, are held
/// open while `/health` is asked for: it still answers at once, and the server closes the
/// silent and the slow connections after its first-byte and header-read timeouts.
#[tokio::test]
async fn health_answers_while_hundreds_of_half_open_connections_are_held_and_they_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.serve_limits.first_byte_timeout = Duration::from_secs(2);
    settings.serve_limits.header_read_timeout = Duration::from_secs(2);
    let master = agora_master::spawn(settings).await.expect("master starts");

    let mut silent = Vec::with_capacity(300);
    let mut half_headers = Vec::with_capacity(300);
    for _ in 0..300 {
        silent.push(
            tokio::net::TcpStream::connect(master.local_addr())
                .await
                .unwrap(),
        );
        let mut slow = tokio::net::TcpStream::connect(master.local_addr())
            .await
            .unwrap();
        slow.write_all(b"GET /health HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        half_headers.push(slow);
    }
    let response = tokio::time::timeout(Duration::from_secs(5), http_get(&master, "/health"))
        .await
        .expect("/health answers while 600 connections are half open");
    assert_eq!(response.status, 200);

    // Every one of them is closed by the server (read returns EOF or an error), within the
    // timeouts plus slack; without the timeouts these reads would never finish.
    for mut stream in silent.into_iter().chain(half_headers) {
        let mut buffer = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    // A 408 answer to the half-sent head may come first; then EOF.
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a half-open connection was left open");
    }
    let response = http_get(&master, "/health").await;
    assert_eq!(response.status, 200);
    master.shutdown().await.unwrap();
}
