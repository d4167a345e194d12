//! Codec costs for typical messages: a task (tens of bytes) and result chunks
//! of 1 and 100 records (the seed's "1-10 KB for results" and beyond),
//! encoded into a caller's buffer as the ring will, and decoded back.
//!
//! Run: `cargo bench --bench codec`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use daemoneye_lib::codec::Codec;
use daemoneye_lib::models::process::ProcessRecord;
use daemoneye_lib::proto::limits::{MAX_RESULT_BYTES, MAX_TASK_BYTES};
use daemoneye_lib::proto::{
    DetectionResult, DetectionTask, ProtoProcessFilter, ProtoProcessRecord,
};
use prost::Message;

fn record(pid: u32) -> ProtoProcessRecord {
    let mut r = ProcessRecord::new(pid, format!("worker-{pid}"));
    r.ppid = Some(1);
    r.executable_path = Some("/usr/lib/firefox/firefox".into());
    r.command_line = vec![
        "/usr/lib/firefox/firefox".into(),
        "-contentproc".into(),
        format!("{pid}"),
    ];
    r.start_time = Some(1_700_000_000);
    r.cpu_usage = Some(1.25);
    r.memory_usage = Some(123_456_789);
    r.executable_hash = Some("ab".repeat(32));
    r.hash_algorithm = Some("sha256".into());
    r.user_id = Some("1000".into());
    r.file_exists = true;
    r.into()
}

fn bench(c: &mut Criterion) {
    let task = DetectionTask::new_enumerate_processes(
        "enum-001",
        Some(ProtoProcessFilter {
            process_names: vec!["firefox".into(), "chrome".into()],
            pids: vec![],
            executable_pattern: Some("/usr/bin/*".into()),
        }),
    );
    let tasks = Codec::new(MAX_TASK_BYTES);
    let results = Codec::new(MAX_RESULT_BYTES);
    let mut buf = vec![0u8; 1 << 20];

    let mut group = c.benchmark_group("task");
    let encoded = task.encode_length_delimited_to_vec();
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode_length_delimited_into", |b| {
        b.iter(|| tasks.encode_length_delimited_into(black_box(&task), &mut buf))
    });
    group.bench_function("decode_length_delimited", |b| {
        b.iter(|| tasks.decode_length_delimited::<DetectionTask>(black_box(&encoded)))
    });
    group.finish();

    for n in [1u32, 100] {
        let result = DetectionResult::success("enum-001", (0..n).map(record).collect());
        let encoded = result.encode_length_delimited_to_vec();
        let mut group = c.benchmark_group(format!("result_{n}_records"));
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function("encode_length_delimited_into", |b| {
            b.iter(|| results.encode_length_delimited_into(black_box(&result), &mut buf))
        });
        group.bench_function("decode_length_delimited", |b| {
            b.iter(|| results.decode_length_delimited::<DetectionResult>(black_box(&encoded)))
        });
        group.bench_function("validate", |b| b.iter(|| black_box(&result).validate()));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
