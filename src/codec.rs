//! Encoding and decoding of any prost [`Message`] under an explicit size cap.
//!
//! A [`Codec`] holds the largest message it accepts. Every decode checks the
//! input (or the varint length prefix of a length-delimited message) against
//! that cap before it allocates anything; every encode checks the message's
//! encoded length before it writes. No input makes it panic: bad input is a
//! [`CodecError`].
//!
//! The length-delimited form is protobuf's usual framing (a varint length,
//! then the message), as prost's `encode_length_delimited` writes it.
//!
//! ```
//! use daemoneye_lib::codec::{Codec, CodecError};
//! use daemoneye_lib::proto::{limits, DetectionTask};
//!
//! let codec = Codec::new(limits::MAX_TASK_BYTES);
//! let task = DetectionTask::new_enumerate_processes("enum-001", None);
//!
//! // Into a caller's buffer (as the ring does), without allocating.
//! let mut buf = [0u8; 64];
//! let written = codec.encode_length_delimited_into(&task, &mut buf)?;
//! let (decoded, used) = codec.decode_length_delimited::<DetectionTask>(&buf[..written])?;
//! assert_eq!((decoded, used), (task, written));
//!
//! // A prefix claiming 2 GiB is refused before anything is allocated.
//! let hostile = [0x80, 0x80, 0x80, 0x80, 0x08];
//! assert!(matches!(
//!     codec.decode_length_delimited::<DetectionTask>(&hostile),
//!     Err(CodecError::Oversize { len: 0x8000_0000, .. })
//! ));
//! # Ok::<(), CodecError>(())
//! ```

use prost::Message;

/// Why a message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The message (or the length its prefix claims) is over the cap.
    #[error("message of {len} bytes is over the limit of {max} bytes")]
    Oversize {
        /// The message's length in bytes (as claimed, for a prefix).
        len: u64,
        /// The codec's cap.
        max: usize,
    },
    /// The input ends inside the varint length prefix.
    #[error("input ends inside the length prefix ({available} bytes)")]
    TruncatedPrefix {
        /// Bytes of input there were.
        available: usize,
    },
    /// The input is shorter than its length prefix says.
    #[error("input truncated: the length prefix says {needed} bytes, {available} are there")]
    Truncated {
        /// Bytes the prefix says follow it.
        needed: usize,
        /// Bytes that follow it.
        available: usize,
    },
    /// The length prefix is not a valid varint (over 10 bytes, or over 64 bits).
    #[error("malformed length prefix: not a valid varint")]
    MalformedPrefix,
    /// The bytes are not a valid encoding of the message.
    #[error("malformed message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The caller's buffer cannot hold the encoded message.
    #[error("buffer too small: {needed} bytes needed, {available} available")]
    BufferTooSmall {
        /// Bytes the encoding takes.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

/// The varint length prefix at the start of a length-delimited message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPrefix {
    /// Bytes of the prefix itself (1 to 10).
    pub prefix_len: usize,
    /// Bytes of the message after the prefix (at most the codec's cap).
    pub message_len: usize,
}

impl LengthPrefix {
    /// Bytes of prefix and message together.
    pub const fn total_len(&self) -> usize {
        self.prefix_len + self.message_len
    }
}

/// Longest varint: 64 bits in 7-bit groups.
const MAX_VARINT_BYTES: usize = 10;

/// Encodes and decodes prost messages of at most `max_message_len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    max_message_len: usize,
}

impl Codec {
    /// A codec for messages of at most `max_message_len` encoded bytes (the
    /// length prefix not counted). See [`crate::proto::limits`] for the
    /// project's caps.
    pub const fn new(max_message_len: usize) -> Self {
        Self { max_message_len }
    }

    /// The largest message this codec accepts, in bytes.
    pub const fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// `Oversize` if `len` is over the cap.
    fn check_len(&self, len: u64) -> Result<usize, CodecError> {
        match usize::try_from(len) {
            Ok(len) if len <= self.max_message_len => Ok(len),
            _ => Err(CodecError::Oversize {
                len,
                max: self.max_message_len,
            }),
        }
    }

    /// The message's encoded length, checked against the cap.
    fn checked_encoded_len(&self, message: &impl Message) -> Result<usize, CodecError> {
        self.check_len(message.encoded_len() as u64)
    }

    /// Encodes `message` into a new buffer of exactly its length.
    pub fn encode(&self, message: &impl Message) -> Result<Vec<u8>, CodecError> {
        let len = self.checked_encoded_len(message)?;
        let mut buf = Vec::with_capacity(len);
        self.write(message, &mut buf, len)?;
        Ok(buf)
    }

    /// Encodes `message` into the start of `buf` without allocating; returns
    /// the bytes written.
    pub fn encode_into(&self, message: &impl Message, buf: &mut [u8]) -> Result<usize, CodecError> {
        let len = self.checked_encoded_len(message)?;
        Self::fits(len, buf.len())?;
        let mut out = &mut buf[..];
        self.write(message, &mut out, len)?;
        Ok(len)
    }

    /// Encodes `message` with a varint length prefix into a new buffer.
    pub fn encode_length_delimited(&self, message: &impl Message) -> Result<Vec<u8>, CodecError> {
        let len = self.checked_encoded_len(message)?;
        let total = prost::length_delimiter_len(len) + len;
        let mut buf = Vec::with_capacity(total);
        self.write_length_delimited(message, &mut buf, total)?;
        Ok(buf)
    }

    /// Encodes `message` with a varint length prefix into the start of `buf`
    /// without allocating; returns the bytes written (prefix included).
    pub fn encode_length_delimited_into(
        &self,
        message: &impl Message,
        buf: &mut [u8],
    ) -> Result<usize, CodecError> {
        let len = self.checked_encoded_len(message)?;
        let total = prost::length_delimiter_len(len) + len;
        Self::fits(total, buf.len())?;
        let mut out = &mut buf[..];
        self.write_length_delimited(message, &mut out, total)?;
        Ok(total)
    }

    /// Decodes a message that is all of `bytes`.
    pub fn decode<M: Message + Default>(&self, bytes: &[u8]) -> Result<M, CodecError> {
        self.check_len(bytes.len() as u64)?;
        Ok(M::decode(bytes)?)
    }

    /// Reads the varint length prefix at the start of `bytes`: `Ok(None)` if
    /// `bytes` ends inside it (read more), `Oversize` if it claims more than
    /// the cap. Reads only the prefix, so a stream reader can learn how much
    /// to read next.
    pub fn length_prefix(&self, bytes: &[u8]) -> Result<Option<LengthPrefix>, CodecError> {
        let mut value: u64 = 0;
        for (i, &byte) in bytes.iter().take(MAX_VARINT_BYTES).enumerate() {
            let group = u64::from(byte & 0x7f);
            // The 10th byte holds bit 63 only.
            if i == MAX_VARINT_BYTES - 1 && group > 1 {
                return Err(CodecError::MalformedPrefix);
            }
            value |= group << (7 * i);
            if byte & 0x80 == 0 {
                let message_len = self.check_len(value)?;
                return Ok(Some(LengthPrefix {
                    prefix_len: i + 1,
                    message_len,
                }));
            }
        }
        if bytes.len() >= MAX_VARINT_BYTES {
            return Err(CodecError::MalformedPrefix);
        }
        Ok(None)
    }

    /// Decodes one length-delimited message from the start of `bytes`;
    /// returns it and the bytes it took (prefix included). Bytes after it are
    /// left for the caller.
    pub fn decode_length_delimited<M: Message + Default>(
        &self,
        bytes: &[u8],
    ) -> Result<(M, usize), CodecError> {
        let prefix = self
            .length_prefix(bytes)?
            .ok_or(CodecError::TruncatedPrefix {
                available: bytes.len(),
            })?;
        let body = &bytes[prefix.prefix_len..];
        let message = body
            .get(..prefix.message_len)
            .ok_or(CodecError::Truncated {
                needed: prefix.message_len,
                available: body.len(),
            })?;
        Ok((M::decode(message)?, prefix.total_len()))
    }

    fn fits(needed: usize, available: usize) -> Result<(), CodecError> {
        if needed > available {
            return Err(CodecError::BufferTooSmall { needed, available });
        }
        Ok(())
    }

    /// Writes `message` into `out`, which has room for `needed` bytes.
    fn write(
        &self,
        message: &impl Message,
        out: &mut impl prost::bytes::BufMut,
        needed: usize,
    ) -> Result<(), CodecError> {
        message.encode(out).map_err(|e| CodecError::BufferTooSmall {
            needed: e.required_capacity().max(needed),
            available: e.remaining(),
        })
    }

    /// Writes `message` length-delimited into `out`, which has room for
    /// `needed` bytes.
    fn write_length_delimited(
        &self,
        message: &impl Message,
        out: &mut impl prost::bytes::BufMut,
        needed: usize,
    ) -> Result<(), CodecError> {
        message
            .encode_length_delimited(out)
            .map_err(|e| CodecError::BufferTooSmall {
                needed: e.required_capacity().max(needed),
                available: e.remaining(),
            })
    }
}
