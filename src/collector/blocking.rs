//! File-system calls that may never return (a hung NFS or FUSE file), run
//! on a helper thread and waited for with a timeout, so a hung read fails
//! its task instead of pinning the connection's worker.
//!
//! Each [`IoThread`] keeps one helper thread. A call that outlives its
//! timeout (or the client leaving) is abandoned with its thread, which ends
//! by itself whenever the call returns; the next call starts a new thread.
//! At most [`MAX_ABANDONED`] threads may be abandoned at once in the whole
//! process, so a peer cannot pile up blocked threads: beyond that, calls are
//! refused until some return.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// The most helper threads abandoned in a call at once, process-wide.
pub(crate) const MAX_ABANDONED: usize = 32;

/// Helper threads abandoned and still in their call.
static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// How often a wait looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

type Job = Box<dyn FnOnce() + Send>;

/// How a call ended.
#[derive(Debug)]
pub(crate) enum Waited<R> {
    /// It returned this.
    Done(R),
    /// It had not returned after the timeout; abandoned.
    TimedOut,
    /// The stop flag was set while it ran; abandoned.
    Stopped,
    /// Too many calls are abandoned already ([`MAX_ABANDONED`]); not run.
    TooManyHung,
}

/// A helper thread for blocking calls; see the [module documentation](self).
#[derive(Default)]
pub(crate) struct IoThread {
    worker: Option<Helper>,
}

struct Helper {
    jobs: mpsc::Sender<Job>,
    /// Set when this helper is given up on while in a call.
    abandoned: Arc<AtomicBool>,
}

impl IoThread {
    /// Runs `call` on the helper thread and waits at most `timeout` for it
    /// (checking `stop` meanwhile).
    pub(crate) fn run<R: Send + 'static>(
        &mut self,
        timeout: Duration,
        stop: Option<&AtomicBool>,
        call: impl FnOnce() -> R + Send + 'static,
    ) -> Waited<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(call());
        });
        let Some(helper) = self.helper() else {
            return Waited::TooManyHung;
        };
        if let Err(mpsc::SendError(job)) = helper.jobs.send(job) {
            // The thread is gone (it cannot be, but do the work anyway).
            self.worker = None;
            job();
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(STOP_CHECK, |d| d.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(left.min(STOP_CHECK)) {
                Ok(value) => return Waited::Done(value),
                Err(RecvTimeoutError::Disconnected) => {
                    // The call panicked on the helper thread.
                    self.worker = None;
                    return Waited::TimedOut;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Relaxed: a request to stop; nothing is read on the strength of it.
            let stopped = stop.is_some_and(|s| s.load(Ordering::Relaxed));
            let late = deadline.is_some_and(|d| Instant::now() >= d);
            if stopped || late {
                self.abandon();
                return if stopped {
                    Waited::Stopped
                } else {
                    Waited::TimedOut
                };
            }
        }
    }

    /// The live helper, started if need be; `None` when too many are
    /// abandoned or no thread can be started.
    fn helper(&mut self) -> Option<&Helper> {
        if self.worker.is_none() {
            if ABANDONED.load(Ordering::Relaxed) >= MAX_ABANDONED {
                return None;
            }
            let (jobs, queue) = mpsc::channel::<Job>();
            let abandoned = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&abandoned);
            let spawned = thread::Builder::new()
                .name("procmond-io".into())
                .spawn(move || {
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                    // Acquire: pairs with the Release in `abandon`.
                    if flag.load(Ordering::Acquire) {
                        ABANDONED.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start a file I/O thread");
                return None;
            }
            self.worker = Some(Helper { jobs, abandoned });
        }
        self.worker.as_ref()
    }

    /// Gives the helper up: it ends once its call returns.
    fn abandon(&mut self) {
        if let Some(helper) = self.worker.take() {
            // Counted before the flag is seen: the thread's decrement
            // (after its call returns and the channel is closed) follows.
            ABANDONED.fetch_add(1, Ordering::Relaxed);
            helper.abandoned.store(true, Ordering::Release);
            tracing::warn!("a file system call did not return in time; its thread is left to it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_returns_is_answered_and_one_that_hangs_times_out() {
        let mut io = IoThread::default();
        assert!(matches!(
            io.run(Duration::from_secs(5), None, || 7),
            Waited::Done(7)
        ));
        let (release, held) = mpsc::channel::<()>();
        let started = Instant::now();
        let hung = io.run(Duration::from_millis(100), None, move || {
            held.recv().is_ok()
        });
        assert!(matches!(hung, Waited::TimedOut), "{hung:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // A new helper serves the next call while the old one is stuck.
        assert!(matches!(
            io.run(Duration::from_secs(5), None, || 8),
            Waited::Done(8)
        ));
        drop(release);
        let stop = AtomicBool::new(true);
        let (_release, held) = mpsc::channel::<()>();
        let stopped = io.run(Duration::from_secs(60), Some(&stop), move || {
            held.recv().is_ok()
        });
        assert!(matches!(stopped, Waited::Stopped), "{stopped:?}");
    }
}
