//! A process record encoded in two parts: the fields that change only on
//! exec, a uid change or reparenting, encoded once and kept
//! ([`StableFields`]), and the fields of one poll ([`EncodedRecord`]'s
//! usage, hashes and collection time), encoded beside them each time.
//!
//! Protobuf lets a message's fields come in any order, so the two parts one
//! after the other are one valid `ProcessRecord`: it decodes to exactly the
//! record whose fields they were.
//!
//! ```text
//!  field 4 of DetectionResult (one record)
//!  ┌─────┬─────┬──────────────────────────────────┬──────────────────────┐
//!  │ key │ len │ stable: 1 2 3 4 5.. 6 11 12 13   │ poll: 7 8 9 10 14    │
//!  └─────┴─────┴──────────────────────────────────┴──────────────────────┘
//!               kept by procmond's table           encoded per poll
//! ```
//!
//! ```
//! use std::sync::Arc;
//! use daemoneye_lib::proto::ProtoProcessRecord;
//! use daemoneye_lib::proto::encoded::{EncodedRecord, StableFields};
//! use prost::Message;
//!
//! let record = ProtoProcessRecord {
//!     pid: 42,
//!     name: "sshd".into(),
//!     command_line: vec!["/usr/sbin/sshd".into(), "-D".into()],
//!     cpu_usage: Some(1.5),
//!     collection_time: 1_700_000_000_000,
//!     ..Default::default()
//! };
//! let stable = Arc::new(StableFields::encode(&record));
//! let encoded = EncodedRecord::of(stable, &record);
//! let mut bytes = Vec::new();
//! encoded.encode_body(&mut bytes);
//! assert_eq!(bytes.len(), encoded.body_len());
//! assert_eq!(ProtoProcessRecord::decode(bytes.as_slice()).unwrap(), record);
//! ```

use std::sync::Arc;

use prost::bytes::BufMut;
use prost::encoding::{self, WireType, encode_key, encode_varint, encoded_len_varint};

use prost::Message;

use super::ProtoProcessRecord;

/// Field numbers of `ProcessRecord` (proto/ipc.proto).
mod tag {
    pub const PID: u32 = 1;
    pub const PPID: u32 = 2;
    pub const NAME: u32 = 3;
    pub const EXECUTABLE_PATH: u32 = 4;
    pub const COMMAND_LINE: u32 = 5;
    pub const START_TIME: u32 = 6;
    pub const CPU_USAGE: u32 = 7;
    pub const MEMORY_USAGE: u32 = 8;
    pub const EXECUTABLE_HASH: u32 = 9;
    pub const HASH_ALGORITHM: u32 = 10;
    pub const USER_ID: u32 = 11;
    pub const ACCESSIBLE: u32 = 12;
    pub const FILE_EXISTS: u32 = 13;
    pub const COLLECTION_TIME: u32 = 14;
}

/// The encoded pid, ppid, name, executable_path, command_line, start_time,
/// user_id, accessible and file_exists of a record, as prost encodes them
/// (proto3 defaults left out, optional fields present when set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StableFields {
    bytes: Box<[u8]>,
}

impl StableFields {
    /// Encodes `record`'s stable fields; the others are ignored.
    pub fn encode(record: &ProtoProcessRecord) -> StableFields {
        let mut bytes = Vec::with_capacity(stable_len(record));
        if record.pid != 0 {
            encoding::uint32::encode(tag::PID, &record.pid, &mut bytes);
        }
        if let Some(ppid) = &record.ppid {
            encoding::uint32::encode(tag::PPID, ppid, &mut bytes);
        }
        if !record.name.is_empty() {
            encoding::string::encode(tag::NAME, &record.name, &mut bytes);
        }
        if let Some(path) = &record.executable_path {
            encoding::string::encode(tag::EXECUTABLE_PATH, path, &mut bytes);
        }
        encoding::string::encode_repeated(tag::COMMAND_LINE, &record.command_line, &mut bytes);
        if let Some(start) = &record.start_time {
            encoding::int64::encode(tag::START_TIME, start, &mut bytes);
        }
        if let Some(uid) = &record.user_id {
            encoding::string::encode(tag::USER_ID, uid, &mut bytes);
        }
        if record.accessible {
            encoding::bool::encode(tag::ACCESSIBLE, &true, &mut bytes);
        }
        if record.file_exists {
            encoding::bool::encode(tag::FILE_EXISTS, &true, &mut bytes);
        }
        debug_assert_eq!(bytes.len(), stable_len(record));
        StableFields {
            bytes: bytes.into_boxed_slice(),
        }
    }

    /// The encoded fields.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The encoded length of `record`'s stable fields.
fn stable_len(record: &ProtoProcessRecord) -> usize {
    let mut len = 0;
    if record.pid != 0 {
        len += encoding::uint32::encoded_len(tag::PID, &record.pid);
    }
    if let Some(ppid) = &record.ppid {
        len += encoding::uint32::encoded_len(tag::PPID, ppid);
    }
    if !record.name.is_empty() {
        len += encoding::string::encoded_len(tag::NAME, &record.name);
    }
    if let Some(path) = &record.executable_path {
        len += encoding::string::encoded_len(tag::EXECUTABLE_PATH, path);
    }
    len += encoding::string::encoded_len_repeated(tag::COMMAND_LINE, &record.command_line);
    if let Some(start) = &record.start_time {
        len += encoding::int64::encoded_len(tag::START_TIME, start);
    }
    if let Some(uid) = &record.user_id {
        len += encoding::string::encoded_len(tag::USER_ID, uid);
    }
    if record.accessible {
        len += encoding::bool::encoded_len(tag::ACCESSIBLE, &true);
    }
    if record.file_exists {
        len += encoding::bool::encoded_len(tag::FILE_EXISTS, &true);
    }
    len
}

/// One record of one poll: its kept [`StableFields`] and this poll's usage,
/// hashes and collection time.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedRecord {
    /// The fields kept between polls.
    pub stable: Arc<StableFields>,
    /// CPU usage, percent of one core.
    pub cpu_usage: Option<f64>,
    /// Resident memory, bytes.
    pub memory_usage: Option<u64>,
    /// The image's hash, hex.
    pub executable_hash: Option<String>,
    /// The hash's algorithm.
    pub hash_algorithm: Option<String>,
    /// When this poll read the process (Unix milliseconds).
    pub collection_time: i64,
}

impl EncodedRecord {
    /// `record`'s poll fields beside `stable` (which should hold `record`'s
    /// stable fields).
    pub fn of(stable: Arc<StableFields>, record: &ProtoProcessRecord) -> EncodedRecord {
        EncodedRecord {
            stable,
            cpu_usage: record.cpu_usage,
            memory_usage: record.memory_usage,
            executable_hash: record.executable_hash.clone(),
            hash_algorithm: record.hash_algorithm.clone(),
            collection_time: record.collection_time,
        }
    }

    /// The length of the record's message (without key and length).
    pub fn body_len(&self) -> usize {
        let mut len = self.stable.bytes.len();
        if let Some(cpu) = &self.cpu_usage {
            len += encoding::double::encoded_len(tag::CPU_USAGE, cpu);
        }
        if let Some(memory) = &self.memory_usage {
            len += encoding::uint64::encoded_len(tag::MEMORY_USAGE, memory);
        }
        if let Some(hash) = &self.executable_hash {
            len += encoding::string::encoded_len(tag::EXECUTABLE_HASH, hash);
        }
        if let Some(algorithm) = &self.hash_algorithm {
            len += encoding::string::encoded_len(tag::HASH_ALGORITHM, algorithm);
        }
        if self.collection_time != 0 {
            len += encoding::int64::encoded_len(tag::COLLECTION_TIME, &self.collection_time);
        }
        len
    }

    /// Writes the record's message (without key and length): the stable
    /// bytes, then this poll's fields.
    ///
    /// The scalars are gathered on the stack and written with one
    /// `put_slice` each side of the hashes (a `BufMut` over a ring claim
    /// checks and moves its cursor on every put, which byte by byte cost
    /// more than the bytes); prost encodes the same bytes.
    pub fn encode_body(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.stable.bytes);
        let mut scalars = Scalars::default();
        if let Some(cpu) = self.cpu_usage {
            scalars.key(tag::CPU_USAGE, WireType::SixtyFourBit);
            scalars.bytes(&cpu.to_le_bytes());
        }
        if let Some(memory) = self.memory_usage {
            scalars.key(tag::MEMORY_USAGE, WireType::Varint);
            scalars.varint(memory);
        }
        if self.executable_hash.is_some() || self.hash_algorithm.is_some() {
            buf.put_slice(scalars.take());
            if let Some(hash) = &self.executable_hash {
                encoding::string::encode(tag::EXECUTABLE_HASH, hash, buf);
            }
            if let Some(algorithm) = &self.hash_algorithm {
                encoding::string::encode(tag::HASH_ALGORITHM, algorithm, buf);
            }
        }
        if self.collection_time != 0 {
            scalars.key(tag::COLLECTION_TIME, WireType::Varint);
            // An int64 is encoded as its two's-complement u64, as prost does.
            scalars.varint(self.collection_time as u64);
        }
        buf.put_slice(scalars.take());
    }

    /// The record as a struct: what decoding its encoding gives.
    pub fn to_record(&self) -> ProtoProcessRecord {
        let mut bytes = Vec::with_capacity(self.body_len());
        self.encode_body(&mut bytes);
        // Bytes encoded just now by prost's own field encoders: they decode.
        ProtoProcessRecord::decode(bytes.as_slice()).unwrap_or_else(|error| {
            debug_assert!(false, "a record's own encoding failed to decode: {error}");
            ProtoProcessRecord::default()
        })
    }

    /// The length of the record as field `field` of its parent message.
    pub fn field_len(&self, field: u32) -> usize {
        Self::field_len_of(field, self.body_len())
    }

    /// The length as field `field` of a record whose
    /// [`body_len`](Self::body_len) is `body_len`.
    pub fn field_len_of(field: u32, body_len: usize) -> usize {
        encoding::key_len(field) + encoded_len_varint(body_len as u64) + body_len
    }

    /// Writes the record as field `field` of its parent message.
    pub fn encode_field(&self, field: u32, buf: &mut impl BufMut) {
        self.encode_field_of(field, self.body_len(), buf);
    }

    /// [`encode_field`](Self::encode_field) with the record's
    /// [`body_len`](Self::body_len) counted already (a writer that sized
    /// the record first counts it once).
    pub fn encode_field_of(&self, field: u32, body_len: usize, buf: &mut impl BufMut) {
        debug_assert_eq!(body_len, self.body_len());
        encode_key(field, WireType::LengthDelimited, buf);
        encode_varint(body_len as u64, buf);
        self.encode_body(buf);
    }
}

/// A poll's scalar fields, encoded on the stack: at most a double (9
/// bytes) and two varints (11 bytes each) at a time.
#[derive(Default)]
struct Scalars {
    bytes: [u8; 32],
    len: usize,
}

impl Scalars {
    /// The key of field `number` (under 16: one byte).
    fn key(&mut self, number: u32, wire: WireType) {
        debug_assert!(number < 16);
        self.push((number << 3) as u8 | wire as u8);
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.push(value as u8);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// The bytes gathered, and the buffer emptied for more.
    fn take(&mut self) -> &[u8] {
        let len = std::mem::take(&mut self.len);
        &self.bytes[..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ProtoProcessRecord {
        ProtoProcessRecord {
            pid: 7,
            ppid: Some(0),
            name: "n".into(),
            executable_path: Some(String::new()),
            command_line: vec!["a".into(), String::new()],
            start_time: Some(-1),
            cpu_usage: Some(0.0),
            memory_usage: Some(0),
            executable_hash: Some("ab".into()),
            hash_algorithm: Some("sha256".into()),
            user_id: Some("0".into()),
            accessible: true,
            file_exists: true,
            collection_time: -5,
        }
    }

    #[test]
    fn both_parts_decode_to_the_record_and_match_prosts_length() {
        for record in [full(), ProtoProcessRecord::default()] {
            let encoded = EncodedRecord::of(Arc::new(StableFields::encode(&record)), &record);
            assert_eq!(encoded.body_len(), record.encoded_len());
            let mut bytes = Vec::new();
            encoded.encode_field(4, &mut bytes);
            assert_eq!(bytes.len(), encoded.field_len(4));
            assert_eq!(
                encoding::message::encoded_len(4, &record),
                encoded.field_len(4)
            );
            let mut body = &bytes[..];
            let (field, wire) = encoding::decode_key(&mut body).unwrap();
            assert_eq!((field, wire), (4, WireType::LengthDelimited));
            let len = encoding::decode_varint(&mut body).unwrap() as usize;
            assert_eq!(len, body.len());
            assert_eq!(ProtoProcessRecord::decode(body).unwrap(), record);
            assert_eq!(encoded.to_record(), record);
        }
    }
}
