//! The agent library's limits against an in-process server (real sockets,
//! rings, processes): timeouts of any size, a bounded connect, and cancels
//! that stop every kind of task once and are then forgotten.

mod child_support;
mod collector_support;
mod server_support;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use collector_support::{LineReader, Running, TempDir, within_deadline};
use daemoneye_lib::client::{Agent, ClientError, ClientOptions};
use daemoneye_lib::proto::{DetectionTask, ProtoHashCheck, ProtoProcessFilter};
use daemoneye_lib::server::{Server, ServerConfig};
use daemoneye_lib::session::RecordKind;
use server_support::{Raw, Serving};

fn serve(dir: &TempDir, tune: impl FnOnce(&mut ServerConfig)) -> Serving {
    let mut config = ServerConfig::new(dir.join("procmond.sock"));
    tune(&mut config);
    Serving::start(Server::bind(config).unwrap())
}

fn pids(pids: Vec<u32>) -> Option<ProtoProcessFilter> {
    Some(ProtoProcessFilter {
        process_names: vec![],
        pids,
        executable_pattern: None,
    })
}

/// This process's record, as `agent` lists it (a full round trip).
fn this_process(agent: &mut Agent) -> Vec<daemoneye_lib::proto::ProtoProcessRecord> {
    agent
        .enumerate(pids(vec![std::process::id()]), false)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn true_check() -> ProtoHashCheck {
    ProtoHashCheck {
        expected_hash: String::new(),
        hash_algorithm: "sha256".into(),
        executable_path: "/usr/bin/true".into(),
    }
}

#[test]
fn duration_max_timeouts_are_no_deadline_not_a_panic() {
    let dir = TempDir::new("max-timeout");
    let serving = serve(&dir, |_| {});
    let options = ClientOptions {
        timeout: Duration::MAX,
        connect_timeout: Duration::MAX,
        ..ClientOptions::default()
    };
    let mut agent = Agent::connect_with(serving.server.socket_path(), options).unwrap();
    assert_eq!(this_process(&mut agent).len(), 1);
    assert_eq!(
        agent.hash_check(true_check()).unwrap().result.file_path,
        "/usr/bin/true"
    );
    let mut child = Running::spawn(Command::new("/usr/bin/sleep").arg("1000"));
    let stream = agent.monitor(&[child.pid], Duration::ZERO).unwrap();
    stream.cancel().unwrap();
    drop(agent);

    // The agent binary with the largest --duration-s: it runs (prints its
    // header), and is then killed.
    let mut cli = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_daemoneye-agent"))
            .arg("--socket")
            .arg(serving.server.socket_path())
            .args(["monitor", "--pid", &child.pid.to_string()])
            .args(["--duration-s", &u64::MAX.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut lines = LineReader::new(cli.child().stdout.take().unwrap());
    assert!(lines.line().starts_with("EVENT"));
    assert!(lines.line().contains(&child.pid.to_string()));
    assert!(cli.child().try_wait().unwrap().is_none(), "it still runs");
    drop(cli);
    child.child().kill().unwrap();
    serving.stop();
}

#[test]
fn an_agent_refuses_a_ring_whose_frames_exceed_its_limit_and_takes_one_within() {
    let dir = TempDir::new("frame-cap");
    let serving = serve(&dir, |config| {
        config.ring_bytes = 1 << 20;
        config.max_frame_bytes = 256 << 10;
    });
    let capped = |max_frame_bytes| ClientOptions {
        max_frame_bytes,
        ..ClientOptions::default()
    };
    let err = Agent::connect_with(serving.server.socket_path(), capped(128 << 10)).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::FrameTooLarge {
                offered: 262_144,
                max: 131_072
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("262144"), "{err}");
    // At the limit: served.
    let mut agent = Agent::connect_with(serving.server.socket_path(), capped(256 << 10)).unwrap();
    assert_eq!(this_process(&mut agent).len(), 1);
    drop(agent);
    serving.stop();
}

#[test]
fn connect_is_bounded_by_its_timeout_while_the_backlog_is_full() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let dir = TempDir::new("backlog");
    let path = dir.join("full.sock");
    // A listener that never accepts, with the shortest backlog: one
    // waiting connect fills it.
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&listener, &SocketAddrUnix::new(&path).unwrap()).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let _queued = UnixStream::connect(&path).unwrap();
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let started = Instant::now();
    let err = within_deadline(move || Agent::connect_with(&path, options).unwrap_err());
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let _ = listener.as_fd();
}

#[test]
fn queued_tasks_of_every_kind_end_cancelled_and_a_reused_id_runs() {
    let dir = TempDir::new("cancel-queued");
    let serving = serve(&dir, |_| {});
    let mut raw = Raw::connect(serving.server.socket_path());
    let mut child = Running::spawn(Command::new("/usr/bin/sleep").arg("1000"));
    let me = std::process::id();
    // A monitor runs until cancelled; three tasks wait behind it.
    raw.task(
        DetectionTask::new_monitor_process_tree("m", pids(vec![child.pid])),
        Some(10),
    );
    let snapshot = raw.chunk();
    assert_eq!(
        (snapshot.result.task_id.as_str(), snapshot.marker.end),
        ("m", false)
    );
    raw.task(
        DetectionTask::new_enumerate_processes("e", pids(vec![me])),
        None,
    );
    raw.task(
        DetectionTask::new_verify_executable("v", pids(vec![me])),
        None,
    );
    raw.task(DetectionTask::new_hash_check("h", true_check()), None);
    for id in ["e", "v", "h", "m"] {
        raw.cancel(id);
    }
    let monitor = raw.read_to_end("m");
    assert!(
        !monitor.last().unwrap().marker.cancelled,
        "a cancel is a monitor's normal end"
    );
    for id in ["e", "v", "h"] {
        let chunks = raw.read_to_end(id);
        let end = &chunks.last().unwrap();
        assert!(end.marker.cancelled, "{id}: {:?}", end.result);
        assert!(!end.result.success);
        assert!(end.result.processes.is_empty() && end.result.hash_result.is_none());
        assert!(
            end.result
                .error_message
                .as_deref()
                .unwrap()
                .contains("cancelled")
        );
    }
    // The ids again: each cancel was used up, so these run.
    raw.task(
        DetectionTask::new_monitor_process_tree("m", pids(vec![child.pid])),
        Some(10),
    );
    let snapshot = raw.chunk();
    assert_eq!(snapshot.result.task_id, "m");
    assert!(!snapshot.marker.end, "the reused id was cancelled at once");
    child.child().kill().unwrap();
    child.child().wait().unwrap();
    let exited = raw.chunk();
    assert_eq!(
        (exited.result.task_id.as_str(), exited.marker.kind),
        ("m", RecordKind::Exited)
    );
    raw.cancel("m");
    raw.read_to_end("m");
    raw.task(
        DetectionTask::new_enumerate_processes("e", pids(vec![me])),
        None,
    );
    let chunks = raw.read_to_end("e");
    assert!(!chunks.last().unwrap().marker.cancelled);
    assert_eq!(
        chunks
            .iter()
            .map(|c| c.result.processes.len())
            .sum::<usize>(),
        1
    );
    // A cancel of a task that has ended is forgotten too.
    raw.cancel("e");
    raw.task(
        DetectionTask::new_enumerate_processes("e", pids(vec![me])),
        None,
    );
    assert!(!raw.read_to_end("e").last().unwrap().marker.cancelled);
    drop(raw);
    serving.stop();
}

#[test]
fn records_cancel_ends_the_stream_and_the_agent_goes_on() {
    let dir = TempDir::new("records-cancel");
    let serving = serve(&dir, |_| {});
    let mut agent = Agent::connect(serving.server.socket_path()).unwrap();
    let mut records = agent.enumerate(None, false).unwrap();
    records.next().unwrap().unwrap();
    // Stopped by procmond or finished first: either way the stream ends.
    records.cancel().unwrap();
    assert_eq!(this_process(&mut agent).len(), 1);
    drop(agent);
    serving.stop();
}
