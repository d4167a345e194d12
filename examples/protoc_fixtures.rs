//! Writes fully populated encodings of every seed message for the check
//! against Google's protoc (`.ci/protoc-compat.sh`).
//!
//! For each fixture it writes `NAME.bin` (the bytes this crate produces) and
//! lists it in `manifest.json` with its message type and the expected value
//! as serde JSON (field names as in the schema, `null` for an absent
//! optional, enums as numbers). The script decodes each `.bin` with
//! `protoc --decode` and compares field for field.
//!
//! Run: `cargo run --example protoc_fixtures -- OUTDIR`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemoneye_lib::codec::Codec;
use daemoneye_lib::models::process::ProcessRecord;
use daemoneye_lib::models::{HashCheck, HashResult, ProcessFilter};
use daemoneye_lib::proto::encoded::{EncodedRecord, StableFields};
use daemoneye_lib::proto::{
    DetectionResult, DetectionTask, ProtoHashCheck, ProtoHashResult, ProtoProcessFilter,
    ProtoProcessRecord,
};
use daemoneye_lib::ring::{self, RingConfig};
use daemoneye_lib::session::{RecordKind, ResultWriter};
use serde::Serialize;

/// Large enough for every fixture.
const CODEC: Codec = Codec::new(1 << 20);

struct Fixtures {
    dir: PathBuf,
    manifest: Vec<serde_json::Value>,
}

impl Fixtures {
    /// Encodes `message` with the crate's codec and records it.
    fn add<M: prost::Message + Serialize>(
        &mut self,
        name: &str,
        message_type: &str,
        message: &M,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let file = format!("{name}.bin");
        std::fs::write(self.dir.join(&file), CODEC.encode(message)?)?;
        self.manifest.push(serde_json::json!({
            "name": name,
            "message": format!("daemoneye.ipc.{message_type}"),
            "file": file,
            "expected": serde_json::to_value(message)?,
        }));
        Ok(())
    }

    /// Records `bytes` made some other way than by encoding `expected`
    /// (fields in another order, say): protoc must decode them to
    /// `expected`, but re-encodes them in its own order.
    fn add_bytes(
        &mut self,
        name: &str,
        message_type: &str,
        bytes: &[u8],
        expected: &impl Serialize,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let file = format!("{name}.bin");
        std::fs::write(self.dir.join(&file), bytes)?;
        self.manifest.push(serde_json::json!({
            "name": name,
            "message": format!("daemoneye.ipc.{message_type}"),
            "file": file,
            "expected": serde_json::to_value(expected)?,
            "canonical_order": false,
        }));
        Ok(())
    }
}

/// A result frame as procmond writes it from its table: each record's
/// stable fields pre-encoded, its poll fields after them; read raw from a
/// real ring.
fn pre_encoded_frame(
    records: &[ProtoProcessRecord],
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (mut producer, mut consumer) = ring::pair(&RingConfig::new(1 << 20))?;
    let mut writer = ResultWriter::new(&mut producer, "pre-001", Duration::from_secs(5));
    for record in records {
        let stable = Arc::new(StableFields::encode(record));
        writer.push_encoded(RecordKind::Result, EncodedRecord::of(stable, record))?;
    }
    writer.finish()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    Ok(consumer.read(deadline, |frame| frame.bytes().to_vec())?)
}

/// Every field set, with extreme values, unicode and characters that need
/// escaping in protoc's text format.
fn full_record() -> ProtoProcessRecord {
    ProtoProcessRecord {
        pid: u32::MAX,
        ppid: Some(1),
        name: "firefox \"nightly\" \\ 火狐 😀".to_string(),
        executable_path: Some("/usr/lib/firefox/firefox".to_string()),
        command_line: vec![
            "firefox".to_string(),
            String::new(),
            "--profile=/tmp/a b\tc\nd".to_string(),
            "\u{0}\u{1}\u{7f}é".to_string(),
        ],
        start_time: Some(i64::MIN),
        cpu_usage: Some(12.345_678_901_234_567),
        memory_usage: Some(u64::MAX),
        executable_hash: Some("ab".repeat(32)),
        hash_algorithm: Some("sha256".to_string()),
        user_id: Some("1000".to_string()),
        accessible: true,
        file_exists: true,
        collection_time: i64::MAX,
    }
}

/// Every optional field present with its zero value: protoc must see them.
fn zero_record() -> ProtoProcessRecord {
    ProtoProcessRecord {
        pid: 0,
        ppid: Some(0),
        name: String::new(),
        executable_path: Some(String::new()),
        command_line: vec![String::new()],
        start_time: Some(0),
        cpu_usage: Some(-0.0),
        memory_usage: Some(0),
        executable_hash: Some(String::new()),
        hash_algorithm: Some(String::new()),
        user_id: Some(String::new()),
        accessible: false,
        file_exists: false,
        collection_time: -1,
    }
}

fn filter() -> ProtoProcessFilter {
    ProcessFilter {
        process_names: vec![
            "firefox".to_string(),
            "chrome".to_string(),
            "ünï".to_string(),
        ],
        pids: vec![0, 1, 127, 128, 65_535, u32::MAX],
        executable_pattern: Some("/usr/{bin,lib}/**/*".to_string()),
    }
    .into()
}

fn hash_check() -> ProtoHashCheck {
    HashCheck {
        expected_hash: "0123456789abcdef".repeat(8),
        hash_algorithm: "sha512".to_string(),
        executable_path: "/usr/bin/suspicious".to_string(),
    }
    .into()
}

fn hash_result() -> ProtoHashResult {
    HashResult {
        hash_value: "fedcba9876543210".repeat(4),
        algorithm: "sha256".to_string(),
        file_path: "/usr/bin/firefox".to_string(),
        success: true,
        error_message: Some("none".to_string()),
    }
    .into()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .ok_or("usage: protoc_fixtures OUTDIR")?,
    );
    std::fs::create_dir_all(&dir)?;
    let mut f = Fixtures {
        dir: dir.clone(),
        manifest: Vec::new(),
    };

    // DetectionTask: each task type, through the helpers, all fields set.
    f.add(
        "task_enumerate",
        "DetectionTask",
        &DetectionTask {
            metadata: Some("{\"origin\":\"agent\",\"note\":\"ünïcödé\"}".to_string()),
            hash_check: Some(hash_check()),
            ..DetectionTask::new_enumerate_processes("enum-001", Some(filter()))
        },
    )?;
    f.add(
        "task_hash_check",
        "DetectionTask",
        &DetectionTask {
            process_filter: Some(filter()),
            metadata: Some(String::new()),
            ..DetectionTask::new_hash_check("verify-001 — 検証", hash_check())
        },
    )?;
    f.add(
        "task_monitor",
        "DetectionTask",
        &DetectionTask::new_monitor_process_tree(
            "monitor-001",
            Some(ProtoProcessFilter::default()),
        ),
    )?;
    f.add(
        "task_verify",
        "DetectionTask",
        &DetectionTask::new_verify_executable("verify-002", None),
    )?;
    f.add("task_empty", "DetectionTask", &DetectionTask::default())?;

    // DetectionResult.
    f.add(
        "result_success",
        "DetectionResult",
        &DetectionResult {
            hash_result: Some(hash_result()),
            error_message: Some("partial: 1 process unreadable".to_string()),
            ..DetectionResult::success(
                "enum-001",
                vec![
                    full_record(),
                    zero_record(),
                    ProcessRecord::new(1234, "firefox").into(),
                ],
            )
        },
    )?;
    f.add(
        "result_failure",
        "DetectionResult",
        &DetectionResult::failure("enum-001", "Permission denied"),
    )?;

    // A result frame with pre-encoded records (fields out of tag order).
    let records = [full_record(), zero_record()];
    f.add_bytes(
        "result_pre_encoded",
        "DetectionResult",
        &pre_encoded_frame(&records)?,
        &DetectionResult::success("pre-001", records.to_vec()),
    )?;

    // The parts on their own.
    f.add("record_full", "ProcessRecord", &full_record())?;
    f.add("record_zero", "ProcessRecord", &zero_record())?;
    f.add(
        "record_native",
        "ProcessRecord",
        &ProtoProcessRecord::from(ProcessRecord::new(1234, "firefox".to_string())),
    )?;
    f.add("filter", "ProcessFilter", &filter())?;
    f.add("hash_check", "HashCheck", &hash_check())?;
    f.add("hash_result", "HashResult", &hash_result())?;
    f.add(
        "hash_result_failed",
        "HashResult",
        &ProtoHashResult {
            hash_value: String::new(),
            algorithm: "sha256".to_string(),
            file_path: "/gone".to_string(),
            success: false,
            error_message: Some("No such file or directory".to_string()),
        },
    )?;

    let manifest = dir.join("manifest.json");
    std::fs::write(&manifest, serde_json::to_vec_pretty(&f.manifest)?)?;
    println!("wrote {} fixtures to {}", f.manifest.len(), dir.display());
    Ok(())
}
