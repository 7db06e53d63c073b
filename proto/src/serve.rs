//! Serving HTTP/1 and HTTP/2 (gRPC) with the connection timeouts `axum::serve` lacks.
//!
//! `axum::serve` keeps every accepted connection until its peer closes it: a connection that
//! never sends a byte, or sends half a request head, holds a task and a file descriptor
//! forever, and a few hundred of them starve a daemon (its `/health` included) once the
//! descriptor limit is near. [`serve`] closes them:
//!
//! * a connection must send its first byte within [`ServeLimits::first_byte_timeout`]
//!   (before the HTTP version is even known, where no hyper timeout applies);
//! * an HTTP/1 request head must arrive within [`ServeLimits::header_read_timeout`], which
//!   hyper also applies while a kept-alive connection waits for its next request (the idle
//!   timeout);
//! * HTTP/2 connections are pinged every [`ServeLimits::http2_keepalive_interval`] and
//!   closed when a ping is not answered within [`ServeLimits::http2_keepalive_timeout`], so
//!   long-lived gRPC streams stay open while their peer lives and no longer;
//! * at most [`ServeLimits::max_connections`] connections are served at once; beyond that, a
//!   new connection is closed at once rather than left waiting in the accept backlog.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// True when a `Content-Type` header value declares JSON: `application/json`, with any
/// parameters (`; charset=utf-8`), in any case. The framework daemons answer 415 to a body
/// that is not declared JSON, as Marathon does, rather than guess.
pub fn is_json_content_type(value: Option<&str>) -> bool {
    value.is_some_and(|value| {
        let media_type = value.split(';').next().unwrap_or_default().trim();
        media_type.eq_ignore_ascii_case("application/json")
    })
}

/// Connection limits of a daemon's HTTP/gRPC port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// How long a new connection may stay silent before it is closed.
    pub first_byte_timeout: Duration,
    /// How long an HTTP/1 request head may take to arrive, and how long a kept-alive
    /// HTTP/1 connection may wait idle for its next request.
    pub header_read_timeout: Duration,
    /// How often an HTTP/2 connection is pinged.
    pub http2_keepalive_interval: Duration,
    /// How long a ping may go unanswered before the HTTP/2 connection is closed.
    pub http2_keepalive_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long a graceful shutdown waits for open connections before dropping them.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    /// 10 s for a first byte (clients are programs that write as soon as they connect), 30 s
    /// for a request head and between kept-alive requests (hyper's default; shorter would
    /// race clients' connection pools, which keep idle connections for up to 90 s), pings
    /// every 30 s answered within 20 s, and 50,000 connections (room for tens of thousands
    /// of agents and frameworks).
    fn default() -> Self {
        Self {
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            max_connections: 50_000,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves `service` on `listener` with `limits` until `shutdown` completes, then stops
/// accepting, lets open connections finish for [`ServeLimits::shutdown_grace`] and returns.
///
/// Errors accepting a connection (e.g. out of file descriptors) are logged and retried after
/// a short pause; they never end the server.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.http2_keepalive_interval))
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Cancelled once `shutdown` completes: every connection then finishes its requests in
    // flight and closes.
    let closing = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "connection limit reached; connection closed");
            drop(tcp);
            continue;
        };
        // gRPC streams carry small messages; do not let Nagle delay them.
        let _ = tcp.set_nodelay(true);
        let builder = Arc::clone(&builder);
        let hyper_service = TowerToHyperService::new(service.clone());
        let closing = closing.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut first = [0u8; 1];
            match tokio::time::timeout(limits.first_byte_timeout, tcp.peek(&mut first)).await {
                Ok(Ok(read)) if read > 0 => {}
                Ok(_) => return,
                Err(_) => {
                    tracing::debug!(%peer, "connection sent nothing in time; closed");
                    return;
                }
            }
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(tcp), hyper_service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    // Every connection task holds a permit: all of them back means all connections closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::debug!("connections still open after the shutdown grace; dropped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_json_content_type;

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type(Some("application/json")));
        assert!(is_json_content_type(Some(
            "Application/JSON; charset=utf-8"
        )));
        assert!(!is_json_content_type(Some("text/plain")));
        assert!(!is_json_content_type(Some("application/jsonx")));
        assert!(!is_json_content_type(None));
    }
}
