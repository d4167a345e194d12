//! `/proc` through kept descriptors: one descriptor on `/proc` itself, files
//! below it opened relative to it (`openat`), and reads at offset 0
//! (`pread`), so that a file kept open can be read again and again with one
//! system call and no path lookup.
//!
//! A descriptor on `/proc/<pid>/stat` stays tied to the process it was
//! opened for: once that process is gone, reads fail with `ESRCH` even when
//! the pid has been reused. So a kept descriptor never reads another
//! process's data.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Dir, Mode, OFlags};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// An open `/proc` directory.
#[derive(Debug)]
pub struct ProcRoot {
    fd: OwnedFd,
}

impl ProcRoot {
    /// Opens `/proc` (read-only directory, close-on-exec).
    pub fn open() -> io::Result<Self> {
        let fd = rustix::fs::open(
            "/proc",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd })
    }

    /// Opens `/proc/<pid>/<file>` read-only, relative to the kept
    /// descriptor. The path is formatted on the stack: no allocation.
    pub fn open_file(&self, pid: u32, file: &str) -> io::Result<OwnedFd> {
        let mut buf = [0u8; 64];
        let path = pid_path(&mut buf, pid, file)?;
        Ok(rustix::fs::openat(
            &self.fd,
            path,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )?)
    }

    /// Every numeric entry of `/proc`: the thread-group ids of the processes
    /// visible in procmond's pid namespace (threads are not listed there).
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let mut pids = Vec::with_capacity(512);
        // `read_from` opens a fresh descriptor of the directory, so every
        // listing starts at its beginning.
        for entry in Dir::read_from(&self.fd)? {
            let entry = entry?;
            if let Some(pid) = parse_pid(entry.file_name().to_bytes()) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }
}

/// The root directory of process `pid` (`/proc/<pid>/root`, a path-only
/// descriptor) if `accept` takes its `status`: lookups below it see that
/// process's mounts and chroot. Both are read through one descriptor of
/// `/proc/<pid>`, which names that process only (never a later holder of
/// the pid), so the status checked is that of the process whose root is
/// returned. The kernel lets only whoever may ptrace-read the process (its
/// own uid, or `CAP_SYS_PTRACE`) open its root.
pub fn open_root_of(pid: u32, accept: impl FnOnce(&str) -> bool) -> io::Result<OwnedFd> {
    let dir = rustix::fs::open(
        format!("/proc/{pid}").as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let status = rustix::fs::openat(
        &dir,
        "status",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = [0u8; 4096];
    let n = read_at_start(&status, &mut buf)?;
    if !accept(&String::from_utf8_lossy(buf.get(..n).unwrap_or_default())) {
        return Err(io::Error::other(format!(
            "process {pid} is not the peer that connected (its status does not match)"
        )));
    }
    Ok(rustix::fs::openat(
        &dir,
        "root",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Reads from offset 0 of `fd` into `buf`, returning the bytes read. One
/// `pread`: a `/proc` file shorter than `buf` is read whole at once.
pub fn read_at_start(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::io::pread(fd, buf, 0)?)
}

/// The kernel's clock tick rate (`USER_HZ`, usually 100) and page size: the
/// units of `/proc/<pid>/stat`.
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// The kernel's count of tasks (threads) on the host, modulo 2^16, as
/// `sysinfo(2)` gives it (`procs`, the `nr_threads` that `/proc/loadavg`
/// also shows): one system call, no file. A task counts from its fork until
/// it is reaped, so a zombie still counts.
pub fn task_count() -> u16 {
    rustix::system::sysinfo().procs
}

/// The memory page size in bytes.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// Raises the soft limit of open descriptors to the hard limit and returns
/// the soft limit now in force (`None`: unlimited).
pub fn raise_open_file_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(%error, "could not raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// `"<pid>/<file>"` in `buf`.
fn pid_path<'a>(buf: &'a mut [u8; 64], pid: u32, file: &str) -> io::Result<&'a str> {
    use std::io::Write;
    let mut cursor = io::Cursor::new(&mut buf[..]);
    write!(cursor, "{pid}/{file}")?;
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    std::str::from_utf8(&buf[..len]).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A `/proc` entry name that is a pid (decimal, no sign, no leading zero).
fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name[0] == b'0' || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat_is_read_through_a_kept_descriptor() {
        let root = ProcRoot::open().unwrap();
        let me = std::process::id();
        let fd = root.open_file(me, "stat").unwrap();
        let mut buf = [0u8; 1024];
        let n = read_at_start(&fd, &mut buf).unwrap();
        assert!(buf[..n].starts_with(format!("{me} (").as_bytes()));
        // Again, from the start.
        let again = read_at_start(&fd, &mut buf).unwrap();
        assert!(again > 0 && buf.starts_with(format!("{me} (").as_bytes()));
        assert!(root.pids().unwrap().contains(&me));
    }

    #[test]
    fn a_kept_descriptor_of_an_exited_process_reads_nothing_of_another() {
        let root = ProcRoot::open().unwrap();
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        let fd = root.open_file(pid, "stat");
        child.wait().unwrap();
        // Opened before it was reaped (it may already have been a zombie)
        // or not at all; after the reap, the kept descriptor fails.
        if let Ok(fd) = fd {
            let mut buf = [0u8; 1024];
            assert!(read_at_start(&fd, &mut buf).is_err());
        }
    }

    #[test]
    fn pid_names_are_decimal_only() {
        assert_eq!(parse_pid(b"123"), Some(123));
        for bad in [&b""[..], b"self", b"0", b"012", b"12a", b"99999999999"] {
            assert_eq!(parse_pid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_open_file_limit_is_known() {
        assert!(raise_open_file_limit().is_none_or(|n| n >= 64));
    }
}
