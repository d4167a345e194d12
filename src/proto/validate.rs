//! `validate()` on the seed's messages: checks a peer's message against the
//! rules and [`limits`](super::limits) before anything acts on it.
//!
//! Each check returns the first broken rule as a [`ValidationError`] that
//! names the field (a path such as `processes[3].command_line`) and the
//! [`Rule`].

use super::hash_algorithm::HashAlgorithm;
use super::limits::*;
use super::{
    DetectionResult, DetectionTask, ProtoHashCheck, ProtoHashResult, ProtoProcessFilter,
    ProtoProcessRecord, ProtoTaskType,
};

/// A message broke a rule: `field` names where, `rule` says which.
///
/// ```
/// use daemoneye_lib::proto::{DetectionTask, ProtoHashCheck, Rule};
///
/// let check = ProtoHashCheck {
///     expected_hash: "abc123".to_string(), // too short for sha256
///     hash_algorithm: "sha256".to_string(),
///     executable_path: "/usr/bin/firefox".to_string(),
/// };
/// let err = DetectionTask::new_hash_check("t-1", check).validate().unwrap_err();
/// assert_eq!(err.field, "hash_check.expected_hash");
/// assert!(matches!(err.rule, Rule::WrongHashLength { len: 6, expected: 64, .. }));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid `{field}`: {rule}")]
pub struct ValidationError {
    /// Path of the field from the validated message, e.g. `task_id`,
    /// `hash_check.expected_hash`, `processes[3].command_line`.
    pub field: String,
    /// The rule it broke.
    pub rule: Rule,
}

/// The rules that [`ValidationError`] reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Rule {
    /// The field must not be empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than its limit.
    #[error("is {len} bytes long, over the limit of {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The list has more entries than its limit.
    #[error("has {count} entries, over the limit of {max}")]
    TooMany {
        /// Its number of entries.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The field is absent although something else requires it.
    #[error("is missing: {required_by}")]
    Missing {
        /// What requires it.
        required_by: &'static str,
    },
    /// The enum value is not one of the schema's `TaskType`s.
    #[error("{0} is not a known task type (0 to 3)")]
    UnknownTaskType(i32),
    /// The hash algorithm is not in [`HashAlgorithm::ALL`].
    #[error("`{0}` is not a known hash algorithm (sha224, sha256, sha384, sha512)")]
    UnknownHashAlgorithm(String),
    /// The hash algorithm is known but procmond does not compute it (see
    /// [`HashAlgorithm::SUPPORTED`]).
    #[error("`{0}` is not supported: procmond computes only sha256")]
    UnsupportedHashAlgorithm(HashAlgorithm),
    /// A hash must be hexadecimal text.
    #[error("is not hexadecimal")]
    NotHex,
    /// A hash has the wrong number of hex digits for its algorithm.
    #[error("has {len} hex digits, {algorithm} needs {expected}")]
    WrongHashLength {
        /// The algorithm named beside it.
        algorithm: HashAlgorithm,
        /// Its number of hex digits.
        len: usize,
        /// The number the algorithm needs.
        expected: usize,
    },
    /// A path to act on must be absolute.
    #[error("must be an absolute path")]
    NotAbsolute,
    /// Paths cannot contain NUL bytes.
    #[error("contains a NUL byte")]
    ContainsNul,
    /// The executable pattern is not a valid glob.
    #[error("is not a valid glob: {0}")]
    InvalidGlob(String),
    /// CPU usage must be a finite number, zero or more.
    #[error("is {0}, not a finite number >= 0")]
    InvalidCpuUsage(f64),
}

/// Longest excerpt of a peer's string quoted in an error, in bytes.
const EXCERPT_BYTES: usize = 64;

/// The first [`EXCERPT_BYTES`] of `s` (on a character boundary), so an error
/// never repeats a huge string a peer sent.
pub(crate) fn excerpt(s: &str) -> String {
    if s.len() <= EXCERPT_BYTES {
        return s.to_owned();
    }
    let mut end = EXCERPT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

type Checked<T = ()> = Result<T, ValidationError>;

fn broken(field: impl Into<String>, rule: Rule) -> ValidationError {
    ValidationError {
        field: field.into(),
        rule,
    }
}

impl ValidationError {
    /// The same error seen from the message that holds this part.
    fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

fn max_len(field: &str, value: &str, max: usize) -> Checked {
    max_bytes(field, value.len(), max)
}

fn max_bytes(field: &str, len: usize, max: usize) -> Checked {
    if len > max {
        return Err(broken(field, Rule::TooLong { len, max }));
    }
    Ok(())
}

fn non_empty_max_len(field: &str, value: &str, max: usize) -> Checked {
    if value.is_empty() {
        return Err(broken(field, Rule::Empty));
    }
    max_len(field, value, max)
}

fn max_count(field: &str, count: usize, max: usize) -> Checked {
    if count > max {
        return Err(broken(field, Rule::TooMany { count, max }));
    }
    Ok(())
}

/// A path procmond will open: non-empty, bounded, no NUL, absolute.
fn path_to_open(field: &str, path: &str) -> Checked {
    non_empty_max_len(field, path, MAX_PATH_BYTES)?;
    if path.contains('\0') {
        return Err(broken(field, Rule::ContainsNul));
    }
    if !path.starts_with('/') {
        return Err(broken(field, Rule::NotAbsolute));
    }
    Ok(())
}

fn algorithm(field: &str, name: &str) -> Checked<HashAlgorithm> {
    if name.is_empty() {
        return Err(broken(field, Rule::Empty));
    }
    let alg = HashAlgorithm::from_name(name)
        .ok_or_else(|| broken(field, Rule::UnknownHashAlgorithm(excerpt(name))))?;
    if !alg.is_supported() {
        return Err(broken(field, Rule::UnsupportedHashAlgorithm(alg)));
    }
    Ok(alg)
}

fn hex_digest(field: &str, hash: &str, algorithm: HashAlgorithm) -> Checked {
    if hash.is_empty() {
        return Err(broken(field, Rule::Empty));
    }
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(broken(field, Rule::NotHex));
    }
    if hash.len() != algorithm.hex_len() {
        return Err(broken(
            field,
            Rule::WrongHashLength {
                algorithm,
                len: hash.len(),
                expected: algorithm.hex_len(),
            },
        ));
    }
    Ok(())
}

fn error_message(field: &str, message: Option<&str>, success: bool) -> Checked {
    match message {
        Some(message) if !success => non_empty_max_len(field, message, MAX_ERROR_MESSAGE_BYTES),
        Some(message) => max_len(field, message, MAX_ERROR_MESSAGE_BYTES),
        None if !success => Err(broken(
            field,
            Rule::Missing {
                required_by: "a failed result says why",
            },
        )),
        None => Ok(()),
    }
}

impl ProtoHashCheck {
    /// Checks the algorithm is one procmond computes
    /// ([`HashAlgorithm::SUPPORTED`]), `expected_hash` is empty (nothing
    /// expected: the hash is only reported) or hex of its digest length, and
    /// `executable_path` is an absolute path within [`MAX_PATH_BYTES`].
    pub fn validate(&self) -> Checked {
        let alg = algorithm("hash_algorithm", &self.hash_algorithm)?;
        if !self.expected_hash.is_empty() {
            hex_digest("expected_hash", &self.expected_hash, alg)?;
        }
        path_to_open("executable_path", &self.executable_path)
    }
}

impl ProtoProcessFilter {
    /// Checks the counts of names and pids, each name's length, and that the
    /// executable pattern is a bounded, valid glob.
    pub fn validate(&self) -> Checked {
        max_count("process_names", self.process_names.len(), MAX_FILTER_NAMES)?;
        for (i, name) in self.process_names.iter().enumerate() {
            non_empty_max_len(&format!("process_names[{i}]"), name, MAX_PROCESS_NAME_BYTES)?;
        }
        max_count("pids", self.pids.len(), MAX_FILTER_PIDS)?;
        if let Some(pattern) = &self.executable_pattern {
            non_empty_max_len("executable_pattern", pattern, MAX_PATTERN_BYTES)?;
            globset::Glob::new(pattern).map_err(|e| {
                broken(
                    "executable_pattern",
                    Rule::InvalidGlob(e.kind().to_string()),
                )
            })?;
        }
        Ok(())
    }
}

impl DetectionTask {
    /// Checks the task id (non-empty, at most [`MAX_TASK_ID_BYTES`]), the
    /// task type, the filter and hash check if present, that a
    /// `CHECK_PROCESS_HASH` task carries a hash check, the metadata's
    /// length, and last that the whole task encodes within
    /// [`MAX_TASK_BYTES`] (field `task`), so that it fits a control frame.
    ///
    /// ```
    /// use daemoneye_lib::proto::{DetectionTask, Rule};
    ///
    /// assert!(DetectionTask::new_enumerate_processes("enum-001", None).validate().is_ok());
    /// let err = DetectionTask::new_enumerate_processes("", None).validate().unwrap_err();
    /// assert_eq!((err.field.as_str(), err.rule), ("task_id", Rule::Empty));
    /// ```
    pub fn validate(&self) -> Checked {
        non_empty_max_len("task_id", &self.task_id, MAX_TASK_ID_BYTES)?;
        let task_type = ProtoTaskType::try_from(self.task_type)
            .map_err(|_| broken("task_type", Rule::UnknownTaskType(self.task_type)))?;
        if let Some(filter) = &self.process_filter {
            filter.validate().map_err(|e| e.within("process_filter"))?;
        }
        match &self.hash_check {
            Some(check) => check.validate().map_err(|e| e.within("hash_check"))?,
            None if task_type == ProtoTaskType::CheckProcessHash => {
                return Err(broken(
                    "hash_check",
                    Rule::Missing {
                        required_by: "task_type CHECK_PROCESS_HASH",
                    },
                ));
            }
            None => {}
        }
        if let Some(metadata) = &self.metadata {
            max_len("metadata", metadata, MAX_METADATA_BYTES)?;
        }
        let len = prost::Message::encoded_len(self);
        if len > MAX_TASK_BYTES {
            return Err(broken(
                "task",
                Rule::TooLong {
                    len,
                    max: MAX_TASK_BYTES,
                },
            ));
        }
        Ok(())
    }
}

/// What the rules of a `ProcessRecord` look at, borrowed from an owned
/// record ([`ProtoProcessRecord::validate`]) or from a view of its wire bytes
/// (`session::ProcessRecordView`), so both are held to the same rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordFields<'a> {
    /// The name's length in bytes (its only property the rules check).
    pub name_len: usize,
    pub executable_path_len: Option<usize>,
    /// Number of command-line arguments.
    pub command_line_args: usize,
    /// Bytes of all command-line arguments together.
    pub command_line_bytes: usize,
    pub cpu_usage: Option<f64>,
    pub executable_hash: Option<&'a str>,
    pub hash_algorithm: Option<&'a str>,
    pub user_id_len: Option<usize>,
}

impl RecordFields<'_> {
    /// The rules of [`ProtoProcessRecord::validate`], in its order.
    pub(crate) fn validate(&self) -> Checked {
        max_bytes("name", self.name_len, MAX_PROCESS_NAME_BYTES)?;
        if let Some(len) = self.executable_path_len {
            max_bytes("executable_path", len, MAX_PATH_BYTES)?;
        }
        max_count(
            "command_line",
            self.command_line_args,
            MAX_COMMAND_LINE_ARGS,
        )?;
        max_bytes(
            "command_line",
            self.command_line_bytes,
            MAX_COMMAND_LINE_BYTES,
        )?;
        match self.cpu_usage {
            Some(cpu) if !(cpu.is_finite() && cpu >= 0.0) => {
                return Err(broken("cpu_usage", Rule::InvalidCpuUsage(cpu)));
            }
            _ => {}
        }
        match (self.executable_hash, self.hash_algorithm) {
            (Some(hash), Some(name)) => {
                let alg = algorithm("hash_algorithm", name)?;
                hex_digest("executable_hash", hash, alg)?;
            }
            (Some(_), None) => {
                return Err(broken(
                    "hash_algorithm",
                    Rule::Missing {
                        required_by: "executable_hash is set",
                    },
                ));
            }
            (None, Some(name)) => {
                algorithm("hash_algorithm", name)?;
            }
            (None, None) => {}
        }
        if let Some(len) = self.user_id_len {
            max_bytes("user_id", len, MAX_USER_ID_BYTES)?;
        }
        Ok(())
    }
}

impl ProtoProcessRecord {
    /// Checks string lengths, the command line's count and total size, that
    /// CPU usage is finite and not negative, and that an executable hash
    /// names a known algorithm and is hex of its digest length.
    pub fn validate(&self) -> Checked {
        RecordFields {
            name_len: self.name.len(),
            executable_path_len: self.executable_path.as_ref().map(String::len),
            command_line_args: self.command_line.len(),
            command_line_bytes: self.command_line.iter().map(String::len).sum(),
            cpu_usage: self.cpu_usage,
            executable_hash: self.executable_hash.as_deref(),
            hash_algorithm: self.hash_algorithm.as_deref(),
            user_id_len: self.user_id.as_ref().map(String::len),
        }
        .validate()
    }
}

/// What the rules of a `HashResult` look at, borrowed from an owned one or
/// from a view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HashResultFields<'a> {
    pub hash_value: &'a str,
    pub algorithm: &'a str,
    pub file_path: &'a str,
    pub success: bool,
    pub error_message: Option<&'a str>,
}

impl HashResultFields<'_> {
    /// The rules of [`ProtoHashResult::validate`].
    pub(crate) fn validate(&self) -> Checked {
        max_len("file_path", self.file_path, MAX_PATH_BYTES)?;
        if self.file_path.contains('\0') {
            return Err(broken("file_path", Rule::ContainsNul));
        }
        if self.success {
            let alg = algorithm("algorithm", self.algorithm)?;
            hex_digest("hash_value", self.hash_value, alg)?;
        } else if !self.algorithm.is_empty() {
            algorithm("algorithm", self.algorithm)?;
        }
        error_message("error_message", self.error_message, self.success)
    }
}

impl ProtoHashResult {
    /// Checks the file path's length; for a success, that the algorithm is
    /// known and `hash_value` is hex of its digest length; for a failure,
    /// that it says why.
    pub fn validate(&self) -> Checked {
        self.fields().validate()
    }

    pub(crate) fn fields(&self) -> HashResultFields<'_> {
        HashResultFields {
            hash_value: &self.hash_value,
            algorithm: &self.algorithm,
            file_path: &self.file_path,
            success: self.success,
            error_message: self.error_message.as_deref(),
        }
    }
}

/// What the rules of a `DetectionResult` look at beside its records,
/// borrowed from an owned result or from a view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResultFields<'a> {
    pub task_id: &'a str,
    pub success: bool,
    pub error_message: Option<&'a str>,
    /// Number of records.
    pub processes: usize,
    pub hash_result: Option<HashResultFields<'a>>,
}

impl ResultFields<'_> {
    /// The rules of [`DetectionResult::validate`], in its order:
    /// `first_bad_record` gives the first record (index, error) that breaks
    /// [`RecordFields::validate`], if any.
    pub(crate) fn validate(
        &self,
        first_bad_record: impl FnOnce() -> Option<(usize, ValidationError)>,
    ) -> Checked {
        non_empty_max_len("task_id", self.task_id, MAX_TASK_ID_BYTES)?;
        error_message("error_message", self.error_message, self.success)?;
        max_count("processes", self.processes, MAX_PROCESSES_PER_RESULT)?;
        if let Some((i, error)) = first_bad_record() {
            return Err(error.within(&format!("processes[{i}]")));
        }
        if let Some(hash) = &self.hash_result {
            hash.validate().map_err(|e| e.within("hash_result"))?;
        }
        Ok(())
    }
}

impl DetectionResult {
    /// Checks the task id, that a failure says why (within
    /// [`MAX_ERROR_MESSAGE_BYTES`]), the number of processes (at most
    /// [`MAX_PROCESSES_PER_RESULT`]), each process and the hash result.
    ///
    /// ```
    /// use daemoneye_lib::proto::{DetectionResult, Rule};
    ///
    /// assert!(DetectionResult::failure("t-1", "Permission denied").validate().is_ok());
    /// let err = DetectionResult::failure("t-1", "").validate().unwrap_err();
    /// assert_eq!((err.field.as_str(), err.rule), ("error_message", Rule::Empty));
    /// ```
    pub fn validate(&self) -> Checked {
        ResultFields {
            task_id: &self.task_id,
            success: self.success,
            error_message: self.error_message.as_deref(),
            processes: self.processes.len(),
            hash_result: self.hash_result.as_ref().map(ProtoHashResult::fields),
        }
        .validate(|| {
            self.processes
                .iter()
                .enumerate()
                .find_map(|(i, process)| process.validate().err().map(|e| (i, e)))
        })
    }
}
