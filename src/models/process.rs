//! The native process record.
//!
//! # The seed's example
//!
//! Type conversions:
//!
//! ```
//! use daemoneye_lib::models::process::ProcessRecord;
//! use daemoneye_lib::proto::ProtoProcessRecord;
//!
//! // Convert native to protobuf
//! let native_process = ProcessRecord::new(1234, "firefox".to_string());
//! # let original = native_process.clone();
//! let proto_process: ProtoProcessRecord = native_process.into();
//! assert_eq!((proto_process.pid, proto_process.name.as_str()), (1234, "firefox"));
//!
//! // Convert protobuf to native
//! let converted_back: ProcessRecord = proto_process.into();
//! assert_eq!(converted_back, original);
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::proto::ProtoProcessRecord;

/// One process as procmond saw it: the native form of the schema's
/// `ProcessRecord`, field for field (`Option` where the schema says
/// `optional`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: Option<u32>,
    /// Process name.
    pub name: String,
    /// Full path of the executable.
    pub executable_path: Option<String>,
    /// Command-line arguments, the program first.
    pub command_line: Vec<String>,
    /// Start time, seconds since the Unix epoch.
    pub start_time: Option<i64>,
    /// CPU usage in percent of one core.
    pub cpu_usage: Option<f64>,
    /// Resident memory in bytes.
    pub memory_usage: Option<u64>,
    /// Hash of the executable, hex.
    pub executable_hash: Option<String>,
    /// Name of the algorithm of `executable_hash`, e.g. `"sha256"`.
    pub hash_algorithm: Option<String>,
    /// The process's user id.
    pub user_id: Option<String>,
    /// Whether procmond could read the process's details.
    pub accessible: bool,
    /// Whether the executable still exists on disk.
    pub file_exists: bool,
    /// When the record was collected, milliseconds since the Unix epoch.
    pub collection_time: i64,
}

impl ProcessRecord {
    /// A record of `pid` called `name`, collected now, accessible, with
    /// nothing else known yet (`file_exists` false until checked).
    pub fn new(pid: u32, name: impl Into<String>) -> Self {
        Self {
            pid,
            ppid: None,
            name: name.into(),
            executable_path: None,
            command_line: Vec::new(),
            start_time: None,
            cpu_usage: None,
            memory_usage: None,
            executable_hash: None,
            hash_algorithm: None,
            user_id: None,
            accessible: true,
            file_exists: false,
            collection_time: now_millis(),
        }
    }
}

/// Milliseconds since the Unix epoch; 0 if the clock is before it.
fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl From<ProtoProcessRecord> for ProcessRecord {
    fn from(p: ProtoProcessRecord) -> Self {
        Self {
            pid: p.pid,
            ppid: p.ppid,
            name: p.name,
            executable_path: p.executable_path,
            command_line: p.command_line,
            start_time: p.start_time,
            cpu_usage: p.cpu_usage,
            memory_usage: p.memory_usage,
            executable_hash: p.executable_hash,
            hash_algorithm: p.hash_algorithm,
            user_id: p.user_id,
            accessible: p.accessible,
            file_exists: p.file_exists,
            collection_time: p.collection_time,
        }
    }
}

impl From<ProcessRecord> for ProtoProcessRecord {
    fn from(r: ProcessRecord) -> Self {
        Self {
            pid: r.pid,
            ppid: r.ppid,
            name: r.name,
            executable_path: r.executable_path,
            command_line: r.command_line,
            start_time: r.start_time,
            cpu_usage: r.cpu_usage,
            memory_usage: r.memory_usage,
            executable_hash: r.executable_hash,
            hash_algorithm: r.hash_algorithm,
            user_id: r.user_id,
            accessible: r.accessible,
            file_exists: r.file_exists,
            collection_time: r.collection_time,
        }
    }
}
