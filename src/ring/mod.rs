//! A single-producer, single-consumer ring of byte frames in shared memory,
//! between two processes, with futex wake-ups.
//!
//! procmond holds the [`Producer`]; daemoneye-agent holds the [`Consumer`].
//! The ring carries opaque frames (a payload and 16 caller-defined flag
//! bits) and knows nothing of what is in them, apart from the small
//! [`Producer::encode`] / [`Frame::decode`] helpers for protobuf messages.
//!
//! - **Memory.** Two memfds, sized once and sealed: the producer region
//!   (header, producer position, frames), which the consumer can only map
//!   read-only, and a small consumer region (consumer position, futex
//!   words, consumer close flag). See [`layout`] for the picture.
//! - **Zero copy.** The producer claims room and writes (or encodes) the
//!   payload in place; the consumer's closure reads the frame in place,
//!   and only then is the room released.
//! - **Positions and headers.** Positions are monotonic `u64` byte
//!   counters, each side's kept in private memory and published with a
//!   Release store. A frame is published by its header word, stored last
//!   with Release; the consumer polls that word (an empty word, stored
//!   ahead by the producer, means nothing yet), so a hand-off moves one
//!   cache line. The producer re-reads the consumer position only when it
//!   looks short of room; the consumer reads the producer's only to check
//!   it. A frame is visible only once complete, whenever the producer dies.
//! - **Waiting.** [`WaitStrategy`]: busy-spin, spin-then-park (default) or
//!   park; a side wakes the other (a futex system call) only when that side
//!   said it parked. Blocking calls take a deadline; `try_*` calls report
//!   `Full` / `Empty`. Nothing is dropped.
//! - **Distrust.** Every value read from memory the peer can write is
//!   checked before use; a violation is a [`CorruptKind`], never a panic or
//!   an access out of bounds.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use daemoneye_lib::ring::{self, RingConfig, RingError};
//!
//! # fn main() -> Result<(), RingError> {
//! // In one process: `Producer::create` gives the producer and the
//! // descriptors to pass to the consumer process, which calls
//! // `Consumer::attach`. `pair` does both, for tests and benches.
//! let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
//! let deadline = Instant::now() + Duration::from_secs(1);
//!
//! // Claim room, fill it in place, publish (possibly fewer bytes).
//! let mut claim = producer.claim(16, deadline)?;
//! claim[..5].copy_from_slice(b"hello");
//! claim.commit_with_flags(5, 0x0001);
//! producer.write(b"world", 0, deadline)?;
//!
//! // Read in place; the frame is released when the closure returns.
//! let first = consumer.read(deadline, |frame| (frame.bytes().to_vec(), frame.flags()))?;
//! assert_eq!(first, (b"hello".to_vec(), 0x0001));
//! let mut rest = Vec::new();
//! consumer.read_batch(16, deadline, |frame| rest.push(frame.bytes().to_vec()))?;
//! assert_eq!(rest, [b"world".to_vec()]);
//!
//! // Closing one side ends the other's waits; the consumer first drains
//! // what was published.
//! drop(producer);
//! assert!(matches!(consumer.read(deadline, |_| ()), Err(RingError::Closed)));
//! # Ok(())
//! # }
//! ```

mod close;
mod config;
mod consumer;
mod error;
mod frame;
pub mod layout;
mod message;
mod producer;
mod segment;
mod sync;
mod wait;

pub use close::Closer;
pub use config::RingConfig;
pub use consumer::Consumer;
pub use error::{CorruptKind, Position, Region, RingError, TryClaimError, TryReadError};
pub use frame::{Frame, FrameHeader, FrameKind};
pub use producer::{Claim, Producer};
pub use segment::ConsumerFds;
pub use wait::{DEFAULT_PARK_TIMEOUT, DEFAULT_SPINS, WaitStrategy};

/// Creates a ring and attaches a consumer to it in this process: both ends,
/// connected, each `Send` (for tests, benches, or a child process made with
/// `fork`). The consumer waits with `config.wait` too.
///
/// Under `cfg(loom)` this is the only way to make a ring: its two regions
/// are then on the heap, for loom to check the ring's protocol over them
/// (`tests/loom_ring.rs`); `Producer::create` and `Consumer::attach`
/// refuse.
pub fn pair(config: &RingConfig) -> Result<(Producer, Consumer), RingError> {
    #[cfg(not(loom))]
    {
        let (producer, fds) = Producer::create(config)?;
        let consumer = Consumer::attach(fds, config.wait)?;
        Ok((producer, consumer))
    }
    #[cfg(loom)]
    {
        config.validate()?;
        let (writer, reader) = segment::heap_pair(config.capacity, config.max_frame)?;
        let producer = Producer::with_writer(writer, config);
        Ok((producer, Consumer::with_reader(reader, config.wait)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_send() {
        fn is_send<T: Send>() {}
        is_send::<Producer>();
        is_send::<Consumer>();
        is_send::<Closer>();
        fn is_sync<T: Sync>() {}
        is_sync::<Closer>();
    }
}
