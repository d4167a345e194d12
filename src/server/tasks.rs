//! Turning a client's TaskRequest into work, and the state a connection's
//! socket thread shares with its worker (cancels, the client leaving).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::collector::Waker;
use crate::proto::control::TaskRequest;
use crate::proto::{DetectionTask, ProtoTaskType};

/// The default MONITOR_PROCESS_TREE batching interval.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_millis(10);
/// The longest MONITOR_PROCESS_TREE batching interval.
pub const MAX_MONITOR_INTERVAL: Duration = Duration::from_secs(60);

/// Cancels remembered for tasks not (yet) running.
const REMEMBERED_CANCELS: usize = 16;

/// What the worker is asked to do.
#[derive(Debug)]
pub(super) enum Work {
    /// Run a valid task.
    Run(Job),
    /// Answer `task_id` with a failure result saying why the task was not
    /// run.
    Reject { task_id: String, message: String },
}

/// A task that passed validation.
#[derive(Debug)]
pub(super) struct Job {
    pub task: DetectionTask,
    pub kind: ProtoTaskType,
    pub with_hashes: bool,
    pub interval: Duration,
}

/// A request the connection cannot answer in the ring: the client is told in
/// an error frame and the connection ends.
#[derive(Debug)]
pub(super) struct BadRequest(pub String);

/// Checks a request: no task, or a task id that cannot be answered, is a
/// [`BadRequest`]; any other broken rule is a [`Work::Reject`] naming it.
pub(super) fn check(request: TaskRequest) -> Result<Work, BadRequest> {
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
    Ok(Work::Run(Job {
        task,
        kind,
        with_hashes: request.with_hashes,
        interval,
    }))
}

/// Cancels and the client's departure, shared by a connection's socket
/// thread (which sets them) and its worker (which waits on them).
#[derive(Debug, Default)]
pub(super) struct TaskSignals {
    state: Mutex<Signals>,
    changed: Condvar,
    /// Set with `gone`, for checks too frequent for the lock (each record,
    /// each hashed block).
    stop: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Signals {
    cancelled: VecDeque<String>,
    gone: bool,
    /// Wakes a running monitor's wait for process changes.
    waker: Option<Waker>,
}

impl TaskSignals {
    fn lock(&self) -> MutexGuard<'_, Signals> {
        // A panicked holder leaves nothing half-done in this state.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The client asked to stop `task_id` (running, queued, or already
    /// finished: then nothing happens).
    pub fn cancel(&self, task_id: String) {
        let mut state = self.lock();
        if state.cancelled.len() == REMEMBERED_CANCELS {
            state.cancelled.pop_front();
        }
        state.cancelled.push_back(task_id);
        if let Some(waker) = &state.waker {
            waker.wake();
        }
        self.changed.notify_all();
    }

    /// The client is gone: every task stops.
    pub fn client_gone(&self) {
        // Relaxed: a request to stop; the lock below publishes `gone`.
        self.stop.store(true, Ordering::Relaxed);
        let mut state = self.lock();
        state.gone = true;
        if let Some(waker) = &state.waker {
            waker.wake();
        }
        self.changed.notify_all();
    }

    /// Sets (or clears) what wakes the running monitor on a cancel or when
    /// the client goes.
    pub fn set_waker(&self, waker: Option<Waker>) {
        self.lock().waker = waker;
    }

    /// Whether `task_id` is cancelled or the client is gone.
    pub fn should_stop(&self, task_id: &str) -> bool {
        let state = self.lock();
        state.gone || state.cancelled.iter().any(|id| id == task_id)
    }

    /// Whether the client is gone.
    pub fn is_gone(&self) -> bool {
        // Relaxed: a request to stop; nothing is read on the strength of it.
        self.stop.load(Ordering::Relaxed)
    }

    /// A flag set when the client goes, for the collector's hashing.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }
}
