//! What can go wrong for an agent, each case naming its cause.

use std::io;
use std::path::PathBuf;

use crate::control::ControlError;
use crate::ring::RingError;
use crate::session::SessionError;
use crate::sys::fs::OpenRegularError;

/// An agent-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the socket path (missing, or a stale socket).
    #[error("procmond is not running: cannot connect to {path}: {source}")]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// What `connect` said.
        #[source]
        source: io::Error,
    },
    /// No socket at any of the default paths.
    #[error("procmond is not running: no socket at {}", list(tried))]
    NoSocket {
        /// The paths looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// procmond refused this agent (not in its allow-list, too many clients,
    /// ...).
    #[error("procmond refused the connection: {reason}")]
    Refused {
        /// procmond's reason, with its refusal code.
        reason: String,
    },
    /// procmond speaks another control protocol version.
    #[error(
        "control protocol version mismatch: this agent speaks version {ours}, procmond version {theirs}"
    )]
    VersionMismatch {
        /// This agent's version.
        ours: u32,
        /// procmond's.
        theirs: u32,
    },
    /// procmond went away (it exited, was killed, or closed the connection).
    #[error("peer gone: {detail}")]
    PeerGone {
        /// What was seen.
        detail: String,
    },
    /// procmond ended this connection and said why (say, the agent read
    /// nothing for too long and a result write stalled).
    #[error("procmond ended the connection: {reason}")]
    Ended {
        /// procmond's reason.
        reason: String,
    },
    /// A deadline passed.
    #[error("timed out waiting for {waiting_for}")]
    Timeout {
        /// What did not arrive in time.
        waiting_for: &'static str,
    },
    /// The result stream broke the protocol; the connection is unusable.
    #[error("corrupt result stream: {0}")]
    Corrupt(#[source] SessionError),
    /// procmond ran the task and it failed.
    #[error("task {task_id} failed: {message}")]
    TaskFailed {
        /// The task.
        task_id: String,
        /// procmond's message, naming what failed.
        message: String,
    },
    /// procmond stopped the task because this client cancelled it.
    #[error("task {task_id} was cancelled")]
    Cancelled {
        /// The task.
        task_id: String,
    },
    /// procmond's handshake was not what this agent can use.
    #[error("unusable handshake from procmond: {problem}")]
    Protocol {
        /// What was wrong.
        problem: String,
    },
    /// procmond's ring offers frames larger than this agent accepts
    /// ([`ClientOptions::max_frame_bytes`](super::ClientOptions::max_frame_bytes)).
    #[error(
        "procmond offers result frames of up to {offered} bytes, above this agent's limit of {max}"
    )]
    FrameTooLarge {
        /// The ring's largest frame, as procmond set it.
        offered: usize,
        /// This agent's limit.
        max: usize,
    },
    /// Another control-channel failure.
    #[error("control channel: {0}")]
    Control(#[source] ControlError),
    /// The ring procmond passed could not be attached.
    #[error("cannot attach the result ring: {0}")]
    Ring(#[source] RingError),
    /// This agent could not open the file to hash with its own rights, or
    /// it is not a regular file: nothing was sent.
    #[error("{path}: {problem}")]
    HashFile {
        /// The path, control characters escaped.
        path: String,
        /// Why, e.g. "permission denied" or "not a regular file (a FIFO)".
        problem: String,
    },
    /// A local system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

impl ClientError {
    /// The agent's own open of a file to hash failed.
    pub(super) fn hash_file(path: &str, error: &OpenRegularError) -> ClientError {
        let problem = match error {
            OpenRegularError::Io(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                "permission denied".to_owned()
            }
            OpenRegularError::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                "no such file".to_owned()
            }
            OpenRegularError::Io(e)
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
            {
                "goes through a /proc magic link or a symbolic-link loop".to_owned()
            }
            other => other.to_string(),
        };
        ClientError::HashFile {
            path: path.escape_debug().to_string(),
            problem,
        }
    }

    /// A control error as the agent reports it.
    pub(super) fn from_control(error: ControlError) -> ClientError {
        match error {
            ControlError::Connect { path, source }
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                ClientError::NotRunning { path, source }
            }
            ControlError::Refused { code, reason } => ClientError::Refused {
                reason: format!("{} ({})", reason, code.as_str_name()),
            },
            ControlError::VersionMismatch { ours, theirs } => {
                ClientError::VersionMismatch { ours, theirs }
            }
            ControlError::PeerGone => ClientError::PeerGone {
                detail: "procmond closed the control socket".into(),
            },
            ControlError::Timeout { waiting_for } => ClientError::Timeout { waiting_for },
            other => ClientError::Control(other),
        }
    }
}
