//! Decoding hostile input allocates no more than the codec's cap: a counting
//! global allocator measures what each decode asks for.
//!
//! Only the test's own thread is counted (a const thread-local flag), so the
//! harness's other threads do not disturb the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use daemoneye_lib::codec::{Codec, CodecError};
use daemoneye_lib::proto::limits::MAX_TASK_BYTES;
use daemoneye_lib::proto::{DetectionResult, DetectionTask};

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
}

fn note(bytes: usize) {
    // `try_with`: during thread teardown the slots may be gone; not counting
    // then is fine.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATED.try_with(|total| total.set(total.get().saturating_add(bytes)));
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

/// Runs `f` and returns its value and the bytes it asked to allocate.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATED.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let value = f();
    COUNTING.with(|c| c.set(false));
    (value, ALLOCATED.with(Cell::get))
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
