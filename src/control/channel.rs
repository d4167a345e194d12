//! Typed control frames after the handshake: [`ClientFrame`]s from the agent,
//! [`ServerFrame`]s from procmond.
//!
//! A peer that breaks the protocol (oversize, garbage or unexpected frames,
//! stray descriptors) gets told why, best effort, and the connection is shut
//! down in both directions: the call returns the error, and every later call
//! on this channel (or a clone of it) sees [`ControlError::PeerGone`].

use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::error::ControlError;
use super::frame::{read_message, write_message};
use crate::proto::control::{ClientFrame, Error, Goodbye, ServerFrame, client_frame, server_frame};
use crate::sys::socket::PeerCred;

/// How long sending one control frame may take before it is a
/// [`ControlError::Timeout`].
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// procmond's end of an established connection.
#[derive(Debug)]
pub struct ServerChannel {
    stream: UnixStream,
    peer: PeerCred,
    client_name: String,
}

impl ServerChannel {
    pub(crate) fn new(stream: UnixStream, peer: PeerCred, client_name: String) -> Self {
        Self {
            stream,
            peer,
            client_name,
        }
    }

    /// Who is connected.
    pub fn peer(&self) -> PeerCred {
        self.peer
    }

    /// The name the client gave in its hello.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    /// Waits for the client's next frame (until `deadline`, or as long as it
    /// takes with `None`): a task, a cancel or a goodbye, and the one file
    /// descriptor a task with `hash_file_attached` carries (the file to
    /// hash, opened by the client).
    ///
    /// End of stream is [`ControlError::PeerGone`]: the client is gone and its
    /// ring can be freed. A second hello, an empty frame, a descriptor with
    /// any other frame or a `hash_file_attached` task without one is
    /// [`ControlError::UnexpectedFrame`]; like a malformed or oversize frame,
    /// the client is sent an [`Error`] frame saying so and the connection is
    /// shut down.
    pub fn recv(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<(client_frame::Body, Option<OwnedFd>), ControlError> {
        const EXPECTED: &str = "a task, cancel or goodbye";
        const ATTACHED: &str = "one descriptor exactly with a hash check that says it is attached";
        let result = read_message::<ClientFrame>(&self.stream, 1, deadline, "a client frame")
            .and_then(|(frame, mut fds)| {
                let attached = matches!(
                    &frame.body,
                    Some(client_frame::Body::Task(task)) if task.hash_file_attached
                );
                match (frame.body, fds.pop()) {
                    (Some(client_frame::Body::Hello(_)), _) => Err(ControlError::UnexpectedFrame {
                        expected: EXPECTED,
                        got: "a second client hello",
                    }),
                    (None, _) => Err(ControlError::UnexpectedFrame {
                        expected: EXPECTED,
                        got: frame_name_client(None),
                    }),
                    (Some(body), fd) if attached == fd.is_some() => Ok((body, fd)),
                    (Some(_), Some(_)) => Err(ControlError::UnexpectedFrame {
                        expected: ATTACHED,
                        got: "a descriptor with a frame that does not announce it",
                    }),
                    (Some(_), None) => Err(ControlError::UnexpectedFrame {
                        expected: ATTACHED,
                        got: "a hash check whose descriptor did not arrive",
                    }),
                }
            });
        result.inspect_err(|err| {
            if err.is_protocol_violation() {
                let error = ServerFrame {
                    body: Some(server_frame::Body::Error(Error {
                        message: err.to_string(),
                    })),
                };
                fail(&self.stream, &error);
            }
        })
    }

    /// Sends a frame to the client.
    pub fn send(&mut self, frame: &ServerFrame) -> Result<(), ControlError> {
        write_message(
            &self.stream,
            frame,
            &[],
            Some(Instant::now() + SEND_TIMEOUT),
        )
    }

    /// A second handle on the same connection, so one thread can wait for
    /// frames while another sends. Shutting down one shuts down both.
    pub fn try_clone(&self) -> Result<Self, ControlError> {
        let stream = self.stream.try_clone().map_err(|source| ControlError::Io {
            context: "cloning the control socket",
            source,
        })?;
        Ok(Self {
            stream,
            peer: self.peer,
            client_name: self.client_name.clone(),
        })
    }
}

impl AsFd for ServerChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// The agent's end of an established connection.
#[derive(Debug)]
pub struct ClientChannel {
    stream: UnixStream,
}

impl ClientChannel {
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self { stream }
    }

    /// Sends a frame to the server.
    pub fn send(&mut self, frame: &ClientFrame) -> Result<(), ControlError> {
        self.send_with_fds(frame, &[])
    }

    /// Sends a frame to the server with `fds` attached (`SCM_RIGHTS`): a
    /// task with `hash_file_attached` carries the file to hash.
    pub fn send_with_fds(
        &mut self,
        frame: &ClientFrame,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ControlError> {
        write_message(
            &self.stream,
            frame,
            fds,
            Some(Instant::now() + SEND_TIMEOUT),
        )
    }

    /// Waits for the server's next frame (until `deadline`, or as long as it
    /// takes with `None`): a task accepted or rejected, or a goodbye.
    ///
    /// An [`Error`] frame from the server is [`ControlError::PeerError`] with
    /// its message; a refusal is [`ControlError::Refused`]; end of stream is
    /// [`ControlError::PeerGone`]. A server breaking the protocol is sent a
    /// goodbye saying why and the connection is shut down.
    pub fn recv(&mut self, deadline: Option<Instant>) -> Result<server_frame::Body, ControlError> {
        const EXPECTED: &str = "a task reply or goodbye";
        let result = read_message::<ServerFrame>(&self.stream, 0, deadline, "a server frame")
            .and_then(|(frame, _)| match frame.body {
                Some(server_frame::Body::Error(error)) => Err(ControlError::PeerError {
                    message: error.message,
                }),
                Some(server_frame::Body::Refusal(refusal)) => Err(ControlError::Refused {
                    code: refusal.code(),
                    reason: refusal.reason,
                }),
                Some(server_frame::Body::Hello(_)) => Err(ControlError::UnexpectedFrame {
                    expected: EXPECTED,
                    got: "a second server hello",
                }),
                Some(body) => Ok(body),
                None => Err(ControlError::UnexpectedFrame {
                    expected: EXPECTED,
                    got: frame_name_server(None),
                }),
            });
        result.inspect_err(|err| {
            if err.is_protocol_violation() {
                let goodbye = ClientFrame {
                    body: Some(client_frame::Body::Goodbye(Goodbye {
                        reason: err.to_string(),
                    })),
                };
                fail(&self.stream, &goodbye);
            }
        })
    }

    /// A second handle on the same connection, so one thread can wait for
    /// frames while another sends. Shutting down one shuts down both.
    pub fn try_clone(&self) -> Result<Self, ControlError> {
        let stream = self.stream.try_clone().map_err(|source| ControlError::Io {
            context: "cloning the control socket",
            source,
        })?;
        Ok(Self { stream })
    }
}

impl AsFd for ClientChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// Tells the peer why (best effort, briefly) and shuts the connection down:
/// after a protocol violation the stream is out of step.
fn fail<M: prost::Message>(stream: &UnixStream, why: &M) {
    let _ = write_message(
        stream,
        why,
        &[],
        Some(Instant::now() + Duration::from_secs(1)),
    );
    let _ = stream.shutdown(Shutdown::Both);
}

/// A client frame's kind, for error messages.
pub(crate) fn frame_name_client(body: Option<&client_frame::Body>) -> &'static str {
    match body {
        Some(client_frame::Body::Hello(_)) => "a client hello",
        Some(client_frame::Body::Task(_)) => "a task request",
        Some(client_frame::Body::Cancel(_)) => "a cancel",
        Some(client_frame::Body::Goodbye(_)) => "a goodbye",
        Some(client_frame::Body::Status(_)) => "a status request",
        None => "an empty or unknown frame",
    }
}

/// A server frame's kind, for error messages.
pub(crate) fn frame_name_server(body: Option<&server_frame::Body>) -> &'static str {
    match body {
        Some(server_frame::Body::Hello(_)) => "a server hello",
        Some(server_frame::Body::Refusal(_)) => "a refusal",
        Some(server_frame::Body::Error(_)) => "an error",
        Some(server_frame::Body::Accepted(_)) => "a task accepted",
        Some(server_frame::Body::Rejected(_)) => "a task rejected",
        Some(server_frame::Body::Goodbye(_)) => "a goodbye",
        Some(server_frame::Body::Status(_)) => "a status",
        None => "an empty or unknown frame",
    }
}
