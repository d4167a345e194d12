//! A file read that never returns (a FUSE file whose server answers no
//! read) fails its hash check with a timeout, pins no client slot, and
//! neither stops other clients being served nor hangs procmond's shutdown.

mod child_support;
mod collector_support;
mod fuse_support;
mod server_support;
mod skip_support;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use child_support::Collected;
use collector_support::TempDir;
use daemoneye_lib::client::{Agent, ClientError, ClientOptions};
use daemoneye_lib::proto::ProtoHashCheck;
use daemoneye_lib::server::{Server, ServerConfig};
use daemoneye_lib::sys::pidfd::PidFd;
use fuse_support::HungFuse;
use server_support::Serving;

const WAIT: Duration = Duration::from_secs(20);

fn mount_or_skip() -> Option<HungFuse> {
    match HungFuse::mount() {
        Ok(fuse) => Some(fuse),
        Err(reason) => {
            skip_support::skip(&format!("no hung FUSE file: {reason}"));
            None
        }
    }
}

fn ask(path: &std::path::Path) -> ProtoHashCheck {
    ProtoHashCheck {
        expected_hash: String::new(),
        hash_algorithm: "sha256".into(),
        executable_path: path.to_string_lossy().into_owned(),
    }
}

/// Connects once a slot is free: the server frees a leaving client's slot
/// when it sees the socket close, a moment after the client drops it. Each
/// refusal is an answer, so this is not a sleep; 5 s at most.
fn connect_once_freed(socket: &std::path::Path, options: &ClientOptions) -> Agent {
    let deadline = Instant::now().checked_add(Duration::from_secs(5)).unwrap();
    loop {
        match Agent::connect_with(socket, options.clone()) {
            Ok(agent) => return agent,
            Err(ClientError::Refused { reason }) if Instant::now() < deadline => {
                assert!(reason.contains("TOO_MANY_CLIENTS"), "{reason}")
            }
            Err(e) => panic!("the slot was not freed: {e}"),
        }
    }
}

#[test]
fn a_hung_read_fails_its_task_by_timeout_while_others_are_served() {
    let Some(fuse) = mount_or_skip() else {
        return;
    };
    let dir = TempDir::new("hung-server");
    let mut config = ServerConfig::new(dir.join("procmond.sock"));
    config.max_clients = 2;
    config.collector.hash_read_timeout = Duration::from_secs(2);
    let serving = Serving::start(Server::bind(config).unwrap());
    let socket = serving.server.socket_path().to_owned();
    let options = ClientOptions {
        timeout: WAIT,
        ..ClientOptions::default()
    };

    let hung = fuse.hung_file();
    let waiting = {
        let socket = socket.clone();
        let options = options.clone();
        thread::spawn(move || {
            let mut agent = Agent::connect_with(&socket, options).unwrap();
            let started = Instant::now();
            let outcome = agent.hash_check(ask(&hung));
            (outcome, started.elapsed())
        })
    };
    fuse.wait_for_read();
    // While that read hangs, another client is served at once.
    let mut other = Agent::connect_with(&socket, options.clone()).unwrap();
    let started = Instant::now();
    let records = other.enumerate(None, false).unwrap().count();
    assert!(records > 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let (outcome, took) = waiting.join().unwrap();
    match outcome {
        Err(ClientError::TaskFailed { message, .. }) => {
            assert!(
                message.contains("no answer from the file system within 2s"),
                "{message}"
            )
        }
        other => panic!("expected a timeout failure, got {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Both slots serve, and a client that leaves during a hung read frees
    // its slot at once. (The timed-out client left with its thread: its
    // slot is free once the server has seen it close.)
    let mut again = connect_once_freed(&socket, &options);
    drop(other);
    let leaving = {
        let socket = socket.clone();
        let options = options.clone();
        let hung = fuse.hung_file();
        thread::spawn(move || {
            let mut agent = connect_once_freed(&socket, &options);
            agent.set_timeout(Duration::from_millis(300));
            let outcome = agent.hash_check(ask(&hung));
            (outcome, agent)
        })
    };
    fuse.wait_for_read();
    let (outcome, agent) = leaving.join().unwrap();
    assert!(
        matches!(outcome, Err(ClientError::Timeout { .. })),
        "{outcome:?}"
    );
    drop(agent);
    let replaced = connect_once_freed(&socket, &options);
    assert!(again.enumerate(None, false).unwrap().count() > 0);
    drop((again, replaced));
    // Shutdown while a read may still hang on the abandoned I/O thread.
    serving.stop();
    drop(fuse);
}

#[test]
fn sigterm_stops_procmond_while_a_hash_read_hangs() {
    let Some(fuse) = mount_or_skip() else {
        return;
    };
    let dir = TempDir::new("hung-procmond");
    let socket = dir.join("procmond.sock");
    // A read timeout far beyond the test: only the shutdown can end it.
    let mut procmond = Command::new(env!("CARGO_BIN_EXE_procmond"))
        .arg("--socket")
        .arg(&socket)
        .args(["--hash-read-timeout-ms", "600000"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = procmond.id();
    let pidfd = PidFd::open(pid).unwrap();
    let (tx, log) = std::sync::mpsc::channel();
    let stderr = procmond.stderr.take().unwrap();
    thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let procmond = Collected::new(procmond);
    loop {
        let line = log.recv_timeout(WAIT).expect("procmond logged nothing");
        if line.contains("procmond listening") {
            break;
        }
    }
    let mut agent = Command::new(env!("CARGO_BIN_EXE_daemoneye-agent"));
    agent
        .arg("--socket")
        .arg(&socket)
        .arg("hash-check")
        .arg(fuse.hung_file())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let agent = Collected::new(agent.spawn().unwrap());
    fuse.wait_for_read();
    let stopping = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // procmond's own work ends at once: it stops serving, removes its
    // socket and says so. Its process exits once the hung call returns:
    // a FUSE request the server has taken waits uninterruptibly, even
    // through SIGKILL, so no process can leave before it is answered or
    // the connection aborted.
    let deadline = Instant::now().checked_add(Duration::from_secs(10)).unwrap();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(line) if line.contains("procmond: stopped") => break,
            Ok(_) => {}
            Err(_) => panic!("procmond did not stop within 10 s of SIGTERM while a read hung"),
        }
    }
    println!("stopped in {:?}", stopping.elapsed());
    assert!(!socket.exists(), "socket left behind");
    // The FUSE server goes: the hung read fails, and the process exits 0.
    drop(fuse);
    assert!(pidfd.wait_exit(WAIT).unwrap(), "procmond did not exit");
    let output = procmond.output_within(WAIT, "procmond");
    assert!(output.status.success(), "{}", output.status);
    let agent = agent.output_within(WAIT, "daemoneye-agent");
    assert_eq!(agent.status.code(), Some(2));
}
