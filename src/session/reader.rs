//! daemoneye-agent's side of a result stream: one frame at a time, copied
//! out of the ring, then checked and viewed in place.

use std::time::Instant;

use super::error::SessionError;
use super::marker::Marker;
use super::text::CheckedFrame;
use super::view::{DetectionResultView, Notes, ProcessRecordView, Processes, Stop};
use crate::proto::DetectionResult;
use crate::proto::limits::MAX_PROCESSES_PER_RESULT;
use crate::ring::Consumer;

/// One frame of a result stream, decoded and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// The frame's result: a slice of the task's records (or its failure,
    /// or its hash result).
    pub result: DetectionResult,
    /// Whether this is the last frame, and what the records are.
    pub marker: Marker,
}

/// One frame of a result stream, checked, viewed in the reader's private
/// copy of it (valid until the reader reads again).
#[derive(Clone, Debug)]
pub struct ChunkView<'a> {
    /// The frame's result.
    pub result: DetectionResultView<'a>,
    /// Whether this is the last frame, and what the records are.
    pub marker: Marker,
}

/// Reads a result stream's frames, each copied once into a private buffer
/// it reuses, then checked and viewed there.
///
/// The copy is what makes the checks mean anything: procmond can still
/// write the ring while the agent reads it, so bytes validated
/// in place could differ when read again. Copying a frame costs a fraction
/// of decoding it, and releases its room in the ring sooner.
#[derive(Debug, Default)]
pub struct ChunkReader {
    frame: CheckedFrame,
    /// What the check noted of `frame`'s records.
    notes: Notes,
}

impl ChunkReader {
    /// A reader with an empty buffer (it grows to the largest frame read).
    pub fn new() -> ChunkReader {
        ChunkReader::default()
    }

    /// Waits until `deadline` for the next frame, copies it out and
    /// releases it, then checks the copy: its flags
    /// ([`SessionError::BadFlags`]), its bytes ([`SessionError::Decode`])
    /// and the schema's rules ([`SessionError::Invalid`]), in one pass
    /// ([`DetectionResultView::parse`]). The caller checks the task id.
    ///
    /// The pass stops at a record past the [`MAX_PROCESSES_PER_RESULT`]-th
    /// ([`SessionError::TooManyRecords`]), so what it notes stays bounded
    /// whatever the frame holds. Nothing is allocated once the buffers (the
    /// frame's copy, and what the check notes: about 180 bytes a record and
    /// 16 an argument) have grown to the largest frame read.
    pub fn read_view(
        &mut self,
        consumer: &mut Consumer,
        deadline: Instant,
    ) -> Result<ChunkView<'_>, SessionError> {
        let frame = &mut self.frame;
        let flags = consumer.read(deadline, |ring_frame| {
            frame.replace(ring_frame.bytes());
            ring_frame.flags()
        })?;
        self.view_copy(flags)
    }

    /// [`read_view`](Self::read_view) of a frame that came another way (a
    /// socket, a file): `bytes` and the ring frame header's `flags` (the
    /// [`Marker`]), copied into the reader's buffer, checked and viewed
    /// there, with the same flag, decode and rule errors.
    ///
    /// ```
    /// use daemoneye_lib::proto::{DetectionResult, ProtoProcessRecord};
    /// use daemoneye_lib::session::{ChunkReader, Marker, RecordKind};
    /// use prost::Message;
    ///
    /// let record = ProtoProcessRecord { pid: 7, name: "init".into(), ..Default::default() };
    /// let bytes = DetectionResult::success("t-1", vec![record]).encode_to_vec();
    /// let flags = Marker { end: true, kind: RecordKind::Result, cancelled: false, full: false }.to_flags();
    ///
    /// let mut reader = ChunkReader::new();
    /// let chunk = reader.view_frame(&bytes, flags)?;
    /// assert!(chunk.marker.end);
    /// assert_eq!(chunk.result.processes().map(|p| p.name()).collect::<Vec<_>>(), ["init"]);
    /// # Ok::<(), daemoneye_lib::session::SessionError>(())
    /// ```
    pub fn view_frame(&mut self, bytes: &[u8], flags: u16) -> Result<ChunkView<'_>, SessionError> {
        self.frame.replace(bytes);
        self.view_copy(flags)
    }

    /// Checks and views the frame just copied, whose header carried `flags`.
    fn view_copy(&mut self, flags: u16) -> Result<ChunkView<'_>, SessionError> {
        // The last frame's notes go with it, whatever happens next.
        self.notes.clear();
        let marker = Marker::from_flags(flags)?;
        let result =
            DetectionResultView::parse_into(&self.frame, &mut self.notes, MAX_PROCESSES_PER_RESULT)
                .map_err(|stop| match stop {
                    Stop::Broken(error) => SessionError::from(error),
                    Stop::OverLimit => SessionError::TooManyRecords {
                        count: MAX_PROCESSES_PER_RESULT + 1,
                        max: MAX_PROCESSES_PER_RESULT,
                    },
                })?;
        Ok(ChunkView { result, marker })
    }

    /// [`read_view`](Self::read_view), then the result made owned
    /// ([`DetectionResultView::to_owned`]: what prost would decode).
    ///
    /// A frame's decoded memory is at most its own bytes plus
    /// [`MAX_PROCESSES_PER_RESULT`] empty records (an empty record takes
    /// 2 bytes on the wire but some 250 decoded, which is why the pass
    /// stops at the limit).
    pub fn read(
        &mut self,
        consumer: &mut Consumer,
        deadline: Instant,
    ) -> Result<Chunk, SessionError> {
        let chunk = self.read_view(consumer, deadline)?;
        Ok(Chunk {
            result: chunk.result.to_owned(),
            marker: chunk.marker,
        })
    }

    /// The records of the last frame read (checked when it was read).
    pub(crate) fn records(&self) -> Processes<'_> {
        Processes::new(self.frame.checked(), &self.notes)
    }
}

/// A place among the records of a [`ChunkReader`]'s last frame, kept apart
/// from the reader so that an iterator can hold it across calls (the
/// client's).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RecordCursor {
    next: usize,
    end: usize,
}

impl RecordCursor {
    /// All the records of `result`.
    pub(crate) fn all(result: &DetectionResultView<'_>) -> Self {
        RecordCursor {
            next: 0,
            end: result.process_count(),
        }
    }

    /// The next record, from the reader whose frame this cursor is for.
    pub(crate) fn next<'a>(&mut self, reader: &'a ChunkReader) -> Option<ProcessRecordView<'a>> {
        if self.next >= self.end {
            return None;
        }
        let record = reader.records().nth(self.next);
        debug_assert!(record.is_some(), "a cursor outlives its frame");
        self.next += 1;
        record
    }

    /// Records not yet reached.
    pub(crate) fn left(&self) -> usize {
        self.end - self.next
    }
}

/// [`ChunkReader::read`] with a buffer of its own, for one frame.
pub fn read_chunk(consumer: &mut Consumer, deadline: Instant) -> Result<Chunk, SessionError> {
    ChunkReader::new().read(consumer, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ProtoProcessRecord;
    use prost::Message;

    /// A cursor hands out each record of its frame once, in order, counting
    /// down what is left, and then nothing (the client's streams stop on
    /// `left() == 0` and on `None`: a cursor that did not end would keep them
    /// looping, not failing).
    #[test]
    fn a_cursor_hands_out_each_record_once_then_none() {
        let records = [7, 8, 9].map(|pid| ProtoProcessRecord {
            pid,
            name: format!("proc-{pid}"),
            ..Default::default()
        });
        let bytes = DetectionResult::success("t-1", records.to_vec()).encode_to_vec();
        let mut reader = ChunkReader::new();
        let mut cursor = RecordCursor::all(&reader.view_frame(&bytes, 0).expect("a frame").result);
        assert_eq!(cursor.left(), 3);
        let mut seen = Vec::new();
        while let Some(record) = cursor.next(&reader) {
            seen.push((record.pid(), record.name().to_owned()));
            assert_eq!(cursor.left(), 3 - seen.len().min(3));
            // Bounded, so a cursor that never ends fails here.
            if seen.len() > records.len() {
                break;
            }
        }
        let want: Vec<_> = records.iter().map(|r| (r.pid, r.name.clone())).collect();
        assert_eq!(seen, want);
        assert_eq!(cursor.left(), 0);
        assert!(cursor.next(&reader).is_none());
        assert_eq!(RecordCursor::default().left(), 0);
        assert!(RecordCursor::default().next(&reader).is_none());
    }
}
