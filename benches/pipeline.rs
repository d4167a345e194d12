//! The product's pipeline, measured in one run so the figures compare:
//!
//! - `enumerate/end_to_end`: an agent's ENUMERATE_PROCESSES through a real
//!   procmond server (in this process, on a real socket and ring), from the
//!   task sent until the last record is decoded; beside `enumerate/collect_only`,
//!   the collector alone doing the same walk.
//! - `stream_1000/ring`, `stream_1000/ring_owned` and
//!   `stream_1000/unix_socket`: 1,000-record results, chunked to the same
//!   128 KiB frames, encode → transport → decode, on two threads; reported
//!   as records per second. `ring` and `unix_socket` decode with the
//!   agent's views (checked whole, then each record viewed);
//!   `ring_owned` is the owned path as it was (prost decode and
//!   `validate()` of the frame's copy).
//!
//! ```sh
//! cargo bench --bench pipeline
//! ```

// The tests' strategies and sample records.
#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

use daemoneye_lib::client::Agent;
use daemoneye_lib::collector::{Collector, CollectorConfig};
use daemoneye_lib::proto::{DetectionResult, ProtoProcessRecord};
use daemoneye_lib::ring::{self, Consumer, RingConfig};
use daemoneye_lib::server::{Server, ServerConfig};
use daemoneye_lib::session::{ChunkReader, DetectionResultView, Marker, RecordKind, ResultWriter};

const RECORDS: usize = 1000;
const MAX_FRAME: usize = 128 << 10;
const WAIT: Duration = Duration::from_secs(30);

fn enumerate(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("de-bench-{}", std::process::id()));
    let server = Server::bind(ServerConfig::new(dir.join("procmond.sock"))).expect("bind");
    let shutdown = server.shutdown_handle();
    let socket = server.socket_path().to_owned();
    let serving = thread::spawn(move || server.run_until(&server.shutdown_handle()));
    let mut agent = Agent::connect(&socket).expect("connect");

    let mut group = c.benchmark_group("enumerate");
    group.bench_function("end_to_end", |b| {
        b.iter(|| {
            let mut n = 0;
            for record in agent.enumerate(None, false).expect("task") {
                black_box(record.expect("record"));
                n += 1;
            }
            n
        })
    });
    let mut collector = Collector::new(CollectorConfig::default());
    group.bench_function("collect_only", |b| {
        b.iter(|| collector.enumerate(None, false).expect("collect").len())
    });
    group.finish();

    drop(agent);
    shutdown.trigger();
    serving.join().expect("server thread");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The records split as the ring's chunker splits them (by encoded length).
fn chunks(records: &[ProtoProcessRecord]) -> Vec<DetectionResult> {
    let base = DetectionResult::success("bench", vec![]).encoded_len();
    let mut out = vec![DetectionResult::success("bench", vec![])];
    let mut len = base;
    for r in records {
        let add = prost::encoding::message::encoded_len(4, r);
        if len + add > MAX_FRAME {
            out.push(DetectionResult::success("bench", vec![]));
            len = base;
        }
        len += add;
        out.last_mut().unwrap().processes.push(r.clone());
    }
    out
}

/// procmond's side of `iters` streams of `records`, as the server writes
/// them.
fn write_streams(producer: &mut ring::Producer, records: &[ProtoProcessRecord], iters: u64) {
    for _ in 0..iters {
        let mut writer = ResultWriter::new(producer, "bench", WAIT);
        for r in records {
            writer.push(RecordKind::Result, r.clone()).expect("push");
        }
        writer.finish().expect("finish");
    }
}

/// `iters` streams of `records` through a ring: procmond's writer on this
/// thread, `read` (returning the records it read) on another; the time
/// until both are done.
fn through_ring(
    records: &[ProtoProcessRecord],
    iters: u64,
    read: impl FnOnce(Consumer) -> u64 + Send + 'static,
) -> Duration {
    let config = RingConfig::new(1 << 20).with_max_frame(MAX_FRAME);
    let (mut producer, consumer) = ring::pair(&config).expect("ring");
    let reader = thread::spawn(move || read(consumer));
    let start = Instant::now();
    write_streams(&mut producer, records, iters);
    assert_eq!(reader.join().expect("reader"), iters * RECORDS as u64);
    start.elapsed()
}

/// Views every record of a checked result, as an agent reading it would
/// (each record decoded, its command line walked); returns the count.
fn view_records(result: &DetectionResultView<'_>) -> u64 {
    let mut n = 0;
    for view in result.processes() {
        black_box((view.pid(), view.name(), view.command_line().count()));
        n += 1;
    }
    n
}

fn stream_1000(c: &mut Criterion) {
    let records: Vec<_> = (0..RECORDS as u32).map(common::worker).collect();
    let mut group = c.benchmark_group("stream_1000");
    group.throughput(Throughput::Elements(RECORDS as u64));

    group.bench_function("ring", |b| {
        b.iter_custom(|iters| {
            through_ring(&records, iters, move |mut consumer| {
                let deadline = Instant::now() + WAIT;
                let mut reader = ChunkReader::new();
                let mut got = 0u64;
                for _ in 0..iters {
                    loop {
                        let chunk = reader.read_view(&mut consumer, deadline).expect("chunk");
                        got += view_records(&chunk.result);
                        if chunk.marker.end {
                            break;
                        }
                    }
                }
                got
            })
        })
    });

    group.bench_function("ring_owned", |b| {
        b.iter_custom(|iters| {
            through_ring(&records, iters, move |mut consumer| {
                let deadline = Instant::now() + WAIT;
                let mut frame = Vec::new();
                let mut got = 0u64;
                for _ in 0..iters {
                    loop {
                        // The agent's owned path before the views: a private
                        // copy, decoded by prost and validated.
                        let flags = consumer
                            .read(deadline, |ring_frame| {
                                frame.clear();
                                frame.extend_from_slice(ring_frame.bytes());
                                ring_frame.flags()
                            })
                            .expect("frame");
                        let marker = Marker::from_flags(flags).expect("flags");
                        let result = DetectionResult::decode(frame.as_slice()).expect("decode");
                        result.validate().expect("valid");
                        got += black_box(result).processes.len() as u64;
                        if marker.end {
                            break;
                        }
                    }
                }
                got
            })
        })
    });

    group.bench_function("unix_socket", |b| {
        b.iter_custom(|iters| {
            let (mut tx, mut rx) = UnixStream::pair().expect("socket pair");
            let reader = thread::spawn(move || {
                let mut got = 0u64;
                let mut buf = Vec::new();
                for _ in 0..iters {
                    loop {
                        let mut prefix = [0u8; 4];
                        rx.read_exact(&mut prefix).expect("prefix");
                        let len = u32::from_le_bytes(prefix) as usize;
                        let end = len & (1 << 31) != 0;
                        buf.resize(len & !(1 << 31), 0);
                        rx.read_exact(&mut buf).expect("payload");
                        let result = DetectionResultView::parse(&buf).expect("valid");
                        got += view_records(&result);
                        if end {
                            break;
                        }
                    }
                }
                got
            });
            let mut buf = Vec::with_capacity(MAX_FRAME + 4);
            let start = Instant::now();
            for _ in 0..iters {
                // The same work as the ring's writer: move records into
                // frame-sized results, encode each, send it.
                let parts = chunks(&records);
                let last = parts.len() - 1;
                for (i, part) in parts.iter().enumerate() {
                    buf.clear();
                    let len = part.encoded_len() as u32 | if i == last { 1 << 31 } else { 0 };
                    buf.extend_from_slice(&len.to_le_bytes());
                    part.encode(&mut buf).expect("encode");
                    tx.write_all(&buf).expect("send");
                }
            }
            assert_eq!(reader.join().expect("reader"), iters * RECORDS as u64);
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, enumerate, stream_1000);
criterion_main!(benches);
