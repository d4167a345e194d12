//! The command lines of the two binaries, `procmond` and `daemoneye-agent`
//! (clap definitions): here rather than in `src/bin/` so that
//! `examples/gen_dist.rs` can make their man pages and shell completions
//! from the same definitions (`clap::CommandFactory`).

/// `procmond`'s command line.
pub mod procmond {
    use std::path::PathBuf;

    use clap::Parser;

    /// Streams process data to daemoneye-agent through a shared-memory ring.
    #[derive(Parser, Debug)]
    #[command(name = "procmond", version, after_long_help = SERVICE_HELP)]
    pub struct Args {
        /// Control socket path [default: $XDG_RUNTIME_DIR/daemoneye/procmond.sock,
        /// or /run/daemoneye/procmond.sock for root]
        #[arg(long)]
        pub socket: Option<PathBuf>,
        /// Bytes in each client's ring (a power of two, 64 KiB to 1 GiB)
        #[arg(long, default_value_t = 1 << 20)]
        pub ring_bytes: usize,
        /// Largest result frame, at least 16 KiB [default: ring bytes / 8]
        #[arg(long, value_parser = parse_max_frame)]
        pub max_frame_bytes: Option<usize>,
        /// Also allow this uid to connect (repeatable); procmond's own uid and
        /// root always may
        #[arg(long = "allow-uid", value_name = "UID")]
        pub allow_uids: Vec<u32>,
        /// Let this group reach the socket (0660 instead of 0600)
        #[arg(long, value_name = "NAME")]
        pub group: Option<String>,
        /// Clients served at once; more are refused. With two or more, the
        /// last is kept for root (and procmond's own uid)
        #[arg(long, default_value_t = 8)]
        pub max_clients: usize,
        /// Connections one other uid may hold at once [default: half of
        /// --max-clients, at least 1]
        #[arg(long, value_name = "N")]
        pub max_clients_per_uid: Option<usize>,
        /// Seconds between the full /proc scans that check the event-fed
        /// process table (1 to 3600)
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        pub scan_interval_s: u64,
        /// Do not subscribe to the kernel's process events; poll /proc
        #[arg(long)]
        pub no_process_events: bool,
        /// Run the process event thread at nice -10, and monitor streams
        /// as ordinary threads, instead of real-time (SCHED_FIFO 1); more
        /// short-lived images are then missed and exec events wait longer
        #[arg(long)]
        pub no_realtime_events: bool,
        /// The longest one open, stat or read of a file being hashed may take
        /// (a hung NFS or FUSE file) before that task fails
        #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
        pub hash_read_timeout_ms: u64,
    }

    /// How procmond runs under systemd, for `--help` and the man page.
    const SERVICE_HELP: &str = "\
Runs in the foreground; exits 0 on SIGTERM or SIGINT, removing the socket it bound.

As a service (procmond.socket and procmond.service, installed by the daemoneye \
package): systemd creates /run/daemoneye/procmond.sock (root:daemoneye, 0660) and \
passes it (LISTEN_FDS); procmond then serves that socket and leaves it in place, \
says READY=1 once it serves, WATCHDOG=1 from its accept loop when WatchdogSec= is \
set, and STOPPING=1 on shutdown. It runs as the daemoneye user holding only \
CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.

Set RUST_LOG=debug for more log lines (on stderr).";

    /// The smallest `--max-frame-bytes`: room for a few records beside the
    /// result's own fields.
    pub const MIN_FRAME_BYTES: usize = 16 << 10;

    fn parse_max_frame(text: &str) -> Result<usize, String> {
        let bytes: usize = text.parse().map_err(|e| format!("{e}"))?;
        if bytes < MIN_FRAME_BYTES {
            return Err(format!(
                "{bytes} is below the minimum of {MIN_FRAME_BYTES} bytes (16 KiB)"
            ));
        }
        Ok(bytes)
    }
}

/// `daemoneye-agent`'s command line.
pub mod agent {
    use std::path::PathBuf;

    use clap::{Parser, Subcommand, ValueEnum};

    /// Asks procmond about processes.
    #[derive(Parser, Debug)]
    #[command(name = "daemoneye-agent", version)]
    pub struct Args {
        /// procmond's control socket [default: $XDG_RUNTIME_DIR/daemoneye/procmond.sock
        /// if it exists, else /run/daemoneye/procmond.sock]
        #[arg(long, global = true)]
        pub socket: Option<PathBuf>,
        /// Also trust a procmond running as this uid (repeatable); root, this
        /// user and the `daemoneye` service user (when it exists) always are
        #[arg(long = "trust-server-uid", value_name = "UID", global = true)]
        pub trust_server_uids: Vec<u32>,
        #[command(subcommand)]
        pub command: Command,
    }

    #[derive(Clone, Copy, Debug, ValueEnum)]
    pub enum Format {
        /// Aligned columns
        Table,
        /// One JSON object per line, field names as in the schema
        Json,
    }

    #[derive(Subcommand, Debug)]
    pub enum Command {
        /// List processes
        Enumerate {
            /// Only processes with this exact name (repeatable)
            #[arg(long = "name")]
            names: Vec<String>,
            /// Only this pid (repeatable)
            #[arg(long = "pid")]
            pids: Vec<u32>,
            /// Only executables whose path matches this glob
            #[arg(long)]
            exe_pattern: Option<String>,
            /// Also hash each executable
            #[arg(long, conflicts_with = "watch")]
            hash: bool,
            /// Poll again and again, printing only what changed since the last
            /// poll (the first prints everything): started or changed processes
            /// as `updated`, exited ones as `gone`
            #[arg(long)]
            watch: bool,
            /// With --watch: milliseconds between polls (10 to 3,600,000)
            #[arg(long, default_value_t = 1000, requires = "watch",
                  value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
            interval_ms: u64,
            /// With --watch: stop after this many seconds [default: run until killed]
            #[arg(long, requires = "watch")]
            duration_s: Option<u64>,
            #[arg(long, value_enum, default_value_t = Format::Table)]
            format: Format,
        },
        /// SHA-256 of a file, compared with --expected
        HashCheck {
            /// Path of the file (a relative one is taken from the current directory)
            path: PathBuf,
            /// Expected SHA-256, hex
            #[arg(long)]
            expected: Option<String>,
            #[arg(long, value_enum, default_value_t = Format::Table)]
            format: Format,
        },
        /// Hash running images and flag those whose file was replaced or deleted
        Verify {
            /// Only this pid (repeatable)
            #[arg(long = "pid")]
            pids: Vec<u32>,
            #[arg(long, value_enum, default_value_t = Format::Table)]
            format: Format,
        },
        /// procmond's status: version, privileges, event source, counters
        Status {
            #[arg(long, value_enum, default_value_t = Format::Table)]
            format: Format,
        },
        /// Watch the process tree under some roots (all processes without any)
        Monitor {
            /// A root pid (repeatable)
            #[arg(long = "pid")]
            pids: Vec<u32>,
            /// Longest wait in ms for a change to be batched with others (0:
            /// each is sent at once); where procmond polls, its polling interval
            /// (at least 10)
            #[arg(long, default_value_t = 10)]
            interval_ms: u64,
            /// Stop after this many seconds [default: run until killed]
            #[arg(long)]
            duration_s: Option<u64>,
            /// Read the stream real-time (SCHED_FIFO 1; needs CAP_SYS_NICE or
            /// an RLIMIT_RTPRIO of 1), so events reach this agent within a
            /// millisecond even while the host's cores are busy
            #[arg(long)]
            realtime: bool,
            #[arg(long, value_enum, default_value_t = Format::Table)]
            format: Format,
        },
    }
}
