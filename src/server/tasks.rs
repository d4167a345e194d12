//! Turning a client's TaskRequest into work, and the state a connection's
//! socket thread shares with its worker (cancels, the client leaving).

use super::changes::Thresholds;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::collector::Waker;
use crate::proto::control::TaskRequest;
use crate::proto::{DetectionTask, ProtoTaskType};

/// The default MONITOR_PROCESS_TREE batching interval.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_millis(10);
/// The longest MONITOR_PROCESS_TREE batching interval.
pub const MAX_MONITOR_INTERVAL: Duration = Duration::from_secs(60);

/// What the worker is asked to do.
#[derive(Debug)]
pub(super) enum Work {
    /// Run a valid task (boxed: a job is large beside a rejection).
    Run(Box<Job>),
    /// Answer `task_id` with a failure result saying why the task was not
    /// run.
    Reject { task_id: String, message: String },
}

impl Work {
    /// The id of the task this answers.
    pub(super) fn task_id(&self) -> &str {
        match self {
            Work::Run(job) => &job.task.task_id,
            Work::Reject { task_id, .. } => task_id,
        }
    }
}

/// A task that passed validation.
#[derive(Debug)]
pub(super) struct Job {
    pub task: DetectionTask,
    pub kind: ProtoTaskType,
    pub with_hashes: bool,
    pub interval: Duration,
    /// ENUMERATE_PROCESSES: only the changes since the connection's last
    /// changes-only enumerate, with these thresholds.
    pub changes: Option<Thresholds>,
    /// CHECK_PROCESS_HASH: the file the client opened and attached.
    pub file: Option<File>,
}

/// A request the connection cannot answer in the ring: the client is told in
/// an error frame and the connection ends.
#[derive(Debug)]
pub(super) struct BadRequest(pub String);

/// Checks a request and the descriptor attached to it (the channel let one
/// through only with `hash_file_attached`): no task, or a task id that
/// cannot be answered, is a [`BadRequest`]; any other broken rule is a
/// [`Work::Reject`] naming it.
pub(super) fn check(request: TaskRequest, attached: Option<OwnedFd>) -> Result<Work, BadRequest> {
    let Some(task) = request.task else {
        return Err(BadRequest("a task request without a task".into()));
    };
    if let Err(error) = task.validate() {
        if error.field == "task_id" {
            return Err(BadRequest(format!("a task request with {error}")));
        }
        return Ok(Work::Reject {
            task_id: task.task_id,
            message: format!("invalid task: {error}"),
        });
    }
    // Validation checked the type.
    let kind = ProtoTaskType::try_from(task.task_type).unwrap_or(ProtoTaskType::EnumerateProcesses);
    let interval = request.interval_ms.map_or(DEFAULT_MONITOR_INTERVAL, |ms| {
        Duration::from_millis(u64::from(ms))
    });
    if kind == ProtoTaskType::MonitorProcessTree && interval > MAX_MONITOR_INTERVAL {
        return Ok(Work::Reject {
            task_id: task.task_id,
            message: format!(
                "invalid task: `interval_ms` {} is above the maximum of {} ms",
                interval.as_millis(),
                MAX_MONITOR_INTERVAL.as_millis()
            ),
        });
    }
    let changes = match &request.changes {
        None => None,
        Some(_) if kind != ProtoTaskType::EnumerateProcesses || request.with_hashes => {
            return Ok(Work::Reject {
                task_id: task.task_id,
                message: format!(
                    "invalid task: `changes` is for ENUMERATE_PROCESSES without hashes, not {}{}",
                    kind.as_str_name(),
                    if request.with_hashes {
                        " with hashes"
                    } else {
                        ""
                    }
                ),
            });
        }
        Some(changes) => match Thresholds::of(changes) {
            Ok(thresholds) => Some(thresholds),
            Err(problem) => {
                return Ok(Work::Reject {
                    task_id: task.task_id,
                    message: format!("invalid task: {problem}"),
                });
            }
        },
    };
    if attached.is_some() && kind != ProtoTaskType::CheckProcessHash {
        return Ok(Work::Reject {
            task_id: task.task_id,
            message: format!(
                "invalid task: a file is attached to a {} task; only a hash check takes one",
                kind.as_str_name()
            ),
        });
    }
    Ok(Work::Run(Box::new(Job {
        task,
        kind,
        with_hashes: request.with_hashes,
        interval,
        changes,
        file: attached.map(File::from),
    })))
}

/// What a cancel applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CancelOutcome {
    /// The running task: it stops.
    Running,
    /// A queued task: it ends as cancelled when its turn comes.
    Queued,
    /// No queued or running task has the id: nothing.
    NotLive,
}

/// Cancels and the client's departure, shared by a connection's socket
/// thread (which sets them) and its worker (which acts on them).
///
/// A cancel is kept only for a task that is queued or running (one the
/// socket thread [`queued`](Self::queued) and the worker has not
/// [`finished`](Self::finished)), and is consumed when that task ends: a
/// cancel for a task that already ended does nothing, and a later task
/// reusing the id runs.
#[derive(Debug, Default)]
pub(super) struct TaskSignals {
    state: Mutex<Signals>,
    /// Set with `gone`, for checks too frequent for the lock (each record,
    /// each hashed block).
    stop: Arc<AtomicBool>,
    /// Set when the running task is cancelled or the client goes: what the
    /// running task's record loop and hashing watch.
    halt: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Signals {
    /// Tasks queued or running, by id, with how many of each.
    live: HashMap<String, usize>,
    /// Cancels of live tasks, at most one per live task.
    cancelled: Vec<String>,
    /// The task the worker runs now.
    running: Option<String>,
    gone: bool,
    /// Wakes a running monitor's wait for process changes.
    waker: Option<Waker>,
}

impl Signals {
    fn is_cancelled(&self, task_id: &str) -> bool {
        self.cancelled.iter().any(|id| id == task_id)
    }
}

impl TaskSignals {
    fn lock(&self) -> MutexGuard<'_, Signals> {
        // A panicked holder leaves nothing half-done in this state.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The socket thread queued a task `task_id` for the worker.
    pub fn queued(&self, task_id: &str) {
        *self.lock().live.entry(task_id.to_owned()).or_insert(0) += 1;
    }

    /// The client asked to stop `task_id`: a queued one ends as cancelled
    /// when its turn comes, a running one at its next record, hashed block
    /// or wait; for a task that is not live, nothing happens. Says which.
    pub fn cancel(&self, task_id: String) -> CancelOutcome {
        let mut state = self.lock();
        let live = state.live.get(&task_id).copied().unwrap_or(0);
        let already = state.cancelled.iter().filter(|id| **id == task_id).count();
        if already >= live {
            return CancelOutcome::NotLive;
        }
        let running = state.running.as_deref() == Some(task_id.as_str());
        if running {
            // Relaxed: a request to stop; the lock orders the rest.
            self.halt.store(true, Ordering::Relaxed);
            if let Some(waker) = &state.waker {
                waker.wake();
            }
        }
        state.cancelled.push(task_id);
        if running {
            CancelOutcome::Running
        } else {
            CancelOutcome::Queued
        }
    }

    /// The worker starts `task_id`; true when it was cancelled while
    /// queued (the worker then answers it as cancelled without running it).
    pub fn start(&self, task_id: &str) -> bool {
        let mut state = self.lock();
        state.running = Some(task_id.to_owned());
        let cancelled = state.is_cancelled(task_id);
        // Relaxed: read by this same thread, or as a request to stop.
        self.halt.store(state.gone || cancelled, Ordering::Relaxed);
        cancelled
    }

    /// The worker is done with `task_id`: it is no longer live, and a
    /// cancel of it is consumed.
    pub fn finished(&self, task_id: &str) {
        let mut state = self.lock();
        state.running = None;
        if let Some(i) = state.cancelled.iter().position(|id| id == task_id) {
            state.cancelled.swap_remove(i);
        }
        if let Some(count) = state.live.get_mut(task_id) {
            *count -= 1;
            if *count == 0 {
                state.live.remove(task_id);
            }
        }
        // Relaxed: as in `start`.
        self.halt.store(state.gone, Ordering::Relaxed);
    }

    /// The client is gone: every task stops.
    pub fn client_gone(&self) {
        // Relaxed: requests to stop; the lock below publishes `gone`.
        self.stop.store(true, Ordering::Relaxed);
        self.halt.store(true, Ordering::Relaxed);
        let mut state = self.lock();
        state.gone = true;
        if let Some(waker) = &state.waker {
            waker.wake();
        }
    }

    /// Sets (or clears) what wakes the running monitor on a cancel or when
    /// the client goes.
    pub fn set_waker(&self, waker: Option<Waker>) {
        self.lock().waker = waker;
    }

    /// Whether the running task should stop: it was cancelled, or the
    /// client is gone.
    pub fn halted(&self) -> bool {
        // Relaxed: a request to stop; nothing is read on the strength of it.
        self.halt.load(Ordering::Relaxed)
    }

    /// Whether the running task's stop is a cancel (not the client leaving).
    pub fn is_cancelled(&self, task_id: &str) -> bool {
        let state = self.lock();
        !state.gone && state.is_cancelled(task_id)
    }

    /// Whether the client is gone.
    pub fn is_gone(&self) -> bool {
        // Relaxed: a request to stop; nothing is read on the strength of it.
        self.stop.load(Ordering::Relaxed)
    }

    /// A flag set when the running task should stop (see
    /// [`halted`](Self::halted)), for the collector's hashing.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.halt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_applies_to_a_live_task_once_and_is_then_forgotten() {
        let signals = TaskSignals::default();
        // Not live: ignored.
        assert_eq!(signals.cancel("t".into()), CancelOutcome::NotLive);
        signals.queued("t");
        assert!(!signals.start("t"));
        assert!(!signals.halted());
        assert_eq!(signals.cancel("t".into()), CancelOutcome::Running);
        assert!(signals.halted() && signals.is_cancelled("t"));
        signals.finished("t");
        assert!(!signals.halted());
        // The id reused: it runs.
        signals.queued("t");
        assert!(!signals.start("t"));
        signals.finished("t");
        // Cancelled while queued: answered as cancelled, then forgotten.
        signals.queued("t");
        assert_eq!(signals.cancel("t".into()), CancelOutcome::Queued);
        assert_eq!(signals.cancel("t".into()), CancelOutcome::NotLive);
        assert!(signals.start("t"));
        signals.finished("t");
        signals.queued("t");
        assert!(!signals.start("t"));
    }
}
