//! The ring's error types.
//!
//! Peer-controlled memory that breaks the protocol gives
//! [`CorruptKind`], which names what was wrong. A corrupt ring cannot be
//! trusted again: end the session.

use std::fmt;
use std::io;

/// One of the ring's two shared regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The producer region: header, producer position, frames.
    Data,
    /// The consumer region: consumer position, futex words, consumer close.
    Control,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Region::Data => "producer (data) region",
            Region::Control => "consumer (control) region",
        })
    }
}

/// One of the two positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// The producer's: bytes published.
    Producer,
    /// The consumer's: bytes released.
    Consumer,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Position::Producer => "producer position",
            Position::Consumer => "consumer position",
        })
    }
}

/// What was wrong with shared memory or descriptors the peer controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorruptKind {
    /// The producer region does not start with [`MAGIC`](super::layout::MAGIC).
    #[error("bad magic {found:#018x}")]
    BadMagic {
        /// The word found.
        found: u64,
    },
    /// The layout version is not this build's.
    #[error("layout version {found}, expected {expected}")]
    BadVersion {
        /// The version found.
        found: u32,
        /// This build's version.
        expected: u32,
    },
    /// The recorded data offset is not this build's (a build with another
    /// cache-line size).
    #[error("data offset {found}, expected {expected}")]
    BadDataOffset {
        /// The offset found.
        found: u32,
        /// This build's offset.
        expected: u32,
    },
    /// The capacity is not a power of two between 64 KiB and 1 GiB.
    #[error("capacity {found} is not a power of two between 64 KiB and 1 GiB")]
    BadCapacity {
        /// The capacity found.
        found: u64,
    },
    /// The largest frame is zero or more than the capacity allows.
    #[error("largest frame {found} is not between 1 and {limit}")]
    BadMaxFrame {
        /// The largest frame found.
        found: u64,
        /// The most this capacity allows.
        limit: u64,
    },
    /// A region's file has a size no ring has.
    #[error("{region} is {found} bytes, expected {expected}")]
    RegionSize {
        /// Which region.
        region: Region,
        /// Its size.
        found: u64,
        /// The size it should have (for the data region before its header is
        /// read: the largest allowed).
        expected: u64,
    },
    /// A region's file lacks seals the reader relies on (without
    /// `F_SEAL_SHRINK` the peer could truncate it and kill the reader with
    /// `SIGBUS`).
    #[error("{region} lacks seals {missing:#x}")]
    MissingSeals {
        /// Which region.
        region: Region,
        /// The missing `F_SEAL_*` bits.
        missing: u32,
    },
    /// A position is lower than a value it had before.
    #[error("{position} moved backwards from {was} to {now}")]
    PositionBackwards {
        /// Which position.
        position: Position,
        /// What it was.
        was: u64,
        /// What it is now.
        now: u64,
    },
    /// A position at attach is so large that counting on from it could
    /// overflow (an honest ring starts at 0, and 2^63 bytes more would take
    /// years even at 100 GB/s).
    #[error("{position} {value} is beyond 2^63")]
    PositionTooLarge {
        /// Which position.
        position: Position,
        /// Its value.
        value: u64,
    },
    /// A position is not a multiple of the frame alignment.
    #[error("{position} {value} is not 8-byte aligned")]
    PositionMisaligned {
        /// Which position.
        position: Position,
        /// Its value.
        value: u64,
    },
    /// The producer claims more unread bytes than the ring holds.
    #[error(
        "producer position {producer} is more than {capacity} bytes past consumer position {consumer}"
    )]
    ProducerOverrun {
        /// Producer position.
        producer: u64,
        /// Consumer position.
        consumer: u64,
        /// Capacity.
        capacity: u64,
    },
    /// The consumer claims to have read bytes never published.
    #[error("consumer position {consumer} is past producer position {producer}")]
    ConsumerOverrun {
        /// Producer position.
        producer: u64,
        /// Consumer position.
        consumer: u64,
    },
    /// A frame header word has an unknown kind, or a padding frame has
    /// flags.
    #[error("frame header {word:#018x} has a bad kind")]
    FrameKind {
        /// The header word.
        word: u64,
    },
    /// A frame header word has its reserved byte set.
    #[error("frame header {word:#018x} has reserved bits set")]
    FrameReserved {
        /// The header word.
        word: u64,
    },
    /// A data frame is longer than the largest frame.
    #[error("frame at {position} has {len} bytes, more than the largest frame {max}")]
    FrameTooLong {
        /// Position of the frame.
        position: u64,
        /// Its payload length.
        len: u64,
        /// The largest frame.
        max: u64,
    },
    /// The producer position says a frame is published where the header
    /// word is still empty (the producer stores a frame's header word before
    /// the position that covers it).
    #[error("producer position {published} covers position {position}, whose header word is empty")]
    FrameUnpublished {
        /// Where the empty header word is.
        position: u64,
        /// The producer position.
        published: u64,
    },
    /// A data frame runs past the end of the data area (frames never split).
    #[error("frame at {position} of {size} bytes crosses the end of the ring")]
    FrameCrossesEnd {
        /// Position of the frame.
        position: u64,
        /// Bytes the frame takes.
        size: u64,
    },
    /// A padding frame does not end exactly at the end of the data area, or
    /// starts at its beginning.
    #[error("padding frame at {position} of {len} bytes does not end at the end of the ring")]
    BadPadding {
        /// Position of the frame.
        position: u64,
        /// Its filler length.
        len: u64,
    },
}

/// Errors of [`Producer::try_claim`](super::Producer::try_claim) and
/// [`Producer::try_write`](super::Producer::try_write).
#[derive(Debug, thiserror::Error)]
pub enum TryClaimError {
    /// No room now: the consumer has not released enough.
    #[error("ring full")]
    Full,
    /// The frame is larger than the ring's largest frame.
    #[error("frame of {len} bytes is larger than the largest frame, {max}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The largest frame.
        max: usize,
    },
    /// The ring is closed (by this side or the consumer).
    #[error("ring closed")]
    Closed,
    /// The consumer region breaks the protocol.
    #[error("corrupt ring: {0}")]
    Corrupt(#[from] CorruptKind),
}

/// Errors of [`Consumer::try_read`](super::Consumer::try_read) and
/// [`Consumer::try_read_batch`](super::Consumer::try_read_batch).
#[derive(Debug, thiserror::Error)]
pub enum TryReadError {
    /// No frame published now.
    #[error("ring empty")]
    Empty,
    /// The ring is closed: by this side, or by the producer and every frame
    /// it published has been read.
    #[error("ring closed")]
    Closed,
    /// The peer was marked gone ([`Closer::mark_peer_gone`](super::Closer::mark_peer_gone))
    /// and every frame it published has been read.
    #[error("the producer is gone")]
    PeerGone,
    /// The producer region breaks the protocol.
    #[error("corrupt ring: {0}")]
    Corrupt(#[from] CorruptKind),
}

/// Errors of the ring's constructors and blocking calls.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The ring is closed. For the consumer: by this side, or by the
    /// producer and every frame it published has been read. For the
    /// producer: by either side.
    #[error("ring closed")]
    Closed,
    /// The peer process exited without closing the ring (seen through the
    /// pidfd given to `watch_peer`).
    #[error("peer process is gone")]
    PeerGone,
    /// The deadline passed first.
    #[error("deadline passed")]
    TimedOut,
    /// The frame is larger than the ring's largest frame.
    #[error("frame of {len} bytes is larger than the largest frame, {max}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The largest frame.
        max: usize,
    },
    /// Shared memory or descriptors from the peer break the protocol.
    #[error("corrupt ring: {0}")]
    Corrupt(#[from] CorruptKind),
    /// A [`RingConfig`](super::RingConfig) field is out of range.
    #[error("invalid ring config: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What is allowed.
        reason: &'static str,
    },
    /// The consumer region already has a consumer attached.
    #[error("a consumer is already attached to this ring")]
    AlreadyAttached,
    /// A message did not fit the bytes its own `encoded_len` asked for.
    #[error("message needed {required} bytes, {remaining} were claimed")]
    EncodeOverflow {
        /// Bytes the encoder needed.
        required: usize,
        /// Bytes it had.
        remaining: usize,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl RingError {
    pub(crate) fn sys(op: &'static str) -> impl FnOnce(io::Error) -> RingError {
        move |source| RingError::Sys { op, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_was_wrong() {
        let err = RingError::from(CorruptKind::PositionBackwards {
            position: Position::Producer,
            was: 64,
            now: 8,
        });
        assert_eq!(
            err.to_string(),
            "corrupt ring: producer position moved backwards from 64 to 8"
        );
        let err = CorruptKind::MissingSeals {
            region: Region::Data,
            missing: 2,
        };
        assert_eq!(err.to_string(), "producer (data) region lacks seals 0x2");
    }
}
