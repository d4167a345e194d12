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
//!
//! The one pass notes each record's scalars and where its strings are
//! ([`RecordSlots`], about 180 bytes a record, and each argument's span, 16
//! bytes, in vectors the [`ChunkReader`](super::ChunkReader) reuses), so
//! handing records out after the whole frame is checked reads nothing
//! again: each string is a slice of the bytes, its UTF-8 checked once, in
//! the pass ([`super::text`] says why that is sound).

use std::borrow::Cow;
use std::fmt;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::text::{AsciiRun, Checked, CheckedFrame, TextSpan};
use crate::proto::limits::MAX_PROCESSES_PER_RESULT;
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
    /// Bytes of 4 GiB or more (offsets are 32-bit; a result is at most
    /// [`MAX_RESULT_BYTES`](crate::proto::limits::MAX_RESULT_BYTES)).
    #[error("is 4 GiB or more")]
    TooLarge,
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

/// Field names by number, for errors.
const RESULT_FIELDS: &[&str] = &[
    "",
    "task_id",
    "success",
    "error_message",
    "processes",
    "hash_result",
];
const RECORD_FIELDS: &[&str] = &[
    "",
    "pid",
    "ppid",
    "name",
    "executable_path",
    "command_line",
    "start_time",
    "cpu_usage",
    "memory_usage",
    "executable_hash",
    "hash_algorithm",
    "user_id",
    "accessible",
    "file_exists",
    "collection_time",
];
const HASH_FIELDS: &[&str] = &[
    "",
    "hash_value",
    "algorithm",
    "file_path",
    "success",
    "error_message",
];

/// Where in its message a fault was found.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// The key itself.
    Key,
    /// The field of this number (known or not).
    Field(u32),
}

/// A fault inside one message, named once its parent is known.
#[derive(Clone, Copy, Debug)]
struct Fault {
    at: usize,
    place: Place,
    problem: WireProblem,
}

impl Fault {
    /// The error, `parent` being the message's path and `names` its
    /// fields' names by number.
    fn named(self, parent: &str, names: &[&str]) -> WireError {
        let field = match self.place {
            Place::Key => parent.to_owned(),
            Place::Field(number) => {
                let name = match names.get(number as usize) {
                    Some(name) if !name.is_empty() => (*name).to_owned(),
                    _ => format!("field {number}"),
                };
                if parent.is_empty() {
                    name
                } else {
                    format!("{parent}.{name}")
                }
            }
        };
        WireError {
            field,
            offset: self.at,
            problem: self.problem,
        }
    }
}

/// A place in the bytes viewed, not text: offset and length (32-bit, so a
/// record's notes stay small).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(self, bytes: &[u8]) -> &[u8] {
        let start = self.start as usize;
        bytes
            .get(start..start + self.len as usize)
            .unwrap_or_default()
    }
}

/// Reads one message's bytes; `base` is their offset in what is viewed.
#[derive(Clone, Debug)]
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    /// Reads `bytes` as a whole.
    fn new(bytes: &'a [u8]) -> Self {
        Self::within(bytes, 0, bytes.len())
    }

    /// Reads `all[start..end]`.
    fn within(all: &'a [u8], start: usize, end: usize) -> Self {
        Self {
            bytes: &all[start..end],
            pos: 0,
            base: start,
        }
    }

    #[inline(always)]
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    #[inline(always)]
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// A varint as prost reads it: at most 10 bytes, the 10th 0 or 1.
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, WireProblem> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if let Some(&byte) = rest.first()
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        // Ten bytes to hand (all but a record's last field): the same loop
        // over a fixed-size array unrolls, with no bounds checks.
        let (value, len) = match rest.first_chunk::<10>() {
            Some(ten) => varint_in(ten)?,
            None => varint_in(rest)?,
        };
        self.pos += len;
        Ok(value)
    }

    #[inline(always)]
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

    #[inline(always)]
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

    #[inline(always)]
    fn length_delimited(&mut self) -> Result<&'a [u8], WireProblem> {
        let len = self.varint()?;
        self.take(len)
    }

    /// A varint field's value, its wire type checked.
    #[inline(always)]
    fn varint_of(&mut self, wire: Wire) -> Result<u64, WireProblem> {
        expect(wire, Wire::Varint)?;
        self.varint()
    }

    /// A double field's value, its wire type checked.
    #[inline(always)]
    fn double_of(&mut self, wire: Wire) -> Result<f64, WireProblem> {
        expect(wire, Wire::SixtyFourBit)?;
        let mut bits = [0u8; 8];
        bits.copy_from_slice(self.take(8)?);
        Ok(f64::from_le_bytes(bits))
    }

    /// A length-delimited field's bytes, its wire type checked.
    #[inline(always)]
    fn bytes_of(&mut self, wire: Wire) -> Result<&'a [u8], WireProblem> {
        expect(wire, Wire::LengthDelimited)?;
        self.length_delimited()
    }

    /// A string field's text, its wire type and UTF-8 checked.
    #[inline(always)]
    fn text_of(&mut self, wire: Wire) -> Result<&'a str, WireProblem> {
        std::str::from_utf8(self.bytes_of(wire)?).map_err(|_| WireProblem::NotUtf8)
    }

    /// Where a string field's text is in `viewed` (what this reader's
    /// offsets count from), its wire type and UTF-8 checked.
    #[inline(always)]
    fn text_span_of(&mut self, wire: Wire, viewed: Checked<'_>) -> Result<TextSpan, WireProblem> {
        let len = self.bytes_of(wire)?.len();
        viewed.check(self.offset() - len, len)
    }

    /// [`text_span_of`](Self::text_span_of), the text found in `run`
    /// needing no check of its own.
    #[inline(always)]
    fn text_span_in(
        &mut self,
        wire: Wire,
        viewed: Checked<'_>,
        run: AsciiRun,
    ) -> Result<TextSpan, WireProblem> {
        let len = self.bytes_of(wire)?.len();
        viewed.check_in(run, self.offset() - len, len)
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

    /// Reads every field: `field` takes one (its number, wire type, the
    /// key's offset and the reader on its value).
    #[inline(always)]
    fn fields(
        &mut self,
        mut field: impl FnMut(&mut Self, u32, Wire, usize) -> Result<(), WireProblem>,
    ) -> Result<(), Fault> {
        while !self.at_end() {
            let at = self.offset();
            let (number, wire) = self.key().map_err(|problem| Fault {
                at,
                place: Place::Key,
                problem,
            })?;
            field(self, number, wire, at).map_err(|problem| Fault {
                at,
                place: Place::Field(number),
                problem,
            })?;
        }
        Ok(())
    }
}

/// A varint at the start of `bytes`, as prost reads it (at most 10 bytes,
/// the 10th 0 or 1): its value and length.
#[inline(always)]
fn varint_in(bytes: &[u8]) -> Result<(u64, usize), WireProblem> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            if i == 9 && byte >= 2 {
                return Err(WireProblem::InvalidVarint);
            }
            return Ok((value, i + 1));
        }
    }
    if bytes.len() < 10 {
        Err(WireProblem::Truncated)
    } else {
        Err(WireProblem::InvalidVarint)
    }
}

/// Checks a known field's wire type.
#[inline(always)]
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

/// What one pass noted of a `ProcessRecord`: its scalars, and where its
/// strings are in the bytes viewed (checked UTF-8). No lifetime, so a
/// reader can keep a frame's worth in a vector it reuses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordSlots {
    pid: u32,
    ppid: Option<u32>,
    name: TextSpan,
    executable_path: Option<TextSpan>,
    /// From the first argument's key to the end of the last argument.
    command_line: Span,
    args: u32,
    /// Where the first argument's span is among a frame's noted arguments
    /// (see [`read`](Self::read)).
    first_arg: u32,
    /// The arguments' bytes together, for the rules.
    args_bytes: u32,
    start_time: Option<i64>,
    cpu_usage: Option<f64>,
    memory_usage: Option<u64>,
    executable_hash: Option<TextSpan>,
    hash_algorithm: Option<TextSpan>,
    user_id: Option<TextSpan>,
    accessible: bool,
    file_exists: bool,
    collection_time: i64,
}

impl Default for RecordSlots {
    fn default() -> Self {
        RecordSlots::EMPTY
    }
}

impl RecordSlots {
    /// An empty record's notes (the default), as a constant, so that a
    /// default view can borrow them for `'static`.
    const EMPTY: RecordSlots = RecordSlots {
        pid: 0,
        ppid: None,
        name: TextSpan::EMPTY,
        executable_path: None,
        command_line: Span { start: 0, len: 0 },
        args: 0,
        first_arg: 0,
        args_bytes: 0,
        start_time: None,
        cpu_usage: None,
        memory_usage: None,
        executable_hash: None,
        hash_algorithm: None,
        user_id: None,
        accessible: false,
        file_exists: false,
        collection_time: 0,
    };

    /// Reads the record whose body is `frame[start..end]` into `self` (a
    /// default), `budget` being the recursion left inside it. Given `args`,
    /// each argument's span is pushed there too, so that its command line
    /// is read from the spans and not walked again; a frame's records share
    /// one vector (each record's arguments one after another, from
    /// `first_arg`). At most one span per two bytes of the frame: an
    /// argument takes at least a key and a length.
    fn read(
        &mut self,
        frame: Checked<'_>,
        start: usize,
        end: usize,
        budget: u32,
        mut args: Option<&mut Vec<TextSpan>>,
    ) -> Result<(), Fault> {
        let mut reader = Reader::within(frame.bytes(), start, end);
        self.read_in_order(&mut reader, frame, &mut args)?;
        let s = self;
        reader.fields(|r, number, wire, at| {
            match number {
                1 => s.pid = r.varint_of(wire)? as u32,
                2 => s.ppid = Some(r.varint_of(wire)? as u32),
                3 => s.name = r.text_span_of(wire, frame)?,
                4 => s.executable_path = Some(r.text_span_of(wire, frame)?),
                5 => s.note_arg(at, r.text_span_of(wire, frame)?, &mut args),
                6 => s.start_time = Some(r.varint_of(wire)? as i64),
                7 => s.cpu_usage = Some(r.double_of(wire)?),
                8 => s.memory_usage = Some(r.varint_of(wire)?),
                9 => s.executable_hash = Some(r.text_span_of(wire, frame)?),
                10 => s.hash_algorithm = Some(r.text_span_of(wire, frame)?),
                11 => s.user_id = Some(r.text_span_of(wire, frame)?),
                12 => s.accessible = r.varint_of(wire)? != 0,
                13 => s.file_exists = r.varint_of(wire)? != 0,
                14 => s.collection_time = r.varint_of(wire)? as i64,
                _ => r.skip(wire, number, budget)?,
            }
            Ok(())
        })
    }

    /// The fast path of [`read`](Self::read): the fields as procmond
    /// writes them (the kept stable fields, then the poll's; prost's order
    /// is the same but for `user_id` to `file_exists`), one after another,
    /// each recognised by its one-byte key and read straight away. Stops at
    /// the first key out of that order, where `read` goes on field by field
    /// (so any order, repeats and unknown fields still read as prost reads
    /// them). A branch per expected field, taken the same way record after
    /// record, costs less than dispatching on each field's number.
    #[inline(always)]
    fn read_in_order(
        &mut self,
        r: &mut Reader<'_>,
        frame: Checked<'_>,
        args: &mut Option<&mut Vec<TextSpan>>,
    ) -> Result<(), Fault> {
        // If `r` is at the one-byte key `$key` of field `$number`: the
        // value read by `$read`, `Fault`s naming that field.
        macro_rules! field {
            ($key:literal, $number:literal, $read:ident $(($($arg:expr),*))?) => {
                if r.bytes.get(r.pos) == Some(&$key) {
                    let at = r.offset();
                    r.pos += 1;
                    match r.$read($($($arg),*)?) {
                        Ok(value) => Some(value),
                        Err(problem) => {
                            return Err(Fault {
                                at,
                                place: Place::Field($number),
                                problem,
                            });
                        }
                    }
                } else {
                    None
                }
            };
        }
        // Keys: field number << 3 | wire type (0 varint, 1 64-bit, 2
        // length-delimited).
        const TEXT: Wire = Wire::LengthDelimited;
        if let Some(pid) = field!(0x08, 1, varint) {
            self.pid = pid as u32;
        }
        if let Some(ppid) = field!(0x10, 2, varint) {
            self.ppid = Some(ppid as u32);
        }
        // From here, the strings are checked for ASCII in one run: name,
        // path and arguments, with their one-byte keys and lengths, are one
        // when their text is ASCII and each is under 128 bytes (a string
        // outside the run is checked alone).
        let run = frame.ascii_run(r.offset(), r.base + r.bytes.len());
        if let Some(name) = field!(0x1a, 3, text_span_in(TEXT, frame, run)) {
            self.name = name;
        }
        if let Some(path) = field!(0x22, 4, text_span_in(TEXT, frame, run)) {
            self.executable_path = Some(path);
        }
        loop {
            let at = r.offset();
            match field!(0x2a, 5, text_span_in(TEXT, frame, run)) {
                Some(arg) => self.note_arg(at, arg, args),
                None => break,
            }
        }
        if let Some(start) = field!(0x30, 6, varint) {
            self.start_time = Some(start as i64);
        }
        if let Some(uid) = field!(0x5a, 11, text_span_of(TEXT, frame)) {
            self.user_id = Some(uid);
        }
        if let Some(accessible) = field!(0x60, 12, varint) {
            self.accessible = accessible != 0;
        }
        if let Some(exists) = field!(0x68, 13, varint) {
            self.file_exists = exists != 0;
        }
        if let Some(cpu) = field!(0x39, 7, double_of(Wire::SixtyFourBit)) {
            self.cpu_usage = Some(cpu);
        }
        if let Some(memory) = field!(0x40, 8, varint) {
            self.memory_usage = Some(memory);
        }
        if let Some(hash) = field!(0x4a, 9, text_span_of(TEXT, frame)) {
            self.executable_hash = Some(hash);
        }
        if let Some(algorithm) = field!(0x52, 10, text_span_of(TEXT, frame)) {
            self.hash_algorithm = Some(algorithm);
        }
        if let Some(time) = field!(0x70, 14, varint) {
            self.collection_time = time as i64;
        }
        Ok(())
    }

    /// Notes a command-line argument whose key is at `at` (in `args` too,
    /// given it).
    #[inline(always)]
    fn note_arg(&mut self, at: usize, arg: TextSpan, args: &mut Option<&mut Vec<TextSpan>>) {
        // Offsets and counts fit in 32 bits: the bytes are under 4 GiB.
        let start = if self.args == 0 {
            if let Some(args) = args {
                self.first_arg = args.len() as u32;
            }
            at as u32
        } else {
            self.command_line.start
        };
        if let Some(args) = args {
            args.push(arg);
        }
        self.args += 1;
        self.args_bytes = self.args_bytes.saturating_add(arg.len() as u32);
        self.command_line = Span {
            start,
            len: (arg.start() + arg.len()) as u32 - start,
        };
    }

    /// The fields the schema's rules look at, `bytes` being those viewed.
    fn fields<'a>(&self, bytes: Checked<'a>) -> RecordFields<'a> {
        RecordFields {
            name_len: self.name.len(),
            executable_path_len: self.executable_path.map(TextSpan::len),
            command_line_args: self.args as usize,
            command_line_bytes: self.args_bytes as usize,
            cpu_usage: self.cpu_usage,
            executable_hash: self.executable_hash.map(|h| bytes.text(h)),
            hash_algorithm: self.hash_algorithm.map(|a| bytes.text(a)),
            user_id_len: self.user_id.map(TextSpan::len),
        }
    }
}

/// A `ProcessRecord`'s bytes, viewed: scalars, `&str`s into the bytes, and
/// the command line as a lazy iterator. Handed out by
/// [`DetectionResultView::processes`] (or by [`DecodedRecord::view`] for a
/// record decoded alone); nothing is allocated, and a view is a few
/// pointers, so handing out one per record costs no copy of its notes.
/// The default is the view of an empty record.
#[derive(Clone, Copy)]
pub struct ProcessRecordView<'a> {
    /// The bytes the slots point into.
    bytes: Checked<'a>,
    /// What the pass noted of the record: its frame's, or a
    /// [`DecodedRecord`]'s.
    slots: &'a RecordSlots,
    /// Its arguments' spans, when its frame noted them (else its command
    /// line is walked).
    args: Option<&'a [TextSpan]>,
}

impl Default for ProcessRecordView<'_> {
    fn default() -> Self {
        ProcessRecordView {
            bytes: Checked::default(),
            slots: &RecordSlots::EMPTY,
            args: None,
        }
    }
}

/// One `ProcessRecord` decoded alone ([`ProcessRecordView::decode`]): the
/// notes of its one pass, which [`view`](Self::view) lends out.
///
/// ```
/// use daemoneye_lib::proto::ProtoProcessRecord;
/// use daemoneye_lib::session::ProcessRecordView;
/// use prost::Message;
///
/// let record = ProtoProcessRecord {
///     pid: 42,
///     name: "sshd".into(),
///     command_line: vec!["sshd".into(), "-D".into()],
///     ..Default::default()
/// };
/// let bytes = record.encode_to_vec();
/// let decoded = ProcessRecordView::decode(&bytes)?;
/// let view = decoded.view();
/// assert_eq!((view.pid(), view.name()), (42, "sshd"));
/// assert_eq!(view.command_line().collect::<Vec<_>>(), ["sshd", "-D"]);
/// assert_eq!(view.to_owned(), record);
/// # Ok::<(), daemoneye_lib::session::WireError>(())
/// ```
#[derive(Clone, Debug)]
pub struct DecodedRecord<'a> {
    bytes: Checked<'a>,
    slots: RecordSlots,
}

impl DecodedRecord<'_> {
    /// The record, viewed.
    pub fn view(&self) -> ProcessRecordView<'_> {
        ProcessRecordView {
            bytes: self.bytes,
            slots: &self.slots,
            args: None,
        }
    }
}

impl<'a> ProcessRecordView<'a> {
    /// Reads `bytes` as one encoded `ProcessRecord` (what
    /// `ProcessRecord::decode` accepts), in one pass whose notes the
    /// [`DecodedRecord`] keeps (see its example); the protobuf encoding
    /// only, not the schema's rules ([`validate`](Self::validate)).
    ///
    /// # Errors
    ///
    /// [`WireError`] naming the first bad field, where prost's decoder
    /// fails too.
    pub fn decode(bytes: &'a [u8]) -> Result<DecodedRecord<'a>, WireError> {
        let too_large = Fault {
            at: 0,
            place: Place::Key,
            problem: WireProblem::TooLarge,
        };
        let mut slots = RecordSlots::default();
        let bytes = Checked::new(bytes);
        if bytes.bytes().len() > MAX_BYTES {
            Err(too_large)
        } else {
            slots.read(bytes, 0, bytes.bytes().len(), RECURSION_LIMIT, None)
        }
        .map_err(|fault| fault.named("", RECORD_FIELDS))?;
        Ok(DecodedRecord { bytes, slots })
    }

    /// Checks the schema's rules, exactly as
    /// [`ProtoProcessRecord::validate`] does (same rules, same field names).
    ///
    /// # Errors
    ///
    /// The first broken rule, as a [`ValidationError`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.slots().fields(self.bytes).validate()
    }

    /// The owned record: exactly what prost decodes from the same bytes.
    pub fn to_owned(&self) -> ProtoProcessRecord {
        ProtoProcessRecord {
            pid: self.pid(),
            ppid: self.ppid(),
            name: self.name().to_owned(),
            executable_path: self.executable_path().map(str::to_owned),
            command_line: self.command_line().map(str::to_owned).collect(),
            start_time: self.start_time(),
            cpu_usage: self.cpu_usage(),
            memory_usage: self.memory_usage(),
            executable_hash: self.executable_hash().map(str::to_owned),
            hash_algorithm: self.hash_algorithm().map(str::to_owned),
            user_id: self.user_id().map(str::to_owned),
            accessible: self.accessible(),
            file_exists: self.file_exists(),
            collection_time: self.collection_time(),
        }
    }

    #[inline(always)]
    fn slots(&self) -> &'a RecordSlots {
        self.slots
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.slots().pid
    }
    /// Parent process id.
    pub fn ppid(&self) -> Option<u32> {
        self.slots().ppid
    }
    /// Process name.
    pub fn name(&self) -> &'a str {
        self.bytes.text(self.slots().name)
    }
    /// Full executable path.
    pub fn executable_path(&self) -> Option<&'a str> {
        self.slots().executable_path.map(|s| self.bytes.text(s))
    }
    /// Command-line arguments, read lazily from the record's bytes.
    pub fn command_line(&self) -> CommandLine<'a> {
        let slots = self.slots();
        match self.args {
            Some(args) => {
                let first = slots.first_arg as usize;
                let spans = args
                    .get(first..first + slots.args as usize)
                    .unwrap_or_default();
                debug_assert_eq!(
                    spans.len(),
                    slots.args as usize,
                    "a record's noted arguments"
                );
                CommandLine::noted(self.bytes, spans)
            }
            None => CommandLine::walk(
                slots.command_line.of(self.bytes.bytes()),
                slots.args as usize,
            ),
        }
    }
    /// Start time (Unix timestamp).
    pub fn start_time(&self) -> Option<i64> {
        self.slots().start_time
    }
    /// CPU usage percentage.
    pub fn cpu_usage(&self) -> Option<f64> {
        self.slots().cpu_usage
    }
    /// Memory usage in bytes.
    pub fn memory_usage(&self) -> Option<u64> {
        self.slots().memory_usage
    }
    /// Executable hash (hex).
    pub fn executable_hash(&self) -> Option<&'a str> {
        self.slots().executable_hash.map(|s| self.bytes.text(s))
    }
    /// Hash algorithm name.
    pub fn hash_algorithm(&self) -> Option<&'a str> {
        self.slots().hash_algorithm.map(|s| self.bytes.text(s))
    }
    /// User id.
    pub fn user_id(&self) -> Option<&'a str> {
        self.slots().user_id.map(|s| self.bytes.text(s))
    }
    /// Whether procmond could read the process's details.
    pub fn accessible(&self) -> bool {
        self.slots().accessible
    }
    /// Whether the executable file still exists.
    pub fn file_exists(&self) -> bool {
        self.slots().file_exists
    }
    /// Collection timestamp (milliseconds).
    pub fn collection_time(&self) -> i64 {
        self.slots().collection_time
    }
}

impl fmt::Debug for ProcessRecordView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessRecordView")
            .field("pid", &self.pid())
            .field("ppid", &self.ppid())
            .field("name", &self.name())
            .field("executable_path", &self.executable_path())
            .field("command_line", &self.command_line())
            .field("start_time", &self.start_time())
            .field("cpu_usage", &self.cpu_usage())
            .field("memory_usage", &self.memory_usage())
            .field("executable_hash", &self.executable_hash())
            .field("hash_algorithm", &self.hash_algorithm())
            .field("user_id", &self.user_id())
            .field("accessible", &self.accessible())
            .field("file_exists", &self.file_exists())
            .field("collection_time", &self.collection_time())
            .finish()
    }
}

/// Serialized exactly as the derived `Serialize` of [`ProtoProcessRecord`]
/// (same field names, order and types), so JSON written from a view is
/// byte for byte what the owned record gives.
impl Serialize for ProcessRecordView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("ProcessRecord", 14)?;
        s.serialize_field("pid", &self.pid())?;
        s.serialize_field("ppid", &self.ppid())?;
        s.serialize_field("name", self.name())?;
        s.serialize_field("executable_path", &self.executable_path())?;
        s.serialize_field("command_line", &self.command_line())?;
        s.serialize_field("start_time", &self.start_time())?;
        s.serialize_field("cpu_usage", &self.cpu_usage())?;
        s.serialize_field("memory_usage", &self.memory_usage())?;
        s.serialize_field("executable_hash", &self.executable_hash())?;
        s.serialize_field("hash_algorithm", &self.hash_algorithm())?;
        s.serialize_field("user_id", &self.user_id())?;
        s.serialize_field("accessible", &self.accessible())?;
        s.serialize_field("file_exists", &self.file_exists())?;
        s.serialize_field("collection_time", &self.collection_time())?;
        s.end()
    }
}

/// A record's command-line arguments, one by one: from the spans its frame
/// noted of them as it was checked (a record of a [`DetectionResultView`]),
/// or read again from the span of its bytes that holds them (a record
/// [`decode`](ProcessRecordView::decode)d alone, which notes no spans so as
/// to allocate nothing).
#[derive(Clone, Default)]
pub struct CommandLine<'a> {
    inner: Args<'a>,
}

#[derive(Clone)]
enum Args<'a> {
    /// Each argument's checked span.
    Noted {
        bytes: Checked<'a>,
        spans: std::slice::Iter<'a, TextSpan>,
    },
    /// The bytes from the first argument's key to the end of the last, read
    /// again. Each argument was checked as UTF-8 with the record; read
    /// again from bytes, each is checked again. That is done once for the
    /// whole span where it can: a span of short arguments, one after
    /// another, is text as a whole (keys and lengths under 128 are ASCII
    /// bytes), and each argument is then a slice of that text. Otherwise
    /// (a long argument, other fields in between) each argument is checked
    /// on its own.
    Walk {
        span: &'a [u8],
        /// `span` as text, when it is text as a whole.
        text: Option<&'a str>,
        /// Offset in `span` of the next argument's key.
        pos: usize,
        /// Arguments not yet yielded.
        left: usize,
    },
}

impl Default for Args<'_> {
    fn default() -> Self {
        Args::Noted {
            bytes: Checked::default(),
            spans: [].iter(),
        }
    }
}

impl<'a> CommandLine<'a> {
    fn noted(bytes: Checked<'a>, spans: &'a [TextSpan]) -> Self {
        CommandLine {
            inner: Args::Noted {
                bytes,
                spans: spans.iter(),
            },
        }
    }

    fn walk(span: &'a [u8], args: usize) -> Self {
        CommandLine {
            inner: Args::Walk {
                span,
                text: std::str::from_utf8(span).ok(),
                pos: 0,
                left: args,
            },
        }
    }
}

impl<'a> Iterator for CommandLine<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        match &mut self.inner {
            Args::Noted { bytes, spans } => spans.next().map(|&span| bytes.text(span)),
            Args::Walk {
                span,
                text,
                pos,
                left,
            } => walk_next(span, *text, pos, left),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = match &self.inner {
            Args::Noted { spans, .. } => spans.len(),
            Args::Walk { left, .. } => *left,
        };
        (left, Some(left))
    }
}

/// The next argument of a walked command line (see [`Args::Walk`]).
fn walk_next<'a>(
    span: &'a [u8],
    text: Option<&'a str>,
    pos: &mut usize,
    left: &mut usize,
) -> Option<&'a str> {
    if *left == 0 {
        return None;
    }
    // The usual case first: text as a whole, the next field an argument
    // (key 0x2a) shorter than 128 bytes (a one-byte length).
    if let (Some(text), Some(&[0x2a, len])) = (text, span.get(*pos..*pos + 2))
        && len < 0x80
    {
        let start = *pos + 2;
        if let Some(arg) = text.get(start..start + usize::from(len)) {
            *pos = start + usize::from(len);
            *left -= 1;
            return Some(arg);
        }
    }
    let mut reader = Reader::new(span);
    reader.pos = *pos;
    let arg = reader.next_checked(5).and_then(|bytes| {
        let end = reader.pos;
        match text {
            Some(text) => text.get(end - bytes.len()..end),
            None => std::str::from_utf8(bytes).ok(),
        }
    });
    match arg {
        Some(arg) => {
            *pos = reader.pos;
            *left -= 1;
            Some(arg)
        }
        None => {
            debug_assert!(false, "a checked command line reads again");
            *left = 0;
            None
        }
    }
}

impl ExactSizeIterator for CommandLine<'_> {}

impl fmt::Debug for CommandLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

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
    /// Merges the occurrence whose body is `bytes[start..end]` into `self`
    /// (protobuf merges a repeated message field: each field's last
    /// occurrence wins).
    fn merge(&mut self, bytes: &'a [u8], start: usize, end: usize) -> Result<(), Fault> {
        Reader::within(bytes, start, end).fields(|r, number, wire, _| {
            match number {
                1 => self.hash_value = r.text_of(wire)?,
                2 => self.algorithm = r.text_of(wire)?,
                3 => self.file_path = r.text_of(wire)?,
                4 => self.success = r.varint_of(wire)? != 0,
                5 => self.error_message = Some(r.text_of(wire)?),
                _ => r.skip(wire, number, RECURSION_LIMIT - 1)?,
            }
            Ok(())
        })
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

/// A result's fields but its records.
#[derive(Clone, Debug, Default)]
struct Head<'a> {
    task_id: &'a str,
    success: bool,
    error_message: Option<&'a str>,
    hash_result: Option<HashResultView<'a>>,
}

/// The first record (index, error) that breaks the rules.
type FirstBad = Option<(usize, ValidationError)>;

/// Why a walk over a result's bytes stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The bytes or the rules were broken.
    Broken(ViewError),
    /// More records than the walk's limit (one past it was found).
    OverLimit,
}

impl From<WireError> for Stop {
    fn from(error: WireError) -> Self {
        Stop::Broken(ViewError::Wire(error))
    }
}

impl From<ValidationError> for Stop {
    fn from(error: ValidationError) -> Self {
        Stop::Broken(ViewError::Invalid(error))
    }
}

/// A walk's result with no limit on records (so never `OverLimit`).
fn unlimited<T>(walked: Result<T, Stop>) -> Result<T, ViewError> {
    walked.map_err(|stop| match stop {
        Stop::Broken(error) => error,
        Stop::OverLimit => unreachable!("a walk without a limit stopped at one"),
    })
}

impl<'a> Head<'a> {
    /// One pass over `viewed`: the head's fields read, each record's noted
    /// into `records` (its arguments' spans into `args`) and, given
    /// `first_bad`, checked against the rules (the first to break them
    /// noted there); a record past the `limit`-th stops the walk
    /// ([`Stop::OverLimit`]), so `records` never holds more than `limit`.
    fn read(
        viewed: Checked<'a>,
        notes: &mut Notes,
        mut first_bad: Option<&mut FirstBad>,
        limit: usize,
    ) -> Result<Self, Stop> {
        let bytes = viewed.bytes();
        let Notes { records, args } = notes;
        if bytes.len() > MAX_BYTES {
            return Err(Stop::from(WireError {
                field: String::new(),
                offset: 0,
                problem: WireProblem::TooLarge,
            }));
        }
        let mut over = false;
        let mut head = Head::default();
        // A fault inside a record or the hash result, named at once (a
        // record's name needs its index); the walk is then stopped.
        let mut inner = None;
        let walked = Reader::new(bytes).fields(|r, number, wire, _| {
            match number {
                1 => head.task_id = r.text_of(wire)?,
                2 => head.success = r.varint_of(wire)? != 0,
                3 => head.error_message = Some(r.text_of(wire)?),
                4 => {
                    let body = r.bytes_of(wire)?;
                    let (end, i) = (r.offset(), records.len());
                    if i == limit {
                        over = true;
                        return Err(WireProblem::Truncated);
                    }
                    // Read in place: a record's notes are some 180 bytes.
                    records.push(RecordSlots::default());
                    let slots = &mut records[i];
                    let read = slots.read(
                        viewed,
                        end - body.len(),
                        end,
                        RECURSION_LIMIT - 1,
                        Some(&mut *args),
                    );
                    match read {
                        Ok(()) => {
                            if let Some(bad @ None) = first_bad.as_deref_mut() {
                                *bad = slots.fields(viewed).validate().err().map(|e| (i, e));
                            }
                        }
                        Err(fault) => {
                            inner = Some(fault.named(&format!("processes[{i}]"), RECORD_FIELDS));
                            return Err(WireProblem::Truncated);
                        }
                    }
                }
                5 => {
                    let body = r.bytes_of(wire)?;
                    let end = r.offset();
                    let hash = head.hash_result.get_or_insert_with(HashResultView::default);
                    if let Err(fault) = hash.merge(bytes, end - body.len(), end) {
                        inner = Some(fault.named("hash_result", HASH_FIELDS));
                        return Err(WireProblem::Truncated);
                    }
                }
                _ => r.skip(wire, number, RECURSION_LIMIT)?,
            }
            Ok(())
        });
        match walked {
            Ok(()) => Ok(head),
            Err(_) if over => Err(Stop::OverLimit),
            Err(fault) => Err(inner
                .unwrap_or_else(|| fault.named("", RESULT_FIELDS))
                .into()),
        }
    }

    /// Reads `bytes` as [`read`](Self::read) does, then checks the result's
    /// rules in `DetectionResult::validate`'s order.
    fn read_checked(viewed: Checked<'a>, notes: &mut Notes, limit: usize) -> Result<Self, Stop> {
        let mut first_bad = None;
        let head = Head::read(viewed, notes, Some(&mut first_bad), limit)?;
        ResultFields {
            task_id: head.task_id,
            success: head.success,
            error_message: head.error_message,
            processes: notes.records.len(),
            hash_result: head.hash_result.as_ref().map(HashResultView::fields),
        }
        .validate(|| first_bad)?;
        Ok(head)
    }
}

/// Offsets are 32-bit: bytes viewed are under 4 GiB.
const MAX_BYTES: usize = u32::MAX as usize;

/// What one pass notes of a result's records: each record's slots, and its
/// arguments' spans (all records' together, in order). No lifetime, so a
/// reader can keep and reuse them ([`ChunkReader`](super::ChunkReader)):
/// about 180 bytes a record and 16 an argument.
#[derive(Clone, Debug, Default)]
pub(crate) struct Notes {
    records: Vec<RecordSlots>,
    args: Vec<TextSpan>,
}

impl Notes {
    /// Notes sized for `records` records.
    fn for_records(records: usize) -> Self {
        Notes {
            records: Vec::with_capacity(records),
            args: Vec::new(),
        }
    }

    /// No notes (their room kept).
    pub(super) fn clear(&mut self) {
        self.records.clear();
        self.args.clear();
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
#[derive(Clone)]
pub struct DetectionResultView<'a> {
    bytes: Checked<'a>,
    head: Head<'a>,
    notes: Cow<'a, Notes>,
}

impl<'a> DetectionResultView<'a> {
    /// Views `bytes` as an encoded `DetectionResult`: what
    /// `DetectionResult::decode` accepts, every record included, without
    /// the schema's rules. Allocates for the records' notes
    /// ([`ChunkReader`](super::ChunkReader) reuses its own).
    ///
    /// # Errors
    ///
    /// [`WireError`] naming the first bad field (`processes[3].name`), where
    /// prost's decoder fails too.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut notes = Notes::for_records(count_records(bytes));
        let bytes = Checked::new(bytes);
        let head = match Head::read(bytes, &mut notes, None, usize::MAX) {
            Ok(head) => head,
            Err(Stop::Broken(ViewError::Wire(error))) => return Err(error),
            Err(_) => unreachable!("a walk with no limit and no rules stops only on bad bytes"),
        };
        Ok(Self::new(bytes, head, Cow::Owned(notes)))
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
        let mut notes = Notes::for_records(count_records(bytes));
        let bytes = Checked::new(bytes);
        let head = unlimited(Head::read_checked(bytes, &mut notes, usize::MAX))?;
        Ok(Self::new(bytes, head, Cow::Owned(notes)))
    }

    /// [`parse`](Self::parse) of a reused frame, its notes kept in `notes`
    /// (which are cleared first and reused: nothing is allocated once they
    /// have grown), stopping at the record past the `limit`-th.
    pub(crate) fn parse_into(
        frame: &'a CheckedFrame,
        notes: &'a mut Notes,
        limit: usize,
    ) -> Result<Self, Stop> {
        notes.clear();
        let bytes = frame.checked();
        let head = Head::read_checked(bytes, notes, limit)?;
        Ok(Self::new(bytes, head, Cow::Borrowed(notes)))
    }

    fn new(bytes: Checked<'a>, head: Head<'a>, notes: Cow<'a, Notes>) -> Self {
        DetectionResultView { bytes, head, notes }
    }

    /// The owned result: exactly what prost decodes from the same bytes.
    pub fn to_owned(&self) -> DetectionResult {
        DetectionResult {
            task_id: self.task_id().to_owned(),
            success: self.success(),
            error_message: self.error_message().map(str::to_owned),
            processes: self.processes().map(|p| p.to_owned()).collect(),
            hash_result: self.hash_result().map(HashResultView::to_owned),
        }
    }

    /// The task this result answers.
    pub fn task_id(&self) -> &'a str {
        self.head.task_id
    }
    /// Whether the task succeeded.
    pub fn success(&self) -> bool {
        self.head.success
    }
    /// Why it failed.
    pub fn error_message(&self) -> Option<&'a str> {
        self.head.error_message
    }
    /// The hash result, if any.
    pub fn hash_result(&self) -> Option<&HashResultView<'a>> {
        self.head.hash_result.as_ref()
    }
    /// How many records the result holds.
    pub fn process_count(&self) -> usize {
        self.notes.records.len()
    }
    /// The records, in order (checked with the result: nothing is read
    /// again but their strings' UTF-8, as each is asked for).
    pub fn processes(&self) -> Processes<'_> {
        Processes::new(self.bytes, &self.notes)
    }
}

impl fmt::Debug for DetectionResultView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetectionResultView")
            .field("task_id", &self.task_id())
            .field("success", &self.success())
            .field("error_message", &self.error_message())
            .field("processes", &self.process_count())
            .field("hash_result", &self.hash_result())
            .finish()
    }
}

/// The records of a [`DetectionResultView`], in order.
#[derive(Clone, Debug)]
pub struct Processes<'a> {
    bytes: Checked<'a>,
    records: std::slice::Iter<'a, RecordSlots>,
    args: &'a [TextSpan],
}

impl<'a> Processes<'a> {
    /// The records of `bytes` noted in `notes`.
    pub(super) fn new(bytes: Checked<'a>, notes: &'a Notes) -> Self {
        Processes {
            bytes,
            records: notes.records.iter(),
            args: &notes.args,
        }
    }

    fn view(&self, slots: &'a RecordSlots) -> ProcessRecordView<'a> {
        ProcessRecordView {
            bytes: self.bytes,
            slots,
            args: Some(self.args),
        }
    }
}

impl<'a> Iterator for Processes<'a> {
    type Item = ProcessRecordView<'a>;

    fn next(&mut self) -> Option<ProcessRecordView<'a>> {
        let slots = self.records.next()?;
        Some(self.view(slots))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.records.size_hint()
    }

    fn nth(&mut self, n: usize) -> Option<ProcessRecordView<'a>> {
        let slots = self.records.nth(n)?;
        Some(self.view(slots))
    }
}

impl ExactSizeIterator for Processes<'_> {}

/// The `processes` entries (field 4) among `bytes`' top-level fields,
/// counted without reading them. Stops at the first malformed field (the
/// decoder then names it) and counts no further than one past the limit.
pub(super) fn count_records(bytes: &[u8]) -> usize {
    let mut reader = Reader::new(bytes);
    let mut count = 0;
    while !reader.at_end() && count <= MAX_PROCESSES_PER_RESULT {
        let Ok((number, wire)) = reader.key() else {
            break;
        };
        if number == 4 && wire == Wire::LengthDelimited {
            if reader.length_delimited().is_err() {
                break;
            }
            count += 1;
        } else if matches!(wire, Wire::StartGroup | Wire::EndGroup)
            || reader.skip(wire, number, RECURSION_LIMIT).is_err()
        {
            break;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// A varint read as prost reads it, with ten bytes to hand (the
    /// unrolled path) and without (the record's last field).
    #[test]
    fn varints_read_as_prost_reads_them_on_both_paths() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for value in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX >> 1, u64::MAX] {
            let mut bytes = Vec::new();
            prost::encoding::encode_varint(value, &mut bytes);
            cases.push(bytes);
        }
        // Ten bytes whose last is 2 (overflow), eleven, and cut short.
        cases.push([&[0xff; 9][..], &[0x02]].concat());
        cases.push([&[0xff; 10][..], &[0x01]].concat());
        cases.push(vec![0x80, 0x80]);
        for case in cases {
            for tail in [0usize, 10] {
                let mut bytes = case.clone();
                bytes.resize(case.len() + tail, 0);
                let mut reader = Reader::new(&bytes);
                let ours = reader.varint();
                let mut buf = bytes.as_slice();
                let theirs = prost::encoding::decode_varint(&mut buf);
                assert_eq!(ours.is_ok(), theirs.is_ok(), "{case:x?} + {tail}: {ours:?}");
                if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                    assert_eq!(ours, theirs, "{case:x?}");
                    assert_eq!(reader.pos, bytes.len() - buf.len(), "{case:x?}");
                }
            }
        }
        let too_long = [0xffu8; 11];
        assert_eq!(
            Reader::new(&too_long).varint(),
            Err(WireProblem::InvalidVarint)
        );
        assert_eq!(
            Reader::new(&[0x80, 0x80]).varint(),
            Err(WireProblem::Truncated)
        );
    }

    /// `count_records` sizes the notes before the pass: it counts field 4's
    /// entries among the other fields, stops where the bytes stop making
    /// sense, and never counts past one over the limit.
    #[test]
    fn records_are_counted_among_other_fields_up_to_one_past_the_limit() {
        let record = ProtoProcessRecord {
            pid: 7,
            name: "a".into(),
            ..Default::default()
        };
        let mut result = DetectionResult::success("t", vec![record.clone(); 3]);
        result.hash_result = Some(Default::default());
        let bytes = result.encode_to_vec();
        assert_eq!(count_records(&bytes), 3);
        assert_eq!(count_records(&[]), 0);

        // A field 4 that is a varint is another field, and an unknown
        // length-delimited field is skipped.
        let empty_record = [0x22, 0x00];
        let mut mixed = empty_record.to_vec();
        mixed.extend_from_slice(&[0x20, 0x05, 0x32, 0x02, 0x22, 0x00]);
        mixed.extend_from_slice(&empty_record);
        assert_eq!(count_records(&mixed), 2);

        // The count stops at a bad key, a group, a cut record or a cut
        // unknown field: what was counted before stays.
        for bad in [
            &[0x07][..],
            &[0x33, 0x34],
            &[0x34],
            &[0x22, 0x05, 0x00],
            &[0x32, 0x05, 0x00],
        ] {
            let mut bytes = [empty_record, empty_record].concat();
            bytes.extend_from_slice(bad);
            bytes.extend_from_slice(&empty_record);
            assert_eq!(count_records(&bytes), 2, "{bad:x?}");
        }

        let over = empty_record.repeat(MAX_PROCESSES_PER_RESULT + 5);
        assert_eq!(count_records(&over), MAX_PROCESSES_PER_RESULT + 1);
        let at = empty_record.repeat(MAX_PROCESSES_PER_RESULT);
        assert_eq!(count_records(&at), MAX_PROCESSES_PER_RESULT);
    }
}
