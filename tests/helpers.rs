//! The seed's helper constructors and the native conversions of the task
//! type and the task.

use daemoneye_lib::models::{ProcessRecord, Task, TaskType, UnknownTaskType};
use daemoneye_lib::proto::{
    DetectionResult, DetectionTask, ProtoHashCheck, ProtoProcessFilter, ProtoProcessRecord,
    ProtoTaskType,
};

fn filter() -> ProtoProcessFilter {
    ProtoProcessFilter {
        process_names: vec!["firefox".into()],
        pids: vec![1, 42],
        executable_pattern: Some("/usr/bin/*".into()),
    }
}

fn hash_check() -> ProtoHashCheck {
    ProtoHashCheck {
        expected_hash: "0".repeat(64),
        hash_algorithm: "sha256".into(),
        executable_path: "/usr/bin/firefox".into(),
    }
}

#[test]
fn enumerate_processes() {
    let task = DetectionTask::new_enumerate_processes(String::from("t-1"), Some(filter()));
    assert_eq!(
        task,
        DetectionTask {
            task_id: "t-1".into(),
            task_type: ProtoTaskType::EnumerateProcesses as i32,
            process_filter: Some(filter()),
            hash_check: None,
            metadata: None,
        }
    );
    let all = DetectionTask::new_enumerate_processes("t-2", None);
    assert_eq!(all.process_filter, None);
    assert_eq!(all.task_type(), ProtoTaskType::EnumerateProcesses);
}

#[test]
fn hash_check_task() {
    let task = DetectionTask::new_hash_check("t-3", hash_check());
    assert_eq!(task.task_type(), ProtoTaskType::CheckProcessHash);
    assert_eq!(task.hash_check, Some(hash_check()));
    assert_eq!(task.process_filter, None);
    assert_eq!(task.task_id, "t-3");
    assert_eq!(task.validate(), Ok(()));
}

#[test]
fn monitor_process_tree() {
    let task = DetectionTask::new_monitor_process_tree("t-4", Some(filter()));
    assert_eq!(task.task_type(), ProtoTaskType::MonitorProcessTree);
    assert_eq!(task.process_filter, Some(filter()));
    assert_eq!(task.hash_check, None);
    assert_eq!(task.validate(), Ok(()));
}

#[test]
fn verify_executable() {
    let task = DetectionTask::new_verify_executable("t-5", None);
    assert_eq!(task.task_type(), ProtoTaskType::VerifyExecutable);
    assert_eq!((task.process_filter, task.hash_check), (None, None));
    assert_eq!(task.task_id, "t-5");
}

#[test]
fn success_result() {
    let firefox = ProtoProcessRecord::from(ProcessRecord::new(1234, "firefox"));
    let result = DetectionResult::success("t-1", vec![firefox.clone()]);
    assert_eq!(
        result,
        DetectionResult {
            task_id: "t-1".into(),
            success: true,
            error_message: None,
            processes: vec![firefox],
            hash_result: None,
        }
    );
    assert_eq!(result.validate(), Ok(()));
}

#[test]
fn failure_result() {
    let result = DetectionResult::failure(String::from("t-1"), String::from("Permission denied"));
    assert_eq!(
        result,
        DetectionResult {
            task_id: "t-1".into(),
            success: false,
            error_message: Some("Permission denied".into()),
            processes: vec![],
            hash_result: None,
        }
    );
    assert_eq!(result.validate(), Ok(()));
}

#[test]
fn process_record_new() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let record = ProcessRecord::new(1234, "firefox".to_string());
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!((record.pid, record.name.as_str()), (1234, "firefox"));
    assert!((before..=after).contains(&record.collection_time));
    assert!(record.accessible && !record.file_exists);
    assert_eq!(record.ppid, None);
    assert!(record.command_line.is_empty());
}

#[test]
fn task_type_from_wire() {
    let known = [
        (
            0,
            TaskType::EnumerateProcesses,
            ProtoTaskType::EnumerateProcesses,
        ),
        (
            1,
            TaskType::CheckProcessHash,
            ProtoTaskType::CheckProcessHash,
        ),
        (
            2,
            TaskType::MonitorProcessTree,
            ProtoTaskType::MonitorProcessTree,
        ),
        (
            3,
            TaskType::VerifyExecutable,
            ProtoTaskType::VerifyExecutable,
        ),
    ];
    for (wire, native, proto) in known {
        assert_eq!(TaskType::try_from(wire), Ok(native));
        assert_eq!(i32::from(native), wire);
        assert_eq!(TaskType::from(proto), native);
        assert_eq!(ProtoTaskType::from(native), proto);
    }
    for unknown in [4, -1, i32::MAX, i32::MIN] {
        let err = TaskType::try_from(unknown).unwrap_err();
        assert_eq!(err, UnknownTaskType(unknown));
        assert!(err.to_string().contains(&unknown.to_string()));
    }
}

#[test]
fn task_from_wire() {
    let wire = DetectionTask {
        metadata: Some("from test".into()),
        ..DetectionTask::new_hash_check("t-9", hash_check())
    };
    let task = Task::try_from(wire.clone()).unwrap();
    assert_eq!(task.task_type, TaskType::CheckProcessHash);
    assert_eq!(task.task_id, "t-9");
    assert_eq!(
        task.hash_check.as_ref().unwrap().executable_path,
        "/usr/bin/firefox"
    );
    assert_eq!(DetectionTask::from(task), wire);

    let bad = DetectionTask {
        task_type: 7,
        ..wire
    };
    assert_eq!(Task::try_from(bad), Err(UnknownTaskType(7)));
}
