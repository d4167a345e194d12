//! Child processes in tests: spawning a freshly copied executable, and
//! waiting for a child's output with a deadline.
#![allow(dead_code)] // each test file uses a different subset

use std::io;
use std::process::{Child, Command, Output};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// Spawns `command`, retrying a few times with a short backoff on
/// `ETXTBSY`: a freshly copied executable stays "busy" while a process
/// forked by another test thread (between `fork` and `exec`) still holds the
/// copy's write descriptor. No signal says when that child has exec'd,
/// hence the backoff.
pub fn spawn_retrying(command: &mut Command) -> io::Result<Child> {
    const ATTEMPTS: u32 = 6;
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempt + 1 < ATTEMPTS => {
                thread::sleep(Duration::from_millis(10 << attempt));
                attempt += 1;
            }
            spawned => return spawned,
        }
    }
}

/// The arguments that make a test binary run only its ignored test `name`,
/// on one thread, with its output shown: how a test re-executes itself to
/// run part of its work in a child.
pub fn ignored_test_args(name: &str) -> [&str; 5] {
    [
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// A child whose output a thread collects, so that waiting for it has a
/// deadline. Dropped before its output was taken (a test that failed
/// first), it kills the child, which the collecting thread then reaps.
pub struct Collected {
    pid: u32,
    /// Signals go through a pidfd: once the thread has reaped the child,
    /// its pid may name another process, the pidfd never.
    pidfd: Option<std::os::fd::OwnedFd>,
    output: Receiver<io::Result<Output>>,
    collected: bool,
}

impl Collected {
    /// Starts collecting `child`'s output (its stdout and stderr should be
    /// piped).
    pub fn new(child: Child) -> Self {
        let pid = child.id();
        // Opened before the thread can reap the child: the pid is still its.
        let pidfd = rustix::process::Pid::from_raw(pid as i32).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        });
        let (tx, output) = mpsc::channel();
        thread::spawn(move || tx.send(child.wait_with_output()));
        Collected {
            pid,
            pidfd,
            output,
            collected: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILLs the child (best effort: it may have exited).
    pub fn kill(&self) {
        self.signal(rustix::process::Signal::KILL);
    }

    /// Sends `signal` to the child (best effort: it may have exited).
    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pidfd) = &self.pidfd {
            let _ = rustix::process::pidfd_send_signal(pidfd, signal);
        }
    }

    /// Its output once it exits within `limit`; killed, and the test
    /// failed naming `what`, otherwise.
    pub fn output_within(mut self, limit: Duration, what: &str) -> Output {
        match self.output.recv_timeout(limit) {
            Ok(output) => {
                self.collected = true;
                output.expect("child output")
            }
            Err(_) => {
                self.kill();
                panic!("{what} did not finish within {limit:?}");
            }
        }
    }

    /// Its stdout, once it exited successfully within `limit`; killed and
    /// failed otherwise.
    pub fn stdout_within(self, limit: Duration) -> String {
        let output = self.output_within(limit, "the child");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        if !self.collected {
            self.kill();
        }
    }
}

/// The state letter (`R`, `S`, `T`, `Z`, ...) in a `/proc/.../stat` file,
/// e.g. `/proc/self/task/TID/stat` or `/proc/PID/stat`; `None` once it is
/// gone.
pub fn proc_state(stat_path: &str) -> Option<char> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim().chars().next())
}

/// Waits until the `/proc/.../stat` file at `stat_path` shows `state`,
/// polling every millisecond (the kernel's view in /proc is the only signal
/// of a thread sleeping or a process stopped); fails the test naming `what`
/// after `limit`.
pub fn wait_for_state(stat_path: &str, state: char, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    while proc_state(stat_path) != Some(state) {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        thread::sleep(Duration::from_millis(1));
    }
}
