//! The collector run by an unprivileged user: other users' processes are
//! listed, marked inaccessible, and nothing panics.
//!
//! This file holds one test only, because it forks: with no other test
//! running, the child starts with no lock held by another thread.

mod child_support;
mod collector_support;
mod skip_support;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use collector_support::{DEADLINE, TempDir};
use daemoneye_lib::collector::{Collector, CollectorConfig, HashError};
use daemoneye_lib::proto::{ProtoHashCheck, ProtoProcessFilter};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, fork, pipe, setgid, setgroups, setuid};

const NOBODY: u32 = 65534;

/// How the child's report starts when the test cannot run here.
const SKIP: &str = "skipped:";

/// What the unprivileged child saw, one `key value` line each.
fn probe(secret: &str) -> String {
    let mut out = String::new();
    let mut collector = Collector::new(CollectorConfig::default());
    let all = match collector.enumerate(None, false) {
        Ok(all) => all,
        Err(e) => return format!("error {e}\n"),
    };
    out += &format!("uid {}\n", nix::unistd::getuid());
    out += &format!("listed {}\n", all.len());
    for (label, pid) in [("pid1", 1), ("self", std::process::id())] {
        match all.iter().find(|r| r.pid == pid) {
            Some(r) => {
                out += &format!(
                    "{label} accessible={} user={} exe={} name={}\n",
                    r.accessible,
                    r.user_id.as_deref().unwrap_or("none"),
                    r.executable_path.is_some(),
                    !r.name.is_empty(),
                );
            }
            None => out += &format!("{label} missing\n"),
        }
    }
    let pid1 = ProtoProcessFilter {
        process_names: vec![],
        pids: vec![1],
        executable_pattern: None,
    };
    match collector.verify(Some(&pid1)) {
        Ok(records) => {
            let hashed = records.iter().any(|r| r.executable_hash.is_some());
            out += &format!("verify-pid1 records={} hashed={hashed}\n", records.len());
        }
        Err(e) => out += &format!("verify-pid1 error {e}\n"),
    }
    let outcome = collector.check_hash(&ProtoHashCheck {
        expected_hash: String::new(),
        hash_algorithm: "sha256".to_string(),
        executable_path: secret.to_string(),
    });
    let denied = matches!(outcome.error, Some(HashError::PermissionDenied { .. }));
    out += &format!(
        "secret denied={denied} success={}\n",
        outcome.result.success
    );
    out
}

/// The forked child: drop to nobody, probe, report through `report`, exit.
fn child_main(report: OwnedFd, secret: &str) -> ! {
    let code = catch_unwind(AssertUnwindSafe(|| {
        let mut report = File::from(report);
        let switched = setgroups(&[])
            .and_then(|()| setgid(Gid::from_raw(NOBODY)))
            .and_then(|()| setuid(Uid::from_raw(NOBODY)));
        let text = match switched {
            // A user namespace without uid 65534 mapped: not this test's
            // business, so it is skipped.
            Err(nix::errno::Errno::EINVAL) => {
                format!("{SKIP} cannot switch to uid {NOBODY}: EINVAL\n")
            }
            Err(e) => panic!("switching to uid {NOBODY}: {e}"),
            Ok(()) => probe(secret),
        };
        report.write_all(text.as_bytes()).expect("write report");
    }))
    .map_or(101, |()| 0);
    // Exit here, never returning into the test harness's copy in the child.
    std::process::exit(code)
}

#[test]
fn unprivileged_enumerate_sees_root_processes_as_inaccessible() {
    if !skip_support::is_root_or_skip(&format!("switching to uid {NOBODY}")) {
        return;
    }
    let dir = TempDir::new("nobody");
    let secret = dir.join("secret");
    fs::write(&secret, b"root only").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let secret = secret.to_str().unwrap().to_string();
    // Warm up in the parent, so the child does no first-time initialisation.
    Collector::new(CollectorConfig::default())
        .enumerate(None, false)
        .expect("enumerate as root");

    let (read_end, write_end) = pipe().expect("pipe");
    // SAFETY: this test binary runs this single test, so no other thread is
    // inside the allocator or any other lock at the fork (libtest's main
    // thread only waits for this one); glibc's malloc is also reset in the
    // child by its fork handlers. That includes the collector: sysinfo's
    // `multithread` feature (a rayon pool whose idle threads could hold
    // locks) is off, as Cargo.toml builds sysinfo with
    // `default-features = false` and only `system` (`cargo tree -e features
    // -i rayon` finds nothing). The child only runs Rust code and exits with
    // `process::exit`, never returning into the harness.
    let child = match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(read_end);
            child_main(write_end, &secret)
        }
        ForkResult::Parent { child } => child,
    };
    drop(write_end);

    // Read the report until the child closes the pipe, within the deadline.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let read = File::from(read_end).read_to_string(&mut text);
        let _ = tx.send(read.map(|_| text));
    });
    let report = match rx.recv_timeout(DEADLINE) {
        Ok(read) => read.expect("read report"),
        Err(_) => {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            panic!("the unprivileged child reported nothing within {DEADLINE:?}");
        }
    };
    // The pipe closed: the child has exited or is exiting; reap it.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waitpid(child, None));
    });
    let status = rx
        .recv_timeout(DEADLINE)
        .expect("child exit within the deadline");
    assert_eq!(status, Ok(WaitStatus::Exited(child, 0)), "report: {report}");
    if let Some(reason) = report.strip_prefix(SKIP) {
        skip_support::skip(reason.trim());
        return;
    }

    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], format!("uid {NOBODY}"), "{report}");
    let listed: usize = lines[1]
        .strip_prefix("listed ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(listed > 1, "{report}");
    assert_eq!(
        lines[2], "pid1 accessible=false user=0 exe=false name=true",
        "{report}"
    );
    assert_eq!(
        lines[3],
        format!("self accessible=true user={NOBODY} exe=true name=true"),
        "{report}"
    );
    assert_eq!(lines[4], "verify-pid1 records=1 hashed=false", "{report}");
    assert_eq!(lines[5], "secret denied=true success=false", "{report}");
}
