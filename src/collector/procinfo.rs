//! The process table: one long-lived `sysinfo::System` for what changes every
//! poll, and a cache of what rarely changes, read from `/proc` directly.
//!
//! Per poll and process, sysinfo reads `stat` (ppid, start time, CPU time;
//! it keeps that file open between polls) and, when usage is asked for,
//! `statm` (resident memory); tasks (threads) are never read. This module
//! adds one `readlink` of `/proc/<pid>/exe`, which tells whether the image
//! was deleted, whether /proc refused the details, and whether the process
//! has exec'd since it was last read.
//!
//! The name (`comm`), command line and uid are read on first sight, after an
//! exec (the exe link changed), and once they are older than the configured
//! age. sysinfo's own `OnlyIfNotSet` caching of them is not used: it never
//! notices an exec (name, command line and exe would stay those of the
//! process before it), nor a uid dropped by `setuid`; and its uid read costs
//! two reads of `/proc/<pid>/status` (about 50 µs a process on this machine,
//! four times the rest of a poll).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, ThreadKind};

use super::CollectError;
use super::bounds;
use super::cpu::{CpuHistory, CpuSample};
use crate::proto::ProtoProcessRecord;
use crate::proto::limits::{MAX_PATH_BYTES, MAX_PROCESS_NAME_BYTES};

/// Identifies a process across polls: a reused pid has another start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ProcKey {
    pub(crate) pid: u32,
    /// Clock ticks since boot (field 22 of `/proc/<pid>/stat`): a pid
    /// reused within the same second still has another start.
    pub(crate) start_ticks: u64,
}

/// Which processes a refresh reads.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope<'a> {
    All,
    Pids(&'a [u32]),
}

/// What a refresh reads besides identity (pid, ppid, start time, state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fields {
    Identity,
    /// Also resident memory and CPU time.
    Usage,
}

/// One refresh's timestamps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Poll {
    at: Instant,
    unix_ms: i64,
}

/// The target of `/proc/<pid>/exe`, without the kernel's " (deleted)" mark.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ExeLink {
    Path(PathBuf),
    /// /proc refused it (the process belongs to someone else).
    Denied,
    /// No image: a kernel thread, a zombie, or gone.
    Missing,
}

/// The rarely changing details of one process.
struct Known {
    start_time: u64,
    exe: ExeLink,
    name: String,
    cmd: Vec<String>,
    uid: Option<u32>,
    cmd_denied: bool,
    read_at: Instant,
    cpu: CpuHistory,
}

/// A process as seen by one poll, with the on-disk path of its image.
pub(crate) struct Observed {
    pub(crate) record: ProtoProcessRecord,
    pub(crate) exe: Option<PathBuf>,
}

pub(crate) struct ProcTable {
    sys: System,
    known: HashMap<u32, Known>,
    details_max_age: Duration,
}

impl ProcTable {
    pub(crate) fn new(details_max_age: Duration) -> Self {
        Self {
            sys: System::new(),
            known: HashMap::new(),
            details_max_age,
        }
    }

    /// Re-reads the processes of `scope`, dropping the ones that exited.
    pub(crate) fn refresh(
        &mut self,
        scope: Scope<'_>,
        fields: Fields,
    ) -> Result<Poll, CollectError> {
        let mut kind = ProcessRefreshKind::nothing().without_tasks();
        if fields == Fields::Usage {
            kind = kind.with_memory().with_cpu();
        }
        let sys = &mut self.sys;
        // Forget the details of processes that exited (or whose pid was
        // reused), looking only at the processes this refresh read.
        let alive = |sys: &System, pid: u32, known: &Known| {
            sys.process(Pid::from_u32(pid))
                .is_some_and(|p| p.start_time() == known.start_time)
        };
        match scope {
            Scope::All => {
                let updated = sys.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
                if updated == 0 {
                    return Err(CollectError::ProcUnavailable { path: "/proc" });
                }
                self.known.retain(|&pid, known| alive(sys, pid, known));
            }
            Scope::Pids(pids) => {
                let wanted: Vec<Pid> = pids.iter().map(|&pid| Pid::from_u32(pid)).collect();
                sys.refresh_processes_specifics(ProcessesToUpdate::Some(&wanted), true, kind);
                for pid in pids {
                    if self
                        .known
                        .get(pid)
                        .is_some_and(|known| !alive(sys, *pid, known))
                    {
                        self.known.remove(pid);
                    }
                }
            }
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Ok(Poll {
            at: Instant::now(),
            unix_ms,
        })
    }

    /// The processes of `scope` known after the last refresh, sorted by pid
    /// (threads named by their tid are left out).
    pub(crate) fn pids(&self, scope: Scope<'_>) -> Vec<u32> {
        let mut pids: Vec<u32> = match scope {
            Scope::All => self
                .sys
                .processes()
                .keys()
                .map(|pid| pid.as_u32())
                .collect(),
            Scope::Pids(pids) => pids.to_vec(),
        };
        pids.retain(|&pid| {
            self.sys
                .process(Pid::from_u32(pid))
                .is_some_and(|p| p.thread_kind() != Some(ThreadKind::Userland))
        });
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Identity, parent and whether the process is a zombie (exited,
    /// unreaped), from the last refresh.
    /// The start is read from `/proc/<pid>/stat` now, in clock ticks
    /// (sysinfo keeps whole seconds); `None` when the process has gone.
    pub(crate) fn identity(&self, pid: u32) -> Option<(ProcKey, Option<u32>, bool)> {
        let p = self.sys.process(Pid::from_u32(pid))?;
        let key = ProcKey {
            pid,
            start_ticks: read_start_ticks(pid)?,
        };
        let zombie = matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead);
        Some((key, p.parent().map(Pid::as_u32), zombie))
    }

    /// Builds the record of `pid` from the last refresh (which must have
    /// read [`Fields::Usage`]) and the details cache. `None` when the process
    /// is unknown or has just gone.
    pub(crate) fn observe(&mut self, pid: u32, poll: &Poll) -> Option<Observed> {
        let p = self.sys.process(Pid::from_u32(pid))?;
        let start_time = p.start_time();
        let (link, deleted) = read_exe_link(pid);
        let stale = match self.known.get(&pid) {
            None => true,
            Some(known) => {
                known.start_time != start_time
                    || known.exe != link
                    || poll.at.saturating_duration_since(known.read_at) >= self.details_max_age
            }
        };
        if stale {
            let details = read_details(pid)?;
            let cpu = self
                .known
                .get(&pid)
                .filter(|known| known.start_time == start_time)
                .map(|known| known.cpu)
                .unwrap_or_default();
            self.known.insert(
                pid,
                Known {
                    start_time,
                    exe: link,
                    name: details.name,
                    cmd: details.cmd,
                    uid: details.uid,
                    cmd_denied: details.cmd_denied,
                    read_at: poll.at,
                    cpu,
                },
            );
        }
        let known = self.known.get_mut(&pid)?;
        let sample = CpuSample {
            cpu_ms: p.accumulated_cpu_time(),
            at: poll.at,
        };
        let cpu_usage = known.cpu.observe(sample);

        let exe = match &known.exe {
            ExeLink::Path(path) => Some(path.clone()),
            ExeLink::Denied | ExeLink::Missing => None,
        };
        let record = ProtoProcessRecord {
            pid,
            ppid: p.parent().map(Pid::as_u32),
            name: known.name.clone(),
            executable_path: exe.as_ref().map(|path| {
                let mut text = path.to_string_lossy().into_owned();
                bounds::truncate(&mut text, MAX_PATH_BYTES);
                text
            }),
            command_line: known.cmd.clone(),
            start_time: i64::try_from(start_time).ok(),
            cpu_usage,
            memory_usage: Some(p.memory()),
            executable_hash: None,
            hash_algorithm: None,
            user_id: known.uid.map(|uid| uid.to_string()),
            accessible: known.exe != ExeLink::Denied && !known.cmd_denied,
            file_exists: exe.is_some() && !deleted,
            collection_time: poll.unix_ms,
        };
        Some(Observed { record, exe })
    }
}

/// Reads `/proc/<pid>/exe`: the image path and whether it was deleted.
///
/// The kernel appends " (deleted)" to the path of an unlinked image, but a
/// file may also be named so. Only when the text ends so is the image
/// itself examined: with no link left (`st_nlink == 0`, through the magic
/// link) it was deleted; otherwise the literal path, seen from the process's
/// root, must hold the image for the suffix to be part of the name. When the
/// image cannot be examined (another user's process, without privilege), the
/// suffix is taken as the kernel's mark.
fn read_exe_link(pid: u32) -> (ExeLink, bool) {
    const DELETED: &[u8] = b" (deleted)";
    let path = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(path) => path,
        Err(e) if is_denied(&e) => return (ExeLink::Denied, false),
        Err(_) => return (ExeLink::Missing, false),
    };
    let Some(kept) = path.as_os_str().as_bytes().strip_suffix(DELETED) else {
        return (ExeLink::Path(path), false);
    };
    let stripped = PathBuf::from(OsStr::from_bytes(kept));
    let literal_is_the_image = std::fs::metadata(format!("/proc/{pid}/exe")).is_ok_and(|image| {
        image.nlink() > 0
            && std::fs::metadata(in_root_of(pid, &path))
                .is_ok_and(|m| (m.dev(), m.ino()) == (image.dev(), image.ino()))
    });
    if literal_is_the_image {
        (ExeLink::Path(path), false)
    } else {
        (ExeLink::Path(stripped), true)
    }
}

/// `path` as the process `pid` sees it: below `/proc/<pid>/root`, so a
/// process in another mount namespace (a container) or chroot has its own
/// files looked up, not the host's at the same path.
pub(crate) fn in_root_of(pid: u32, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(relative)
}

/// The start time of `pid` in clock ticks since boot.
fn read_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are
/// counted after the last `)`.
fn parse_start_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After the name come field 3 (state) onwards: field 22 is the 20th.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

struct Details {
    name: String,
    cmd: Vec<String>,
    uid: Option<u32>,
    cmd_denied: bool,
}

/// Reads name, command line and uid; `None` if the process has gone.
fn read_details(pid: u32) -> Option<Details> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    // comm is world-readable while the process exists: its absence means gone.
    let comm = std::fs::read(dir.join("comm")).ok()?;
    let mut name = String::from_utf8_lossy(comm.strip_suffix(b"\n").unwrap_or(&comm)).into_owned();
    bounds::truncate(&mut name, MAX_PROCESS_NAME_BYTES);
    let (cmd, cmd_denied) = match read_bounded(&dir.join("cmdline"), bounds::CMDLINE_READ_BYTES) {
        Ok(raw) => (bounds::command_line(split_cmdline(&raw)), false),
        Err(e) => (Vec::new(), is_denied(&e)),
    };
    let uid = read_uid(&dir.join("status"));
    Some(Details {
        name,
        cmd,
        uid,
        cmd_denied,
    })
}

/// The first `max` bytes of a file: a command line can be megabytes long,
/// and only what the limits keep is worth reading.
fn read_bounded(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    std::fs::File::open(path)?
        .take(max as u64)
        .read_to_end(&mut raw)?;
    Ok(raw)
}

/// Splits NUL-separated arguments, keeping empty ones (`a "" b` stays three).
fn split_cmdline(raw: &[u8]) -> Vec<String> {
    if raw.is_empty() {
        return Vec::new();
    }
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    raw.split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The real uid from the `Uid:` line of `/proc/<pid>/status`.
fn read_uid(status: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(status).ok()?;
    parse_uid(&text)
}

fn parse_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line["Uid:".len()..].split_whitespace().next()?.parse().ok()
}

fn is_denied(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_keeps_empty_arguments() {
        assert_eq!(split_cmdline(b""), Vec::<String>::new());
        assert_eq!(split_cmdline(b"sleep\x0030\x00"), ["sleep", "30"]);
        assert_eq!(split_cmdline(b"a\x00\x00b\x00"), ["a", "", "b"]);
        // A process may rewrite its command line without NULs.
        assert_eq!(split_cmdline(b"nginx: worker"), ["nginx: worker"]);
    }

    #[test]
    fn start_ticks_are_counted_after_the_name() {
        let stat = b"42 (a) b (c) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0\n";
        assert_eq!(parse_start_ticks(stat), Some(987_654));
        assert_eq!(parse_start_ticks(b"42 (x) S 1"), None);
        let me = std::fs::read("/proc/self/stat").unwrap();
        assert!(parse_start_ticks(&me).is_some_and(|t| t > 0));
    }

    #[test]
    fn processes_started_in_the_same_second_have_distinct_identities() {
        use std::process::{Command, Stdio};
        let spawn = || {
            Command::new("/bin/sleep")
                .arg("30")
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut first = spawn();
        // Two clock ticks apart; only the clock can be waited for.
        std::thread::sleep(Duration::from_millis(25));
        let mut second = spawn();
        let mut table = ProcTable::new(Duration::from_secs(1));
        let pids = [first.id(), second.id()];
        table.refresh(Scope::Pids(&pids), Fields::Identity).unwrap();
        let a = table.identity(pids[0]).map(|(key, _, _)| key.start_ticks);
        let b = table.identity(pids[1]).map(|(key, _, _)| key.start_ticks);
        for child in [&mut first, &mut second] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(b >= a + 2, "{a} then {b}");
    }

    #[test]
    fn uid_is_the_real_one() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_uid(status), Some(1000));
        assert_eq!(parse_uid("Name:\tx\n"), None);
    }

    #[test]
    fn own_process_is_observed_with_its_exe_and_uid() {
        let me = std::process::id();
        let mut table = ProcTable::new(Duration::from_secs(1));
        let poll = table.refresh(Scope::Pids(&[me]), Fields::Usage).unwrap();
        let seen = table.observe(me, &poll).expect("own process");
        assert_eq!(seen.record.pid, me);
        assert_eq!(seen.exe, Some(std::env::current_exe().unwrap()));
        assert_eq!(seen.record.user_id, Some(nix::unistd::getuid().to_string()));
        assert!(seen.record.accessible && seen.record.file_exists);
        assert_eq!(seen.record.cpu_usage, None);
        // Usage needs a window of 100 ms: only the clock can be waited for.
        std::thread::sleep(super::super::cpu::MIN_WINDOW);
        let poll = table.refresh(Scope::Pids(&[me]), Fields::Usage).unwrap();
        assert!(table.observe(me, &poll).unwrap().record.cpu_usage.is_some());
    }
}
