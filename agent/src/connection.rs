//! The connection to the master: `AgentService.Connect`, registration, heartbeats, and
//! reconnection with jittered exponential backoff.

use std::time::Duration;

use agora_proto::v1::agent_service_client::AgentServiceClient;
use agora_proto::v1::{AgentHeartbeat, AgentMessage, agent_message, master_message};
use agora_proto::{AgentId, Backoff};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::core::Input;
use crate::durations::clamped_seconds;
use crate::shell::AgentEvent;

const OUTBOUND_CAPACITY: usize = 4096;
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The master is presumed gone after this many heartbeat intervals of silence.
const SILENT_INTERVALS: u32 = 3;
const MIN_SILENCE: Duration = Duration::from_secs(3);
/// Heartbeat interval used when the master names none (or nonsense).
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Longest heartbeat interval honoured; a longer one from the master is clamped.
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3600);

/// Keeps the agent connected to the master until `shutdown`.
pub(crate) async fn run_connection(
    master_url: String,
    events: mpsc::Sender<AgentEvent>,
    backoff_min: Duration,
    backoff_max: Duration,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(backoff_min, backoff_max);
    while !shutdown.is_cancelled() {
        match session(&master_url, &events, &shutdown, &mut backoff).await {
            Ok(()) => {}
            Err(SessionEnd::AgentStopped) => return,
            Err(SessionEnd::Failed(reason)) => {
                tracing::warn!(master = %master_url, %reason, "master connection lost or refused");
            }
        }
        if events.send(AgentEvent::Disconnected).await.is_err() {
            return;
        }
        let delay = backoff.next_delay(rand::rng().random::<f64>());
        tracing::debug!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting after backoff"
        );
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// How often the agent sends heartbeats and how long a silent master is tolerated, from the
/// interval the master announced. The master decides this number; a nonsensical one (NaN,
/// 1e308) must not panic the connection or overflow the silence limit, so it is clamped.
fn heartbeat_timing(interval_seconds: f64) -> (Duration, Duration) {
    let interval = if interval_seconds.is_finite() && interval_seconds > 0.0 {
        clamped_seconds(interval_seconds, MAX_HEARTBEAT_INTERVAL)
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL)
            .max(Duration::from_millis(50))
    } else {
        DEFAULT_HEARTBEAT_INTERVAL
    };
    if interval_seconds.is_finite() && interval_seconds > MAX_HEARTBEAT_INTERVAL.as_secs_f64() {
        tracing::warn!(
            interval_seconds,
            max_seconds = MAX_HEARTBEAT_INTERVAL.as_secs_f64(),
            "the master's heartbeat interval is out of range; clamped"
        );
    }
    let silence_limit = (interval * SILENT_INTERVALS).max(MIN_SILENCE);
    (interval, silence_limit)
}

enum SessionEnd {
    AgentStopped,
    Failed(String),
}

async fn session(
    master_url: &str,
    events: &mpsc::Sender<AgentEvent>,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), SessionEnd> {
    let failed = |reason: String| SessionEnd::Failed(reason);
    let endpoint = tonic::transport::Endpoint::from_shared(master_url.to_owned())
        .map_err(|error| failed(format!("invalid master url: {error}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        connected = endpoint.connect() => connected.map_err(|error| failed(format!("cannot connect: {error}")))?,
    };
    let mut client = AgentServiceClient::new(channel);
    let (reply, registration) = oneshot::channel();
    events
        .send(AgentEvent::RegistrationMessage(reply))
        .await
        .map_err(|_| SessionEnd::AgentStopped)?;
    let registration = registration.await.map_err(|_| SessionEnd::AgentStopped)?;
    let (outbound, outbound_stream) = mpsc::channel::<AgentMessage>(OUTBOUND_CAPACITY);
    outbound
        .send(registration)
        .await
        .map_err(|_| failed("outbound stream closed".to_owned()))?;
    let response = client
        .connect(ReceiverStream::new(outbound_stream))
        .await
        .map_err(|status| failed(format!("connect rejected: {status}")))?;
    let mut inbound = response.into_inner();
    let first = tokio::time::timeout(REGISTRATION_TIMEOUT, inbound.message())
        .await
        .map_err(|_| failed("no registration answer within 15 s".to_owned()))?
        .map_err(|status| failed(format!("registration failed: {status}")))?
        .ok_or_else(|| failed("master closed the stream before registering us".to_owned()))?;
    let registered = match first.message {
        Some(master_message::Message::Registered(registered)) => registered,
        Some(master_message::Message::Refused(refused)) => {
            return Err(failed(format!("registration refused: {}", refused.message)));
        }
        other => {
            return Err(failed(format!("expected Registered, got {other:?}")));
        }
    };
    backoff.reset();
    let (interval, silence_limit) = heartbeat_timing(registered.heartbeat_interval_seconds);
    events
        .send(AgentEvent::Connected {
            agent_id: AgentId::new(registered.agent_id),
            outbound: outbound.clone(),
        })
        .await
        .map_err(|_| SessionEnd::AgentStopped)?;
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = heartbeat.tick() => {
                let beat = AgentMessage { message: Some(agent_message::Message::Heartbeat(AgentHeartbeat {})) };
                if outbound.try_send(beat).is_err() {
                    tracing::debug!("heartbeat skipped: outbound queue full");
                }
            }
            () = tokio::time::sleep_until(last_heard + silence_limit) => {
                return Err(failed(format!("no message from the master for {:.1} s", silence_limit.as_secs_f64())));
            }
            next = inbound.message() => match next {
                Ok(Some(message)) => {
                    last_heard = tokio::time::Instant::now();
                    if let Some(message) = message.message {
                        events.send(AgentEvent::Core(Input::Master(message))).await.map_err(|_| SessionEnd::AgentStopped)?;
                    }
                }
                Ok(None) => return Err(failed("master closed the stream".to_owned())),
                Err(status) => return Err(failed(format!("stream error: {status}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_timing_follows_the_master_within_bounds_and_never_panics() {
        assert_eq!(
            heartbeat_timing(2.0),
            (Duration::from_secs(2), Duration::from_secs(6))
        );
        // A short interval still tolerates a few seconds of silence.
        assert_eq!(
            heartbeat_timing(0.2),
            (Duration::from_millis(200), MIN_SILENCE)
        );
        assert_eq!(heartbeat_timing(0.001).0, Duration::from_millis(50));
        for nonsense in [f64::NAN, f64::NEG_INFINITY, -1.0, 0.0] {
            assert_eq!(
                heartbeat_timing(nonsense),
                (DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_INTERVAL * 3)
            );
        }
        for huge in [1e308, f64::INFINITY] {
            let (interval, silence) = heartbeat_timing(huge);
            assert!(interval <= MAX_HEARTBEAT_INTERVAL, "{interval:?}");
            assert!(silence <= MAX_HEARTBEAT_INTERVAL * SILENT_INTERVALS);
        }
    }
}
