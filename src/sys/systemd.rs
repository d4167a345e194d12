//! What systemd gives and expects of a service, through the sd-notify crate
//! (small, maintained, libc only; no libsystemd to link):
//!
//! - socket activation: the listening socket systemd made from
//!   `procmond.socket`, passed as descriptor 3 with `LISTEN_FDS=1` and
//!   `LISTEN_PID` naming this process ([`take_listen_socket`]);
//! - the notify protocol of `Type=notify`: `READY=1`, `STOPPING=1` and, when
//!   the unit sets `WatchdogSec=` (`WATCHDOG_USEC` in the environment),
//!   `WATCHDOG=1` at least that often, each a datagram to `NOTIFY_SOCKET`
//!   ([`notify`], [`watchdog_interval`]).
//!
//! Outside systemd none of these variables is set: no socket is passed and
//! every notification is a no-op.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::fs::FileType;
use rustix::net::{AddressFamily, SocketType};

/// Why a socket passed by the service manager cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_PID` or `LISTEN_FDS` is not a number, or the descriptors
    /// could not be made close-on-exec.
    #[error("unusable LISTEN_PID/LISTEN_FDS from the service manager: {0}")]
    Environment(#[source] io::Error),
    /// Not exactly one descriptor was passed.
    #[error(
        "the service manager passed {count} descriptors (LISTEN_FDS); procmond serves exactly one socket"
    )]
    Count {
        /// How many `LISTEN_FDS` said.
        count: usize,
    },
    /// The descriptor is not a listening Unix stream socket.
    #[error(
        "descriptor {fd} from the service manager is {what}; procmond needs a listening Unix stream socket (ListenStream=PATH, Accept=no)"
    )]
    Unsuitable {
        /// The descriptor number.
        fd: RawFd,
        /// What it is instead.
        what: &'static str,
    },
    /// Inspecting the descriptor failed.
    #[error("cannot inspect descriptor {fd} from the service manager: {source}")]
    Inspect {
        /// The descriptor number.
        fd: RawFd,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// [`take_listen_socket`] already took them.
    #[error("the service manager's descriptors were already taken")]
    AlreadyTaken,
}

/// Set once the passed descriptors are owned, so no second call can own
/// them again.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The listening socket systemd passed to this process, if any.
///
/// `None` when `LISTEN_PID` is unset or names another process (the
/// variables were inherited, not meant for us) or `LISTEN_FDS` is 0. One
/// descriptor (3) must have been passed, and it must be a Unix stream
/// socket that listens; anything else is an [`ActivationError`] (the
/// descriptors are then closed). Call it first thing in `main`, before any
/// file or socket is opened, and once: a later call is
/// [`ActivationError::AlreadyTaken`].
pub fn take_listen_socket() -> Result<Option<UnixListener>, ActivationError> {
    let fds = sd_notify::listen_fds().map_err(ActivationError::Environment)?;
    if fds.len() == 0 {
        return Ok(None);
    }
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(ActivationError::AlreadyTaken);
    }
    let count = fds.len();
    let owned: Vec<OwnedFd> = fds
        // SAFETY: `listen_fds` returned these numbers only because
        // LISTEN_PID names this process: whoever exec'd it passed them
        // open, from 3 on, for this process to own (sd_listen_fds(3)); it
        // also checked each is open (F_GETFD) as it set close-on-exec.
        // `TAKEN` makes this the one place in the process that takes
        // ownership, and callers run it before opening anything that could
        // have been given one of these numbers.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let [fd] = <[OwnedFd; 1]>::try_from(owned).map_err(|_| ActivationError::Count { count })?;
    check_listening_unix_stream(&fd)?;
    Ok(Some(UnixListener::from(fd)))
}

/// `fd` is a Unix stream socket in the listening state.
fn check_listening_unix_stream(fd: &OwnedFd) -> Result<(), ActivationError> {
    use std::os::fd::AsRawFd;
    let number = fd.as_raw_fd();
    let inspect = |source: rustix::io::Errno| ActivationError::Inspect {
        fd: number,
        source: source.into(),
    };
    let unsuitable = |what| ActivationError::Unsuitable { fd: number, what };
    let stat = rustix::fs::fstat(fd).map_err(inspect)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
        return Err(unsuitable("not a socket"));
    }
    if rustix::net::sockopt::socket_domain(fd.as_fd()).map_err(inspect)? != AddressFamily::UNIX {
        return Err(unsuitable("not a Unix socket"));
    }
    if rustix::net::sockopt::socket_type(fd.as_fd()).map_err(inspect)? != SocketType::STREAM {
        return Err(unsuitable("not a stream socket"));
    }
    if !rustix::net::sockopt::socket_acceptconn(fd.as_fd()).map_err(inspect)? {
        return Err(unsuitable("a socket that does not listen"));
    }
    Ok(())
}

/// A state change for the service manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`: procmond serves.
    Ready,
    /// `STOPPING=1`: procmond is shutting down.
    Stopping,
    /// `WATCHDOG=1`: the serving loop is alive.
    Watchdog,
}

/// Tells the service manager `notice` (a datagram to `NOTIFY_SOCKET`);
/// nothing to do, and `Ok`, when that variable is unset.
pub fn notify(notice: Notice) -> io::Result<()> {
    let state = match notice {
        Notice::Ready => sd_notify::NotifyState::Ready,
        Notice::Stopping => sd_notify::NotifyState::Stopping,
        Notice::Watchdog => sd_notify::NotifyState::Watchdog,
    };
    sd_notify::notify(&[state])
}

/// How often to send [`Notice::Watchdog`]: half the unit's `WatchdogSec=`
/// (`WATCHDOG_USEC`, for this process if `WATCHDOG_PID` says so), as
/// sd_watchdog_enabled(3) advises; `None` without a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|usec| !usec.is_zero())
        .map(|timeout| timeout / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listening_unix_stream_socket_is_taken() {
        let dir = std::env::temp_dir().join(format!("de-systemd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        struct Gone(std::path::PathBuf);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _gone = Gone(dir.clone());
        let listener = UnixListener::bind(dir.join("s")).unwrap();
        check_listening_unix_stream(&OwnedFd::from(listener)).expect("a listener");

        let what = |fd: OwnedFd| match check_listening_unix_stream(&fd) {
            Err(ActivationError::Unsuitable { what, .. }) => what,
            other => panic!("{other:?}"),
        };
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(what(a.into()), "a socket that does not listen");
        let datagram = std::os::unix::net::UnixDatagram::unbound().unwrap();
        assert_eq!(what(datagram.into()), "not a stream socket");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(what(tcp.into()), "not a Unix socket");
        let (read, _write) = nix::unistd::pipe().unwrap();
        assert_eq!(what(read), "not a socket");
    }
}
