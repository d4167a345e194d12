//! Deadlines from timeouts, without the overflow of `Instant + Duration`
//! (which panics for `Duration::MAX` or any timeout past what `Instant`
//! can hold).

use std::time::{Duration, Instant};

/// About a century: as good as no deadline at all.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The instant `timeout` from now; a timeout beyond about a century (such
/// as `Duration::MAX`) is taken as a century.
pub fn after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout.min(FAR))
        // An `Instant` that cannot reach a century ahead: a year.
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_timeout_gives_a_deadline() {
        let now = Instant::now();
        assert!(after(Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
        let soon = after(Duration::from_millis(5));
        assert!(soon >= now + Duration::from_millis(5));
        assert!(soon < now + Duration::from_secs(5));
    }
}
