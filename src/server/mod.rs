//! procmond's side: accepts agents on the control socket, gives each its own
//! ring, runs their tasks and streams the results.
//!
//! One thread per connection reads control frames (tasks, cancels,
//! goodbyes); one worker thread per connection owns the ring's producer and
//! a [`Collector`](crate::collector::Collector) of its own (so CPU deltas are
//! per agent) and runs the tasks in order; the collectors share one file
//! hash cache, so an agent that reconnects is not answered by rehashing
//! every file. Socket end-of-stream means the
//! agent is gone: the ring is closed at once, which ends any blocked write,
//! and freed when the worker returns.
//!
//! ```no_run
//! use daemoneye_lib::server::{Server, ServerConfig};
//!
//! # fn main() -> Result<(), daemoneye_lib::server::ServerError> {
//! let server = Server::bind(ServerConfig::new("/run/user/1000/daemoneye/procmond.sock"))?;
//! let shutdown = server.shutdown_handle();
//! // Another thread (a signal handler thread, say) calls `shutdown.trigger()`.
//! # shutdown.trigger();
//! server.run_until(&shutdown);
//! # Ok(())
//! # }
//! ```

mod changes;
mod config;
mod connection;
mod shutdown;
mod slots;
mod status;
mod supervisor;
mod tasks;
mod worker;

use std::net::Shutdown as SocketShutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use config::ServerConfig;
pub use shutdown::ShutdownHandle;
pub use supervisor::{Supervisor, Unsupervised};

use crate::collector::{CacheStats, ProcessTable, SharedHashCache};
use crate::control::{
    ControlError, ControlListener, RefusalCode, SocketOptions, refuse_unread, screen_peer,
};
use crate::ring::RingError;
use crate::sys::socket::Accepted;
use crate::sys::wake::Waker;
use slots::{Limits, Slots};

/// Connections in their handshake beyond `max_clients` (see
/// [`Server::max_handshakes`]).
const HANDSHAKE_SLACK: usize = 4;

/// Why procmond could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The ring sizes are out of range.
    #[error("invalid ring configuration: {0}")]
    Ring(#[from] RingError),
    /// `max_clients` is zero.
    #[error("max_clients must be at least 1")]
    NoClients,
    /// `max_clients_per_uid` is zero.
    #[error("max_clients_per_uid must be at least 1")]
    NoClientsPerUid,
    /// The control socket could not be set up.
    #[error("{0}")]
    Control(#[from] ControlError),
}

/// The checks of `config` made before any socket is bound or used.
fn check(config: &ServerConfig) -> Result<(), ServerError> {
    config.ring_config().validate()?;
    if config.max_clients == 0 {
        return Err(ServerError::NoClients);
    }
    if config.per_uid_limit() == 0 {
        return Err(ServerError::NoClientsPerUid);
    }
    Ok(())
}

/// A bound procmond server; see the [module documentation](self).
#[derive(Debug)]
pub struct Server {
    listener: ControlListener,
    config: Arc<ServerConfig>,
    shutdown: ShutdownHandle,
    /// Shared by every connection's collector.
    hash_cache: SharedHashCache,
    /// The process table every connection answers from.
    table: ProcessTable,
    /// Uptime and task counts, for status requests.
    counters: Arc<status::Counters>,
}

/// A connection thread and a handle on its socket, to end it on shutdown.
struct Connection {
    thread: JoinHandle<()>,
    socket: UnixStream,
    /// Disconnects when the thread ends.
    done: mpsc::Receiver<()>,
}

/// How long shutdown waits for the connections to end once their sockets
/// are shut down; one still held by a file-system call that does not return
/// is left behind (the process is about to exit).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

impl Server {
    /// Checks `config` and binds the control socket (see
    /// [`ControlListener::bind`] for the directory and file modes).
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        check(&config)?;
        let options = SocketOptions {
            group: config.group,
        };
        let listener = ControlListener::bind(&config.socket_path, &options)?;
        Self::with_listener(config, listener)
    }

    /// Checks `config` and serves on `listener`: one [`bind`](Self::bind)
    /// made, or one the service manager passed
    /// ([`ControlListener::activated`]), whose path then replaces
    /// `config.socket_path` (and `config.group` is not used: the socket
    /// unit sets the mode and group).
    pub fn with_listener(
        mut config: ServerConfig,
        listener: ControlListener,
    ) -> Result<Server, ServerError> {
        check(&config)?;
        config.socket_path = listener.path().to_owned();
        let waker = Waker::new().map_err(|source| ControlError::Io {
            context: "creating the accept loop's eventfd",
            source,
        })?;
        let owned_listener = if listener.is_activated() {
            None
        } else {
            let dup = listener
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| ControlError::Io {
                    context: "duplicating the listener for shutdown",
                    source,
                })?;
            Some(dup)
        };
        let shutdown = ShutdownHandle::new(waker, owned_listener);
        let hash_cache = SharedHashCache::with_max_age(
            config.collector.hash_cache_entries,
            config.collector.hash_cache_max_age,
        );
        // Filled before "listening" is said: the first agent gets a whole
        // table (connections are accepted only once `run` is called).
        let table = ProcessTable::start(&config.table);
        tracing::info!(
            socket = %listener.path().display(),
            activated = listener.is_activated(),
            ring_bytes = config.ring_bytes,
            max_frame_bytes = config.max_frame_bytes,
            max_clients = config.max_clients,
            max_clients_per_uid = config.per_uid_limit(),
            allow_uids = ?config.allow.uids().collect::<Vec<_>>(),
            "procmond listening"
        );
        Ok(Server {
            listener,
            config: Arc::new(config),
            shutdown,
            hash_cache,
            table,
            counters: status::Counters::new(),
        })
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &std::path::Path {
        self.listener.path()
    }

    /// The process table every connection answers from.
    pub fn table(&self) -> &ProcessTable {
        &self.table
    }

    /// Counters of the file hash cache that every connection shares.
    pub fn hash_cache_stats(&self) -> CacheStats {
        self.hash_cache.stats()
    }

    /// Connections allowed in their handshake at once (a thread each): a
    /// few more than the clients served, so a client that leaves can be
    /// replaced at once, but a flood of idle connects is refused.
    fn max_handshakes(&self) -> usize {
        self.config.max_clients.saturating_add(HANDSHAKE_SLACK)
    }

    /// A handle that stops [`run_until`](Self::run_until) from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves connections until `shutdown` is triggered, then ends every
    /// connection (their rings are closed and freed) and returns. The socket
    /// file is removed when the server is dropped (if procmond bound it).
    pub fn run_until(&self, shutdown: &ShutdownHandle) {
        self.run_supervised(shutdown, &mut Unsupervised);
    }

    /// [`run_until`](Self::run_until), telling `supervisor` when the loop
    /// serves, that it is alive (at least every
    /// [`Supervisor::alive_every`], from the loop itself, so a wedged loop
    /// stops saying so) and when it stops.
    pub fn run_supervised(&self, shutdown: &ShutdownHandle, supervisor: &mut dyn Supervisor) {
        let slots = Slots::new(Limits {
            clients: self.config.max_clients,
            handshakes: self.max_handshakes(),
            per_uid: self.config.per_uid_limit(),
            owner: rustix::process::geteuid().as_raw(),
        });
        let mut connections: Vec<Connection> = Vec::new();
        supervisor.serving();
        let beat_every = supervisor.alive_every();
        let mut next_beat = Instant::now();
        while !shutdown.is_triggered() {
            let wait = beat_every.map(|every| {
                let now = Instant::now();
                if now >= next_beat {
                    supervisor.alive();
                    next_beat = crate::deadline::after(every);
                }
                next_beat.saturating_duration_since(now)
            });
            let stream = match self.listener.accept_or_woken(shutdown.waker(), wait) {
                Ok(Accepted::Connection(stream)) => stream,
                Ok(Accepted::TimedOut) => continue,
                Ok(Accepted::Woken) => break,
                // The trigger shut the listener down.
                Err(_) if shutdown.is_triggered() => break,
                Err(error) => {
                    tracing::error!(%error, "accept failed");
                    // Out of descriptors, say: give other threads a moment
                    // to release some rather than spin.
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if shutdown.is_triggered() {
                break;
            }
            connections.retain(|c| !c.thread.is_finished());
            // Cheap checks before a thread is spent on the connection: a
            // flood of connects costs no more than this loop.
            let peer = match screen_peer(&stream, &self.config.allow) {
                Ok(peer) => peer,
                Err(error) => {
                    tracing::warn!(%error, "connection refused");
                    continue;
                }
            };
            let held = match slots.admit(peer.uid) {
                Ok(held) => held,
                Err(reason) => {
                    tracing::warn!(uid = peer.uid, pid = peer.pid, %reason, "connection refused");
                    refuse_unread(stream, RefusalCode::TooManyClients, reason);
                    continue;
                }
            };
            let socket = match stream.try_clone() {
                Ok(socket) => socket,
                Err(error) => {
                    tracing::error!(%error, "cannot clone a connection's socket; dropping it");
                    continue;
                }
            };
            let config = Arc::clone(&self.config);
            let shared = connection::Shared {
                hash_cache: self.hash_cache.clone(),
                table: self.table.clone(),
                shutdown: shutdown.clone(),
                slots: Arc::clone(&slots),
                counters: Arc::clone(&self.counters),
            };
            let (finished, done) = mpsc::channel::<()>();
            let spawned = thread::Builder::new()
                .name("procmond-conn".into())
                .spawn(move || {
                    let _finished = finished;
                    connection::serve(stream, &config, held, shared);
                });
            match spawned {
                Ok(thread) => connections.push(Connection {
                    thread,
                    socket,
                    done,
                }),
                Err(error) => tracing::error!(%error, "cannot start a connection thread"),
            }
        }
        supervisor.stopping();
        tracing::info!(connections = connections.len(), "shutting down");
        // The read side only: each connection's thread sees the end, tells
        // its client procmond is shutting down, and ends the connection.
        for connection in &connections {
            let _ = connection.socket.shutdown(SocketShutdown::Read);
        }
        let deadline = Instant::now().checked_add(SHUTDOWN_TIMEOUT);
        let mut left_behind = 0;
        for connection in connections {
            let wait = deadline.map_or(SHUTDOWN_TIMEOUT, |d| {
                d.saturating_duration_since(Instant::now())
            });
            match connection.done.recv_timeout(wait) {
                Err(mpsc::RecvTimeoutError::Timeout) => left_behind += 1,
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = connection.thread.join();
                }
            }
        }
        if left_behind > 0 {
            tracing::warn!(
                left_behind,
                timeout = ?SHUTDOWN_TIMEOUT,
                "connections still busy at shutdown were left behind"
            );
        }
    }
}
