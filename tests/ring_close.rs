//! Closing and waking: a parked reader or writer is woken at once by data,
//! by a close from the other side, by a [`Closer`] on its own side, and
//! notices a dead peer through its pidfd.
//!
//! Parked waits here use a 30 s park timeout, so a side that returns within
//! a few seconds was woken, not timed out. The tests wait for a side to be
//! parked by reading its futex word in the shared consumer region.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use daemoneye_lib::ring::layout::{
    CONSUMER_WAIT_OFFSET, MIN_CAPACITY, PARKED, PRODUCER_WAIT_OFFSET,
};
use daemoneye_lib::ring::{
    Consumer, Producer, RingConfig, RingError, TryClaimError, TryReadError, WaitStrategy,
};
use daemoneye_lib::sys::pidfd::PidFd;

const PARK: WaitStrategy = WaitStrategy::Park {
    timeout: Duration::from_secs(30),
};
/// Far below the park timeout: returning within it means a wake-up worked.
const WOKEN_WITHIN: Duration = Duration::from_secs(5);

/// A ring whose ends both park, plus a handle on the consumer region.
fn ring() -> (Producer, Consumer, File) {
    let config = RingConfig::new(MIN_CAPACITY)
        .with_max_frame(1024)
        .with_wait(PARK);
    let (producer, fds) = Producer::create(&config).unwrap();
    let control = File::from(fds.control.try_clone().unwrap());
    let consumer = Consumer::attach(fds, PARK).unwrap();
    (producer, consumer, control)
}

/// Waits (with a deadline) until the futex word at `offset` says its side
/// is parked.
fn wait_parked(control: &File, offset: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut word = [0u8; 4];
        control.read_exact_at(&mut word, offset as u64).unwrap();
        if u32::from_ne_bytes(word) == PARKED {
            return;
        }
        assert!(Instant::now() < deadline, "side never parked");
        thread::yield_now();
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Runs a blocking read on another thread; returns a receiver for its
/// result and the moment it returned.
fn spawn_read(mut consumer: Consumer) -> mpsc::Receiver<(Result<Vec<u8>, RingError>, Instant)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let result = consumer.read(far(), |f| f.bytes().to_vec());
        tx.send((result, Instant::now())).unwrap();
    });
    rx
}

/// Fills the ring, then runs a blocking write on another thread.
fn spawn_write(mut producer: Producer) -> mpsc::Receiver<(Result<(), RingError>, Instant)> {
    while producer.try_write(&[0; 1024], 0).is_ok() {}
    assert!(matches!(
        producer.try_write(&[0; 1024], 0),
        Err(TryClaimError::Full)
    ));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let result = producer.write(&[1; 1024], 0, far());
        tx.send((result, Instant::now())).unwrap();
    });
    rx
}

fn result<T>(rx: &mpsc::Receiver<(T, Instant)>, since: Instant) -> T {
    let (result, at) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("blocked side never returned");
    assert!(
        at.duration_since(since) < WOKEN_WITHIN,
        "woken only after {:?}",
        at - since
    );
    result
}

#[test]
fn data_wakes_a_parked_reader() {
    let (mut producer, consumer, control) = ring();
    let rx = spawn_read(consumer);
    wait_parked(&control, CONSUMER_WAIT_OFFSET);
    let start = Instant::now();
    producer.write(b"wake", 0, far()).unwrap();
    assert_eq!(result(&rx, start).unwrap(), b"wake");
}

#[test]
fn room_wakes_a_parked_writer() {
    let (producer, mut consumer, control) = ring();
    let rx = spawn_write(producer);
    wait_parked(&control, PRODUCER_WAIT_OFFSET);
    let start = Instant::now();
    // Two frames: one 1032-byte frame's room is not always enough for the
    // next, which may need padding to the end and an empty word after it.
    assert_eq!(consumer.try_read_batch(2, |_| ()).unwrap(), 2);
    result(&rx, start).unwrap();
}

#[test]
fn producer_close_wakes_a_parked_reader() {
    let (producer, consumer, control) = ring();
    let rx = spawn_read(consumer);
    wait_parked(&control, CONSUMER_WAIT_OFFSET);
    let start = Instant::now();
    drop(producer);
    assert!(matches!(result(&rx, start), Err(RingError::Closed)));
}

#[test]
fn consumer_closer_wakes_its_own_reader() {
    let (mut producer, consumer, control) = ring();
    let closer = consumer.closer();
    assert!(!closer.is_closed());
    let rx = spawn_read(consumer);
    wait_parked(&control, CONSUMER_WAIT_OFFSET);
    let start = Instant::now();
    closer.close();
    assert!(closer.is_closed());
    assert!(matches!(result(&rx, start), Err(RingError::Closed)));
    // The producer learns of it too.
    assert!(producer.is_closed());
    assert!(matches!(producer.try_claim(1), Err(TryClaimError::Closed)));
}

#[test]
fn peer_gone_mark_drains_published_frames_then_reports_peer_gone() {
    let (mut producer, mut consumer, _control) = ring();
    producer.write(b"one", 0, far()).unwrap();
    producer.write(b"two", 0, far()).unwrap();
    // The control socket ended, say; the producer never closed the ring.
    consumer.closer().mark_peer_gone();
    assert_eq!(
        consumer.read(far(), |f| f.bytes().to_vec()).unwrap(),
        b"one"
    );
    assert_eq!(
        consumer.read(far(), |f| f.bytes().to_vec()).unwrap(),
        b"two"
    );
    assert!(matches!(
        consumer.read(far(), |f| f.bytes().to_vec()),
        Err(RingError::PeerGone)
    ));
    assert!(matches!(
        consumer.try_read(|_| ()),
        Err(TryReadError::PeerGone)
    ));
}

#[test]
fn peer_gone_mark_wakes_a_parked_reader() {
    let (_producer, consumer, control) = ring();
    let closer = consumer.closer();
    let rx = spawn_read(consumer);
    wait_parked(&control, CONSUMER_WAIT_OFFSET);
    let start = Instant::now();
    closer.mark_peer_gone();
    assert!(matches!(result(&rx, start), Err(RingError::PeerGone)));
}

/// A producer has nothing of the peer's to drain: for it the mark is a
/// close, so its parked writer wakes at once with `Closed` (the consumer,
/// still attached, never closed).
#[test]
fn peer_gone_mark_closes_a_producer_and_wakes_its_writer() {
    let (producer, consumer, control) = ring();
    let closer = producer.closer();
    let rx = spawn_write(producer);
    wait_parked(&control, PRODUCER_WAIT_OFFSET);
    let start = Instant::now();
    closer.mark_peer_gone();
    assert!(closer.is_closed());
    assert!(matches!(result(&rx, start), Err(RingError::Closed)));
    assert!(!consumer.closer().is_closed());
}

#[test]
fn consumer_close_wakes_a_parked_writer() {
    let (producer, consumer, control) = ring();
    let rx = spawn_write(producer);
    wait_parked(&control, PRODUCER_WAIT_OFFSET);
    let start = Instant::now();
    drop(consumer);
    assert!(matches!(result(&rx, start), Err(RingError::Closed)));
}

#[test]
fn producer_closer_wakes_its_own_writer() {
    let (producer, mut consumer, control) = ring();
    let closer = producer.closer();
    let rx = spawn_write(producer);
    wait_parked(&control, PRODUCER_WAIT_OFFSET);
    let start = Instant::now();
    closer.close();
    assert!(matches!(result(&rx, start), Err(RingError::Closed)));
    // The consumer still drains what was published, then sees Closed.
    let mut frames = 0;
    loop {
        match consumer.try_read(|f| f.len()) {
            Ok(len) => {
                assert_eq!(len, 1024);
                frames += 1;
            }
            Err(TryReadError::Closed) => break,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(frames, MIN_CAPACITY / 1032);
}

#[test]
fn ping_pong_never_loses_a_wake_up() {
    // Two rings, both ends parking at once: every round trip needs two
    // futex wake-ups. A lost one would stall until the 30 s park timeout
    // and miss the 20 s deadline.
    let config = RingConfig::new(MIN_CAPACITY)
        .with_max_frame(64)
        .with_wait(PARK);
    let (mut ping_tx, mut ping_rx) = daemoneye_lib::ring::pair(&config).unwrap();
    let (mut pong_tx, mut pong_rx) = daemoneye_lib::ring::pair(&config).unwrap();
    const ROUNDS: u32 = 2000;
    let echo = thread::spawn(move || {
        for _ in 0..ROUNDS {
            let deadline = Instant::now() + Duration::from_secs(20);
            let n = ping_rx.read(deadline, |f| f.bytes().to_vec()).unwrap();
            pong_tx.write(&n, 0, deadline).unwrap();
        }
    });
    for i in 0..ROUNDS {
        let deadline = Instant::now() + Duration::from_secs(20);
        ping_tx.write(&i.to_le_bytes(), 0, deadline).unwrap();
        let back = pong_rx.read(deadline, |f| f.bytes().to_vec()).unwrap();
        assert_eq!(back, i.to_le_bytes());
    }
    echo.join().unwrap();
}

/// A process the test can end when it likes: `cat` exits when its stdin
/// closes.
fn peer_process() -> (Child, PidFd) {
    let child = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
    let pidfd = PidFd::open(child.id()).unwrap();
    (child, pidfd)
}

#[test]
fn reader_reports_a_dead_peer() {
    let (mut producer, mut consumer, _control) = {
        let config = RingConfig::new(MIN_CAPACITY).with_max_frame(1024);
        let short = WaitStrategy::Park {
            timeout: Duration::from_millis(50),
        };
        let (producer, fds) = Producer::create(&config).unwrap();
        let control = File::from(fds.control.try_clone().unwrap());
        (producer, Consumer::attach(fds, short).unwrap(), control)
    };
    let (mut child, pidfd) = peer_process();
    consumer.watch_peer(pidfd);
    producer.try_write(b"before death", 0).unwrap();
    drop(child.stdin.take());
    child.wait().unwrap();
    // What was published before the peer died is still read...
    assert_eq!(
        consumer.read(far(), |f| f.bytes().to_vec()).unwrap(),
        b"before death"
    );
    // ...then the death is reported, within a few park timeouts.
    let start = Instant::now();
    assert!(matches!(
        consumer.read(far(), |_| ()),
        Err(RingError::PeerGone)
    ));
    assert!(start.elapsed() < WOKEN_WITHIN);
    drop(producer);
}

#[test]
fn writer_reports_a_dead_peer() {
    let short = WaitStrategy::Park {
        timeout: Duration::from_millis(50),
    };
    let config = RingConfig::new(MIN_CAPACITY)
        .with_max_frame(1024)
        .with_wait(short);
    let (mut producer, fds) = Producer::create(&config).unwrap();
    let _consumer = Consumer::attach(fds, short).unwrap();
    let (mut child, pidfd) = peer_process();
    producer.watch_peer(pidfd);
    while producer.try_write(&[0; 1024], 0).is_ok() {}
    drop(child.stdin.take());
    child.wait().unwrap();
    let start = Instant::now();
    assert!(matches!(
        producer.write(&[0; 1024], 0, far()),
        Err(RingError::PeerGone)
    ));
    assert!(start.elapsed() < WOKEN_WITHIN);
}

#[test]
fn busy_spinning_reader_also_reports_a_dead_peer() {
    let config = RingConfig::new(MIN_CAPACITY).with_wait(WaitStrategy::BusySpin);
    let (producer, fds) = Producer::create(&config).unwrap();
    let mut consumer = Consumer::attach(fds, WaitStrategy::BusySpin).unwrap();
    let (mut child, pidfd) = peer_process();
    consumer.watch_peer(pidfd);
    drop(child.stdin.take());
    child.wait().unwrap();
    let start = Instant::now();
    assert!(matches!(
        consumer.read(far(), |_| ()),
        Err(RingError::PeerGone)
    ));
    assert!(start.elapsed() < WOKEN_WITHIN);
    drop(producer);
}
