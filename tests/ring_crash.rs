//! The producer process dies by `SIGKILL` at random moments, 60 times: the
//! reader in this process never sees a partial or corrupt frame, reads
//! every frame that was published, and reports the peer gone within one
//! park timeout (plus a scheduling margin) of learning, through a pidfd,
//! that it is dead. Nothing is left in
//! `/dev/shm`, nor mapped or open in this process.
//!
//! The moment is chosen by a seeded generator, one of two ways per run:
//! after the reader has read a random number of frames (it kills the
//! producer itself, then reads on), or from another thread after a random
//! delay while the reader keeps reading.

mod ring_support;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use daemoneye_lib::ring::layout::{MIN_CAPACITY, PRODUCER_POSITION_OFFSET, frame_size};
use daemoneye_lib::ring::{
    Consumer, DEFAULT_PARK_TIMEOUT, Producer, RingConfig, RingError, WaitStrategy,
};
use daemoneye_lib::sys::pidfd::PidFd;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ring_support::{Frames, far, recv_fds, send_fds, spawn};

const RUNS: u64 = 60;
const SEED: u64 = 0x5eed_c0de_dead_beef;
const MAX_FRAME: usize = 16 << 10;
/// The longest a reader may take to report a dead producer once the test
/// knows it is dead. A parked reader notices only when its park times out
/// (every [`DEFAULT_PARK_TIMEOUT`]; a futex cannot be polled with the
/// pidfd, and a thread per ring to bridge them would cost more than it
/// saves), so the bound is one park timeout plus 300 ms for two processes
/// and the watcher thread to be scheduled on a loaded 2-core machine (the
/// slowest report seen idle was 101.6 ms). A reader that skipped the check
/// after a park, or never made it, would wait for its read's deadline
/// (`far()`, two minutes) and fail this.
const REPORT_WITHIN: Duration =
    Duration::from_millis(DEFAULT_PARK_TIMEOUT.as_millis() as u64 + 300);

/// splitmix64: a small, seeded, reproducible generator.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The child: creates a ring, hands the consumer's descriptors over, and
/// writes frames until it is killed.
#[test]
#[ignore = "run in a child process by the other tests of this file"]
fn child() {
    let (role, _) = ring_support::role();
    assert_eq!(role, "endless-producer");
    let socket = ring_support::parent_socket();
    let config = RingConfig::new(MIN_CAPACITY).with_max_frame(MAX_FRAME);
    let (mut producer, fds) = Producer::create(&config).unwrap();
    send_fds(&socket, &fds);
    drop(fds);
    let frames = Frames::new(MAX_FRAME);
    for i in 0.. {
        let len = frames.len(i);
        let mut claim = producer.claim(len, far()).expect("claim");
        frames.fill(i, &mut claim);
        claim.commit_with_flags(len, i as u16);
    }
}

fn shm_entries() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Lines of this process's descriptors and mappings that name a ring memfd.
fn own_ring_memory() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy().into_owned();
            if target.contains("daemoneye-ring") {
                found.push(format!("fd {:?} -> {target}", entry.file_name()));
            }
        }
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    found.extend(
        maps.lines()
            .filter(|line| line.contains("daemoneye-ring"))
            .map(str::to_owned),
    );
    found
}

/// What one run saw.
struct Outcome {
    frames: u64,
    /// From the pidfd saying the producer is dead to the reader's error.
    report_after: Duration,
}

fn one_run(run: u64, rng: &mut u64) -> Outcome {
    let peer = spawn("child", "endless-producer", "");
    let pid = Pid::from_raw(peer.child.id() as i32);
    let fds = recv_fds(&peer.socket);
    let data = File::from(fds.data.try_clone().unwrap());
    let mut consumer = Consumer::attach(fds, WaitStrategy::default()).unwrap();
    consumer.watch_peer(PidFd::open(peer.child.id()).unwrap());

    // Learning the producer is dead: a thread blocked on another pidfd.
    let (dead_tx, dead_rx) = mpsc::channel();
    let watcher = PidFd::open(peer.child.id()).unwrap();
    thread::spawn(move || {
        let exited = watcher.wait_exit(Duration::from_secs(60)).unwrap();
        let _ = dead_tx.send(exited.then(Instant::now));
    });

    let by_reader = next(rng) % 2 == 0;
    let kill_after_frames = next(rng) % 20_000;
    if !by_reader {
        let delay = Duration::from_micros(next(rng) % 20_000);
        // The sleep is the random moment itself, not a synchronisation.
        thread::spawn(move || {
            thread::sleep(delay);
            kill(pid, Signal::SIGKILL).expect("kill producer");
        });
    }

    let frames = Frames::new(MAX_FRAME);
    let mut read = 0u64;
    let end = loop {
        if by_reader && read == kill_after_frames {
            kill(pid, Signal::SIGKILL).expect("kill producer");
        }
        let got = consumer.read(far(), |frame| {
            frames.check(read, frame.bytes(), frame.flags())
        });
        match got {
            Ok(Ok(())) => read += 1,
            Ok(Err(what)) => panic!("run {run}: corrupt frame after kill: {what}"),
            Err(err) => break (err, Instant::now()),
        }
    };
    let (err, ended) = end;
    let died = dead_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("watcher thread")
        .expect("producer did not die");
    assert!(
        matches!(err, RingError::PeerGone | RingError::Closed),
        "run {run}: reader ended with {err:?} after {read} frames"
    );
    // Everything the producer published was read: nothing lost. A frame is
    // published by its header word, and the producer position follows it:
    // a producer killed between the two leaves one complete frame (checked
    // above) past the position it stored.
    let mut published = [0u8; 8];
    data.read_exact_at(&mut published, PRODUCER_POSITION_OFFSET as u64)
        .unwrap();
    let published = u64::from_ne_bytes(published);
    let ahead = consumer.position().checked_sub(published);
    assert!(
        ahead.is_some_and(|ahead| ahead <= frame_size(MAX_FRAME) as u64),
        "run {run}: read to {}, producer position {published}",
        consumer.position()
    );
    let status = peer.wait(Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(Signal::SIGKILL as i32),
        "run {run}: producer was not killed: {status}"
    );
    Outcome {
        frames: read,
        report_after: ended.saturating_duration_since(died),
    }
}

#[test]
fn killed_producer_never_tears_a_frame() {
    let shm_before = shm_entries();
    let started = Instant::now();
    let mut rng = SEED;
    let mut total = 0;
    let mut slowest = Duration::ZERO;
    for run in 0..RUNS {
        let outcome = one_run(run, &mut rng);
        assert!(
            outcome.report_after <= REPORT_WITHIN,
            "run {run}: peer reported gone {:?} after it died",
            outcome.report_after
        );
        total += outcome.frames;
        slowest = slowest.max(outcome.report_after);
    }
    println!(
        "{RUNS} kills, {total} frames checked, slowest report {slowest:?}, {:?} in all",
        started.elapsed()
    );
    let leaked: Vec<_> = shm_entries().difference(&shm_before).cloned().collect();
    let ours: Vec<_> = leaked
        .iter()
        .filter(|name| name.contains("daemoneye") || name.contains("ring"))
        .collect();
    assert!(ours.is_empty(), "left in /dev/shm: {ours:?}");
    assert!(
        own_ring_memory().is_empty(),
        "ring memory still open or mapped: {:?}",
        own_ring_memory()
    );
}
