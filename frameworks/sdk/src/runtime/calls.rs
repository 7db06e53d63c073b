//! Calls into the core from outside the loop (an HTTP API), answered once their commands
//! are carried out.

use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

/// Sends a call's answer; run by the loop only once the commands the call produced are
/// carried out.
pub(crate) type Reply = Box<dyn FnOnce() + Send>;

/// A call as the loop runs it.
pub(crate) type CoreCall<C> = Box<dyn FnOnce(&mut C, SystemTime) -> Reply + Send>;

/// The loop's end of [`CoreCalls`]; hand it to [`Runtime::run`](super::Runtime::run).
pub struct CallReceiver<C> {
    pub(crate) receiver: mpsc::Receiver<CoreCall<C>>,
}

impl<C> std::fmt::Debug for CallReceiver<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallReceiver").finish_non_exhaustive()
    }
}

/// A handle that runs functions on the core inside the loop.
pub struct CoreCalls<C> {
    sender: mpsc::Sender<CoreCall<C>>,
}

impl<C> Clone for CoreCalls<C> {
    fn clone(&self) -> Self {
        CoreCalls {
            sender: self.sender.clone(),
        }
    }
}

impl<C> std::fmt::Debug for CoreCalls<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreCalls").finish_non_exhaustive()
    }
}

/// A pair of call handle and receiver; at most `capacity` calls wait for the loop.
pub fn core_calls<C>(capacity: usize) -> (CoreCalls<C>, CallReceiver<C>) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (CoreCalls { sender }, CallReceiver { receiver })
}

impl<C: 'static> CoreCalls<C> {
    /// Runs `function` on the core inside the loop and returns its result. The answer
    /// arrives only after the commands the call produced are carried out, so a change it
    /// confirms is already stored; `None` when the loop stopped (or could not store).
    pub async fn call<T: Send + 'static>(
        &self,
        function: impl FnOnce(&mut C, SystemTime) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let call: CoreCall<C> = Box::new(move |core, now| {
            let result = function(core, now);
            Box::new(move || {
                let _ = reply.send(result);
            })
        });
        self.sender.send(call).await.ok()?;
        answer.await.ok()
    }
}
