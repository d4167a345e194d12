//! Feeding procmond's [`ProcessTable`] from the kernel's process events.
//!
//! The event thread ([`EventSource`]) applies each event to the table as it
//! comes: a fork adds the child (with its parent's details until it
//! execs), an exec reads the new image's details at once, an exit removes
//! the process, uid and name changes update it. It also does the table's
//! scans, so they never race with events: the first one when the
//! subscription is in place, a resync after lost events, and the safety
//! net every `scan_interval`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::event_source::{EventSource, EventSourceConfig};
use super::events::{Event, ProcEvent, comm_name};
use super::table::{ProcessTable, ScanKind, SourceKind, TableConfig};
use crate::sys::cn_proc::SubscribeError;

/// How long [`ProcessTable::start`] waits for the first scan, and a poll
/// for the event thread to catch up with the kernel.
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// The event thread's nice value: it must read a new image's details
/// before a short-lived process exits, ahead of ordinary work.
const EVENT_THREAD_NICE: i32 = -10;

/// The table's event source, kept so polls can wait for it to catch up and
/// status can report its counters.
pub(crate) struct Feed {
    source: Mutex<Option<EventSource>>,
}

impl Feed {
    /// Waits until the event thread has applied every event queued now;
    /// false when it did not within `timeout` (or has stopped).
    pub(crate) fn sync(&self, timeout: Duration) -> bool {
        match &*lock(&self.source) {
            Some(source) => source.sync(timeout),
            None => false,
        }
    }

    /// The source's counters, while it runs.
    pub(crate) fn stats(&self) -> Option<super::EventStats> {
        lock(&self.source).as_ref().map(EventSource::stats)
    }
}

/// Starts the event source for `table`; on success the table is filled and
/// fed by events.
pub(crate) fn start(
    table: &ProcessTable,
    config: &TableConfig,
) -> Result<Arc<Feed>, SubscribeError> {
    // Weak: the table owns the source, so a strong handle here would keep
    // both alive for ever.
    let handler_table = table.downgrade();
    let source = EventSource::start(
        EventSourceConfig {
            recv_buffer_bytes: config.receive_buffer_bytes,
            tick: Some(config.scan_interval),
            thread_name: "procmond-events".into(),
            ..EventSourceConfig::default()
        },
        move |event| {
            if let Some(table) = ProcessTable::upgrade(&handler_table) {
                apply(&table, event);
            }
        },
    )?;
    // The first scan runs on the event thread before any event; wait for it.
    if !source.sync(SYNC_TIMEOUT) {
        tracing::warn!("the first process scan took more than {SYNC_TIMEOUT:?}");
    }
    Ok(Arc::new(Feed {
        source: Mutex::new(Some(source)),
    }))
}

fn apply(table: &ProcessTable, event: Event) {
    match event {
        Event::Process(process) => match process.event {
            ProcEvent::Fork {
                parent_tgid,
                child_tgid,
            } => table.on_fork(parent_tgid, child_tgid, process.timestamp_ns),
            ProcEvent::Exec { tgid } => table.on_exec(tgid),
            ProcEvent::Exit { tgid, .. } => table.on_exit(tgid),
            ProcEvent::Uid { tgid, euid, .. } => table.on_uid(tgid, euid),
            ProcEvent::Comm { tgid, comm } => {
                table.on_comm(tgid, &String::from_utf8_lossy(comm_name(&comm)));
            }
            ProcEvent::Gid { .. } => {}
        },
        Event::Subscribed => {
            if let Err(error) = crate::sys::thread::set_current_thread_nice(EVENT_THREAD_NICE) {
                tracing::debug!(%error, "the event thread keeps its priority");
            }
            scan(table, ScanKind::Poll);
        }
        Event::Tick => scan(table, ScanKind::SafetyNet),
        Event::Lost { reason } => {
            tracing::info!(?reason, "process events lost; rescanning /proc");
            scan(table, ScanKind::Resync);
        }
        Event::Failed { error } => {
            tracing::error!(?error, "process events ended; polling /proc from now on");
            table.set_source(SourceKind::Polling);
        }
    }
}

fn scan(table: &ProcessTable, kind: ScanKind) {
    match table.scan(kind) {
        Ok(0) => {}
        Ok(differed) if kind != ScanKind::Poll => {
            tracing::info!(?kind, differed, "a scan corrected the process table");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "process scan failed"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}
