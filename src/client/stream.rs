//! Readers of one task's result stream.

use std::time::Instant;

use super::Agent;
use super::error::ClientError;
use crate::proto::ProtoProcessRecord;
use crate::session::{ProcessRecordView, RecordCursor, RecordKind};

/// The records of an ENUMERATE_PROCESSES or VERIFY_EXECUTABLE task, as they
/// arrive: owned ([`Iterator`]) or borrowed ([`next_view`](Self::next_view),
/// [`for_each_view`](Self::for_each_view)), both from the same views of the
/// agent's private copy of each frame.
///
/// It holds one frame at a time, checked whole before its first record is
/// handed out. It ends after the stream's last frame, or after the first
/// error (a failed task is [`ClientError::TaskFailed`]; one stopped by a
/// cancel is [`ClientError::Cancelled`]). Dropped before the end, the rest
/// of the stream is skipped by the agent's next call;
/// [`cancel`](Self::cancel) also stops procmond's work on it.
#[derive(Debug)]
pub struct Records<'a> {
    agent: &'a mut Agent,
    task_id: String,
    deadline: Instant,
    /// The records of the frame being read.
    batch: RecordCursor,
    /// The END frame was read.
    ended: bool,
    /// Nothing more will be yielded.
    done: bool,
}

impl<'a> Records<'a> {
    pub(super) fn new(agent: &'a mut Agent, task_id: String) -> Self {
        let deadline = crate::deadline::after(agent.options.timeout);
        Self {
            agent,
            task_id,
            deadline,
            batch: RecordCursor::default(),
            ended: false,
            done: false,
        }
    }

    /// Sets the deadline for the whole stream instead of the agent's
    /// timeout.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = deadline;
        self
    }

    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// Stops the task and reads its stream to the end (within the agent's
    /// timeout); records not read yet are dropped. True when procmond
    /// stopped it, false when it had finished first.
    pub fn cancel(mut self) -> Result<bool, ClientError> {
        if self.ended {
            return Ok(false);
        }
        self.done = true;
        self.agent.send_cancel(&self.task_id)?;
        let deadline = crate::deadline::after(self.agent.options.timeout);
        loop {
            let chunk = self.agent.chunk_for(&self.task_id, deadline)?;
            if chunk.marker.end {
                self.ended = true;
                return Ok(chunk.marker.cancelled);
            }
        }
    }

    /// The next record, borrowed from the agent's copy of its frame (a
    /// lending iterator: the view lives until the next call). Nothing is
    /// allocated per record. `None` after the last record or an error.
    ///
    /// # Errors
    ///
    /// As the owned iterator: [`ClientError::TaskFailed`],
    /// [`ClientError::Cancelled`], [`ClientError::Timeout`] past the
    /// deadline, [`ClientError::PeerGone`], [`ClientError::Corrupt`] for a
    /// frame that breaks the encoding or the schema's rules.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use daemoneye_lib::client::Agent;
    ///
    /// # fn main() -> Result<(), daemoneye_lib::client::ClientError> {
    /// let mut agent = Agent::connect("/run/daemoneye/procmond.sock")?;
    /// let mut records = agent.enumerate(None, false)?;
    /// while let Some(view) = records.next_view() {
    ///     let view = view?;
    ///     let args: Vec<&str> = view.command_line().collect();
    ///     println!("{} {} {}", view.pid(), view.name(), args.join(" "));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn next_view(&mut self) -> Option<Result<ProcessRecordView<'_>, ClientError>> {
        while self.batch.left() == 0 {
            if self.done {
                return None;
            }
            // Past its deadline the stream gives up, even when a frame is
            // there already: the deadline bounds the whole stream.
            if Instant::now() >= self.deadline {
                self.done = true;
                return Some(Err(ClientError::Timeout {
                    waiting_for: "procmond's results",
                }));
            }
            let frame = match self.agent.chunk_for(&self.task_id, self.deadline) {
                Ok(frame) => frame,
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            };
            if frame.marker.end {
                self.ended = true;
                self.done = true;
            }
            if frame.marker.cancelled {
                return Some(Err(ClientError::Cancelled {
                    task_id: self.task_id.clone(),
                }));
            }
            if !frame.success {
                self.done = true;
                return Some(Err(ClientError::TaskFailed {
                    task_id: self.task_id.clone(),
                    message: frame.error_message.unwrap_or_default(),
                }));
            }
            self.batch = frame.records;
        }
        self.batch.next(&self.agent.reader).map(Ok)
    }

    /// Calls `f` with each record, borrowed as in
    /// [`next_view`](Self::next_view), until the end or the first error
    /// (the stream's or `f`'s).
    ///
    /// # Errors
    ///
    /// The stream's errors (as for [`next_view`](Self::next_view)), turned
    /// into `E`, or the first error `f` returns.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use daemoneye_lib::client::{Agent, ClientError};
    ///
    /// # fn main() -> Result<(), ClientError> {
    /// let mut agent = Agent::connect("/run/daemoneye/procmond.sock")?;
    /// let mut rss = 0u64;
    /// agent.enumerate(None, false)?.for_each_view(|view| {
    ///     rss += view.memory_usage().unwrap_or(0);
    ///     Ok::<(), ClientError>(())
    /// })?;
    /// println!("{rss} bytes resident");
    /// # Ok(())
    /// # }
    /// ```
    pub fn for_each_view<E: From<ClientError>>(
        &mut self,
        mut f: impl FnMut(ProcessRecordView<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(view) = self.next_view() {
            f(view?)?;
        }
        Ok(())
    }
}

/// Owned records, each built from its view
/// ([`ProcessRecordView::to_owned`]).
impl Iterator for Records<'_> {
    type Item = Result<ProtoProcessRecord, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_view()
            .map(|view| view.map(|view| view.to_owned()))
    }
}

impl Drop for Records<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.agent.abandoned.push(std::mem::take(&mut self.task_id));
        }
    }
}

/// One MONITOR_PROCESS_TREE event.
#[derive(Clone, Debug, PartialEq)]
pub enum MonitorEvent {
    /// A member of the tree when monitoring began.
    Snapshot(ProtoProcessRecord),
    /// A process that joined the tree.
    Started(ProtoProcessRecord),
    /// A member that exited (as last known).
    Exited(ProtoProcessRecord),
    /// A member that replaced its image; the record carries the new one.
    Exec(ProtoProcessRecord),
}

impl MonitorEvent {
    /// The event `kind` for `record`.
    pub fn new(kind: EventKind, record: ProtoProcessRecord) -> MonitorEvent {
        match kind {
            EventKind::Snapshot => MonitorEvent::Snapshot(record),
            EventKind::Started => MonitorEvent::Started(record),
            EventKind::Exited => MonitorEvent::Exited(record),
            EventKind::Exec => MonitorEvent::Exec(record),
        }
    }

    /// What happened.
    pub fn kind(&self) -> EventKind {
        match self {
            MonitorEvent::Snapshot(_) => EventKind::Snapshot,
            MonitorEvent::Started(_) => EventKind::Started,
            MonitorEvent::Exited(_) => EventKind::Exited,
            MonitorEvent::Exec(_) => EventKind::Exec,
        }
    }

    /// The record, whatever the event.
    pub fn record(&self) -> &ProtoProcessRecord {
        match self {
            MonitorEvent::Snapshot(r)
            | MonitorEvent::Started(r)
            | MonitorEvent::Exited(r)
            | MonitorEvent::Exec(r) => r,
        }
    }
}

/// What a [`MonitorEvent`] says happened, without its record (as
/// [`MonitorStream::next_view`] gives it, beside a borrowed record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A member of the tree when monitoring began.
    Snapshot,
    /// A process that joined the tree.
    Started,
    /// A member that exited.
    Exited,
    /// A member that replaced its image.
    Exec,
}

impl EventKind {
    /// The lower-case name the agent's output uses (`"started"`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Snapshot => "snapshot",
            EventKind::Started => "started",
            EventKind::Exited => "exited",
            EventKind::Exec => "exec",
        }
    }

    fn of(kind: RecordKind) -> EventKind {
        match kind {
            RecordKind::Started => EventKind::Started,
            RecordKind::Exited => EventKind::Exited,
            RecordKind::Exec => EventKind::Exec,
            RecordKind::Snapshot | RecordKind::Result => EventKind::Snapshot,
        }
    }
}

/// A running MONITOR_PROCESS_TREE task: its events as they arrive, until
/// [`cancel`](Self::cancel). Dropped without cancelling, it cancels the task
/// (best effort) and the agent skips the rest of its stream.
#[derive(Debug)]
pub struct MonitorStream<'a> {
    agent: &'a mut Agent,
    task_id: String,
    /// The records of the frame being read.
    batch: RecordCursor,
    kind: RecordKind,
    ended: bool,
    cancelled: bool,
}

impl<'a> MonitorStream<'a> {
    pub(super) fn new(agent: &'a mut Agent, task_id: String) -> Self {
        Self {
            agent,
            task_id,
            batch: RecordCursor::default(),
            kind: RecordKind::Snapshot,
            ended: false,
            cancelled: false,
        }
    }

    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The next event, waiting until `deadline`: `Ok(None)` once the stream
    /// has ended, [`ClientError::Timeout`] when nothing happened in time
    /// (the stream stays usable).
    pub fn next_event(&mut self, deadline: Instant) -> Result<Option<MonitorEvent>, ClientError> {
        Ok(self
            .next_view(deadline)?
            .map(|(kind, view)| MonitorEvent::new(kind, view.to_owned())))
    }

    /// [`next_event`](Self::next_event), its record borrowed from the
    /// agent's copy of the frame (nothing allocated), valid until the next
    /// call.
    ///
    /// # Errors
    ///
    /// As [`next_event`](Self::next_event): [`ClientError::Timeout`] when
    /// nothing happened by `deadline` (the stream stays usable),
    /// [`ClientError::TaskFailed`], and the connection's errors.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, Instant};
    /// use daemoneye_lib::client::{Agent, ClientError, EventKind};
    ///
    /// # fn main() -> Result<(), ClientError> {
    /// let mut agent = Agent::connect("/run/daemoneye/procmond.sock")?;
    /// let mut stream = agent.monitor(&[], Duration::ZERO)?;
    /// let deadline = Instant::now() + Duration::from_secs(60);
    /// while let Some((kind, view)) = stream.next_view(deadline)? {
    ///     if kind == EventKind::Exec {
    ///         println!("{} now runs {:?}", view.pid(), view.executable_path());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn next_view(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<(EventKind, ProcessRecordView<'_>)>, ClientError> {
        loop {
            if self.batch.left() > 0 {
                let kind = EventKind::of(self.kind);
                return Ok(self.batch.next(&self.agent.reader).map(|view| (kind, view)));
            }
            if self.ended {
                return Ok(None);
            }
            let frame = self.agent.chunk_for(&self.task_id, deadline)?;
            self.ended = frame.marker.end;
            if !frame.success {
                self.ended = true;
                return Err(ClientError::TaskFailed {
                    task_id: self.task_id.clone(),
                    message: frame.error_message.unwrap_or_default(),
                });
            }
            self.kind = frame.marker.kind;
            self.batch = frame.records;
        }
    }

    /// Stops the task and reads its stream to the end (within the agent's
    /// timeout); events not read yet are dropped.
    pub fn cancel(mut self) -> Result<(), ClientError> {
        self.cancelled = true;
        if self.ended {
            return Ok(());
        }
        self.agent.send_cancel(&self.task_id)?;
        let deadline = crate::deadline::after(self.agent.options.timeout);
        while !self.ended {
            let chunk = self.agent.chunk_for(&self.task_id, deadline)?;
            self.ended = chunk.marker.end;
        }
        Ok(())
    }
}

impl Drop for MonitorStream<'_> {
    fn drop(&mut self) {
        if !self.ended {
            if !self.cancelled {
                let _ = self.agent.send_cancel(&self.task_id);
            }
            self.agent.abandoned.push(std::mem::take(&mut self.task_id));
        }
    }
}
