//! proptest strategies for the seed's messages, shared by the integration
//! tests: empty, unicode and very large values included.
#![allow(dead_code)] // each test file uses a different subset

use daemoneye_lib::proto::{
    DetectionResult, DetectionTask, ProtoHashCheck, ProtoHashResult, ProtoProcessFilter,
    ProtoProcessRecord,
};
use proptest::prelude::*;
use proptest::string::string_regex;

/// Strings: empty, ASCII, any Unicode (control characters and NUL
/// included), and a few KiB of multi-byte text.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9/._-]{1,16}",
        any::<String>(),
        string_regex("[é€😀\u{10FFFF}a]{256,1024}").expect("valid regex"),
    ]
}

pub fn u32_extreme() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(u32::MAX), any::<u32>()]
}

pub fn u64_extreme() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), any::<u64>()]
}

pub fn i64_extreme() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1),
        any::<i64>()
    ]
}

/// Any f64: NaN, infinities, -0.0 and subnormals included.
pub fn f64_any() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::MIN_POSITIVE / 2.0),
        any::<f64>(),
    ]
}

/// Finite f64 only (JSON has no NaN or infinity).
pub fn f64_finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE / 2.0),
        proptest::num::f64::NORMAL
            | proptest::num::f64::SUBNORMAL
            | proptest::num::f64::ZERO
            | proptest::num::f64::NEGATIVE
            | proptest::num::f64::POSITIVE
    ]
}

pub fn record_with(cpu: BoxedStrategy<f64>) -> impl Strategy<Value = ProtoProcessRecord> {
    (
        (u32_extreme(), proptest::option::of(u32_extreme()), text()),
        (
            proptest::option::of(text()),
            prop::collection::vec(text(), 0..6),
            proptest::option::of(i64_extreme()),
            proptest::option::of(cpu),
            proptest::option::of(u64_extreme()),
        ),
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            any::<bool>(),
            any::<bool>(),
            i64_extreme(),
        ),
    )
        .prop_map(
            |(
                (pid, ppid, name),
                (executable_path, command_line, start_time, cpu_usage, memory_usage),
                (
                    executable_hash,
                    hash_algorithm,
                    user_id,
                    accessible,
                    file_exists,
                    collection_time,
                ),
            )| ProtoProcessRecord {
                pid,
                ppid,
                name,
                executable_path,
                command_line,
                start_time,
                cpu_usage,
                memory_usage,
                executable_hash,
                hash_algorithm,
                user_id,
                accessible,
                file_exists,
                collection_time,
            },
        )
}

/// Any record, NaN CPU usage included.
pub fn record() -> impl Strategy<Value = ProtoProcessRecord> {
    record_with(f64_any().boxed())
}

/// Any record that JSON can carry (finite CPU usage).
pub fn record_finite() -> impl Strategy<Value = ProtoProcessRecord> {
    record_with(f64_finite().boxed())
}

pub fn filter() -> impl Strategy<Value = ProtoProcessFilter> {
    (
        prop::collection::vec(text(), 0..5),
        prop::collection::vec(u32_extreme(), 0..8),
        proptest::option::of(text()),
    )
        .prop_map(
            |(process_names, pids, executable_pattern)| ProtoProcessFilter {
                process_names,
                pids,
                executable_pattern,
            },
        )
}

pub fn hash_check() -> impl Strategy<Value = ProtoHashCheck> {
    (text(), text(), text()).prop_map(|(expected_hash, hash_algorithm, executable_path)| {
        ProtoHashCheck {
            expected_hash,
            hash_algorithm,
            executable_path,
        }
    })
}

pub fn hash_result() -> impl Strategy<Value = ProtoHashResult> {
    (
        text(),
        text(),
        text(),
        any::<bool>(),
        proptest::option::of(text()),
    )
        .prop_map(
            |(hash_value, algorithm, file_path, success, error_message)| ProtoHashResult {
                hash_value,
                algorithm,
                file_path,
                success,
                error_message,
            },
        )
}

/// Task types: the four known values, or any i32.
pub fn task_type() -> impl Strategy<Value = i32> {
    prop_oneof![0..4i32, any::<i32>()]
}

pub fn task_with(task_type: BoxedStrategy<i32>) -> impl Strategy<Value = DetectionTask> {
    (
        text(),
        task_type,
        proptest::option::of(filter()),
        proptest::option::of(hash_check()),
        proptest::option::of(text()),
    )
        .prop_map(
            |(task_id, task_type, process_filter, hash_check, metadata)| DetectionTask {
                task_id,
                task_type,
                process_filter,
                hash_check,
                metadata,
            },
        )
}

pub fn task() -> impl Strategy<Value = DetectionTask> {
    task_with(task_type().boxed())
}

/// Tasks whose type is one of the schema's four.
pub fn known_task() -> impl Strategy<Value = DetectionTask> {
    task_with((0..4i32).boxed())
}

pub fn result_with(
    record: BoxedStrategy<ProtoProcessRecord>,
) -> impl Strategy<Value = DetectionResult> {
    (
        text(),
        any::<bool>(),
        proptest::option::of(text()),
        prop::collection::vec(record, 0..4),
        proptest::option::of(hash_result()),
    )
        .prop_map(
            |(task_id, success, error_message, processes, hash_result)| DetectionResult {
                task_id,
                success,
                error_message,
                processes,
                hash_result,
            },
        )
}

pub fn result() -> impl Strategy<Value = DetectionResult> {
    result_with(record().boxed())
}

pub fn result_finite() -> impl Strategy<Value = DetectionResult> {
    result_with(record_finite().boxed())
}

/// A typical record of a long-running worker (the pipeline bench's, and
/// the allocation tests').
pub fn worker(pid: u32) -> ProtoProcessRecord {
    ProtoProcessRecord {
        pid,
        ppid: Some(1),
        name: format!("worker-{pid}"),
        executable_path: Some("/usr/lib/some/long/path/bin/worker".into()),
        command_line: vec![
            "/usr/lib/some/long/path/bin/worker".into(),
            "--config".into(),
            "/etc/worker/worker.toml".into(),
            format!("--id={pid}"),
        ],
        start_time: Some(1_700_000_000),
        cpu_usage: Some(1.5),
        memory_usage: Some(12 << 20),
        user_id: Some("1000".into()),
        accessible: true,
        file_exists: true,
        collection_time: 1_700_000_000_000,
        ..Default::default()
    }
}

/// Bitwise comparison of records via their encoding (a double is encoded as
/// its 64 bits, so NaN compares equal to itself and -0.0 differs from 0.0).
pub fn same_bits<M: prost::Message>(a: &M, b: &M) -> bool {
    a.encode_to_vec() == b.encode_to_vec()
}
