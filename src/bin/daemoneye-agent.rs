//! daemoneye-agent: sends tasks to procmond and prints their results.
//!
//! Table output and error messages show names, command lines and paths with
//! their control characters escaped ([`daemoneye_lib::text`]), so a process
//! cannot rewrite its own row; JSON output is escaped as JSON.
//!
//! Exit status: 0 on success (hash-check: a match, or nothing expected),
//! 1 on a hash mismatch, 2 on any error (procmond not running, refused,
//! gone, a failed task).

use std::io::IsTerminal;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;
use tracing_subscriber::EnvFilter;

use daemoneye_lib::cli::agent::{Args, Command, Format};
use daemoneye_lib::client::{
    Agent, ChangeThresholds, ClientError, ClientOptions, Records, find_socket,
};
use daemoneye_lib::control::EventSource;
use daemoneye_lib::deadline;
use daemoneye_lib::proto::control::Status;
use daemoneye_lib::proto::{ProtoHashCheck, ProtoProcessFilter};
use daemoneye_lib::session::ProcessRecordView;
use daemoneye_lib::sys::thread::RealtimeGuard;
use daemoneye_lib::text::{error_line, escape_controls};

/// The system user `dist/systemd/procmond.service` runs procmond as.
const SERVICE_USER: &str = "daemoneye";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    match run(Args::parse()) {
        Ok(code) => code,
        // The reader of our output went away (`| head`): nothing to report.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("daemoneye-agent: {}", error_line(error.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// Whether writing our output failed because its reader is gone.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

fn run(args: Args) -> Result<ExitCode> {
    let socket = match args.socket {
        Some(path) => path,
        None => find_socket()?,
    };
    let mut trusted = args.trust_server_uids;
    // The user procmond.service runs as (the Debian package creates it).
    if let Ok(Some(user)) = nix::unistd::User::from_name(SERVICE_USER) {
        trusted.push(user.uid.as_raw());
    }
    let options = ClientOptions {
        trusted_server_uids: trusted,
        ..ClientOptions::default()
    };
    let mut agent = Agent::connect_with(&socket, options)?;
    let mut out = io::stdout().lock();
    match args.command {
        Command::Enumerate {
            names,
            pids,
            exe_pattern,
            watch: true,
            interval_ms,
            duration_s,
            format,
            ..
        } => {
            let filter = filter(names, pids, exe_pattern);
            let until = duration_s.map(|s| deadline::after(Duration::from_secs(s)));
            let interval = Duration::from_millis(interval_ms);
            if let Format::Table = format {
                writeln!(
                    out,
                    "{:<9} {:>8} {:>8}  {:<20} COMMAND",
                    "CHANGE", "PID", "PPID", "NAME"
                )?;
            }
            loop {
                let started = std::time::Instant::now();
                agent.for_each_change(
                    filter.clone(),
                    ChangeThresholds::default(),
                    |kind, view| print_tagged(&mut out, Tag::Change(kind.as_str()), &view, format),
                )?;
                out.flush()?;
                let now = std::time::Instant::now();
                if until.is_some_and(|until| now >= until) {
                    break;
                }
                // Pacing, not synchronisation: the next poll is due an
                // interval after this one began (or at the end).
                let due = started.checked_add(interval).unwrap_or(now);
                let due = until.map_or(due, |until| due.min(until));
                std::thread::sleep(due.saturating_duration_since(now));
            }
        }
        Command::Enumerate {
            names,
            pids,
            exe_pattern,
            hash,
            format,
            ..
        } => {
            let filter = filter(names, pids, exe_pattern);
            let records = agent.enumerate(filter, hash)?;
            print_records(&mut out, records, format)?;
        }
        Command::Verify { pids, format } => {
            let records = agent.verify(filter(Vec::new(), pids, None))?;
            print_records(&mut out, records, format)?;
        }
        Command::HashCheck {
            path,
            expected,
            format,
        } => {
            // procmond resolves nothing against the agent's directory.
            let path = std::path::absolute(&path)
                .with_context(|| format!("making {} absolute", path.display()))?;
            let check = ProtoHashCheck {
                expected_hash: expected.unwrap_or_default(),
                hash_algorithm: "sha256".into(),
                executable_path: path.to_string_lossy().into_owned(),
            };
            let report = agent.hash_check(check)?;
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string(&report.result)?)?,
                Format::Table => {
                    let verdict = match report.matched {
                        Some(true) => "match",
                        Some(false) => "MISMATCH",
                        None => "-",
                    };
                    writeln!(
                        out,
                        "{}  {}  {verdict}",
                        escape_controls(&report.result.hash_value),
                        escape_controls(&report.result.file_path)
                    )?;
                }
            }
            if report.matched == Some(false) {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Status { format } => {
            let status = agent.status()?;
            print_status(&mut out, &status, format)?;
        }
        Command::Monitor {
            pids,
            interval_ms,
            duration_s,
            realtime,
            format,
        } => {
            // Held for the loop below; this thread only reads and prints.
            let _realtime = if realtime {
                Some(RealtimeGuard::enter(1).context("--realtime")?)
            } else {
                None
            };
            let until = duration_s.map(|s| deadline::after(Duration::from_secs(s)));
            let mut stream = agent.monitor(&pids, Duration::from_millis(interval_ms))?;
            if let Format::Table = format {
                writeln!(
                    out,
                    "{:<9} {:>8} {:>8}  {:<20} COMMAND",
                    "EVENT", "PID", "PPID", "NAME"
                )?;
            }
            loop {
                // Without a duration, wake up hourly just to wait again.
                let deadline = until.unwrap_or_else(|| deadline::after(Duration::from_secs(3600)));
                match stream.next_view(deadline) {
                    Ok(Some((kind, view))) => {
                        print_tagged(&mut out, Tag::Event(kind.as_str()), &view, format)?
                    }
                    Ok(None) => break,
                    Err(ClientError::Timeout { .. }) if until.is_none() => continue,
                    Err(ClientError::Timeout { .. }) => {
                        stream.cancel()?;
                        break;
                    }
                    Err(error) => return Err(error.into()),
                }
                out.flush()?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn filter(
    names: Vec<String>,
    pids: Vec<u32>,
    pattern: Option<String>,
) -> Option<ProtoProcessFilter> {
    (!names.is_empty() || !pids.is_empty() || pattern.is_some()).then_some(ProtoProcessFilter {
        process_names: names,
        pids,
        executable_pattern: pattern,
    })
}

/// Writes each record as it comes, straight from its view of the agent's
/// copy of the frame (no owned record is built).
fn print_records(out: &mut impl Write, mut records: Records<'_>, format: Format) -> Result<()> {
    if let Format::Table = format {
        writeln!(
            out,
            "{:>8} {:>8} {:<20} {:>10} {:>6} {:<5} {:<12} COMMAND",
            "PID", "PPID", "NAME", "RSS_KIB", "CPU%", "FILE", "SHA256"
        )?;
    }
    while let Some(record) = records.next_view() {
        let record = record.context("reading procmond's results")?;
        match format {
            Format::Json => {
                serde_json::to_writer(&mut *out, &record)?;
                writeln!(out)?;
            }
            Format::Table => writeln!(
                out,
                "{:>8} {:>8} {:<20} {:>10} {:>6} {:<5} {:<12} {}",
                record.pid(),
                Dash(record.ppid()),
                escape_controls(record.name()),
                Dash(record.memory_usage().map(|m| m / 1024)),
                Dash(record.cpu_usage().map(|c| format!("{c:.1}"))),
                if record.file_exists() { "yes" } else { "NO" },
                escape_controls(
                    record
                        .executable_hash()
                        .map_or("-", |h| h.get(..12).unwrap_or(h))
                ),
                CommandText(record.command_line()),
            )?,
        }
    }
    Ok(())
}

/// A value for a table cell, or `-` when there is none; padding as for the
/// value's own text.
struct Dash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for Dash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.pad("-"),
        }
    }
}

/// The command line for a table: each argument escaped, joined by spaces.
struct CommandText<I>(I);

impl<'a, I: Iterator<Item = &'a str> + Clone> std::fmt::Display for CommandText<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, arg) in self.0.clone().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&escape_controls(arg))?;
        }
        Ok(())
    }
}

fn print_status(out: &mut impl Write, status: &Status, format: Format) -> Result<()> {
    if let Format::Json = format {
        writeln!(out, "{}", serde_json::to_string(status)?)?;
        return Ok(());
    }
    let source = match EventSource::try_from(status.event_source) {
        Ok(EventSource::Connector) => "process connector (every fork, exec and exit)",
        Ok(EventSource::Polling) => "polling /proc (short-lived processes can be missed)",
        _ => "unknown",
    };
    let caps = if status.capabilities.is_empty() {
        "none".to_owned()
    } else {
        status.capabilities.join(" ")
    };
    let uptime = Duration::from_millis(status.uptime_ms);
    let mut rows = vec![
        (
            "version",
            format!("{} (protocol {})", status.version, status.protocol_version),
        ),
        ("pid", status.pid.to_string()),
        ("uptime", format!("{:.1} s", uptime.as_secs_f64())),
        ("euid", status.euid.to_string()),
        ("capabilities", caps),
        ("event source", source.to_owned()),
    ];
    if let Some(e) = &status.events {
        rows.push((
            "events",
            format!(
                "{} events, {} overruns, {} sequence gaps ({} missed), {} malformed, {} spoofed, {} resyncs, {} corrections, {} scans, {} tallies",
                e.events, e.overruns, e.sequence_gaps, e.missed_events, e.malformed, e.spoofed, e.resyncs, e.corrections, e.scans, e.tallies
            ),
        ));
    }
    rows.push(("processes", status.processes.to_string()));
    rows.push((
        "clients",
        format!(
            "{} of {} ({} per uid)",
            status.clients, status.max_clients, status.max_clients_per_uid
        ),
    ));
    rows.push((
        "tasks",
        format!("{} run, {} failed", status.tasks_run, status.tasks_failed),
    ));
    if let Some(c) = &status.hash_cache {
        rows.push((
            "hash cache",
            format!(
                "{} entries, {} hits, {} misses",
                c.entries, c.hits, c.misses
            ),
        ));
    }
    rows.push(("ring", format!("{} bytes per client", status.ring_bytes)));
    for (key, value) in rows {
        writeln!(out, "{key:<13} {}", escape_controls(&value))?;
    }
    Ok(())
}

/// What happened to a record that `monitor` or `enumerate --watch` prints.
#[derive(Clone, Copy)]
enum Tag {
    /// A monitor event (`"started"`): the JSON field `event`.
    Event(&'static str),
    /// A change (`"gone"`): the JSON field `change`.
    Change(&'static str),
}

/// A JSON line: the record's fields, and what happened to it.
#[derive(Serialize)]
struct TaggedLine<'v, 'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    change: Option<&'static str>,
    #[serde(flatten)]
    record: &'v ProcessRecordView<'a>,
}

/// A record with what happened to it, straight from its view: a JSON line
/// with `event` or `change` set, or a table row starting with it.
fn print_tagged(
    out: &mut impl Write,
    tag: Tag,
    record: &ProcessRecordView<'_>,
    format: Format,
) -> Result<()> {
    let (event, change) = match tag {
        Tag::Event(kind) => (Some(kind), None),
        Tag::Change(kind) => (None, Some(kind)),
    };
    match format {
        Format::Json => {
            let line = TaggedLine {
                event,
                change,
                record,
            };
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)?;
        }
        Format::Table => writeln!(
            out,
            "{:<9} {:>8} {:>8}  {:<20} {}",
            event.or(change).unwrap_or_default(),
            record.pid(),
            Dash(record.ppid()),
            escape_controls(record.name()),
            CommandText(record.command_line())
        )?,
    }
    Ok(())
}
