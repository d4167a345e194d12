//! procmond's side of a result stream: packs records into frames and encodes
//! each straight into the ring.

use std::time::Duration;

use prost::Message;
use prost::encoding::message as field;

use super::error::SessionError;
use super::marker::{Marker, RecordKind};
use crate::proto::encoded::EncodedRecord;
use crate::proto::limits::{MAX_ERROR_MESSAGE_BYTES, MAX_PROCESSES_PER_RESULT};
use crate::proto::{DetectionResult, ProtoProcessRecord};
use crate::ring::{Claim, Producer, RingError, TryClaimError};

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
/// [`push`](Self::push) adds a record, encoding it straight into the frame
/// being filled: a claim of the ring's largest frame (or, when the ring has
/// had no room for that for 10 ms, of what the record needs, waiting up to
/// `stall` in all), opened at the frame's first record with the result's
/// own fields written first. When a record would not fit in it (by
/// `encoded_len` arithmetic) or is of another [`RecordKind`], that frame is
/// published first, marked MORE. [`flush`](Self::flush) publishes the
/// records so far at once (a monitor does after each poll);
/// [`finish`](Self::finish) publishes the last frame, marked END (with no
/// records if there are none left); [`fail`](Self::fail) ends the stream with
/// a failure instead, abandoning the open frame. A record comes as a struct
/// ([`push`](Self::push)) or with its stable fields encoded already
/// ([`push_encoded`](Self::push_encoded)); either way it is written once,
/// into the ring, with no buffer between.
///
/// A record too large for a frame on its own has trailing command-line
/// arguments dropped until it fits (counted in
/// [`StreamStats::truncated`]); if it still does not fit without any, the
/// push fails with [`SessionError::RecordTooLarge`] and the caller fails the
/// task. Every claim waits for room up to `stall` (a reader that reads
/// nothing for that long is given up on); closing the ring from another
/// thread (its [`Closer`](crate::ring::Closer)) ends a wait at once.
#[derive(Debug)]
pub struct ResultWriter<'p> {
    frame: FrameState<'p>,
    /// The frame's own fields (its records are encoded after them).
    result: DetectionResult,
    /// The kind of the open frame's records.
    kind: RecordKind,
    /// Encoded length of `result` with no records.
    base_len: usize,
    /// The ring's largest frame.
    max_frame: usize,
    stall: Duration,
    stats: StreamStats,
    /// The stream ends as cancelled.
    cancelled: bool,
    /// Every frame is marked FULL.
    full: bool,
}

/// The frame being filled, or the producer between frames.
#[derive(Debug)]
enum FrameState<'p> {
    Idle(&'p mut Producer),
    Open {
        claim: Claim<'p>,
        /// Bytes written into the claim: the result's fields, then records.
        used: usize,
        records: usize,
    },
    /// A claim failed after room was found: the ring closed under the
    /// stream, and every later write fails.
    Gone,
}

impl<'p> ResultWriter<'p> {
    /// A stream for `task_id` (which the caller has validated).
    pub fn new(producer: &'p mut Producer, task_id: impl Into<String>, stall: Duration) -> Self {
        let result = DetectionResult::success(task_id, Vec::new());
        let base_len = result.encoded_len();
        Self {
            max_frame: producer.max_frame(),
            frame: FrameState::Idle(producer),
            result,
            kind: RecordKind::Result,
            base_len,
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
        match &self.frame {
            FrameState::Idle(producer) => producer.is_closed(),
            FrameState::Open { claim, .. } => claim.producer().is_closed(),
            FrameState::Gone => true,
        }
    }

    /// Adds a record of `kind`, publishing the frame being filled first when
    /// the record does not fit in it or is of another kind.
    pub fn push(
        &mut self,
        kind: RecordKind,
        mut record: ProtoProcessRecord,
    ) -> Result<(), SessionError> {
        let max = self.max_frame;
        let mut record_len = field::encoded_len(PROCESSES_FIELD, &record);
        if self.base_len + record_len > max {
            record_len = self.fit(&mut record, max)?;
        }
        let mut buf = self.room(kind, record_len)?;
        field::encode(PROCESSES_FIELD, &record, &mut buf);
        debug_assert!(buf.is_empty(), "a record encodes to its encoded_len");
        Ok(())
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
        let body_len = record.body_len();
        let record_len = EncodedRecord::field_len_of(PROCESSES_FIELD, body_len);
        if self.base_len + record_len > self.max_frame {
            return self.push(kind, record.to_record());
        }
        let mut buf = self.room(kind, record_len)?;
        record.encode_field_of(PROCESSES_FIELD, body_len, &mut buf);
        debug_assert!(buf.is_empty(), "a record encodes to its field_len");
        Ok(())
    }

    /// The `len` bytes of the open frame a record of `kind` is written to
    /// (publishing the open frame first when the record does not fit in it
    /// or is of another kind, opening one when none is open), counted as
    /// written.
    fn room(&mut self, kind: RecordKind, len: usize) -> Result<&mut [u8], SessionError> {
        if let FrameState::Open {
            claim,
            used,
            records,
        } = &self.frame
            && (kind != self.kind
                || used + len > claim.len()
                || *records == MAX_PROCESSES_PER_RESULT)
        {
            self.write(false)?;
        }
        if let FrameState::Idle(_) = self.frame {
            self.open(self.max_frame, self.base_len + len)?;
        }
        let FrameState::Open {
            claim,
            used,
            records,
        } = &mut self.frame
        else {
            return Err(gone());
        };
        self.kind = kind;
        self.stats.records += 1;
        let at = *used;
        *used += len;
        *records += 1;
        Ok(&mut claim[at..at + len])
    }

    /// Opens a frame of `wanted` bytes when the ring has room for it within
    /// [`LARGEST_FRAME_WAIT`], else of `needed` (waiting for that room: a
    /// reader that lags then gets frames as small as the records), and
    /// writes the result's own fields at its start.
    fn open(&mut self, wanted: usize, needed: usize) -> Result<(), SessionError> {
        let FrameState::Idle(producer) = &mut self.frame else {
            return Err(gone());
        };
        let deadline = crate::deadline::after(self.stall);
        // Room for the largest frame, waited for a little: a reader that
        // keeps up frees it within a frame's reading. Falling back at once
        // would cut a ring kept full by a faster writer into one-record
        // frames, each paying the reader's per-frame cost.
        // Each wait is a claim dropped at once (abandoned); the room is
        // taken for good below: with one producer room only grows, so only
        // a close (or a consumer lying about its position) makes that
        // claim fail, and the stream is over then.
        let soon = crate::deadline::after(self.stall.min(LARGEST_FRAME_WAIT));
        let len = match producer.claim(wanted, if needed < wanted { soon } else { deadline }) {
            Ok(_) => wanted,
            Err(RingError::TimedOut) if needed < wanted => {
                drop(producer.claim(needed, deadline)?);
                needed
            }
            Err(err) => return Err(err.into()),
        };
        let FrameState::Idle(producer) = std::mem::replace(&mut self.frame, FrameState::Gone)
        else {
            unreachable!("the frame was idle above");
        };
        let mut claim = producer.try_claim(len).map_err(|err| match err {
            TryClaimError::Corrupt(kind) => RingError::Corrupt(kind),
            _ => RingError::Closed,
        })?;
        let mut buf: &mut [u8] = &mut claim;
        self.result.encode_raw(&mut buf);
        debug_assert_eq!(buf.len(), len - self.base_len);
        self.frame = FrameState::Open {
            claim,
            used: self.base_len,
            records: 0,
        };
        Ok(())
    }

    /// Drops the open frame's records: nothing of it is published.
    fn abandon(&mut self) {
        if let FrameState::Open { .. } = self.frame
            && let FrameState::Open { claim, .. } =
                std::mem::replace(&mut self.frame, FrameState::Gone)
        {
            self.frame = FrameState::Idle(claim.abandon());
        }
    }

    /// Publishes the records added so far as a frame marked MORE (nothing
    /// when there are none).
    pub fn flush(&mut self) -> Result<(), SessionError> {
        match self.frame {
            FrameState::Open { .. } => self.write(false),
            FrameState::Idle(_) => Ok(()),
            FrameState::Gone => Err(gone()),
        }
    }

    /// Publishes the last frame, marked END, with the records not yet
    /// published.
    pub fn finish(mut self) -> Result<StreamStats, SessionError> {
        self.write(true)?;
        Ok(self.stats)
    }

    /// Ends the stream with `DetectionResult::failure(task_id, message)`,
    /// marked END; records not yet published are dropped. A message over the
    /// schema's limit is cut.
    pub fn fail(mut self, message: &str) -> Result<StreamStats, SessionError> {
        self.stats.failed = true;
        let failure = DetectionResult::failure(
            std::mem::take(&mut self.result.task_id),
            cut(message, MAX_ERROR_MESSAGE_BYTES),
        );
        self.end_with(failure)
    }

    /// Ends the stream because the client cancelled the task: a failure
    /// saying `message`, marked END and CANCELLED; records not yet
    /// published are dropped.
    pub fn cancelled(mut self, message: &str) -> Result<StreamStats, SessionError> {
        self.cancelled = true;
        self.fail(message)
    }

    /// Ends the stream with `result` (say, one carrying a hash result) as its
    /// single END frame; records not yet published are dropped. `result`
    /// should carry this stream's task id.
    pub fn finish_with(mut self, result: DetectionResult) -> Result<StreamStats, SessionError> {
        let len = result.encoded_len();
        if len > self.max_frame {
            return Err(SessionError::ResultTooLarge {
                len,
                max: self.max_frame,
            });
        }
        self.stats.failed |= !result.success;
        self.kind = RecordKind::Result;
        self.end_with(result)
    }

    /// Abandons the open frame and publishes `result` alone, marked END.
    fn end_with(mut self, result: DetectionResult) -> Result<StreamStats, SessionError> {
        self.abandon();
        self.base_len = result.encoded_len();
        self.result = result;
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

    /// Publishes the open frame (opening one with no records when none is
    /// open); the next record opens another.
    fn write(&mut self, end: bool) -> Result<(), SessionError> {
        if let FrameState::Idle(_) = self.frame {
            self.open(self.base_len, self.base_len)?;
        }
        let flags = Marker {
            end,
            kind: self.kind,
            cancelled: end && self.cancelled,
            full: self.full,
        }
        .to_flags();
        let FrameState::Open { claim, used, .. } =
            std::mem::replace(&mut self.frame, FrameState::Gone)
        else {
            return Err(gone());
        };
        self.frame = FrameState::Idle(claim.publish(used, flags));
        self.stats.frames += 1;
        Ok(())
    }
}

/// How long a frame's first record waits for room for the largest frame
/// before it takes a frame of its own size instead (a reader that lags).
const LARGEST_FRAME_WAIT: Duration = Duration::from_millis(10);

/// The error of a writer whose producer was lost to a failed claim.
fn gone() -> SessionError {
    SessionError::Ring(RingError::Closed)
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
