//! How a side waits for room or data, and how the other side wakes it.
//!
//! Each side has a futex word in the consumer region (the only memory both
//! sides may write). The protocol, for a waiter W and a notifier N:
//!
//! ```text
//!  W: swap(word, PARKED)       N: publish (header word, position, closed flag), Release
//!     fence(SeqCst)               fence(SeqCst)
//!     re-check the condition      if word == PARKED and swap(word, IDLE) == PARKED:
//!     futex_wait(word, PARKED)        futex_wake(word)
//!     word = IDLE
//! ```
//!
//! The two SeqCst fences order each side's store before its load, so at
//! least one side sees the other's store: either W's re-check sees what N
//! published (the consumer reads the frame header word, the producer the
//! consumer position), or N sees `PARKED`. In the second case N sets the word to
//! `IDLE` before waking, so a W that has not reached `futex_wait` yet does
//! not sleep (the kernel compares the word with `PARKED` atomically with
//! queueing W). No wake-up is lost, and N makes the wake system call only
//! when W asked for one. `tests/loom_ring.rs` runs this code under loom
//! (through `ring::sync`, with a futex that never times out).
//!
//! Parked waits time out (every `park_timeout`) even so, to notice a dead
//! peer through [`watch_peer`](super::Producer::watch_peer) and to bound the
//! harm of a peer that scribbles on the futex words.
//!
//! The futex words sit in memory the peer may write, and any process that
//! maps them may wake them: a wake proves nothing. A woken side that finds
//! nothing changed pauses before it parks again (50 µs, doubling to at
//! most 1 ms, never past the deadline), so a peer that wakes it in a loop
//! or keeps the word from reading `PARKED` costs it at most about one poll
//! a millisecond, not a core. An honest peer wakes only after publishing,
//! so it meets a pause only after a rare late wake (or, for a producer
//! waiting for more room than one release freed, while the consumer
//! drains); no wake is lost in a pause, since the word reads `IDLE` then and
//! the re-check after the next announcement sees what was published.

use std::time::{Duration, Instant};

use super::error::RingError;
use super::layout::{IDLE, PARKED};
use super::sync::{self, FutexWord, Ordering, fence};
use crate::sys::pidfd::PidFd;

/// The default park timeout: how often a parked side wakes to check that
/// its peer is alive.
pub const DEFAULT_PARK_TIMEOUT: Duration = Duration::from_millis(100);
/// The default number of polls (each followed by one `spin_loop` hint)
/// before parking: about 300 µs on this machine (a poll and a pause take
/// ~38 ns). The spin must outlast a futex wake-up (p50 ~45 µs, p99 ~110 µs
/// here, a virtual machine): with a shorter one, two sides ping-ponging
/// fall into a steady state where each parks before the other's wake-up
/// lands, and every hand-off costs a wake-up (measured: p50 65 µs at 2048
/// polls, under 1 µs at 8192).
pub const DEFAULT_SPINS: u32 = 8192;
/// How many spinning polls pass between two reads of the clock (deadline,
/// busy-spin liveness checks).
const CLOCK_EVERY: u32 = 64;
/// How many spinning polls pass between two yields of the core
/// (spin-then-park only): about 10 µs here, far longer than a hand-off
/// between two running sides, far shorter than a scheduler time slice.
const YIELD_EVERY: u32 = 256;
/// How often a busy-spinning side checks that its peer is alive.
const BUSY_LIVENESS_INTERVAL: Duration = Duration::from_millis(100);
/// The pause after the first wake that found nothing changed; it doubles
/// with each such wake in a row, up to [`IDLE_WAKE_PAUSE_MAX`].
const IDLE_WAKE_PAUSE: Duration = Duration::from_micros(50);
/// The longest pause after a wake that found nothing changed: bounds what a
/// peer waking this side in a loop can make it spend (a poll and two system
/// calls a millisecond) and the delay an honest late wake can add.
const IDLE_WAKE_PAUSE_MAX: Duration = Duration::from_millis(1);

/// How a blocking call waits for room (producer) or data (consumer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin on what the peer publishes (the frame header word for the
    /// consumer, the consumer position for the producer) until the deadline;
    /// never sleep. Lowest
    /// latency; burns a core while waiting.
    BusySpin,
    /// Poll `spins` times, one `spin_loop` hint apart, then park on the
    /// futex word, waking at least every `park_timeout`. (Polling every
    /// pause rather than with an exponential backoff keeps the hand-off
    /// latency of an active peer near busy-spin's.)
    SpinThenPark {
        /// Polls before parking.
        spins: u32,
        /// Longest single sleep.
        park_timeout: Duration,
    },
    /// Park at once, waking at least every `timeout`.
    Park {
        /// Longest single sleep.
        timeout: Duration,
    },
}

impl Default for WaitStrategy {
    /// `SpinThenPark` with [`DEFAULT_SPINS`] and [`DEFAULT_PARK_TIMEOUT`].
    fn default() -> Self {
        WaitStrategy::SpinThenPark {
            spins: DEFAULT_SPINS,
            park_timeout: DEFAULT_PARK_TIMEOUT,
        }
    }
}

impl WaitStrategy {
    /// The same waits without the spin: parks at once, as long at a time.
    /// For a real-time thread, whose spin would keep the ordinary thread it
    /// waits for off its core (`sched_yield` makes way only for real-time
    /// threads).
    ///
    /// ```
    /// use std::time::Duration;
    /// use daemoneye_lib::ring::WaitStrategy;
    ///
    /// let park_timeout = Duration::from_millis(50);
    /// let spinning = WaitStrategy::SpinThenPark { spins: 100, park_timeout };
    /// assert_eq!(spinning.parking(), WaitStrategy::Park { timeout: park_timeout });
    /// ```
    pub fn parking(self) -> WaitStrategy {
        match self {
            WaitStrategy::BusySpin => WaitStrategy::Park {
                timeout: DEFAULT_PARK_TIMEOUT,
            },
            WaitStrategy::SpinThenPark { park_timeout, .. } => WaitStrategy::Park {
                timeout: park_timeout,
            },
            park @ WaitStrategy::Park { .. } => park,
        }
    }

    /// Checks the parked timeouts: a zero timeout would make every park a
    /// busy system call loop.
    pub(crate) fn validate(&self) -> Result<(), RingError> {
        let timeout = match *self {
            WaitStrategy::BusySpin => return Ok(()),
            WaitStrategy::SpinThenPark { park_timeout, .. } => park_timeout,
            WaitStrategy::Park { timeout } => timeout,
        };
        if timeout.is_zero() {
            return Err(RingError::InvalidConfig {
                field: "park timeout",
                value: 0,
                reason: "must be more than zero",
            });
        }
        Ok(())
    }
}

/// Repeats `poll` until it gives a result, waiting between attempts as
/// `strategy` says, parking on `word` (this side's futex word).
///
/// `poll` returns `None` while the condition (room, data) is not met. It
/// must re-read what the peer publishes (a position or header word) and
/// both closed flags: it is the re-check after announcing the park. Its
/// argument, `thorough`, is true for the polls around a park and every
/// [`BUSY_LIVENESS_INTERVAL`] of spinning, false for the polls in between:
/// a side may then check more than it needs to go on (the consumer checks
/// the producer position). Gives `TimedOut` once `deadline` passes, and
/// `PeerGone` when `peer` has exited and `poll` still has nothing.
pub(crate) fn block<T>(
    strategy: WaitStrategy,
    deadline: Instant,
    word: &FutexWord,
    peer: Option<&PidFd>,
    mut poll: impl FnMut(bool) -> Option<Result<T, RingError>>,
) -> Result<T, RingError> {
    let mut spins = 0u32;
    // Set at the first clock read: a wait that ends within a few polls
    // (most hand-offs between running sides) reads no clock at all.
    let mut next_liveness: Option<Instant> = None;
    let mut thorough = false;
    // Wakes in a row after which `poll` found nothing (see the module docs).
    let mut idle_wakes = 0u32;
    loop {
        if let Some(result) = poll(thorough) {
            return result;
        }
        thorough = false;
        // Spinning: poll again after one pause, and read the clock only
        // every `CLOCK_EVERY` polls, so a hand-off is seen within a pause
        // or so of happening.
        let spinning = match strategy {
            WaitStrategy::BusySpin => true,
            WaitStrategy::SpinThenPark { spins: limit, .. } => spins < limit,
            WaitStrategy::Park { .. } => false,
        };
        if spinning {
            spins = spins.wrapping_add(1);
            if spins % CLOCK_EVERY == 0 {
                let now = Instant::now();
                if now >= deadline {
                    return Err(RingError::TimedOut);
                }
                let due = *next_liveness.get_or_insert(now + BUSY_LIVENESS_INTERVAL);
                if now >= due {
                    next_liveness = Some(now + BUSY_LIVENESS_INTERVAL);
                    if let Some(result) = check_peer(peer, &mut poll) {
                        return result;
                    }
                    thorough = true;
                }
            }
            // Spin-then-park gives up the core now and then, in case the
            // peer is waiting for it (more runnable threads than cores):
            // spinning on would hold off the very hand-off it waits for.
            // (Busy-spin never does: it is for dedicated cores.)
            if spins % YIELD_EVERY == 0 && strategy != WaitStrategy::BusySpin {
                sync::yield_now();
            } else {
                sync::spin_loop();
            }
            continue;
        }
        let mut now = Instant::now();
        if now >= deadline {
            return Err(RingError::TimedOut);
        }
        let park_timeout = match strategy {
            WaitStrategy::SpinThenPark { park_timeout, .. } => park_timeout,
            WaitStrategy::Park { timeout } => timeout,
            // Never parks (`spinning` above is always true).
            WaitStrategy::BusySpin => BUSY_LIVENESS_INTERVAL,
        };
        if idle_wakes > 0 {
            // The last wake found nothing changed: pause (the word reads
            // IDLE, so nobody wakes this side for nothing meanwhile; the
            // re-check below sees whatever was published).
            sync::sleep(idle_pause(idle_wakes).min(deadline - now));
            now = Instant::now();
            if now >= deadline {
                return Err(RingError::TimedOut);
            }
        }

        // Announce, then re-check (see the module docs). Relaxed: the SeqCst
        // fence after it orders it before the re-check's loads. A swap, not
        // a store: as an RMW it is ordered after any notifier's earlier swap
        // to IDLE, so a notifier that fences after this one cannot read that
        // stale IDLE. (C++'s total modification order gives this for a
        // plain store too; loom's weaker model of coherence needs the RMW,
        // and it costs nothing beside the futex call that follows.)
        word.swap(PARKED, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if let Some(result) = poll(true) {
            // Relaxed: nothing is published with the word; it only tells the
            // peer not to bother waking this side.
            word.store(IDLE, Ordering::Relaxed);
            return result;
        }
        let woke = sync::futex_wait(word, PARKED, park_timeout.min(deadline - now))
            .map_err(RingError::sys("futex wait"));
        // Relaxed: as above; the next round re-checks everything anyway.
        word.store(IDLE, Ordering::Relaxed);
        if woke? == sync::Wake::TimedOut {
            idle_wakes = 0;
            if let Some(result) = check_peer(peer, &mut poll) {
                return result;
            }
        } else {
            // Woken (or the word changed under it): counted as idle unless
            // the poll at the top of the loop returns.
            idle_wakes = idle_wakes.saturating_add(1);
        }
        thorough = true;
    }
}

/// The pause after `idle_wakes` (at least 1) wakes in a row that found
/// nothing changed: [`IDLE_WAKE_PAUSE`] doubled for each after the first,
/// at most [`IDLE_WAKE_PAUSE_MAX`].
fn idle_pause(idle_wakes: u32) -> Duration {
    let doublings = idle_wakes.saturating_sub(1).min(16);
    IDLE_WAKE_PAUSE
        .saturating_mul(1 << doublings)
        .min(IDLE_WAKE_PAUSE_MAX)
}

/// When `peer` has exited: one last `poll` (frames it published before it
/// died are still good), else `PeerGone`.
fn check_peer<T>(
    peer: Option<&PidFd>,
    poll: &mut impl FnMut(bool) -> Option<Result<T, RingError>>,
) -> Option<Result<T, RingError>> {
    let peer = peer?;
    match peer.has_exited() {
        Ok(false) => None,
        Ok(true) => Some(poll(true).unwrap_or(Err(RingError::PeerGone))),
        Err(source) => Some(Err(RingError::Sys {
            op: "poll peer pidfd",
            source,
        })),
    }
}

/// The notifier's half: call after a Release store that may unblock the
/// side owning `word`. Costs a fence and a load when that side is not
/// parked.
#[inline]
pub(crate) fn notify(word: &FutexWord) {
    // SeqCst fence: orders the caller's store (header word, position,
    // closed flag) before
    // the load of `word`, against the waiter's store of PARKED before its
    // re-check (see the module docs).
    fence(Ordering::SeqCst);
    wake_if_parked(word);
}

/// Wakes the side owning `word` if it announced a park. The caller has
/// issued the SeqCst fence of the protocol.
#[inline]
pub(crate) fn wake_if_parked(word: &FutexWord) {
    // Relaxed load: a plain check to skip the swap and the system call in
    // the common case; the fence before it does the ordering.
    // Relaxed swap: an RMW always reads the latest value, so of several
    // notifiers exactly one sees PARKED and wakes; the futex system call that
    // follows is a full barrier in the kernel, which reads the word again
    // under its own lock before queueing a waiter.
    if word.load(Ordering::Relaxed) == PARKED && word.swap(IDLE, Ordering::Relaxed) == PARKED {
        // A failed wake (EFAULT cannot happen on our own mapping) leaves the
        // waiter to its timeout; nothing to report to the notifier.
        let _ = sync::futex_wake(word, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32};

    fn strategies() -> [WaitStrategy; 3] {
        [
            WaitStrategy::BusySpin,
            WaitStrategy::SpinThenPark {
                spins: 3,
                park_timeout: Duration::from_secs(5),
            },
            WaitStrategy::Park {
                timeout: Duration::from_secs(5),
            },
        ]
    }

    #[test]
    fn ready_poll_returns_at_once() {
        let word = AtomicU32::new(IDLE);
        for strategy in strategies() {
            let got = block(strategy, Instant::now(), &word, None, |_| Some(Ok(7)));
            assert_eq!(got.unwrap(), 7);
            assert_eq!(word.load(Ordering::Relaxed), IDLE);
        }
    }

    #[test]
    fn deadline_gives_timed_out() {
        let word = AtomicU32::new(IDLE);
        for strategy in strategies() {
            let deadline = Instant::now() + Duration::from_millis(20);
            let got: Result<(), _> = block(strategy, deadline, &word, None, |_| None);
            assert!(matches!(got, Err(RingError::TimedOut)), "{strategy:?}");
            assert!(Instant::now() >= deadline);
            assert_eq!(word.load(Ordering::Relaxed), IDLE);
        }
    }

    #[test]
    fn notify_wakes_a_parked_waiter() {
        for strategy in strategies() {
            let word = Arc::new(AtomicU32::new(IDLE));
            let flag = Arc::new(AtomicBool::new(false));
            let waiter = {
                let (word, flag) = (Arc::clone(&word), Arc::clone(&flag));
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    block(strategy, deadline, &word, None, |_| {
                        flag.load(Ordering::Acquire).then_some(Ok(()))
                    })
                })
            };
            // Wait (with a deadline) until the waiter has parked, then set
            // the condition and notify; the waiter must return long before
            // its 5 s park timeout would.
            if !matches!(strategy, WaitStrategy::BusySpin) {
                let until = Instant::now() + Duration::from_secs(10);
                while word.load(Ordering::Relaxed) != PARKED {
                    assert!(Instant::now() < until, "waiter never parked");
                    std::thread::yield_now();
                }
            }
            let start = Instant::now();
            flag.store(true, Ordering::Release);
            notify(&word);
            waiter.join().unwrap().unwrap();
            assert!(
                start.elapsed() < Duration::from_secs(4),
                "{strategy:?} was not woken"
            );
        }
    }

    #[test]
    fn wake_skips_an_idle_word() {
        let word = AtomicU32::new(IDLE);
        wake_if_parked(&word);
        assert_eq!(word.load(Ordering::Relaxed), IDLE);
        let word = AtomicU32::new(PARKED);
        wake_if_parked(&word);
        assert_eq!(word.load(Ordering::Relaxed), IDLE);
    }

    #[test]
    fn dead_peer_gives_peer_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pidfd = PidFd::open(child.id()).unwrap();
        assert!(pidfd.wait_exit(Duration::from_secs(10)).unwrap());
        let word = AtomicU32::new(IDLE);
        let strategy = WaitStrategy::Park {
            timeout: Duration::from_millis(5),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let got: Result<(), _> = block(strategy, deadline, &word, Some(&pidfd), |_| None);
        assert!(matches!(got, Err(RingError::PeerGone)));
        // A last poll still wins over PeerGone.
        let mut calls = 0;
        let got = block(strategy, deadline, &word, Some(&pidfd), |_| {
            calls += 1;
            (calls > 2).then_some(Ok(5))
        });
        assert_eq!(got.unwrap(), 5);
        child.wait().unwrap();
    }

    /// Runs `block` on another thread and gives its result, or fails the
    /// test if it has not returned within `within`: a spin that never reads
    /// the clock again would otherwise hang the run.
    fn block_within<T: Send + 'static>(
        within: Duration,
        run: impl FnOnce() -> Result<T, RingError> + Send + 'static,
    ) -> Result<T, RingError> {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(run());
        });
        result
            .recv_timeout(within)
            .expect("the wait did not end (its clock is never read again?)")
    }

    #[test]
    fn spin_then_park_polls_its_spins_then_parks_once_with_a_thorough_poll() {
        for limit in [0, 1, 5, CLOCK_EVERY + 1, YIELD_EVERY + 3] {
            let word = AtomicU32::new(IDLE);
            let strategy = WaitStrategy::SpinThenPark {
                spins: limit,
                park_timeout: Duration::from_secs(5),
            };
            let start = Instant::now();
            let deadline = start + Duration::from_secs(10);
            let mut polls = Vec::new();
            // Ready at the first poll after the park was announced.
            let got = block(strategy, deadline, &word, None, |thorough| {
                let parked = word.load(Ordering::Relaxed) == PARKED;
                polls.push(thorough);
                parked.then_some(Ok(polls.len()))
            });
            // The first poll, one after each spin, then the re-check.
            assert_eq!(got.unwrap(), limit as usize + 2, "spins {limit}");
            let (recheck, before) = polls.split_last().unwrap();
            assert!(*recheck, "the re-check after announcing is thorough");
            // The spins took microseconds: no liveness round was due, so
            // none was thorough (unless this thread was held off the CPU
            // for a whole liveness interval).
            if start.elapsed() < BUSY_LIVENESS_INTERVAL {
                assert!(
                    before.iter().all(|thorough| !thorough),
                    "spins {limit}: {polls:?}"
                );
            }
            assert_eq!(word.load(Ordering::Relaxed), IDLE);
        }
    }

    #[test]
    fn a_busy_spin_ends_at_its_deadline() {
        let word = Arc::new(AtomicU32::new(IDLE));
        let polls = Arc::new(AtomicU32::new(0));
        let (w, p) = (Arc::clone(&word), Arc::clone(&polls));
        let deadline = Instant::now() + Duration::from_millis(30);
        let got: Result<(), _> = block_within(Duration::from_secs(20), move || {
            block(WaitStrategy::BusySpin, deadline, &w, None, |_| {
                p.fetch_add(1, Ordering::Relaxed);
                None
            })
        });
        assert!(matches!(got, Err(RingError::TimedOut)), "{got:?}");
        assert!(Instant::now() >= deadline);
        // It spun (never parked) until then.
        assert!(polls.load(Ordering::Relaxed) > CLOCK_EVERY);
        assert_eq!(word.load(Ordering::Relaxed), IDLE);
    }

    #[test]
    fn a_spinning_waiter_sees_its_peer_die_without_parking() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pidfd = PidFd::open(child.id()).unwrap();
        assert!(pidfd.wait_exit(Duration::from_secs(10)).unwrap());
        child.wait().unwrap();
        for strategy in [
            WaitStrategy::BusySpin,
            // Never reaches its park within the test.
            WaitStrategy::SpinThenPark {
                spins: u32::MAX,
                park_timeout: Duration::from_secs(60),
            },
        ] {
            let pidfd = PidFd::from_owned(pidfd.as_fd().try_clone_to_owned().unwrap());
            let word = Arc::new(AtomicU32::new(IDLE));
            let w = Arc::clone(&word);
            // A deadline far off: only the liveness check while spinning
            // ends this wait in time.
            let deadline = Instant::now() + Duration::from_secs(600);
            let thorough_polls = Arc::new(AtomicU32::new(0));
            let t = Arc::clone(&thorough_polls);
            let got: Result<(), _> = block_within(Duration::from_secs(20), move || {
                block(strategy, deadline, &w, Some(&pidfd), |thorough| {
                    if thorough {
                        t.fetch_add(1, Ordering::Relaxed);
                    }
                    None
                })
            });
            assert!(
                matches!(got, Err(RingError::PeerGone)),
                "{strategy:?}: {got:?}"
            );
            // The last look before giving up was a thorough poll.
            assert!(thorough_polls.load(Ordering::Relaxed) >= 1);
            assert_eq!(word.load(Ordering::Relaxed), IDLE, "{strategy:?} parked");
        }
    }

    #[test]
    fn zero_park_timeout_is_refused() {
        assert!(
            WaitStrategy::Park {
                timeout: Duration::ZERO
            }
            .validate()
            .is_err()
        );
        assert!(WaitStrategy::default().validate().is_ok());
        assert!(WaitStrategy::BusySpin.validate().is_ok());
    }
}
