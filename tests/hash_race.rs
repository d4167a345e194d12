//! A peer-named path is never opened as anything but a regular file, even
//! while another process swaps the name between a regular file and a
//! symbolic link to a FIFO (`renameat2(RENAME_EXCHANGE)` in a loop).
//!
//! Opening a FIFO's read end is observable: a writer blocked in `open`
//! returns. A root procmond that checked the path and then opened it by
//! name again opened the FIFO (had it been `/dev/watchdog`, the host would
//! reboot); it must only ever answer with the regular file's hash or "not a
//! regular file".

mod child_support;
mod collector_support;
mod server_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use child_support::ignored_test_args;
use collector_support::{LineReader, Running, TempDir, sha256sum};
use daemoneye_lib::client::{Agent, ClientError};
use daemoneye_lib::proto::ProtoHashCheck;
use daemoneye_lib::server::{Server, ServerConfig};
use rustix::fs::{CWD, FileType, Mode, OFlags, RenameFlags};
use server_support::Serving;

/// Where [`swapper`] swaps names: `DIR/target` and `DIR/link`.
const SWAP_DIR_ENV: &str = "DE_HASH_RACE_DIR";
/// How long the swapper swaps.
const SWAP_FOR: Duration = Duration::from_secs(3);
/// The whole test's bound.
const DEADLINE: Duration = Duration::from_secs(30);

/// Run by the test below as a child: exchanges `target` and `link` in a
/// loop for [`SWAP_FOR`], after saying it started.
#[test]
#[ignore = "run as a child by a_swapped_name_never_gets_a_fifo_opened"]
fn swapper() {
    let Ok(dir) = std::env::var(SWAP_DIR_ENV) else {
        return;
    };
    let (a, b) = (Path::new(&dir).join("target"), Path::new(&dir).join("link"));
    // On a line of its own, after libtest's "test swapper ... ".
    println!("\nswapping");
    let until = Instant::now().checked_add(SWAP_FOR).expect("deadline");
    let mut swaps = 0u64;
    while Instant::now() < until {
        rustix::fs::renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).expect("exchange");
        swaps += 1;
    }
    // An even number of swaps leaves the regular file at `target`.
    if swaps % 2 == 1 {
        rustix::fs::renameat_with(CWD, &a, CWD, &b, RenameFlags::EXCHANGE).expect("exchange");
    }
    println!("swapped {swaps}");
}

/// A thread blocked opening `fifo` for writing: it returns, and reports,
/// once anyone opens the FIFO for reading. Dropped, it opens the read end
/// itself so the thread ends.
struct FifoWatch {
    fifo: PathBuf,
    opened: Receiver<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FifoWatch {
    fn new(fifo: &Path) -> FifoWatch {
        let (tx, opened) = mpsc::channel();
        let path = fifo.to_owned();
        let thread = thread::spawn(move || {
            let writer = rustix::fs::open(&path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty());
            if writer.is_ok() {
                let _ = tx.send(());
            }
        });
        FifoWatch {
            fifo: fifo.to_owned(),
            opened,
            thread: Some(thread),
        }
    }

    /// Whether a reader has opened the FIFO so far.
    fn was_opened(&self) -> bool {
        self.opened.try_recv().is_ok()
    }
}

impl Drop for FifoWatch {
    fn drop(&mut self) {
        // Our own reader releases the blocked writer.
        let _reader = rustix::fs::open(
            &self.fifo,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_swapped_name_never_gets_a_fifo_opened() {
    let started = Instant::now();
    let dir = TempDir::new("hash-race");
    let target = dir.join("target");
    std::fs::write(&target, b"a regular file, swapped with a link to a FIFO").unwrap();
    let fifo = dir.join("fifo");
    rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    std::os::unix::fs::symlink(&fifo, dir.join("link")).unwrap();
    let expected = sha256sum(&target);
    let watch = FifoWatch::new(&fifo);

    let server = Server::bind(ServerConfig::new(dir.join("procmond.sock"))).unwrap();
    let socket = server.socket_path().to_owned();
    let serving = Serving::start(server);
    let mut agent = Agent::connect(&socket).expect("connect");
    let check = ProtoHashCheck {
        expected_hash: String::new(),
        hash_algorithm: "sha256".into(),
        executable_path: target.to_string_lossy().into_owned(),
    };

    let mut swapper = Running::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args(ignored_test_args("swapper"))
            .env(SWAP_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stdin(Stdio::null()),
    );
    let mut lines = LineReader::new(swapper.child().stdout.take().unwrap());
    // libtest's own lines come first.
    while lines.line() != "swapping" {}

    let (mut hashed, mut refused) = (0u32, 0u32);
    while swapper.child().try_wait().unwrap().is_none() {
        assert!(started.elapsed() < DEADLINE, "not done within {DEADLINE:?}");
        match agent.hash_check(check.clone()) {
            Ok(report) => {
                assert_eq!(report.result.hash_value, expected);
                hashed += 1;
            }
            Err(ClientError::TaskFailed { message, .. })
                if message.contains("not a regular file (a FIFO)") =>
            {
                refused += 1;
            }
            Err(other) => panic!("neither the file's hash nor a refusal: {other}"),
        }
        assert!(
            !watch.was_opened(),
            "the FIFO was opened for reading after {hashed} hashes and {refused} refusals"
        );
    }
    let swaps = loop {
        let line = lines.line();
        if line.starts_with("swapped") {
            break line;
        }
    };
    assert!(swapper.wait().success());
    println!("{hashed} hashed, {refused} refused while the child {swaps}");
    assert!(
        hashed > 100 && refused > 100,
        "the race was not exercised: {hashed} hashed, {refused} refused"
    );
    // A last check after the swapper stopped, then the FIFO one more time.
    assert_eq!(agent.hash_check(check).unwrap().result.hash_value, expected);
    assert!(!watch.was_opened(), "the FIFO was opened for reading");
    drop(agent);
    serving.stop();
    drop(watch);
}
