//! How well procmond sees processes, and what a poll costs, in one run:
//!
//! - `floor`: reading `/proc/<pid>/stat` of every process through a kept
//!   descriptor (`pread` + parse), per process, back to back and at the
//!   polls' pace of one pass every 100 ms (`floor_paced_us`: what a 10 Hz
//!   poll's reads cost, with caches and an idle CPU as such a poll finds
//!   them); beside it `schedstat` + `statm` (the alternative for CPU and
//!   memory) and a plain scan.
//! - `capture`: N `/bin/true x` run one after another while an agent
//!   monitors every process, with procmond's event source and with polling
//!   at 10 ms: the share of their pids reported, and the share reported
//!   with the new image's path and command line.
//! - exec-to-agent latency (in the `capture` rows): to the agent holding
//!   the first event that carries the new image, from the kernel's
//!   timestamp of the exec (`from_exec`, heard on a connector subscription
//!   of the bench's own) and from the `spawn` call (`from_spawn`, an upper
//!   bound: fork, exec and the loader included): with the monitor's
//!   interval at 0, the agent's reading thread ordinary and real-time
//!   (`agent_realtime`, `SCHED_FIFO` 1 where allowed), and at the default
//!   10 ms with it real-time.
//! - `enumerate`: `Agent::enumerate` p50 / p99 with 0, 1,000 and 10,000
//!   extra processes (polling: 0 and 1,000; sleepers this bench forks and
//!   reaps), per process
//!   beside the floor measured with the same processes; and procmond's CPU
//!   share (from its `/proc/<pid>/stat`) while an agent polls at 10 Hz and
//!   while nothing polls; `enumerate_slope`: what each extra process adds
//!   to a poll's p50 (from the smallest host to the largest) and the fixed
//!   cost of a poll that is left.
//! - `poll_100hz`: enumerates every 10 ms for 2 s, changes only (after a
//!   first whole one) and whole: polls reached, records per poll, latency,
//!   and the CPU of the agent (the polling thread) and of procmond.
//! - `safety_net`: procmond's CPU share with nothing polling on the largest
//!   host, its safety net every second (ten times the default) for twelve
//!   rounds (eleven tallies, or censuses of `/proc` where the task count
//!   moved, and one full check), and a tenth of it as the estimate at the
//!   default 10 s.
//!
//! procmond runs as a child process (this binary re-executed). Run as root
//! for the event source (else procmond polls and says so):
//!
//! ```sh
//! cargo run --release --example proc_bench            # table, about 90 s
//! cargo run --release --example proc_bench -- --json  # JSON lines
//! cargo run --release --example proc_bench -- --quick # fewer processes and runs
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use daemoneye_lib::client::{Agent, ChangeThresholds, ClientError, MonitorEvent};
use daemoneye_lib::collector::{
    self, Event, EventSourceConfig, ProcEvent, ProcessEvent, TableConfig,
};
use daemoneye_lib::control::EventSource;
use daemoneye_lib::server::{Server, ServerConfig};
use daemoneye_lib::sys::pidfd::PidFd;
use daemoneye_lib::sys::procfs::{self, ProcRoot};
use daemoneye_lib::sys::thread::RealtimeGuard;
use nix::sys::signal::{self, SigSet, Signal};
use nix::unistd::Pid;

const PROCMOND: &str = "--procmond";
const SLEEPERS: &str = "--sleepers";
/// procmond's mode for measuring the safety net: events, and a safety-net
/// round every second (ten times the default).
const SAFETY_NET_1S: &str = "--safety-net-1s";
const READY: &str = "ready";
const DEADLINE: Duration = Duration::from_secs(30);
/// How long procmond's idle CPU share is measured beside each enumerate row.
const IDLE_SPAN: Duration = Duration::from_secs(4);
/// Passes of the paced floor, one every 100 ms.
const PACED_PASSES: usize = 8;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some(PROCMOND) => match (args.get(2), args.get(3)) {
            (Some(socket), mode) => procmond(Path::new(socket), mode.map(String::as_str)),
            _ => Err("usage: proc_bench --procmond SOCKET [--polling | --safety-net-1s]".into()),
        },
        Some(SLEEPERS) => match args.get(2).and_then(|n| n.parse().ok()) {
            Some(n) => sleepers(n),
            None => Err("usage: proc_bench --sleepers N".into()),
        },
        _ => bench(&args[1..]),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("proc_bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Settings of one run.
struct Run {
    json: bool,
    execs: usize,
    extra: Vec<usize>,
    polls: usize,
}

fn bench(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let run = Run {
        json: args.iter().any(|a| a == "--json"),
        execs: if quick { 200 } else { 1000 },
        extra: if quick {
            vec![0, 1000]
        } else {
            vec![0, 1000, 10_000]
        },
        polls: if quick { 10 } else { 20 },
    };
    if let Some(other) = args
        .iter()
        .find(|a| !matches!(a.as_str(), "--json" | "--quick"))
    {
        return Err(format!("unknown argument {other:?} (use --json, --quick)").into());
    }
    let dir = std::env::temp_dir().join(format!("daemoneye-proc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let outcome = measure(&run, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn measure(run: &Run, dir: &Path) -> Result<()> {
    if !run.json {
        println!(
            "proc_bench: {} cores",
            thread::available_parallelism()?.get()
        );
    }
    for polling in [false, true] {
        let socket = dir.join(if polling {
            "polling.sock"
        } else {
            "events.sock"
        });
        let procmond = Procmond::start(&socket, polling.then_some("--polling"))?;
        let outcome = measure_with(run, &procmond, polling);
        procmond.stop()?;
        outcome?;
    }
    safety_net(run, dir)
}

/// procmond's CPU share with nothing polling and no process starting, on
/// the largest host of the run, with a safety-net round every second (ten
/// times the default) for twelve rounds: eleven tallies or censuses and one
/// full check.
/// The default interval's share is a tenth of it (plus what the event
/// thread does for the machine's own processes, which is in both).
fn safety_net(run: &Run, dir: &Path) -> Result<()> {
    let extra = run.extra.iter().copied().max().unwrap_or(0);
    let sleepers = Sleepers::spawn(extra)?;
    let procmond = Procmond::start(&dir.join("safety-net.sock"), Some(SAFETY_NET_1S))?;
    let span = Duration::from_secs(12);
    // Rounds that tallied and that listed or read `/proc`, from procmond's
    // status before and after (one request each, outside the span).
    let rounds = |agent: &mut Agent| -> Result<(u64, u64)> {
        let events = agent.status()?.events.unwrap_or_default();
        Ok((events.tallies, events.scans))
    };
    let mut agent = Agent::connect(&procmond.socket)?;
    let before = rounds(&mut agent)?;
    let (share, _) = cpu_share(procmond.pid, span, || {
        thread::sleep(span); // measuring an idle span
        Ok(0.0)
    })?;
    let after = rounds(&mut agent)?;
    drop(agent);
    procmond.stop()?;
    sleepers.stop()?;
    report(
        run,
        &[
            ("row", Value::S("safety_net")),
            ("source", Value::S("connector")),
            ("extra", Value::U(extra as u64)),
            ("scan_interval_s", Value::U(1)),
            ("tallies", Value::U(after.0 - before.0)),
            ("scans", Value::U(after.1 - before.1)),
            ("cpu_idle_pct", Value::F(share)),
            ("default_interval_est_pct", Value::F(share / 10.0)),
        ],
    );
    Ok(())
}

fn measure_with(run: &Run, procmond: &Procmond, polling: bool) -> Result<()> {
    let agent = Agent::connect(&procmond.socket)?;
    let source = match agent.event_source() {
        EventSource::Connector => "connector",
        EventSource::Polling => "polling",
        EventSource::Unspecified => "unspecified",
    };
    drop(agent);
    if polling != (source == "polling") && !run.json {
        println!(
            "note: procmond asked to {} uses {source}",
            if polling { "poll" } else { "use events" }
        );
    }
    // Capture and latency: the monitor's interval at 10 ms (and at 0 with
    // the event source), the agent's reading thread ordinary and, where
    // allowed, real-time as a latency-bound agent would run it.
    let rows: &[(u64, bool)] = if polling {
        &[(10, false)]
    } else {
        &[(0, false), (0, true), (10, true)]
    };
    for &(interval_ms, agent_realtime) in rows {
        let capture = capture(&procmond.socket, run.execs, interval_ms, agent_realtime)?;
        report(
            run,
            &[
                ("row", Value::S("capture")),
                ("source", Value::S(source)),
                ("interval_ms", Value::U(interval_ms)),
                ("agent_realtime", Value::B(capture.agent_realtime)),
                ("execs", Value::U(run.execs as u64)),
                ("reported", Value::F(capture.reported)),
                ("with_image", Value::F(capture.with_image)),
                ("from_exec_p50_us", Value::F(capture.from_exec_p50_us)),
                ("from_exec_p99_us", Value::F(capture.from_exec_p99_us)),
                ("from_spawn_p50_us", Value::F(capture.from_spawn_p50_us)),
                ("from_spawn_p99_us", Value::F(capture.from_spawn_p99_us)),
            ],
        );
    }
    // Enumerate beside the floor, with extra processes; (processes, poll
    // p50) of each for the slope below.
    let mut sizes: Vec<(usize, f64)> = Vec::new();
    // Polling is compared up to 1,000 extra processes: at 10,000 it only
    // shows what it did at 1,000, slower, and costs the run some 15 s.
    let extras = run
        .extra
        .iter()
        .copied()
        .filter(|&extra| !polling || extra <= 1000);
    for extra in extras {
        let sleepers = Sleepers::spawn(extra)?;
        let floor = floor()?;
        let mut agent = Agent::connect(&procmond.socket)?;
        let polls = enumerate_polls(&mut agent, run.polls)?;
        let per_process_us = polls.p50_us / polls.records.max(1) as f64;
        sizes.push((polls.records, polls.p50_us));
        report(
            run,
            &[
                ("row", Value::S("enumerate")),
                ("source", Value::S(source)),
                ("extra", Value::U(extra as u64)),
                ("processes", Value::U(polls.records as u64)),
                ("p50_ms", Value::F(polls.p50_us / 1e3)),
                ("p99_ms", Value::F(polls.p99_us / 1e3)),
                ("per_process_us", Value::F(per_process_us)),
                ("floor_stat_us", Value::F(floor.stat_us)),
                ("x_floor", Value::F(per_process_us / floor.stat_us)),
                ("floor_paced_us", Value::F(floor.stat_paced_us)),
                (
                    "x_floor_paced",
                    Value::F(per_process_us / floor.stat_paced_us),
                ),
                ("schedstat_statm_us", Value::F(floor.schedstat_statm_us)),
                ("plain_scan_us", Value::F(floor.plain_scan_us)),
            ],
        );
        // CPU share: polling at 10 Hz, then nothing.
        let polling_share = cpu_share(procmond.pid, Duration::from_secs(3), || {
            let mut next = Instant::now();
            let end = next + Duration::from_secs(3);
            let mut reached = 0u32;
            while Instant::now() < end {
                for record in agent.enumerate(None, false)? {
                    record?;
                }
                reached += 1;
                next += Duration::from_millis(100);
                if let Some(pause) = next.checked_duration_since(Instant::now()) {
                    thread::sleep(pause); // pacing, not synchronisation
                }
            }
            Ok(f64::from(reached) / 3.0)
        })?;
        // Polls at 100 Hz, changes only (after a first whole one) and
        // whole: the agent's CPU (this thread) and procmond's.
        if !polling {
            agent.enumerate_changes(None, ChangeThresholds::default())?;
            for (mode, changes_only) in [("changes", true), ("full", false)] {
                let polls = poll_at_100_hz(&mut agent, procmond.pid, changes_only)?;
                report(
                    run,
                    &[
                        ("row", Value::S("poll_100hz")),
                        ("mode", Value::S(mode)),
                        ("extra", Value::U(extra as u64)),
                        ("polls_per_s", Value::F(polls.per_s)),
                        ("records_per_poll", Value::F(polls.records)),
                        ("p50_us", Value::F(polls.p50_us)),
                        ("p99_us", Value::F(polls.p99_us)),
                        ("agent_cpu_pct", Value::F(polls.agent_cpu_pct)),
                        ("procmond_cpu_pct", Value::F(polls.procmond_cpu_pct)),
                    ],
                );
            }
        }
        drop(agent);
        // A 4 s window, mostly between safety-net rounds: their cost is
        // the `safety_net` row's.
        let idle_share = cpu_share(procmond.pid, IDLE_SPAN, || {
            thread::sleep(IDLE_SPAN); // measuring an idle span
            Ok(0.0)
        })?;
        report(
            run,
            &[
                ("row", Value::S("cpu")),
                ("source", Value::S(source)),
                ("extra", Value::U(extra as u64)),
                ("polls_per_s", Value::F(polling_share.1)),
                ("cpu_polling_10hz_pct", Value::F(polling_share.0)),
                ("cpu_idle_pct", Value::F(idle_share.0)),
            ],
        );
        sleepers.stop()?;
    }
    // What one more process adds to a poll, the fixed cost of a poll (the
    // round trip: socket, thread hand-offs, ring, wake-ups) left out.
    if let (Some(&(n0, t0)), Some(&(n1, t1))) = (sizes.first(), sizes.last())
        && n1 > n0
    {
        let slope = (t1 - t0) / (n1 - n0) as f64;
        report(
            run,
            &[
                ("row", Value::S("enumerate_slope")),
                ("source", Value::S(source)),
                ("from_processes", Value::U(n0 as u64)),
                ("to_processes", Value::U(n1 as u64)),
                ("per_extra_process_us", Value::F(slope)),
                ("fixed_ms", Value::F((t0 - slope * n0 as f64) / 1e3)),
            ],
        );
    }
    Ok(())
}

// ---- capture ----

struct Capture {
    reported: f64,
    with_image: f64,
    /// The monitor's reading thread ran real-time (asked, and allowed).
    agent_realtime: bool,
    /// From the kernel's timestamp of the exec (heard on this bench's own
    /// subscription to the process connector; NaN without one) to the
    /// agent holding the first event with the new image.
    from_exec_p50_us: f64,
    from_exec_p99_us: f64,
    /// From the spawn call: an upper bound (fork, exec and the loader
    /// included) that needs no subscription.
    from_spawn_p50_us: f64,
    from_spawn_p99_us: f64,
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of the process
/// connector's timestamps.
fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// Each pid's first exec, in `CLOCK_MONOTONIC` nanoseconds.
type ExecTimes = Arc<Mutex<HashMap<u32, u64>>>;

/// The kernel's time of each process's first exec, from a subscription of
/// this bench's own (root only; `None` where the connector is refused).
fn exec_times() -> Option<(collector::EventSource, ExecTimes)> {
    let times = ExecTimes::default();
    let sink = Arc::clone(&times);
    let source = collector::EventSource::start(EventSourceConfig::default(), move |event| {
        if let Event::Process(ProcessEvent {
            event: ProcEvent::Exec { tgid },
            timestamp_ns,
            ..
        }) = event
            && let Ok(mut times) = sink.lock()
        {
            times.entry(tgid).or_insert(timestamp_ns);
        }
    })
    .ok()?;
    Some((source, times))
}

/// What the monitor's thread hears: pid, when (both clocks), and whether
/// the record carries `/bin/true x`'s image.
type Heard = (u32, Instant, u64, bool);

/// Runs `n` `/bin/true x` one after another while a monitor of every
/// process (in another thread, its own connection, real-time when
/// `agent_realtime` and allowed) records what it hears.
fn capture(socket: &Path, n: usize, interval_ms: u64, agent_realtime: bool) -> Result<Capture> {
    let mut agent = Agent::connect(socket)?;
    let kernel = exec_times();
    let (tx, rx) = mpsc::channel::<Heard>();
    let (ready_tx, ready_rx) = mpsc::channel::<bool>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let watcher = thread::spawn(move || -> std::result::Result<(), ClientError> {
        let realtime = agent_realtime
            .then(|| RealtimeGuard::enter(1).ok())
            .flatten();
        let mut stream = agent.monitor(&[], Duration::from_millis(interval_ms))?;
        let mut ready = Some(ready_tx);
        let announce = |ready: &mut Option<mpsc::Sender<bool>>| {
            if let Some(ready) = ready.take() {
                let _ = ready.send(realtime.is_some());
            }
        };
        loop {
            if stop_rx.try_recv().is_ok() {
                return stream.cancel();
            }
            let deadline = Instant::now() + Duration::from_millis(50);
            match stream.next_event(deadline) {
                Ok(Some(MonitorEvent::Snapshot(_))) => {}
                Ok(Some(event)) => {
                    announce(&mut ready);
                    let (at, at_ns) = (Instant::now(), monotonic_ns());
                    let r = event.record();
                    let image = r
                        .executable_path
                        .as_deref()
                        .is_some_and(|p| p.ends_with("/true"))
                        && r.command_line == ["/bin/true", "x"];
                    let _ = tx.send((r.pid, at, at_ns, image));
                }
                Ok(None) => return Ok(()),
                Err(ClientError::Timeout { .. }) => announce(&mut ready),
                Err(error) => return Err(error),
            }
        }
    });
    let agent_realtime = ready_rx.recv_timeout(DEADLINE)?;
    let mut spawned = Vec::with_capacity(n);
    for _ in 0..n {
        let called = Instant::now();
        let mut child = Command::new("/bin/true").arg("x").spawn()?;
        spawned.push((child.id(), called));
        child.wait()?;
    }
    // Let the last exits arrive: the monitor's batching interval and a
    // margin.
    let settle = Instant::now() + Duration::from_millis(500 + interval_ms * 2);
    let mut heard: HashMap<u32, Option<(Instant, u64)>> = HashMap::new();
    while let Some(left) = settle.checked_duration_since(Instant::now()) {
        let Ok((pid, at, at_ns, image)) = rx.recv_timeout(left) else {
            break;
        };
        let seen = heard.entry(pid).or_insert(None);
        if image && seen.is_none() {
            *seen = Some((at, at_ns));
        }
    }
    let _ = stop_tx.send(());
    watcher.join().map_err(|_| "monitor thread panicked")??;
    let exec_ns: HashMap<u32, u64> = match kernel {
        Some((source, times)) => {
            source.stop()?;
            let times = times.lock().map_err(|_| "exec times poisoned")?;
            times.clone()
        }
        None => HashMap::new(),
    };
    let reported = spawned
        .iter()
        .filter(|(pid, _)| heard.contains_key(pid))
        .count();
    let mut from_spawn = Vec::with_capacity(n);
    let mut from_exec = Vec::with_capacity(n);
    for (pid, called) in &spawned {
        let Some((at, at_ns)) = heard.get(pid).copied().flatten() else {
            continue;
        };
        if let Some(&exec) = exec_ns.get(pid) {
            from_exec.push(at_ns.saturating_sub(exec) as f64 / 1e3);
        }
        from_spawn.push(at.saturating_duration_since(*called).as_secs_f64() * 1e6);
    }
    from_spawn.sort_by(f64::total_cmp);
    from_exec.sort_by(f64::total_cmp);
    Ok(Capture {
        reported: reported as f64 / n as f64,
        with_image: from_spawn.len() as f64 / n as f64,
        agent_realtime,
        from_exec_p50_us: percentile(&from_exec, 0.50),
        from_exec_p99_us: percentile(&from_exec, 0.99),
        from_spawn_p50_us: percentile(&from_spawn, 0.50),
        from_spawn_p99_us: percentile(&from_spawn, 0.99),
    })
}

// ---- enumerate ----

struct Polls {
    records: usize,
    p50_us: f64,
    p99_us: f64,
}

fn enumerate_polls(agent: &mut Agent, polls: usize) -> Result<Polls> {
    // One poll to warm up (and to start every process's usage window).
    let mut records = 0;
    for record in agent.enumerate(None, false)? {
        record?;
    }
    let mut times = Vec::with_capacity(polls);
    for _ in 0..polls {
        // Polls 100 ms apart, so each one reads usage afresh.
        thread::sleep(Duration::from_millis(100)); // pacing
        let start = Instant::now();
        records = 0;
        for record in agent.enumerate(None, false)? {
            record?;
            records += 1;
        }
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(Polls {
        records,
        p50_us: percentile(&times, 0.5),
        p99_us: percentile(&times, 0.99),
    })
}

struct Floor {
    stat_us: f64,
    stat_paced_us: f64,
    schedstat_statm_us: f64,
    plain_scan_us: f64,
}

/// Per process: kept-descriptor `stat` read + parse (the best of five
/// passes back to back, and the median of passes 100 ms apart, the pace of
/// the polls it is set beside); kept `schedstat` +
/// `statm`; a plain scan (open and read `stat` and `cmdline`, `readlink`
/// `exe`, `stat` the directory).
fn floor() -> Result<Floor> {
    let root = ProcRoot::open()?;
    let pids = root.pids()?;
    let open = |file: &str| -> Vec<_> {
        pids.iter()
            .filter_map(|&pid| root.open_file(pid, file).ok())
            .collect()
    };
    let mut buf = [0u8; 2048];
    let mut sink = 0u64;
    let time_per = |count: usize, f: &mut dyn FnMut() -> u64| -> f64 {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            let got = f();
            std::hint::black_box(got);
            best = best.min(start.elapsed().as_secs_f64() * 1e6 / count.max(1) as f64);
        }
        best
    };
    // Each kind's descriptors are opened (and closed) on their own, so
    // 10,000 processes fit the open-file limit whichever is measured.
    let stats = open("stat");
    let mut read_stats = || {
        for fd in &stats {
            if let Ok(n) = procfs::read_at_start(fd, &mut buf) {
                sink = sink.wrapping_add(parse_fields(&buf[..n]));
            }
        }
        sink
    };
    let stat_us = time_per(stats.len(), &mut read_stats);
    // The same pass at a poll's pace (one every 100 ms, as
    // `enumerate_polls` asks): caches and an idle CPU's wake-up as a
    // 10 Hz poll finds them.
    let mut paced = Vec::with_capacity(PACED_PASSES);
    for _ in 0..PACED_PASSES {
        thread::sleep(Duration::from_millis(100)); // pacing, as the polls
        let start = Instant::now();
        std::hint::black_box(read_stats());
        paced.push(start.elapsed().as_secs_f64() * 1e6 / stats.len().max(1) as f64);
    }
    paced.sort_by(f64::total_cmp);
    let stat_paced_us = percentile(&paced, 0.5);
    drop(stats);
    let pairs: Vec<_> = pids
        .iter()
        .filter_map(|&pid| {
            Some((
                root.open_file(pid, "schedstat").ok()?,
                root.open_file(pid, "statm").ok()?,
            ))
        })
        .collect();
    let schedstat_statm_us = time_per(pairs.len(), &mut || {
        for (a, b) in &pairs {
            if let Ok(n) = procfs::read_at_start(a, &mut buf) {
                sink = sink.wrapping_add(first_number(&buf[..n]));
            }
            if let Ok(n) = procfs::read_at_start(b, &mut buf) {
                sink = sink.wrapping_add(first_number(&buf[..n]));
            }
        }
        sink
    });
    drop(pairs);
    let plain_scan_us = time_per(pids.len(), &mut || {
        for pid in &pids {
            let dir = PathBuf::from(format!("/proc/{pid}"));
            let mut text = Vec::new();
            if let Ok(mut f) = std::fs::File::open(dir.join("stat")) {
                let _ = f.read_to_end(&mut text);
            }
            if let Ok(mut f) = std::fs::File::open(dir.join("cmdline")) {
                let _ = f.read_to_end(&mut text);
            }
            let _ = std::fs::read_link(dir.join("exe"));
            let _ = std::fs::metadata(&dir);
            sink = sink.wrapping_add(text.len() as u64);
        }
        sink
    });
    Ok(Floor {
        stat_us,
        stat_paced_us,
        schedstat_statm_us,
        plain_scan_us,
    })
}

/// utime + stime + rss of a `stat` line, parsed as procmond does (fields
/// after the last `)`).
fn parse_fields(line: &[u8]) -> u64 {
    let Some(close) = line.iter().rposition(|&b| b == b')') else {
        return 0;
    };
    line[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .enumerate()
        .filter(|(i, _)| matches!(i, 11 | 12 | 19 | 21))
        .map(|(_, f)| first_number(f))
        .sum()
}

fn first_number(text: &[u8]) -> u64 {
    text.iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |acc, &b| {
            acc.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
        })
}

/// procmond's CPU time over `work` (which runs for about `span`), as a
/// percentage of one core, and what `work` returned.
/// What [`poll_at_100_hz`] saw.
struct Polls100 {
    per_s: f64,
    records: f64,
    p50_us: f64,
    p99_us: f64,
    agent_cpu_pct: f64,
    procmond_cpu_pct: f64,
}

/// Enumerates every 10 ms for 2 s (a changes-only poll or a whole one):
/// polls reached per second, records per poll, latency, and the CPU of
/// this thread (the agent) and of procmond.
fn poll_at_100_hz(agent: &mut Agent, procmond: u32, changes_only: bool) -> Result<Polls100> {
    let thread_ns =
        || -> Result<u64> { on_cpu_ns(&std::fs::read_to_string("/proc/thread-self/schedstat")?) };
    let span = Duration::from_secs(2);
    let (mut latencies, mut records) = (Vec::new(), 0usize);
    let agent_before = thread_ns()?;
    let started = Instant::now();
    let (procmond_share, _) = cpu_share(procmond, span, || {
        let mut next = Instant::now();
        while started.elapsed() < span {
            let poll = Instant::now();
            records += if changes_only {
                agent
                    .enumerate_changes(None, ChangeThresholds::default())?
                    .changes
                    .len()
            } else {
                agent
                    .enumerate(None, false)?
                    .try_fold(0, |n, r| r.map(|_| n + 1))?
            };
            latencies.push(poll.elapsed().as_secs_f64() * 1e6);
            next += Duration::from_millis(10);
            if let Some(pause) = next.checked_duration_since(Instant::now()) {
                thread::sleep(pause); // pacing, not synchronisation
            }
        }
        Ok(0.0)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let agent_cpu = (thread_ns()? - agent_before) as f64 / 1e9;
    latencies.sort_by(f64::total_cmp);
    Ok(Polls100 {
        per_s: latencies.len() as f64 / elapsed,
        records: records as f64 / latencies.len().max(1) as f64,
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        agent_cpu_pct: agent_cpu / elapsed * 100.0,
        procmond_cpu_pct: procmond_share,
    })
}

/// The share of one core `pid` used while `work` ran (at least `span / 2`
/// is assumed, for work that returns early): the sum of its threads' time
/// on CPU from `/proc/<pid>/task/*/schedstat`, in nanoseconds (the ticks
/// of `stat` are 10 ms, too coarse for an idle process).
fn cpu_share(pid: u32, span: Duration, work: impl FnOnce() -> Result<f64>) -> Result<(f64, f64)> {
    let process_ns = || -> Result<u64> {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            // A thread that ended meanwhile has no schedstat: skipped.
            if let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) {
                total += on_cpu_ns(&text)?;
            }
        }
        Ok(total)
    };
    let (before, start) = (process_ns()?, Instant::now());
    let value = work()?;
    let elapsed = start.elapsed().max(span / 2);
    let used = process_ns()?.saturating_sub(before) as f64 / 1e9;
    Ok((used / elapsed.as_secs_f64() * 100.0, value))
}

/// The time on CPU, in ns, of a `schedstat` file's text (its first field).
fn on_cpu_ns(schedstat: &str) -> Result<u64> {
    Ok(schedstat
        .split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .ok_or("bad schedstat")?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---- output ----

enum Value {
    B(bool),
    S(&'static str),
    U(u64),
    F(f64),
}

fn report(run: &Run, fields: &[(&str, Value)]) {
    if run.json {
        let map: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::B(b) => serde_json::Value::from(*b),
                    Value::S(s) => serde_json::Value::from(*s),
                    Value::U(u) => serde_json::Value::from(*u),
                    Value::F(f) => serde_json::Value::from((f * 1000.0).round() / 1000.0),
                };
                ((*k).to_string(), v)
            })
            .collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        let line: Vec<String> = fields
            .iter()
            .map(|(k, v)| match v {
                Value::B(b) => format!("{k}={b}"),
                Value::S(s) => format!("{k}={s}"),
                Value::U(u) => format!("{k}={u}"),
                Value::F(f) => format!("{k}={f:.3}"),
            })
            .collect();
        println!("{}", line.join("  "));
    }
}

// ---- procmond and sleepers as child processes ----

/// The child: procmond until SIGTERM.
fn procmond(socket: &Path, mode: Option<&str>) -> Result<()> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;
    let mut config = ServerConfig::new(socket);
    config.table = TableConfig {
        use_connector: mode != Some("--polling"),
        scan_interval: if mode == Some(SAFETY_NET_1S) {
            Duration::from_secs(1)
        } else {
            TableConfig::default().scan_interval
        },
        ..TableConfig::default()
    };
    let server = Server::bind(config)?;
    let shutdown = server.shutdown_handle();
    thread::spawn(move || {
        if signals.wait().is_ok() {
            shutdown.trigger();
        }
    });
    println!("{READY}");
    server.run_until(&server.shutdown_handle());
    Ok(())
}

/// The child: forks `n` processes that wait for a signal, says so, and
/// waits for SIGTERM; its children die with it (`PR_SET_PDEATHSIG`).
fn sleepers(n: usize) -> Result<()> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: this process is single-threaded here (no thread was
        // started), so the child may run any code; it only calls prctl and
        // pause, both async-signal-safe, before it is killed.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                loop {
                    nix::unistd::pause();
                }
            }
            nix::unistd::ForkResult::Parent { child } => children.push(child),
        }
    }
    println!("{READY}");
    let _ = signals.wait();
    // Kill the children, then reap them before exiting: left to init, they
    // would linger as zombies that the next rows' scans list and read.
    for &child in &children {
        let _ = signal::kill(child, Signal::SIGKILL);
    }
    for child in children {
        let _ = nix::sys::wait::waitpid(child, None);
    }
    Ok(())
}

struct Procmond {
    child: Child,
    pid: u32,
    socket: PathBuf,
}

impl Procmond {
    fn start(socket: &Path, mode: Option<&str>) -> Result<Procmond> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg(PROCMOND).arg(socket).stdout(Stdio::piped());
        command.args(mode);
        let mut child = command.spawn()?;
        wait_ready(&mut child)?;
        Ok(Procmond {
            pid: child.id(),
            child,
            socket: socket.to_owned(),
        })
    }

    fn stop(self) -> Result<()> {
        stop_child(self.child)
    }
}

struct Sleepers {
    child: Option<Child>,
}

impl Sleepers {
    fn spawn(n: usize) -> Result<Sleepers> {
        if n == 0 {
            return Ok(Sleepers { child: None });
        }
        let mut child = Command::new(std::env::current_exe()?)
            .arg(SLEEPERS)
            .arg(n.to_string())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()?;
        wait_ready(&mut child)?;
        Ok(Sleepers { child: Some(child) })
    }

    fn stop(mut self) -> Result<()> {
        match self.child.take() {
            Some(child) => stop_child(child),
            None => Ok(()),
        }
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal::killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

use std::os::unix::process::CommandExt;

fn wait_ready(child: &mut Child) -> Result<()> {
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(line) if line.trim() == READY => Ok(()),
        Ok(line) => Err(format!("child did not start (said {line:?})").into()),
        Err(_) => Err(format!("child not ready within {DEADLINE:?}").into()),
    }
}

fn stop_child(mut child: Child) -> Result<()> {
    let pidfd = PidFd::open(child.id())?;
    signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    if !pidfd.wait_exit(DEADLINE)? {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("child {} did not exit within {DEADLINE:?}", child.id()).into());
    }
    child.wait()?;
    Ok(())
}
