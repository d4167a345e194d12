//! One client connection: handshake, ring, control frames, clean-up.

use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use super::config::ServerConfig;
use super::shutdown::ShutdownHandle;
use super::slots::{Held, Slots};
use super::status;
use super::tasks::{self, TaskSignals};
use super::worker;
use crate::collector::{Collector, ProcessTable, Requester, SharedHashCache, SourceKind};
use crate::control::{
    ControlError, EventSource, RefusalCode, RingOffer, ServerChannel, ServerFrame, accept_client,
    client_frame, server_frame,
};
use crate::proto::control::Error as ErrorFrame;
use crate::ring::Producer;
use crate::sys::pidfd::PidFd;
use crate::sys::socket;
use crate::text;

/// Tasks a client may have waiting behind the running one.
const MAX_QUEUED_TASKS: usize = 8;

/// Bytes of a client's free text (its name, its goodbye) kept in a log line.
const LOGGED_TEXT_BYTES: usize = 64;

/// What every connection shares.
pub(super) struct Shared {
    pub(super) hash_cache: SharedHashCache,
    pub(super) table: ProcessTable,
    /// procmond's shutdown: a connection ended by it tells its client so.
    pub(super) shutdown: ShutdownHandle,
    /// The connection places, for status requests.
    pub(super) slots: Arc<Slots>,
    /// Uptime and task counts.
    pub(super) counters: Arc<status::Counters>,
}

/// What a client is told when procmond stops.
pub(super) const SHUTTING_DOWN: &str = "procmond is shutting down";

/// Serves one connection to its end; logs what happened. `slot`, its
/// handshake place, becomes a client slot once the handshake is done, and
/// is given back when the connection ends.
pub(super) fn serve(stream: UnixStream, config: &ServerConfig, mut slot: Held, shared: Shared) {
    let pending = match accept_client(stream, &config.allow, config.handshake_timeout) {
        Ok(pending) => pending,
        Err(error @ ControlError::NotAllowed { uid, pid }) => {
            drop(slot);
            tracing::warn!(uid, pid, %error, "connection refused");
            return;
        }
        Err(error) => {
            // Given back before the log line, which tests wait for.
            drop(slot);
            tracing::warn!(%error, "handshake failed");
            return;
        }
    };
    let peer = pending.peer();
    if let Err(reason) = slot.serve() {
        pending.refuse(RefusalCode::TooManyClients, reason.clone());
        drop(slot);
        tracing::warn!(uid = peer.uid, pid = peer.pid, %reason, "connection refused");
        return;
    }

    let (mut producer, fds) = match Producer::create(&config.ring_config()) {
        Ok(ring) => ring,
        Err(error) => {
            tracing::error!(uid = peer.uid, %error, "cannot create a ring");
            pending.refuse(
                RefusalCode::Unavailable,
                format!("procmond cannot create a result ring: {error}"),
            );
            return;
        }
    };
    let offer = RingOffer {
        ring_bytes: producer.capacity() as u64,
        max_frame_bytes: u32::try_from(producer.max_frame()).unwrap_or(u32::MAX),
        fds: &[fds.data.as_fd(), fds.control.as_fd()],
        event_source: match shared.table.source() {
            SourceKind::Connector => EventSource::Connector,
            SourceKind::Polling => EventSource::Polling,
        },
    };
    // The client chose it: escaped and cut, it cannot forge or flood a log.
    let client_name = text::for_log(pending.client_name(), LOGGED_TEXT_BYTES);
    let channel = match pending.welcome(&offer) {
        Ok(channel) => channel,
        Err(error) => {
            tracing::warn!(uid = peer.uid, %error, "handshake failed");
            return;
        }
    };
    // The client has its copies; ours would keep nothing alive but memory.
    drop(fds);
    tracing::info!(uid = peer.uid, pid = peer.pid, client = %client_name, "connection accepted");
    // The process that connected (where the kernel can say), else the pid
    // it had then, which it still holds unless it has exited since.
    let pidfd = socket::peer_pidfd(&channel).or_else(|_| PidFd::open(peer.pid));
    // Only root may have procmond open a path; anyone else attaches the file.
    let requester = Requester::peer(peer.uid, peer.pid, pidfd.as_ref().ok());
    match pidfd {
        Ok(pidfd) => producer.watch_peer(pidfd),
        Err(error) => tracing::debug!(pid = peer.pid, %error, "cannot watch the client's process"),
    }
    let reason = run(channel, producer, config, requester, shared, slot);
    tracing::info!(uid = peer.uid, pid = peer.pid, %reason, "connection closed; ring freed");
}

/// Reads control frames and feeds the worker until the client leaves;
/// returns why the connection ended.
fn run(
    mut channel: ServerChannel,
    producer: Producer,
    config: &ServerConfig,
    requester: Requester,
    shared: Shared,
    slot: Held,
) -> String {
    let closer = producer.closer();
    let signals = Arc::new(TaskSignals::default());
    let (work, queue) = mpsc::sync_channel(MAX_QUEUED_TASKS);
    // The worker's way to wake this thread's read when it stops on its own.
    let waker = match channel.as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(error) => return format!("cannot clone the control socket: {error}"),
    };
    let ended: Arc<OnceLock<String>> = Arc::default();
    // Dropped by the worker thread when it ends, however it ends.
    let (finished, worker_done) = mpsc::channel::<()>();
    let worker = {
        let signals = Arc::clone(&signals);
        let ended = Arc::clone(&ended);
        let collector = Collector::with_table(
            config.collector.clone(),
            shared.table.clone(),
            shared.hash_cache.clone(),
        );
        let stall = config.stall_timeout;
        let counters = Arc::clone(&shared.counters);
        thread::Builder::new()
            .name("procmond-work".into())
            .spawn(move || {
                let _finished = finished;
                let (producer, why) = worker::run(
                    producer, &queue, &signals, collector, &requester, stall, &counters,
                );
                if let Some(why) = why {
                    let _ = ended.set(why);
                    // The socket thread's read returns end-of-stream.
                    let _ = waker.shutdown(Shutdown::Read);
                }
                producer
            })
    };
    let worker = match worker {
        Ok(worker) => worker,
        Err(error) => return format!("cannot start a worker thread: {error}"),
    };

    let reason = loop {
        match channel.recv(None) {
            Ok((client_frame::Body::Task(request), attached)) => {
                match tasks::check(request, attached) {
                    Ok(job) => {
                        signals.queued(job.task_id());
                        match work.try_send(job) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                let message = format!(
                                    "more than {MAX_QUEUED_TASKS} tasks queued behind a running one"
                                );
                                tell(&mut channel, &message);
                                break message;
                            }
                            Err(TrySendError::Disconnected(_)) => {
                                break "the worker stopped".into();
                            }
                        }
                    }
                    Err(tasks::BadRequest(message)) => {
                        tell(&mut channel, &message);
                        break message;
                    }
                }
            }
            Ok((client_frame::Body::Cancel(cancel), _)) => {
                let task_id = text::for_log(&cancel.task_id, LOGGED_TEXT_BYTES);
                let applied = signals.cancel(cancel.task_id);
                tracing::info!(%task_id, ?applied, "task cancel received");
            }
            Ok((client_frame::Body::Goodbye(goodbye), _)) => {
                let reason = text::for_log(&goodbye.reason, LOGGED_TEXT_BYTES);
                break format!("client said goodbye: {reason}");
            }
            Ok((client_frame::Body::Status(_), _)) => {
                let now = status::status(&status::Sources {
                    config,
                    counters: &shared.counters,
                    slots: &shared.slots,
                    table: &shared.table,
                    hash_cache: &shared.hash_cache,
                });
                let frame = ServerFrame {
                    body: Some(server_frame::Body::Status(now)),
                };
                if let Err(error) = channel.send(&frame) {
                    break format!("cannot answer a status request: {error}");
                }
            }
            Ok((client_frame::Body::Hello(_), _)) => break "a second hello".into(),
            // The accept loop shuts the read side on shutdown: say why
            // before the ring closes, so the client reports it.
            Err(ControlError::PeerGone) if shared.shutdown.is_triggered() => {
                tell(&mut channel, SHUTTING_DOWN);
                break SHUTTING_DOWN.into();
            }
            Err(ControlError::PeerGone) => break "client gone (socket closed)".into(),
            Err(error) => break error.to_string(),
        }
    };
    if let Some(why) = ended.get() {
        // The worker stopped on its own: tell the client why before its ring
        // closes (its reader then reports this, not a vanished procmond),
        // and end the connection, which frees the client's slot.
        tell(&mut channel, why);
        drop(work);
        drop(join_within(worker, &worker_done));
        // Given back before the socket ends, so a client that sees the end
        // finds the slot free.
        drop(slot);
        let _ = shut_down(&channel);
        return why.clone();
    }
    // Stop the worker at once: a blocked write or a monitor's wait ends.
    signals.client_gone();
    closer.close();
    drop(work);
    drop(join_within(worker, &worker_done));
    drop(slot);
    reason
}

/// How long teardown waits for a connection's worker to stop once told to.
/// It stops between two records or file blocks; one stuck in a file-system
/// call that does not return is left behind (it frees its ring when the
/// call returns) and the client's slot is freed anyway.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Joins `worker` if it ends within [`WORKER_STOP_TIMEOUT`] (`done`
/// disconnects when it does); else leaves it running, detached.
fn join_within<T>(worker: thread::JoinHandle<T>, done: &mpsc::Receiver<()>) -> Option<T> {
    match done.recv_timeout(WORKER_STOP_TIMEOUT) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            tracing::warn!(
                timeout = ?WORKER_STOP_TIMEOUT,
                "the connection's worker is still busy (a file system call that does not return?); left to finish"
            );
            None
        }
        // Disconnected: the thread is ending; its join is immediate.
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => worker.join().ok(),
    }
}

/// Shuts the connection down both ways (the client's watcher sees its end).
fn shut_down(channel: &ServerChannel) -> std::io::Result<()> {
    let stream = UnixStream::from(channel.as_fd().try_clone_to_owned()?);
    stream.shutdown(Shutdown::Both)
}

/// Sends the client an error frame (best effort; it is being dropped).
fn tell(channel: &mut ServerChannel, message: &str) {
    let frame = ServerFrame {
        body: Some(server_frame::Body::Error(ErrorFrame {
            message: message.to_owned(),
        })),
    };
    let _ = channel.send(&frame);
}
