//! The writing side: claims space in the ring, lets the caller fill it in
//! place, and publishes it.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Instant;

use super::close::{self, Closer};
use super::config::RingConfig;
use super::error::{CorruptKind, Position, RingError, TryClaimError};
use super::frame::FrameHeader;
use super::layout::{FRAME_ALIGN, FRAME_EMPTY, FRAME_HEADER_LEN, frame_size};
use super::segment::{self, ConsumerFds, DataWriter, Shared};
use super::sync::Ordering;
use super::wait::{self, WaitStrategy};
use crate::sys::pidfd::PidFd;

/// The writing end of a ring. Create one with [`Producer::create`] (or
/// [`pair`](super::pair)); send the returned [`ConsumerFds`] to the
/// consumer.
///
/// The producer keeps its own position in private memory. It publishes a
/// frame by storing its header word last (the consumer polls that word),
/// after an empty header word where the next frame will go; then it stores
/// its position. It re-reads the consumer's position only when its cached
/// copy says the ring is short of room. Dropping it closes the ring.
#[derive(Debug)]
pub struct Producer {
    writer: DataWriter,
    /// Capacity - 1; capacity is a power of two.
    mask: u64,
    capacity: u64,
    max_frame: usize,
    /// Bytes published so far (stored in shared memory after each commit
    /// or padding frame).
    tail: u64,
    /// The consumer position as last read and checked.
    cached_head: u64,
    wait: WaitStrategy,
    peer: Option<PidFd>,
}

impl Producer {
    /// Creates a ring (two sealed memfds, mapped) and returns its producer
    /// and the descriptors for its consumer.
    ///
    /// # Errors
    /// [`RingError::InvalidConfig`] for a capacity that is not a power of two
    /// between 64 KiB and 1 GiB, or a largest frame that does not fit;
    /// [`RingError::Sys`] when the memfds cannot be made, sized, sealed or
    /// mapped.
    ///
    /// # Examples
    /// ```
    /// use daemoneye_lib::ring::{Consumer, Producer, RingConfig, RingError, WaitStrategy};
    ///
    /// let (producer, fds) = Producer::create(&RingConfig::new(64 << 10))?;
    /// // `fds` would go to the consumer process (SCM_RIGHTS); here, in place.
    /// let consumer = Consumer::attach(fds, WaitStrategy::default())?;
    /// assert_eq!(producer.capacity(), consumer.capacity());
    ///
    /// let too_small = Producer::create(&RingConfig::new(1000));
    /// assert!(matches!(too_small, Err(RingError::InvalidConfig { .. })));
    /// # Ok::<(), RingError>(())
    /// ```
    pub fn create(config: &RingConfig) -> Result<(Producer, ConsumerFds), RingError> {
        config.validate()?;
        let (writer, fds) = segment::create(config.capacity, config.max_frame)?;
        Ok((Producer::with_writer(writer, config), fds))
    }

    /// The producer of a new ring (of the checked `config`) that `writer`
    /// writes.
    pub(super) fn with_writer(writer: DataWriter, config: &RingConfig) -> Producer {
        Producer {
            writer,
            mask: config.capacity as u64 - 1,
            capacity: config.capacity as u64,
            max_frame: config.max_frame,
            tail: 0,
            cached_head: 0,
            wait: config.wait,
            peer: None,
        }
    }

    #[inline]
    fn shared(&self) -> &Shared {
        self.writer.shared()
    }

    /// Bytes in the data area.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (producer, _consumer) = ring::pair(&RingConfig::new(1 << 20))?;
    /// assert_eq!(producer.capacity(), 1 << 20);
    /// # Ok::<(), daemoneye_lib::ring::RingError>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The largest payload a frame may carry; a longer claim is refused
    /// with `TooLarge`.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig, TryClaimError};
    /// let config = RingConfig::new(64 << 10).with_max_frame(4096);
    /// let (mut producer, _consumer) = ring::pair(&config)?;
    /// assert_eq!(producer.max_frame(), 4096);
    /// assert!(matches!(producer.try_claim(4097), Err(TryClaimError::TooLarge { .. })));
    /// # Ok::<(), daemoneye_lib::ring::RingError>(())
    /// ```
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// How this producer waits for room.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Waits for room as `wait` says from now on; a zero park timeout is
    /// refused as by [`RingConfig`](super::RingConfig).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) -> Result<(), RingError> {
        wait.validate()?;
        self.wait = wait;
        Ok(())
    }

    /// Bytes published so far (frames, their headers, padding).
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (mut producer, _consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// producer.try_write(b"12345", 0)?;
    /// // An 8-byte header and the payload rounded up to 8 bytes.
    /// assert_eq!(producer.position(), 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// Reports [`RingError::PeerGone`] from blocking calls once the process
    /// behind `pidfd` has exited (checked whenever a park times out, and
    /// every 100 ms of busy spinning).
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// use daemoneye_lib::sys::pidfd::PidFd;
    ///
    /// let (mut producer, _consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// // The consumer's process; here this one, which stays alive.
    /// producer.watch_peer(PidFd::open(std::process::id())?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watch_peer(&mut self, pidfd: PidFd) {
        self.peer = Some(pidfd);
    }

    /// A handle that closes this side from another thread.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// # use daemoneye_lib::ring::{self, RingConfig, RingError};
    ///
    /// let (mut producer, _consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let closer = producer.closer();
    /// std::thread::spawn(move || closer.close());
    /// // The ring never empties; the close ends the wait for room.
    /// let deadline = Instant::now() + Duration::from_secs(10);
    /// let result = loop {
    ///     if let Err(err) = producer.write(&[0; 1024], 0, deadline) {
    ///         break err;
    ///     }
    /// };
    /// assert!(matches!(result, RingError::Closed));
    /// # Ok::<(), RingError>(())
    /// ```
    pub fn closer(&self) -> Closer {
        Closer::new(Arc::clone(self.writer.shared()))
    }

    /// Closes the ring: the consumer reads what was published, then sees
    /// `Closed`. Further claims fail with `Closed`.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// # use daemoneye_lib::ring::{self, RingConfig, RingError, TryClaimError};
    ///
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// producer.try_write(b"last", 0)?;
    /// producer.close();
    /// assert!(matches!(producer.try_claim(8), Err(TryClaimError::Closed)));
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// assert_eq!(consumer.read(deadline, |frame| frame.bytes().to_vec())?, b"last");
    /// assert!(matches!(consumer.read(deadline, |_| ()), Err(RingError::Closed)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&mut self) {
        close::close(self.shared());
    }

    /// Whether either side has closed the ring.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (producer, consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// assert!(!producer.is_closed());
    /// drop(consumer);
    /// assert!(producer.is_closed());
    /// # Ok::<(), daemoneye_lib::ring::RingError>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        // Relaxed: a status read; a claim checks again.
        self.shared().own_closed().load(Ordering::Relaxed) != 0
            || self.shared().peer_closed().load(Ordering::Relaxed) != 0
    }

    /// Claims room for a payload of `len` bytes, without waiting.
    ///
    /// Fill the returned [`Claim`] in place, then [`Claim::commit`] it;
    /// dropping it instead abandons it (the consumer never sees it).
    ///
    /// # Errors
    /// [`TryClaimError::Full`] when the consumer has not yet released room
    /// (nothing is lost: try again, or [`claim`](Self::claim) with a
    /// deadline); `TooLarge` above [`max_frame`](Self::max_frame);
    /// `Closed` once either side closed; `Corrupt` when the consumer's
    /// published position is impossible.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig, TryClaimError};
    /// let (mut producer, _consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let mut claim = producer.try_claim(4)?;
    /// claim.copy_from_slice(b"ping");
    /// claim.commit(4);
    /// // Nobody reads: the ring fills up, and says so.
    /// let full = loop {
    ///     if let Err(err) = producer.try_write(&[0; 4096], 0) {
    ///         break err;
    ///     }
    /// };
    /// assert!(matches!(full, TryClaimError::Full));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn try_claim(&mut self, len: usize) -> Result<Claim<'_>, TryClaimError> {
        let offset = self.reserve(len)?;
        Ok(Claim {
            producer: self,
            offset,
            len,
        })
    }

    /// Claims room for `len` bytes, waiting until `deadline` for the
    /// consumer to make room.
    ///
    /// # Errors
    /// [`RingError::TimedOut`] when no room was made by `deadline`;
    /// `PeerGone` when the watched consumer process exited; `TooLarge`,
    /// `Closed` and `Corrupt` as for [`try_claim`](Self::try_claim).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// # use daemoneye_lib::ring::{self, RingConfig, RingError};
    ///
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// let mut claim = producer.claim(64, deadline)?;
    /// claim[..2].copy_from_slice(b"hi");
    /// claim.commit(2); // publish fewer bytes than claimed
    /// assert_eq!(consumer.read(deadline, |frame| frame.bytes().len())?, 2);
    ///
    /// // A deadline already passed fails at once when the ring is full.
    /// while producer.try_write(&[0; 4096], 0).is_ok() {}
    /// let late = producer.claim(4096, Instant::now());
    /// assert!(matches!(late, Err(RingError::TimedOut)));
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn claim(&mut self, len: usize, deadline: Instant) -> Result<Claim<'_>, RingError> {
        let offset = self.reserve_blocking(len, deadline)?;
        Ok(Claim {
            producer: self,
            offset,
            len,
        })
    }

    /// Copies `bytes` into one frame with `flags`, without waiting.
    ///
    /// # Errors
    /// As [`try_claim`](Self::try_claim); on an error nothing is written.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// producer.try_write(b"event", 0x0002)?;
    /// let read = consumer.try_read(|frame| (frame.bytes().to_vec(), frame.flags()))?;
    /// assert_eq!(read, (b"event".to_vec(), 0x0002));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn try_write(&mut self, bytes: &[u8], flags: u16) -> Result<(), TryClaimError> {
        let mut claim = self.try_claim(bytes.len())?;
        claim.copy_from_slice(bytes);
        claim.commit_with_flags(bytes.len(), flags);
        Ok(())
    }

    /// Copies `bytes` into one frame with `flags`, waiting until `deadline`
    /// for room.
    ///
    /// # Errors
    /// As [`claim`](Self::claim); on an error nothing is written.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// # use daemoneye_lib::ring::{self, RingConfig};
    ///
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// producer.write(b"one", 0, deadline)?;
    /// assert_eq!(consumer.read(deadline, |frame| frame.bytes().to_vec())?, b"one");
    /// # Ok::<(), daemoneye_lib::ring::RingError>(())
    /// ```
    #[inline]
    pub fn write(&mut self, bytes: &[u8], flags: u16, deadline: Instant) -> Result<(), RingError> {
        let mut claim = self.claim(bytes.len(), deadline)?;
        claim.copy_from_slice(bytes);
        claim.commit_with_flags(bytes.len(), flags);
        Ok(())
    }

    /// `reserve`, inlined for the common case of room at once; waiting is
    /// out of line.
    #[inline]
    fn reserve_blocking(&mut self, len: usize, deadline: Instant) -> Result<usize, RingError> {
        match self.reserve(len) {
            Ok(offset) => Ok(offset),
            Err(TryClaimError::Full) => self.wait_for_room(len, deadline),
            Err(err) => Err(blocking_error(err)),
        }
    }

    #[cold]
    fn wait_for_room(&mut self, len: usize, deadline: Instant) -> Result<usize, RingError> {
        // Hold the shared memory through its own handle so the poll closure
        // may borrow `self` mutably.
        let shared = Arc::clone(self.writer.shared());
        let (strategy, peer) = (self.wait, self.peer.take());
        let result = wait::block(
            strategy,
            deadline,
            &shared.consumer_lines().producer_wait,
            peer.as_ref(),
            |_thorough| match self.reserve(len) {
                Ok(offset) => Some(Ok(offset)),
                Err(TryClaimError::Full) => None,
                Err(err) => Some(Err(blocking_error(err))),
            },
        );
        self.peer = peer;
        result
    }

    /// Finds room for a frame with `len` payload bytes; returns the data
    /// area offset of its header. Writes a padding frame first when the
    /// frame does not fit before the end of the data area.
    #[inline]
    fn reserve(&mut self, len: usize) -> Result<usize, TryClaimError> {
        if len > self.max_frame {
            return Err(TryClaimError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        // Relaxed: the flags publish nothing; a claim racing with a close
        // may still succeed, and the consumer then never reads it.
        let shared = self.writer.shared();
        if shared.own_closed().load(Ordering::Relaxed) != 0
            || shared.peer_closed().load(Ordering::Relaxed) != 0
        {
            return Err(TryClaimError::Closed);
        }
        let size = frame_size(len) as u64;
        let offset = self.tail & self.mask;
        let to_end = self.capacity - offset;
        // The frame (after padding to the end when it does not fit before
        // it), and the empty header word written just after it.
        let frame_room = if size <= to_end { size } else { to_end + size };
        let needed = frame_room + FRAME_HEADER_LEN as u64;
        if self.tail - self.cached_head + needed > self.capacity {
            self.refresh_head()?;
            if self.tail - self.cached_head + needed > self.capacity {
                return Err(TryClaimError::Full);
            }
        }
        if size <= to_end {
            return Ok(offset as usize);
        }
        // Pad to the end and publish the padding at once. First the empty
        // header word at offset 0, where the frame goes, so that a consumer
        // skipping the padding waits there instead of reading what the
        // previous lap left. Relaxed: the Release store below publishes it.
        self.writer
            .frame_word(0)
            .store(FRAME_EMPTY, Ordering::Relaxed);
        let padding = FrameHeader::padding((to_end as usize - FRAME_HEADER_LEN) as u32);
        // Release: the empty word above happens before any consumer load
        // (Acquire) that sees this padding header.
        self.writer
            .frame_word(offset as usize)
            .store(padding.encode(), Ordering::Release);
        self.tail += to_end;
        self.publish_position();
        // A parked consumer releases the padding only once it looks; the
        // claim may yet be abandoned and the next one need that room.
        wait::notify(&self.shared().consumer_lines().consumer_wait);
        Ok(0)
    }

    /// Re-reads the consumer position and checks it: aligned, not moved
    /// backwards, not past what was published.
    fn refresh_head(&mut self) -> Result<(), CorruptKind> {
        // Acquire: pairs with the consumer's Release store after it finished
        // reading the frames below this position, so the bytes this producer
        // now overwrites are no longer being read.
        let head = self
            .shared()
            .consumer_lines()
            .position
            .load(Ordering::Acquire);
        if head % FRAME_ALIGN as u64 != 0 {
            return Err(CorruptKind::PositionMisaligned {
                position: Position::Consumer,
                value: head,
            });
        }
        if head < self.cached_head {
            return Err(CorruptKind::PositionBackwards {
                position: Position::Consumer,
                was: self.cached_head,
                now: head,
            });
        }
        if head > self.tail {
            return Err(CorruptKind::ConsumerOverrun {
                producer: self.tail,
                consumer: head,
            });
        }
        self.cached_head = head;
        Ok(())
    }

    /// Publishes the claimed frame at `offset`: the empty header word after
    /// it, then its own header word, then the position.
    #[inline]
    fn commit(&mut self, offset: usize, used: usize, flags: u16) {
        // `used` is at most the claim, which is at most the largest frame,
        // which fits a u32 (checked in layout).
        let header = FrameHeader::data(used as u32, flags);
        let size = frame_size(used) as u64;
        // Inside the room `reserve` found (the frame plus one word).
        let next = ((self.tail + size) & self.mask) as usize;
        // Relaxed: the Release store of this frame's header publishes it.
        self.writer
            .frame_word(next)
            .store(FRAME_EMPTY, Ordering::Relaxed);
        // Release: the payload and the empty word after the frame happen
        // before any consumer load (Acquire) that sees this header word.
        self.writer
            .frame_word(offset)
            .store(header.encode(), Ordering::Release);
        self.tail += size;
        self.publish_position();
        wait::notify(&self.shared().consumer_lines().consumer_wait);
    }

    /// Stores the position after the header words just written.
    #[inline]
    fn publish_position(&self) {
        // Release: every header word stored before it is visible to a
        // consumer that loads this position with Acquire (its audit of an
        // empty ring relies on it).
        self.shared()
            .producer_lines()
            .position
            .store(self.tail, Ordering::Release);
    }
}

/// A blocking call's error for a `try_claim` error other than `Full`.
fn blocking_error(err: TryClaimError) -> RingError {
    match err {
        TryClaimError::Full => RingError::TimedOut,
        TryClaimError::TooLarge { len, max } => RingError::TooLarge { len, max },
        TryClaimError::Closed => RingError::Closed,
        TryClaimError::Corrupt(kind) => RingError::Corrupt(kind),
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        close::close(self.shared());
    }
}

/// Room for one frame, claimed in the ring: the payload bytes, writable in
/// place (it derefs to `[u8]` of the claimed length).
///
/// [`commit`](Claim::commit) publishes it; dropping it abandons it.
#[derive(Debug)]
#[must_use = "a claim is abandoned unless committed"]
pub struct Claim<'a> {
    producer: &'a mut Producer,
    /// Data area offset of the frame header.
    offset: usize,
    len: usize,
}

impl Claim<'_> {
    /// Publishes the first `used` bytes of the claim as one frame with no
    /// flags.
    ///
    /// # Panics
    /// If `used` is more than the claimed length.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let mut claim = producer.try_claim(8)?;
    /// claim[..3].copy_from_slice(b"abc");
    /// claim.commit(3);
    /// assert_eq!(consumer.try_read(|frame| frame.bytes().to_vec())?, b"abc");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn commit(self, used: usize) {
        self.commit_with_flags(used, 0);
    }

    /// Publishes the first `used` bytes of the claim as one frame carrying
    /// `flags` (the consumer reads them back with
    /// [`Frame::flags`](super::Frame::flags)).
    ///
    /// # Panics
    /// If `used` is more than the claimed length.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let mut claim = producer.try_claim(1)?;
    /// claim[0] = 7;
    /// claim.commit_with_flags(1, 0x8000);
    /// assert_eq!(consumer.try_read(|frame| frame.flags())?, 0x8000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn commit_with_flags(self, used: usize, flags: u16) {
        self.publish(used, flags);
    }
}

impl<'a> Claim<'a> {
    /// As [`commit_with_flags`](Self::commit_with_flags), then gives the
    /// producer back: for a writer that keeps a claim open across calls
    /// (filling it as records come) and claims again after.
    ///
    /// # Panics
    /// If `used` is more than the claimed length.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let mut claim = producer.try_claim(8)?;
    /// claim[0] = 1;
    /// let producer = claim.publish(1, 0);
    /// producer.try_write(&[2], 0)?;
    /// assert_eq!(consumer.try_read(|frame| frame.bytes()[0])?, 1);
    /// assert_eq!(consumer.try_read(|frame| frame.bytes()[0])?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn publish(self, used: usize, flags: u16) -> &'a mut Producer {
        assert!(
            used <= self.len,
            "committed {used} bytes of a {}-byte claim",
            self.len
        );
        self.producer.commit(self.offset, used, flags);
        self.producer
    }

    /// Abandons the claim (nothing is published) and gives the producer
    /// back.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let producer = producer.try_claim(8)?.abandon();
    /// assert_eq!(producer.position(), 0);
    /// assert!(consumer.try_read(|_| ()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn abandon(self) -> &'a mut Producer {
        self.producer
    }

    /// The producer this claim is in (its limits and state, while the claim
    /// is open).
    #[inline]
    pub fn producer(&self) -> &Producer {
        self.producer
    }
}

impl Deref for Claim<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.producer
            .writer
            .bytes(self.offset + FRAME_HEADER_LEN, self.len)
    }
}

impl DerefMut for Claim<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        self.producer
            .writer
            .bytes_mut(self.offset + FRAME_HEADER_LEN, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::TryReadError;
    use crate::ring::layout::{MIN_CAPACITY, max_frame_limit};
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::time::Duration;

    fn producer(max_frame: usize) -> (Producer, ConsumerFds) {
        Producer::create(&RingConfig::new(MIN_CAPACITY).with_max_frame(max_frame)).unwrap()
    }

    #[test]
    fn a_wait_strategy_is_changed_only_to_a_valid_one() {
        let (mut producer, _fds) = producer(4096);
        assert_eq!(producer.wait_strategy(), WaitStrategy::default());
        let zero = WaitStrategy::Park {
            timeout: Duration::ZERO,
        };
        assert!(matches!(
            producer.set_wait_strategy(zero),
            Err(RingError::InvalidConfig { .. })
        ));
        assert_eq!(producer.wait_strategy(), WaitStrategy::default());
        let parking = WaitStrategy::default().parking();
        producer.set_wait_strategy(parking).unwrap();
        assert_eq!(producer.wait_strategy(), parking);
    }

    /// Writes `len`-byte frames until a write fails; returns how many went
    /// in and the error. Fails the test, instead of spinning for ever, when
    /// more go in than the ring can hold.
    fn fill_up(producer: &mut Producer, len: usize) -> (usize, TryClaimError) {
        let most = MIN_CAPACITY / frame_size(len);
        for written in 0..=most {
            if let Err(err) = producer.try_write(&vec![7; len], 0) {
                return (written, err);
            }
        }
        panic!("more than {most} frames of {len} bytes went into a 64 KiB ring");
    }

    #[test]
    fn fills_up_then_reports_full() {
        let (mut producer, _fds) = producer(1000);
        let (written, err) = fill_up(&mut producer, 1000);
        assert!(matches!(err, TryClaimError::Full), "{err:?}");
        // 1008-byte frames: 65 fit in 64 KiB.
        assert_eq!(written, MIN_CAPACITY / 1008);
        assert_eq!(producer.position(), written as u64 * 1008);
        let err = producer.write(&[1; 1000], 0, Instant::now() + Duration::from_millis(10));
        assert!(matches!(err, Err(RingError::TimedOut)));
    }

    #[test]
    fn a_full_ring_keeps_room_for_the_empty_word_after_its_last_frame() {
        // 1024-byte frames (header included) divide the ring: the 64th would
        // end exactly where the first begins, leaving no room for the empty
        // header word written after it, which would land on the first
        // frame's header before the consumer read it.
        let (mut producer, fds) = producer(1016);
        let (written, err) = fill_up(&mut producer, 1016);
        assert!(matches!(err, TryClaimError::Full), "{err:?}");
        assert_eq!(written, MIN_CAPACITY / 1024 - 1);
        let mut consumer = crate::ring::Consumer::attach(fds, WaitStrategy::default()).unwrap();
        let mut read = 0;
        for _ in 0..=written {
            match consumer.try_read(|frame| frame.bytes() == [7; 1016]) {
                Ok(intact) => {
                    assert!(intact, "frame {read} changed");
                    read += 1;
                }
                Err(err) => {
                    assert!(matches!(err, TryReadError::Empty), "{err:?}");
                    break;
                }
            }
        }
        assert_eq!(read, written);
    }

    #[test]
    fn too_large_is_refused() {
        let (mut producer, _fds) = producer(100);
        assert!(matches!(
            producer.try_claim(101),
            Err(TryClaimError::TooLarge { len: 101, max: 100 })
        ));
        assert!(producer.try_claim(100).is_ok());
        let limit = max_frame_limit(MIN_CAPACITY);
        let (mut producer, _fds) = self::producer(limit);
        assert!(producer.try_claim(limit).is_ok());
    }

    #[test]
    fn abandoned_claim_publishes_nothing() {
        let (mut producer, _fds) = producer(100);
        {
            let mut claim = producer.try_claim(50).unwrap();
            claim[0] = 1;
        } // dropped here: abandoned
        assert_eq!(producer.position(), 0);
        producer.try_claim(10).unwrap().commit(3);
        assert_eq!(producer.position(), 16);
    }

    #[test]
    #[should_panic(expected = "committed 11 bytes of a 10-byte claim")]
    fn over_commit_panics() {
        let (mut producer, _fds) = producer(100);
        producer.try_claim(10).unwrap().commit(11);
    }

    #[test]
    fn reports_its_capacity_and_largest_frame() {
        let config = RingConfig::new(1 << 20).with_max_frame(4096);
        let (producer, _fds) = Producer::create(&config).unwrap();
        assert_eq!((producer.capacity(), producer.max_frame()), (1 << 20, 4096));
    }

    #[test]
    fn close_ends_claims() {
        let (mut producer, _fds) = producer(100);
        assert!(!producer.is_closed());
        producer.try_write(b"before", 0).unwrap();
        producer.close();
        assert!(producer.is_closed());
        assert!(matches!(producer.try_claim(1), Err(TryClaimError::Closed)));
    }

    #[test]
    fn closed_consumer_ends_claims() {
        let (mut producer, fds) = producer(100);
        assert!(!producer.is_closed());
        let control = File::from(fds.control);
        control
            .write_all_at(
                &1u32.to_ne_bytes(),
                crate::ring::layout::CONSUMER_CLOSED_OFFSET as u64,
            )
            .unwrap();
        assert!(producer.is_closed());
        assert!(matches!(producer.try_claim(1), Err(TryClaimError::Closed)));
    }

    #[test]
    fn scribbled_consumer_position_is_corrupt() {
        use crate::ring::layout::CONSUMER_POSITION_OFFSET;
        let (mut producer, fds) = producer(1000);
        fill_up(&mut producer, 1000);
        let control = File::from(fds.control);
        let set = |value: u64| {
            control
                .write_all_at(&value.to_ne_bytes(), CONSUMER_POSITION_OFFSET as u64)
                .unwrap();
        };
        set(producer.position() + 8);
        assert!(matches!(
            producer.try_claim(1000),
            Err(TryClaimError::Corrupt(CorruptKind::ConsumerOverrun { .. }))
        ));
        set(3);
        assert!(matches!(
            producer.try_claim(1000),
            Err(TryClaimError::Corrupt(
                CorruptKind::PositionMisaligned { .. }
            ))
        ));
        set(2016);
        producer.try_claim(1000).unwrap().commit(1000);
        set(1008);
        fill_up(&mut producer, 1000);
        assert!(matches!(
            producer.try_claim(1000),
            Err(TryClaimError::Corrupt(CorruptKind::PositionBackwards {
                was: 2016,
                now: 1008,
                ..
            }))
        ));
    }
}
