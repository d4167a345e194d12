//! procmond's settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::collector::{CollectorConfig, TableConfig};
use crate::control::{AllowList, HANDSHAKE_TIMEOUT};
use crate::ring::{RingConfig, WaitStrategy};

/// Everything [`Server::bind`](super::Server::bind) needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where the control socket lives.
    pub socket_path: PathBuf,
    /// Bytes in each client's ring (a power of two, 64 KiB to 1 GiB).
    /// Default 1 MiB.
    pub ring_bytes: usize,
    /// The largest result frame (1 to `ring_bytes / 2 - 8`). Default
    /// 128 KiB.
    pub max_frame_bytes: usize,
    /// Peer uids allowed to connect. Default: procmond's own uid and root.
    pub allow: AllowList,
    /// A group whose members may reach the socket (0660); `None`: 0600.
    pub group: Option<u32>,
    /// Clients served at once; the next is refused. Default 8. When there
    /// are two or more, the last is kept for root.
    pub max_clients: usize,
    /// Connections one peer uid may hold at once, in their handshake or
    /// served; `None`: half of `max_clients`, at least 1.
    pub max_clients_per_uid: Option<usize>,
    /// How the producer waits for room in a ring.
    pub wait: WaitStrategy,
    /// Each connection's collector.
    pub collector: CollectorConfig,
    /// The process table every connection answers from.
    pub table: TableConfig,
    /// Bound on a client's handshake.
    pub handshake_timeout: Duration,
    /// How long a result write may wait for a client that reads nothing
    /// before the connection is given up. Default 30 s.
    pub stall_timeout: Duration,
}

impl ServerConfig {
    /// The defaults, listening at `socket_path`.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        let ring = RingConfig::default();
        Self {
            socket_path: socket_path.into(),
            ring_bytes: ring.capacity,
            max_frame_bytes: ring.max_frame,
            allow: AllowList::new(),
            group: None,
            max_clients: 8,
            max_clients_per_uid: None,
            wait: WaitStrategy::default(),
            collector: CollectorConfig::default(),
            table: TableConfig::default(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            stall_timeout: Duration::from_secs(30),
        }
    }

    /// Connections one uid may hold: `max_clients_per_uid`, or half of
    /// `max_clients` (at least 1).
    pub fn per_uid_limit(&self) -> usize {
        self.max_clients_per_uid
            .unwrap_or((self.max_clients / 2).max(1))
    }

    /// The ring each client gets.
    pub fn ring_config(&self) -> RingConfig {
        RingConfig::new(self.ring_bytes)
            .with_max_frame(self.max_frame_bytes)
            .with_wait(self.wait)
    }
}
