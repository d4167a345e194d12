//! Decoding hostile input allocates no more than the codec's cap, and the
//! agent's view path allocates nothing per record: a counting global
//! allocator measures what each decode asks for, and how often.
//!
//! Only the test's own thread is counted (a const thread-local flag), so the
//! harness's other threads (and an in-process procmond's) do not disturb the
//! figures.

mod child_support;
mod collector_support;
mod common;
mod server_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use collector_support::{Running, TempDir};
use daemoneye_lib::client::Agent;
use daemoneye_lib::codec::{Codec, CodecError};
use daemoneye_lib::proto::limits::MAX_TASK_BYTES;
use daemoneye_lib::proto::{DetectionResult, DetectionTask, ProtoProcessFilter};
use daemoneye_lib::ring::{self, Consumer, RingConfig};
use daemoneye_lib::server::{Server, ServerConfig};
use daemoneye_lib::session::{ChunkReader, ProcessRecordView, RecordKind, ResultWriter};
use server_support::Serving;

/// A cap of 4 GiB, or as much as a 32-bit `usize` holds.
#[cfg(target_pointer_width = "64")]
const HUGE_CAP: usize = 4 << 30;
#[cfg(not(target_pointer_width = "64"))]
const HUGE_CAP: usize = usize::MAX;

struct Counting;

thread_local! {
    /// Whether this thread's allocations are being counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Bytes this thread asked for while counting.
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    /// Allocations (and reallocations) this thread made while counting.
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

fn note(bytes: usize) {
    // `try_with`: during thread teardown the slots may be gone; not counting
    // then is fine.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATED.try_with(|total| total.set(total.get().saturating_add(bytes)));
            let _ = CALLS.try_with(|calls| calls.set(calls.get() + 1));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the bookkeeping touches only
// const-initialised thread-locals of `Cell`s, which never allocate (no
// recursion into the allocator) and need no destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract (non-zero size), which
        // is all `System.alloc` needs.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`,
        // with `layout`; the caller upholds the rest of `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this allocator)
        // with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its value, the bytes it asked to allocate and how
/// many allocations it made.
fn counted<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    ALLOCATED.with(|a| a.set(0));
    CALLS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let value = f();
    COUNTING.with(|c| c.set(false));
    (value, ALLOCATED.with(Cell::get), CALLS.with(Cell::get))
}

/// Runs `f` and returns its value and the bytes it asked to allocate.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let (value, bytes, _) = counted(f);
    (value, bytes)
}

/// Runs `f` and returns its value and how many allocations it made.
fn allocations_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let (value, _, calls) = counted(f);
    (value, calls)
}

#[test]
fn sixteen_bytes_claiming_two_gib_allocate_at_most_the_cap() {
    let mut input = vec![0x80, 0x80, 0x80, 0x80, 0x08]; // varint 2^31
    input.resize(16, 0x0a);
    assert_eq!(input.len(), 16);

    let codec = Codec::new(MAX_TASK_BYTES);
    let (result, bytes) = allocated_by(|| codec.decode_length_delimited::<DetectionTask>(&input));
    assert_eq!(
        result,
        Err(CodecError::Oversize {
            len: 1 << 31,
            max: MAX_TASK_BYTES
        })
    );
    assert!(bytes <= codec.max_message_len(), "allocated {bytes} bytes");
    assert_eq!(bytes, 0, "refused before allocating anything");

    // A codec whose cap would allow 2 GiB still allocates nothing for it:
    // the input is only 16 bytes.
    let generous = Codec::new(HUGE_CAP);
    let (result, bytes) =
        allocated_by(|| generous.decode_length_delimited::<DetectionResult>(&input));
    assert!(matches!(result, Err(CodecError::Truncated { needed, .. }) if needed == 1 << 31));
    assert_eq!(bytes, 0);
}

/// The counter sees real allocations, so the zeros above mean something.
#[test]
fn counter_counts_a_real_decode() {
    let codec = Codec::new(MAX_TASK_BYTES);
    let bytes = codec
        .encode_length_delimited(&DetectionTask::new_enumerate_processes(
            "x".repeat(100),
            None,
        ))
        .unwrap();
    let (task, allocated) = allocated_by(|| codec.decode_length_delimited::<DetectionTask>(&bytes));
    assert_eq!(task.unwrap().0.task_id.len(), 100);
    assert!(allocated >= 100, "allocated {allocated} bytes");
}

#[test]
fn nested_field_claiming_two_gib_allocates_little() {
    // DetectionResult.task_id (field 1) whose length claims 2 GiB, in 16 bytes.
    let mut input = vec![0x0a, 0x80, 0x80, 0x80, 0x80, 0x08];
    input.resize(16, b'x');
    let codec = Codec::new(HUGE_CAP);
    let (result, bytes) = allocated_by(|| codec.decode::<DetectionResult>(&input));
    assert!(matches!(result, Err(CodecError::Malformed(_))));
    // prost's error keeps a short description (a few hundred bytes at most).
    assert!(bytes < 1024, "allocated {bytes} bytes");
}

const WAIT: Duration = Duration::from_secs(20);

/// Reads every field of a view, as a consumer of it would.
fn touch(view: &ProcessRecordView<'_>) -> usize {
    let args: usize = view.command_line().map(str::len).sum();
    let strings = [
        view.executable_path(),
        view.executable_hash(),
        view.hash_algorithm(),
        view.user_id(),
    ];
    view.pid() as usize
        + view.name().len()
        + args
        + strings.iter().flatten().map(|s| s.len()).sum::<usize>()
        + view.memory_usage().unwrap_or(0) as usize
        + usize::from(view.accessible())
}

/// Writes one stream of `n` records in a single frame.
fn write_frame(producer: &mut ring::Producer, n: u32) {
    let mut writer = ResultWriter::new(producer, "t", WAIT);
    for pid in 0..n {
        writer
            .push(RecordKind::Result, common::worker(pid))
            .unwrap();
    }
    assert_eq!(writer.finish().unwrap().frames, 1);
}

/// Reads a frame and every field of every record through the views;
/// returns the number of records.
fn view_frame(reader: &mut ChunkReader, consumer: &mut Consumer) -> usize {
    let deadline = Instant::now() + WAIT;
    let chunk = reader.read_view(consumer, deadline).unwrap();
    let mut records = 0;
    for view in chunk.result.processes() {
        black_box(touch(&view));
        records += 1;
    }
    records
}

/// The agent's view path allocates nothing per record: once its buffer has
/// grown to a frame, checking and viewing a 1,000-record frame allocates as
/// often as a 1-record frame: never. The owned path, for comparison,
/// allocates for every string of every record.
#[test]
fn viewing_a_frame_allocates_nothing_per_record() {
    let config = RingConfig::new(1 << 20).with_max_frame(256 << 10);
    let (mut producer, mut consumer) = ring::pair(&config).unwrap();
    for n in [1000, 1, 1000, 1000] {
        write_frame(&mut producer, n);
    }
    let mut reader = ChunkReader::new();
    // The first frame grows the reader's buffers (the copy, the notes).
    assert_eq!(view_frame(&mut reader, &mut consumer), 1000);

    let (one, one_calls) = allocations_by(|| view_frame(&mut reader, &mut consumer));
    let (thousand, thousand_calls) = allocations_by(|| view_frame(&mut reader, &mut consumer));
    assert_eq!((one, thousand), (1, 1000));
    assert_eq!(
        one_calls, thousand_calls,
        "allocations for 1 record: {one_calls}, for 1,000: {thousand_calls}"
    );
    assert_eq!(thousand_calls, 0);
    eprintln!("view path: {one_calls} allocations for 1 record, {thousand_calls} for 1,000");

    // The counter sees the owned path's allocations: per record its name,
    // path and user id, the argument vector and its 4 arguments.
    let (chunk, owned_calls) =
        allocations_by(|| reader.read(&mut consumer, Instant::now() + WAIT).unwrap());
    assert_eq!(chunk.result.processes.len(), 1000);
    assert!(owned_calls >= 1000 * 8, "owned: {owned_calls} allocations");
    eprintln!("owned path: {owned_calls} allocations for 1,000 records");
}

fn pids(children: &[Running]) -> Option<ProtoProcessFilter> {
    Some(ProtoProcessFilter {
        process_names: vec![],
        pids: children.iter().map(|c| c.pid).collect(),
        executable_pattern: None,
    })
}

/// The same through the client, against a real procmond (in-process, real
/// socket, ring and /proc) enumerating 200 real children: reading every
/// record with `Records::next_view` allocates nothing per record. The
/// agent's frame buffer may grow once if a frame is larger than any before
/// (CPU usage appears on a later poll), so three polls of 200 records
/// allocate at most once in all; a poll of one record never does.
#[test]
fn an_agents_record_views_allocate_nothing_per_record() {
    let dir = TempDir::new("view-alloc");
    let serving =
        Serving::start(Server::bind(ServerConfig::new(dir.join("procmond.sock"))).unwrap());
    let children: Vec<Running> = (0..200)
        .map(|_| Running::spawn(Command::new("/usr/bin/sleep").arg("1000")))
        .collect();
    let mut agent = Agent::connect(serving.server.socket_path()).unwrap();

    let view_all = |agent: &mut Agent, filter| {
        let mut records = agent.enumerate(filter, false).unwrap();
        let ((n, sum), calls) = allocations_by(|| {
            let (mut n, mut sum) = (0, 0);
            while let Some(view) = records.next_view() {
                sum += touch(&view.unwrap());
                n += 1;
            }
            (n, sum)
        });
        black_box(sum);
        (n, calls)
    };
    // Warm-up: the agent's buffer grows to the frame's size.
    assert_eq!(view_all(&mut agent, pids(&children)).0, 200);
    let polls: Vec<_> = (0..3)
        .map(|_| view_all(&mut agent, pids(&children)))
        .collect();
    assert!(polls.iter().all(|&(n, _)| n == 200), "{polls:?}");
    let calls: usize = polls.iter().map(|&(_, calls)| calls).sum();
    assert!(
        calls <= 1,
        "three polls of 200 views allocated {calls} times"
    );
    eprintln!("client views: {calls} allocations in three polls of 200 records");
    assert_eq!(view_all(&mut agent, pids(&children[..1])), (1, 0));

    // The owned iterator, for comparison, allocates for every record.
    let mut records = agent.enumerate(pids(&children), false).unwrap();
    let (n, owned_calls) = allocations_by(|| {
        records
            .by_ref()
            .map(|record| black_box(record.unwrap()).pid)
            .fold(0, |n, _| n + 1)
    });
    drop(records);
    assert_eq!(n, 200);
    assert!(owned_calls >= 200 * 3, "owned: {owned_calls} allocations");
    eprintln!("client owned: {owned_calls} allocations for 200 records");

    drop(agent);
    drop(children);
    serving.stop();
}
