//! A quick side-by-side of the ways to move frames between two processes on
//! this machine: the shared-memory ring with each wait strategy, a Unix
//! stream socket, and the bounds they are measured against.
//!
//! ```text
//! cargo run --release --example ipc_bench              # table, 15-25 s
//! cargo run --release --example ipc_bench -- --json    # JSON lines
//! cargo run --release --example ipc_bench -- --quick --sizes 64,1024 --only ring:busy-spin,uds
//! ```
//!
//! Rows, in order:
//! - `spin` / `none` / 8: two threads of this process ping-ponging on one
//!   cache line; one way = round trip / 2. The floor for any cross-core
//!   hand-off, measured first because this machine switches between
//!   core-to-core modes (about 40, 65 and 230 ns one way): compare ratios
//!   within one run.
//! - `ring` (`busy-spin`, `spin-then-park`, `park`) and `uds` (`none`), for
//!   64 B, 1 KiB, 16 KiB and 64 KiB frames, across two processes (the peer
//!   is this binary re-executed). Latency: per-message round trips to an
//!   echoing peer, each halved; p50/p99/p999 in ns. The latency phase runs
//!   in slices, and after each slice the peer is paused and the spin probe
//!   measured again; the table's `x_spin` column is the median over slices
//!   of the slice's p50 over the probe's p50 just after it, a ratio that
//!   holds when the mode changes mid-run (the first `spin` row cannot tell).
//!   Every latency sample, probe or not, includes one clock read (about
//!   30 ns per round trip here). Throughput: a separate
//!   streaming phase, the producer writing as fast as it can and the peer
//!   copying every frame out; frames/s and bytes/s.
//! - `memcpy` / `none`: one thread copying frames of that size out of a
//!   buffer as large as the ring: the ceiling for throughput. Its latency
//!   fields are `null` (a single small copy is shorter than the clock read).
//!
//! With `--json`, each row is one JSON object with exactly the fields
//! `transport`, `strategy`, `size`, `p50_ns`, `p99_ns`, `p999_ns`,
//! `msgs_per_s`, `bytes_per_s` (no `x_spin`).

#[path = "../benches/ipc/mod.rs"]
mod ipc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use crossbeam_utils::CachePadded;
use ipc::{Mode, SIZES, Session, Transport};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Ring vs Unix socket between two processes: latency and throughput")]
struct Args {
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Shorter phases (about a third of the time; noisier tails).
    #[arg(long)]
    quick: bool,
    /// Frame sizes to measure (comma-separated bytes, 1 to 65536; an empty
    /// frame is the harness's pause signal).
    #[arg(long, value_delimiter = ',', default_values_t = SIZES, value_parser = frame_size)]
    sizes: Vec<usize>,
    /// Rows to run: any of spin, ring:busy-spin, ring:spin-then-park,
    /// ring:park, uds, memcpy (comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// A `--sizes` entry: 1 to the largest frame the harness carries.
fn frame_size(text: &str) -> Result<usize, String> {
    let size: usize = text.parse().map_err(|err| format!("{text:?}: {err}"))?;
    if (1..=ipc::MAX_FRAME).contains(&size) {
        Ok(size)
    } else {
        Err(format!("{size} is not from 1 to {}", ipc::MAX_FRAME))
    }
}

/// One output row.
#[derive(Serialize)]
struct Row {
    transport: &'static str,
    strategy: &'static str,
    size: usize,
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
    p999_ns: Option<u64>,
    msgs_per_s: f64,
    bytes_per_s: f64,
    /// Table only: p50 over the spin probe's p50, measured in alternation
    /// (see [`latency`]).
    #[serde(skip)]
    spin_ratio: Option<f64>,
}

impl Row {
    fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).expect("a row serializes"));
            return;
        }
        let ns = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        let ratio = self
            .spin_ratio
            .map_or("-".to_owned(), |r| format!("{r:.2}"));
        println!(
            "{:<7} {:<15} {:>6} {:>9} {:>9} {:>9} {:>14.0} {:>14.0} {:>7}",
            format!("{:?}", self.transport),
            format!("{:?}", self.strategy),
            self.size,
            ns(self.p50_ns),
            ns(self.p99_ns),
            ns(self.p999_ns),
            self.msgs_per_s,
            self.bytes_per_s,
            ratio,
        );
    }
}

/// How long each phase runs.
struct Budget {
    latency: Duration,
    throughput: Duration,
    max_samples: usize,
    /// Slices of each latency phase, each followed by a spin probe.
    rounds: usize,
}

/// p50, p99, p999 of one-way samples (ns).
fn percentiles(mut samples: Vec<u64>) -> [u64; 3] {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.99), at(0.999)]
}

/// Two threads ping-ponging a counter on one cache line: one-way samples
/// (round trip / 2, ns) for about `duration` (at most `max_samples`), then,
/// with `rate`, one-way hand-offs per second over 200 000 more round trips.
fn spin_probe(duration: Duration, max_samples: usize, rate: bool) -> (Vec<u64>, f64) {
    let line = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let peer = {
        let line = Arc::clone(&line);
        std::thread::spawn(move || {
            let mut expect = 1;
            loop {
                // Acquire/Release: a real hand-off, as a ring's would be.
                let seen = line.load(Ordering::Acquire);
                if seen == u64::MAX {
                    return;
                }
                if seen == expect {
                    line.store(expect + 1, Ordering::Release);
                    expect += 2;
                }
                std::hint::spin_loop();
            }
        })
    };
    let mut samples = Vec::with_capacity(max_samples);
    let mut value = 1;
    let round = |value: &mut u64| {
        line.store(*value, Ordering::Release);
        while line.load(Ordering::Acquire) != *value + 1 {
            std::hint::spin_loop();
        }
        *value += 2;
    };
    for _ in 0..2_000 {
        round(&mut value);
    }
    let end = Instant::now() + duration;
    while samples.len() < max_samples && Instant::now() < end {
        let start = Instant::now();
        round(&mut value);
        samples.push(start.elapsed().as_nanos() as u64 / 2);
    }
    let mut per_s = 0.0;
    if rate {
        let count = 200_000;
        let start = Instant::now();
        for _ in 0..count {
            round(&mut value);
        }
        per_s = 2.0 * count as f64 / start.elapsed().as_secs_f64();
    }
    line.store(u64::MAX, Ordering::Release);
    peer.join().expect("probe thread");
    (samples, per_s)
}

/// The probe's row, measured first.
fn spin_row(budget: &Budget) -> Row {
    let (samples, per_s) = spin_probe(budget.latency, budget.max_samples, true);
    let [p50, p99, p999] = percentiles(samples);
    Row {
        transport: "spin",
        strategy: "none",
        size: 8,
        p50_ns: Some(p50),
        p99_ns: Some(p99),
        p999_ns: Some(p999),
        msgs_per_s: per_s,
        bytes_per_s: per_s * 8.0,
        spin_ratio: None,
    }
}

/// One-way latency percentiles, and the median over rounds of (this
/// round's p50 / the spin probe's p50 measured right after it, with the
/// peer paused).
///
/// This machine switches between core-to-core modes every few hundred
/// milliseconds, so a probe measured once, first, is often in another
/// mode than a row measured seconds later; a probe measured next to each
/// slice of the row is not.
fn latency(transport: Transport, size: usize, budget: &Budget) -> std::io::Result<([u64; 3], f64)> {
    let mut session = Session::start(transport, Mode::Echo)?;
    let payload = vec![0xa5u8; size];
    for _ in 0..2_000 {
        session.round_trip(&payload)?;
    }
    let mut samples = Vec::with_capacity(budget.max_samples);
    let mut ratios = Vec::with_capacity(budget.rounds);
    let slice = budget.latency / budget.rounds as u32;
    let per_round = budget.max_samples / budget.rounds;
    for _ in 0..budget.rounds {
        let first = samples.len();
        let end = Instant::now() + slice;
        while samples.len() - first < per_round && Instant::now() < end {
            let start = Instant::now();
            session.round_trip(&payload)?;
            samples.push(start.elapsed().as_nanos() as u64 / 2);
        }
        let [round_p50, ..] = percentiles(samples[first..].to_vec());
        session.pause()?;
        let (probe, _) = spin_probe(slice / 2, per_round, false);
        session.resume()?;
        let [probe_p50, ..] = percentiles(probe);
        ratios.push(round_p50 as f64 / probe_p50.max(1) as f64);
    }
    ratios.sort_by(f64::total_cmp);
    Ok((percentiles(samples), ratios[ratios.len() / 2]))
}

/// Frames per second through a sink peer, over about `budget.throughput`.
fn throughput(transport: Transport, size: usize, budget: &Budget) -> std::io::Result<f64> {
    let mut session = Session::start(transport, Mode::Sink)?;
    let payload = vec![0x5au8; size];
    // Calibrate on a short batch, then run about the budget.
    let probe = 2_000;
    let took = session.stream(&payload, probe)?;
    let count = ((probe as f64 * budget.throughput.as_secs_f64() / took.as_secs_f64()) as u64)
        .clamp(probe, 100_000_000);
    let took = session.stream(&payload, count)?;
    Ok(count as f64 / took.as_secs_f64())
}

fn memcpy_row(size: usize, budget: &Budget) -> Row {
    let probe = 10_000;
    let took = ipc::memcpy_frames(size, probe);
    let count =
        ((probe as f64 * budget.throughput.as_secs_f64() / took.as_secs_f64()) as u64).max(probe);
    let per_s = count as f64 / ipc::memcpy_frames(size, count).as_secs_f64();
    Row {
        transport: "memcpy",
        strategy: "none",
        size,
        p50_ns: None,
        p99_ns: None,
        p999_ns: None,
        msgs_per_s: per_s,
        bytes_per_s: per_s * size as f64,
        spin_ratio: None,
    }
}

fn main() -> std::io::Result<()> {
    ipc::run_peer_if_child();
    let args = Args::parse();
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let budget = if args.quick {
        Budget {
            latency: Duration::from_millis(150),
            throughput: Duration::from_millis(100),
            max_samples: 50_000,
            rounds: 5,
        }
    } else {
        Budget {
            latency: Duration::from_millis(500),
            throughput: Duration::from_millis(300),
            max_samples: 200_000,
            rounds: 10,
        }
    };
    if !args.json {
        println!(
            "{:<7} {:<15} {:>6} {:>9} {:>9} {:>9} {:>14} {:>14} {:>7}",
            "transp",
            "strategy",
            "size",
            "p50_ns",
            "p99_ns",
            "p999_ns",
            "msgs/s",
            "bytes/s",
            "x_spin"
        );
    }
    if wanted("spin") {
        spin_row(&budget).print(args.json);
    }
    for transport in Transport::all() {
        let name = format!("{}:{}", transport.name(), transport.strategy());
        let short = if transport == Transport::Uds {
            "uds"
        } else {
            &name
        };
        if !wanted(short) {
            continue;
        }
        for &size in &args.sizes {
            let ([p50, p99, p999], ratio) = latency(transport, size, &budget)?;
            let per_s = throughput(transport, size, &budget)?;
            Row {
                transport: transport.name(),
                strategy: transport.strategy(),
                size,
                p50_ns: Some(p50),
                p99_ns: Some(p99),
                p999_ns: Some(p999),
                msgs_per_s: per_s,
                bytes_per_s: per_s * size as f64,
                spin_ratio: Some(ratio),
            }
            .print(args.json);
        }
    }
    if wanted("memcpy") {
        for &size in &args.sizes {
            memcpy_row(size, &budget).print(args.json);
        }
    }
    Ok(())
}
