//! Hostile memory from another process: a child scribbles arbitrary bytes
//! over a live ring's shared memory while this process uses it, and this
//! process's side only ever returns frames or typed errors, never panics.
//! (`ring_hostile.rs` does the same with threads and names each lie; this
//! file proves it holds across a real process boundary.)
//!
//! - A hostile producer: the child builds a real ring, runs it until it
//!   has wrapped, copies both regions into memfds it can still write (a
//!   real producer region is sealed against writes once mapped) and hands
//!   those over; then it scribbles on them while this process reads.
//! - A hostile consumer: the child attaches to this process's ring and
//!   scribbles on the consumer region (which it may write) while this
//!   process writes.
//! - A waker: the child maps the consumer region and wakes one side's
//!   futex word in a loop (and keeps it from reading `PARKED`) while that
//!   side waits; the waiter's CPU stays bounded.

mod ring_support;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use daemoneye_lib::ring::layout::{
    CONSUMER_ATTACHED_OFFSET, CONSUMER_CLOSED_OFFSET, CONSUMER_POSITION_OFFSET,
    CONSUMER_WAIT_OFFSET, CONTROL_LEN, IDLE, MIN_CAPACITY, PRODUCER_POSITION_OFFSET,
    PRODUCER_WAIT_OFFSET, data_region_len,
};
use daemoneye_lib::ring::{
    Consumer, ConsumerFds, Producer, RingConfig, RingError, TryClaimError, TryReadError,
    WaitStrategy, pair,
};
use daemoneye_lib::sys::futex;
use daemoneye_lib::sys::memfd::{self, Access, Mapping, Seals};
use ring_support::{Peer, recv_fds, recv_u64, send_fds, send_u64, spawn};

const MAX_FRAME: usize = 3000;
/// The parent tells the child to stop once it has seen a lie and done
/// [`MIN_OPS`] rounds; only a real bug (lies never detected) reaches
/// [`DEADLINE`], which fails the test. The child gives up a little later,
/// so that the parent's message names the failure.
const MIN_OPS: u64 = 20_000;
const DEADLINE: Duration = Duration::from_secs(120);
const CHILD_DEADLINE: Duration = Duration::from_secs(150);
/// Messages on the socket: the other side hung up (read as end of file),
/// the child attached (or the parent did), the parent asks the child to
/// stop, the child stopped.
const GONE: u64 = 0;
const ATTACHED: u64 = 1;
const DONE: u64 = 2;
const STOP: u64 = 3;
/// Consumer region offsets of the two futex words.
const WAITER_OFFSETS: [usize; 2] = [128, 256];

fn config() -> RingConfig {
    RingConfig::new(MIN_CAPACITY)
        .with_max_frame(MAX_FRAME)
        .with_wait(WaitStrategy::BusySpin)
}

/// splitmix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A new memfd holding the same bytes as `from`, sealed only against size
/// changes (so its creator can still write it).
fn writable_copy(from: &OwnedFd, len: usize) -> (OwnedFd, File) {
    let mut bytes = vec![0u8; len];
    File::from(from.try_clone().unwrap())
        .read_exact_at(&mut bytes, 0)
        .unwrap();
    let fd = memfd::create("daemoneye-ring-hostile", len as u64).unwrap();
    memfd::add_seals(&fd, Seals::SHRINK | Seals::GROW).unwrap();
    let file = File::from(fd.try_clone().unwrap());
    file.write_all_at(&bytes, 0).unwrap();
    (fd, file)
}

/// A value to write over a position: often plausible (near `near`, maybe
/// misaligned), sometimes anything.
fn position_lie(rng: &mut u64, near: u64) -> u64 {
    match next(rng) % 4 {
        0 => next(rng),
        1 => near.wrapping_add(next(rng) % 256),
        2 => near.wrapping_sub(next(rng) % 256),
        _ => near.wrapping_add(MIN_CAPACITY as u64 + next(rng) % 64 * 8),
    }
}

/// The hostile producer: a copy of a wrapped live ring, then scribbles on
/// it until the parent says stop.
fn hostile_producer() {
    let mut socket = ring_support::parent_socket();
    let (mut producer, fds) = Producer::create(&config()).unwrap();
    let (data, control) = (
        fds.data.try_clone().unwrap(),
        fds.control.try_clone().unwrap(),
    );
    let mut consumer = Consumer::attach(fds, WaitStrategy::BusySpin).unwrap();
    for i in 0..400usize {
        producer
            .try_write(&vec![i as u8; (i * 997) % MAX_FRAME], i as u16)
            .unwrap();
        if i < 380 {
            consumer.try_read(|_| ()).unwrap();
        }
    }
    let head = consumer.position();
    let (data_fd, data_file) = writable_copy(&data, data_region_len(MIN_CAPACITY));
    let (control_fd, control_file) = writable_copy(&control, CONTROL_LEN);
    control_file
        .write_all_at(&0u32.to_ne_bytes(), CONSUMER_ATTACHED_OFFSET as u64)
        .unwrap();
    send_fds(
        &socket,
        &ConsumerFds {
            data: data_fd,
            control: control_fd,
        },
    );
    assert_eq!(recv_u64(&mut socket), ATTACHED, "parent did not attach");

    let data_len = data_region_len(MIN_CAPACITY) as u64;
    let mut rng = 0xbad_f00d;
    let mut until = Until::new(&mut socket);
    while until.going_on() {
        let value = next(&mut rng);
        match value % 5 {
            // Anywhere in the producer region, header included.
            0 => {
                let at = next(&mut rng) % (data_len - 8);
                data_file
                    .write_all_at(&next(&mut rng).to_ne_bytes(), at)
                    .unwrap();
            }
            // The producer position.
            1 => {
                let lie = position_lie(&mut rng, head);
                data_file
                    .write_all_at(&lie.to_ne_bytes(), PRODUCER_POSITION_OFFSET as u64)
                    .unwrap();
            }
            // A frame header near where the consumer reads.
            2 => {
                let near = (head + next(&mut rng) % 4096) & !7 & (MIN_CAPACITY as u64 - 1);
                let at = data_region_len(MIN_CAPACITY) as u64 - MIN_CAPACITY as u64 + near;
                data_file
                    .write_all_at(&next(&mut rng).to_ne_bytes(), at)
                    .unwrap();
            }
            // The consumer region's position and futex words (not its
            // closed flag: that would only end this side's reads).
            3 => {
                let at = (next(&mut rng) % (CONSUMER_CLOSED_OFFSET as u64 / 4)) * 4;
                control_file
                    .write_all_at(&(next(&mut rng) as u32).to_ne_bytes(), at)
                    .unwrap();
            }
            // Plausible whole bytes over the data area.
            _ => {
                let at = next(&mut rng) % (data_len - 64);
                data_file.write_all_at(&[value as u8; 64], at).unwrap();
            }
        }
    }
    send_u64(&mut socket, DONE);
}

/// The hostile consumer: attaches, reads a little, and scribbles on the
/// consumer region until the parent says stop.
fn hostile_consumer() {
    let mut socket = ring_support::parent_socket();
    let fds = recv_fds(&socket);
    let control = File::from(fds.control.try_clone().unwrap());
    let mut consumer = Consumer::attach(fds, WaitStrategy::BusySpin).unwrap();
    send_u64(&mut socket, ATTACHED);
    let mut rng = 0x0fee_1bad;
    let mut until = Until::new(&mut socket);
    while until.going_on() {
        // Whatever the producer makes of the lies, this side may read on.
        let _ = consumer.try_read_batch(16, |_| ());
        let here = consumer.position();
        let (at, bytes): (usize, Vec<u8>) = match next(&mut rng) % 10 {
            0..=5 => (
                CONSUMER_POSITION_OFFSET,
                position_lie(&mut rng, here).to_ne_bytes().to_vec(),
            ),
            6..=7 => (
                WAITER_OFFSETS[(next(&mut rng) % 2) as usize],
                (next(&mut rng) as u32 % 3).to_ne_bytes().to_vec(),
            ),
            // Rarely a closed flag, cleared again most times.
            8 => (
                CONSUMER_CLOSED_OFFSET,
                u32::from(next(&mut rng) % 8 == 0).to_ne_bytes().to_vec(),
            ),
            _ => (
                CONSUMER_ATTACHED_OFFSET,
                (next(&mut rng) as u32).to_ne_bytes().to_vec(),
            ),
        };
        control.write_all_at(&bytes, at as u64).unwrap();
    }
    // Clear the flag so the parent ends on the message, not on Closed.
    control
        .write_all_at(&0u32.to_ne_bytes(), CONSUMER_CLOSED_OFFSET as u64)
        .unwrap();
    send_u64(&mut socket, DONE);
}

/// The waker: maps the consumer region and, until the parent says stop,
/// wakes the futex word at the offset it was given and stores IDLE over it
/// (so a waiter's `futex_wait` also returns at once). Reports how many of
/// its wakes found a waiter.
fn waker() {
    let (_, offset) = ring_support::role();
    let offset: usize = offset.parse().unwrap();
    let mut socket = ring_support::parent_socket();
    let fds = recv_fds(&socket);
    let map = Mapping::map(&fds.control, CONTROL_LEN, Access::ReadWrite).unwrap();
    let word = map.atomic_u32(offset).unwrap();
    send_u64(&mut socket, ATTACHED);
    let mut woken = 0u64;
    let mut until = Until::new(&mut socket);
    while until.going_on() {
        word.store(IDLE, Ordering::Relaxed);
        woken += futex::wake(word, 1).unwrap() as u64;
    }
    send_u64(&mut socket, woken);
}

/// In a child: whether to scribble on. Checks for the parent's stop message
/// every few hundred rounds (a non-blocking read), and gives up at
/// [`CHILD_DEADLINE`].
struct Until<'a> {
    socket: &'a mut UnixStream,
    rounds: u64,
    deadline: Instant,
}

impl<'a> Until<'a> {
    fn new(socket: &'a mut UnixStream) -> Until<'a> {
        Until {
            socket,
            rounds: 0,
            deadline: Instant::now().checked_add(CHILD_DEADLINE).unwrap(),
        }
    }

    fn going_on(&mut self) -> bool {
        self.rounds += 1;
        if self.rounds % 256 != 0 {
            return true;
        }
        match poll_message(self.socket) {
            // A parent that failed (and hung up) stops its child too.
            Some(STOP | GONE) => false,
            Some(other) => panic!("unexpected message {other}"),
            None => Instant::now() < self.deadline,
        }
    }
}

#[test]
#[ignore = "run in a child process by the other tests of this file"]
fn child() {
    let (role, _) = ring_support::role();
    match role.as_str() {
        "hostile-producer" => hostile_producer(),
        "hostile-consumer" => hostile_consumer(),
        "waker" => waker(),
        other => panic!("unknown role {other}"),
    }
}

/// A message from the other side if one has come (non-blocking), [`GONE`]
/// once it has hung up. A message is 8 bytes, sent at once, so it never
/// arrives in part.
fn poll_message(socket: &mut UnixStream) -> Option<u64> {
    socket.set_nonblocking(true).unwrap();
    let mut bytes = [0u8; 8];
    let got = std::io::Read::read(socket, &mut bytes);
    socket.set_nonblocking(false).unwrap();
    match got {
        Ok(0) => Some(GONE),
        Ok(8) => Some(u64::from_le_bytes(bytes)),
        Ok(n) => panic!("a message of {n} bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("socket: {e}"),
    }
}

/// In the parent: the rounds done and lies seen while the child scribbles.
/// It asks the child to stop once it has done [`MIN_OPS`] rounds and seen a
/// lie, goes on until the child says it stopped, and fails the test at
/// [`DEADLINE`].
struct Watch {
    rounds: u64,
    corrupt: u64,
    stop_sent: bool,
    deadline: Instant,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            rounds: 0,
            corrupt: 0,
            stop_sent: false,
            deadline: Instant::now().checked_add(DEADLINE).unwrap(),
        }
    }

    fn going_on(&mut self, peer: &mut Peer) -> bool {
        if !self.stop_sent && self.rounds >= MIN_OPS && self.corrupt > 0 {
            send_u64(&mut peer.socket, STOP);
            self.stop_sent = true;
        }
        match poll_message(&mut peer.socket) {
            Some(DONE) => {
                assert!(self.stop_sent, "the child stopped unasked (its deadline)");
                return false;
            }
            Some(GONE) => panic!("the child hung up (it failed?)"),
            Some(other) => panic!("unexpected message {other}"),
            None => {}
        }
        assert!(
            Instant::now() < self.deadline,
            "no lie detected within {DEADLINE:?} ({} rounds, {} corrupt; stop sent: {})",
            self.rounds,
            self.corrupt,
            self.stop_sent,
        );
        self.rounds += 1;
        true
    }
}

#[test]
fn consumer_survives_a_scribbling_producer_process() {
    let mut peer = spawn("child", "hostile-producer", "");
    let mut consumer = Consumer::attach(recv_fds(&peer.socket), WaitStrategy::BusySpin).unwrap();
    send_u64(&mut peer.socket, ATTACHED);
    let (mut frames, mut other) = (0u64, 0u64);
    let mut watch = Watch::new();
    while watch.going_on(&mut peer) {
        let got = consumer.try_read_batch(8, |frame| {
            assert!(frame.bytes().len() <= MAX_FRAME);
            frames += 1;
        });
        match got {
            Ok(_) => {}
            Err(TryReadError::Corrupt(_)) => watch.corrupt += 1,
            Err(TryReadError::Empty | TryReadError::Closed | TryReadError::PeerGone) => other += 1,
        }
        let soon = Instant::now() + Duration::from_micros(200);
        match consumer.read(soon, |frame| frame.bytes().len()) {
            Ok(len) => assert!(len <= MAX_FRAME),
            Err(RingError::Corrupt(_)) => watch.corrupt += 1,
            Err(RingError::TimedOut | RingError::Closed) => other += 1,
            Err(err) => panic!("unexpected error {err:?}"),
        }
    }
    peer.expect_success(Duration::from_secs(30));
    println!(
        "hostile producer: {frames} frames, {} corrupt, {other} empty/closed",
        watch.corrupt
    );
}

#[test]
fn producer_survives_a_scribbling_consumer_process() {
    let (mut producer, fds) = Producer::create(&config()).unwrap();
    let mut peer = spawn("child", "hostile-consumer", "");
    send_fds(&peer.socket, &fds);
    drop(fds);
    assert_eq!(recv_u64(&mut peer.socket), ATTACHED, "child did not attach");
    let (mut written, mut other) = (0u64, 0u64);
    let payload = [0x5a; 1000];
    let mut watch = Watch::new();
    while watch.going_on(&mut peer) {
        match producer.try_write(&payload, 1) {
            Ok(()) => written += 1,
            Err(TryClaimError::Corrupt(_)) => watch.corrupt += 1,
            Err(TryClaimError::Full | TryClaimError::Closed) => other += 1,
            Err(err) => panic!("unexpected error {err:?}"),
        }
        let soon = Instant::now() + Duration::from_micros(200);
        match producer.write(&payload, 2, soon) {
            Ok(()) => written += 1,
            Err(RingError::Corrupt(_)) => watch.corrupt += 1,
            Err(RingError::TimedOut | RingError::Closed) => other += 1,
            Err(err) => panic!("unexpected error {err:?}"),
        }
    }
    peer.expect_success(Duration::from_secs(30));
    println!(
        "hostile consumer: {written} frames, {} corrupt, {other} full/closed",
        watch.corrupt
    );
    // The honest path still works in a fresh ring.
    let (mut producer, mut consumer) = pair(&config()).unwrap();
    producer.try_write(b"ok", 0).unwrap();
    assert_eq!(consumer.try_read(|f| f.bytes().to_vec()).unwrap(), b"ok");
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// How long each side waits under the waker, and the CPU it may spend
/// meanwhile: a tenth (unbounded, the waiter polls as fast as it is woken,
/// a core's worth; bounded, about one poll a millisecond).
const WAKE_SPAM_WAIT: Duration = Duration::from_millis(1500);

/// Starts a waker on `offset` of `fds`' consumer region; returns it once it
/// has mapped the region.
fn start_waker(fds: &ConsumerFds, offset: usize) -> Peer {
    let mut peer = spawn("child", "waker", &offset.to_string());
    send_fds(&peer.socket, fds);
    assert_eq!(
        recv_u64(&mut peer.socket),
        ATTACHED,
        "the waker did not start"
    );
    peer
}

/// Stops the waker; returns how many of its wakes found a waiter.
fn stop_waker(mut peer: Peer) -> u64 {
    send_u64(&mut peer.socket, STOP);
    let woken = recv_u64(&mut peer.socket);
    peer.expect_success(Duration::from_secs(30));
    woken
}

fn assert_bounded(side: &str, cpu: Duration, woken: u64) {
    println!("{side} under a waker: {cpu:?} CPU in {WAKE_SPAM_WAIT:?}, woken {woken} times");
    assert!(woken > 0, "the waker never reached the waiting {side}");
    assert!(
        cpu < WAKE_SPAM_WAIT / 10,
        "the waiting {side} spent {cpu:?} of CPU in {WAKE_SPAM_WAIT:?} ({woken} wakes)"
    );
}

#[test]
fn wakes_that_change_nothing_send_a_waiting_side_back_to_parking() {
    let wait = WaitStrategy::default();
    // The producer waits for room in a full ring, woken by the agent's
    // side of the memory.
    let (mut producer, fds) = Producer::create(&config().with_wait(wait)).unwrap();
    while producer.try_write(&[7; MAX_FRAME], 0).is_ok() {}
    let peer = start_waker(&fds, PRODUCER_WAIT_OFFSET);
    let before = thread_cpu();
    let deadline = Instant::now() + WAKE_SPAM_WAIT;
    assert!(matches!(
        producer.claim(MAX_FRAME, deadline),
        Err(RingError::TimedOut)
    ));
    let cpu = thread_cpu() - before;
    assert_bounded("producer", cpu, stop_waker(peer));

    // The consumer waits for a frame in an empty ring.
    let (_producer, fds) = Producer::create(&config().with_wait(wait)).unwrap();
    let control = fds.control.try_clone().unwrap();
    let data = fds.data.try_clone().unwrap();
    let mut consumer = Consumer::attach(ConsumerFds { data, control }, wait).unwrap();
    let peer = start_waker(&fds, CONSUMER_WAIT_OFFSET);
    let before = thread_cpu();
    let deadline = Instant::now() + WAKE_SPAM_WAIT;
    assert!(matches!(
        consumer.read(deadline, |_| ()),
        Err(RingError::TimedOut)
    ));
    let cpu = thread_cpu() - before;
    assert_bounded("consumer", cpu, stop_waker(peer));
}
