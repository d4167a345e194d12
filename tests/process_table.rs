//! procmond's live process table fed by the kernel's process events, with
//! real processes: every short-lived exec is reported with its new image,
//! fork / exec / exit come in order, forks without exec, reused pids, uid
//! changes and lost events leave the table telling the truth.
//!
//! These need the process connector (root in the initial namespaces). Where
//! it cannot be had they say so and stop, except under `CI=true`, where
//! that is a failure.

mod child_support;
mod collector_support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use collector_support::{
    LineReader, Running, TempDir, alive_throughout, copy_executable, proc_processes,
};
use daemoneye_lib::collector::{
    Collector, CollectorConfig, ProcessTable, SharedHashCache, SourceKind, TableConfig, TableStats,
    TreeEvent, TreeMonitor,
};
use daemoneye_lib::proto::{ProtoProcessFilter, ProtoProcessRecord};

/// The tests of this file one at a time: each measures what a table sees
/// of processes, and another's fork storm would slow its event thread.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A table fed by events, or `None` (test skipped) where the kernel refuses
/// them outside CI.
fn event_table(config: TableConfig) -> Option<(std::sync::MutexGuard<'static, ()>, ProcessTable)> {
    let serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    let table = ProcessTable::start(&config);
    if table.source() == SourceKind::Connector {
        return Some((serial, table));
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI runs as root: the process connector must be available"
    );
    eprintln!("skipped: no process connector here (not root, or not in the initial namespaces)");
    None
}

fn collector(table: &ProcessTable) -> Collector {
    Collector::with_table(
        CollectorConfig::default(),
        table.clone(),
        SharedHashCache::new(16),
    )
}

fn only(pid: u32) -> ProtoProcessFilter {
    ProtoProcessFilter {
        process_names: vec![],
        pids: vec![pid],
        executable_pattern: None,
    }
}

/// The record of `pid` in an enumerate now, if it is in the table.
fn record_of(collector: &mut Collector, pid: u32) -> Option<ProtoProcessRecord> {
    collector
        .enumerate(Some(&only(pid)), false)
        .expect("enumerate")
        .into_iter()
        .next()
}

/// Collects the monitor's events until `done` says so, or `within` passes
/// (then the test fails, naming what it had).
fn events_until(
    tree: &mut TreeMonitor,
    batch: Duration,
    within: Duration,
    mut done: impl FnMut(&[TreeEvent]) -> bool,
) -> Vec<TreeEvent> {
    let deadline = Instant::now() + within;
    let mut events = Vec::new();
    while !done(&events) {
        assert!(
            Instant::now() < deadline,
            "not done within {within:?}; {} events so far",
            events.len()
        );
        let until = (Instant::now() + Duration::from_millis(100)).min(deadline);
        events.extend(tree.next_batch(batch, until).expect("next batch"));
    }
    events
}

/// `sh` that has said `word` (so it runs) and waits for a line.
fn shell_saying(word: &str) -> (Running, LineReader) {
    let mut shell = Running::spawn(
        Command::new("/bin/sh")
            .args(["-c", &format!("echo {word}; read _")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut lines = LineReader::new(shell.child().stdout.take().expect("stdout"));
    assert_eq!(lines.line(), word);
    (shell, lines)
}

fn is_true_x(record: &ProtoProcessRecord) -> bool {
    record
        .executable_path
        .as_deref()
        .is_some_and(|path| path.ends_with("/true"))
        && record.command_line == ["/bin/true", "x"]
}

#[test]
fn every_one_of_a_thousand_short_lived_execs_is_reported_with_its_image() {
    const N: usize = 1000;
    // A /bin/true lives about a millisecond. Whether its image can be read
    // in that time depends on the event thread being on a CPU then, which
    // on a shared VM the host can take away (steal time, counted and
    // printed per trial). So the share is measured in up to three trials:
    // each must reach 95 % and the best 99 %. An event thread that is not
    // real-time (nice -10: 889, 894 and 912 of 1000) fails the first, one
    // trial with the host busy (970 of 1000 is the worst seen) does not.
    // Every other check holds in every trial.
    const TRIALS: usize = 3;
    let Some((_serial, table)) = event_table(TableConfig::default()) else {
        return;
    };
    let mut collector = collector(&table);
    let mut shares = Vec::new();
    for trial in 1..=TRIALS {
        let stolen = steal_ticks();
        let with_image = short_lived_execs(&mut collector, N);
        let stolen = steal_ticks().saturating_sub(stolen);
        let share = with_image as f64 / N as f64;
        println!(
            "trial {trial}: {with_image} of {N} reported with /bin/true's image and command \
             line; {stolen} ticks of steal time meanwhile"
        );
        shares.push(share);
        assert!(share >= 0.95, "only {share:.3} carried the new image");
        if share >= 0.99 {
            return;
        }
    }
    // The event thread runs real-time (SCHED_FIFO 1) and reads each burst's
    // new images first: 1000 of 1000 on this 2-core machine in a debug
    // build, busy or not, most trials.
    panic!("in {TRIALS} trials, no more than {shares:?} carried the new image");
}

/// The CPU time the hypervisor gave other guests while this one wanted it
/// (`/proc/stat`'s steal column, in clock ticks), 0 where not counted.
fn steal_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    stat.lines()
        .next()
        .and_then(|cpu| cpu.split_whitespace().nth(8))
        .and_then(|steal| steal.parse().ok())
        .unwrap_or(0)
}

/// Runs `n` `/bin/true x` one after another under a monitor of every
/// process; checks that each was reported started, then exited, in that
/// order; returns how many were reported with `/bin/true`'s image.
fn short_lived_execs(collector: &mut Collector, n: usize) -> usize {
    let mut tree = collector.monitor(&[]).expect("monitor");
    // One after another; each pid printed once the process has been reaped.
    let mut script = Running::spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "i=0; while [ $i -lt {n} ]; do /bin/true x & p=$!; wait $p; echo $p; i=$((i+1)); done"
            ))
            .stdout(Stdio::piped()),
    );
    let mut lines = LineReader::new(script.child().stdout.take().expect("stdout"));
    let pids: Vec<u32> = (0..n)
        .map(|_| lines.line().trim().parse().expect("a pid"))
        .collect();
    assert!(script.wait().success());
    let wanted: HashSet<u32> = pids.iter().copied().collect();
    let events = events_until(
        &mut tree,
        Duration::from_millis(10),
        Duration::from_secs(30),
        |events| {
            let exited: HashSet<u32> = events
                .iter()
                .filter_map(|e| match e {
                    TreeEvent::Exited(r) if wanted.contains(&r.pid) => Some(r.pid),
                    _ => None,
                })
                .collect();
            exited.len() == wanted.len()
        },
    );
    let mut started = HashSet::new();
    let mut with_image = HashSet::new();
    let mut order: HashMap<u32, Vec<&'static str>> = HashMap::new();
    for event in &events {
        let record = event.record();
        if !wanted.contains(&record.pid) {
            continue;
        }
        let kind = match event {
            TreeEvent::Started(_) => "started",
            TreeEvent::Exec(_) => "exec",
            TreeEvent::Exited(_) => "exited",
        };
        order.entry(record.pid).or_default().push(kind);
        if matches!(event, TreeEvent::Started(_)) {
            started.insert(record.pid);
        }
        if !matches!(event, TreeEvent::Exited(_)) && is_true_x(record) {
            with_image.insert(record.pid);
        }
    }
    let missing: Vec<_> = pids.iter().filter(|p| !started.contains(p)).collect();
    assert!(missing.is_empty(), "never reported started: {missing:?}");
    for (pid, kinds) in &order {
        assert_eq!(kinds.first(), Some(&"started"), "pid {pid}: {kinds:?}");
        assert_eq!(kinds.last(), Some(&"exited"), "pid {pid}: {kinds:?}");
    }
    with_image.len()
}

#[test]
fn a_fork_that_execs_later_is_started_then_exec_then_exited() {
    let Some((_serial, table)) = event_table(TableConfig::default()) else {
        return;
    };
    let mut collector = collector(&table);
    let me = std::process::id();
    let mut tree = collector.monitor(&[me]).expect("monitor");
    let mut shell = Running::spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg("read _; exec /bin/sleep 0.2")
            .stdin(Stdio::piped()),
    );
    let pid = shell.pid;
    // The shell is reported as itself first...
    let events = events_until(
        &mut tree,
        Duration::from_millis(10),
        Duration::from_secs(10),
        |events| {
            events
                .iter()
                .any(|e| matches!(e, TreeEvent::Started(r) if r.pid == pid))
        },
    );
    let started = events
        .iter()
        .find(|e| e.record().pid == pid)
        .unwrap()
        .record();
    assert_eq!(started.ppid, Some(me));
    assert_eq!(
        started.command_line,
        ["/bin/sh", "-c", "read _; exec /bin/sleep 0.2"]
    );
    // ...then as what it execs, then its exit.
    let stdin = shell.child().stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("write");
    stdin.flush().expect("flush");
    let events = events_until(
        &mut tree,
        Duration::from_millis(10),
        Duration::from_secs(10),
        |events| {
            events
                .iter()
                .any(|e| matches!(e, TreeEvent::Exited(r) if r.pid == pid))
        },
    );
    let ours: Vec<&TreeEvent> = events.iter().filter(|e| e.record().pid == pid).collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
    let TreeEvent::Exec(exec) = ours[0] else {
        panic!("expected an exec first: {ours:?}");
    };
    assert!(
        exec.executable_path
            .as_deref()
            .is_some_and(|p| p.ends_with("/sleep")),
        "{exec:?}"
    );
    assert_eq!(exec.command_line, ["/bin/sleep", "0.2"]);
    assert_eq!(exec.name, "sleep");
    assert!(matches!(ours[1], TreeEvent::Exited(_)));
    assert!(shell.wait().success());
}

#[test]
fn a_fork_without_exec_is_in_the_table_as_a_copy_of_its_parent() {
    let Some((_serial, table)) = event_table(TableConfig::default()) else {
        return;
    };
    let mut collector = collector(&table);
    // A subshell is a fork of sh that does not exec.
    let mut shell = Running::spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg("(echo $(exec sh -c 'echo $PPID'); read _) ; exit 0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut lines = LineReader::new(shell.child().stdout.take().expect("stdout"));
    let subshell: u32 = lines.line().trim().parse().expect("the subshell's pid");
    let record = record_of(&mut collector, subshell).expect("the subshell is in the table");
    assert_eq!(record.ppid, Some(shell.pid));
    assert_eq!(record.name, "sh");
    assert_eq!(
        record.command_line,
        [
            "/bin/sh",
            "-c",
            "(echo $(exec sh -c 'echo $PPID'); read _) ; exit 0"
        ]
    );
    let parent = record_of(&mut collector, shell.pid).expect("the shell");
    assert_eq!(record.executable_path, parent.executable_path);
    assert_ne!(record.start_time, None);
    let stdin = shell.child().stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("write");
    assert!(shell.wait().success());
    // Gone from the table once reaped.
    assert_eq!(record_of(&mut collector, subshell), None);
}

#[test]
fn a_reused_pid_is_another_process() {
    let Some((_serial, table)) = event_table(TableConfig::default()) else {
        return;
    };
    let mut collector = collector(&table);
    let last_pid = "/proc/sys/kernel/ns_last_pid";
    // Other processes fork too: retry until the pid really is reused.
    for attempt in 0..50 {
        let (first, _) = shell_saying("first");
        let pid = first.pid;
        let before = record_of(&mut collector, pid).expect("the first process");
        assert_eq!(before.command_line, ["/bin/sh", "-c", "echo first; read _"]);
        drop(first);
        if std::fs::write(last_pid, (pid - 1).to_string()).is_err() {
            eprintln!("skipped: cannot write {last_pid}");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root"
            );
            return;
        }
        let (second, _) = shell_saying("second");
        if second.pid != pid {
            eprintln!("attempt {attempt}: pid {pid} went elsewhere");
            continue;
        }
        let after = record_of(&mut collector, pid).expect("the second process");
        assert_eq!(after.command_line, ["/bin/sh", "-c", "echo second; read _"]);
        return;
    }
    panic!("no pid was reused in 50 attempts");
}

#[test]
fn the_effective_uid_follows_setuid_calls_and_setuid_programs() {
    let Some((_serial, table)) = event_table(TableConfig::default()) else {
        return;
    };
    let mut collector = collector(&table);
    // Drops to 65534 without an exec: only the uid event can tell.
    let mut dropper = Running::spawn(
        Command::new("python3")
            .arg("-c")
            .arg("import os,sys\nprint('root', flush=True)\nsys.stdin.readline()\nos.setresuid(65534,65534,65534)\nprint('dropped', flush=True)\nsys.stdin.readline()")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut lines = LineReader::new(dropper.child().stdout.take().expect("stdout"));
    assert_eq!(lines.line(), "root");
    assert_eq!(
        record_of(&mut collector, dropper.pid)
            .unwrap()
            .user_id
            .as_deref(),
        Some("0")
    );
    let stdin = dropper.child().stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("write");
    stdin.flush().expect("flush");
    assert_eq!(lines.line(), "dropped");
    assert_eq!(
        record_of(&mut collector, dropper.pid)
            .unwrap()
            .user_id
            .as_deref(),
        Some("65534")
    );
    drop(dropper);

    // A setuid-root program run by uid 65534 has effective uid 0.
    let dir = TempDir::new("suid");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let program = dir.join("suid-sleep");
    copy_executable("/bin/sleep", &program);
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let escalated = Running::spawn(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&program)
            .arg("30"),
    );
    let pid = escalated.pid;
    let deadline = Instant::now() + Duration::from_secs(10);
    let record = loop {
        let record = record_of(&mut collector, pid).expect("the setuid program");
        if record.name == "suid-sleep" {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "setpriv never exec'd: {record:?}"
        );
        std::thread::sleep(Duration::from_millis(5)); // waiting on another process's exec
    };
    let nosuid = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.contains(" /tmp ") && l.contains("nosuid"))
        })
        .unwrap_or(false);
    if nosuid {
        eprintln!("/tmp is nosuid: the program runs as 65534");
        assert_eq!(record.user_id.as_deref(), Some("65534"));
    } else {
        assert_eq!(record.user_id.as_deref(), Some("0"), "{record:?}");
    }
    drop(escalated);
}

#[test]
fn lost_events_are_counted_and_a_resync_makes_the_table_match_proc() {
    // A receive buffer of a few datagrams and a fork storm: the kernel drops
    // events while the event thread reads each exec's details.
    let Some((_serial, table)) = event_table(TableConfig {
        receive_buffer_bytes: 4096,
        ..TableConfig::default()
    }) else {
        return;
    };
    let mut collector = collector(&table);
    let before = table.stats();
    // The event thread (real-time, so it keeps up) demoted to SCHED_IDLE
    // and put on the storm's CPU: it runs only when the storm leaves that
    // CPU idle, so the kernel must drop events.
    let events_thread = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(Result::ok)
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == "procmond-events")
        })
        .expect("the event thread")
        .file_name()
        .to_string_lossy()
        .into_owned();
    for (tool, args) in [
        ("chrt", &["--idle", "-p", "0", &events_thread][..]),
        ("taskset", &["-p", "-c", "0", &events_thread][..]),
    ] {
        let status = Command::new(tool)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect(tool);
        assert!(status.success(), "{tool} {args:?}");
    }
    let storm = Running::spawn(Command::new("taskset").args(["-c", "0", "/bin/sh", "-c"]).arg(
        "i=0; while [ $i -lt 300 ]; do /bin/true & /bin/true & /bin/true & i=$((i+1)); done; wait",
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while table.stats().resyncs == before.resyncs {
        assert!(
            Instant::now() < deadline,
            "no resync: {:?}",
            table.event_stats()
        );
        std::thread::sleep(Duration::from_millis(10)); // waiting for the storm's effect
    }
    assert!(storm.wait().success());
    let events = table.event_stats().expect("an event source");
    assert!(events.overruns + events.sequence_gaps > 0, "{events:?}");
    // After the resync the table equals /proc: every process alive before
    // and after the table's answer is in it, and it holds nothing that was
    // in neither listing (an exited process kept by mistake).
    let (shell, _) = shell_saying("after");
    let before = proc_processes();
    let table_pids: HashSet<u32> = collector
        .enumerate(None, false)
        .expect("enumerate")
        .iter()
        .map(|r| r.pid)
        .collect();
    let after = proc_processes();
    let missing: Vec<_> = alive_throughout(&before, &after)
        .into_iter()
        .filter(|pid| !table_pids.contains(pid))
        .collect();
    assert!(
        missing.is_empty(),
        "alive but not in the table: {missing:?}"
    );
    let lingering: Vec<_> = table_pids
        .iter()
        .filter(|pid| !before.contains_key(pid) && !after.contains_key(pid))
        .collect();
    assert!(
        lingering.is_empty(),
        "in the table, not in /proc: {lingering:?}"
    );
    assert!(table_pids.contains(&shell.pid));
}

/// What one safety-net round did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    /// The kernel's task count agreed with the events heard: nothing listed.
    Tally,
    /// `/proc` listed, no known process read.
    Census,
    /// Every known process read again.
    Full,
}

/// Waits (bounded) for the table's next safety-net round and says what it
/// did; `last` moves on to the stats after it.
fn next_round(table: &ProcessTable, last: &mut TableStats, processes: u64) -> Round {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no safety-net round in 30 s");
        // No signal marks a round; they come every 50 ms.
        std::thread::sleep(Duration::from_millis(5));
        let now = table.stats();
        let scans = now.scans - last.scans;
        let tallies = now.tallies - last.tallies;
        if scans + tallies == 0 {
            continue;
        }
        assert_eq!(scans + tallies, 1, "two rounds between samples");
        let checks = now.scan_checks - last.scan_checks;
        *last = now;
        return match (tallies, checks) {
            (1, _) => Round::Tally,
            (_, c) if c > processes / 2 => Round::Full,
            (_, 0) => Round::Census,
            (_, c) => panic!("a census read {c} known processes"),
        };
    }
}

fn safety_net_table() -> Option<(std::sync::MutexGuard<'static, ()>, ProcessTable)> {
    event_table(TableConfig {
        scan_interval: Duration::from_millis(50),
        ..TableConfig::default()
    })
}

#[test]
fn the_safety_net_tallies_or_lists_proc_each_round_and_checks_every_process_every_twelfth() {
    let Some((_serial, table)) = safety_net_table() else {
        return;
    };
    // Enough processes that a round which checks them all stands out.
    let sleepers: Vec<Running> = (0..100)
        .map(|_| Running::spawn(Command::new("/usr/bin/sleep").arg("1000")))
        .collect();
    let processes = table.stats().processes;
    assert!(processes > 100, "{processes}");
    let mut last = table.stats();
    // 24 in a row hold exactly two full ones, twelve apart.
    let rounds: Vec<Round> = (0..24)
        .map(|_| next_round(&table, &mut last, processes))
        .collect();
    // The first round seen may be any of the twelve.
    let full: Vec<usize> = (0..rounds.len())
        .filter(|&i| rounds[i] == Round::Full)
        .collect();
    assert_eq!(full.len(), 2, "{rounds:?}");
    assert_eq!(full[1] - full[0], 12, "{rounds:?}");
    // A round without forks or exits since the one before lists nothing;
    // some of 24 rounds 50 ms apart are such, even on a busy host.
    assert!(rounds.contains(&Round::Tally), "{rounds:?}");
    drop(sleepers);
}

/// A zombie moves the kernel's task count (it counts until reaped) but not
/// the events heard (its exit was): the round after it lists `/proc`, and
/// once it is reaped and listed again, rounds tally once more. A tally that
/// always agreed would fail here.
#[test]
fn a_round_after_the_task_count_moved_unheard_lists_proc() {
    let Some((_serial, table)) = safety_net_table() else {
        return;
    };
    let processes = table.stats().processes;
    let mut last = table.stats();
    let deadline = Instant::now() + Duration::from_secs(30);
    while next_round(&table, &mut last, processes) != Round::Tally {
        assert!(Instant::now() < deadline, "no round tallied in 30 s");
    }
    // Exits at once; not reaped until `zombie` is waited for.
    let mut zombie = Command::new("/bin/true").spawn().expect("spawn /bin/true");
    let pidfd = daemoneye_lib::sys::pidfd::PidFd::open(zombie.id()).expect("pidfd");
    assert!(
        pidfd.wait_exit(Duration::from_secs(10)).expect("pidfd"),
        "/bin/true ran on"
    );
    // A round that began before the exit may still finish after it; the
    // one after that hears the exit (or is not caught up) and lists.
    let after = [
        next_round(&table, &mut last, processes),
        next_round(&table, &mut last, processes),
    ];
    assert!(
        after.iter().any(|r| *r != Round::Tally),
        "the zombie's rounds agreed: {after:?}"
    );
    zombie.wait().expect("reap");
    drop(pidfd);
}

#[test]
fn a_just_forked_child_is_in_the_next_enumerate() {
    let Some((_serial, table)) = event_table(TableConfig::default()) else {
        return;
    };
    let mut collector = collector(&table);
    for _ in 0..20 {
        // It says it runs, so its exec (and the kernel's event) is done.
        let mut child = Running::spawn(
            Command::new("/bin/sh")
                .args(["-c", "echo up; read _"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let mut lines = LineReader::new(child.child().stdout.take().expect("stdout"));
        assert_eq!(lines.line(), "up");
        let record = record_of(&mut collector, child.pid).expect("no wait for the event thread");
        assert_eq!(record.name, "sh");
        assert_eq!(record.command_line, ["/bin/sh", "-c", "echo up; read _"]);
        // Its memory is the new image's, read after the exec, not what the
        // fork copied from this (much larger) test process.
        let memory = record.memory_usage.expect("memory read");
        assert!(
            memory < own_rss() / 2,
            "{memory} bytes, this process has {}",
            own_rss()
        );
        drop(child);
    }
}

/// A poll's quick path (nothing queued on the socket: no hand-off to the
/// event thread) must still wait for events the thread has received and
/// not yet applied. Two fork storms keep the thread applying bursts, so
/// a child's fork is often among the events in its hands when the poll
/// comes.
#[test]
fn a_child_spawned_during_a_fork_storm_is_in_the_next_enumerate() {
    let Some((_serial, table)) = event_table(TableConfig::default()) else {
        return;
    };
    let mut collector = collector(&table);
    let storms: Vec<Running> = (0..2)
        .map(|_| {
            Running::spawn(Command::new("/bin/sh").args([
                "-c",
                "while :; do /bin/true; /bin/true; /bin/true; /bin/true; done",
            ]))
        })
        .collect();
    for round in 0..300 {
        // spawn returns once the child has exec'd: its fork is queued.
        let child = Running::spawn(Command::new("/usr/bin/sleep").arg("1000"));
        assert!(
            record_of(&mut collector, child.pid).is_some(),
            "round {round}: pid {} forked before the poll is missing",
            child.pid
        );
    }
    drop(storms);
}

/// This process's resident memory in bytes.
fn own_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}
