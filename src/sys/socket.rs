//! Unix-socket calls of the control channel: the peer's credentials
//! (`SO_PEERCRED`, and `SCM_CREDENTIALS` on what it writes) and file
//! descriptors passed with `SCM_RIGHTS`.
//!
//! Linux-specific; another platform would get its own file beside this one.
//!
//! Peer credentials come from nix (both kinds). Descriptor passing uses rustix instead:
//! nix's `RecvMsg::cmsgs` refuses to iterate once the kernel reports
//! `MSG_CTRUNC`, which would leave the descriptors that did arrive open and
//! unreachable; rustix hands them out as `OwnedFd` and closes whatever is left
//! in its buffer when the buffer is dropped, all without `unsafe` here.
//! (rustix's own `socket_peercred` is not used: its `Pid` is non-zero, and the
//! kernel reports pid 0 for a peer outside our pid namespace.)

use std::error::Error;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use super::wake::Waker;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, getsockopt, recvmsg, setsockopt,
    sockopt::{PassCred, PeerCredentials, PeerPidfd},
};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The most descriptors one message can carry on Linux (`SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Who is on the other end of a Unix socket, as the kernel recorded it when
/// the connection was made (it cannot be forged by the peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// The peer's process id; 0 when that process is outside our pid namespace.
    pub pid: u32,
    /// The peer's effective user id at `connect` time.
    pub uid: u32,
    /// The peer's effective group id at `connect` time.
    pub gid: u32,
}

/// Reads the peer's credentials with `SO_PEERCRED`.
pub fn peer_credentials(stream: &UnixStream) -> io::Result<PeerCred> {
    let cred = getsockopt(stream, PeerCredentials)?;
    Ok(PeerCred {
        // A pid_t is never negative here; 0 (unknown) maps to 0.
        pid: u32::try_from(cred.pid()).unwrap_or(0),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

/// A pidfd of the peer that connected (`SO_PEERPIDFD`, Linux 6.5+): the
/// process itself, so unlike a pidfd opened later from `SO_PEERCRED`'s pid
/// it cannot name another process that reused the pid meanwhile (it reads
/// as exited once the peer has). `ENOPROTOOPT` on older kernels.
pub fn peer_pidfd(stream: &impl AsFd) -> io::Result<super::pidfd::PidFd> {
    let fd = getsockopt(stream, PeerPidfd)?;
    Ok(super::pidfd::PidFd::from_owned(fd))
}

/// Has the kernel attach the writer's credentials to what arrives on
/// `stream`, for [`peek_writer`] (`SO_PASSCRED`; `on = false` stops it:
/// while it is on, every read carries them, and a read with no room for
/// them sees its control data cut short).
pub fn pass_credentials(stream: &UnixStream, on: bool) -> io::Result<()> {
    setsockopt(stream, PassCred, &on)?;
    Ok(())
}

/// Whether a read of `stream` would return at once (bytes waiting, or the
/// end of the stream): one `poll(2)` with a zero timeout.
pub fn readable_now(stream: &UnixStream) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(stream, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match poll(&mut fds, Some(&zero)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// What waits to be read on a stream, and who wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The stream ended.
    End,
    /// Bytes, with the credentials the kernel attached (`None`: none were,
    /// which with [`pass_credentials`] on does not happen). Bytes written
    /// before [`pass_credentials`] carry made-up ones (pid 0, the overflow
    /// uid and gid): only bytes written after it name their writer.
    Bytes(Option<PeerCred>),
}

/// Waits for the next bytes on `stream` and says who wrote them, as the
/// kernel attached it when they were written (which needs
/// [`pass_credentials`] before that), leaving the bytes to be read. Waits as
/// a read does (the socket's read timeout applies, as `WouldBlock`).
///
/// Unlike `SO_PEERCRED`, which names whoever made the socket (`listen` on
/// the server's side: systemd for an activated socket), this names the
/// process that answers. The kernel fills in the writer's pid and *real*
/// uid and gid when the writer says nothing (`SO_PEERCRED` gives the
/// effective ones); a writer may claim its effective or saved ids instead,
/// and others only with `CAP_SETUID`/`CAP_SETGID` (`CAP_SYS_ADMIN` for the
/// pid).
///
/// Descriptors travelling with those bytes arrive too (a peek hands out
/// copies; the originals stay for the read): they are closed here. Room is
/// made for the most one message can carry, so none is cut off; should
/// the kernel still truncate (this process out of descriptors), the error
/// is `ENOBUFS` and those it did install stay open (nix does not hand out
/// a truncated message's descriptors). nix rather than rustix here: rustix
/// reads a writer outside our pid namespace (pid 0) into a non-zero `Pid`.
pub fn peek_writer(stream: &UnixStream) -> io::Result<Waiting> {
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!(UnixCredentials, [RawFd; MAX_FDS_PER_MESSAGE]);
    let mut iov = [IoSliceMut::new(&mut byte)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_PEEK | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    if msg.bytes == 0 {
        return Ok(Waiting::End);
    }
    let mut writer = None;
    for message in msg.cmsgs()? {
        match message {
            ControlMessageOwned::ScmCredentials(credentials) => {
                writer = Some(PeerCred {
                    // 0 when the writer is outside our pid namespace.
                    pid: u32::try_from(credentials.pid()).unwrap_or(0),
                    uid: credentials.uid(),
                    gid: credentials.gid(),
                });
            }
            ControlMessageOwned::ScmRights(copies) => {
                for fd in copies {
                    // A copy this peek made: ours to close.
                    let _ = nix::unistd::close(fd);
                }
            }
            _ => {}
        }
    }
    Ok(Waiting::Bytes(writer))
}

/// Sends `bytes` with `fds` attached to them (`SCM_RIGHTS`), returning how
/// many bytes went out; on a stream socket that can be fewer than asked, and
/// the descriptors travel with the first byte sent.
///
/// Uses `MSG_NOSIGNAL`: a vanished peer is an `EPIPE` error, never `SIGPIPE`.
/// Sending descriptors with an empty `bytes` is refused (`InvalidInput`): on a
/// stream socket they need at least one byte to ride on.
pub fn send_with_fds(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors exceed the {MAX_FDS_PER_MESSAGE} one message can carry",
                fds.len()
            ),
        ));
    }
    if bytes.is_empty() && !fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors need at least one byte to travel with",
        ));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        // Cannot happen: the buffer was sized for exactly these descriptors.
        return Err(io::Error::other(
            "control buffer too small for the descriptors",
        ));
    }
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(sent)
}

/// The peer sent more descriptors than `recv_with_fds` accepted (more than
/// its `max_fds`, or more than fitted: `MSG_CTRUNC`). Those that arrived were
/// closed; the kernel discarded the rest.
///
/// Returned inside an [`io::Error`] of kind `InvalidData`; callers that care
/// find it with `err.get_ref().and_then(|e| e.downcast_ref::<FdsTruncated>())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdsTruncated {
    /// The most descriptors the receiver accepted.
    pub max_fds: usize,
}

impl fmt::Display for FdsTruncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer sent more file descriptors than the {} expected; those received were closed",
            self.max_fds
        )
    }
}

impl Error for FdsTruncated {}

/// Receives into `buf`, accepting at most `max_fds` descriptors; returns the
/// byte count (0 at end of stream) and the descriptors that arrived, each
/// close-on-exec (`MSG_CMSG_CLOEXEC`).
///
/// More descriptors than `max_fds` (including control data truncated by the
/// kernel, `MSG_CTRUNC`) is an error, [`FdsTruncated`] inside an `InvalidData` [`io::Error`], and every
/// descriptor that did arrive is closed; the bytes of that read are lost with
/// it, so the caller should treat the stream as broken. A read timeout set on
/// the socket surfaces as `WouldBlock`.
pub fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let max_fds = max_fds.min(MAX_FDS_PER_MESSAGE);
    // Control space rounds up to alignment, so it may hold a descriptor or
    // two more than `max_fds`; the count is enforced below as well.
    let space_len = if max_fds == 0 {
        0
    } else {
        rustix::cmsg_space!(ScmRights(max_fds))
    };
    let mut space = vec![MaybeUninit::uninit(); space_len];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let truncated = msg.flags.contains(ReturnFlags::CTRUNC);
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if truncated || fds.len() > max_fds {
        // Dropping `fds` (and `control`, for anything not drained) closes
        // every descriptor that arrived.
        drop(fds);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FdsTruncated { max_fds },
        ));
    }
    Ok((msg.bytes, fds))
}

/// Bounds how long a blocking `accept` on `listener` waits (`None`: no
/// bound); when it passes, `accept` fails with `WouldBlock`. Linux applies a
/// listening socket's `SO_RCVTIMEO` to `accept`.
pub fn set_accept_timeout(listener: &UnixListener, timeout: Option<Duration>) -> io::Result<()> {
    // The kernel reads a zero timeout as "wait forever"; the shortest real
    // bound is one microsecond.
    let timeout = timeout.map(|t| t.max(Duration::from_micros(1)));
    rustix::net::sockopt::set_socket_timeout(
        listener,
        rustix::net::sockopt::Timeout::Recv,
        timeout,
    )?;
    Ok(())
}

/// What [`accept_or_woken`] waited for.
#[derive(Debug)]
pub enum Accepted {
    /// A new connection (close-on-exec, blocking).
    Connection(UnixStream),
    /// The waker was woken; the wake is left pending, so every later call
    /// returns this at once too (a stop is for good).
    Woken,
    /// The timeout passed first.
    TimedOut,
}

/// Waits for the next connection on `listener`, a wake of `waker`, or
/// `timeout` (`None`: no bound), whichever comes first; a pending wake wins.
///
/// The wait is a `poll` on both, so it neither changes the listener (its
/// timeouts, its blocking mode, its receiving side) nor needs it to be
/// shut down to end: a listener shared with another process, such as the
/// one systemd passes to a socket-activated service and hands to its next
/// instance, is left as it was. A connection that another thread took
/// first, or that went before it was accepted, means waiting again.
pub fn accept_or_woken(
    listener: &UnixListener,
    waker: &Waker,
    timeout: Option<Duration>,
) -> io::Result<Accepted> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    use rustix::io::Errno;
    let deadline = timeout.map(crate::deadline::after);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // A wait too long for a timespec is as good as none.
        let left = left.and_then(|left| Timespec::try_from(left).ok());
        let mut fds = [
            PollFd::new(waker, PollFlags::IN),
            PollFd::new(listener, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, left.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
        if !fds[0].revents().is_empty() {
            return Ok(Accepted::Woken);
        }
        if !fds[1].revents().is_empty() {
            match rustix::net::accept_with(listener, rustix::net::SocketFlags::CLOEXEC) {
                Ok(fd) => return Ok(Accepted::Connection(UnixStream::from(fd))),
                // Taken or gone meanwhile, or a listener in non-blocking
                // mode with nothing left: wait again.
                Err(Errno::AGAIN | Errno::INTR | Errno::CONNABORTED) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Accepted::TimedOut);
        }
    }
}

/// Connects to the Unix stream socket at `path`, waiting no later than
/// `deadline` while the listener's backlog is full: Linux applies a
/// socket's `SO_SNDTIMEO` to a Unix-socket `connect`, which then fails with
/// `EAGAIN`, returned as [`io::ErrorKind::TimedOut`]. The send timeout is
/// cleared once connected. `SO_PASSCRED` is on from before the connect, so
/// every byte the server writes carries its writer ([`peek_writer`]); turn
/// it off ([`pass_credentials`]) once that has been read.
pub fn connect_before(path: &Path, deadline: Instant) -> io::Result<UnixStream> {
    use rustix::net::sockopt::{Timeout, set_socket_timeout};
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new(path)?;
    setsockopt(&fd, PassCred, &true)?;
    loop {
        // Zero means "no bound" to the kernel: the shortest real one is 1 µs.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(1));
        set_socket_timeout(&fd, Timeout::Send, Some(left))?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            // Interrupted while waiting, before anything changed: again.
            Err(rustix::io::Errno::INTR) if Instant::now() < deadline => {}
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the listener's backlog stayed full until the deadline",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    set_socket_timeout(&fd, Timeout::Send, None)?;
    Ok(UnixStream::from(fd))
}

/// Shuts down the receiving side of `listener` (`shutdown(SHUT_RD)`): on
/// Linux a thread blocked in `accept` on it wakes with an error (`EINVAL`),
/// later accepts fail the same way, and new connects are refused. Works on
/// a duplicate of the listener's descriptor too, from any thread.
pub fn shutdown_listener(listener: BorrowedFd<'_>) -> io::Result<()> {
    rustix::net::shutdown(listener, rustix::net::Shutdown::Read)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe().expect("pipe")
    }

    /// The pid a pidfd names, from its `fdinfo` (`Pid:`; -1 once reaped).
    fn pid_of(pidfd: &super::super::pidfd::PidFd) -> i64 {
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_fd().as_raw_fd()))
                .expect("fdinfo");
        info.lines()
            .find_map(|line| line.strip_prefix("Pid:"))
            .and_then(|pid| pid.trim().parse().ok())
            .expect("a pidfd's fdinfo has Pid:")
    }

    #[test]
    fn the_peers_pidfd_names_the_process_that_connected_even_once_it_is_gone() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let pidfd = peer_pidfd(&a).expect("SO_PEERPIDFD (Linux 6.5+)");
        assert_eq!(pid_of(&pidfd), i64::from(std::process::id()));
        assert!(!pidfd.has_exited().unwrap());
        // A child connects and exits: its pidfd says so, and names no
        // process that might take its pid.
        let dir = std::env::temp_dir().join(format!("de-peer-pidfd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        struct Removed(std::path::PathBuf);
        impl Drop for Removed {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = Removed(dir);
        let path = dir.0.join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])",
            ])
            .arg(&path)
            .spawn()
            .unwrap();
        let (stream, _) = listener.accept().unwrap();
        let child_pid = child.id();
        let status = child.wait().unwrap();
        assert!(status.success());
        let pidfd = peer_pidfd(&stream).expect("SO_PEERPIDFD");
        assert!(pidfd.has_exited().unwrap(), "the child has exited");
        let named = pid_of(&pidfd);
        assert!(named == -1 || named == i64::from(child_pid), "{named}");
    }

    #[test]
    fn peer_credentials_name_this_process() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        for end in [&a, &b] {
            let cred = peer_credentials(end).expect("SO_PEERCRED");
            assert_eq!(cred.pid, std::process::id());
            assert_eq!(cred.uid, rustix::process::geteuid().as_raw());
            assert_eq!(cred.gid, rustix::process::getegid().as_raw());
        }
    }

    #[test]
    fn a_peek_names_the_writer_not_the_sockets_maker() {
        use std::process::{Command, Stdio};
        let (a, b) = UnixStream::pair().expect("socketpair");
        pass_credentials(&a, true).expect("SO_PASSCRED");
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Another process writes on the socket this one made.
        let mut child = Command::new("sh")
            .args(["-c", "printf x"])
            .stdout(Stdio::from(OwnedFd::from(b)))
            .spawn()
            .expect("spawn sh");
        let writer = child.id();
        assert!(child.wait().expect("wait").success());
        let me = PeerCred {
            pid: writer,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        };
        assert_eq!(peek_writer(&a).expect("peek"), Waiting::Bytes(Some(me)));
        assert_eq!(peer_credentials(&a).unwrap().pid, std::process::id());
        // The bytes are still there, then the stream ends.
        pass_credentials(&a, false).unwrap();
        let mut byte = [0u8; 2];
        assert_eq!((&a).read(&mut byte).unwrap(), 1);
        assert_eq!(byte[0], b'x');
        assert_eq!(peek_writer(&a).expect("peek at the end"), Waiting::End);
    }

    #[test]
    fn bytes_written_before_credentials_were_asked_for_name_no_one() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        (&b).write_all(b"early").unwrap();
        pass_credentials(&a, true).expect("SO_PASSCRED");
        (&b).write_all(b"late").unwrap();
        // The kernel makes credentials up for the early bytes: pid 0, which
        // is why the handshake trusts nothing that came before it asked.
        let Waiting::Bytes(Some(early)) = peek_writer(&a).expect("peek") else {
            panic!("credentials are attached once SO_PASSCRED is on");
        };
        assert_eq!(early.pid, 0, "{early:?}");
        let mut buf = [0u8; 5];
        (&a).read_exact(&mut buf).unwrap();
        assert_eq!(
            peek_writer(&a).expect("peek"),
            Waiting::Bytes(Some(peer_credentials(&b).unwrap()))
        );
    }

    #[test]
    fn readable_now_sees_bytes_and_the_end_without_waiting() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        assert!(!readable_now(&a).unwrap());
        (&b).write_all(b"x").unwrap();
        assert!(readable_now(&a).unwrap());
        let mut byte = [0u8; 1];
        (&a).read_exact(&mut byte).unwrap();
        assert!(!readable_now(&a).unwrap());
        drop(b);
        assert!(readable_now(&a).unwrap());
    }

    #[test]
    fn a_peek_closes_the_descriptor_copies_it_is_handed() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (pipe_r, pipe_w) = pipe();
        send_with_fds(&b, b"y", &[pipe_w.as_fd()]).expect("send");
        drop(pipe_w);
        // SO_PASSCRED is off: no credentials come with it.
        assert_eq!(peek_writer(&a).expect("peek"), Waiting::Bytes(None));
        let mut buf = [0u8; 1];
        let (n, fds) = recv_with_fds(&a, &mut buf, 1).expect("recv");
        assert_eq!((n, fds.len()), (1, 1));
        drop(fds);
        // Every copy of the write end is closed, the peek's too: end of file
        // (a copy left open would make this read would-block, not hang).
        rustix::fs::fcntl_setfl(&pipe_r, rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut reader = std::fs::File::from(pipe_r);
        assert_eq!(
            reader.read(&mut buf).expect("end of file, not would-block"),
            0
        );
    }

    #[test]
    fn a_passed_pipe_works_on_the_other_side() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (pipe_r, pipe_w) = pipe();
        let sent = send_with_fds(&a, b"hello", &[pipe_r.as_fd()]).expect("send");
        assert_eq!(sent, 5);
        drop(pipe_r);

        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(&b, &mut buf, 4).expect("recv");
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let flags = rustix::io::fcntl_getfd(&fds[0]).expect("F_GETFD");
        assert!(
            flags.contains(rustix::io::FdFlags::CLOEXEC),
            "received fd must be close-on-exec"
        );

        let mut writer = std::fs::File::from(pipe_w);
        writer.write_all(b"through the pipe").expect("write");
        drop(writer);
        let mut reader = std::fs::File::from(fds.into_iter().next().expect("one fd"));
        let mut got = String::new();
        reader.read_to_string(&mut got).expect("read");
        assert_eq!(got, "through the pipe");
    }

    #[test]
    fn too_many_fds_is_an_error_and_closes_them() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (r1, w1) = pipe();
        let (r2, _w2) = pipe();
        send_with_fds(&a, b"x", &[r1.as_fd(), r2.as_fd()]).expect("send");
        drop(r1);

        let mut buf = [0u8; 4];
        let err = recv_with_fds(&b, &mut buf, 1).expect_err("two fds into room for one");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<FdsTruncated>());
        assert_eq!(inner, Some(&FdsTruncated { max_fds: 1 }));
        // The only read end of pipe 1 was in flight; if the receiver had kept
        // it open, this write would succeed instead of failing with EPIPE.
        let mut w1 = std::fs::File::from(w1);
        let err = w1.write(b"y").expect_err("no reader left");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn eof_reads_zero_bytes_and_no_fds() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        drop(a);
        let mut buf = [0u8; 4];
        let (n, fds) = recv_with_fds(&b, &mut buf, 2).expect("recv at EOF");
        assert_eq!(n, 0);
        assert!(fds.is_empty());
    }

    #[test]
    fn send_to_a_closed_peer_is_broken_pipe() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        drop(b);
        let err = send_with_fds(&a, b"x", &[]).expect_err("peer closed");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    /// A fresh directory under the temporary directory, removed on drop
    /// (also when the test fails).
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("daemoneye-sys-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn accept_gives_up_after_its_timeout() {
        let dir = TempDir::new("accept");
        let path = dir.0.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        set_accept_timeout(&listener, Some(Duration::from_millis(20))).expect("SO_RCVTIMEO");
        let err = listener.accept().expect_err("nobody connects");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let _client = UnixStream::connect(&path).expect("connect");
        listener.accept().expect("a waiting connection is accepted");
    }

    #[test]
    fn shutting_a_listener_down_wakes_a_blocked_accept() {
        use std::os::fd::AsFd;
        let dir = TempDir::new("shutdown");
        let path = dir.0.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let dup = listener.as_fd().try_clone_to_owned().expect("dup");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(listener.accept().map(|_| ()));
        });
        // The socket file goes first: nothing can connect to wake it.
        std::fs::remove_file(&path).expect("unlink");
        shutdown_listener(dup.as_fd()).expect("shutdown");
        let accepted = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("accept still blocked after the shutdown");
        assert!(accepted.is_err());
    }

    #[test]
    fn accept_or_woken_takes_a_connection_times_out_or_ends_at_a_wake() {
        let dir = TempDir::new("woken");
        let path = dir.0.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let waker = Waker::new().expect("eventfd");
        let short = Some(Duration::from_millis(20));
        assert!(matches!(
            accept_or_woken(&listener, &waker, short).expect("wait"),
            Accepted::TimedOut
        ));
        let _client = UnixStream::connect(&path).expect("connect");
        match accept_or_woken(&listener, &waker, None).expect("accept") {
            Accepted::Connection(stream) => {
                let flags = rustix::io::fcntl_getfd(&stream).expect("F_GETFD");
                assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
            }
            other => panic!("{other:?}"),
        }
        // From another thread, with no bound on the wait; the wake stays.
        let (tx, rx) = std::sync::mpsc::channel();
        let (waiter, listener) = (waker.clone(), std::sync::Arc::new(listener));
        let shared = std::sync::Arc::clone(&listener);
        std::thread::spawn(move || {
            let _ = tx.send(accept_or_woken(&shared, &waiter, None).map(|a| format!("{a:?}")));
        });
        waker.wake().expect("wake");
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("still waiting");
        assert_eq!(got.expect("woken"), "Woken");
        assert!(matches!(
            accept_or_woken(&listener, &waker, None).expect("again"),
            Accepted::Woken
        ));
        // The listener was left as it was: it still takes connections.
        let _second = UnixStream::connect(&path).expect("connect after the wake");
        listener.set_nonblocking(true).expect("O_NONBLOCK");
        listener.accept().expect("the second connection is waiting");
    }

    #[test]
    fn descriptors_without_bytes_are_refused() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let (r, _w) = pipe();
        let err = send_with_fds(&a, b"", &[r.as_fd()]).expect_err("no byte to carry them");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
