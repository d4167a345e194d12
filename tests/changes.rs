//! Changes-only enumerates against an in-process server (real sockets,
//! rings, processes): a table applied with each poll equals a full
//! enumerate taken at the same moment, after processes started, exec'd,
//! exited and ran busy in between; nothing changed is an empty poll; a
//! reconnect starts from a whole result.

mod child_support;
mod collector_support;
mod server_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use collector_support::{Running, TempDir, copy_executable};
use daemoneye_lib::client::{
    Agent, ChangeKind, ChangeThresholds, ClientError, LiveTable, ProcessChange,
};
use daemoneye_lib::proto::{ProtoProcessFilter, ProtoProcessRecord};
use daemoneye_lib::server::{Server, ServerConfig};
use server_support::Serving;

const SLEEP: &str = "de-chg-sleep";
const SHELL: &str = "de-chg-sh";
/// The second test's sleepers, named apart: the tests run at once.
const VIEW_SLEEP: &str = "de-chgv-sleep";

/// The first test's processes.
fn ours() -> Option<ProtoProcessFilter> {
    named(&[SLEEP, SHELL])
}

fn named(names: &[&str]) -> Option<ProtoProcessFilter> {
    Some(ProtoProcessFilter {
        process_names: names.iter().map(|&name| name.into()).collect(),
        pids: vec![],
        executable_pattern: None,
    })
}

/// What must agree between the applied table and a full enumerate: all
/// but usage and collection time.
fn stable(record: &ProtoProcessRecord) -> ProtoProcessRecord {
    ProtoProcessRecord {
        cpu_usage: None,
        memory_usage: None,
        collection_time: 0,
        ..record.clone()
    }
}

fn full(agent: &mut Agent) -> BTreeMap<u32, ProtoProcessRecord> {
    full_of(agent, ours())
}

fn full_of(
    agent: &mut Agent,
    filter: Option<ProtoProcessFilter>,
) -> BTreeMap<u32, ProtoProcessRecord> {
    agent
        .enumerate(filter, false)
        .unwrap()
        .map(|record| record.map(|r| (r.pid, r)))
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Enumerates until `done` holds of the result, failing after 20 s (no
/// signal says procmond's table has caught up; it does within
/// milliseconds).
fn settle(
    agent: &mut Agent,
    done: impl Fn(&BTreeMap<u32, ProtoProcessRecord>) -> bool,
) -> BTreeMap<u32, ProtoProcessRecord> {
    settle_of(agent, ours(), done)
}

fn settle_of(
    agent: &mut Agent,
    filter: Option<ProtoProcessFilter>,
    done: impl Fn(&BTreeMap<u32, ProtoProcessRecord>) -> bool,
) -> BTreeMap<u32, ProtoProcessRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = full_of(agent, filter.clone());
        if done(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "never settled: {seen:#?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_same(table: &LiveTable, want: &BTreeMap<u32, ProtoProcessRecord>) {
    let got: Vec<_> = table.records().map(stable).collect();
    let want_stable: Vec<_> = want.values().map(stable).collect();
    assert_eq!(got, want_stable);
    for record in table.records() {
        let (Some(a), Some(b)) = (record.cpu_usage, want[&record.pid].cpu_usage) else {
            continue;
        };
        // Usage within the threshold of the last report, plus the drift of
        // the few milliseconds between the two reads.
        assert!((a - b).abs() < 10.0, "pid {}: cpu {a} vs {b}", record.pid);
    }
}

#[test]
fn an_applied_table_equals_a_full_enumerate_and_a_reconnect_starts_whole() {
    let dir = TempDir::new("changes");
    let (sleep, shell) = (dir.join(SLEEP), dir.join(SHELL));
    copy_executable("/usr/bin/sleep", &sleep);
    copy_executable("/bin/sh", &shell);
    let serving =
        Serving::start(Server::bind(ServerConfig::new(dir.join("procmond.sock"))).unwrap());
    let socket = serving.server.socket_path().to_owned();
    let mut poller = Agent::connect(&socket).unwrap();
    let mut checker = Agent::connect(&socket).unwrap();

    let mut s1 = Running::spawn(Command::new(&sleep).arg("1000"));
    let s2 = Running::spawn(Command::new(&sleep).arg("1001"));
    let mut execer = Running::spawn(
        Command::new(&shell)
            .arg("-c")
            .arg(format!("read x; exec {} 1002", sleep.display()))
            .stdin(Stdio::piped()),
    );
    let want = settle(&mut checker, |seen| seen.len() == 3);
    let mut table = LiveTable::new();
    let first = poller
        .enumerate_changes(ours(), ChangeThresholds::default())
        .unwrap();
    assert!(first.full, "the first poll on a connection is whole");
    table.apply(first);
    assert_same(&table, &want);

    // In between: one exits, one starts, one execs, one runs busy.
    s1.child().kill().unwrap();
    s1.child().wait().unwrap();
    let s3 = Running::spawn(Command::new(&sleep).arg("1003"));
    writeln!(execer.child().stdin.as_mut().unwrap(), "go").unwrap();
    let busy = Running::spawn(Command::new(&shell).args(["-c", "while :; do :; done"]));
    let (gone, started, execed, busy_pid) = (s1.pid, s3.pid, execer.pid, busy.pid);
    let want = settle(&mut checker, |seen| {
        !seen.contains_key(&gone)
            && seen.contains_key(&started)
            && seen.contains_key(&busy_pid)
            && seen.get(&execed).is_some_and(|r| {
                r.name == SLEEP && r.command_line.last().map(String::as_str) == Some("1002")
            })
    });
    let changes = poller
        .enumerate_changes(ours(), ChangeThresholds::default())
        .unwrap();
    assert!(!changes.full);
    let (updated, gone_pids): (Vec<_>, Vec<_>) = changes
        .changes
        .iter()
        .partition(|c| matches!(c, ProcessChange::Updated(_)));
    let pids = |changes: Vec<&ProcessChange>| -> Vec<u32> {
        changes.iter().map(|c| c.record().pid).collect()
    };
    let (updated, gone_pids) = (pids(updated), pids(gone_pids));
    assert_eq!(gone_pids, [gone]);
    for pid in [started, execed, busy_pid] {
        assert!(updated.contains(&pid), "{pid} not reported: {updated:?}");
    }
    assert!(
        !updated.contains(&s2.pid),
        "an unchanged sleeper was sent again"
    );
    table.apply(changes);
    assert_same(&table, &want);

    // Nothing of ours changes (the busy one gone, reported once): the next
    // poll is empty.
    drop(busy);
    settle(&mut checker, |seen| !seen.contains_key(&busy_pid));
    let changes = poller
        .enumerate_changes(ours(), ChangeThresholds::default())
        .unwrap();
    let gone_pids: Vec<u32> = changes.changes.iter().map(|c| c.record().pid).collect();
    assert_eq!(gone_pids, [busy_pid]);
    table.apply(changes);
    let quiet = poller
        .enumerate_changes(ours(), ChangeThresholds::default())
        .unwrap();
    assert!(!quiet.full && quiet.changes.is_empty(), "{quiet:?}");
    assert_same(&table, &full(&mut checker));

    // A new connection starts whole.
    drop(poller);
    let mut again = Agent::connect(&socket).unwrap();
    let first = again
        .enumerate_changes(ours(), ChangeThresholds::default())
        .unwrap();
    assert!(first.full);
    let mut fresh = LiveTable::new();
    fresh.apply(first);
    assert_eq!(fresh.len(), 3, "s2, s3 and the exec'd one");

    // A bad threshold is refused by name.
    let bad = ChangeThresholds {
        cpu_points: Some(-1.0),
        memory_fraction: None,
    };
    match again.enumerate_changes(ours(), bad) {
        Err(ClientError::TaskFailed { message, .. }) => {
            assert!(message.contains("changes.cpu_points"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop((again, checker, s2, s3, execer));
    serving.stop();
}

/// The borrowing form hands out the same changes as the owned one, and an
/// error from its closure mid-stream leaves the agent usable: the rest of
/// the stream is skipped, and the next call is answered.
#[test]
fn changes_as_views_match_the_owned_changes_and_a_closure_error_leaves_the_agent_usable() {
    let dir = TempDir::new("changes-views");
    let sleep = dir.join(VIEW_SLEEP);
    copy_executable("/usr/bin/sleep", &sleep);
    // Small frames: a listing of every process takes several, so a stop
    // at the first record leaves frames of the stream in the ring.
    let config = ServerConfig {
        ring_bytes: 64 << 10,
        max_frame_bytes: 2048,
        ..ServerConfig::new(dir.join("procmond.sock"))
    };
    let serving = Serving::start(Server::bind(config).unwrap());
    let socket = serving.server.socket_path().to_owned();
    let sleepers: Vec<_> = (0..3)
        .map(|i| Running::spawn(Command::new(&sleep).arg(format!("{}", 2000 + i))))
        .collect();
    let mut checker = Agent::connect(&socket).unwrap();
    let want = settle_of(&mut checker, named(&[VIEW_SLEEP]), |seen| seen.len() == 3);

    let mut agent = Agent::connect(&socket).unwrap();
    let mut seen = BTreeMap::new();
    let whole = agent
        .for_each_change(
            named(&[VIEW_SLEEP]),
            ChangeThresholds::default(),
            |kind, view| {
                assert_eq!(kind, ChangeKind::Updated);
                seen.insert(view.pid(), view.to_owned());
                Ok::<(), ClientError>(())
            },
        )
        .unwrap();
    assert!(whole, "the first poll on a connection is whole");
    let stable_of = |map: &BTreeMap<u32, ProtoProcessRecord>| -> Vec<ProtoProcessRecord> {
        map.values().map(stable).collect()
    };
    assert_eq!(stable_of(&seen), stable_of(&want));

    // All of every process, on a new connection (whole again), stopped by
    // the closure at the first record.
    let mut quitter = Agent::connect(&socket).unwrap();
    let mut calls = 0;
    let stopped = quitter.for_each_change(None, ChangeThresholds::default(), |_, _| {
        calls += 1;
        Err(Stop::Enough)
    });
    assert!(matches!(stopped, Err(Stop::Enough)), "{stopped:?}");
    assert_eq!(calls, 1);
    // The rest of that stream is skipped; the agent is answered again.
    quitter
        .enumerate_changes(named(&[VIEW_SLEEP]), ChangeThresholds::default())
        .unwrap();
    assert_eq!(full_of(&mut quitter, named(&[VIEW_SLEEP])).len(), 3);
    drop((agent, quitter, checker, sleepers));
    serving.stop();
}

/// A closure's own reason to stop, beside the stream's errors.
#[derive(Debug)]
enum Stop {
    Enough,
    #[allow(dead_code)] // read through Debug only
    Client(ClientError),
}

impl From<ClientError> for Stop {
    fn from(error: ClientError) -> Stop {
        Stop::Client(error)
    }
}
