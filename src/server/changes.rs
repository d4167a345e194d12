//! Changes-only enumerates: what a connection's agent was last told of each
//! process, and whether what a poll sees now differs enough to tell again.

use std::collections::HashMap;
use std::sync::Arc;

use crate::proto::control::Changes;
use crate::proto::encoded::{EncodedRecord, StableFields};

/// The CPU threshold when the request sets none: half a percentage point.
pub(super) const DEFAULT_CPU_POINTS: f64 = 0.5;
/// The memory threshold when the request sets none: one percent.
pub(super) const DEFAULT_MEMORY_FRACTION: f64 = 0.01;

/// When a process's usage counts as changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Thresholds {
    /// CPU usage, in percentage points.
    cpu_points: f64,
    /// Resident memory, as a fraction of what was last reported.
    memory_fraction: f64,
}

impl Thresholds {
    /// The request's thresholds, defaults for those unset; a negative or
    /// non-finite one is an error naming it.
    pub(super) fn of(changes: &Changes) -> Result<Thresholds, String> {
        let check = |name: &str, value: Option<f64>, default: f64| match value {
            None => Ok(default),
            Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
            Some(v) => Err(format!(
                "`changes.{name}` is {v}; it must be a finite number, zero or more"
            )),
        };
        Ok(Thresholds {
            cpu_points: check("cpu_points", changes.cpu_points, DEFAULT_CPU_POINTS)?,
            memory_fraction: check(
                "memory_fraction",
                changes.memory_fraction,
                DEFAULT_MEMORY_FRACTION,
            )?,
        })
    }

    fn cpu_moved(&self, was: Option<f64>, now: Option<f64>) -> bool {
        match (was, now) {
            (Some(was), Some(now)) => (now - was).abs() > self.cpu_points,
            (None, None) => false,
            _ => true,
        }
    }

    fn memory_moved(&self, was: Option<u64>, now: Option<u64>) -> bool {
        match (was, now) {
            (Some(was), Some(now)) => now.abs_diff(was) as f64 > self.memory_fraction * was as f64,
            (None, None) => false,
            _ => true,
        }
    }
}

/// What the agent was last told of one process.
#[derive(Debug)]
struct Sent {
    stable: Arc<StableFields>,
    cpu_usage: Option<f64>,
    memory_usage: Option<u64>,
    /// The last poll that saw it.
    seen: u64,
}

/// A connection's picture of what its agent holds, from its changes-only
/// enumerates.
#[derive(Debug, Default)]
pub(super) struct Baseline {
    sent: HashMap<u32, Sent>,
    /// Polls begun.
    poll: u64,
    /// The last poll did not finish (or none ran yet): the next result is
    /// whole, and says so.
    stale: bool,
}

impl Baseline {
    /// Starts a poll; true when its result must be whole (the first on the
    /// connection, or the first after one that did not finish), in which
    /// case everything is forgotten first.
    pub(super) fn begin(&mut self) -> bool {
        let full = self.poll == 0 || self.stale;
        if full {
            self.sent.clear();
        }
        self.poll += 1;
        // Until `finish` says otherwise.
        self.stale = true;
        full
    }

    /// Whether `record` of `pid` is news (new, other stable fields, or
    /// usage moved past `thresholds`); if so it counts as told.
    pub(super) fn is_news(
        &mut self,
        pid: u32,
        record: &EncodedRecord,
        thresholds: &Thresholds,
    ) -> bool {
        let poll = self.poll;
        match self.sent.get_mut(&pid) {
            Some(sent) => {
                sent.seen = poll;
                let news = !(Arc::ptr_eq(&sent.stable, &record.stable)
                    || sent.stable.as_bytes() == record.stable.as_bytes())
                    || thresholds.cpu_moved(sent.cpu_usage, record.cpu_usage)
                    || thresholds.memory_moved(sent.memory_usage, record.memory_usage);
                if news {
                    sent.stable = Arc::clone(&record.stable);
                    sent.cpu_usage = record.cpu_usage;
                    sent.memory_usage = record.memory_usage;
                }
                news
            }
            None => {
                self.sent.insert(
                    pid,
                    Sent {
                        stable: Arc::clone(&record.stable),
                        cpu_usage: record.cpu_usage,
                        memory_usage: record.memory_usage,
                        seen: poll,
                    },
                );
                true
            }
        }
    }

    /// The processes told before that this poll did not see (exited, or no
    /// longer selected), by pid, with their last stable fields; forgotten.
    pub(super) fn gone(&mut self) -> Vec<(u32, Arc<StableFields>)> {
        let poll = self.poll;
        let mut gone: Vec<(u32, Arc<StableFields>)> = self
            .sent
            .iter()
            .filter(|(_, sent)| sent.seen != poll)
            .map(|(&pid, sent)| (pid, Arc::clone(&sent.stable)))
            .collect();
        for (pid, _) in &gone {
            self.sent.remove(pid);
        }
        gone.sort_unstable_by_key(|(pid, _)| *pid);
        gone
    }

    /// The poll's result was written whole: the next one may be changes.
    pub(super) fn finish(&mut self) {
        self.stale = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ProtoProcessRecord;

    fn record(name: &str, cpu: f64, memory: u64) -> EncodedRecord {
        let record = ProtoProcessRecord {
            pid: 1,
            name: name.into(),
            cpu_usage: Some(cpu),
            memory_usage: Some(memory),
            ..Default::default()
        };
        EncodedRecord::of(Arc::new(StableFields::encode(&record)), &record)
    }

    #[test]
    fn news_is_new_other_fields_or_usage_past_a_threshold() {
        let t = Thresholds::of(&Changes::default()).unwrap();
        let mut baseline = Baseline::default();
        assert!(baseline.begin());
        assert!(baseline.is_news(1, &record("a", 1.0, 1000), &t));
        baseline.finish();

        assert!(!baseline.begin());
        let same = record("a", 1.4, 1009);
        assert!(!baseline.is_news(1, &same, &t), "below both thresholds");
        assert!(baseline.is_news(1, &record("a", 1.6, 1000), &t), "CPU");
        assert!(baseline.is_news(1, &record("a", 1.6, 1020), &t), "memory");
        assert!(baseline.is_news(1, &record("b", 1.6, 1020), &t), "name");
        assert!(baseline.gone().is_empty());
        baseline.finish();

        // Not seen: gone, once.
        assert!(!baseline.begin());
        assert_eq!(baseline.gone().len(), 1);
        assert!(baseline.gone().is_empty());
    }

    #[test]
    fn a_poll_that_did_not_finish_makes_the_next_whole() {
        let t = Thresholds::of(&Changes::default()).unwrap();
        let mut baseline = Baseline::default();
        baseline.begin();
        baseline.is_news(1, &record("a", 1.0, 1000), &t);
        // No finish: the next result is whole, and tells everything again.
        assert!(baseline.begin());
        assert!(baseline.is_news(1, &record("a", 1.0, 1000), &t));
    }

    #[test]
    fn bad_thresholds_are_named() {
        let bad = Changes {
            cpu_points: Some(f64::NAN),
            memory_fraction: None,
        };
        assert!(
            Thresholds::of(&bad)
                .unwrap_err()
                .contains("changes.cpu_points")
        );
        let bad = Changes {
            cpu_points: None,
            memory_fraction: Some(-1.0),
        };
        assert!(
            Thresholds::of(&bad)
                .unwrap_err()
                .contains("changes.memory_fraction")
        );
    }
}
