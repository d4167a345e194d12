//! Round trips: prost encode/decode, every codec path, native conversions
//! and JSON, over arbitrary messages (empty, unicode, extreme values).

mod common;

use common::same_bits;
use daemoneye_lib::codec::Codec;
use daemoneye_lib::models::{HashCheck, HashResult, ProcessFilter, ProcessRecord, Task};
use daemoneye_lib::proto::encoded::{EncodedRecord, StableFields};
use daemoneye_lib::proto::{
    DetectionResult, DetectionTask, ProtoHashCheck, ProtoHashResult, ProtoProcessFilter,
    ProtoProcessRecord,
};
use daemoneye_lib::ring::{self, RingConfig};
use daemoneye_lib::session::{Marker, RecordKind, ResultWriter};
use proptest::prelude::*;
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Large enough for anything the strategies make.
const CODEC: Codec = Codec::new(64 * 1024 * 1024);

/// Every codec path gives back `message` bit for bit, and agrees with prost's
/// own encodings.
fn codec_round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M) {
    let plain = CODEC.encode(message).expect("encode");
    assert_eq!(plain, message.encode_to_vec());
    let back: M = CODEC.decode(&plain).expect("decode");
    assert!(same_bits(&back, message));

    let delimited = CODEC
        .encode_length_delimited(message)
        .expect("encode delimited");
    assert_eq!(delimited, message.encode_length_delimited_to_vec());
    let (back, used): (M, usize) = CODEC.decode_length_delimited(&delimited).expect("decode");
    assert_eq!(used, delimited.len());
    assert!(same_bits(&back, message));

    // Into a buffer with a trailing canary: exactly `written` bytes change.
    let mut buf = vec![0xA5u8; delimited.len() + 3];
    let written = CODEC
        .encode_length_delimited_into(message, &mut buf)
        .expect("encode into");
    assert_eq!(written, delimited.len());
    assert_eq!(&buf[..written], &delimited[..]);
    assert_eq!(&buf[written..], &[0xA5; 3]);

    let mut buf = vec![0u8; plain.len()];
    assert_eq!(
        CODEC.encode_into(message, &mut buf).expect("encode into"),
        plain.len()
    );
    assert_eq!(buf, plain);
}

proptest! {
    #[test]
    fn record_codec(record in common::record()) {
        codec_round_trip(&record);
    }

    #[test]
    fn task_codec(task in common::task()) {
        codec_round_trip(&task);
    }

    #[test]
    fn result_codec(result in common::result()) {
        codec_round_trip(&result);
    }

    #[test]
    fn parts_codec(filter in common::filter(), check in common::hash_check(), hash in common::hash_result()) {
        codec_round_trip(&filter);
        codec_round_trip(&check);
        codec_round_trip(&hash);
    }

    /// Several length-delimited messages back to back come out one by one.
    #[test]
    fn delimited_stream(tasks in prop::collection::vec(common::task(), 0..5)) {
        let mut stream = Vec::new();
        for task in &tasks {
            stream.extend(CODEC.encode_length_delimited(task).expect("encode"));
        }
        let mut rest = &stream[..];
        for task in &tasks {
            let (back, used): (DetectionTask, usize) = CODEC.decode_length_delimited(rest).expect("decode");
            prop_assert_eq!(&back, task);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
    }

    /// A record pre-encoded in two parts (procmond's table keeps the stable
    /// one) is the record: prost decodes it to exactly the struct, and its
    /// length is what prost gives for the struct.
    #[test]
    fn pre_encoded_record(record in common::record()) {
        let encoded = EncodedRecord::of(Arc::new(StableFields::encode(&record)), &record);
        prop_assert_eq!(encoded.body_len(), record.encoded_len());
        let mut bytes = Vec::new();
        encoded.encode_body(&mut bytes);
        prop_assert_eq!(bytes.len(), encoded.body_len());
        let back = ProtoProcessRecord::decode(bytes.as_slice()).expect("decode");
        prop_assert!(same_bits(&back, &record));
    }

    /// Frames mixing pre-encoded records and structs, through a real ring,
    /// decode to the records in order.
    #[test]
    fn pre_encoded_frames(records in prop::collection::vec(common::record(), 0..40)) {
        let config = RingConfig::new(256 << 10).with_max_frame(64 << 10);
        let (mut producer, mut consumer) = ring::pair(&config).expect("ring");
        let mut writer = ResultWriter::new(&mut producer, "t", Duration::from_secs(5));
        for (i, record) in records.iter().enumerate() {
            if i % 3 == 0 {
                writer.push(RecordKind::Result, record.clone()).expect("push");
            } else {
                let stable = Arc::new(StableFields::encode(record));
                writer.push_encoded(RecordKind::Result, EncodedRecord::of(stable, record)).expect("push");
            }
        }
        writer.finish().expect("finish");
        // Decoded by prost alone: the records are arbitrary, not all valid
        // for the agent's checks.
        let mut back = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (result, flags) = consumer
                .read(deadline, |frame| (frame.decode::<DetectionResult>(), frame.flags()))
                .expect("read");
            back.extend(result.expect("decode").processes);
            if Marker::from_flags(flags).expect("flags").end {
                break;
            }
        }
        prop_assert_eq!(back.len(), records.len());
        for (got, want) in back.iter().zip(&records) {
            prop_assert!(same_bits(got, want), "{:?} != {:?}", got, want);
        }
    }

    /// proto → native → proto is lossless, NaN CPU included (bitwise).
    #[test]
    fn record_native_lossless(record in common::record()) {
        let native = ProcessRecord::from(record.clone());
        let back = ProtoProcessRecord::from(native.clone());
        prop_assert!(same_bits(&back, &record));
        prop_assert_eq!(native.cpu_usage.map(f64::to_bits), record.cpu_usage.map(f64::to_bits));
    }

    #[test]
    fn parts_native_lossless(filter in common::filter(), check in common::hash_check(), hash in common::hash_result()) {
        prop_assert_eq!(ProtoProcessFilter::from(ProcessFilter::from(filter.clone())), filter);
        prop_assert_eq!(ProtoHashCheck::from(HashCheck::from(check.clone())), check);
        prop_assert_eq!(ProtoHashResult::from(HashResult::from(hash.clone())), hash);
    }

    /// A task with a known type converts both ways unchanged.
    #[test]
    fn task_native_lossless(task in common::known_task()) {
        let native = Task::try_from(task.clone()).expect("known task type");
        prop_assert_eq!(DetectionTask::from(native), task);
    }

    /// JSON (serde_json) round trip of the proto types. JSON has no NaN or
    /// infinity, so CPU usage is finite here.
    #[test]
    fn json_proto(task in common::task(), result in common::result_finite()) {
        let json = serde_json::to_string(&task).expect("to json");
        prop_assert_eq!(serde_json::from_str::<DetectionTask>(&json).expect("from json"), task);
        let json = serde_json::to_string(&result).expect("to json");
        let back: DetectionResult = serde_json::from_str(&json).expect("from json");
        prop_assert!(same_bits(&back, &result));
    }

    /// JSON round trip of the native types.
    #[test]
    fn json_native(record in common::record_finite(), task in common::known_task()) {
        let native = ProcessRecord::from(record);
        let json = serde_json::to_string(&native).expect("to json");
        let back: ProcessRecord = serde_json::from_str(&json).expect("from json");
        prop_assert!(same_bits(&ProtoProcessRecord::from(back), &ProtoProcessRecord::from(native)));
        let native = Task::try_from(task).expect("known task type");
        let json = serde_json::to_string(&native).expect("to json");
        prop_assert_eq!(serde_json::from_str::<Task>(&json).expect("from json"), native);
    }
}

/// A fully populated record with NaN CPU usage survives proto → native →
/// proto and an encode/decode, bit for bit.
#[test]
fn fully_populated_record_with_nan() {
    let record = ProtoProcessRecord {
        pid: u32::MAX,
        ppid: Some(0),
        name: "firefox — 火狐".to_string(),
        executable_path: Some("/usr/lib/firefox/firefox".to_string()),
        command_line: vec!["firefox".into(), String::new(), "--new-tab=😀".into()],
        start_time: Some(i64::MIN),
        cpu_usage: Some(f64::from_bits(0x7ff8_dead_beef_0001)),
        memory_usage: Some(u64::MAX),
        executable_hash: Some("ab".repeat(32)),
        hash_algorithm: Some("sha256".to_string()),
        user_id: Some("1000".to_string()),
        accessible: true,
        file_exists: true,
        collection_time: i64::MAX,
    };
    let back = ProtoProcessRecord::from(ProcessRecord::from(record.clone()));
    assert_eq!(
        back.cpu_usage.map(f64::to_bits),
        Some(0x7ff8_dead_beef_0001)
    );
    assert!(same_bits(&back, &record));
    let decoded: ProtoProcessRecord = CODEC.decode(&CODEC.encode(&back).unwrap()).unwrap();
    assert_eq!(
        decoded.cpu_usage.map(f64::to_bits),
        Some(0x7ff8_dead_beef_0001)
    );
    assert!(same_bits(&decoded, &record));
}

/// Proto3 `optional` keeps presence: `Some(0)` and `Some("")` are sent and
/// come back as `Some`, `None` stays `None`.
#[test]
fn optional_presence_survives() {
    let record = ProtoProcessRecord {
        ppid: Some(0),
        executable_path: Some(String::new()),
        start_time: Some(0),
        cpu_usage: Some(0.0),
        memory_usage: Some(0),
        ..Default::default()
    };
    let decoded: ProtoProcessRecord = CODEC.decode(&CODEC.encode(&record).unwrap()).unwrap();
    assert_eq!(decoded, record);
    let empty: ProtoProcessRecord = CODEC.decode(&[]).unwrap();
    assert_eq!(empty.ppid, None);
    assert_eq!(empty.cpu_usage, None);
}
