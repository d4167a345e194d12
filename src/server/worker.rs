//! A connection's worker: runs its tasks in order with its own collector and
//! streams the results into its ring.

use std::ops::ControlFlow;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::changes::Baseline;
use super::status::Counters;
use super::tasks::{Job, TaskSignals, Work};
use crate::collector::{CollectError, Collector, Requester, TreeEvent, TreeMonitor};
use crate::proto::encoded::EncodedRecord;
use crate::proto::limits::MAX_ERROR_MESSAGE_BYTES;
use crate::proto::{DetectionResult, ProtoTaskType};
use crate::ring::{Producer, RingError};
use crate::session::{RecordKind, ResultWriter, SessionError, StreamStats};
use crate::sys::thread::RealtimeGuard;

/// Runs work with `collector` (this connection's own, whose hash cache may be
/// shared) until the queue closes or the ring fails (the client left or
/// stopped reading). Gives the producer back, so the caller frees the ring
/// when it is done with the client, and, when the worker stopped on its own
/// (a write stalled or failed), why.
#[allow(clippy::too_many_arguments)] // a connection's whole context
pub(super) fn run(
    mut producer: Producer,
    queue: &Receiver<Work>,
    signals: &TaskSignals,
    mut collector: Collector,
    requester: &Requester,
    stall: Duration,
    counters: &Counters,
) -> (Producer, Option<String>) {
    collector.stop_hashing_when(signals.stop_flag());
    // What this connection's changes-only enumerates have told its agent.
    let mut baseline = Baseline::default();
    while let Ok(work) = queue.recv() {
        if signals.is_gone() {
            break;
        }
        let task_id = work.task_id().to_owned();
        let outcome = if signals.start(&task_id) {
            // Cancelled while it waited its turn.
            ResultWriter::new(&mut producer, task_id.as_str(), stall)
                .cancelled("cancelled by the client before it ran")
        } else {
            match work {
                Work::Reject { task_id, message } => {
                    tracing::info!(%task_id, %message, "task rejected");
                    ResultWriter::new(&mut producer, task_id, stall).fail(&message)
                }
                Work::Run(job) => run_job(
                    &mut producer,
                    &mut collector,
                    &mut baseline,
                    signals,
                    *job,
                    requester,
                    stall,
                ),
            }
        };
        signals.finished(&task_id);
        counters.task_done(!matches!(&outcome, Ok(stats) if !stats.failed));
        if let Err(error) = outcome {
            if signals.is_gone() {
                break;
            }
            tracing::info!(%error, "result stream ended; closing the ring");
            return (
                producer,
                Some(format!(
                    "procmond stopped this connection's results: {error}"
                )),
            );
        }
    }
    (producer, None)
}

#[allow(clippy::too_many_arguments)] // one per part of a job's context
fn run_job(
    producer: &mut Producer,
    collector: &mut Collector,
    baseline: &mut Baseline,
    signals: &TaskSignals,
    mut job: Job,
    requester: &Requester,
    stall: Duration,
) -> Result<StreamStats, SessionError> {
    let file = job.file.take();
    let task_id = job.task.task_id.as_str();
    let started = Instant::now();
    tracing::debug!(task_id, kind = job.kind.as_str_name(), "task started");
    // A monitor stream may run real-time (see `stream_events`): its waits
    // for room then park at once, since its spin would keep the agent it
    // waits for off that core.
    let spinning = producer.wait_strategy();
    if job.kind == ProtoTaskType::MonitorProcessTree && collector.table().realtime_streams() {
        // Cannot fail: a valid strategy's park timeout is kept.
        let _ = producer.set_wait_strategy(spinning.parking());
    }
    let stream = ResultWriter::new(producer, task_id, stall);
    let outcome = match job.kind {
        ProtoTaskType::EnumerateProcesses => collect(
            stream,
            collector,
            baseline,
            signals,
            &job,
            job.with_hashes,
            "ENUMERATE_PROCESSES",
        ),
        ProtoTaskType::VerifyExecutable => collect(
            stream,
            collector,
            baseline,
            signals,
            &job,
            true,
            "VERIFY_EXECUTABLE",
        ),
        ProtoTaskType::CheckProcessHash => {
            hash_check(stream, collector, signals, &job, file, requester)
        }
        ProtoTaskType::MonitorProcessTree => monitor(stream, collector, signals, &job),
    };
    let _ = producer.set_wait_strategy(spinning);
    let stats = outcome?;
    // Debug: a monitor polled every 10 ms would flood the log at info.
    tracing::debug!(
        task_id,
        kind = job.kind.as_str_name(),
        records = stats.records,
        frames = stats.frames,
        truncated = stats.truncated,
        elapsed_us = started.elapsed().as_micros() as u64,
        "task done"
    );
    Ok(stats)
}

/// ENUMERATE_PROCESSES and VERIFY_EXECUTABLE: records stream out as the
/// collector builds them. A changes-only enumerate sends only what
/// `baseline` says the agent has not been told, then the processes gone
/// since (marked EXITED), and counts as told only once it ended whole.
fn collect(
    mut stream: ResultWriter<'_>,
    collector: &mut Collector,
    baseline: &mut Baseline,
    signals: &TaskSignals,
    job: &Job,
    with_hashes: bool,
    what: &str,
) -> Result<StreamStats, SessionError> {
    let changes = job.changes.filter(|_| !with_hashes);
    if changes.is_some() && baseline.begin() {
        stream.mark_full();
    }
    let mut sink = Sink {
        stream: &mut stream,
        signals,
        halted: false,
        write_error: None,
    };
    let filter = job.task.process_filter.as_ref();
    // Without hashes, records go out with their stable fields pre-encoded
    // by the table; with hashes each is built whole.
    let walked = if with_hashes {
        collector.for_each(filter, true, |record| {
            sink.send(|stream| stream.push(RecordKind::Result, record))
        })
    } else if let Some(thresholds) = &changes {
        let walked = collector.for_each_encoded(filter, |pid, record| {
            if !baseline.is_news(pid, &record, thresholds) {
                return ControlFlow::Continue(());
            }
            sink.send(|stream| stream.push_encoded(RecordKind::Result, record))
        });
        if walked.is_ok() && !sink.halted && sink.write_error.is_none() {
            let collection_time = unix_ms_now();
            for (_, stable) in baseline.gone() {
                let gone = EncodedRecord {
                    stable,
                    cpu_usage: None,
                    memory_usage: None,
                    executable_hash: None,
                    hash_algorithm: None,
                    collection_time,
                };
                let sent = sink.send(|stream| stream.push_encoded(RecordKind::Exited, gone));
                if sent.is_break() {
                    break;
                }
            }
        }
        walked
    } else {
        collector.for_each_encoded(filter, |_, record| {
            sink.send(|stream| stream.push_encoded(RecordKind::Result, record))
        })
    };
    let (halted, write_error) = (sink.halted, sink.write_error);
    if halted || signals.halted() {
        return end_halted(stream, signals, what);
    }
    match (walked, write_error) {
        (_, Some(error @ SessionError::RecordTooLarge { .. })) => {
            stream.fail(&format!("{what} failed: {error}"))
        }
        (_, Some(error)) => Err(error),
        (Err(error), None) => stream.fail(&format!("{what} failed: {error}")),
        (Ok(_), None) => {
            let stats = stream.finish()?;
            if changes.is_some() {
                baseline.finish();
            }
            Ok(stats)
        }
    }
}

/// Now, in Unix milliseconds (0 before 1970).
fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where a walk's records go: the stream, until the task is halted or a
/// write fails.
struct Sink<'s, 'p> {
    stream: &'s mut ResultWriter<'p>,
    signals: &'s TaskSignals,
    halted: bool,
    write_error: Option<SessionError>,
}

impl<'p> Sink<'_, 'p> {
    /// Writes one record with `push`, or says stop.
    fn send(
        &mut self,
        push: impl FnOnce(&mut ResultWriter<'p>) -> Result<(), SessionError>,
    ) -> ControlFlow<()> {
        // A departed client's or a cancelled task's work stops at once, not
        // when a frame fills.
        if self.signals.halted() {
            self.halted = true;
            return ControlFlow::Break(());
        }
        if self.stream.is_closed() {
            self.write_error = Some(SessionError::Ring(RingError::Closed));
            return ControlFlow::Break(());
        }
        match push(self.stream) {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                self.write_error = Some(error);
                ControlFlow::Break(())
            }
        }
    }
}

/// CHECK_PROCESS_HASH: one END frame carrying the hash result; a hash that
/// could not be computed is a failed result saying why. The file is the one
/// the client attached, or else the path, opened only for root.
fn hash_check(
    stream: ResultWriter<'_>,
    collector: &mut Collector,
    signals: &TaskSignals,
    job: &Job,
    file: Option<std::fs::File>,
    requester: &Requester,
) -> Result<StreamStats, SessionError> {
    let Some(check) = job.task.hash_check.as_ref() else {
        // Validation requires it; answer rather than trust that.
        return stream.fail("CHECK_PROCESS_HASH failed: the task carries no hash_check");
    };
    let mut outcome = match file {
        Some(file) => collector.check_hash_of(check, file),
        None => collector.check_hash_for(check, requester.clone()),
    }
    .result;
    if signals.halted() {
        // The hash stopped part-way (or would be thrown away).
        return end_halted(stream, signals, "CHECK_PROCESS_HASH");
    }
    if let Some(message) = outcome.error_message.as_mut() {
        cut(message, MAX_ERROR_MESSAGE_BYTES);
    }
    let result = DetectionResult {
        task_id: job.task.task_id.clone(),
        success: outcome.success,
        error_message: outcome
            .error_message
            .as_ref()
            .map(|error| format!("CHECK_PROCESS_HASH failed: {error}"))
            .map(|mut message| {
                cut(&mut message, MAX_ERROR_MESSAGE_BYTES);
                message
            }),
        processes: Vec::new(),
        hash_result: Some(outcome),
    };
    stream.finish_with(result)
}

/// Ends the stream of a task told to stop: marked cancelled when the client
/// cancelled it; when the client is gone, nothing is written.
fn end_halted(
    stream: ResultWriter<'_>,
    signals: &TaskSignals,
    what: &str,
) -> Result<StreamStats, SessionError> {
    if signals.is_cancelled(stream.task_id()) {
        stream.cancelled(&format!("{what} cancelled by the client"))
    } else {
        Err(SessionError::Ring(RingError::Closed))
    }
}

/// MONITOR_PROCESS_TREE: the tree under the filter's pids (every process
/// when none; names and the pattern do not apply), then each interval the
/// processes that started and exited, until cancelled (its normal end: a
/// plain END, not marked cancelled) or the client goes.
fn monitor(
    mut stream: ResultWriter<'_>,
    collector: &mut Collector,
    signals: &TaskSignals,
    job: &Job,
) -> Result<StreamStats, SessionError> {
    let roots = job
        .task
        .process_filter
        .as_ref()
        .map(|filter| filter.pids.clone())
        .unwrap_or_default();
    let mut tree = match collector.monitor(&roots) {
        Ok(tree) => tree,
        Err(error) => return stream.fail(&format!("MONITOR_PROCESS_TREE failed: {error}")),
    };
    for record in tree.snapshot() {
        stream.push(RecordKind::Snapshot, record.clone())?;
    }
    stream.flush()?;
    // A cancel or the client leaving wakes the wait below at once.
    signals.set_waker(Some(tree.waker()));
    let outcome = stream_events(&mut stream, &mut tree, signals, job.interval);
    signals.set_waker(None);
    match outcome {
        // The client left (or procmond is stopping): no END, which would
        // read as a cancel's normal end.
        Ok(()) if signals.is_gone() => Err(SessionError::Ring(RingError::Closed)),
        Ok(()) => stream.finish(),
        Err(MonitorFailure::Session(error)) => Err(error),
        Err(MonitorFailure::Collect(error)) => {
            stream.fail(&format!("MONITOR_PROCESS_TREE failed: {error}"))
        }
    }
}

enum MonitorFailure {
    Session(SessionError),
    Collect(CollectError),
}

/// Streams the tree's events, a frame per batch, until a cancel or the
/// client goes.
fn stream_events(
    stream: &mut ResultWriter<'_>,
    tree: &mut TreeMonitor,
    signals: &TaskSignals,
    interval: Duration,
) -> Result<(), MonitorFailure> {
    // Real-time while events feed the tree: woken by the table, this thread
    // then runs ahead of the ordinary threads that keep a busy host's cores
    // (the exec'd process itself, often), so an exec reaches the ring within
    // a millisecond. Its work is bounded: one batch's records; on a full
    // ring it parks at once (`run_job`). Given back before a polling monitor
    // scans and when the stream ends (the thread serves other tasks next).
    let (mut realtime, mut refused) = (None, false);
    while !signals.halted() {
        if !tree.wants_realtime() {
            realtime = None;
        } else if realtime.is_none() && !refused {
            match RealtimeGuard::enter(MONITOR_FIFO) {
                Ok(guard) => realtime = Some(guard),
                Err(error) => {
                    // Not allowed (no CAP_SYS_NICE, no RLIMIT_RTPRIO): not
                    // asked again for this stream.
                    tracing::debug!(%error, "the monitor stream is not real-time");
                    refused = true;
                }
            }
        }
        // The waker ends the wait early; the bound is only a backstop.
        let until = Instant::now()
            .checked_add(MONITOR_BACKSTOP)
            .unwrap_or_else(Instant::now);
        let events = tree
            .next_batch(interval, until)
            .map_err(MonitorFailure::Collect)?;
        if events.is_empty() {
            continue;
        }
        for event in events {
            let (kind, record) = match event {
                TreeEvent::Started(record) => (RecordKind::Started, record),
                TreeEvent::Exec(record) => (RecordKind::Exec, record),
                TreeEvent::Exited(record) => (RecordKind::Exited, record),
            };
            stream.push(kind, record).map_err(MonitorFailure::Session)?;
        }
        stream.flush().map_err(MonitorFailure::Session)?;
    }
    Ok(())
}

/// The real-time priority of a monitor stream (the event thread's, so
/// neither preempts the other).
const MONITOR_FIFO: i32 = 1;

/// The longest a monitor waits for process changes before it looks at its
/// stop conditions again without being woken.
const MONITOR_BACKSTOP: Duration = Duration::from_secs(1);

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::CollectorConfig;
    use crate::proto::DetectionTask;
    use crate::ring::{self, RingConfig, TryReadError};
    use crate::server::tasks::DEFAULT_MONITOR_INTERVAL;

    #[test]
    fn a_departed_clients_enumerate_stops_without_writing() {
        let (mut producer, mut consumer) = ring::pair(&RingConfig::new(1 << 20)).unwrap();
        let signals = TaskSignals::default();
        signals.client_gone();
        let job = Job {
            task: DetectionTask::new_enumerate_processes("t-1", None),
            kind: ProtoTaskType::EnumerateProcesses,
            with_hashes: true,
            interval: DEFAULT_MONITOR_INTERVAL,
            changes: None,
            file: None,
        };
        let mut collector = Collector::new(CollectorConfig::default());
        collector.stop_hashing_when(signals.stop_flag());
        let outcome = run_job(
            &mut producer,
            &mut collector,
            &mut Baseline::default(),
            &signals,
            job,
            &Requester::root(),
            Duration::from_secs(5),
        );
        assert!(
            matches!(outcome, Err(SessionError::Ring(RingError::Closed))),
            "{outcome:?}"
        );
        // Not a record reached the ring (it has room for them all).
        assert!(matches!(
            consumer.try_read(|_| ()),
            Err(TryReadError::Empty)
        ));
    }
}
