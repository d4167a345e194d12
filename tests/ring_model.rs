//! Model test: random sequences of claims (committed, shortened, abandoned)
//! and reads (single, batched) against a `VecDeque` of the frames that
//! should be in flight. Bytes, flags and order must match exactly, through
//! many wraps of a 64 KiB ring.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use daemoneye_lib::ring::layout::{MIN_CAPACITY, max_frame_limit};
use daemoneye_lib::ring::{
    Consumer, Producer, RingConfig, RingError, TryClaimError, TryReadError, pair,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Claim `len` bytes, fill them, then commit `len - shorten` bytes (or
    /// abandon the claim).
    Write {
        len: usize,
        shorten: usize,
        flags: u16,
        abandon: bool,
    },
    /// `try_read` one frame.
    TryRead,
    /// `try_read_batch` of up to `max` frames.
    TryBatch { max: usize },
    /// `read_batch` with an already-passed deadline.
    Batch { max: usize },
    /// Blocking `read` with a short deadline.
    Read,
}

fn op(max_frame: usize) -> impl Strategy<Value = Op> {
    let len = prop_oneof![0..=64usize, 0..=max_frame, Just(max_frame)];
    prop_oneof![
        6 => (len, 0..=16usize, any::<u16>(), prop::bool::weighted(0.1)).prop_map(
            |(len, shorten, flags, abandon)| Op::Write {
                len,
                shorten: shorten.min(len),
                flags,
                abandon,
            }
        ),
        2 => Just(Op::TryRead),
        1 => (1..8usize).prop_map(|max| Op::TryBatch { max }),
        1 => (1..8usize).prop_map(|max| Op::Batch { max }),
        1 => Just(Op::Read),
    ]
}

/// Distinct content for the `n`th write.
fn payload(n: u64, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Harness {
    producer: Producer,
    consumer: Consumer,
    model: VecDeque<(Vec<u8>, u16)>,
    writes: u64,
}

impl Harness {
    fn write(&mut self, len: usize, shorten: usize, flags: u16, abandon: bool) {
        let bytes = payload(self.writes, len);
        self.writes += 1;
        match self.producer.try_claim(len) {
            Ok(mut claim) => {
                assert_eq!(claim.len(), len);
                claim.copy_from_slice(&bytes);
                if abandon {
                    return;
                }
                let used = len - shorten;
                claim.commit_with_flags(used, flags);
                self.model.push_back((bytes[..used].to_vec(), flags));
            }
            Err(TryClaimError::Full) => {
                // An empty ring always has room for the largest frame,
                // whatever padding an abandoned claim left.
                assert!(!self.model.is_empty(), "Full with nothing unread");
            }
            Err(other) => panic!("unexpected claim error {other:?}"),
        }
    }

    fn check_one(&mut self, got: (Vec<u8>, u16)) {
        let expected = self
            .model
            .pop_front()
            .expect("read a frame that was never written");
        assert_eq!(got.1, expected.1, "flags differ");
        assert_eq!(got.0, expected.0, "bytes differ");
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Write {
                len,
                shorten,
                flags,
                abandon,
            } => self.write(len, shorten, flags, abandon),
            Op::TryRead => match self.consumer.try_read(|f| (f.bytes().to_vec(), f.flags())) {
                Ok(got) => self.check_one(got),
                Err(TryReadError::Empty) => assert!(self.model.is_empty(), "Empty with frames"),
                Err(other) => panic!("unexpected read error {other:?}"),
            },
            Op::TryBatch { max } => {
                let mut got = Vec::new();
                match self
                    .consumer
                    .try_read_batch(max, |f| got.push((f.bytes().to_vec(), f.flags())))
                {
                    Ok(n) => {
                        assert_eq!(n, got.len());
                        assert_eq!(n, max.min(self.model.len()));
                    }
                    Err(TryReadError::Empty) => assert!(self.model.is_empty()),
                    Err(other) => panic!("unexpected batch error {other:?}"),
                }
                got.into_iter().for_each(|g| self.check_one(g));
            }
            Op::Batch { max } => {
                let mut got = Vec::new();
                let deadline = Instant::now();
                match self
                    .consumer
                    .read_batch(max, deadline, |f| got.push((f.bytes().to_vec(), f.flags())))
                {
                    Ok(n) => assert_eq!(n, max.min(self.model.len())),
                    Err(RingError::TimedOut) => assert!(self.model.is_empty()),
                    Err(other) => panic!("unexpected batch error {other:?}"),
                }
                got.into_iter().for_each(|g| self.check_one(g));
            }
            Op::Read => {
                let deadline = Instant::now() + Duration::from_millis(1);
                match self
                    .consumer
                    .read(deadline, |f| (f.bytes().to_vec(), f.flags()))
                {
                    Ok(got) => self.check_one(got),
                    Err(RingError::TimedOut) => assert!(self.model.is_empty()),
                    Err(other) => panic!("unexpected read error {other:?}"),
                }
            }
        }
        assert!(self.consumer.position() <= self.producer.position());
    }

    /// Reads everything left; it must be exactly the model.
    fn drain(&mut self) {
        while !self.model.is_empty() {
            let got = self
                .consumer
                .try_read(|f| (f.bytes().to_vec(), f.flags()))
                .unwrap();
            self.check_one(got);
        }
        assert!(matches!(
            self.consumer.try_read(|_| ()),
            Err(TryReadError::Empty)
        ));
        assert_eq!(self.consumer.position(), self.producer.position());
    }
}

fn max_frames() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(512),
        Just(MIN_CAPACITY / 8),
        Just(max_frame_limit(MIN_CAPACITY))
    ]
}

fn ring_and_ops() -> impl Strategy<Value = (usize, Vec<Op>)> {
    max_frames().prop_flat_map(|max| (Just(max), prop::collection::vec(op(max), 1..1500)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn ring_matches_a_queue((max_frame, ops) in ring_and_ops()) {
        let config = RingConfig::new(MIN_CAPACITY).with_max_frame(max_frame);
        let (producer, consumer) = pair(&config).unwrap();
        let mut harness = Harness { producer, consumer, model: VecDeque::new(), writes: 0 };
        for op in ops {
            harness.apply(op);
        }
        harness.drain();
    }
}

/// A fixed long run that is sure to wrap the ring many times with frames of
/// every size class, including the largest.
#[test]
fn long_run_wraps_many_times() {
    let max_frame = max_frame_limit(MIN_CAPACITY);
    let config = RingConfig::new(MIN_CAPACITY).with_max_frame(max_frame);
    let (producer, consumer) = pair(&config).unwrap();
    let mut harness = Harness {
        producer,
        consumer,
        model: VecDeque::new(),
        writes: 0,
    };
    let sizes = [0, 1, 7, 8, 9, 100, 4095, 20_000, max_frame - 1, max_frame];
    for i in 0..3000usize {
        let len = sizes[i % sizes.len()];
        let shorten = (i % 3).min(len);
        harness.apply(Op::Write {
            len,
            shorten,
            flags: i as u16,
            abandon: i % 17 == 0,
        });
        if i % 2 == 0 {
            harness.apply(Op::TryBatch { max: 3 });
        }
    }
    harness.drain();
    assert!(harness.producer.position() > 200 * MIN_CAPACITY as u64);
}
