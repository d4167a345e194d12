//! A thread that watches the control socket and turns procmond's departure
//! into a "peer gone" mark on the ring, so a read blocked in the ring
//! returns at once, after what procmond published before it went.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crate::control::{ClientChannel, ControlError};
use crate::proto::control::{Status, server_frame};
use crate::ring::Closer;

/// Why the connection ended, once it has.
pub(super) type GoneReason = Arc<Mutex<Option<Gone>>>;

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
            if let Ok(mut slot) = gone.lock() {
                slot.get_or_insert(why);
            }
            closer.mark_peer_gone();
        })
}
