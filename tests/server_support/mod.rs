//! A procmond server run in-process on a thread, stopped with a deadline.
#![allow(dead_code)] // each test file uses a different subset

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use std::path::Path;
use std::time::Instant;

use daemoneye_lib::control::{ClientChannel, ClientFrame, Connector, client_frame};
use daemoneye_lib::proto::DetectionTask;
use daemoneye_lib::proto::control::{Cancel, TaskRequest};
use daemoneye_lib::ring::{Consumer, ConsumerFds, WaitStrategy};
use daemoneye_lib::server::Server;
use daemoneye_lib::session::{Chunk, read_chunk};

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

/// A client speaking the protocol frame by frame: its control channel and
/// its ring.
pub struct Raw {
    pub channel: ClientChannel,
    pub consumer: Consumer,
}

impl Raw {
    pub fn connect(socket: &Path) -> Raw {
        let (channel, welcome) = Connector::new("raw").connect(socket).unwrap();
        let Ok::<[_; 2], _>([data, control]) = welcome.fds.try_into() else {
            panic!("two ring descriptors");
        };
        let consumer =
            Consumer::attach(ConsumerFds { data, control }, WaitStrategy::default()).unwrap();
        Raw { channel, consumer }
    }

    pub fn task(&mut self, task: DetectionTask, interval_ms: Option<u32>) {
        let frame = ClientFrame {
            body: Some(client_frame::Body::Task(TaskRequest {
                task: Some(task),
                with_hashes: false,
                interval_ms,
                hash_file_attached: false,
                changes: None,
            })),
        };
        self.channel.send(&frame).unwrap();
    }

    pub fn cancel(&mut self, task_id: &str) {
        let frame = ClientFrame {
            body: Some(client_frame::Body::Cancel(Cancel {
                task_id: task_id.into(),
            })),
        };
        self.channel.send(&frame).unwrap();
    }

    pub fn chunk(&mut self) -> Chunk {
        read_chunk(&mut self.consumer, Instant::now() + STOP_WITHIN).unwrap()
    }

    /// Frames until the END of `task_id` (the next stream must be its).
    pub fn read_to_end(&mut self, task_id: &str) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        loop {
            let chunk = self.chunk();
            assert_eq!(chunk.result.task_id, task_id);
            let end = chunk.marker.end;
            chunks.push(chunk);
            if end {
                return chunks;
            }
        }
    }
}
