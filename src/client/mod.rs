//! daemoneye-agent's library: connect to procmond, send tasks, read their
//! results from the shared-memory ring.
//!
//! An [`Agent`] is one connection with its own ring. Each task call sends a
//! DetectionTask over the control socket and returns a reader of its result
//! stream: [`Records`] decodes one ring frame at a time, so memory stays at
//! about one frame whatever the number of records. Every call has a deadline
//! ([`ClientOptions::timeout`], or [`Records::with_deadline`]). A watcher
//! thread turns the control socket's end (procmond exited or was killed) into
//! a ring close, so a blocked read returns [`ClientError::PeerGone`] at once;
//! the ring also watches procmond's process through a pidfd.
//!
//! ```no_run
//! use daemoneye_lib::client::Agent;
//!
//! # fn main() -> Result<(), daemoneye_lib::client::ClientError> {
//! let mut agent = Agent::connect("/run/daemoneye/procmond.sock")?;
//! for record in agent.enumerate(None, false)? {
//!     let record = record?;
//!     println!("{} {}", record.pid, record.name);
//! }
//! # Ok(())
//! # }
//! ```

mod changes;
mod error;
mod stream;
mod watcher;

use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use changes::{Applied, ChangeKind, ChangeSet, ChangeThresholds, LiveTable, ProcessChange};
pub use error::ClientError;
pub use stream::{EventKind, MonitorEvent, MonitorStream, Records};

use crate::control::{
    ClientChannel, ClientFrame, Connector, EventSource, HANDSHAKE_TIMEOUT, client_frame,
};
use crate::proto::control::{Cancel, Goodbye, Status, StatusRequest, TaskRequest};
use crate::proto::{DetectionTask, ProtoHashCheck, ProtoHashResult, ProtoProcessFilter};
use crate::ring::{Consumer, ConsumerFds, RingError, WaitStrategy};
use crate::session::{
    ChunkReader, DetectionResultView, Marker, ProcessRecordView, RecordCursor, RecordKind,
    SessionError,
};
use crate::sys::fs::open_regular;
use crate::sys::pidfd::PidFd;
use crate::sys::socket::connect_before;
use watcher::{Gone, GoneReason};

/// procmond's socket at its default place: the first of
/// [`agent_socket_paths`](crate::control::agent_socket_paths) that exists
/// (the per-user socket, then the system one a root procmond uses), or
/// [`ClientError::NoSocket`] naming every path tried.
pub fn find_socket() -> Result<PathBuf, ClientError> {
    let tried = crate::control::agent_socket_paths();
    match tried.iter().find(|path| path.exists()) {
        Some(path) => Ok(path.clone()),
        None => Err(ClientError::NoSocket { tried }),
    }
}

/// How an [`Agent`] connects and waits.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Bound on each task call (until the last record is read). Default
    /// 30 s.
    pub timeout: Duration,
    /// Bound on the handshake. Default 5 s.
    pub connect_timeout: Duration,
    /// How reads wait for data in the ring. With spin-then-park (the
    /// default), the wait for a task's first frame parks at once: that frame
    /// cannot come before procmond has collected, and spinning would take
    /// the CPU it needs.
    pub wait: WaitStrategy,
    /// The name procmond logs for this agent.
    pub client_name: String,
    /// The largest result frame this agent accepts: a procmond whose ring
    /// offers larger frames is refused at connect
    /// ([`ClientError::FrameTooLarge`]), so a frame's private copy never
    /// takes more than this. Default [`DEFAULT_MAX_FRAME_BYTES`].
    pub max_frame_bytes: usize,
    /// Server uids trusted besides root and this agent's own (a procmond
    /// run as a service user, such as `daemoneye`); a procmond under any
    /// other uid is refused
    /// ([`ControlError::UntrustedServer`](crate::control::ControlError::UntrustedServer)):
    /// the socket's maker before anything is sent, the process that
    /// answers before anything it wrote is read.
    /// Default: none.
    pub trusted_server_uids: Vec<u32>,
}

/// The default [`ClientOptions::max_frame_bytes`]: 64 MiB, far above
/// procmond's default (its ring's size / 8, 128 KiB for a 1 MiB ring).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

/// How long a reader that finds the ring closed waits for the socket
/// watcher to say why (procmond's reason is already on the socket then; the
/// watcher only has to be scheduled).
const GONE_REASON_WAIT: Duration = Duration::from_secs(2);

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: HANDSHAKE_TIMEOUT,
            wait: WaitStrategy::default(),
            client_name: "daemoneye-agent".into(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            trusted_server_uids: Vec::new(),
        }
    }
}

/// A CHECK_PROCESS_HASH answer.
#[derive(Clone, Debug, PartialEq)]
pub struct HashReport {
    /// procmond's hash result (successful: the hash was computed).
    pub result: ProtoHashResult,
    /// Whether the hash equals the expected one (case-insensitive); `None`
    /// when nothing was expected.
    pub matched: Option<bool>,
}

/// One connection to procmond; see the [module documentation](self).
#[derive(Debug)]
pub struct Agent {
    channel: ClientChannel,
    consumer: Consumer,
    /// A handle on the socket, to end the watcher when the agent is dropped.
    socket: UnixStream,
    watcher: Option<JoinHandle<()>>,
    gone: GoneReason,
    options: ClientOptions,
    next_task: u64,
    /// Copies each frame out of the ring and checks it; record views
    /// borrow its copy.
    reader: ChunkReader,
    /// Tasks whose streams were left unread: their frames are skipped.
    abandoned: Vec<String>,
    /// A task was sent and no frame has been read since.
    awaiting_first_frame: bool,
    server_pid: u32,
    event_source: EventSource,
    /// Status answers, from the watcher.
    statuses: std::sync::mpsc::Receiver<Status>,
}

impl Agent {
    /// Connects to procmond at `path` with the default options.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotRunning`] (nothing listens there),
    /// [`ClientError::Refused`] (not allowed, too many clients; the reason
    /// names the limit), [`ClientError::Timeout`] (no handshake within
    /// [`ClientOptions::connect_timeout`]), [`ClientError::Protocol`] or
    /// [`ClientError::Ring`] (a handshake or ring this agent cannot use),
    /// [`ClientError::FrameTooLarge`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use daemoneye_lib::client::{Agent, find_socket};
    ///
    /// # fn main() -> Result<(), daemoneye_lib::client::ClientError> {
    /// let agent = Agent::connect(find_socket()?)?;
    /// println!("procmond {} learns of processes by {:?}", agent.server_pid(), agent.event_source());
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect(path: impl AsRef<Path>) -> Result<Agent, ClientError> {
        Agent::connect_with(path, ClientOptions::default())
    }

    /// Connects to procmond at `path`: handshake, attach the ring it passes,
    /// watch its process and socket.
    ///
    /// `options.connect_timeout` bounds the whole: the `connect` (which on
    /// Linux waits while the listener's backlog is full; bounded through
    /// `SO_SNDTIMEO`, see [`connect_before`]) and the handshake after it.
    pub fn connect_with(
        path: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<Agent, ClientError> {
        let path = path.as_ref();
        let deadline = crate::deadline::after(options.connect_timeout);
        let stream = connect_before(path, deadline).map_err(|source| {
            if source.kind() == std::io::ErrorKind::TimedOut {
                ClientError::Timeout {
                    waiting_for: "procmond to accept the connection (its backlog stayed full)",
                }
            } else {
                ClientError::from_control(crate::control::ControlError::Connect {
                    path: path.to_owned(),
                    source,
                })
            }
        })?;
        let io = |context| move |source| ClientError::Io { context, source };
        let socket = stream
            .try_clone()
            .map_err(io("cloning the control socket"))?;
        let connector = options
            .trusted_server_uids
            .iter()
            .fold(Connector::new(options.client_name.clone()), |c, &uid| {
                c.trust_server_uid(uid)
            });
        let (channel, welcome) = connector
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .handshake(stream)
            .map_err(ClientError::from_control)?;
        let (event_source, server) = (welcome.event_source, welcome.server);
        let Ok::<[_; 2], _>([data, control]) = welcome.fds.try_into() else {
            return Err(ClientError::Protocol {
                problem: "the ring needs exactly 2 descriptors (data, control)".into(),
            });
        };
        let mut consumer = Consumer::attach(ConsumerFds { data, control }, options.wait)
            .map_err(ClientError::Ring)?;
        if consumer.max_frame() > options.max_frame_bytes {
            return Err(ClientError::FrameTooLarge {
                offered: consumer.max_frame(),
                max: options.max_frame_bytes,
            });
        }
        // procmond in another pid namespace shows pid 0: then the socket
        // watcher alone notices its death.
        if let Ok(pidfd) = PidFd::open(server.pid) {
            consumer.watch_peer(pidfd);
        }
        let gone = GoneReason::default();
        let watched = channel.try_clone().map_err(ClientError::Control)?;
        let (statuses_sender, statuses) = std::sync::mpsc::channel();
        let watcher = watcher::spawn(watched, consumer.closer(), gone.clone(), statuses_sender)
            .map_err(io("starting the socket watcher"))?;
        Ok(Agent {
            channel,
            consumer,
            socket,
            watcher: Some(watcher),
            gone,
            options,
            next_task: 0,
            reader: ChunkReader::new(),
            abandoned: Vec::new(),
            awaiting_first_frame: false,
            server_pid: server.pid,
            event_source,
            statuses,
        })
    }

    /// How procmond learns of processes, as it said in the handshake: the
    /// kernel's process connector (every fork, exec and exit is seen), or
    /// polling (short-lived processes can be missed).
    pub fn event_source(&self) -> EventSource {
        self.event_source
    }

    /// procmond's pid, as the kernel attached it to its hello (the process
    /// that answered, even on a socket systemd made; 0 when procmond is outside
    /// our pid namespace).
    pub fn server_pid(&self) -> u32 {
        self.server_pid
    }

    /// The largest result frame of this connection's ring.
    pub fn max_frame(&self) -> usize {
        self.consumer.max_frame()
    }

    /// Sets the bound on each later task call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.options.timeout = timeout;
    }

    /// ENUMERATE_PROCESSES: the processes `filter` selects (all with
    /// `None`), with executable hashes when `with_hashes`.
    ///
    /// # Errors
    ///
    /// Sending: [`ClientError::PeerGone`] or [`ClientError::Ended`] when
    /// procmond has gone. Reading the records: those, and
    /// [`ClientError::Timeout`], [`ClientError::TaskFailed`] (a filter
    /// procmond refuses names why), [`ClientError::Corrupt`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use daemoneye_lib::client::Agent;
    /// use daemoneye_lib::proto::ProtoProcessFilter;
    ///
    /// # fn main() -> Result<(), daemoneye_lib::client::ClientError> {
    /// let mut agent = Agent::connect("/run/daemoneye/procmond.sock")?;
    /// let sshd = ProtoProcessFilter { process_names: vec!["sshd".into()], ..Default::default() };
    /// for record in agent.enumerate(Some(sshd), true)? {
    ///     let record = record?;
    ///     println!("{} {:?}", record.pid, record.executable_hash);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn enumerate(
        &mut self,
        filter: Option<ProtoProcessFilter>,
        with_hashes: bool,
    ) -> Result<Records<'_>, ClientError> {
        let task_id = self.task_id();
        let task = DetectionTask::new_enumerate_processes(task_id.clone(), filter);
        self.send_task(task, with_hashes, None)?;
        Ok(Records::new(self, task_id))
    }

    /// VERIFY_EXECUTABLE: the processes `filter` selects, each with the
    /// SHA-256 of its running image and whether the file on disk still is
    /// that image (`file_exists`).
    ///
    /// # Errors
    ///
    /// As [`enumerate`](Self::enumerate).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use daemoneye_lib::client::Agent;
    ///
    /// # fn main() -> Result<(), daemoneye_lib::client::ClientError> {
    /// let mut agent = Agent::connect("/run/daemoneye/procmond.sock")?;
    /// for record in agent.verify(None)? {
    ///     let record = record?;
    ///     if !record.file_exists {
    ///         println!("{} runs an image no longer on disk", record.pid);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn verify(
        &mut self,
        filter: Option<ProtoProcessFilter>,
    ) -> Result<Records<'_>, ClientError> {
        let task_id = self.task_id();
        let task = DetectionTask::new_verify_executable(task_id.clone(), filter);
        self.send_task(task, false, None)?;
        Ok(Records::new(self, task_id))
    }

    /// CHECK_PROCESS_HASH: the SHA-256 of `check.executable_path`, compared
    /// with `check.expected_hash` when it is not empty. A hash that could not
    /// be computed is [`ClientError::TaskFailed`] naming why.
    ///
    /// Unless this process runs as root, it opens the file itself (with
    /// `sys::fs::open_regular`: a regular file only, no device opened) and
    /// attaches the descriptor to the task, so the kernel decides with this
    /// process's rights (mode bits, ACLs, LSMs, its mount namespace) what it
    /// may hash; a file it cannot open is [`ClientError::HashFile`] and
    /// nothing is sent. procmond opens no path for a peer but root.
    ///
    /// # Errors
    ///
    /// [`ClientError::HashFile`] (not opened here), [`ClientError::TaskFailed`]
    /// (procmond could not hash it, or refused the algorithm),
    /// [`ClientError::Timeout`], and the connection's errors.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use daemoneye_lib::client::Agent;
    /// use daemoneye_lib::proto::ProtoHashCheck;
    ///
    /// # fn main() -> Result<(), daemoneye_lib::client::ClientError> {
    /// let mut agent = Agent::connect("/run/daemoneye/procmond.sock")?;
    /// let report = agent.hash_check(ProtoHashCheck {
    ///     expected_hash: String::new(),
    ///     hash_algorithm: "sha256".into(),
    ///     executable_path: "/usr/bin/ssh".into(),
    /// })?;
    /// println!("{}", report.result.hash_value);
    /// # Ok(())
    /// # }
    /// ```
    pub fn hash_check(&mut self, check: ProtoHashCheck) -> Result<HashReport, ClientError> {
        let file = if rustix::process::geteuid().is_root() {
            None
        } else {
            let path = &check.executable_path;
            Some(open_regular(Path::new(path)).map_err(|e| ClientError::hash_file(path, &e))?)
        };
        let task_id = self.task_id();
        let expected = check.expected_hash.trim().to_owned();
        let task = DetectionTask::new_hash_check(task_id.clone(), check);
        let request = TaskRequest {
            task: Some(task),
            ..TaskRequest::default()
        };
        self.send_request(request, file.as_ref().map(AsFd::as_fd))?;
        let deadline = crate::deadline::after(self.options.timeout);
        let mut hash = None;
        let mut failure = None;
        loop {
            let frame = self.call_frame(&task_id, deadline)?;
            if !frame.success {
                failure = frame.error_message;
            } else if let Some(result) = frame.hash_result {
                hash = Some(result);
            }
            if frame.marker.end {
                break;
            }
        }
        if let Some(message) = failure {
            return Err(ClientError::TaskFailed { task_id, message });
        }
        let result = hash.ok_or_else(|| ClientError::TaskFailed {
            task_id,
            message: "procmond's result carries no hash result".into(),
        })?;
        let matched =
            (!expected.is_empty()).then(|| expected.eq_ignore_ascii_case(&result.hash_value));
        Ok(HashReport { result, matched })
    }

    /// procmond's status: version, pid, uptime, privileges, its process
    /// event source and counters, clients, tasks, hash cache, ring size.
    ///
    /// # Errors
    ///
    /// [`ClientError::Timeout`] when no answer comes within the agent's
    /// timeout, and the connection's errors.
    pub fn status(&mut self) -> Result<Status, ClientError> {
        // An answer left over from a timed-out call is not this one's.
        while self.statuses.try_recv().is_ok() {}
        let frame = ClientFrame {
            body: Some(client_frame::Body::Status(StatusRequest {})),
        };
        self.channel
            .send(&frame)
            .map_err(ClientError::from_control)?;
        let deadline = crate::deadline::after(self.options.timeout);
        self.statuses
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|error| match error {
                std::sync::mpsc::RecvTimeoutError::Timeout => ClientError::Timeout {
                    waiting_for: "procmond's status",
                },
                std::sync::mpsc::RecvTimeoutError::Disconnected => self.gone_error(),
            })
    }

    /// ENUMERATE_PROCESSES, changes only: what changed since this
    /// connection's previous call, to apply to a [`LiveTable`]. The first call on a connection, and the first after
    /// one that did not finish, returns everything with
    /// [`ChangeSet::full`] set. With nothing changed it costs one small
    /// frame.
    ///
    /// # Errors
    ///
    /// As [`enumerate`](Self::enumerate): [`ClientError::TaskFailed`] when
    /// procmond refuses the task (a bad threshold names itself),
    /// [`ClientError::Timeout`] past the agent's timeout, and the
    /// connection's errors.
    pub fn enumerate_changes(
        &mut self,
        filter: Option<ProtoProcessFilter>,
        thresholds: ChangeThresholds,
    ) -> Result<ChangeSet, ClientError> {
        let mut changes = Vec::new();
        let full = self.for_each_change(filter, thresholds, |kind, view| {
            changes.push(ProcessChange::new(kind, view.to_owned()));
            Ok::<(), ClientError>(())
        })?;
        Ok(ChangeSet { full, changes })
    }

    /// [`enumerate_changes`](Self::enumerate_changes), each change handed
    /// to `f` as it is read, its record borrowed from the agent's copy of
    /// the frame (nothing allocated per record). Returns whether the result
    /// was whole ([`ChangeSet::full`]).
    ///
    /// # Errors
    ///
    /// As [`enumerate_changes`](Self::enumerate_changes), turned into `E`,
    /// or the first error `f` returns. The rest of the stream is then
    /// skipped by the next call, but procmond counts the changes as
    /// delivered: a picture that missed some starts again whole on a new
    /// connection.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use daemoneye_lib::client::{Agent, ChangeKind, ChangeThresholds, ClientError};
    ///
    /// # fn main() -> Result<(), ClientError> {
    /// let mut agent = Agent::connect("/run/daemoneye/procmond.sock")?;
    /// agent.for_each_change(None, ChangeThresholds::default(), |kind, view| {
    ///     if kind == ChangeKind::Gone {
    ///         println!("{} ({}) exited", view.pid(), view.name());
    ///     }
    ///     Ok::<(), ClientError>(())
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn for_each_change<E: From<ClientError>>(
        &mut self,
        filter: Option<ProtoProcessFilter>,
        thresholds: ChangeThresholds,
        mut f: impl FnMut(ChangeKind, ProcessRecordView<'_>) -> Result<(), E>,
    ) -> Result<bool, E> {
        let task_id = self.task_id();
        let task = DetectionTask::new_enumerate_processes(task_id.clone(), filter);
        let request = TaskRequest {
            task: Some(task),
            changes: Some(thresholds.into()),
            ..TaskRequest::default()
        };
        self.send_request(request, None)?;
        let deadline = crate::deadline::after(self.options.timeout);
        let mut full = false;
        loop {
            let frame = self.call_frame(&task_id, deadline)?;
            if !frame.success {
                if !frame.marker.end {
                    self.abandoned.push(task_id.clone());
                }
                let message = frame.error_message.unwrap_or_default();
                return Err(ClientError::TaskFailed { task_id, message }.into());
            }
            full |= frame.marker.full;
            let kind = if frame.marker.kind == RecordKind::Exited {
                ChangeKind::Gone
            } else {
                ChangeKind::Updated
            };
            let mut records = frame.records;
            while let Some(view) = records.next(&self.reader) {
                if let Err(error) = f(kind, view) {
                    if !frame.marker.end {
                        self.abandoned.push(task_id);
                    }
                    return Err(error);
                }
            }
            if frame.marker.end {
                return Ok(full);
            }
        }
    }

    /// MONITOR_PROCESS_TREE: the tree under `roots` (every process when
    /// empty), then what started, exec'd and exited in it, in order, until
    /// [`MonitorStream::cancel`]. `interval` is the longest a change waits
    /// to be batched with others into one frame (zero: sent at once); where
    /// procmond polls ([`Agent::event_source`]), it is the polling
    /// interval, at least 10 ms.
    ///
    /// # Errors
    ///
    /// Sending: the connection's errors. Reading events
    /// ([`MonitorStream::next_event`]): [`ClientError::Timeout`] at its
    /// deadline (the stream goes on), [`ClientError::TaskFailed`] (an
    /// interval over procmond's maximum), and the connection's errors.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, Instant};
    /// use daemoneye_lib::client::{Agent, MonitorEvent};
    ///
    /// # fn main() -> Result<(), daemoneye_lib::client::ClientError> {
    /// let mut agent = Agent::connect("/run/daemoneye/procmond.sock")?;
    /// let mut stream = agent.monitor(&[1], Duration::from_millis(10))?;
    /// let deadline = Instant::now() + Duration::from_secs(60);
    /// while let Some(event) = stream.next_event(deadline)? {
    ///     if let MonitorEvent::Exec(record) = event {
    ///         println!("{} now runs {:?}", record.pid, record.executable_path);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn monitor(
        &mut self,
        roots: &[u32],
        interval: Duration,
    ) -> Result<MonitorStream<'_>, ClientError> {
        let task_id = self.task_id();
        let filter = (!roots.is_empty()).then(|| ProtoProcessFilter {
            process_names: Vec::new(),
            pids: roots.to_vec(),
            executable_pattern: None,
        });
        let task = DetectionTask::new_monitor_process_tree(task_id.clone(), filter);
        let interval_ms = u32::try_from(interval.as_millis()).unwrap_or(u32::MAX);
        self.send_task(task, false, Some(interval_ms))?;
        Ok(MonitorStream::new(self, task_id))
    }

    fn task_id(&mut self) -> String {
        self.next_task += 1;
        format!("agent-{}-{}", std::process::id(), self.next_task)
    }

    fn send_task(
        &mut self,
        task: DetectionTask,
        with_hashes: bool,
        interval_ms: Option<u32>,
    ) -> Result<(), ClientError> {
        let request = TaskRequest {
            task: Some(task),
            with_hashes,
            interval_ms,
            ..TaskRequest::default()
        };
        self.send_request(request, None)
    }

    /// Sends a task request, with the file to hash attached when `file` is
    /// given (`hash_file_attached` is set here).
    fn send_request(
        &mut self,
        mut request: TaskRequest,
        file: Option<BorrowedFd<'_>>,
    ) -> Result<(), ClientError> {
        if self.gone.is_known() || self.consumer.is_closed() {
            return Err(self.gone_error());
        }
        let frame = ClientFrame {
            body: Some(client_frame::Body::Task({
                request.hash_file_attached = file.is_some();
                request
            })),
        };
        let fds: Vec<BorrowedFd<'_>> = file.into_iter().collect();
        self.channel.send_with_fds(&frame, &fds).map_err(
            |error| match ClientError::from_control(error) {
                ClientError::PeerGone { .. } => self.gone_error(),
                other => other,
            },
        )?;
        self.awaiting_first_frame = true;
        Ok(())
    }

    fn send_cancel(&mut self, task_id: &str) -> Result<(), ClientError> {
        let frame = ClientFrame {
            body: Some(client_frame::Body::Cancel(Cancel {
                task_id: task_id.to_owned(),
            })),
        };
        self.channel.send(&frame).map_err(ClientError::from_control)
    }

    /// The next frame of `task_id`'s stream, skipping what is left of
    /// abandoned streams. Its records stay in the agent's reader, where
    /// [`FrameHead::records`] finds them.
    /// The next frame of a task answered within one call (a hash check, a
    /// changes-only enumerate): on an error the rest of its stream is left
    /// to be skipped; a frame marked cancelled is [`ClientError::Cancelled`].
    fn call_frame(&mut self, task_id: &str, deadline: Instant) -> Result<FrameHead, ClientError> {
        let frame = match self.chunk_for(task_id, deadline) {
            Ok(frame) => frame,
            Err(error) => {
                self.abandoned.push(task_id.to_owned());
                return Err(error);
            }
        };
        if frame.marker.cancelled {
            return Err(ClientError::Cancelled {
                task_id: task_id.to_owned(),
            });
        }
        Ok(frame)
    }

    fn chunk_for(&mut self, task_id: &str, deadline: Instant) -> Result<FrameHead, ClientError> {
        loop {
            // A task's first frame comes no sooner than procmond has
            // collected (a millisecond or more): spinning for it would only
            // take a core from procmond, whose socket thread and worker must
            // wake to run the task (on 2 cores this delayed a task's start
            // by up to ~0.4 ms). Later frames come close together: spin.
            let wait = match (self.awaiting_first_frame, self.options.wait) {
                (true, WaitStrategy::SpinThenPark { park_timeout, .. }) => WaitStrategy::Park {
                    timeout: park_timeout,
                },
                (_, wait) => wait,
            };
            self.consumer.set_wait(wait).map_err(ClientError::Ring)?;
            let chunk = match self.reader.read_view(&mut self.consumer, deadline) {
                Ok(chunk) => chunk,
                Err(error) => return Err(self.stream_error(error)),
            };
            self.awaiting_first_frame = false;
            let result = chunk.result;
            if result.task_id() == task_id {
                return Ok(FrameHead::new(chunk.marker, &result));
            }
            match self.abandoned.iter().position(|id| id == result.task_id()) {
                Some(i) => {
                    if chunk.marker.end {
                        self.abandoned.swap_remove(i);
                    }
                    // Frames of abandoned streams arriving without pause
                    // must not hold the caller past its deadline.
                    if Instant::now() >= deadline {
                        return Err(ClientError::Timeout {
                            waiting_for: "procmond's results",
                        });
                    }
                }
                None => {
                    let got = result.task_id().chars().take(64).collect();
                    return Err(self.stream_error(SessionError::WrongTask {
                        expected: task_id.to_owned(),
                        got,
                    }));
                }
            }
        }
    }

    fn stream_error(&mut self, error: SessionError) -> ClientError {
        match error {
            SessionError::Ring(RingError::Closed | RingError::PeerGone) => self.gone_error(),
            SessionError::Ring(RingError::TimedOut) => ClientError::Timeout {
                waiting_for: "procmond's results",
            },
            other => {
                // The stream cannot be trusted any more.
                self.consumer.close();
                ClientError::Corrupt(other)
            }
        }
    }

    /// Why the ring ended, as the watcher tells it. Unless this agent
    /// closed the ring itself, the watcher is sure to tell soon: procmond
    /// says why before its ring closes, and a procmond that died has closed
    /// the socket too.
    fn gone_error(&self) -> ClientError {
        let within = if self.consumer.closer().is_closed() {
            Duration::ZERO
        } else {
            GONE_REASON_WAIT
        };
        match self.gone.wait(within) {
            Some(Gone::Ended(reason)) => ClientError::Ended { reason },
            Some(Gone::Lost(detail)) => ClientError::PeerGone { detail },
            None => ClientError::PeerGone {
                detail: "procmond's process exited or closed the ring".into(),
            },
        }
    }
}

/// What a task's reader needs of a frame; its records stay in the agent's
/// reader (its private copy of the frame).
struct FrameHead {
    marker: Marker,
    success: bool,
    /// Only for a failure (nothing is allocated for a success).
    error_message: Option<String>,
    hash_result: Option<ProtoHashResult>,
    /// The frame's records, in the agent's [`ChunkReader`].
    records: RecordCursor,
}

impl FrameHead {
    fn new(marker: Marker, result: &DetectionResultView<'_>) -> Self {
        FrameHead {
            marker,
            success: result.success(),
            error_message: (!result.success())
                .then(|| result.error_message().unwrap_or_default().to_owned()),
            hash_result: result.hash_result().map(|hash| hash.to_owned()),
            records: RecordCursor::all(result),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Best effort: procmond may be gone already.
        let goodbye = ClientFrame {
            body: Some(client_frame::Body::Goodbye(Goodbye {
                reason: "agent closing".into(),
            })),
        };
        let _ = self.channel.send(&goodbye);
        let _ = self.socket.shutdown(Shutdown::Both);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}
