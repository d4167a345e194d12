//! The seed document's Rust code, run: "Rust Integration" (module structure,
//! type conversions, helper methods) and "Usage Examples" (basic enumeration,
//! filtered collection, hash verification).
//!
//! Each seed function is copied unchanged but for its imports; the lines
//! marked `// (added)` print what happened and assert that it is what the
//! seed's comments say. In `basic_process_enumeration` the response comes
//! from a stand-in for procmond that decodes the task and answers with this
//! process, read from /proc.
//!
//! Run: `cargo run --example seed_usage`

/// "Module Structure": the seed's import list, as is.
#[allow(unused_imports)]
use daemoneye_lib::proto::{
    DetectionResult, DetectionTask, ProtoHashCheck, ProtoHashResult, ProtoProcessFilter,
    ProtoProcessRecord, ProtoTaskType,
};

use daemoneye_lib::codec::Codec;
use daemoneye_lib::models::process::ProcessRecord;
use daemoneye_lib::proto::limits::{MAX_RESULT_BYTES, MAX_TASK_BYTES};
use prost::Message;

/// "Type Conversions".
mod type_conversions {
    use daemoneye_lib::models::process::ProcessRecord;
    use daemoneye_lib::proto::ProtoProcessRecord;

    pub fn convert_process_record() {
        // Convert native to protobuf
        let native_process = ProcessRecord::new(1234, "firefox".to_string());
        let expected = native_process.clone(); // (added)
        let proto_process: ProtoProcessRecord = native_process.into();
        println!(
            "native -> proto: pid {} name {:?}",
            proto_process.pid, proto_process.name
        ); // (added)
        assert_eq!(
            (proto_process.pid, proto_process.name.as_str()),
            (1234, "firefox")
        ); // (added)

        // Convert protobuf to native
        let converted_back: ProcessRecord = proto_process.into();
        println!("proto -> native: {converted_back:?}"); // (added)
        assert_eq!(converted_back, expected); // (added)
    }
}

/// "Helper Methods".
mod helper_methods {
    use daemoneye_lib::proto::{DetectionResult, DetectionTask, ProtoHashCheck, ProtoTaskType};

    pub fn create_tasks_and_results() {
        // Create enumeration task
        let task = DetectionTask::new_enumerate_processes("task-123", None);
        println!("enumeration task: {task:?}"); // (added)
        assert_eq!(task.task_type(), ProtoTaskType::EnumerateProcesses); // (added)

        // Create hash check task
        let hash_check = ProtoHashCheck {
            expected_hash: "abc123...".to_string(),
            hash_algorithm: "sha256".to_string(),
            executable_path: "/usr/bin/firefox".to_string(),
        };
        let task = DetectionTask::new_hash_check("task-456", hash_check);
        println!("hash check task: {task:?}"); // (added)
        assert_eq!(task.task_type(), ProtoTaskType::CheckProcessHash); // (added)
        assert_eq!(
            task.hash_check.as_ref().map(|c| c.executable_path.as_str()),
            Some("/usr/bin/firefox")
        ); // (added)

        // Create results
        let processes = vec![];
        let success = DetectionResult::success("task-123", processes);
        let failure = DetectionResult::failure("task-123", "Permission denied");
        println!("success: {success:?}\nfailure: {failure:?}"); // (added)
        assert!(success.success && success.processes.is_empty() && success.error_message.is_none()); // (added)
        assert!(!failure.success); // (added)
        assert_eq!(failure.error_message.as_deref(), Some("Permission denied")); // (added)
    }
}

/// "Basic Process Enumeration".
mod basic_enumeration {
    use daemoneye_lib::proto::{DetectionResult, DetectionTask};
    use prost::Message;

    pub fn basic_process_enumeration() -> Result<(), Box<dyn std::error::Error>> {
        let task = DetectionTask::new_enumerate_processes("enum-001", None);
        let bytes = prost::Message::encode_to_vec(&task);
        // Send via IPC transport...
        println!("task encoded: {} bytes", bytes.len()); // (added)
        let response_bytes = super::stand_in_procmond(&bytes)?; // (added)
        let mut printed = 0; // (added)

        // Deserialize response
        let result = DetectionResult::decode(&response_bytes[..])?;
        assert_eq!(result.task_id, "enum-001"); // (added)
        if result.success {
            for process in result.processes {
                println!("Process: {} (PID: {})", process.name, process.pid);
                assert_eq!(process.pid, std::process::id()); // (added)
                printed += 1; // (added)
            }
        }
        assert_eq!(printed, 1, "the stand-in answers with this process"); // (added)
        Ok(())
    }
}

/// "Filtered Process Collection".
mod filtered_collection {
    use daemoneye_lib::proto::DetectionTask; // (import added)
    use daemoneye_lib::proto::ProtoProcessFilter;

    pub fn filtered_process_collection() {
        let filter = ProtoProcessFilter {
            process_names: vec!["firefox".to_string(), "chrome".to_string()],
            pids: vec![],
            executable_pattern: Some("/usr/bin/*".to_string()),
        };
        let task = DetectionTask::new_enumerate_processes("filtered-001", Some(filter));
        println!("filtered task: {task:?}"); // (added)
        let filter = task.process_filter.as_ref().expect("filter kept"); // (added)
        assert_eq!(filter.process_names, ["firefox", "chrome"]); // (added)
        assert_eq!(task.validate(), Ok(())); // (added)
    }
}

/// "Hash Verification".
mod hash_verification {
    use daemoneye_lib::proto::ProtoHashCheck;
    use daemoneye_lib::proto::{DetectionTask, ProtoTaskType}; // (import added)

    pub fn hash_verification() {
        let hash_check = ProtoHashCheck {
            expected_hash: "a1b2c3d4...".to_string(),
            hash_algorithm: "sha256".to_string(),
            executable_path: "/usr/bin/suspicious".to_string(),
        };
        let task = DetectionTask::new_hash_check("verify-001", hash_check);
        println!("hash verification task: {task:?}"); // (added)
        assert_eq!(task.task_type(), ProtoTaskType::CheckProcessHash); // (added)
        // The seed's "a1b2c3d4..." is a placeholder, not a SHA-256: validation says so. (added)
        let err = task.validate().expect_err("placeholder hash"); // (added)
        println!("validate(): {err}"); // (added)
        assert_eq!(err.field, "hash_check.expected_hash"); // (added)
    }
}

/// Stands in for procmond: decodes the task, checks it, and answers an
/// enumeration with this very process as /proc shows it.
fn stand_in_procmond(task_bytes: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let task: DetectionTask = Codec::new(MAX_TASK_BYTES).decode(task_bytes)?;
    task.validate()?;
    assert_eq!(task.task_type(), ProtoTaskType::EnumerateProcesses);

    let pid = std::process::id();
    let comm = std::fs::read_to_string("/proc/self/comm")?;
    let mut me = ProcessRecord::new(pid, comm.trim_end());
    me.executable_path = std::fs::read_link("/proc/self/exe")
        .ok()
        .map(|p| p.display().to_string());
    me.command_line = std::env::args().collect();
    me.file_exists = me
        .executable_path
        .as_deref()
        .is_some_and(|p| std::path::Path::new(p).exists());

    let result = DetectionResult::success(task.task_id, vec![ProtoProcessRecord::from(me)]);
    result.validate()?;
    Ok(Codec::new(MAX_RESULT_BYTES).encode(&result)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("== Type Conversions");
    type_conversions::convert_process_record();
    println!("\n== Helper Methods");
    helper_methods::create_tasks_and_results();
    println!("\n== Basic Process Enumeration");
    basic_enumeration::basic_process_enumeration()?;
    println!("\n== Filtered Process Collection");
    filtered_collection::filtered_process_collection();
    println!("\n== Hash Verification");
    hash_verification::hash_verification();

    // The round trip the README promises: task and result, encoded and back.
    let task = DetectionTask::new_enumerate_processes("enum-002", None);
    let back: DetectionTask = Codec::new(MAX_TASK_BYTES).decode(&task.encode_to_vec())?;
    assert_eq!(back, task);
    println!("\nall seed examples behaved as their comments say");
    Ok(())
}
