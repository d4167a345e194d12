//! Native tasks and their parts: task type, process filter, hash check, and
//! the hash result that answers a hash check.

use serde::{Deserialize, Serialize};

use crate::proto::{
    DetectionTask, ProtoHashCheck, ProtoHashResult, ProtoProcessFilter, ProtoTaskType,
};

/// What a task asks procmond to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskType {
    /// List all accessible processes (that match the filter).
    EnumerateProcesses,
    /// Hash an executable and compare with an expected hash.
    CheckProcessHash,
    /// Report the process tree, then its changes.
    MonitorProcessTree,
    /// Verify the executables of processes.
    VerifyExecutable,
}

/// A wire value that is not one of the schema's `TaskType`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown task type {0} (known: 0 to 3)")]
pub struct UnknownTaskType(pub i32);

impl From<ProtoTaskType> for TaskType {
    fn from(t: ProtoTaskType) -> Self {
        match t {
            ProtoTaskType::EnumerateProcesses => Self::EnumerateProcesses,
            ProtoTaskType::CheckProcessHash => Self::CheckProcessHash,
            ProtoTaskType::MonitorProcessTree => Self::MonitorProcessTree,
            ProtoTaskType::VerifyExecutable => Self::VerifyExecutable,
        }
    }
}

impl From<TaskType> for ProtoTaskType {
    fn from(t: TaskType) -> Self {
        match t {
            TaskType::EnumerateProcesses => Self::EnumerateProcesses,
            TaskType::CheckProcessHash => Self::CheckProcessHash,
            TaskType::MonitorProcessTree => Self::MonitorProcessTree,
            TaskType::VerifyExecutable => Self::VerifyExecutable,
        }
    }
}

impl TryFrom<i32> for TaskType {
    type Error = UnknownTaskType;

    /// The task type with wire value `value` (a `DetectionTask.task_type`).
    fn try_from(value: i32) -> Result<Self, Self::Error> {
        ProtoTaskType::try_from(value)
            .map(Self::from)
            .map_err(|_| UnknownTaskType(value))
    }
}

impl From<TaskType> for i32 {
    fn from(t: TaskType) -> Self {
        ProtoTaskType::from(t).into()
    }
}

/// Which processes a task is about; an empty filter matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessFilter {
    /// Exact process names.
    pub process_names: Vec<String>,
    /// Process ids.
    pub pids: Vec<u32>,
    /// A glob over the executable path, e.g. `/usr/bin/*`.
    pub executable_pattern: Option<String>,
}

impl From<ProtoProcessFilter> for ProcessFilter {
    fn from(f: ProtoProcessFilter) -> Self {
        Self {
            process_names: f.process_names,
            pids: f.pids,
            executable_pattern: f.executable_pattern,
        }
    }
}

impl From<ProcessFilter> for ProtoProcessFilter {
    fn from(f: ProcessFilter) -> Self {
        Self {
            process_names: f.process_names,
            pids: f.pids,
            executable_pattern: f.executable_pattern,
        }
    }
}

/// Hash `executable_path` with `hash_algorithm` and compare with
/// `expected_hash` (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashCheck {
    /// The expected hash, hex.
    pub expected_hash: String,
    /// The algorithm's name, e.g. `"sha256"`.
    pub hash_algorithm: String,
    /// The file to hash.
    pub executable_path: String,
}

impl From<ProtoHashCheck> for HashCheck {
    fn from(c: ProtoHashCheck) -> Self {
        Self {
            expected_hash: c.expected_hash,
            hash_algorithm: c.hash_algorithm,
            executable_path: c.executable_path,
        }
    }
}

impl From<HashCheck> for ProtoHashCheck {
    fn from(c: HashCheck) -> Self {
        Self {
            expected_hash: c.expected_hash,
            hash_algorithm: c.hash_algorithm,
            executable_path: c.executable_path,
        }
    }
}

/// The outcome of hashing a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashResult {
    /// The computed hash, hex (empty if hashing failed).
    pub hash_value: String,
    /// The algorithm's name.
    pub algorithm: String,
    /// The file that was hashed.
    pub file_path: String,
    /// Whether hashing succeeded.
    pub success: bool,
    /// Why hashing failed.
    pub error_message: Option<String>,
}

impl From<ProtoHashResult> for HashResult {
    fn from(r: ProtoHashResult) -> Self {
        Self {
            hash_value: r.hash_value,
            algorithm: r.algorithm,
            file_path: r.file_path,
            success: r.success,
            error_message: r.error_message,
        }
    }
}

impl From<HashResult> for ProtoHashResult {
    fn from(r: HashResult) -> Self {
        Self {
            hash_value: r.hash_value,
            algorithm: r.algorithm,
            file_path: r.file_path,
            success: r.success,
            error_message: r.error_message,
        }
    }
}

/// A detection task: the native form of `DetectionTask`, with a real enum for
/// its type. Converting from the wire form fails only on an unknown type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Correlation id, echoed by every result.
    pub task_id: String,
    /// What to do.
    pub task_type: TaskType,
    /// Which processes.
    pub process_filter: Option<ProcessFilter>,
    /// What to hash, for [`TaskType::CheckProcessHash`].
    pub hash_check: Option<HashCheck>,
    /// Free-form metadata.
    pub metadata: Option<String>,
}

impl TryFrom<DetectionTask> for Task {
    type Error = UnknownTaskType;

    fn try_from(t: DetectionTask) -> Result<Self, Self::Error> {
        Ok(Self {
            task_type: TaskType::try_from(t.task_type)?,
            task_id: t.task_id,
            process_filter: t.process_filter.map(Into::into),
            hash_check: t.hash_check.map(Into::into),
            metadata: t.metadata,
        })
    }
}

impl From<Task> for DetectionTask {
    fn from(t: Task) -> Self {
        Self {
            task_id: t.task_id,
            task_type: t.task_type.into(),
            process_filter: t.process_filter.map(Into::into),
            hash_check: t.hash_check.map(Into::into),
            metadata: t.metadata,
        }
    }
}
