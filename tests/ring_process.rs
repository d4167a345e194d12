//! Two real processes, one ring: the test binary re-runs itself as the
//! peer (see `ring_support`), the descriptors cross a Unix socket with
//! `SCM_RIGHTS`, and a million frames of mixed sizes arrive intact and in
//! order:
//!
//! - a producer child writing as fast as it can;
//! - a slow producer child and a reader that parks whenever the ring is
//!   empty;
//! - a slow reader child and a producer that keeps finding the ring full
//!   (it blocks; nothing is overwritten or lost).
//!
//! And a reader parked on an empty ring uses no CPU to speak of.
//!
//! Each frame is self-checking ([`ring_support::Frames`]).

mod ring_support;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use daemoneye_lib::ring::layout::MIN_CAPACITY;
use daemoneye_lib::ring::{
    Consumer, Producer, RingConfig, RingError, TryClaimError, TryReadError, WaitStrategy,
};
use ring_support::{Frames, Peer, far, recv_fds, send_fds, spawn};

const FRAMES: u64 = 1_000_000;
const MAX_FRAME: usize = 4096;
const PARK: WaitStrategy = WaitStrategy::Park {
    timeout: Duration::from_millis(100),
};
/// Generous: a million frames in a debug build on a loaded machine.
const CHILD_TIMEOUT: Duration = Duration::from_secs(240);

fn config(wait: WaitStrategy) -> RingConfig {
    RingConfig::new(MIN_CAPACITY)
        .with_max_frame(MAX_FRAME)
        .with_wait(wait)
}

/// Writes every frame (pausing `pause` every `pause_every` frames); returns
/// how many claims found the ring full.
fn produce(producer: &mut Producer, pause_every: u64, pause: Duration) -> u64 {
    let frames = Frames::new(MAX_FRAME);
    let deadline = far();
    let mut full = 0;
    for i in 0..FRAMES {
        let len = frames.len(i);
        let mut claim = match producer.try_claim(len) {
            Ok(claim) => claim,
            Err(TryClaimError::Full) => {
                full += 1;
                producer
                    .claim(len, deadline)
                    .unwrap_or_else(|err| panic!("claim {i}: {err}"))
            }
            Err(err) => panic!("claim {i}: {err}"),
        };
        frames.fill(i, &mut claim);
        claim.commit_with_flags(len, i as u16);
        if pause_every != 0 && i % pause_every == 0 {
            thread::sleep(pause);
        }
    }
    full
}

/// Reads and checks every frame in batches (pausing `pause` every
/// `pause_every` batches), then expects `Closed`.
fn consume(consumer: &mut Consumer, batch: usize, pause_every: u64, pause: Duration) {
    let frames = Frames::new(MAX_FRAME);
    let deadline = far();
    let mut next = 0u64;
    let mut batches = 0u64;
    while next < FRAMES {
        consumer
            .read_batch(batch, deadline, |frame| {
                if let Err(what) = frames.check(next, frame.bytes(), frame.flags()) {
                    panic!("{what}");
                }
                next += 1;
            })
            .unwrap_or_else(|err| panic!("read after frame {next}: {err}"));
        batches += 1;
        if pause_every != 0 && batches % pause_every == 0 {
            thread::sleep(pause);
        }
    }
    let end = consumer.read(deadline, |frame| frame.bytes().len());
    assert!(
        matches!(end, Err(RingError::Closed)),
        "expected Closed after the last frame, got {end:?}"
    );
}

/// The child's part, chosen by `RING_ROLE`; a no-op in the normal run.
#[test]
#[ignore = "run in a child process by the other tests of this file"]
fn child() {
    let (role, _) = ring_support::role();
    let socket = ring_support::parent_socket();
    match role.as_str() {
        // Create the ring, hand the consumer's descriptors to the parent,
        // write everything, close (drop).
        "fast-producer" | "slow-producer" => {
            let (mut producer, fds) = Producer::create(&config(WaitStrategy::default())).unwrap();
            send_fds(&socket, &fds);
            drop(fds);
            if role == "fast-producer" {
                produce(&mut producer, 0, Duration::ZERO);
            } else {
                produce(&mut producer, 2000, Duration::from_micros(500));
            }
        }
        // Attach to the parent's ring and read slowly.
        "slow-consumer" => {
            let mut consumer =
                Consumer::attach(recv_fds(&socket), WaitStrategy::default()).unwrap();
            consume(&mut consumer, 8, 2000, Duration::from_millis(1));
        }
        // Attach, say so, then wait (parked) for one frame.
        "idle-reader" => {
            let mut socket = socket;
            let mut consumer =
                Consumer::attach(recv_fds(&socket), WaitStrategy::default()).unwrap();
            ring_support::send_u64(&mut socket, 1);
            let got = consumer
                .read(far(), |frame| frame.bytes().to_vec())
                .unwrap();
            assert_eq!(got, b"wake");
        }
        "parking-producer" => parking_producer(socket),
        other => panic!("unknown role {other}"),
    }
}

/// Both sides of [`no_wake_up_is_lost_across_processes`] park at once and
/// for two minutes, while each blocking call must end within
/// [`NO_LOST_WAKE`]: only a wake-up ends a park in time. (A call whose
/// deadline cuts its park short polls once more and may then succeed, so
/// the time it took is checked, not just its result.)
const LONG_PARK: WaitStrategy = WaitStrategy::Park {
    timeout: Duration::from_secs(120),
};
const NO_LOST_WAKE: Duration = Duration::from_secs(10);
/// How many times each side must have found the ring full (producer) or
/// empty (consumer), and how many frames the stream has at least.
const PARKS: u64 = 50;
const MIN_FRAMES: u64 = 20_000;
/// The consumer's message: it has found the ring empty `PARKS` times.
const CONSUMER_PARKED_ENOUGH: u64 = 7;

/// Runs one blocking ring call (given its deadline) and fails the test if
/// it took [`NO_LOST_WAKE`] or more: its park was never woken.
fn woken_in_time<T>(what: &str, call: impl FnOnce(Instant) -> T) -> T {
    let start = Instant::now();
    let result = call(start.checked_add(NO_LOST_WAKE).unwrap());
    assert!(
        start.elapsed() < NO_LOST_WAKE,
        "{what} took {:?}: a lost wake-up",
        start.elapsed()
    );
    result
}

/// The producer child: writes self-checking frames, pausing now and then
/// so the consumer finds the ring empty, until it has found the ring full
/// `PARKS` times, written `MIN_FRAMES` and heard that the consumer found
/// it empty often enough; then closes.
fn parking_producer(mut socket: UnixStream) {
    let (mut producer, fds) = Producer::create(&config(LONG_PARK)).unwrap();
    send_fds(&socket, &fds);
    drop(fds);
    let frames = Frames::new(MAX_FRAME);
    let deadline = far();
    let (mut full, mut consumer_done) = (0u64, false);
    let mut i = 0u64;
    while i < MIN_FRAMES || full < PARKS || !consumer_done {
        assert!(
            Instant::now() < deadline,
            "never done: {i} frames, {full} full"
        );
        let len = frames.len(i);
        let mut claim = match producer.try_claim(len) {
            Ok(claim) => claim,
            Err(TryClaimError::Full) => {
                full += 1;
                woken_in_time("a claim", |deadline| producer.claim(len, deadline))
                    .unwrap_or_else(|err| panic!("claim {i}: {err}"))
            }
            Err(err) => panic!("claim {i}: {err}"),
        };
        frames.fill(i, &mut claim);
        claim.commit_with_flags(len, i as u16);
        i += 1;
        if i % 500 == 0 {
            // Pacing, not synchronisation: a pause the consumer may catch
            // up in and park; the counts above decide when the run ends.
            thread::sleep(Duration::from_micros(300));
            if !consumer_done {
                socket.set_nonblocking(true).unwrap();
                let mut message = [0u8; 8];
                let got = socket.read(&mut message);
                socket.set_nonblocking(false).unwrap();
                match got {
                    Ok(8) => {
                        assert_eq!(u64::from_le_bytes(message), CONSUMER_PARKED_ENOUGH);
                        consumer_done = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    other => panic!("from the parent: {other:?}"),
                }
            }
        }
    }
}

/// A consumer in this process reading from a producer child.
fn read_from_child(role: &str, wait: WaitStrategy) {
    let peer = spawn("child", role, "");
    let mut consumer = Consumer::attach(recv_fds(&peer.socket), wait).unwrap();
    consume(&mut consumer, 64, 0, Duration::ZERO);
    peer.expect_success(CHILD_TIMEOUT);
}

#[test]
fn million_frames_from_a_fast_producer() {
    read_from_child("fast-producer", WaitStrategy::default());
}

#[test]
fn parked_reader_and_slow_producer() {
    read_from_child("slow-producer", PARK);
}

#[test]
fn full_ring_and_slow_reader() {
    let (mut producer, fds) = Producer::create(&config(PARK)).unwrap();
    let peer: Peer = spawn("child", "slow-consumer", "");
    send_fds(&peer.socket, &fds);
    drop(fds);
    let full = produce(&mut producer, 0, Duration::ZERO);
    // Closing lets the child drain and see Closed; it checked every frame.
    drop(producer);
    peer.expect_success(CHILD_TIMEOUT);
    assert!(full > 0, "the ring never filled up");
}

/// A lost wake-up costs only a park timeout (100 ms) in the tests above,
/// and nothing notices. Here both sides park for two minutes, each call
/// must finish within ten seconds, and each side must have found the ring
/// full or empty (and so parked, or raced the wake) many times.
#[test]
fn no_wake_up_is_lost_across_processes() {
    let mut peer = spawn("child", "parking-producer", "");
    let mut consumer = Consumer::attach(recv_fds(&peer.socket), LONG_PARK).unwrap();
    let frames = Frames::new(MAX_FRAME);
    let (mut next, mut empty, mut told) = (0u64, 0u64, false);
    loop {
        let check = |next: &mut u64, frame: daemoneye_lib::ring::Frame<'_>| {
            if let Err(what) = frames.check(*next, frame.bytes(), frame.flags()) {
                panic!("{what}");
            }
            *next += 1;
        };
        match consumer.try_read(|frame| check(&mut next, frame)) {
            Ok(()) => {}
            Err(TryReadError::Empty) => {
                empty += 1;
                let got = woken_in_time("a read", |deadline| {
                    consumer.read(deadline, |frame| check(&mut next, frame))
                });
                match got {
                    Ok(()) => {}
                    Err(RingError::Closed) => break,
                    Err(err) => {
                        panic!(
                            "read after frame {next} (a lost wake-up, or the child failed): {err}"
                        )
                    }
                }
            }
            Err(TryReadError::Closed) => break,
            Err(err) => panic!("read after frame {next}: {err}"),
        }
        if !told && empty >= PARKS {
            ring_support::send_u64(&mut peer.socket, CONSUMER_PARKED_ENOUGH);
            told = true;
        }
        if next % 1000 == 0 {
            // Pacing, as in the producer: a pause it may fill the ring in.
            thread::sleep(Duration::from_micros(500));
        }
    }
    peer.expect_success(CHILD_TIMEOUT);
    println!("{next} frames, found empty {empty} times");
    assert!(
        next >= MIN_FRAMES && empty >= PARKS,
        "{next} frames, {empty} empty"
    );
}

/// CPU time of process `pid`, all threads: the scheduler's own count, in
/// nanoseconds (`/proc/PID/task/TID/schedstat`, field 1), not the 10 ms
/// ticks of `/proc/PID/stat`, which charge a whole tick to whichever task
/// is running when the timer fires.
fn cpu_time(pid: u32) -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("schedstat")).unwrap();
        total += stat.split(' ').next().unwrap().parse::<u64>().unwrap();
    }
    Duration::from_nanos(total)
}

#[test]
fn parked_idle_reader_uses_no_cpu() {
    let (mut producer, fds) = Producer::create(&config(WaitStrategy::default())).unwrap();
    let mut peer = spawn("child", "idle-reader", "");
    send_fds(&peer.socket, &fds);
    drop(fds);
    assert_eq!(ring_support::recv_u64(&mut peer.socket), 1);
    let pid = peer.child.id();
    // The window to measure over: the reader spins for a few hundred
    // microseconds, then parks, waking every 100 ms to check on this
    // process (15 wake-ups of some microseconds each).
    let window = Duration::from_millis(1500);
    let before = cpu_time(pid);
    let start = std::time::Instant::now();
    thread::sleep(window);
    let used = cpu_time(pid) - before;
    let elapsed = start.elapsed();
    producer.write(b"wake", 0, far()).unwrap();
    peer.expect_success(CHILD_TIMEOUT);
    // A reader that kept spinning would use the whole window (or, on a
    // busy machine, its share of a core, still far above 5 %).
    assert!(
        used.as_secs_f64() < 0.05 * elapsed.as_secs_f64(),
        "idle parked reader used {used:?} of CPU in {elapsed:?}"
    );
}
