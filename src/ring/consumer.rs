//! The reading side: hands out published frames in place, then releases
//! them to the producer.

use std::sync::Arc;
use std::time::Instant;

use super::close::{self, Closer};
use super::error::{CorruptKind, Position, RingError, TryReadError};
use super::frame::{Frame, FrameHeader, FrameKind};
use super::layout::{FRAME_ALIGN, FRAME_EMPTY, FRAME_HEADER_LEN, frame_size};
use super::segment::{self, ConsumerFds, DataReader, Shared};
use super::sync::Ordering;
use super::wait::{self, WaitStrategy};
use crate::sys::pidfd::PidFd;

/// The reading end of a ring. Attach one with [`Consumer::attach`] (or
/// [`pair`](super::pair)).
///
/// Reads hand each frame's bytes to a closure while they are still in the
/// ring (no copy); the frame is released to the producer after the closure
/// returns. The consumer keeps its own position in private memory and polls
/// the frame header word there: a frame is published once that word is
/// (see [`layout`](super::layout)). It reads the producer position only to
/// check it, when the ring looks empty: on `try_*` reads, before each park
/// and every 100 ms of spinning. Nothing the
/// producer writes is trusted: every length and position is checked first,
/// and a violation is a [`CorruptKind`] error. Dropping it closes the ring.
#[derive(Debug)]
pub struct Consumer {
    reader: DataReader,
    /// Capacity - 1; capacity is a power of two.
    mask: u64,
    capacity: u64,
    max_frame: u64,
    /// Bytes released so far (stored in shared memory after each release).
    head: u64,
    /// The producer position as last read and checked (for the audit only:
    /// frames are found through their header words).
    cached_tail: u64,
    wait: WaitStrategy,
    peer: Option<PidFd>,
}

/// The largest consumer position accepted at attach: from there, positions
/// grow by at most a capacity per frame and padding, so they cannot overflow
/// in any honest lifetime of a ring (2^63 bytes at 100 GB/s is 2.9 years;
/// the check is against a producer that hands out a consumer region with
/// a position near 2^64).
const MAX_START_POSITION: u64 = 1 << 63;

/// What [`Consumer::peek`] found.
#[derive(Clone, Copy, Debug)]
enum Peek {
    /// A published data frame.
    Frame(Peeked),
    /// An empty header word at this position (past at most one padding
    /// frame): nothing published there yet.
    Empty(u64),
}

/// A published data frame.
#[derive(Clone, Copy, Debug)]
struct Peeked {
    /// Data area offset of the payload.
    payload: usize,
    len: usize,
    flags: u16,
    /// The position just after the frame.
    next: u64,
}

impl Consumer {
    /// Attaches to a ring from the descriptors its producer handed out,
    /// checking everything the producer controls (seals, sizes, magic,
    /// version, capacity, largest frame, positions). `wait` says how
    /// blocking reads wait for data.
    ///
    /// # Errors
    /// `InvalidConfig` for an invalid `wait`; `Corrupt` for any header
    /// field, seal, size or position the producer got wrong;
    /// `AlreadyAttached` when a consumer already holds this ring; `Sys`
    /// when a region cannot be mapped.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use daemoneye_lib::ring::{Consumer, Producer, RingConfig, RingError, WaitStrategy};
    ///
    /// let (_producer, fds) = Producer::create(&RingConfig::new(64 << 10))?;
    /// let wait = WaitStrategy::SpinThenPark { spins: 100, park_timeout: Duration::from_millis(50) };
    /// let consumer = Consumer::attach(fds, wait)?;
    /// assert_eq!(consumer.position(), 0);
    /// # Ok::<(), RingError>(())
    /// ```
    pub fn attach(fds: ConsumerFds, wait: WaitStrategy) -> Result<Consumer, RingError> {
        wait.validate()?;
        Consumer::with_reader(segment::attach(&fds)?, wait)
    }

    /// The consumer of the ring `reader` reads (its header checked), once
    /// the positions it finds there check out.
    pub(super) fn with_reader(
        reader: DataReader,
        wait: WaitStrategy,
    ) -> Result<Consumer, RingError> {
        let shared = reader.shared();
        let capacity = shared.capacity() as u64;
        let max_frame = shared.max_frame() as u64;
        // The positions left by the producer (or an earlier session), as
        // untrusted as everything else. Acquire: pairs with their Release
        // stores.
        let head = shared.consumer_lines().position.load(Ordering::Acquire);
        let mut consumer = Consumer {
            reader,
            mask: capacity - 1,
            capacity,
            max_frame,
            head,
            cached_tail: head,
            wait,
            peer: None,
        };
        if head % FRAME_ALIGN as u64 != 0 {
            return Err(CorruptKind::PositionMisaligned {
                position: Position::Consumer,
                value: head,
            }
            .into());
        }
        // Frames are found by their header words alone, so nothing but this
        // bounds the sums of positions and frame sizes below.
        if head > MAX_START_POSITION {
            return Err(CorruptKind::PositionTooLarge {
                position: Position::Consumer,
                value: head,
            }
            .into());
        }
        consumer.check_tail()?;
        Ok(consumer)
    }

    #[inline]
    fn shared(&self) -> &Shared {
        self.reader.shared()
    }

    /// Bytes in the data area, as the producer's header says (checked at
    /// attach).
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (_producer, consumer) = ring::pair(&RingConfig::new(1 << 20))?;
    /// assert_eq!(consumer.capacity(), 1 << 20);
    /// # Ok::<(), daemoneye_lib::ring::RingError>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The largest payload a frame may carry; a longer frame header is
    /// reported as corrupt.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (_producer, consumer) = ring::pair(&RingConfig::new(64 << 10).with_max_frame(512))?;
    /// assert_eq!(consumer.max_frame(), 512);
    /// # Ok::<(), daemoneye_lib::ring::RingError>(())
    /// ```
    pub fn max_frame(&self) -> usize {
        self.max_frame as usize
    }

    /// Bytes released so far (frames, their headers, padding).
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// producer.try_write(b"12345678", 0)?;
    /// consumer.try_read(|_| ())?;
    /// assert_eq!(consumer.position(), producer.position());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn position(&self) -> u64 {
        self.head
    }

    /// Reports [`RingError::PeerGone`] from blocking calls once the process
    /// behind `pidfd` has exited and every frame it published has been read
    /// (checked whenever a park times out, and every 100 ms of busy
    /// spinning).
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// use daemoneye_lib::sys::pidfd::PidFd;
    ///
    /// let (_producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// // The producer's process; here this one, which stays alive.
    /// consumer.watch_peer(PidFd::open(std::process::id())?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watch_peer(&mut self, pidfd: PidFd) {
        self.peer = Some(pidfd);
    }

    /// Changes how blocking reads wait from now on (a reader that knows the
    /// next frame is far off may park at once instead of spinning).
    /// An invalid strategy (a zero park timeout) is refused and the current
    /// one kept.
    ///
    /// # Errors
    /// [`RingError::InvalidConfig`] for a zero park timeout.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// # use daemoneye_lib::ring::{self, RingConfig, RingError, WaitStrategy};
    ///
    /// let (_producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// consumer.set_wait(WaitStrategy::Park { timeout: Duration::from_millis(100) })?;
    /// let zero = consumer.set_wait(WaitStrategy::Park { timeout: Duration::ZERO });
    /// assert!(matches!(zero, Err(RingError::InvalidConfig { .. })));
    /// # Ok::<(), RingError>(())
    /// ```
    pub fn set_wait(&mut self, wait: WaitStrategy) -> Result<(), RingError> {
        wait.validate()?;
        self.wait = wait;
        Ok(())
    }

    /// A handle that closes this side from another thread.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// # use daemoneye_lib::ring::{self, RingConfig, RingError};
    ///
    /// let (_producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let closer = consumer.closer();
    /// std::thread::spawn(move || closer.close());
    /// // Nothing is ever published; the close ends the wait.
    /// let deadline = Instant::now() + Duration::from_secs(10);
    /// assert!(matches!(consumer.read(deadline, |_| ()), Err(RingError::Closed)));
    /// # Ok::<(), RingError>(())
    /// ```
    pub fn closer(&self) -> Closer {
        Closer::new(Arc::clone(self.reader.shared()))
    }

    /// Closes the ring: the producer's claims fail with `Closed`, and so do
    /// this consumer's reads.
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig, TryClaimError, TryReadError};
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// consumer.close();
    /// assert!(matches!(producer.try_write(b"x", 0), Err(TryClaimError::Closed)));
    /// assert!(matches!(consumer.try_read(|_| ()), Err(TryReadError::Closed)));
    /// # Ok::<(), daemoneye_lib::ring::RingError>(())
    /// ```
    pub fn close(&mut self) {
        close::close(self.shared());
    }

    /// Whether either side has closed the ring (frames published before the
    /// producer closed may still be readable).
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// producer.try_write(b"kept", 0)?;
    /// drop(producer);
    /// assert!(consumer.is_closed());
    /// assert_eq!(consumer.try_read(|frame| frame.bytes().to_vec())?, b"kept");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        // Relaxed: a status read; a read checks again.
        self.shared().own_closed().load(Ordering::Relaxed) != 0
            || self.shared().peer_closed().load(Ordering::Relaxed) != 0
    }

    /// Runs `f` on the next frame, if one is published, then releases it.
    ///
    /// # Errors
    /// [`TryReadError::Empty`] when nothing is published (try again, or
    /// [`read`](Self::read) with a deadline); `Closed` once the ring is
    /// closed and drained; `PeerGone` once the producer is known gone and
    /// its frames drained; `Corrupt` for a frame header or position the
    /// producer got wrong (`f` is not called).
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig, TryReadError};
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// assert!(matches!(consumer.try_read(|_| ()), Err(TryReadError::Empty)));
    /// producer.try_write(b"x", 0)?;
    /// assert_eq!(consumer.try_read(|frame| frame.len())?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn try_read<R>(&mut self, f: impl FnOnce(Frame<'_>) -> R) -> Result<R, TryReadError> {
        let frame = self.next_frame(true)?;
        let result = f(Frame::new(
            self.reader.bytes(frame.payload, frame.len),
            frame.flags,
        ));
        self.release(frame.next);
        Ok(result)
    }

    /// Runs `f` on the next frame, waiting until `deadline` for one, then
    /// releases it.
    ///
    /// # Errors
    /// [`RingError::TimedOut`] when nothing was published by `deadline`
    /// (the ring stays usable); `Closed`, `PeerGone` and `Corrupt` as for
    /// [`try_read`](Self::try_read).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// # use daemoneye_lib::ring::{self, RingConfig, RingError};
    ///
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let soon = Instant::now() + Duration::from_millis(10);
    /// assert!(matches!(consumer.read(soon, |_| ()), Err(RingError::TimedOut)));
    ///
    /// let writer = std::thread::spawn(move || producer.write(b"late", 0, Instant::now()));
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// assert_eq!(consumer.read(deadline, |frame| frame.bytes().to_vec())?, b"late");
    /// writer.join().expect("writer")?;
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn read<R>(
        &mut self,
        deadline: Instant,
        f: impl FnOnce(Frame<'_>) -> R,
    ) -> Result<R, RingError> {
        let frame = self.next_frame_blocking(deadline)?;
        let result = f(Frame::new(
            self.reader.bytes(frame.payload, frame.len),
            frame.flags,
        ));
        self.release(frame.next);
        Ok(result)
    }

    /// Runs `f` on each published frame, up to `max_frames`, then releases
    /// them all with one store of the position (and at most one wake-up;
    /// padding found alone before the first frame is released on its own).
    /// Returns how many frames `f` saw; `Empty` when there were none.
    ///
    /// Should the producer region turn out corrupt part-way, the frames
    /// already handed to `f` are released and the error is returned.
    ///
    /// # Errors
    /// As [`try_read`](Self::try_read), for the first frame; later in the
    /// batch only `Corrupt` (a batch covers at most one capacity of bytes).
    ///
    /// # Examples
    /// ```
    /// # use daemoneye_lib::ring::{self, RingConfig};
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// for i in 0..5u8 {
    ///     producer.try_write(&[i], 0)?;
    /// }
    /// let mut seen = Vec::new();
    /// assert_eq!(consumer.try_read_batch(3, |frame| seen.push(frame.bytes()[0]))?, 3);
    /// assert_eq!(consumer.try_read_batch(16, |frame| seen.push(frame.bytes()[0]))?, 2);
    /// assert_eq!(seen, [0, 1, 2, 3, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_read_batch(
        &mut self,
        max_frames: usize,
        f: impl FnMut(Frame<'_>),
    ) -> Result<usize, TryReadError> {
        if max_frames == 0 {
            return Ok(0);
        }
        let first = self.next_frame(true)?;
        self.batch_from(first, max_frames, f)
            .map_err(TryReadError::Corrupt)
    }

    /// Like [`try_read_batch`](Consumer::try_read_batch), but waits until
    /// `deadline` for the first frame.
    ///
    /// # Errors
    /// As [`read`](Self::read), for the first frame; later in the batch
    /// only `Corrupt`.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// # use daemoneye_lib::ring::{self, RingConfig};
    ///
    /// let (mut producer, mut consumer) = ring::pair(&RingConfig::new(64 << 10))?;
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// producer.write(b"a", 0, deadline)?;
    /// producer.write(b"b", 0, deadline)?;
    /// let mut bytes = Vec::new();
    /// consumer.read_batch(16, deadline, |frame| bytes.extend_from_slice(frame.bytes()))?;
    /// assert_eq!(bytes, b"ab");
    /// # Ok::<(), daemoneye_lib::ring::RingError>(())
    /// ```
    pub fn read_batch(
        &mut self,
        max_frames: usize,
        deadline: Instant,
        f: impl FnMut(Frame<'_>),
    ) -> Result<usize, RingError> {
        if max_frames == 0 {
            return Ok(0);
        }
        let first = self.next_frame_blocking(deadline)?;
        self.batch_from(first, max_frames, f)
            .map_err(RingError::Corrupt)
    }

    /// Hands `first` and up to `max_frames - 1` more published frames to
    /// `f`, then releases them all.
    ///
    /// A batch spans at most one capacity: nothing is released until it
    /// ends, so an honest producer cannot have published a frame ending
    /// further than that past the start. A frame that does is a
    /// [`CorruptKind::ProducerOverrun`], which also bounds the batch against
    /// a producer that keeps every header word valid (the walk would
    /// otherwise go round the ring replaying old frames for ever).
    fn batch_from(
        &mut self,
        first: Peeked,
        max_frames: usize,
        mut f: impl FnMut(Frame<'_>),
    ) -> Result<usize, CorruptKind> {
        let start = self.head;
        let mut frame = first;
        let mut count = 0;
        // Where to release to: past the last frame, and past padding after
        // it (so the producer gets that room back too).
        let mut end;
        let result = loop {
            f(Frame::new(
                self.reader.bytes(frame.payload, frame.len),
                frame.flags,
            ));
            count += 1;
            end = frame.next;
            if count == max_frames {
                break Ok(count);
            }
            match self.peek(frame.next) {
                // Positions stay below 2^63 plus a few capacities: no
                // overflow.
                Ok(Peek::Frame(next)) if next.next - start > self.capacity => {
                    break Err(CorruptKind::ProducerOverrun {
                        producer: next.next,
                        consumer: start,
                        capacity: self.capacity,
                    });
                }
                Ok(Peek::Frame(next)) => frame = next,
                Ok(Peek::Empty(at)) => {
                    end = at;
                    break Ok(count);
                }
                Err(err) => break Err(err),
            }
        };
        self.release(end);
        result
    }

    /// The next published frame, or why there is none. With `audit`, an
    /// empty ring also has its producer position checked (see
    /// [`audit`](Consumer::audit)): `try_*` reads do so, blocking reads only
    /// before each park, not on every spin.
    #[inline]
    fn next_frame(&mut self, audit: bool) -> Result<Peeked, TryReadError> {
        // Relaxed: closing publishes nothing this side needs.
        if self.shared().own_closed().load(Ordering::Relaxed) != 0 {
            return Err(TryReadError::Closed);
        }
        match self.peek(self.head)? {
            Peek::Frame(frame) => return Ok(frame),
            // Padding with nothing after it yet: released at once, so the
            // producer gets the room back and the position says where the
            // next frame will be.
            Peek::Empty(at) if at != self.head => self.release(at),
            Peek::Empty(_) => {}
        }
        if audit {
            self.audit()?;
        }
        // Acquire: pairs with the producer's Release store of its closed
        // flag, so every header word it stored before closing is visible to
        // the peek below, which reads it again.
        if self.shared().peer_closed().load(Ordering::Acquire) != 0 {
            return match self.peek(self.head)? {
                Peek::Frame(frame) => Ok(frame),
                Peek::Empty(_) => Err(TryReadError::Closed),
            };
        }
        // Acquire: pairs with the Release store in `mark_peer_gone`; the peek
        // below reads the header word again after seeing the mark, so what
        // the peer published before it went is still read.
        if self.shared().peer_gone().load(Ordering::Acquire) {
            return match self.peek(self.head)? {
                Peek::Frame(frame) => Ok(frame),
                Peek::Empty(_) => Err(TryReadError::PeerGone),
            };
        }
        Err(TryReadError::Empty)
    }

    /// `next_frame`, inlined for the common case of a frame at once;
    /// waiting is out of line.
    #[inline]
    fn next_frame_blocking(&mut self, deadline: Instant) -> Result<Peeked, RingError> {
        match self.next_frame(false) {
            Ok(frame) => Ok(frame),
            Err(TryReadError::Empty) => self.wait_for_frame(deadline),
            Err(err) => Err(blocking_error(err)),
        }
    }

    #[cold]
    fn wait_for_frame(&mut self, deadline: Instant) -> Result<Peeked, RingError> {
        // Hold the shared memory through its own handle so the poll closure
        // may borrow `self` mutably.
        let shared = Arc::clone(self.reader.shared());
        let (strategy, peer) = (self.wait, self.peer.take());
        let result = wait::block(
            strategy,
            deadline,
            &shared.consumer_lines().consumer_wait,
            peer.as_ref(),
            |thorough| match self.next_frame(thorough) {
                Ok(frame) => Some(Ok(frame)),
                Err(TryReadError::Empty) => None,
                Err(err) => Some(Err(blocking_error(err))),
            },
        );
        self.peer = peer;
        result
    }

    /// The data frame at position `at` (skipping one padding frame), if its
    /// header word is published. Checks the copy of the header word against
    /// the largest frame and the end of the data area before any use.
    #[inline]
    fn peek(&self, mut at: u64) -> Result<Peek, CorruptKind> {
        loop {
            let offset = at & self.mask;
            // Acquire: pairs with the producer's Release store of this word,
            // made after the frame's payload and the empty word past it: the
            // payload is complete, and the next word reads empty or newer.
            // One load, then only the copy is used.
            let word = self
                .reader
                .frame_word(offset as usize)
                .load(Ordering::Acquire);
            if word == FRAME_EMPTY {
                return Ok(Peek::Empty(at));
            }
            let header = FrameHeader::decode(word)?;
            let len = u64::from(header.len);
            let to_end = self.capacity - offset;
            match header.kind {
                FrameKind::Padding => {
                    // The producer pads only from a non-zero offset, exactly
                    // to the end; so at most one padding frame is skipped.
                    if offset == 0 || len + FRAME_HEADER_LEN as u64 != to_end {
                        return Err(CorruptKind::BadPadding { position: at, len });
                    }
                    at += to_end;
                }
                FrameKind::Data => {
                    if len > self.max_frame {
                        return Err(CorruptKind::FrameTooLong {
                            position: at,
                            len,
                            max: self.max_frame,
                        });
                    }
                    // len <= max_frame < capacity / 2: no overflow.
                    let size = frame_size(len as usize) as u64;
                    if size > to_end {
                        return Err(CorruptKind::FrameCrossesEnd { position: at, size });
                    }
                    return Ok(Peek::Frame(Peeked {
                        payload: offset as usize + FRAME_HEADER_LEN,
                        len: len as usize,
                        flags: header.flags,
                        next: at + size,
                    }));
                }
            }
        }
    }

    /// Re-reads the producer position and checks it against what this
    /// consumer has seen: aligned; not moved backwards; at most one capacity
    /// past the released position (the producer may not overwrite what this
    /// consumer has not released); and not past an empty header word, since
    /// the producer stores each header word before the position covering
    /// it. (It may lag the header words just read: that is a race, not a
    /// lie.)
    fn audit(&mut self) -> Result<(), CorruptKind> {
        let tail = self.check_tail()?;
        if let Peek::Empty(at) = self.peek(self.head)? {
            if tail > at {
                return Err(CorruptKind::FrameUnpublished {
                    position: at,
                    published: tail,
                });
            }
        }
        Ok(())
    }

    /// The position checks of [`audit`](Consumer::audit); returns the
    /// producer position.
    fn check_tail(&mut self) -> Result<u64, CorruptKind> {
        // Acquire: pairs with the producer's Release store of its position,
        // so every header word it covers is visible to the peek below.
        let tail = self
            .shared()
            .producer_lines()
            .position
            .load(Ordering::Acquire);
        if tail % FRAME_ALIGN as u64 != 0 {
            return Err(CorruptKind::PositionMisaligned {
                position: Position::Producer,
                value: tail,
            });
        }
        if tail < self.cached_tail {
            return Err(CorruptKind::PositionBackwards {
                position: Position::Producer,
                was: self.cached_tail,
                now: tail,
            });
        }
        if tail > self.head && tail - self.head > self.capacity {
            return Err(CorruptKind::ProducerOverrun {
                producer: tail,
                consumer: self.head,
                capacity: self.capacity,
            });
        }
        self.cached_tail = tail;
        Ok(tail)
    }

    /// Releases everything below `next` to the producer.
    #[inline]
    fn release(&mut self, next: u64) {
        self.head = next;
        // Release: this consumer's reads of the released frames happen
        // before the producer's Acquire load that lets it overwrite them.
        self.shared()
            .consumer_lines()
            .position
            .store(next, Ordering::Release);
        wait::notify(&self.shared().consumer_lines().producer_wait);
    }
}

/// A blocking call's error for a `try_read` error other than `Empty`.
fn blocking_error(err: TryReadError) -> RingError {
    match err {
        TryReadError::Empty => RingError::TimedOut,
        TryReadError::Closed => RingError::Closed,
        TryReadError::PeerGone => RingError::PeerGone,
        TryReadError::Corrupt(kind) => RingError::Corrupt(kind),
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        close::close(self.shared());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::layout::MIN_CAPACITY;
    use crate::ring::{Producer, RingConfig, pair};
    use std::time::Duration;

    fn ring(max_frame: usize) -> (Producer, Consumer) {
        pair(&RingConfig::new(MIN_CAPACITY).with_max_frame(max_frame)).unwrap()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn set_wait_refuses_a_zero_park_timeout_and_parked_reads_get_frames() {
        let (mut producer, mut consumer) = ring(100);
        let zero = WaitStrategy::Park {
            timeout: Duration::ZERO,
        };
        assert!(matches!(
            consumer.set_wait(zero),
            Err(RingError::InvalidConfig { .. })
        ));
        assert_eq!(consumer.wait, WaitStrategy::default());
        let park = WaitStrategy::Park {
            timeout: Duration::from_secs(5),
        };
        consumer.set_wait(park).unwrap();
        assert_eq!(consumer.wait, park);
        // Written from another thread, before or while the reader parks.
        let writer = std::thread::spawn(move || {
            producer.try_write(b"late", 7).unwrap();
            producer
        });
        let got = consumer.read(soon(), |f| (f.bytes().to_vec(), f.flags()));
        assert_eq!(got.unwrap(), (b"late".to_vec(), 7));
        drop(writer.join().unwrap());
    }

    #[test]
    fn empty_then_one_frame() {
        let (mut producer, mut consumer) = ring(100);
        assert!(matches!(
            consumer.try_read(|_| ()),
            Err(TryReadError::Empty)
        ));
        producer.try_write(b"hello", 0x0102).unwrap();
        let (bytes, flags) = consumer
            .try_read(|f| (f.bytes().to_vec(), f.flags()))
            .unwrap();
        assert_eq!(bytes, b"hello");
        assert_eq!(flags, 0x0102);
        assert_eq!(consumer.position(), producer.position());
        assert!(matches!(
            consumer.try_read(|_| ()),
            Err(TryReadError::Empty)
        ));
    }

    #[test]
    fn a_frame_of_the_largest_size_is_read() {
        let (mut producer, mut consumer) = ring(100);
        producer.try_write(&[9; 100], 0).unwrap();
        assert_eq!(consumer.try_read(|f| f.bytes().to_vec()).unwrap(), [9; 100]);
    }

    #[test]
    fn a_frame_ending_exactly_at_the_end_of_the_data_area_is_read() {
        // 1024-byte frames (header included) divide the ring: every 64th
        // ends exactly at the end, with no padding after it.
        let (mut producer, mut consumer) = ring(1016);
        for round in 0..2 * MIN_CAPACITY / 1024 {
            producer.try_write(&[round as u8; 1016], 0).unwrap();
            let got = consumer.try_read(|f| f.bytes() == [round as u8; 1016]);
            assert!(got.unwrap(), "frame {round} changed");
        }
        assert_eq!(consumer.position(), 2 * MIN_CAPACITY as u64);
    }

    #[test]
    fn shortened_claim_delivers_only_what_was_committed() {
        let (mut producer, mut consumer) = ring(100);
        let mut claim = producer.try_claim(100).unwrap();
        claim[..3].copy_from_slice(b"abc");
        claim.commit(3);
        assert_eq!(consumer.try_read(|f| f.bytes().to_vec()).unwrap(), b"abc");
    }

    #[test]
    fn frames_wrap_with_padding() {
        let (mut producer, mut consumer) = ring(5000);
        // 4999-byte frames take 5008 bytes: 13 of them leave 432 bytes
        // before the end, so the 14th goes after a padding frame.
        for round in 0..100u32 {
            let payload = vec![round as u8; 4999];
            producer.try_write(&payload, round as u16).unwrap();
            let seen = consumer
                .try_read(|f| (f.bytes() == payload, f.flags()))
                .unwrap();
            assert_eq!(seen, (true, round as u16));
        }
        assert!(producer.position() > 7 * MIN_CAPACITY as u64);
    }

    #[test]
    fn padding_alone_is_skipped_and_released() {
        let (mut producer, mut consumer) = ring(5000);
        // 13 frames of 5008 bytes leave 432 before the end; a claim that
        // does not fit there publishes padding at once, then is abandoned.
        for _ in 0..13 {
            producer.try_write(&[1; 4999], 0).unwrap();
            consumer.try_read(|_| ()).unwrap();
        }
        drop(producer.try_claim(4999).unwrap());
        assert_eq!(producer.position(), MIN_CAPACITY as u64);
        assert!(matches!(
            consumer.try_read(|_| ()),
            Err(TryReadError::Empty)
        ));
        assert_eq!(consumer.position(), MIN_CAPACITY as u64);
        // The next frame goes at offset 0, behind an empty word the padding
        // published first: the first lap's header there is never read.
        producer.try_write(b"next", 3).unwrap();
        let got = consumer.try_read(|f| (f.bytes().to_vec(), f.flags()));
        assert_eq!(got.unwrap(), (b"next".to_vec(), 3));
        assert!(matches!(
            consumer.try_read(|_| ()),
            Err(TryReadError::Empty)
        ));
    }

    #[test]
    fn batch_reads_release_once() {
        let (mut producer, mut consumer) = ring(100);
        for i in 0..10u8 {
            producer.try_write(&[i; 10], 0).unwrap();
        }
        let mut seen = Vec::new();
        assert_eq!(
            consumer
                .try_read_batch(4, |f| seen.push(f.bytes()[0]))
                .unwrap(),
            4
        );
        assert_eq!(consumer.position(), 4 * 24);
        assert_eq!(
            consumer
                .read_batch(100, soon(), |f| seen.push(f.bytes()[0]))
                .unwrap(),
            6
        );
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(matches!(
            consumer.try_read_batch(4, |_| ()),
            Err(TryReadError::Empty)
        ));
        assert_eq!(consumer.try_read_batch(0, |_| ()).unwrap(), 0);
    }

    #[test]
    fn producer_close_drains_then_closes() {
        let (mut producer, mut consumer) = ring(100);
        producer.try_write(b"last", 0).unwrap();
        drop(producer);
        assert_eq!(
            consumer.read(soon(), |f| f.bytes().to_vec()).unwrap(),
            b"last"
        );
        assert!(matches!(
            consumer.try_read(|_| ()),
            Err(TryReadError::Closed)
        ));
        assert!(matches!(
            consumer.read(soon(), |_| ()),
            Err(RingError::Closed)
        ));
    }

    #[test]
    fn reports_the_capacity_and_largest_frame_of_the_ring() {
        let config = RingConfig::new(1 << 20).with_max_frame(512);
        let (_producer, consumer) = pair(&config).unwrap();
        assert_eq!((consumer.capacity(), consumer.max_frame()), (1 << 20, 512));
    }

    #[test]
    fn a_dropped_producer_closes_the_ring_for_the_consumer() {
        let (producer, consumer) = ring(100);
        assert!(!consumer.is_closed());
        drop(producer);
        assert!(consumer.is_closed());
    }

    #[test]
    fn own_close_ends_reads() {
        let (mut producer, mut consumer) = ring(100);
        producer.try_write(b"x", 0).unwrap();
        assert!(!consumer.is_closed());
        consumer.close();
        assert!(consumer.is_closed());
        assert!(matches!(
            consumer.try_read(|_| ()),
            Err(TryReadError::Closed)
        ));
        assert!(matches!(
            producer.try_claim(1),
            Err(crate::ring::TryClaimError::Closed)
        ));
    }

    #[test]
    fn read_times_out_when_empty() {
        let (_producer, mut consumer) = ring(100);
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            consumer.read(deadline, |_| ()),
            Err(RingError::TimedOut)
        ));
    }
}
