//! The process event source against the real kernel: real children, a real
//! second netlink socket as the spoofer, a real fork storm for loss, a real
//! user namespace for the refusal. Run as root in the initial namespaces.

mod child_support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use child_support::Collected;
use daemoneye_lib::collector::{
    Decoder, Event, EventSource, EventSourceConfig, LossReason, ProcEvent, StopError,
    SubscribeError,
};
use daemoneye_lib::sys::cn_proc::{self, layout};
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};

/// How long any one wait in these tests may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// An event source whose handler forwards every event into a channel.
fn source_with(config: EventSourceConfig) -> (EventSource, Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let source = EventSource::start(config, move |event| {
        let _ = tx.send(event);
    })
    .expect("subscribing as root in the initial namespaces");
    (source, rx)
}

fn source() -> (EventSource, Receiver<Event>) {
    source_with(EventSourceConfig::default())
}

/// Receives events until `done` says so, failing the test at the deadline.
/// Returns every process event received, in order.
fn collect_until(
    rx: &Receiver<Event>,
    what: &str,
    mut done: impl FnMut(&ProcEvent) -> bool,
) -> Vec<ProcEvent> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Process(p)) => {
                seen.push(p.event);
                if done(&p.event) {
                    return seen;
                }
            }
            Ok(Event::Lost { reason }) => {
                panic!("events lost while waiting for {what}: {reason:?}")
            }
            Ok(Event::Failed { error }) => panic!("event source failed: {error}"),
            Ok(Event::Subscribed | Event::Tick(_)) => {}
            Err(RecvTimeoutError::Timeout) => panic!("{what} not seen within {DEADLINE:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("event thread ended"),
        }
    }
}

/// A child killed and reaped when the test ends, even by a panic.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[&str]) -> Reaped {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    Reaped(child)
}

/// The Fork (as child), Exec and Exit events of `pid`, in order.
fn lifecycle_of(events: &[ProcEvent], pid: u32) -> Vec<ProcEvent> {
    events
        .iter()
        .filter(|e| match e {
            ProcEvent::Fork { child_tgid, .. } => *child_tgid == pid,
            ProcEvent::Exec { tgid } | ProcEvent::Exit { tgid, .. } => *tgid == pid,
            _ => false,
        })
        .copied()
        .collect()
}

fn is_exit_of(pid: u32) -> impl FnMut(&ProcEvent) -> bool {
    move |event| matches!(event, ProcEvent::Exit { tgid, .. } if *tgid == pid)
}

#[test]
fn a_child_is_seen_forked_execd_and_exited_in_order() {
    let (source, rx) = source();
    let mut child = spawn("/bin/true", &["x"]);
    let pid = child.0.id();
    let events = collect_until(&rx, "the child's exit", is_exit_of(pid));
    assert!(child.0.wait().unwrap().success());
    let mine = lifecycle_of(&events, pid);
    assert_eq!(
        mine,
        [
            ProcEvent::Fork {
                parent_tgid: std::process::id(),
                child_tgid: pid
            },
            ProcEvent::Exec { tgid: pid },
            ProcEvent::Exit {
                tgid: pid,
                exit_code: 0,
                exit_signal: 17 // SIGCHLD
            },
        ],
        "all events: {events:?}"
    );
    let stats = source.stats();
    assert!(stats.events >= 3, "{stats:?}");
    assert_eq!(stats.spoofed + stats.malformed, 0, "{stats:?}");
    source.stop().unwrap();
}

#[test]
fn every_one_of_500_short_lived_processes_is_seen_to_exec_and_exit() {
    const N: usize = 500;
    let (source, rx) = source();
    let script = format!("i=0; while [ $i -lt {N} ]; do /bin/true; i=$((i+1)); done");
    let mut shell = spawn("/bin/sh", &["-c", &script]);
    let sh = shell.0.id();
    // The shell's exit comes after every child's: it reaps each first.
    let events = collect_until(&rx, "the shell's exit", is_exit_of(sh));
    assert!(shell.0.wait().unwrap().success());
    let mut forked = HashSet::new();
    let mut execd = HashSet::new();
    let mut exited = HashSet::new();
    for event in &events {
        match *event {
            ProcEvent::Fork {
                parent_tgid,
                child_tgid,
            } if parent_tgid == sh => {
                forked.insert(child_tgid);
            }
            ProcEvent::Exec { tgid } if forked.contains(&tgid) => {
                execd.insert(tgid);
            }
            ProcEvent::Exit { tgid, .. } if forked.contains(&tgid) => {
                assert!(execd.contains(&tgid), "{tgid} exited before its exec");
                exited.insert(tgid);
            }
            _ => {}
        }
    }
    assert_eq!(forked.len(), N, "forks seen");
    assert_eq!(execd.len(), N, "execs seen");
    assert_eq!(exited.len(), N, "exits seen");
    let stats = source.stats();
    assert_eq!(stats.overruns + stats.sequence_gaps, 0, "{stats:?}");
    source.stop().unwrap();
}

/// A well-formed exec event for a pid that cannot exist.
const FAKE_PID: u32 = 4_000_000;

#[test]
fn a_spoofed_event_from_a_local_socket_is_counted_and_dropped() {
    let (source, rx) = source();
    let forged = layout::event(layout::PROC_EVENT_EXEC, 0, 1, 1, &[FAKE_PID, FAKE_PID]);
    // The same bytes from the kernel's port would be an event.
    let mut decoder = Decoder::new();
    let mut decoded = Vec::new();
    decoder.decode(&forged, Some(0), false, &mut |e| decoded.push(e));
    assert!(
        matches!(decoded[..], [Event::Process(p)] if p.event == ProcEvent::Exec { tgid: FAKE_PID }),
        "{decoded:?}"
    );

    let spoofer = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::CONNECTOR),
    )
    .unwrap();
    rustix::net::bind(&spoofer, &SocketAddrNetlink::new(0, 0)).unwrap();
    let to = SocketAddrNetlink::new(source.port(), 0);
    let sent = rustix::net::sendto(&spoofer, &forged, SendFlags::empty(), &to).unwrap();
    assert_eq!(sent, forged.len());
    // Datagrams are received in order: once a child started after the
    // forgery has exited, the forgery has been decoded.
    let mut child = spawn("/bin/true", &[]);
    let pid = child.0.id();
    let events = collect_until(&rx, "the marker child's exit", is_exit_of(pid));
    child.0.wait().unwrap();
    assert!(
        !events.contains(&ProcEvent::Exec { tgid: FAKE_PID }),
        "the forgery became an event"
    );
    assert_eq!(source.stats().spoofed, 1, "{:?}", source.stats());
    source.stop().unwrap();
}

#[test]
fn a_fork_storm_into_a_tiny_buffer_is_reported_as_lost() {
    // The handler holds on its first event until the storm is over, so the
    // kernel's messages pile up in a buffer of a few kilobytes.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let mut held = false;
    let config = EventSourceConfig {
        recv_buffer_bytes: 4096,
        ..EventSourceConfig::default()
    };
    let source = EventSource::start(config, move |event| {
        if !held {
            held = true;
            let _ = release_rx.recv_timeout(DEADLINE);
        }
        let _ = tx.send(event);
    })
    .unwrap();
    let script = "i=0; while [ $i -lt 2000 ]; do /bin/true & i=$((i+1)); done; wait";
    let storm = Command::new("/bin/sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = Collected::new(storm).output_within(DEADLINE, "the fork storm");
    assert!(output.status.success());
    release_tx.send(()).unwrap();

    let deadline = Instant::now() + DEADLINE;
    let reason = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Lost { reason }) => break reason,
            Ok(Event::Process(_) | Event::Subscribed | Event::Tick(_)) => {}
            Ok(Event::Failed { error }) => panic!("event source failed: {error}"),
            Err(e) => panic!("no loss reported: {e:?}; {:?}", source.stats()),
        }
    };
    let stats = source.stats();
    match reason {
        LossReason::Overrun => assert!(stats.overruns >= 1, "{stats:?}"),
        LossReason::SequenceGap { missed, .. } => {
            assert!(stats.sequence_gaps >= 1 && missed > 0, "{stats:?}")
        }
    }
    source.stop().unwrap();
}

#[test]
fn stop_returns_promptly_while_idle() {
    let config = EventSourceConfig {
        stop_timeout: Duration::from_secs(5),
        ..EventSourceConfig::default()
    };
    let (source, rx) = source_with(config);
    // Ok means the thread ended within the stop timeout, not by timing out.
    source.stop().unwrap();
    // The handler (and with it the channel's sender) is gone.
    loop {
        match rx.recv_timeout(DEADLINE) {
            Ok(_) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("handler still alive after stop"),
        }
    }
}

#[test]
fn stop_gives_up_on_a_handler_that_does_not_return() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let config = EventSourceConfig {
        stop_timeout: Duration::from_millis(200),
        ..EventSourceConfig::default()
    };
    let source = EventSource::start(config, move |_| {
        let _ = entered_tx.send(());
        let _ = release_rx.recv_timeout(DEADLINE);
    })
    .unwrap();
    let mut child = spawn("/bin/true", &[]);
    child.0.wait().unwrap();
    entered_rx.recv_timeout(DEADLINE).expect("handler called");
    let result = source.stop();
    assert!(
        matches!(result, Err(StopError::TimedOut { .. })),
        "{result:?}"
    );
    drop(release_tx);
}

/// Runs this test binary's ignored test `name` in a child, under `wrapper`
/// (a command and its arguments, or none), with extra environment `env`;
/// returns its output, having checked that it passed.
fn run_child_test(wrapper: &[&str], env: &[(&str, &str)], name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(&exe);
            command
        }
        None => Command::new(&exe),
    };
    command
        .args(child_support::ignored_test_args(name))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = Collected::new(command.spawn().unwrap()).output_within(DEADLINE, name);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{name} failed:\n{text}");
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
    text
}

/// The parent's user namespace (its `/proc/self/ns/user` link), passed to
/// the child so it can check it is in another.
const PARENT_USER_NS: &str = "CN_PROC_TEST_PARENT_USER_NS";

#[test]
fn in_a_user_namespace_subscription_fails_with_a_typed_error() {
    let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
    let text = run_child_test(
        &["unshare", "--user", "--map-root-user"],
        &[(PARENT_USER_NS, ours.to_str().unwrap())],
        "child_subscribe_in_user_namespace",
    );
    assert!(text.contains("REFUSED:"), "{text}");
}

#[test]
#[ignore = "run in a user namespace by in_a_user_namespace_subscription_fails_with_a_typed_error"]
fn child_subscribe_in_user_namespace() {
    let user_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
    let parent_ns = std::env::var_os(PARENT_USER_NS).expect("run by the parent test");
    assert_ne!(
        user_ns.as_os_str(),
        parent_ns,
        "not in a user namespace of its own"
    );
    let config = EventSourceConfig {
        ack_timeout: Duration::from_millis(500),
        ..EventSourceConfig::default()
    };
    match EventSource::start(config, |_| {}) {
        Ok(_) => panic!("subscribed from a user namespace"),
        Err(error @ (SubscribeError::NoAck { .. } | SubscribeError::PermissionDenied { .. })) => {
            println!("REFUSED: {error}");
        }
        Err(other) => panic!("unexpected error: {other:?}"),
    }
}

#[test]
fn the_environment_switch_refuses_subscription() {
    let text = run_child_test(
        &[],
        &[(cn_proc::DISABLE_ENV, "off")],
        "child_subscribe_switched_off",
    );
    assert!(text.contains("REFUSED:"), "{text}");
}

#[test]
#[ignore = "run with the switch set by the_environment_switch_refuses_subscription"]
fn child_subscribe_switched_off() {
    assert!(cn_proc::disabled_by_env());
    match EventSource::start(EventSourceConfig::default(), |_| {}) {
        Err(error @ SubscribeError::Disabled) => println!("REFUSED: {error}"),
        other => panic!("expected Disabled: {other:?}"),
    }
}

#[test]
fn uid_gid_and_comm_changes_of_a_process_are_seen() {
    let (source, rx) = source();
    let mut child = spawn(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/sh",
            "-c",
            "printf worker > /proc/$$/comm",
        ],
    );
    let pid = child.0.id();
    let events = collect_until(&rx, "the child's exit", is_exit_of(pid));
    assert!(child.0.wait().unwrap().success());
    let mine: Vec<_> = events
        .iter()
        .filter(|e| match e {
            ProcEvent::Uid { tgid, .. }
            | ProcEvent::Gid { tgid, .. }
            | ProcEvent::Comm { tgid, .. } => *tgid == pid,
            _ => false,
        })
        .collect();
    let mut worker = [0u8; 16];
    worker[..6].copy_from_slice(b"worker");
    // setpriv sets the uid, then the gid; the shell then renames itself.
    assert_eq!(
        mine,
        [
            &ProcEvent::Uid {
                tgid: pid,
                ruid: 65534,
                euid: 65534
            },
            &ProcEvent::Gid {
                tgid: pid,
                rgid: 65534,
                egid: 65534
            },
            &ProcEvent::Comm {
                tgid: pid,
                comm: worker
            },
        ]
    );
    assert_eq!(daemoneye_lib::collector::comm_name(&worker), b"worker");
    source.stop().unwrap();
}

#[test]
fn a_thread_of_this_process_is_not_reported() {
    let (source, rx) = source();
    let before = source.stats().thread_events;
    let tid = std::thread::spawn(|| rustix::thread::gettid().as_raw_nonzero().get() as u32)
        .join()
        .unwrap();
    let mut child = spawn("/bin/true", &[]);
    let pid = child.0.id();
    let events = collect_until(&rx, "the marker child's exit", is_exit_of(pid));
    child.0.wait().unwrap();
    let about_tid = lifecycle_of(&events, tid);
    assert!(about_tid.is_empty(), "{about_tid:?}");
    // Its start and its exit, at least (other tests' threads add more).
    assert!(
        source.stats().thread_events >= before + 2,
        "{:?}",
        source.stats()
    );
    source.stop().unwrap();
}

#[test]
fn an_exec_from_a_non_leader_thread_is_reported_for_the_process() {
    let (source, rx) = source();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(child_support::ignored_test_args("child_exec_from_a_thread"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = Reaped(command.spawn().unwrap());
    let pid = child.0.id();
    // The first exit of the tgid is the old leader's; wait for the second.
    let mut exits = 0;
    let events = collect_until(&rx, "the child's final exit", |e| {
        if matches!(e, ProcEvent::Exit { tgid, .. } if *tgid == pid) {
            exits += 1;
        }
        exits == 2
    });
    child.0.wait().unwrap();
    let mine = lifecycle_of(&events, pid);
    let exit = ProcEvent::Exit {
        tgid: pid,
        exit_code: 0,
        exit_signal: 17,
    };
    let exec = ProcEvent::Exec { tgid: pid };
    // The test binary's exec; then the thread's exec makes the old leader
    // exit first (the caveat `ProcEvent::Exit` documents), and /bin/true's
    // exit ends it.
    assert_eq!(
        mine,
        [
            ProcEvent::Fork {
                parent_tgid: std::process::id(),
                child_tgid: pid
            },
            exec,
            exit,
            exec,
            exit
        ],
    );
    source.stop().unwrap();
}

#[test]
#[ignore = "run by an_exec_from_a_non_leader_thread_is_reported_for_the_process"]
fn child_exec_from_a_thread() {
    use std::os::unix::process::CommandExt;
    let error = std::thread::spawn(|| Command::new("/bin/true").exec())
        .join()
        .unwrap();
    panic!("exec failed: {error}");
}
