//! Text checked once: where a string field's bytes are in a buffer, noted
//! only after they were found to be UTF-8, and read back as `&str` without
//! a second check.
//!
//! The views note each string as a [`TextSpan`] while they check a frame;
//! handing the strings out then costs a slice, not another UTF-8 pass
//! (which took about a quarter of the agent's time per record).
//!
//! Why that is sound, here and nowhere else: the text is read back
//! unchecked only from a [`CheckedFrame`], a private buffer that owns its
//! bytes (the agent's copy of each frame), and only by a span checked in
//! those very bytes. Every span carries the id of the buffer it was
//! checked in, ids are never reused (a 64-bit counter), and a
//! `CheckedFrame` takes a new id before its bytes change; a span read from
//! a buffer with another id reads as "" (a bug, which debug builds stop
//! at). Bytes a caller lends ([`Checked::new`]: the views' public `parse`
//! and `decode`) are checked again as each string is read: a `&[u8]` may
//! be memory another process writes (a ring frame's, whose producer may be
//! hostile), so what was UTF-8 at the check may not be by the read.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use super::view::WireProblem;

/// The empty buffer's id (never handed out). Ids are not zero, so that an
/// `Option<TextSpan>` takes no more room than a span.
const EMPTY: NonZeroU64 = NonZeroU64::MIN;

/// The last id handed out.
static IDS: AtomicU64 = AtomicU64::new(EMPTY.get());

/// An id no buffer has had. Relaxed is enough: only uniqueness matters,
/// and every read-modify-write of one atomic sees a distinct value.
fn fresh_id() -> NonZeroU64 {
    let next = IDS.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        last.checked_add(1)
    });
    match next
        .ok()
        .and_then(|last| NonZeroU64::new(last.wrapping_add(1)))
    {
        Some(id) => id,
        // 2^64 buffers are never made; were they, an id would come again,
        // so nothing may go on (not even by unwinding past a caught panic).
        None => std::process::abort(),
    }
}

/// A range of a [`Checked`] buffer whose bytes are UTF-8: made only by
/// [`Checked::check`], which looks. The default is the empty span, which
/// reads as "" from any buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TextSpan {
    start: u32,
    len: u32,
    /// The id of the buffer it was checked in.
    buffer: NonZeroU64,
}

impl Default for TextSpan {
    fn default() -> Self {
        TextSpan::EMPTY
    }
}

impl TextSpan {
    /// The empty span (the default), as a constant.
    pub(super) const EMPTY: TextSpan = TextSpan {
        start: 0,
        len: 0,
        buffer: EMPTY,
    };

    /// Its length in bytes.
    #[inline(always)]
    pub(super) fn len(self) -> usize {
        self.len as usize
    }

    /// Offset of its first byte in its buffer.
    #[inline(always)]
    pub(super) fn start(self) -> usize {
        self.start as usize
    }
}

/// Bytes of a [`Checked`] buffer found ASCII: `start..end` of the buffer
/// with id `buffer`. Made only by [`Checked::ascii_run`], which looks.
#[derive(Clone, Copy, Debug)]
pub(super) struct AsciiRun {
    start: usize,
    end: usize,
    buffer: NonZeroU64,
}

/// Bytes that spans are checked in and read back from: a borrow of them,
/// the id those spans carry, and whether their text is checked again when
/// read (bytes a caller lent, which may change: see the module docs).
#[derive(Clone, Copy, Debug)]
pub(super) struct Checked<'a> {
    bytes: &'a [u8],
    id: NonZeroU64,
    recheck: bool,
}

impl Default for Checked<'_> {
    /// No bytes, the id of no other buffer: only the empty span checks in
    /// it, and every span reads from it as "".
    fn default() -> Self {
        Checked {
            bytes: &[],
            id: EMPTY,
            recheck: false,
        }
    }
}

impl<'a> Checked<'a> {
    /// Bytes a caller lends, under an id of their own; their text is
    /// checked again as it is read.
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Checked {
            bytes,
            id: fresh_id(),
            recheck: true,
        }
    }

    /// The bytes.
    #[inline(always)]
    pub(super) fn bytes(self) -> &'a [u8] {
        self.bytes
    }

    /// The span `bytes[start..start + len]`, once its bytes are checked to
    /// be UTF-8 (ASCII first, which is most of them, as prost does).
    ///
    /// # Errors
    ///
    /// [`WireProblem::NotUtf8`] for bytes that are not UTF-8,
    /// [`WireProblem::Truncated`] for a range outside the bytes, and
    /// [`WireProblem::TooLarge`] for offsets over 32 bits.
    #[inline(always)]
    pub(super) fn check(self, start: usize, len: usize) -> Result<TextSpan, WireProblem> {
        let end = start.checked_add(len).ok_or(WireProblem::Truncated)?;
        let text = self.bytes.get(start..end).ok_or(WireProblem::Truncated)?;
        if !(text.is_ascii() || std::str::from_utf8(text).is_ok()) {
            return Err(WireProblem::NotUtf8);
        }
        let narrow = |n: usize| u32::try_from(n).map_err(|_| WireProblem::TooLarge);
        Ok(TextSpan {
            start: narrow(start)?,
            len: narrow(len)?,
            buffer: self.id,
        })
    }

    /// The ASCII run of `bytes[from..to]` from its start: where its first
    /// byte over 0x7f is (or `to`), looked for a word at a time. A record's
    /// name, path and arguments, with the one-byte keys and lengths between
    /// them, are usually one such run, checked once here rather than string
    /// by string ([`check_in`](Self::check_in)).
    #[inline(always)]
    pub(super) fn ascii_run(self, from: usize, to: usize) -> AsciiRun {
        let bytes = self.bytes.get(from..to).unwrap_or_default();
        let words = bytes.chunks_exact(8);
        let tail = words.remainder();
        let mut len = 0;
        let mut high = None;
        for word in words {
            // Always 8 bytes (`chunks_exact`): the zeros are never used.
            let word = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            let word = word & 0x8080_8080_8080_8080;
            if word != 0 {
                // Little-endian: the lowest set bit is the first such byte.
                high = Some(len + word.trailing_zeros() as usize / 8);
                break;
            }
            len += 8;
        }
        let len =
            high.unwrap_or_else(|| len + tail.iter().position(|&b| b > 0x7f).unwrap_or(tail.len()));
        AsciiRun {
            start: from,
            end: from + len,
            buffer: self.id,
        }
    }

    /// [`check`](Self::check), but no test of the bytes when they lie in
    /// `run` (found ASCII in these bytes).
    #[inline(always)]
    pub(super) fn check_in(
        self,
        run: AsciiRun,
        start: usize,
        len: usize,
    ) -> Result<TextSpan, WireProblem> {
        match start.checked_add(len) {
            Some(end)
                if run.buffer == self.id
                    && run.start <= start
                    && end <= run.end
                    && end <= self.bytes.len() =>
            {
                let narrow = |n: usize| u32::try_from(n).map_err(|_| WireProblem::TooLarge);
                Ok(TextSpan {
                    start: narrow(start)?,
                    len: narrow(len)?,
                    buffer: self.id,
                })
            }
            _ => self.check(start, len),
        }
    }

    /// The text at `span`: from a [`CheckedFrame`], not checked again
    /// when `span` was checked in its bytes; "" for a span of another
    /// buffer (never, but for a bug, which debug builds stop at), and for
    /// lent bytes that are no longer UTF-8 there.
    #[inline(always)]
    pub(super) fn text(self, span: TextSpan) -> &'a str {
        let start = span.start as usize;
        let bytes = match self.bytes.get(start..start + span.len as usize) {
            Some(bytes) if span.buffer == self.id => bytes,
            _ => {
                debug_assert!(span.len == 0, "a text span read from another buffer");
                return "";
            }
        };
        if self.recheck {
            return std::str::from_utf8(bytes).unwrap_or_default();
        }
        // SAFETY: `recheck` is false only for a `CheckedFrame`'s own bytes
        // (`CheckedFrame::checked`), which nothing else can write, and the
        // empty buffer's. `check` or `check_in` made `span` (its fields are
        // private to this module and never change) after finding these
        // very bytes UTF-8, themselves or as part of an `AsciiRun` found in
        // the buffer with the same id (ASCII is UTF-8, and so is any part
        // of it): the ids match, no two buffers share an id (`fresh_id`;
        // the empty buffer's `EMPTY` admits only empty spans), and a
        // `CheckedFrame`'s bytes never change under an id (`replace`
        // takes a new one first, and needs `&mut`, so no `Checked` of the
        // old bytes is alive).
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

/// A buffer reused for frame after frame (the agent's private copy of
/// each), with a new id for each: spans checked in one frame never read
/// from the next.
#[derive(Debug)]
pub(crate) struct CheckedFrame {
    bytes: Vec<u8>,
    id: NonZeroU64,
}

impl Default for CheckedFrame {
    /// No bytes yet, as the empty buffer.
    fn default() -> Self {
        CheckedFrame {
            bytes: Vec::new(),
            id: EMPTY,
        }
    }
}

impl CheckedFrame {
    /// Makes the buffer a copy of `bytes` (growing it if need be), under a
    /// new id.
    pub(crate) fn replace(&mut self, bytes: &[u8]) {
        self.id = fresh_id();
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
    }

    /// The bytes, for checking spans in and reading them back unchecked.
    pub(super) fn checked(&self) -> Checked<'_> {
        Checked {
            bytes: &self.bytes,
            id: self.id,
            recheck: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_utf8_inside_the_buffer_is_noted() {
        let buffer = Checked::new("ab\u{e9}cd".as_bytes()); // é: two bytes, at 2..4
        let whole = buffer.check(0, 6).expect("text");
        assert_eq!(buffer.text(whole), "ab\u{e9}cd");
        let e = buffer.check(2, 2).expect("text");
        assert_eq!((e.start(), e.len()), (2, 2));
        assert_eq!(buffer.text(e), "\u{e9}");
        // Half a character, a range past the end, an overflowing range.
        assert_eq!(buffer.check(2, 1), Err(WireProblem::NotUtf8));
        assert_eq!(buffer.check(3, 9), Err(WireProblem::Truncated));
        assert_eq!(buffer.check(usize::MAX, 2), Err(WireProblem::Truncated));
        let bad = Checked::new(&[0xff, b'a']);
        assert_eq!(bad.check(0, 2), Err(WireProblem::NotUtf8));
        assert_eq!(bad.text(TextSpan::default()), "");
        assert_eq!(Checked::default().text(TextSpan::default()), "");
    }

    /// A run ends at the first byte over 0x7f wherever it is (in a word
    /// or in the tail), and only spans inside it go unchecked.
    #[test]
    fn an_ascii_run_ends_at_the_first_high_byte_and_vouches_only_inside() {
        for len in 0..40 {
            for high in 0..=len {
                let mut bytes = vec![b'a'; len];
                if high < len {
                    bytes[high] = 0xc3;
                }
                let buffer = Checked::new(&bytes);
                let run = buffer.ascii_run(0, len);
                assert_eq!(
                    (run.start, run.end),
                    (0, high),
                    "{len} bytes, high at {high}"
                );
                // From an offset, and within a bound short of the bytes.
                let from = high.min(3);
                let to = len.saturating_sub(1).max(from);
                let part = buffer.ascii_run(from, to);
                assert_eq!((part.start, part.end), (from, high.min(to).max(from)));
            }
        }
        // "ab" then half an é (0xc3 alone), then ASCII again.
        let bytes = b"ab\xc3cd";
        let buffer = Checked::new(bytes);
        let run = buffer.ascii_run(0, bytes.len());
        assert!(buffer.check_in(run, 0, 2).is_ok());
        assert_eq!(buffer.check_in(run, 1, 2), Err(WireProblem::NotUtf8));
        assert_eq!(buffer.check_in(run, 2, 1), Err(WireProblem::NotUtf8));
        assert!(
            buffer.check_in(run, 3, 2).is_ok(),
            "outside the run: checked alone"
        );
        assert_eq!(buffer.check_in(run, 4, 9), Err(WireProblem::Truncated));
        assert_eq!(
            buffer.check_in(run, usize::MAX, 2),
            Err(WireProblem::Truncated)
        );
        // Another buffer's run vouches for nothing here.
        let other = Checked::new(b"abcde").ascii_run(0, 5);
        assert_eq!(buffer.check_in(other, 1, 2), Err(WireProblem::NotUtf8));
        // A run from an offset vouches for nothing before it.
        let late = buffer.ascii_run(3, bytes.len());
        assert_eq!((late.start, late.end), (3, 5));
        assert_eq!(buffer.check_in(late, 1, 3), Err(WireProblem::NotUtf8));
        assert!(buffer.check_in(late, 3, 2).is_ok());
        // An empty run past the end vouches for no span there.
        let past = buffer.ascii_run(9, 12);
        assert_eq!(buffer.check_in(past, 9, 0), Err(WireProblem::Truncated));
        // DEL (0x7f) is ASCII, in a whole word and in the tail alike.
        let del = b"\x7fabcdefg\x7f\x7f";
        assert_eq!(Checked::new(del).ascii_run(0, del.len()).end, del.len());
    }

    #[test]
    fn inside_a_run_the_bytes_are_not_tested_again() {
        // A run is the caller's word that the bytes are ASCII; inside it
        // check_in trusts that word (the speed it is for). A forged run
        // over bytes that are not UTF-8 shows the trust.
        let bytes = b"ab\xc3cd";
        let buffer = Checked::new(bytes);
        let forged = AsciiRun {
            start: 0,
            end: bytes.len(),
            buffer: buffer.id,
        };
        assert!(buffer.check_in(forged, 1, 2).is_ok());
        assert_eq!(buffer.check(1, 2), Err(WireProblem::NotUtf8));
    }

    /// A span read from bytes it was not checked in gives "", even where
    /// those bytes are not UTF-8 (debug builds stop there instead).
    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "another buffer"))]
    fn a_span_reads_only_from_its_own_buffer() {
        let same_bytes = Checked::new(b"text");
        let span = Checked::new(b"text").check(0, 4).expect("text");
        assert_eq!(same_bytes.text(span), "");
    }

    /// A reused frame's spans do not survive a new frame, even one whose
    /// bytes break UTF-8 where the old span was.
    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "another buffer"))]
    fn a_frames_spans_are_void_once_it_is_replaced() {
        let mut frame = CheckedFrame::default();
        frame.replace(b"name");
        let span = frame.checked().check(0, 4).expect("text");
        assert_eq!(frame.checked().text(span), "name");
        frame.replace(b"\xff\xfe\xfd\xfc");
        assert_eq!(frame.checked().text(span), "");
    }
}
