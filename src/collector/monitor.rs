//! MONITOR_PROCESS_TREE: the process tree under some roots, then what
//! happens in it, in the order it happened: processes that join it
//! (started), members that replace their image (exec), members that exit.
//!
//! Built on the table's changes ([`ProcessTable`]): with the kernel's event
//! source, a child joins the tree at its fork when its parent is a member,
//! so a child is attached even when its parent exits at once; its `started`
//! event waits (at most the batching interval) for its exec, so a fork
//! followed by an exec is one `started` record carrying the new image, and
//! a later exec is an `exec` event. Without an event source the table is
//! scanned each interval: a process that starts and ends between two scans
//! is not seen, and a child whose parent already exited is not attached.
//!
//! A process is identified by (pid, start time in clock ticks), so a
//! reused pid is an exit and a start.

use std::collections::{HashMap, HashSet};

use std::time::{Duration, Instant};

use super::CollectError;
use super::table::{Change, ProcKey, ProcessTable, ScanKind, SourceKind, Subscription, Waker};
use crate::proto::ProtoProcessRecord;

/// The shortest scan interval without an event source.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// One thing that happened in the tree.
#[derive(Clone, Debug, PartialEq)]
pub enum TreeEvent {
    /// A process joined the tree; its record is its image when first
    /// reported (after its exec, when that came within the batch).
    Started(ProtoProcessRecord),
    /// A member replaced its image; the record carries the new one.
    Exec(ProtoProcessRecord),
    /// A member exited; the record is as last known.
    Exited(ProtoProcessRecord),
}

impl TreeEvent {
    /// The record the event carries.
    pub fn record(&self) -> &ProtoProcessRecord {
        match self {
            TreeEvent::Started(r) | TreeEvent::Exec(r) | TreeEvent::Exited(r) => r,
        }
    }
}

/// The state of one MONITOR_PROCESS_TREE task; see [`Collector::monitor`](super::Collector::monitor).
pub struct TreeMonitor {
    /// Empty: every process is in the tree.
    roots: Vec<u32>,
    table: ProcessTable,
    subscription: Subscription,
    members: HashMap<u32, ProcKey>,
    snapshot: Vec<ProtoProcessRecord>,
    /// Events of the batch being gathered, and when the first came.
    ready: Vec<TreeEvent>,
    first_at: Option<Instant>,
    /// Members forked in this batch that have not exec'd: where their
    /// `started` event stands in `ready`.
    pending: HashMap<u32, usize>,
    next_scan: Instant,
    /// The table's source when `next_batch` last looked.
    source: SourceKind,
}

impl std::fmt::Debug for TreeMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeMonitor")
            .field("roots", &self.roots)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl TreeMonitor {
    pub(super) fn start(table: &ProcessTable, roots: &[u32]) -> Result<Self, CollectError> {
        let mut roots = roots.to_vec();
        roots.sort_unstable();
        roots.dedup();
        table.refresh()?;
        let (subscription, keys) = table.subscribe();
        let mut members: HashMap<u32, ProcKey> = if roots.is_empty() {
            keys.iter().map(|key| (key.pid, *key)).collect()
        } else {
            let parents = table.parents(&keys);
            let tree = descendants(&roots, &parents);
            tree.into_iter().map(|key| (key.pid, key)).collect()
        };
        let mut pids: Vec<u32> = members.keys().copied().collect();
        pids.sort_unstable();
        let mut snapshot = Vec::with_capacity(pids.len());
        table.visit(Some(&pids), |seen| {
            snapshot.push(seen.record);
            std::ops::ControlFlow::Continue(())
        })?;
        // A member that exited before the snapshot read it is in neither:
        // nothing reported it alive, so its exit is not reported either.
        members.retain(|pid, _| snapshot.binary_search_by_key(pid, |r| r.pid).is_ok());
        Ok(Self {
            roots,
            table: table.clone(),
            subscription,
            members,
            snapshot,
            ready: Vec::new(),
            first_at: None,
            pending: HashMap::new(),
            next_scan: Instant::now(),
            source: table.source(),
        })
    }

    /// The roots this monitor was started with (empty: all processes).
    pub fn roots(&self) -> &[u32] {
        &self.roots
    }

    /// The tree when monitoring began, sorted by pid.
    pub fn snapshot(&self) -> &[ProtoProcessRecord] {
        &self.snapshot
    }

    /// How many processes the tree holds now.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The tree holds no process (its roots have all exited).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether the tree is fed by kernel events or by scans.
    pub fn source(&self) -> SourceKind {
        self.table.source()
    }

    /// Whether the thread that streams this tree should run real-time
    /// while it waits for events (see `TableConfig::realtime_events`):
    /// only while events feed the table, never while it is polled.
    pub fn wants_realtime(&self) -> bool {
        self.table.realtime_streams()
    }

    /// A handle that makes [`next_batch`](Self::next_batch) return at once,
    /// from another thread (to stop the monitor).
    pub fn waker(&self) -> Waker {
        self.subscription.waker()
    }

    /// Waits for what happens in the tree and returns it in order: once the
    /// first event has waited `batch` (at once for zero), at `until` with
    /// what there is (possibly nothing), or when woken. Without an event
    /// source, the process table is scanned every `batch` (at least
    /// [`MIN_POLL_INTERVAL`]). When the table's source changed since the
    /// last call, returns at once with what was ready (possibly nothing).
    pub fn next_batch(
        &mut self,
        batch: Duration,
        until: Instant,
    ) -> Result<Vec<TreeEvent>, CollectError> {
        let source = self.table.source();
        if source != self.source {
            // Events stopped (the table is polled from now on): the caller
            // hears it before this monitor scans, so that a thread run
            // real-time for events can go back to its class first.
            self.source = source;
            return Ok(self.flush());
        }
        let polling = source == SourceKind::Polling;
        loop {
            let now = Instant::now();
            let flush_at = self
                .first_at
                .map(|first| first.checked_add(batch).unwrap_or(until));
            if flush_at.is_some_and(|at| now >= at) || now >= until {
                return Ok(self.flush());
            }
            let mut deadline = flush_at.map_or(until, |at| at.min(until));
            if polling {
                if now >= self.next_scan {
                    self.table.scan(ScanKind::Poll)?;
                    let step = batch.max(MIN_POLL_INTERVAL);
                    self.next_scan = now.checked_add(step).unwrap_or(until);
                    self.drain()?;
                    if !self.ready.is_empty() && batch.is_zero() {
                        return Ok(self.flush());
                    }
                    continue;
                }
                deadline = deadline.min(self.next_scan);
            }
            match self.subscription.next(deadline)? {
                Some(Change::Wake) => return Ok(self.flush()),
                Some(change) => {
                    self.apply(change);
                    if batch.is_zero() {
                        self.drain()?;
                        return Ok(self.flush());
                    }
                }
                None => {}
            }
        }
    }

    /// Applies every change already queued.
    fn drain(&mut self) -> Result<(), CollectError> {
        while let Some(change) = self.subscription.next(Instant::now())? {
            if !matches!(change, Change::Wake) {
                self.apply(change);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Vec<TreeEvent> {
        self.first_at = None;
        self.pending.clear();
        std::mem::take(&mut self.ready)
    }

    fn push(&mut self, event: TreeEvent) -> usize {
        self.first_at.get_or_insert_with(Instant::now);
        self.ready.push(event);
        self.ready.len() - 1
    }

    /// Whether a process whose parent is `ppid` belongs in the tree.
    fn admits(&self, ppid: Option<u32>) -> bool {
        self.roots.is_empty() || ppid.is_some_and(|ppid| self.members.contains_key(&ppid))
    }

    fn is_member(&self, key: &ProcKey) -> bool {
        self.members.get(&key.pid) == Some(key)
    }

    fn join(&mut self, key: ProcKey, record: ProtoProcessRecord) -> usize {
        if let Some(old) = self.members.insert(key.pid, key)
            && old != key
        {
            // The pid's previous member exited unseen; nothing to report
            // for it but that its place was taken.
            self.pending.remove(&key.pid);
        }
        self.push(TreeEvent::Started(record))
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Forked {
                parent,
                key,
                record,
            } => {
                if self.admits(Some(parent)) {
                    let at = self.join(key, record);
                    self.pending.insert(key.pid, at);
                }
            }
            Change::Appeared { key, record } => {
                if self.admits(record.ppid) {
                    self.join(key, record);
                }
            }
            Change::Exec { key, record } => {
                if self.is_member(&key) {
                    match self.pending.remove(&key.pid) {
                        Some(at) => self.ready[at] = TreeEvent::Started(record),
                        None => {
                            self.push(TreeEvent::Exec(record));
                        }
                    }
                } else if self.admits(record.ppid) {
                    self.join(key, record);
                }
            }
            Change::Exited { key, record } => {
                if self.is_member(&key) {
                    self.members.remove(&key.pid);
                    self.pending.remove(&key.pid);
                    self.push(TreeEvent::Exited(record));
                }
            }
            Change::Wake => {}
        }
    }
}

/// `roots` that are alive, and all their descendants by parent pid.
fn descendants(roots: &[u32], parents: &[(ProcKey, Option<u32>)]) -> Vec<ProcKey> {
    let mut children: HashMap<u32, Vec<ProcKey>> = HashMap::new();
    let mut by_pid = HashMap::new();
    for &(key, ppid) in parents {
        by_pid.insert(key.pid, key);
        if let Some(parent) = ppid {
            children.entry(parent).or_default().push(key);
        }
    }
    let mut tree: Vec<ProcKey> = roots
        .iter()
        .filter_map(|pid| by_pid.get(pid).copied())
        .collect();
    let mut in_tree: HashSet<u32> = tree.iter().map(|key| key.pid).collect();
    let mut next = 0;
    while next < tree.len() {
        let pid = tree[next].pid;
        next += 1;
        for &child in children.get(&pid).into_iter().flatten() {
            if in_tree.insert(child.pid) {
                tree.push(child);
            }
        }
    }
    tree.sort_unstable();
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_follow_parent_links_from_live_roots() {
        let key = |pid| ProcKey {
            pid,
            start_ticks: 1,
        };
        let table = [
            (key(1), None),
            (key(10), Some(1)),
            (key(11), Some(10)),
            (key(12), Some(11)),
            (key(20), Some(1)),
        ];
        let pids = |keys: Vec<ProcKey>| keys.iter().map(|k| k.pid).collect::<Vec<_>>();
        assert_eq!(pids(descendants(&[10], &table)), [10, 11, 12]);
        assert_eq!(pids(descendants(&[10, 20, 99], &table)), [10, 11, 12, 20]);
        assert!(descendants(&[99], &table).is_empty());
    }
}
