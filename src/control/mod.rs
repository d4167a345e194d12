//! The Unix-socket control channel between daemoneye-agent and procmond.
//!
//! It knows the socket, who is on the other end (`SO_PEERCRED` against an
//! [`AllowList`]), the handshake (protocol version, the ring's sizes, the
//! ring's descriptors passed with `SCM_RIGHTS`) and the small control frames
//! that follow (tasks, cancels, goodbyes; `proto/control.proto`). It does not
//! know what a task means, nor what the ring's descriptors are: results travel
//! through the ring, not this socket.
//!
//! Frames are length-delimited protobuf, 4-byte little-endian length first,
//! capped at [`MAX_FRAME_BYTES`]; see [`frame`]. Every read has a deadline or
//! ends with the peer: end of stream is [`ControlError::PeerGone`].
//!
//! ```
//! use std::os::fd::AsFd;
//! use std::os::unix::net::UnixStream;
//! use std::time::Duration;
//! use daemoneye_lib::control::{accept_client, AllowList, Connector, EventSource, RingOffer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (server_end, client_end) = UnixStream::pair()?;
//! let segment = std::fs::File::open("/dev/null")?; // stands in for the ring's memfd
//! let server = std::thread::spawn(move || {
//!     // procmond: check the peer, read its hello, then hand over a ring.
//!     let pending = accept_client(server_end, &AllowList::new(), Duration::from_secs(5))?;
//!     let offer = RingOffer {
//!         ring_bytes: 1 << 20,
//!         max_frame_bytes: 1 << 16,
//!         fds: &[segment.as_fd()],
//!         event_source: EventSource::Connector,
//!     };
//!     pending.welcome(&offer)
//! });
//!
//! // daemoneye-agent: (`Connector::connect(path)` does the same on a socket path)
//! let (_channel, welcome) = Connector::new("doc-example").handshake(client_end)?;
//! assert_eq!((welcome.ring_bytes, welcome.fds.len()), (1 << 20, 1));
//! assert_eq!(welcome.event_source, EventSource::Connector);
//! let _server_channel = server.join().expect("server thread")?;
//! # Ok(())
//! # }
//! ```

mod allow;
mod channel;
mod error;
pub mod frame;
mod handshake;
mod listener;

pub use crate::proto::control::{
    ClientFrame, EventSource, RefusalCode, ServerFrame, client_frame, server_frame,
};
pub use crate::sys::socket::PeerCred;
pub use allow::AllowList;
pub use channel::{ClientChannel, SEND_TIMEOUT, ServerChannel};
pub use error::ControlError;
pub use frame::{FRAME_COMPLETION_TIMEOUT, MAX_FRAME_BYTES};
pub use handshake::{
    Connector, HANDSHAKE_TIMEOUT, PROTOCOL_VERSION, PendingClient, RingOffer, Welcome,
    accept_client, refuse_unread, screen_peer,
};
pub use listener::{
    ControlListener, ROOT_SOCKET_PATH, SocketOptions, USER_SOCKET_SUBPATH, agent_socket_paths,
    default_socket_path,
};
