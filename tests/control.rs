//! The control channel over real Unix sockets: a listener in a temporary
//! directory, real peers (threads of this process, and a child process under
//! another uid), real descriptors passed and used.

mod child_support;
mod skip_support;

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use child_support::{Collected, spawn_retrying};
use daemoneye_lib::control::frame::{read_message, write_frame, write_message};
use daemoneye_lib::control::{
    AllowList, ClientFrame, Connector, ControlError, ControlListener, EventSource,
    PROTOCOL_VERSION, RefusalCode, RingOffer, ServerChannel, ServerFrame, SocketOptions,
    accept_client, client_frame, server_frame,
};
use daemoneye_lib::proto::DetectionTask;
use daemoneye_lib::proto::control::{Cancel, ClientHello, Goodbye, TaskAccepted, TaskRequest};

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

fn deadline() -> Option<Instant> {
    Some(Instant::now() + WAIT)
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // Relaxed: only uniqueness of the number matters.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("daemoneye-ctl-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).expect("create temp dir");
        // Reachable (not listable) by anyone, so a child under another uid can
        // traverse it; the socket's own directory is what guards the socket.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o711)).expect("chmod temp dir");
        Self(path)
    }

    fn join(&self, rest: &str) -> PathBuf {
        self.0.join(rest)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

/// A memfd holding `contents`, standing in for a ring segment.
fn memfd_with(contents: &[u8]) -> OwnedFd {
    let fd = rustix::fs::memfd_create("control-test", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    let mut file = File::from(fd);
    file.write_all(contents).expect("write memfd");
    OwnedFd::from(file)
}

/// Runs the server side for one connection: handshake, then a ring offer of
/// one memfd holding `b"ring segment"`.
fn serve_one(listener: &ControlListener) -> Result<ServerChannel, ControlError> {
    let stream = listener
        .accept_timeout(WAIT)?
        .expect("a client connected in time");
    let pending = accept_client(stream, &AllowList::new(), WAIT)?;
    let segment = memfd_with(b"ring segment");
    pending.welcome(&RingOffer {
        ring_bytes: 4096,
        max_frame_bytes: 1024,
        fds: &[segment.as_fd()],
        event_source: EventSource::Polling,
    })
}

#[test]
fn bind_creates_a_private_directory_and_socket_and_removes_it_on_drop() {
    let tmp = TempDir::new("modes");
    let path = tmp.join("run/daemoneye/procmond.sock");
    let listener = ControlListener::bind(&path, &SocketOptions::default()).expect("bind");
    assert_eq!(listener.path(), path);
    assert_eq!(mode(&tmp.join("run/daemoneye")), 0o700, "directory mode");
    assert_eq!(mode(&path), 0o600, "socket mode");
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    drop(listener);
    assert!(!path.exists(), "the socket file is removed on drop");
    let left: Vec<_> = fs::read_dir(tmp.join("run/daemoneye"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?} (the lock file?)");
}

#[test]
fn servers_starting_and_stopping_in_a_loop_never_listen_two_at_once() {
    // A clean stop removes the lock file while holding it: a server that
    // opened the old file meanwhile must see that and lock the new one, so
    // that at no moment two servers hold the socket.
    let tmp = TempDir::new("relock");
    let path = tmp.join("sock/procmond.sock");
    let holders = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (path, holders) = (path.clone(), holders.clone());
            thread::spawn(move || {
                let mut bound = 0;
                for _ in 0..300 {
                    match ControlListener::bind(&path, &SocketOptions::default()) {
                        Ok(listener) => {
                            let before = holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            assert_eq!(before, 0, "two servers held the socket at once");
                            thread::yield_now();
                            holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            drop(listener);
                            bound += 1;
                        }
                        Err(ControlError::AlreadyListening { .. }) => {}
                        Err(other) => panic!("{other}"),
                    }
                }
                bound
            })
        })
        .collect();
    let bound: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(bound > 0);
}

#[test]
fn a_group_gets_0660_on_the_socket_and_can_traverse_a_new_directory() {
    let tmp = TempDir::new("group");
    let path = tmp.join("sockdir/procmond.sock");
    let gid = rustix::process::getegid().as_raw();
    let listener = ControlListener::bind(&path, &SocketOptions { group: Some(gid) }).expect("bind");
    let dir_meta = fs::metadata(tmp.join("sockdir")).unwrap();
    assert_eq!(dir_meta.mode() & 0o7777, 0o710);
    assert_eq!(dir_meta.gid(), gid);
    let sock_meta = fs::symlink_metadata(listener.path()).unwrap();
    assert_eq!(sock_meta.mode() & 0o7777, 0o660);
    assert_eq!(sock_meta.gid(), gid);
}

#[test]
fn a_world_writable_directory_is_refused_and_left_alone() {
    let tmp = TempDir::new("insecure");
    let dir = tmp.join("open");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let err =
        ControlListener::bind(dir.join("procmond.sock"), &SocketOptions::default()).unwrap_err();
    match &err {
        ControlError::UnsafePath { path, problem } => {
            assert_eq!(path, &dir);
            assert!(
                problem.contains("0777") && problem.contains("writable"),
                "{problem}"
            );
        }
        other => panic!("expected UnsafePath, got {other:?}"),
    }
    assert_eq!(mode(&dir), 0o777, "an existing directory is not modified");

    // Nor with the sticky bit (as /tmp has): anyone could take the socket's
    // name, or its lock file's, before us.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
    let err =
        ControlListener::bind(dir.join("procmond.sock"), &SocketOptions::default()).unwrap_err();
    assert!(
        matches!(&err, ControlError::UnsafePath { problem, .. } if problem.contains("1777") && problem.contains("sticky")),
        "{err}"
    );
    assert!(!dir.join("procmond.sock").exists());
}

#[test]
fn a_symbolic_link_as_the_directory_is_refused() {
    let tmp = TempDir::new("symlink");
    let real = tmp.join("real");
    fs::create_dir(&real).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
    let link = tmp.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err =
        ControlListener::bind(link.join("procmond.sock"), &SocketOptions::default()).unwrap_err();
    match &err {
        ControlError::UnsafePath { path, problem } => {
            assert_eq!(path, &link);
            assert!(problem.contains("symbolic link"), "{problem}");
        }
        other => panic!("expected UnsafePath, got {other:?}"),
    }
    assert!(!real.join("procmond.sock").exists());
}

#[test]
fn every_level_created_gets_the_mode_and_group() {
    let tmp = TempDir::new("levels");
    let gid = rustix::process::getegid().as_raw();
    let path = tmp.join("a/b/procmond.sock");
    let _listener =
        ControlListener::bind(&path, &SocketOptions { group: Some(gid) }).expect("bind");
    for level in ["a", "a/b"] {
        let meta = fs::metadata(tmp.join(level)).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o710, "{level}");
        assert_eq!(meta.gid(), gid, "{level}");
    }
}

#[test]
fn a_stale_socket_is_not_removed_while_another_server_holds_the_lock() {
    let tmp = TempDir::new("lock");
    let dir = tmp.join("sock");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.join("procmond.sock");
    drop(UnixListener::bind(&path).unwrap());
    let stale = fs::symlink_metadata(&path).unwrap().ino();
    // Another server in the middle of starting: it holds the lock.
    let lock = File::create(dir.join("procmond.sock.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let err = ControlListener::bind(&path, &SocketOptions::default()).unwrap_err();
    assert!(
        matches!(err, ControlError::AlreadyListening { .. }),
        "{err}"
    );
    assert_eq!(
        fs::symlink_metadata(&path).unwrap().ino(),
        stale,
        "left alone"
    );
    drop(lock);
    let listener = ControlListener::bind(&path, &SocketOptions::default()).expect("lock released");
    let client = thread::spawn(move || UnixStream::connect(path));
    listener
        .accept_timeout(WAIT)
        .unwrap()
        .expect("a connection");
    client.join().unwrap().unwrap();
}

#[test]
fn of_servers_starting_at_once_exactly_one_binds() {
    for round in 0..20 {
        let tmp = TempDir::new("race");
        let path = tmp.join(&format!("sock{round}/procmond.sock"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let starts: Vec<_> = (0..2)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    ControlListener::bind(&path, &SocketOptions::default())
                })
            })
            .collect();
        let results: Vec<_> = starts.into_iter().map(|t| t.join().unwrap()).collect();
        let bound: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(bound.len(), 1, "round {round}: {results:?}");
        for result in &results {
            if let Err(err) = result {
                assert!(
                    matches!(err, ControlError::AlreadyListening { .. }),
                    "{err}"
                );
            }
        }
        UnixStream::connect(&path).expect("the winner listens");
    }
}

#[test]
fn a_stale_socket_is_replaced_but_a_live_one_and_other_files_are_not() {
    let tmp = TempDir::new("stale");
    let path = tmp.join("sock/procmond.sock");

    // Stale: a server that died, leaving its socket file with nobody listening.
    fs::create_dir(tmp.join("sock")).unwrap();
    fs::set_permissions(tmp.join("sock"), fs::Permissions::from_mode(0o700)).unwrap();
    drop(UnixListener::bind(&path).unwrap());
    let refused = UnixStream::connect(&path).expect_err("nobody listens on the stale socket");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let replaced =
        ControlListener::bind(&path, &SocketOptions::default()).expect("stale socket is replaced");

    // Live: a second server on the same path is refused, the first unharmed.
    let err = ControlListener::bind(&path, &SocketOptions::default()).unwrap_err();
    assert!(
        matches!(&err, ControlError::AlreadyListening { path: p } if p == &path),
        "{err}"
    );
    assert!(err.to_string().contains("another procmond is listening"));
    let client = thread::spawn({
        let path = path.clone();
        move || UnixStream::connect(path)
    });
    replaced
        .accept_timeout(WAIT)
        .unwrap()
        .expect("the first server still accepts");
    client.join().unwrap().unwrap();
    drop(replaced);

    // Not a socket: never deleted.
    fs::write(&path, b"precious").unwrap();
    let err = ControlListener::bind(&path, &SocketOptions::default()).unwrap_err();
    assert!(matches!(err, ControlError::UnsafePath { .. }), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[test]
fn drop_leaves_a_socket_that_replaced_ours() {
    let tmp = TempDir::new("replaced");
    let path = tmp.join("sock/procmond.sock");
    let listener = ControlListener::bind(&path, &SocketOptions::default()).unwrap();
    fs::remove_file(&path).unwrap();
    let other = UnixListener::bind(&path).unwrap();
    drop(listener);
    assert!(path.exists(), "someone else's socket must survive our drop");
    drop(other);
}

#[test]
fn accept_timeout_returns_none_when_nobody_comes() {
    let tmp = TempDir::new("accept");
    let listener =
        ControlListener::bind(tmp.join("s/procmond.sock"), &SocketOptions::default()).unwrap();
    let start = Instant::now();
    assert!(
        listener
            .accept_timeout(Duration::from_millis(30))
            .unwrap()
            .is_none()
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn handshake_passes_working_descriptors_and_peer_credentials() {
    let tmp = TempDir::new("handshake");
    let listener =
        ControlListener::bind(tmp.join("s/procmond.sock"), &SocketOptions::default()).unwrap();
    let path = listener.path().to_owned();
    let server = thread::spawn(move || serve_one(&listener));

    let (_channel, welcome) = Connector::new("test-agent")
        .timeout(WAIT)
        .connect(&path)
        .expect("handshake");
    assert_eq!(
        (
            welcome.ring_bytes,
            welcome.max_frame_bytes,
            welcome.fds.len()
        ),
        (4096, 1024, 1)
    );
    let segment = File::from(welcome.fds.into_iter().next().unwrap());
    let mut buf = [0u8; 12];
    segment
        .read_exact_at(&mut buf, 0)
        .expect("read through the passed memfd");
    assert_eq!(&buf, b"ring segment");

    let server_channel = server.join().unwrap().expect("server side");
    let peer = server_channel.peer();
    assert_eq!(peer.pid, std::process::id());
    assert_eq!(peer.uid, rustix::process::geteuid().as_raw());
    assert_eq!(server_channel.client_name(), "test-agent");
}

#[test]
fn tasks_and_replies_cross_and_eof_means_peer_gone() {
    let tmp = TempDir::new("frames");
    let listener =
        ControlListener::bind(tmp.join("s/procmond.sock"), &SocketOptions::default()).unwrap();
    let path = listener.path().to_owned();
    let (tx, rx) = mpsc::channel();
    let server = thread::spawn(move || -> Result<(), ControlError> {
        let mut channel = serve_one(&listener)?;
        loop {
            let frame = channel.recv(deadline()).map(|(body, _)| body);
            let done = frame.is_err();
            if let Ok(client_frame::Body::Task(request)) = &frame {
                let task_id = request
                    .task
                    .as_ref()
                    .map(|t| t.task_id.clone())
                    .unwrap_or_default();
                channel.send(&ServerFrame {
                    body: Some(server_frame::Body::Accepted(TaskAccepted { task_id })),
                })?;
            }
            tx.send(frame).unwrap();
            if done {
                return Ok(());
            }
        }
    });

    let (mut channel, _welcome) = Connector::new("agent").connect(&path).unwrap();
    let task = DetectionTask {
        task_id: "t-1".into(),
        task_type: 2,
        ..Default::default()
    };
    let request = TaskRequest {
        task: Some(task.clone()),
        with_hashes: true,
        interval_ms: Some(25),
        hash_file_attached: false,
        changes: None,
    };
    channel
        .send(&ClientFrame {
            body: Some(client_frame::Body::Task(request.clone())),
        })
        .unwrap();
    match channel.recv(deadline()).unwrap() {
        server_frame::Body::Accepted(accepted) => assert_eq!(accepted.task_id, "t-1"),
        other => panic!("expected TaskAccepted, got {other:?}"),
    }
    channel
        .send(&ClientFrame {
            body: Some(client_frame::Body::Cancel(Cancel {
                task_id: "t-1".into(),
            })),
        })
        .unwrap();
    drop(channel);

    let got = |rx: &mpsc::Receiver<_>| rx.recv_timeout(WAIT).expect("server saw a frame");
    match got(&rx) {
        Ok(client_frame::Body::Task(seen)) => {
            assert_eq!(seen, request);
            assert_eq!(
                seen.task.unwrap().task_type(),
                daemoneye_lib::proto::ProtoTaskType::MonitorProcessTree
            );
        }
        other => panic!("expected the task, got {other:?}"),
    }
    assert!(
        matches!(got(&rx), Ok(client_frame::Body::Cancel(Cancel { task_id })) if task_id == "t-1")
    );
    assert!(
        matches!(got(&rx), Err(ControlError::PeerGone)),
        "closing the socket is peer gone"
    );
    server.join().unwrap().unwrap();
}

/// One server thread handling several connections in turn, as procmond does:
/// a bad client's error ends only that connection.
#[test]
fn bad_frames_end_one_connection_and_the_server_keeps_serving() {
    let tmp = TempDir::new("bad");
    let listener =
        ControlListener::bind(tmp.join("s/procmond.sock"), &SocketOptions::default()).unwrap();
    let path = listener.path().to_owned();
    const CLIENTS: usize = 5;
    let server = thread::spawn(move || {
        let mut outcomes = Vec::new();
        for _ in 0..CLIENTS {
            let outcome = serve_one(&listener)
                .and_then(|mut channel| channel.recv(deadline()).map(|(body, _)| body));
            outcomes.push(outcome);
        }
        outcomes
    });

    // Completes the handshake, writes something bad on the raw socket, and
    // returns what the server answered.
    let raw_client = |send: &dyn Fn(&UnixStream)| -> ControlError {
        let (mut channel, _welcome) = Connector::new("bad").connect(&path).unwrap();
        let raw = UnixStream::from(channel.as_fd().try_clone_to_owned().unwrap());
        send(&raw);
        let err = channel
            .recv(deadline())
            .expect_err("the server answers a bad frame with an error");
        // ...and then closes the connection.
        assert!(matches!(
            channel.recv(deadline()),
            Err(ControlError::PeerGone)
        ));
        err
    };

    // Oversize: a length prefix claiming 2 GiB.
    let e1 = raw_client(&|mut s| s.write_all(&0x8000_0000u32.to_le_bytes()).unwrap());
    // Garbage that is not protobuf.
    let e2 = raw_client(&|s| write_frame(s, &[0xff; 9], &[], deadline()).unwrap());
    // A well-formed but unexpected frame: a second hello.
    let e3 = raw_client(&|s| {
        let hello = ClientHello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "again".into(),
        };
        write_message(
            s,
            &ClientFrame {
                body: Some(client_frame::Body::Hello(hello)),
            },
            &[],
            deadline(),
        )
        .unwrap();
    });
    // Truncated: half a frame, then the client leaves.
    {
        let (channel, _welcome) = Connector::new("truncating").connect(&path).unwrap();
        let stream = UnixStream::from(channel.as_fd().try_clone_to_owned().unwrap());
        (&stream).write_all(&[20, 0, 0, 0, 1, 2, 3]).unwrap();
    }
    // And a well-behaved client after all that.
    let (mut good, welcome) = Connector::new("good")
        .connect(&path)
        .expect("server still serving");
    assert_eq!(welcome.fds.len(), 1);
    good.send(&ClientFrame {
        body: Some(client_frame::Body::Goodbye(Goodbye {
            reason: "bye".into(),
        })),
    })
    .unwrap();

    for (err, needle) in [
        (&e1, "2147483648"),
        (&e2, "malformed"),
        (&e3, "second client hello"),
    ] {
        assert!(matches!(err, ControlError::PeerError { .. }), "{err:?}");
        assert!(
            err.to_string().contains(needle),
            "{err} should mention {needle}"
        );
    }
    let outcomes = server.join().unwrap();
    assert!(
        matches!(
            outcomes[0],
            Err(ControlError::FrameTooLarge {
                len: 0x8000_0000,
                ..
            })
        ),
        "{:?}",
        outcomes[0]
    );
    assert!(
        matches!(outcomes[1], Err(ControlError::Malformed { .. })),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(outcomes[2], Err(ControlError::UnexpectedFrame { .. })),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(
            outcomes[3],
            Err(ControlError::Truncated {
                expected: 24,
                got: 7
            })
        ),
        "{:?}",
        outcomes[3]
    );
    assert!(
        matches!(&outcomes[4], Ok(client_frame::Body::Goodbye(g)) if g.reason == "bye"),
        "{:?}",
        outcomes[4]
    );
}

#[test]
fn a_version_mismatch_is_refused_naming_both_versions() {
    let tmp = TempDir::new("version");
    let listener =
        ControlListener::bind(tmp.join("s/procmond.sock"), &SocketOptions::default()).unwrap();
    let path = listener.path().to_owned();
    let server = thread::spawn(move || {
        let first = listener.accept_timeout(WAIT).unwrap().expect("client");
        let refused = accept_client(first, &AllowList::new(), WAIT).map(|_| ());
        (refused, serve_one(&listener).map(|_| ()))
    });

    let stream = UnixStream::connect(&path).unwrap();
    let hello = ClientHello {
        protocol_version: PROTOCOL_VERSION + 98,
        client_name: "old".into(),
    };
    write_message(
        &stream,
        &ClientFrame {
            body: Some(client_frame::Body::Hello(hello)),
        },
        &[],
        deadline(),
    )
    .unwrap();
    let (reply, _) = read_message::<ServerFrame>(&stream, 0, deadline(), "refusal").unwrap();
    match reply.body {
        Some(server_frame::Body::Refusal(refusal)) => {
            assert_eq!(refusal.code(), RefusalCode::VersionMismatch);
            assert_eq!(refusal.server_protocol_version, PROTOCOL_VERSION);
            let ours = format!("version {PROTOCOL_VERSION}");
            let theirs = format!("version {}", PROTOCOL_VERSION + 98);
            assert!(
                refusal.reason.contains(&ours) && refusal.reason.contains(&theirs),
                "{}",
                refusal.reason
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        read_message::<ServerFrame>(&stream, 0, deadline(), "eof"),
        Err(ControlError::PeerGone)
    ));

    Connector::new("current")
        .connect(&path)
        .expect("the next client is served");
    let (refused, served) = server.join().unwrap();
    assert!(
        matches!(refused, Err(ControlError::VersionMismatch { ours: PROTOCOL_VERSION, theirs }) if theirs == PROTOCOL_VERSION + 98)
    );
    served.unwrap();
}

/// Environment variable telling [`refused_peer_child`] where to connect.
const CHILD_SOCKET_ENV: &str = "DAEMONEYE_CONTROL_TEST_CHILD_SOCKET";
const NOBODY: u32 = 65534;

/// A copy of this test binary in a fresh 0755 directory, so that a child
/// under another uid can execute it even when the build directory is not
/// reachable by that uid (a checkout under `/root`, mode 0700).
struct ExecutableCopy {
    _dir: TempDir,
    path: PathBuf,
}

impl ExecutableCopy {
    fn new() -> Self {
        let dir = TempDir::new("exe");
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).expect("chmod exe dir");
        let path = dir.join("control-test");
        fs::copy(std::env::current_exe().expect("own path"), &path).expect("copy test binary");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod copy");
        Self { _dir: dir, path }
    }
}

/// A child process running the ignored test `name` of this binary as uid
/// and gid [`NOBODY`].
struct NobodyChild {
    child: Collected,
    _exe: ExecutableCopy,
}

impl NobodyChild {
    /// Starts it, or says why it cannot run here (not root; a user namespace
    /// without uid 65534 mapped, where `setuid` fails with `EINVAL`) and
    /// returns `None`, so the calling test is skipped rather than failed.
    fn spawn(name: &str, env: (&str, &Path)) -> Option<Self> {
        if !skip_support::is_root_or_skip(&format!("switching a child to uid {NOBODY}")) {
            return None;
        }
        let exe = ExecutableCopy::new();
        let mut command = Command::new(&exe.path);
        command
            .args([
                "--exact",
                name,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env.0, env.1)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = match spawn_retrying(&mut command) {
            Ok(child) => child,
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                skip_support::skip(&format!("cannot switch to uid {NOBODY} here ({e})"));
                return None;
            }
            Err(e) => panic!("spawn the child as nobody: {e}"),
        };
        Some(Self {
            child: Collected::new(child),
            _exe: exe,
        })
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Its stdout, once it exited successfully within [`WAIT`].
    fn stdout(self) -> String {
        self.child.stdout_within(WAIT)
    }
}

#[test]
fn a_peer_outside_the_allow_list_is_refused_and_the_server_keeps_serving() {
    let tmp = TempDir::new("allow");
    // The group option lets uid nobody (group nogroup) reach the socket, so
    // the refusal comes from the allow-list, not from file permissions.
    let options = SocketOptions {
        group: Some(NOBODY),
    };
    let listener = ControlListener::bind(tmp.join("s/procmond.sock"), &options).unwrap();
    let path = listener.path().to_owned();
    let Some(child) = NobodyChild::spawn("refused_peer_child", (CHILD_SOCKET_ENV, &path)) else {
        return;
    };
    let child_pid = child.pid();
    let server = thread::spawn(move || {
        let first = listener
            .accept_timeout(WAIT)
            .unwrap()
            .expect("the child connected");
        let refused = accept_client(first, &AllowList::new(), WAIT).map(|_| ());
        (refused, serve_one(&listener).map(|_| ()))
    });
    let stdout = child.stdout();
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD: ").map(|(_, report)| report))
        .unwrap_or_else(|| panic!("the child reported no error: {stdout}"));
    assert!(
        line.contains("refused") && line.contains("NOT_ALLOWED"),
        "{line}"
    );
    assert!(line.contains(&format!("uid {NOBODY}")), "{line}");

    // The next, allowed, client is served.
    let (_channel, welcome) = Connector::new("root")
        .connect(&path)
        .expect("server still serving");
    assert_eq!(welcome.fds.len(), 1);
    let (refused, served) = server.join().unwrap();
    assert!(
        matches!(refused, Err(ControlError::NotAllowed { uid: NOBODY, pid }) if pid == child_pid),
        "{refused:?}"
    );
    served.unwrap();
}

#[test]
fn a_server_under_an_untrusted_uid_is_refused_unless_trusted() {
    // The "server" is a child under uid nobody at the other end of the
    // socket; SO_PEERCRED is what the client checks, whoever connected.
    let tmp = TempDir::new("untrusted");
    let options = SocketOptions {
        group: Some(NOBODY),
    };
    let listener = ControlListener::bind(tmp.join("s/procmond.sock"), &options).unwrap();
    let path = listener.path().to_owned();
    let Some(child) = NobodyChild::spawn("impersonator_child", (CHILD_SOCKET_ENV, &path)) else {
        return;
    };
    let first = listener
        .accept_timeout(WAIT)
        .unwrap()
        .expect("the child connected");
    let second = listener
        .accept_timeout(WAIT)
        .unwrap()
        .expect("the child connected twice");
    let err = Connector::new("agent").handshake(first).unwrap_err();
    assert!(
        matches!(err, ControlError::UntrustedServer { uid: NOBODY, pid } if pid == child.pid()),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("uid {NOBODY}")), "{err}");
    // Trusted, the client gets past the check and says hello; this
    // impersonator just hangs up.
    let err = Connector::new("agent")
        .trust_server_uid(NOBODY)
        .timeout(WAIT)
        .handshake(second)
        .unwrap_err();
    assert!(matches!(err, ControlError::PeerGone), "{err:?}");
    assert!(child.stdout().contains("CHILD: done"));
}

/// The child half of the test above: connects twice, holds the second
/// connection until the first is closed, then leaves.
#[test]
#[ignore = "run by a_server_under_an_untrusted_uid_is_refused_unless_trusted"]
fn impersonator_child() {
    use std::io::Read;
    let path = std::env::var_os(CHILD_SOCKET_ENV).expect("run by the parent test");
    let mut first = UnixStream::connect(&path).expect("connect");
    let second = UnixStream::connect(&path).expect("connect again");
    first.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).expect("the client hangs up");
    assert!(rest.is_empty(), "the untrusting client sent nothing");
    drop(second);
    println!("CHILD: done");
}

/// The child half of the test above, run as uid nobody in a separate process.
#[test]
#[ignore = "run by a_peer_outside_the_allow_list_is_refused_and_the_server_keeps_serving"]
fn refused_peer_child() {
    let path = std::env::var_os(CHILD_SOCKET_ENV).expect("run by the parent test");
    assert_eq!(rustix::process::geteuid().as_raw(), NOBODY);
    let err = Connector::new("nobody")
        .timeout(WAIT)
        .connect(path)
        .expect_err("must be refused");
    println!("CHILD: {err}");
    assert!(
        matches!(
            err,
            ControlError::Refused {
                code: RefusalCode::NotAllowed,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A frame read or written while its process takes a signal arrives whole:
/// a signal handled while a socket call that has a timeout waits makes the
/// call fail with `EINTR` (signal(7)), and the frame code calls again
/// instead of failing. In a child process, which installs a handler that
/// does nothing.
#[test]
fn frames_survive_a_signal_mid_wait() {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(child_support::ignored_test_args("signalled_child"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = Collected::new(spawn_retrying(&mut command).expect("spawn the child"));
    let stdout = child.stdout_within(WAIT);
    assert!(stdout.contains("both frames went through"), "{stdout}");
}

extern "C" fn ignore_signal(_: nix::libc::c_int) {}

#[test]
#[ignore = "run by frames_survive_a_signal_mid_wait"]
fn signalled_child() {
    use daemoneye_lib::control::MAX_FRAME_BYTES;
    use daemoneye_lib::control::frame::read_frame;
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    use std::os::unix::thread::JoinHandleExt;

    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe; it is
    // installed in a child process that runs only this test.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.expect("install a SIGUSR1 handler");

    /// Runs `f` in a thread; returns it and its thread id.
    fn spawn_with_tid<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> (thread::JoinHandle<T>, i32) {
        let (tid_tx, tid_rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            f()
        });
        (handle, tid_rx.recv_timeout(WAIT).unwrap())
    }

    /// Once the thread of `handle` (id `tid`) sleeps in system call `nr`
    /// (its state and its `syscall` file in /proc, the kernel's view, are
    /// the only signal of that), sends it a SIGUSR1.
    fn signal_once_blocked<T>(handle: &thread::JoinHandle<T>, tid: i32, nr: nix::libc::c_long) {
        let deadline = Instant::now() + WAIT;
        let syscall = format!("/proc/self/task/{tid}/syscall");
        let stat = format!("/proc/self/task/{tid}/stat");
        loop {
            let call = fs::read_to_string(&syscall).unwrap_or_default();
            if child_support::proc_state(&stat) == Some('S')
                && call.split(' ').next() == Some(&nr.to_string())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the thread never blocked in system call {nr}"
            );
            thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: the thread has not been joined, so its pthread_t is valid.
        let rc = unsafe { nix::libc::pthread_kill(handle.as_pthread_t(), nix::libc::SIGUSR1) };
        assert_eq!(rc, 0, "pthread_kill");
    }

    // A reader waiting for a frame.
    let (a, b) = UnixStream::pair().unwrap();
    let (reader, tid) = spawn_with_tid(move || read_frame(&b, 0, deadline(), "a frame"));
    signal_once_blocked(&reader, tid, nix::libc::SYS_recvmsg);
    write_frame(&a, b"after the signal", &[], deadline()).unwrap();
    let frame = reader
        .join()
        .unwrap()
        .expect("the read went on after EINTR");
    assert_eq!(frame.payload, b"after the signal");

    // A writer waiting for room: a send buffer of a few KiB, a 64 KiB frame.
    // A signal ends a send that moved bytes with a short count, not EINTR:
    // the later ones come while a send waits with nothing moved.
    let (a, b) = UnixStream::pair().unwrap();
    nix::sys::socket::setsockopt(&a, nix::sys::socket::sockopt::SndBuf, &4096).unwrap();
    let (writer, tid) = spawn_with_tid(move || {
        write_frame(&a, &vec![7u8; MAX_FRAME_BYTES], &[], deadline()).map(|()| a)
    });
    for _ in 0..3 {
        signal_once_blocked(&writer, tid, nix::libc::SYS_sendmsg);
    }
    let frame = read_frame(&b, 0, deadline(), "a frame").unwrap();
    assert_eq!(frame.payload.len(), MAX_FRAME_BYTES);
    let _a = writer
        .join()
        .unwrap()
        .expect("the write went on after EINTR");
    println!("both frames went through");
}
