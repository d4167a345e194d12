//! What can go wrong writing or reading a result stream.

use super::view::{ViewError, WireError};
use crate::proto::ValidationError;
use crate::ring::RingError;

/// A result stream failure, naming what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The ring failed: closed, peer gone, deadline passed, corrupt.
    #[error("result ring: {0}")]
    Ring(#[from] RingError),
    /// A frame's flags have reserved bits set.
    #[error("result frame flags {flags:#06x} have reserved bits set")]
    BadFlags {
        /// The flags.
        flags: u16,
    },
    /// A frame's bytes are not a `DetectionResult` (the protobuf encoding
    /// is broken where prost's decoder would fail too).
    #[error("result frame is not a valid DetectionResult: {0}")]
    Decode(#[from] WireError),
    /// A frame decodes but breaks the schema's rules.
    #[error("result frame breaks the schema's rules: {0}")]
    Invalid(#[from] ValidationError),
    /// A frame holds more records than one result may (the reader's one
    /// pass stops at the first record past the limit).
    #[error("result frame holds {count} or more records; at most {max} are allowed")]
    TooManyRecords {
        /// Records counted (counting stops one past `max`).
        count: usize,
        /// [`MAX_PROCESSES_PER_RESULT`](crate::proto::limits::MAX_PROCESSES_PER_RESULT).
        max: usize,
    },
    /// A frame belongs to a task this reader did not expect.
    #[error("result frame for task {got:?} while reading task {expected:?}")]
    WrongTask {
        /// The task being read.
        expected: String,
        /// The frame's task id (cut to 64 bytes).
        got: String,
    },
    /// A record does not fit in one frame even with its command line
    /// dropped.
    #[error(
        "the record of pid {pid} needs {len} bytes even without its command line; the largest frame is {max} bytes"
    )]
    RecordTooLarge {
        /// The record's pid.
        pid: u32,
        /// The bytes its frame would need.
        len: usize,
        /// The ring's largest frame.
        max: usize,
    },
    /// A whole result (such as a hash result) does not fit in one frame.
    #[error("a result of {len} bytes does not fit the largest frame of {max} bytes")]
    ResultTooLarge {
        /// Its encoded length.
        len: usize,
        /// The ring's largest frame.
        max: usize,
    },
}

impl From<ViewError> for SessionError {
    fn from(error: ViewError) -> Self {
        match error {
            ViewError::Wire(error) => SessionError::Decode(error),
            ViewError::Invalid(error) => SessionError::Invalid(error),
        }
    }
}
