//! Every offset and constant of the ring's two shared regions, in one place.
//!
//! The **producer region** is one memfd, written only by the producer. The
//! consumer gets a read-only descriptor of it (and the memfd is sealed with
//! `F_SEAL_FUTURE_WRITE`), so nothing in it can be changed by the consumer.
//!
//! ```text
//!  producer region (DATA_OFFSET + capacity bytes)
//!  offset  line                      field (native-endian)
//!  ------  ------------------------  --------------------------------------
//!       0  header                    magic          u64  "DEYERING"
//!       8                            version        u32  LAYOUT_VERSION
//!      12                            data offset    u32  DATA_OFFSET
//!      16                            capacity       u64  power of two
//!      24                            largest frame  u64  payload bytes
//!     128  producer position         position       u64  bytes ever published
//!     256  producer close            closed         u32  0 open, 1 closed
//!     384  data                      capacity bytes of frames, then wrap
//! ```
//!
//! The **consumer region** is a second, small memfd. The consumer maps it
//! read-write and the producer maps it too: it is the only memory the
//! producer reads from the consumer, and the only memory both sides write.
//! The consumer alone writes its position, closed flag and attach word; the
//! two futex words are written by both (each is a park/wake hint, never
//! trusted for anything else).
//!
//! ```text
//!  consumer region (CONTROL_LEN bytes)
//!  offset  line                      field
//!  ------  ------------------------  --------------------------------------
//!       0  consumer position         position       u64  bytes ever released
//!     128  consumer waiter           futex word     u32  IDLE or PARKED
//!     256  producer waiter           futex word     u32  IDLE or PARKED
//!     384  consumer close            closed         u32  0 open, 1 closed
//!     388                            attached       u32  0 free, 1 taken
//! ```
//!
//! Each line is a [`CachePadded`] (128 bytes on x86-64 and aarch64), so a
//! word one side writes often never shares a cache line with a word the
//! other side writes. The offsets above are those of x86-64; the header
//! records [`DATA_OFFSET`] so that two builds that disagree are caught.
//!
//! Positions are monotonic `u64` byte counters that never wrap in practice
//! (2^64 bytes); a position's place in the data area is
//! `position & (capacity - 1)`. A frame is an 8-byte [`FrameHeader`] word and
//! its payload, padded to a multiple of [`FRAME_ALIGN`]:
//!
//! ```text
//!  frame header word (u64):  bits  0..32  payload length
//!                            bits 32..48  user flags (the caller's)
//!                            bits 48..56  kind: 1 data, 2 padding
//!                            bits 56..64  reserved, zero
//!  FRAME_EMPTY (0):          no frame here yet
//! ```
//!
//! A frame never splits across the end of the data area: when it does not
//! fit before the end, a padding frame fills the rest and the frame starts
//! at offset 0.
//!
//! The header word is what publishes a frame: the consumer polls the word
//! at its own position, so a hand-off moves the frame's first cache line
//! and nothing else. The word at the producer position is always
//! [`FRAME_EMPTY`]: the producer stores `FRAME_EMPTY` just past a frame (at
//! offset 0 for padding) before it stores the frame's header word with
//! Release, and the consumer cannot zero what it has read (its mapping is
//! read-only). So the word the consumer polls is either empty or the header
//! of a complete frame, never bytes from an earlier lap. Each frame
//! therefore needs one word of free room past its end.
//!
//! ```text
//!   consumer position        producer position
//!        v                        v
//!   ... [hdr|payload..][hdr|payload....][EMPTY|free ...........] ...
//! ```
//!
//! The producer position is stored after the header words it covers. The
//! consumer does not need it to read; it checks it when the ring looks empty
//! before parking (see `Consumer::audit`).
//!
//! [`FrameHeader`]: super::FrameHeader

use crossbeam_utils::CachePadded;
use std::mem::{offset_of, size_of};

use super::sync::{AtomicU32, AtomicU64, FutexWord};

/// The first word of the producer region: `"DEYERING"` read as a
/// little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"DEYERING");
/// The version of this layout. Bumped on any change to this file.
pub const LAYOUT_VERSION: u32 = 2;

/// The smallest data area: 64 KiB. (32 bytes under `cfg(loom)`, whose
/// models run frames through a ring of four words.)
pub const MIN_CAPACITY: usize = if cfg!(loom) { 32 } else { 64 << 10 };
/// The largest data area: 1 GiB.
pub const MAX_CAPACITY: usize = 1 << 30;
/// The default data area: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// Bytes of the header word in front of every frame.
pub const FRAME_HEADER_LEN: usize = 8;
/// Every frame starts and ends on a multiple of this.
pub const FRAME_ALIGN: usize = 8;

/// Bit shift of the user flags in a frame header word.
pub const FRAME_FLAGS_SHIFT: u32 = 32;
/// Bit shift of the kind in a frame header word.
pub const FRAME_KIND_SHIFT: u32 = 48;
/// Bit shift of the reserved byte (must be zero) in a frame header word.
pub const FRAME_RESERVED_SHIFT: u32 = 56;
/// Frame kind: a payload for the consumer.
pub const KIND_DATA: u8 = 1;
/// Frame kind: filler up to the end of the data area, skipped by the
/// consumer.
pub const KIND_PADDING: u8 = 2;

/// A frame header word that holds no frame yet (no valid header is zero: its
/// kind is never 0).
pub const FRAME_EMPTY: u64 = 0;

/// Futex word value: the side that owns this word is not parked.
pub const IDLE: u32 = 0;
/// Futex word value: the side that owns this word is parked, or about to
/// park, and wants a wake-up.
pub const PARKED: u32 = 1;

/// The header line of the producer region.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) magic: AtomicU64,
    pub(crate) version: AtomicU32,
    pub(crate) data_offset: AtomicU32,
    pub(crate) capacity: AtomicU64,
    pub(crate) max_frame: AtomicU64,
}

/// Everything of the producer region before the data area.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ProducerLines {
    pub(crate) header: CachePadded<Header>,
    pub(crate) position: CachePadded<AtomicU64>,
    pub(crate) closed: CachePadded<AtomicU32>,
}

/// The consumer's close line.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct CloseLine {
    pub(crate) closed: AtomicU32,
    pub(crate) attached: AtomicU32,
}

/// The whole consumer region.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ConsumerLines {
    pub(crate) position: CachePadded<AtomicU64>,
    pub(crate) consumer_wait: CachePadded<FutexWord>,
    pub(crate) producer_wait: CachePadded<FutexWord>,
    pub(crate) close: CachePadded<CloseLine>,
}

/// Offset of the magic in the producer region.
pub const MAGIC_OFFSET: usize = offset_of!(ProducerLines, header) + offset_of!(Header, magic);
/// Offset of the layout version in the producer region.
pub const VERSION_OFFSET: usize = offset_of!(ProducerLines, header) + offset_of!(Header, version);
/// Offset of the recorded data offset in the producer region.
pub const DATA_OFFSET_OFFSET: usize =
    offset_of!(ProducerLines, header) + offset_of!(Header, data_offset);
/// Offset of the capacity in the producer region.
pub const CAPACITY_OFFSET: usize = offset_of!(ProducerLines, header) + offset_of!(Header, capacity);
/// Offset of the largest frame in the producer region.
pub const MAX_FRAME_OFFSET: usize =
    offset_of!(ProducerLines, header) + offset_of!(Header, max_frame);
/// Offset of the producer position in the producer region.
pub const PRODUCER_POSITION_OFFSET: usize = offset_of!(ProducerLines, position);
/// Offset of the producer's closed flag in the producer region.
pub const PRODUCER_CLOSED_OFFSET: usize = offset_of!(ProducerLines, closed);
/// Offset of the data area in the producer region.
pub const DATA_OFFSET: usize = size_of::<ProducerLines>();

/// Offset of the consumer position in the consumer region.
pub const CONSUMER_POSITION_OFFSET: usize = offset_of!(ConsumerLines, position);
/// Offset of the consumer's futex word in the consumer region.
pub const CONSUMER_WAIT_OFFSET: usize = offset_of!(ConsumerLines, consumer_wait);
/// Offset of the producer's futex word in the consumer region.
pub const PRODUCER_WAIT_OFFSET: usize = offset_of!(ConsumerLines, producer_wait);
/// Offset of the consumer's closed flag in the consumer region.
pub const CONSUMER_CLOSED_OFFSET: usize =
    offset_of!(ConsumerLines, close) + offset_of!(CloseLine, closed);
/// Offset of the consumer's attach word in the consumer region.
pub const CONSUMER_ATTACHED_OFFSET: usize =
    offset_of!(ConsumerLines, close) + offset_of!(CloseLine, attached);
/// Size of the consumer region.
pub const CONTROL_LEN: usize = size_of::<ConsumerLines>();

/// The size of the producer region for a data area of `capacity` bytes.
pub const fn data_region_len(capacity: usize) -> usize {
    DATA_OFFSET + capacity
}

/// The largest payload a ring of `capacity` bytes accepts: a frame may take
/// at most half the data area, so that one always fits once the consumer has
/// caught up, however the free space is split by the wrap. (Padding before
/// it is at most half minus a word, which leaves exactly the word for the
/// empty header after it.)
pub const fn max_frame_limit(capacity: usize) -> usize {
    capacity / 2 - FRAME_HEADER_LEN
}

/// Bytes a frame with a payload of `len` bytes takes in the data area:
/// header plus payload, rounded up to [`FRAME_ALIGN`].
pub const fn frame_size(len: usize) -> usize {
    (FRAME_HEADER_LEN + len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

// Atomics in the mappings must sit at offsets aligned for them, and the data
// area (and so every frame header word) at a multiple of 8.
const _: () = assert!(DATA_OFFSET % FRAME_ALIGN == 0);
const _: () = assert!(PRODUCER_POSITION_OFFSET % 8 == 0 && CONSUMER_POSITION_OFFSET % 8 == 0);
const _: () = assert!(MIN_CAPACITY.is_power_of_two() && MAX_CAPACITY.is_power_of_two());
// The recorded data offset must fit its u32 field.
const _: () = assert!(DATA_OFFSET <= u32::MAX as usize);
// The largest payload length must fit the frame header's 32-bit length.
const _: () = assert!(max_frame_limit(MAX_CAPACITY) <= u32::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn offsets_match_the_diagram() {
        assert_eq!(MAGIC_OFFSET, 0);
        assert_eq!(VERSION_OFFSET, 8);
        assert_eq!(DATA_OFFSET_OFFSET, 12);
        assert_eq!(CAPACITY_OFFSET, 16);
        assert_eq!(MAX_FRAME_OFFSET, 24);
        assert_eq!(PRODUCER_POSITION_OFFSET, 128);
        assert_eq!(PRODUCER_CLOSED_OFFSET, 256);
        assert_eq!(DATA_OFFSET, 384);
        assert_eq!(CONSUMER_POSITION_OFFSET, 0);
        assert_eq!(CONSUMER_WAIT_OFFSET, 128);
        assert_eq!(PRODUCER_WAIT_OFFSET, 256);
        assert_eq!(CONSUMER_CLOSED_OFFSET, 384);
        assert_eq!(CONSUMER_ATTACHED_OFFSET, 388);
        assert_eq!(CONTROL_LEN, 512);
        // The producer region: the header lines, then the data area.
        assert_eq!(data_region_len(4096), 384 + 4096);
    }

    #[test]
    fn magic_spells_the_name() {
        assert_eq!(&MAGIC.to_le_bytes(), b"DEYERING");
    }

    #[test]
    fn frame_sizes_are_aligned() {
        assert_eq!(frame_size(0), 8);
        assert_eq!(frame_size(1), 16);
        assert_eq!(frame_size(8), 16);
        assert_eq!(frame_size(9), 24);
        for len in 0..100 {
            assert_eq!(frame_size(len) % FRAME_ALIGN, 0);
            assert!(frame_size(len) >= len + FRAME_HEADER_LEN);
            assert!(frame_size(len) < len + FRAME_HEADER_LEN + FRAME_ALIGN);
        }
    }

    #[test]
    fn largest_frame_takes_at_most_half() {
        for shift in 16..=30 {
            let capacity = 1usize << shift;
            assert_eq!(frame_size(max_frame_limit(capacity)), capacity / 2);
        }
    }
}
