//! Every bound that validation ([`DetectionTask::validate`](super::DetectionTask::validate) and the
//! others) and callers of the [`codec`](crate::codec) enforce, in one place.
//!
//! Validation bounds what a message *means* (how many names in a filter, how
//! long a path); the encoded-size caps ([`MAX_TASK_BYTES`],
//! [`MAX_RESULT_BYTES`]) bound the bytes a decoder accepts before it allocates
//! anything. Any task that passes validation encodes within
//! [`MAX_TASK_BYTES`] (validation checks its encoded length, since the
//! per-field limits together allow far more), and so fits one control frame
//! with its envelope: [`MAX_TASK_BYTES`] + [`CONTROL_ENVELOPE_BYTES`] =
//! [`MAX_CONTROL_FRAME_BYTES`] (a test wraps the largest valid task in a
//! `ClientFrame` and checks it). Results are streamed in
//! chunks, so a valid result may be larger than one chunk: the producer splits
//! it, and each chunk stays within [`MAX_RESULT_BYTES`].
//!
//! Sizes of strings are in bytes of UTF-8, not characters.

/// Longest `task_id`, in bytes. It must also be non-empty.
pub const MAX_TASK_ID_BYTES: usize = 128;

/// Longest `DetectionTask.metadata`, in bytes.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;

/// Most entries in `ProcessFilter.process_names`.
pub const MAX_FILTER_NAMES: usize = 256;

/// Most entries in `ProcessFilter.pids`.
pub const MAX_FILTER_PIDS: usize = 4096;

/// Longest process name, in a filter or a record. Linux names are at most
/// 255 bytes (`NAME_MAX`); the slack allows other sources.
pub const MAX_PROCESS_NAME_BYTES: usize = 1024;

/// Longest path (`executable_path`, `file_path`): Linux's `PATH_MAX`.
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest `ProcessFilter.executable_pattern` (a glob), in bytes.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// Most command-line arguments in one `ProcessRecord`.
pub const MAX_COMMAND_LINE_ARGS: usize = 4096;

/// Most bytes of all command-line arguments of one `ProcessRecord` together
/// (Linux's `MAX_ARG_STRLEN`, 128 KiB, bounds a single argument).
pub const MAX_COMMAND_LINE_BYTES: usize = 128 * 1024;

/// Longest `ProcessRecord.user_id`, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;

/// Longest error message (`DetectionResult.error_message`,
/// `HashResult.error_message`), in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// Most `ProcessRecord`s in one `DetectionResult` (one chunk of a stream).
pub const MAX_PROCESSES_PER_RESULT: usize = 65_536;

/// The control channel's cap on one frame's payload
/// ([`control::MAX_FRAME_BYTES`](crate::control::MAX_FRAME_BYTES) is this).
pub const MAX_CONTROL_FRAME_BYTES: usize = 64 * 1024;

/// Room kept in a control frame for the envelope around a task: the
/// `ClientFrame.task` and `TaskRequest.task` keys and lengths (up to 4 bytes
/// each), `with_hashes` (2) and `interval_ms` (up to 6): 16 bytes, rounded up
/// for fields a later protocol version may add.
pub const CONTROL_ENVELOPE_BYTES: usize = 64;

/// Largest encoded `DetectionTask`: a decoder accepts no more, and
/// [`DetectionTask::validate`](super::DetectionTask::validate) refuses a
/// larger one, so every valid task fits a control frame with its envelope.
pub const MAX_TASK_BYTES: usize = MAX_CONTROL_FRAME_BYTES - CONTROL_ENVELOPE_BYTES;

/// Largest encoded `DetectionResult` (one chunk) a decoder accepts.
///
/// Decoding can take more memory than the encoded size: an empty
/// `ProcessRecord` is 2 bytes on the wire but a few hundred bytes in memory,
/// so a reader that must bound its memory tightly uses a smaller cap (the
/// ring's largest frame).
pub const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;
