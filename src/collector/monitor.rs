//! MONITOR_PROCESS_TREE: the process tree under some roots, then the
//! processes that started in it and exited from it between polls.
//!
//! A process is identified by (pid, start time in clock ticks since boot,
//! field 22 of `/proc/<pid>/stat`), so a reused pid shows as an exit and a
//! start, even within the same second (a tick is usually 10 ms; a pid reused
//! within one tick is not told apart). A new process joins the tree when its parent is in the
//! tree (also when the parent is itself new in the same poll); members stay
//! members until they exit, even when reparented. A zombie counts as exited.
//! Polling cannot see a process that starts and ends between two polls, nor
//! attach a child whose parent exited before the poll (it is reparented by
//! then). The caller paces the polls.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::procinfo::{Fields, ProcKey, Scope};
use super::{CollectError, Collector};
use crate::proto::ProtoProcessRecord;

/// What changed in the tree since the previous poll, each list sorted by pid.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TreeDelta {
    /// Processes that joined the tree.
    pub started: Vec<ProtoProcessRecord>,
    /// Members that exited, as recorded when they joined.
    pub exited: Vec<ProtoProcessRecord>,
}

impl TreeDelta {
    /// Nothing started or exited.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty() && self.exited.is_empty()
    }
}

/// The state of one MONITOR_PROCESS_TREE task; see [`Collector::monitor`].
#[derive(Debug)]
pub struct TreeMonitor {
    /// Empty: every process is in the tree.
    roots: Vec<u32>,
    members: BTreeMap<ProcKey, ProtoProcessRecord>,
    /// Every live process of the previous poll, member or not.
    seen: HashSet<ProcKey>,
}

/// A live (non-zombie) process of one poll.
#[derive(Clone, Copy)]
struct Live {
    key: ProcKey,
    ppid: Option<u32>,
}

impl TreeMonitor {
    pub(super) fn start(collector: &mut Collector, roots: &[u32]) -> Result<Self, CollectError> {
        let mut roots = roots.to_vec();
        roots.sort_unstable();
        roots.dedup();
        let mut monitor = Self {
            roots,
            members: BTreeMap::new(),
            seen: HashSet::new(),
        };
        let live = live_processes(collector)?;
        let pids: Vec<u32> = if monitor.roots.is_empty() {
            live.keys().copied().collect()
        } else {
            descendants(&monitor.roots, &live)
        };
        let scope = if monitor.roots.is_empty() {
            Scope::All
        } else {
            Scope::Pids(&pids)
        };
        for record in collector.records_of(scope, &pids)? {
            if let Some(l) = live.get(&record.pid) {
                monitor.members.insert(l.key, record);
            }
        }
        monitor.seen = live.values().map(|l| l.key).collect();
        Ok(monitor)
    }

    /// The roots this monitor was started with (empty: all processes).
    pub fn roots(&self) -> &[u32] {
        &self.roots
    }

    /// The tree now, sorted by pid: roots and their descendants, each as
    /// recorded when it joined.
    pub fn snapshot(&self) -> Vec<ProtoProcessRecord> {
        let mut records: Vec<ProtoProcessRecord> = self.members.values().cloned().collect();
        records.sort_by_key(|record| record.pid);
        records
    }

    /// How many processes the tree holds.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The tree holds no process (its roots have all exited).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Reads the process table again and reports what started in the tree
    /// and what exited from it since the previous poll (or the start).
    pub fn poll(&mut self, collector: &mut Collector) -> Result<TreeDelta, CollectError> {
        let live = live_processes(collector)?;
        let is_live = |key: &ProcKey| live.get(&key.pid).is_some_and(|l| l.key == *key);

        let gone: Vec<ProcKey> = self
            .members
            .keys()
            .filter(|k| !is_live(k))
            .copied()
            .collect();
        let mut exited: Vec<ProtoProcessRecord> = gone
            .iter()
            .filter_map(|key| self.members.remove(key))
            .collect();
        exited.sort_by_key(|record| record.pid);

        let new: HashSet<u32> = live
            .values()
            .filter(|l| !self.seen.contains(&l.key))
            .map(|l| l.key.pid)
            .collect();
        let mut joined: Vec<u32> = if self.roots.is_empty() {
            new.iter().copied().collect()
        } else {
            let mut memo = HashMap::new();
            new.iter()
                .copied()
                .filter(|&pid| self.joins(pid, &live, &new, &mut memo))
                .collect()
        };
        joined.sort_unstable();

        let mut started = Vec::with_capacity(joined.len());
        if !joined.is_empty() {
            for record in collector.records_of(Scope::Pids(&joined), &joined)? {
                let Some(l) = live.get(&record.pid) else {
                    continue;
                };
                self.members.insert(l.key, record.clone());
                started.push(record);
            }
        }
        self.seen = live.values().map(|l| l.key).collect();
        Ok(TreeDelta { started, exited })
    }

    /// Whether the new process `pid` descends from a member, through new
    /// processes only.
    fn joins(
        &self,
        pid: u32,
        live: &HashMap<u32, Live>,
        new: &HashSet<u32>,
        memo: &mut HashMap<u32, bool>,
    ) -> bool {
        let mut chain = Vec::new();
        let mut at = pid;
        let verdict = loop {
            if let Some(&known) = memo.get(&at) {
                break known;
            }
            let Some(l) = live.get(&at) else {
                break false;
            };
            if self.members.contains_key(&l.key) {
                break true;
            }
            // An old non-member breaks the chain; the length bound guards
            // against a parent cycle that a racing pid reuse could show.
            if !new.contains(&at) || chain.len() > live.len() {
                break false;
            }
            chain.push(at);
            match l.ppid {
                Some(parent) => at = parent,
                None => break false,
            }
        };
        for pid in chain {
            memo.insert(pid, verdict);
        }
        verdict
    }
}

/// Every live process, by pid, after a cheap refresh (identity only).
fn live_processes(collector: &mut Collector) -> Result<HashMap<u32, Live>, CollectError> {
    let table = &mut collector.table;
    table.refresh(Scope::All, Fields::Identity)?;
    let mut live = HashMap::new();
    for pid in table.pids(Scope::All) {
        if let Some((key, ppid, zombie)) = table.identity(pid)
            && !zombie
        {
            live.insert(pid, Live { key, ppid });
        }
    }
    Ok(live)
}

/// `roots` that are alive, and all their descendants by parent pid.
fn descendants(roots: &[u32], live: &HashMap<u32, Live>) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for l in live.values() {
        if let Some(parent) = l.ppid {
            children.entry(parent).or_default().push(l.key.pid);
        }
    }
    let mut tree: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|pid| live.contains_key(pid))
        .collect();
    let mut in_tree: HashSet<u32> = tree.iter().copied().collect();
    let mut next = 0;
    while next < tree.len() {
        let pid = tree[next];
        next += 1;
        for &child in children.get(&pid).into_iter().flatten() {
            if in_tree.insert(child) {
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

    fn live(entries: &[(u32, Option<u32>)]) -> HashMap<u32, Live> {
        entries
            .iter()
            .map(|&(pid, ppid)| {
                let key = ProcKey {
                    pid,
                    start_ticks: 1,
                };
                (pid, Live { key, ppid })
            })
            .collect()
    }

    #[test]
    fn descendants_follow_parent_links_from_live_roots() {
        let table = live(&[
            (1, None),
            (10, Some(1)),
            (11, Some(10)),
            (12, Some(11)),
            (20, Some(1)),
        ]);
        assert_eq!(descendants(&[10], &table), [10, 11, 12]);
        assert_eq!(descendants(&[10, 20, 99], &table), [10, 11, 12, 20]);
        assert!(descendants(&[99], &table).is_empty());
    }
}
