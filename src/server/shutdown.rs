//! Stopping the accept loop from another thread.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::socket::shutdown_listener;

/// Stops a [`Server::run_until`](super::Server::run_until) loop.
///
/// [`trigger`](Self::trigger) sets a flag and then shuts the listening
/// socket's receiving side down (through its own duplicate of the
/// listener's descriptor), which wakes the blocked `accept` whatever became
/// of the socket's path; the loop sees the flag and returns. Cloneable and
/// usable from any thread (a signal-waiting thread, say).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    listener: Arc<OwnedFd>,
}

impl ShutdownHandle {
    pub(super) fn new(listener: OwnedFd) -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(false)),
            listener: Arc::new(listener),
        }
    }

    /// Asks the server to stop. Harmless to call twice.
    pub fn trigger(&self) {
        // Release: pairs with the accept loop's Acquire load; nothing else
        // is published through the flag.
        self.flag.store(true, Ordering::Release);
        // Wakes the accept; if it fails, the listener is already unusable
        // and the loop's accept fails on its own.
        if let Err(error) = shutdown_listener(self.listener.as_fd()) {
            tracing::debug!(%error, "shutting the listener down");
        }
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        // Acquire: pairs with the Release store in `trigger`.
        self.flag.load(Ordering::Acquire)
    }
}
