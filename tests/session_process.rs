//! A result stream between two real processes: a child (this test binary,
//! run again) creates the ring, passes the consumer's descriptors over a
//! Unix socket and writes a 10,000-record result; the parent reads it and
//! checks it arrived complete, in order, and in many chunks.

mod child_support;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use child_support::Collected;
use daemoneye_lib::proto::ProtoProcessRecord;
use daemoneye_lib::ring::{Consumer, ConsumerFds, Producer, RingConfig};
use daemoneye_lib::session::{RecordKind, ResultWriter, read_chunk};
use daemoneye_lib::sys::socket::{recv_with_fds, send_with_fds, set_accept_timeout};

/// Every wait in this file ends by then.
const WAIT: Duration = Duration::from_secs(30);
/// Records in the result.
const RECORDS: u32 = 10_000;
/// The task the result answers.
const TASK_ID: &str = "t-10000";
/// Environment variable telling [`ring_writer_child`] where to connect; its
/// presence is what makes that test the child.
const CHILD_SOCKET_ENV: &str = "DAEMONEYE_SESSION_PROCESS_CHILD_SOCKET";

/// The record of pid `pid`: varied names, paths and command lines (0 to 6
/// arguments), so the result spans many 16 KiB frames.
fn record(pid: u32) -> ProtoProcessRecord {
    ProtoProcessRecord {
        pid,
        ppid: Some(pid / 2),
        name: format!("proc-{pid}"),
        executable_path: Some(format!("/usr/lib/app-{}/bin/proc", pid % 97)),
        command_line: (0..pid % 7)
            .map(|arg| format!("--option-{arg}={pid}"))
            .collect(),
        start_time: Some(1_700_000_000 + i64::from(pid)),
        cpu_usage: Some(f64::from(pid % 100) / 4.0),
        memory_usage: Some(u64::from(pid) * 4096),
        executable_hash: None,
        hash_algorithm: None,
        user_id: Some((pid % 3).to_string()),
        accessible: pid % 5 != 0,
        file_exists: true,
        collection_time: 1_700_000_000_000,
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("daemoneye-session-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The child process, reaped by a thread that collects its output.
struct Child(Collected);

impl Child {
    /// Runs the ignored test `name` of this binary with `socket` in
    /// [`CHILD_SOCKET_ENV`].
    fn spawn(name: &str, socket: &Path) -> Child {
        let child = Command::new(std::env::current_exe().expect("own path"))
            .args([
                "--exact",
                name,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SOCKET_ENV, socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        Child(Collected::new(child))
    }

    /// Its stdout, once it exited successfully within [`WAIT`]; killed and
    /// failed otherwise.
    fn stdout(self) -> String {
        self.0.stdout_within(WAIT)
    }

    fn kill(&self) {
        self.0.kill();
    }
}

/// Accepts the child's connection and receives the ring's two descriptors.
fn receive_fds(listener: &UnixListener, child: &Child) -> ConsumerFds {
    set_accept_timeout(listener, Some(WAIT)).expect("accept timeout");
    let stream = match listener.accept() {
        Ok((stream, _)) => stream,
        Err(e) => {
            child.kill();
            panic!("the child did not connect within {WAIT:?}: {e}");
        }
    };
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut byte = [0u8; 1];
    let (n, fds) = recv_with_fds(&stream, &mut byte, 2).unwrap_or_else(|e| {
        child.kill();
        panic!("no descriptors from the child: {e}")
    });
    assert_eq!((n, fds.len()), (1, 2), "one byte carrying two descriptors");
    let mut fds = fds.into_iter();
    ConsumerFds {
        data: fds.next().expect("data fd"),
        control: fds.next().expect("control fd"),
    }
}

#[test]
fn a_ten_thousand_record_result_crosses_processes_in_chunks_complete_and_in_order() {
    let dir = TempDir::new();
    let socket = dir.0.join("ring.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let child = Child::spawn("ring_writer_child", &socket);
    let fds = receive_fds(&listener, &child);
    let mut consumer = Consumer::attach(fds, RingConfig::new(64 << 10).wait).expect("attach");

    let deadline = Instant::now() + WAIT;
    let mut records = Vec::new();
    let mut chunks = 0u64;
    loop {
        let chunk = match read_chunk(&mut consumer, deadline) {
            Ok(chunk) => chunk,
            Err(e) => {
                child.kill();
                panic!("chunk {chunks}: {e}");
            }
        };
        chunks += 1;
        assert_eq!(chunk.result.task_id, TASK_ID);
        assert!(chunk.result.success, "{:?}", chunk.result.error_message);
        assert_eq!(chunk.marker.kind, RecordKind::Result);
        let end = chunk.marker.end;
        records.extend(chunk.result.processes);
        if end {
            break;
        }
    }

    assert_eq!(records.len(), RECORDS as usize, "every record arrived");
    for (expected, got) in (0..RECORDS).zip(&records) {
        assert_eq!(
            *got,
            record(expected),
            "record {expected} in place and intact"
        );
    }
    assert!(chunks > 1, "the result crossed in one chunk");
    // The child counted the same frames and truncated nothing.
    let stdout = child.stdout();
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD: ").map(|(_, report)| report))
        .unwrap_or_else(|| panic!("the child reported nothing: {stdout}"));
    assert_eq!(
        line,
        format!("frames={chunks} records={RECORDS} truncated=0"),
        "{stdout}"
    );
}

/// The child half of the test above, in its own process: creates the ring
/// (64 KiB, 16 KiB frames, so the writer waits for the reader many times),
/// sends the consumer's descriptors, writes the result and reports what it
/// sent.
#[test]
#[ignore = "run by a_ten_thousand_record_result_crosses_processes_in_chunks_complete_and_in_order"]
fn ring_writer_child() {
    let path = std::env::var_os(CHILD_SOCKET_ENV).expect("run by the parent test");
    let stream = UnixStream::connect(path).expect("connect to the parent");
    let config = RingConfig::new(64 << 10).with_max_frame(16 << 10);
    let (mut producer, fds) = Producer::create(&config).expect("create the ring");
    let sent = send_with_fds(&stream, b"R", &[fds.data.as_fd(), fds.control.as_fd()])
        .expect("send the descriptors");
    assert_eq!(sent, 1);
    drop(fds);

    let mut writer = ResultWriter::new(&mut producer, TASK_ID, WAIT);
    for pid in 0..RECORDS {
        writer
            .push(RecordKind::Result, record(pid))
            .expect("push a record");
    }
    let stats = writer.finish().expect("finish the stream");
    println!(
        "CHILD: frames={} records={} truncated={}",
        stats.frames, stats.records, stats.truncated
    );
}
