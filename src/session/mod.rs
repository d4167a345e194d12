//! The result stream on the ring, shared by procmond (writer) and
//! daemoneye-agent (reader).
//!
//! Each ring frame is one [`DetectionResult`](crate::proto::DetectionResult)
//! for one task id, holding a slice of the records. The seed's messages keep
//! their exact shape: what the stream needs beyond them rides in the ring
//! frame header's 16 user flags ([`Marker`]): whether more frames of this
//! task follow or this is the last one (END), and, for
//! MONITOR_PROCESS_TREE, which event the records are (snapshot, started,
//! exited).
//!
//! ```text
//!  task t-7 (ENUMERATE, 2,000 records, 128 KiB frames)
//!  ┌────────────────────┐ ┌────────────────────┐ ┌────────────────────┐
//!  │ t-7 records 0..812 │ │ t-7 records ..1630 │ │ t-7 records ..2000 │
//!  │ flags: MORE        │ │ flags: MORE        │ │ flags: END         │
//!  └────────────────────┘ └────────────────────┘ └────────────────────┘
//! ```
//!
//! [`ResultWriter`] encodes each record straight into the frame it is
//! filling in the ring (a claim of the ring's largest frame, published when
//! the next record would not fit: no intermediate buffer). A [`ChunkReader`] copies
//! each frame once into a buffer it reuses and releases it, then checks that
//! copy against the encoding and the schema's rules in one pass and views it
//! in place ([`DetectionResultView`], borrowed `&str`s, nothing allocated per
//! record; procmond can still write the ring meanwhile, so nothing is
//! checked in the ring); a reader's memory is about one frame (and some 180
//! bytes a record and 16 an argument of notes on it). A failure is
//! `DetectionResult::failure(task_id, message)` with END.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use daemoneye_lib::proto::ProtoProcessRecord;
//! use daemoneye_lib::ring::{self, RingConfig};
//! use daemoneye_lib::session::{ChunkReader, RecordKind, ResultWriter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10).with_max_frame(256))?;
//! let mut writer = ResultWriter::new(&mut producer, "t-1", Duration::from_secs(5));
//! for pid in 1..=100 {
//!     let record = ProtoProcessRecord { pid, name: format!("p{pid}"), ..Default::default() };
//!     writer.push(RecordKind::Result, record)?;
//! }
//! let stats = writer.finish()?;
//! assert!(stats.frames > 1); // 100 records do not fit one 256-byte frame
//!
//! let deadline = Instant::now() + Duration::from_secs(5);
//! let (mut reader, mut pids) = (ChunkReader::new(), Vec::new());
//! loop {
//!     let chunk = reader.read(&mut consumer, deadline)?;
//!     pids.extend(chunk.result.processes.iter().map(|r| r.pid));
//!     if chunk.marker.end {
//!         break;
//!     }
//! }
//! assert_eq!(pids, (1..=100).collect::<Vec<_>>());
//! # Ok(())
//! # }
//! ```

mod error;
mod marker;
mod reader;
mod text;
mod view;
mod writer;

pub use error::SessionError;
pub use marker::{Marker, RecordKind};
pub(crate) use reader::RecordCursor;
pub use reader::{Chunk, ChunkReader, ChunkView, read_chunk};
pub use view::{
    CommandLine, DecodedRecord, DetectionResultView, HashResultView, ProcessRecordView, Processes,
    ViewError, WireError, WireProblem,
};
pub use writer::{ResultWriter, StreamStats};
