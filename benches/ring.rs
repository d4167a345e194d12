//! The ring against a Unix stream socket, between two processes (the peer
//! is this bench binary re-executed; see `ipc/mod.rs`), for 64 B, 1 KiB,
//! 16 KiB and 64 KiB frames:
//!
//! - `one_way_latency/<transport>/<size>`: ping-pong with an echoing
//!   peer; each iteration is one round trip, reported halved;
//! - `throughput/<transport>/<size>`: the producer writes as fast as the
//!   transport takes frames, the peer copies each one out; an iteration is
//!   one frame, so criterion reports bytes/s.
//!
//! `<transport>` is `ring-busy-spin`, `ring-spin-then-park`, `ring-park` or
//! `uds`. Each peer is started before its measurement (`iter_custom`), never
//! inside it. Run with `cargo bench --bench ring`; pick a subset with a
//! filter, e.g. `cargo bench --bench ring -- 'one_way_latency/ring-busy-spin'`.

mod ipc;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use ipc::{Mode, SIZES, Session, Transport};

fn label(transport: Transport) -> String {
    format!("{}-{}", transport.name(), transport.strategy()).replace("-none", "")
}

fn one_way_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_way_latency");
    for transport in Transport::all() {
        for size in SIZES {
            let mut session = Session::start(transport, Mode::Echo).expect("start echo peer");
            let payload = vec![0xa5u8; size];
            group.bench_function(BenchmarkId::new(label(transport), size), |b| {
                b.iter_custom(|iters| {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        session.round_trip(&payload).expect("round trip");
                    }
                    start.elapsed() / 2
                })
            });
        }
    }
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    for transport in Transport::all() {
        for size in SIZES {
            let mut session = Session::start(transport, Mode::Sink).expect("start sink peer");
            let payload = vec![0x5au8; size];
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(BenchmarkId::new(label(transport), size), |b| {
                b.iter_custom(|iters| session.stream(&payload, iters).expect("stream"))
            });
        }
    }
    group.finish();
}

fn main() {
    // A re-executed copy of this binary is a peer: it does its part and
    // exits here.
    ipc::run_peer_if_child();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    one_way_latency(&mut criterion);
    throughput(&mut criterion);
    criterion.final_summary();
}
