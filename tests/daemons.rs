//! procmond and daemoneye-agent as real processes: the `procmond` binary,
//! the agent through the library and through the `daemoneye-agent` binary,
//! real child processes, files, hashes, sockets and shared memory.

mod child_support;
mod server_support;
mod skip_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use child_support::{Collected, spawn_retrying};
use daemoneye_lib::client::{Agent, ClientError, MonitorEvent};
use daemoneye_lib::control::frame::{read_message, write_message};
use daemoneye_lib::control::{ClientFrame, RefusalCode, ServerFrame, client_frame, server_frame};
use daemoneye_lib::control::{Connector, ControlError, EventSource, PROTOCOL_VERSION};
use daemoneye_lib::proto::DetectionTask;
use daemoneye_lib::proto::control::{ClientHello, TaskRequest};
use daemoneye_lib::proto::{ProtoHashCheck, ProtoProcessFilter, ProtoProcessRecord};
use daemoneye_lib::ring::{Consumer, ConsumerFds, WaitStrategy};
use daemoneye_lib::server::{Server, ServerConfig};
use daemoneye_lib::sys::pidfd::PidFd;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use server_support::{Raw, Serving};

const WAIT: Duration = Duration::from_secs(20);
const NOBODY: u32 = 65534;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The lines `reader` yields, read by a thread, so that every wait for one
/// has a deadline ([`next_line`]).
fn line_channel(reader: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The next line from `lines` within [`WAIT`], naming `what` if none came.
fn next_line(lines: &Receiver<String>, what: &str) -> String {
    lines
        .recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("no {what} line within {WAIT:?}: {e}"))
}

/// A private directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("de-{tag}-{}", unique()));
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running procmond binary with its stderr log collected line by line.
struct Procmond {
    child: Option<Child>,
    socket: PathBuf,
    lines: Receiver<String>,
    log: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl Procmond {
    fn start(args: &[&str]) -> Procmond {
        Self::start_under(&[], args)
    }

    /// procmond run by `wrapper` (a command and its arguments that runs
    /// the rest of its command line, such as `unshare --user`).
    fn start_under(wrapper: &[&str], args: &[&str]) -> Procmond {
        Self::start_at(wrapper, true, args)
    }

    /// procmond with its socket in a temporary directory, or, without
    /// `own_socket`, at its default path.
    fn start_at(wrapper: &[&str], own_socket: bool, args: &[&str]) -> Procmond {
        let dir = TempDir::new("procmond");
        let socket = if own_socket {
            dir.0.join("run/procmond.sock")
        } else {
            PathBuf::from("/run/daemoneye/procmond.sock")
        };
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command
                    .args(wrapper_args)
                    .arg(env!("CARGO_BIN_EXE_procmond"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_procmond")),
        };
        if own_socket {
            command.arg("--socket").arg(&socket);
        }
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn procmond");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line.clone() + "\n"));
                let _ = tx.send(line);
            }
        });
        let mut procmond = Procmond {
            child: Some(child),
            socket,
            lines,
            log,
            _dir: dir,
        };
        procmond.wait_log("procmond listening");
        procmond
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for a log line containing `needle` (a signal procmond gives).
    fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "procmond logged no {needle:?} within {WAIT:?}:\n{}",
                    self.log.lock().unwrap()
                ),
            }
        }
    }

    fn agent(&self) -> Agent {
        Agent::connect(&self.socket).expect("connect to procmond")
    }

    /// SIGTERM: exits 0 within the deadline and removes its socket.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let pidfd = PidFd::open(child.id()).unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        assert!(pidfd.wait_exit(WAIT).unwrap(), "procmond ignored SIGTERM");
        let status = child.wait().unwrap();
        assert!(status.success(), "procmond exited with {status}");
        assert!(!self.socket.exists(), "socket left behind");
    }
}

impl Drop for Procmond {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A child that sleeps until killed, with a unique argument; killed and
/// reaped on drop.
struct Sleeper {
    child: Child,
    arg: String,
}

impl Sleeper {
    fn spawn(program: &Path) -> Sleeper {
        // GNU sleep adds its arguments: 1000 s plus a unique fraction.
        let arg = format!("0.{}", unique().replace('-', ""));
        let child = spawn_retrying(Command::new(program).args(["1000", &arg])).unwrap();
        Sleeper { child, arg }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Enumerates this sleeper until procmond shows it exec'd (its own
    /// command line), failing after [`WAIT`]. `spawn` returns once the
    /// kernel has begun the exec, before it reports the exec to procmond's
    /// table: an enumerate at once may still see the forked test binary.
    fn seen_by(&self, agent: &mut Agent) -> ProtoProcessRecord {
        seen_as(agent, self.pid(), "the sleeper exec'd", |record| {
            record.command_line.contains(&self.arg)
        })
    }
}

/// Enumerates `pid` until procmond's record of it is `what` (`is` says),
/// failing after [`WAIT`]: procmond's table learns of an exec a little
/// after the process runs its new image.
fn seen_as(
    agent: &mut Agent,
    pid: u32,
    what: &str,
    is: impl Fn(&ProtoProcessRecord) -> bool,
) -> ProtoProcessRecord {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = collect(agent, filter(&[], &[pid], None));
        match found.as_slice() {
            [record] if is(record) => return record.clone(),
            _ if Instant::now() >= deadline => {
                panic!("procmond never showed {pid} as {what}: {found:?}")
            }
            // No signal says the table caught up; it does so within
            // milliseconds.
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of the agent binary in a fresh 0755 directory, so another uid can
/// run it even when the checkout sits under a 0700 directory such as /root.
/// Removed on drop, with its directory.
struct PublicAgent {
    path: PathBuf,
    _dir: TempDir,
}

impl PublicAgent {
    fn new() -> PublicAgent {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("agent-bin");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.0.join("daemoneye-agent");
        std::fs::copy(env!("CARGO_BIN_EXE_daemoneye-agent"), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        PublicAgent { path, _dir: dir }
    }
}

/// Runs the agent binary (as uid nobody, from `public`, if given) within
/// the deadline.
fn agent_cli(socket: &Path, args: &[&str], public: Option<&PublicAgent>) -> Output {
    let mut command = match public {
        Some(public) => {
            let mut command = Command::new(&public.path);
            command.uid(NOBODY).gid(NOBODY);
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_daemoneye-agent")),
    };
    command.arg("--socket").arg(socket).args(args);
    let child = spawn_retrying(command.stdout(Stdio::piped()).stderr(Stdio::piped())).unwrap();
    Collected::new(child).output_within(WAIT, &format!("daemoneye-agent {args:?}"))
}

/// Runs `command` to its end within [`WAIT`] (killed and failed, naming
/// `what`, otherwise) and returns its output.
fn output_within(command: &mut Command, what: &str) -> Output {
    let child = spawn_retrying(command.stdout(Stdio::piped()).stderr(Stdio::piped()))
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    Collected::new(child).output_within(WAIT, what)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256sum(path: &Path) -> String {
    let out = output_within(Command::new("sha256sum").arg(path), "sha256sum");
    assert!(out.status.success());
    text(&out.stdout)[..64].to_owned()
}

fn filter(names: &[&str], pids: &[u32], pattern: Option<&str>) -> Option<ProtoProcessFilter> {
    Some(ProtoProcessFilter {
        process_names: names.iter().map(|s| s.to_string()).collect(),
        pids: pids.to_vec(),
        executable_pattern: pattern.map(str::to_owned),
    })
}

fn collect(agent: &mut Agent, filter: Option<ProtoProcessFilter>) -> Vec<ProtoProcessRecord> {
    agent
        .enumerate(filter, false)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// VERIFY_EXECUTABLE of one pid, collected.
fn verified(agent: &mut Agent, pid: u32) -> Vec<ProtoProcessRecord> {
    agent
        .verify(filter(&[], &[pid], None))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn enumerate_finds_a_child_and_filters_select_exactly() {
    let procmond = Procmond::start(&[]);
    let sleeper = Sleeper::spawn(Path::new("/usr/bin/sleep"));
    let mut agent = procmond.agent();
    sleeper.seen_by(&mut agent);

    let all = collect(&mut agent, None);
    let found: Vec<_> = all
        .iter()
        .filter(|r| r.command_line.contains(&sleeper.arg))
        .collect();
    assert_eq!(found.len(), 1, "{all:#?}");
    let record = found[0];
    assert_eq!(record.pid, sleeper.pid());
    assert_eq!(record.ppid, Some(std::process::id()));
    assert_eq!(record.name, "sleep");
    assert_eq!(
        record.command_line,
        ["/usr/bin/sleep", "1000", sleeper.arg.as_str()]
    );
    assert_eq!(record.executable_path.as_deref(), Some("/usr/bin/sleep"));
    assert!(all.len() > 3);

    // By pid: exactly that process.
    let by_pid = collect(&mut agent, filter(&[], &[sleeper.pid()], None));
    assert_eq!(
        by_pid.iter().map(|r| r.pid).collect::<Vec<_>>(),
        [sleeper.pid()]
    );
    // By name: every sleep, and only sleeps.
    let by_name = collect(&mut agent, filter(&["sleep"], &[], None));
    assert!(by_name.iter().any(|r| r.pid == sleeper.pid()));
    assert!(by_name.iter().all(|r| r.name == "sleep"), "{by_name:#?}");
    // By glob: only executables matching it.
    let by_glob = collect(&mut agent, filter(&[], &[], Some("/usr/bin/sl*p")));
    assert!(by_glob.iter().any(|r| r.pid == sleeper.pid()));
    assert!(
        by_glob
            .iter()
            .all(|r| r.executable_path.as_deref() == Some("/usr/bin/sleep"))
    );
    let none = collect(&mut agent, filter(&[], &[], Some("/nonexistent/**")));
    assert!(none.is_empty());

    // The CLI: one JSON object per line with the schema's field names.
    let pid = sleeper.pid().to_string();
    let out = agent_cli(
        &procmond.socket,
        &["enumerate", "--pid", &pid, "--format", "json"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<_> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let json: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(json["pid"], sleeper.pid());
    assert_eq!(json["executable_path"], "/usr/bin/sleep");
    assert_eq!(json["command_line"][2], sleeper.arg.as_str());
    let out = agent_cli(&procmond.socket, &["enumerate", "--name", "sleep"], None);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(&sleeper.arg));

    drop(agent);
    procmond.stop();
}

#[test]
fn hash_check_and_verify_agree_with_sha256sum_and_flag_a_deleted_binary() {
    let procmond = Procmond::start(&[]);
    let dir = TempDir::new("bin");
    let copy = dir.0.join("sleepcopy");
    std::fs::copy("/usr/bin/sleep", &copy).unwrap();
    let want = sha256sum(&copy);
    let mut agent = procmond.agent();

    let check = |expected: &str| ProtoHashCheck {
        expected_hash: expected.into(),
        hash_algorithm: "sha256".into(),
        executable_path: copy.to_string_lossy().into_owned(),
    };
    let report = agent.hash_check(check("")).unwrap();
    assert_eq!(report.result.hash_value, want);
    assert_eq!(report.matched, None);
    assert_eq!(
        agent
            .hash_check(check(&want.to_uppercase()))
            .unwrap()
            .matched,
        Some(true)
    );
    let other = sha256sum(Path::new("/usr/bin/true"));
    assert_eq!(
        agent.hash_check(check(&other)).unwrap().matched,
        Some(false)
    );

    // The CLI's exit codes: 0 match or nothing expected, 1 mismatch, 2 error.
    let path = copy.to_string_lossy().into_owned();
    let run = |args: &[&str]| agent_cli(&procmond.socket, args, None);
    let out = run(&["hash-check", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&want));
    assert_eq!(
        run(&["hash-check", &path, "--expected", &want])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        run(&["hash-check", &path, "--expected", &other])
            .status
            .code(),
        Some(1)
    );
    let missing = dir.0.join("missing").to_string_lossy().into_owned();
    let out = run(&["hash-check", &missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no such file"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        run(&["hash-check", &path, "--expected", "xyz"])
            .status
            .code(),
        Some(2)
    );

    // A running copy whose file is then deleted: hashed as it runs, flagged.
    let sleeper = Sleeper::spawn(&copy);
    sleeper.seen_by(&mut agent);
    let records = verified(&mut agent, sleeper.pid());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].executable_hash.as_deref(), Some(want.as_str()));
    assert_eq!(records[0].hash_algorithm.as_deref(), Some("sha256"));
    assert!(records[0].file_exists);
    // ENUMERATE with hashes, over the wire and through the CLI: the same.
    let hashed: Vec<ProtoProcessRecord> = agent
        .enumerate(filter(&[], &[sleeper.pid()], None), true)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(hashed.len(), 1);
    assert_eq!(hashed[0].executable_hash.as_deref(), Some(want.as_str()));
    let pid = sleeper.pid().to_string();
    let out = run(&["enumerate", "--pid", &pid, "--hash", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(json["executable_hash"], want.as_str());
    assert_eq!(json["hash_algorithm"], "sha256");
    // --exe-pattern selects it by its image's path.
    let pattern = format!("{}/sleep*", dir.0.display());
    let out = run(&["enumerate", "--exe-pattern", &pattern, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pids: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["pid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(pids, [u64::from(sleeper.pid())]);
    std::fs::remove_file(&copy).unwrap();
    let records = verified(&mut agent, sleeper.pid());
    assert_eq!(records[0].executable_hash.as_deref(), Some(want.as_str()));
    assert!(!records[0].file_exists, "a deleted image must be flagged");
    let pid = sleeper.pid().to_string();
    let out = agent_cli(
        &procmond.socket,
        &["verify", "--pid", &pid, "--format", "json"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(json["file_exists"], false);
    assert_eq!(json["executable_hash"], want.as_str());

    drop(agent);
    procmond.stop();
}

#[test]
fn a_peer_outside_the_allow_list_is_refused_and_procmond_keeps_serving() {
    if !skip_support::is_root_or_skip(&format!("running an agent as uid {NOBODY}")) {
        return;
    }
    let Some(group) = skip_support::group_name_or_skip(NOBODY) else {
        return;
    };
    // The group lets nobody reach the socket, so the allow-list refuses it.
    let mut procmond = Procmond::start(&["--group", &group]);
    // The test's temp dir must be traversable by nobody.
    use std::os::unix::fs::PermissionsExt;
    let dir = procmond.socket.parent().unwrap().parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = PublicAgent::new();
    let out = agent_cli(&procmond.socket, &["enumerate"], Some(&nobody));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains(&format!("uid {NOBODY}")), "{stderr}");
    assert!(stderr.contains("NOT_ALLOWED"), "{stderr}");
    procmond.wait_log("connection refused");
    // Still serving.
    let mut agent = procmond.agent();
    assert!(!collect(&mut agent, None).is_empty());
    drop(agent);
    procmond.stop();
}

/// Writes `contents` to `path` with `mode`.
fn file_with_mode(path: &Path, contents: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `daemoneye-agent hash-check PATH` as nobody: hashed (the digest), or
/// the agent's error message.
fn hash_as_nobody(
    procmond: &Procmond,
    nobody: &PublicAgent,
    path: &Path,
) -> Result<String, String> {
    let out = agent_cli(
        &procmond.socket,
        &["hash-check", path.to_str().unwrap()],
        Some(nobody),
    );
    match out.status.code() {
        Some(0) => Ok(text(&out.stdout)[..64].to_owned()),
        Some(2) => Err(text(&out.stderr)),
        other => panic!("exit {other:?}: {}", text(&out.stderr)),
    }
}

#[test]
fn an_unprivileged_agent_hashes_what_the_kernel_lets_it_open() {
    let Some(mut procmond) = procmond_for_nobody(&[]) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let files = TempDir::new("access");
    std::fs::set_permissions(&files.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = files.0.join("secret");
    file_with_mode(&secret, b"root only", 0o600);
    let public = files.0.join("public");
    file_with_mode(&public, b"anyone may read this", 0o644);
    let closed = files.0.join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = closed.join("readable");
    file_with_mode(&hidden, b"readable, in a root-only directory", 0o644);

    let nobody = PublicAgent::new();
    assert_eq!(
        hash_as_nobody(&procmond, &nobody, &public),
        Ok(sha256sum(&public))
    );
    // The agent's own open fails: the kernel said no, procmond was not asked.
    for denied in [&secret, &hidden] {
        let err = hash_as_nobody(&procmond, &nobody, denied).unwrap_err();
        assert!(
            err.contains("permission denied"),
            "{}: {err}",
            denied.display()
        );
        assert!(!err.contains(&sha256sum(denied)), "{err}");
    }

    // Another client's ring, as procmond holds it: mapped, through no
    // descriptor (see kill_9_of_an_agent_frees_its_ring...), so reachable
    // only through procmond's /proc/PID/map_files, a magic link. Nobody may
    // not open it (the kernel says so); root, allowed by default, is
    // refused too, as procmond follows no magic link.
    let other = procmond.agent();
    let pid = procmond.pid();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let range = maps
        .lines()
        .find(|line| line.contains(RING_MEMFD))
        .and_then(|line| line.split(' ').next())
        .expect("procmond maps the other client's ring")
        .to_owned();
    let ring = PathBuf::from(format!("/proc/{pid}/map_files/{range}"));
    let err = hash_as_nobody(&procmond, &nobody, &ring).unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    let out = agent_cli(
        &procmond.socket,
        &["hash-check", ring.to_str().unwrap()],
        None,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("goes through a /proc magic link"),
        "{stderr}"
    );
    drop(other);

    // Root, allowed by default, names paths and may hash the root-only file.
    let out = agent_cli(
        &procmond.socket,
        &["hash-check", secret.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&sha256sum(&secret)));
    procmond.wait_log("connection accepted");
    procmond.stop();
}

/// Runs `setfacl ARGS`; `false` (skipped) where there is no setfacl.
fn setfacl_or_skip(args: &[&str]) -> bool {
    match Command::new("setfacl").args(args).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "setfacl {args:?}: {}",
                text(&out.stderr)
            );
            true
        }
        Err(e) => {
            skip_support::skip(&format!("no setfacl ({e}): install the acl package"));
            false
        }
    }
}

#[test]
fn acls_decide_what_an_unprivileged_agent_may_hash() {
    let Some(procmond) = procmond_for_nobody(&[]) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let files = TempDir::new("acl");
    std::fs::set_permissions(&files.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The mode allows; an ACL entry denies nobody.
    let denied = files.0.join("mode-allows-acl-denies");
    file_with_mode(&denied, b"readable by mode, not by ACL", 0o644);
    // The mode denies; an ACL entry allows nobody.
    let allowed = files.0.join("mode-denies-acl-allows");
    file_with_mode(&allowed, b"not readable by mode, readable by ACL", 0o600);
    if !setfacl_or_skip(&["-m", "u:65534:---", denied.to_str().unwrap()])
        || !setfacl_or_skip(&["-m", "u:65534:r", allowed.to_str().unwrap()])
    {
        return;
    }
    let nobody = PublicAgent::new();
    let err = hash_as_nobody(&procmond, &nobody, &denied).unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    assert_eq!(
        hash_as_nobody(&procmond, &nobody, &allowed),
        Ok(sha256sum(&allowed))
    );
    procmond.stop();
}

/// A raw client connected as uid nobody: a `python3` child under nobody
/// connects to `socket` and hands the connected socket back over its stdin
/// (a socket pair), then waits until the test closes its end.
struct NobodyConnection {
    stream: UnixStream,
    _child: Collected,
    _back: UnixStream,
}

impl NobodyConnection {
    fn open(socket: &Path) -> NobodyConnection {
        const HANDOVER: &str = "import socket, sys\n\
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
            s.connect(sys.argv[1])\n\
            back = socket.socket(fileno=0)\n\
            socket.send_fds(back, [b'x'], [s.fileno()])\n\
            back.recv(1)\n";
        let (ours, theirs) = UnixStream::pair().unwrap();
        let child = spawn_retrying(
            Command::new("python3")
                .args(["-c", HANDOVER])
                .arg(socket)
                .uid(NOBODY)
                .gid(NOBODY)
                .stdin(std::os::fd::OwnedFd::from(theirs))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .expect("spawn python3 as nobody");
        let child = Collected::new(child);
        ours.set_read_timeout(Some(WAIT)).unwrap();
        let mut byte = [0u8; 1];
        let (_, mut fds) = daemoneye_lib::sys::socket::recv_with_fds(&ours, &mut byte, 1)
            .expect("the child hands its connection over");
        let stream = UnixStream::from(fds.pop().expect("a connected socket"));
        NobodyConnection {
            stream,
            _child: child,
            _back: ours,
        }
    }
}

#[test]
fn a_path_only_hash_check_from_a_non_root_peer_is_refused() {
    let Some(procmond) = procmond_for_nobody(&[]) else {
        return;
    };
    let nobody = NobodyConnection::open(&procmond.socket);
    let (mut channel, welcome) = Connector::new("raw-nobody")
        .handshake(nobody.stream.try_clone().unwrap())
        .expect("nobody is allowed");
    let Ok::<[_; 2], _>([data, control]) = welcome.fds.try_into() else {
        panic!("two ring descriptors");
    };
    let mut consumer =
        Consumer::attach(ConsumerFds { data, control }, WaitStrategy::default()).unwrap();
    // A world-readable file: only the missing descriptor is wrong.
    let check = ProtoHashCheck {
        expected_hash: String::new(),
        hash_algorithm: "sha256".into(),
        executable_path: "/bin/sh".into(),
    };
    let task = ClientFrame {
        body: Some(client_frame::Body::Task(TaskRequest {
            task: Some(DetectionTask::new_hash_check("t-path", check)),
            with_hashes: false,
            interval_ms: None,
            hash_file_attached: false,
            changes: None,
        })),
    };
    channel.send(&task).unwrap();
    let deadline = Instant::now().checked_add(WAIT).unwrap();
    let chunk = daemoneye_lib::session::read_chunk(&mut consumer, deadline).unwrap();
    assert!(!chunk.result.success);
    let message = chunk.result.error_message.unwrap_or_default();
    assert!(
        message.contains("uid 65534 may not have procmond open a path")
            && message.contains("attach its descriptor"),
        "{message}"
    );
    let hash = chunk.result.hash_result.expect("a hash result");
    assert!(hash.hash_value.is_empty());
    drop(channel);
    drop(nobody);
    procmond.stop();
}

#[test]
fn beyond_max_clients_an_agent_is_refused_not_queued() {
    let procmond = Procmond::start(&["--max-clients", "1"]);
    let mut first = procmond.agent();
    let err = Agent::connect(&procmond.socket).unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { reason } if reason.contains("TOO_MANY_CLIENTS")),
        "{err}"
    );
    assert!(!collect(&mut first, None).is_empty());
    drop(first);
    procmond.stop();
}

/// Threads in process `pid`.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn a_flood_of_idle_connects_is_refused_at_once_without_a_thread_each() {
    // One client: at most 1 + 4 connections in their handshake.
    let mut procmond = Procmond::start(&["--max-clients", "1"]);
    let threads_before = thread_count(procmond.pid());
    // Idle connects that never send a hello hold the handshake places...
    let idle: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(&procmond.socket).unwrap())
        .collect();
    // ...so every further connect is refused at once, before its hello
    // (without the cap it would wait out the 5 s hello deadline, then be
    // told BAD_FRAME), and costs procmond no thread.
    let mut extra = Vec::new();
    for _ in 0..30 {
        let stream = UnixStream::connect(&procmond.socket).unwrap();
        let (frame, _) =
            read_message::<ServerFrame>(&stream, 0, Some(Instant::now() + WAIT), "a refusal")
                .unwrap();
        let (code, reason) = refusal(frame);
        assert_eq!(code, RefusalCode::TooManyClients, "{reason}");
        assert!(reason.contains("handshake"), "{reason}");
        extra.push(stream);
    }
    let threads = thread_count(procmond.pid());
    // One thread per idle connect, and the signal thread and the process
    // event thread, which procmond may start after this test first looked.
    assert!(
        threads <= threads_before + idle.len() + 2,
        "{threads} threads after {} idle and {} refused connects (were {threads_before})",
        idle.len(),
        extra.len()
    );
    // The places come back when the idle peers leave.
    drop(idle);
    for _ in 0..5 {
        procmond.wait_log("handshake failed");
    }
    let mut agent = procmond.agent();
    assert!(!collect(&mut agent, None).is_empty());
    drop(agent);
    procmond.stop();
}

#[test]
fn sigterm_tells_connected_agents_procmond_is_shutting_down_mid_stream_and_idle() {
    let procmond = Procmond::start(&[]);
    let mut streaming = procmond.agent();
    let mut idle = procmond.agent();
    let me = std::process::id();
    let mut stream = streaming.monitor(&[me], Duration::from_millis(10)).unwrap();
    // Mid-stream: the snapshot has come.
    let deadline = Instant::now() + WAIT;
    while !matches!(stream.next_event(deadline).unwrap(), Some(MonitorEvent::Snapshot(r)) if r.pid == me)
    {
    }
    procmond.stop(); // SIGTERM; exits 0 within the deadline
    let ended = |error: ClientError| match error {
        ClientError::Ended { reason } => assert!(reason.contains("shutting down"), "{reason}"),
        other => panic!("expected procmond's reason, got {other:?}"),
    };
    let deadline = Instant::now() + WAIT;
    loop {
        match stream.next_event(deadline) {
            Ok(Some(_)) => continue, // events published before the end
            Ok(None) => panic!("the stream ended as if cancelled"),
            Err(error) => break ended(error),
        }
    }
    ended(idle.enumerate(None, false).map(|_| ()).unwrap_err());
}

#[test]
fn sigterm_stops_procmond_even_after_its_socket_file_was_removed() {
    let procmond = Procmond::start(&[]);
    // Nothing can connect to the socket any more: the shutdown must not
    // depend on it.
    std::fs::remove_file(&procmond.socket).unwrap();
    // Exits 0 within the deadline (see `stop`).
    procmond.stop();
}

/// procmond with its log on a pipe that takes nothing more once it is
/// listening (a stalled journald, say): the first `first` has it stop, and
/// its shutdown sticks at its first log line; a second signal, `second`,
/// must end it at once, exit 1.
fn a_second_signal_ends_a_shutdown_stuck_on_its_log(first: Signal, second: Signal) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;

    let dir = TempDir::new("stuck-log");
    let socket = dir.0.join("procmond.sock");
    let (log, writer) = nix::unistd::pipe().unwrap();
    let mut log = std::fs::File::from(log);
    let procmond = Collected::new(
        Command::new(env!("CARGO_BIN_EXE_procmond"))
            .arg("--socket")
            .arg(&socket)
            .env("RUST_LOG", "info")
            .stderr(Stdio::from(writer))
            .spawn()
            .unwrap(),
    );
    let pidfd = PidFd::open(procmond.pid()).unwrap();
    // Read the log without a thread, so that reading can stop.
    let deadline = Instant::now().checked_add(WAIT).unwrap();
    let mut text = Vec::new();
    while !String::from_utf8_lossy(&text).contains("procmond listening") {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = rustix::time::Timespec::try_from(left).unwrap();
        let mut fds = [rustix::event::PollFd::new(
            &log,
            rustix::event::PollFlags::IN,
        )];
        let ready = rustix::event::poll(&mut fds, Some(&timeout)).unwrap();
        assert!(ready > 0, "procmond did not listen within {WAIT:?}");
        let mut chunk = [0u8; 4096];
        let n = log.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "procmond's log ended: {}",
            String::from_utf8_lossy(&text)
        );
        text.extend_from_slice(&chunk[..n]);
    }
    // Fill the pipe through a description of our own (non-blocking; the
    // one procmond writes with stays blocking): its next log line waits.
    let mut filler = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", log.as_raw_fd()))
        .unwrap();
    for size in [4096, 1] {
        let block = vec![b'.'; size];
        while filler.write(&block).is_ok() {}
    }

    let pid = Pid::from_raw(procmond.pid() as i32);
    kill(pid, first).unwrap();
    // Stuck: the shutdown cannot say "shutting down". (A bounded look,
    // not a synchronisation: nothing can be waited for from a stuck log.)
    assert!(
        !pidfd.wait_exit(Duration::from_millis(500)).unwrap(),
        "procmond exited although its log takes nothing"
    );
    let sent = Instant::now();
    kill(pid, second).unwrap();
    assert!(
        pidfd.wait_exit(Duration::from_secs(5)).unwrap(),
        "a second {second:?} did not end procmond stuck in its shutdown"
    );
    println!("ended {:?} after the second signal", sent.elapsed());
    let output = procmond.output_within(WAIT, "procmond");
    assert_eq!(output.status.code(), Some(1), "{}", output.status);
    drop((filler, log));
}

#[test]
fn a_second_sigterm_ends_procmond_while_its_shutdown_is_stuck() {
    a_second_signal_ends_a_shutdown_stuck_on_its_log(Signal::SIGTERM, Signal::SIGTERM);
}

#[test]
fn a_second_sigint_ends_procmond_while_its_shutdown_is_stuck() {
    a_second_signal_ends_a_shutdown_stuck_on_its_log(Signal::SIGTERM, Signal::SIGINT);
}

#[test]
fn when_procmond_stops_a_connections_results_the_client_is_told_why_and_the_slot_freed() {
    let dir = TempDir::new("ended");
    let mut config = ServerConfig::new(dir.0.join("procmond.sock"));
    config.max_clients = 1;
    let serving = Serving::start(Server::bind(config).unwrap());
    let socket = serving.server.socket_path().to_owned();

    // A client that breaks its ring (closes its reading side), then asks
    // for results: procmond's first write fails.
    let (mut channel, welcome) = Connector::new("ring-breaker").connect(&socket).unwrap();
    let Ok::<[_; 2], _>([data, control]) = welcome.fds.try_into() else {
        panic!("two ring descriptors");
    };
    let mut consumer =
        Consumer::attach(ConsumerFds { data, control }, WaitStrategy::default()).unwrap();
    consumer.close();
    let task = ClientFrame {
        body: Some(client_frame::Body::Task(TaskRequest {
            task: Some(DetectionTask::new_enumerate_processes("t-1", None)),
            with_hashes: false,
            interval_ms: None,
            hash_file_attached: false,
            changes: None,
        })),
    };
    channel.send(&task).unwrap();
    // procmond says why in an Error frame, then ends the connection.
    let err = channel.recv(Some(Instant::now() + WAIT)).unwrap_err();
    let ControlError::PeerError { message } = err else {
        panic!("expected procmond's error frame, got {err}");
    };
    assert!(message.contains("closed"), "{message}");
    let err = channel.recv(Some(Instant::now() + WAIT)).unwrap_err();
    assert!(matches!(err, ControlError::PeerGone), "{err}");

    // The only client slot is free again.
    let mut agent = Agent::connect(&socket).unwrap();
    assert!(!collect(&mut agent, None).is_empty());
    drop(agent);
    serving.stop();
}

#[test]
fn hash_check_takes_a_relative_path_from_the_agents_directory() {
    let procmond = Procmond::start(&[]);
    let dir = TempDir::new("rel");
    let file = dir.0.join("data.bin");
    std::fs::write(&file, b"relative to the agent").unwrap();
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_daemoneye-agent"))
            .arg("--socket")
            .arg(&procmond.socket)
            .args(["hash-check", "./data.bin"])
            .current_dir(&dir.0),
        "daemoneye-agent hash-check",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(line.starts_with(&sha256sum(&file)), "{line}");
    assert!(line.contains(&file.display().to_string()), "{line}");
    procmond.stop();
}

/// procmond's one line on stderr for `args`, and its exit code.
fn procmond_error(args: &[&str]) -> (Option<i32>, String) {
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_procmond")).args(args),
        "procmond",
    );
    (out.status.code(), text(&out.stderr).trim().to_owned())
}

#[test]
fn procmond_cli_errors_say_each_cause_once() {
    let dir = TempDir::new("cli-errors");
    let socket = dir.0.join("p.sock");
    let socket = socket.to_str().unwrap();
    assert_eq!(
        procmond_error(&["--socket", socket, "--ring-bytes", "1000"]),
        (
            Some(1),
            "procmond: invalid ring configuration: invalid ring config: capacity = 1000: must be a power of two from 64 KiB to 1 GiB".into()
        )
    );
    assert_eq!(
        procmond_error(&["--socket", "/proc/x/s"]),
        (
            Some(1),
            "procmond: cannot create directory /proc/x: No such file or directory (os error 2)"
                .into()
        )
    );
    assert_eq!(
        procmond_error(&["--socket", socket, "--group", "de-no-such-group"]),
        (Some(1), "procmond: no such group: de-no-such-group".into())
    );
    // A second procmond on a live one's socket.
    let first = Procmond::start(&[]);
    let live = first.socket.to_str().unwrap().to_owned();
    let (code, err) = procmond_error(&["--socket", &live]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        err,
        format!("procmond: another procmond is listening on {live}")
    );
    first.stop();
}

#[test]
fn sigint_stops_procmond_cleanly_and_it_leaves_nothing_beside_its_socket() {
    let mut procmond = Procmond::start(&[]);
    let dir = procmond.socket.parent().unwrap().to_owned();
    let mut child = procmond.child.take().unwrap();
    let pidfd = PidFd::open(child.id()).unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    assert!(pidfd.wait_exit(WAIT).unwrap(), "procmond ignored SIGINT");
    assert!(child.wait().unwrap().success());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left beside the socket: {left:?}");
}

#[test]
fn a_max_frame_below_16_kib_is_a_clear_cli_error() {
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_procmond")).args([
            "--socket",
            "/nonexistent/p.sock",
            "--max-frame-bytes",
            "100",
        ]),
        "procmond",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("below the minimum of 16384 bytes"), "{err}");
}

#[test]
fn not_running_is_a_clear_error() {
    let dir = TempDir::new("none");
    let socket = dir.0.join("procmond.sock");
    let err = Agent::connect(&socket).unwrap_err();
    assert!(matches!(err, ClientError::NotRunning { .. }), "{err}");
    let out = agent_cli(&socket, &["enumerate"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("procmond is not running"),
        "{}",
        text(&out.stderr)
    );
}

/// The tests that use the default socket path, one at a time.
static DEFAULT_PATH: Mutex<()> = Mutex::new(());

#[test]
fn without_socket_options_procmond_and_the_agent_meet_at_the_default_path() {
    let _one = DEFAULT_PATH
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let system = Path::new("/run/daemoneye/procmond.sock");
    if !nix::unistd::geteuid().is_root() || system.exists() {
        skip_support::skip("needs root and no procmond at /run/daemoneye/procmond.sock");
        return;
    }
    let procmond = Procmond::start_at(&[], false, &[]);
    assert!(
        system.exists(),
        "procmond did not bind {}",
        system.display()
    );
    // The agent finds it (`client::find_socket`).
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_daemoneye-agent")).args([
            "enumerate",
            "--pid",
            &std::process::id().to_string(),
            "--format",
            "json",
        ]),
        "daemoneye-agent enumerate",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let record: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(record["pid"], std::process::id());
    procmond.stop(); // and the socket is removed
}

#[test]
fn without_a_socket_option_the_agent_names_every_default_path_it_tried() {
    let _one = DEFAULT_PATH
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let system = Path::new("/run/daemoneye/procmond.sock");
    if system.exists() {
        skip_support::skip(&format!("a procmond listens at {}", system.display()));
        return;
    }
    let dir = TempDir::new("xdg");
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_daemoneye-agent"))
            .arg("enumerate")
            .env("XDG_RUNTIME_DIR", &dir.0),
        "daemoneye-agent enumerate",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("procmond is not running"), "{err}");
    assert!(err.contains(&system.display().to_string()), "{err}");
    if !nix::unistd::geteuid().is_root() {
        // The per-user socket first, then the root one.
        let own = dir.0.join("daemoneye/procmond.sock");
        assert!(
            err.contains(&format!("{} or {}", own.display(), system.display())),
            "{err}"
        );
    }
}

#[test]
fn kill_9_of_procmond_mid_stream_is_peer_gone_within_a_second() {
    let procmond = Procmond::start(&[]);
    let mut agent = procmond.agent();
    let mut stream = agent.monitor(&[], Duration::from_millis(50)).unwrap();
    // The stream is running: its snapshot arrives.
    let first = stream.next_event(Instant::now() + WAIT).unwrap();
    assert!(matches!(first, Some(MonitorEvent::Snapshot(_))));
    let killed = Instant::now();
    kill(Pid::from_raw(procmond.pid() as i32), Signal::SIGKILL).unwrap();
    let err = loop {
        match stream.next_event(Instant::now() + WAIT) {
            Ok(Some(_)) => continue, // events published before the kill
            Ok(None) => panic!("the stream ended cleanly"),
            Err(err) => break err,
        }
    };
    let elapsed = killed.elapsed();
    assert!(matches!(err, ClientError::PeerGone { .. }), "{err}");
    assert!(err.to_string().contains("peer gone"));
    // The stream notices when its park times out and the pidfd says
    // procmond is gone: one DEFAULT_PARK_TIMEOUT (100 ms), so a second
    // leaves 900 ms for scheduling on a loaded machine, and a stream that
    // did not watch procmond would wait out WAIT (20 s).
    assert!(
        elapsed < Duration::from_secs(1),
        "noticed after {elapsed:?}"
    );
    drop(stream);
    // Later calls fail the same way, at once.
    let err = agent.enumerate(None, false).map(|_| ()).unwrap_err();
    assert!(matches!(err, ClientError::PeerGone { .. }), "{err}");
}

/// The name prefix of a ring's memfds (`daemoneye-ring`,
/// `daemoneye-ring-control`), as `/proc` shows them.
const RING_MEMFD: &str = "memfd:daemoneye-ring";

/// Shared-memory mappings of procmond's rings in its address space.
fn ring_mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(RING_MEMFD))
        .count()
}

/// procmond's open descriptors that are ring memfds (`/proc/<pid>/fd`
/// links read `/memfd:daemoneye-ring (deleted)`).
fn ring_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map_while(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.to_string_lossy().contains(RING_MEMFD))
        .count()
}

/// Names in /dev/shm that belong to this project: a ring lives in memfds,
/// so there should be none, whatever else other programs keep there.
fn daemoneye_shm() -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.map_while(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.to_lowercase().contains("daemoneye"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn kill_9_of_an_agent_frees_its_ring_and_procmond_serves_the_next() {
    let shm_before = daemoneye_shm();
    let mut procmond = Procmond::start(&[]);
    let pid = procmond.pid();
    assert_eq!((ring_mappings(pid), ring_fds(pid)), (0, 0));
    let mut agent = Command::new(env!("CARGO_BIN_EXE_daemoneye-agent"))
        .arg("--socket")
        .arg(&procmond.socket)
        .args(["monitor", "--interval-ms", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The header and the first snapshot line: the agent is being served.
    let out = line_channel(agent.stdout.take().unwrap());
    next_line(&out, "agent header");
    let line = next_line(&out, "agent snapshot");
    assert!(line.starts_with("snapshot"), "{line:?}");
    assert_eq!(ring_mappings(pid), 2, "one ring: two regions");
    // procmond handed both descriptors over and closed its own: the
    // mappings alone hold the ring.
    assert_eq!(ring_fds(pid), 0, "procmond keeps no ring descriptor");
    agent.kill().unwrap();
    agent.wait().unwrap();
    procmond.wait_log("ring freed");
    assert_eq!((ring_mappings(pid), ring_fds(pid)), (0, 0));
    assert_eq!(daemoneye_shm(), shm_before);

    let mut next = procmond.agent();
    assert!(!collect(&mut next, None).is_empty());
    drop(next);
    procmond.stop();
    assert_eq!(daemoneye_shm(), shm_before);
}

/// Connects and sends `hello` as the first frame; returns procmond's answer.
fn raw_first_frame(socket: &Path, bytes: &[u8]) -> ServerFrame {
    let stream = UnixStream::connect(socket).unwrap();
    (&stream).write_all(bytes).unwrap();
    read_message::<ServerFrame>(&stream, 0, Some(Instant::now() + WAIT), "a reply")
        .unwrap()
        .0
}

fn refusal(frame: ServerFrame) -> (RefusalCode, String) {
    match frame.body {
        Some(server_frame::Body::Refusal(r)) => (r.code(), r.reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn garbage_oversize_and_wrong_version_frames_get_clear_errors() {
    let procmond = Procmond::start(&[]);
    let deadline = || Some(Instant::now() + WAIT);

    // Garbage as the hello.
    let mut garbage = 5u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 5]);
    let (code, reason) = refusal(raw_first_frame(&procmond.socket, &garbage));
    assert_eq!(code, RefusalCode::BadFrame);
    assert!(reason.contains("malformed"), "{reason}");

    // A length prefix over the 64 KiB cap.
    let (code, reason) = refusal(raw_first_frame(
        &procmond.socket,
        &(1u32 << 20).to_le_bytes(),
    ));
    assert_eq!(code, RefusalCode::BadFrame);
    assert!(reason.contains("exceeds"), "{reason}");

    // Another protocol version.
    let stream = UnixStream::connect(&procmond.socket).unwrap();
    let hello = ClientFrame {
        body: Some(client_frame::Body::Hello(ClientHello {
            protocol_version: 99,
            client_name: "future".into(),
        })),
    };
    write_message(&stream, &hello, &[], deadline()).unwrap();
    let (frame, _) = read_message::<ServerFrame>(&stream, 0, deadline(), "a reply").unwrap();
    let (code, reason) = refusal(frame);
    assert_eq!(code, RefusalCode::VersionMismatch);
    assert!(
        reason.contains(&format!("version {PROTOCOL_VERSION}")) && reason.contains("99"),
        "{reason}"
    );

    // Garbage after a good handshake: an error frame, then the end.
    let stream = UnixStream::connect(&procmond.socket).unwrap();
    let hello = ClientFrame {
        body: Some(client_frame::Body::Hello(ClientHello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "raw".into(),
        })),
    };
    write_message(&stream, &hello, &[], deadline()).unwrap();
    let (frame, fds) = read_message::<ServerFrame>(&stream, 16, deadline(), "hello").unwrap();
    assert!(matches!(frame.body, Some(server_frame::Body::Hello(_))));
    assert_eq!(fds.len(), 2);
    (&stream).write_all(&garbage).unwrap();
    let (frame, _) = read_message::<ServerFrame>(&stream, 0, deadline(), "an error").unwrap();
    match frame.body {
        Some(server_frame::Body::Error(e)) => {
            assert!(e.message.contains("malformed"), "{}", e.message)
        }
        other => panic!("expected an error frame, got {other:?}"),
    }

    // Still serving.
    let mut agent = procmond.agent();
    assert!(!collect(&mut agent, None).is_empty());
    drop(agent);
    procmond.stop();
}

/// Serves enumerate, verify, a hash check and a monitor, each asserted on a
/// child of this test. `sees_images`: the kernel lets this procmond read
/// other processes' `exe` links (not from inside a user namespace: it holds
/// no capability over processes outside it).
fn serves_every_task(procmond: &Procmond, sees_images: bool) {
    let mut agent = procmond.agent();
    let sleeper = Sleeper::spawn(Path::new("/usr/bin/sleep"));
    let found = [sleeper.seen_by(&mut agent)];
    assert_eq!(found[0].command_line[2], sleeper.arg);
    let verified = verified(&mut agent, sleeper.pid());
    let want = sha256sum(Path::new("/usr/bin/sleep"));
    if sees_images {
        assert_eq!(found[0].executable_path.as_deref(), Some("/usr/bin/sleep"));
        assert_eq!(verified[0].executable_hash.as_deref(), Some(want.as_str()));
        assert!(verified[0].file_exists);
    } else {
        assert_eq!(found[0].executable_path, None);
        assert!(!found[0].accessible, "{:?}", found[0]);
        assert_eq!(verified[0].executable_hash, None);
    }
    let check = agent
        .hash_check(ProtoHashCheck {
            expected_hash: want.clone(),
            hash_algorithm: "sha256".into(),
            executable_path: "/usr/bin/sleep".into(),
        })
        .unwrap();
    assert_eq!(check.matched, Some(true));

    let me = std::process::id();
    let deadline = Instant::now() + WAIT;
    let mut stream = agent.monitor(&[me], Duration::from_millis(10)).unwrap();
    // The snapshot comes first: a child spawned after it is news.
    while !matches!(stream.next_event(deadline).unwrap(), Some(MonitorEvent::Snapshot(r)) if r.pid == me)
    {
    }
    let mut child = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let mut seen = Vec::new();
    let mut stdin = child.stdin.take();
    loop {
        match stream.next_event(deadline).unwrap() {
            Some(MonitorEvent::Started(r)) if r.pid == pid => {
                seen.push("started");
                drop(stdin.take()); // cat exits
            }
            Some(MonitorEvent::Exited(r)) if r.pid == pid => {
                seen.push("exited");
                break;
            }
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
    child.wait().unwrap();
    assert_eq!(seen, ["started", "exited"]);
    stream.cancel().unwrap();
}

#[test]
fn procmond_says_it_uses_the_kernels_process_events_and_serves_from_them() {
    let procmond = Procmond::start(&[]);
    assert_eq!(procmond.agent().event_source(), EventSource::Connector);
    serves_every_task(&procmond, true);
    procmond.stop();
}

#[test]
fn where_process_events_are_refused_procmond_polls_says_so_and_serves_every_task() {
    // Inside a new user namespace the kernel refuses the connector (it
    // wants CAP_NET_ADMIN in the initial one); the switch asks for polling.
    for (wrapper, args, why, sees_images) in [
        (
            &["unshare", "--user", "--map-root-user"][..],
            &[][..],
            "no process events from the kernel; polling /proc instead",
            false,
        ),
        (
            &[][..],
            &["--no-process-events"][..],
            "process events not asked for; polling /proc",
            true,
        ),
    ] {
        let procmond = Procmond::start_under(wrapper, args);
        // Logged once, before procmond listens.
        let log = procmond.log.lock().unwrap().clone();
        assert_eq!(log.matches(why).count(), 1, "{log}");
        assert_eq!(
            procmond.agent().event_source(),
            EventSource::Polling,
            "{wrapper:?} {args:?}"
        );
        serves_every_task(&procmond, sees_images);
        procmond.stop();
    }
}

#[test]
fn monitor_shows_a_child_start_and_exit_and_cancel_ends_it() {
    let procmond = Procmond::start(&[]);
    let mut agent = procmond.agent();
    let me = std::process::id();
    let mut stream = agent.monitor(&[me], Duration::from_millis(20)).unwrap();
    // The snapshot includes this test process, the root.
    let deadline = Instant::now() + WAIT;
    loop {
        match stream.next_event(deadline).unwrap() {
            Some(MonitorEvent::Snapshot(r)) if r.pid == me => break,
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
    let mut child = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let wait_for = |stream: &mut daemoneye_lib::client::MonitorStream<'_>, exited: bool| loop {
        match stream.next_event(deadline).unwrap() {
            Some(MonitorEvent::Started(r)) if !exited && r.pid == pid => return r,
            Some(MonitorEvent::Exited(r)) if exited && r.pid == pid => return r,
            Some(_) => {}
            None => panic!("stream ended"),
        }
    };
    let started = wait_for(&mut stream, false);
    assert_eq!(started.name, "cat");
    assert_eq!(started.ppid, Some(me));
    drop(child.stdin.take());
    child.wait().unwrap();
    let exited = wait_for(&mut stream, true);
    assert_eq!(exited.pid, pid);
    stream.cancel().unwrap();
    // The agent is usable after the cancel.
    assert!(!collect(&mut agent, None).is_empty());

    // An interval over the maximum is a failed task naming the rule.
    let mut stream = agent.monitor(&[me], Duration::from_secs(3600)).unwrap();
    let err = stream.next_event(Instant::now() + WAIT).unwrap_err();
    assert!(
        matches!(&err, ClientError::TaskFailed { message, .. } if message.contains("interval_ms")),
        "{err}"
    );
    drop(stream);
    assert!(!collect(&mut agent, None).is_empty());
    drop(agent);
    procmond.stop();
}

#[test]
fn an_abandoned_stream_is_skipped_by_the_next_call() {
    // The smallest frames procmond allows: a full listing takes several.
    let procmond = Procmond::start(&["--ring-bytes", "65536", "--max-frame-bytes", "16384"]);
    let mut agent = procmond.agent();
    {
        let mut records = agent.enumerate(None, false).unwrap();
        records.next().unwrap().unwrap();
    } // dropped with frames left in the ring
    let all = collect(&mut agent, None);
    assert!(all.len() > 3);
    // One stream's records, in pid order: a frame of the abandoned stream
    // would break the order (or repeat a pid).
    let pids: Vec<_> = all.iter().map(|r| r.pid).collect();
    assert!(
        pids.windows(2).all(|w| w[0] < w[1]),
        "records of one stream only, pids strictly increasing: {pids:?}"
    );
    drop(agent);
    procmond.stop();
}

#[test]
fn an_agent_that_reconnects_gets_hashes_from_the_cache_its_first_connection_filled() {
    let dir = TempDir::new("shared-cache");
    let server = Server::bind(ServerConfig::new(dir.0.join("procmond.sock"))).unwrap();
    let socket = server.socket_path().to_owned();
    // A system binary: unchanged for long, so its hash is cached.
    let file = Path::new("/usr/bin/sleep");
    let check = ProtoHashCheck {
        expected_hash: sha256sum(file),
        hash_algorithm: "sha256".into(),
        executable_path: file.to_string_lossy().into_owned(),
    };
    let serving = Serving::start(server);
    // Each connection has its own collector; the second is answered from
    // the cache the first one filled.
    for (connection, (hits, misses)) in [(1, (0, 1)), (2, (1, 1))] {
        let mut agent = Agent::connect(&socket).expect("connect");
        let report = agent.hash_check(check.clone()).unwrap();
        assert_eq!(report.matched, Some(true), "connection {connection}");
        drop(agent);
        let stats = serving.server.hash_cache_stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.entries),
            (hits, misses, 1),
            "after connection {connection}"
        );
    }
    serving.stop();
}

/// A shell started by `command` (whose last arguments must be
/// [`READY_SCRIPT`]) once it has said `ready`; it then waits on its stdin,
/// which this keeps open. Killed (by [`Collected`]) on drop.
struct ReadyShell {
    child: Collected,
    _stdin: std::process::ChildStdin,
}

/// The shell script of a [`ReadyShell`]: says so, then waits for its stdin
/// to close.
const READY_SCRIPT: [&str; 2] = ["-c", "echo ready; read line"];

impl ReadyShell {
    fn spawn(command: &mut Command) -> ReadyShell {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_retrying(command).expect("spawn a shell");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let child = Collected::new(child);
        let lines = line_channel(stdout);
        assert_eq!(next_line(&lines, "ready from the shell"), "ready");
        ReadyShell {
            child,
            _stdin: stdin,
        }
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// A [`ReadyShell`] running chrooted in a private directory that holds a
/// copy of `/bin/sh` and the libraries `ldd` names for it. Removed on drop.
struct Chrooted {
    shell: ReadyShell,
    image: PathBuf,
    _dir: TempDir,
}

impl Chrooted {
    fn spawn() -> Chrooted {
        let dir = TempDir::new("chroot");
        let copy_in = |from: &Path| {
            let to = dir.0.join(from.strip_prefix("/").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {from:?}: {e}"));
        };
        let ldd = output_within(Command::new("ldd").arg("/bin/sh"), "ldd");
        assert!(ldd.status.success(), "{}", text(&ldd.stderr));
        for library in text(&ldd.stdout)
            .split_whitespace()
            .filter(|word| word.starts_with('/'))
        {
            copy_in(Path::new(library));
        }
        let image = dir.0.join("sh");
        std::fs::copy("/bin/sh", &image).unwrap();
        let shell = ReadyShell::spawn(
            Command::new("chroot")
                .arg(&dir.0)
                .arg("/sh")
                .args(READY_SCRIPT),
        );
        Chrooted {
            shell,
            image,
            _dir: dir,
        }
    }
}

#[test]
fn verify_finds_the_image_of_a_chrooted_process_on_disk() {
    if !skip_support::is_root_or_skip("chroot") {
        return;
    }
    let procmond = Procmond::start(&[]);
    let chrooted = Chrooted::spawn();
    let pid = chrooted.shell.pid();
    let mut agent = procmond.agent();
    let records = verified(&mut agent, pid);
    assert_eq!(records.len(), 1, "{records:?}");
    // The kernel writes the exe link relative to procmond's root, where
    // the copy is found, not below the process's own root.
    assert_eq!(
        records[0].executable_path.as_deref(),
        chrooted.image.to_str()
    );
    assert_eq!(
        records[0].executable_hash.as_deref(),
        Some(sha256sum(&chrooted.image).as_str())
    );
    assert!(records[0].file_exists, "{:?}", records[0]);
    drop(agent);
    procmond.stop();
}

/// Runs `work` on a fresh thread whose effective uid and gid are `uid`
/// (Linux credentials are per thread; the raw calls change this thread's
/// only), so sockets it connects carry that uid in `SO_PEERCRED`.
fn on_thread_as<T: Send + 'static>(uid: u32, work: impl FnOnce() -> T + Send + 'static) -> T {
    thread::spawn(move || {
        use rustix::process::{Gid, Uid};
        rustix::thread::set_thread_res_gid(None, Gid::from_raw(uid), None).unwrap();
        rustix::thread::set_thread_res_uid(None, Uid::from_raw(uid), None).unwrap();
        work()
    })
    .join()
    .unwrap()
}

/// `count` connects to `socket` as `uid` that send nothing.
fn idle_connects_as(uid: u32, socket: &Path, count: usize) -> Vec<UnixStream> {
    let socket = socket.to_owned();
    on_thread_as(uid, move || {
        (0..count)
            .map(|_| UnixStream::connect(&socket).unwrap())
            .collect()
    })
}

/// The refusal procmond sends `stream` before any hello.
fn refusal_of(stream: &UnixStream) -> (RefusalCode, String) {
    let deadline = Some(Instant::now() + WAIT);
    let (frame, _) = read_message::<ServerFrame>(stream, 0, deadline, "a refusal").unwrap();
    refusal(frame)
}

/// procmond as root that also serves uid nobody, with `args`; its
/// directory is opened for nobody.
fn procmond_for_nobody(args: &[&str]) -> Option<Procmond> {
    if !skip_support::is_root_or_skip(&format!("running an agent as uid {NOBODY}")) {
        return None;
    }
    let group = skip_support::group_name_or_skip(NOBODY)?;
    let mut all = vec!["--group", &group, "--allow-uid", "65534"];
    all.extend_from_slice(args);
    let procmond = Procmond::start(&all);
    use std::os::unix::fs::PermissionsExt;
    let dir = procmond.socket.parent().unwrap().parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(procmond)
}

/// An agent run by uid nobody that watches `pid` until killed (on drop),
/// holding a client slot once procmond logs it accepted.
fn nobody_monitor(procmond: &mut Procmond, nobody: &PublicAgent, pid: u32) -> Collected {
    let mut command = Command::new(&nobody.path);
    command
        .uid(NOBODY)
        .gid(NOBODY)
        .arg("--socket")
        .arg(&procmond.socket)
        .args(["monitor", "--pid", &pid.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let monitor = Collected::new(spawn_retrying(&mut command).unwrap());
    procmond.wait_log(&format!("connection accepted uid={NOBODY}"));
    monitor
}

#[test]
fn one_uid_holds_at_most_its_share_of_the_slots_and_root_still_connects() {
    // Four clients: nobody may hold two connections, in any stage.
    let Some(mut procmond) = procmond_for_nobody(&["--max-clients", "4"]) else {
        return;
    };
    let nobody = PublicAgent::new();
    let sleeper = Sleeper::spawn(Path::new("/usr/bin/sleep"));
    let _monitors: Vec<Collected> = (0..2)
        .map(|_| nobody_monitor(&mut procmond, &nobody, sleeper.pid()))
        .collect();
    let out = agent_cli(&procmond.socket, &["enumerate"], Some(&nobody));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TOO_MANY_CLIENTS"), "{stderr}");
    assert!(
        stderr.contains("uid 65534 already holds 2") && stderr.contains("per uid"),
        "{stderr}"
    );
    // Idle connects cannot take the handshake places instead: each is
    // refused at once, before its hello.
    for stream in idle_connects_as(NOBODY, &procmond.socket, 8) {
        let (code, reason) = refusal_of(&stream);
        assert_eq!(code, RefusalCode::TooManyClients, "{reason}");
        assert!(reason.contains("per uid"), "{reason}");
    }
    let mut agent = procmond.agent();
    assert!(!collect(&mut agent, None).is_empty());
    drop(agent);
    procmond.stop();
}

#[test]
fn the_last_client_slot_and_handshake_place_are_kept_for_root() {
    // Two clients and six handshake places; nobody is not capped per uid
    // here, so only the reserve stands between it and root's places.
    let Some(mut procmond) =
        procmond_for_nobody(&["--max-clients", "2", "--max-clients-per-uid", "10"])
    else {
        return;
    };
    let nobody = PublicAgent::new();
    let sleeper = Sleeper::spawn(Path::new("/usr/bin/sleep"));
    let _monitor = nobody_monitor(&mut procmond, &nobody, sleeper.pid());
    let out = agent_cli(&procmond.socket, &["enumerate"], Some(&nobody));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("last place for root"), "{stderr}");
    // Five idle connects hold every handshake place but root's...
    let _idle = idle_connects_as(NOBODY, &procmond.socket, 5);
    let extra = idle_connects_as(NOBODY, &procmond.socket, 1);
    let (code, reason) = refusal_of(&extra[0]);
    assert_eq!(code, RefusalCode::TooManyClients, "{reason}");
    assert!(
        reason.contains("handshake") && reason.contains("last place for root"),
        "{reason}"
    );
    // ...which root's agent takes, and then the last client slot.
    let mut agent = procmond.agent();
    assert!(!collect(&mut agent, None).is_empty());
    drop(agent);
    procmond.stop();
}

/// No byte in `out` that a terminal takes as a control: C0 but the line
/// ends, DEL, and C1 (U+0080 to U+009F, in UTF-8 `C2 80` to `C2 9F`).
fn assert_no_raw_controls(out: &[u8], what: &str) {
    let shown = String::from_utf8_lossy(out);
    for (at, c) in shown.char_indices() {
        assert!(
            c == '\n' || !c.is_control(),
            "{what}: raw {c:?} at byte {at} of {shown:?}"
        );
    }
}

#[test]
fn enumerate_watch_prints_each_change_once_as_json_lines_and_ends_after_its_duration() {
    let procmond = Procmond::start(&[]);
    let dir = TempDir::new("watch");
    let name = format!("de-w{}", std::process::id() % 100_000);
    let sleep = dir.0.join(&name);
    std::fs::copy("/usr/bin/sleep", &sleep).unwrap();
    // The workload: a process that lives 1.5 s of the watch's 4 s, so the
    // watch sees it appear and go.
    let mut short = spawn_retrying(Command::new(&sleep).arg("1.5")).unwrap();
    let out = agent_cli(
        &procmond.socket,
        &[
            "enumerate",
            "--watch",
            "--interval-ms",
            "20",
            "--duration-s",
            "4",
            "--format",
            "json",
            "--name",
            &name,
        ],
        None,
    );
    assert!(short.wait().unwrap().success());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let seen: Vec<(String, u64)> = lines
        .iter()
        .map(|v| {
            (
                v["change"].as_str().unwrap().to_owned(),
                v["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    let pid = u64::from(short.id());
    // Seen, perhaps again as its usage became known, then gone, once.
    let (last, before) = seen.split_last().expect("no lines");
    assert_eq!(last, &("gone".to_owned(), pid), "{lines:#?}");
    assert!(!before.is_empty(), "{lines:#?}");
    assert!(
        before.iter().all(|s| *s == ("updated".to_owned(), pid)),
        "{lines:#?}"
    );
    assert_eq!(lines[0]["name"], name.as_str());
    procmond.stop();
}

#[test]
fn the_agent_exits_0_when_its_output_pipe_closes_early() {
    let procmond = Procmond::start(&[]);
    // More output than a pipe holds (200 rows of some 500 bytes), so the
    // agent is still writing when the reader goes.
    let long = "x".repeat(500);
    let shells: Vec<ReadyShell> = (0..200)
        .map(|_| ReadyShell::spawn(Command::new("/bin/sh").args(READY_SCRIPT).arg(&long)))
        .collect();
    let mut child = spawn_retrying(
        Command::new(env!("CARGO_BIN_EXE_daemoneye-agent"))
            .arg("--socket")
            .arg(&procmond.socket)
            .arg("enumerate")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut header = String::new();
    stdout.read_line(&mut header).unwrap();
    assert!(header.contains("PID"), "{header}");
    drop(stdout); // the reader goes, as `| head -1` would
    let out = Collected::new(child).output_within(WAIT, "daemoneye-agent enumerate");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    drop(shells);
    procmond.stop();
}

#[test]
fn status_says_what_procmond_is_and_counts_its_tasks() {
    let procmond = Procmond::start(&["--max-clients", "6"]);
    let socket = procmond.socket.clone();
    let run = |args: &[&str]| agent_cli(&socket, args, None);
    assert!(run(&["enumerate"]).status.success());
    // A hash check of a missing file (procmond opens the path for root).
    assert_eq!(
        run(&["hash-check", "/nonexistent/de-file"]).status.code(),
        Some(2)
    );
    let out = run(&["status", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["protocol_version"], PROTOCOL_VERSION);
    assert_eq!(status["pid"], procmond.pid());
    assert_eq!(status["euid"], nix::unistd::geteuid().as_raw());
    let caps: Vec<&str> = status["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    if nix::unistd::geteuid().is_root() {
        assert!(caps.contains(&"CAP_SYS_PTRACE"), "{caps:?}");
    }
    assert_eq!(status["event_source"], EventSource::Connector as i32);
    assert!(status["events"]["events"].as_u64().is_some(), "{status}");
    assert_eq!(status["clients"], 1, "the status asker alone");
    assert_eq!(status["max_clients"], 6);
    assert_eq!(status["max_clients_per_uid"], 3);
    assert_eq!(status["tasks_run"], 2);
    assert_eq!(status["tasks_failed"], 1);
    assert_eq!(status["ring_bytes"], 1 << 20);
    assert!(status["processes"].as_u64().unwrap() > 1);
    assert!(status["hash_cache"]["misses"].as_u64().is_some());
    // The table names the same things for people.
    let table = text(&run(&["status"]).stdout);
    assert!(table.contains("process connector"), "{table}");
    assert!(table.contains("2 run, 1 failed"), "{table}");
    let pid = procmond.pid();
    procmond.stop();
    // Nothing answers: exit 2.
    let out = run(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "pid {pid}: {}",
        text(&out.stdout)
    );
}

#[test]
fn table_output_escapes_control_characters_in_names_and_command_lines() {
    let procmond = Procmond::start(&[]);
    // comm is the image's file name: one with ESC and a newline in it, run
    // with arguments that would clear the screen, retitle the terminal,
    // start a C1 sequence, and reverse the text.
    let dir = TempDir::new("escapes");
    let image = dir.0.join("de\x1b[2J\nx");
    std::fs::copy("/bin/sh", &image).unwrap();
    let shell = ReadyShell::spawn(Command::new(&image).args(READY_SCRIPT).args([
        "\x1b]0;pwned\x07",
        "two\nlines",
        "\u{9b}31m",
        "\u{202e}txt",
    ]));
    let pid = shell.pid().to_string();
    for args in [
        &["enumerate", "--pid", &pid][..],
        &["verify", "--pid", &pid],
        &["monitor", "--pid", &pid, "--duration-s", "1"],
    ] {
        let out = agent_cli(&procmond.socket, args, None);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_no_raw_controls(&out.stdout, &format!("{args:?}"));
        let shown = text(&out.stdout);
        let row = shown
            .lines()
            .find(|line| line.contains(&pid))
            .unwrap_or_else(|| panic!("{args:?}: no row for {pid}: {shown}"));
        for escaped in [
            "de\\x1b[2J\\nx",
            "\\x1b]0;pwned\\x07",
            "two\\nlines",
            "\\x9b31m",
            "\\u{202e}txt",
        ] {
            assert!(row.contains(escaped), "{args:?}: no {escaped} in {row}");
        }
    }
    // An error quoting what was asked for is escaped too.
    let missing = dir.0.join("no\x1b[31mfile");
    let out = agent_cli(
        &procmond.socket,
        &["hash-check", missing.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_no_raw_controls(&out.stderr, "hash-check's error");
    assert!(text(&out.stderr).contains("no\\x1b[31mfile"));
    drop(shell);
    procmond.stop();
}

#[test]
fn a_clients_name_is_logged_escaped_and_cut() {
    let mut procmond = Procmond::start(&[]);
    // A name that would forge a second log line and clear the screen.
    let forged = format!(
        "de-agent\x1b[2J\n2026-01-01T00:00:00Z  INFO forged: connection accepted uid=0 {}",
        "x".repeat(2000)
    );
    let (channel, _welcome) = Connector::new(forged).connect(&procmond.socket).unwrap();
    let line = procmond.wait_log("client=de-agent");
    assert!(
        line.contains("client=de-agent\\x1b[2J\\n2026-01-01"),
        "{line}"
    );
    assert!(line.len() < 400, "the name is cut: {line}");
    assert_no_raw_controls(line.as_bytes(), "procmond's log line");
    drop(channel);
    procmond.stop();
}

#[test]
fn a_running_enumerate_or_verify_stops_at_a_cancel() {
    // A 64 KiB ring holds four 16 KiB frames; forty shells with 14 KB
    // command lines (a frame each) are ten times that, so the task waits
    // for room until the client reads on.
    let mut procmond = Procmond::start(&["--ring-bytes", "65536", "--max-frame-bytes", "16384"]);
    let arg = "a".repeat(1000);
    let shells: Vec<ReadyShell> = (0..40)
        .map(|_| {
            ReadyShell::spawn(
                Command::new("/bin/sh")
                    .args(READY_SCRIPT)
                    .arg("sh")
                    .args(std::iter::repeat_n(&arg, 14)),
            )
        })
        .collect();
    let pids: Vec<u32> = shells.iter().map(ReadyShell::pid).collect();
    let mut raw = Raw::connect(&procmond.socket);
    for (id, task) in [
        (
            "e",
            DetectionTask::new_enumerate_processes("e", filter(&[], &pids, None)),
        ),
        (
            "v",
            DetectionTask::new_verify_executable("v", filter(&[], &pids, None)),
        ),
    ] {
        raw.task(task, None);
        let first = raw.chunk();
        assert_eq!(
            (first.result.task_id.as_str(), first.marker.end),
            (id, false)
        );
        raw.cancel(id);
        // Read on only once procmond has the cancel: it comes to the
        // running task, not to one that ran to its end meanwhile.
        let line = procmond.wait_log("task cancel received");
        assert!(line.contains("Running"), "{line}");
        let rest = raw.read_to_end(id);
        let end = rest.last().unwrap();
        assert!(end.marker.cancelled, "{id}: {:?}", end.result.error_message);
        let records: usize = rest.iter().map(|c| c.result.processes.len()).sum();
        assert!(records + 1 < pids.len(), "{id}: {records} more records");
    }
    drop(raw);
    drop(shells);
    procmond.stop();
}

/// The keys of a JSON object, in the order they are written (a
/// `serde_json::Value` sorts them).
fn keys_in_order(line: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, serde::de::IgnoredAny)) = map.next_entry::<String, _>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_str::<Keys>(line)
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"))
        .0
}

/// A record's JSON keys, in `ProtoProcessRecord`'s field order.
const RECORD_KEYS: [&str; 14] = [
    "pid",
    "ppid",
    "name",
    "executable_path",
    "command_line",
    "start_time",
    "cpu_usage",
    "memory_usage",
    "executable_hash",
    "hash_algorithm",
    "user_id",
    "accessible",
    "file_exists",
    "collection_time",
];

/// Milliseconds since the epoch, as `collection_time` counts.
fn unix_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// Checks a monitor JSON line field by field: `{"event": event, <the
/// record's fields in struct order>}`, each field what procmond's record
/// `want` (read through the library) says, but for the readings of the
/// moment (CPU, memory: absent or plausible; collection time: within
/// `since` and now).
fn assert_event_line(line: &str, event: &str, want: &ProtoProcessRecord, since: i64) {
    let mut keys = vec!["event"];
    keys.extend(RECORD_KEYS);
    assert_eq!(keys_in_order(line), keys, "{line}");
    let got: serde_json::Value = serde_json::from_str(line).unwrap();
    let want = serde_json::to_value(want).unwrap();
    assert_eq!(got["event"], event, "{line}");
    for key in RECORD_KEYS {
        let value = &got[key];
        match key {
            "cpu_usage" => assert!(
                value.is_null() || value.as_f64().is_some_and(|cpu| cpu >= 0.0),
                "{key}: {line}"
            ),
            // A child read in the midst of its fork may show 0 resident.
            "memory_usage" => assert!(value.is_null() || value.as_u64().is_some(), "{key}: {line}"),
            "collection_time" => assert!(
                value
                    .as_i64()
                    .is_some_and(|ms| (since..=unix_ms()).contains(&ms)),
                "{key} not within the test ({since} ms on): {line}"
            ),
            _ => assert_eq!(value, &want[key], "{key}: {line}"),
        }
    }
}

#[test]
fn monitor_json_lines_are_the_event_then_each_record_field_in_order() {
    let since = unix_ms();
    let procmond = Procmond::start(&[]);
    let mut agent = procmond.agent();
    // The tree: a shell that, line by line on its stdin, forks a subshell
    // (started), lets it end (exited) and execs a sleep (exec); killed
    // (exited).
    let arg = format!("0.{}", unique().replace('-', ""));
    let script = format!("echo ready; read a; ( read b ); exec /usr/bin/sleep 1000 {arg}");
    let mut shell = spawn_retrying(
        Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let mut to_shell = shell.stdin.take().unwrap();
    let shell_said = line_channel(shell.stdout.take().unwrap());
    let shell = Collected::new(shell);
    assert_eq!(next_line(&shell_said, "ready from the shell"), "ready");
    let root = shell.pid();
    let root_sh = seen_as(&mut agent, root, "the shell", |r| r.name == "sh");
    assert_eq!(root_sh.ppid, Some(std::process::id()));
    assert_eq!(root_sh.command_line, ["/bin/sh", "-c", &script]);
    assert_eq!(
        root_sh.user_id,
        Some(rustix::process::geteuid().as_raw().to_string())
    );

    let root_arg = root.to_string();
    let mut cli = spawn_retrying(
        Command::new(env!("CARGO_BIN_EXE_daemoneye-agent"))
            .arg("--socket")
            .arg(&procmond.socket)
            .args(["monitor", "--pid", &root_arg, "--duration-s", "4"])
            .args(["--format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let lines = line_channel(cli.stdout.take().unwrap());
    let cli = Collected::new(cli);

    let line = next_line(&lines, "snapshot");
    assert_event_line(&line, "snapshot", &root_sh, since);

    to_shell.write_all(b"fork\n").unwrap();
    let line = next_line(&lines, "started");
    let sub = serde_json::from_str::<serde_json::Value>(&line).unwrap()["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .unwrap_or_else(|| panic!("no pid: {line}"));
    assert_ne!(sub, root);
    let sub_sh = seen_as(&mut agent, sub, "the subshell", |_| true);
    assert_eq!(sub_sh.ppid, Some(root));
    assert_eq!(sub_sh.name, "sh");
    assert_event_line(&line, "started", &sub_sh, since);

    to_shell.write_all(b"end\n").unwrap();
    assert_event_line(&next_line(&lines, "exited"), "exited", &sub_sh, since);
    let line = next_line(&lines, "exec");
    let root_sleep = seen_as(&mut agent, root, "the sleep", |r| r.name == "sleep");
    assert_eq!(
        root_sleep.executable_path.as_deref(),
        Some("/usr/bin/sleep")
    );
    assert_eq!(root_sleep.command_line, ["/usr/bin/sleep", "1000", &arg]);
    assert_event_line(&line, "exec", &root_sleep, since);

    shell.kill();
    assert_event_line(&next_line(&lines, "exited"), "exited", &root_sleep, since);
    // The duration ends the monitor: exit 0, nothing more printed.
    let out = cli.output_within(WAIT, "daemoneye-agent monitor");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let more: Vec<String> = lines.try_iter().collect();
    assert!(more.is_empty(), "more lines: {more:?}");
    drop(agent);
    procmond.stop();
}

#[test]
fn hash_check_json_is_the_hash_result_field_by_field() {
    let procmond = Procmond::start(&[]);
    let dir = TempDir::new("hash-json");
    let file = dir.0.join("data.bin");
    std::fs::write(&file, b"abc").unwrap();
    let want = sha256sum(&file);
    // SHA-256 of "abc" (FIPS 180-2), so sha256sum is not the only witness.
    assert_eq!(
        want,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let path = file.to_string_lossy().into_owned();
    let keys = [
        "hash_value",
        "algorithm",
        "file_path",
        "success",
        "error_message",
    ];
    for (expected, code) in [
        (None, 0),
        (Some(want.to_uppercase()), 0),
        (Some("0".repeat(64)), 1),
    ] {
        let mut args = vec!["hash-check", path.as_str(), "--format", "json"];
        if let Some(expected) = &expected {
            args.extend(["--expected", expected.as_str()]);
        }
        let out = agent_cli(&procmond.socket, &args, None);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        let [line] = stdout.lines().collect::<Vec<_>>()[..] else {
            panic!("one line expected: {stdout:?}");
        };
        assert_eq!(keys_in_order(line), keys, "{line}");
        let got: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(got["hash_value"], want.as_str(), "{line}");
        assert_eq!(got["algorithm"], "sha256", "{line}");
        assert_eq!(got["file_path"], path.as_str(), "{line}");
        assert_eq!(got["success"], true, "{line}");
        assert!(got["error_message"].is_null(), "{line}");
    }
    procmond.stop();
}

#[test]
fn monitor_realtime_reads_real_time_where_allowed_and_says_why_not_elsewhere() {
    let Some(procmond) = procmond_for_nobody(&[]) else {
        return;
    };
    let sleeper = Sleeper::spawn(Path::new("/usr/bin/sleep"));
    let pid = sleeper.pid().to_string();
    let args = ["monitor", "--realtime", "--pid", &pid, "--duration-s", "1"];
    // Root may: the snapshot row, then the end of the duration.
    let out = agent_cli(&procmond.socket, &args, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).lines().any(|line| line.contains(&pid)),
        "{}",
        text(&out.stdout)
    );
    // nobody (no CAP_SYS_NICE, an RLIMIT_RTPRIO of 0) may not: a clear
    // error, not a stream read at the wrong priority.
    let nobody = PublicAgent::new();
    let out = agent_cli(&procmond.socket, &args, Some(&nobody));
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--realtime") && stderr.contains("not permitted"),
        "{stderr}"
    );
    procmond.stop();
}
