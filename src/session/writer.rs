//! procmond's side of a result stream: packs records into frames and encodes
//! each straight into the ring.

use std::time::Duration;

use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, message as field, skip_field};

use super::error::SessionError;
use super::marker::{Marker, RecordKind};
use crate::proto::encoded::EncodedRecord;
use crate::proto::limits::{MAX_ERROR_MESSAGE_BYTES, MAX_PROCESSES_PER_RESULT};
use crate::proto::{DetectionResult, ProtoProcessRecord};
use crate::ring::Producer;

/// The `processes` field number of `DetectionResult`.
pub(super) const PROCESSES_FIELD: u32 = 4;

/// What a finished stream sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Ring frames written, the END frame included.
    pub frames: u64,
    /// Records written.
    pub records: u64,
    /// Records whose command line was cut to fit a frame.
    pub truncated: u64,
    /// The stream ended as a failure (or cancelled).
    pub failed: bool,
}

/// Writes one task's result stream into the ring.
///
/// [`push`](Self::push) adds a record; when it would not fit in the frame
/// being filled (the ring's largest frame, by `encoded_len` arithmetic),
/// that frame is written first, marked MORE. [`flush`](Self::flush) writes
/// the records so far at once (a monitor does after each poll);
/// [`finish`](Self::finish) writes the last frame, marked END (with no
/// records if there are none left); [`fail`](Self::fail) ends the stream with
/// a failure instead. Records of different [`RecordKind`]s never share a
/// frame. A record comes as a struct ([`push`](Self::push)) or with its
/// stable fields encoded already ([`push_encoded`](Self::push_encoded));
/// either way prost writes the frame once, straight into the ring's claim.
///
/// A record too large for a frame on its own has trailing command-line
/// arguments dropped until it fits (counted in
/// [`StreamStats::truncated`]); if it still does not fit without any, the
/// push fails with [`SessionError::RecordTooLarge`] and the caller fails the
/// task. Every frame write waits for room up to `stall` (a reader that reads
/// nothing for that long is given up on); closing the ring from another
/// thread (its [`Closer`](crate::ring::Closer)) ends a wait at once.
#[derive(Debug)]
pub struct ResultWriter<'p> {
    producer: &'p mut Producer,
    /// The frame's own fields (its `processes` are in `items`).
    result: DetectionResult,
    /// The records of the frame being filled.
    items: Vec<Item>,
    kind: RecordKind,
    /// Encoded length of `result` with no records.
    base_len: usize,
    /// Encoded length of `result` as it is.
    len: usize,
    stall: Duration,
    stats: StreamStats,
    /// The stream ends as cancelled.
    cancelled: bool,
    /// Every frame is marked FULL.
    full: bool,
}

impl<'p> ResultWriter<'p> {
    /// A stream for `task_id` (which the caller has validated).
    pub fn new(producer: &'p mut Producer, task_id: impl Into<String>, stall: Duration) -> Self {
        let result = DetectionResult::success(task_id, Vec::new());
        let base_len = result.encoded_len();
        Self {
            producer,
            result,
            items: Vec::new(),
            kind: RecordKind::Result,
            base_len,
            len: base_len,
            stall,
            stats: StreamStats::default(),
            cancelled: false,
            full: false,
        }
    }

    /// Marks every frame of this stream FULL: a changes-only enumerate
    /// whose result is whole (see [`Marker::full`]).
    pub fn mark_full(&mut self) {
        self.full = true;
    }

    /// The task this stream answers.
    pub fn task_id(&self) -> &str {
        &self.result.task_id
    }

    /// Whether the ring is closed (by either side): every later write
    /// fails, so the caller may stop producing records.
    pub fn is_closed(&self) -> bool {
        self.producer.is_closed()
    }

    /// Adds a record of `kind`, writing the frame being filled first when the
    /// record does not fit in it or is of another kind.
    pub fn push(
        &mut self,
        kind: RecordKind,
        mut record: ProtoProcessRecord,
    ) -> Result<(), SessionError> {
        let max = self.producer.max_frame();
        let mut record_len = field::encoded_len(PROCESSES_FIELD, &record);
        if self.base_len + record_len > max {
            record_len = self.fit(&mut record, max)?;
        }
        self.add(kind, Item::Owned(record), record_len)
    }

    /// Adds a record whose stable fields are encoded already (procmond's
    /// table keeps them); as [`push`](Self::push) otherwise. A record too
    /// large for a frame on its own is decoded and pushed as a struct, to
    /// have its command line cut.
    pub fn push_encoded(
        &mut self,
        kind: RecordKind,
        record: EncodedRecord,
    ) -> Result<(), SessionError> {
        let record_len = record.field_len(PROCESSES_FIELD);
        if self.base_len + record_len > self.producer.max_frame() {
            return self.push(kind, record.to_record());
        }
        self.add(kind, Item::Encoded(record), record_len)
    }

    fn add(&mut self, kind: RecordKind, item: Item, len: usize) -> Result<(), SessionError> {
        let full = self.len + len > self.producer.max_frame()
            || self.items.len() == MAX_PROCESSES_PER_RESULT;
        if !self.items.is_empty() && (kind != self.kind || full) {
            self.write(false)?;
        }
        self.kind = kind;
        self.len += len;
        self.items.push(item);
        self.stats.records += 1;
        Ok(())
    }

    /// Writes the records added so far as a frame marked MORE (nothing when
    /// there are none).
    pub fn flush(&mut self) -> Result<(), SessionError> {
        if self.items.is_empty() {
            return Ok(());
        }
        self.write(false)
    }

    /// Writes the last frame, marked END, with the records not yet written.
    pub fn finish(mut self) -> Result<StreamStats, SessionError> {
        self.write(true)?;
        Ok(self.stats)
    }

    /// Ends the stream with `DetectionResult::failure(task_id, message)`,
    /// marked END; records not yet written are dropped. A message over the
    /// schema's limit is cut.
    pub fn fail(mut self, message: &str) -> Result<StreamStats, SessionError> {
        self.items.clear();
        self.stats.failed = true;
        let failure = DetectionResult::failure(
            std::mem::take(&mut self.result.task_id),
            cut(message, MAX_ERROR_MESSAGE_BYTES),
        );
        self.len = failure.encoded_len();
        self.result = failure;
        self.write(true)?;
        Ok(self.stats)
    }

    /// Ends the stream because the client cancelled the task: a failure
    /// saying `message`, marked END and CANCELLED; records not yet written
    /// are dropped.
    pub fn cancelled(mut self, message: &str) -> Result<StreamStats, SessionError> {
        self.cancelled = true;
        self.fail(message)
    }

    /// Ends the stream with `result` (say, one carrying a hash result) as its
    /// single END frame; records not yet written are dropped. `result`
    /// should carry this stream's task id.
    pub fn finish_with(mut self, result: DetectionResult) -> Result<StreamStats, SessionError> {
        let len = result.encoded_len();
        if len > self.producer.max_frame() {
            return Err(SessionError::ResultTooLarge {
                len,
                max: self.producer.max_frame(),
            });
        }
        self.stats.failed |= !result.success;
        self.result = result;
        self.items.clear();
        self.len = len;
        self.kind = RecordKind::Result;
        self.write(true)?;
        Ok(self.stats)
    }

    /// Drops trailing command-line arguments until the record fits a frame
    /// on its own; returns its new length within the result.
    fn fit(&mut self, record: &mut ProtoProcessRecord, max: usize) -> Result<usize, SessionError> {
        while record.command_line.pop().is_some() {
            let len = field::encoded_len(PROCESSES_FIELD, record);
            if self.base_len + len <= max {
                self.stats.truncated += 1;
                tracing::debug!(pid = record.pid, "command line cut to fit a result frame");
                return Ok(len);
            }
        }
        Err(SessionError::RecordTooLarge {
            pid: record.pid,
            len: self.base_len + field::encoded_len(PROCESSES_FIELD, record),
            max,
        })
    }

    /// Encodes the result being filled into one frame, in place, and starts
    /// the next one.
    fn write(&mut self, end: bool) -> Result<(), SessionError> {
        let flags = Marker {
            end,
            kind: self.kind,
            cancelled: end && self.cancelled,
            full: self.full,
        }
        .to_flags();
        let frame = FrameMessage {
            result: &self.result,
            items: &self.items,
            len: self.len,
        };
        debug_assert_eq!(self.len, frame.computed_len());
        debug_assert!(self.len <= self.producer.max_frame() || !self.result.success);
        self.producer
            .encode(&frame, flags, crate::deadline::after(self.stall))?;
        self.stats.frames += 1;
        self.items.clear();
        self.len = self.base_len;
        Ok(())
    }
}

/// A record of the frame being filled.
#[derive(Debug)]
enum Item {
    Owned(ProtoProcessRecord),
    Encoded(EncodedRecord),
}

/// The frame being written, as one message for prost to encode into the
/// claim: the result's own fields, then each item as one of its
/// `processes` (field 4). Write-only: decoding into it skips every field.
#[derive(Debug)]
struct FrameMessage<'a> {
    result: &'a DetectionResult,
    items: &'a [Item],
    /// The encoded length, as the writer tracked it.
    len: usize,
}

impl FrameMessage<'_> {
    /// The encoded length counted again (for a debug check of `len`).
    fn computed_len(&self) -> usize {
        self.result.encoded_len()
            + self
                .items
                .iter()
                .map(|item| match item {
                    Item::Owned(record) => field::encoded_len(PROCESSES_FIELD, record),
                    Item::Encoded(record) => record.field_len(PROCESSES_FIELD),
                })
                .sum::<usize>()
    }
}

impl Message for FrameMessage<'_> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.result.encode_raw(buf);
        for item in self.items {
            match item {
                Item::Owned(record) => field::encode(PROCESSES_FIELD, record, buf),
                Item::Encoded(record) => record.encode_field(PROCESSES_FIELD, buf),
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {}
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
