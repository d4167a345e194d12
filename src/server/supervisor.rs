//! What a service manager hears of the accept loop.

use std::time::Duration;

/// Told by [`Server::run_supervised`](super::Server::run_supervised) how
/// the accept loop is doing; procmond's implementation speaks systemd's
/// notify protocol (`READY=1`, `WATCHDOG=1`, `STOPPING=1`). Every method
/// runs on the loop's thread, so it should return quickly.
pub trait Supervisor {
    /// The loop is about to accept connections (they may already be
    /// waiting in the backlog).
    fn serving(&mut self) {}
    /// How often [`alive`](Self::alive) must be called; `None`: never.
    fn alive_every(&self) -> Option<Duration> {
        None
    }
    /// The loop is alive: called when it starts and then at least every
    /// [`alive_every`](Self::alive_every), between connections.
    fn alive(&mut self) {}
    /// The loop saw the shutdown and now ends the connections.
    fn stopping(&mut self) {}
}

/// A [`Supervisor`] that is told nothing: what
/// [`Server::run_until`](super::Server::run_until) uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unsupervised;

impl Supervisor for Unsupervised {}
