//! Everything that can go wrong on the control socket, each case naming what.

use std::io;
use std::path::PathBuf;

use crate::proto::control::RefusalCode;

/// A control-channel failure. Peer misbehaviour (oversize, garbage or
/// unexpected frames, stray descriptors) is always one of these, never a
/// panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A socket call failed.
    #[error("control socket I/O failed while {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A filesystem call on the socket's path or directory failed.
    #[error("cannot {action} {path}: {source}")]
    PathIo {
        /// What was being done ("create directory", "bind", ...).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The socket path or its directory is unsafe or unusable as it is.
    #[error("{path}: {problem}")]
    UnsafePath {
        /// The path concerned.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// A live server already accepts connections on this path.
    #[error("another procmond is listening on {path}")]
    AlreadyListening {
        /// The socket path.
        path: PathBuf,
    },

    /// No default socket path: not root and `XDG_RUNTIME_DIR` is unset.
    #[error(
        "no default control socket path: XDG_RUNTIME_DIR is not set (or not absolute) and this is not root; pass a socket path"
    )]
    NoRuntimeDir,

    /// Connecting to the server's socket failed.
    #[error("cannot connect to procmond at {path}: {source} (is procmond running?)")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The server refused this connection.
    #[error("procmond refused the connection ({}): {reason}", .code.as_str_name())]
    Refused {
        /// Why, as a code.
        code: RefusalCode,
        /// Why, in words, from the server.
        reason: String,
    },

    /// The two sides speak different protocol versions.
    #[error(
        "control protocol version mismatch: this side speaks version {ours}, the peer version {theirs}"
    )]
    VersionMismatch {
        /// Our [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
        ours: u32,
        /// The peer's.
        theirs: u32,
    },

    /// A length prefix beyond the cap; nothing was allocated for it.
    #[error("control frame of {len} bytes exceeds the {max}-byte cap")]
    FrameTooLarge {
        /// The length the frame claimed (or had, when sending).
        len: u64,
        /// The cap, [`MAX_FRAME_BYTES`](super::MAX_FRAME_BYTES).
        max: usize,
    },

    /// A frame's bytes are not a valid protobuf message.
    #[error("malformed control frame: not a valid {message}: {source}")]
    Malformed {
        /// The message type expected.
        message: &'static str,
        /// What the decoder said.
        #[source]
        source: prost::DecodeError,
    },

    /// The peer closed the socket in the middle of a frame.
    #[error("control frame truncated: the peer closed the socket after {got} of {expected} bytes")]
    Truncated {
        /// Bytes the frame (prefix included) should have had.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },

    /// The peer stopped sending in the middle of a frame and the deadline (or
    /// [`FRAME_COMPLETION_TIMEOUT`](super::FRAME_COMPLETION_TIMEOUT)) passed.
    #[error("control frame stalled: the peer sent {got} of {expected} bytes and then nothing")]
    Stalled {
        /// Bytes due so far (prefix included; the payload's once the prefix
        /// arrived).
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },

    /// A well-formed frame that has no place here.
    #[error("unexpected control frame: expected {expected}, got {got}")]
    UnexpectedFrame {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },

    /// The socket reached end-of-stream (or was reset) at a frame boundary:
    /// the peer is gone.
    #[error("peer gone: the control socket was closed")]
    PeerGone,

    /// The server hello announced a number of descriptors that did not
    /// arrive with it.
    #[error("the server hello announced {expected} file descriptors, {got} arrived")]
    MissingFds {
        /// Announced in the hello.
        expected: u32,
        /// Received.
        got: usize,
    },

    /// The peer sent more descriptors than this frame may carry; those that
    /// arrived were closed.
    #[error(
        "the peer sent more file descriptors than the {max} this frame may carry; they were closed"
    )]
    TooManyFds {
        /// The most accepted.
        max: usize,
    },

    /// A deadline passed.
    #[error("timed out waiting for {waiting_for}")]
    Timeout {
        /// What did not arrive (or could not be sent) in time.
        waiting_for: &'static str,
    },

    /// The peer's uid is not in the allow-list.
    #[error("peer uid {uid} (pid {pid}) is not in the allow-list")]
    NotAllowed {
        /// The refused uid.
        uid: u32,
        /// Its process, as the kernel reported it (0 if unknown).
        pid: u32,
    },

    /// The server's uid (`SO_PEERCRED`) is neither root, the client's own,
    /// nor one trusted with
    /// [`Connector::trust_server_uid`](super::Connector::trust_server_uid):
    /// whoever listens there could be impersonating procmond.
    #[error(
        "the server at the other end runs as uid {uid} (pid {pid}), which is not trusted (root, this user, or one trusted explicitly: daemoneye-agent --trust-server-uid, ClientOptions::trusted_server_uids)"
    )]
    UntrustedServer {
        /// The server's uid.
        uid: u32,
        /// Its process, as the kernel reported it (0 if unknown).
        pid: u32,
    },

    /// The server already serves as many clients as it may.
    #[error("refused a client: already serving the maximum of {max} clients")]
    TooManyClients {
        /// The limit.
        max: usize,
    },

    /// The peer reported a protocol error and closed the connection.
    #[error("the peer reported an error: {message}")]
    PeerError {
        /// Its message.
        message: String,
    },
}

impl ControlError {
    /// Wraps a socket error, turning the ones that mean "the peer went away"
    /// into [`ControlError::PeerGone`] and a receive timeout into
    /// [`ControlError::Timeout`].
    pub(crate) fn from_io(
        context: &'static str,
        waiting_for: &'static str,
        source: io::Error,
    ) -> Self {
        match source.kind() {
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => ControlError::PeerGone,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ControlError::Timeout { waiting_for }
            }
            _ => ControlError::Io { context, source },
        }
    }

    /// Whether this error is the peer breaking the protocol (as opposed to
    /// leaving, timing out or a local failure); such a peer is told why
    /// before the connection is closed.
    pub(crate) fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            ControlError::FrameTooLarge { .. }
                | ControlError::Malformed { .. }
                | ControlError::UnexpectedFrame { .. }
                | ControlError::TooManyFds { .. }
                | ControlError::Stalled { .. }
        )
    }
}
