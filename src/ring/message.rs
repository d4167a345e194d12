//! Protobuf messages straight into and out of frames: the producer encodes
//! into a claim (no intermediate buffer), the consumer decodes from the
//! frame's bytes in the ring. The only part of `ring` that knows prost.

use std::time::Instant;

use super::error::RingError;
use super::frame::Frame;
use super::producer::Producer;

impl Producer {
    /// Encodes `msg` directly into one frame carrying `flags`, waiting until
    /// `deadline` for room. Returns the encoded length.
    ///
    /// A message longer than the largest frame gives
    /// [`RingError::TooLarge`]; split it first. A deadline of
    /// `Instant::now()` makes it fail at once with `TimedOut` when the ring
    /// is full.
    ///
    /// # Errors
    /// As [`claim`](Producer::claim), and `EncodeOverflow` should the
    /// message encode longer than it said (nothing is published then).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// use daemoneye_lib::proto::DetectionResult;
    /// # use daemoneye_lib::ring::{self, RingConfig};
    ///
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// let result = DetectionResult::success("task-1", vec![]);
    /// producer.encode(&result, 0, deadline)?;
    /// let back: DetectionResult = consumer.read(deadline, |frame| frame.decode())??;
    /// assert_eq!(back, result);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode<M: prost::Message>(
        &mut self,
        msg: &M,
        flags: u16,
        deadline: Instant,
    ) -> Result<usize, RingError> {
        let len = msg.encoded_len();
        let mut claim = self.claim(len, deadline)?;
        let mut buf: &mut [u8] = &mut claim;
        msg.encode(&mut buf)
            .map_err(|err| RingError::EncodeOverflow {
                required: err.required_capacity(),
                remaining: err.remaining(),
            })?;
        claim.commit_with_flags(len, flags);
        Ok(len)
    }
}

impl Frame<'_> {
    /// Decodes the frame's bytes, in place, as a `M`.
    ///
    /// # Errors
    /// prost's [`DecodeError`](prost::DecodeError) when the bytes are not a
    /// valid `M`. The bytes are still in shared memory the producer can
    /// write: decode once, and check the result (as the agent's session
    /// layer does) before trusting it.
    ///
    /// # Examples
    /// ```
    /// use daemoneye_lib::proto::DetectionTask;
    /// # use daemoneye_lib::ring::{self, RingConfig};
    ///
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// producer.try_write(&[0xff, 0xff], 0)?; // not a protobuf message
    /// let decoded = consumer.try_read(|frame| frame.decode::<DetectionTask>())?;
    /// assert!(decoded.is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.bytes())
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::{DetectionResult, ProtoProcessRecord};
    use crate::ring::layout::MIN_CAPACITY;
    use crate::ring::{RingConfig, RingError, pair};
    use std::time::{Duration, Instant};

    fn result(records: usize) -> DetectionResult {
        DetectionResult {
            task_id: "task-1".into(),
            success: true,
            error_message: None,
            processes: (0..records)
                .map(|i| ProtoProcessRecord {
                    pid: i as u32,
                    name: format!("proc-{i}"),
                    command_line: vec!["a".into(), "b".into()],
                    accessible: true,
                    ..Default::default()
                })
                .collect(),
            hash_result: None,
        }
    }

    #[test]
    fn round_trips_a_message() {
        let (mut producer, mut consumer) = pair(&RingConfig::new(MIN_CAPACITY)).unwrap();
        let sent = result(20);
        let deadline = Instant::now() + Duration::from_secs(10);
        let len = producer.encode(&sent, 0x8000, deadline).unwrap();
        assert_eq!(len, prost::Message::encoded_len(&sent));
        let len2 = producer.encode(&result(1), 1, Instant::now()).unwrap();
        let (got, flags) = consumer
            .read(deadline, |f| (f.decode::<DetectionResult>(), f.flags()))
            .unwrap();
        assert_eq!(got.unwrap(), sent);
        assert_eq!(flags, 0x8000);
        let got = consumer
            .try_read(|f| (f.len(), f.decode::<DetectionResult>()))
            .unwrap();
        assert_eq!(got.0, len2);
        assert_eq!(got.1.unwrap(), result(1));
    }

    #[test]
    fn oversized_message_is_too_large() {
        let config = RingConfig::new(MIN_CAPACITY).with_max_frame(256);
        let (mut producer, _consumer) = pair(&config).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(matches!(
            producer.encode(&result(100), 0, deadline),
            Err(RingError::TooLarge { max: 256, .. })
        ));
    }
}
