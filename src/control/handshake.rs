//! The opening exchange on a new connection.
//!
//! ```text
//! agent                                   procmond
//!   │  connect ─────────────────────────────▶ │ SO_PEERCRED uid in the allow-list?
//!   │  (SO_PEERCRED uid trusted? SO_PASSCRED) │   no: Refusal(NOT_ALLOWED), close
//!   │  ClientFrame{hello: version, name} ───▶ │ version equal?
//!   │                                         │   no: Refusal(VERSION_MISMATCH), close
//!   │                                         │ (daemon: room for a client? make its ring)
//!   │ ◀── ServerFrame{hello: sizes, fd_count} │
//!   │     + the ring's descriptors (SCM_RIGHTS)
//!   │  (its writer's uid trusted? peeked, SCM_CREDENTIALS)
//! ```
//!
//! Every step has a deadline. A refused peer is told why in a
//! [`Refusal`] before the socket closes.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::allow::AllowList;
use super::channel::{ClientChannel, ServerChannel, frame_name_client, frame_name_server};
use super::error::ControlError;
use super::frame::{MAX_FDS_PER_FRAME, read_message, write_message};
use crate::proto::control::{
    ClientFrame, ClientHello, EventSource, Refusal, RefusalCode, ServerFrame, ServerHello,
    client_frame, server_frame,
};
use crate::sys::socket::{
    PeerCred, Waiting, connect_before, pass_credentials, peek_writer, peer_credentials,
    readable_now,
};

/// The control protocol's version. Both sides must speak the same one.
pub const PROTOCOL_VERSION: u32 = 2;

/// The default bound on the whole handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a refusal may take to send before the server gives up on it.
const REFUSAL_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Turns `SO_PASSCRED` on or off on the agent's side of the handshake.
fn ask_credentials(stream: &UnixStream, on: bool) -> Result<(), ControlError> {
    pass_credentials(stream, on).map_err(|source| ControlError::Io {
        context: if on {
            "asking for the server's credentials (SO_PASSCRED)"
        } else {
            "asking for the server's credentials no more (SO_PASSCRED)"
        },
        source,
    })
}

/// Runs the server's side of the handshake up to the point where the daemon
/// decides to take the client: checks the peer against `allow`, then reads
/// and checks its hello, all within `timeout`.
///
/// A refused peer has already been sent a [`Refusal`] saying why when this
/// returns the error ([`ControlError::NotAllowed`],
/// [`ControlError::VersionMismatch`], or the frame error); the connection is
/// closed by dropping it. Nothing is read from a peer that is not allowed.
pub fn accept_client(
    stream: UnixStream,
    allow: &AllowList,
    timeout: Duration,
) -> Result<PendingClient, ControlError> {
    let deadline = crate::deadline::after(timeout);
    let peer = screen_peer(&stream, allow)?;

    let hello = read_message::<ClientFrame>(&stream, 0, Some(deadline), "the client hello")
        .and_then(|(frame, _)| match frame.body {
            Some(client_frame::Body::Hello(hello)) => Ok(hello),
            other => Err(ControlError::UnexpectedFrame {
                expected: "a client hello",
                got: frame_name_client(other.as_ref()),
            }),
        })
        .inspect_err(|err| {
            if err.is_protocol_violation() || matches!(err, ControlError::Timeout { .. }) {
                send_refusal(&stream, RefusalCode::BadFrame, err.to_string());
            }
        })?;

    if hello.protocol_version != PROTOCOL_VERSION {
        let reason = format!(
            "procmond speaks control protocol version {PROTOCOL_VERSION}, this client version {}",
            hello.protocol_version
        );
        send_refusal(&stream, RefusalCode::VersionMismatch, reason);
        return Err(ControlError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: hello.protocol_version,
        });
    }

    Ok(PendingClient {
        stream,
        peer,
        client_name: hello.client_name,
        timeout,
    })
}

/// Checks a just-accepted connection's peer (`SO_PEERCRED`) against `allow`
/// without reading anything from it: cheap enough for an accept loop, so a
/// peer that is not allowed never costs the server a thread. A refused peer
/// has been sent a [`Refusal`] (`NOT_ALLOWED`) when this returns
/// [`ControlError::NotAllowed`]; the caller drops the connection.
pub fn screen_peer(stream: &UnixStream, allow: &AllowList) -> Result<PeerCred, ControlError> {
    let peer = peer_credentials(stream).map_err(|source| ControlError::Io {
        context: "reading the peer's credentials",
        source,
    })?;
    if let Err(err) = allow.check(peer) {
        let reason = format!("uid {} is not in procmond's allow-list", peer.uid);
        send_refusal(stream, RefusalCode::NotAllowed, reason);
        return Err(err);
    }
    Ok(peer)
}

/// Refuses a just-accepted connection before its handshake, with `code`
/// and `reason` (best effort: one small write, bounded), and closes it.
/// Nothing is read from the peer.
pub fn refuse_unread(stream: UnixStream, code: RefusalCode, reason: impl Into<String>) {
    send_refusal(&stream, code, reason.into());
}

/// Best effort: the peer may already be gone, and it is being dropped anyway.
fn send_refusal(stream: &UnixStream, code: RefusalCode, reason: String) {
    let frame = ServerFrame {
        body: Some(server_frame::Body::Refusal(Refusal {
            code: code as i32,
            reason,
            server_protocol_version: PROTOCOL_VERSION,
        })),
    };
    let _ = write_message(
        stream,
        &frame,
        &[],
        Some(Instant::now() + REFUSAL_SEND_TIMEOUT),
    );
}

/// The ring the server gives a client: its sizes and its descriptors, which
/// the client receives with the server's hello. The control layer does not
/// look inside.
#[derive(Clone, Copy, Debug)]
pub struct RingOffer<'a> {
    /// Size of the shared segment.
    pub ring_bytes: u64,
    /// Largest frame the ring carries.
    pub max_frame_bytes: u32,
    /// Descriptors to pass, at most [`MAX_FDS_PER_FRAME`].
    pub fds: &'a [BorrowedFd<'a>],
    /// How procmond learns of processes.
    pub event_source: EventSource,
}

/// A client that passed the allow-list and the version check, waiting for the
/// daemon to welcome it (with a ring) or refuse it.
#[derive(Debug)]
pub struct PendingClient {
    stream: UnixStream,
    peer: PeerCred,
    client_name: String,
    timeout: Duration,
}

impl PendingClient {
    /// Who connected.
    pub fn peer(&self) -> PeerCred {
        self.peer
    }

    /// The name the client gave in its hello.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    /// Sends the server hello with the ring's descriptors; the connection then
    /// carries control frames.
    pub fn welcome(self, ring: &RingOffer<'_>) -> Result<ServerChannel, ControlError> {
        if ring.fds.len() > MAX_FDS_PER_FRAME {
            return Err(ControlError::TooManyFds {
                max: MAX_FDS_PER_FRAME,
            });
        }
        let hello = ServerFrame {
            body: Some(server_frame::Body::Hello(ServerHello {
                protocol_version: PROTOCOL_VERSION,
                ring_bytes: ring.ring_bytes,
                max_frame_bytes: ring.max_frame_bytes,
                fd_count: ring.fds.len() as u32,
                event_source: ring.event_source.into(),
            })),
        };
        write_message(
            &self.stream,
            &hello,
            ring.fds,
            Some(crate::deadline::after(self.timeout)),
        )?;
        Ok(ServerChannel::new(self.stream, self.peer, self.client_name))
    }

    /// Refuses the client with `code` and `reason` (best effort) and closes
    /// the connection.
    pub fn refuse(self, code: RefusalCode, reason: impl Into<String>) {
        send_refusal(&self.stream, code, reason.into());
    }

    /// Refuses the client because the server already serves `max_clients`;
    /// returns the error to log. (The daemon does the counting.)
    pub fn refuse_busy(self, max_clients: usize) -> ControlError {
        self.refuse(
            RefusalCode::TooManyClients,
            format!(
                "procmond already serves its maximum of {max_clients} clients; try again later"
            ),
        );
        ControlError::TooManyClients { max: max_clients }
    }
}

/// What the server granted: the ring's sizes and descriptors.
#[derive(Debug)]
pub struct Welcome {
    /// Size of the shared segment.
    pub ring_bytes: u64,
    /// Largest frame the ring carries.
    pub max_frame_bytes: u32,
    /// The ring's descriptors, exactly as many as the server announced, in
    /// the order it sent them, close-on-exec.
    pub fds: Vec<OwnedFd>,
    /// How procmond learns of processes (unspecified from an older one).
    pub event_source: EventSource,
    /// The process that answered: the credentials the kernel attached to
    /// the server's hello (`SCM_CREDENTIALS`). Under socket activation
    /// `SO_PEERCRED` names systemd, which made the socket; this names
    /// procmond.
    pub server: PeerCred,
}

/// The client's side of the handshake.
#[derive(Clone, Debug)]
pub struct Connector {
    client_name: String,
    timeout: Duration,
    protocol_version: u32,
    /// Server uids trusted besides root and the client's own.
    trusted_server_uids: Vec<u32>,
}

impl Connector {
    /// A connector that introduces itself as `client_name` (for the
    /// server's logs) and gives the handshake [`HANDSHAKE_TIMEOUT`].
    pub fn new(client_name: impl Into<String>) -> Self {
        Self {
            client_name: client_name.into(),
            timeout: HANDSHAKE_TIMEOUT,
            protocol_version: PROTOCOL_VERSION,
            trusted_server_uids: Vec::new(),
        }
    }

    /// Also trusts a server running as `uid` (by default only root and this
    /// process's own effective uid are: a server under any other uid is
    /// [`ControlError::UntrustedServer`] before anything is sent to it).
    pub fn trust_server_uid(mut self, uid: u32) -> Self {
        self.trusted_server_uids.push(uid);
        self
    }

    /// Refuses a server whose `SO_PEERCRED` uid is not trusted.
    fn check_server(&self, stream: &UnixStream) -> Result<(), ControlError> {
        let server = peer_credentials(stream).map_err(|source| ControlError::Io {
            context: "reading the server's credentials",
            source,
        })?;
        self.check_uid(server)
    }

    /// Refuses a server running as an untrusted uid.
    fn check_uid(&self, server: PeerCred) -> Result<(), ControlError> {
        let me = rustix::process::geteuid().as_raw();
        if server.uid == 0 || server.uid == me || self.trusted_server_uids.contains(&server.uid) {
            Ok(())
        } else {
            Err(ControlError::UntrustedServer {
                uid: server.uid,
                pid: server.pid,
            })
        }
    }

    /// Waits until `deadline` for the server's answer and checks who wrote
    /// it, leaving it to be read (the handshake has read whatever came
    /// before credentials were asked for). At the end of the stream the
    /// socket's credentials stand in: reading then says what happened.
    fn answering_server(
        &self,
        stream: &UnixStream,
        deadline: Instant,
    ) -> Result<PeerCred, ControlError> {
        const WAITING_FOR: &str = "the server hello";
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ControlError::Timeout {
                    waiting_for: WAITING_FOR,
                });
            }
            stream
                .set_read_timeout(Some(left))
                .map_err(|source| ControlError::Io {
                    context: "setting the receive timeout",
                    source,
                })?;
            match peek_writer(stream) {
                Ok(Waiting::Bytes(Some(server))) => {
                    self.check_uid(server)?;
                    return Ok(server);
                }
                // The stream ended: reading says how.
                Ok(Waiting::End) => {
                    return peer_credentials(stream).map_err(|source| ControlError::Io {
                        context: "reading the server's credentials",
                        source,
                    });
                }
                Ok(Waiting::Bytes(None)) => {
                    return Err(ControlError::Io {
                        context: "reading the server's credentials",
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the kernel attached none to the server's answer",
                        ),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ControlError::from_io(
                        "reading the server's credentials",
                        WAITING_FOR,
                        e,
                    ));
                }
            }
        }
    }

    /// Bounds the whole handshake by `timeout` instead.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects to the server at `path` and runs the handshake.
    pub fn connect(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<(ClientChannel, Welcome), ControlError> {
        let path = path.as_ref();
        // With SO_PASSCRED on from before the connect, so that even a
        // refusal on sight names its writer.
        let stream =
            connect_before(path, crate::deadline::after(self.timeout)).map_err(|source| {
                ControlError::Connect {
                    path: path.to_owned(),
                    source,
                }
            })?;
        self.handshake(stream)
    }

    /// Runs the handshake on an already connected stream.
    ///
    /// First the server's uid is checked ([`ControlError::UntrustedServer`];
    /// see [`trust_server_uid`](Self::trust_server_uid)): the socket's
    /// (`SO_PEERCRED`) before anything is sent, then that of the process
    /// whose answer arrives (`SCM_CREDENTIALS`), before anything of it is
    /// read: for a socket made by systemd the first is systemd's, the second
    /// procmond's. A refusal becomes a
    /// typed error: [`ControlError::VersionMismatch`] naming both versions,
    /// or [`ControlError::Refused`] with the server's reason.
    pub fn handshake(&self, stream: UnixStream) -> Result<(ClientChannel, Welcome), ControlError> {
        // First, so that whatever the server writes carries its writer.
        ask_credentials(&stream, true)?;
        self.check_server(&stream)?;
        let deadline = crate::deadline::after(self.timeout);
        // Bytes already waiting may have been written before we asked, and
        // carry made-up credentials: nothing but a refusal on sight is
        // taken from them (a server speaks first only to refuse).
        if readable_now(&stream).map_err(|source| ControlError::Io {
            context: "checking for a refusal on sight",
            source,
        })? {
            return Err(self.early_answer(&stream, deadline));
        }
        let hello = ClientFrame {
            body: Some(client_frame::Body::Hello(ClientHello {
                protocol_version: self.protocol_version,
                client_name: self.client_name.clone(),
            })),
        };
        match write_message(&stream, &hello, &[], Some(deadline)) {
            // A server that refused us on sight may have closed before our
            // hello went out; its refusal can still be waiting to be read.
            Ok(()) | Err(ControlError::PeerGone) => {}
            Err(err) => return Err(err),
        }

        let server = self.answering_server(&stream, deadline)?;
        // Off again before anything is read: no later read has room for them.
        ask_credentials(&stream, false)?;
        let (frame, fds) = read_message::<ServerFrame>(
            &stream,
            MAX_FDS_PER_FRAME,
            Some(deadline),
            "the server hello",
        )?;
        match frame.body {
            Some(server_frame::Body::Hello(hello)) => {
                if hello.protocol_version != self.protocol_version {
                    return Err(ControlError::VersionMismatch {
                        ours: self.protocol_version,
                        theirs: hello.protocol_version,
                    });
                }
                if fds.len() != hello.fd_count as usize {
                    return Err(ControlError::MissingFds {
                        expected: hello.fd_count,
                        got: fds.len(),
                    });
                }
                let welcome = Welcome {
                    ring_bytes: hello.ring_bytes,
                    max_frame_bytes: hello.max_frame_bytes,
                    fds,
                    server,
                    event_source: EventSource::try_from(hello.event_source)
                        .unwrap_or(EventSource::Unspecified),
                };
                Ok((ClientChannel::new(stream), welcome))
            }
            Some(server_frame::Body::Refusal(refusal)) => Err(self.refusal_error(refusal)),
            Some(server_frame::Body::Error(error)) => Err(ControlError::PeerError {
                message: error.message,
            }),
            other => Err(ControlError::UnexpectedFrame {
                expected: "a server hello or refusal",
                got: frame_name_server(other.as_ref()),
            }),
        }
    }

    /// What a server that wrote before the client's hello said: a refusal,
    /// or a break of the protocol.
    fn early_answer(&self, stream: &UnixStream, deadline: Instant) -> ControlError {
        // Off first: a read with credentials coming has no room for them.
        if let Err(err) = ask_credentials(stream, false) {
            return err;
        }
        match read_message::<ServerFrame>(stream, 0, Some(deadline), "a refusal on sight") {
            Ok((frame, _)) => match frame.body {
                Some(server_frame::Body::Refusal(refusal)) => self.refusal_error(refusal),
                Some(server_frame::Body::Error(error)) => ControlError::PeerError {
                    message: error.message,
                },
                other => ControlError::UnexpectedFrame {
                    expected: "nothing before the client's hello (a refusal at most)",
                    got: frame_name_server(other.as_ref()),
                },
            },
            Err(err) => err,
        }
    }

    fn refusal_error(&self, refusal: Refusal) -> ControlError {
        match refusal.code() {
            RefusalCode::VersionMismatch => ControlError::VersionMismatch {
                ours: self.protocol_version,
                theirs: refusal.server_protocol_version,
            },
            code => ControlError::Refused {
                code,
                reason: refusal.reason,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::thread;

    fn short() -> Duration {
        Duration::from_secs(5)
    }

    #[test]
    fn a_version_mismatch_names_both_versions_on_both_sides() {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let server = thread::spawn(move || {
            accept_client(server_end, &AllowList::new(), short()).map(|_| ())
        });
        let mut connector = Connector::new("future-agent");
        connector.protocol_version = 7;
        let client_err = connector.handshake(client_end).unwrap_err();
        assert!(matches!(
            client_err,
            ControlError::VersionMismatch {
                ours: 7,
                theirs: PROTOCOL_VERSION
            }
        ));
        let text = client_err.to_string();
        assert!(
            text.contains("version 7") && text.contains(&format!("version {PROTOCOL_VERSION}")),
            "{text}"
        );

        let server_err = server.join().unwrap().unwrap_err();
        assert!(matches!(
            server_err,
            ControlError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 7
            }
        ));
    }

    #[test]
    fn nothing_but_a_refusal_is_taken_from_a_server_that_speaks_first() {
        // Written before the client asked for credentials: they name no one,
        // so a hello here would be trusted on a made-up uid.
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let hello = ServerFrame {
            body: Some(server_frame::Body::Hello(ServerHello {
                protocol_version: PROTOCOL_VERSION,
                ..Default::default()
            })),
        };
        write_message(&server_end, &hello, &[], None).unwrap();
        let err = Connector::new("agent").handshake(client_end).unwrap_err();
        assert!(
            matches!(err, ControlError::UnexpectedFrame { got, .. } if got == "a server hello"),
            "{err:?}"
        );
        // A refusal on sight is still read as one.
        let (server_end, client_end) = UnixStream::pair().unwrap();
        send_refusal(&server_end, RefusalCode::NotAllowed, "go away".into());
        let err = Connector::new("agent").handshake(client_end).unwrap_err();
        assert!(
            matches!(&err, ControlError::Refused { reason, .. } if reason.contains("go away")),
            "{err:?}"
        );
    }

    #[test]
    fn a_server_hello_of_another_version_is_refused_by_the_client() {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let server = thread::spawn(move || {
            let (_hello, _) = read_message::<ClientFrame>(
                &server_end,
                0,
                Some(Instant::now() + short()),
                "hello",
            )?;
            let hello = ServerFrame {
                body: Some(server_frame::Body::Hello(ServerHello {
                    protocol_version: PROTOCOL_VERSION + 1,
                    ..Default::default()
                })),
            };
            write_message(&server_end, &hello, &[], None)
        });
        let err = Connector::new("agent").handshake(client_end).unwrap_err();
        assert!(
            matches!(
                err,
                ControlError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs
                } if theirs == PROTOCOL_VERSION + 1
            ),
            "{err}"
        );
        server.join().unwrap().unwrap();
    }

    #[test]
    fn fewer_descriptors_than_announced_is_missing_fds() {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let server = thread::spawn(move || {
            read_message::<ClientFrame>(&server_end, 0, Some(Instant::now() + short()), "hello")?;
            let (r, _w) = nix::unistd::pipe().unwrap();
            let hello = ServerFrame {
                body: Some(server_frame::Body::Hello(ServerHello {
                    protocol_version: PROTOCOL_VERSION,
                    fd_count: 2,
                    ..Default::default()
                })),
            };
            write_message(&server_end, &hello, &[r.as_fd()], None)
        });
        let err = Connector::new("agent").handshake(client_end).unwrap_err();
        assert!(
            matches!(
                err,
                ControlError::MissingFds {
                    expected: 2,
                    got: 1
                }
            ),
            "{err}"
        );
        server.join().unwrap().unwrap();
    }

    #[test]
    fn a_silent_client_is_timed_out_and_told() {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let err =
            accept_client(server_end, &AllowList::new(), Duration::from_millis(30)).unwrap_err();
        assert!(
            matches!(
                err,
                ControlError::Timeout {
                    waiting_for: "the client hello"
                }
            ),
            "{err}"
        );
        let (frame, _) =
            read_message::<ServerFrame>(&client_end, 0, Some(Instant::now() + short()), "refusal")
                .unwrap();
        match frame.body {
            Some(server_frame::Body::Refusal(r)) => {
                assert_eq!(r.code(), RefusalCode::BadFrame);
                assert!(r.reason.contains("timed out"), "{}", r.reason);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_busy_server_refuses_with_its_limit() {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let server = thread::spawn(move || {
            let pending = accept_client(server_end, &AllowList::new(), short())?;
            Ok::<_, ControlError>(pending.refuse_busy(8))
        });
        let err = Connector::new("agent").handshake(client_end).unwrap_err();
        match &err {
            ControlError::Refused {
                code: RefusalCode::TooManyClients,
                reason,
            } => assert!(reason.contains('8'), "{reason}"),
            other => panic!("expected TooManyClients, got {other:?}"),
        }
        assert!(matches!(
            server.join().unwrap().unwrap(),
            ControlError::TooManyClients { max: 8 }
        ));
    }
}
