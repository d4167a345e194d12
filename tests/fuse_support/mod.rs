//! A FUSE mount whose one file, `hung`, answers no read: a real file system
//! call that blocks until the server goes. Served by a small Python program
//! talking to `/dev/fuse` directly (`hung_fuse.py`; no libfuse needed).
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

const SERVER: &str = include_str!("hung_fuse.py");

/// How long any wait for the server takes at most.
const WAIT: Duration = Duration::from_secs(10);

/// A mounted hung file system, unmounted and its server reaped on drop.
pub struct HungFuse {
    dir: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl HungFuse {
    /// Mounts it at a fresh directory under /tmp, or says why it cannot
    /// (not root, no /dev/fuse, mounting refused) and returns `None`.
    pub fn mount() -> Result<HungFuse, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("mounting FUSE needs root".into());
        }
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        let dir = std::env::temp_dir().join(format!("de-fuse-{}-{}", std::process::id(), unique()));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let spawned = Command::new("python3")
            .args(["-c", SERVER])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(format!("no python3: {e}"));
            }
        };
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let fuse = HungFuse {
            dir,
            child: Some(child),
            stdin,
            lines,
        };
        match fuse.lines.recv_timeout(WAIT) {
            Ok(line) if line == "mounted" => Ok(fuse),
            Ok(line) => Err(line),
            Err(e) => Err(format!("the FUSE server said nothing within {WAIT:?}: {e}")),
        }
    }

    /// The file whose reads hang.
    pub fn hung_file(&self) -> PathBuf {
        self.dir.join("hung")
    }

    /// Waits (at most 10 s) until a read of the hung file is pending.
    pub fn wait_for_read(&self) {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) if line == "read" => return,
                Ok(_) => {}
                Err(e) => panic!("no read of the hung file within {WAIT:?}: {e}"),
            }
        }
    }
}

impl Drop for HungFuse {
    fn drop(&mut self) {
        // End of input: the server unmounts and exits, which fails every
        // pending read.
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let _ = tx.send(child.wait());
            });
            if rx.recv_timeout(WAIT).is_err() {
                // Not reaped yet, so the pid is still the server's. Killed,
                // it closes /dev/fuse, which aborts the connection.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
