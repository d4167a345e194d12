//! procmond: the privileged process collector. Runs in the foreground,
//! serves daemoneye-agent connections on a Unix socket, exits 0 on SIGTERM
//! or SIGINT and removes its socket. A second SIGTERM or SIGINT during the
//! shutdown ends it at once (exit 1, nothing logged, the socket left for the
//! next procmond to replace), even when its log takes nothing more.
//!
//! Under systemd (`dist/systemd/procmond.service`, `Type=notify`) it serves
//! the socket `procmond.socket` passes (`LISTEN_FDS`; without one it binds
//! its own path, as when started by hand), says `READY=1` once it serves,
//! `WATCHDOG=1` from its accept loop when the unit sets `WatchdogSec=`, and
//! `STOPPING=1` when it shuts down.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use tracing_subscriber::EnvFilter;

use daemoneye_lib::cli::procmond::Args;
use daemoneye_lib::control::{AllowList, ControlListener, default_socket_path};
use daemoneye_lib::server::{Server, ServerConfig, Supervisor};
use daemoneye_lib::sys::systemd::{self, ActivationError, Notice};

fn main() {
    // First of all, before anything opens a descriptor that could take the
    // number systemd's socket has (3).
    let passed = systemd::take_listen_socket();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(error) = run(Args::parse(), passed) {
        eprintln!(
            "procmond: {}",
            daemoneye_lib::text::error_line(error.as_ref())
        );
        std::process::exit(1);
    }
}

/// Tells systemd how the accept loop is doing (each a no-op outside
/// systemd); a notification that cannot be sent is logged, never fatal.
struct Systemd {
    watchdog: Option<Duration>,
}

impl Systemd {
    fn tell(notice: Notice) {
        if let Err(error) = systemd::notify(notice) {
            tracing::warn!(%error, ?notice, "cannot notify the service manager");
        }
    }
}

impl Supervisor for Systemd {
    fn serving(&mut self) {
        Self::tell(Notice::Ready);
    }
    fn alive_every(&self) -> Option<Duration> {
        self.watchdog
    }
    fn alive(&mut self) {
        Self::tell(Notice::Watchdog);
    }
    fn stopping(&mut self) {
        Self::tell(Notice::Stopping);
    }
}

fn run(
    args: Args,
    passed: Result<Option<std::os::unix::net::UnixListener>, ActivationError>,
) -> Result<()> {
    // Block the signals before any thread starts, so every thread inherits
    // the mask and only the waiting thread below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .context("blocking SIGTERM and SIGINT")?;

    let passed = passed?;
    if passed.is_some() && (args.socket.is_some() || args.group.is_some()) {
        tracing::warn!(
            "--socket and --group are ignored: the service manager passed the socket, and its unit sets path, mode and group"
        );
    }
    let socket_path = match (&passed, args.socket) {
        (Some(_), _) => PathBuf::new(),
        (None, Some(path)) => path,
        (None, None) => default_socket_path()?,
    };
    let group = match &args.group {
        None => None,
        Some(name) => match nix::unistd::Group::from_name(name)
            .with_context(|| format!("looking up group {name}"))?
        {
            Some(group) => Some(group.gid.as_raw()),
            None => bail!("no such group: {name}"),
        },
    };
    let mut config = ServerConfig::new(socket_path);
    config.ring_bytes = args.ring_bytes;
    config.max_frame_bytes = args.max_frame_bytes.unwrap_or(args.ring_bytes / 8);
    config.allow = args
        .allow_uids
        .iter()
        .fold(AllowList::new(), |allow, &uid| allow.allow_uid(uid));
    config.group = group;
    config.max_clients = args.max_clients;
    config.max_clients_per_uid = args.max_clients_per_uid;
    config.table.scan_interval = Duration::from_secs(args.scan_interval_s);
    config.table.use_connector = !args.no_process_events;
    config.table.realtime_events = !args.no_realtime_events;
    // Only the process connector needs it, and only to subscribe: the table
    // starts (in `Server::bind`) before any thread but this one.
    config.table.give_up_net_admin = true;
    config.collector.hash_read_timeout = Duration::from_millis(args.hash_read_timeout_ms);

    let server = match passed {
        Some(listener) => Server::with_listener(config, ControlListener::activated(listener)?)?,
        None => Server::bind(config)?,
    };
    let shutdown = server.shutdown_handle();
    let stopped_by = Arc::new(OnceLock::new());
    let received = Arc::clone(&stopped_by);
    // This thread writes no log line: the log itself may be what is stuck (a
    // full pipe, a stalled journald), and a blocked write here would keep it
    // from the shutdown and from the second signal.
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            match signals.wait() {
                Ok(signal) => {
                    let _ = received.set(signal);
                    shutdown.trigger();
                }
                Err(error) => {
                    tracing::error!(%error, "waiting for signals failed");
                    return;
                }
            }
            // A second signal: the operator will not wait for the shutdown.
            if signals.wait().is_ok() {
                std::process::exit(1);
            }
        })
        .context("starting the signal thread")?;
    let mut supervisor = Systemd {
        watchdog: systemd::watchdog_interval(),
    };
    server.run_supervised(&server.shutdown_handle(), &mut supervisor);
    drop(server); // removes the socket file, if procmond bound it
    tracing::info!(
        signal = stopped_by.get().map_or("none", |s| s.as_str()),
        "stopped"
    );
    Ok(())
}
