//! The borrowed views (`session::view`) against prost, the reference: the
//! same values from the same bytes, the same bytes accepted and refused,
//! the same rule broken at the same field path, and the same JSON.

mod common;

use common::same_bits;
use daemoneye_lib::proto::encoded::{EncodedRecord, StableFields};
use daemoneye_lib::proto::{DetectionResult, ProtoHashResult, ProtoProcessRecord};
use daemoneye_lib::session::{
    DetectionResultView, ProcessRecordView, ViewError, WireError, WireProblem,
};
use proptest::prelude::*;
use prost::Message;

/// What prost makes of `bytes`: decoded and validated.
fn by_prost(
    bytes: &[u8],
) -> Result<DetectionResult, Option<daemoneye_lib::proto::ValidationError>> {
    let result = DetectionResult::decode(bytes).map_err(|_| None)?;
    result.validate().map_err(Some)?;
    Ok(result)
}

/// Asserts that the views and prost agree on `bytes`: both refuse, or both
/// accept with the same values; with the rules, the same verdict and the
/// same broken rule at the same field path.
fn agree(bytes: &[u8]) {
    let prost = DetectionResult::decode(bytes);
    let view = DetectionResultView::decode(bytes);
    match (&prost, &view) {
        (Ok(owned), Ok(view)) => {
            assert!(
                same_bits(owned, &view.to_owned()),
                "{owned:?}\n{:?}",
                view.to_owned()
            );
            assert_eq!(view.process_count(), owned.processes.len());
            // The hash result's accessors, beside its `to_owned`.
            let hash = view.hash_result().map(|h| {
                let fields = (h.hash_value(), h.algorithm(), h.file_path());
                (fields, h.success(), h.error_message())
            });
            let owned_hash = owned.hash_result.as_ref().map(|h| {
                let fields = (&*h.hash_value, &*h.algorithm, &*h.file_path);
                (fields, h.success, h.error_message.as_deref())
            });
            assert_eq!(hash, owned_hash);
            for (record, view) in owned.processes.iter().zip(view.processes()) {
                assert!(same_bits(record, &view.to_owned()));
                assert_eq!(view.command_line().len(), record.command_line.len());
                assert_eq!(
                    serde_json::to_string(&view).unwrap(),
                    serde_json::to_string(record).unwrap()
                );
            }
        }
        (Err(_), Err(_)) => {}
        _ => panic!(
            "prost {:?} but the view {:?} for {bytes:02x?}",
            prost.as_ref().map(|_| ()),
            view.as_ref().map(|_| ())
        ),
    }
    match (by_prost(bytes), DetectionResultView::parse(bytes)) {
        (Ok(_), Ok(_)) | (Err(None), Err(ViewError::Wire(_))) => {}
        // Debug text: a NaN CPU usage in the rule compares unequal to itself.
        (Err(Some(owned)), Err(ViewError::Invalid(view))) => {
            assert_eq!(format!("{owned:?}"), format!("{view:?}"))
        }
        (prost, view) => panic!("prost {prost:?} but the view {view:?} for {bytes:02x?}"),
    }
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(number: u32, wire_type: u8, out: &mut Vec<u8>) {
    varint(u64::from(number) << 3 | u64::from(wire_type), out);
}

/// A field of any wire type, for building odd messages by hand.
#[derive(Clone, Debug)]
enum Field {
    /// A varint, written with `pad` extra (non-minimal) continuation bytes.
    Varint(u32, u64, u8),
    Fixed64(u32, u64),
    Fixed32(u32, u32),
    Bytes(u32, Vec<u8>),
    Message(u32, Vec<Field>),
    Group(u32, Vec<Field>),
}

impl Field {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Field::Varint(n, value, pad) => {
                key(*n, 0, out);
                let mut bytes = Vec::new();
                varint(*value, &mut bytes);
                // Non-minimal: a zero group with the continuation bit, kept
                // within 10 bytes.
                let pad = usize::from(*pad).min(10 - bytes.len());
                if pad > 0 {
                    let last = bytes.len() - 1;
                    bytes[last] |= 0x80;
                    bytes.extend(std::iter::repeat_n(0x80, pad - 1));
                    bytes.push(0);
                }
                out.extend(bytes);
            }
            Field::Fixed64(n, value) => {
                key(*n, 1, out);
                out.extend(value.to_le_bytes());
            }
            Field::Fixed32(n, value) => {
                key(*n, 5, out);
                out.extend(value.to_le_bytes());
            }
            Field::Bytes(n, bytes) => {
                key(*n, 2, out);
                varint(bytes.len() as u64, out);
                out.extend(bytes);
            }
            Field::Message(n, fields) => {
                key(*n, 2, out);
                let body = encode(fields);
                varint(body.len() as u64, out);
                out.extend(body);
            }
            Field::Group(n, fields) => {
                key(*n, 3, out);
                for field in fields {
                    field.encode(out);
                }
                key(*n, 4, out);
            }
        }
    }
}

fn encode(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        field.encode(&mut out);
    }
    out
}

/// Field numbers: mostly the schema's (1 to 14), some unknown, a few huge.
fn number() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => 1u32..=15,
        1 => 16u32..100,
        1 => Just((1 << 29) - 1),
    ]
}

/// Payloads: text (valid UTF-8, short), hex digests, or any bytes.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z0-9/ ]{0,12}".prop_map(String::into_bytes),
        Just(b"sha256".to_vec()),
        "[0-9a-f]{64}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..8),
    ]
}

/// A soup of fields of every wire type, messages and groups nested.
fn soup() -> impl Strategy<Value = Vec<Field>> {
    let leaf = prop_oneof![
        (
            number(),
            prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()],
            0u8..3
        )
            .prop_map(|(n, v, pad)| Field::Varint(n, v, pad)),
        (number(), any::<u64>()).prop_map(|(n, v)| Field::Fixed64(n, v)),
        (number(), any::<u32>()).prop_map(|(n, v)| Field::Fixed32(n, v)),
        (number(), payload()).prop_map(|(n, b)| Field::Bytes(n, b)),
    ];
    let field = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            3 => (prop_oneof![Just(4u32), Just(5), number()], prop::collection::vec(inner.clone(), 0..6))
                .prop_map(|(n, f)| Field::Message(n, f)),
            1 => (number(), prop::collection::vec(inner, 0..3)).prop_map(|(n, f)| Field::Group(n, f)),
        ]
    });
    prop::collection::vec(field, 0..10)
}

/// A record that passes the rules, more or less near their edges: any
/// record, with the fields the rules look at made valid.
fn valid_record() -> impl Strategy<Value = ProtoProcessRecord> {
    (
        common::record(),
        "[a-z\u{e9}]{0,20}",
        prop::collection::vec("[ -~\u{1b}\u{202e}]{0,10}", 0..5),
        proptest::option::of(0.0f64..400.0),
        (proptest::option::of("[0-9a-f]{64}"), any::<bool>()),
        proptest::option::of("[0-9]{1,5}"),
    )
        .prop_map(
            |(record, name, command_line, cpu_usage, (hash, named), user_id)| ProtoProcessRecord {
                name,
                command_line,
                cpu_usage,
                hash_algorithm: (hash.is_some() || named).then(|| "sha256".into()),
                executable_hash: hash,
                user_id,
                ..record
            },
        )
}

fn valid_result() -> impl Strategy<Value = DetectionResult> {
    (
        "[a-z0-9-]{1,20}",
        prop::collection::vec(valid_record(), 0..6),
        proptest::option::of(Just(ProtoHashResult {
            hash_value: "ab".repeat(32),
            algorithm: "sha256".into(),
            file_path: "/bin/true".into(),
            success: true,
            error_message: None,
        })),
    )
        .prop_map(|(task_id, processes, hash_result)| DetectionResult {
            hash_result,
            ..DetectionResult::success(task_id, processes)
        })
}

/// `result` as procmond writes it: the result's own fields, then each
/// record as its kept stable fields and this poll's (the order the views'
/// fast path expects), not prost's.
fn procmond_encoding(result: &DetectionResult) -> Vec<u8> {
    let mut bytes = DetectionResult {
        processes: vec![],
        ..result.clone()
    }
    .encode_to_vec();
    for record in &result.processes {
        let stable = std::sync::Arc::new(StableFields::encode(record));
        EncodedRecord::of(stable, record).encode_field(4, &mut bytes);
    }
    bytes
}

/// A mutation of an encoding: flip, set, insert, remove or truncate.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, 1 << bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..4).prop_map(|(at, n)| Mutation::Remove(at, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match mutation {
        Mutation::Flip(at, bit) if len > 0 => bytes[at % len] ^= bit,
        Mutation::Set(at, b) if len > 0 => bytes[at % len] = *b,
        Mutation::Insert(at, extra) => {
            let at = at % (len + 1);
            bytes.splice(at..at, extra.iter().copied());
        }
        Mutation::Remove(at, n) if len > 0 => {
            let at = at % len;
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// prost encodes, the view decodes: `to_owned()` is the original, and
    /// the rules give the same verdict.
    #[test]
    fn views_of_prost_encodings_give_the_original_back(result in common::result()) {
        let bytes = result.encode_to_vec();
        let view = DetectionResultView::decode(&bytes).expect("view");
        prop_assert!(same_bits(&view.to_owned(), &result));
        for (record, view) in result.processes.iter().zip(view.processes()) {
            prop_assert!(same_bits(&view.to_owned(), record));
            let alone = record.encode_to_vec();
            prop_assert!(same_bits(&ProcessRecordView::decode(&alone).unwrap().view().to_owned(), record));
        }
        agree(&bytes);
    }

    #[test]
    fn valid_results_pass_both_ways(result in valid_result()) {
        let bytes = result.encode_to_vec();
        prop_assert!(result.validate().is_ok());
        let view = DetectionResultView::parse(&bytes).expect("valid");
        prop_assert!(same_bits(&view.to_owned(), &result));
        agree(&bytes);
    }

    /// procmond's order (stable fields, then the poll's): the views read
    /// it straight through, and agree with prost on it and on every
    /// mutation of it (a key out of place, a wrong wire type, a length cut
    /// short, a field repeated).
    #[test]
    fn procmond_encodings_and_their_mutations_read_as_prost_reads_them(
        result in prop_oneof![valid_result(), common::result()],
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        let mut bytes = procmond_encoding(&result);
        if mutations.is_empty() {
            let view = DetectionResultView::decode(&bytes).expect("view");
            prop_assert!(same_bits(&view.to_owned(), &result));
        }
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        agree(&bytes);
    }

    /// Mutated encodings: accepted and refused alike, with the same values
    /// or the same broken rule.
    #[test]
    fn mutated_bytes_are_accepted_and_refused_alike(
        result in prop_oneof![valid_result(), common::result()],
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = result.encode_to_vec();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        agree(&bytes);
    }

    /// Hand-built messages: unknown fields of every wire type, groups,
    /// repeated scalars and strings (the last wins), repeated hash results
    /// (merged), non-minimal varints, wrong wire types for known fields.
    #[test]
    fn field_soups_are_read_as_prost_reads_them(
        fields in soup(),
        mutations in prop::collection::vec(mutation(), 0..2),
    ) {
        let mut bytes = encode(&fields);
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        agree(&bytes);
    }
}

/// Groups are skipped as prost skips them, up to its recursion limit (100
/// levels from the top, one fewer inside a record).
#[test]
fn nested_groups_are_skipped_up_to_prosts_limit() {
    for depth in 95..=102 {
        let mut group = Field::Varint(99, 1, 0);
        for _ in 0..depth {
            group = Field::Group(98, vec![group]);
        }
        let top = encode(std::slice::from_ref(&group));
        agree(&top);
        let in_record = encode(&[
            Field::Bytes(1, b"t".to_vec()),
            Field::Message(4, vec![group.clone()]),
        ]);
        agree(&in_record);
        let in_hash_result = encode(&[
            Field::Bytes(1, b"t".to_vec()),
            Field::Message(5, vec![group]),
        ]);
        agree(&in_hash_result);
    }
    // The limits really are reached in that range.
    let deep = |depth| {
        let mut group = Field::Varint(99, 1, 0);
        for _ in 0..depth {
            group = Field::Group(98, vec![group]);
        }
        encode(&[group])
    };
    assert!(DetectionResultView::decode(&deep(99)).is_ok());
    assert_eq!(
        DetectionResultView::decode(&deep(100)).unwrap_err().problem,
        WireProblem::TooDeep
    );
}

#[test]
fn the_last_occurrence_wins_and_hash_results_merge() {
    let bytes = encode(&[
        Field::Bytes(1, b"first".to_vec()),
        Field::Message(
            4,
            vec![
                Field::Varint(1, 7, 0),
                Field::Bytes(5, b"a".to_vec()),
                Field::Bytes(3, b"old".to_vec()),
                Field::Fixed32(99, 0),
                Field::Bytes(5, b"b".to_vec()),
                Field::Varint(1, u64::from(u32::MAX) + 9, 2), // truncated to u32
                Field::Bytes(3, b"new".to_vec()),
            ],
        ),
        Field::Message(
            5,
            vec![
                Field::Bytes(1, b"h1".to_vec()),
                Field::Bytes(2, b"sha256".to_vec()),
            ],
        ),
        Field::Message(
            5,
            vec![Field::Bytes(1, b"h2".to_vec()), Field::Varint(4, 1, 0)],
        ),
        Field::Bytes(1, b"second".to_vec()),
    ]);
    agree(&bytes);
    let view = DetectionResultView::decode(&bytes).unwrap();
    assert_eq!(view.task_id(), "second");
    let record = view.processes().next().unwrap();
    assert_eq!((record.pid(), record.name()), (8, "new"));
    assert_eq!(record.command_line().collect::<Vec<_>>(), ["a", "b"]);
    let hash = view.hash_result().unwrap();
    assert_eq!(
        (hash.hash_value(), hash.algorithm(), hash.success()),
        ("h2", "sha256", true)
    );
}

/// Wire errors name the field as the rules do.
#[test]
fn wire_errors_name_the_field() {
    let mut records: Vec<Field> = (0..4)
        .map(|pid| Field::Message(4, vec![Field::Varint(1, pid, 0)]))
        .collect();
    records[3] = Field::Message(
        4,
        vec![
            Field::Bytes(5, b"ok".to_vec()),
            Field::Bytes(5, vec![0xff, 0xfe]),
        ],
    );
    let bytes = encode(&records);
    agree(&bytes);
    let err: WireError = DetectionResultView::decode(&bytes).unwrap_err();
    assert_eq!(err.field, "processes[3].command_line");
    assert_eq!(err.problem, WireProblem::NotUtf8);
    assert!(
        err.to_string().contains("processes[3].command_line"),
        "{err}"
    );

    // A known field of another wire type, and an unknown field cut short.
    let err = DetectionResultView::decode(&encode(&[Field::Fixed32(2, 1)])).unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.problem),
        (
            "success",
            WireProblem::WrongWireType {
                found: 5,
                expected: 0
            }
        )
    );
    let mut cut = encode(&[Field::Message(4, vec![Field::Fixed64(77, 0)])]);
    cut[1] -= 1;
    cut.pop();
    let err = DetectionResultView::decode(&cut).unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.problem),
        ("processes[0].field 77", WireProblem::Truncated)
    );
}

/// Rules broken in records: the same error as the owned path, the first
/// broken record named.
#[test]
fn rule_errors_are_the_owned_paths() {
    let mut processes: Vec<_> = (0..5)
        .map(|pid| ProtoProcessRecord {
            pid,
            name: "p".into(),
            ..Default::default()
        })
        .collect();
    processes[3].command_line = vec!["x".repeat(64 << 10); 3];
    processes[4].cpu_usage = Some(-1.0);
    let result = DetectionResult::success("t", processes);
    let bytes = result.encode_to_vec();
    let Err(ViewError::Invalid(err)) = DetectionResultView::parse(&bytes) else {
        panic!("refused");
    };
    assert_eq!(err.field, "processes[3].command_line");
    assert_eq!(err, result.validate().unwrap_err());
    agree(&bytes);
}

/// Offsets in the views are 32-bit, so bytes of 4 GiB or more are refused
/// before a byte is read, and 4 GiB less one byte is read. The zeroed
/// buffers are only reserved: no path touches more than a page (a zero
/// byte is a key with field number 0, refused at once, and the high byte
/// after it ends the ASCII run a record's fast path looks for first).
#[test]
fn four_gib_are_refused_unread_and_one_byte_less_is_read() {
    let limit = u32::MAX as usize;
    let over = vec![0u8; limit + 1];
    let mut at = vec![0u8; limit];
    at[1] = 0x80;
    let problem = |result: Result<(), WireError>| result.expect_err("refused").problem;
    for (bytes, expected) in [
        (&over, WireProblem::TooLarge),
        (&at, WireProblem::FieldNumberZero),
    ] {
        let alone = ProcessRecordView::decode(bytes).map(drop);
        assert_eq!(problem(alone), expected);
        assert_eq!(
            problem(DetectionResultView::decode(bytes).map(drop)),
            expected
        );
    }
    assert!(matches!(
        DetectionResultView::parse(&over).map(drop),
        Err(ViewError::Wire(WireError {
            problem: WireProblem::TooLarge,
            ..
        }))
    ));
}

/// A record decoded alone checks the rules only when asked
/// (`validate`), and then exactly as the owned record does.
#[test]
fn a_record_decoded_alone_is_validated_as_the_owned_record_is() {
    let good = common::worker(7);
    let bytes = good.encode_to_vec();
    let decoded = ProcessRecordView::decode(&bytes).expect("decodes");
    assert_eq!(decoded.view().validate(), Ok(()));
    assert_eq!(good.validate(), Ok(()));

    let mut too_long = good.clone();
    too_long.command_line = vec!["x".repeat(64 << 10); 3];
    let mut negative = good.clone();
    negative.cpu_usage = Some(-1.0);
    for bad in [too_long, negative] {
        let bytes = bad.encode_to_vec();
        // The encoding is fine: decoding alone does not refuse it.
        let decoded = ProcessRecordView::decode(&bytes).expect("decodes");
        let err = decoded.view().validate().expect_err("a rule is broken");
        assert_eq!(err, bad.validate().expect_err("a rule is broken"));
    }
}

#[test]
fn a_command_line_split_by_other_fields_is_its_arguments_only() {
    // Arguments with the name, a path and an unknown string between them:
    // walking the command line takes field 5 alone.
    let bytes = encode(&record_fields());
    agree(&bytes);
    let result = DetectionResultView::decode(&bytes).unwrap();
    let view = result.processes().next().unwrap();
    assert_eq!(view.name(), "the-name");
    let args: Vec<_> = view.command_line().collect();
    assert_eq!(args, ["first", "second", "third"]);
    // A record decoded alone walks its command line's bytes instead.
    let Field::Message(4, fields) = &record_fields()[0] else {
        unreachable!()
    };
    let alone = encode(fields);
    let decoded = ProcessRecordView::decode(&alone).unwrap();
    let view = decoded.view();
    assert_eq!(view.name(), "the-name");
    assert_eq!(view.command_line().len(), 3);
    let args: Vec<_> = view.command_line().collect();
    assert_eq!(args, ["first", "second", "third"]);
    assert!(same_bits(
        &ProtoProcessRecord::decode(alone.as_slice()).unwrap(),
        &view.to_owned()
    ));
}

/// A record whose arguments have other fields between them.
fn record_fields() -> Vec<Field> {
    vec![Field::Message(
        4,
        vec![
            Field::Bytes(5, b"first".to_vec()),
            Field::Bytes(3, b"the-name".to_vec()),
            Field::Bytes(5, b"second".to_vec()),
            Field::Bytes(4, b"/the/path".to_vec()),
            Field::Bytes(99, b"unknown".to_vec()),
            Field::Bytes(5, b"third".to_vec()),
        ],
    )]
}

#[test]
fn the_largest_32_bit_key_is_an_invalid_wire_type_as_prost_says() {
    // u32::MAX as a key: field 0x1fff_ffff, wire type 7. Any larger key
    // is over 32 bits.
    let mut bytes = Vec::new();
    varint(u64::from(u32::MAX), &mut bytes);
    agree(&bytes);
    let err = DetectionResultView::decode(&bytes).unwrap_err();
    assert_eq!(err.problem, WireProblem::InvalidWireType(7));
    let mut bytes = Vec::new();
    varint(u64::from(u32::MAX) + 1, &mut bytes);
    let err = DetectionResultView::decode(&bytes).unwrap_err();
    assert_eq!(
        err.problem,
        WireProblem::InvalidKey(u64::from(u32::MAX) + 1)
    );
}

/// A view prints as its record does, under its own name, and its command
/// line as a list; the same whether the arguments were noted (a result's
/// record) or are walked (a record decoded alone).
#[test]
fn a_view_and_its_command_line_print_their_fields() {
    let record = ProtoProcessRecord {
        pid: 7,
        ppid: Some(1),
        name: "a\"b".into(),
        command_line: vec!["x".into(), "y".into()],
        start_time: Some(5),
        cpu_usage: Some(1.5),
        executable_hash: Some("ab".into()),
        hash_algorithm: Some("sha256".into()),
        user_id: Some("0".into()),
        accessible: true,
        collection_time: 9,
        ..Default::default()
    };
    let expected = "ProcessRecordView { pid: 7, ppid: Some(1), name: \"a\\\"b\", \
                    executable_path: None, command_line: [\"x\", \"y\"], start_time: Some(5), \
                    cpu_usage: Some(1.5), memory_usage: None, executable_hash: Some(\"ab\"), \
                    hash_algorithm: Some(\"sha256\"), user_id: Some(\"0\"), accessible: true, \
                    file_exists: false, collection_time: 9 }";
    let result = DetectionResult::success("t", vec![record.clone()]).encode_to_vec();
    let view = DetectionResultView::decode(&result).expect("decodes");
    let noted = view.processes().next().expect("a record");
    assert_eq!(format!("{noted:?}"), expected);
    assert_eq!(format!("{:?}", noted.command_line()), "[\"x\", \"y\"]");
    let bytes = record.encode_to_vec();
    let decoded = ProcessRecordView::decode(&bytes).expect("decodes");
    assert_eq!(format!("{:?}", decoded.view()), expected);
    assert_eq!(
        format!("{:?}", decoded.view().command_line()),
        "[\"x\", \"y\"]"
    );
}

/// A walked command line (a record decoded alone) whose bytes are all
/// text but have another field between two arguments: the second is found
/// past that field, and cut from the text at its own place.
#[test]
fn a_walked_command_line_steps_over_a_field_between_its_arguments() {
    let bytes = encode(&[
        Field::Bytes(5, b"first".to_vec()),
        Field::Bytes(3, b"name".to_vec()),
        Field::Bytes(5, b"second".to_vec()),
        Field::Bytes(5, b"".to_vec()),
    ]);
    let owned = ProtoProcessRecord::decode(bytes.as_slice()).expect("prost decodes");
    assert_eq!(owned.command_line, ["first", "second", ""]);
    let decoded = ProcessRecordView::decode(&bytes).expect("decodes");
    let view = decoded.view();
    assert_eq!(view.command_line().collect::<Vec<_>>(), owned.command_line);
    assert_eq!(view.name(), "name");
}

/// A result's records are an exact-size iterator (its length counts down as
/// records are taken, `nth` skips), and the result prints its fields with
/// the number of records.
#[test]
fn the_records_count_down_and_the_result_prints_its_fields() {
    let records: Vec<_> = (0..3).map(common::worker).collect();
    let bytes = DetectionResult::success("t-9", records).encode_to_vec();
    let view = DetectionResultView::parse(&bytes).expect("valid");
    let mut processes = view.processes();
    for left in (0..=3).rev() {
        assert_eq!(processes.size_hint(), (left, Some(left)));
        assert_eq!(processes.len(), left);
        assert_eq!(processes.next().is_some(), left > 0);
    }
    let mut processes = view.processes();
    assert_eq!(processes.nth(1).map(|p| p.pid()), Some(1));
    assert_eq!(processes.len(), 1);
    assert_eq!(
        format!("{view:?}"),
        "DetectionResultView { task_id: \"t-9\", success: true, error_message: None, \
         processes: 3, hash_result: None }"
    );
}
