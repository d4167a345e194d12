//! Feeding procmond's [`ProcessTable`] from the kernel's process events.
//!
//! The event thread ([`EventSource`]) applies each event to the table as it
//! comes: a fork adds the child (with its parent's details until it
//! execs), an exec reads the new image's details at once, an exit removes
//! the process, uid and name changes update it. It also does the table's
//! scans, so they never race with events: the first one when the
//! subscription is in place, a resync after lost events, and the safety
//! net every `scan_interval`.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::details::Details;
use super::event_source::{EventHandler, EventSource, EventSourceConfig};
use super::events::{Event, ProcEvent, ProcessEvent, comm_name};
use super::table::{ProcessTable, ScanKind, Shared, SourceKind, TableConfig};
use crate::sys::cn_proc::SubscribeError;

/// How long [`ProcessTable::start`] waits for the first scan, and a poll
/// for the event thread to catch up with the kernel.
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// The event thread's nice value: it must read a new image's details
/// before a short-lived process exits, ahead of ordinary work.
const EVENT_THREAD_NICE: i32 = -10;

/// The event thread's real-time priority, the lowest.
const EVENT_THREAD_FIFO: i32 = 1;

/// Every this many safety-net rounds, one reads every process
/// ([`ScanKind::SafetyNet`]); the others compare the kernel's task count
/// with the forks and exits heard ([`Tally`](super::events::Tally)), and only when that moved
/// list `/proc` ([`ScanKind::Census`]). With the default 10 s interval: a
/// tally (one `sysinfo(2)`) or census every 10 s, a full check every 2
/// minutes. On 10,000 processes a full check reads for some 50 ms, a
/// census lists `/proc` for about 11 ms (1.1 µs an entry, in the kernel),
/// a tally takes microseconds.
const FULL_SAFETY_NET_EVERY: u64 = 12;

/// The table's event source, kept so polls can wait for it to catch up and
/// status can report its counters.
pub(crate) struct Feed {
    source: Mutex<Option<EventSource>>,
    /// [`TableConfig::realtime_events`]: monitor streams may run real-time
    /// too.
    pub(crate) realtime: bool,
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
    let source = EventSource::start(
        EventSourceConfig {
            recv_buffer_bytes: config.receive_buffer_bytes,
            tick: Some(config.scan_interval),
            thread_name: "procmond-events".into(),
            give_up_net_admin: config.give_up_net_admin,
            ..EventSourceConfig::default()
        },
        Applier {
            // Weak: the table owns the source, so a strong handle here
            // would keep both alive for ever.
            table: table.downgrade(),
            read_ahead: Vec::new(),
            realtime: config.realtime_events,
            ticks: 0,
            offset: None,
        },
    )?;
    // The first scan runs on the event thread before any event; wait for it.
    if !source.sync(SYNC_TIMEOUT) {
        tracing::warn!("the first process scan took more than {SYNC_TIMEOUT:?}");
    }
    Ok(Arc::new(Feed {
        source: Mutex::new(Some(source)),
        realtime: config.realtime_events,
    }))
}

/// Applies events to the table, on the event thread.
struct Applier {
    table: Weak<Shared>,
    /// Details read ahead for the exec events of the burst being applied:
    /// (pid, what was read), taken by the exec event they are for.
    read_ahead: Vec<(u32, Option<Details>)>,
    /// [`TableConfig::realtime_events`].
    realtime: bool,
    /// Safety-net rounds so far.
    ticks: u64,
    /// [`Tally::offset`] at the last round that checked the table against
    /// `/proc`: a round whose offset is the same heard every fork and exit
    /// since, and lists nothing.
    offset: Option<u16>,
}

impl EventHandler for Applier {
    /// Reads the new image of every process that exec'd in this burst and
    /// has not exited in it, before the events ahead of its exec are
    /// applied: the image and command line go with the process's memory
    /// at exit, and a short-lived one such as `/bin/true` exits within a
    /// millisecond. (For one that exited in the burst they are gone
    /// already; its exec reads what is left in its turn.)
    fn ahead(&mut self, burst: &[Event]) {
        self.read_ahead.clear();
        let Some(table) = ProcessTable::upgrade(&self.table) else {
            return;
        };
        for (at, event) in burst.iter().enumerate() {
            let Some(pid) = exec_of(event) else { continue };
            let exits_later = burst
                .get(at + 1..)
                .unwrap_or_default()
                .iter()
                .any(|later| exit_of(later) == Some(pid));
            if !exits_later && !self.read_ahead.iter().any(|(read, _)| *read == pid) {
                self.read_ahead.push((pid, table.read_details(pid)));
            }
        }
    }

    fn event(&mut self, event: Event) {
        if let Some(table) = ProcessTable::upgrade(&self.table) {
            let read_ahead = exec_of(&event).and_then(|pid| {
                let at = self.read_ahead.iter().position(|(read, _)| *read == pid)?;
                Some(self.read_ahead.swap_remove(at).1)
            });
            match event {
                Event::Subscribed => raise_priority(self.realtime),
                Event::Tick(tally) => {
                    self.ticks += 1;
                    let offset = tally.offset();
                    if self.ticks % FULL_SAFETY_NET_EVERY != 0 {
                        if offset.is_some() && offset == self.offset {
                            table.count_tally();
                        } else {
                            scan(&table, ScanKind::Census);
                        }
                        self.offset = offset;
                        return;
                    }
                    self.offset = offset;
                }
                _ => {}
            }
            apply(&table, event, read_ahead);
        }
    }
}

fn exec_of(event: &Event) -> Option<u32> {
    match event {
        Event::Process(ProcessEvent {
            event: ProcEvent::Exec { tgid },
            ..
        }) => Some(*tgid),
        _ => None,
    }
}

fn exit_of(event: &Event) -> Option<u32> {
    match event {
        Event::Process(ProcessEvent {
            event: ProcEvent::Exit { tgid, .. },
            ..
        }) => Some(*tgid),
        _ => None,
    }
}

fn apply(table: &ProcessTable, event: Event, read_ahead: Option<Option<Details>>) {
    match event {
        Event::Process(process) => match process.event {
            ProcEvent::Fork {
                parent_tgid,
                child_tgid,
            } => table.on_fork(parent_tgid, child_tgid, process.timestamp_ns),
            ProcEvent::Exec { tgid } => table.on_exec(tgid, read_ahead),
            ProcEvent::Exit { tgid, .. } => table.on_exit(tgid),
            ProcEvent::Uid { tgid, euid, .. } => table.on_uid(tgid, euid),
            ProcEvent::Comm { tgid, comm } => {
                table.on_comm(tgid, &String::from_utf8_lossy(comm_name(&comm)));
            }
            ProcEvent::Gid { .. } => {}
        },
        Event::Subscribed => scan(table, ScanKind::Poll),
        Event::Tick(_) => scan(table, ScanKind::SafetyNet),
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

/// Makes the event thread run as soon as an event comes: real-time
/// (`SCHED_FIFO` 1) when `realtime` and allowed, else nice -10, else as it
/// is (logged, not an error: the table still works, it only misses more
/// of the images of processes that exit within a millisecond).
fn raise_priority(realtime: bool) {
    use crate::sys::thread;
    if realtime {
        match thread::set_current_thread_fifo(EVENT_THREAD_FIFO) {
            Ok(()) => return,
            Err(error) => tracing::info!(%error, "the process event thread is not real-time"),
        }
    }
    if let Err(error) = thread::set_current_thread_nice(EVENT_THREAD_NICE) {
        tracing::info!(%error, "the process event thread keeps its priority");
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
