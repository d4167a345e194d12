//! Helpers of the collector tests: temporary directories, spawned children
//! that are always reaped, and reads and waits that all have a deadline.
#![allow(dead_code)] // Each test file uses a different part.

use crate::child_support::spawn_retrying;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any one wait in these tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir, removed when dropped. Its
/// path is canonical, as the kernel reports executables' paths.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        // Relaxed: the counter only has to hand out distinct numbers.
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("de-{tag}-{}-{n}", std::process::id()));
        // A leftover of an earlier run whose pid this one reuses.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).expect("create temp dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        Self(path.canonicalize().expect("canonical temp dir"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Copies an executable (e.g. `/bin/sleep`) to `dst`, mode 0755.
pub fn copy_executable(src: &str, dst: &Path) {
    fs::copy(src, dst).expect("copy executable");
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).expect("chmod copy");
}

/// A spawned child that is killed and reaped when dropped.
pub struct Running {
    child: Option<Child>,
    pub pid: u32,
}

impl Running {
    /// Spawns `cmd` (retrying while a fresh executable copy is busy, see
    /// [`spawn_retrying`]).
    pub fn spawn(cmd: &mut Command) -> Self {
        let child = spawn_retrying(cmd).unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let pid = child.id();
        Self {
            child: Some(child),
            pid,
        }
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until dropped")
    }

    /// Waits for the child to exit on its own, at most [`DEADLINE`].
    pub fn wait(mut self) -> ExitStatus {
        let child = self.child.take().expect("child present");
        wait_bounded(child, DEADLINE)
            .unwrap_or_else(|e| panic!("child {} did not exit: {e}", self.pid))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            // SIGKILL cannot be caught: the bound only guards against a child
            // stuck in the kernel.
            let _ = wait_bounded(child, DEADLINE);
        }
    }
}

/// Reaps `child` on a helper thread and waits for that at most `timeout`;
/// past it the child is killed (and still reaped by the helper).
pub fn wait_bounded(mut child: Child, timeout: Duration) -> io::Result<ExitStatus> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => status,
        Err(_) => {
            // Not reaped yet, so the pid is still this child's.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "child still running",
            ))
        }
    }
}

/// Lines of a child's stdout, each awaited at most [`DEADLINE`].
pub struct LineReader {
    lines: mpsc::Receiver<String>,
}

impl LineReader {
    /// Reads `out` on a helper thread, which ends at end of file.
    pub fn new(out: ChildStdout) -> Self {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { lines }
    }

    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no line from the child within {DEADLINE:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("child closed stdout before a line")
            }
        }
    }
}

/// SHA-256 of a file as coreutils' `sha256sum` computes it.
pub fn sha256sum(path: &Path) -> String {
    let mut run = Running::spawn(
        Command::new("sha256sum")
            .arg(path)
            .stdout(Stdio::piped())
            .stdin(Stdio::null()),
    );
    let out = run.child().stdout.take().expect("piped stdout");
    let line = LineReader::new(out).line();
    assert!(run.wait().success(), "sha256sum {} failed", path.display());
    let hex = line.split_whitespace().next().expect("sha256sum output");
    assert_eq!(hex.len(), 64, "sha256sum output {line:?}");
    hex.to_string()
}

/// Runs `f` on another thread and fails the test if it takes longer than
/// [`DEADLINE`]: a hashing call that hangs must fail, not hang the suite.
pub fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("call did not return within {DEADLINE:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("call panicked"),
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Sleeps until `path` has been unchanged for 200 ms, twice the time after
/// which the collector caches a file's hash (a file changed more recently is
/// hashed every time). Only the clock can be waited for here.
pub fn let_settle(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).expect("stat");
    let changed =
        std::time::UNIX_EPOCH + Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32);
    let settled = changed + Duration::from_millis(200);
    if let Ok(left) = settled.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left);
    }
}

/// The processes listed in `/proc` now, but zombies (exited, not yet
/// reaped: a table leaves them out), each with its start time (clock ticks
/// since boot), so that two listings tell a process from a later one that
/// reused its pid (pids wrap at 32,768 here, and a busy machine gets there
/// in seconds).
pub fn proc_processes() -> std::collections::HashMap<u32, u64> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the name's closing parenthesis: state, then fields 4 to
            // 22, start time the last of them.
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
            let state = fields.next()?;
            let start = fields.nth(18)?.parse().ok()?;
            (!matches!(state, "Z" | "X")).then_some((pid, start))
        })
        .collect()
}

/// The pids of processes in both listings with the same start time: alive
/// from before `before` was taken until after `after` was.
pub fn alive_throughout(
    before: &std::collections::HashMap<u32, u64>,
    after: &std::collections::HashMap<u32, u64>,
) -> Vec<u32> {
    let mut pids: Vec<u32> = before
        .iter()
        .filter(|(pid, start)| after.get(pid) == Some(start))
        .map(|(pid, _)| *pid)
        .collect();
    pids.sort_unstable();
    pids
}
