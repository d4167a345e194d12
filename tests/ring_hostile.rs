//! Hostile memory: arbitrary bytes written over a live ring's shared memory
//! make the side reading it return errors, never panic, hang or read out of
//! bounds.
//!
//! - The consumer faces a hostile producer. The producer's real region is
//!   sealed against writes, so the test copies a live ring (made by a real
//!   producer, mid-stream, wrapped, with padding) into memfds of its own
//!   that it can write with `pwrite`, attaches a consumer to the copy, and
//!   scribbles on both regions between and during reads.
//! - The producer faces a hostile consumer: the test writes the real
//!   consumer region (which both sides may write) between and during the
//!   producer's claims.
//! - The consumer's descriptor of the producer region cannot be mapped
//!   writable.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use daemoneye_lib::ring::layout::{
    CONSUMER_ATTACHED_OFFSET, CONSUMER_CLOSED_OFFSET, CONSUMER_POSITION_OFFSET, CONTROL_LEN,
    DATA_OFFSET, MIN_CAPACITY, PRODUCER_CLOSED_OFFSET, PRODUCER_POSITION_OFFSET, data_region_len,
};
use daemoneye_lib::ring::{
    Consumer, ConsumerFds, CorruptKind, FrameHeader, Position, Producer, RingConfig, RingError,
    TryClaimError, TryReadError, WaitStrategy,
};
use daemoneye_lib::sys::memfd::{self, Access, Mapping, Seals};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestCaseError, TestRng, TestRunner};

const CAP: usize = MIN_CAPACITY;
const MAX_FRAME: usize = 3000;
const SPIN: WaitStrategy = WaitStrategy::BusySpin;

fn config() -> RingConfig {
    RingConfig::new(CAP)
        .with_max_frame(MAX_FRAME)
        .with_wait(SPIN)
}

/// Copies the whole file behind `from` into a new memfd sealed only
/// against size changes (so this test can still write it).
fn copy_region(from: &OwnedFd, len: usize) -> (OwnedFd, File) {
    let mut bytes = vec![0u8; len];
    File::from(from.try_clone().unwrap())
        .read_exact_at(&mut bytes, 0)
        .unwrap();
    let fd = memfd::create("hostile-copy", len as u64).unwrap();
    memfd::add_seals(&fd, Seals::SHRINK | Seals::GROW).unwrap();
    let file = File::from(fd.try_clone().unwrap());
    file.write_all_at(&bytes, 0).unwrap();
    (fd, file)
}

/// A real ring, run by a real producer and consumer until it has wrapped
/// several times and holds unread frames (one after a padding frame), then
/// copied into writable memfds. Returns a consumer attached to the copy
/// and the files to scribble on.
fn live_copy() -> (Consumer, File, File) {
    let (mut producer, fds) = Producer::create(&config()).unwrap();
    let data = fds.data.try_clone().unwrap();
    let control = fds.control.try_clone().unwrap();
    let mut consumer = Consumer::attach(fds, SPIN).unwrap();
    for i in 0..400usize {
        let len = (i * 997) % MAX_FRAME;
        producer.try_write(&vec![i as u8; len], i as u16).unwrap();
        if i < 390 {
            consumer.try_read(|_| ()).unwrap();
        }
    }
    let (data_copy, data_file) = copy_region(&data, data_region_len(CAP));
    let (control_copy, control_file) = copy_region(&control, CONTROL_LEN);
    // The real consumer holds the attach word; free it in the copy.
    control_file
        .write_all_at(&0u32.to_ne_bytes(), CONSUMER_ATTACHED_OFFSET as u64)
        .unwrap();
    let copy = Consumer::attach(
        ConsumerFds {
            data: data_copy,
            control: control_copy,
        },
        SPIN,
    )
    .expect("the copy of a live ring is valid");
    (copy, data_file, control_file)
}

/// What the hostile producer does to the consumer, between reads.
#[derive(Clone, Debug)]
enum Attack {
    /// Arbitrary bytes at an arbitrary offset of the producer region.
    Bytes {
        at: usize,
        bytes: Vec<u8>,
    },
    /// An arbitrary word as the producer position.
    Position(u64),
    /// The producer position moved by a small amount from the consumer's.
    PositionNear(i16),
    /// An arbitrary word as the header of the consumer's next frame.
    NextHeader(u64),
    /// Arbitrary bytes over the consumer region (the producer maps it too).
    Control {
        at: usize,
        bytes: Vec<u8>,
    },
    TryRead,
    TryBatch(usize),
    Read,
}

fn attack() -> impl Strategy<Value = Attack> {
    let region = data_region_len(CAP);
    prop_oneof![
        2 => (0..region, prop::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(at, bytes)| Attack::Bytes { at, bytes }),
        2 => (0..DATA_OFFSET, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Attack::Bytes { at, bytes }),
        1 => any::<u64>().prop_map(Attack::Position),
        2 => any::<i16>().prop_map(Attack::PositionNear),
        2 => any::<u64>().prop_map(Attack::NextHeader),
        // Well-formed header words with lying lengths.
        1 => any::<u32>().prop_map(|len| Attack::NextHeader(FrameHeader::data(len, 0).encode())),
        1 => any::<u32>().prop_map(|len| Attack::NextHeader(FrameHeader::padding(len).encode())),
        1 => (0..CONTROL_LEN, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Attack::Control { at, bytes }),
        3 => Just(Attack::TryRead),
        2 => (1..10usize).prop_map(Attack::TryBatch),
        2 => Just(Attack::Read),
    ]
}

/// A frame handed out must respect the ring's bounds.
fn check_frame(len: usize) {
    assert!(len <= MAX_FRAME, "frame of {len} bytes handed out");
}

/// How a read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Frames,
    Nothing,
    Corrupt(CorruptKind),
}

fn read_once(consumer: &mut Consumer, attack: &Attack) -> Outcome {
    let before = consumer.position();
    let outcome = match attack {
        Attack::TryRead => match consumer.try_read(|f| check_frame(f.bytes().len())) {
            Ok(()) => Outcome::Frames,
            Err(TryReadError::Empty | TryReadError::Closed | TryReadError::PeerGone) => {
                Outcome::Nothing
            }
            Err(TryReadError::Corrupt(kind)) => Outcome::Corrupt(kind),
        },
        Attack::TryBatch(max) => {
            match consumer.try_read_batch(*max, |f| check_frame(f.bytes().len())) {
                Ok(n) => {
                    assert!(n <= *max);
                    Outcome::Frames
                }
                Err(TryReadError::Empty | TryReadError::Closed | TryReadError::PeerGone) => {
                    Outcome::Nothing
                }
                Err(TryReadError::Corrupt(kind)) => Outcome::Corrupt(kind),
            }
        }
        Attack::Read => match consumer.read(Instant::now(), |f| check_frame(f.bytes().len())) {
            Ok(()) => Outcome::Frames,
            Err(RingError::TimedOut | RingError::Closed) => Outcome::Nothing,
            Err(RingError::Corrupt(kind)) => Outcome::Corrupt(kind),
            Err(other) => panic!("unexpected {other:?}"),
        },
        _ => unreachable!(),
    };
    assert!(
        consumer.position() >= before,
        "consumer position went backwards"
    );
    outcome
}

/// Runs `test` on 256 cases of `strategy` drawn from a fixed seed (so the
/// kinds of lie the cases reach are the same every run), failing the test
/// with the shrunk case if one fails.
fn run_cases<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    if let Err(err) = TestRunner::new_with_rng(config, rng).run(&strategy, test) {
        panic!("{err}");
    }
}

/// A kind of lie by name (its variant), to count which kinds were caught.
fn kind_name(kind: &CorruptKind) -> String {
    format!("{kind:?}")
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

/// Asserts that every kind in `expected` was among those `seen`.
fn assert_caught(seen: &BTreeSet<String>, expected: &[&str]) {
    let missing: Vec<_> = expected
        .iter()
        .filter(|kind| !seen.contains(**kind))
        .collect();
    assert!(
        missing.is_empty(),
        "never caught {missing:?}; caught {seen:?}"
    );
}

/// Writes a closed flag back to open after a scribble: a scribbled flag
/// would (rightly) end every later call with `Closed`, and the lies after
/// it would go untested.
fn reopen(file: &File, offset: usize) {
    file.write_all_at(&0u32.to_ne_bytes(), offset as u64)
        .unwrap();
}

#[test]
fn consumer_survives_a_hostile_producer() {
    let caught = RefCell::new(BTreeSet::new());
    run_cases(prop::collection::vec(attack(), 1..120), |attacks| {
        let (mut consumer, data, control) = live_copy();
        let read = |consumer: &mut Consumer, attack: &Attack| {
            if let Outcome::Corrupt(kind) = read_once(consumer, attack) {
                caught.borrow_mut().insert(kind_name(&kind));
            }
        };
        for attack in &attacks {
            match attack {
                Attack::Bytes { at, bytes } => {
                    let len = bytes.len().min(data_region_len(CAP) - at);
                    data.write_all_at(&bytes[..len], *at as u64).unwrap();
                    reopen(&data, PRODUCER_CLOSED_OFFSET);
                }
                Attack::Position(value) => {
                    data.write_all_at(&value.to_ne_bytes(), PRODUCER_POSITION_OFFSET as u64)
                        .unwrap();
                }
                Attack::PositionNear(delta) => {
                    let value = consumer
                        .position()
                        .wrapping_add_signed(i64::from(*delta) * 8);
                    data.write_all_at(&value.to_ne_bytes(), PRODUCER_POSITION_OFFSET as u64)
                        .unwrap();
                }
                Attack::NextHeader(word) => {
                    let at = DATA_OFFSET as u64 + (consumer.position() & (CAP as u64 - 1));
                    data.write_all_at(&word.to_ne_bytes(), at).unwrap();
                }
                Attack::Control { at, bytes } => {
                    let len = bytes.len().min(CONTROL_LEN - at);
                    control.write_all_at(&bytes[..len], *at as u64).unwrap();
                    reopen(&control, CONSUMER_CLOSED_OFFSET);
                }
                other => read(&mut consumer, other),
            }
        }
        // After all that, reads still end in a verdict, not a panic.
        read(&mut consumer, &Attack::TryBatch(1000));
        Ok(())
    });
    assert_caught(
        &caught.borrow(),
        &[
            "BadPadding",
            "FrameTooLong",
            "FrameUnpublished",
            "FrameKind",
            "FrameReserved",
            "PositionBackwards",
            "PositionMisaligned",
            "ProducerOverrun",
        ],
    );
}

#[test]
fn consumer_survives_concurrent_scribbling() {
    let (mut consumer, data, control) = live_copy();
    let scribbler = Scribbler::start(move |rng| {
        let region = data_region_len(CAP) as u64;
        let value = rng.next();
        match value % 4 {
            0 => data.write_all_at(&value.to_ne_bytes(), rng.next() % (region - 8)),
            1 => data.write_all_at(&value.to_ne_bytes(), PRODUCER_POSITION_OFFSET as u64),
            2 => {
                let at = DATA_OFFSET as u64 + ((rng.next() % CAP as u64) & !7);
                data.write_all_at(&(value >> 8).to_ne_bytes(), at)
            }
            // Anywhere before the close line: a scribbled closed
            // flag would (rightly) end every read with Closed.
            _ => control.write_all_at(
                &value.to_ne_bytes(),
                rng.next() % (CONSUMER_CLOSED_OFFSET as u64 - 8),
            ),
        }
        .unwrap();
    });
    let attacks = [Attack::TryRead, Attack::TryBatch(7), Attack::Read];
    let mut run = Run::new("consumer", &scribbler);
    while run.keep_going() {
        let corrupt = read_once(&mut consumer, &attacks[run.ops % attacks.len()]);
        let corrupt = matches!(corrupt, Outcome::Corrupt(_));
        run.done_one(corrupt);
    }
}

/// What the hostile consumer does to the producer, between claims.
#[derive(Clone, Debug)]
enum Scribble {
    /// Arbitrary bytes at an arbitrary offset of the consumer region.
    Bytes { at: usize, bytes: Vec<u8> },
    /// An arbitrary consumer position.
    Position(u64),
    /// A consumer position a little away from the producer's.
    PositionNear(i16),
    /// Claim, fill and commit (or abandon) a frame.
    Claim { len: usize, abandon: bool },
    /// A blocking write with an already-passed deadline.
    Write(usize),
}

fn scribble() -> impl Strategy<Value = Scribble> {
    prop_oneof![
        2 => (0..CONTROL_LEN, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Scribble::Bytes { at, bytes }),
        1 => any::<u64>().prop_map(Scribble::Position),
        2 => any::<i16>().prop_map(Scribble::PositionNear),
        4 => (0..=MAX_FRAME, prop::bool::weighted(0.2))
            .prop_map(|(len, abandon)| Scribble::Claim { len, abandon }),
        2 => (0..=MAX_FRAME).prop_map(Scribble::Write),
    ]
}

/// Returns the lie the producer reported in the consumer region, if any.
fn claim_once(producer: &mut Producer, op: &Scribble) -> Option<CorruptKind> {
    let before = producer.position();
    let corrupt = match op {
        Scribble::Claim { len, abandon } => match producer.try_claim(*len) {
            Ok(mut claim) => {
                claim.fill(0xAB);
                if !abandon {
                    claim.commit(*len);
                }
                None
            }
            Err(TryClaimError::Full | TryClaimError::Closed) => None,
            Err(TryClaimError::Corrupt(kind)) => Some(kind),
            Err(other) => panic!("unexpected {other:?}"),
        },
        Scribble::Write(len) => match producer.write(&vec![1; *len], 3, Instant::now()) {
            Ok(()) | Err(RingError::TimedOut | RingError::Closed) => None,
            Err(RingError::Corrupt(kind)) => Some(kind),
            Err(other) => panic!("unexpected {other:?}"),
        },
        _ => unreachable!(),
    };
    assert!(
        producer.position() >= before,
        "producer position went backwards"
    );
    corrupt
}

#[test]
fn producer_survives_a_hostile_consumer() {
    let caught = RefCell::new(BTreeSet::new());
    run_cases(prop::collection::vec(scribble(), 1..200), |ops| {
        let (mut producer, fds) = Producer::create(&config()).unwrap();
        let control = File::from(fds.control);
        for op in &ops {
            match op {
                Scribble::Bytes { at, bytes } => {
                    let len = bytes.len().min(CONTROL_LEN - at);
                    control.write_all_at(&bytes[..len], *at as u64).unwrap();
                    reopen(&control, CONSUMER_CLOSED_OFFSET);
                }
                Scribble::Position(value) => {
                    control
                        .write_all_at(&value.to_ne_bytes(), CONSUMER_POSITION_OFFSET as u64)
                        .unwrap();
                }
                Scribble::PositionNear(delta) => {
                    let value = producer
                        .position()
                        .wrapping_add_signed(i64::from(*delta) * 8);
                    control
                        .write_all_at(&value.to_ne_bytes(), CONSUMER_POSITION_OFFSET as u64)
                        .unwrap();
                }
                claim => {
                    if let Some(kind) = claim_once(&mut producer, claim) {
                        caught.borrow_mut().insert(kind_name(&kind));
                    }
                }
            }
        }
        Ok(())
    });
    assert_caught(
        &caught.borrow(),
        &["PositionBackwards", "PositionMisaligned", "ConsumerOverrun"],
    );
}

#[test]
fn producer_survives_concurrent_scribbling() {
    let config = config().with_wait(WaitStrategy::Park {
        timeout: Duration::from_millis(1),
    });
    let (mut producer, fds) = Producer::create(&config).unwrap();
    let control = File::from(fds.control);
    let position = producer.position();
    let scribbler = Scribbler::start(move |rng| {
        let value = rng.next();
        let at = match value % 3 {
            0 => CONSUMER_POSITION_OFFSET as u64,
            // Anywhere before the close line: a scribbled closed
            // flag would (rightly) end every claim with Closed.
            _ => rng.next() % (CONSUMER_CLOSED_OFFSET as u64 - 8),
        };
        let value = if value % 5 == 0 {
            position + ((value % 4096) & !7)
        } else {
            value
        };
        control.write_all_at(&value.to_ne_bytes(), at).unwrap();
    });
    let ops = [
        Scribble::Claim {
            len: 100,
            abandon: false,
        },
        Scribble::Claim {
            len: MAX_FRAME,
            abandon: true,
        },
        Scribble::Write(700),
    ];
    let mut run = Run::new("producer", &scribbler);
    while run.keep_going() {
        let corrupt = claim_once(&mut producer, &ops[run.ops % ops.len()]).is_some();
        run.done_one(corrupt);
    }
}

#[test]
fn consumer_descriptor_is_read_only() {
    let (_producer, fds) = Producer::create(&config()).unwrap();
    let len = data_region_len(CAP);
    let err = Mapping::map(&fds.data, len, Access::ReadWrite).expect_err("mapped writable");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(
        File::from(fds.data.try_clone().unwrap())
            .write_at(b"x", 0)
            .is_err()
    );
    // The consumer region, in contrast, is the consumer's to write.
    Mapping::map(&fds.control, CONTROL_LEN, Access::ReadWrite).unwrap();
    // Both are sealed against changes of size.
    for fd in [&fds.data, &fds.control] {
        assert!(
            memfd::seals(fd)
                .unwrap()
                .contains(Seals::SHRINK | Seals::GROW | Seals::SEAL)
        );
    }
    assert!(
        memfd::seals(&fds.data)
            .unwrap()
            .contains(Seals::FUTURE_WRITE)
    );
}

/// A ring with a valid header (a real producer's) and positions and frame
/// header words set by hand, attached by a consumer.
fn hand_ring(head: u64, tail: u64, words: &[(u64, u64)]) -> Result<(Consumer, File), RingError> {
    let (_producer, fds) = Producer::create(&config()).unwrap();
    let (data, data_file) = copy_region(&fds.data, data_region_len(CAP));
    let (control, control_file) = copy_region(&fds.control, CONTROL_LEN);
    data_file
        .write_all_at(&tail.to_ne_bytes(), PRODUCER_POSITION_OFFSET as u64)
        .unwrap();
    control_file
        .write_all_at(&head.to_ne_bytes(), CONSUMER_POSITION_OFFSET as u64)
        .unwrap();
    for (offset, word) in words {
        data_file
            .write_all_at(&word.to_ne_bytes(), DATA_OFFSET as u64 + offset)
            .unwrap();
    }
    let consumer = Consumer::attach(ConsumerFds { data, control }, SPIN)?;
    Ok((consumer, data_file))
}

fn read_error(head: u64, tail: u64, words: &[(u64, u64)]) -> CorruptKind {
    let (mut consumer, _) = hand_ring(head, tail, words).expect("attach");
    match consumer.try_read(|f| f.len()) {
        Err(TryReadError::Corrupt(kind)) => kind,
        other => panic!("expected a corrupt ring, got {other:?}"),
    }
}

fn attach_error(head: u64, tail: u64) -> CorruptKind {
    match hand_ring(head, tail, &[]) {
        Err(RingError::Corrupt(kind)) => kind,
        other => panic!("expected a corrupt ring, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn each_lie_is_named() {
    let cap = CAP as u64;
    let data = |len: u32| FrameHeader::data(len, 0).encode();
    let padding = |len: u32| FrameHeader::padding(len).encode();

    // A frame longer than the largest frame.
    let kind = read_error(0, 4096, &[(0, data(MAX_FRAME as u32 + 1))]);
    assert!(
        matches!(
            kind,
            CorruptKind::FrameTooLong {
                len: 3001,
                max: 3000,
                ..
            }
        ),
        "{kind:?}"
    );
    // A producer position past a header word that is still empty.
    let kind = read_error(0, 64, &[]);
    assert!(
        matches!(
            kind,
            CorruptKind::FrameUnpublished {
                position: 0,
                published: 64,
            }
        ),
        "{kind:?}"
    );
    // A frame across the end of the data area.
    let kind = read_error(cap - 16, cap + 200, &[(cap - 16, data(100))]);
    assert!(
        matches!(kind, CorruptKind::FrameCrossesEnd { size: 112, .. }),
        "{kind:?}"
    );
    // Padding that stops short of the end, and padding at offset 0.
    let kind = read_error(cap - 160, cap + 200, &[(cap - 160, padding(100))]);
    assert!(
        matches!(kind, CorruptKind::BadPadding { len: 100, .. }),
        "{kind:?}"
    );
    let kind = read_error(cap, cap + 64, &[(0, padding(cap as u32 - 8))]);
    assert!(matches!(kind, CorruptKind::BadPadding { .. }), "{kind:?}");
    // Padding to the end, then an empty word at offset 0 that the producer
    // position says is published.
    let kind = read_error(cap - 160, cap + 64, &[(cap - 160, padding(152))]);
    assert!(
        matches!(
            kind,
            CorruptKind::FrameUnpublished { position, published }
                if position == cap && published == cap + 64
        ),
        "{kind:?}"
    );
    // An unknown kind, reserved bits.
    let kind = read_error(0, 64, &[(0, 3 << 48)]);
    assert!(
        matches!(kind, CorruptKind::FrameKind { word } if word == 3 << 48),
        "{kind:?}"
    );
    let kind = read_error(0, 64, &[(0, data(1) | 1 << 63)]);
    assert!(
        matches!(kind, CorruptKind::FrameReserved { .. }),
        "{kind:?}"
    );

    // Positions checked when attaching.
    let kind = attach_error(0, cap + 8);
    assert!(matches!(kind, CorruptKind::ProducerOverrun { producer, .. } if producer == cap + 8));
    let kind = attach_error(0, 12);
    assert!(matches!(
        kind,
        CorruptKind::PositionMisaligned {
            position: Position::Producer,
            ..
        }
    ));
    let kind = attach_error(64, 0);
    assert!(
        matches!(kind, CorruptKind::PositionBackwards { .. }),
        "{kind:?}"
    );
    let kind = attach_error(4, 64);
    assert!(matches!(
        kind,
        CorruptKind::PositionMisaligned {
            position: Position::Consumer,
            ..
        }
    ));
    // A consumer position near 2^64: counting frames on from it would
    // overflow (positions and frame sizes are added unchecked).
    let kind = attach_error(u64::MAX - 7, u64::MAX - 7);
    assert!(
        matches!(
            kind,
            CorruptKind::PositionTooLarge {
                position: Position::Consumer,
                ..
            }
        ),
        "{kind:?}"
    );
    // The limit itself, 2^63, is accepted; the next aligned position is not.
    let (mut consumer, _file) = hand_ring(1 << 63, 1 << 63, &[]).expect("attach at 2^63");
    assert!(matches!(
        consumer.try_read(|_| ()),
        Err(TryReadError::Empty)
    ));
    let kind = attach_error((1 << 63) + 8, (1 << 63) + 8);
    assert!(
        matches!(kind, CorruptKind::PositionTooLarge { value, .. } if value == (1 << 63) + 8),
        "{kind:?}"
    );

    // A producer position that moves backwards after frames were read.
    let empties: Vec<_> = (0..8).map(|i| (i * 8, data(0))).collect();
    let (mut consumer, file) = hand_ring(0, 64, &empties).unwrap();
    assert_eq!(
        consumer
            .try_read_batch(100, |f| assert!(f.is_empty()))
            .unwrap(),
        8
    );
    file.write_all_at(&32u64.to_ne_bytes(), PRODUCER_POSITION_OFFSET as u64)
        .unwrap();
    assert!(matches!(
        consumer.try_read(|_| ()),
        Err(TryReadError::Corrupt(CorruptKind::PositionBackwards {
            was: 64,
            now: 32,
            ..
        }))
    ));
}

#[test]
fn a_batch_ends_after_one_capacity_of_replayed_frames() {
    // Every header word of the data area a valid empty frame: a walk from
    // frame to frame never meets an empty word and would go round the ring
    // for ever, replaying. A batch may not span more than one capacity.
    let cap = CAP as u64;
    let words: Vec<_> = (0..cap / 8)
        .map(|i| (i * 8, FrameHeader::data(0, 0).encode()))
        .collect();
    let (mut consumer, _file) = hand_ring(0, cap, &words).unwrap();
    let (done, outcome) = std::sync::mpsc::channel();
    // On its own thread, so a walk that never ends fails the test below
    // rather than hanging it.
    thread::spawn(move || {
        let mut seen = 0u64;
        let result = consumer.try_read_batch(usize::MAX, |_| seen += 1);
        let _ = done.send((seen, result, consumer.position()));
    });
    let (seen, result, position) = outcome
        .recv_timeout(Duration::from_secs(20))
        .expect("the batch did not end");
    assert_eq!(seen, cap / 8, "one capacity of frames, then the lie");
    assert!(
        matches!(
            result,
            Err(TryReadError::Corrupt(CorruptKind::ProducerOverrun { producer, consumer: 0, .. }))
                if producer == cap + 8
        ),
        "{result:?}"
    );
    // What was handed out is released.
    assert_eq!(position, cap);
}

#[test]
fn a_valid_hand_made_ring_reads() {
    // The same helper with honest values: a frame, padding to the end, a
    // frame at the start. (So the lies above fail for their own reason.)
    let cap = CAP as u64;
    let words = [
        (cap - 64, FrameHeader::data(10, 7).encode()),
        (cap - 40, FrameHeader::padding(32).encode()),
        (0, FrameHeader::data(0, 9).encode()),
    ];
    let (mut consumer, _) = hand_ring(cap - 64, cap + 8, &words).unwrap();
    let mut seen = Vec::new();
    consumer
        .try_read_batch(10, |f| seen.push((f.len(), f.flags())))
        .unwrap();
    assert_eq!(seen, [(10, 7), (0, 9)]);
    assert_eq!(consumer.position(), cap + 8);
}

/// A thread that scribbles (one call of its closure per write) until it is
/// dropped, counting its writes. Dropping it, also when the test fails,
/// stops and joins the thread.
struct Scribbler {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Scribbler {
    fn start(mut write: impl FnMut(&mut XorShift) + Send + 'static) -> Scribbler {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, writes) = (Arc::clone(&stop), Arc::clone(&writes));
            thread::spawn(move || {
                let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
                // Relaxed: a stop request; nothing else is shared.
                while !stop.load(Ordering::Relaxed) {
                    write(&mut rng);
                    // Relaxed: a statistic.
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Scribbler {
            stop,
            writes,
            thread: Some(thread),
        }
    }

    fn writes(&self) -> u64 {
        // Relaxed: a statistic.
        self.writes.load(Ordering::Relaxed)
    }
}

impl Drop for Scribbler {
    fn drop(&mut self) {
        // Relaxed: a stop request; the join orders the rest.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let joined = thread.join();
            if !thread::panicking() {
                joined.expect("the scribbler panicked");
            }
        }
    }
}

/// The side under test's progress in a concurrent test. It goes on until it
/// has done [`MIN_OPS`] operations, the scribbler [`MIN_WRITES`] writes, and
/// at least one operation saw a lie: no time budget that a slow or busy
/// machine could use up. Only a real bug (lies never detected, a thread
/// that never runs) reaches [`DEADLINE`], which fails the test.
struct Run<'a> {
    side: &'static str,
    scribbler: &'a Scribbler,
    ops: usize,
    corrupt: u64,
    deadline: Instant,
}

const MIN_OPS: usize = 20_000;
const MIN_WRITES: u64 = 5_000;
const DEADLINE: Duration = Duration::from_secs(120);

impl<'a> Run<'a> {
    fn new(side: &'static str, scribbler: &'a Scribbler) -> Run<'a> {
        Run {
            side,
            scribbler,
            ops: 0,
            corrupt: 0,
            deadline: Instant::now().checked_add(DEADLINE).unwrap(),
        }
    }

    /// Whether to do one more operation; fails the test at the deadline.
    fn keep_going(&self) -> bool {
        let writes = self.scribbler.writes();
        if self.ops >= MIN_OPS && writes >= MIN_WRITES && self.corrupt > 0 {
            return false;
        }
        assert!(
            Instant::now() < self.deadline,
            "the {} saw no lie within {DEADLINE:?}: {} operations, {} corrupt, {writes} scribbles",
            self.side,
            self.ops,
            self.corrupt,
        );
        true
    }

    fn done_one(&mut self, corrupt: bool) {
        self.ops += 1;
        self.corrupt += u64::from(corrupt);
    }
}

/// A small deterministic generator for the scribbling threads.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The agent's read of a frame the producer rewrites while it is read: a
/// frame that is one record (a length-delimited body over the whole frame)
/// or, with its first four bytes changed, 65,537 empty records, one over
/// the limit, flipped between the two by a thread for the whole test. A
/// reader that counts records in the ring and then decodes there may count
/// one and decode 65,537 (then refused only after decoding them, as
/// `Invalid`); one that copies the frame first sees either form, whole:
/// one record, or `TooManyRecords`.
#[test]
fn a_frame_rewritten_while_read_is_judged_on_one_copy() {
    use daemoneye_lib::proto::limits::MAX_PROCESSES_PER_RESULT;
    use daemoneye_lib::session::{ChunkReader, SessionError};

    let records = MAX_PROCESSES_PER_RESULT + 1;
    let mut many: Vec<u8> = [0x22u8, 0x00].repeat(records);
    // One record: key 4 (length-delimited), a 3-byte length, then the rest
    // of the records' span (empty `executable_path` fields, a valid record
    // body); the task id after it either way.
    let body = (many.len() - 4) as u32;
    many.extend_from_slice(&[0x0a, 0x01, b't', 0x10, 0x01]); // task_id "t", success
    let len = many.len();
    let one_head = [
        0x22,
        (body & 0x7f) as u8 | 0x80,
        ((body >> 7) & 0x7f) as u8 | 0x80,
        (body >> 14) as u8,
    ];
    let many_head: [u8; 4] = many[..4].try_into().unwrap();

    let config = RingConfig::new(1 << 20)
        .with_max_frame(200_000)
        .with_wait(SPIN);
    let (_producer, fds) = Producer::create(&config).unwrap();
    let (data, data_file) = copy_region(&fds.data, data_region_len(1 << 20));
    let (control, control_file) = copy_region(&fds.control, CONTROL_LEN);
    let word = FrameHeader::data(len as u32, 0).encode();
    data_file
        .write_all_at(&word.to_ne_bytes(), DATA_OFFSET as u64)
        .unwrap();
    data_file
        .write_all_at(&many, DATA_OFFSET as u64 + 8)
        .unwrap();
    let tail = (8 + len as u64).next_multiple_of(8);
    data_file
        .write_all_at(&tail.to_ne_bytes(), PRODUCER_POSITION_OFFSET as u64)
        .unwrap();

    let flipper = {
        let file = data_file.try_clone().unwrap();
        Scribbler::start(move |rng| {
            let head = if rng.next() % 2 == 0 {
                one_head
            } else {
                many_head
            };
            file.write_all_at(&head, DATA_OFFSET as u64 + 8).unwrap();
        })
    };
    let mut reader = ChunkReader::new();
    let (mut as_one, mut as_many) = (0, 0);
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end || as_one == 0 || as_many == 0 {
        assert!(
            Instant::now() < end + Duration::from_secs(30),
            "the flips never showed: {as_one} one, {as_many} many"
        );
        // A fresh consumer at position 0 of the same frame each round.
        for (offset, value) in [
            (CONSUMER_POSITION_OFFSET, 0u64.to_ne_bytes().to_vec()),
            (CONSUMER_CLOSED_OFFSET, 0u32.to_ne_bytes().to_vec()),
            (CONSUMER_ATTACHED_OFFSET, 0u32.to_ne_bytes().to_vec()),
        ] {
            control_file.write_all_at(&value, offset as u64).unwrap();
        }
        let fds = ConsumerFds {
            data: data.try_clone().unwrap(),
            control: control.try_clone().unwrap(),
        };
        let mut consumer = Consumer::attach(fds, SPIN).unwrap();
        match reader.read(&mut consumer, Instant::now() + Duration::from_secs(5)) {
            Ok(chunk) => {
                assert_eq!(chunk.result.processes.len(), 1, "counted one, decoded more");
                as_one += 1;
            }
            Err(SessionError::TooManyRecords { count, .. }) => {
                assert_eq!(count, MAX_PROCESSES_PER_RESULT + 1);
                as_many += 1;
            }
            // A flip torn across the four bytes: malformed, refused as such.
            Err(SessionError::Decode(_)) => {}
            Err(other) => panic!("judged on bytes it did not count: {other:?}"),
        }
    }
    drop(flipper);
    println!("{as_one} read as one record, {as_many} as too many");
}
