//! Readers of one task's result stream.

use std::time::Instant;
use std::vec;

use super::Agent;
use super::error::ClientError;
use crate::proto::ProtoProcessRecord;
use crate::session::RecordKind;

/// The records of an ENUMERATE_PROCESSES or VERIFY_EXECUTABLE task, as they
/// arrive.
///
/// It holds one decoded frame at a time. It ends after the stream's last
/// frame, or after the first error (a failed task is
/// [`ClientError::TaskFailed`]; one stopped by a cancel is
/// [`ClientError::Cancelled`]). Dropped before the end, the rest of the
/// stream is skipped by the agent's next call; [`cancel`](Self::cancel)
/// also stops procmond's work on it.
#[derive(Debug)]
pub struct Records<'a> {
    agent: &'a mut Agent,
    task_id: String,
    deadline: Instant,
    batch: vec::IntoIter<ProtoProcessRecord>,
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
            batch: Vec::new().into_iter(),
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
}

impl Iterator for Records<'_> {
    type Item = Result<ProtoProcessRecord, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.batch.next() {
                return Some(Ok(record));
            }
            if self.done {
                return None;
            }
            let chunk = match self.agent.chunk_for(&self.task_id, self.deadline) {
                Ok(chunk) => chunk,
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            };
            if chunk.marker.end {
                self.ended = true;
                self.done = true;
            }
            if chunk.marker.cancelled {
                return Some(Err(ClientError::Cancelled {
                    task_id: self.task_id.clone(),
                }));
            }
            if !chunk.result.success {
                self.done = true;
                let message = chunk.result.error_message.unwrap_or_default();
                return Some(Err(ClientError::TaskFailed {
                    task_id: self.task_id.clone(),
                    message,
                }));
            }
            self.batch = chunk.result.processes.into_iter();
        }
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

/// A running MONITOR_PROCESS_TREE task: its events as they arrive, until
/// [`cancel`](Self::cancel). Dropped without cancelling, it cancels the task
/// (best effort) and the agent skips the rest of its stream.
#[derive(Debug)]
pub struct MonitorStream<'a> {
    agent: &'a mut Agent,
    task_id: String,
    batch: vec::IntoIter<ProtoProcessRecord>,
    kind: RecordKind,
    ended: bool,
    cancelled: bool,
}

impl<'a> MonitorStream<'a> {
    pub(super) fn new(agent: &'a mut Agent, task_id: String) -> Self {
        Self {
            agent,
            task_id,
            batch: Vec::new().into_iter(),
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
        loop {
            if let Some(record) = self.batch.next() {
                return Ok(Some(match self.kind {
                    RecordKind::Started => MonitorEvent::Started(record),
                    RecordKind::Exited => MonitorEvent::Exited(record),
                    RecordKind::Exec => MonitorEvent::Exec(record),
                    RecordKind::Snapshot | RecordKind::Result => MonitorEvent::Snapshot(record),
                }));
            }
            if self.ended {
                return Ok(None);
            }
            let chunk = self.agent.chunk_for(&self.task_id, deadline)?;
            self.ended = chunk.marker.end;
            if !chunk.result.success {
                self.ended = true;
                return Err(ClientError::TaskFailed {
                    task_id: self.task_id.clone(),
                    message: chunk.result.error_message.unwrap_or_default(),
                });
            }
            self.kind = chunk.marker.kind;
            self.batch = chunk.result.processes.into_iter();
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
