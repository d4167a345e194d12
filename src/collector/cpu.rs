//! CPU usage from the delta between two polls of one process.
//!
//! Usage is CPU time over wall time since the previous poll, in percent of
//! one core (a process busy on two cores shows 200). The kernel counts CPU
//! time in clock ticks (10 ms at the usual `USER_HZ` of 100), so polls a few
//! ticks apart give coarse figures.

use std::time::Instant;

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
