//! The product's pipeline, measured in one run so the figures compare:
//!
//! - `enumerate/end_to_end`: an agent's ENUMERATE_PROCESSES through a real
//!   procmond server (in this process, on a real socket and ring), from the
//!   task sent until the last record is decoded; beside `enumerate/collect_only`,
//!   the collector alone doing the same walk.
//! - `stream_1000/*`: 1,000-record results, chunked to the same 128 KiB
//!   frames, encode → transport → decode, on two threads; reported as
//!   records per second. `ring` and `unix_socket`: pre-encoded records
//!   (stable fields kept, the poll's fields encoded), read with the
//!   agent's `ChunkReader` and views (checked whole, then each record
//!   viewed);
//!   `ring_owned`: the owned path as it was (structs encoded by prost,
//!   decoded by prost and `validate()`d); `ring_struct_encoder`: structs
//!   encoded, views reading, to tell the two halves apart.
//! - `stages_1000/*`: the reading side's steps alone, on one thread, over
//!   one frame of the same pre-encoded records: `copy` (the frame's bytes
//!   into a private buffer, as the agent's reader does), `parse` (checked
//!   whole: `DetectionResultView::parse`), `parse_view` (then each record
//!   viewed as above), `reader` (all of that as the agent's `ChunkReader`
//!   does it, its buffers reused: copy, check, view) and `owned` (prost's
//!   decode and `validate()`).
//!   Both transports above end in the same parse and views: when those are
//!   the slowest stage, they bound what any transport can gain.
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
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

use daemoneye_lib::client::Agent;
use daemoneye_lib::collector::{Collector, CollectorConfig};
use daemoneye_lib::proto::encoded::{EncodedRecord, StableFields};
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

/// How procmond encodes a poll's records.
#[derive(Clone, Copy)]
enum Encoder {
    /// Each record a struct, cloned and encoded whole by prost.
    Structs,
    /// Each record's stable fields kept encoded (as procmond's table keeps
    /// them), only the poll's fields encoded each time.
    PreEncoded,
}

/// A poll's records as procmond's table holds them: the structs, and their
/// stable fields encoded once.
struct Poll {
    records: Vec<ProtoProcessRecord>,
    stable: Vec<Arc<StableFields>>,
}

impl Poll {
    fn new() -> Arc<Poll> {
        let records: Vec<_> = (0..RECORDS as u32).map(common::worker).collect();
        let stable = records
            .iter()
            .map(|r| Arc::new(StableFields::encode(r)))
            .collect();
        Arc::new(Poll { records, stable })
    }

    /// This poll's records with their kept stable fields.
    fn encoded(&self) -> impl Iterator<Item = EncodedRecord> + '_ {
        self.records
            .iter()
            .zip(&self.stable)
            .map(|(r, stable)| EncodedRecord::of(Arc::clone(stable), r))
    }
}

/// procmond's side of `iters` streams of the poll's records, as the server
/// writes them.
fn write_streams(producer: &mut ring::Producer, poll: &Poll, encoder: Encoder, iters: u64) {
    for _ in 0..iters {
        let mut writer = ResultWriter::new(producer, "bench", WAIT);
        match encoder {
            Encoder::Structs => {
                for r in &poll.records {
                    writer.push(RecordKind::Result, r.clone()).expect("push");
                }
            }
            Encoder::PreEncoded => {
                for record in poll.encoded() {
                    writer
                        .push_encoded(RecordKind::Result, record)
                        .expect("push");
                }
            }
        }
        writer.finish().expect("finish");
    }
}

/// The same streams over a socket: each frame a 4-byte length (bit 31:
/// END) and a `DetectionResult` encoded as the ring's writer encodes it
/// (the result's fields, then each pre-encoded record as field 4), cut at
/// the same largest frame.
fn send_streams(tx: &mut UnixStream, poll: &Poll, iters: u64) {
    let head = DetectionResult::success("bench", vec![]).encode_to_vec();
    let mut buf = Vec::with_capacity(MAX_FRAME + 4);
    let send = |buf: &mut Vec<u8>, tx: &mut UnixStream, end: bool| {
        let len = (buf.len() - 4) as u32 | if end { 1 << 31 } else { 0 };
        buf[..4].copy_from_slice(&len.to_le_bytes());
        tx.write_all(buf).expect("send");
    };
    for _ in 0..iters {
        buf.clear();
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&head);
        for record in poll.encoded() {
            if buf.len() - 4 + record.field_len(4) > MAX_FRAME {
                send(&mut buf, tx, false);
                buf.truncate(4);
                buf.extend_from_slice(&head);
            }
            record.encode_field(4, &mut buf);
        }
        send(&mut buf, tx, true);
    }
}

/// `iters` streams of the poll through a ring: procmond's writer on this
/// thread, `read` (returning the records it read) on another; the time
/// until both are done.
fn through_ring(
    poll: &Poll,
    encoder: Encoder,
    iters: u64,
    read: impl FnOnce(Consumer) -> u64 + Send + 'static,
) -> Duration {
    let config = RingConfig::new(1 << 20).with_max_frame(MAX_FRAME);
    let (mut producer, consumer) = ring::pair(&config).expect("ring");
    let reader = thread::spawn(move || read(consumer));
    let start = Instant::now();
    write_streams(&mut producer, poll, encoder, iters);
    assert_eq!(reader.join().expect("reader"), iters * RECORDS as u64);
    start.elapsed()
}

/// Views every record of a checked result, as an agent reading it would
/// (each record decoded, its command line walked); returns the count.
fn view_records(result: &DetectionResultView<'_>) -> u64 {
    let mut n = 0;
    for view in result.processes() {
        let args: usize = view.command_line().map(str::len).sum();
        black_box((view.pid(), view.name(), args));
        n += 1;
    }
    n
}

fn stream_1000(c: &mut Criterion) {
    let poll = Poll::new();
    let mut group = c.benchmark_group("stream_1000");
    group.throughput(Throughput::Elements(RECORDS as u64));

    for (name, encoder) in [
        ("ring", Encoder::PreEncoded),
        ("ring_struct_encoder", Encoder::Structs),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                through_ring(&poll, encoder, iters, move |mut consumer| {
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
    }

    group.bench_function("ring_owned", |b| {
        b.iter_custom(|iters| {
            through_ring(&poll, Encoder::Structs, iters, move |mut consumer| {
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
                let mut reader = ChunkReader::new();
                for _ in 0..iters {
                    loop {
                        let mut prefix = [0u8; 4];
                        rx.read_exact(&mut prefix).expect("prefix");
                        let len = u32::from_le_bytes(prefix) as usize;
                        let end = len & (1 << 31) != 0;
                        buf.resize(len & !(1 << 31), 0);
                        rx.read_exact(&mut buf).expect("payload");
                        let marker = Marker {
                            end,
                            kind: RecordKind::Result,
                            cancelled: false,
                            full: false,
                        };
                        let chunk = reader.view_frame(&buf, marker.to_flags()).expect("valid");
                        got += view_records(&chunk.result);
                        if end {
                            break;
                        }
                    }
                }
                got
            });
            let start = Instant::now();
            send_streams(&mut tx, &poll, iters);
            assert_eq!(reader.join().expect("reader"), iters * RECORDS as u64);
            start.elapsed()
        })
    });
    group.finish();
}

/// The reading side's steps alone (see the module docs).
fn stages_1000(c: &mut Criterion) {
    let poll = Poll::new();
    let mut frame = DetectionResult::success("bench", vec![]).encode_to_vec();
    for record in poll.encoded() {
        record.encode_field(4, &mut frame);
    }
    let mut group = c.benchmark_group("stages_1000");
    group.throughput(Throughput::Elements(RECORDS as u64));
    let mut copy = Vec::new();
    group.bench_function("copy", |b| {
        b.iter(|| {
            copy.clear();
            copy.extend_from_slice(black_box(&frame));
            copy.len()
        })
    });
    group.bench_function("parse", |b| {
        b.iter(|| {
            let result = DetectionResultView::parse(black_box(&frame)).expect("valid");
            result.process_count()
        })
    });
    group.bench_function("parse_view", |b| {
        b.iter(|| {
            let result = DetectionResultView::parse(black_box(&frame)).expect("valid");
            view_records(&result)
        })
    });
    let mut reader = ChunkReader::new();
    let flags = Marker {
        end: true,
        kind: RecordKind::Result,
        cancelled: false,
        full: false,
    }
    .to_flags();
    group.bench_function("reader", |b| {
        b.iter(|| {
            let chunk = reader.view_frame(black_box(&frame), flags).expect("valid");
            view_records(&chunk.result)
        })
    });
    group.bench_function("owned", |b| {
        b.iter(|| {
            let result = DetectionResult::decode(black_box(frame.as_slice())).expect("decode");
            result.validate().expect("valid");
            result.processes.len()
        })
    });
    group.finish();
}

criterion_group!(benches, enumerate, stream_1000, stages_1000);
criterion_main!(benches);
