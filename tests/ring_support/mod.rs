//! Running one end of a ring in a real child process, for the
//! multi-process ring tests, and the self-checking frames they exchange.
//!
//! A test spawns its own test binary again (`current_exe`) running just one
//! test, the file's `child` entry point, with `RING_ROLE` naming the part
//! to play. The child's stdin is one end of a Unix socket pair: the ring's
//! descriptors travel over it with `SCM_RIGHTS`, and so do the few small
//! messages (ready, counts) the two sides exchange. No descriptor is
//! inherited any other way, and no `unsafe` `pre_exec` is needed.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use daemoneye_lib::ring::ConsumerFds;
use daemoneye_lib::sys::pidfd::PidFd;
use daemoneye_lib::sys::socket::{recv_with_fds, send_with_fds};

const ROLE_VAR: &str = "RING_ROLE";
const ARG_VAR: &str = "RING_ARG";

/// How long either side waits for one message from the other.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process playing one end of a ring.
pub struct Peer {
    pub child: Child,
    pub socket: UnixStream,
    /// Watches the child's exit (for `watch_peer`, or for waiting).
    pub pidfd: PidFd,
}

/// Runs the test `entry` of this test binary in a child process, with
/// `role` and `arg` in its environment and a socket to this process as its
/// stdin.
pub fn spawn(entry: &str, role: &str, arg: &str) -> Peer {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.set_read_timeout(Some(MESSAGE_TIMEOUT)).unwrap();
    let exe = std::env::current_exe().expect("current_exe");
    let child = Command::new(exe)
        .args([
            "--exact",
            entry,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_VAR, role)
        .env(ARG_VAR, arg)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        // The harness's chatter; a failing child's panic goes to stderr.
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the child test");
    let pidfd = PidFd::open(child.id()).expect("pidfd_open");
    Peer {
        child,
        socket: ours,
        pidfd,
    }
}

impl Peer {
    /// Waits (at most `timeout`) for the child to exit; kills it and fails
    /// the test if it does not.
    pub fn wait(mut self, timeout: Duration) -> ExitStatus {
        if !self.pidfd.wait_exit(timeout).expect("poll pidfd") {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("child did not exit within {timeout:?}");
        }
        self.child.wait().expect("waitpid")
    }

    /// Waits for the child and asserts that it exited successfully (its own
    /// assertions held).
    pub fn expect_success(self, timeout: Duration) {
        let status = self.wait(timeout);
        assert!(status.success(), "child failed: {status}");
    }
}

/// A child still running when its `Peer` goes (a test that failed before
/// waiting for it) is killed and reaped, so it does not outlive the test.
impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// In a child: the role and argument it was started with. Fails the test
/// when run by hand (say with `--include-ignored`): the `child` entry
/// points only make sense spawned by [`spawn`].
pub fn role() -> (String, String) {
    let role = std::env::var(ROLE_VAR)
        .unwrap_or_else(|_| panic!("{ROLE_VAR} unset: this entry point is run by spawn()"));
    (role, std::env::var(ARG_VAR).unwrap_or_default())
}

/// In a child: the socket to the parent (its stdin).
pub fn parent_socket() -> UnixStream {
    let fd = io::stdin().as_fd().try_clone_to_owned().expect("dup stdin");
    let socket = UnixStream::from(fd);
    socket.set_read_timeout(Some(MESSAGE_TIMEOUT)).unwrap();
    socket
}

/// Sends the consumer's descriptors of a ring.
pub fn send_fds(socket: &UnixStream, fds: &ConsumerFds) {
    let sent = send_with_fds(socket, b"R", &[fds.data.as_fd(), fds.control.as_fd()])
        .expect("send ring descriptors");
    assert_eq!(sent, 1);
}

/// Receives the consumer's descriptors of a ring.
pub fn recv_fds(socket: &UnixStream) -> ConsumerFds {
    let mut byte = [0u8; 1];
    let (n, mut fds) = recv_with_fds(socket, &mut byte, 2).expect("receive ring descriptors");
    assert_eq!(
        (n, byte, fds.len()),
        (1, *b"R", 2),
        "bad descriptor message"
    );
    let control = fds.pop().unwrap();
    let data = fds.pop().unwrap();
    ConsumerFds { data, control }
}

/// Sends one number.
pub fn send_u64(socket: &mut UnixStream, value: u64) {
    socket.write_all(&value.to_le_bytes()).expect("send");
}

/// Receives one number (failing after [`MESSAGE_TIMEOUT`]).
pub fn recv_u64(socket: &mut UnixStream) -> u64 {
    let mut bytes = [0u8; 8];
    socket.read_exact(&mut bytes).expect("receive");
    u64::from_le_bytes(bytes)
}

/// A far deadline for one blocking ring call: a hang fails the test.
pub fn far() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

/// Self-checking frames: frame `i` of a stream has a length that depends
/// only on `i` (and the stream's largest frame), starts with `i` when it
/// has room, and is otherwise a window of a fixed pattern chosen by `i`.
/// A frame cut short, torn, reordered or from another index fails
/// [`Frames::check`].
pub struct Frames {
    pattern: Vec<u8>,
    max: usize,
}

impl Frames {
    pub fn new(max: usize) -> Frames {
        Frames {
            pattern: (0..max + 256).map(|i| (i * 31 + 7) as u8).collect(),
            max,
        }
    }

    /// Mixed sizes: mostly small, some medium, now and then the largest,
    /// some empty.
    pub fn len(&self, i: u64) -> usize {
        let max = self.max;
        match i % 1000 {
            0 => max,
            1 => 0,
            n if n % 50 == 0 => (1000 + (i as usize * 13) % 2000).min(max),
            n if n % 7 == 0 => (i as usize * 104_729) % (max + 1),
            _ => (i as usize * 7919) % 200.min(max + 1),
        }
    }

    /// Writes frame `i` into `buf` (of length `self.len(i)`).
    pub fn fill(&self, i: u64, buf: &mut [u8]) {
        let shift = (i % 251) as usize;
        let len = buf.len();
        buf.copy_from_slice(&self.pattern[shift..shift + len]);
        if len >= 8 {
            buf[..8].copy_from_slice(&i.to_le_bytes());
        }
    }

    /// Whether `bytes` and `flags` are exactly frame `i`; `Err` says what
    /// differs.
    pub fn check(&self, i: u64, bytes: &[u8], flags: u16) -> Result<(), String> {
        if bytes.len() != self.len(i) {
            return Err(format!(
                "frame {i}: {} bytes, expected {}",
                bytes.len(),
                self.len(i)
            ));
        }
        if flags != i as u16 {
            return Err(format!("frame {i}: flags {flags:#x}"));
        }
        let shift = (i % 251) as usize;
        let (head, expected) = if bytes.len() >= 8 {
            let index = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            if index != i {
                return Err(format!("frame {i}: carries index {index}"));
            }
            (8, &self.pattern[shift + 8..shift + bytes.len()])
        } else {
            (0, &self.pattern[shift..shift + bytes.len()])
        };
        if &bytes[head..] != expected {
            return Err(format!("frame {i}: payload differs"));
        }
        Ok(())
    }
}
