//! Process-shared futex wait and wake on an [`AtomicU32`].
//!
//! The word may live in memory shared between processes (a `MAP_SHARED`
//! mapping of a memfd): these calls never pass `FUTEX_PRIVATE_FLAG`, so the
//! kernel keys the futex by the file and offset, and a waiter in one process
//! is woken by a wake in another, whatever address each has mapped the page
//! at. A waiter may use a read-only mapping (the kernel only reads the word).

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

/// Why [`wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A [`wake`] call, a signal, or a spurious wake-up ended the wait.
    Woken,
    /// The word did not hold the expected value, so the caller never slept.
    Changed,
    /// The timeout passed.
    TimedOut,
}

/// Sleeps while `word` holds `expected`, for at most `timeout`.
///
/// The kernel compares the word and queues the caller atomically with
/// respect to [`wake`], so a wake made after the word changed is never
/// lost: the caller either sees the new value ([`Wake::Changed`]) or is
/// queued in time to be woken. Callers re-check their condition after any
/// return.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> io::Result<Wake> {
    let timeout = futex::Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match futex::wait(word, futex::Flags::empty(), expected, Some(&timeout)) {
        Ok(()) | Err(Errno::INTR) => Ok(Wake::Woken),
        Err(Errno::AGAIN) => Ok(Wake::Changed),
        Err(Errno::TIMEDOUT) => Ok(Wake::TimedOut),
        Err(err) => Err(err.into()),
    }
}

/// Wakes up to `count` waiters sleeping on `word` (in any process); returns
/// how many were woken.
pub fn wake(word: &AtomicU32, count: u32) -> io::Result<usize> {
    Ok(futex::wake(word, futex::Flags::empty(), count)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wait_returns_changed_when_the_value_differs() {
        let word = AtomicU32::new(1);
        assert_eq!(
            wait(&word, 0, Duration::from_secs(5)).unwrap(),
            Wake::Changed
        );
    }

    #[test]
    fn wait_times_out() {
        let word = AtomicU32::new(0);
        let start = Instant::now();
        assert_eq!(
            wait(&word, 0, Duration::from_millis(20)).unwrap(),
            Wake::TimedOut
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn wake_ends_a_wait_in_another_thread() {
        // The waiter sleeps for up to two minutes on a word that never
        // changes, so only a real wake ends its wait within the few seconds
        // this test allows.
        let word = Arc::new(AtomicU32::new(0));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        {
            let word = Arc::clone(&word);
            std::thread::spawn(move || {
                let _ = done_tx.send(wait(&word, 0, Duration::from_secs(120)).unwrap());
            });
        }
        // `wake` says how many it woke: repeat until it woke the waiter (a
        // wake before the waiter is queued wakes no one).
        let deadline = Instant::now().checked_add(Duration::from_secs(10)).unwrap();
        while wake(&word, 1).unwrap() == 0 {
            assert!(Instant::now() < deadline, "the waiter was never queued");
            std::thread::yield_now();
        }
        let woken = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the waiter slept on after a wake that counted it");
        assert_eq!(woken, Wake::Woken);
    }

    #[test]
    fn wake_without_waiters_wakes_none() {
        let word = AtomicU32::new(0);
        assert_eq!(wake(&word, 1).unwrap(), 0);
    }
}
