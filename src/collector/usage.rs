//! CPU and resident memory from `/proc/<pid>/stat`, read through a kept
//! descriptor: one `pread` into a reused buffer and a parse of the few
//! fields needed, no allocation. This is the floor of a poll.
//!
//! `stat` rather than `schedstat` + `statm`: `stat` of a thread group
//! sums the CPU time of all its threads (`schedstat` is the leader
//! thread's only), gives resident memory in the same read, and is one
//! system call instead of two (`examples/proc_bench.rs` measures both).
//! Kernel threads are the exception: one thread each and no memory of
//! their own, so the first field of `schedstat` (nanoseconds on a CPU) is
//! all their usage, and the kernel writes it in 2.1 µs against 5.5 µs for
//! `stat` at a 10 Hz poll's pace here. On a small host most processes are
//! kernel threads (58 of 67 on this machine).
//!
//! A process's usage is read at most once per [`USAGE_WINDOW`]: polls that
//! come sooner (one agent polling at 100 Hz, or several agents) share the
//! last reading.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Instant;

use super::cpu::{CpuHistory, CpuSample, MIN_WINDOW};
use crate::sys::procfs::{self, ProcRoot};

/// Usage is read again only once the last reading is this old.
pub(crate) const USAGE_WINDOW: std::time::Duration = MIN_WINDOW;

/// `PF_KTHREAD` in `stat`'s flags (field 9): a kernel thread. Since Linux
/// 5.17 one cannot exec; before, a usermode helper (modprobe, a core-dump
/// pipe) began as one and exec'd, which clears the flag (the table's exec
/// handling moves such a process back to `stat`).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Room for a whole `stat` line: 52 fields of at most 20 digits and a name
/// of at most 64 bytes.
pub(crate) const STAT_BUF_BYTES: usize = 2048;

/// The fields of `/proc/<pid>/stat` procmond uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Field 3: `R`, `S`, `Z`, ...
    pub(crate) state: u8,
    /// Field 4; 0 for the idle task's children (pid 1, kthreadd).
    pub(crate) ppid: u32,
    /// Fields 14 + 15: user and system time, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Field 22: start time in clock ticks since boot.
    pub(crate) start_ticks: u64,
    /// Field 24: resident set size in pages.
    pub(crate) rss_pages: u64,
    /// Field 9 holds `PF_KTHREAD`.
    pub(crate) kernel_thread: bool,
}

impl Stat {
    /// A zombie (exited, not yet reaped) or dead task.
    pub(crate) fn is_exited(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses a `stat` line. The name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after the last `)`.
/// `None` when the line is not of that shape.
pub(crate) fn parse_stat(line: &[u8]) -> Option<Stat> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let mut fields = line
        .get(close + 1..)?
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    // After the name, the n-th field is field n + 3.
    let state = *fields.next()?.first()?;
    let ppid = number(fields.next()?)?;
    let mut fields = fields.skip(4); // fields 5..=8
    let flags = number(fields.next()?)?;
    let mut fields = fields.skip(4); // fields 10..=13
    let utime = number(fields.next()?)?;
    let stime = number(fields.next()?)?;
    let mut fields = fields.skip(6); // fields 16..=21
    let start_ticks = number(fields.next()?)?;
    let _vsize = fields.next()?;
    let rss = fields.next()?;
    // rss is signed in the kernel's format; a negative value reads as 0.
    let rss_pages = if rss.first() == Some(&b'-') {
        0
    } else {
        number(rss)?
    };
    Some(Stat {
        state,
        ppid: u32::try_from(ppid).ok()?,
        cpu_ticks: utime.saturating_add(stime),
        start_ticks,
        rss_pages,
        kernel_thread: flags & PF_KTHREAD != 0,
    })
}

/// CPU time in nanoseconds from a `schedstat` line: time on a CPU, time
/// waiting for one, times scheduled. `None` when the line is not of that
/// shape, or says the thread was never scheduled: a kernel without
/// scheduler statistics writes `0 0 0`, whatever the thread did.
pub(crate) fn parse_schedstat(line: &[u8]) -> Option<u64> {
    let mut fields = line.split(|&b| b == b' ');
    let on_cpu_ns = number(fields.next()?)?;
    let _waited_ns = number(fields.next()?)?;
    let scheduled = number(fields.next()?)?;
    (scheduled > 0).then_some(on_cpu_ns)
}

/// A decimal number, trailing newline allowed.
fn number(field: &[u8]) -> Option<u64> {
    let field = field.strip_suffix(b"\n").unwrap_or(field);
    if field.is_empty() {
        return None;
    }
    field.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Units of `stat`, read once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Units {
    ticks_per_second: u64,
    page_bytes: u64,
}

impl Units {
    pub(crate) fn of_this_kernel() -> Self {
        Self {
            ticks_per_second: procfs::clock_ticks_per_second().max(1),
            page_bytes: procfs::page_size(),
        }
    }

    pub(crate) fn ticks_per_second(&self) -> u64 {
        self.ticks_per_second
    }

    pub(crate) fn cpu_ms(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(1000) / self.ticks_per_second
    }

    pub(crate) fn bytes(&self, pages: u64) -> u64 {
        pages.saturating_mul(self.page_bytes)
    }

    /// The usage `stat` gives.
    pub(crate) fn reading(&self, stat: &Stat) -> Reading {
        Reading {
            cpu_ms: self.cpu_ms(stat.cpu_ticks),
            memory_bytes: self.bytes(stat.rss_pages),
        }
    }
}

/// One usage reading of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reading {
    /// CPU time so far, user and system.
    pub(crate) cpu_ms: u64,
    /// Resident memory.
    pub(crate) memory_bytes: u64,
}

impl Reading {
    /// A kernel thread's usage from its `schedstat` CPU time.
    pub(crate) fn of_kernel_thread(cpu_ns: u64) -> Self {
        Self {
            cpu_ms: cpu_ns / 1_000_000,
            memory_bytes: 0,
        }
    }
}

/// How a process's usage is reached: a kept descriptor on its `stat`, on
/// a kernel thread's `schedstat`, or (above the descriptor budget) `stat`
/// opened for each read.
///
/// A kept descriptor names the process it was opened for, never a later
/// one given the same pid: reads through it fail once that process is
/// reaped.
#[derive(Debug)]
pub(crate) enum StatHandle {
    Kept(OwnedFd),
    KernelThread(OwnedFd),
    Reopen,
}

impl StatHandle {
    /// The kept descriptor, if any (it counts against the budget).
    pub(crate) fn into_kept(self) -> Option<OwnedFd> {
        match self {
            StatHandle::Kept(fd) | StatHandle::KernelThread(fd) => Some(fd),
            StatHandle::Reopen => None,
        }
    }
}

/// Reads `stat` of `pid` into `buf` through `handle` and parses it.
/// `Err` with `NotFound`/`ESRCH` when the process has gone.
pub(crate) fn read_stat(
    root: &ProcRoot,
    pid: u32,
    handle: &StatHandle,
    buf: &mut [u8; STAT_BUF_BYTES],
) -> io::Result<Stat> {
    let n = match handle {
        StatHandle::Kept(fd) => procfs::read_at_start(fd, buf)?,
        StatHandle::KernelThread(_) | StatHandle::Reopen => {
            procfs::read_at_start(root.open_file(pid, "stat")?, buf)?
        }
    };
    let line = buf.get(..n).unwrap_or_default();
    // An empty read is what a reaped process's descriptor may give.
    parse_stat(line).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// Reads a kernel thread's CPU time in nanoseconds through its kept
/// `schedstat` descriptor. `Err` with `NotFound`/`ESRCH` once it has gone.
pub(crate) fn read_schedstat(fd: &OwnedFd, buf: &mut [u8; STAT_BUF_BYTES]) -> io::Result<u64> {
    let n = procfs::read_at_start(fd, buf)?;
    let line = buf.get(..n).unwrap_or_default();
    parse_schedstat(line).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// One process's last usage reading, shared by every poll within
/// [`USAGE_WINDOW`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    read_at: Option<Instant>,
    history: CpuHistory,
    cpu_usage: Option<f64>,
    memory_bytes: Option<u64>,
}

impl Usage {
    /// Whether a poll at `now` must read `stat` again.
    pub(crate) fn is_stale(&self, now: Instant) -> bool {
        self.read_at
            .is_none_or(|at| now.saturating_duration_since(at) >= USAGE_WINDOW)
    }

    /// Takes a fresh reading made at `now`.
    pub(crate) fn record(&mut self, reading: Reading, now: Instant) {
        let sample = CpuSample {
            cpu_ms: reading.cpu_ms,
            at: now,
        };
        self.cpu_usage = self.history.observe(sample);
        self.memory_bytes = Some(reading.memory_bytes);
        self.read_at = Some(now);
    }

    /// Makes the next poll read `stat` again, and forgets the memory until
    /// then (the CPU history is kept): an exec replaced the memory image,
    /// so the last reading's memory is the old image's.
    pub(crate) fn expire(&mut self) {
        self.read_at = None;
        self.memory_bytes = None;
    }

    /// CPU percent of one core over the last window (none before a window
    /// has passed since the process was first read).
    pub(crate) fn cpu_usage(&self) -> Option<f64> {
        self.cpu_usage
    }

    /// Resident memory in bytes at the last reading.
    pub(crate) fn memory_bytes(&self) -> Option<u64> {
        self.memory_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_the_last_parenthesis() {
        let line = b"42 (a) b (c) S 7 42 42 0 -1 4194560 0 0 0 0 150 50 0 0 20 0 1 0 987654 123 456 18446744073709551615\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            Stat {
                state: b'S',
                ppid: 7,
                cpu_ticks: 200,
                start_ticks: 987_654,
                rss_pages: 456,
                kernel_thread: false,
            }
        );
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            &b""[..],
            b"42 (x) S 1",
            b"42 (x) S 1 2 3 4 5 6 7 8 9 x 0 0 0 0 0 0 0 1 2 3",
            b"no parenthesis at all 1 2 3",
            b"42 (x) S 99999999999 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 5 1 1",
        ] {
            assert_eq!(parse_stat(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // A negative rss reads as zero.
        let line = b"1 (x) S 0 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 5 1 -3";
        assert_eq!(parse_stat(line).unwrap().rss_pages, 0);
    }

    #[test]
    fn the_kernel_thread_flag_and_schedstat_are_read() {
        // kthreadd's flags: PF_KTHREAD | PF_NOFREEZE | ...
        let line = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 20 0 1 0 2 0 0";
        assert!(parse_stat(line).unwrap().kernel_thread);
        let line = b"9 (x) S 1 9 9 0 -1 4194560 0 0 0 0 0 3 0 0 20 0 1 0 2 0 0";
        assert!(!parse_stat(line).unwrap().kernel_thread);
        assert_eq!(parse_schedstat(b"1234567 890 12\n"), Some(1_234_567));
        // Rescuer workers that ran only before the clock did.
        assert_eq!(parse_schedstat(b"0 0 2\n"), Some(0));
        // A kernel without scheduler statistics, and lines of another shape.
        for bad in [&b"0 0 0\n"[..], b"", b"x 1 2", b"-5 1 2", b"5 1", b"5 1 x"] {
            assert_eq!(
                parse_schedstat(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            Reading::of_kernel_thread(2_999_999),
            Reading {
                cpu_ms: 2,
                memory_bytes: 0
            }
        );
    }

    #[test]
    fn a_kernel_threads_schedstat_agrees_with_its_stat() {
        let root = ProcRoot::open().unwrap();
        let mut buf = [0u8; STAT_BUF_BYTES];
        let units = Units::of_this_kernel();
        let mut seen = 0;
        let tick_ms = 1000 / units.ticks_per_second();
        for pid in root.pids().unwrap() {
            let Ok(fd) = root.open_file(pid, "schedstat") else {
                continue;
            };
            // `stat` between two `schedstat`s: its CPU time was taken
            // between theirs, whatever the thread ran meanwhile.
            let before = read_schedstat(&fd, &mut buf);
            let Ok(stat) = read_stat(&root, pid, &StatHandle::Reopen, &mut buf) else {
                continue;
            };
            let after = read_schedstat(&fd, &mut buf);
            let (Ok(before), Ok(after)) = (before, after) else {
                continue;
            };
            if !stat.kernel_thread {
                continue;
            }
            // `stat` cuts user and system time to ticks each: up to two
            // ticks under the clock, never over it (plus a millisecond of
            // rounding here).
            let from_stat = units.cpu_ms(stat.cpu_ticks);
            let (low, high) = (
                Reading::of_kernel_thread(before).cpu_ms,
                Reading::of_kernel_thread(after).cpu_ms,
            );
            assert!(
                from_stat + 2 * tick_ms + 1 >= low && from_stat <= high + 1,
                "pid {pid}: {from_stat} ms from stat, {low}..={high} ms from schedstat"
            );
            seen += 1;
        }
        let in_ci = std::env::var("CI").is_ok_and(|value| value == "true");
        assert!(
            seen > 0 || !in_ci,
            "no kernel thread with a schedstat is visible"
        );
    }

    #[test]
    fn own_stat_through_a_kept_descriptor() {
        let root = ProcRoot::open().unwrap();
        let me = std::process::id();
        let handle = StatHandle::Kept(root.open_file(me, "stat").unwrap());
        let mut buf = [0u8; STAT_BUF_BYTES];
        let kept = read_stat(&root, me, &handle, &mut buf).unwrap();
        let reopened = read_stat(&root, me, &StatHandle::Reopen, &mut buf).unwrap();
        assert_eq!(kept.start_ticks, reopened.start_ticks);
        assert_eq!(kept.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(kept.rss_pages > 0 && !kept.is_exited());
    }

    #[test]
    fn usage_is_shared_within_the_window() {
        let units = Units {
            ticks_per_second: 100,
            page_bytes: 4096,
        };
        let t0 = Instant::now();
        let stat = |ticks| {
            units.reading(&Stat {
                state: b'R',
                ppid: 1,
                cpu_ticks: ticks,
                start_ticks: 1,
                rss_pages: 2,
                kernel_thread: false,
            })
        };
        let mut usage = Usage::default();
        assert!(usage.is_stale(t0));
        usage.record(stat(0), t0);
        assert_eq!(usage.cpu_usage(), None);
        assert_eq!(usage.memory_bytes(), Some(8192));
        assert!(!usage.is_stale(t0 + USAGE_WINDOW / 2));
        let later = t0 + USAGE_WINDOW;
        assert!(usage.is_stale(later));
        // 5 ticks = 50 ms of CPU over 100 ms.
        usage.record(stat(5), later);
        assert_eq!(usage.cpu_usage(), Some(50.0));
    }
}
