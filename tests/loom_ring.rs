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
//! this is a small copy of its protocol, step for step with
//! `src/ring/{producer,consumer,wait,close}.rs`, in units of one slot (a
//! frame takes one or two; left out: the position checks other than the
//! audit's):
//!
//! - each slot has a header word; the producer writes a frame's slots,
//!   stores `EMPTY` into the header word just past the frame (Relaxed), then
//!   the frame's header word (Release), then its position (Release), and
//!   needs room for the frame and that next header word; a frame that does
//!   not fit before the end is preceded by padding, published at once the
//!   same way (`EMPTY` at slot 0, then the padding header);
//! - the consumer polls the header word at its position (Acquire), skips
//!   and releases padding, and publishes its own position (Release) after
//!   reading a frame;
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
/// A header word with no frame published yet (`FRAME_EMPTY`).
const EMPTY: u64 = 0;
/// The header word of a padding frame (to the end of the ring).
const PADDING: u64 = 100;
/// The header word of a data frame of `slots` slots.
const fn data(slots: u64) -> u64 {
    slots
}

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
    /// Slots in the ring (the real ring's bytes, coarser).
    slots: u64,
    cells: Vec<UnsafeCell<u64>>,
    headers: Vec<AtomicU64>,
    producer_position: AtomicU64,
    consumer_position: AtomicU64,
    consumer_wait: Futex,
    producer_wait: Futex,
    producer_closed: AtomicU32,
    consumer_closed: AtomicU32,
}

impl Ring {
    fn new(slots: u64) -> Ring {
        Ring {
            slots,
            cells: (0..slots).map(|_| UnsafeCell::new(0)).collect(),
            headers: (0..slots).map(|_| AtomicU64::new(EMPTY)).collect(),
            producer_position: AtomicU64::new(0),
            consumer_position: AtomicU64::new(0),
            consumer_wait: Futex::new(),
            producer_wait: Futex::new(),
            producer_closed: AtomicU32::new(0),
            consumer_closed: AtomicU32::new(0),
        }
    }

    fn header(&self, position: u64) -> &AtomicU64 {
        &self.headers[(position % self.slots) as usize]
    }

    fn cell(&self, position: u64) -> &UnsafeCell<u64> {
        &self.cells[(position % self.slots) as usize]
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
    /// `Producer::reserve`: room for a frame of `size` slots (after
    /// padding, which it publishes), or `Closed`.
    fn reserve(&mut self, size: u64) -> Option<Result<(), Closed>> {
        let ring = &self.ring;
        if ring.producer_closed.load(Ordering::Relaxed) != 0
            || ring.consumer_closed.load(Ordering::Relaxed) != 0
        {
            return Some(Err(Closed::Closed));
        }
        let to_end = ring.slots - self.tail % ring.slots;
        let frame_room = if size <= to_end { size } else { to_end + size };
        // Room for the frame and the header word after it.
        let needed = frame_room + 1;
        if self.tail - self.cached_head + needed > ring.slots {
            let head = ring.consumer_position.load(Ordering::Acquire);
            assert!(
                head >= self.cached_head && head <= self.tail,
                "bad consumer position"
            );
            self.cached_head = head;
            if self.tail - self.cached_head + needed > ring.slots {
                return None;
            }
        }
        if size > to_end {
            ring.header(0).store(EMPTY, Ordering::Relaxed);
            ring.header(self.tail).store(PADDING, Ordering::Release);
            self.tail += to_end;
            ring.producer_position.store(self.tail, Ordering::Release);
            notify(&ring.consumer_wait);
        }
        Some(Ok(()))
    }

    /// `Producer::write` with a blocking claim: `value` in each of the
    /// frame's `size` slots.
    fn write(&mut self, value: u64, size: u64) -> Result<(), Closed> {
        let ring = Arc::clone(&self.ring);
        block(&ring.producer_wait, |_| self.reserve(size))?;
        for slot in self.tail..self.tail + size {
            // SAFETY (model): loom checks this write does not race with a
            // read.
            ring.cell(slot).with_mut(|p| unsafe { *p = value });
        }
        ring.header(self.tail + size)
            .store(EMPTY, Ordering::Relaxed);
        ring.header(self.tail).store(data(size), Ordering::Release);
        self.tail += size;
        ring.producer_position.store(self.tail, Ordering::Release);
        notify(&ring.consumer_wait);
        Ok(())
    }

    fn close(&self) {
        close(&self.ring, &self.ring.producer_closed);
    }
}

/// What `Consumer::peek` found.
enum Peek {
    /// A data frame at this position, of this many slots.
    Frame(u64, u64),
    /// An empty header word at this position.
    Empty(u64),
}

struct Consumer {
    ring: Arc<Ring>,
    head: u64,
}

impl Consumer {
    /// `Consumer::peek`: the frame at `at`, past at most one padding frame.
    fn peek(&self, mut at: u64) -> Peek {
        loop {
            match self.ring.header(at).load(Ordering::Acquire) {
                EMPTY => return Peek::Empty(at),
                PADDING => {
                    assert!(at % self.ring.slots != 0, "padding at slot 0");
                    at += self.ring.slots - at % self.ring.slots;
                }
                size => return Peek::Frame(at, size),
            }
        }
    }

    /// `Consumer::next_frame`: the next frame (position, slots), or
    /// `Closed` (own close, or the producer's once drained). Releases
    /// padding found alone; `thorough` adds the audit of the producer
    /// position.
    fn available(&mut self, thorough: bool) -> Option<Result<(u64, u64), Closed>> {
        if self.ring.consumer_closed.load(Ordering::Relaxed) != 0 {
            return Some(Err(Closed::Closed));
        }
        match self.peek(self.head) {
            Peek::Frame(at, size) => return Some(Ok((at, size))),
            Peek::Empty(at) if at != self.head => self.release(at),
            Peek::Empty(_) => {}
        }
        if thorough {
            let tail = self.ring.producer_position.load(Ordering::Acquire);
            if tail > self.head {
                if let Peek::Empty(at) = self.peek(self.head) {
                    assert!(
                        tail <= at,
                        "audit: producer position {tail} past an empty header word at {at}"
                    );
                }
            }
        }
        if self.ring.producer_closed.load(Ordering::Acquire) != 0 {
            return Some(match self.peek(self.head) {
                Peek::Frame(at, size) => Ok((at, size)),
                Peek::Empty(_) => Err(Closed::Closed),
            });
        }
        None
    }

    /// `Consumer::release`.
    fn release(&mut self, next: u64) {
        self.head = next;
        self.ring
            .consumer_position
            .store(self.head, Ordering::Release);
        notify(&self.ring.producer_wait);
    }

    /// `Consumer::read`: the frame's value, checked to be in all its slots.
    fn read(&mut self) -> Result<u64, Closed> {
        let ring = Arc::clone(&self.ring);
        let (at, size) = block(&ring.consumer_wait, |thorough| self.available(thorough))?;
        // SAFETY (model): loom checks these reads do not race with a write.
        let values: Vec<u64> = (at..at + size)
            .map(|slot| ring.cell(slot).with(|p| unsafe { *p }))
            .collect();
        assert!(values.iter().all(|&v| v == values[0]), "torn frame");
        self.release(at + size);
        Ok(values[0])
    }

    fn close(&self) {
        close(&self.ring, &self.ring.consumer_closed);
    }
}

/// A producer and a consumer of a new ring of `slots` slots.
fn ends(slots: u64) -> (Producer, Consumer) {
    let ring = Arc::new(Ring::new(slots));
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
    // A preemption bound keeps the search short (4: about 45 s for the
    // longest test here; set LOOM_MAX_PREEMPTIONS to choose). Each mutation
    // of the protocol tried fails at this bound: no fence before checking
    // the waiter word, a plain store to announce, Relaxed instead of
    // Release for the header word (a data race) or either position (a race,
    // or the audit's assertion), no empty header word stored before
    // publishing (a stale slot read).
    model_bounded(4, f);
}

/// `model` with another preemption bound (LOOM_MAX_PREEMPTIONS still
/// wins).
fn model_bounded(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    builder.check(f);
}

/// Three one-slot frames through a two-slot ring, both sides parking: the
/// producer waits for room before each write after the first (one frame in
/// flight, one slot kept for the empty word), and the third reuses the
/// first slot and its header word. Every value
/// arrives, in order; no wake-up is lost (else deadlock); no slot is read
/// before it is written or written before it is read (else a data race).
#[test]
fn values_arrive_in_order_without_lost_wake_ups() {
    model(|| {
        let (mut producer, mut consumer) = ends(2);
        let reader = thread::spawn(move || {
            let got: Vec<u64> = (0..3).map(|_| consumer.read().unwrap()).collect();
            assert_eq!(got, [10, 11, 12]);
        });
        for value in 10..13 {
            producer.write(value, 1).unwrap();
        }
        reader.join().unwrap();
    });
}

/// Frames of one, two and two slots through a four-slot ring: the third
/// does not fit before the end, so padding fills slot 3 and the frame takes
/// slots 0 and 1, where the first frame's header word was (the padding
/// stored an empty word there first). The producer must wait for the reader
/// to release the first two; the reader may find the padding alone and
/// release it. Every value arrives whole and in order; no wake-up is lost;
/// no stale header is read.
///
/// Preemption bound 3 (about 16 s; 4 takes about 90 s and also passes).
/// Leaving out the padding's empty word at slot 0, or storing the padding
/// header Relaxed, fails at once.
#[test]
fn padding_at_the_wrap_is_published_and_skipped() {
    model_bounded(3, || {
        let (mut producer, mut consumer) = ends(4);
        let reader = thread::spawn(move || {
            let got: Vec<u64> = (0..3).map(|_| consumer.read().unwrap()).collect();
            assert_eq!(got, [10, 11, 12]);
        });
        producer.write(10, 1).unwrap();
        producer.write(11, 2).unwrap();
        producer.write(12, 2).unwrap();
        reader.join().unwrap();
    });
}

/// A value published before the producer closes is still read; then the
/// reader, parked or not, sees Closed.
#[test]
fn producer_close_drains_then_wakes_the_reader() {
    model(|| {
        let (mut producer, mut consumer) = ends(2);
        let reader = thread::spawn(move || {
            assert_eq!(consumer.read(), Ok(7));
            assert_eq!(consumer.read(), Err(Closed::Closed));
        });
        producer.write(7, 1).unwrap();
        producer.close();
        reader.join().unwrap();
    });
}

/// A closer on the consumer's side, from a third thread, ends the
/// consumer's wait (and the producer's, which finds the ring closed).
#[test]
fn closer_wakes_its_own_parked_reader() {
    model(|| {
        let (producer, mut consumer) = ends(2);
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
        let (mut producer, consumer) = ends(2);
        producer.write(1, 1).unwrap();
        let writer = thread::spawn(move || producer.write(2, 1));
        consumer.close();
        assert_eq!(writer.join().unwrap(), Err(Closed::Closed));
    });
}
