//! Waiting for conditions with a deadline instead of sleeping blindly.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The default deadline for an expected event in the harness.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages received from a channel, kept so that waiting for one kind never loses another.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    receiver: mpsc::Receiver<T>,
    backlog: VecDeque<T>,
    closed: bool,
}

impl<T: Debug> Inbox<T> {
    pub(crate) fn new(receiver: mpsc::Receiver<T>) -> Self {
        Self {
            receiver,
            backlog: VecDeque::new(),
            closed: false,
        }
    }

    /// Replaces the underlying channel (after a reconnect); the backlog is kept.
    pub(crate) fn replace(&mut self, receiver: mpsc::Receiver<T>) {
        self.receiver = receiver;
        self.closed = false;
    }

    /// True once the sending side ended and the backlog holds nothing.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The first message (backlog first) for which `select` returns `Some`, removing it;
    /// messages it rejects stay available for later waits.
    pub(crate) async fn expect<R>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut select: impl FnMut(&T) -> Option<R>,
    ) -> anyhow::Result<R> {
        if let Some(found) = self.take_from_backlog(&mut select) {
            return Ok(found);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.closed {
                bail!(
                    "{what}: the stream ended first; unconsumed: {:?}",
                    self.backlog
                );
            }
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Err(_) => bail!(
                    "{what}: nothing matching within {timeout:?}; unconsumed: {:?}",
                    self.backlog
                ),
                Ok(None) => self.closed = true,
                Ok(Some(message)) => {
                    if let Some(found) = select(&message) {
                        return Ok(found);
                    }
                    self.backlog.push_back(message);
                }
            }
        }
    }

    /// Fails if a message matching `select` arrives (or is in the backlog) within `window`.
    pub(crate) async fn expect_none(
        &mut self,
        what: &str,
        window: Duration,
        mut select: impl FnMut(&T) -> bool,
    ) -> anyhow::Result<()> {
        if let Some(found) = self.backlog.iter().find(|message| select(message)) {
            bail!("{what}: unexpected {found:?}");
        }
        let deadline = Instant::now() + window;
        while !self.closed {
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Err(_) => return Ok(()),
                Ok(None) => self.closed = true,
                Ok(Some(message)) => {
                    if select(&message) {
                        bail!("{what}: unexpected {message:?}");
                    }
                    self.backlog.push_back(message);
                }
            }
        }
        Ok(())
    }

    /// Drops every message received so far that `select` matches.
    pub(crate) fn discard(&mut self, mut select: impl FnMut(&T) -> bool) {
        while let Ok(message) = self.receiver.try_recv() {
            self.backlog.push_back(message);
        }
        self.backlog.retain(|message| !select(message));
    }

    fn take_from_backlog<R>(&mut self, select: &mut impl FnMut(&T) -> Option<R>) -> Option<R> {
        let (index, found) = self
            .backlog
            .iter()
            .enumerate()
            .find_map(|(index, message)| select(message).map(|found| (index, found)))?;
        self.backlog.remove(index);
        Some(found)
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            return match last_error {
                Some(error) => Err(error).context(format!("{what}: not within {timeout:?}")),
                None => bail!("{what}: not within {timeout:?}"),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one look at a condition found, for [`poll_until`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe<T> {
    /// The condition holds: the wait ends with this value.
    Met(T),
    /// Not yet: what was seen instead, for the failure if time runs out.
    NotYet(String),
    /// The condition can no longer come true (a daemon died, a run ended wrong): the wait
    /// ends at once with this reason.
    Failed(String),
}

impl<T> Probe<T> {
    /// Not met, having seen `seen`: [`Probe::Failed`] when waiting longer is `hopeless`,
    /// [`Probe::NotYet`] otherwise.
    pub fn unmet(hopeless: bool, seen: String) -> Self {
        if hopeless {
            Probe::Failed(seen)
        } else {
            Probe::NotYet(seen)
        }
    }
}

/// Looks at a condition with `probe` every `interval` until it is met, for at most
/// `timeout`. On failure, returns what the last look saw (the caller adds its context, such
/// as log tails).
pub async fn poll_until<T>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl AsyncFnMut() -> Probe<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Probe::Met(value) => return Ok(value),
            Probe::Failed(reason) => return Err(reason),
            Probe::NotYet(seen) if Instant::now() >= deadline => return Err(seen),
            Probe::NotYet(_) => tokio::time::sleep(interval).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(200);
    const INTERVAL: Duration = Duration::from_millis(10);

    #[tokio::test]
    async fn polling_ends_when_met() {
        let mut looks = 0;
        let met = poll_until(TIMEOUT, INTERVAL, async || {
            looks += 1;
            if looks == 3 {
                Probe::Met(looks)
            } else {
                Probe::NotYet(format!("look {looks}"))
            }
        })
        .await;
        assert_eq!(met, Ok(3));
    }

    #[tokio::test]
    async fn polling_ends_at_once_when_failed() {
        let mut looks = 0;
        let failed = poll_until::<()>(TIMEOUT, INTERVAL, async || {
            looks += 1;
            Probe::Failed("gone".to_owned())
        })
        .await;
        assert_eq!(failed, Err("gone".to_owned()));
        assert_eq!(looks, 1);
    }

    #[tokio::test]
    async fn polling_out_of_time_tells_the_last_look() {
        let started = Instant::now();
        let mut looks = 0;
        let late = poll_until::<()>(TIMEOUT, INTERVAL, async || {
            looks += 1;
            Probe::NotYet(format!("look {looks}"))
        })
        .await;
        assert_eq!(late, Err(format!("look {looks}")));
        assert!(started.elapsed() >= TIMEOUT);
        // At most one look per interval.
        assert!(looks <= 21, "{looks} looks");
    }
}
