//! The hostile peer shared by the `control_frame` and `handshake` targets:
//! fuzz bytes become what it writes on a real `UnixStream::pair()`, with
//! descriptors attached (`SCM_RIGHTS`) where the input says, and the fd
//! check that every run ends with as many open descriptors as it began.
//!
//! Input layout, a sequence of writes (missing bytes read as zero):
//! - byte 0, flags: bits 0..=4 how many descriptors ride on this write
//!   (0 to 31: past the 16 a frame may carry, so truncation is reached);
//!   bit 5 set: the bytes are sent as one frame, their length prefixed;
//!   bit 6 set: this is the last write;
//! - byte 1, kinds: which descriptors ([`Kind`], from this byte and the
//!   descriptor's index);
//! - bytes 2..4: the write's length, little-endian; then that many bytes
//!   (fewer if the input ends).
//!
//! The peer's end is non-blocking, so a write the socket cannot take ends the
//! writing instead of hanging, and it is shut down for writing afterwards:
//! every read on the other end meets the end of the stream, never a wait.

use std::fs::File;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

use daemoneye_lib::ring::layout::MIN_CAPACITY;
use daemoneye_lib::ring::{ConsumerFds, Producer, RingConfig};
use daemoneye_lib::sys::memfd;
use daemoneye_lib::sys::socket::send_with_fds;

/// Descriptors a hostile peer can pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/dev/null`: not a memfd, cannot be mapped.
    DevNull,
    /// A pipe's read end.
    Pipe,
    /// An empty memfd without seals.
    BareMemfd,
    /// A real ring's data region (fresh for each run).
    RingData,
    /// A real ring's control region (fresh for each run).
    RingControl,
}

const KINDS: [Kind; 5] = [
    Kind::DevNull,
    Kind::Pipe,
    Kind::BareMemfd,
    Kind::RingData,
    Kind::RingControl,
];

/// Descriptors shared by every run: made once, never closed.
struct Fixed {
    dev_null: File,
    pipe: OwnedFd,
    _pipe_writer: OwnedFd,
    bare_memfd: OwnedFd,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let (pipe, pipe_writer) = io::pipe().expect("pipe");
        Fixed {
            dev_null: File::open("/dev/null").expect("/dev/null"),
            pipe: pipe.into(),
            _pipe_writer: pipe_writer.into(),
            bare_memfd: memfd::create("de-fuzz-bare", 0).expect("memfd"),
        }
    })
}

/// Two `/dev/null` descriptors, standing in for a ring in an honest hello.
pub fn stand_in_ring() -> [BorrowedFd<'static>; 2] {
    let fd = fixed().dev_null.as_fd();
    [fd, fd]
}

/// One run's descriptors: the fixed ones and, made on first use, a real
/// ring (a ring's consumer side attaches once only, so it cannot be shared).
pub struct Fds {
    ring: Option<(Producer, ConsumerFds)>,
}

impl Fds {
    pub fn new() -> Self {
        Self { ring: None }
    }

    fn get(&mut self, kind: Kind) -> BorrowedFd<'_> {
        let fixed = fixed();
        match kind {
            Kind::DevNull => fixed.dev_null.as_fd(),
            Kind::Pipe => fixed.pipe.as_fd(),
            Kind::BareMemfd => fixed.bare_memfd.as_fd(),
            Kind::RingData | Kind::RingControl => {
                let (_, fds) = self.ring.get_or_insert_with(|| {
                    Producer::create(&RingConfig::new(MIN_CAPACITY)).expect("a ring")
                });
                if kind == Kind::RingData {
                    fds.data.as_fd()
                } else {
                    fds.control.as_fd()
                }
            }
        }
    }
}

/// One write of the hostile peer.
struct Write<'a> {
    fds: Vec<Kind>,
    framed: bool,
    last: bool,
    bytes: &'a [u8],
}

/// Splits `input` into writes.
fn writes(mut input: &[u8]) -> impl Iterator<Item = Write<'_>> {
    std::iter::from_fn(move || {
        if input.is_empty() {
            return None;
        }
        let byte = |i: usize| input.get(i).copied().unwrap_or(0);
        let (flags, kinds) = (byte(0), byte(1));
        let len = usize::from(u16::from_le_bytes([byte(2), byte(3)]));
        let rest = input.get(4..).unwrap_or(&[]);
        let (bytes, after) = rest.split_at(len.min(rest.len()));
        input = after;
        let step = usize::from(kinds >> 4) | 1;
        let fds = (0..usize::from(flags & 0x1f))
            .map(|i| KINDS[(usize::from(kinds) + i * step) % KINDS.len()])
            .collect();
        Some(Write {
            fds,
            framed: flags & 0x20 != 0,
            last: flags & 0x40 != 0,
            bytes,
        })
    })
}

/// Writes what `input` says on `peer`, then shuts its writing side down.
/// Stops early, quietly, where the socket refuses more (a full buffer).
pub fn write_all(peer: &UnixStream, input: &[u8], fds: &mut Fds) {
    peer.set_nonblocking(true).expect("non-blocking");
    for write in writes(input) {
        let mut bytes = Vec::with_capacity(4 + write.bytes.len());
        if write.framed {
            bytes.extend_from_slice(&(write.bytes.len() as u32).to_le_bytes());
        }
        bytes.extend_from_slice(write.bytes);
        let owned: Vec<OwnedFd> = write
            .fds
            .iter()
            .map(|&kind| fds.get(kind).try_clone_to_owned().expect("dup"))
            .collect();
        let attached: Vec<BorrowedFd<'_>> = owned.iter().map(AsFd::as_fd).collect();
        if !send(peer, &bytes, &attached) || write.last {
            break;
        }
    }
    let _ = peer.shutdown(Shutdown::Write);
}

/// Sends all of `bytes`, `fds` with the first; false once the socket
/// refuses (descriptors without bytes are refused too).
fn send(peer: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> bool {
    let mut sent = 0;
    while sent < bytes.len() || (sent == 0 && !fds.is_empty()) {
        let with = if sent == 0 { fds } else { &[] };
        match send_with_fds(peer, &bytes[sent..], with) {
            Ok(0) | Err(_) => return false,
            Ok(n) => sent += n,
        }
    }
    true
}

/// Descriptors open in this process (the directory's own included, the
/// same each time).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Runs `body` and checks that it left no descriptor open.
pub fn no_fd_leak(body: impl FnOnce()) {
    fixed();
    let before = open_fds();
    body();
    let after = open_fds();
    assert_eq!(before, after, "a run left a descriptor open");
}
