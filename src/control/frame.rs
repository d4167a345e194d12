//! Length-delimited protobuf frames on a Unix stream socket.
//!
//! A frame is a 4-byte little-endian payload length, then the payload (one
//! encoded protobuf message), at most [`MAX_FRAME_BYTES`]. The length is
//! checked before anything is allocated for the payload. A frame may carry
//! file descriptors (`SCM_RIGHTS`): they ride on its first bytes and belong to
//! that frame; a reader never reads past the end of the frame it is reading,
//! so descriptors cannot slip into the wrong frame.
//!
//! Reads and writes take an optional deadline for the frame to begin. Once a
//! frame has begun, its remaining bytes have [`FRAME_COMPLETION_TIMEOUT`],
//! whatever the caller's deadline: a peer that stalls mid-frame cannot hold a
//! reader forever even when it waits without a deadline, and a short polling
//! deadline does not cut a healthy peer off in the middle of a frame.
//!
//! A write that fails after part of a frame was sent shuts the stream down in
//! both directions: a half frame followed by the next one would be read as
//! garbage, so the peer sees the end of the stream instead.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use prost::Message;

use super::error::ControlError;
use crate::sys::socket::{FdsTruncated, recv_with_fds, send_with_fds};

/// The hard cap on a control frame's payload: 64 KiB, defined with the task
/// limits it must hold
/// ([`MAX_CONTROL_FRAME_BYTES`](crate::proto::limits::MAX_CONTROL_FRAME_BYTES)).
pub const MAX_FRAME_BYTES: usize = crate::proto::limits::MAX_CONTROL_FRAME_BYTES;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The most file descriptors one frame may carry.
pub const MAX_FDS_PER_FRAME: usize = 16;

/// How long the rest of a frame may take once its first byte has arrived.
pub const FRAME_COMPLETION_TIMEOUT: Duration = Duration::from_secs(5);

/// One frame as read: its payload and the descriptors that came with it.
#[derive(Debug)]
pub struct Frame {
    /// The payload, without the length prefix.
    pub payload: Vec<u8>,
    /// Descriptors received with the frame, close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// Encodes `message` and writes it as one frame, `fds` attached to its first
/// byte.
///
/// A message that encodes to more than [`MAX_FRAME_BYTES`] is refused with
/// [`ControlError::FrameTooLarge`] before anything is sent.
pub fn write_message<M: Message>(
    stream: &UnixStream,
    message: &M,
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> Result<(), ControlError> {
    let len = message.encoded_len();
    if len > MAX_FRAME_BYTES {
        return Err(ControlError::FrameTooLarge {
            len: len as u64,
            max: MAX_FRAME_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(LENGTH_PREFIX_BYTES + len);
    bytes.extend_from_slice(&(len as u32).to_le_bytes());
    message.encode(&mut bytes).map_err(|e| ControlError::Io {
        context: "encoding a control frame",
        source: io::Error::other(e),
    })?;
    write_all(stream, &bytes, fds, deadline)
}

/// Writes `payload` as one frame, `fds` attached to its first byte.
pub fn write_frame(
    stream: &UnixStream,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> Result<(), ControlError> {
    if payload.len() > MAX_FRAME_BYTES {
        return Err(ControlError::FrameTooLarge {
            len: payload.len() as u64,
            max: MAX_FRAME_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(LENGTH_PREFIX_BYTES + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    write_all(stream, &bytes, fds, deadline)
}

/// Sends all of `bytes` (prefix and payload), the descriptors with the first
/// chunk. `deadline` bounds the wait for the first byte to go; after it, the
/// rest has [`FRAME_COMPLETION_TIMEOUT`]. A failure after the first byte
/// shuts the stream down.
fn write_all(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> Result<(), ControlError> {
    const SENDING: &str = "sending a control frame";
    const WAITING: &str = "the peer to take a control frame";
    let mut deadline = deadline;
    let mut sent = 0;
    let result = loop {
        if sent == bytes.len() {
            break Ok(());
        }
        let timeout = match remaining(deadline, WAITING) {
            Ok(timeout) => timeout,
            Err(e) => break Err(e),
        };
        if let Err(e) = stream.set_write_timeout(timeout) {
            break Err(ControlError::Io {
                context: "setting the send timeout",
                source: e,
            });
        }
        let fds_now = if sent == 0 { fds } else { &[] };
        match send_with_fds(stream, &bytes[sent..], fds_now) {
            Ok(0) => break Err(ControlError::PeerGone),
            Ok(n) => {
                if sent == 0 {
                    deadline = Some(Instant::now() + FRAME_COMPLETION_TIMEOUT);
                }
                sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(ControlError::from_io(SENDING, WAITING, e)),
        }
    };
    if result.is_err() && sent > 0 {
        // Best effort: the stream is unusable either way.
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    result
}

/// Reads one frame and decodes it as `M`, accepting up to `max_fds`
/// descriptors with it.
///
/// `waiting_for` names the frame in a [`ControlError::Timeout`].
pub fn read_message<M: Message + Default>(
    stream: &UnixStream,
    max_fds: usize,
    deadline: Option<Instant>,
    waiting_for: &'static str,
) -> Result<(M, Vec<OwnedFd>), ControlError> {
    let frame = read_frame(stream, max_fds, deadline, waiting_for)?;
    let message =
        M::decode(frame.payload.as_slice()).map_err(|source| ControlError::Malformed {
            message: short_type_name::<M>(),
            source,
        })?;
    Ok((message, frame.fds))
}

/// Reads one frame, accepting up to `max_fds` descriptors with it.
///
/// End of stream before the first byte is [`ControlError::PeerGone`]; after
/// it, [`ControlError::Truncated`]. A length beyond [`MAX_FRAME_BYTES`] is
/// [`ControlError::FrameTooLarge`], reported without reading or allocating the
/// payload (the stream is then out of step and should be closed).
pub fn read_frame(
    stream: &UnixStream,
    max_fds: usize,
    deadline: Option<Instant>,
    waiting_for: &'static str,
) -> Result<Frame, ControlError> {
    let max_fds = max_fds.min(MAX_FDS_PER_FRAME);
    let mut reader = FrameReader {
        stream,
        max_fds,
        fds: Vec::new(),
        deadline,
        waiting_for,
        expected: LENGTH_PREFIX_BYTES,
        got: 0,
    };

    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let got = reader.fill(&mut prefix)?;
    if got < LENGTH_PREFIX_BYTES {
        return Err(if got == 0 {
            ControlError::PeerGone
        } else {
            ControlError::Truncated {
                expected: LENGTH_PREFIX_BYTES,
                got,
            }
        });
    }
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(ControlError::FrameTooLarge {
            len: len as u64,
            max: MAX_FRAME_BYTES,
        });
    }

    reader.expected = LENGTH_PREFIX_BYTES + len;
    let mut payload = vec![0u8; len];
    let got = reader.fill(&mut payload)?;
    if got < len {
        return Err(ControlError::Truncated {
            expected: LENGTH_PREFIX_BYTES + len,
            got: LENGTH_PREFIX_BYTES + got,
        });
    }
    Ok(Frame {
        payload,
        fds: reader.fds,
    })
}

/// Reading state for one frame: descriptors gathered so far and the deadline,
/// which becomes [`FRAME_COMPLETION_TIMEOUT`] from the first byte once the
/// frame has begun.
struct FrameReader<'s> {
    stream: &'s UnixStream,
    max_fds: usize,
    fds: Vec<OwnedFd>,
    deadline: Option<Instant>,
    waiting_for: &'static str,
    /// Bytes of the frame (prefix included) known to be due so far.
    expected: usize,
    /// Bytes of the frame received so far.
    got: usize,
}

impl FrameReader<'_> {
    /// Fills `buf` unless the stream ends first; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ControlError> {
        const RECEIVING: &str = "receiving a control frame";
        let mut got = 0;
        while got < buf.len() {
            let timeout =
                remaining(self.deadline, self.waiting_for).map_err(|e| self.stalled_or(e))?;
            self.stream
                .set_read_timeout(timeout)
                .map_err(|e| ControlError::Io {
                    context: "setting the receive timeout",
                    source: e,
                })?;
            let room = self.max_fds - self.fds.len();
            match recv_with_fds(self.stream, &mut buf[got..], room) {
                Ok((0, _)) => break,
                Ok((n, fds)) => {
                    if self.got == 0 {
                        // The caller's deadline was for the frame to begin.
                        self.deadline = Some(Instant::now() + FRAME_COMPLETION_TIMEOUT);
                    }
                    got += n;
                    self.got += n;
                    self.fds.extend(fds);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.get_ref().is_some_and(|inner| inner.is::<FdsTruncated>()) {
                        return Err(ControlError::TooManyFds { max: self.max_fds });
                    }
                    return Err(self.stalled_or(ControlError::from_io(
                        RECEIVING,
                        self.waiting_for,
                        e,
                    )));
                }
            }
        }
        Ok(got)
    }

    /// A timeout once the frame has begun means the peer stalled mid-frame.
    fn stalled_or(&self, err: ControlError) -> ControlError {
        match err {
            ControlError::Timeout { .. } if self.got > 0 => ControlError::Stalled {
                expected: self.expected,
                got: self.got,
            },
            other => other,
        }
    }
}

/// The time left before `deadline` as a socket timeout (`None`: no bound),
/// or [`ControlError::Timeout`] when it has passed.
fn remaining(
    deadline: Option<Instant>,
    waiting_for: &'static str,
) -> Result<Option<Duration>, ControlError> {
    match deadline {
        None => Ok(None),
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                Err(ControlError::Timeout { waiting_for })
            } else {
                Ok(Some(left))
            }
        }
    }
}

/// `daemoneye_lib::proto::control::ClientFrame` → `ClientFrame`.
fn short_type_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::control::{ClientFrame, Goodbye, client_frame::Body};
    use std::io::Write;
    use std::os::fd::AsFd;

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(5))
    }

    fn goodbye(reason: &str) -> ClientFrame {
        ClientFrame {
            body: Some(Body::Goodbye(Goodbye {
                reason: reason.into(),
            })),
        }
    }

    #[test]
    fn a_message_round_trips() {
        let (a, b) = UnixStream::pair().unwrap();
        write_message(&a, &goodbye("done"), &[], soon()).unwrap();
        let (got, fds) = read_message::<ClientFrame>(&b, 0, soon(), "a frame").unwrap();
        assert_eq!(got, goodbye("done"));
        assert!(fds.is_empty());
    }

    #[test]
    fn frames_keep_their_own_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        write_frame(&a, b"first", &[], soon()).unwrap();
        write_frame(&a, b"second", &[r.as_fd()], soon()).unwrap();
        write_frame(&a, b"third", &[], soon()).unwrap();
        let first = read_frame(&b, 4, soon(), "first").unwrap();
        let second = read_frame(&b, 4, soon(), "second").unwrap();
        let third = read_frame(&b, 4, soon(), "third").unwrap();
        assert_eq!(
            (first.payload.as_slice(), first.fds.len()),
            (&b"first"[..], 0)
        );
        assert_eq!(
            (second.payload.as_slice(), second.fds.len()),
            (&b"second"[..], 1)
        );
        assert_eq!(
            (third.payload.as_slice(), third.fds.len()),
            (&b"third"[..], 0)
        );
    }

    #[test]
    fn an_empty_payload_is_a_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        write_frame(&a, b"", &[], soon()).unwrap();
        assert!(
            read_frame(&b, 0, soon(), "a frame")
                .unwrap()
                .payload
                .is_empty()
        );
    }

    #[test]
    fn a_huge_length_prefix_is_refused_before_allocating() {
        let (mut a, b) = UnixStream::pair().unwrap();
        // Claims 2 GiB; a reader that allocated first would try to.
        a.write_all(&0x8000_0000u32.to_le_bytes()).unwrap();
        let err = read_frame(&b, 0, soon(), "a frame").unwrap_err();
        assert!(
            matches!(
                err,
                ControlError::FrameTooLarge {
                    len: 0x8000_0000,
                    max: MAX_FRAME_BYTES
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("2147483648"), "{err}");
    }

    #[test]
    fn the_cap_itself_is_allowed_and_one_more_is_not() {
        let (a, b) = UnixStream::pair().unwrap();
        let big = vec![7u8; MAX_FRAME_BYTES];
        let writer = std::thread::spawn(move || write_frame(&a, &big, &[], soon()).map(|()| a));
        assert_eq!(
            read_frame(&b, 0, soon(), "a frame").unwrap().payload.len(),
            MAX_FRAME_BYTES
        );
        let a = writer.join().unwrap().unwrap();
        let err = write_frame(&a, &vec![0u8; MAX_FRAME_BYTES + 1], &[], soon()).unwrap_err();
        assert!(
            matches!(err, ControlError::FrameTooLarge { len, .. } if len == MAX_FRAME_BYTES as u64 + 1)
        );
    }

    #[test]
    fn a_message_at_the_cap_is_sent_and_one_byte_more_is_refused_unsent() {
        // A goodbye whose reason makes the whole message encode to exactly
        // the cap (the length varints are 3 bytes for all sizes near it).
        let probe = MAX_FRAME_BYTES - 16;
        let overhead = goodbye(&"x".repeat(probe)).encoded_len() - probe;
        let at_cap = goodbye(&"x".repeat(MAX_FRAME_BYTES - overhead));
        let over = goodbye(&"x".repeat(MAX_FRAME_BYTES - overhead + 1));
        assert_eq!(at_cap.encoded_len(), MAX_FRAME_BYTES);

        let (a, b) = UnixStream::pair().unwrap();
        let sent = at_cap.clone();
        let writer = std::thread::spawn(move || write_message(&a, &sent, &[], soon()).map(|()| a));
        let (got, _) = read_message::<ClientFrame>(&b, 0, soon(), "a frame").unwrap();
        assert_eq!(got, at_cap);
        let a = writer.join().unwrap().unwrap();

        let err = write_message(&a, &over, &[], soon()).unwrap_err();
        assert!(
            matches!(err, ControlError::FrameTooLarge { len, max: MAX_FRAME_BYTES } if len == MAX_FRAME_BYTES as u64 + 1),
            "{err}"
        );
        // Nothing of it went out: the next frame is the next thing read.
        write_message(&a, &goodbye("next"), &[], soon()).unwrap();
        let (got, _) = read_message::<ClientFrame>(&b, 0, soon(), "a frame").unwrap();
        assert_eq!(got, goodbye("next"));
    }

    #[test]
    fn garbage_is_malformed() {
        let (a, b) = UnixStream::pair().unwrap();
        write_frame(&a, &[0xff; 12], &[], soon()).unwrap();
        let err = read_message::<ClientFrame>(&b, 0, soon(), "a frame").unwrap_err();
        assert!(
            matches!(
                err,
                ControlError::Malformed {
                    message: "ClientFrame",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn eof_at_a_boundary_is_peer_gone() {
        let (a, b) = UnixStream::pair().unwrap();
        write_frame(&a, b"last", &[], soon()).unwrap();
        drop(a);
        read_frame(&b, 0, soon(), "a frame").unwrap();
        assert!(matches!(
            read_frame(&b, 0, soon(), "a frame"),
            Err(ControlError::PeerGone)
        ));
    }

    #[test]
    fn eof_inside_a_frame_is_truncated() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&10u32.to_le_bytes()).unwrap();
        a.write_all(b"abc").unwrap();
        drop(a);
        let err = read_frame(&b, 0, soon(), "a frame").unwrap_err();
        assert!(
            matches!(
                err,
                ControlError::Truncated {
                    expected: 14,
                    got: 7
                }
            ),
            "{err}"
        );

        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[1, 0]).unwrap();
        drop(a);
        let err = read_frame(&b, 0, soon(), "a frame").unwrap_err();
        assert!(
            matches!(
                err,
                ControlError::Truncated {
                    expected: 4,
                    got: 2
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn silence_times_out_at_the_deadline() {
        let (a, b) = UnixStream::pair().unwrap();
        let deadline = Instant::now() + Duration::from_millis(30);
        // Read in another thread, so that a reader ignoring its deadline
        // fails this test instead of hanging it (unwinding drops `a`, and the
        // reader sees the end of the stream).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(read_frame(&b, 0, Some(deadline), "the test frame")));
        let err = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the read outlived its deadline by 10 s")
            .unwrap_err();
        drop(a);
        assert!(
            matches!(
                err,
                ControlError::Timeout {
                    waiting_for: "the test frame"
                }
            ),
            "{err}"
        );
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn a_peer_stalling_mid_frame_is_reported_as_such() {
        // Reported after FRAME_COMPLETION_TIMEOUT, not the short deadline.
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&8u32.to_le_bytes()).unwrap();
        a.write_all(b"abc").unwrap();
        let err = read_frame(
            &b,
            0,
            Some(Instant::now() + Duration::from_millis(30)),
            "a frame",
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ControlError::Stalled {
                    expected: 12,
                    got: 7
                }
            ),
            "{err}"
        );
    }

    /// A sending end whose buffer holds only a few KiB, so a 64 KiB frame
    /// waits for the reader.
    fn narrow_pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        nix::sys::socket::setsockopt(&a, nix::sys::socket::sockopt::SndBuf, &4096).unwrap();
        (a, b)
    }

    /// Writes `first` at once and `rest` 150 ms later, after the reader's
    /// 30 ms deadline, and reads one frame with that deadline.
    fn read_with_late_rest(first: &[u8], rest: &'static [u8]) -> Vec<u8> {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(first).unwrap();
        let deadline = Instant::now() + Duration::from_millis(30);
        let writer = std::thread::spawn(move || {
            // The rest comes after the reader's own deadline: only the clock
            // can be waited for.
            std::thread::sleep(Duration::from_millis(150));
            a.write_all(rest).map(|()| a)
        });
        let frame = read_frame(&b, 0, Some(deadline), "a frame").unwrap();
        let _a = writer.join().unwrap().unwrap();
        frame.payload
    }

    #[test]
    fn a_short_deadline_does_not_cut_a_frame_in_progress() {
        let first = [&8u32.to_le_bytes()[..], b"abc"].concat();
        assert_eq!(read_with_late_rest(&first, b"defgh"), b"abcdefgh");
        // The same when only the length prefix came before the deadline:
        // the frame began with it.
        assert_eq!(read_with_late_rest(&3u32.to_le_bytes(), b"xyz"), b"xyz");

        // The same for a sender whose deadline passes while the reader is slow.
        let (a, b) = narrow_pair();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            read_frame(&b, 0, soon(), "a frame").map(|f| f.payload.len())
        });
        let short = Some(Instant::now() + Duration::from_millis(30));
        write_frame(&a, &vec![1u8; MAX_FRAME_BYTES], &[], short).unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), MAX_FRAME_BYTES);
    }

    #[test]
    fn a_write_failing_mid_frame_shuts_the_stream_down() {
        let (a, b) = narrow_pair();
        // Nobody reads: the frame starts, then cannot complete.
        let err = write_frame(&a, &vec![1u8; MAX_FRAME_BYTES], &[], soon()).unwrap_err();
        assert!(matches!(err, ControlError::Timeout { .. }), "{err}");
        // No half frame followed by a new one: the stream is closed at once
        // (the reader sees its end, not a stall), and stays closed.
        let err = read_frame(&b, 0, soon(), "a frame").unwrap_err();
        assert!(
            matches!(err, ControlError::Truncated { expected, got } if expected == MAX_FRAME_BYTES + 4 && got < expected),
            "{err}"
        );
        assert!(matches!(
            write_frame(&a, b"next", &[], soon()),
            Err(ControlError::PeerGone)
        ));
    }

    #[test]
    fn a_write_timing_out_before_its_first_byte_leaves_the_stream_usable() {
        let (a, b) = UnixStream::pair().unwrap();
        let err = write_frame(&a, b"late", &[], Some(Instant::now())).unwrap_err();
        assert!(matches!(err, ControlError::Timeout { .. }), "{err}");
        write_frame(&a, b"next", &[], soon()).unwrap();
        assert_eq!(
            read_frame(&b, 0, soon(), "a frame").unwrap().payload,
            b"next"
        );
    }

    #[test]
    fn descriptors_beyond_the_limit_are_refused_when_they_come_in_pieces() {
        // A hostile peer sends one descriptor with the length prefix and
        // another with the payload: two, where one is accepted.
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        assert_eq!(
            send_with_fds(&a, &2u32.to_le_bytes(), &[r.as_fd()]).unwrap(),
            4
        );
        assert_eq!(send_with_fds(&a, b"hi", &[w.as_fd()]).unwrap(), 2);
        let err = read_frame(&b, 1, soon(), "a frame").unwrap_err();
        assert!(matches!(err, ControlError::TooManyFds { max: 1 }), "{err}");
    }

    #[test]
    fn descriptors_where_none_are_expected_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        write_frame(&a, b"x", &[r.as_fd()], soon()).unwrap();
        let err = read_frame(&b, 0, soon(), "a frame").unwrap_err();
        assert!(matches!(err, ControlError::TooManyFds { max: 0 }), "{err}");
    }

    #[test]
    fn writing_to_a_closed_peer_is_peer_gone() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        assert!(matches!(
            write_frame(&a, b"x", &[], soon()),
            Err(ControlError::PeerGone)
        ));
    }
}
