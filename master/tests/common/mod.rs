//! Helpers shared by the master's integration tests.

#![allow(dead_code)]

use std::time::Duration;

use agora_master::{MasterHandle, MasterSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Settings for a test master on a free loopback port, with short intervals.
pub fn test_settings(work_dir: &std::path::Path) -> MasterSettings {
    let mut settings = MasterSettings::new("127.0.0.1:0".parse().unwrap(), work_dir.to_owned());
    settings.core.agent_heartbeat_interval = Duration::from_millis(200);
    settings.core.framework_heartbeat_interval = Duration::from_millis(500);
    settings.core.allocation_batch_window = Duration::from_millis(5);
    settings.core.allocation_interval = Duration::from_millis(100);
    settings.core.agent_reregister_timeout = Duration::from_secs(5);
    settings
}

/// Starts a test master in `work_dir`.
pub async fn start_master(work_dir: &std::path::Path) -> MasterHandle {
    agora_master::spawn(test_settings(work_dir))
        .await
        .expect("master starts")
}

/// An HTTP/1.1 response: status code and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// A plain HTTP/1.1 GET over a raw TCP connection.
pub async fn http_get(master: &MasterHandle, path: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(master.local_addr()).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("http response in time")
        .unwrap();
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status: u16 = status_line[9..12].parse().unwrap();
    let mut content_type = String::new();
    let mut chunked = false;
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-type:") {
            content_type = value.trim().to_owned();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        content_type,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let Some((size_line, after)) = rest.split_once("\r\n") else {
            return body;
        };
        let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// A gRPC channel to the master.
pub async fn channel(master: &MasterHandle) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(master.url())
        .unwrap()
        .connect()
        .await
        .expect("grpc connects")
}
