//! procmond as systemd runs it from `dist/systemd/`: the listening socket
//! passed as descriptor 3 (`LISTEN_FDS`, `LISTEN_PID`), the notify protocol
//! (`READY=1`, `WATCHDOG=1`, `STOPPING=1` on a datagram socket this test
//! owns), and the unit's least privilege: an unprivileged uid holding only
//! the capabilities `procmond.service` grants, under the mount isolation
//! its options give, reproduced with `unshare` and `setpriv` (there is no
//! systemd to start the unit here). Real processes throughout.
//!
//! Which unit options are reproduced (`isolated_command`): `User=` (uid and
//! gid 65534, no supplementary groups), `AmbientCapabilities=` and
//! `CapabilityBoundingSet=` (read from the unit), `NoNewPrivileges=`,
//! `LimitRTPRIO=` (read from the unit), `UMask=`, `ProtectSystem=strict`
//! (every mount read-only), `ProtectHome=yes` (`/home`, `/root` and
//! `/run/user` empty), `ProtectKernelTunables=`
//! (`/proc/sys` and `/sys` read-only), `ProtectControlGroups=` (the cgroup
//! mounts read-only), `ProtectKernelLogs=` (`/proc/kmsg` hidden),
//! `PrivateDevices=` (a private `/dev` with the pseudo devices and the
//! host's `/dev/shm`), `PrivateMounts=`, `PrivateIPC=` and
//! `ProtectHostname=` (new mount, IPC and UTS namespaces). Not reproduced:
//! the seccomp and cgroup options (`SystemCallFilter=`,
//! `RestrictAddressFamilies=`, `MemoryDenyWriteExecute=`, `LockPersonality=`,
//! `RestrictNamespaces=`, `RestrictSUIDSGID=`, `ProtectClock=`,
//! `ProtectKernelModules=`, `SystemCallArchitectures=`, `DevicePolicy=`,
//! `IPAddressDeny=`), which need systemd itself to apply; `.ci/run` checks
//! them statically with `systemd-analyze`, and
//! `procmond_makes_no_system_call_the_units_filters_refuse` traces procmond
//! at work (`strace -f`) against the first three.

mod child_support;
mod collector_support;
mod skip_support;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use child_support::{Collected, spawn_retrying};
use collector_support::{
    Running, TempDir, alive_throughout, copy_executable, proc_processes, sha256sum,
};
use daemoneye_lib::client::{Agent, ClientError, ClientOptions};
use daemoneye_lib::collector::{Collector, CollectorConfig};
use daemoneye_lib::control::{Connector, ControlError, EventSource};
use daemoneye_lib::proto::{ProtoHashCheck, ProtoProcessFilter, ProtoProcessRecord};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);
/// The uid and gid procmond runs as here (`User=daemoneye` in the unit;
/// that user need not exist on a test machine).
const NOBODY: u32 = 65534;

/// The values of the unit's `key=` lines, split on spaces.
fn unit_values(key: &str) -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd/procmond.service");
    let text = fs::read_to_string(&unit).expect("read procmond.service");
    text.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .flat_map(|values| values.split_whitespace().map(str::to_owned))
        .collect()
}

/// The capabilities `procmond.service` grants, as named in the unit
/// (`CAP_SYS_PTRACE`, ...), sorted; the bounding set must be the same.
fn unit_capabilities() -> Vec<String> {
    let mut ambient = unit_values("AmbientCapabilities");
    let mut bounding = unit_values("CapabilityBoundingSet");
    ambient.sort();
    bounding.sort();
    assert_eq!(ambient, bounding, "the unit's ambient and bounding sets");
    assert!(!ambient.is_empty(), "the unit grants no capability");
    ambient
}

/// `setpriv`'s spelling of a capability set: `-all,+sys_ptrace,...`.
fn setpriv_caps(caps: &[String]) -> String {
    let mut spec = String::from("-all");
    for cap in caps {
        let name = cap
            .strip_prefix("CAP_")
            .expect("a CAP_ name")
            .to_lowercase();
        spec += &format!(",+{name}");
    }
    spec
}

/// What `procmond.service` does to the file system, as a shell script run
/// as root in the new mount namespace before it drops to the service's
/// uid; `$1` is an empty directory to build the private `/dev` in, and the
/// rest is the command to exec.
const ISOLATE: &str = r#"
set -eu
dev="$1"; keep="$2"; shift 2
# PrivateDevices=: a tmpfs /dev with the pseudo devices and the host's /dev/shm.
mount -t tmpfs -o mode=0755,nosuid,noexec tmpfs "$dev"
# The test's own directory (the notify socket) is kept through PrivateTmp=
# below, as systemd's notify socket is outside /tmp.
mkdir "$dev/.keep"
mount --bind "$keep" "$dev/.keep"
for node in null zero full random urandom tty; do
    touch "$dev/$node"
    mount --bind "/dev/$node" "$dev/$node"
done
mkdir "$dev/shm" "$dev/pts"
mount --bind /dev/shm "$dev/shm"
mount --bind /dev/pts "$dev/pts"
mount --move "$dev" /dev
# ProtectKernelLogs=: no kernel log.
[ ! -e /proc/kmsg ] || mount --bind /dev/null /proc/kmsg
# ProtectKernelTunables=: /proc/sys read-only (and /sys below).
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
# ProtectSystem=strict, ProtectControlGroups=: every mount read-only but
# /proc and /dev.
findmnt -rn -o TARGET | while read -r target; do
    case "$target" in
        /proc|/proc/*|/dev|/dev/*) ;;
        *) mount -o remount,bind,ro "$target" ;;
    esac
done
# ProtectHome=yes: /home, /root and /run/user empty, inaccessible, read-only
# (but one that holds the test's own directory, as TMPDIR may).
for home in /home /root /run/user; do
    case "$keep" in "$home"/*) echo "isolate: $home kept, it holds $keep" >&2; continue ;; esac
    [ ! -d "$home" ] || mount -t tmpfs -o mode=000,ro,nosuid,nodev,noexec tmpfs "$home"
done
# PrivateTmp=: a /tmp and /var/tmp of its own, empty and writable.
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
mkdir -p "$keep"
mount --bind /dev/.keep "$keep"
umount /dev/.keep
rmdir /dev/.keep
umask 0077
exec "$@"
"#;

/// The unit's `LimitRTPRIO=`, if this process may set it: raising a hard
/// limit needs `CAP_SYS_RESOURCE`, which the service manager has and a
/// sandboxed root may lack (as on the project's machines).
fn unit_rtprio() -> Option<u64> {
    let rtprio = unit_values("LimitRTPRIO");
    let rtprio: u64 = rtprio
        .first()
        .and_then(|v| v.parse().ok())
        .expect("the unit sets LimitRTPRIO to a number");
    let hard = rustix::process::getrlimit(rustix::process::Resource::Rtprio).maximum;
    let may = hard.is_none_or(|hard| hard >= rtprio)
        || daemoneye_lib::sys::caps::effective_names().contains(&"CAP_SYS_RESOURCE".to_owned());
    may.then_some(rtprio)
}

/// The command that runs procmond (`/proc/self/fd/4`, see
/// [`Launch::spawn`]) as `procmond.service` would: in new mount, IPC and UTS
/// namespaces shaped by [`ISOLATE`], with `rtprio` as its `RLIMIT_RTPRIO`
/// (the unit's `LimitRTPRIO=`), as uid/gid 65534 with no groups, no new
/// privileges, and exactly `caps`.
fn isolated_command(
    dev: &Path,
    keep: &Path,
    caps: &[String],
    rtprio: Option<u64>,
) -> Vec<OsString> {
    let caps = setpriv_caps(caps);
    let uid = NOBODY.to_string();
    let mut command: Vec<OsString> = [
        "unshare",
        "--mount",
        "--ipc",
        "--uts",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        ISOLATE,
        "isolate",
    ]
    .map(OsString::from)
    .to_vec();
    command.push(dev.into());
    command.push(keep.into());
    if let Some(rtprio) = rtprio {
        for arg in ["prlimit", &format!("--rtprio={rtprio}:{rtprio}"), "--"] {
            command.push(arg.into());
        }
    }
    for arg in [
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &uid,
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps",
        &caps,
        "--ambient-caps",
        &caps,
        "--bounding-set",
        &caps,
        "--",
    ] {
        command.push(arg.into());
    }
    command
}

/// What procmond finds in `LISTEN_PID`.
enum ListenPid {
    /// Its own pid, as systemd sets it.
    Own,
    /// Another process's.
    Other(u32),
}

/// How to start procmond: the binary is passed as descriptor 4 and run as
/// `/proc/self/fd/4` (so an unprivileged uid can run it wherever the
/// checkout lives), behind `wrapper` (commands that each exec the next,
/// keeping the pid).
struct Launch {
    wrapper: Vec<OsString>,
    /// Passed as descriptor 3 with `LISTEN_FDS` and `LISTEN_PID`.
    passed: Option<(OwnedFd, ListenPid)>,
    /// `LISTEN_FDS`, if not 1.
    listen_fds: Option<&'static str>,
    notify: Option<PathBuf>,
    watchdog_usec: Option<u64>,
    args: Vec<OsString>,
}

impl Launch {
    fn new() -> Launch {
        Launch {
            wrapper: Vec::new(),
            passed: None,
            listen_fds: None,
            notify: None,
            watchdog_usec: None,
            args: Vec::new(),
        }
    }

    fn passing(mut self, fd: impl Into<OwnedFd>, pid: ListenPid) -> Launch {
        self.passed = Some((fd.into(), pid));
        self
    }

    /// procmond, its stdout and stderr collected; killed if dropped.
    fn spawn(self) -> Collected {
        let binary = fs::File::open(env!("CARGO_BIN_EXE_procmond")).expect("open procmond");
        // `LISTEN_PID=$$` names the shell, which execs the wrapper, which
        // execs procmond: one pid throughout.
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"[ -z "${LISTEN_FDS-}" ] || export LISTEN_PID="${LISTEN_PID:-$$}"; exec "$@""#)
            .arg("launch")
            .args(&self.wrapper)
            .arg("/proc/self/fd/4")
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut moves: [(RawFd, RawFd); 2] = [(binary.as_raw_fd(), 4), (-1, 3)];
        if let Some((fd, pid)) = &self.passed {
            moves[1].0 = fd.as_raw_fd();
            command.env("LISTEN_FDS", self.listen_fds.unwrap_or("1"));
            if let ListenPid::Other(pid) = pid {
                command.env("LISTEN_PID", pid.to_string());
            }
        }
        if let Some(path) = &self.notify {
            command.env("NOTIFY_SOCKET", path);
        }
        if let Some(usec) = self.watchdog_usec {
            command.env("WATCHDOG_USEC", usec.to_string());
        }
        // SAFETY: between fork and exec the closure makes only
        // async-signal-safe calls (fcntl, dup2) on descriptors this process
        // holds open until `spawn` returns (`binary`, `self.passed`), and
        // allocates nothing. Each source is first copied to a close-on-exec
        // number of 10 or more, so no `dup2` onto 3 or 4 can clobber a
        // source not yet moved; `dup2` clears close-on-exec on the target.
        unsafe {
            command.pre_exec(move || {
                let mut copies = [-1; 2];
                for (copy, &(from, _)) in copies.iter_mut().zip(&moves) {
                    if from >= 0 {
                        *copy = libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 10);
                        if *copy < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                for (&copy, &(_, to)) in copies.iter().zip(&moves) {
                    if copy >= 0 && libc::dup2(copy, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = spawn_retrying(&mut command).expect("spawn procmond");
        drop(binary);
        Collected::new(child)
    }
}

/// The test's end of `NOTIFY_SOCKET`: a datagram socket procmond's uid may
/// send to.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every state received so far, in order.
    seen: Vec<String>,
}

impl Notifications {
    fn bind(dir: &TempDir) -> Notifications {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        Notifications {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// Waits for `state` (`READY=1`, ...) within [`WAIT`]; if it does not
    /// come, `procmond` is killed and the test fails with its log.
    fn wait_for(&mut self, state: &str, procmond: Collected) -> Collected {
        match self.receive_until(state, procmond.pid()) {
            Ok(()) => procmond,
            Err(error) => {
                procmond.kill();
                let out = procmond.output_within(WAIT, "procmond, killed");
                panic!(
                    "{error}; got {:?}; procmond ({}) logged:\n{}",
                    self.seen,
                    out.status,
                    text(&out.stderr)
                );
            }
        }
    }

    /// Reads states until `state`; an error once [`WAIT`] passed or
    /// process `pid` is gone (checked every 100 ms, as nothing signals it
    /// here).
    fn receive_until(&mut self, state: &str, pid: u32) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        let mut exited = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no {state} from procmond within {WAIT:?}"));
            }
            let poll = left.min(Duration::from_millis(100));
            self.socket.set_read_timeout(Some(poll)).unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let found = text.lines().any(|line| line == state);
                    self.seen.extend(text.lines().map(str::to_owned));
                    if found {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Nothing for 100 ms: what procmond sent before it exited
                // would have been read by now.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if exited {
                        return Err(format!("procmond exited before {state}"));
                    }
                    exited = !Path::new(&format!("/proc/{pid}")).exists();
                }
                Err(e) => return Err(format!("notify socket: {e}")),
            }
        }
    }

    fn count(&self, state: &str) -> usize {
        self.seen.iter().filter(|s| *s == state).count()
    }
}

/// A listening socket at `dir/procmond.sock`, as `procmond.socket` makes.
fn listening_socket(dir: &TempDir) -> (UnixListener, PathBuf) {
    let path = dir.join("procmond.sock");
    let listener = UnixListener::bind(&path).expect("bind the passed socket");
    (listener, path)
}

/// An agent that trusts a procmond run as [`NOBODY`].
fn agent(socket: &Path) -> Agent {
    let options = ClientOptions {
        trusted_server_uids: vec![NOBODY],
        ..ClientOptions::default()
    };
    Agent::connect_with(socket, options).expect("connect to procmond")
}

/// SIGTERM, then its output once it exited (within [`WAIT`]).
fn stop(procmond: Collected) -> Output {
    kill(Pid::from_raw(procmond.pid() as i32), Signal::SIGTERM).expect("SIGTERM");
    procmond.output_within(WAIT, "procmond after SIGTERM")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn only_pid(pid: u32) -> Option<ProtoProcessFilter> {
    Some(ProtoProcessFilter {
        process_names: vec![],
        pids: vec![pid],
        executable_pattern: None,
    })
}

fn records(agent: &mut Agent, filter: Option<ProtoProcessFilter>) -> Vec<ProtoProcessRecord> {
    agent
        .enumerate(filter, false)
        .expect("enumerate")
        .collect::<Result<Vec<_>, _>>()
        .expect("enumerate records")
}

fn verified(agent: &mut Agent, pid: u32) -> ProtoProcessRecord {
    let mut found = agent
        .verify(only_pid(pid))
        .expect("verify")
        .collect::<Result<Vec<_>, _>>()
        .expect("verify records");
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

/// What root runs and only root may read: a copy of `sleep` (mode 0700)
/// running as root, and a file of mode 0600, both in a 0700 directory.
/// A file only root may read in the host's `/dev/shm` (which an isolated
/// procmond's `/dev` holds too), removed on drop.
struct ShmFile(PathBuf);

impl ShmFile {
    fn root_only() -> ShmFile {
        let path = PathBuf::from(format!("/dev/shm/de-service-secret-{}", std::process::id()));
        let file = ShmFile(path);
        fs::write(&file.0, b"only root may read this").unwrap();
        fs::set_permissions(&file.0, fs::Permissions::from_mode(0o600)).unwrap();
        file
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

struct RootOnly {
    _dir: TempDir,
    exe: PathBuf,
    secret: PathBuf,
    sleeper: Running,
    arg: String,
}

impl RootOnly {
    fn new() -> RootOnly {
        let dir = TempDir::new("service-root");
        let exe = dir.join("de-root-sleep");
        copy_executable("/bin/sleep", &exe);
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o700)).unwrap();
        let secret = dir.join("secret");
        fs::write(&secret, b"only root may read this").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let arg = format!("0.{}", std::process::id());
        let sleeper = Running::spawn(Command::new(&exe).args(["1000", &arg]));
        RootOnly {
            _dir: dir,
            exe,
            secret,
            sleeper,
            arg,
        }
    }

    /// Its record once procmond shows it exec'd (its own command line).
    fn seen_by(&self, agent: &mut Agent) -> ProtoProcessRecord {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = records(agent, only_pid(self.sleeper.pid));
            match found.as_slice() {
                // Its name once it exec'd (before, the forked test binary's).
                [record] if record.name == "de-root-sleep" => return record.clone(),
                _ if Instant::now() >= deadline => {
                    panic!("procmond never showed {}: {found:?}", self.sleeper.pid)
                }
                // The table catches up with the exec within milliseconds;
                // no signal says when.
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn hash_check(&self, agent: &mut Agent) -> Result<bool, ClientError> {
        let report = agent.hash_check(ProtoHashCheck {
            expected_hash: sha256sum(&self.secret),
            hash_algorithm: "sha256".into(),
            executable_path: self.secret.to_str().unwrap().into(),
        })?;
        Ok(report.matched == Some(true))
    }
}

/// procmond started as `procmond.service` would be, with `caps`, serving
/// a passed socket and notifying the test; returns once it said READY=1.
struct Isolated {
    procmond: Collected,
    socket: PathBuf,
    notifications: Notifications,
    /// The unit's `LimitRTPRIO=` was applied ([`unit_rtprio`]).
    rtprio: bool,
    _dir: TempDir,
    _listener: UnixListener,
}

impl Isolated {
    fn start(caps: &[String]) -> Option<Isolated> {
        Isolated::start_traced(caps, None)
    }

    /// [`start`](Self::start), with every system call of procmond (and of
    /// the commands that set it up) written to `trace` by
    /// `strace -f -D` (the tracer detached, so procmond keeps its pid).
    fn start_traced(caps: &[String], trace: Option<&Path>) -> Option<Isolated> {
        if !skip_support::is_root_or_skip("starting procmond as another uid in new namespaces") {
            return None;
        }
        let dir = TempDir::new("service");
        let dev = dir.join("dev");
        fs::create_dir(&dev).unwrap();
        let (listener, socket) = listening_socket(&dir);
        let mut notifications = Notifications::bind(&dir);
        let mut launch = Launch::new().passing(listener.try_clone().unwrap(), ListenPid::Own);
        let rtprio = unit_rtprio();
        if let Some(trace) = trace {
            launch.wrapper = ["strace", "-f", "-q", "-D", "-o"]
                .map(OsString::from)
                .to_vec();
            launch.wrapper.push(trace.into());
            // The watchdog's beats are traced too.
            launch.watchdog_usec = Some(200_000);
        }
        launch
            .wrapper
            .extend(isolated_command(&dev, dir.path(), caps, rtprio));
        launch.notify = Some(notifications.path.clone());
        let procmond = notifications.wait_for("READY=1", launch.spawn());
        Some(Isolated {
            procmond,
            socket,
            notifications,
            rtprio: rtprio.is_some(),
            _dir: dir,
            _listener: listener,
        })
    }

    fn pid(&self) -> u32 {
        self.procmond.pid()
    }

    /// SIGTERM: STOPPING=1, exit 0; returns the log.
    fn stop(mut self) -> String {
        kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM).unwrap();
        self.procmond = self.notifications.wait_for("STOPPING=1", self.procmond);
        let out = self.procmond.output_within(WAIT, "procmond after SIGTERM");
        let log = text(&out.stderr);
        assert!(out.status.success(), "{}: {log}", out.status);
        log
    }
}

/// `CAP_NET_ADMIN`'s bit in the `Cap*:` masks of `status`.
const CAP_NET_ADMIN_BIT: u32 = 12;

/// procmond's threads that hold capability `bit` in any set but the
/// bounding one (effective, permitted, inheritable, ambient), as (thread
/// id, set): from each thread's own `status`, since capabilities are a
/// thread's.
fn threads_holding(pid: u32, bit: u32) -> Vec<(String, String)> {
    let mut holding = Vec::new();
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("procmond's threads");
    for task in tasks {
        let task = task.expect("a thread");
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue; // ended since the listing
        };
        for line in status.lines() {
            let Some((set, hex)) = line.strip_prefix("Cap").and_then(|l| l.split_once(':')) else {
                continue;
            };
            let mask = u64::from_str_radix(hex.trim(), 16).expect("a capability mask");
            if set != "Bnd" && mask & (1 << bit) != 0 {
                holding.push((
                    task.file_name().to_string_lossy().into_owned(),
                    set.to_owned(),
                ));
            }
        }
    }
    holding
}

/// Every mount procmond sees, as (mount point, options), from its
/// `/proc/<pid>/mountinfo`.
fn mounts_of(pid: u32) -> Vec<(String, String)> {
    fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .expect("procmond's mountinfo")
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields[4].to_owned(), fields[5].to_owned())
        })
        .collect()
}

#[test]
fn with_only_the_units_capabilities_procmond_sees_and_hashes_what_root_runs() {
    let caps = unit_capabilities();
    let root_only = RootOnly::new();
    let Some(service) = Isolated::start(&caps) else {
        return;
    };
    let mut agent = agent(&service.socket);

    // What it is: uid 65534, the unit's capabilities but CAP_NET_ADMIN
    // (given up once the kernel's events are subscribed), those events.
    let status = agent.status().expect("status");
    assert_eq!(status.euid, NOBODY);
    let mut held = status.capabilities.clone();
    held.sort();
    let kept: Vec<String> = caps
        .iter()
        .filter(|cap| *cap != "CAP_NET_ADMIN")
        .cloned()
        .collect();
    assert_eq!(held, kept, "procmond's effective capabilities");
    assert_eq!(agent.event_source(), EventSource::Connector);
    let threads = threads_holding(service.pid(), CAP_NET_ADMIN_BIT);
    assert!(threads.is_empty(), "CAP_NET_ADMIN still held: {threads:?}");
    // The isolation took: every mount but /proc's and /dev's, and the
    // private /tmp and /var/tmp (and the test's directory in it), is
    // read-only; /tmp is not the host's, which holds root's files.
    let mounts = mounts_of(service.pid());
    for (target, options) in &mounts {
        let api = target == "/proc" || target.starts_with("/proc/") || target.starts_with("/dev");
        let private_tmp = target == "/tmp" || target.starts_with("/tmp/") || target == "/var/tmp";
        if !(api || private_tmp) || target == "/proc/sys" {
            assert!(
                options.split(',').any(|o| o == "ro"),
                "{target} is writable: {options}"
            );
        }
    }
    assert!(mounts.iter().any(|(target, _)| target == "/dev/shm"));
    assert!(mounts.iter().any(|(target, _)| target == "/tmp"));
    // ProtectHome=yes: the home directories are mounts of their own, empty.
    for home in ["/home", "/root"] {
        if Path::new(home).is_dir() {
            assert!(mounts.iter().any(|(target, _)| target == home), "{home}");
        }
    }
    let procmonds_tmp = format!("/proc/{}/root{}", service.pid(), root_only.exe.display());
    assert!(
        !Path::new(&procmonds_tmp).exists(),
        "procmond's /tmp is the host's: it holds {}",
        root_only.exe.display()
    );

    // Root's process: its image path and command line, and a hash of its
    // image, which only root may read.
    let seen = root_only.seen_by(&mut agent);
    assert!(seen.accessible, "{seen:?}");
    assert_eq!(seen.user_id.as_deref(), Some("0"));
    assert_eq!(seen.executable_path.as_deref(), root_only.exe.to_str());
    assert_eq!(seen.command_line[2], root_only.arg, "{seen:?}");
    let image = verified(&mut agent, root_only.sleeper.pid);
    assert_eq!(
        image.executable_hash.as_deref(),
        Some(sha256sum(&root_only.exe).as_str()),
        "{image:?}"
    );
    assert!(image.file_exists, "{image:?}");
    // Root's agent asks about a file only root may read, by path.
    assert!(
        root_only
            .hash_check(&mut agent)
            .expect("hash check of a root-only file")
    );

    // Every process, as root sees it: each pid in /proc before the
    // enumerate and after it is listed, and accessible wherever a root
    // collector finds it so.
    let before = proc_processes();
    let listed = records(&mut agent, None);
    let as_root = Collector::new(CollectorConfig::default())
        .enumerate(None, false)
        .expect("enumerate as root");
    let after = proc_processes();
    let missing: Vec<u32> = alive_throughout(&before, &after)
        .into_iter()
        .filter(|pid| !listed.iter().any(|r| r.pid == *pid))
        .collect();
    assert!(missing.is_empty(), "procmond does not list {missing:?}");
    let hidden: Vec<u32> = listed
        .iter()
        .filter(|r| !r.accessible && after.contains_key(&r.pid))
        .filter(|r| {
            as_root
                .iter()
                .any(|root| root.pid == r.pid && root.accessible)
        })
        .map(|r| r.pid)
        .collect();
    assert!(
        hidden.is_empty(),
        "accessible to root, not to procmond: {hidden:?}"
    );
    drop(agent);

    let rtprio = service.rtprio;
    let log = service.stop();
    // LimitRTPRIO= is what lets the event thread run real-time; where this
    // test may not set it, procmond says it runs without.
    if rtprio {
        assert!(!log.contains("not real-time"), "{log}");
    } else {
        assert!(
            log.contains("the process event thread is not real-time"),
            "{log}"
        );
        println!("LimitRTPRIO= not reproduced: no CAP_SYS_RESOURCE to raise RLIMIT_RTPRIO");
    }
    assert!(log.contains("activated=true"), "{log}");
}

#[test]
fn on_a_socket_root_made_the_agent_checks_the_uid_procmond_answers_as() {
    let Some(service) = Isolated::start(&[]) else {
        return;
    };
    // This test (root) made the listening socket, so SO_PEERCRED names root,
    // which is trusted; the hello comes from procmond as nobody, who is not.
    match Agent::connect(&service.socket) {
        Err(ClientError::Control(ControlError::UntrustedServer { uid, pid })) => {
            assert_eq!((uid, pid), (NOBODY, service.pid()));
        }
        other => panic!("a procmond run as nobody, untrusted: {other:?}"),
    }
    let mut agent = agent(&service.socket);
    assert_eq!(agent.server_pid(), service.pid());
    assert_eq!(agent.status().expect("status").pid, service.pid());
    drop(agent);
    let log = service.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// The system calls the unit's `SystemCallFilter=` lines allow, as
/// systemd reads them: the first line an allow list, each later `~` line
/// taken out of it, each later plain line added; groups (`@system-service`)
/// expanded by `systemd-analyze` itself.
fn unit_allowed_syscalls() -> BTreeSet<String> {
    let mut allowed = BTreeSet::new();
    for (i, line) in unit_lines("SystemCallFilter").iter().enumerate() {
        let (deny, list) = match line.strip_prefix('~') {
            Some(list) => (true, list),
            None => (false, line.as_str()),
        };
        assert!(i > 0 || !deny, "the unit's first SystemCallFilter= denies");
        let mut names = BTreeSet::new();
        for item in list.split_whitespace() {
            expand_syscalls(item, &mut names);
        }
        if deny {
            allowed.retain(|name| !names.contains(name));
        } else {
            allowed.extend(names);
        }
    }
    assert!(allowed.len() > 100, "the unit allows only {allowed:?}");
    allowed
}

/// The raw values of the unit's `key=` lines, one per line.
fn unit_lines(key: &str) -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd/procmond.service");
    fs::read_to_string(&unit)
        .expect("read procmond.service")
        .lines()
        .filter_map(|line| Some(line.strip_prefix(key)?.strip_prefix('=')?.to_owned()))
        .collect()
}

/// Adds `item`'s system calls to `names`: itself, or a group's members
/// (nested groups too) as `systemd-analyze syscall-filter` lists them.
fn expand_syscalls(item: &str, names: &mut BTreeSet<String>) {
    if !item.starts_with('@') {
        names.insert(item.to_owned());
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", item])
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze (the systemd package)");
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {item}"
    );
    // The group's name, then its members, one a line; comments start `#`.
    for member in text(&out.stdout).lines().skip(1).map(str::trim) {
        if !member.is_empty() && !member.starts_with('#') {
            expand_syscalls(member, names);
        }
    }
}

/// Every system call in an `strace -f` log made once process `pid` had
/// exec'd procmond (from `/proc/self/fd/4`): procmond forks and execs
/// nothing, so each later line is its own or its threads'. As (name,
/// line).
fn procmond_calls(trace: &str, pid: u32) -> Vec<(String, String)> {
    let mut lines = trace.lines();
    assert!(
        lines.any(|line| traced(line).is_some_and(|(by, call)| {
            by == pid && call.starts_with("execve(\"/proc/self/fd/4\"") && call.ends_with("= 0")
        })),
        "no exec of procmond by {pid} in the trace"
    );
    lines
        .filter_map(|line| {
            // `PID name(args) = result` or `PID name(args <unfinished ...>`;
            // resumptions, signals and exits name no new call.
            let (_, call) = traced(line)?;
            let (name, _) = call.split_once('(')?;
            let is_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            is_name.then(|| (name.to_owned(), line.to_owned()))
        })
        .collect()
}

/// A line of an `strace -f` log: the process it is about, and the rest.
fn traced(line: &str) -> Option<(u32, &str)> {
    let (pid, rest) = line.split_once(' ')?;
    Some((pid.parse().ok()?, rest.trim_start()))
}

/// The unit's seccomp options are applied by systemd alone, which does not
/// run here; what can be shown is that procmond, run as the unit runs it
/// and doing each kind of work (every task, status, a monitor stream, a
/// changes-only poll, SIGTERM), makes no system call the unit's
/// `SystemCallFilter=` refuses (with `SystemCallErrorNumber=EPERM` a
/// refused call fails quietly: `capset` did, so procmond kept
/// `CAP_NET_ADMIN` under the unit), maps no memory both writable and
/// executable (`MemoryDenyWriteExecute=`), opens sockets of the unit's
/// `RestrictAddressFamilies=` only, and makes no namespace, personality or
/// mode change (`RestrictNamespaces=`, `LockPersonality=`,
/// `RestrictSUIDSGID=`): `strace -f` records every call.
#[test]
fn procmond_makes_no_system_call_the_units_filters_refuse() {
    if !skip_support::is_root_or_skip("tracing procmond") {
        return;
    }
    if Command::new("strace").arg("-V").output().is_err() {
        skip_support::skip("no strace here (apt install strace)");
        return;
    }
    let allowed = unit_allowed_syscalls();
    let families = unit_values("RestrictAddressFamilies");
    assert!(!families.is_empty(), "the unit restricts no address family");
    let caps = unit_capabilities();
    let root_only = RootOnly::new();
    let traces = TempDir::new("service-trace");
    let trace = traces.join("strace.log");
    let Some(service) = Isolated::start_traced(&caps, Some(&trace)) else {
        return;
    };
    let pid = service.pid();
    let mut agent = agent(&service.socket);
    let status = agent.status().expect("status");
    assert!(
        !status.capabilities.iter().any(|cap| cap == "CAP_NET_ADMIN"),
        "{:?}",
        status.capabilities
    );
    let seen = root_only.seen_by(&mut agent);
    assert!(seen.accessible, "{seen:?}");
    let hashed: Vec<_> = agent
        .enumerate(only_pid(root_only.sleeper.pid), true)
        .expect("enumerate with hashes")
        .collect::<Result<_, _>>()
        .expect("records");
    assert!(hashed[0].executable_hash.is_some(), "{hashed:?}");
    verified(&mut agent, root_only.sleeper.pid);
    assert!(root_only.hash_check(&mut agent).expect("hash check"));
    let mut monitor = agent
        .monitor(&[root_only.sleeper.pid], Duration::from_millis(10))
        .expect("monitor");
    let event = monitor
        .next_event(Instant::now() + WAIT)
        .expect("a monitor event");
    assert!(event.is_some(), "no snapshot within {WAIT:?}");
    monitor.cancel().expect("cancel the monitor");
    for _ in 0..2 {
        agent
            .enumerate_changes(None, Default::default())
            .expect("a changes-only enumerate");
    }
    drop(agent);
    service.stop();

    // The tracer is not this process's child, and nothing signals its last
    // write: its log ends with procmond's exit, looked for every 10 ms.
    let deadline = Instant::now() + WAIT;
    let log = loop {
        let log = fs::read_to_string(&trace).unwrap_or_default();
        let exit = |line| {
            traced(line).is_some_and(|(by, rest)| by == pid && rest.starts_with("+++ exited"))
        };
        if log.lines().any(exit) {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "strace never logged procmond's exit; it ends: {:#?}",
            log.lines().rev().take(5).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let calls = procmond_calls(&log, pid);
    let names: BTreeSet<&str> = calls.iter().map(|(name, _)| name.as_str()).collect();
    println!(
        "procmond made {} calls of {} kinds: {names:?}",
        calls.len(),
        names.len()
    );
    for needed in ["capset", "socket", "sendmsg", "futex", "openat"] {
        assert!(names.contains(needed), "no {needed} traced: {names:?}");
    }
    let refused: Vec<&(String, String)> = calls
        .iter()
        .filter(|(name, _)| !allowed.contains(name))
        .collect();
    assert!(
        refused.is_empty(),
        "calls SystemCallFilter= refuses: {refused:#?}"
    );
    // MemoryDenyWriteExecute= refuses a mapping both writable and
    // executable, making an existing one executable, and executable SysV
    // shared memory.
    let write_exec: Vec<&String> = calls
        .iter()
        .filter(|(name, line)| match name.as_str() {
            "mmap" => line.contains("PROT_WRITE") && line.contains("PROT_EXEC"),
            "mprotect" | "pkey_mprotect" => line.contains("PROT_EXEC"),
            "shmat" => line.contains("SHM_EXEC"),
            _ => false,
        })
        .map(|(_, line)| line)
        .collect();
    assert!(
        write_exec.is_empty(),
        "calls MemoryDenyWriteExecute= refuses: {write_exec:#?}"
    );
    let other_families: Vec<&String> = calls
        .iter()
        .filter(|(name, line)| {
            (name == "socket" || name == "socketpair")
                && !families
                    .iter()
                    .any(|family| line.contains(&format!("({family},")))
        })
        .map(|(_, line)| line)
        .collect();
    assert!(
        other_families.is_empty(),
        "sockets of other families: {other_families:#?}"
    );
    // RestrictNamespaces=, LockPersonality=, RestrictSUIDSGID=: no new
    // namespace, no personality, no mode change at all.
    let restricted: Vec<&String> = calls
        .iter()
        .filter(|(name, line)| {
            [
                "unshare",
                "setns",
                "personality",
                "chmod",
                "fchmod",
                "fchmodat",
                "fchmodat2",
            ]
            .contains(&name.as_str())
                || (name.starts_with("clone") && line.contains("CLONE_NEW"))
        })
        .map(|(_, line)| line)
        .collect();
    assert!(
        restricted.is_empty(),
        "calls the unit restricts: {restricted:#?}"
    );
}

#[test]
fn with_no_capabilities_procmond_degrades_with_clear_errors() {
    let root_only = RootOnly::new();
    let Some(service) = Isolated::start(&[]) else {
        return;
    };
    let mut agent = agent(&service.socket);
    let status = agent.status().expect("status");
    assert_eq!(status.euid, NOBODY);
    assert!(status.capabilities.is_empty(), "{:?}", status.capabilities);
    // The kernel decides whether a listener without CAP_NET_ADMIN may have
    // process events (6.18 here refuses it; some kernels let anyone
    // listen): polling instead says why, once.
    // (Checked in the log once procmond has stopped.)
    let source = agent.event_source();

    // Root's process is listed, without what only the kernel's ptrace
    // check would let procmond read.
    let seen = root_only.seen_by(&mut agent);
    assert!(!seen.accessible, "{seen:?}");
    assert_eq!(seen.executable_path, None, "{seen:?}");
    assert_eq!(seen.user_id.as_deref(), Some("0"));
    let image = verified(&mut agent, root_only.sleeper.pid);
    assert_eq!(image.executable_hash, None, "{image:?}");
    // The root-only file in the host's /tmp: without CAP_SYS_PTRACE the
    // agent's root is out of reach, so the path is looked up in procmond's
    // private /tmp, and the failed task says so.
    match root_only.hash_check(&mut agent) {
        Err(ClientError::TaskFailed { message, .. }) => {
            assert!(
                message.contains(
                    "is out of reach: procmond may not ptrace-read it (no CAP_SYS_PTRACE)"
                ),
                "{message}"
            );
        }
        other => panic!("a hash check of a path procmond cannot see: {other:?}"),
    }
    // One procmond sees (the host's /dev/shm is in its /dev), but may not
    // read: permission denied.
    let shm = ShmFile::root_only();
    let check = ProtoHashCheck {
        expected_hash: String::new(),
        hash_algorithm: "sha256".into(),
        executable_path: shm.0.display().to_string(),
    };
    match agent.hash_check(check) {
        Err(ClientError::TaskFailed { message, .. }) => {
            assert!(message.contains("permission denied"), "{message}");
        }
        other => panic!("a hash check procmond may not read: {other:?}"),
    }
    // And it serves on, through the binary too: exit 2 with the cause.
    let out = Collected::new(
        spawn_retrying(
            Command::new(env!("CARGO_BIN_EXE_daemoneye-agent"))
                .args(["--trust-server-uid", &NOBODY.to_string(), "--socket"])
                .arg(&service.socket)
                .arg("hash-check")
                .arg(&root_only.secret)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap(),
    )
    .output_within(WAIT, "daemoneye-agent hash-check");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr)
            .contains("is out of reach: procmond may not ptrace-read it (no CAP_SYS_PTRACE)"),
        "{}",
        text(&out.stderr)
    );
    assert!(!records(&mut agent, None).is_empty());
    drop(agent);
    let log = service.stop();
    assert!(!log.contains("panicked"), "{log}");
    let polling_why = log.contains("polling /proc instead") && log.contains("needs CAP_NET_ADMIN");
    match source {
        EventSource::Connector => assert!(!polling_why, "{log}"),
        EventSource::Polling => assert!(polling_why, "{log}"),
        other => panic!("event source {other:?}"),
    }
}

#[test]
fn a_passed_socket_is_served_with_ready_watchdog_and_stopping_and_outlives_procmond() {
    let dir = TempDir::new("service-activation");
    let (listener, socket) = listening_socket(&dir);
    let mut notifications = Notifications::bind(&dir);
    // 200 ms: procmond beats every 100 ms.
    let start = |notifications: &Notifications| {
        let mut launch = Launch::new().passing(listener.try_clone().unwrap(), ListenPid::Own);
        launch.notify = Some(notifications.path.clone());
        launch.watchdog_usec = Some(200_000);
        launch.spawn()
    };
    let mut procmond = start(&notifications);
    procmond = notifications.wait_for("READY=1", procmond);
    let mut agent = Agent::connect(&socket).expect("connect on the passed socket");
    // SO_PEERCRED names whoever made the listening socket (this test here,
    // systemd under the unit); the agent takes procmond's pid from the
    // credentials the kernel attached to its hello.
    assert_eq!(agent.server_pid(), procmond.pid());
    assert_eq!(agent.status().expect("status").pid, procmond.pid());
    let me = records(&mut agent, only_pid(std::process::id()));
    assert_eq!(me.len(), 1, "{me:?}");
    // Beats keep coming from the accept loop while it serves.
    for _ in 0..3 {
        procmond = notifications.wait_for("WATCHDOG=1", procmond);
    }
    assert_eq!(
        notifications.count("READY=1"),
        1,
        "{:?}",
        notifications.seen
    );
    kill(Pid::from_raw(procmond.pid() as i32), Signal::SIGTERM).unwrap();
    procmond = notifications.wait_for("STOPPING=1", procmond);
    let out = procmond.output_within(WAIT, "procmond after SIGTERM");
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(agent);
    // systemd's socket stays, as it was: a connect made while no procmond
    // runs waits in the backlog, and the next procmond serves it.
    assert!(socket.exists(), "procmond removed the socket systemd owns");
    let waiting = UnixStream::connect(&socket).expect("connect while procmond is down");
    notifications.seen.clear();
    let mut procmond = start(&notifications);
    procmond = notifications.wait_for("READY=1", procmond);
    let (_channel, welcome) = Connector::new("waiting")
        .handshake(waiting)
        .expect("the connect made while procmond was down is served");
    assert_eq!(welcome.fds.len(), 2, "a ring's two descriptors");
    let mut agent = Agent::connect(&socket).expect("connect to the next procmond");
    assert_eq!(agent.status().expect("status").pid, procmond.pid());
    assert_eq!(records(&mut agent, only_pid(std::process::id())).len(), 1);
    drop(agent);
    let out = stop(procmond);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn without_a_watchdog_procmond_sends_no_beats() {
    let dir = TempDir::new("service-no-watchdog");
    let (listener, socket) = listening_socket(&dir);
    let mut notifications = Notifications::bind(&dir);
    let mut launch = Launch::new().passing(listener, ListenPid::Own);
    launch.notify = Some(notifications.path.clone());
    let mut procmond = launch.spawn();
    procmond = notifications.wait_for("READY=1", procmond);
    // A task round trip: the loop has run past its start.
    let mut agent = Agent::connect(&socket).unwrap();
    records(&mut agent, only_pid(std::process::id()));
    drop(agent);
    kill(Pid::from_raw(procmond.pid() as i32), Signal::SIGTERM).unwrap();
    procmond = notifications.wait_for("STOPPING=1", procmond);
    assert_eq!(
        notifications.seen,
        ["READY=1", "STOPPING=1"],
        "only these two"
    );
    let out = procmond.output_within(WAIT, "procmond after SIGTERM");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// procmond's exit code and stderr when it is passed `fd`.
fn passed(fd: impl Into<OwnedFd>, listen_fds: Option<&'static str>) -> (Option<i32>, String) {
    let mut launch = Launch::new().passing(fd, ListenPid::Own);
    launch.listen_fds = listen_fds;
    let out = launch
        .spawn()
        .output_within(WAIT, "procmond given a bad socket");
    (out.status.code(), text(&out.stderr))
}

#[test]
fn a_passed_descriptor_that_is_no_listening_unix_stream_socket_is_a_clear_error() {
    let dir = TempDir::new("service-bad-fd");
    let (stream, _peer) = UnixStream::pair().unwrap();
    let datagram = UnixDatagram::unbound().unwrap();
    let (pipe, _write) = nix::unistd::pipe().unwrap();
    let need = "procmond needs a listening Unix stream socket (ListenStream=PATH, Accept=no)";
    for (fd, what) in [
        (OwnedFd::from(stream), "a socket that does not listen"),
        (OwnedFd::from(datagram), "not a stream socket"),
        (pipe, "not a socket"),
    ] {
        let (code, stderr) = passed(fd, None);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "procmond: descriptor 3 from the service manager is {what}; {need}"
            )),
            "{what}: {stderr}"
        );
    }
    let (listener, _) = listening_socket(&dir);
    let (code, stderr) = passed(listener, Some("2"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("passed 2 descriptors (LISTEN_FDS); procmond serves exactly one socket"),
        "{stderr}"
    );
}

#[test]
fn a_listen_pid_of_another_process_is_ignored_and_procmond_binds_its_own_path() {
    let dir = TempDir::new("service-not-ours");
    let (listener, passed_path) = listening_socket(&dir);
    let own = dir.join("run/procmond.sock");
    let mut notifications = Notifications::bind(&dir);
    let mut launch = Launch::new().passing(listener, ListenPid::Other(1));
    launch.notify = Some(notifications.path.clone());
    launch.args = vec!["--socket".into(), own.clone().into()];
    let mut procmond = launch.spawn();
    procmond = notifications.wait_for("READY=1", procmond);
    let agent = Agent::connect(&own).expect("procmond on its own path");
    assert_eq!(agent.server_pid(), procmond.pid());
    drop(agent);
    let out = stop(procmond);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(log.contains("activated=false"), "{log}");
    assert!(!own.exists(), "procmond leaves the socket it bound");
    assert!(passed_path.exists());
}
