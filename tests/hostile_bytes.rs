//! Hostile input: truncated messages, length prefixes that lie, wrong wire
//! types, deep nesting, invalid UTF-8 and random garbage give a typed error
//! (or a valid message), never a panic.

mod common;

use daemoneye_lib::codec::{Codec, CodecError, LengthPrefix};
use daemoneye_lib::proto::limits::{MAX_RESULT_BYTES, MAX_TASK_BYTES};
use daemoneye_lib::proto::{
    DetectionResult, DetectionTask, ProtoHashCheck, ProtoHashResult, ProtoProcessFilter,
    ProtoProcessRecord,
};
use proptest::prelude::*;
use prost::Message;

const TASKS: Codec = Codec::new(MAX_TASK_BYTES);
const RESULTS: Codec = Codec::new(MAX_RESULT_BYTES);
/// A cap of 4 GiB, or as much as a 32-bit `usize` holds.
#[cfg(target_pointer_width = "64")]
const HUGE_CAP: usize = 4 << 30;
#[cfg(not(target_pointer_width = "64"))]
const HUGE_CAP: usize = usize::MAX;
/// A codec that would accept 4 GiB, so only the input's real length stops it.
const HUGE: Codec = Codec::new(HUGE_CAP);

/// A varint of 2^31 (2 GiB).
const TWO_GIB: [u8; 5] = [0x80, 0x80, 0x80, 0x80, 0x08];

fn sixteen_bytes_claiming_two_gib() -> Vec<u8> {
    let mut input = TWO_GIB.to_vec();
    input.resize(16, 0x0a);
    input
}

fn sample_result() -> DetectionResult {
    let record = ProtoProcessRecord {
        pid: 4242,
        name: "bash".into(),
        command_line: vec!["bash".into(), "-c".into(), "echo ünïcode".into()],
        cpu_usage: Some(1.5),
        ..Default::default()
    };
    DetectionResult::success("result-1", vec![record.clone(), record])
}

#[test]
fn length_prefix_claiming_two_gib() {
    let input = sixteen_bytes_claiming_two_gib();
    assert_eq!(
        TASKS.decode_length_delimited::<DetectionTask>(&input),
        Err(CodecError::Oversize {
            len: 1 << 31,
            max: MAX_TASK_BYTES
        })
    );
    assert_eq!(
        TASKS.length_prefix(&input),
        Err(CodecError::Oversize {
            len: 1 << 31,
            max: MAX_TASK_BYTES
        })
    );
    // Under a cap that allows it, the input is simply too short.
    assert_eq!(
        HUGE.decode_length_delimited::<DetectionResult>(&input),
        Err(CodecError::Truncated {
            needed: 1 << 31,
            available: 11
        })
    );
}

#[test]
fn nested_length_claiming_two_gib() {
    // DetectionResult.processes (field 4) and task_id (field 1) claiming 2 GiB.
    for tag in [0x22u8, 0x0a] {
        let mut input = vec![tag];
        input.extend(TWO_GIB);
        input.extend([0u8; 10]);
        let err = HUGE.decode::<DetectionResult>(&input).unwrap_err();
        assert!(matches!(err, CodecError::Malformed(_)), "{err}");
    }
}

#[test]
fn oversize_input_refused() {
    let codec = Codec::new(8);
    let task = DetectionTask::new_enumerate_processes("longer-than-eight", None);
    let bytes = task.encode_to_vec();
    assert_eq!(
        codec.decode::<DetectionTask>(&bytes),
        Err(CodecError::Oversize {
            len: bytes.len() as u64,
            max: 8
        })
    );
    assert_eq!(
        codec.encode(&task),
        Err(CodecError::Oversize {
            len: bytes.len() as u64,
            max: 8
        })
    );
    let mut buf = [0u8; 64];
    assert!(matches!(
        codec.encode_length_delimited_into(&task, &mut buf),
        Err(CodecError::Oversize { .. })
    ));
    assert_eq!(buf, [0u8; 64], "nothing written");
}

#[test]
fn truncated_everywhere() {
    let bytes = RESULTS.encode_length_delimited(&sample_result()).unwrap();
    for cut in 0..bytes.len() {
        let err = RESULTS
            .decode_length_delimited::<DetectionResult>(&bytes[..cut])
            .unwrap_err();
        match err {
            CodecError::TruncatedPrefix { available } => assert_eq!(available, cut),
            CodecError::Truncated { needed, available } => {
                assert_eq!((needed, available), (bytes.len() - 1, cut - 1));
            }
            other => panic!("cut at {cut}: {other}"),
        }
    }
    // Plain decode of a cut inside a field: malformed, not a panic.
    let plain = sample_result().encode_to_vec();
    for cut in [3, plain.len() / 2, plain.len() - 1] {
        let err = RESULTS
            .decode::<DetectionResult>(&plain[..cut])
            .unwrap_err();
        assert!(
            matches!(err, CodecError::Malformed(_)),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn malformed_varint_prefix() {
    assert_eq!(
        HUGE.length_prefix(&[0xff; 11]),
        Err(CodecError::MalformedPrefix)
    );
    // Ten bytes whose last holds more than bit 63.
    let mut overflow = [0xffu8; 10];
    overflow[9] = 0x02;
    assert_eq!(
        HUGE.length_prefix(&overflow),
        Err(CodecError::MalformedPrefix)
    );
    // An incomplete prefix asks for more input.
    assert_eq!(HUGE.length_prefix(&[0x80, 0x80]), Ok(None));
    assert_eq!(HUGE.length_prefix(&[]), Ok(None));
    assert_eq!(
        HUGE.length_prefix(&[0x96, 0x01, 0xff]),
        Ok(Some(LengthPrefix {
            prefix_len: 2,
            message_len: 150
        }))
    );
    // u64::MAX: a valid varint, far over any cap.
    let mut max = [0xffu8; 10];
    max[9] = 0x01;
    assert_eq!(
        HUGE.length_prefix(&max),
        Err(CodecError::Oversize {
            len: u64::MAX,
            max: HUGE_CAP
        })
    );
}

#[test]
fn wrong_wire_types() {
    let cases: [(&str, &[u8]); 5] = [
        ("task_id as varint", &[0x08, 0x01]),
        ("task_type as bytes", &[0x12, 0x01, 0x00]),
        ("process_filter as fixed32", &[0x1d, 0, 0, 0, 0]),
        ("hash_check as varint", &[0x20, 0x05]),
        ("metadata as fixed64", &[0x29, 0, 0, 0, 0, 0, 0, 0, 0]),
    ];
    for (what, bytes) in cases {
        let err = TASKS.decode::<DetectionTask>(bytes).unwrap_err();
        assert!(matches!(err, CodecError::Malformed(_)), "{what}: {err}");
    }
    // A record's pid sent as a string, inside a result.
    let err = RESULTS
        .decode::<DetectionResult>(&[0x22, 0x03, 0x0a, 0x01, b'x'])
        .unwrap_err();
    assert!(matches!(err, CodecError::Malformed(_)), "{err}");
    // Wire type 7 does not exist; field number 0 is invalid.
    for bytes in [&[0x0f, 0x00][..], &[0x00, 0x00][..]] {
        assert!(matches!(
            TASKS.decode::<DetectionTask>(bytes),
            Err(CodecError::Malformed(_))
        ));
    }
}

#[test]
fn invalid_utf8_string() {
    let err = TASKS
        .decode::<DetectionTask>(&[0x0a, 0x02, 0xc3, 0x28])
        .unwrap_err();
    assert!(matches!(err, CodecError::Malformed(_)), "{err}");
}

#[test]
fn deep_nesting() {
    // 100,000 nested groups in an unknown field: refused by prost's
    // recursion limit, not a stack overflow.
    let depth = 100_000;
    let mut bytes = vec![0x7b; depth]; // field 15, start group
    bytes.extend(std::iter::repeat_n(0x7c, depth)); // field 15, end group
    let err = RESULTS.decode::<DetectionResult>(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::Malformed(_)), "{err}");
    // Deeply nested length-delimited unknown fields are skipped as bytes.
    let mut nested: Vec<u8> = Vec::new();
    for _ in 0..1000 {
        let mut outer = vec![0x7a]; // field 15, length-delimited
        prost::encoding::encode_varint(nested.len() as u64, &mut outer);
        outer.extend(&nested);
        nested = outer;
    }
    let decoded: DetectionResult = RESULTS.decode(&nested).unwrap();
    assert_eq!(decoded, DetectionResult::default());
}

#[test]
fn unknown_fields_are_skipped() {
    // A field from a newer schema (number 20, varint) before a known one.
    let mut bytes = vec![0xa0, 0x01, 0x07];
    bytes.extend(DetectionTask::new_enumerate_processes("t", None).encode_to_vec());
    let task: DetectionTask = TASKS.decode(&bytes).unwrap();
    assert_eq!(task.task_id, "t");
}

#[test]
fn buffer_too_small_writes_nothing() {
    let result = sample_result();
    let needed = result.encoded_len();
    let mut buf = vec![0xeeu8; needed - 1];
    assert_eq!(
        RESULTS.encode_into(&result, &mut buf),
        Err(CodecError::BufferTooSmall {
            needed,
            available: needed - 1
        })
    );
    assert!(buf.iter().all(|&b| b == 0xee));
    let delimited = needed + prost::length_delimiter_len(needed);
    let mut buf = vec![0xeeu8; delimited - 1];
    assert_eq!(
        RESULTS.encode_length_delimited_into(&result, &mut buf),
        Err(CodecError::BufferTooSmall {
            needed: delimited,
            available: delimited - 1
        })
    );
    assert!(buf.iter().all(|&b| b == 0xee));
    assert!(matches!(
        RESULTS.encode_length_delimited_into(&result, &mut []),
        Err(CodecError::BufferTooSmall { .. })
    ));
}

/// Decoding `bytes` as `M`, plain and length-delimited, gives an error or a
/// message that encodes and decodes back to itself.
fn garbage_is_handled<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(message) = HUGE.decode::<M>(bytes) {
        let again: M = HUGE.decode(&message.encode_to_vec()).expect("re-decode");
        assert!(common::same_bits(&again, &message));
    }
    if let Ok((message, used)) = HUGE.decode_length_delimited::<M>(bytes) {
        assert!(used <= bytes.len());
        let again: M = HUGE.decode(&message.encode_to_vec()).expect("re-decode");
        assert!(common::same_bits(&again, &message));
    }
}

proptest! {
    #[test]
    fn random_garbage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        garbage_is_handled::<DetectionTask>(&bytes);
        garbage_is_handled::<DetectionResult>(&bytes);
        garbage_is_handled::<ProtoProcessRecord>(&bytes);
        garbage_is_handled::<ProtoProcessFilter>(&bytes);
        garbage_is_handled::<ProtoHashCheck>(&bytes);
        garbage_is_handled::<ProtoHashResult>(&bytes);
    }

    /// Valid encodings with some bytes flipped: still no panic, and validate()
    /// on whatever decodes does not panic either.
    #[test]
    fn mutated_results(result in common::result(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = result.encode_to_vec();
        if !bytes.is_empty() {
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= byte;
            }
        }
        garbage_is_handled::<DetectionResult>(&bytes);
        if let Ok(decoded) = HUGE.decode::<DetectionResult>(&bytes) {
            let _ = decoded.validate();
        }
    }

    #[test]
    fn mutated_tasks(task in common::task(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = task.encode_to_vec();
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] ^= byte;
        }
        garbage_is_handled::<DetectionTask>(&bytes);
        if let Ok(decoded) = HUGE.decode::<DetectionTask>(&bytes) {
            let _ = decoded.validate();
        }
    }
}
