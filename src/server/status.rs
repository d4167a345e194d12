//! procmond's answer to a status request: what it is, how it learns of
//! processes, and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::config::ServerConfig;
use super::slots::Slots;
use crate::collector::{ProcessTable, SharedHashCache, SourceKind};
use crate::control::PROTOCOL_VERSION;
use crate::proto::control::{EventCounters, EventSource, HashCacheCounters, Status};

/// The server-wide counters a status reports.
#[derive(Debug)]
pub(super) struct Counters {
    started: Instant,
    tasks_run: AtomicU64,
    tasks_failed: AtomicU64,
}

impl Counters {
    pub(super) fn new() -> Arc<Counters> {
        Arc::new(Counters {
            started: Instant::now(),
            tasks_run: AtomicU64::new(0),
            tasks_failed: AtomicU64::new(0),
        })
    }

    /// A task ended; `failed` when its result was a failure (or it could
    /// not be written).
    pub(super) fn task_done(&self, failed: bool) {
        // Relaxed: statistics.
        self.tasks_run.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.tasks_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Everything a status is made from.
pub(super) struct Sources<'a> {
    pub(super) config: &'a ServerConfig,
    pub(super) counters: &'a Counters,
    pub(super) slots: &'a Slots,
    pub(super) table: &'a ProcessTable,
    pub(super) hash_cache: &'a SharedHashCache,
}

/// The status now.
pub(super) fn status(sources: &Sources<'_>) -> Status {
    let table = sources.table.stats();
    let cache = sources.hash_cache.stats();
    let events = sources.table.event_stats().map(|e| EventCounters {
        events: e.events,
        overruns: e.overruns,
        sequence_gaps: e.sequence_gaps,
        missed_events: e.missed_events,
        malformed: e.malformed,
        spoofed: e.spoofed,
        resyncs: table.resyncs,
        corrections: table.corrections,
        scans: table.scans,
        tallies: table.tallies,
    });
    let counters = sources.counters;
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
        uptime_ms: u64::try_from(counters.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        euid: rustix::process::geteuid().as_raw(),
        capabilities: crate::sys::caps::effective_names(),
        event_source: match sources.table.source() {
            SourceKind::Connector => EventSource::Connector,
            SourceKind::Polling => EventSource::Polling,
        } as i32,
        events,
        clients: u32::try_from(sources.slots.clients()).unwrap_or(u32::MAX),
        max_clients: u32::try_from(sources.config.max_clients).unwrap_or(u32::MAX),
        max_clients_per_uid: u32::try_from(sources.config.per_uid_limit()).unwrap_or(u32::MAX),
        // Relaxed: statistics.
        tasks_run: counters.tasks_run.load(Ordering::Relaxed),
        tasks_failed: counters.tasks_failed.load(Ordering::Relaxed),
        hash_cache: Some(HashCacheCounters {
            entries: cache.entries as u64,
            hits: cache.hits,
            misses: cache.misses,
        }),
        ring_bytes: sources.config.ring_bytes as u64,
        processes: table.processes,
    }
}
