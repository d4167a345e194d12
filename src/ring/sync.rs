//! What the ring synchronises with: std's atomics and the kernel's futex,
//! or, under `cfg(loom)`, loom's.
//!
//! Every atomic, fence, futex call and pause of the ring's protocol
//! (`producer.rs`, `consumer.rs`, `wait.rs`, `close.rs`, the shared lines
//! in `layout.rs`) goes through this module, so `tests/loom_ring.rs` runs
//! that very code under loom's model checker. In an ordinary build it is
//! only re-exports and `#[inline]` calls of the same functions: the ring
//! compiles to what it would without it.
//!
//! Under loom, a [`FutexWord`] carries the kernel's side of its futex (a
//! loom mutex and condition variable: the waiter compares the word under
//! the lock, as the kernel does under its hash bucket lock, and the waker
//! takes the lock to notify). A wait has no timeout there, so a lost
//! wake-up leaves a side asleep for ever: loom reports the deadlock.

#[cfg(not(loom))]
mod imp {
    use std::io;
    use std::time::Duration;

    pub(crate) use std::hint::spin_loop;
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
    pub(crate) use std::thread::{sleep, yield_now};

    use crate::sys::futex;
    pub(crate) use crate::sys::futex::Wake;

    /// A futex word: in shared memory, an atomic the kernel keys by file
    /// and offset.
    pub(crate) type FutexWord = AtomicU32;

    /// [`futex::wait`].
    #[inline]
    pub(crate) fn futex_wait(
        word: &FutexWord,
        expected: u32,
        timeout: Duration,
    ) -> io::Result<Wake> {
        futex::wait(word, expected, timeout)
    }

    /// [`futex::wake`].
    #[inline]
    pub(crate) fn futex_wake(word: &FutexWord, count: u32) -> io::Result<usize> {
        futex::wake(word, count)
    }
}

#[cfg(loom)]
mod imp {
    use std::io;
    use std::ops::Deref;
    use std::time::Duration;

    pub(crate) use loom::hint::spin_loop;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
    pub(crate) use loom::thread::yield_now;

    pub(crate) use crate::sys::futex::Wake;

    /// A pause is a yield: loom has no clock, and what a pause is for (not
    /// spinning on a peer that wakes in a loop) does not change what the
    /// protocol lets happen.
    pub(crate) fn sleep(_: Duration) {
        yield_now();
    }

    /// A futex word and the kernel's side of it.
    pub(crate) struct FutexWord {
        word: AtomicU32,
        lock: loom::sync::Mutex<()>,
        queue: loom::sync::Condvar,
    }

    impl FutexWord {
        pub(crate) fn new(value: u32) -> FutexWord {
            FutexWord {
                word: AtomicU32::new(value),
                lock: loom::sync::Mutex::new(()),
                queue: loom::sync::Condvar::new(),
            }
        }
    }

    impl Deref for FutexWord {
        type Target = AtomicU32;

        fn deref(&self) -> &AtomicU32 {
            &self.word
        }
    }

    impl std::fmt::Debug for FutexWord {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_tuple("FutexWord").field(&self.word).finish()
        }
    }

    /// FUTEX_WAIT without its timeout: sleeps while the word holds
    /// `expected`, compared under the bucket lock, until a wake.
    pub(crate) fn futex_wait(word: &FutexWord, expected: u32, _: Duration) -> io::Result<Wake> {
        let guard = word.lock.lock().map_err(|_| io::Error::other("poisoned"))?;
        // Relaxed: the lock orders it against the waker (the kernel's load
        // follows a full barrier; a weaker load checks more).
        if word.word.load(Ordering::Relaxed) != expected {
            return Ok(Wake::Changed);
        }
        drop(
            word.queue
                .wait(guard)
                .map_err(|_| io::Error::other("poisoned"))?,
        );
        Ok(Wake::Woken)
    }

    /// FUTEX_WAKE of one waiter (the ring's only count).
    pub(crate) fn futex_wake(word: &FutexWord, _count: u32) -> io::Result<usize> {
        let _guard = word.lock.lock().map_err(|_| io::Error::other("poisoned"))?;
        word.queue.notify_one();
        Ok(0)
    }
}

pub(crate) use imp::*;
