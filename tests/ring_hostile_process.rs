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

mod ring_support;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use daemoneye_lib::ring::layout::{
    CONSUMER_ATTACHED_OFFSET, CONSUMER_CLOSED_OFFSET, CONSUMER_POSITION_OFFSET, CONTROL_LEN,
    MIN_CAPACITY, PRODUCER_POSITION_OFFSET, data_region_len,
};
use daemoneye_lib::ring::{
    Consumer, ConsumerFds, Producer, RingConfig, RingError, TryClaimError, TryReadError,
    WaitStrategy, pair,
};
use daemoneye_lib::sys::memfd::{self, Seals};
use ring_support::{recv_fds, recv_u64, send_fds, send_u64, spawn};

const MAX_FRAME: usize = 3000;
const SCRIBBLE_FOR: Duration = Duration::from_millis(1500);
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
/// it until `SCRIBBLE_FOR` has passed.
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
    assert_eq!(recv_u64(&mut socket), 1, "parent did not attach");

    let data_len = data_region_len(MIN_CAPACITY) as u64;
    let mut rng = 0xbad_f00d;
    let until = Instant::now() + SCRIBBLE_FOR;
    while Instant::now() < until {
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
    send_u64(&mut socket, 2);
}

/// The hostile consumer: attaches, reads a little, and scribbles on the
/// consumer region until `SCRIBBLE_FOR` has passed.
fn hostile_consumer() {
    let mut socket = ring_support::parent_socket();
    let fds = recv_fds(&socket);
    let control = File::from(fds.control.try_clone().unwrap());
    let mut consumer = Consumer::attach(fds, WaitStrategy::BusySpin).unwrap();
    send_u64(&mut socket, 1);
    let mut rng = 0x0fee_1bad;
    let until = Instant::now() + SCRIBBLE_FOR;
    while Instant::now() < until {
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
    send_u64(&mut socket, 2);
}

#[test]
fn child() {
    let Some((role, _)) = ring_support::role() else {
        return;
    };
    match role.as_str() {
        "hostile-producer" => hostile_producer(),
        "hostile-consumer" => hostile_consumer(),
        other => panic!("unknown role {other}"),
    }
}

/// Whether the child has sent its "done" message (non-blocking).
fn done(socket: &mut std::os::unix::net::UnixStream) -> bool {
    socket.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 8];
    let got = std::io::Read::read(socket, &mut byte);
    socket.set_nonblocking(false).unwrap();
    matches!(got, Ok(8)) && u64::from_le_bytes(byte) == 2
}

#[test]
fn consumer_survives_a_scribbling_producer_process() {
    let mut peer = spawn("child", "hostile-producer", "");
    let mut consumer = Consumer::attach(recv_fds(&peer.socket), WaitStrategy::BusySpin).unwrap();
    send_u64(&mut peer.socket, 1);
    let (mut frames, mut corrupt, mut other) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&mut peer.socket) {
        assert!(Instant::now() < deadline, "child never finished");
        let got = consumer.try_read_batch(8, |frame| {
            assert!(frame.bytes().len() <= MAX_FRAME);
            frames += 1;
        });
        match got {
            Ok(_) => {}
            Err(TryReadError::Corrupt(_)) => corrupt += 1,
            Err(TryReadError::Empty | TryReadError::Closed | TryReadError::PeerGone) => other += 1,
        }
        let soon = Instant::now() + Duration::from_micros(200);
        match consumer.read(soon, |frame| frame.bytes().len()) {
            Ok(len) => assert!(len <= MAX_FRAME),
            Err(RingError::Corrupt(_)) => corrupt += 1,
            Err(RingError::TimedOut | RingError::Closed) => other += 1,
            Err(err) => panic!("unexpected error {err:?}"),
        }
    }
    peer.expect_success(Duration::from_secs(30));
    println!("hostile producer: {frames} frames, {corrupt} corrupt, {other} empty/closed");
    assert!(corrupt > 0, "no lie was ever detected");
}

#[test]
fn producer_survives_a_scribbling_consumer_process() {
    let (mut producer, fds) = Producer::create(&config()).unwrap();
    let mut peer = spawn("child", "hostile-consumer", "");
    send_fds(&peer.socket, &fds);
    drop(fds);
    assert_eq!(recv_u64(&mut peer.socket), 1, "child did not attach");
    let (mut written, mut corrupt, mut other) = (0u64, 0u64, 0u64);
    let payload = [0x5a; 1000];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&mut peer.socket) {
        assert!(Instant::now() < deadline, "child never finished");
        match producer.try_write(&payload, 1) {
            Ok(()) => written += 1,
            Err(TryClaimError::Corrupt(_)) => corrupt += 1,
            Err(TryClaimError::Full | TryClaimError::Closed) => other += 1,
            Err(err) => panic!("unexpected error {err:?}"),
        }
        let soon = Instant::now() + Duration::from_micros(200);
        match producer.write(&payload, 2, soon) {
            Ok(()) => written += 1,
            Err(RingError::Corrupt(_)) => corrupt += 1,
            Err(RingError::TimedOut | RingError::Closed) => other += 1,
            Err(err) => panic!("unexpected error {err:?}"),
        }
    }
    peer.expect_success(Duration::from_secs(30));
    println!("hostile consumer: {written} frames, {corrupt} corrupt, {other} full/closed");
    assert!(corrupt > 0, "no lie was ever detected");
    // The honest path still works in a fresh ring.
    let (mut producer, mut consumer) = pair(&config()).unwrap();
    producer.try_write(b"ok", 0).unwrap();
    assert_eq!(consumer.try_read(|f| f.bytes().to_vec()).unwrap(), b"ok");
}
