//! The live process table: every process procmond knows of, keyed by (pid,
//! start time in clock ticks), shared by every connection.
//!
//! ```text
//!  kernel events (fork, exec, exit, uid, comm) ──▶ on_* ──┐
//!  full scans (start, safety net, resync, polling) ───────┼──▶ entries ──▶ visit (enumerate, verify)
//!                                                         └──▶ changes ──▶ subscribers (monitors)
//! ```
//!
//! Each entry keeps the process's rarely changing [`Details`] (read once per
//! exec; a forked child shares its parent's until its own exec), its
//! `stat` descriptor (kept open within a budget of descriptors) and its last
//! [`Usage`] reading, which polls within one usage window share.
//!
//! Locks: the map lock is held only to look up, insert, remove and
//! broadcast, never across a read of `/proc` (the event thread must not wait
//! behind a poll of 10,000 processes); each entry has its own lock, held
//! while its `stat` is read.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::CollectError;
use super::details::{self, Details, ExeLink};
use super::feed::{self, Feed};
use super::usage::{self, Reading, STAT_BUF_BYTES, Stat, StatHandle, Units, Usage};
use crate::proto::ProtoProcessRecord;
use crate::proto::encoded::{EncodedRecord, StableFields};
use crate::sys::procfs::{self, ProcRoot};

/// Identifies a process across time: a reused pid has another start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    /// The process (thread-group) id.
    pub pid: u32,
    /// Clock ticks since boot (field 22 of `/proc/<pid>/stat`): a pid
    /// reused within the same second still has another start.
    pub start_ticks: u64,
}

/// Changes queued for one subscriber before it is cut off as too slow.
pub(crate) const SUBSCRIBER_QUEUE: usize = 1 << 16;

/// What happened to a process, as a subscriber (a monitor) is told.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// Forked by `parent`; its record is the parent's image until it execs.
    Forked {
        parent: u32,
        key: ProcKey,
        record: ProtoProcessRecord,
    },
    /// Found by a scan (polling, or a correction after lost events).
    Appeared {
        key: ProcKey,
        record: ProtoProcessRecord,
    },
    /// Replaced its image; the record carries the new one.
    Exec {
        key: ProcKey,
        record: ProtoProcessRecord,
    },
    /// Exited; the record is as last known.
    Exited {
        key: ProcKey,
        record: ProtoProcessRecord,
    },
    /// Nothing happened: the subscriber is asked to look at its stop
    /// conditions (see [`Subscription::waker`]).
    Wake,
}

/// A subscriber's end: the changes since it subscribed, in order.
pub(crate) struct Subscription {
    rx: Receiver<Change>,
    tx: SyncSender<Change>,
    overflowed: Arc<AtomicBool>,
}

/// Makes a subscriber's wait return at once (a cancel, the client leaving).
#[derive(Clone)]
pub struct Waker(SyncSender<Change>);

impl Waker {
    /// Wakes the subscriber; a full queue wakes it anyway.
    pub fn wake(&self) {
        let _ = self.0.try_send(Change::Wake);
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

impl Subscription {
    /// The next change, waiting until `until`; `None` at `until`. Fails when
    /// the subscriber fell more than [`SUBSCRIBER_QUEUE`] changes behind.
    pub(crate) fn next(&self, until: Instant) -> Result<Option<Change>, Overflowed> {
        // Acquire: pairs with the Release store made when a change was
        // dropped, so the drop is seen before later changes are trusted.
        if self.overflowed.load(Ordering::Acquire) {
            return Err(Overflowed);
        }
        let wait = until.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(wait) {
            Ok(change) => Ok(Some(change)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            // The table holds a sender as long as the subscription exists.
            Err(RecvTimeoutError::Disconnected) => Err(Overflowed),
        }
    }

    /// A handle that wakes [`next`](Self::next) from another thread.
    pub(crate) fn waker(&self) -> Waker {
        Waker(self.tx.clone())
    }
}

/// A subscriber fell too far behind and changes were dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the monitor fell more than {SUBSCRIBER_QUEUE} process changes behind")]
pub struct Overflowed;

struct Subscriber {
    tx: SyncSender<Change>,
    overflowed: Arc<AtomicBool>,
}

/// Where the table's news comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// The kernel's process connector: every fork, exec and exit as it
    /// happens, with full scans as a safety net.
    Connector,
    /// No event source: the table is read again by each poll.
    Polling,
}

impl SourceKind {
    /// A short lower-case name, for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Connector => "connector",
            SourceKind::Polling => "polling",
        }
    }
}

/// Counters of a table, for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Processes in the table now.
    pub processes: u64,
    /// `stat` descriptors kept open now.
    pub kept_descriptors: u64,
    /// Scans completed (start, safety net, census, resync, polls).
    pub scans: u64,
    /// Resyncs after lost events.
    pub resyncs: u64,
    /// What scans found that events had not said: processes added,
    /// removed, or with another image.
    pub corrections: u64,
    /// Processes whose usage `stat` was read (each read once per window).
    pub usage_reads: u64,
    /// Processes already in the table that a scan read again to check
    /// them (a census of `/proc` reads none of them).
    pub scan_checks: u64,
    /// Safety-net rounds answered by the kernel's task count alone: it
    /// agreed with the forks and exits heard, so `/proc` was not listed.
    pub tallies: u64,
}

#[derive(Default)]
struct Counters {
    scans: AtomicU64,
    resyncs: AtomicU64,
    corrections: AtomicU64,
    usage_reads: AtomicU64,
    scan_checks: AtomicU64,
    tallies: AtomicU64,
}

/// What a scan does beyond finding who is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanKind {
    /// The first scan, or a poll without an event source: new and gone
    /// processes; an exe link that changed means an exec.
    Poll,
    /// The periodic safety net: like a poll, differences are corrections.
    SafetyNet,
    /// The safety net between full ones: `/proc` listed and compared with
    /// the table, and only pids it does not hold read. The events keep the
    /// rest true, and any loss of them is seen (overrun, sequence gaps)
    /// and resynced; reading every process's `stat` and `exe` link would
    /// cost some 10 µs a process on each round.
    Census,
    /// After lost events: also every process's details read again.
    Resync,
}

/// One process of the table.
pub(crate) struct Entry {
    pub(crate) key: ProcKey,
    state: Mutex<EntryState>,
}

struct EntryState {
    ppid: Option<u32>,
    details: Arc<Details>,
    stat: StatHandle,
    usage: Usage,
    /// The record's stable fields as last encoded, for polls that stream
    /// records pre-encoded ([`ProcessTable::visit_encoded`]).
    stable: Option<KeptStable>,
}

/// Stable fields encoded from `details` and `ppid`: valid while the entry
/// still holds that same `details` (replaced whole on exec, uid or name
/// change) and parent.
struct KeptStable {
    details: Arc<Details>,
    ppid: Option<u32>,
    fields: Arc<StableFields>,
}

/// A process's record as one poll sees it with its stable fields
/// pre-encoded, and the details a filter looks at.
pub(crate) struct EncodedObserved<'a> {
    pub(crate) pid: u32,
    pub(crate) record: EncodedRecord,
    pub(crate) details: &'a Details,
}

/// A process's record as one poll sees it, and its image path on disk.
pub(crate) struct Observed {
    pub(crate) record: ProtoProcessRecord,
    pub(crate) exe: Option<PathBuf>,
}

struct Map {
    procs: BTreeMap<u32, Arc<Entry>>,
    subscribers: Vec<Subscriber>,
}

pub(crate) struct Shared {
    root: Option<ProcRoot>,
    units: Units,
    boot_unix_s: i64,
    map: Mutex<Map>,
    /// One scan at a time.
    scanning: Mutex<()>,
    source: Mutex<SourceKind>,
    kept: AtomicUsize,
    fd_budget: usize,
    counters: Counters,
    /// The kernel event source, once started.
    feed: OnceLock<Arc<Feed>>,
}

/// The live process table; cheap to clone (a handle on shared state).
#[derive(Clone)]
pub struct ProcessTable {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProcessTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessTable")
            .field("source", &self.source())
            .field("stats", &self.stats())
            .finish()
    }
}

/// How procmond's table is fed; see [`ProcessTable::start`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// Use the kernel's process connector when it can be had (else: poll).
    /// Default true.
    pub use_connector: bool,
    /// With the connector, how often a full scan of `/proc` checks the
    /// table (the safety net). Default 10 s.
    pub scan_interval: std::time::Duration,
    /// The connector socket's receive buffer: room for bursts of events
    /// while the event thread is busy. Default 8 MiB.
    pub receive_buffer_bytes: usize,
    /// Run the event thread real-time (`SCHED_FIFO` 1) where allowed, so it
    /// reads a new image before even a `/bin/true` exits; else (or when
    /// not allowed) at nice -10. Monitor streams then run real-time too
    /// while they wait for and send events, so an exec reaches the agent
    /// within a millisecond on a busy host. Default true.
    pub realtime_events: bool,
    /// Give up `CAP_NET_ADMIN` once the connector is subscribed or refused
    /// ([`EventSourceConfig::give_up_net_admin`](super::EventSourceConfig)):
    /// for procmond, which starts its table before any other thread.
    /// Default false.
    pub give_up_net_admin: bool,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            use_connector: true,
            scan_interval: std::time::Duration::from_secs(10),
            receive_buffer_bytes: 8 << 20,
            realtime_events: true,
            give_up_net_admin: false,
        }
    }
}

/// Descriptors kept free of `stat` files, of the open-file limit.
fn descriptor_budget(limit: Option<u64>) -> usize {
    let limit = usize::try_from(limit.unwrap_or(1 << 20)).unwrap_or(usize::MAX);
    // A quarter, and at least 256, stays for sockets, rings and files.
    limit.saturating_sub((limit / 4).max(256))
}

impl ProcessTable {
    /// A table with no event source, read again by each poll. Cheap: the
    /// first poll reads `/proc`.
    pub fn polling() -> Self {
        Self::with_budget(descriptor_budget(procfs::raise_open_file_limit()))
    }

    /// procmond's table: fed by the kernel's process connector when
    /// `config` allows and the kernel grants it (else polled, and the reason
    /// logged once), filled by a first scan before it returns.
    pub fn start(config: &TableConfig) -> Self {
        let table = Self::polling();
        if config.use_connector {
            match feed::start(&table, config) {
                Ok(feed) => {
                    table.set_source(SourceKind::Connector);
                    let _ = table.shared.feed.set(feed);
                    tracing::info!("process events from the kernel's connector");
                    return table;
                }
                Err(error) => {
                    tracing::warn!(%error, "no process events from the kernel; polling /proc instead");
                }
            }
        } else {
            tracing::info!("process events not asked for; polling /proc");
        }
        if config.give_up_net_admin {
            super::event_source::give_up_net_admin();
        }
        if let Err(error) = table.scan(ScanKind::Poll) {
            tracing::warn!(%error, "cannot read the process table");
        }
        table
    }

    pub(crate) fn with_budget(fd_budget: usize) -> Self {
        let root = ProcRoot::open().ok();
        Self {
            shared: Arc::new(Shared {
                root,
                units: Units::of_this_kernel(),
                boot_unix_s: boot_time_unix_s(),
                map: Mutex::new(Map {
                    procs: BTreeMap::new(),
                    subscribers: Vec::new(),
                }),
                scanning: Mutex::new(()),
                source: Mutex::new(SourceKind::Polling),
                kept: AtomicUsize::new(0),
                fd_budget,
                counters: Counters::default(),
                feed: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(&self.shared)
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<Shared>) -> Option<Self> {
        weak.upgrade().map(|shared| Self { shared })
    }

    /// Where the table's news comes from now.
    pub fn source(&self) -> SourceKind {
        *lock(&self.shared.source)
    }

    /// Whether a monitor stream should run real-time: events drive the
    /// table (a polling monitor scans `/proc`, which must not run ahead of
    /// every ordinary thread) and `TableConfig::realtime_events` allows it.
    pub(crate) fn realtime_streams(&self) -> bool {
        self.source() == SourceKind::Connector
            && self.shared.feed.get().is_some_and(|feed| feed.realtime)
    }

    pub(crate) fn set_source(&self, source: SourceKind) {
        *lock(&self.shared.source) = source;
    }

    /// The table's counters now.
    pub fn stats(&self) -> TableStats {
        let c = &self.shared.counters;
        // Relaxed: statistics; nothing is read on the strength of them.
        TableStats {
            processes: lock(&self.shared.map).procs.len() as u64,
            kept_descriptors: self.shared.kept.load(Ordering::Relaxed) as u64,
            scans: c.scans.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            corrections: c.corrections.load(Ordering::Relaxed),
            usage_reads: c.usage_reads.load(Ordering::Relaxed),
            scan_checks: c.scan_checks.load(Ordering::Relaxed),
            tallies: c.tallies.load(Ordering::Relaxed),
        }
    }

    /// Every process's key, sorted by pid.
    pub fn keys(&self) -> Vec<ProcKey> {
        lock(&self.shared.map)
            .procs
            .values()
            .map(|entry| entry.key)
            .collect()
    }

    fn root(&self) -> Result<&ProcRoot, CollectError> {
        self.shared
            .root
            .as_ref()
            .ok_or(CollectError::ProcUnavailable { path: "/proc" })
    }

    /// Brings the table up to date: a polling table is scanned; one fed by
    /// events waits for the event thread to apply what the kernel has
    /// queued, so a process forked before this call is in the table.
    pub(crate) fn refresh(&self) -> Result<(), CollectError> {
        if self.source() == SourceKind::Polling {
            self.scan(ScanKind::Poll)?;
        } else if let Some(feed) = self.shared.feed.get()
            && !feed.sync(feed::SYNC_TIMEOUT)
        {
            tracing::debug!("the event thread did not catch up in time");
        }
        Ok(())
    }

    /// Counters of the kernel event source, while there is one.
    pub fn event_stats(&self) -> Option<super::EventStats> {
        self.shared.feed.get().and_then(|feed| feed.stats())
    }

    /// Hands `visit` the record of every process (of `pids` only, when
    /// given), sorted by pid, with usage no older than one usage window.
    /// A process that turns out to have exited is left out.
    /// A polling table is not read again here: see
    /// [`refresh`](Self::refresh).
    pub(crate) fn visit(
        &self,
        pids: Option<&[u32]>,
        mut visit: impl FnMut(Observed) -> ControlFlow<()>,
    ) -> Result<(), CollectError> {
        self.walk(pids, |entry, state, unix_ms| {
            visit(Observed {
                record: self.record(entry, state, unix_ms),
                exe: state.details.exe.clone(),
            })
        })
    }

    /// [`visit`](Self::visit) with each record's stable fields encoded
    /// once and kept until they change (exec, uid or name change,
    /// reparenting): a poll then copies them and encodes only its usage
    /// and collection time, allocating nothing per record.
    pub(crate) fn visit_encoded(
        &self,
        pids: Option<&[u32]>,
        mut visit: impl FnMut(EncodedObserved<'_>) -> ControlFlow<()>,
    ) -> Result<(), CollectError> {
        self.walk(pids, |entry, state, unix_ms| {
            let kept = state.stable.as_ref().filter(|kept| {
                Arc::ptr_eq(&kept.details, &state.details) && kept.ppid == state.ppid
            });
            let fields = match kept {
                Some(kept) => Arc::clone(&kept.fields),
                None => {
                    let fields =
                        Arc::new(StableFields::encode(&self.record(entry, state, unix_ms)));
                    state.stable = Some(KeptStable {
                        details: Arc::clone(&state.details),
                        ppid: state.ppid,
                        fields: Arc::clone(&fields),
                    });
                    fields
                }
            };
            visit(EncodedObserved {
                pid: entry.key.pid,
                record: EncodedRecord {
                    stable: fields,
                    cpu_usage: state.usage.cpu_usage(),
                    memory_usage: state.usage.memory_bytes(),
                    executable_hash: None,
                    hash_algorithm: None,
                    collection_time: unix_ms,
                },
                details: &state.details,
            })
        })
    }

    /// Hands `visit` each entry (of `pids` only, when given), sorted by
    /// pid, with usage no older than one usage window; skips those found
    /// to have exited.
    fn walk(
        &self,
        pids: Option<&[u32]>,
        mut visit: impl FnMut(&Entry, &mut EntryState, i64) -> ControlFlow<()>,
    ) -> Result<(), CollectError> {
        let root = self.root()?;
        let entries: Vec<Arc<Entry>> = {
            let map = lock(&self.shared.map);
            match pids {
                None => map.procs.values().cloned().collect(),
                Some(pids) => {
                    let mut pids = pids.to_vec();
                    pids.sort_unstable();
                    pids.dedup();
                    pids.iter()
                        .filter_map(|pid| map.procs.get(pid).cloned())
                        .collect()
                }
            }
        };
        let now = Instant::now();
        let unix_ms = unix_ms_now();
        let mut buf = [0u8; STAT_BUF_BYTES];
        for entry in entries {
            let mut state = lock(&entry.state);
            if state.usage.is_stale(now)
                && !self.read_usage(root, &entry, &mut state, &mut buf, now)
            {
                continue;
            }
            if visit(&entry, &mut state, unix_ms).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Reads `stat` (a kernel thread's `schedstat`) for a fresh usage
    /// reading; false when the process has gone (or its pid now names
    /// another process).
    fn read_usage(
        &self,
        root: &ProcRoot,
        entry: &Entry,
        state: &mut EntryState,
        buf: &mut [u8; STAT_BUF_BYTES],
        now: Instant,
    ) -> bool {
        // Relaxed: a statistic.
        self.shared
            .counters
            .usage_reads
            .fetch_add(1, Ordering::Relaxed);
        if let StatHandle::KernelThread(fd) = &state.stat {
            // Its descriptor names it alone; a kernel thread is reaped as it
            // exits and keeps its parent, kthreadd.
            return match usage::read_schedstat(fd, buf) {
                Ok(cpu_ns) => {
                    state.usage.record(Reading::of_kernel_thread(cpu_ns), now);
                    true
                }
                Err(_) => false,
            };
        }
        match usage::read_stat(root, entry.key.pid, &state.stat, buf) {
            Ok(stat) if stat.start_ticks == entry.key.start_ticks && !stat.is_exited() => {
                state.usage.record(self.shared.units.reading(&stat), now);
                state.ppid = ppid_of(&stat);
                true
            }
            _ => false,
        }
    }

    fn record(&self, entry: &Entry, state: &EntryState, unix_ms: i64) -> ProtoProcessRecord {
        let details = &state.details;
        let ticks = self.shared.units.ticks_per_second();
        ProtoProcessRecord {
            pid: entry.key.pid,
            ppid: state.ppid,
            name: details.name.clone(),
            executable_path: details.exe_text.clone(),
            command_line: details.cmd.clone(),
            start_time: i64::try_from(entry.key.start_ticks / ticks)
                .ok()
                .and_then(|s| s.checked_add(self.shared.boot_unix_s)),
            cpu_usage: state.usage.cpu_usage(),
            memory_usage: state.usage.memory_bytes(),
            executable_hash: None,
            hash_algorithm: None,
            user_id: details.euid.map(|uid| uid.to_string()),
            accessible: !details.inaccessible,
            file_exists: details.exe.is_some() && !details.deleted,
            collection_time: unix_ms,
        }
    }

    /// Subscribes to changes, and returns with it the processes of the
    /// table at that moment (sorted by pid): every change after them is
    /// queued for the subscriber, none before.
    pub(crate) fn subscribe(&self) -> (Subscription, Vec<ProcKey>) {
        let (tx, rx) = mpsc::sync_channel(SUBSCRIBER_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut map = lock(&self.shared.map);
        map.subscribers.push(Subscriber {
            tx: tx.clone(),
            overflowed: Arc::clone(&overflowed),
        });
        let keys = map.procs.values().map(|entry| entry.key).collect();
        (Subscription { rx, tx, overflowed }, keys)
    }

    /// The parent pid of each of `keys` still in the table.
    pub(crate) fn parents(&self, keys: &[ProcKey]) -> Vec<(ProcKey, Option<u32>)> {
        let entries: Vec<Arc<Entry>> = {
            let map = lock(&self.shared.map);
            keys.iter()
                .filter_map(|key| map.procs.get(&key.pid).filter(|e| e.key == *key).cloned())
                .collect()
        };
        entries
            .iter()
            .map(|entry| (entry.key, lock(&entry.state).ppid))
            .collect()
    }

    // ---- events (from the event thread) ----

    /// A process `parent` forked `child`. `event_ns` is the kernel's
    /// monotonic time of the fork, standing in for the start time when the
    /// child is gone before its `stat` could be read.
    pub(crate) fn on_fork(&self, parent: u32, child: u32, event_ns: u64) {
        let Ok(root) = self.root() else { return };
        let mut buf = [0u8; STAT_BUF_BYTES];
        let opened = self.open_stat(root, child, &mut buf);
        let inherited = {
            let map = lock(&self.shared.map);
            map.procs
                .get(&parent)
                .map(|entry| Arc::clone(&lock(&entry.state).details))
        };
        let (key, ppid, handle, stat, first) = match opened {
            Some((handle, stat, first)) => (
                ProcKey {
                    pid: child,
                    start_ticks: stat.start_ticks,
                },
                ppid_of(&stat),
                handle,
                Some(stat),
                Some(first),
            ),
            None => (
                ProcKey {
                    pid: child,
                    start_ticks: event_ns
                        / (1_000_000_000 / self.shared.units.ticks_per_second().max(1)),
                },
                Some(parent),
                StatHandle::Reopen,
                None,
                None,
            ),
        };
        let details = match (inherited, &stat) {
            (Some(details), Some(_)) => details,
            (Some(details), None) => Arc::new(Details {
                inaccessible: true,
                ..(*details).clone()
            }),
            (None, _) => Arc::new(
                details::read_details(root, child)
                    .unwrap_or_else(|| Details::unknown(String::new())),
            ),
        };
        let entry = self.new_entry(key, ppid, details, handle, first);
        let mut map = lock(&self.shared.map);
        if let Some(old) = map.procs.get(&child) {
            if old.key == key {
                // Already known (a scan was first): nothing new.
                self.release(&entry);
                return;
            }
            // The pid's previous process exited unseen.
            self.count_correction();
            let old = Arc::clone(old);
            self.remove_locked(&mut map, &old);
        }
        map.procs.insert(child, Arc::clone(&entry));
        self.broadcast_with(&mut map, || Change::Forked {
            parent,
            key,
            record: self.record(&entry, &lock(&entry.state), unix_ms_now()),
        });
    }

    /// Process `pid` replaced its image: its details are read at once.
    pub(crate) fn on_exec(&self, pid: u32, read_ahead: Option<Option<Details>>) {
        let Ok(root) = self.root() else { return };
        let fresh = read_ahead.unwrap_or_else(|| details::read_details(root, pid));
        let entry = lock(&self.shared.map).procs.get(&pid).cloned();
        let entry = match entry {
            Some(entry) => entry,
            None => {
                // Not seen forking (it predates a resync): read it whole.
                let mut buf = [0u8; STAT_BUF_BYTES];
                let Some((handle, stat, first)) = self.open_stat(root, pid, &mut buf) else {
                    return;
                };
                let key = ProcKey {
                    pid,
                    start_ticks: stat.start_ticks,
                };
                let details = fresh
                    .clone()
                    .unwrap_or_else(|| Details::unknown(String::new()));
                let entry =
                    self.new_entry(key, ppid_of(&stat), Arc::new(details), handle, Some(first));
                let mut map = lock(&self.shared.map);
                map.procs.insert(pid, Arc::clone(&entry));
                entry
            }
        };
        {
            let mut state = lock(&entry.state);
            if matches!(state.stat, StatHandle::KernelThread(_)) {
                // A usermode helper (before Linux 5.17) that began as a
                // kernel thread: a process now, with threads and memory
                // `schedstat` does not show, and a CPU clock in other units.
                let old = std::mem::replace(&mut state.stat, StatHandle::Reopen);
                self.release_handle(old);
                state.usage = Usage::default();
            }
            state.usage.expire();
            state.details = Arc::new(fresh.unwrap_or_else(|| {
                // Gone before its new image could be read: its name from the
                // old details, nothing else.
                Details::unknown(state.details.name.clone())
            }));
        }
        let mut map = lock(&self.shared.map);
        if !map.procs.get(&pid).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            return;
        }
        self.broadcast_with(&mut map, || Change::Exec {
            key: entry.key,
            record: self.record(&entry, &lock(&entry.state), unix_ms_now()),
        });
    }

    /// Reads the details of `pid` now (image, command line, name, uid), for
    /// an exec event that is to be applied a moment later.
    pub(crate) fn read_details(&self, pid: u32) -> Option<Details> {
        details::read_details(self.root().ok()?, pid)
    }

    /// Process `pid` exited.
    pub(crate) fn on_exit(&self, pid: u32) {
        let mut map = lock(&self.shared.map);
        if let Some(entry) = map.procs.get(&pid).cloned() {
            self.remove_locked(&mut map, &entry);
        }
    }

    /// Process `pid` changed its effective uid.
    pub(crate) fn on_uid(&self, pid: u32, euid: u32) {
        self.update_details(pid, |details| details.euid = Some(euid));
    }

    /// Process `pid` changed its name (`prctl(PR_SET_NAME)`, or a write to
    /// `comm`).
    pub(crate) fn on_comm(&self, pid: u32, name: &str) {
        self.update_details(pid, |details| {
            details.name = name.to_string();
            super::bounds::truncate(
                &mut details.name,
                crate::proto::limits::MAX_PROCESS_NAME_BYTES,
            );
        });
    }

    fn update_details(&self, pid: u32, change: impl FnOnce(&mut Details)) {
        let entry = lock(&self.shared.map).procs.get(&pid).cloned();
        if let Some(entry) = entry {
            let mut state = lock(&entry.state);
            change(Arc::make_mut(&mut state.details));
        }
    }

    // ---- scans ----

    /// Counts a safety-net round the kernel's task count answered.
    pub(crate) fn count_tally(&self) {
        // Relaxed: a statistic.
        self.shared.counters.tallies.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `/proc` whole and makes the table agree with it; what differs
    /// is broadcast (and, for a safety net or resync, counted as
    /// corrections). Returns how many processes differed.
    pub(crate) fn scan(&self, kind: ScanKind) -> Result<u64, CollectError> {
        let root = self.root()?;
        let _one = lock(&self.shared.scanning);
        // Relaxed: statistics.
        if kind == ScanKind::Resync {
            self.shared.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        }
        let mut listed = root
            .pids()
            .map_err(|_| CollectError::ProcUnavailable { path: "/proc" })?;
        listed.sort_unstable();
        let mut buf = [0u8; STAT_BUF_BYTES];
        let mut execed = Vec::new();
        let (gone, mut new) = if kind == ScanKind::Census {
            let (gone, unknown) = self.census(&listed);
            (gone, self.read_new(root, &unknown, &mut buf))
        } else {
            // Pids the table does not know are read first, right after the
            // listing: a process new since the last scan is the one likely
            // to be gone by the time every known one has been checked (a
            // `/bin/true` lives well under a millisecond).
            let (_, fresh) = self.census(&listed);
            let mut new = self.read_new(root, &fresh, &mut buf);
            let (gone, unknown) = self.check_known(root, kind, &listed, &mut buf, &mut execed);
            // What else is unknown: a known pid now held by another process.
            let reused: Vec<u32> = unknown
                .into_iter()
                .filter(|pid| fresh.binary_search(pid).is_err())
                .collect();
            new.extend(self.read_new(root, &reused, &mut buf));
            (gone, new)
        };
        // Parents before children (by start time).
        new.sort_by_key(|entry| entry.key.start_ticks);

        let unix_ms = unix_ms_now();
        let mut map = lock(&self.shared.map);
        let mut differed = 0;
        for entry in &gone {
            if map
                .procs
                .get(&entry.key.pid)
                .is_some_and(|e| Arc::ptr_eq(e, entry))
            {
                self.remove_locked(&mut map, entry);
                differed += 1;
            }
        }
        for entry in &execed {
            if map
                .procs
                .get(&entry.key.pid)
                .is_some_and(|e| Arc::ptr_eq(e, entry))
            {
                differed += 1;
                self.broadcast_with(&mut map, || Change::Exec {
                    key: entry.key,
                    record: self.record(entry, &lock(&entry.state), unix_ms),
                });
            }
        }
        for entry in new {
            if map
                .procs
                .get(&entry.key.pid)
                .is_some_and(|e| e.key == entry.key)
            {
                self.release(&entry);
                continue;
            }
            if let Some(old) = map.procs.get(&entry.key.pid).cloned() {
                self.remove_locked(&mut map, &old);
            }
            differed += 1;
            map.procs.insert(entry.key.pid, Arc::clone(&entry));
            self.broadcast_with(&mut map, || Change::Appeared {
                key: entry.key,
                record: self.record(&entry, &lock(&entry.state), unix_ms),
            });
        }
        drop(map);
        // Relaxed: statistics. Counted once done, so a scan's checks are in
        // the counters by the time it is.
        self.shared.counters.scans.fetch_add(1, Ordering::Relaxed);
        if kind != ScanKind::Poll {
            // Relaxed: a statistic.
            self.shared
                .counters
                .corrections
                .fetch_add(differed, Ordering::Relaxed);
        }
        Ok(differed)
    }

    /// Entries for the processes `pids`, read from `/proc`: those gone (or
    /// exited) by now are left out.
    fn read_new(
        &self,
        root: &ProcRoot,
        pids: &[u32],
        buf: &mut [u8; STAT_BUF_BYTES],
    ) -> Vec<Arc<Entry>> {
        pids.iter()
            .filter_map(|&pid| {
                let (handle, stat, first) = self.open_stat(root, pid, buf)?;
                // A zombie, or gone before its details could be read: its
                // kept descriptor goes back to the budget.
                let details = (!stat.is_exited())
                    .then(|| details::read_details(root, pid))
                    .flatten();
                let Some(details) = details else {
                    self.release_handle(handle);
                    return None;
                };
                let key = ProcKey {
                    pid,
                    start_ticks: stat.start_ticks,
                };
                Some(self.new_entry(key, ppid_of(&stat), Arc::new(details), handle, Some(first)))
            })
            .collect()
    }

    /// The census: known processes `listed` (sorted) no longer holds, and
    /// listed pids the table does not hold, found in one walk of both
    /// sorted sequences under the map's lock; nothing is read.
    fn census(&self, listed: &[u32]) -> (Vec<Arc<Entry>>, Vec<u32>) {
        let map = lock(&self.shared.map);
        let (mut gone, mut unknown) = (Vec::new(), Vec::new());
        let mut known = map.procs.iter().peekable();
        for &pid in listed {
            while let Some((_, entry)) = known.next_if(|(k, _)| **k < pid) {
                gone.push(Arc::clone(entry));
            }
            if known.next_if(|(k, _)| **k == pid).is_none() {
                unknown.push(pid);
            }
        }
        gone.extend(known.map(|(_, entry)| Arc::clone(entry)));
        (gone, unknown)
    }

    /// A poll's, full safety net's or resync's check of every known process
    /// against `listed` (sorted): its `stat` read again, and its exe link
    /// (or, for a resync, all its details). Returns the processes gone and
    /// the listed pids not known; those that exec'd are pushed to `execed`.
    fn check_known(
        &self,
        root: &ProcRoot,
        kind: ScanKind,
        listed: &[u32],
        buf: &mut [u8; STAT_BUF_BYTES],
        execed: &mut Vec<Arc<Entry>>,
    ) -> (Vec<Arc<Entry>>, Vec<u32>) {
        let known: Vec<Arc<Entry>> = lock(&self.shared.map).procs.values().cloned().collect();
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut alive = std::collections::HashSet::with_capacity(known.len());
        for entry in &known {
            if listed.binary_search(&entry.key.pid).is_err() {
                gone.push(Arc::clone(entry));
                continue;
            }
            // Relaxed: a statistic.
            self.shared
                .counters
                .scan_checks
                .fetch_add(1, Ordering::Relaxed);
            let mut state = lock(&entry.state);
            if !self.read_usage(root, entry, &mut state, buf, now) {
                gone.push(Arc::clone(entry));
                continue;
            }
            alive.insert(entry.key.pid);
            let changed = match kind {
                ScanKind::Resync => details::read_details(root, entry.key.pid)
                    .filter(|fresh| *fresh != *state.details),
                ScanKind::Poll | ScanKind::SafetyNet | ScanKind::Census => {
                    let link = details::read_exe_link(entry.key.pid);
                    if exe_changed(&state.details, &link) {
                        details::read_details(root, entry.key.pid)
                    } else {
                        None
                    }
                }
            };
            if let Some(fresh) = changed {
                state.details = Arc::new(fresh);
                execed.push(Arc::clone(entry));
            }
        }
        let unknown = listed
            .iter()
            .copied()
            .filter(|pid| !alive.contains(pid))
            .collect();
        (gone, unknown)
    }

    // ---- helpers ----

    /// Opens and reads `stat` of `pid`, keeping the descriptor when the
    /// budget allows (for a kernel thread, its `schedstat` instead, where
    /// the kernel keeps the statistics), and the first usage reading.
    /// `None` when the process has gone.
    fn open_stat(
        &self,
        root: &ProcRoot,
        pid: u32,
        buf: &mut [u8; STAT_BUF_BYTES],
    ) -> Option<(StatHandle, Stat, Reading)> {
        let fd = root.open_file(pid, "stat").ok()?;
        let handle = StatHandle::Kept(fd);
        let stat = usage::read_stat(root, pid, &handle, buf).ok()?;
        // Relaxed: a budget; going a little over under a race is harmless.
        if self.shared.kept.fetch_add(1, Ordering::Relaxed) >= self.shared.fd_budget {
            self.shared.kept.fetch_sub(1, Ordering::Relaxed);
            return Some((StatHandle::Reopen, stat, self.shared.units.reading(&stat)));
        }
        if stat.kernel_thread {
            // The baseline comes from `schedstat` too: `stat`'s CPU time is
            // the same clock cut to ticks, which would skew the first window.
            let kernel_thread = root.open_file(pid, "schedstat").ok().and_then(|fd| {
                let cpu_ns = usage::read_schedstat(&fd, buf).ok()?;
                Some((
                    StatHandle::KernelThread(fd),
                    Reading::of_kernel_thread(cpu_ns),
                ))
            });
            if let Some((handle, first)) = kernel_thread {
                return Some((handle, stat, first));
            }
        }
        let first = self.shared.units.reading(&stat);
        Some((handle, stat, first))
    }

    fn new_entry(
        &self,
        key: ProcKey,
        ppid: Option<u32>,
        details: Arc<Details>,
        stat: StatHandle,
        first: Option<Reading>,
    ) -> Arc<Entry> {
        let mut usage = Usage::default();
        if let Some(first) = first {
            usage.record(first, Instant::now());
        }
        Arc::new(Entry {
            key,
            state: Mutex::new(EntryState {
                ppid,
                details,
                stat,
                usage,
                stable: None,
            }),
        })
    }

    /// Closes an entry's kept descriptor (the entry is leaving the table).
    fn release(&self, entry: &Entry) {
        let handle = std::mem::replace(&mut lock(&entry.state).stat, StatHandle::Reopen);
        self.release_handle(handle);
    }

    fn release_handle(&self, handle: StatHandle) {
        if let Some(fd) = handle.into_kept() {
            drop(fd);
            // Relaxed: a budget counter.
            self.shared.kept.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Removes `entry` from the map and tells subscribers it exited.
    fn remove_locked(&self, map: &mut MutexGuard<'_, Map>, entry: &Arc<Entry>) {
        map.procs.remove(&entry.key.pid);
        self.release(entry);
        self.broadcast_with(map, || Change::Exited {
            key: entry.key,
            record: self.record(entry, &lock(&entry.state), unix_ms_now()),
        });
    }

    fn count_correction(&self) {
        // Relaxed: a statistic.
        self.shared
            .counters
            .corrections
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Sends the change `make` builds to every subscriber (built only when
    /// there is one); a subscriber whose queue is full is cut off.
    fn broadcast_with(&self, map: &mut MutexGuard<'_, Map>, make: impl FnOnce() -> Change) {
        if map.subscribers.is_empty() {
            return;
        }
        let change = make();
        map.subscribers
            .retain(|subscriber| match subscriber.tx.try_send(change.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    // Release: pairs with the subscriber's Acquire load.
                    subscriber.overflowed.store(true, Ordering::Release);
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }
}

/// Whether the exe link read now says the process runs another image than
/// its details say.
fn exe_changed(details: &Details, link: &ExeLink) -> bool {
    match link {
        ExeLink::Path { path, deleted } => {
            details.exe.as_ref() != Some(path) || details.deleted != *deleted
        }
        // Denied: unchanged as far as can be told; Missing: exiting.
        ExeLink::Denied | ExeLink::Missing => false,
    }
}

fn ppid_of(stat: &Stat) -> Option<u32> {
    (stat.ppid != 0).then_some(stat.ppid)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked holder leaves the table as it was between two steps.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `btime` line of `/proc/stat`: boot time in Unix seconds.
fn boot_time_unix_s() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn holds(table: &ProcessTable, pid: u32) -> bool {
        table.keys().iter().any(|key| key.pid == pid)
    }

    /// A child killed and reaped when dropped, also when the test fails.
    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn kernel_threads_are_read_through_schedstat_and_the_rest_through_stat() {
        let table = ProcessTable::polling();
        table.scan(ScanKind::Poll).unwrap();
        let me = std::process::id();
        let entries: Vec<Arc<Entry>> = lock(&table.shared.map).procs.values().cloned().collect();
        let mut kernel_threads = Vec::new();
        for entry in &entries {
            let state = lock(&entry.state);
            match &state.stat {
                StatHandle::KernelThread(_) => {
                    kernel_threads.push(Arc::clone(entry));
                    assert_eq!(state.usage.memory_bytes(), Some(0));
                    assert!(state.details.exe.is_none(), "{}", entry.key.pid);
                }
                StatHandle::Kept(_) | StatHandle::Reopen => {
                    let root = table.root().unwrap();
                    let mut buf = [0u8; STAT_BUF_BYTES];
                    // A kernel thread here only where its `schedstat` is not
                    // to be trusted (a kernel without scheduler statistics).
                    let stat = usage::read_stat(root, entry.key.pid, &StatHandle::Reopen, &mut buf);
                    if stat.is_ok_and(|stat| stat.kernel_thread) {
                        let schedstat = root
                            .open_file(entry.key.pid, "schedstat")
                            .and_then(|fd| usage::read_schedstat(&fd, &mut buf));
                        assert!(schedstat.is_err(), "{} read through stat", entry.key.pid);
                    }
                }
            }
        }
        let own = entries.iter().find(|entry| entry.key.pid == me).unwrap();
        assert!(matches!(lock(&own.state).stat, StatHandle::Kept(_)));
        let in_ci = std::env::var("CI").is_ok_and(|value| value == "true");
        assert!(
            !kernel_threads.is_empty() || !in_ci,
            "no kernel thread is visible"
        );
        // A window later, each has a CPU usage (a share of the machine's
        // cores at most) from its `schedstat`.
        std::thread::sleep(usage::USAGE_WINDOW); // the window's length, not a wait for an event
        let reads = table.stats().usage_reads;
        let mut checked = 0;
        table
            .walk(None, |entry, state, _| {
                if matches!(state.stat, StatHandle::KernelThread(_)) {
                    let cpu = state.usage.cpu_usage().unwrap_or(-1.0);
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                    assert!(
                        (0.0..=100.0 * cores as f64 + 1.0).contains(&cpu),
                        "pid {}: {cpu}",
                        entry.key.pid
                    );
                    checked += 1;
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        assert!(
            checked + 5 >= kernel_threads.len(),
            "{checked} of {}",
            kernel_threads.len()
        );
        assert!(table.stats().usage_reads >= reads + checked as u64);
    }

    #[test]
    fn a_census_adds_new_processes_and_drops_gone_ones_reading_no_known_one() {
        let table = ProcessTable::polling();
        table.scan(ScanKind::Poll).unwrap();
        let child = Reaped(Command::new("/usr/bin/sleep").arg("1000").spawn().unwrap());
        let pid = child.0.id();
        let checks = table.stats().scan_checks;
        assert!(table.scan(ScanKind::Census).unwrap() >= 1);
        assert!(holds(&table, pid), "the census did not add {pid}");
        drop(child);
        assert!(table.scan(ScanKind::Census).unwrap() >= 1);
        assert!(!holds(&table, pid), "the census kept {pid}");
        assert_eq!(
            table.stats().scan_checks,
            checks,
            "a census read known processes"
        );
        // A full round reads them.
        table.scan(ScanKind::SafetyNet).unwrap();
        assert!(table.stats().scan_checks > checks);
    }

    #[test]
    fn processes_that_exit_while_a_poll_reads_them_give_their_descriptor_back() {
        let table = ProcessTable::polling();
        table.scan(ScanKind::Poll).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let scanner = {
            let (table, stop) = (table.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut scans = 0u32;
                // Acquire/Release: only a stop flag; nothing else rides on it.
                while !stop.load(Ordering::Acquire) {
                    table.scan(ScanKind::Poll).unwrap();
                    scans += 1;
                }
                scans
            })
        };
        // Stops the scanner also when a spawn fails.
        struct Stop(Arc<AtomicBool>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let stopper = Stop(Arc::clone(&stop));
        // Short-lived processes for the polls to catch mid-exit (between
        // their `stat` and their details), from three threads, each
        // process reaped at once.
        let spawners: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..300 {
                        Command::new("/bin/true").status().unwrap();
                    }
                })
            })
            .collect();
        for spawner in spawners {
            spawner.join().unwrap();
        }
        drop(stopper);
        assert!(scanner.join().unwrap() > 0);
        table.scan(ScanKind::Poll).unwrap();
        // Every process the table holds keeps one descriptor (far below the
        // budget here), and nothing else is counted as kept.
        let held = table.keys().len() as u64;
        assert!(held as usize <= table.shared.fd_budget);
        assert_eq!(table.stats().kept_descriptors, held);
    }
}
