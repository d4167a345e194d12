//! CPU usage from the delta between two samples of one process.
//!
//! Usage is CPU time over wall time, in percent of one core (a process busy
//! on two cores shows 200). The kernel counts CPU time in clock ticks (10 ms
//! at the usual `USER_HZ` of 100), so a window of a few milliseconds would
//! read 0 %, or 1000 % when it happens to span a tick. Usage is therefore
//! measured over a window of at least [`MIN_WINDOW`]: a sample becomes the
//! baseline only once the previous baseline is that old, and a poll sooner
//! than [`MIN_WINDOW`] after the process was first seen reports none. Polled
//! every 10 ms, a process's usage covers the last 100 to 200 ms.

use std::time::{Duration, Instant};

/// The shortest window CPU usage is measured over: ten clock ticks, so the
/// tick rounding is at most a tenth of a core.
pub(crate) const MIN_WINDOW: Duration = Duration::from_millis(100);

/// The samples usage is measured from: `newer` is the latest baseline,
/// `older` the one before it (at least [`MIN_WINDOW`] older).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuHistory {
    older: Option<CpuSample>,
    newer: Option<CpuSample>,
}

impl CpuHistory {
    /// Usage up to `now` over a window of at least [`MIN_WINDOW`], from the
    /// most recent baseline that old; `None` when there is none yet.
    /// `now` becomes the newest baseline once the current one is that old.
    pub(crate) fn observe(&mut self, now: CpuSample) -> Option<f64> {
        let old_enough = |s: &CpuSample| now.at.saturating_duration_since(s.at) >= MIN_WINDOW;
        match self.newer {
            None => {
                self.newer = Some(now);
                None
            }
            Some(newer) if old_enough(&newer) => {
                self.older = Some(newer);
                self.newer = Some(now);
                usage_percent(Some(newer), now)
            }
            Some(_) => self
                .older
                .filter(old_enough)
                .and_then(|older| usage_percent(Some(older), now)),
        }
    }
}

/// A process's accumulated CPU time at one poll.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuSample {
    /// User plus system time, in milliseconds.
    pub(crate) cpu_ms: u64,
    /// When the poll read it.
    pub(crate) at: Instant,
}

/// Percent of one core used between `prev` and `now`; `None` without a
/// previous sample (the first poll of a process).
pub(crate) fn usage_percent(prev: Option<CpuSample>, now: CpuSample) -> Option<f64> {
    let prev = prev?;
    let wall_ms = now.at.saturating_duration_since(prev.at).as_secs_f64() * 1e3;
    if wall_ms <= 0.0 {
        return Some(0.0);
    }
    let cpu_ms = now.cpu_ms.saturating_sub(prev.cpu_ms) as f64;
    Some(cpu_ms / wall_ms * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_poll_has_no_usage() {
        let now = CpuSample {
            cpu_ms: 50,
            at: Instant::now(),
        };
        assert_eq!(usage_percent(None, now), None);
    }

    #[test]
    fn usage_is_cpu_time_over_wall_time() {
        let t0 = Instant::now();
        let prev = CpuSample {
            cpu_ms: 100,
            at: t0,
        };
        let now = CpuSample {
            cpu_ms: 150,
            at: t0 + Duration::from_millis(200),
        };
        let usage = usage_percent(Some(prev), now).unwrap();
        assert!((usage - 25.0).abs() < 1e-9, "{usage}");
    }

    #[test]
    fn usage_needs_a_window_of_the_minimum_length() {
        let t0 = Instant::now();
        let at = |ms: u64, cpu_ms: u64| CpuSample {
            cpu_ms,
            at: t0 + Duration::from_millis(ms),
        };
        let mut history = CpuHistory::default();
        assert_eq!(history.observe(at(0, 0)), None);
        // One tick of CPU time 1 ms later would be 1000 %: not reported.
        assert_eq!(history.observe(at(1, 10)), None);
        assert_eq!(history.observe(at(99, 10)), None);
        // 50 ms of CPU over the 100 ms since the first sample.
        assert_eq!(history.observe(at(100, 50)), Some(50.0));
        // Sooner polls measure from the sample before: 60 ms over 101 ms.
        let usage = history.observe(at(101, 60)).unwrap();
        assert!((usage - 60.0 / 101.0 * 100.0).abs() < 1e-9, "{usage}");
        // Once the baseline at 100 ms is old enough, it is used.
        assert_eq!(history.observe(at(200, 100)), Some(50.0));
    }

    #[test]
    fn no_negative_or_infinite_usage() {
        let t0 = Instant::now();
        let prev = CpuSample {
            cpu_ms: 100,
            at: t0,
        };
        let backwards = CpuSample { cpu_ms: 90, at: t0 };
        assert_eq!(usage_percent(Some(prev), backwards), Some(0.0));
    }
}
