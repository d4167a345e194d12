//! One failing case per validation rule, each asserting the field and the
//! rule named; and the limits hold for the largest valid task.

use daemoneye_lib::proto::limits::*;
use daemoneye_lib::proto::{
    DetectionResult, DetectionTask, HashAlgorithm, ProtoHashCheck, ProtoHashResult,
    ProtoProcessFilter, ProtoProcessRecord, Rule, ValidationError,
};
use prost::Message;

fn check(hash: &str, algorithm: &str, path: &str) -> ProtoHashCheck {
    ProtoHashCheck {
        expected_hash: hash.into(),
        hash_algorithm: algorithm.into(),
        executable_path: path.into(),
    }
}

fn sha256_hex() -> String {
    "0123456789abcdef".repeat(4)
}

fn record() -> ProtoProcessRecord {
    ProtoProcessRecord {
        pid: 1,
        name: "init".into(),
        ..Default::default()
    }
}

fn hash_result() -> ProtoHashResult {
    ProtoHashResult {
        hash_value: sha256_hex(),
        algorithm: "sha256".into(),
        file_path: "/usr/bin/firefox".into(),
        success: true,
        error_message: None,
    }
}

/// Asserts `result` is the error `(field, rule)`, and that its message names
/// the field.
#[track_caller]
fn fails(result: Result<(), ValidationError>, field: &str, rule: Rule) {
    let err = result.expect_err("validation should fail");
    assert_eq!((err.field.as_str(), &err.rule), (field, &rule), "{err}");
    assert!(err.to_string().contains(field), "{err}");
}

fn task_with_filter(filter: ProtoProcessFilter) -> DetectionTask {
    DetectionTask::new_enumerate_processes("t", Some(filter))
}

fn result_with(record: ProtoProcessRecord) -> DetectionResult {
    DetectionResult::success("t", vec![record])
}

#[test]
fn valid_messages_pass() {
    let filter = ProtoProcessFilter {
        process_names: vec!["firefox".into()],
        pids: vec![1],
        executable_pattern: Some("/usr/{bin,lib}/**/fire*".into()),
    };
    assert_eq!(task_with_filter(filter).validate(), Ok(()));
    for alg in HashAlgorithm::SUPPORTED {
        let hash = "A".repeat(alg.hex_len());
        let task = DetectionTask::new_hash_check("t", check(&hash, alg.name(), "/bin/sh"));
        assert_eq!(task.validate(), Ok(()), "{alg}");
    }
    let full = ProtoProcessRecord {
        executable_hash: Some(sha256_hex()),
        hash_algorithm: Some("SHA256".into()),
        cpu_usage: Some(0.0),
        command_line: vec!["init".into()],
        ..record()
    };
    let result = DetectionResult {
        hash_result: Some(hash_result()),
        ..result_with(full)
    };
    assert_eq!(result.validate(), Ok(()));
}

#[test]
fn task_id_empty() {
    fails(
        DetectionTask::new_enumerate_processes("", None).validate(),
        "task_id",
        Rule::Empty,
    );
    fails(
        DetectionResult::success("", vec![]).validate(),
        "task_id",
        Rule::Empty,
    );
}

#[test]
fn task_id_too_long() {
    let id = "x".repeat(MAX_TASK_ID_BYTES);
    assert_eq!(
        DetectionTask::new_enumerate_processes(id.clone(), None).validate(),
        Ok(())
    );
    let id = "é".repeat(MAX_TASK_ID_BYTES / 2 + 1); // 130 bytes, 65 characters
    fails(
        DetectionTask::new_enumerate_processes(id.clone(), None).validate(),
        "task_id",
        Rule::TooLong { len: 130, max: 128 },
    );
    fails(
        DetectionResult::failure(id, "x").validate(),
        "task_id",
        Rule::TooLong { len: 130, max: 128 },
    );
}

#[test]
fn task_type_unknown() {
    let task = DetectionTask {
        task_type: 4,
        ..DetectionTask::new_enumerate_processes("t", None)
    };
    fails(task.validate(), "task_type", Rule::UnknownTaskType(4));
}

#[test]
fn hash_check_required_by_check_process_hash() {
    let task = DetectionTask {
        hash_check: None,
        ..DetectionTask::new_hash_check("t", check(&sha256_hex(), "sha256", "/bin/sh"))
    };
    fails(
        task.validate(),
        "hash_check",
        Rule::Missing {
            required_by: "task_type CHECK_PROCESS_HASH",
        },
    );
}

#[test]
fn hash_algorithm_unknown() {
    let task = DetectionTask::new_hash_check("t", check(&sha256_hex(), "md5", "/bin/sh"));
    fails(
        task.validate(),
        "hash_check.hash_algorithm",
        Rule::UnknownHashAlgorithm("md5".into()),
    );
    let task = DetectionTask::new_hash_check("t", check(&sha256_hex(), "", "/bin/sh"));
    fails(task.validate(), "hash_check.hash_algorithm", Rule::Empty);
    // A huge name is quoted only in part.
    let task =
        DetectionTask::new_hash_check("t", check(&sha256_hex(), &"z".repeat(10_000), "/bin/sh"));
    let err = task.validate().unwrap_err();
    assert!(err.to_string().len() < 300, "{err}");
}

#[test]
fn expected_hash_not_hex() {
    let hash = format!("{}zz", &sha256_hex()[..62]);
    let task = DetectionTask::new_hash_check("t", check(&hash, "sha256", "/bin/sh"));
    fails(task.validate(), "hash_check.expected_hash", Rule::NotHex);
}

#[test]
fn expected_hash_wrong_length() {
    // A sha512-length hash named sha256, and the other way round.
    let task = DetectionTask::new_hash_check("t", check(&"a".repeat(128), "sha256", "/bin/sh"));
    fails(
        task.validate(),
        "hash_check.expected_hash",
        Rule::WrongHashLength {
            algorithm: HashAlgorithm::Sha256,
            len: 128,
            expected: 64,
        },
    );
}

#[test]
fn an_empty_expected_hash_means_nothing_expected() {
    // `hash-check PATH` without `--expected`: only report the hash.
    let task = DetectionTask::new_hash_check("t", check("", "sha256", "/bin/sh"));
    assert_eq!(task.validate(), Ok(()));
}

#[test]
fn only_algorithms_procmond_computes_are_accepted() {
    for alg in HashAlgorithm::ALL {
        let hash = "a".repeat(alg.hex_len());
        let result =
            DetectionTask::new_hash_check("t", check(&hash, alg.name(), "/bin/sh")).validate();
        if alg == HashAlgorithm::Sha256 {
            assert_eq!(result, Ok(()));
        } else {
            fails(
                result,
                "hash_check.hash_algorithm",
                Rule::UnsupportedHashAlgorithm(alg),
            );
        }
    }
    let record = ProtoProcessRecord {
        executable_hash: Some("a".repeat(96)),
        hash_algorithm: Some("sha384".into()),
        ..record()
    };
    fails(
        result_with(record).validate(),
        "processes[0].hash_algorithm",
        Rule::UnsupportedHashAlgorithm(HashAlgorithm::Sha384),
    );
}

#[test]
fn hash_check_path() {
    let task =
        |path: &str| DetectionTask::new_hash_check("t", check(&sha256_hex(), "sha256", path));
    fails(
        task("").validate(),
        "hash_check.executable_path",
        Rule::Empty,
    );
    fails(
        task("bin/sh").validate(),
        "hash_check.executable_path",
        Rule::NotAbsolute,
    );
    fails(
        task("/bin/sh\0x").validate(),
        "hash_check.executable_path",
        Rule::ContainsNul,
    );
    let long = format!("/{}", "p".repeat(MAX_PATH_BYTES));
    fails(
        task(&long).validate(),
        "hash_check.executable_path",
        Rule::TooLong {
            len: MAX_PATH_BYTES + 1,
            max: MAX_PATH_BYTES,
        },
    );
}

#[test]
fn filter_names() {
    let names = ProtoProcessFilter {
        process_names: vec!["n".into(); MAX_FILTER_NAMES + 1],
        ..Default::default()
    };
    fails(
        task_with_filter(names).validate(),
        "process_filter.process_names",
        Rule::TooMany {
            count: MAX_FILTER_NAMES + 1,
            max: MAX_FILTER_NAMES,
        },
    );
    let long = ProtoProcessFilter {
        process_names: vec!["ok".into(), "n".repeat(MAX_PROCESS_NAME_BYTES + 1)],
        ..Default::default()
    };
    fails(
        task_with_filter(long).validate(),
        "process_filter.process_names[1]",
        Rule::TooLong {
            len: MAX_PROCESS_NAME_BYTES + 1,
            max: MAX_PROCESS_NAME_BYTES,
        },
    );
    let empty = ProtoProcessFilter {
        process_names: vec![String::new()],
        ..Default::default()
    };
    fails(
        task_with_filter(empty).validate(),
        "process_filter.process_names[0]",
        Rule::Empty,
    );
}

#[test]
fn filter_pids() {
    let pids = ProtoProcessFilter {
        pids: vec![1; MAX_FILTER_PIDS + 1],
        ..Default::default()
    };
    fails(
        task_with_filter(pids).validate(),
        "process_filter.pids",
        Rule::TooMany {
            count: MAX_FILTER_PIDS + 1,
            max: MAX_FILTER_PIDS,
        },
    );
}

#[test]
fn filter_pattern() {
    let pattern = |p: String| ProtoProcessFilter {
        executable_pattern: Some(p),
        ..Default::default()
    };
    let err = task_with_filter(pattern("/usr/bin/[a-".into()))
        .validate()
        .unwrap_err();
    assert_eq!(err.field, "process_filter.executable_pattern");
    assert!(matches!(err.rule, Rule::InvalidGlob(_)), "{err}");
    fails(
        task_with_filter(pattern("*".repeat(MAX_PATTERN_BYTES + 1))).validate(),
        "process_filter.executable_pattern",
        Rule::TooLong {
            len: MAX_PATTERN_BYTES + 1,
            max: MAX_PATTERN_BYTES,
        },
    );
    fails(
        task_with_filter(pattern(String::new())).validate(),
        "process_filter.executable_pattern",
        Rule::Empty,
    );
}

#[test]
fn metadata_too_long() {
    let task = DetectionTask {
        metadata: Some("m".repeat(MAX_METADATA_BYTES + 1)),
        ..DetectionTask::new_enumerate_processes("t", None)
    };
    fails(
        task.validate(),
        "metadata",
        Rule::TooLong {
            len: MAX_METADATA_BYTES + 1,
            max: MAX_METADATA_BYTES,
        },
    );
}

#[test]
fn failed_result_says_why() {
    let result = DetectionResult {
        success: false,
        ..DetectionResult::success("t", vec![])
    };
    fails(
        result.validate(),
        "error_message",
        Rule::Missing {
            required_by: "a failed result says why",
        },
    );
    fails(
        DetectionResult::failure("t", "").validate(),
        "error_message",
        Rule::Empty,
    );
}

#[test]
fn error_message_too_long() {
    let result = DetectionResult::failure("t", "e".repeat(MAX_ERROR_MESSAGE_BYTES + 1));
    fails(
        result.validate(),
        "error_message",
        Rule::TooLong {
            len: MAX_ERROR_MESSAGE_BYTES + 1,
            max: MAX_ERROR_MESSAGE_BYTES,
        },
    );
}

#[test]
fn too_many_processes() {
    let result = DetectionResult::success("t", vec![record(); MAX_PROCESSES_PER_RESULT + 1]);
    fails(
        result.validate(),
        "processes",
        Rule::TooMany {
            count: MAX_PROCESSES_PER_RESULT + 1,
            max: MAX_PROCESSES_PER_RESULT,
        },
    );
}

#[test]
fn record_strings_too_long() {
    let name = ProtoProcessRecord {
        name: "n".repeat(MAX_PROCESS_NAME_BYTES + 1),
        ..record()
    };
    let result = DetectionResult::success("t", vec![record(), record(), name]);
    fails(
        result.validate(),
        "processes[2].name",
        Rule::TooLong {
            len: MAX_PROCESS_NAME_BYTES + 1,
            max: MAX_PROCESS_NAME_BYTES,
        },
    );
    let path = ProtoProcessRecord {
        executable_path: Some("p".repeat(MAX_PATH_BYTES + 1)),
        ..record()
    };
    fails(
        result_with(path).validate(),
        "processes[0].executable_path",
        Rule::TooLong {
            len: MAX_PATH_BYTES + 1,
            max: MAX_PATH_BYTES,
        },
    );
    let user = ProtoProcessRecord {
        user_id: Some("u".repeat(MAX_USER_ID_BYTES + 1)),
        ..record()
    };
    fails(
        result_with(user).validate(),
        "processes[0].user_id",
        Rule::TooLong {
            len: MAX_USER_ID_BYTES + 1,
            max: MAX_USER_ID_BYTES,
        },
    );
}

#[test]
fn command_line_bounds() {
    let many = ProtoProcessRecord {
        command_line: vec![String::new(); MAX_COMMAND_LINE_ARGS + 1],
        ..record()
    };
    fails(
        result_with(many).validate(),
        "processes[0].command_line",
        Rule::TooMany {
            count: MAX_COMMAND_LINE_ARGS + 1,
            max: MAX_COMMAND_LINE_ARGS,
        },
    );
    let half = "a".repeat(MAX_COMMAND_LINE_BYTES / 2);
    let big = ProtoProcessRecord {
        command_line: vec![half.clone(), half, "x".into()],
        ..record()
    };
    fails(
        result_with(big).validate(),
        "processes[0].command_line",
        Rule::TooLong {
            len: MAX_COMMAND_LINE_BYTES + 1,
            max: MAX_COMMAND_LINE_BYTES,
        },
    );
}

#[test]
fn cpu_usage_finite_and_not_negative() {
    for bad in [f64::NAN, f64::INFINITY, -1.0] {
        let record = ProtoProcessRecord {
            cpu_usage: Some(bad),
            ..record()
        };
        let err = result_with(record).validate().unwrap_err();
        assert_eq!(err.field, "processes[0].cpu_usage");
        assert!(matches!(err.rule, Rule::InvalidCpuUsage(v) if v.to_bits() == bad.to_bits()));
    }
}

#[test]
fn record_hash() {
    let no_alg = ProtoProcessRecord {
        executable_hash: Some(sha256_hex()),
        ..record()
    };
    fails(
        result_with(no_alg).validate(),
        "processes[0].hash_algorithm",
        Rule::Missing {
            required_by: "executable_hash is set",
        },
    );
    let unknown = ProtoProcessRecord {
        hash_algorithm: Some("crc32".into()),
        ..record()
    };
    fails(
        result_with(unknown).validate(),
        "processes[0].hash_algorithm",
        Rule::UnknownHashAlgorithm("crc32".into()),
    );
    let short = ProtoProcessRecord {
        executable_hash: Some("abcd".into()),
        hash_algorithm: Some("sha256".into()),
        ..record()
    };
    fails(
        result_with(short).validate(),
        "processes[0].executable_hash",
        Rule::WrongHashLength {
            algorithm: HashAlgorithm::Sha256,
            len: 4,
            expected: 64,
        },
    );
}

#[test]
fn hash_result_rules() {
    let with = |hash: ProtoHashResult| DetectionResult {
        hash_result: Some(hash),
        ..DetectionResult::success("t", vec![])
    };
    fails(
        with(ProtoHashResult {
            hash_value: "xyz".into(),
            ..hash_result()
        })
        .validate(),
        "hash_result.hash_value",
        Rule::NotHex,
    );
    fails(
        with(ProtoHashResult {
            algorithm: "sha1".into(),
            ..hash_result()
        })
        .validate(),
        "hash_result.algorithm",
        Rule::UnknownHashAlgorithm("sha1".into()),
    );
    fails(
        with(ProtoHashResult {
            success: false,
            ..hash_result()
        })
        .validate(),
        "hash_result.error_message",
        Rule::Missing {
            required_by: "a failed result says why",
        },
    );
    fails(
        with(ProtoHashResult {
            file_path: "/a\0b".into(),
            ..hash_result()
        })
        .validate(),
        "hash_result.file_path",
        Rule::ContainsNul,
    );
    // A failed hash needs no hash value.
    let failed = ProtoHashResult {
        hash_value: String::new(),
        success: false,
        error_message: Some("No such file".into()),
        ..hash_result()
    };
    assert_eq!(with(failed).validate(), Ok(()));
}

/// A task with every field at its own limit (about 263 KB).
fn task_with_every_field_at_its_limit(names: usize) -> DetectionTask {
    DetectionTask {
        task_id: "i".repeat(MAX_TASK_ID_BYTES),
        task_type: 1,
        process_filter: Some(ProtoProcessFilter {
            process_names: vec!["n".repeat(MAX_PROCESS_NAME_BYTES); names],
            pids: vec![u32::MAX; MAX_FILTER_PIDS],
            executable_pattern: Some(format!("/{}", "p".repeat(MAX_PATTERN_BYTES - 1))),
        }),
        hash_check: Some(check(
            &"f".repeat(64),
            "sha256",
            &format!("/{}", "p".repeat(MAX_PATH_BYTES - 1)),
        )),
        metadata: Some("m".repeat(MAX_METADATA_BYTES)),
    }
}

#[test]
fn a_task_over_the_encoded_cap_is_invalid_even_with_every_field_in_bounds() {
    let task = task_with_every_field_at_its_limit(MAX_FILTER_NAMES);
    assert!(task.encoded_len() > MAX_TASK_BYTES);
    let err = task.validate().unwrap_err();
    assert_eq!(err.field, "task");
    assert_eq!(
        err.rule,
        Rule::TooLong {
            len: task.encoded_len(),
            max: MAX_TASK_BYTES
        }
    );
}

/// The largest task that passes validation, wrapped in its control envelope
/// with the largest options, fits one control frame, and goes through a real
/// socket.
#[test]
fn largest_valid_task_fits_a_control_frame() {
    use daemoneye_lib::control::{ClientFrame, MAX_FRAME_BYTES, client_frame, frame};
    use daemoneye_lib::proto::control::TaskRequest;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    // Fill with whole names while they fit, then one name cut to fill the
    // cap exactly (or within a byte of it, as length prefixes grow).
    fn names(task: &mut DetectionTask) -> &mut Vec<String> {
        &mut task.process_filter.as_mut().unwrap().process_names
    }
    let mut task = task_with_every_field_at_its_limit(0);
    while task.encoded_len() <= MAX_TASK_BYTES {
        names(&mut task).push("n".repeat(MAX_PROCESS_NAME_BYTES));
    }
    while task.encoded_len() > MAX_TASK_BYTES {
        names(&mut task).last_mut().unwrap().pop();
    }
    assert!(
        task.encoded_len() + 1 >= MAX_TASK_BYTES,
        "{}",
        task.encoded_len()
    );
    assert_eq!(task.validate(), Ok(()));

    let wrapped = ClientFrame {
        body: Some(client_frame::Body::Task(TaskRequest {
            task: Some(task.clone()),
            with_hashes: true,
            interval_ms: Some(u32::MAX),
            hash_file_attached: true,
            changes: None,
        })),
    };
    assert!(
        wrapped.encoded_len() <= MAX_FRAME_BYTES,
        "{} > {MAX_FRAME_BYTES}",
        wrapped.encoded_len()
    );
    let (a, b) = UnixStream::pair().unwrap();
    let deadline = Some(Instant::now() + Duration::from_secs(10));
    let writer = std::thread::spawn(move || frame::write_message(&a, &wrapped, &[], deadline));
    let (got, _) = frame::read_message::<ClientFrame>(&b, 0, deadline, "the task").unwrap();
    writer.join().unwrap().unwrap();
    match got.body {
        Some(client_frame::Body::Task(request)) => assert_eq!(request.task.as_ref(), Some(&task)),
        other => panic!("{other:?}"),
    }

    // One byte more is refused.
    let mut over = task;
    names(&mut over).push("n".into());
    assert!(over.encoded_len() > MAX_TASK_BYTES);
    assert_eq!(over.validate().unwrap_err().field, "task");
}
