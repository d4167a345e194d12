//! The kernel's process connector: a netlink socket (`NETLINK_CONNECTOR`)
//! subscribed to the `CN_IDX_PROC` group, on which the kernel multicasts an
//! event for every fork, exec, exit, uid/gid and comm change on the host.
//!
//! [`CnProcSocket::subscribe`] opens the socket, sizes its receive buffer,
//! binds it to the group and sends `PROC_CN_MCAST_LISTEN`; it returns only
//! once the kernel has acknowledged the request, because the kernel
//! *silently ignores* a request from outside the initial user and pid
//! namespaces: without the ack, the socket would look subscribed and never
//! receive anything. Every way this fails is a [`SubscribeError`] that says
//! why, so procmond can log it once and poll `/proc` instead.
//!
//! [`CnProcSocket::recv`] hands back each datagram with the sender's netlink
//! port (the kernel's is 0; anything else was sent by a local process) and
//! reports a receive-buffer overrun (`ENOBUFS`) as [`Received::Overrun`], a
//! result, not an error: the socket stays usable. It blocks in `poll(2)` on
//! the socket and an eventfd, so [`Waker::wake`] from any thread ends a
//! wait at once. Decoding the datagrams is `collector::events`' job; this
//! file only knows the [`layout`] far enough to build the request and
//! recognise the ack.
//!
//! Test switch: with the environment variable [`DISABLE_ENV`]
//! (`DAEMONEYE_CN_PROC`) set to `off`, [`disabled_by_env`] is true, and the
//! event source refuses to subscribe ([`SubscribeError::Disabled`]), so the
//! fallback to polling can be tested where the connector works.
//!
//! No `unsafe` here: rustix wraps every call.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// The environment variable that, set to `off` (or `0`), makes the event
/// source refuse to subscribe; see [`disabled_by_env`].
pub const DISABLE_ENV: &str = "DAEMONEYE_CN_PROC";

/// Whether [`DISABLE_ENV`] asks for the connector not to be used (its value
/// is `off` or `0`). The one place this switch is read; it exists so that
/// tests (and an operator) can force procmond's polling fallback.
pub fn disabled_by_env() -> bool {
    std::env::var_os(DISABLE_ENV).is_some_and(|value| value == "off" || value == "0")
}

/// Every offset and constant of the connector's messages, in one place.
///
/// A datagram holds netlink messages, each padded to 4 bytes; the kernel
/// sends one per datagram. All fields are native-endian. Offsets are from
/// the start of the datagram:
///
/// ```text
///  offset  header         field          type  meaning
///  ------  -------------  -------------  ----  ---------------------------------
///       0  nlmsghdr       nlmsg_len      u32   header + payload bytes
///       4                 nlmsg_type     u16   NLMSG_DONE (3) from the connector
///       6                 nlmsg_flags    u16
///       8                 nlmsg_seq      u32
///      12                 nlmsg_pid      u32   sender's port (0: kernel)
///      16  cn_msg         id.idx         u32   CN_IDX_PROC (1)
///      20                 id.val         u32   CN_VAL_PROC (1)
///      24                 seq            u32   per-CPU counter (acks too)
///      28                 ack            u32   0; in an ack, request's + 1
///      32                 len            u16   bytes of data after cn_msg
///      34                 flags          u16
///      36  proc_event     what           u32   PROC_EVENT_*
///      40                 cpu            u32   CPU whose counter seq is
///      44                 timestamp_ns   u64   CLOCK_MONOTONIC, ns
///      52  event_data     (by what; sizes at least these)
///            ack           err u32                                      4
///            fork          parent_pid parent_tgid child_pid child_tgid  16
///            exec          pid tgid                                     8
///            uid / gid     pid tgid ruid|rgid euid|egid                 16
///            sid           pid tgid                                     8
///            ptrace        pid tgid tracer_pid tracer_tgid              16
///            comm          pid tgid comm[16]                            24
///            coredump      pid tgid (parent_pid parent_tgid)            8
///            exit          pid tgid exit_code exit_signal (parent...)   16
/// ```
///
/// The kernel sends `cn_msg.len = sizeof(struct proc_event)` (40 on current
/// kernels: the largest body is 24 bytes); older kernels' exit and coredump
/// bodies are shorter, so only the sizes above are required. Our request is
/// the same headers with a 4-byte body, the `proc_cn_mcast_op`.
pub mod layout {
    /// Size of `struct nlmsghdr`.
    pub const NLMSG_HDR_LEN: usize = 16;
    /// Netlink messages in a datagram are padded to this.
    pub const NLMSG_ALIGN: usize = 4;
    /// Offset of `nlmsg_len` in the netlink header.
    pub const NLMSG_LEN: usize = 0;
    /// Offset of `nlmsg_type`.
    pub const NLMSG_TYPE: usize = 4;
    /// Offset of `nlmsg_seq`.
    pub const NLMSG_SEQ: usize = 8;
    /// Offset of `nlmsg_pid`.
    pub const NLMSG_PID: usize = 12;
    /// `NLMSG_NOOP`: nothing; skipped.
    pub const NLMSG_NOOP: u16 = 1;
    /// `NLMSG_ERROR`.
    pub const NLMSG_ERROR: u16 = 2;
    /// `NLMSG_DONE`: the type of every connector message.
    pub const NLMSG_DONE: u16 = 3;
    /// `NLMSG_OVERRUN`.
    pub const NLMSG_OVERRUN: u16 = 4;

    /// Size of `struct cn_msg` (before its data).
    pub const CN_MSG_LEN: usize = 20;
    /// Offset of `id.idx` in `cn_msg`.
    pub const CN_IDX: usize = 0;
    /// Offset of `id.val`.
    pub const CN_VAL: usize = 4;
    /// Offset of `seq`.
    pub const CN_SEQ: usize = 8;
    /// Offset of `ack`.
    pub const CN_ACK: usize = 12;
    /// Offset of `len` (u16).
    pub const CN_DATA_LEN: usize = 16;
    /// `CN_IDX_PROC`: the process connector's index, also its group number.
    pub const CN_IDX_PROC: u32 = 1;
    /// `CN_VAL_PROC`.
    pub const CN_VAL_PROC: u32 = 1;

    /// Size of the `proc_event` header (what, cpu, timestamp_ns).
    pub const PROC_EVENT_HDR_LEN: usize = 16;
    /// Offset of `what` in `proc_event`.
    pub const PE_WHAT: usize = 0;
    /// Offset of `cpu`.
    pub const PE_CPU: usize = 4;
    /// Offset of `timestamp_ns` (u64).
    pub const PE_TIMESTAMP: usize = 8;

    /// `PROC_EVENT_NONE`: the ack of a LISTEN or IGNORE request.
    pub const PROC_EVENT_NONE: u32 = 0;
    /// `PROC_EVENT_FORK`.
    pub const PROC_EVENT_FORK: u32 = 0x0000_0001;
    /// `PROC_EVENT_EXEC`.
    pub const PROC_EVENT_EXEC: u32 = 0x0000_0002;
    /// `PROC_EVENT_UID`.
    pub const PROC_EVENT_UID: u32 = 0x0000_0004;
    /// `PROC_EVENT_GID`.
    pub const PROC_EVENT_GID: u32 = 0x0000_0040;
    /// `PROC_EVENT_SID`.
    pub const PROC_EVENT_SID: u32 = 0x0000_0080;
    /// `PROC_EVENT_PTRACE`.
    pub const PROC_EVENT_PTRACE: u32 = 0x0000_0100;
    /// `PROC_EVENT_COMM`.
    pub const PROC_EVENT_COMM: u32 = 0x0000_0200;
    /// `PROC_EVENT_COREDUMP`.
    pub const PROC_EVENT_COREDUMP: u32 = 0x4000_0000;
    /// `PROC_EVENT_EXIT`.
    pub const PROC_EVENT_EXIT: u32 = 0x8000_0000;

    /// Length of `comm` in a comm event (`TASK_COMM_LEN`).
    pub const COMM_LEN: usize = 16;

    /// The smallest body (`event_data`) a message of kind `what` must have;
    /// `None` for a kind this code does not know.
    pub const fn body_len(what: u32) -> Option<usize> {
        match what {
            PROC_EVENT_NONE => Some(4),
            PROC_EVENT_EXEC | PROC_EVENT_SID | PROC_EVENT_COREDUMP => Some(8),
            PROC_EVENT_FORK | PROC_EVENT_UID | PROC_EVENT_GID | PROC_EVENT_PTRACE
            | PROC_EVENT_EXIT => Some(16),
            PROC_EVENT_COMM => Some(8 + COMM_LEN),
            _ => None,
        }
    }

    /// `PROC_CN_MCAST_LISTEN`.
    pub const PROC_CN_MCAST_LISTEN: u32 = 1;
    /// `PROC_CN_MCAST_IGNORE`.
    pub const PROC_CN_MCAST_IGNORE: u32 = 2;

    /// Length of our LISTEN / IGNORE request.
    pub const REQUEST_LEN: usize = NLMSG_HDR_LEN + CN_MSG_LEN + 4;

    /// The native-endian `u16` at `offset`, if `bytes` holds it.
    pub fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
        let end = offset.checked_add(2)?;
        Some(u16::from_ne_bytes(bytes.get(offset..end)?.try_into().ok()?))
    }

    /// The native-endian `u32` at `offset`, if `bytes` holds it.
    pub fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
        let end = offset.checked_add(4)?;
        Some(u32::from_ne_bytes(bytes.get(offset..end)?.try_into().ok()?))
    }

    /// The native-endian `u64` at `offset`, if `bytes` holds it.
    pub fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
        let end = offset.checked_add(8)?;
        Some(u64::from_ne_bytes(bytes.get(offset..end)?.try_into().ok()?))
    }

    /// A connector message with `data` after its headers: connector `seq`
    /// and `ack`, from netlink port `port`.
    fn message(seq: u32, ack: u32, port: u32, data: &[u8]) -> Vec<u8> {
        let total = NLMSG_HDR_LEN + CN_MSG_LEN + data.len();
        let mut msg = vec![0u8; total];
        let mut put = |offset: usize, bytes: &[u8]| {
            msg[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(
            NLMSG_LEN,
            &u32::try_from(total).unwrap_or(u32::MAX).to_ne_bytes(),
        );
        put(NLMSG_TYPE, &NLMSG_DONE.to_ne_bytes());
        put(NLMSG_SEQ, &seq.to_ne_bytes());
        put(NLMSG_PID, &port.to_ne_bytes());
        let cn = NLMSG_HDR_LEN;
        put(cn + CN_IDX, &CN_IDX_PROC.to_ne_bytes());
        put(cn + CN_VAL, &CN_VAL_PROC.to_ne_bytes());
        put(cn + CN_SEQ, &seq.to_ne_bytes());
        put(cn + CN_ACK, &ack.to_ne_bytes());
        let data_len = u16::try_from(data.len()).unwrap_or(u16::MAX);
        put(cn + CN_DATA_LEN, &data_len.to_ne_bytes());
        put(cn + CN_MSG_LEN, data);
        msg
    }

    /// A LISTEN or IGNORE request (`op`) with connector `seq` and `ack`,
    /// from netlink port `port`; [`REQUEST_LEN`] bytes.
    pub fn request(op: u32, seq: u32, ack: u32, port: u32) -> Vec<u8> {
        message(seq, ack, port, &op.to_ne_bytes())
    }

    /// A process event message as the kernel builds it: `what` from `cpu`
    /// with sequence number `seq`, `body` as native-endian words, padded to
    /// `sizeof(struct proc_event)`. For tests and tools; the kernel's own
    /// are never built here.
    pub fn event(what: u32, cpu: u32, seq: u32, timestamp_ns: u64, body: &[u32]) -> Vec<u8> {
        const PROC_EVENT_LEN: usize = 40;
        let mut data = Vec::with_capacity(PROC_EVENT_LEN);
        data.extend_from_slice(&what.to_ne_bytes());
        data.extend_from_slice(&cpu.to_ne_bytes());
        data.extend_from_slice(&timestamp_ns.to_ne_bytes());
        for word in body {
            data.extend_from_slice(&word.to_ne_bytes());
        }
        if data.len() < PROC_EVENT_LEN {
            data.resize(PROC_EVENT_LEN, 0);
        }
        message(seq, 0, 0, &data)
    }

    /// If `datagram` is a connector ack (`PROC_EVENT_NONE`) answering a
    /// request that carried `ack`, its `err` (0: accepted). The kernel
    /// multicasts acks to every listener, and (since it sends them like
    /// events) replaces the request's `seq` with its per-CPU counter: only
    /// the `ack` field, which it sets to the request's plus one, tells ours
    /// from another listener's, so the request's `ack` should be unlikely
    /// for anyone else to pick.
    pub fn ack_error(datagram: &[u8], ack: u32) -> Option<u32> {
        let nl_len = usize::try_from(u32_at(datagram, NLMSG_LEN)?).ok()?;
        let msg = datagram.get(..nl_len)?;
        if u16_at(msg, NLMSG_TYPE)? != NLMSG_DONE {
            return None;
        }
        let cn = msg.get(NLMSG_HDR_LEN..)?;
        let data_len = usize::from(u16_at(cn, CN_DATA_LEN)?);
        let data = cn.get(CN_MSG_LEN..CN_MSG_LEN.checked_add(data_len)?)?;
        let ours = u32_at(cn, CN_IDX)? == CN_IDX_PROC
            && u32_at(cn, CN_VAL)? == CN_VAL_PROC
            && u32_at(cn, CN_ACK)? == ack.wrapping_add(1)
            && u32_at(data, PE_WHAT)? == PROC_EVENT_NONE;
        if !ours {
            return None;
        }
        u32_at(data, PROC_EVENT_HDR_LEN)
    }
}

/// Why the process connector could not be subscribed to.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// Switched off by the environment ([`DISABLE_ENV`]).
    #[error("the process connector is switched off ({DISABLE_ENV}=off)")]
    Disabled,
    /// The kernel has no process connector (`NETLINK_CONNECTOR` unknown, or
    /// the connector built without `CONFIG_PROC_EVENTS`).
    #[error("the kernel has no process connector ({during}: {source})")]
    Unsupported {
        /// The step that failed.
        during: &'static str,
        /// The kernel's error.
        source: io::Error,
    },
    /// The kernel refused: joining the group or listening needs
    /// `CAP_NET_ADMIN` in the initial user namespace.
    #[error(
        "the process connector needs CAP_NET_ADMIN in the initial user namespace ({during} refused)"
    )]
    PermissionDenied {
        /// The step that was refused.
        during: &'static str,
    },
    /// The kernel did not acknowledge the LISTEN request in time. It ignores
    /// requests, without an answer, from processes outside the initial user
    /// and pid namespaces, which is the usual cause.
    #[error(
        "no acknowledgement from the process connector within {waited:?}: the kernel ignores \
         listeners outside the initial user and pid namespaces (and some kernels, listeners \
         without CAP_NET_ADMIN)"
    )]
    NoAck {
        /// How long the ack was waited for.
        waited: Duration,
    },
    /// The kernel answered the LISTEN request with an error other than
    /// `EPERM`.
    #[error("the process connector refused to listen: errno {errno}")]
    Rejected {
        /// The errno the kernel's ack carried.
        errno: u32,
    },
    /// Another system call failed.
    #[error("process connector: {during}: {source}")]
    Io {
        /// The step that failed.
        during: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// What one [`CnProcSocket::recv`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// A datagram of `len` bytes is at the start of the buffer.
    Datagram {
        /// Bytes received (at most the buffer's length).
        len: usize,
        /// The sender's netlink port: 0 for the kernel; `None` when the
        /// kernel gave no netlink address (never expected).
        sender_port: Option<u32>,
        /// The datagram was longer than the buffer and was cut short.
        truncated: bool,
    },
    /// The receive buffer overflowed (`ENOBUFS`): the kernel dropped events.
    /// The socket remains subscribed.
    Overrun,
    /// Nothing arrived within the timeout.
    TimedOut,
    /// [`Waker::wake`] was called (the wake is consumed).
    Woken,
}

/// What [`CnProcSocket::wait_ready`] waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// A datagram or an overrun is queued.
    Queued,
    /// Nothing came within the timeout.
    TimedOut,
    /// [`Waker::wake`] was called (the wake is consumed).
    Woken,
}

/// Tells whether anything is queued on a [`CnProcSocket`], from any thread;
/// cheap to clone.
#[derive(Clone, Debug)]
pub struct QueueProbe(Arc<OwnedFd>);

impl QueueProbe {
    /// True when a datagram or an overrun (`ENOBUFS`) is queued now: one
    /// `poll(2)` with a zero timeout.
    pub fn is_queued(&self) -> io::Result<bool> {
        let mut fds = [PollFd::new(&*self.0, PollFlags::IN)];
        match rustix::event::poll(
            &mut fds,
            Some(&Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        ) {
            // ERR (a pending ENOBUFS) counts as queued: recvfrom reports it.
            Ok(_) => Ok(!fds[0].revents().is_empty()),
            // Interrupted before it looked: say queued, so the caller takes
            // the slow, sure path.
            Err(Errno::INTR) => Ok(true),
            Err(err) => Err(err.into()),
        }
    }
}

/// Wakes a thread blocked in [`CnProcSocket::recv`] (see
/// [`CnProcSocket::waker`]): makes the current or next `recv` return
/// [`Received::Woken`].
pub use super::wake::Waker;

/// A netlink socket subscribed to the kernel's process events; see the
/// [module documentation](self). Dropping it sends `PROC_CN_MCAST_IGNORE`.
#[derive(Debug)]
pub struct CnProcSocket {
    fd: Arc<OwnedFd>,
    wake: Waker,
    port: u32,
    nonce: u32,
    /// The kernel acknowledged our LISTEN (so an IGNORE is owed at drop).
    listening: bool,
}

impl CnProcSocket {
    /// Opens a connector socket with a receive buffer of (at least, where
    /// the kernel allows) `recv_buffer_bytes`, joins the process events
    /// group and waits up to `ack_timeout` for the kernel to acknowledge
    /// the subscription.
    ///
    /// The buffer is set with `SO_RCVBUFFORCE` (which needs `CAP_NET_ADMIN`
    /// and ignores `net.core.rmem_max`), falling back to `SO_RCVBUF`
    /// (capped by `rmem_max`). Datagrams that arrive while waiting for the
    /// ack (events for other listeners) are discarded.
    pub fn subscribe(
        recv_buffer_bytes: usize,
        ack_timeout: Duration,
    ) -> Result<CnProcSocket, SubscribeError> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::CONNECTOR),
        )
        .map_err(|err| match err {
            Errno::AFNOSUPPORT | Errno::PROTONOSUPPORT => SubscribeError::Unsupported {
                during: "socket",
                source: err.into(),
            },
            _ => io_error("socket", err),
        })?;
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, recv_buffer_bytes).is_err()
        {
            rustix::net::sockopt::set_socket_recv_buffer_size(&fd, recv_buffer_bytes)
                .map_err(|err| io_error("setsockopt SO_RCVBUF", err))?;
        }
        let group_mask = 1u32 << (layout::CN_IDX_PROC - 1);
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, group_mask)).map_err(
            |err| match err {
                Errno::PERM | Errno::ACCESS => SubscribeError::PermissionDenied {
                    during: "joining the process events group",
                },
                Errno::NOENT => SubscribeError::Unsupported {
                    during: "bind",
                    source: err.into(),
                },
                _ => io_error("bind", err),
            },
        )?;
        let port = local_port(&fd).map_err(|err| SubscribeError::Io {
            during: "getsockname",
            source: err,
        })?;
        let wake = Waker::new().map_err(|source| SubscribeError::Io {
            during: "eventfd",
            source,
        })?;
        // The request's `ack`, by which our ack is told from other
        // listeners' (see `layout::ack_error`); never 0, which most use.
        let nonce = (port ^ std::process::id().rotate_left(16)) | 1;
        let mut socket = CnProcSocket {
            fd: Arc::new(fd),
            wake,
            port,
            nonce,
            listening: false,
        };
        socket
            .send_op(layout::PROC_CN_MCAST_LISTEN)
            .map_err(|err| SubscribeError::Io {
                during: "sending PROC_CN_MCAST_LISTEN",
                source: err,
            })?;
        socket.await_ack(ack_timeout)?;
        socket.listening = true;
        Ok(socket)
    }

    /// Our netlink port (assigned by the kernel at bind): where a local
    /// process would have to send to spoof an event.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// The receive buffer size the kernel reports (it doubles the requested
    /// size for its bookkeeping).
    pub fn recv_buffer_bytes(&self) -> io::Result<usize> {
        Ok(rustix::net::sockopt::socket_recv_buffer_size(&self.fd)?)
    }

    /// A handle that wakes a `recv` on this socket from another thread.
    pub fn waker(&self) -> Waker {
        self.wake.clone()
    }

    /// A handle that tells, from another thread, whether anything is
    /// queued on this socket.
    pub fn probe(&self) -> QueueProbe {
        QueueProbe(Arc::clone(&self.fd))
    }

    /// Waits up to `timeout` (`None`: without limit) until a datagram or
    /// an overrun is queued, or a wake comes, without receiving: the caller
    /// then drains with [`try_recv`](Self::try_recv). A pending wake is
    /// reported (and consumed) first, as by [`recv`](Self::recv).
    pub fn wait_ready(&self, timeout: Option<Duration>) -> io::Result<Ready> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            // None: without limit (no timeout, or one too long to add to now).
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let (socket_ready, woken) = self.wait(remaining)?;
            if woken {
                self.wake.consume()?;
                return Ok(Ready::Woken);
            }
            if socket_ready {
                return Ok(Ready::Queued);
            }
            if remaining.is_some_and(|r| r.is_zero()) {
                return Ok(Ready::TimedOut);
            }
        }
    }

    /// Waits up to `timeout` (`None`: without limit) for a datagram, an
    /// overrun, or a wake, and receives the datagram into `buf`. A pending
    /// wake is reported first, so a stop request is never starved by a
    /// busy socket.
    pub fn recv(&self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<Received> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            // None: without limit (no timeout, or one too long to add to now).
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.wait_ready(remaining)? {
                Ready::Woken => return Ok(Received::Woken),
                Ready::TimedOut => return Ok(Received::TimedOut),
                Ready::Queued => {
                    if let Some(received) = self.try_recv(buf)? {
                        return Ok(received);
                    }
                }
            }
        }
    }

    /// Receives a datagram (or an overrun) already queued, without waiting
    /// and without looking at the waker; `None` when nothing is queued.
    /// One system call: how a reader drains what came in a burst.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        loop {
            return match rustix::net::recvfrom(
                &self.fd,
                &mut *buf,
                RecvFlags::DONTWAIT | RecvFlags::TRUNC,
            ) {
                Ok((len, full_len, addr)) => {
                    let sender_port = addr
                        .and_then(|addr| SocketAddrNetlink::try_from(addr).ok())
                        .map(|addr| addr.pid());
                    Ok(Some(Received::Datagram {
                        len,
                        sender_port,
                        truncated: full_len > len,
                    }))
                }
                Err(Errno::NOBUFS) => Ok(Some(Received::Overrun)),
                Err(Errno::AGAIN) => Ok(None),
                Err(Errno::INTR) => continue,
                Err(err) => Err(err.into()),
            };
        }
    }

    /// Polls the socket and the eventfd; returns (socket readable, woken).
    fn wait(&self, timeout: Option<Duration>) -> io::Result<(bool, bool)> {
        let timeout = timeout.map(|t| Timespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let mut fds = [
            PollFd::new(&self.fd, PollFlags::IN),
            PollFd::new(&self.wake, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(Errno::INTR) => return Ok((false, false)),
            Err(err) => return Err(err.into()),
        }
        // ERR on the socket is how a pending ENOBUFS shows: recvfrom reports it.
        let socket = !fds[0].revents().is_empty();
        let woken = !fds[1].revents().is_empty();
        Ok((socket, woken))
    }

    fn send_op(&self, op: u32) -> io::Result<()> {
        let msg = layout::request(op, 0, self.nonce, self.port);
        rustix::net::sendto(
            &self.fd,
            &msg,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )?;
        Ok(())
    }

    fn await_ack(&self, timeout: Duration) -> Result<(), SubscribeError> {
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            let remaining = timeout.saturating_sub(started.elapsed());
            let got = self
                .recv(&mut buf, Some(remaining))
                .map_err(|err| SubscribeError::Io {
                    during: "waiting for the LISTEN ack",
                    source: err,
                })?;
            match got {
                Received::Datagram {
                    len,
                    sender_port: Some(0),
                    truncated: false,
                } => match buf
                    .get(..len)
                    .and_then(|d| layout::ack_error(d, self.nonce))
                {
                    Some(0) => return Ok(()),
                    Some(errno) if errno == Errno::PERM.raw_os_error() as u32 => {
                        return Err(SubscribeError::PermissionDenied {
                            during: "PROC_CN_MCAST_LISTEN",
                        });
                    }
                    Some(errno) => return Err(SubscribeError::Rejected { errno }),
                    None => {}
                },
                // Not the kernel's, or cut short: not our ack.
                Received::Datagram { .. } | Received::Overrun | Received::Woken => {}
                Received::TimedOut => {
                    return Err(SubscribeError::NoAck {
                        waited: started.elapsed(),
                    });
                }
            }
        }
    }
}

impl Drop for CnProcSocket {
    fn drop(&mut self) {
        // Best effort, and only after an acknowledged LISTEN: the kernel
        // counts LISTEN requests (not sockets) to decide whether to build
        // events at all, and closing the socket does not undo ours on every
        // kernel; an IGNORE without a LISTEN would undo someone else's.
        if !self.listening {
            return;
        }
        if let Err(error) = self.send_op(layout::PROC_CN_MCAST_IGNORE) {
            tracing::debug!(%error, "PROC_CN_MCAST_IGNORE not sent");
        }
    }
}

/// The netlink port the kernel gave `fd` at bind.
pub fn local_port(fd: impl AsFd) -> io::Result<u32> {
    let addr = rustix::net::getsockname(fd)?;
    let addr = SocketAddrNetlink::try_from(addr)?;
    Ok(addr.pid())
}

fn io_error(during: &'static str, err: Errno) -> SubscribeError {
    SubscribeError::Io {
        during,
        source: err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::layout::*;
    use super::*;

    #[test]
    fn a_request_has_the_documented_layout() {
        let msg = request(PROC_CN_MCAST_LISTEN, 7, 0, 42);
        assert_eq!(u32_at(&msg, NLMSG_LEN), Some(REQUEST_LEN as u32));
        assert_eq!(u16_at(&msg, NLMSG_TYPE), Some(NLMSG_DONE));
        assert_eq!(u32_at(&msg, NLMSG_PID), Some(42));
        assert_eq!(u32_at(&msg, 16), Some(CN_IDX_PROC));
        assert_eq!(u32_at(&msg, 24), Some(7));
        assert_eq!(u16_at(&msg, 32), Some(4));
        assert_eq!(u32_at(&msg, 36), Some(PROC_CN_MCAST_LISTEN));
    }

    #[test]
    fn readers_refuse_bytes_past_the_end() {
        let bytes = [1u8; 7];
        assert_eq!(u32_at(&bytes, 3), Some(u32::from_ne_bytes([1; 4])));
        assert_eq!(u32_at(&bytes, 4), None);
        assert_eq!(u64_at(&bytes, 0), None);
        assert_eq!(u16_at(&bytes, usize::MAX), None);
    }

    #[test]
    fn subscribes_here_and_says_which_port() {
        // We are root in the initial namespaces here: the kernel must ack.
        let socket = CnProcSocket::subscribe(1 << 20, Duration::from_secs(2)).unwrap();
        assert_ne!(socket.port(), 0);
        assert!(socket.recv_buffer_bytes().unwrap() >= 1 << 20);
    }

    #[test]
    fn a_wake_ends_a_blocking_recv_from_another_thread() {
        let socket = CnProcSocket::subscribe(1 << 16, Duration::from_secs(2)).unwrap();
        let waker = socket.waker();
        let wakes = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.wake().unwrap();
        });
        let mut buf = [0u8; 512];
        // Events of other processes may arrive first; the wake must too.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match socket
                .recv(&mut buf, Some(Duration::from_secs(10)))
                .unwrap()
            {
                Received::Woken => break,
                Received::TimedOut => panic!("the wake did not end the wait"),
                _ => assert!(Instant::now() < deadline, "no wake within 10 s"),
            }
        }
        wakes.join().unwrap();
    }

    #[test]
    fn recv_times_out_when_nothing_comes() {
        let socket = CnProcSocket::subscribe(1 << 16, Duration::from_secs(2)).unwrap();
        let mut buf = [0u8; 512];
        // Other processes' events may come, but a zero timeout ends at once.
        let got = socket.recv(&mut buf, Some(Duration::ZERO)).unwrap();
        assert!(
            matches!(got, Received::TimedOut | Received::Datagram { .. }),
            "{got:?}"
        );
    }

    #[test]
    fn the_probe_sees_a_queued_event_until_it_is_received() {
        let socket = CnProcSocket::subscribe(1 << 20, Duration::from_secs(2)).unwrap();
        let probe = socket.probe();
        // Our own fork, exec and exit are queued once the child is reaped.
        let status = std::process::Command::new("/bin/true").status().unwrap();
        assert!(status.success());
        assert!(probe.is_queued().unwrap(), "our child's events are queued");
        // And wait_ready says so at once, without receiving.
        assert_eq!(
            socket.wait_ready(Some(Duration::ZERO)).unwrap(),
            Ready::Queued
        );
        assert!(probe.is_queued().unwrap(), "wait_ready received nothing");
        // Drained (bounded: other processes' events may keep coming).
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(10);
        while socket.try_recv(&mut buf).unwrap().is_some() {
            assert!(Instant::now() < deadline, "the socket never drained");
        }
    }
}
