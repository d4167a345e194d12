//! The seed's helper constructors for tasks and results.
//!
//! They fill in the task type (or success flag) so a caller cannot pair, say,
//! a hash check with an enumeration task by mistake. The messages keep the
//! seed's plain fields: struct literals work as well.

use super::{
    DetectionResult, DetectionTask, ProtoHashCheck, ProtoProcessFilter, ProtoProcessRecord,
    ProtoTaskType,
};

impl DetectionTask {
    /// A task of `task_type` with optional filter and hash check, no metadata.
    fn with_type(
        task_id: String,
        task_type: ProtoTaskType,
        process_filter: Option<ProtoProcessFilter>,
        hash_check: Option<ProtoHashCheck>,
    ) -> Self {
        Self {
            task_id,
            task_type: task_type.into(),
            process_filter,
            hash_check,
            metadata: None,
        }
    }

    /// `ENUMERATE_PROCESSES`: list the processes that match `filter` (all of
    /// them when `None`).
    ///
    /// ```
    /// use daemoneye_lib::proto::{DetectionTask, ProtoTaskType};
    ///
    /// let task = DetectionTask::new_enumerate_processes("task-123", None);
    /// assert_eq!(task.task_id, "task-123");
    /// assert_eq!(task.task_type(), ProtoTaskType::EnumerateProcesses);
    /// assert!(task.process_filter.is_none());
    /// ```
    pub fn new_enumerate_processes(
        task_id: impl Into<String>,
        filter: Option<ProtoProcessFilter>,
    ) -> Self {
        Self::with_type(
            task_id.into(),
            ProtoTaskType::EnumerateProcesses,
            filter,
            None,
        )
    }

    /// `CHECK_PROCESS_HASH`: hash `hash_check.executable_path` and compare it
    /// with `hash_check.expected_hash`.
    pub fn new_hash_check(task_id: impl Into<String>, hash_check: ProtoHashCheck) -> Self {
        Self::with_type(
            task_id.into(),
            ProtoTaskType::CheckProcessHash,
            None,
            Some(hash_check),
        )
    }

    /// `MONITOR_PROCESS_TREE`: report the tree under the processes that match
    /// `filter` (all when `None`), then its changes.
    pub fn new_monitor_process_tree(
        task_id: impl Into<String>,
        filter: Option<ProtoProcessFilter>,
    ) -> Self {
        Self::with_type(
            task_id.into(),
            ProtoTaskType::MonitorProcessTree,
            filter,
            None,
        )
    }

    /// `VERIFY_EXECUTABLE`: check the executables of the processes that match
    /// `filter` (all when `None`).
    pub fn new_verify_executable(
        task_id: impl Into<String>,
        filter: Option<ProtoProcessFilter>,
    ) -> Self {
        Self::with_type(
            task_id.into(),
            ProtoTaskType::VerifyExecutable,
            filter,
            None,
        )
    }
}

impl DetectionResult {
    /// A successful result for `task_id` carrying `processes`.
    ///
    /// ```
    /// use daemoneye_lib::proto::DetectionResult;
    ///
    /// let result = DetectionResult::success("task-123", vec![]);
    /// assert!(result.success && result.error_message.is_none());
    /// ```
    pub fn success(task_id: impl Into<String>, processes: Vec<ProtoProcessRecord>) -> Self {
        Self {
            task_id: task_id.into(),
            success: true,
            error_message: None,
            processes,
            hash_result: None,
        }
    }

    /// A failed result for `task_id` saying why in `error_message`.
    ///
    /// ```
    /// use daemoneye_lib::proto::DetectionResult;
    ///
    /// let result = DetectionResult::failure("task-123", "Permission denied");
    /// assert!(!result.success);
    /// assert_eq!(result.error_message.as_deref(), Some("Permission denied"));
    /// ```
    pub fn failure(task_id: impl Into<String>, error_message: impl Into<String>) -> Self {
        Self {
            task_id: task_id.into(),
            success: false,
            error_message: Some(error_message.into()),
            processes: Vec::new(),
            hash_result: None,
        }
    }
}
