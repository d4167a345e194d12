//! Stopping the accept loop from another thread.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::socket::shutdown_listener;
use crate::sys::wake::Waker;

/// Stops a [`Server::run_until`](super::Server::run_until) loop.
///
/// [`trigger`](Self::trigger) sets a flag and wakes the loop's `poll`
/// through an eventfd, whatever became of the socket's path; the loop sees
/// the flag and returns. A socket procmond bound itself also has its
/// receiving side shut down (through a duplicate of its descriptor), so
/// connects are refused from then on rather than left waiting; a socket the
/// service manager passed is left as it is, since the manager hands that
/// same socket to the next procmond and connects meanwhile wait in its
/// backlog. Cloneable and usable from any thread (a signal-waiting thread,
/// say).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Waker,
    /// A duplicate of a listener procmond bound itself; `None` for one the
    /// service manager passed.
    owned_listener: Option<Arc<OwnedFd>>,
}

impl ShutdownHandle {
    pub(super) fn new(waker: Waker, owned_listener: Option<OwnedFd>) -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(false)),
            waker,
            owned_listener: owned_listener.map(Arc::new),
        }
    }

    /// Asks the server to stop. Harmless to call twice.
    pub fn trigger(&self) {
        // Release: pairs with the accept loop's Acquire load; nothing else
        // is published through the flag.
        self.flag.store(true, Ordering::Release);
        // If the wake fails, the loop still sees the flag at its next
        // connection (or the listener's shutdown below ends its wait).
        if let Err(error) = self.waker.wake() {
            tracing::debug!(%error, "waking the accept loop");
        }
        if let Some(listener) = &self.owned_listener {
            // Refuses connects from now on; if it fails, the listener is
            // already unusable.
            if let Err(error) = shutdown_listener(listener.as_fd()) {
                tracing::debug!(%error, "shutting the listener down");
            }
        }
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        // Acquire: pairs with the Release store in `trigger`.
        self.flag.load(Ordering::Acquire)
    }

    /// What the accept loop polls beside its listener.
    pub(super) fn waker(&self) -> &Waker {
        &self.waker
    }
}
