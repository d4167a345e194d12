//! Stopping the accept loop from another thread.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Stops a [`Server::run_until`](super::Server::run_until) loop.
///
/// [`trigger`](Self::trigger) sets a flag and then connects to the server's
/// own socket, which wakes the blocked `accept`; the loop sees the flag and
/// returns. Cloneable and usable from any thread (a signal-waiting thread,
/// say).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    path: PathBuf,
}

impl ShutdownHandle {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(false)),
            path,
        }
    }

    /// Asks the server to stop. Harmless to call twice.
    pub fn trigger(&self) {
        // Release: pairs with the accept loop's Acquire load; nothing else
        // is published through the flag.
        self.flag.store(true, Ordering::Release);
        // The wake-up connection; if it fails the server is not accepting
        // anyway.
        let _ = UnixStream::connect(&self.path);
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        // Acquire: pairs with the Release store in `trigger`.
        self.flag.load(Ordering::Acquire)
    }
}
