//! The ring's own code (`src/ring/{producer,consumer,wait,close}.rs`) under
//! loom's model checker: every interleaving of its atomic operations, up to
//! a preemption bound, with loom's weak memory model.
//!
//! Run it with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom_ring --target-dir target/loom
//! ```
//!
//! What is real and what is modelled (see `src/ring/sync.rs` and the
//! `heap` module of `src/ring/segment.rs`):
//!
//! - Real: `Producer` and `Consumer` as procmond and the agent use them
//!   (claims, commits, padding at the wrap, reads, batches, releases, the
//!   consumer's audit and position checks, closes, `Closer`s, drops), and
//!   `wait::block` / `notify` with the park strategy. Their atomics, fences
//!   and orderings are loom's through the `ring::sync` shim, which is
//!   std's in any other build.
//! - Modelled: the shared memory is on the heap (`ring::pair`; loom's
//!   atomics cannot live in a mapping): the lines of both regions as typed
//!   loom atomics, the data area's words as loom atomics for the frame
//!   header words and plain bytes for payloads, each payload access
//!   recorded on a loom cell per word, so that a payload read and write
//!   the protocol does not order is reported as a data race. The ring is
//!   tiny (32 bytes under `cfg(loom)`: four words, so a two-word frame and
//!   the empty word after it nearly fill it) and carries two or three
//!   frames, to keep loom's search short.
//! - Modelled: the kernel's futex is a loom mutex and condition variable
//!   per futex word (the waiter compares the word under the lock, as the
//!   kernel does under its hash bucket lock; the waker takes the lock to
//!   notify), without the park timeout, so a lost wake-up leaves a side
//!   asleep and loom reports the deadlock. A wake that finds nothing
//!   changed pauses by yielding. Peer liveness (pidfds) is not modelled.
//!
//! Each test checks the values: every frame's bytes and flags arrive, in
//! order, or the expected `Closed` / `PeerGone`; a torn or stale frame, a
//! frame read twice or lost, a corrupt-position error from the consumer's
//! audit or the producer's checks fails it; loom fails it on a data race
//! or deadlock. Preemption bound 3 (4 for the close tests): about 20 s in
//! all here; each test prints how many interleavings it tried.
//!
//! Each of these changes to the real code makes a test here fail (tried
//! one at a time): the frame header word or the padding header stored
//! Relaxed, or the consumer's load of it Relaxed (a data race on the
//! payload); the producer position stored Relaxed (the consumer's audit
//! reports a frame unpublished); no empty header word stored before a frame
//! or before padding (a stale frame read); the closed flag or the peer-gone
//! mark loaded Relaxed (a close or a `PeerGone` before the last frame);
//! no SeqCst fence in `notify`, in `block` after announcing, in `close` or
//! in `mark_peer_gone`, the announce a store instead of a swap, no futex
//! wake, no notify after a commit or a release, a close that wakes only
//! one side (a deadlock).
//!
//! Two weakenings pass here: the consumer position stored Relaxed, and the
//! producer's load of it Relaxed. Under C++'s rules they are races (the
//! producer could overwrite bytes the consumer is still reading), but loom
//! makes every SeqCst fence happen before every later one, which C++ does
//! not, and the producer always issues one (the notify of its commit or
//! padding) between seeing a release and writing over the room it freed:
//! loom then orders the consumer's read before the write anyway. Those two
//! orderings rest on the reasoning in ARCHITECTURE.md alone. (Nor does a
//! missing notify after padding fail: the room a later claim needs never
//! includes the padding, so no wait depends on that wake.)
#![cfg(loom)]

use std::time::{Duration, Instant};

use daemoneye_lib::ring::{self, Consumer, Producer, RingConfig, RingError, WaitStrategy};
use loom::thread;

/// The loom ring: four 8-byte words; frames of up to 8 bytes (two words).
const CAPACITY: usize = 32;
const MAX_FRAME: usize = 8;

/// A deadline that never comes: under loom a wait ends by a wake or not at
/// all.
fn never() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// A producer and a consumer of a new loom ring, both parking at once.
fn ends() -> (Producer, Consumer) {
    let park = WaitStrategy::Park {
        timeout: Duration::from_secs(1),
    };
    let config = RingConfig::new(CAPACITY)
        .with_max_frame(MAX_FRAME)
        .with_wait(park);
    ring::pair(&config).expect("a loom ring")
}

/// Frame `n` of a test: `len` bytes of `n`, flags `n`.
fn frame(n: u8, len: usize) -> (Vec<u8>, u16) {
    (vec![n; len], u16::from(n))
}

fn write(producer: &mut Producer, (bytes, flags): &(Vec<u8>, u16)) -> Result<(), RingError> {
    producer.write(bytes, *flags, never())
}

fn read(consumer: &mut Consumer) -> Result<(Vec<u8>, u16), RingError> {
    consumer.read(never(), |frame| (frame.bytes().to_vec(), frame.flags()))
}

/// Runs `f` under loom with preemption bound `bound` (LOOM_MAX_PREEMPTIONS
/// wins when set), and says how many interleavings it tried.
fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let started = Instant::now();
    builder.check(move || {
        // Relaxed: a count read after `check` returns, on this thread.
        counted.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let runs = runs.load(Ordering::Relaxed);
    eprintln!("{} interleavings in {:.1?}", runs, started.elapsed());
    // Two threads meeting on the ring's words: one interleaving only would
    // mean loom saw no shared operation.
    assert!(runs > 1, "loom explored a single interleaving");
}

/// Writes `frames` into a new ring while another thread reads them, each
/// checked to arrive whole and in order.
fn through(frames: &[(Vec<u8>, u16)]) {
    let (mut producer, mut consumer) = ends();
    let expected = frames.to_vec();
    let reader = thread::spawn(move || {
        for want in &expected {
            assert_eq!(&read(&mut consumer).unwrap(), want);
        }
    });
    for frame in frames {
        write(&mut producer, frame).unwrap();
    }
    reader.join().unwrap();
}

/// Three two-word frames through the four-word ring, both sides parking:
/// the producer waits for room before each write after the first (a frame
/// and the empty word after it take three words), and the third reuses the
/// first frame's words and header word. Every frame arrives whole, in
/// order; no wake-up is lost (else deadlock); no payload is read before it
/// is written or written before it is read (else a data race).
#[test]
fn frames_arrive_in_order_without_lost_wake_ups() {
    model(3, || through(&[1, 2, 3].map(|n| frame(n, MAX_FRAME))));
}

/// Frames of one, two and two words: the third does not fit before the
/// end, so padding fills the last word and the frame takes the first two,
/// where the first frame's header word was (the padding stored an empty
/// word there first). The producer waits for the reader to release both
/// earlier frames; the reader may find the padding alone and release it.
/// Every frame arrives whole and in order; no wake-up is lost; no stale
/// header is read.
#[test]
fn padding_at_the_wrap_is_published_and_skipped() {
    model(3, || {
        through(&[frame(1, 0), frame(2, MAX_FRAME), frame(3, MAX_FRAME)])
    });
}

/// A batch read takes what is published (one to three one-word frames,
/// which with the empty word after them fill the ring) and releases it with
/// one store. All three arrive, in order, however they were batched.
#[test]
fn a_batch_releases_what_it_read_at_once() {
    model(3, || {
        let (mut producer, mut consumer) = ends();
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 3 {
                consumer
                    .read_batch(3, never(), |frame| got.push(frame.flags()))
                    .unwrap();
            }
            assert_eq!(got, [1, 2, 3]);
        });
        for n in 1..=3 {
            write(&mut producer, &frame(n, 0)).unwrap();
        }
        reader.join().unwrap();
    });
}

/// A frame published before the producer closes is still read; then the
/// reader, parked or not, sees `Closed`.
#[test]
fn producer_close_drains_then_wakes_the_reader() {
    model(4, || {
        let (mut producer, mut consumer) = ends();
        let reader = thread::spawn(move || {
            assert_eq!(read(&mut consumer).unwrap(), frame(7, MAX_FRAME));
            assert!(matches!(read(&mut consumer), Err(RingError::Closed)));
        });
        write(&mut producer, &frame(7, MAX_FRAME)).unwrap();
        producer.close();
        reader.join().unwrap();
        drop(producer);
    });
}

/// A closer on the consumer's side, from a third thread (the agent's
/// control-socket watcher), ends the consumer's wait.
#[test]
fn closer_wakes_its_own_parked_reader() {
    model(4, || {
        let (producer, mut consumer) = ends();
        let closer = consumer.closer();
        let reader = thread::spawn(move || read(&mut consumer));
        closer.close();
        assert!(matches!(reader.join().unwrap(), Err(RingError::Closed)));
        drop(producer);
    });
}

/// The peer marked gone from outside the ring (the control socket ended):
/// the reader first gets what was published, then `PeerGone`.
#[test]
fn peer_gone_drains_then_wakes_the_reader() {
    model(4, || {
        let (mut producer, mut consumer) = ends();
        let closer = consumer.closer();
        let reader = thread::spawn(move || {
            let first = read(&mut consumer);
            (first, read(&mut consumer))
        });
        write(&mut producer, &frame(5, MAX_FRAME)).unwrap();
        closer.mark_peer_gone();
        let (first, second) = reader.join().unwrap();
        assert_eq!(first.unwrap(), frame(5, MAX_FRAME));
        assert!(matches!(second, Err(RingError::PeerGone)), "{second:?}");
        drop(producer);
    });
}

/// The consumer closing ends a producer parked on a full ring.
#[test]
fn consumer_close_wakes_a_parked_writer() {
    model(4, || {
        let (mut producer, mut consumer) = ends();
        write(&mut producer, &frame(1, MAX_FRAME)).unwrap();
        let writer = thread::spawn(move || write(&mut producer, &frame(2, MAX_FRAME)));
        consumer.close();
        assert!(matches!(writer.join().unwrap(), Err(RingError::Closed)));
    });
}
