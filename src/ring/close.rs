//! Closing a ring, from the side itself or from another thread.
//!
//! A side closes by setting its own closed flag (Release) and then waking
//! both sides' futex words if they are parked (after the protocol's SeqCst
//! fence, see [`wait`](super::wait)). Every blocking call re-checks both
//! closed flags after announcing a park, so a close ends a wait at once.

use super::segment::Shared;
use super::sync::{Ordering, fence};
use super::wait::wake_if_parked;
use std::sync::Arc;

/// A cloneable handle that closes one side of a ring from any thread.
///
/// Get one with [`Producer::closer`](super::Producer::closer) or
/// [`Consumer::closer`](super::Consumer::closer). A thread watching the
/// control socket can use it to end the side's blocking calls at once (they
/// return `Closed`) and tell the peer the ring is closed. Closing twice is
/// harmless. The handle keeps the shared memory mapped while it lives.
#[derive(Clone, Debug)]
pub struct Closer {
    shared: Arc<Shared>,
}

impl Closer {
    pub(crate) fn new(shared: Arc<Shared>) -> Closer {
        Closer { shared }
    }

    /// Closes this side of the ring and wakes both sides.
    pub fn close(&self) {
        close(&self.shared);
    }

    /// Says the peer is gone, learnt from outside the ring (the control
    /// socket ended). Unlike [`close`](Self::close), a consumer first reads
    /// every frame the peer published, then its blocking reads return
    /// `PeerGone` (and `try_read` `TryReadError::PeerGone`); a producer's
    /// claims fail with `Closed`, as after a close.
    pub fn mark_peer_gone(&self) {
        mark_peer_gone(&self.shared);
    }

    /// Whether this side has been closed.
    pub fn is_closed(&self) -> bool {
        // Relaxed: a status read; nothing is read on the strength of it.
        self.shared.own_closed().load(Ordering::Relaxed) != 0
    }
}

/// Sets this side's closed flag and wakes both sides if parked.
pub(crate) fn close(shared: &Shared) {
    // Release: pairs with the peer's Acquire load of the flag, so a consumer
    // that sees the producer closed also sees every header word and
    // position it stored before closing.
    shared.own_closed().store(1, Ordering::Release);
    // SeqCst fence: orders the flag store before the loads of the futex
    // words, against a waiter's store of PARKED before its re-check.
    fence(Ordering::SeqCst);
    let lines = shared.consumer_lines();
    wake_if_parked(&lines.consumer_wait);
    wake_if_parked(&lines.producer_wait);
}

/// Marks the peer gone in this process and wakes this side if parked.
pub(crate) fn mark_peer_gone(shared: &Shared) {
    if shared.is_producer() {
        // The consumer's reads are what there is to drain; a producer has
        // nothing to read, so for it this is a close.
        close(shared);
        return;
    }
    // Release: pairs with the Acquire load in the consumer's poll, so a
    // reader that sees the mark re-reads the producer position after it.
    shared.peer_gone().store(true, Ordering::Release);
    // SeqCst fence: orders the mark before the load of the futex word,
    // against a waiter's store of PARKED before its re-check (as in close).
    fence(Ordering::SeqCst);
    wake_if_parked(&shared.consumer_lines().consumer_wait);
}
