//! Changes-only enumerates, for agents that poll every 10–100 ms: procmond
//! sends only what changed since this connection's previous one, and a
//! [`LiveTable`] applied with each keeps the whole picture.
//!
//! ```no_run
//! use std::time::Duration;
//! use daemoneye_lib::client::{Agent, ChangeThresholds, LiveTable};
//!
//! # fn main() -> Result<(), daemoneye_lib::client::ClientError> {
//! let mut agent = Agent::connect("/run/daemoneye/procmond.sock")?;
//! let mut table = LiveTable::new();
//! for _ in 0..100 {
//!     let changes = agent.enumerate_changes(None, ChangeThresholds::default())?;
//!     let applied = table.apply(changes);
//!     println!("{} processes ({} news, {} gone)", table.len(), applied.updated, applied.gone);
//!     std::thread::sleep(Duration::from_millis(50));
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use crate::proto::ProtoProcessRecord;
use crate::proto::control::Changes;

/// When procmond reports a process again for a changed usage. The defaults
/// (`None`) are procmond's: 0.5 CPU percentage points, 1 % of memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ChangeThresholds {
    /// CPU usage moved by more than this many percentage points.
    pub cpu_points: Option<f64>,
    /// Resident memory moved by more than this fraction.
    pub memory_fraction: Option<f64>,
}

impl From<ChangeThresholds> for Changes {
    fn from(thresholds: ChangeThresholds) -> Changes {
        Changes {
            cpu_points: thresholds.cpu_points,
            memory_fraction: thresholds.memory_fraction,
        }
    }
}

/// One change a changes-only enumerate reported.
#[derive(Clone, Debug, PartialEq)]
pub enum ProcessChange {
    /// A process that is new, whose image, command line, uid, name or
    /// parent changed, or whose usage moved past a threshold: its record
    /// now.
    Updated(ProtoProcessRecord),
    /// A process reported before that has exited, or that the filter no
    /// longer selects: its record as last reported, at the time it was
    /// found gone.
    Gone(ProtoProcessRecord),
}

/// What a [`ProcessChange`] says, without its record (as
/// [`Agent::for_each_change`](super::Agent::for_each_change) gives it,
/// beside a borrowed record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// See [`ProcessChange::Updated`].
    Updated,
    /// See [`ProcessChange::Gone`].
    Gone,
}

impl ChangeKind {
    /// The lower-case name the agent's output uses (`"updated"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Updated => "updated",
            ChangeKind::Gone => "gone",
        }
    }
}

impl ProcessChange {
    /// The change `kind` for `record`.
    pub fn new(kind: ChangeKind, record: ProtoProcessRecord) -> ProcessChange {
        match kind {
            ChangeKind::Updated => ProcessChange::Updated(record),
            ChangeKind::Gone => ProcessChange::Gone(record),
        }
    }

    /// What changed.
    pub fn kind(&self) -> ChangeKind {
        match self {
            ProcessChange::Updated(_) => ChangeKind::Updated,
            ProcessChange::Gone(_) => ChangeKind::Gone,
        }
    }

    /// The record, whatever the change.
    pub fn record(&self) -> &ProtoProcessRecord {
        match self {
            ProcessChange::Updated(record) | ProcessChange::Gone(record) => record,
        }
    }
}

/// What one changes-only enumerate said.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeSet {
    /// The result is whole (the first on this connection, or the first
    /// after one that did not finish): it replaces what the agent holds.
    pub full: bool,
    /// The changes, results first (by pid), then the processes gone.
    pub changes: Vec<ProcessChange>,
}

/// How many records a [`LiveTable::apply`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Records added or replaced.
    pub updated: usize,
    /// Records removed.
    pub gone: usize,
}

/// The processes procmond reported, kept up to date by applying each
/// [`ChangeSet`] of one connection in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveTable {
    processes: BTreeMap<u32, ProtoProcessRecord>,
}

impl LiveTable {
    /// An empty table.
    pub fn new() -> LiveTable {
        LiveTable::default()
    }

    /// Applies `changes`: a whole result replaces everything, then each
    /// update replaces its pid's record and each gone process is removed.
    pub fn apply(&mut self, changes: ChangeSet) -> Applied {
        if changes.full {
            self.processes.clear();
        }
        let mut applied = Applied::default();
        for change in changes.changes {
            match change {
                ProcessChange::Updated(record) => {
                    applied.updated += 1;
                    self.processes.insert(record.pid, record);
                }
                ProcessChange::Gone(record) => {
                    applied.gone += usize::from(self.processes.remove(&record.pid).is_some());
                }
            }
        }
        applied
    }

    /// The record of `pid`, if the table holds it.
    pub fn get(&self, pid: u32) -> Option<&ProtoProcessRecord> {
        self.processes.get(&pid)
    }

    /// Every record, by pid.
    pub fn records(&self) -> impl Iterator<Item = &ProtoProcessRecord> {
        self.processes.values()
    }

    /// How many processes the table holds.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, name: &str) -> ProtoProcessRecord {
        ProtoProcessRecord {
            pid,
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_whole_result_replaces_and_changes_apply() {
        let mut table = LiveTable::new();
        table.apply(ChangeSet {
            full: true,
            changes: vec![
                ProcessChange::Updated(record(1, "a")),
                ProcessChange::Updated(record(2, "b")),
            ],
        });
        let applied = table.apply(ChangeSet {
            full: false,
            changes: vec![
                ProcessChange::Updated(record(2, "c")),
                ProcessChange::Gone(record(1, "a")),
                ProcessChange::Gone(record(9, "never held")),
            ],
        });
        assert_eq!(
            applied,
            Applied {
                updated: 1,
                gone: 1
            }
        );
        assert_eq!(table.records().collect::<Vec<_>>(), [&record(2, "c")]);
        table.apply(ChangeSet {
            full: true,
            changes: vec![ProcessChange::Updated(record(3, "d"))],
        });
        assert_eq!(table.len(), 1);
        assert!(table.get(3).is_some());
    }
}
