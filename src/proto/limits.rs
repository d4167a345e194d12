//! Every bound that validation ([`DetectionTask::validate`](super::DetectionTask::validate) and the
//! others) and callers of the [`codec`](crate::codec) enforce, in one place.
//!
//! Validation bounds what a message *means* (how many names in a filter, how
//! long a path); the encoded-size caps ([`MAX_TASK_BYTES`],
//! [`MAX_RESULT_BYTES`]) bound the bytes a decoder accepts before it allocates
//! anything. Any task that passes validation encodes within
//! [`MAX_TASK_BYTES`] (a test checks the largest one). Results are streamed in
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

/// Largest encoded `DetectionTask` a decoder accepts: the control channel's
/// cap. Every task that passes validation fits.
pub const MAX_TASK_BYTES: usize = 512 * 1024;

/// Largest encoded `DetectionResult` (one chunk) a decoder accepts.
///
/// Decoding can take more memory than the encoded size: an empty
/// `ProcessRecord` is 2 bytes on the wire but a few hundred bytes in memory,
/// so a reader that must bound its memory tightly uses a smaller cap (the
/// ring's largest frame).
pub const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;
