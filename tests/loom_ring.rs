//! A loom model of the ring's header-word, position and waiter-flag
//! protocol.
//!
//! Run it with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom_ring --target-dir target/loom
//! ```
//!
//! The ring itself lives in shared memory that loom cannot instrument, so
//! this is a small copy of its protocol for data frames, step for step with
//! `src/ring/{producer,consumer,wait,close}.rs`. Left out: padding (at the
//! wrap, the same empty-word-then-Release-header steps at offset 0), the
//! position checks other than the audit's, and more than one slot in flight
//! (two slots, one of them kept free for the empty word):
//!
//! - each slot has a header word; the producer writes the slot, stores
//!   `EMPTY` into the next slot's header word (Relaxed), then this slot's
//!   header word (Release), then its position (Release), and needs room for
//!   the slot and that next header word; the consumer polls the header word
//!   at its position (Acquire), and publishes its own position (Release)
//!   after reading the slot;
//! - the producer re-reads the consumer position (Acquire) only when its
//!   cached copy says the ring is full; the consumer reads the producer
//!   position only in its audit before parking, which must never find the
//!   position past an empty header word (asserted here);
//! - a side that waits swaps `PARKED` into its futex word, issues a SeqCst
//!   fence, re-checks, then sleeps while the word is still `PARKED`; the
//!   other side publishes, issues a SeqCst fence, and only if the word reads
//!   `PARKED` swaps it to `IDLE` and wakes;
//! - a close stores the side's closed flag with Release, then fences and
//!   wakes both words the same way.
//!
//! The kernel futex is modelled as a mutex and condition variable: the
//! waiter compares the word under the lock and sleeps on the condition
//! variable, the waker takes the lock and notifies, as the kernel's hash
//! bucket lock does. There are no timeouts in the model, so a lost wake-up
//! is a deadlock, which loom reports. Slots are loom `UnsafeCell`s, so a
//! read of a slot not yet published, or a write over a slot not yet
//! released, is a data race, which loom reports too.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

const IDLE: u32 = 0;
const PARKED: u32 = 1;
/// A header word with no slot published yet (`FRAME_EMPTY`).
const EMPTY: u64 = 0;
/// A header word of a published slot.
const FULL: u64 = 1;
/// Slots in the model ring (a power of two, like the real capacity). With
/// the header word the producer keeps free past each slot, one slot is in
/// flight at a time, and every write reuses a slot whose header word held
/// a value two writes before.
const SLOTS: u64 = 2;

/// A futex word and the kernel's side of it.
struct Futex {
    word: AtomicU32,
    lock: Mutex<()>,
    queue: Condvar,
}

impl Futex {
    fn new() -> Futex {
        Futex {
            word: AtomicU32::new(IDLE),
            lock: Mutex::new(()),
            queue: Condvar::new(),
        }
    }

    /// FUTEX_WAIT: sleep while the word holds `expected`, compared under
    /// the bucket lock.
    fn wait(&self, expected: u32) {
        let guard = self.lock.lock().unwrap();
        if self.word.load(Ordering::Relaxed) == expected {
            drop(self.queue.wait(guard).unwrap());
        }
    }

    /// FUTEX_WAKE.
    fn wake(&self) {
        let _guard = self.lock.lock().unwrap();
        self.queue.notify_all();
    }
}

struct Ring {
    slots: [UnsafeCell<u64>; SLOTS as usize],
    headers: [AtomicU64; SLOTS as usize],
    producer_position: AtomicU64,
    consumer_position: AtomicU64,
    consumer_wait: Futex,
    producer_wait: Futex,
    producer_closed: AtomicU32,
    consumer_closed: AtomicU32,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            headers: [AtomicU64::new(EMPTY), AtomicU64::new(EMPTY)],
            producer_position: AtomicU64::new(0),
            consumer_position: AtomicU64::new(0),
            consumer_wait: Futex::new(),
            producer_wait: Futex::new(),
            producer_closed: AtomicU32::new(0),
            consumer_closed: AtomicU32::new(0),
        }
    }
}

/// `wait::notify`: after a Release store that may unblock the word's owner.
fn notify(futex: &Futex) {
    fence(Ordering::SeqCst);
    wake_if_parked(futex);
}

/// `wait::wake_if_parked`.
fn wake_if_parked(futex: &Futex) {
    if futex.word.load(Ordering::Relaxed) == PARKED
        && futex.word.swap(IDLE, Ordering::Relaxed) == PARKED
    {
        futex.wake();
    }
}

/// `wait::block` with the park strategy (no timeout in the model).
/// `poll`'s argument is `thorough`, as there.
fn block<T>(futex: &Futex, mut poll: impl FnMut(bool) -> Option<T>) -> T {
    loop {
        if let Some(result) = poll(false) {
            return result;
        }
        // A swap, as in `wait::block`: see there.
        futex.word.swap(PARKED, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if let Some(result) = poll(true) {
            futex.word.store(IDLE, Ordering::Relaxed);
            return result;
        }
        futex.wait(PARKED);
        futex.word.store(IDLE, Ordering::Relaxed);
    }
}

/// `close::close` for one side.
fn close(ring: &Ring, own_closed: &AtomicU32) {
    own_closed.store(1, Ordering::Release);
    fence(Ordering::SeqCst);
    wake_if_parked(&ring.consumer_wait);
    wake_if_parked(&ring.producer_wait);
}

#[derive(Debug, PartialEq, Eq)]
enum Closed {
    Closed,
}

struct Producer {
    ring: Arc<Ring>,
    tail: u64,
    cached_head: u64,
}

impl Producer {
    /// `Producer::reserve`: room for one slot, or `Closed`.
    fn reserve(&mut self) -> Option<Result<(), Closed>> {
        if self.ring.producer_closed.load(Ordering::Relaxed) != 0
            || self.ring.consumer_closed.load(Ordering::Relaxed) != 0
        {
            return Some(Err(Closed::Closed));
        }
        // Room for the slot and the header word after it.
        if self.tail - self.cached_head + 2 > SLOTS {
            let head = self.ring.consumer_position.load(Ordering::Acquire);
            assert!(
                head >= self.cached_head && head <= self.tail,
                "bad consumer position"
            );
            self.cached_head = head;
            if self.tail - self.cached_head + 2 > SLOTS {
                return None;
            }
        }
        Some(Ok(()))
    }

    /// `Producer::write` with a blocking claim.
    fn write(&mut self, value: u64) -> Result<(), Closed> {
        let ring = Arc::clone(&self.ring);
        block(&ring.producer_wait, |_| self.reserve())?;
        let index = (self.tail % SLOTS) as usize;
        // SAFETY (model): loom checks this write does not race with a read.
        self.ring.slots[index].with_mut(|p| unsafe { *p = value });
        let next = ((self.tail + 1) % SLOTS) as usize;
        self.ring.headers[next].store(EMPTY, Ordering::Relaxed);
        self.ring.headers[index].store(FULL, Ordering::Release);
        self.tail += 1;
        self.ring
            .producer_position
            .store(self.tail, Ordering::Release);
        notify(&self.ring.consumer_wait);
        Ok(())
    }

    fn close(&self) {
        close(&self.ring, &self.ring.producer_closed);
    }
}

struct Consumer {
    ring: Arc<Ring>,
    head: u64,
}

impl Consumer {
    /// `Consumer::next_frame`: whether a slot is published, or `Closed`
    /// (own close, or the producer's once drained). `thorough` adds the
    /// audit of the producer position.
    fn available(&mut self, thorough: bool) -> Option<Result<(), Closed>> {
        if self.ring.consumer_closed.load(Ordering::Relaxed) != 0 {
            return Some(Err(Closed::Closed));
        }
        if self.published() {
            return Some(Ok(()));
        }
        if thorough {
            let tail = self.ring.producer_position.load(Ordering::Acquire);
            assert!(
                tail <= self.head || self.published(),
                "audit: producer position {tail} past an empty header word at {}",
                self.head
            );
        }
        if self.ring.producer_closed.load(Ordering::Acquire) != 0 {
            return Some(if self.published() {
                Ok(())
            } else {
                Err(Closed::Closed)
            });
        }
        None
    }

    /// `Consumer::peek`: the header word at this consumer's position.
    fn published(&self) -> bool {
        let index = (self.head % SLOTS) as usize;
        self.ring.headers[index].load(Ordering::Acquire) == FULL
    }

    /// `Consumer::read`.
    fn read(&mut self) -> Result<u64, Closed> {
        let ring = Arc::clone(&self.ring);
        block(&ring.consumer_wait, |thorough| self.available(thorough))?;
        let slot = &self.ring.slots[(self.head % SLOTS) as usize];
        // SAFETY (model): loom checks this read does not race with a write.
        let value = slot.with(|p| unsafe { *p });
        self.head += 1;
        self.ring
            .consumer_position
            .store(self.head, Ordering::Release);
        notify(&self.ring.producer_wait);
        Ok(value)
    }

    fn close(&self) {
        close(&self.ring, &self.ring.consumer_closed);
    }
}

fn ends() -> (Producer, Consumer) {
    let ring = Arc::new(Ring::new());
    (
        Producer {
            ring: Arc::clone(&ring),
            tail: 0,
            cached_head: 0,
        },
        Consumer { ring, head: 0 },
    )
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // A preemption bound keeps the search short (4: about 45 s for all
    // four tests on this machine; set LOOM_MAX_PREEMPTIONS to choose). Each
    // mutation of the protocol tried fails at this bound: no fence before
    // checking the waiter word, a plain store to announce, Relaxed instead
    // of Release for the header word (a data race) or either position (a
    // race, or the audit's assertion), no empty header word stored before
    // publishing (a stale slot read).
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(4);
    }
    builder.check(f);
}

/// Three values through a two-slot ring, both sides parking: the producer
/// waits for room before each write after the first (one slot in flight),
/// and the third reuses the first slot and its header word. Every value
/// arrives, in order; no wake-up is lost (else deadlock); no slot is read
/// before it is written or written before it is read (else a data race).
#[test]
fn values_arrive_in_order_without_lost_wake_ups() {
    model(|| {
        let (mut producer, mut consumer) = ends();
        let reader = thread::spawn(move || {
            let got: Vec<u64> = (0..3).map(|_| consumer.read().unwrap()).collect();
            assert_eq!(got, [10, 11, 12]);
        });
        for value in 10..13 {
            producer.write(value).unwrap();
        }
        reader.join().unwrap();
    });
}

/// A value published before the producer closes is still read; then the
/// reader, parked or not, sees Closed.
#[test]
fn producer_close_drains_then_wakes_the_reader() {
    model(|| {
        let (mut producer, mut consumer) = ends();
        let reader = thread::spawn(move || {
            assert_eq!(consumer.read(), Ok(7));
            assert_eq!(consumer.read(), Err(Closed::Closed));
        });
        producer.write(7).unwrap();
        producer.close();
        reader.join().unwrap();
    });
}

/// A closer on the consumer's side, from a third thread, ends the
/// consumer's wait (and the producer's, which finds the ring closed).
#[test]
fn closer_wakes_its_own_parked_reader() {
    model(|| {
        let (producer, mut consumer) = ends();
        let ring = Arc::clone(&consumer.ring);
        let reader = thread::spawn(move || consumer.read());
        // The closer: the consumer's close, run by another thread.
        close(&ring, &ring.consumer_closed);
        assert_eq!(reader.join().unwrap(), Err(Closed::Closed));
        drop(producer);
    });
}

/// The consumer closing ends a producer parked on a full ring.
#[test]
fn consumer_close_wakes_a_parked_writer() {
    model(|| {
        let (mut producer, consumer) = ends();
        producer.write(1).unwrap();
        let writer = thread::spawn(move || producer.write(2));
        consumer.close();
        assert_eq!(writer.join().unwrap(), Err(Closed::Closed));
    });
}
