//! The producer/consumer pair, as two real processes: this example re-runs
//! itself as procmond (the server, in a child process, on a private socket),
//! then acts as daemoneye-agent: it enumerates every process and prints a
//! short table, polls enumerate at 100 Hz for 3 s and prints the per-poll
//! latency (p50/p99) and records per second, then stops procmond with
//! SIGTERM and checks that it exited cleanly.
//!
//! ```sh
//! cargo run --release --example pair
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use daemoneye_lib::client::Agent;
use daemoneye_lib::server::{Server, ServerConfig};
use daemoneye_lib::sys::pidfd::PidFd;
use daemoneye_lib::text::escape_controls;
use nix::sys::signal::{self, SigSet, Signal};
use nix::unistd::Pid;

const ROLE_FLAG: &str = "--procmond";
const READY: &str = "procmond ready";
const DEADLINE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some(ROLE_FLAG) => match args.get(2) {
            Some(path) => procmond(Path::new(path)),
            None => Err("usage: pair --procmond SOCKET".into()),
        },
        _ => agent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pair: {error}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The child: procmond until SIGTERM or SIGINT.
fn procmond(socket: &Path) -> Result<()> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;
    let server = Server::bind(ServerConfig::new(socket))?;
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

/// The parent: daemoneye-agent.
fn agent() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("daemoneye-pair-{}", std::process::id()));
    let socket = dir.join("procmond.sock");
    let mut child = Command::new(std::env::current_exe()?)
        .arg(ROLE_FLAG)
        .arg(&socket)
        .stdout(Stdio::piped())
        .spawn()?;
    let outcome = run_agent(&mut child, &socket);
    let stopped = stop(child);
    // The directory is ours alone; procmond leaves its socket lock file in it.
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    stopped
}

fn run_agent(child: &mut Child, socket: &PathBuf) -> Result<()> {
    wait_ready(child)?;
    let mut agent = Agent::connect(socket)?;
    println!(
        "procmond (pid {}) on {}",
        agent.server_pid(),
        socket.display()
    );

    let records = agent
        .enumerate(None, false)?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Kernel threads (no command line) fill the first pids; show user processes.
    let shown: Vec<_> = records
        .iter()
        .filter(|r| !r.command_line.is_empty())
        .take(10)
        .collect();
    println!(
        "\n{} processes ({} with a command line); the first {}:",
        records.len(),
        records
            .iter()
            .filter(|r| !r.command_line.is_empty())
            .count(),
        shown.len()
    );
    println!(
        "{:>7} {:>7} {:<16} {:>9}  COMMAND",
        "PID", "PPID", "NAME", "RSS_KIB"
    );
    for r in shown {
        // A process chose these: escaped, so it cannot rewrite the table.
        let command = escape_controls(&r.command_line.join(" ")).into_owned();
        println!(
            "{:>7} {:>7} {:<16} {:>9}  {}",
            r.pid,
            r.ppid.map_or("-".into(), |p| p.to_string()),
            escape_controls(&r.name)
                .chars()
                .take(16)
                .collect::<String>(),
            r.memory_usage
                .map_or("-".into(), |m| (m / 1024).to_string()),
            command.chars().take(60).collect::<String>()
        );
    }

    // Poll at 100 Hz for 3 s.
    let period = Duration::from_millis(10);
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut total = 0usize;
    let mut next = start;
    while start.elapsed() < Duration::from_secs(3) {
        let sent = Instant::now();
        let mut count = 0;
        for record in agent.enumerate(None, false)? {
            record?;
            count += 1;
        }
        latencies.push(sent.elapsed());
        total += count;
        next += period;
        if let Some(pause) = next.checked_duration_since(Instant::now()) {
            thread::sleep(pause); // pacing, not synchronisation
        }
    }
    let busy: Duration = latencies.iter().sum();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "\n{} polls in {:.2} s: latency p50 {:?}, p99 {:?}; {:.0} records/s while polling ({:.0} records per poll)",
        latencies.len(),
        start.elapsed().as_secs_f64(),
        pct(0.50),
        pct(0.99),
        total as f64 / busy.as_secs_f64(),
        total as f64 / latencies.len() as f64,
    );
    Ok(())
}

/// Reads the child's ready line, within [`DEADLINE`].
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
        Ok(line) => Err(format!("procmond did not start (said {line:?})").into()),
        Err(_) => Err(format!("procmond not ready within {DEADLINE:?}").into()),
    }
}

/// SIGTERM, then wait for the exit within [`DEADLINE`] and check it.
fn stop(mut child: Child) -> Result<()> {
    let pidfd = PidFd::open(child.id())?;
    signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    if !pidfd.wait_exit(DEADLINE)? {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("procmond did not exit within {DEADLINE:?} of SIGTERM").into());
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("procmond exited with {status}").into());
    }
    println!("procmond stopped cleanly ({status})");
    Ok(())
}
