//! Two threads, one ring of 64 KiB, a million frames of mixed sizes: every
//! frame arrives intact and in order, nothing is lost or overwritten, both
//! when the reader keeps parking (a slow producer) and when the ring keeps
//! filling up (a slow reader).

use std::thread;
use std::time::{Duration, Instant};

use daemoneye_lib::ring::layout::MIN_CAPACITY;
use daemoneye_lib::ring::{Consumer, Producer, RingConfig, TryClaimError, WaitStrategy, pair};

const FRAMES: u64 = 1_000_000;
const MAX_FRAME: usize = 4096;
/// A generous bound for the whole run: a hang fails instead of blocking CI.
const RUN_DEADLINE: Duration = Duration::from_secs(240);

/// Bytes that every frame's payload is a window of.
fn pattern() -> Vec<u8> {
    (0..MAX_FRAME + 256).map(|i| (i * 31 + 7) as u8).collect()
}

/// Mixed sizes: mostly small, some medium, now and then the largest, and
/// some empty frames.
fn size_of_frame(i: u64) -> usize {
    match i % 1000 {
        0 => MAX_FRAME,
        1 => 0,
        n if n % 50 == 0 => 1000 + (i as usize * 13) % 2000,
        _ => (i as usize * 7919) % 200,
    }
}

/// The payload of frame `i`: its index (when it has room) and then a
/// window of the pattern that depends on `i`.
fn fill(pattern: &[u8], i: u64, buf: &mut [u8]) {
    let shift = (i % 251) as usize;
    let len = buf.len();
    buf.copy_from_slice(&pattern[shift..shift + len]);
    if len >= 8 {
        buf[..8].copy_from_slice(&i.to_le_bytes());
    }
}

fn check(pattern: &[u8], i: u64, bytes: &[u8], flags: u16) {
    assert_eq!(bytes.len(), size_of_frame(i), "frame {i}: wrong length");
    assert_eq!(flags, i as u16, "frame {i}: wrong flags");
    let shift = (i % 251) as usize;
    if bytes.len() >= 8 {
        let index = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(index, i, "frame {i}: got frame {index}");
        assert_eq!(
            &bytes[8..],
            &pattern[shift + 8..shift + bytes.len()],
            "frame {i}: bytes"
        );
    } else {
        assert_eq!(
            bytes,
            &pattern[shift..shift + bytes.len()],
            "frame {i}: bytes"
        );
    }
}

/// Writes every frame, pausing `pause` after every `pause_every` frames;
/// returns how many times `try_claim` found the ring full.
fn produce(mut producer: Producer, pause_every: u64, pause: Duration) -> u64 {
    let pattern = pattern();
    let deadline = Instant::now() + RUN_DEADLINE;
    let mut full = 0;
    for i in 0..FRAMES {
        let len = size_of_frame(i);
        let mut claim = match producer.try_claim(len) {
            Ok(claim) => claim,
            Err(TryClaimError::Full) => {
                full += 1;
                producer.claim(len, deadline).expect("blocking claim")
            }
            Err(other) => panic!("claim {i}: {other:?}"),
        };
        fill(&pattern, i, &mut claim);
        claim.commit_with_flags(len, i as u16);
        if pause_every != 0 && i % pause_every == 0 {
            thread::sleep(pause);
        }
    }
    full
}

/// Reads every frame in batches of up to `batch`, pausing `pause` after
/// every `pause_every` batches; then expects the ring closed.
fn consume(mut consumer: Consumer, batch: usize, pause_every: u64, pause: Duration) {
    let pattern = pattern();
    let deadline = Instant::now() + RUN_DEADLINE;
    let mut next = 0u64;
    let mut batches = 0u64;
    while next < FRAMES {
        consumer
            .read_batch(batch, deadline, |frame| {
                check(&pattern, next, frame.bytes(), frame.flags());
                next += 1;
            })
            .unwrap_or_else(|err| panic!("read after frame {next}: {err:?}"));
        batches += 1;
        if pause_every != 0 && batches % pause_every == 0 {
            thread::sleep(pause);
        }
    }
    let end = consumer.read(deadline, |_| ());
    assert!(
        matches!(end, Err(daemoneye_lib::ring::RingError::Closed)),
        "expected Closed after the last frame, got {end:?}"
    );
    assert_eq!(next, FRAMES);
}

fn run(config: RingConfig, consumer_wait: WaitStrategy, slow_producer: bool) -> u64 {
    let (producer, fds) = Producer::create(&config).unwrap();
    let consumer = Consumer::attach(fds, consumer_wait).unwrap();
    let reader = thread::spawn(move || {
        if slow_producer {
            consume(consumer, 64, 0, Duration::ZERO)
        } else {
            consume(consumer, 8, 2000, Duration::from_millis(1))
        }
    });
    let full = if slow_producer {
        produce(producer, 2000, Duration::from_micros(500))
    } else {
        produce(producer, 0, Duration::ZERO)
    };
    // The producer was dropped at the end of `produce`: the reader drains,
    // then sees Closed.
    reader.join().expect("reader thread");
    full
}

#[test]
fn parked_reader_and_slow_producer() {
    let config = RingConfig::new(MIN_CAPACITY).with_max_frame(MAX_FRAME);
    // The reader parks at once whenever the ring is empty.
    let park = WaitStrategy::Park {
        timeout: Duration::from_millis(100),
    };
    run(config, park, true);
}

#[test]
fn full_ring_and_slow_reader() {
    let park = WaitStrategy::Park {
        timeout: Duration::from_millis(100),
    };
    let config = RingConfig::new(MIN_CAPACITY)
        .with_max_frame(MAX_FRAME)
        .with_wait(park);
    let full = run(config, WaitStrategy::default(), false);
    assert!(full > 0, "the ring never filled up");
}

#[test]
fn spinning_ends_move_everything() {
    let config = RingConfig::new(MIN_CAPACITY)
        .with_max_frame(MAX_FRAME)
        .with_wait(WaitStrategy::BusySpin);
    let (producer, consumer) = pair(&config).unwrap();
    let reader = thread::spawn(move || consume(consumer, 32, 0, Duration::ZERO));
    produce(producer, 0, Duration::ZERO);
    reader.join().expect("reader thread");
}
