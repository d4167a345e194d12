//! Creating, mapping and validating the ring's two shared regions, and the
//! small safe API the producer and consumer use to touch them.
//!
//! This is the only module of `ring` with `unsafe` code. It turns the two
//! mappings into typed views: the fixed lines as `&ProducerLines` /
//! `&ConsumerLines` (all atomics), a frame header as `&AtomicU64`, and a
//! payload as `&[u8]` (consumer) or `&mut [u8]` (producer). Every offset and
//! length is bounds-checked here, so no caller mistake can reach outside a
//! mapping; the producer and consumer validate peer-controlled values first
//! and turn bad ones into [`CorruptKind`] errors before they get here.
//!
//! Under `cfg(loom)` the two regions are typed objects on the heap instead
//! ([`heap_pair`], for `tests/loom_ring.rs`): loom's atomics cannot live in
//! a mapping. Everything above this module runs unchanged over them.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::error::{CorruptKind, Region, RingError};
#[cfg(not(loom))]
use super::layout::CONTROL_LEN;
use super::layout::{
    ConsumerLines, DATA_OFFSET, FRAME_ALIGN, LAYOUT_VERSION, MAGIC, MAX_CAPACITY, MIN_CAPACITY,
    ProducerLines, data_region_len, max_frame_limit,
};
use super::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
use crate::sys::memfd::{self, Access, Mapping, Seals};

/// The two descriptors a consumer needs, as the control channel passes them
/// (with `SCM_RIGHTS`) from the producer's process to the consumer's.
#[derive(Debug)]
pub struct ConsumerFds {
    /// The producer region, opened read-only (and sealed against new
    /// writable mappings): the consumer cannot change anything in it.
    pub data: OwnedFd,
    /// The consumer region, read-write.
    pub control: OwnedFd,
}

/// Which side of the ring a process holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Producer,
    Consumer,
}

/// Seals every region must carry before a peer maps it: without
/// `F_SEAL_SHRINK` the creator could truncate the file and kill the reader
/// with `SIGBUS`; without `F_SEAL_GROW` its size would mean nothing.
#[cfg(not(loom))]
const REQUIRED_SEALS: Seals = Seals::SHRINK.union(Seals::GROW);

/// Both mappings of one ring, as one side sees them. Shared (through an
/// `Arc`) by a side and its closers, so the memory outlives every borrow.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The producer region: read-write for the producer, read-only for the
    /// consumer.
    #[cfg(not(loom))]
    data: Mapping,
    /// The consumer region: read-write for both.
    #[cfg(not(loom))]
    control: Mapping,
    /// Both regions, on the heap, shared by the two sides.
    #[cfg(loom)]
    heap: Arc<heap::Regions>,
    side: Side,
    capacity: usize,
    max_frame: usize,
    /// Set in this process (never in shared memory) when something outside
    /// the ring, such as the control socket's end, says the peer is gone.
    peer_gone: AtomicBool,
}

#[cfg(not(loom))]
impl Shared {
    /// The producer region's fixed lines. The consumer's mapping is
    /// read-only: only the producer side may store through this.
    #[inline]
    pub(crate) fn producer_lines(&self) -> &ProducerLines {
        // SAFETY: the data mapping is page-aligned (so aligned for
        // `ProducerLines`, whose alignment is a cache line) and at least
        // `DATA_OFFSET = size_of::<ProducerLines>()` bytes long (checked when
        // it was created or attached). `ProducerLines` is `repr(C)` and made
        // only of atomics, for which every bit pattern is valid, and atomics
        // may be shared with other threads and processes that change them.
        // The mapping lives as long as `self`.
        unsafe { &*self.data.as_ptr().cast::<ProducerLines>() }
    }

    /// The consumer region. Both sides map it read-write.
    #[inline]
    pub(crate) fn consumer_lines(&self) -> &ConsumerLines {
        // SAFETY: as for `producer_lines`: the control mapping is
        // page-aligned, `CONTROL_LEN = size_of::<ConsumerLines>()` bytes
        // long (checked), `ConsumerLines` is `repr(C)` atomics only, and the
        // mapping lives as long as `self`. Both sides map it read-write, so
        // stores through it are allowed on either side.
        unsafe { &*self.control.as_ptr().cast::<ConsumerLines>() }
    }

    /// The frame header word at `offset`, which [`Shared::frame_word`] has
    /// checked.
    #[inline]
    fn frame_word_at(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: the data area starts `DATA_OFFSET` bytes (a multiple of 8)
        // into a page-aligned mapping of `DATA_OFFSET + capacity` bytes;
        // `offset` is a multiple of 8 below `capacity`, so the 8 bytes at
        // `DATA_OFFSET + offset` lie inside the mapping and are aligned for
        // an `AtomicU64`. Any bit pattern is a valid `u64`, and the word is
        // only ever accessed atomically by this process (the producer stores
        // it, the consumer loads it), so sharing it is sound. It lives as
        // long as `self`.
        unsafe {
            &*self
                .data
                .as_ptr()
                .add(DATA_OFFSET + offset)
                .cast::<AtomicU64>()
        }
    }

    /// The data area from `offset`, which [`Shared::data_range`] has
    /// checked.
    #[inline]
    fn data_at(&self, offset: usize) -> *mut u8 {
        // SAFETY: `DATA_OFFSET + offset <= DATA_OFFSET + capacity`, the
        // mapping's length, so the pointer stays inside (or one past) the
        // mapping.
        unsafe { self.data.as_ptr().add(DATA_OFFSET + offset) }
    }
}

/// The same four accessors over the heap regions.
#[cfg(loom)]
impl Shared {
    #[inline]
    pub(crate) fn producer_lines(&self) -> &ProducerLines {
        &self.heap.producer
    }

    #[inline]
    pub(crate) fn consumer_lines(&self) -> &ConsumerLines {
        &self.heap.consumer
    }

    #[inline]
    fn frame_word_at(&self, offset: usize) -> &AtomicU64 {
        &self.heap.words[offset / FRAME_ALIGN]
    }

    #[inline]
    fn data_at(&self, offset: usize) -> *mut u8 {
        self.heap.bytes_at(offset)
    }
}

impl Shared {
    /// This side's closed flag: the only word of the closed state this side
    /// writes.
    #[inline]
    pub(crate) fn own_closed(&self) -> &AtomicU32 {
        match self.side {
            Side::Producer => &self.producer_lines().closed,
            Side::Consumer => &self.consumer_lines().close.closed,
        }
    }

    /// Whether this is the producer's side.
    pub(crate) fn is_producer(&self) -> bool {
        matches!(self.side, Side::Producer)
    }

    /// The process-local "peer gone" mark (see `Closer::mark_peer_gone`).
    #[inline]
    pub(crate) fn peer_gone(&self) -> &AtomicBool {
        &self.peer_gone
    }

    /// The peer's closed flag.
    #[inline]
    pub(crate) fn peer_closed(&self) -> &AtomicU32 {
        match self.side {
            Side::Producer => &self.consumer_lines().close.closed,
            Side::Consumer => &self.producer_lines().closed,
        }
    }

    /// Data area bytes (a power of two).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest payload.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The frame header word at `offset` in the data area.
    ///
    /// # Panics
    /// If `offset` is not a multiple of 8 below the capacity (a bug in the
    /// caller, which derives offsets from its own position).
    #[inline]
    fn frame_word(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset % FRAME_ALIGN == 0 && offset < self.capacity,
            "frame offset {offset} outside the data area"
        );
        self.frame_word_at(offset)
    }

    /// `len` bytes of the data area from `offset`, checked to lie inside it.
    #[inline]
    fn data_range(&self, offset: usize, len: usize) -> *mut u8 {
        assert!(
            offset <= self.capacity && len <= self.capacity - offset,
            "byte range {offset}+{len} outside the data area"
        );
        self.data_at(offset)
    }
}

/// The producer's write access to the data area. There is exactly one per
/// ring (made by [`create`], not `Clone`), so `&mut self` makes its mutable
/// borrows exclusive within the producer's process.
#[derive(Debug)]
pub(crate) struct DataWriter {
    shared: Arc<Shared>,
}

impl DataWriter {
    #[inline]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The frame header word at `offset` (see [`Shared::frame_word`]).
    #[inline]
    pub(crate) fn frame_word(&self, offset: usize) -> &AtomicU64 {
        self.shared.frame_word(offset)
    }

    /// The producer's view of bytes it has claimed but not yet published.
    ///
    /// # Panics
    /// If the range leaves the data area.
    #[inline]
    pub(crate) fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        let ptr = self.shared.data_range(offset, len);
        #[cfg(loom)]
        self.shared.heap.record(offset, len, heap::Access::Read);
        // SAFETY: the range lies inside the live read-write mapping
        // (checked by `data_range`). The producer only asks for bytes it has
        // claimed: bytes between its own position and the consumer's
        // position plus the capacity, which the consumer never reads (an
        // honest one reads only frames whose header word it has seen
        // published, and the producer stores that word last) and cannot
        // write (its mapping is read-only and the memfd is sealed with
        // F_SEAL_FUTURE_WRITE). The only writer is this process, through
        // `bytes_mut` on this same `DataWriter`, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// The producer's mutable view of claimed bytes.
    ///
    /// # Panics
    /// If the range leaves the data area.
    #[inline]
    pub(crate) fn bytes_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        let ptr = self.shared.data_range(offset, len);
        #[cfg(loom)]
        self.shared.heap.record(offset, len, heap::Access::Write);
        // SAFETY: as for `bytes`: inside the live read-write mapping, and no
        // one else writes or (honestly) reads these bytes until the producer
        // publishes them. `&mut self` on the only `DataWriter` of this
        // mapping makes the borrow exclusive in this process.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}

/// The consumer's read access to the data area. One per attached consumer.
#[derive(Debug)]
pub(crate) struct DataReader {
    shared: Arc<Shared>,
}

impl DataReader {
    #[inline]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The frame header word at `offset` (see [`Shared::frame_word`]).
    #[inline]
    pub(crate) fn frame_word(&self, offset: usize) -> &AtomicU64 {
        self.shared.frame_word(offset)
    }

    /// Bytes of a published frame.
    ///
    /// # Panics
    /// If the range leaves the data area.
    #[inline]
    pub(crate) fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        let ptr = self.shared.data_range(offset, len);
        #[cfg(loom)]
        self.shared.heap.record(offset, len, heap::Access::Read);
        // SAFETY: the range lies inside the live read-only mapping (checked
        // by `data_range`), and `u8` has no invalid values. The consumer
        // only asks for bytes of a frame whose header word it loaded with
        // Acquire (the producer stores it with Release after the payload),
        // which an honest producer no longer writes until the consumer
        // releases them (it re-reads the consumer position, with Acquire,
        // before reusing space). A hostile producer could change
        // them under the borrow; that can only change the values seen (plain
        // bytes, read through a mapping of fixed size, sealed against
        // shrinking), never the range, whose bounds come from header copies
        // already validated.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// Creates both regions of a new ring and maps them for the producer.
///
/// The data memfd is sealed against shrinking and growing before it is
/// mapped, then, once the producer holds its read-write mapping, against any
/// future write access (`F_SEAL_FUTURE_WRITE`) and further seals. The
/// consumer's descriptor of it is a read-only reopening: the consumer can
/// neither map it writable nor get a writable descriptor through `/proc`.
#[cfg(not(loom))]
pub(crate) fn create(
    capacity: usize,
    max_frame: usize,
) -> Result<(DataWriter, ConsumerFds), RingError> {
    let data_len = data_region_len(capacity);
    let data_fd = memfd::create("daemoneye-ring", data_len as u64)
        .map_err(RingError::sys("memfd_create (producer region)"))?;
    memfd::add_seals(&data_fd, REQUIRED_SEALS)
        .map_err(RingError::sys("seal producer region size"))?;
    let data = Mapping::map(&data_fd, data_len, Access::ReadWrite)
        .map_err(RingError::sys("mmap producer region"))?;
    memfd::add_seals(&data_fd, Seals::FUTURE_WRITE | Seals::SEAL)
        .map_err(RingError::sys("seal producer region writes"))?;
    let data_ro =
        memfd::reopen_read_only(&data_fd).map_err(RingError::sys("reopen producer region"))?;

    let control_fd = memfd::create("daemoneye-ring-control", CONTROL_LEN as u64)
        .map_err(RingError::sys("memfd_create (consumer region)"))?;
    memfd::add_seals(&control_fd, REQUIRED_SEALS | Seals::SEAL)
        .map_err(RingError::sys("seal consumer region"))?;
    let control = Mapping::map(&control_fd, CONTROL_LEN, Access::ReadWrite)
        .map_err(RingError::sys("mmap consumer region"))?;

    let shared = Arc::new(Shared {
        data,
        control,
        side: Side::Producer,
        capacity,
        max_frame,
        peer_gone: AtomicBool::new(false),
    });
    // A fresh memfd reads as zeros: both positions 0, both futex words IDLE,
    // both closed flags clear, no consumer attached. Only the header needs
    // writing.
    write_header(shared.producer_lines(), capacity, max_frame);

    Ok((
        DataWriter { shared },
        ConsumerFds {
            data: data_ro,
            control: control_fd,
        },
    ))
}

/// Maps a ring from the descriptors a producer handed out, checking
/// everything the producer controls: seals, sizes, magic, version, data
/// offset, capacity and largest frame. Marks the consumer region attached,
/// so a second consumer is refused.
#[cfg(not(loom))]
pub(crate) fn attach(fds: &ConsumerFds) -> Result<DataReader, RingError> {
    check_seals(&fds.data, Region::Data)?;
    let data_len = memfd::len(&fds.data).map_err(RingError::sys("fstat producer region"))?;
    let (min, max) = (
        data_region_len(MIN_CAPACITY) as u64,
        data_region_len(MAX_CAPACITY) as u64,
    );
    if data_len < min || data_len > max {
        return Err(CorruptKind::RegionSize {
            region: Region::Data,
            found: data_len,
            expected: max,
        }
        .into());
    }
    // In range, so it fits a usize (at most 1 GiB plus the header).
    let data_len = data_len as usize;
    let data = Mapping::map(&fds.data, data_len, Access::ReadOnly)
        .map_err(RingError::sys("mmap producer region"))?;

    check_seals(&fds.control, Region::Control)?;
    let control_len = memfd::len(&fds.control).map_err(RingError::sys("fstat consumer region"))?;
    if control_len != CONTROL_LEN as u64 {
        return Err(CorruptKind::RegionSize {
            region: Region::Control,
            found: control_len,
            expected: CONTROL_LEN as u64,
        }
        .into());
    }
    let control = Mapping::map(&fds.control, CONTROL_LEN, Access::ReadWrite)
        .map_err(RingError::sys("mmap consumer region"))?;

    // Capacity and largest frame are filled in once the header checks out.
    let mut shared = Shared {
        data,
        control,
        side: Side::Consumer,
        capacity: 0,
        max_frame: 0,
        peer_gone: AtomicBool::new(false),
    };
    let (capacity, max_frame) = check_header(shared.producer_lines(), data_len)?;
    shared.capacity = capacity;
    shared.max_frame = max_frame;
    take_attach(shared.consumer_lines())?;
    Ok(DataReader {
        shared: Arc::new(shared),
    })
}

/// No memfd rings under loom: [`heap_pair`] makes the only rings there.
#[cfg(loom)]
pub(crate) fn create(
    _capacity: usize,
    _max_frame: usize,
) -> Result<(DataWriter, ConsumerFds), RingError> {
    Err(heap::unsupported())
}

/// No memfd rings under loom: [`heap_pair`] makes the only rings there.
#[cfg(loom)]
pub(crate) fn attach(_fds: &ConsumerFds) -> Result<DataReader, RingError> {
    Err(heap::unsupported())
}

/// Under loom: a new ring's two regions on the heap and both sides' access
/// to them, the header written and checked as [`create`] and [`attach`] do
/// with a memfd.
#[cfg(loom)]
pub(crate) fn heap_pair(
    capacity: usize,
    max_frame: usize,
) -> Result<(DataWriter, DataReader), RingError> {
    let heap = Arc::new(heap::Regions::new(capacity));
    let producer = Shared {
        heap: Arc::clone(&heap),
        side: Side::Producer,
        capacity,
        max_frame,
        peer_gone: AtomicBool::new(false),
    };
    write_header(producer.producer_lines(), capacity, max_frame);
    let mut consumer = Shared {
        heap,
        side: Side::Consumer,
        capacity: 0,
        max_frame: 0,
        peer_gone: AtomicBool::new(false),
    };
    let (capacity, max_frame) = check_header(consumer.producer_lines(), data_region_len(capacity))?;
    consumer.capacity = capacity;
    consumer.max_frame = max_frame;
    take_attach(consumer.consumer_lines())?;
    Ok((
        DataWriter {
            shared: Arc::new(producer),
        },
        DataReader {
            shared: Arc::new(consumer),
        },
    ))
}

/// The ring's two regions as typed objects on the heap, for loom.
#[cfg(loom)]
mod heap {
    use std::cell::UnsafeCell;

    use crossbeam_utils::CachePadded;

    use super::super::layout::{
        CloseLine, ConsumerLines, FRAME_ALIGN, FRAME_EMPTY, Header, IDLE, ProducerLines,
    };
    use super::super::sync::{AtomicU32, AtomicU64, FutexWord};
    use super::RingError;

    /// What a payload access does.
    #[derive(Clone, Copy)]
    pub(crate) enum Access {
        Read,
        Write,
    }

    /// Both regions, zeroed as a fresh memfd is.
    ///
    /// The data area is two things here: its 8-byte words as frame header
    /// words (loom atomics, `words`), and its bytes as payload (plain
    /// memory, `bytes`, as in the mapping). Each payload access is recorded
    /// on a loom cell per word it covers (`access`), so loom reports a read
    /// and a write of the same word that the protocol does not order, as it
    /// would a data race. (In the mapping a payload write also overwrites
    /// the header word it covers; the ring never reads a header word there
    /// before storing it again, which the models check through the values
    /// they read.)
    pub(crate) struct Regions {
        pub(crate) producer: ProducerLines,
        pub(crate) consumer: ConsumerLines,
        pub(crate) words: Box<[AtomicU64]>,
        bytes: Box<[UnsafeCell<u8>]>,
        access: Box<[loom::cell::UnsafeCell<()>]>,
    }

    // SAFETY: everything but `bytes` is loom's atomics, locks and cells,
    // made to be shared. `bytes` is reached only through `bytes_at`, by the
    // one `DataWriter` (which hands out `&mut` slices only through `&mut
    // self`) and the one `DataReader`, for ranges the ring's protocol gives
    // each in turn; `record` has loom check that hand-over on every access.
    unsafe impl Sync for Regions {}
    // SAFETY: as above; nothing in it is tied to a thread.
    unsafe impl Send for Regions {}

    impl std::fmt::Debug for Regions {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Regions")
                .field("producer", &self.producer)
                .field("consumer", &self.consumer)
                .finish_non_exhaustive()
        }
    }

    impl Regions {
        pub(crate) fn new(capacity: usize) -> Regions {
            let words = capacity / FRAME_ALIGN;
            Regions {
                producer: ProducerLines {
                    header: CachePadded::new(Header {
                        magic: AtomicU64::new(0),
                        version: AtomicU32::new(0),
                        data_offset: AtomicU32::new(0),
                        capacity: AtomicU64::new(0),
                        max_frame: AtomicU64::new(0),
                    }),
                    position: CachePadded::new(AtomicU64::new(0)),
                    closed: CachePadded::new(AtomicU32::new(0)),
                },
                consumer: ConsumerLines {
                    position: CachePadded::new(AtomicU64::new(0)),
                    consumer_wait: CachePadded::new(FutexWord::new(IDLE)),
                    producer_wait: CachePadded::new(FutexWord::new(IDLE)),
                    close: CachePadded::new(CloseLine {
                        closed: AtomicU32::new(0),
                        attached: AtomicU32::new(0),
                    }),
                },
                words: (0..words).map(|_| AtomicU64::new(FRAME_EMPTY)).collect(),
                bytes: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
                access: (0..words)
                    .map(|_| loom::cell::UnsafeCell::new(()))
                    .collect(),
            }
        }

        /// The data area's bytes from `offset` (at most the capacity,
        /// checked by the caller).
        pub(crate) fn bytes_at(&self, offset: usize) -> *mut u8 {
            // The cell at `offset`, or one past the end; the slice's pointer
            // carries the whole allocation's provenance.
            UnsafeCell::raw_get(self.bytes.as_ptr().wrapping_add(offset))
        }

        /// Records an access to the `len` payload bytes at `offset` with
        /// loom, on the cell of each word they touch.
        pub(crate) fn record(&self, offset: usize, len: usize, access: Access) {
            let words = offset / FRAME_ALIGN..(offset + len).div_ceil(FRAME_ALIGN);
            for cell in &self.access[words] {
                match access {
                    Access::Read => cell.with(|_| ()),
                    Access::Write => cell.with_mut(|_| ()),
                }
            }
        }
    }

    pub(crate) fn unsupported() -> RingError {
        RingError::Sys {
            op: "memfd rings under loom (use ring::pair)",
            source: std::io::ErrorKind::Unsupported.into(),
        }
    }
}

/// Writes a new ring's header into its producer region. Relaxed for the
/// fields and Release for the magic: the consumer reads them only after
/// receiving the descriptor (a system call later), so any order would do;
/// writing the magic last keeps a half-written header recognisable anyway.
fn write_header(lines: &ProducerLines, capacity: usize, max_frame: usize) {
    let header = &lines.header;
    header.version.store(LAYOUT_VERSION, Ordering::Relaxed);
    header
        .data_offset
        .store(DATA_OFFSET as u32, Ordering::Relaxed);
    header.capacity.store(capacity as u64, Ordering::Relaxed);
    header.max_frame.store(max_frame as u64, Ordering::Relaxed);
    header.magic.store(MAGIC, Ordering::Release);
}

/// Takes the consumer region's attach word, or `AlreadyAttached`.
fn take_attach(lines: &ConsumerLines) -> Result<(), RingError> {
    // AcqRel: a successful attach orders after any earlier consumer's use of
    // this region; the flag itself guards nothing else.
    if lines.close.attached.swap(1, Ordering::AcqRel) != 0 {
        return Err(RingError::AlreadyAttached);
    }
    Ok(())
}

/// Checks the header the producer wrote against this build and against the
/// region's size; returns the capacity and largest frame.
fn check_header(lines: &ProducerLines, data_len: usize) -> Result<(usize, usize), CorruptKind> {
    let header = &lines.header;
    // Acquire on the magic pairs with the producer's Release store of it, so
    // the fields below are the ones written with it. (The descriptor passing
    // already ordered them; this keeps the argument local.) The fields are
    // plain values read once each, so Relaxed.
    let magic = header.magic.load(Ordering::Acquire);
    if magic != MAGIC {
        return Err(CorruptKind::BadMagic { found: magic });
    }
    let version = header.version.load(Ordering::Relaxed);
    if version != LAYOUT_VERSION {
        return Err(CorruptKind::BadVersion {
            found: version,
            expected: LAYOUT_VERSION,
        });
    }
    let data_offset = header.data_offset.load(Ordering::Relaxed);
    if data_offset as usize != DATA_OFFSET {
        return Err(CorruptKind::BadDataOffset {
            found: data_offset,
            expected: DATA_OFFSET as u32,
        });
    }
    let capacity = header.capacity.load(Ordering::Relaxed);
    let valid = capacity.is_power_of_two()
        && capacity >= MIN_CAPACITY as u64
        && capacity <= MAX_CAPACITY as u64;
    if !valid {
        return Err(CorruptKind::BadCapacity { found: capacity });
    }
    // At most 1 GiB: fits a usize.
    let capacity = capacity as usize;
    if data_region_len(capacity) != data_len {
        return Err(CorruptKind::RegionSize {
            region: Region::Data,
            found: data_len as u64,
            expected: data_region_len(capacity) as u64,
        });
    }
    let max_frame = header.max_frame.load(Ordering::Relaxed);
    let limit = max_frame_limit(capacity) as u64;
    if max_frame == 0 || max_frame > limit {
        return Err(CorruptKind::BadMaxFrame {
            found: max_frame,
            limit,
        });
    }
    Ok((capacity, max_frame as usize))
}

#[cfg(not(loom))]
fn check_seals(fd: &OwnedFd, region: Region) -> Result<(), RingError> {
    let seals = memfd::seals(fd).map_err(RingError::sys(match region {
        Region::Data => "F_GET_SEALS on producer region (not a memfd?)",
        Region::Control => "F_GET_SEALS on consumer region (not a memfd?)",
    }))?;
    let missing = REQUIRED_SEALS.difference(seals);
    if !missing.is_empty() {
        return Err(CorruptKind::MissingSeals {
            region,
            missing: missing.bits(),
        }
        .into());
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    const CAP: usize = MIN_CAPACITY;

    fn attach_err(fds: &ConsumerFds) -> RingError {
        attach(fds).expect_err("attach should fail")
    }

    #[test]
    fn create_then_attach_agree() {
        let (writer, fds) = create(CAP, 1000).unwrap();
        let reader = attach(&fds).unwrap();
        assert_eq!(reader.shared().capacity(), CAP);
        assert_eq!(reader.shared().max_frame(), 1000);
        assert_eq!(reader.shared().side, Side::Consumer);
        assert_eq!(writer.shared().side, Side::Producer);
        // A word the producer stores is seen through the consumer's mapping.
        writer.frame_word(64).store(0xABCD, Ordering::Relaxed);
        assert_eq!(reader.frame_word(64).load(Ordering::Relaxed), 0xABCD);
    }

    #[test]
    fn consumer_descriptor_cannot_be_made_writable() {
        let (_writer, fds) = create(CAP, 1000).unwrap();
        let len = data_region_len(CAP);
        // Not by mapping it writable...
        let err = Mapping::map(&fds.data, len, Access::ReadWrite).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::ACCESS.raw_os_error())
        );
        // ...nor by opening it again for writing through /proc (the memfd
        // is sealed against future writes)...
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fds.data)
        );
        let reopened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let err = Mapping::map(&reopened, len, Access::ReadWrite).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::PERM.raw_os_error())
        );
        assert!(reopened.write_at(b"x", 0).is_err());
        // ...nor by truncating it.
        assert!(rustix::fs::ftruncate(&reopened, 0).is_err());
        // It maps read-only.
        Mapping::map(&fds.data, len, Access::ReadOnly).unwrap();
    }

    #[test]
    fn second_consumer_is_refused() {
        let (_writer, fds) = create(CAP, 1000).unwrap();
        let _first = attach(&fds).unwrap();
        assert!(matches!(attach_err(&fds), RingError::AlreadyAttached));
    }

    /// A region built by hand, as a hostile producer would: unsealed
    /// memfds the test can write with `pwrite`.
    fn hand_made(data_len: usize, seal: bool) -> (ConsumerFds, File) {
        let data = memfd::create("hostile", data_len as u64).unwrap();
        let control = memfd::create("hostile-control", CONTROL_LEN as u64).unwrap();
        if seal {
            memfd::add_seals(&data, REQUIRED_SEALS).unwrap();
            memfd::add_seals(&control, REQUIRED_SEALS).unwrap();
        }
        let file = File::from(data.try_clone().unwrap());
        (ConsumerFds { data, control }, file)
    }

    fn write_header(file: &File, magic: u64, version: u32, capacity: u64, max_frame: u64) {
        use super::super::layout::*;
        file.write_all_at(&magic.to_ne_bytes(), MAGIC_OFFSET as u64)
            .unwrap();
        file.write_all_at(&version.to_ne_bytes(), VERSION_OFFSET as u64)
            .unwrap();
        file.write_all_at(
            &(DATA_OFFSET as u32).to_ne_bytes(),
            DATA_OFFSET_OFFSET as u64,
        )
        .unwrap();
        file.write_all_at(&capacity.to_ne_bytes(), CAPACITY_OFFSET as u64)
            .unwrap();
        file.write_all_at(&max_frame.to_ne_bytes(), MAX_FRAME_OFFSET as u64)
            .unwrap();
    }

    #[test]
    fn hand_made_valid_header_attaches() {
        let (fds, file) = hand_made(data_region_len(CAP), true);
        write_header(&file, MAGIC, LAYOUT_VERSION, CAP as u64, 64);
        attach(&fds).unwrap();
    }

    #[test]
    fn unsealed_regions_are_refused() {
        let (fds, file) = hand_made(data_region_len(CAP), false);
        write_header(&file, MAGIC, LAYOUT_VERSION, CAP as u64, 64);
        assert!(matches!(
            attach_err(&fds),
            RingError::Corrupt(CorruptKind::MissingSeals {
                region: Region::Data,
                ..
            })
        ));
    }

    #[test]
    fn bad_headers_are_refused() {
        type Case = (u64, u32, u64, u64, fn(&CorruptKind) -> bool);
        // Each capacity rule alone: a power of two, at least the least, at
        // most the most (each of these would otherwise fail on the size).
        const NOT_A_POWER: u64 = 3 * MIN_CAPACITY as u64;
        const TOO_SMALL: u64 = MIN_CAPACITY as u64 / 2;
        const TOO_LARGE: u64 = 2 * MAX_CAPACITY as u64;
        let cases: [Case; 9] = [
            (0, LAYOUT_VERSION, CAP as u64, 64, |k| {
                matches!(k, CorruptKind::BadMagic { found: 0 })
            }),
            (MAGIC, 99, CAP as u64, 64, |k| {
                matches!(k, CorruptKind::BadVersion { found: 99, .. })
            }),
            (MAGIC, LAYOUT_VERSION, CAP as u64 - 8, 64, |k| {
                matches!(k, CorruptKind::BadCapacity { .. })
            }),
            (MAGIC, LAYOUT_VERSION, NOT_A_POWER, 64, |k| {
                matches!(k, CorruptKind::BadCapacity { found: NOT_A_POWER })
            }),
            (MAGIC, LAYOUT_VERSION, TOO_SMALL, 64, |k| {
                matches!(k, CorruptKind::BadCapacity { found: TOO_SMALL })
            }),
            (MAGIC, LAYOUT_VERSION, TOO_LARGE, 64, |k| {
                matches!(k, CorruptKind::BadCapacity { found: TOO_LARGE })
            }),
            (MAGIC, LAYOUT_VERSION, 2 * CAP as u64, 64, |k| {
                matches!(
                    k,
                    CorruptKind::RegionSize {
                        region: Region::Data,
                        ..
                    }
                )
            }),
            (MAGIC, LAYOUT_VERSION, CAP as u64, 0, |k| {
                matches!(k, CorruptKind::BadMaxFrame { found: 0, .. })
            }),
            (MAGIC, LAYOUT_VERSION, CAP as u64, CAP as u64, |k| {
                matches!(k, CorruptKind::BadMaxFrame { .. })
            }),
        ];
        for (magic, version, capacity, max_frame, expected) in cases {
            let (fds, file) = hand_made(data_region_len(CAP), true);
            write_header(&file, magic, version, capacity, max_frame);
            match attach_err(&fds) {
                RingError::Corrupt(kind) => assert!(expected(&kind), "unexpected {kind:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        // A region outside the sizes a ring can have is refused before it
        // is mapped, against the largest size (not the header's).
        let largest = data_region_len(MAX_CAPACITY);
        for len in [0, 4096, largest + 4096] {
            let (fds, file) = hand_made(len, true);
            if len >= DATA_OFFSET {
                write_header(&file, MAGIC, LAYOUT_VERSION, CAP as u64, 64);
            }
            let err = attach_err(&fds);
            assert!(
                matches!(
                    err,
                    RingError::Corrupt(CorruptKind::RegionSize {
                        region: Region::Data,
                        found,
                        expected,
                    }) if found == len as u64 && expected == largest as u64
                ),
                "length {len}: {err:?}"
            );
        }
        // The largest ring itself attaches (sparse: nothing is touched but
        // the header).
        let (fds, file) = hand_made(largest, true);
        write_header(&file, MAGIC, LAYOUT_VERSION, MAX_CAPACITY as u64, 64);
        let reader = attach(&fds).unwrap();
        assert_eq!(reader.shared().capacity(), MAX_CAPACITY);
        // A consumer region of the wrong size.
        let data = memfd::create("d", data_region_len(CAP) as u64).unwrap();
        memfd::add_seals(&data, REQUIRED_SEALS).unwrap();
        write_header(
            &File::from(data.try_clone().unwrap()),
            MAGIC,
            LAYOUT_VERSION,
            CAP as u64,
            64,
        );
        let control = memfd::create("c", 64).unwrap();
        memfd::add_seals(&control, REQUIRED_SEALS).unwrap();
        let fds = ConsumerFds { data, control };
        assert!(matches!(
            attach_err(&fds),
            RingError::Corrupt(CorruptKind::RegionSize {
                region: Region::Control,
                found: 64,
                ..
            })
        ));
    }

    #[test]
    fn a_plain_file_is_not_a_ring() {
        let file = File::open("/proc/self/status").unwrap();
        let control = memfd::create("c", CONTROL_LEN as u64).unwrap();
        let fds = ConsumerFds {
            data: file.into(),
            control,
        };
        assert!(matches!(attach_err(&fds), RingError::Sys { .. }));
    }

    #[test]
    #[should_panic(expected = "outside the data area")]
    fn out_of_range_bytes_panic_instead_of_reading() {
        let (writer, _fds) = create(CAP, 1000).unwrap();
        writer.bytes(CAP - 4, 8);
    }
}
