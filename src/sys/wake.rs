//! An eventfd that ends another thread's `poll(2)` at once: how a thread
//! blocked on a socket (the process connector, procmond's listener) is told
//! to stop. No `unsafe` here: rustix wraps every call.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::event::EventfdFlags;
use rustix::io::Errno;

/// A wake-up flag a poller waits on beside its socket; cheap to clone
/// (every clone is the same eventfd) and usable from any thread.
#[derive(Clone, Debug)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    /// A new eventfd, not yet woken (close-on-exec, non-blocking).
    pub fn new() -> io::Result<Waker> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Waker(Arc::new(fd)))
    }

    /// Makes the eventfd readable, so a `poll` on it ends now or at once
    /// when it starts; stays so until [`consume`](Self::consume).
    pub fn wake(&self) -> io::Result<()> {
        match rustix::io::write(&*self.0, &1u64.to_ne_bytes()) {
            // EAGAIN: the counter is at its maximum, so a wake is pending.
            Ok(_) | Err(Errno::AGAIN) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Takes the pending wakes, if any, so the next `poll` waits again.
    pub fn consume(&self) -> io::Result<()> {
        let mut count = [0u8; 8];
        match rustix::io::read(&*self.0, &mut count) {
            Ok(_) | Err(Errno::AGAIN) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

impl AsFd for Waker {
    /// The eventfd, to poll for readability.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{PollFd, PollFlags, Timespec};

    fn readable(waker: &Waker) -> bool {
        let mut fds = [PollFd::new(waker, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&zero)).unwrap() == 1
    }

    #[test]
    fn a_wake_stays_until_consumed_and_clones_share_it() {
        let waker = Waker::new().unwrap();
        assert!(!readable(&waker));
        let other = waker.clone();
        other.wake().unwrap();
        other.wake().unwrap();
        assert!(readable(&waker));
        waker.consume().unwrap();
        assert!(!readable(&other));
        // Consuming with nothing pending is no error.
        waker.consume().unwrap();
    }
}
