//! Decoding the kernel's process connector datagrams into typed,
//! process-level events.
//!
//! The bytes come from a socket any local process can send to, so nothing
//! in them is trusted: a datagram whose sender is not the kernel (netlink
//! port 0) is counted as spoofed and dropped, and every length and type is
//! checked, with checked slices, before a field is read; a message that
//! fails a check is counted as malformed and skipped. Offsets and constants
//! are in [`crate::sys::cn_proc::layout`].
//!
//! Only whole processes are reported: the kernel reports each thread's
//! start and exit, and each thread's uid, gid and comm changes, but
//! `/proc/<tgid>` shows the thread group leader's, so events of other
//! threads are counted and skipped. An exec is always reported for its
//! thread group: the kernel reports it after the exec'ing thread has taken
//! over the group's pid.
//!
//! The connector numbers its messages with a per-CPU counter (`cn_msg.seq`,
//! with the CPU in `proc_event.cpu`; acks of LISTEN requests take numbers
//! too), so a gap in one CPU's numbers means the kernel dropped messages
//! (it could not allocate, or our buffer was full). [`Decoder`] tracks the
//! numbers per CPU and reports a gap as [`Event::Lost`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::cn_proc::layout::{self, u16_at, u32_at, u64_at};

/// A process-level event, as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    /// A new process (not a thread): `child_tgid` was forked by
    /// `parent_tgid` (its parent as the kernel records it, which differs
    /// from the caller after `CLONE_PARENT`).
    Fork {
        /// The parent process.
        parent_tgid: u32,
        /// The new process.
        child_tgid: u32,
    },
    /// `tgid` replaced its image (`execve`), possibly from a thread other
    /// than its leader.
    Exec {
        /// The process.
        tgid: u32,
    },
    /// The thread group leader of `tgid` exited.
    ///
    /// Two cases make this not quite "the process ended":
    /// - an `execve` from a non-leader thread first makes the old leader
    ///   exit (with the same codes as a real exit), so this `Exit` is
    ///   followed by an [`Exec`](Self::Exec) of the same `tgid`. The tgid
    ///   cannot have been reused in between (the process still holds it), so
    ///   an `Exec` of a tgid seen exiting, with no `Fork` of it in between,
    ///   means it lives on with a new image;
    /// - a leader that calls `pthread_exit` is reported exited while other
    ///   threads run on (the last thread's exit is a thread event, not
    ///   reported): only a `/proc` scan tells.
    Exit {
        /// The process.
        tgid: u32,
        /// The kernel's `exit_code` (a wait status: `code << 8 | signal`).
        exit_code: u32,
        /// The signal the parent gets (`SIGCHLD` as a rule).
        exit_signal: u32,
    },
    /// The leader of `tgid` changed its real or effective uid.
    Uid {
        /// The process.
        tgid: u32,
        /// The real uid after the change.
        ruid: u32,
        /// The effective uid after the change.
        euid: u32,
    },
    /// The leader of `tgid` changed its real or effective gid.
    Gid {
        /// The process.
        tgid: u32,
        /// The real gid after the change.
        rgid: u32,
        /// The effective gid after the change.
        egid: u32,
    },
    /// The leader of `tgid` changed its name (`prctl(PR_SET_NAME)` or a
    /// write to `/proc/<pid>/comm`; an exec's new name comes with no event).
    Comm {
        /// The process.
        tgid: u32,
        /// The new name, NUL-padded as the kernel sends it; see
        /// [`comm_name`].
        comm: [u8; layout::COMM_LEN],
    },
}

/// The bytes of a [`ProcEvent::Comm`] name before its first NUL.
pub fn comm_name(comm: &[u8; layout::COMM_LEN]) -> &[u8] {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    &comm[..end]
}

/// A [`ProcEvent`] with when and where the kernel sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    /// What happened.
    pub event: ProcEvent,
    /// `CLOCK_MONOTONIC` at the event, in nanoseconds.
    pub timestamp_ns: u64,
    /// The CPU the event was reported from.
    pub cpu: u32,
}

/// Why events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The socket's receive buffer overflowed (`ENOBUFS`); how many events
    /// were dropped is unknown.
    Overrun,
    /// A CPU's sequence numbers skipped: `missed` messages from `cpu` never
    /// arrived (0 when its numbers went backwards, which the kernel never
    /// does; the count is then unknown).
    SequenceGap {
        /// The CPU whose numbers skipped.
        cpu: u32,
        /// How many numbers were skipped.
        missed: u32,
    },
}

/// What the decoder (and the [`EventSource`](super::EventSource)) hands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A process-level event.
    Process(ProcessEvent),
    /// Events were lost: whoever keeps a table from these events must
    /// rescan `/proc`.
    Lost {
        /// Why.
        reason: LossReason,
    },
    /// Receiving failed for a reason other than an overrun; no more events
    /// come (the last call of the handler). Fall back to polling.
    Failed {
        /// The kind of the receive error (logged in full).
        error: std::io::ErrorKind,
    },
    /// The first call of an [`EventSource`](super::EventSource)'s handler:
    /// the subscription is in place, so every event from now on arrives
    /// (or is counted lost). An owner that fills a table from `/proc` does
    /// it now, before the events that queued meanwhile are handed on.
    Subscribed,
    /// The [`EventSource`](super::EventSource)'s tick interval passed (see
    /// `EventSourceConfig::tick`): time for periodic work on the event
    /// thread, such as a safety-net scan.
    Tick(Tally),
}

/// The kernel's count of tasks beside the events heard, taken at a tick: a
/// cheap check that no fork or exit went unheard. While no event is lost,
/// `kernel_tasks - tasks_heard` (modulo 2^16) stays the same, whatever the
/// host does (a zombie, counted by the kernel until reaped, shifts it while
/// it lasts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    /// Forks less exits of every task (threads included) heard so far,
    /// modulo 2^16.
    pub tasks_heard: u16,
    /// The kernel's count of tasks at the tick ([`task_count`]).
    ///
    /// [`task_count`]: crate::sys::procfs::task_count
    pub kernel_tasks: u16,
    /// Nothing was queued on the socket when the two were taken, so
    /// `tasks_heard` was not behind the kernel's count.
    pub caught_up: bool,
}

impl Tally {
    /// `kernel_tasks - tasks_heard`: the same at two ticks when no fork or
    /// exit was lost between them; `None` when not caught up.
    pub fn offset(&self) -> Option<u16> {
        self.caught_up
            .then(|| self.kernel_tasks.wrapping_sub(self.tasks_heard))
    }
}

/// A plain snapshot of the decoder's counters (each read on its own, so
/// counters that move together may be a few events apart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Datagrams received (spoofed and malformed included).
    pub datagrams: u64,
    /// Process-level events handed on.
    pub events: u64,
    /// Thread events (start, exit, uid/gid/comm of a non-leader) skipped.
    pub thread_events: u64,
    /// Well-formed messages of kinds not reported: acks, sid, ptrace,
    /// coredump, and kinds this code does not know.
    pub other_events: u64,
    /// Messages that failed a length or type check, and truncated
    /// datagrams.
    pub malformed: u64,
    /// Datagrams not sent by the kernel, dropped.
    pub spoofed: u64,
    /// Receive-buffer overruns (`ENOBUFS`).
    pub overruns: u64,
    /// Gaps in a CPU's sequence numbers.
    pub sequence_gaps: u64,
    /// Messages known to be missing from those gaps (overruns not counted).
    pub missed_events: u64,
    /// Fork events of every task, threads included.
    pub tasks_forked: u64,
    /// Exit events of every task, threads included.
    pub tasks_exited: u64,
}

/// The counters behind [`EventStats`]. Written by the one thread that
/// decodes, read by any. Every access is `Relaxed`: each counter is a
/// statistic on its own, and no other memory is published through it.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    datagrams: AtomicU64,
    events: AtomicU64,
    thread_events: AtomicU64,
    other_events: AtomicU64,
    malformed: AtomicU64,
    spoofed: AtomicU64,
    overruns: AtomicU64,
    sequence_gaps: AtomicU64,
    missed_events: AtomicU64,
    tasks_forked: AtomicU64,
    tasks_exited: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> EventStats {
        // Relaxed: statistics only (see the type).
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EventStats {
            datagrams: get(&self.datagrams),
            events: get(&self.events),
            thread_events: get(&self.thread_events),
            other_events: get(&self.other_events),
            malformed: get(&self.malformed),
            spoofed: get(&self.spoofed),
            overruns: get(&self.overruns),
            sequence_gaps: get(&self.sequence_gaps),
            missed_events: get(&self.missed_events),
            tasks_forked: get(&self.tasks_forked),
            tasks_exited: get(&self.tasks_exited),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    // Relaxed: statistics only (see `Counters`).
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Why a message was refused; counted as malformed (and logged at debug).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The datagram was longer than the receive buffer.
    #[error("datagram truncated")]
    Truncated,
    /// Fewer bytes than a netlink header.
    #[error("shorter than a netlink header")]
    ShortHeader,
    /// `nlmsg_len` below the header or past the datagram's end.
    #[error("netlink length {0} out of bounds")]
    BadLength(u32),
    /// A netlink type the connector does not send.
    #[error("netlink message type {0}")]
    BadType(u16),
    /// Fewer payload bytes than a `cn_msg`.
    #[error("shorter than a connector header")]
    ShortConnector,
    /// Not the process connector's index and value.
    #[error("connector id {idx}:{val}")]
    NotProcConnector {
        /// `cn_msg.id.idx`.
        idx: u32,
        /// `cn_msg.id.val`.
        val: u32,
    },
    /// `cn_msg.len` past the netlink message's end.
    #[error("connector length {0} out of bounds")]
    BadConnectorLength(u16),
    /// Fewer data bytes than a `proc_event` header.
    #[error("shorter than a proc_event header")]
    ShortEvent,
    /// Fewer body bytes than the event's kind needs.
    #[error("event {what:#x} has {len} body bytes")]
    ShortBody {
        /// `proc_event.what`.
        what: u32,
        /// Body bytes present.
        len: usize,
    },
    /// A pid or tgid beyond the kernel's limit (`PID_MAX_LIMIT`).
    #[error("pid {0} out of range")]
    BadPid(u32),
    /// A CPU number beyond the kernel's limit.
    #[error("cpu {0} out of range")]
    BadCpu(u32),
}

/// Largest pid the kernel can hand out (`PID_MAX_LIMIT`, 2^22).
const PID_MAX_LIMIT: u32 = 1 << 22;
/// Largest CPU count a kernel can be built for (`NR_CPUS` is at most 8192).
const MAX_CPUS: u32 = 8192;

/// One connector message, checked; pids still per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    seq: u32,
    cpu: u32,
    timestamp_ns: u64,
    body: Body,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    Fork {
        child_pid: u32,
        child_tgid: u32,
        parent_tgid: u32,
    },
    Exec {
        tgid: u32,
    },
    Exit {
        pid: u32,
        tgid: u32,
        exit_code: u32,
        exit_signal: u32,
    },
    Uid {
        pid: u32,
        tgid: u32,
        ruid: u32,
        euid: u32,
    },
    Gid {
        pid: u32,
        tgid: u32,
        rgid: u32,
        egid: u32,
    },
    Comm {
        pid: u32,
        tgid: u32,
        comm: [u8; layout::COMM_LEN],
    },
    /// Acks, sid, ptrace, coredump, unknown kinds.
    Other,
}

/// Checks and decodes one netlink message (`msg` is exactly `nlmsg_len`
/// bytes, header included). `Ok(None)` for `NLMSG_NOOP`.
pub(crate) fn parse_message(msg: &[u8]) -> Result<Option<Message>, Malformed> {
    let kind = u16_at(msg, layout::NLMSG_TYPE).ok_or(Malformed::ShortHeader)?;
    match kind {
        layout::NLMSG_DONE => {}
        layout::NLMSG_NOOP => return Ok(None),
        other => return Err(Malformed::BadType(other)),
    }
    let cn = msg
        .get(layout::NLMSG_HDR_LEN..)
        .ok_or(Malformed::ShortHeader)?;
    let field = |offset| u32_at(cn, offset).ok_or(Malformed::ShortConnector);
    let (idx, val) = (field(layout::CN_IDX)?, field(layout::CN_VAL)?);
    if (idx, val) != (layout::CN_IDX_PROC, layout::CN_VAL_PROC) {
        return Err(Malformed::NotProcConnector { idx, val });
    }
    let seq = field(layout::CN_SEQ)?;
    let data_len = u16_at(cn, layout::CN_DATA_LEN).ok_or(Malformed::ShortConnector)?;
    if cn.len() < layout::CN_MSG_LEN {
        return Err(Malformed::ShortConnector);
    }
    let data = cn
        .get(layout::CN_MSG_LEN..layout::CN_MSG_LEN + usize::from(data_len))
        .ok_or(Malformed::BadConnectorLength(data_len))?;
    let header = |offset| u32_at(data, offset).ok_or(Malformed::ShortEvent);
    let what = header(layout::PE_WHAT)?;
    let cpu = header(layout::PE_CPU)?;
    let timestamp_ns = u64_at(data, layout::PE_TIMESTAMP).ok_or(Malformed::ShortEvent)?;
    if cpu >= MAX_CPUS {
        return Err(Malformed::BadCpu(cpu));
    }
    let body = data.get(layout::PROC_EVENT_HDR_LEN..).unwrap_or_default();
    let Some(needed) = layout::body_len(what) else {
        return Ok(Some(Message {
            seq,
            cpu,
            timestamp_ns,
            body: Body::Other,
        }));
    };
    if body.len() < needed {
        return Err(Malformed::ShortBody {
            what,
            len: body.len(),
        });
    }
    // In bounds: the body holds `needed` bytes, checked just above.
    let word = |i: usize| u32_at(body, i * 4).unwrap_or_default();
    let pid = |i: usize| {
        let pid = word(i);
        if pid > PID_MAX_LIMIT {
            Err(Malformed::BadPid(pid))
        } else {
            Ok(pid)
        }
    };
    let body = match what {
        layout::PROC_EVENT_FORK => Body::Fork {
            parent_tgid: pid(1)?,
            child_pid: pid(2)?,
            child_tgid: pid(3)?,
        },
        layout::PROC_EVENT_EXEC => Body::Exec { tgid: pid(1)? },
        layout::PROC_EVENT_EXIT => Body::Exit {
            pid: pid(0)?,
            tgid: pid(1)?,
            exit_code: word(2),
            exit_signal: word(3),
        },
        layout::PROC_EVENT_UID => Body::Uid {
            pid: pid(0)?,
            tgid: pid(1)?,
            ruid: word(2),
            euid: word(3),
        },
        layout::PROC_EVENT_GID => Body::Gid {
            pid: pid(0)?,
            tgid: pid(1)?,
            rgid: word(2),
            egid: word(3),
        },
        layout::PROC_EVENT_COMM => {
            let mut comm = [0u8; layout::COMM_LEN];
            if let Some(bytes) = body.get(8..8 + layout::COMM_LEN) {
                comm.copy_from_slice(bytes);
            }
            Body::Comm {
                pid: pid(0)?,
                tgid: pid(1)?,
                comm,
            }
        }
        _ => Body::Other,
    };
    Ok(Some(Message {
        seq,
        cpu,
        timestamp_ns,
        body,
    }))
}

/// The process-level event of `body`, or `None` for a thread's event (or a
/// kind not reported); the bool says whether it was a thread's.
fn process_event(body: Body) -> (Option<ProcEvent>, bool) {
    let leader = |pid: u32, tgid: u32, event: ProcEvent| {
        if pid == tgid {
            (Some(event), false)
        } else {
            (None, true)
        }
    };
    match body {
        Body::Fork {
            child_pid,
            child_tgid,
            parent_tgid,
        } => leader(
            child_pid,
            child_tgid,
            ProcEvent::Fork {
                parent_tgid,
                child_tgid,
            },
        ),
        Body::Exec { tgid } => (Some(ProcEvent::Exec { tgid }), false),
        Body::Exit {
            pid,
            tgid,
            exit_code,
            exit_signal,
        } => leader(
            pid,
            tgid,
            ProcEvent::Exit {
                tgid,
                exit_code,
                exit_signal,
            },
        ),
        Body::Uid {
            pid,
            tgid,
            ruid,
            euid,
        } => leader(pid, tgid, ProcEvent::Uid { tgid, ruid, euid }),
        Body::Gid {
            pid,
            tgid,
            rgid,
            egid,
        } => leader(pid, tgid, ProcEvent::Gid { tgid, rgid, egid }),
        Body::Comm { pid, tgid, comm } => leader(pid, tgid, ProcEvent::Comm { tgid, comm }),
        Body::Other => (None, false),
    }
}

/// Turns datagrams into [`Event`]s and keeps the counters; see the
/// module documentation. Owned by the receiving thread.
#[derive(Debug)]
pub struct Decoder {
    counters: Arc<Counters>,
    /// The next sequence number expected from each CPU (`None`: none seen
    /// since the start or the last overrun).
    next_seq: Vec<Option<u32>>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with zeroed counters.
    pub fn new() -> Self {
        Decoder {
            counters: Arc::default(),
            next_seq: Vec::new(),
        }
    }

    pub(crate) fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// The counters now.
    pub fn stats(&self) -> EventStats {
        self.counters.snapshot()
    }

    /// Decodes one received datagram from netlink port `sender_port` (0 is
    /// the kernel; anything else, or `None`, is spoofed), `truncated` when
    /// it was cut short by the buffer, and hands each resulting event to
    /// `sink`, in order.
    pub fn decode(
        &mut self,
        datagram: &[u8],
        sender_port: Option<u32>,
        truncated: bool,
        sink: &mut impl FnMut(Event),
    ) {
        bump(&self.counters.datagrams, 1);
        if sender_port != Some(0) {
            bump(&self.counters.spoofed, 1);
            tracing::debug!(?sender_port, "process event not from the kernel dropped");
            return;
        }
        if truncated {
            self.malformed(Malformed::Truncated);
            return;
        }
        let mut rest = datagram;
        while !rest.is_empty() {
            let Some(len) = u32_at(rest, layout::NLMSG_LEN) else {
                self.malformed(Malformed::ShortHeader);
                return;
            };
            let msg = usize::try_from(len)
                .ok()
                .filter(|&n| n >= layout::NLMSG_HDR_LEN)
                .and_then(|n| rest.get(..n));
            let Some(msg) = msg else {
                // The rest of the datagram cannot be framed.
                self.malformed(Malformed::BadLength(len));
                return;
            };
            match parse_message(msg) {
                Ok(Some(message)) => self.accept(message, sink),
                Ok(None) => {}
                Err(why) => self.malformed(why),
            }
            let padded = msg.len().next_multiple_of(layout::NLMSG_ALIGN);
            rest = rest.get(padded..).unwrap_or_default();
        }
    }

    /// Records a receive-buffer overrun and reports it. Sequence tracking
    /// starts afresh: the gaps the overrun made are its own loss, not
    /// counted twice.
    pub fn overrun(&mut self, sink: &mut impl FnMut(Event)) {
        bump(&self.counters.overruns, 1);
        self.next_seq.clear();
        sink(Event::Lost {
            reason: LossReason::Overrun,
        });
    }

    fn malformed(&self, why: Malformed) {
        bump(&self.counters.malformed, 1);
        tracing::debug!(%why, "malformed process event skipped");
    }

    fn accept(&mut self, message: Message, sink: &mut impl FnMut(Event)) {
        if let Some(missed) = self.check_seq(message.cpu, message.seq) {
            bump(&self.counters.sequence_gaps, 1);
            bump(&self.counters.missed_events, u64::from(missed));
            sink(Event::Lost {
                reason: LossReason::SequenceGap {
                    cpu: message.cpu,
                    missed,
                },
            });
        }
        match message.body {
            Body::Fork { .. } => bump(&self.counters.tasks_forked, 1),
            Body::Exit { .. } => bump(&self.counters.tasks_exited, 1),
            _ => {}
        }
        match process_event(message.body) {
            (Some(event), _) => {
                bump(&self.counters.events, 1);
                sink(Event::Process(ProcessEvent {
                    event,
                    timestamp_ns: message.timestamp_ns,
                    cpu: message.cpu,
                }));
            }
            (None, true) => bump(&self.counters.thread_events, 1),
            (None, false) => bump(&self.counters.other_events, 1),
        }
    }

    /// Notes `seq` from `cpu`; returns how many numbers were skipped when
    /// it is not the one expected.
    fn check_seq(&mut self, cpu: u32, seq: u32) -> Option<u32> {
        // `cpu < MAX_CPUS`, checked by `parse_message`: the table stays small.
        let index = usize::try_from(cpu).ok()?;
        if self.next_seq.len() <= index {
            self.next_seq.resize(index + 1, None);
        }
        let slot = self.next_seq.get_mut(index)?;
        let expected = slot.replace(seq.wrapping_add(1));
        match expected {
            Some(expected) if expected != seq => {
                let ahead = seq.wrapping_sub(expected);
                Some(if ahead < 1 << 31 { ahead } else { 0 })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A well-formed datagram of one message, as the kernel builds it.
    fn datagram(what: u32, cpu: u32, seq: u32, body: &[u32]) -> Vec<u8> {
        layout::event(what, cpu, seq, 123_456_789, body)
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8], port: Option<u32>) -> Vec<Event> {
        let mut events = Vec::new();
        decoder.decode(bytes, port, false, &mut |e| events.push(e));
        events
    }

    fn process(events: &[Event]) -> Vec<ProcEvent> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Process(p) => Some(p.event),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_kind_decodes_and_threads_are_skipped() {
        let mut d = Decoder::new();
        let cases: [(u32, &[u32], Option<ProcEvent>); 9] = [
            (
                layout::PROC_EVENT_FORK,
                &[10, 10, 20, 20],
                Some(ProcEvent::Fork {
                    parent_tgid: 10,
                    child_tgid: 20,
                }),
            ),
            (layout::PROC_EVENT_FORK, &[10, 10, 21, 20], None),
            (
                layout::PROC_EVENT_EXEC,
                &[20, 20],
                Some(ProcEvent::Exec { tgid: 20 }),
            ),
            // An exec reported from a non-leader pid is the group's.
            (
                layout::PROC_EVENT_EXEC,
                &[22, 20],
                Some(ProcEvent::Exec { tgid: 20 }),
            ),
            (
                layout::PROC_EVENT_UID,
                &[20, 20, 1000, 0],
                Some(ProcEvent::Uid {
                    tgid: 20,
                    ruid: 1000,
                    euid: 0,
                }),
            ),
            (layout::PROC_EVENT_GID, &[21, 20, 5, 5], None),
            (
                layout::PROC_EVENT_EXIT,
                &[20, 20, 256, 17],
                Some(ProcEvent::Exit {
                    tgid: 20,
                    exit_code: 256,
                    exit_signal: 17,
                }),
            ),
            (layout::PROC_EVENT_EXIT, &[21, 20, 0, u32::MAX], None),
            (layout::PROC_EVENT_SID, &[20, 20], None),
        ];
        let mut expected = Vec::new();
        for (seq, (what, body, event)) in cases.iter().enumerate() {
            let got = decode_all(&mut d, &datagram(*what, 1, seq as u32, body), Some(0));
            assert_eq!(process(&got), event.iter().copied().collect::<Vec<_>>());
            expected.extend(*event);
        }
        let stats = d.stats();
        assert_eq!(stats.events, expected.len() as u64);
        assert_eq!(stats.thread_events, 3);
        assert_eq!(stats.other_events, 1);
        assert_eq!(stats.malformed + stats.spoofed + stats.sequence_gaps, 0);
    }

    #[test]
    fn a_comm_event_carries_the_name() {
        let mut body = [20u32, 20, 0, 0, 0, 0];
        let name = *b"worker\0\0\0\0\0\0\0\0\0\0";
        for (i, chunk) in name.chunks(4).enumerate() {
            body[2 + i] = u32::from_ne_bytes(chunk.try_into().unwrap());
        }
        let mut d = Decoder::new();
        let events = decode_all(
            &mut d,
            &datagram(layout::PROC_EVENT_COMM, 0, 0, &body),
            Some(0),
        );
        let [
            Event::Process(ProcessEvent {
                event: ProcEvent::Comm { tgid: 20, comm },
                ..
            }),
        ] = events[..]
        else {
            panic!("{events:?}");
        };
        assert_eq!(comm_name(&comm), b"worker");
    }

    #[test]
    fn a_datagram_not_from_the_kernel_is_spoofed() {
        let mut d = Decoder::new();
        let bytes = datagram(layout::PROC_EVENT_EXEC, 0, 0, &[5, 5]);
        assert!(decode_all(&mut d, &bytes, Some(4242)).is_empty());
        assert!(decode_all(&mut d, &bytes, None).is_empty());
        assert_eq!(d.stats().spoofed, 2);
        assert_eq!(d.stats().events, 0);
    }

    #[test]
    fn gaps_are_per_cpu_and_reported_before_the_event() {
        let mut d = Decoder::new();
        let exec = |cpu, seq| datagram(layout::PROC_EVENT_EXEC, cpu, seq, &[5, 5]);
        // Interleaved CPUs with consecutive numbers each: no gap.
        for (cpu, seq) in [(0, 100), (1, 7), (0, 101), (1, 8), (1, 9), (0, 102)] {
            let events = decode_all(&mut d, &exec(cpu, seq), Some(0));
            assert_eq!(events.len(), 1, "{events:?}");
        }
        assert_eq!(d.stats().sequence_gaps, 0);
        let events = decode_all(&mut d, &exec(1, 13), Some(0));
        assert_eq!(
            events[0],
            Event::Lost {
                reason: LossReason::SequenceGap { cpu: 1, missed: 3 }
            }
        );
        assert!(matches!(events[1], Event::Process(_)));
        // Wrapping is not a gap.
        let mut d = Decoder::new();
        decode_all(&mut d, &exec(0, u32::MAX), Some(0));
        decode_all(&mut d, &exec(0, 0), Some(0));
        assert_eq!(d.stats().sequence_gaps, 0);
        // After an overrun, tracking starts afresh.
        d.overrun(&mut |_| {});
        decode_all(&mut d, &exec(0, 50), Some(0));
        let stats = d.stats();
        assert_eq!((stats.overruns, stats.sequence_gaps), (1, 0));
    }

    #[test]
    fn hand_made_bad_lengths_and_types_are_each_malformed() {
        let good = datagram(layout::PROC_EVENT_FORK, 0, 0, &[1, 1, 2, 2]);
        let set_u32 = |bytes: &mut Vec<u8>, at: usize, v: u32| {
            bytes[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        };
        let set_u16 = |bytes: &mut Vec<u8>, at: usize, v: u16| {
            bytes[at..at + 2].copy_from_slice(&v.to_ne_bytes());
        };
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        cases.push(("short header", good[..10].to_vec()));
        let mut b = good.clone();
        set_u32(&mut b, 0, 8);
        cases.push(("nlmsg_len below header", b));
        let mut b = good.clone();
        set_u32(&mut b, 0, 1000);
        cases.push(("nlmsg_len past end", b));
        let mut b = good.clone();
        set_u32(&mut b, 0, u32::MAX);
        cases.push(("nlmsg_len huge", b));
        let mut b = good.clone();
        set_u16(&mut b, 4, layout::NLMSG_ERROR);
        cases.push(("NLMSG_ERROR", b));
        let mut b = good.clone();
        set_u16(&mut b, 4, layout::NLMSG_OVERRUN);
        cases.push(("NLMSG_OVERRUN", b));
        let mut b = good[..16 + 10].to_vec();
        set_u32(&mut b, 0, 26);
        cases.push(("short cn_msg", b));
        let mut b = good.clone();
        set_u32(&mut b, 16, 2);
        cases.push(("other connector", b));
        let mut b = good.clone();
        set_u16(&mut b, 32, 41);
        cases.push(("cn len one past", b));
        let mut b = good.clone();
        set_u16(&mut b, 32, u16::MAX);
        cases.push(("cn len huge", b));
        let mut b = good.clone();
        set_u16(&mut b, 32, 12);
        cases.push(("short proc_event", b));
        let mut b = good.clone();
        set_u16(&mut b, 32, 16 + 15);
        cases.push(("short fork body", b));
        let mut b = good.clone();
        set_u32(&mut b, 52 + 12, PID_MAX_LIMIT + 1);
        cases.push(("pid out of range", b));
        let mut b = good.clone();
        set_u32(&mut b, 40, MAX_CPUS);
        cases.push(("cpu out of range", b));
        for (name, bytes) in cases {
            let mut d = Decoder::new();
            let events = decode_all(&mut d, &bytes, Some(0));
            assert!(events.is_empty(), "{name}: {events:?}");
            assert_eq!(d.stats().malformed, 1, "{name}");
        }
        let mut d = Decoder::new();
        d.decode(&good, Some(0), true, &mut |_| panic!("truncated decoded"));
        assert_eq!(d.stats().malformed, 1);
    }

    #[test]
    fn two_messages_in_one_datagram_both_decode() {
        let mut bytes = datagram(layout::PROC_EVENT_EXEC, 0, 0, &[5, 5]);
        bytes.extend(datagram(layout::PROC_EVENT_EXEC, 0, 1, &[6, 6]));
        let mut d = Decoder::new();
        let events = process(&decode_all(&mut d, &bytes, Some(0)));
        assert_eq!(
            events,
            [ProcEvent::Exec { tgid: 5 }, ProcEvent::Exec { tgid: 6 }]
        );
    }

    fn check_decoded(events: &[Event]) {
        for event in events {
            if let Event::Process(p) = event {
                assert!(p.cpu < MAX_CPUS);
                let tgid = match p.event {
                    ProcEvent::Fork {
                        parent_tgid,
                        child_tgid,
                    } => {
                        assert!(parent_tgid <= PID_MAX_LIMIT);
                        child_tgid
                    }
                    ProcEvent::Exec { tgid }
                    | ProcEvent::Exit { tgid, .. }
                    | ProcEvent::Uid { tgid, .. }
                    | ProcEvent::Gid { tgid, .. }
                    | ProcEvent::Comm { tgid, .. } => tgid,
                };
                assert!(tgid <= PID_MAX_LIMIT);
            }
        }
    }

    fn accounted(d: &Decoder, events: &[Event]) {
        let s = d.stats();
        let process = events
            .iter()
            .filter(|e| matches!(e, Event::Process(_)))
            .count() as u64;
        let lost = events.len() as u64 - process;
        assert_eq!(s.events, process);
        assert_eq!(s.sequence_gaps, lost);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut d = Decoder::new();
            let events = decode_all(&mut d, &bytes, Some(0));
            check_decoded(&events);
            accounted(&d, &events);
        }

        #[test]
        fn mutated_datagrams_never_panic(
            what in prop_oneof![
                Just(layout::PROC_EVENT_NONE), Just(layout::PROC_EVENT_FORK),
                Just(layout::PROC_EVENT_EXEC), Just(layout::PROC_EVENT_UID),
                Just(layout::PROC_EVENT_GID), Just(layout::PROC_EVENT_COMM),
                Just(layout::PROC_EVENT_EXIT), any::<u32>()],
            body in proptest::collection::vec(any::<u32>(), 0..6),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in any::<usize>(),
            copies in 1usize..4,
        ) {
            let one = datagram(what, 0, 0, &body);
            let mut bytes = Vec::new();
            for _ in 0..copies {
                bytes.extend_from_slice(&one);
            }
            for (at, value) in flips {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            let mut d = Decoder::new();
            let events = decode_all(&mut d, &bytes, Some(0));
            check_decoded(&events);
            accounted(&d, &events);
            let s = d.stats();
            // At most one outcome per message the datagram could frame.
            prop_assert!(s.events + s.thread_events + s.other_events + s.malformed <= copies as u64 + 1 + (bytes.len() / 16) as u64);
        }
    }
}
