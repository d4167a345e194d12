//! daemoneye-agent's side of a result stream: one frame at a time, decoded
//! straight from the ring.

use std::time::Instant;

use super::error::SessionError;
use super::marker::Marker;
use crate::proto::DetectionResult;
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

/// Waits until `deadline` for the next frame, decodes it in place, releases
/// it, then checks it: its flags ([`SessionError::BadFlags`]), its bytes
/// ([`SessionError::Decode`]) and the schema's rules
/// ([`SessionError::Invalid`]). The caller checks the task id.
///
/// Decoding is bounded by the frame: a frame is at most the ring's largest
/// frame, and so is what the decoder reads.
pub fn read_chunk(consumer: &mut Consumer, deadline: Instant) -> Result<Chunk, SessionError> {
    let (flags, decoded) = consumer.read(deadline, |frame| {
        (frame.flags(), frame.decode::<DetectionResult>())
    })?;
    let marker = Marker::from_flags(flags)?;
    let result = decoded?;
    result.validate()?;
    Ok(Chunk { result, marker })
}
