//! A thread that watches the control socket and turns procmond's departure
//! into a "peer gone" mark on the ring, so a read blocked in the ring
//! returns at once, after what procmond published before it went.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::control::{ClientChannel, ControlError};
use crate::proto::control::{Status, server_frame};
use crate::ring::Closer;

/// Why the connection ended, once the watcher knows: shared by the agent
/// and its watcher.
///
/// procmond says why before it closes a ring, but the agent's reader can
/// see the ring closed before the watcher has read that frame (on a busy
/// machine, by milliseconds), so a reader that finds the ring closed
/// waits for the watcher's verdict ([`GoneReason::wait`]).
#[derive(Clone, Debug, Default)]
pub(super) struct GoneReason(Arc<(Mutex<Option<Gone>>, Condvar)>);

impl GoneReason {
    /// Whether the watcher has said why.
    pub(super) fn is_known(&self) -> bool {
        self.0.0.lock().map_or(true, |why| why.is_some())
    }

    /// Why, as soon as the watcher knows, waiting at most `within`.
    pub(super) fn wait(&self, within: Duration) -> Option<Gone> {
        let (slot, known) = &*self.0;
        let slot = slot.lock().ok()?;
        // wait_timeout_while measures `within` itself: no deadline to overflow.
        let (slot, _) = known
            .wait_timeout_while(slot, within, |why| why.is_none())
            .ok()?;
        slot.clone()
    }

    /// Records why (the first reason stands) and wakes every waiter.
    fn set(&self, why: Gone) {
        let (slot, known) = &*self.0;
        if let Ok(mut slot) = slot.lock() {
            slot.get_or_insert(why);
        }
        known.notify_all();
    }
}

/// How the connection ended.
#[derive(Clone, Debug)]
pub(super) enum Gone {
    /// procmond ended it and said why (an Error frame).
    Ended(String),
    /// The socket ended or broke; what was seen.
    Lost(String),
}

/// Starts the watcher: it reads procmond's frames until the socket ends or
/// breaks, records why in `gone`, then marks the ring's peer gone with
/// `closer` (reads drain what was published, then end). Status answers
/// are handed to `statuses`.
pub(super) fn spawn(
    mut channel: ClientChannel,
    closer: Closer,
    gone: GoneReason,
    statuses: Sender<Status>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("agent-watcher".into())
        .spawn(move || {
            let why = loop {
                match channel.recv(None) {
                    // Status answers go to the agent that asked.
                    Ok(server_frame::Body::Status(status)) => {
                        let _ = statuses.send(status);
                    }
                    // Task replies: this agent reads its answers from the ring.
                    Ok(_) => continue,
                    Err(ControlError::PeerGone) => {
                        break Gone::Lost("procmond closed the control socket".to_owned());
                    }
                    Err(ControlError::PeerError { message }) => break Gone::Ended(message),
                    Err(other) => break Gone::Lost(format!("control socket failed: {other}")),
                }
            };
            gone.set(why);
            closer.mark_peer_gone();
        })
}
