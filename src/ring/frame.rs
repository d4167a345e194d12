//! The frame header word, and the view of a frame the consumer hands out.
//!
//! A frame header is one 8-byte word (see the diagram in
//! [`layout`](super::layout)): the payload length, the caller's 16 user
//! flags, and a kind (data or padding). It is written and read as a single
//! atomic `u64`, so the consumer copies it once, validates the copy and uses
//! only the copy, whatever the memory holds a moment later.

use super::error::CorruptKind;
use super::layout::{
    FRAME_FLAGS_SHIFT, FRAME_KIND_SHIFT, FRAME_RESERVED_SHIFT, KIND_DATA, KIND_PADDING,
};

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A payload for the consumer.
    Data,
    /// Filler up to the end of the data area; the consumer skips it.
    Padding,
}

/// A decoded frame header word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes after the header (for padding: filler bytes).
    pub len: u32,
    /// The caller's flags, carried unchanged (zero for padding).
    pub flags: u16,
    /// Data or padding.
    pub kind: FrameKind,
}

impl FrameHeader {
    /// The header of a data frame.
    #[inline]
    pub const fn data(len: u32, flags: u16) -> FrameHeader {
        FrameHeader {
            len,
            flags,
            kind: FrameKind::Data,
        }
    }

    /// The header of a padding frame of `len` filler bytes.
    #[inline]
    pub const fn padding(len: u32) -> FrameHeader {
        FrameHeader {
            len,
            flags: 0,
            kind: FrameKind::Padding,
        }
    }

    /// The header as the word stored in the ring.
    #[inline]
    pub const fn encode(self) -> u64 {
        let kind = match self.kind {
            FrameKind::Data => KIND_DATA,
            FrameKind::Padding => KIND_PADDING,
        };
        self.len as u64
            | (self.flags as u64) << FRAME_FLAGS_SHIFT
            | (kind as u64) << FRAME_KIND_SHIFT
    }

    /// Reads a word taken from the ring. Fails on an unknown kind, a
    /// non-zero reserved byte, or flags on a padding frame; lengths are
    /// checked by the caller, who knows the ring's bounds.
    #[inline]
    pub const fn decode(word: u64) -> Result<FrameHeader, CorruptKind> {
        let len = word as u32;
        let flags = (word >> FRAME_FLAGS_SHIFT) as u16;
        let kind = (word >> FRAME_KIND_SHIFT) as u8;
        let reserved = (word >> FRAME_RESERVED_SHIFT) as u8;
        if reserved != 0 {
            return Err(CorruptKind::FrameReserved { word });
        }
        match kind {
            KIND_DATA => Ok(FrameHeader::data(len, flags)),
            KIND_PADDING if flags == 0 => Ok(FrameHeader::padding(len)),
            _ => Err(CorruptKind::FrameKind { word }),
        }
    }
}

/// One frame, borrowed from the ring while the consumer's closure runs.
///
/// The bytes are the ring's own memory (no copy); the consumer releases them
/// to the producer only after the closure returns.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    bytes: &'a [u8],
    flags: u16,
}

impl<'a> Frame<'a> {
    #[inline]
    pub(crate) fn new(bytes: &'a [u8], flags: u16) -> Frame<'a> {
        Frame { bytes, flags }
    }

    /// The payload, exactly as many bytes as the producer committed.
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The flags the producer committed with the frame.
    #[inline]
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// Payload length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the payload is empty (an empty frame still carries flags).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for header in [
            FrameHeader::data(0, 0),
            FrameHeader::data(u32::MAX, u16::MAX),
            FrameHeader::data(12345, 0x8001),
            FrameHeader::padding(0),
            FrameHeader::padding(65528),
        ] {
            assert_eq!(FrameHeader::decode(header.encode()), Ok(header));
        }
    }

    #[test]
    fn zero_word_is_not_a_frame() {
        assert_eq!(
            FrameHeader::decode(0),
            Err(CorruptKind::FrameKind { word: 0 })
        );
    }

    #[test]
    fn bad_words_are_refused() {
        let reserved = FrameHeader::data(1, 2).encode() | 1 << 56;
        assert_eq!(
            FrameHeader::decode(reserved),
            Err(CorruptKind::FrameReserved { word: reserved })
        );
        let kind = 7u64 << FRAME_KIND_SHIFT;
        assert_eq!(
            FrameHeader::decode(kind),
            Err(CorruptKind::FrameKind { word: kind })
        );
        let flagged_padding = FrameHeader::padding(8).encode() | 1 << FRAME_FLAGS_SHIFT;
        assert_eq!(
            FrameHeader::decode(flagged_padding),
            Err(CorruptKind::FrameKind {
                word: flagged_padding
            })
        );
    }

    #[test]
    fn frame_view_reports_bytes_and_flags() {
        let bytes = [1u8, 2, 3];
        let frame = Frame::new(&bytes, 9);
        assert_eq!(frame.bytes(), &bytes);
        assert_eq!(frame.flags(), 9);
        assert_eq!(frame.len(), 3);
        assert!(!frame.is_empty());
    }
}
