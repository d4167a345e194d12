//! The agent library against an in-process server (real sockets, rings,
//! /proc): the server's configuration checks and stall timeout, and the
//! agent's options, timeouts and streams; and against a hand-made procmond
//! (the real listener, handshake and ring) whose result frame lies, to see
//! the agent close its ring on a wrong task id or corrupt bytes.

mod child_support;
mod collector_support;
mod server_support;
mod skip_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use collector_support::{Running, TempDir};
use daemoneye_lib::client::{Agent, ClientError, ClientOptions, MonitorEvent};
use daemoneye_lib::collector::TableConfig;
use daemoneye_lib::control::EventSource;
use daemoneye_lib::proto::{ProtoProcessFilter, ProtoProcessRecord};
use daemoneye_lib::ring::{RingError, WaitStrategy};
use daemoneye_lib::server::{Server, ServerConfig, ServerError};
use daemoneye_lib::session::SessionError;
use server_support::Serving;

const WAIT: Duration = Duration::from_secs(20);

/// The tests of this file run one at a time: the stall test counts the
/// ring mappings of this whole process.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn soon(after: Duration) -> Instant {
    Instant::now().checked_add(after).unwrap()
}

fn only(pid: u32) -> Option<ProtoProcessFilter> {
    Some(ProtoProcessFilter {
        process_names: vec![],
        pids: vec![pid],
        executable_pattern: None,
    })
}

/// This process's record, as `agent` lists it (a full round trip).
fn this_process(agent: &mut Agent) -> Vec<ProtoProcessRecord> {
    agent
        .enumerate(only(std::process::id()), false)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Mappings of ring memfds in this process.
fn ring_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains("memfd:daemoneye-ring"))
        .count()
}

/// A sleeping child to filter on: it starts and ends nothing by itself.
fn sleeper() -> Running {
    Running::spawn(Command::new("/usr/bin/sleep").arg("1000"))
}

#[test]
fn bind_refuses_zero_clients_and_a_bad_ring_without_creating_the_socket() {
    let _serial = serial();
    let dir = TempDir::new("bind");
    let socket = dir.join("procmond.sock");
    let mut config = ServerConfig::new(&socket);
    config.max_clients = 0;
    let err = Server::bind(config).unwrap_err();
    assert!(matches!(err, ServerError::NoClients), "{err}");
    assert_eq!(err.to_string(), "max_clients must be at least 1");

    for (ring_bytes, max_frame_bytes, field) in [
        (1000, 512, "capacity"),
        (64 << 10, 0, "max_frame"),
        (64 << 10, 64 << 10, "max_frame"),
    ] {
        let mut config = ServerConfig::new(&socket);
        config.ring_bytes = ring_bytes;
        config.max_frame_bytes = max_frame_bytes;
        let err = Server::bind(config).unwrap_err();
        assert!(
            matches!(&err, ServerError::Ring(RingError::InvalidConfig { field: f, .. }) if f.contains(field)),
            "{ring_bytes}/{max_frame_bytes}: {err:?}"
        );
        assert!(
            err.to_string().starts_with("invalid ring configuration"),
            "{err}"
        );
    }
    assert!(
        !Path::new(&socket).exists(),
        "a refused config bound a socket"
    );
}

#[test]
fn an_agent_that_stops_reading_is_cut_off_after_the_stall_timeout_and_others_are_served() {
    let _serial = serial();
    let dir = TempDir::new("stall");
    let mut config = ServerConfig::new(dir.join("procmond.sock"));
    // The smallest ring, so a full listing of many long command lines
    // cannot fit, and a short stall timeout.
    config.ring_bytes = 64 << 10;
    config.max_frame_bytes = 16 << 10;
    config.stall_timeout = Duration::from_millis(300);
    let serving = Serving::start(Server::bind(config).unwrap());
    let socket = serving.server.socket_path().to_owned();
    // 64 children with 4 KiB command lines: some 256 KiB of records.
    // (sleep adds up its arguments: 1000 s plus a long-written zero.)
    let long = format!("0.{}", "0".repeat(4094));
    let children: Vec<_> = (0..64)
        .map(|_| Running::spawn(Command::new("/usr/bin/sleep").args(["1000", &long])))
        .collect();

    let baseline = ring_mappings();
    let mut stalled = Agent::connect(&socket).unwrap();
    let mut records = stalled
        .enumerate(None, false)
        .unwrap()
        .with_deadline(soon(WAIT));
    records
        .next()
        .expect("a first record")
        .expect("a first record");
    // This agent now reads nothing while procmond waits for room. Another
    // is served meanwhile, and after.
    let mut other = Agent::connect(&socket).unwrap();
    let mine = this_process(&mut other);
    assert_eq!(mine.len(), 1);
    // procmond gives the stalled connection up after its stall timeout and
    // unmaps that ring: in this process (server and agents both), the two
    // rings' four regions are mapped twice, then the stalled ring's two
    // only once. (Polled: nothing else tells this process when.)
    let before = ring_mappings();
    assert_eq!(before - baseline, 8, "two rings, each mapped by both sides");
    let deadline = soon(WAIT);
    while ring_mappings() > baseline + 6 {
        assert!(
            Instant::now() < deadline,
            "the stalled connection was never cut off ({} mappings, {baseline} before)",
            ring_mappings()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The stalled agent reads on: what procmond wrote before it gave up,
    // then the reason it gave up. (The deadline is far: procmond's stall
    // timeout, not this one, must end the stream.)
    let err = loop {
        match records.next() {
            Some(Ok(_)) => continue,
            Some(Err(err)) => break err,
            None => panic!("the whole listing fit: the stall was never reached"),
        }
    };
    assert!(
        matches!(&err, ClientError::Ended { reason } if reason.contains("stopped this connection's results")),
        "{err:?}"
    );
    drop(records);
    let mine = this_process(&mut other);
    assert_eq!(mine.len(), 1, "the other agent is still served");
    drop((stalled, other, children));
    serving.stop();
}

#[test]
fn connect_with_options_and_the_timeouts_they_set() {
    let _serial = serial();
    let dir = TempDir::new("options");
    let serving =
        Serving::start(Server::bind(ServerConfig::new(dir.join("procmond.sock"))).unwrap());
    let socket = serving.server.socket_path().to_owned();
    let options = ClientOptions {
        timeout: Duration::from_secs(7),
        connect_timeout: Duration::from_secs(3),
        wait: WaitStrategy::Park {
            timeout: Duration::from_millis(50),
        },
        client_name: "options-test".into(),
        max_frame_bytes: 1 << 20,
        trusted_server_uids: Vec::new(),
    };
    let mut agent = Agent::connect_with(&socket, options).unwrap();
    assert_eq!(
        agent.server_pid(),
        std::process::id(),
        "the server runs in this process"
    );
    let me = this_process(&mut agent);
    assert_eq!(me[0].pid, std::process::id());

    // A deadline already passed: the first frame cannot have come (procmond
    // has yet to read the task and walk /proc), so the read times out.
    let err = agent
        .enumerate(None, false)
        .unwrap()
        .with_deadline(Instant::now())
        .next()
        .expect("an item")
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    // The same through set_timeout.
    agent.set_timeout(Duration::ZERO);
    let err = agent
        .enumerate(None, false)
        .unwrap()
        .next()
        .expect("an item")
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    // And the agent is usable after both (their streams are skipped).
    agent.set_timeout(WAIT);
    let me = this_process(&mut agent);
    assert_eq!(me.len(), 1);
    drop(agent);
    serving.stop();
}

#[test]
fn next_event_times_out_and_the_stream_goes_on_and_a_dropped_stream_frees_the_agent() {
    let _serial = serial();
    let dir = TempDir::new("monitor");
    let serving =
        Serving::start(Server::bind(ServerConfig::new(dir.join("procmond.sock"))).unwrap());
    let mut agent = Agent::connect(serving.server.socket_path()).unwrap();
    let mut child = sleeper();
    let pid = child.pid;
    {
        let mut stream = agent.monitor(&[pid], Duration::from_millis(20)).unwrap();
        let first = stream.next_event(soon(WAIT)).unwrap();
        assert!(
            matches!(&first, Some(MonitorEvent::Snapshot(r)) if r.pid == pid),
            "{first:?}"
        );
        // A sleeping process with no children: nothing happens.
        let err = stream
            .next_event(soon(Duration::from_millis(200)))
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        // The stream is still usable: the exit arrives.
        child.child().kill().unwrap();
        child.child().wait().unwrap();
        let exited = loop {
            match stream.next_event(soon(WAIT)).unwrap() {
                Some(MonitorEvent::Exited(r)) => break r,
                Some(_) => {}
                None => panic!("the stream ended"),
            }
        };
        assert_eq!(exited.pid, pid);
    } // dropped live, without cancel
    let me = this_process(&mut agent);
    assert_eq!(
        me.len(),
        1,
        "the agent is usable after dropping a live stream"
    );
    drop(agent);
    serving.stop();
}

/// What a lying procmond saw after its lie.
struct LieSeen {
    /// The id of the agent's task the lie answered.
    task_id: String,
    /// Whether the agent had closed the ring when the test asked.
    ring_closed: bool,
    /// The next control frame after the task: the agent's goodbye, or
    /// another task if the agent went on using the connection.
    next_frame: &'static str,
}

/// A hand-made procmond (the real listener, handshake and ring) that
/// answers the agent's first task with one frame of `lie(task_id)`'s bytes,
/// marked END. It reports what it saw once `check` says the agent has had
/// its error, and once the agent has gone.
struct LyingProcmond {
    socket: std::path::PathBuf,
    check: std::sync::mpsc::Sender<()>,
    seen: std::sync::mpsc::Receiver<LieSeen>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LyingProcmond {
    fn start(dir: &TempDir, lie: fn(&str) -> Vec<u8>) -> LyingProcmond {
        use daemoneye_lib::control::{
            AllowList, ControlListener, EventSource, RingOffer, SocketOptions, accept_client,
            client_frame,
        };
        use daemoneye_lib::ring::{Producer, RingConfig};
        use daemoneye_lib::session::{Marker, RecordKind};
        use std::os::fd::AsFd;

        let socket = dir.join("procmond.sock");
        let listener = ControlListener::bind(&socket, &SocketOptions::default()).unwrap();
        let (check, checked) = std::sync::mpsc::channel();
        let (report, seen) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let stream = listener.accept_timeout(WAIT).unwrap().expect("an agent");
            let pending = accept_client(stream, &AllowList::new(), WAIT).unwrap();
            let (mut producer, fds) =
                Producer::create(&RingConfig::new(64 << 10).with_max_frame(4096)).unwrap();
            let mut channel = pending
                .welcome(&RingOffer {
                    ring_bytes: producer.capacity() as u64,
                    max_frame_bytes: producer.max_frame() as u32,
                    fds: &[fds.data.as_fd(), fds.control.as_fd()],
                    event_source: EventSource::Polling,
                })
                .unwrap();
            let frame_name = |body| match body {
                client_frame::Body::Task(_) => "a task",
                client_frame::Body::Goodbye(_) => "a goodbye",
                _ => "another frame",
            };
            let task_id = match channel.recv(Some(soon(WAIT))).unwrap().0 {
                client_frame::Body::Task(request) => request.task.unwrap().task_id,
                other => panic!("expected a task, got {}", frame_name(other)),
            };
            let end = Marker {
                end: true,
                kind: RecordKind::Result,
                cancelled: false,
                full: false,
            };
            producer
                .write(&lie(&task_id), end.to_flags(), soon(WAIT))
                .unwrap();
            checked.recv_timeout(WAIT).expect("the test's check");
            let ring_closed = producer.is_closed();
            let next_frame = frame_name(channel.recv(Some(soon(WAIT))).unwrap().0);
            let _ = report.send(LieSeen {
                task_id,
                ring_closed,
                next_frame,
            });
        });
        LyingProcmond {
            socket,
            check,
            seen,
            thread: Some(thread),
        }
    }

    /// What it saw; `agent` is dropped after the check (its goodbye ends
    /// the lying procmond's wait).
    fn seen(mut self, agent: Agent) -> LieSeen {
        self.check.send(()).unwrap();
        drop(agent);
        match self.seen.recv_timeout(WAIT) {
            Ok(seen) => seen,
            // The thread panicked: its join says how.
            Err(_) => {
                self.thread.take().unwrap().join().unwrap();
                panic!("the lying procmond ended without a report");
            }
        }
    }
}

/// A valid END frame of one record for `task_id`.
fn result_bytes(task_id: &str) -> Vec<u8> {
    use prost::Message;
    let record = ProtoProcessRecord {
        pid: 1,
        name: "init".into(),
        ..Default::default()
    };
    daemoneye_lib::proto::DetectionResult::success(task_id, vec![record]).encode_to_vec()
}

/// Checks what a lie did: the agent got `err` (already matched by the
/// caller), closed the ring, and the connection is unusable: the next call
/// fails at once as procmond gone, and nothing more is sent but the goodbye.
fn assert_the_ring_was_closed(mut agent: Agent, procmond: LyingProcmond) -> String {
    let again = agent.enumerate(None, false).err();
    assert!(
        matches!(&again, Some(ClientError::PeerGone { detail }) if detail.contains("closed the ring")),
        "a call after a corrupt stream: {again:?}"
    );
    let seen = procmond.seen(agent);
    assert!(seen.ring_closed, "the agent did not close the ring");
    assert_eq!(
        seen.next_frame, "a goodbye",
        "the agent sent more tasks after its ring broke"
    );
    seen.task_id
}

/// The error the first item of an enumerate ends in (bounded by [`WAIT`]).
fn first_item_error(agent: &mut Agent) -> ClientError {
    agent
        .enumerate(None, false)
        .unwrap()
        .with_deadline(soon(WAIT))
        .next()
        .expect("an item")
        .unwrap_err()
}

#[test]
fn a_result_for_another_task_is_wrong_task_and_closes_the_ring() {
    let _serial = serial();
    let dir = TempDir::new("wrong-task");
    let procmond = LyingProcmond::start(&dir, |_| result_bytes("someone-else\u{7}"));
    let mut agent = Agent::connect(&procmond.socket).unwrap();
    let err = first_item_error(&mut agent);
    let expected = match &err {
        ClientError::Corrupt(SessionError::WrongTask { expected, got }) => {
            assert_eq!(got, "someone-else\u{7}");
            expected.clone()
        }
        other => panic!("expected WrongTask, got {other:?}"),
    };
    let task_id = assert_the_ring_was_closed(agent, procmond);
    assert_eq!(expected, task_id, "the error names the task being read");
    assert!(
        err.to_string()
            .starts_with("corrupt result stream: result frame for task"),
        "{err}"
    );
}

#[test]
fn corrupt_bytes_in_a_result_frame_are_corrupt_and_close_the_ring() {
    let _serial = serial();
    let dir = TempDir::new("corrupt");
    // This task's result, its last byte cut off: the record's last field
    // runs past the frame.
    let procmond = LyingProcmond::start(&dir, |task_id| {
        let mut bytes = result_bytes(task_id);
        bytes.pop();
        bytes
    });
    let mut agent = Agent::connect(&procmond.socket).unwrap();
    let err = first_item_error(&mut agent);
    assert!(
        matches!(&err, ClientError::Corrupt(SessionError::Decode(_))),
        "expected a decode error, got {err:?}"
    );
    assert_the_ring_was_closed(agent, procmond);
}

/// Threads of this process in the real-time class `SCHED_FIFO` (the
/// `policy` field, 41st of each thread's `stat`).
fn realtime_threads() -> usize {
    let mut fifo = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended
        };
        // Fields after the name (which may hold anything, up to its last
        // `)`) start at the 3rd.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let policy: u32 = after.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        fifo += usize::from(policy == 1);
    }
    fifo
}

/// Waits (bounded) until `realtime_threads()` is `want`.
fn until_realtime_threads(want: usize, what: &str) {
    let deadline = soon(WAIT);
    while realtime_threads() != want {
        assert!(
            Instant::now() < deadline,
            "{what}: {} real-time threads, not {want}",
            realtime_threads()
        );
        // Polling a state nothing signals, bounded by the deadline.
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_monitor_stream_runs_real_time_while_events_feed_it_and_gives_it_back_after() {
    let _serial = serial();
    if !skip_support::is_root_or_skip("a real-time thread (CAP_SYS_NICE)") {
        return;
    }
    let dir = TempDir::new("realtime");
    let serving =
        Serving::start(Server::bind(ServerConfig::new(dir.join("procmond.sock"))).unwrap());
    let mut agent = Agent::connect(serving.server.socket_path()).unwrap();
    assert_eq!(agent.event_source(), EventSource::Connector);
    // The event thread alone.
    until_realtime_threads(1, "before the monitor");
    {
        let mut stream = agent.monitor(&[], Duration::ZERO).unwrap();
        assert!(matches!(
            stream.next_event(soon(WAIT)).unwrap(),
            Some(MonitorEvent::Snapshot(_))
        ));
        until_realtime_threads(2, "while the monitor streams");
        stream.cancel().unwrap();
    }
    // The worker thread serves other tasks as an ordinary thread again.
    until_realtime_threads(1, "after the monitor");
    assert_eq!(this_process(&mut agent).len(), 1);
    drop(agent);
    serving.stop();

    // A polling monitor scans `/proc` on its thread: never real-time.
    let mut config = ServerConfig::new(dir.join("polling.sock"));
    config.table = TableConfig {
        use_connector: false,
        ..TableConfig::default()
    };
    let serving = Serving::start(Server::bind(config).unwrap());
    let mut agent = Agent::connect(serving.server.socket_path()).unwrap();
    assert_eq!(agent.event_source(), EventSource::Polling);
    until_realtime_threads(0, "polling, before the monitor");
    {
        let mut stream = agent
            .monitor(&[std::process::id()], Duration::ZERO)
            .unwrap();
        // The snapshot is taken before any of it is sent.
        let first = stream.next_event(soon(WAIT)).unwrap();
        assert!(
            matches!(first, Some(MonitorEvent::Snapshot(_))),
            "{first:?}"
        );
        let other = sleeper();
        // The stream's loop has scanned once it reports the new child.
        loop {
            match stream.next_event(soon(WAIT)).unwrap() {
                Some(MonitorEvent::Started(r)) if r.pid == other.pid => break,
                Some(_) => {}
                None => panic!("the stream ended"),
            }
        }
        assert_eq!(realtime_threads(), 0, "a polling monitor ran real-time");
        stream.cancel().unwrap();
    }
    drop(agent);
    serving.stop();
}
