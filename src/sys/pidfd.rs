//! A pidfd: a handle on a process that tells, without blocking, whether the
//! process has exited. Unlike a pid, it cannot come to name another process
//! after the first one is reaped.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags};

/// A handle on one process.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for the live process `pid`. Fails with `ESRCH` when no
    /// such process exists and `EINVAL` for pid 0 or a negative pid.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let raw = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let pid = Pid::from_raw(raw).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(PidFd(rustix::process::pidfd_open(
            pid,
            PidfdFlags::empty(),
        )?))
    }

    /// Wraps a descriptor that already is a pidfd (say, one received from
    /// another process).
    pub fn from_owned(fd: OwnedFd) -> PidFd {
        PidFd(fd)
    }

    /// Whether the process has exited (it may not have been reaped yet).
    /// Never blocks.
    pub fn has_exited(&self) -> io::Result<bool> {
        self.wait_exit(Duration::ZERO)
    }

    /// Waits up to `timeout` for the process to exit; returns whether it has.
    pub fn wait_exit(&self, timeout: Duration) -> io::Result<bool> {
        let timeout = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        loop {
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                // A pidfd becomes readable when the process exits.
                Ok(ready) => return Ok(ready > 0),
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn sees_a_child_exit() {
        // `cat` runs until its stdin closes: the test decides when it exits.
        let mut child = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
        let pidfd = PidFd::open(child.id()).unwrap();
        assert!(!pidfd.has_exited().unwrap());
        drop(child.stdin.take());
        assert!(pidfd.wait_exit(Duration::from_secs(10)).unwrap());
        // Exited but not yet reaped still counts as exited.
        assert!(pidfd.has_exited().unwrap());
        child.wait().unwrap();
        assert!(pidfd.has_exited().unwrap());
    }

    #[test]
    fn own_process_is_alive() {
        let pidfd = PidFd::open(std::process::id()).unwrap();
        assert!(!pidfd.has_exited().unwrap());
        assert!(!pidfd.wait_exit(Duration::from_millis(1)).unwrap());
    }

    #[test]
    fn bad_pids_are_refused() {
        assert!(PidFd::open(0).is_err());
        assert!(PidFd::open(u32::MAX).is_err());
    }
}
