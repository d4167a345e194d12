//! A procmond server run in-process on a thread, stopped with a deadline.
#![allow(dead_code)] // each test file uses a different subset

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use daemoneye_lib::server::Server;

/// How long [`Serving::stop`] waits for the server to stop.
pub const STOP_WITHIN: Duration = Duration::from_secs(20);

/// A server running on a thread. `stop` triggers its shutdown and waits,
/// with a deadline, for it to end; dropping it (a failed assertion) only
/// triggers the shutdown.
pub struct Serving {
    pub server: Arc<Server>,
    done: Receiver<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Serving {
    pub fn start(server: Server) -> Serving {
        let server = Arc::new(server);
        let (done_tx, done) = mpsc::channel();
        let thread = {
            let server = Arc::clone(&server);
            thread::spawn(move || {
                server.run_until(&server.shutdown_handle());
                let _ = done_tx.send(());
            })
        };
        Serving {
            server,
            done,
            thread: Some(thread),
        }
    }

    /// Shuts the server down; fails the test if it has not stopped
    /// serving within [`STOP_WITHIN`].
    pub fn stop(mut self) {
        self.server.shutdown_handle().trigger();
        match self.done.recv_timeout(STOP_WITHIN) {
            // Disconnected: the thread panicked; the join says how.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                self.thread.take().unwrap().join().unwrap()
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("the server did not stop within {STOP_WITHIN:?} of its shutdown")
            }
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.server.shutdown_handle().trigger();
    }
}
