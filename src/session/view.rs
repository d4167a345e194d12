//! Borrowed views of a result frame's protobuf bytes, in the style of
//! Perfetto's protozero: one pass over the wire bytes, scalars read as they
//! come, strings handed out as `&str` into the bytes (UTF-8 checked), the
//! command line as a lazy iterator over its span, nothing allocated per
//! record.
//!
//! The views accept exactly what prost's decoder accepts, and decode to the
//! same values ([`DetectionResultView::to_owned`] is what
//! `DetectionResult::decode` gives): the last occurrence of a scalar or
//! string wins, a repeated `hash_result` merges, unknown fields of every wire
//! type are skipped (groups too, nested up to prost's recursion limit), and
//! a known field of the wrong wire type, a truncated field, an over-long
//! varint, a key of field 0 or wire type 6 or 7, a stray end-group or text
//! that is not UTF-8 is refused ([`WireError`]).
//! [`DetectionResultView::parse`] also applies the schema's rules
//! (`DetectionResult::validate`, the same code and field paths).

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::proto::{
    DetectionResult, HashResultFields, ProtoHashResult, ProtoProcessRecord, RecordFields,
    ResultFields, ValidationError,
};

/// prost's recursion limit: how deep messages and groups may nest.
const RECURSION_LIMIT: u32 = 100;

/// What is wrong with a field's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireProblem {
    /// A varint, fixed-width value or length-delimited field runs past the
    /// end of its message.
    #[error("runs past the end of its message")]
    Truncated,
    /// A varint longer than 10 bytes, or over 64 bits.
    #[error("is an invalid varint")]
    InvalidVarint,
    /// A field key over 32 bits.
    #[error("has a key of {0}, over 32 bits")]
    InvalidKey(u64),
    /// A wire type that does not exist (6 or 7).
    #[error("has wire type {0}, which does not exist")]
    InvalidWireType(u8),
    /// A key of field number 0.
    #[error("has field number 0")]
    FieldNumberZero,
    /// A known field of another wire type than its own.
    #[error("has wire type {found}, expected {expected}")]
    WrongWireType {
        /// The wire type on the wire.
        found: u8,
        /// The field's own.
        expected: u8,
    },
    /// Text that is not UTF-8.
    #[error("is not UTF-8")]
    NotUtf8,
    /// An end-group without its start-group.
    #[error("has an unexpected end-group")]
    UnexpectedEndGroup,
    /// Groups nested deeper than prost allows.
    #[error("nests deeper than {RECURSION_LIMIT} levels")]
    TooDeep,
}

/// A frame's bytes are not a valid protobuf encoding of its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} at byte {offset} {problem}", describe(field))]
pub struct WireError {
    /// Where: a path such as `processes[3].command_line` (an unknown field
    /// by its number, `processes[3].field 99`), or the message's own path
    /// (empty for the top level) when the key itself is bad.
    pub field: String,
    /// Offset of the field's key from the start of the bytes decoded.
    pub offset: usize,
    /// What is wrong.
    pub problem: WireProblem,
}

fn describe(field: &str) -> String {
    if field.is_empty() {
        "the message".to_owned()
    } else {
        format!("`{field}`")
    }
}

/// Why a frame's view was refused: its bytes, or the schema's rules.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ViewError {
    /// Not a valid protobuf encoding.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Valid protobuf breaking the schema's rules.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    Varint = 0,
    SixtyFourBit = 1,
    LengthDelimited = 2,
    StartGroup = 3,
    EndGroup = 4,
    ThirtyTwoBit = 5,
}

/// Where in its message a fault was found.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// The key itself.
    Message,
    Field(&'static str),
    Unknown(u32),
}

/// A fault inside one message, named once its parent is known.
#[derive(Clone, Copy, Debug)]
struct Fault {
    at: usize,
    place: Place,
    problem: WireProblem,
}

impl Fault {
    fn named(self, parent: &str) -> WireError {
        let field = match (parent.is_empty(), self.place) {
            (_, Place::Message) => parent.to_owned(),
            (true, Place::Field(name)) => name.to_owned(),
            (true, Place::Unknown(number)) => format!("field {number}"),
            (false, Place::Field(name)) => format!("{parent}.{name}"),
            (false, Place::Unknown(number)) => format!("{parent}.field {number}"),
        };
        WireError {
            field,
            offset: self.at,
            problem: self.problem,
        }
    }
}

/// Reads one message's bytes; `base` is their offset in what is decoded,
/// for errors.
#[derive(Clone, Debug)]
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// A varint as prost reads it: at most 10 bytes, the 10th 0 or 1.
    #[inline]
    fn varint(&mut self) -> Result<u64, WireProblem> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if let Some(&byte) = rest.first()
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        let mut value = 0u64;
        for (i, &byte) in rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == 9 && byte >= 2 {
                    return Err(WireProblem::InvalidVarint);
                }
                self.pos += i + 1;
                return Ok(value);
            }
        }
        if rest.len() < 10 {
            Err(WireProblem::Truncated)
        } else {
            Err(WireProblem::InvalidVarint)
        }
    }

    #[inline]
    fn key(&mut self) -> Result<(u32, Wire), WireProblem> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(WireProblem::InvalidKey(key));
        }
        let wire = match key & 7 {
            0 => Wire::Varint,
            1 => Wire::SixtyFourBit,
            2 => Wire::LengthDelimited,
            3 => Wire::StartGroup,
            4 => Wire::EndGroup,
            5 => Wire::ThirtyTwoBit,
            other => return Err(WireProblem::InvalidWireType(other as u8)),
        };
        let number = (key >> 3) as u32;
        if number == 0 {
            return Err(WireProblem::FieldNumberZero);
        }
        Ok((number, wire))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], WireProblem> {
        let left = self.bytes.len() - self.pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= left)
            .ok_or(WireProblem::Truncated)?;
        let taken = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(taken)
    }

    fn length_delimited(&mut self) -> Result<&'a [u8], WireProblem> {
        let len = self.varint()?;
        self.take(len)
    }

    fn text(&mut self) -> Result<&'a str, WireProblem> {
        std::str::from_utf8(self.length_delimited()?).map_err(|_| WireProblem::NotUtf8)
    }

    fn fixed64(&mut self) -> Result<[u8; 8], WireProblem> {
        let bytes = self.take(8)?;
        let mut out = [0u8; 8];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// The next length-delimited field `number` of bytes already checked,
    /// the others skipped; `None` at the end (or should a read fail).
    fn next_checked(&mut self, number: u32) -> Option<&'a [u8]> {
        while !self.at_end() {
            let (found, wire) = self.key().ok()?;
            if found == number && wire == Wire::LengthDelimited {
                return self.length_delimited().ok();
            }
            self.skip(wire, found, RECURSION_LIMIT).ok()?;
        }
        None
    }

    /// Skips an unknown field as prost's `skip_field` does, `budget` being
    /// the recursion prost has left at this level.
    fn skip(&mut self, wire: Wire, number: u32, budget: u32) -> Result<(), WireProblem> {
        if budget == 0 {
            return Err(WireProblem::TooDeep);
        }
        match wire {
            Wire::Varint => self.varint().map(drop),
            Wire::SixtyFourBit => self.take(8).map(drop),
            Wire::ThirtyTwoBit => self.take(4).map(drop),
            Wire::LengthDelimited => self.length_delimited().map(drop),
            Wire::StartGroup => loop {
                let (inner, inner_wire) = self.key()?;
                if inner_wire == Wire::EndGroup {
                    if inner != number {
                        return Err(WireProblem::UnexpectedEndGroup);
                    }
                    return Ok(());
                }
                self.skip(inner_wire, inner, budget - 1)?;
            },
            Wire::EndGroup => Err(WireProblem::UnexpectedEndGroup),
        }
    }
}

/// Checks a known field's wire type.
fn expect(found: Wire, expected: Wire) -> Result<(), WireProblem> {
    if found == expected {
        Ok(())
    } else {
        Err(WireProblem::WrongWireType {
            found: found as u8,
            expected: expected as u8,
        })
    }
}

/// Why a field handler stopped a walk.
enum Stop {
    /// This field is bad.
    Field(Place, WireProblem),
    /// A message inside it is bad (already named).
    Nested(WireError),
}

/// Why a walk failed.
enum Failed {
    At(Fault),
    Nested(WireError),
}

impl Failed {
    fn named(self, parent: &str) -> WireError {
        match self {
            Failed::At(fault) => fault.named(parent),
            Failed::Nested(error) => error,
        }
    }
}

/// Walks a message's fields: `field` handles one (its number, wire type, the
/// key's position, and the reader on its value) and returns false for an
/// unknown field, which is then skipped.
fn walk<'a>(
    reader: &mut Reader<'a>,
    budget: u32,
    mut field: impl FnMut(u32, Wire, usize, &mut Reader<'a>) -> Result<bool, Stop>,
) -> Result<(), Failed> {
    while !reader.at_end() {
        let (key, at) = (reader.pos, reader.offset());
        let fault = |place, problem| Failed::At(Fault { at, place, problem });
        let (number, wire) = reader
            .key()
            .map_err(|problem| fault(Place::Message, problem))?;
        match field(number, wire, key, reader) {
            Ok(true) => {}
            Ok(false) => reader
                .skip(wire, number, budget)
                .map_err(|problem| fault(Place::Unknown(number), problem))?,
            Err(Stop::Field(place, problem)) => return Err(fault(place, problem)),
            Err(Stop::Nested(error)) => return Err(Failed::Nested(error)),
        }
    }
    Ok(())
}

/// A field's value read by `read`, its wire type checked first; a fault is
/// named after the field.
fn known<'a, T>(
    name: &'static str,
    wire: Wire,
    expected: Wire,
    reader: &mut Reader<'a>,
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, WireProblem>,
) -> Result<T, Stop> {
    expect(wire, expected)
        .and_then(|()| read(reader))
        .map_err(|problem| Stop::Field(Place::Field(name), problem))
}

/// A `ProcessRecord`'s bytes, viewed: scalars, `&str`s into the bytes, and
/// the command line as a lazy iterator. Built by [`ProcessRecordView::decode`]
/// or by [`DetectionResultView::processes`]; nothing is allocated. The
/// default is the view of an empty record.
#[derive(Clone, Debug, Default)]
pub struct ProcessRecordView<'a> {
    pid: u32,
    ppid: Option<u32>,
    name: &'a str,
    executable_path: Option<&'a str>,
    command_line: CommandLine<'a>,
    start_time: Option<i64>,
    cpu_usage: Option<f64>,
    memory_usage: Option<u64>,
    executable_hash: Option<&'a str>,
    hash_algorithm: Option<&'a str>,
    user_id: Option<&'a str>,
    accessible: bool,
    file_exists: bool,
    collection_time: i64,
    /// The command line's total bytes, for the rules.
    command_line_bytes: usize,
}

impl<'a> ProcessRecordView<'a> {
    /// Views `bytes` as one encoded `ProcessRecord` (what
    /// `ProcessRecord::decode` accepts); the protobuf encoding only, not the
    /// schema's rules ([`validate`](Self::validate)).
    ///
    /// # Errors
    ///
    /// [`WireError`] naming the first bad field, where prost's decoder
    /// fails too.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, WireError> {
        Self::read(bytes, 0, RECURSION_LIMIT).map_err(|failed| failed.named(""))
    }

    /// One record's fields, `base` being the bytes' offset in the frame and
    /// `budget` the recursion left inside it.
    fn read(bytes: &'a [u8], base: usize, budget: u32) -> Result<Self, Failed> {
        use Wire::{LengthDelimited as Len, SixtyFourBit, Varint};
        let mut view = ProcessRecordView::default();
        let (mut args, mut args_start, mut args_end) = (0, 0, 0);
        let v = &mut view;
        walk(
            &mut Reader::new(bytes, base),
            budget,
            |number, wire, key, r| {
                match number {
                    1 => v.pid = known("pid", wire, Varint, r, Reader::varint)? as u32,
                    2 => v.ppid = Some(known("ppid", wire, Varint, r, Reader::varint)? as u32),
                    3 => v.name = known("name", wire, Len, r, Reader::text)?,
                    4 => {
                        v.executable_path =
                            Some(known("executable_path", wire, Len, r, Reader::text)?)
                    }
                    5 => {
                        let arg = known("command_line", wire, Len, r, Reader::text)?;
                        if args == 0 {
                            args_start = key;
                        }
                        args += 1;
                        args_end = r.pos;
                        v.command_line_bytes += arg.len();
                    }
                    6 => {
                        v.start_time =
                            Some(known("start_time", wire, Varint, r, Reader::varint)? as i64)
                    }
                    7 => {
                        let bits = known("cpu_usage", wire, SixtyFourBit, r, Reader::fixed64)?;
                        v.cpu_usage = Some(f64::from_le_bytes(bits));
                    }
                    8 => {
                        v.memory_usage =
                            Some(known("memory_usage", wire, Varint, r, Reader::varint)?)
                    }
                    9 => {
                        v.executable_hash =
                            Some(known("executable_hash", wire, Len, r, Reader::text)?)
                    }
                    10 => {
                        v.hash_algorithm =
                            Some(known("hash_algorithm", wire, Len, r, Reader::text)?)
                    }
                    11 => v.user_id = Some(known("user_id", wire, Len, r, Reader::text)?),
                    12 => v.accessible = known("accessible", wire, Varint, r, Reader::varint)? != 0,
                    13 => {
                        v.file_exists = known("file_exists", wire, Varint, r, Reader::varint)? != 0
                    }
                    14 => {
                        v.collection_time =
                            known("collection_time", wire, Varint, r, Reader::varint)? as i64;
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            },
        )?;
        view.command_line = CommandLine {
            span: &bytes[args_start..args_end],
            left: args,
        };
        Ok(view)
    }

    /// The fields the schema's rules look at.
    fn fields(&self) -> RecordFields<'a> {
        RecordFields {
            name: self.name,
            executable_path: self.executable_path,
            command_line_args: self.command_line.len(),
            command_line_bytes: self.command_line_bytes,
            cpu_usage: self.cpu_usage,
            executable_hash: self.executable_hash,
            hash_algorithm: self.hash_algorithm,
            user_id: self.user_id,
        }
    }

    /// Checks the schema's rules, exactly as
    /// [`ProtoProcessRecord::validate`] does (same rules, same field names).
    ///
    /// # Errors
    ///
    /// The first broken rule, as a [`ValidationError`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.fields().validate()
    }

    /// The owned record: exactly what prost decodes from the same bytes.
    pub fn to_owned(&self) -> ProtoProcessRecord {
        ProtoProcessRecord {
            pid: self.pid,
            ppid: self.ppid,
            name: self.name.to_owned(),
            executable_path: self.executable_path.map(str::to_owned),
            command_line: self.command_line().map(str::to_owned).collect(),
            start_time: self.start_time,
            cpu_usage: self.cpu_usage,
            memory_usage: self.memory_usage,
            executable_hash: self.executable_hash.map(str::to_owned),
            hash_algorithm: self.hash_algorithm.map(str::to_owned),
            user_id: self.user_id.map(str::to_owned),
            accessible: self.accessible,
            file_exists: self.file_exists,
            collection_time: self.collection_time,
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// Parent process id.
    pub fn ppid(&self) -> Option<u32> {
        self.ppid
    }
    /// Process name.
    pub fn name(&self) -> &'a str {
        self.name
    }
    /// Full executable path.
    pub fn executable_path(&self) -> Option<&'a str> {
        self.executable_path
    }
    /// Command-line arguments, read lazily from the record's bytes.
    pub fn command_line(&self) -> CommandLine<'a> {
        self.command_line.clone()
    }
    /// Start time (Unix timestamp).
    pub fn start_time(&self) -> Option<i64> {
        self.start_time
    }
    /// CPU usage percentage.
    pub fn cpu_usage(&self) -> Option<f64> {
        self.cpu_usage
    }
    /// Memory usage in bytes.
    pub fn memory_usage(&self) -> Option<u64> {
        self.memory_usage
    }
    /// Executable hash (hex).
    pub fn executable_hash(&self) -> Option<&'a str> {
        self.executable_hash
    }
    /// Hash algorithm name.
    pub fn hash_algorithm(&self) -> Option<&'a str> {
        self.hash_algorithm
    }
    /// User id.
    pub fn user_id(&self) -> Option<&'a str> {
        self.user_id
    }
    /// Whether procmond could read the process's details.
    pub fn accessible(&self) -> bool {
        self.accessible
    }
    /// Whether the executable file still exists.
    pub fn file_exists(&self) -> bool {
        self.file_exists
    }
    /// Collection timestamp (milliseconds).
    pub fn collection_time(&self) -> i64 {
        self.collection_time
    }
}

/// Serialized exactly as the derived `Serialize` of [`ProtoProcessRecord`]
/// (same field names, order and types), so JSON written from a view is
/// byte for byte what the owned record gives.
impl Serialize for ProcessRecordView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("ProcessRecord", 14)?;
        s.serialize_field("pid", &self.pid)?;
        s.serialize_field("ppid", &self.ppid)?;
        s.serialize_field("name", self.name)?;
        s.serialize_field("executable_path", &self.executable_path)?;
        s.serialize_field("command_line", &self.command_line)?;
        s.serialize_field("start_time", &self.start_time)?;
        s.serialize_field("cpu_usage", &self.cpu_usage)?;
        s.serialize_field("memory_usage", &self.memory_usage)?;
        s.serialize_field("executable_hash", &self.executable_hash)?;
        s.serialize_field("hash_algorithm", &self.hash_algorithm)?;
        s.serialize_field("user_id", &self.user_id)?;
        s.serialize_field("accessible", &self.accessible)?;
        s.serialize_field("file_exists", &self.file_exists)?;
        s.serialize_field("collection_time", &self.collection_time)?;
        s.end()
    }
}

/// A record's command-line arguments, read one by one from the span of its
/// bytes that holds them (other fields in between are skipped).
#[derive(Clone, Debug, Default)]
pub struct CommandLine<'a> {
    /// From the first argument's key to the end of the last argument.
    span: &'a [u8],
    /// Arguments not yet yielded.
    left: usize,
}

impl<'a> Iterator for CommandLine<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.left == 0 {
            return None;
        }
        let mut reader = Reader::new(self.span, 0);
        match reader.next_checked(5).map(std::str::from_utf8) {
            Some(Ok(arg)) => {
                self.span = &self.span[reader.pos..];
                self.left -= 1;
                Some(arg)
            }
            _ => {
                debug_assert!(false, "a decoded command line reads again");
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for CommandLine<'_> {}

impl Serialize for CommandLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.clone())
    }
}

/// A `HashResult`'s bytes, viewed.
#[derive(Clone, Debug, Default)]
pub struct HashResultView<'a> {
    hash_value: &'a str,
    algorithm: &'a str,
    file_path: &'a str,
    success: bool,
    error_message: Option<&'a str>,
}

impl<'a> HashResultView<'a> {
    /// Merges one occurrence's fields into `self` (protobuf merges a
    /// repeated message field: each field's last occurrence wins).
    fn merge(&mut self, bytes: &'a [u8], base: usize, budget: u32) -> Result<(), Failed> {
        use Wire::{LengthDelimited as Len, Varint};
        walk(
            &mut Reader::new(bytes, base),
            budget,
            |number, wire, _, r| {
                match number {
                    1 => self.hash_value = known("hash_value", wire, Len, r, Reader::text)?,
                    2 => self.algorithm = known("algorithm", wire, Len, r, Reader::text)?,
                    3 => self.file_path = known("file_path", wire, Len, r, Reader::text)?,
                    4 => self.success = known("success", wire, Varint, r, Reader::varint)? != 0,
                    5 => {
                        self.error_message =
                            Some(known("error_message", wire, Len, r, Reader::text)?)
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            },
        )
    }

    fn fields(&self) -> HashResultFields<'a> {
        HashResultFields {
            hash_value: self.hash_value,
            algorithm: self.algorithm,
            file_path: self.file_path,
            success: self.success,
            error_message: self.error_message,
        }
    }

    /// The owned hash result, as prost decodes it.
    pub fn to_owned(&self) -> ProtoHashResult {
        ProtoHashResult {
            hash_value: self.hash_value.to_owned(),
            algorithm: self.algorithm.to_owned(),
            file_path: self.file_path.to_owned(),
            success: self.success,
            error_message: self.error_message.map(str::to_owned),
        }
    }

    /// Computed hash.
    pub fn hash_value(&self) -> &'a str {
        self.hash_value
    }
    /// Algorithm used.
    pub fn algorithm(&self) -> &'a str {
        self.algorithm
    }
    /// File path processed.
    pub fn file_path(&self) -> &'a str {
        self.file_path
    }
    /// Whether the hash was computed.
    pub fn success(&self) -> bool {
        self.success
    }
    /// Why not, if it was not.
    pub fn error_message(&self) -> Option<&'a str> {
        self.error_message
    }
}

/// A `DetectionResult`'s bytes, viewed: its scalars and strings, its hash
/// result, and its records one by one ([`processes`](Self::processes)).
///
/// ```
/// use daemoneye_lib::proto::{DetectionResult, ProtoProcessRecord};
/// use daemoneye_lib::session::DetectionResultView;
/// use prost::Message;
///
/// let record = ProtoProcessRecord {
///     pid: 42,
///     name: "sshd".into(),
///     command_line: vec!["/usr/sbin/sshd".into(), "-D".into()],
///     ..Default::default()
/// };
/// let bytes = DetectionResult::success("t-1", vec![record.clone()]).encode_to_vec();
///
/// let view = DetectionResultView::parse(&bytes)?;
/// assert_eq!(view.task_id(), "t-1");
/// for process in view.processes() {
///     assert_eq!((process.pid(), process.name()), (42, "sshd"));
///     assert_eq!(process.command_line().collect::<Vec<_>>(), ["/usr/sbin/sshd", "-D"]);
///     assert_eq!(process.to_owned(), record);
/// }
/// # Ok::<(), daemoneye_lib::session::ViewError>(())
/// ```
#[derive(Clone, Debug)]
pub struct DetectionResultView<'a> {
    bytes: &'a [u8],
    task_id: &'a str,
    success: bool,
    error_message: Option<&'a str>,
    processes: usize,
    hash_result: Option<HashResultView<'a>>,
}

impl<'a> DetectionResultView<'a> {
    /// Views `bytes` as an encoded `DetectionResult`: what
    /// `DetectionResult::decode` accepts, every record included, without
    /// the schema's rules.
    ///
    /// # Errors
    ///
    /// [`WireError`] naming the first bad field (`processes[3].name`), where
    /// prost's decoder fails too.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, WireError> {
        Self::read(bytes, |_, _| {})
    }

    /// [`decode`](Self::decode) and the schema's rules in one pass: what
    /// `DetectionResult::decode` followed by `validate()` accepts.
    ///
    /// # Errors
    ///
    /// [`ViewError::Wire`] as for `decode` (a bad encoding anywhere is
    /// reported before any broken rule, as the owned path does);
    /// [`ViewError::Invalid`] with the same [`ValidationError`] that
    /// `DetectionResult::validate` gives (say `processes[3].command_line`,
    /// too long).
    ///
    /// ```
    /// use daemoneye_lib::proto::DetectionResult;
    /// use daemoneye_lib::session::{DetectionResultView, ViewError};
    /// use prost::Message;
    ///
    /// let bytes = DetectionResult::failure("t-1", "").encode_to_vec();
    /// let Err(ViewError::Invalid(err)) = DetectionResultView::parse(&bytes) else {
    ///     panic!("a failure that says nothing is refused");
    /// };
    /// assert_eq!(err, DetectionResult::decode(&bytes[..]).unwrap().validate().unwrap_err());
    /// ```
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ViewError> {
        let mut first_bad = None;
        let view = Self::read(bytes, |i, record| {
            if first_bad.is_none()
                && let Err(error) = record.validate()
            {
                first_bad = Some((i, error));
            }
        })?;
        view.fields().validate(|| first_bad)?;
        Ok(view)
    }

    /// One pass over the fields, each record decoded and shown to `record`
    /// with its index.
    fn read(
        bytes: &'a [u8],
        mut record: impl FnMut(usize, &ProcessRecordView<'a>),
    ) -> Result<Self, WireError> {
        use Wire::{LengthDelimited as Len, Varint};
        let mut view = DetectionResultView {
            bytes,
            task_id: "",
            success: false,
            error_message: None,
            processes: 0,
            hash_result: None,
        };
        let v = &mut view;
        walk(
            &mut Reader::new(bytes, 0),
            RECURSION_LIMIT,
            |number, wire, _, r| {
                match number {
                    1 => v.task_id = known("task_id", wire, Len, r, Reader::text)?,
                    2 => v.success = known("success", wire, Varint, r, Reader::varint)? != 0,
                    3 => {
                        v.error_message = Some(known("error_message", wire, Len, r, Reader::text)?)
                    }
                    4 => {
                        let body = known("processes", wire, Len, r, Reader::length_delimited)?;
                        let base = r.offset() - body.len();
                        let process = ProcessRecordView::read(body, base, RECURSION_LIMIT - 1)
                            .map_err(|failed| {
                                Stop::Nested(failed.named(&format!("processes[{}]", v.processes)))
                            })?;
                        record(v.processes, &process);
                        v.processes += 1;
                    }
                    5 => {
                        let body = known("hash_result", wire, Len, r, Reader::length_delimited)?;
                        let base = r.offset() - body.len();
                        v.hash_result
                            .get_or_insert_with(HashResultView::default)
                            .merge(body, base, RECURSION_LIMIT - 1)
                            .map_err(|failed| Stop::Nested(failed.named("hash_result")))?;
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            },
        )
        .map_err(|failed| failed.named(""))?;
        Ok(view)
    }

    fn fields(&self) -> ResultFields<'a> {
        ResultFields {
            task_id: self.task_id,
            success: self.success,
            error_message: self.error_message,
            processes: self.processes,
            hash_result: self.hash_result.as_ref().map(HashResultView::fields),
        }
    }

    /// The owned result: exactly what prost decodes from the same bytes.
    pub fn to_owned(&self) -> DetectionResult {
        DetectionResult {
            task_id: self.task_id.to_owned(),
            success: self.success,
            error_message: self.error_message.map(str::to_owned),
            processes: self.processes().map(|p| p.to_owned()).collect(),
            hash_result: self.hash_result.as_ref().map(HashResultView::to_owned),
        }
    }

    /// The task this result answers.
    pub fn task_id(&self) -> &'a str {
        self.task_id
    }
    /// Whether the task succeeded.
    pub fn success(&self) -> bool {
        self.success
    }
    /// Why it failed.
    pub fn error_message(&self) -> Option<&'a str> {
        self.error_message
    }
    /// The hash result, if any.
    pub fn hash_result(&self) -> Option<&HashResultView<'a>> {
        self.hash_result.as_ref()
    }
    /// How many records the result holds.
    pub fn process_count(&self) -> usize {
        self.processes
    }
    /// The records, each decoded as it is reached (they were checked when
    /// the result was).
    pub fn processes(&self) -> Processes<'a> {
        Processes {
            bytes: self.bytes,
            cursor: self.cursor(),
        }
    }

    /// Where [`processes`](Self::processes) starts, without a borrow.
    pub(crate) fn cursor(&self) -> RecordCursor {
        RecordCursor {
            offset: 0,
            left: self.processes,
        }
    }
}

/// A place among a decoded result's records, kept apart from the bytes so
/// that a reader can hold it across calls (the client's iterators).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RecordCursor {
    offset: usize,
    left: usize,
}

impl RecordCursor {
    /// The next record of `bytes`, the result this cursor was made for.
    pub(crate) fn next<'a>(&mut self, bytes: &'a [u8]) -> Option<ProcessRecordView<'a>> {
        if self.left == 0 {
            return None;
        }
        let mut reader = Reader::new(bytes.get(self.offset..).unwrap_or_default(), self.offset);
        let record = reader.next_checked(4).and_then(|body| {
            let base = reader.offset() - body.len();
            ProcessRecordView::read(body, base, RECURSION_LIMIT - 1).ok()
        });
        match record {
            Some(record) => {
                self.offset = reader.offset();
                self.left -= 1;
                Some(record)
            }
            None => {
                debug_assert!(false, "a decoded result reads again");
                self.left = 0;
                None
            }
        }
    }

    /// Records not yet reached.
    pub(crate) fn left(&self) -> usize {
        self.left
    }
}

/// The records of a [`DetectionResultView`], in order.
#[derive(Clone, Debug)]
pub struct Processes<'a> {
    bytes: &'a [u8],
    cursor: RecordCursor,
}

impl<'a> Iterator for Processes<'a> {
    type Item = ProcessRecordView<'a>;

    fn next(&mut self) -> Option<ProcessRecordView<'a>> {
        self.cursor.next(self.bytes)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.cursor.left, Some(self.cursor.left))
    }
}

impl ExactSizeIterator for Processes<'_> {}
